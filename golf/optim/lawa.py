"""LAWA, latest weight averaging (techniques.md 6.1).

Once LAWA_START_FRAC of the training budget is spent, every LAWA_INTERVAL-th step copies all
parameters (not buffers) to CPU; when training ends, each parameter becomes the element-wise mean
of the kept snapshots (all of them, or the last LAWA_K). The mean is taken in fp32 and cast back
to the parameter's dtype.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import nn

from golf.config import GolfConfig


class Lawa:
    def __init__(self, cfg: GolfConfig) -> None:
        self.start_frac = cfg.lawa_start_frac
        self.interval = cfg.lawa_interval
        self.snapshots: deque[dict[str, torch.Tensor]] = deque(maxlen=cfg.lawa_k or None)
        self.snapshot_steps: list[int] = []

    def due(self, step: int, budget_fraction: float) -> bool:
        """Whether the step just completed takes a snapshot."""
        return step > 0 and step % self.interval == 0 and budget_fraction >= self.start_frac

    @torch.no_grad()
    def snapshot(self, model: nn.Module, step: int) -> None:
        self.snapshots.append({name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()})
        self.snapshot_steps.append(step)

    @torch.no_grad()
    def average_into(self, model: nn.Module) -> int:
        """Load the mean of the kept snapshots into ``model``; returns how many were averaged."""
        count = len(self.snapshots)
        if count == 0:
            return 0
        for name, p in model.named_parameters():
            total = torch.zeros(p.shape, dtype=torch.float32)
            for snap in self.snapshots:
                total += snap[name].float()
            p.copy_((total / count).to(device=p.device, dtype=p.dtype))
        return count
