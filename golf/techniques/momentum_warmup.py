"""Muon momentum warmup by fraction of the training budget (techniques.md 4.2, #137).

The reference warms the momentum up linearly from ``MUON_MOMENTUM_WARMUP_START`` to
``MUON_MOMENTUM`` over ``MUON_MOMENTUM_WARMUP_STEPS`` steps (core settings). #137 instead warms it
over ``MUON_WARMUP_FRAC`` of the wallclock (0.15 x 600 s = the first 90 s), whatever the step
time: ``f = min(budget_fraction / MUON_WARMUP_FRAC, 1)``. Without a wallclock cap the budget is
ITERATIONS steps. The formula lives in :func:`golf.optim.schedule.muon_momentum`, which the recipe
calls every step; this module owns the knob, its checks and the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from golf.knobs import Checks, knob
from golf.optim.schedule import muon_momentum
from golf.techniques.base import Progress, Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig


@dataclass(frozen=True)
class MomentumWarmupSettings:
    muon_warmup_frac: float = knob(
        0.0, "warm the Muon momentum up over this fraction of the training budget (wallclock with a cap, "
        "else iterations) instead of MUON_MOMENTUM_WARMUP_STEPS; 0 = by steps (#137: 0.15)", min=0.0, max=1.0,
    )


class MomentumWarmup(Technique):
    name = "momentum_warmup"
    title = "Muon momentum warmup over a fraction of the wallclock budget instead of a step count"
    spec = "4.2"
    settings = MomentumWarmupSettings
    toggle = None

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cfg.muon_warmup_frac > 0

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        from golf.config import reference_value

        if cfg.muon_warmup_frac <= 0:
            return
        if cfg.muon_momentum_warmup_steps != reference_value(checks, "muon_momentum_warmup_steps"):
            checks.warn(
                f"MUON_MOMENTUM_WARMUP_STEPS={cfg.muon_momentum_warmup_steps} has no effect with "
                f"MUON_WARMUP_FRAC={cfg.muon_warmup_frac} (the fraction decides): drop one of them"
            )
        if cfg.muon_momentum_warmup_start == cfg.muon_momentum:
            checks.warn(
                f"MUON_WARMUP_FRAC={cfg.muon_warmup_frac} has no effect: MUON_MOMENTUM_WARMUP_START equals "
                f"MUON_MOMENTUM ({cfg.muon_momentum}), so there is nothing to warm up"
            )

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.warm_at_step: int | None = None

    def before_step(self, progress: Progress, run: TrainingRun) -> None:
        if self.warm_at_step is not None:
            return
        if muon_momentum(self.cfg, progress.step, progress.elapsed_ms) == self.cfg.muon_momentum:
            self.warm_at_step = progress.step
            run.log(f"momentum_warmup:done step:{progress.step} momentum:{self.cfg.muon_momentum} "
                    f"budget_frac:{progress.budget_fraction:.3f}")

    def report(self) -> dict[str, Any]:
        return {"frac": self.cfg.muon_warmup_frac, "start": self.cfg.muon_momentum_warmup_start,
                "final": self.cfg.muon_momentum, "final_from_step": self.warm_at_step}
