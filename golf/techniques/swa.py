"""SWA, stochastic weight averaging of checkpoints (techniques.md 6.2).

After a step that ran at an LR scale below ``SWA_START_FRAC`` (a threshold on the LR scale, not on
time: under linear warmdown 0.35 is the last 35% of the warmdown) and whose completed-step count is
a multiple of ``SWA_EVERY``, the weights are added to a running sum: the full state_dict's floats
(#326) or, with ``SWA_SOURCE=ema``, the EMA shadow (#635, SWA over EMA). The sum is fp32 on the
training device, so a snapshot costs no host copy. At the end the mean is offered as candidate
``swa`` in the model's own dtypes (a bf16 tensor averages in fp32 and comes back bf16).

Defaults follow #326's code: ``SWA_START_FRAC=0.35``, ``SWA_EVERY=25``. #635 is
``SWA_START_FRAC=0.2 SWA_EVERY=50 SWA_SOURCE=ema``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from golf.knobs import Checks, knob
from golf.techniques.averaging import Averaging, float_state, offered_state
from golf.techniques.base import Candidates, Progress, TrainingRun, warn_inert

if TYPE_CHECKING:
    from golf.config import GolfConfig

SWA_SOURCES = ("raw", "ema")


@dataclass(frozen=True)
class SwaSettings:
    swa_enabled: bool = knob(False, "average checkpoints taken during the warmdown (stochastic weight averaging)")
    swa_start_frac: float = knob(
        0.35, "snapshot only after steps whose LR scale is below this (a threshold on the LR scale, not on time)",
        aliases=("SWA_THRESHOLD",), min=0.0, max=1.0,
    )
    swa_every: int = knob(25, "snapshot when the completed-step count is a multiple of N", min=1)
    swa_source: str = knob(
        "raw", "what is averaged: raw (the weights) or ema (the EMA shadow; needs EMA_ENABLED=1)",
        choices=SWA_SOURCES,
    )


class Swa(Averaging):
    name = "swa"
    title = "stochastic weight averaging of warmdown checkpoints (raw or EMA weights)"
    spec = "6.2"
    settings = SwaSettings
    toggle = "swa_enabled"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.swa_enabled:
            warn_inert(cfg, cls, [k for k in cls.knob_names() if k != cls.toggle], checks)
            return
        if cfg.swa_source == "ema" and not cfg.ema_enabled:
            checks.error("SWA_SOURCE=ema averages the EMA weights but EMA_ENABLED=0: set EMA_ENABLED=1 or SWA_SOURCE=raw")
        if cfg.swa_every > cfg.iterations:
            checks.error(
                f"SWA_EVERY={cfg.swa_every} is longer than ITERATIONS={cfg.iterations}: "
                "no snapshot could ever be taken; lower SWA_EVERY"
            )
        if cfg.swa_start_frac <= 0.0:
            checks.error(
                "SWA_START_FRAC=0 takes no snapshot (no LR scale is below 0): use a threshold such as 0.35"
            )

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.sum: dict[str, Tensor] | None = None
        self.snapshot_steps: list[int] = []
        self.snapshot_lr_scales: list[float] = []
        self.averaged = 0

    def due(self, progress: Progress) -> bool:
        """Whether the step just completed is a snapshot (``progress`` as after_step sees it)."""
        return progress.lr_scale < self.cfg.swa_start_frac and progress.step % self.cfg.swa_every == 0

    def _source(self, run: TrainingRun) -> dict[str, Tensor]:
        if self.cfg.swa_source == "raw":
            return float_state(run.model)
        shadow = run.shared.get("ema")
        if shadow is None:
            raise RuntimeError("SWA_SOURCE=ema but no EMA shadow was published: EMA must be on and run before SWA")
        return shadow

    @torch.no_grad()
    def after_step(self, progress: Progress, run: TrainingRun) -> None:
        if not self.due(progress):
            return
        source = self._source(run)
        if self.sum is None:
            self.sum = {k: v.detach().to(dtype=torch.float32, copy=True) for k, v in source.items()}
            run.log(f"swa:start step:{progress.step} scale:{progress.lr_scale:.4f} every:{self.cfg.swa_every} "
                    f"source:{self.cfg.swa_source}")
        else:
            torch._foreach_add_(list(self.sum.values()), [source[k].float() for k in self.sum])
        self.snapshot_steps.append(progress.step)
        self.snapshot_lr_scales.append(progress.lr_scale)

    @torch.no_grad()
    def end_of_training(self, run: TrainingRun, candidates: Candidates) -> None:
        self.averaged = len(self.snapshot_steps)
        if self.sum is None:
            cfg = self.cfg
            run.log(f"swa:no snapshot was taken (start_frac={cfg.swa_start_frac} on the LR scale, "
                    f"every={cfg.swa_every}); keeping the final weights")
            return
        mean = {k: v / self.averaged for k, v in self.sum.items()}
        candidates.offer(
            self.name, offered_state(run.model, mean),
            applying=f"swa:applying averaged {self.averaged} checkpoints",
        )

    def report(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "start_frac": cfg.swa_start_frac, "every": cfg.swa_every, "source": cfg.swa_source,
            "snapshot_steps": list(self.snapshot_steps),
            "first_lr_scale": self.snapshot_lr_scales[0] if self.snapshot_lr_scales else None,
            "snapshots": self.averaged,
        }
