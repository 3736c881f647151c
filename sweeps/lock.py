"""One driver per experiment directory: an OS file lock beside it, and who holds it.

Two drivers on one experiment would both "resume" it, run every trial twice into the same
folders, and rename each other's live ``train.log`` and ``run/`` aside. A driver therefore holds
an exclusive ``flock`` on ``<storage>/.<name>.lock`` for as long as it runs. The kernel drops
the lock when the holder's process ends, however it ends (SIGKILL included), so a dead driver
never leaves the experiment stuck. The lock file sits *beside* the experiment directory, not in
it, so that ``--restart`` can move the directory aside while the lock is held.

Beside the lock, ``.<name>.lock.json`` says who holds it (pid, host, command, since when), so the
refusal can name the other driver, and readers (``sweeps table``) can tell a trial that is still
running from one whose driver is gone without touching the lock themselves. The holder file is
removed on a clean release; one left by a killed driver is recognised as stale by its pid.

Only local (or NFS-mounted) experiment directories are locked; object stores have no locks.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import filelock

from golf.atomic import write_json_atomic

LOCK_SUFFIX = ".lock"
HOLDER_SUFFIX = ".lock.json"


class ExperimentBusy(RuntimeError):
    """Another driver holds the experiment's lock; the message names it and what to do."""

    def __init__(self, experiment_dir: Path, holder: Holder | None) -> None:
        self.experiment_dir = experiment_dir
        self.holder = holder
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.experiment_dir}"
        if self.holder is None:
            who = "another driver (it has not said who it is yet)"
        else:
            who = (f"another driver: pid {self.holder.pid} on host {self.holder.host}, running "
                   f"since {self.holder.started_at} ({_age(self.holder.started_at)}), command: "
                   f"{self.holder.command}")
        return (f"the experiment {where} is being run by {who}; wait for it to end (`sweeps table "
                f"{where}` shows its progress), stop it, or pass --name NEW to run a separate "
                "experiment")


@dataclass(frozen=True)
class Holder:
    """Who holds an experiment's lock."""

    pid: int
    host: str
    command: str
    started_at: str
    # The kernel's start time of the process (Linux, clock ticks since boot): a pid reused by
    # another process after the driver died does not pass for the driver.
    process_start: int | None = None

    @classmethod
    def of_this_process(cls) -> Holder:
        return cls(pid=os.getpid(), host=socket.gethostname(), command=command_line(),
                   started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   process_start=_process_start(os.getpid()))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Holder | None:
        try:
            return cls(pid=int(data["pid"]), host=str(data["host"]), command=str(data["command"]),
                       started_at=str(data["started_at"]),
                       process_start=(None if data.get("process_start") is None
                                      else int(data["process_start"])))
        except (KeyError, TypeError, ValueError):
            return None

    def is_alive(self) -> bool | None:
        """True/False when this host can tell; None for a holder on another host."""
        if self.host != socket.gethostname():
            return None
        start = _process_start(self.pid)
        if start is not None and self.process_start is not None:
            return start == self.process_start
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def lock_paths(experiment_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(<storage>/.<name>.lock, <storage>/.<name>.lock.json)`` of an experiment directory."""
    path = Path(experiment_dir)
    return (path.with_name(f".{path.name}{LOCK_SUFFIX}"),
            path.with_name(f".{path.name}{HOLDER_SUFFIX}"))


def read_holder(experiment_dir: str | os.PathLike[str]) -> Holder | None:
    """Who says they hold the experiment's lock (None when nobody does, or it cannot be read)."""
    try:
        data = json.loads(lock_paths(experiment_dir)[1].read_text())
    except (OSError, ValueError):
        return None
    return Holder.from_json(data) if isinstance(data, dict) else None


def driver_is_running(experiment_dir: str | os.PathLike[str]) -> bool | None:
    """Whether a driver runs the experiment now: True, False, or None when it cannot be told
    (the holder is on another host). Reads the holder file only; never takes the lock."""
    holder = read_holder(experiment_dir)
    if holder is None:
        return False
    return holder.is_alive()


class ExperimentLock:
    """The exclusive lock of one experiment directory (a context manager).

    :meth:`acquire` never waits: a held lock raises :class:`ExperimentBusy` at once.
    """

    def __init__(self, experiment_dir: str | os.PathLike[str]) -> None:
        self.experiment_dir = Path(experiment_dir)
        self.lock_path, self.holder_path = lock_paths(self.experiment_dir)
        self._lock: filelock.UnixFileLock | None = None

    def acquire(self) -> None:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        # The flock backend only: its soft fallback (a marker file) would outlive a SIGKILL.
        lock = filelock.UnixFileLock(str(self.lock_path), timeout=0, fallback_to_soft=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise ExperimentBusy(self.experiment_dir, read_holder(self.experiment_dir)) from None
        self._lock = lock
        try:
            write_json_atomic(self.holder_path, asdict(Holder.of_this_process()))
        except OSError:
            # A full disk must not stop the driver from running (the lock alone excludes a
            # second driver); the refusal then just cannot name this one.
            pass

    def release(self) -> None:
        if self._lock is None:
            return
        try:
            self.holder_path.unlink(missing_ok=True)
        finally:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> ExperimentLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def command_line() -> str:
    """The command line that started this process, as a person would type it again."""
    argv = list(sys.argv) or ["python"]
    head = Path(argv[0])
    if head.name in ("sweeps", "golf") or (head.name == "cli.py" and head.parent.name == "sweeps"):
        argv[0] = "sweeps" if head.name != "golf" else "golf"  # the console command (or -m)
    elif argv[0].endswith(".py"):
        argv = ["python", *argv]
    return " ".join(shlex.quote(part) for part in argv)


def _process_start(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": field 22 (starttime) counted after comm, which may hold spaces.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _age(started_at: str) -> str:
    try:
        since = _dt.datetime.fromisoformat(started_at)
    except ValueError:
        return "for an unknown time"
    seconds = max(0, int((_dt.datetime.now(_dt.timezone.utc) - since).total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds / 3600:.1f} h ago"
