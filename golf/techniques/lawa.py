"""LAWA, latest weight averaging (techniques.md 6.1, seed #130).

Once ``LAWA_START_FRAC`` of the training budget is spent, every ``LAWA_INTERVAL``-th step copies
all parameters (not buffers) to CPU; ``LAWA_K`` > 0 keeps only the last K (a ring buffer, the
sliding-window form other forks use), 0 keeps every one. At the end of training the element-wise
mean of the kept snapshots (in fp32, cast back to each parameter's dtype; buffers from the model
as it ended) is offered as candidate ``lawa``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from golf.knobs import Checks, knob
from golf.techniques.averaging import Averaging, offered_state
from golf.techniques.base import Candidates, Progress, TrainingRun, warn_inert

if TYPE_CHECKING:
    from golf.config import GolfConfig


@dataclass(frozen=True)
class LawaSettings:
    lawa_enabled: bool = knob(False, "average weight snapshots taken late in training")
    lawa_start_frac: float = knob(
        0.8, "take snapshots once this fraction of the training budget is spent", min=0.0, max=1.0
    )
    lawa_interval: int = knob(200, "snapshot every N steps", aliases=("LAWA_FREQ",), min=1)
    lawa_k: int = knob(0, "average only the last K snapshots; 0 = all of them", min=0)


class Lawa(Averaging):
    name = "lawa"
    title = "latest weight averaging: mean of parameter snapshots taken late in training"
    spec = "6.1"
    settings = LawaSettings
    toggle = "lawa_enabled"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.lawa_enabled:
            warn_inert(cfg, cls, [k for k in cls.knob_names() if k != cls.toggle], checks)
            return
        if cfg.lawa_interval > cfg.iterations:
            checks.error(
                f"LAWA_INTERVAL={cfg.lawa_interval} is longer than ITERATIONS={cfg.iterations}: "
                "no snapshot could ever be taken; lower LAWA_INTERVAL"
            )

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.snapshots: deque[dict[str, Tensor]] = deque(maxlen=cfg.lawa_k or None)
        self.snapshot_steps: list[int] = []
        self.averaged = 0
        self.steps = 0

    def due(self, progress: Progress) -> bool:
        """Whether the step just completed takes a snapshot (``progress`` as after_step sees it)."""
        return (
            progress.step > 0
            and progress.step % self.cfg.lawa_interval == 0
            and progress.budget_fraction >= self.cfg.lawa_start_frac
        )

    @torch.no_grad()
    def after_step(self, progress: Progress, run: TrainingRun) -> None:
        self.steps = progress.step
        if self.due(progress):
            self.snapshots.append({n: p.detach().to("cpu", copy=True) for n, p in run.model.named_parameters()})
            self.snapshot_steps.append(progress.step)

    @torch.no_grad()
    def mean(self, model: nn.Module) -> dict[str, Tensor]:
        """The fp32 mean of the kept snapshots, by every state_dict name of each parameter."""
        count = len(self.snapshots)
        canonical: dict[int, str] = {}
        means: dict[str, Tensor] = {}
        # A parameter shared by two modules has two state_dict names but one snapshot entry.
        for name, p in model.named_parameters(remove_duplicate=False):
            first = canonical.setdefault(id(p), name)
            if first not in means:
                total = torch.zeros(p.shape, dtype=torch.float32)
                for snap in self.snapshots:
                    total += snap[first].float()
                means[first] = total / count
            means[name] = means[first]
        return means

    def end_of_training(self, run: TrainingRun, candidates: Candidates) -> None:
        self.averaged = len(self.snapshots)
        if self.averaged == 0:
            cfg = self.cfg
            run.log(f"lawa:no snapshot was taken (start_frac={cfg.lawa_start_frac}, "
                    f"interval={cfg.lawa_interval}, steps={self.steps}); keeping the final weights")
            return
        candidates.offer(
            self.name, offered_state(run.model, self.mean(run.model)),
            applying=f"lawa:applying average of {self.averaged} checkpoints",
        )

    def report(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "start_frac": cfg.lawa_start_frac, "interval": cfg.lawa_interval, "k": cfg.lawa_k,
            "snapshot_steps": list(self.snapshot_steps), "snapshots": self.averaged,
            "averaged_steps": self.snapshot_steps[len(self.snapshot_steps) - self.averaged:],
        }
