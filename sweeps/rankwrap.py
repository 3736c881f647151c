"""Run one torchrun rank so that it dies with its torchrun agent.

torchrun starts every rank in a new session (``start_new_session=True``), which puts the ranks
outside the Ray worker's process group: when the agent is killed without the chance to forward a
signal (the trial's actor SIGKILLed, the driver killed, ``ray job stop``), the ranks would live on
with PPID 1 and keep holding their GPUs. This wrapper asks the kernel to SIGKILL the rank when its
parent (the agent) dies, then runs the real program in this same process, unchanged::

    torchrun --standalone --nproc_per_node=8 sweeps/rankwrap.py -m golf.train
    torchrun --standalone --nproc_per_node=8 sweeps/rankwrap.py /path/train_gpt.py [args...]

It imports nothing from the ``sweeps`` package (torchrun runs it as a plain file), and on systems
without ``prctl`` (not Linux) it simply runs the program.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

_PR_SET_PDEATHSIG = 1
_USAGE = "usage: rankwrap.py -m MODULE [ARGS...] | rankwrap.py SCRIPT.py [ARGS...]"


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies; exit now if the parent is already gone."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    # The agent may have died before prctl took effect (then we were re-parented to init or a
    # subreaper and no signal will ever come): a rank without its agent has nothing to do.
    if parent == 1 or os.getppid() != parent:
        os._exit(1)


def run(argv: list[str]) -> None:
    """Run ``-m MODULE args`` or ``SCRIPT args`` as ``python`` would, as ``__main__``."""
    if not argv or argv[0] in ("-h", "--help") or (argv[0] == "-m" and len(argv) < 2):
        sys.exit(_USAGE)
    if argv[0] == "-m":
        module, rest = argv[1], argv[2:]
        sys.argv = [module, *rest]
        # `python -m` puts the current directory first on sys.path, not the wrapper's folder.
        sys.path[0] = os.getcwd()
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script, rest = argv[0], argv[1:]
        sys.argv = [script, *rest]
        # `python script.py` puts the script's folder first on sys.path (its sibling imports).
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    die_with_parent()
    run(sys.argv[1:])
