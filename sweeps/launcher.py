"""Start one trial's ``torchrun`` process tree, stream its output, and make sure all of it dies.

The lifecycle follows what was measured to leave no orphan rank on every way a Ray Tune trial can
be stopped (a scheduler or stopper, Ctrl-C on the driver, the driver SIGKILLed, ``ray job stop``):

1. ``torchrun`` is started with a plain ``Popen`` (never ``start_new_session``), so it stays in the
   Ray worker's process group and Ray's group cleanup reaches it when the worker goes away;
2. every rank runs through :mod:`sweeps.rankwrap`, which makes the kernel SIGKILL the rank when the
   torchrun agent dies (torchrun puts ranks in their own sessions, out of reach of (1));
3. :meth:`TorchrunProcess.stop`, called from the trial's ``finally``, snapshots the whole tree,
   sends SIGTERM to torchrun (which forwards it to the ranks), waits, then SIGKILLs torchrun and
   every process of the snapshot still alive.

Rendezvous uses ``--standalone``: torchrun's c10d store binds a port the kernel picks, so trials
packed on one node never collide and no port is ever chosen by hand.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

RANKWRAP = Path(__file__).resolve().with_name("rankwrap.py")
DEFAULT_STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Program:
    """What every rank runs: a module (``golf.train``) or a script path, with its arguments."""

    module: str | None = None
    script: str | None = None
    args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if (self.module is None) == (self.script is None):
            raise ValueError("a Program runs either a module or a script, not both or neither")

    def rank_argv(self) -> list[str]:
        """Arguments after the wrapper: ``-m MODULE ARGS`` or ``SCRIPT ARGS``."""
        head = ["-m", self.module] if self.module is not None else [str(self.script)]
        return [*head, *self.args]

    def describe(self) -> str:
        return self.module if self.module is not None else str(self.script)


def torchrun_argv(program: Program, nproc: int, *, python: str | None = None) -> list[str]:
    """The command a trial runs: torchrun (as ``python -m torch.distributed.run``) + rank wrapper.

    ``python -m torch.distributed.run`` is torchrun itself, taken from the interpreter running the
    trial, so a virtual environment's torch is used even when no ``torchrun`` is on PATH.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    return [
        python or sys.executable, "-m", "torch.distributed.run",
        "--standalone", f"--nproc_per_node={nproc}",
        str(RANKWRAP), *program.rank_argv(),
    ]


def reproduce_command(program: Program, nproc: int, env: Mapping[str, str] | None = None) -> str:
    """The plain shell command a person types to run the same thing by hand (no wrapper)."""
    prefix = " ".join(f"{key}={shlex.quote(str(value))}" for key, value in (env or {}).items())
    command = ["torchrun", "--standalone", f"--nproc_per_node={nproc}"]
    if program.module is not None:
        command += ["-m", program.module]
    else:
        command.append(str(program.script))
    command += list(program.args)
    text = " ".join(shlex.quote(part) for part in command)
    return f"{prefix} {text}" if prefix else text


def child_pids(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (children, grandchildren, ...), parents first."""
    parents = _parent_table()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child in children.get(current, ()):
            if child not in found:
                found.append(child)
                frontier.append(child)
    return found


def _parent_table() -> dict[int, int]:
    """pid -> parent pid of every process on the machine."""
    table: dict[int, int] = {}
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # the process ended while we looked
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it.
            fields = stat[stat.rfind(")") + 2:].split()
            table[int(entry.name)] = int(fields[1])
        return table
    out = subprocess.run(["ps", "-axo", "pid=,ppid="], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            table[int(parts[0])] = int(parts[1])
    return table


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir():
        try:
            text = stat.read_text()
        except OSError:
            return False
        return text[text.rfind(")") + 2:].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TorchrunProcess:
    """A running ``torchrun`` tree whose merged stdout/stderr is read line by line.

    Use it as a context manager (or call :meth:`stop` in a ``finally``): leaving the block stops
    whatever is still running, however the block is left.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str],
        stop_grace_s: float = DEFAULT_STOP_GRACE_S,
        niceness: int | None = None,
    ) -> None:
        self.argv = list(argv)
        self.stop_grace_s = stop_grace_s
        # Plain Popen on purpose: same process group as the Ray worker (see the module docstring).
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=os.fspath(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        # torchrun spawns its ranks only after importing torch (a second or more), so they
        # inherit the priority set here.
        self.niceness = set_niceness(self.proc.pid, niceness) if niceness is not None else None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> Iterator[str]:
        """Output lines (without the newline) as they are printed, until the tree closes stdout."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            yield line.rstrip("\r\n")

    def wait(self) -> int:
        """Wait for torchrun to exit and return its exit status."""
        return self.proc.wait()

    def stop(self) -> list[int]:
        """Stop torchrun and every process under it; return the pids that had to be SIGKILLed.

        SIGTERM first (torchrun forwards it to each rank's process group and waits for them), then
        after ``stop_grace_s`` SIGKILL for torchrun and for every process of the tree as it was
        before the SIGTERM, plus any that appeared since. Harmless when everything already ended.
        """
        if self.proc.poll() is not None:
            self._close_stdout()
            return []
        tree = child_pids(self.proc.pid)
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=self.stop_grace_s)
        except subprocess.TimeoutExpired:
            pass
        # Ranks re-parented away from a dead torchrun are still in `tree`; late children are not.
        if self.proc.poll() is None:
            tree += [pid for pid in child_pids(self.proc.pid) if pid not in tree]
        killed = []
        if self.proc.poll() is None:
            self.proc.kill()
            killed.append(self.proc.pid)
        for pid in tree:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
        self.proc.wait()
        self._close_stdout()
        return killed

    def _close_stdout(self) -> None:
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def __enter__(self) -> TorchrunProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def set_niceness(pid: int, niceness: int) -> int:
    """Give process ``pid`` this niceness when allowed; return the niceness it has now.

    Raising priority (a lower niceness) needs privileges (root, CAP_SYS_NICE or RLIMIT_NICE);
    without them the process keeps the niceness it inherited.
    """
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) != niceness:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
    except (PermissionError, ProcessLookupError):
        pass
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except ProcessLookupError:
        return niceness


def wait_until_gone(pids: Sequence[int], timeout_s: float) -> list[int]:
    """Wait up to ``timeout_s`` for the processes to end; return those still alive."""
    deadline = time.monotonic() + timeout_s
    alive = [pid for pid in pids if pid_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if pid_alive(pid)]
    return alive
