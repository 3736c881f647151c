"""Learning-rate scale and Muon momentum as functions of progress (techniques.md 1.4, 1.5)."""

from __future__ import annotations

from golf.config import GolfConfig


def lr_scale(cfg: GolfConfig, step: int, elapsed_ms: float) -> float:
    """LR multiplier: 1, then a linear decay to 0 over the last WARMDOWN_ITERS (expected) steps.

    With a wallclock cap the warmdown window is estimated from the average step time so far, so
    the decay ends when the cap does; without one it is the last WARMDOWN_ITERS iterations.
    """
    if cfg.warmdown_iters <= 0:
        return 1.0
    if cfg.max_wallclock_seconds <= 0:
        warmdown_start = max(cfg.iterations - cfg.warmdown_iters, 0)
        if warmdown_start <= step < cfg.iterations:
            return max((cfg.iterations - step) / max(cfg.warmdown_iters, 1), 0.0)
        return 1.0
    step_ms = elapsed_ms / max(step, 1)
    warmdown_ms = cfg.warmdown_iters * step_ms
    remaining_ms = max(cfg.max_wallclock_seconds * 1000.0 - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0


def muon_momentum(cfg: GolfConfig, step: int) -> float:
    """Linear momentum warmup from MUON_MOMENTUM_WARMUP_START to MUON_MOMENTUM."""
    if cfg.muon_momentum_warmup_steps <= 0:
        return cfg.muon_momentum
    frac = min(step / cfg.muon_momentum_warmup_steps, 1.0)
    return (1.0 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum


def budget_fraction(cfg: GolfConfig, step: int, elapsed_ms: float) -> float:
    """How much of the training budget is spent: elapsed/cap with a wallclock cap, else step/ITERATIONS."""
    if cfg.max_wallclock_seconds > 0:
        return min(elapsed_ms / (cfg.max_wallclock_seconds * 1000.0), 1.0)
    return min(step / cfg.iterations, 1.0)
