"""The run's log (the challenge's line formats, rank 0 only).

``write_json_atomic`` and ``write_bytes_atomic`` are re-exported from :mod:`golf.atomic` for the
trainer, which imports them from here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from golf.atomic import write_bytes_atomic, write_json_atomic

__all__ = ["RunLog", "eprint", "write_bytes_atomic", "write_json_atomic"]


class RunLog:
    """Prints lines on rank 0, flushed at once (a launcher streams them live), optionally to a file too."""

    def __init__(self, is_master: bool, path: Path | None = None) -> None:
        self.is_master = is_master
        self.path = path
        self._file: TextIO | None = None
        if is_master and path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")

    def __call__(self, line: str) -> None:
        if not self.is_master:
            return
        print(line, flush=True)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def eprint(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
