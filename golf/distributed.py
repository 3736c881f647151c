"""Process-group setup for one trial: NCCL on GPUs, gloo on CPU, or a single process."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_master(self) -> bool:
        return self.rank == 0


def world_size_from_env(environ: dict[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    return int(env.get("WORLD_SIZE", "1"))


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
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK, pick the device, join the process group."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_choice, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


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
