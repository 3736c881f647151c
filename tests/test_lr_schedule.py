"""LR schedule shapes (techniques.md 4.6, 5.1-5.4): cosine and linear warmdown by iterations or by
budget fraction, #326's cap, the LR floor, and the GPTQ reserve taken out of the training budget."""

from __future__ import annotations

import math

import pytest

from golf.config import ConfigError, resolve, validate
from golf.optim import budget_fraction, lr_scale, training_budget_ms
from golf.techniques.lr_schedule import LrSchedule
from optim_harness import build, smoke_config, train

CAP_MS = 600_000.0


def reference_lr_scale(cfg, step: int, elapsed_ms: float) -> float:
    """The baseline's schedule as it was before the shapes existed (techniques.md 1.5), verbatim."""
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


@pytest.mark.parametrize("preset, overrides", [
    ("baseline", {}), ("smoke", {}), ("baseline", {"WARMDOWN_ITERS": 0}), ("smoke", {"WARMDOWN_ITERS": 50}),
    ("baseline", {"MAX_WALLCLOCK_SECONDS": 0, "ITERATIONS": 300}),
])
def test_with_the_new_knobs_at_their_defaults_the_schedule_is_bit_identical(preset, overrides):
    cfg = resolve(preset, overrides=overrides)
    assert not LrSchedule.is_enabled(cfg)
    for step in range(0, 20_001, 37):
        for step_ms in (0.0, 43.54, 91.7, 250.0):
            elapsed = step * step_ms
            assert lr_scale(cfg, step, elapsed) == reference_lr_scale(cfg, step, elapsed)
    assert budget_fraction(cfg, 10, 300_000.0) == (min(300_000.0 / (cfg.max_wallclock_seconds * 1000.0), 1.0)
                                                   if cfg.max_wallclock_seconds > 0 else 10 / cfg.iterations)


def test_cosine_warmdown_by_wallclock_fraction_at_chosen_points_and_its_slopes():
    cosine = resolve("baseline", overrides={"WARMDOWN_SHAPE": "cosine", "WARMDOWN_FRAC": 0.5})
    linear = cosine.replace(warmdown_shape="linear")
    window = 0.5 * CAP_MS

    def at(cfg, p: float) -> float:  # p = progress through the window
        return lr_scale(cfg, 1000, CAP_MS - window * (1 - p))

    assert lr_scale(cosine, 10, 0.25 * CAP_MS) == 1.0  # before the window
    assert at(cosine, 0.0) == 1.0 and at(cosine, 0.5) == pytest.approx(0.5) and at(cosine, 1.0) == pytest.approx(0.0)
    assert at(cosine, 0.25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))  # above linear's 0.75
    dp = 1e-5
    assert (at(cosine, dp) - 1.0) / (dp * window) == pytest.approx(0.0, abs=1e-9)  # flat at its start
    assert (at(linear, dp) - 1.0) / (dp * window) == pytest.approx(-1.0 / window, rel=1e-6)
    assert at(linear, 0.25) == pytest.approx(0.75)


def test_cosine_by_iterations_estimated_from_step_time_and_326s_cap():
    # WARMDOWN_ITERS=3000 at 100 ms/step is a 300 s window; #326 caps it at half the run
    cfg = resolve("baseline", overrides={"WARMDOWN_SHAPE": "cosine", "WARMDOWN_ITERS": 3000})
    assert lr_scale(cfg, 4500, 450_000.0) == pytest.approx(0.5)  # 150 s left of 300 s
    capped = resolve("baseline", overrides={"WARMDOWN_ITERS": 5000, "WARMDOWN_MAX_FRAC": 0.5})
    assert lr_scale(capped, 1000, 200_000.0) == 1.0  # the uncapped 500 s window would have started
    assert lr_scale(capped, 4500, 450_000.0) == pytest.approx(0.5)  # linear over the capped 300 s
    # without a wallclock cap: the last WARMDOWN_ITERS iterations, capped at WARMDOWN_MAX_FRAC of them
    steps = resolve("smoke", overrides={"WARMDOWN_ITERS": 30, "WARMDOWN_MAX_FRAC": 0.25, "WARMDOWN_SHAPE": "cosine"})
    assert [lr_scale(steps, s, 0.0) for s in (29, 30, 35, 40)] == pytest.approx([1.0, 1.0, 0.5, 1.0])


