"""One builder at a time: an exclusive lock file around building or fetching a dataset."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout


@contextmanager
def exclusive_lock(lock_path: Path, waiting_message: str, quiet: bool) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` for the block, saying so when another process has it.

    The lock is an OS file lock (``flock`` on POSIX), so a process killed while holding it frees
    it: a crashed build never blocks the next one.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not quiet:
            print(waiting_message, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
