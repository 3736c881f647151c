"""Atomic file writes: readers see the old file or the new one, never half of one.

Every writer of the project (result.json, train_state.json, artifacts, shards, trial.json, results
tables, submission.json) goes through here. The data goes to a temporary file in the target's
folder (so the rename never crosses a filesystem), is flushed to disk, and is renamed over the
target. The temporary file is created with mode 0666 and the kernel applies the umask, so the
result has the mode a plain ``open()`` would give it, not the 0600 of :func:`tempfile.mkstemp`:
results and submissions are meant to be read by others.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

PathLike = Union[str, os.PathLike]


def write_atomic(path: PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Create ``path`` by calling ``write(handle)`` on a temporary file, then fsync and rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda handle: handle.write(data))


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: PathLike, obj: Any, *, indent: int | None = 2, ensure_ascii: bool = True) -> None:
    """Write ``obj`` as JSON (indented by ``indent``, with a final newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii) + "\n")
