"""Learning-rate scale, Muon momentum and the training budget as functions of progress
(techniques.md 1.4, 1.5, 4.2, 5.1-5.4).

The warmdown window is one of:

- the last ``WARMDOWN_ITERS`` expected steps (the reference): with a wallclock cap the window is
  ``WARMDOWN_ITERS x average step time so far``, capped at ``WARMDOWN_MAX_FRAC`` of the budget
  (#326); without one, the last ``WARMDOWN_ITERS`` iterations (capped likewise at
  ``WARMDOWN_MAX_FRAC`` of ``ITERATIONS``);
- the last ``WARMDOWN_FRAC`` of the training budget (#137, #1260; #130's ``COOLDOWN_FRAC`` is the
  same window), in wallclock with a cap and in iterations without one.

Inside the window the LR follows ``WARMDOWN_SHAPE`` from 1 down to 0 (linear, or #137/#326's
cosine), and never drops below ``LR_FLOOR`` (#130; #1260's ``MIN_LR``). The budget is
``MAX_WALLCLOCK_SECONDS`` less ``GPTQ_RESERVE_SECONDS`` (#1260), so every fraction of it, and the
stop, leave the reserve to the export. The knobs are the ``lr_schedule`` and ``momentum_warmup``
technique sections (golf.techniques); the mechanism is here because the recipe calls it every step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # golf.config composes the technique sections, which import this module
    from golf.config import GolfConfig

WARMDOWN_SHAPES = ("linear", "cosine")


def training_budget_ms(cfg: GolfConfig) -> float | None:
    """The training time allowed, in ms: the wallclock cap less the GPTQ reserve; None without a cap."""
    if cfg.max_wallclock_seconds <= 0:
        return None
    return (cfg.max_wallclock_seconds - cfg.gptq_reserve_seconds) * 1000.0


def warmdown_remaining(cfg: GolfConfig, step: int, elapsed_ms: float) -> float | None:
    """How much of the warmdown window is left at this point (1 at its start, 0 at its end), or
    None outside the window (before it, and without any warmdown)."""
    budget_ms = training_budget_ms(cfg)
    if cfg.warmdown_frac > 0:
        if budget_ms is None:
            window, remaining = cfg.warmdown_frac * cfg.iterations, float(max(cfg.iterations - step, 0))
        else:
            window, remaining = cfg.warmdown_frac * budget_ms, max(budget_ms - elapsed_ms, 0.0)
        return remaining / window if remaining <= window else None
    if cfg.warmdown_iters <= 0:
        return None
    if budget_ms is None:
        iters = cfg.warmdown_iters
        if cfg.warmdown_max_frac > 0:
            iters = min(iters, cfg.warmdown_max_frac * cfg.iterations)
        if max(cfg.iterations - iters, 0) <= step < cfg.iterations:
            return max((cfg.iterations - step) / max(iters, 1), 0.0)
        return None
    step_ms = elapsed_ms / max(step, 1)
    warmdown_ms = cfg.warmdown_iters * step_ms
    if cfg.warmdown_max_frac > 0:
        warmdown_ms = min(warmdown_ms, cfg.warmdown_max_frac * budget_ms)
    remaining_ms = max(budget_ms - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else None


def warmdown_shape(shape: str, remaining: float) -> float:
    """The LR scale with ``remaining`` of the window left: linear is ``remaining`` itself; cosine is
    ``(1 + cos(pi * p)) / 2`` at progress ``p = 1 - remaining``, flat at the start, steep at the end."""
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (1.0 - remaining)))
    if shape == "linear":
        return remaining
    raise ValueError(f"unknown warmdown shape {shape!r}: use one of {', '.join(WARMDOWN_SHAPES)}")


def lr_scale(cfg: GolfConfig, step: int, elapsed_ms: float) -> float:
    """LR multiplier: 1, then the warmdown shape over the window, never below LR_FLOOR."""
    remaining = warmdown_remaining(cfg, step, elapsed_ms)
    scale = 1.0 if remaining is None else warmdown_shape(cfg.warmdown_shape, remaining)
    return max(scale, cfg.lr_floor) if cfg.lr_floor > 0 else scale


def muon_momentum(cfg: GolfConfig, step: int, elapsed_ms: float = 0.0) -> float:
    """Linear momentum warmup from MUON_MOMENTUM_WARMUP_START to MUON_MOMENTUM, over
    MUON_MOMENTUM_WARMUP_STEPS steps or, with MUON_WARMUP_FRAC, over that fraction of the budget."""
    if cfg.muon_warmup_frac > 0:
        frac = min(budget_fraction(cfg, step, elapsed_ms) / cfg.muon_warmup_frac, 1.0)
    elif cfg.muon_momentum_warmup_steps <= 0:
        return cfg.muon_momentum
    else:
        frac = min(step / cfg.muon_momentum_warmup_steps, 1.0)
    return (1.0 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum


def budget_fraction(cfg: GolfConfig, step: int, elapsed_ms: float) -> float:
    """How much of the training budget is spent: elapsed/budget with a wallclock cap, else step/ITERATIONS."""
    budget_ms = training_budget_ms(cfg)
    if budget_ms is not None:
        return min(elapsed_ms / budget_ms, 1.0)
    return min(step / cfg.iterations, 1.0)