def test_cooldown_fraction_with_the_lr_floor_130():
    cfg = resolve("baseline", environ={"COOLDOWN_FRAC": "0.6", "LR_FLOOR": "0.1"})
    assert cfg.warmdown_frac == 0.6
    assert lr_scale(cfg, 100, 0.39 * CAP_MS) == 1.0 and lr_scale(cfg, 100, 0.4 * CAP_MS) == 1.0
    assert lr_scale(cfg, 100, 0.7 * CAP_MS) == pytest.approx(0.5)
    assert lr_scale(cfg, 100, 0.9 * CAP_MS) == pytest.approx(0.1 / 0.6)
    assert lr_scale(cfg, 100, 0.97 * CAP_MS) == 0.1 and lr_scale(cfg, 100, CAP_MS) == 0.1


def test_warmdown_fraction_min_lr_and_the_gptq_reserve_1260():
    cfg = resolve("baseline", environ={"WARMDOWN_FRAC": "0.667", "MIN_LR": "0.05", "GPTQ_RESERVE_SECONDS": "10"})
    assert training_budget_ms(cfg) == 590_000.0
    budget = 590_000.0
    assert lr_scale(cfg, 100, 0.3 * budget) == 1.0
    assert lr_scale(cfg, 100, 0.6665 * budget) == pytest.approx(0.5, abs=1e-3)
    assert lr_scale(cfg, 100, budget) == 0.05
    assert budget_fraction(cfg, 100, 295_000.0) == pytest.approx(0.5)  # a fraction of 590 s, not 600 s
    with pytest.raises(ConfigError, match="GPTQ_RESERVE_SECONDS=600.0 leaves no training time"):
        validate(resolve("baseline", overrides={"GPTQ_RESERVE_SECONDS": 600}))


def test_inert_settings_are_warned_about():
    def warnings(**overrides):
        return " | ".join(validate(resolve("smoke", overrides=overrides), baseline=resolve("smoke")))

    assert "GPTQ_RESERVE_SECONDS=10.0 has no effect without a wallclock cap" in warnings(GPTQ_RESERVE_SECONDS=10)
    assert "WARMDOWN_ITERS=30 has no effect with WARMDOWN_FRAC=0.5" in warnings(WARMDOWN_FRAC=0.5, WARMDOWN_ITERS=30)
    assert "LR_FLOOR=0.1 has no effect without a warmdown" in warnings(WARMDOWN_ITERS=0, LR_FLOOR=0.1)
    assert warnings(WARMDOWN_FRAC=0.5, WARMDOWN_SHAPE="cosine", LR_FLOOR=0.1) == ""


def test_with_lr_floor_f_the_lowest_lr_of_a_run_is_f_times_the_base(demo_data):
    cfg = smoke_config(demo_data, ITERATIONS=12, WARMDOWN_ITERS=6, LR_FLOOR=0.2, WARMDOWN_SHAPE="cosine",
                       TRAIN_BATCH_TOKENS=1024, GRAD_ACCUM_STEPS=1, WARMUP_STEPS=0)
    h = build(cfg)
    ratios: list[float] = []
    step = h.run.optimizers.step

    def observed_step():  # what every optimizer group runs with, step by step
        ratios.extend(g["lr"] / g["base_lr"] for opt in h.run.optimizers.all for g in opt.param_groups)
        step()

    h.run.optimizers.step = observed_step
    train(h, cfg.iterations)
    assert min(ratios) == pytest.approx(0.2) and max(ratios) == 1.0
    report = next(t for t in h.techniques if isinstance(t, LrSchedule)).report()
    assert report["min_lr_scale"] == pytest.approx(0.2) and report["warmdown_start_step"] == 7
