"""Learning-rate schedule shapes (techniques.md 4.6, 5.1-5.4): warmdown shape and window, LR floor,
and the GPTQ time reserve taken out of the training budget.

- ``WARMDOWN_SHAPE``: ``linear`` (the reference) or ``cosine`` (#137, #326): ``(1 + cos(pi p)) / 2``
  at progress ``p`` through the window, flat at its start.
- The window: the last ``WARMDOWN_ITERS`` expected steps (the reference; estimated from the average
  step time under a wallclock cap), capped at ``WARMDOWN_MAX_FRAC`` of the budget (#326: 0.5); or,
  with ``WARMDOWN_FRAC`` > 0, the last ``WARMDOWN_FRAC`` of the budget (#137; #1260: 0.667).
  #130's ``COOLDOWN_FRAC`` is the same window and is accepted as an alias.
- ``LR_FLOOR`` (#130: 0.1; #1260's ``MIN_LR``): the scale never drops below it.
- ``GPTQ_RESERVE_SECONDS`` (#1260: 10): training stops that much before ``MAX_WALLCLOCK_SECONDS``,
  and every fraction of the budget (warmdown, QAT and averaging starts) is of the shorter budget.

The formulas are :mod:`golf.optim.schedule` (the recipe calls them every step); this module owns
the knobs, their checks, the log line and the report of what the schedule did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from golf.knobs import Checks, knob
from golf.optim.schedule import WARMDOWN_SHAPES, training_budget_ms
from golf.techniques.base import Progress, Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig


@dataclass(frozen=True)
class LrScheduleSettings:
    warmdown_shape: str = knob(
        "linear", "LR decay shape over the warmdown window: linear (reference) or cosine (#137, #326)",
        choices=WARMDOWN_SHAPES,
    )
    warmdown_frac: float = knob(
        0.0, "warm down over the last fraction of the training budget (wallclock with a cap, else iterations) "
        "instead of WARMDOWN_ITERS; 0 = by WARMDOWN_ITERS", aliases=("COOLDOWN_FRAC",), min=0.0, max=1.0,
    )
    warmdown_max_frac: float = knob(
        0.0, "cap the WARMDOWN_ITERS window at this fraction of the budget (#326: 0.5); 0 = no cap", min=0.0, max=1.0,
    )
    lr_floor: float = knob(
        0.0, "the LR scale never drops below this fraction of the peak (#130: 0.1); 0 = decay to 0",
        aliases=("MIN_LR",), min=0.0, max=1.0,
    )
    gptq_reserve_seconds: float = knob(
        0.0, "seconds of MAX_WALLCLOCK_SECONDS kept for GPTQ after training (#1260: 10); training and its "
        "schedule use the rest", min=0.0,
    )


class LrSchedule(Technique):
    name = "lr_schedule"
    title = "LR schedule shapes: linear/cosine warmdown by iterations or budget fraction, LR floor, GPTQ reserve"
    spec = "5.1-5.4, 4.6"
    settings = LrScheduleSettings
    toggle = None

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cls.any_knob_set(cfg)

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        from golf.config import reference_value

        def changed(name: str) -> bool:
            return getattr(cfg, name) != reference_value(checks, name)

        if cfg.gptq_reserve_seconds > 0:
            if cfg.max_wallclock_seconds <= 0:
                if changed("gptq_reserve_seconds"):
                    checks.warn(
                        f"GPTQ_RESERVE_SECONDS={cfg.gptq_reserve_seconds} has no effect without a wallclock cap "
                        "(MAX_WALLCLOCK_SECONDS=0): set MAX_WALLCLOCK_SECONDS or drop it"
                    )
            elif cfg.gptq_reserve_seconds >= cfg.max_wallclock_seconds:
                checks.error(
                    f"GPTQ_RESERVE_SECONDS={cfg.gptq_reserve_seconds} leaves no training time out of "
                    f"MAX_WALLCLOCK_SECONDS={cfg.max_wallclock_seconds}: reserve less than the cap"
                )
        if cfg.warmdown_frac > 0:
            for name in ("warmdown_iters", "warmdown_max_frac"):
                if getattr(cfg, name) and changed(name):
                    checks.warn(
                        f"{name.upper()}={getattr(cfg, name)} has no effect with WARMDOWN_FRAC={cfg.warmdown_frac} "
                        "(the fraction sets the window): drop one of them"
                    )
        elif cfg.warmdown_iters <= 0:
            for name in ("warmdown_shape", "warmdown_max_frac", "lr_floor"):
                if changed(name):
                    checks.warn(
                        f"{name.upper()}={getattr(cfg, name)} has no effect without a warmdown (WARMDOWN_ITERS=0 "
                        "and WARMDOWN_FRAC=0): set one of them or drop it"
                    )

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.warmdown_start_step: int | None = None
        self.min_lr_scale: float | None = None

    def window(self) -> str:
        cfg = self.cfg
        unit = "wallclock" if training_budget_ms(cfg) is not None else "iterations"
        if cfg.warmdown_frac > 0:
            return f"last {cfg.warmdown_frac} of the budget ({unit})"
        if cfg.warmdown_iters <= 0:
            return "none"
        capped = f", at most {cfg.warmdown_max_frac} of the budget" if cfg.warmdown_max_frac > 0 else ""
        estimated = " (estimated from step time)" if unit == "wallclock" else ""
        return f"last {cfg.warmdown_iters} iterations{estimated}{capped}"

    def on_train_start(self, run: TrainingRun) -> None:
        cfg = self.cfg
        budget = training_budget_ms(cfg)
        budget_text = f"{budget / 1000:.1f}s" if budget is not None else f"{cfg.iterations} iterations"
        reserve = f" (gptq_reserve:{cfg.gptq_reserve_seconds}s)" if cfg.gptq_reserve_seconds > 0 else ""
        run.log(f"lr_schedule: warmdown:{cfg.warmdown_shape} window:{self.window()} floor:{cfg.lr_floor} "
                f"budget:{budget_text}{reserve}")

    def before_step(self, progress: Progress, run: TrainingRun) -> None:
        if self.warmdown_start_step is None and progress.lr_scale < 1.0:
            self.warmdown_start_step = progress.step
        if self.min_lr_scale is None or progress.lr_scale < self.min_lr_scale:
            self.min_lr_scale = progress.lr_scale

    def report(self) -> dict[str, Any]:
        cfg = self.cfg
        budget = training_budget_ms(cfg)
        return {
            "shape": cfg.warmdown_shape, "window": self.window(), "lr_floor": cfg.lr_floor,
            "gptq_reserve_seconds": cfg.gptq_reserve_seconds,
            "training_budget_seconds": None if budget is None else budget / 1000.0,
            "warmdown_start_step": self.warmdown_start_step, "min_lr_scale": self.min_lr_scale,
        }
