"""Process-group setup for one trial: NCCL on GPUs, gloo on CPU, or a single process.

On CPU each rank also sizes torch's thread pool: ``OMP_NUM_THREADS`` when set, else the CPUs this
process may use (its affinity mask, capped by a container's CPU quota) divided by the ranks on this
machine. Left alone, every rank's pool takes every core the machine has, so ranks oversubscribe the
cores and a pool waits on threads the scheduler parks. On a machine shared with other busy
processes, set ``OMP_NUM_THREADS`` lower still: the count is logged so a slow run shows why.
"""

from __future__ import annotations

import gc
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class CpuThreads:
    """torch's intra-op thread count on a CPU rank, and why."""

    count: int
    reason: str  # "OMP_NUM_THREADS=1" or "2 cores / 2 ranks"

    @property
    def log_line(self) -> str:
        return f"cpu_threads:{self.count} ({self.reason})"


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    cpu_threads: CpuThreads | None = None  # set on CPU ranks; None on GPUs

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_master(self) -> bool:
        return self.rank == 0


def world_size_from_env(environ: dict[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    return int(env.get("WORLD_SIZE", "1"))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The container's CPU quota rounded up to whole CPUs (cgroup v2 or v1), or None without one."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # v2: "200000 100000" or "max ..."
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a container's CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(cpus, limit) if limit else cpus)


def pick_cpu_threads(environ: Mapping[str, str], local_ranks: int, cpus: int | None = None) -> CpuThreads:
    """``OMP_NUM_THREADS`` when it is a whole number >= 1, else ``cpus // local_ranks`` (at least 1)."""
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) >= 1:
        return CpuThreads(int(given), f"OMP_NUM_THREADS={given}")
    cpus = usable_cpus() if cpus is None else cpus
    ranks = max(1, local_ranks)
    reason = f"{_plural(cpus, 'core')} / {_plural(ranks, 'rank')}"
    if given:
        reason += f"; OMP_NUM_THREADS={given!r} is not a whole number >= 1"
    return CpuThreads(max(1, cpus // ranks), reason)


def pick_device(choice: str, local_rank: int) -> torch.device:
    """CUDA device ``local_rank`` when asked for or available (``auto``), else the CPU."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda but no CUDA device is visible: use DEVICE=auto or DEVICE=cpu")
    if local_rank >= torch.cuda.device_count():
        raise RuntimeError(
            f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} are visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
            "lower --nproc_per_node to the number of GPUs"
        )
    return torch.device("cuda", local_rank)


def init_distributed(device_choice: str) -> DistContext:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK, pick the device (and on CPU the thread count:
    :func:`pick_cpu_threads`, logged by the caller as ``ctx.cpu_threads.log_line``), join the
    process group."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_choice, local_rank)
    threads = None
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        # torchrun sets LOCAL_WORLD_SIZE; other launchers may set only WORLD_SIZE (an overcount
        # across machines, which errs towards fewer threads).
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        threads = pick_cpu_threads(os.environ, local_ranks)
        torch.set_num_threads(threads.count)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                       cpu_threads=threads)


def shutdown(*, together: bool = False) -> None:
    """Leave the process group; ``together`` (a run that succeeded) first waits for every rank."""
    # A DDP wrapper sits in a reference cycle, so it would only be destroyed at interpreter exit,
    # after the process group: on gloo (torch 2.13) that aborts the process with "terminate called
    # without an active exception" in about one run of ten. Free it while the group still exists.
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum, max or avg) when distributed; identity otherwise."""
    if dist.is_available() and dist.is_initialized():
        if op == "avg":
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= dist.get_world_size()
        else:
            dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s value of ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
