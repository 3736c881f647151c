"""Depth recurrence's prewarm (techniques.md 7.15, #1260): the warmup also runs the recurrent layer
order, so the compiled model does not recompile when recurrence switches on mid-run; the warmup
leaves no trace (order, weights, optimizer state)."""

from __future__ import annotations

import pytest
import torch

from golf.config import resolve, validate
from golf.optim import build_optimizers, lr_scale
from golf.techniques import Progress
from golf.train import Trial, apply_update
from optim_harness import CPU_CTX

START = 2


def recurrent_trial(demo, tmp_path, **overrides) -> tuple[Trial, list[str]]:
    cfg = resolve("smoke", overrides={
        "DATA_PATH": demo.data_path, "TOKENIZER_PATH": demo.tokenizer_path, "RUN_DIR": tmp_path / "run",
        "LOG_TO_FILE": 0, "NUM_LAYERS": 4, "MODEL_DIM": 64, "NUM_HEADS": 4, "NUM_KV_HEADS": 2,
        "TRAIN_BATCH_TOKENS": 1024, "GRAD_ACCUM_STEPS": 1, "ITERATIONS": 4, "WARMUP_STEPS": 1,
        "RECUR_LAYERS": "1,2", "RECUR_START_STEP": START, **overrides,
    })
    trial = Trial(cfg, "baseline", "smoke", CPU_CTX, validate(cfg, 1, baseline=resolve("smoke")))
    lines: list[str] = []
    trial.log = lines.append
    return trial, lines


def test_the_warmup_runs_the_recurrent_order_then_restores_everything(demo_data, tmp_path):
    trial, lines = recurrent_trial(demo_data, tmp_path)
    train_files, _, _ = trial.load_data()
    model = trial.build_model()
    trial.training.optimizers = build_optimizers(trial.base, trial.cfg, trial.roles)
    orders: list[tuple[int, ...]] = []
    forward = trial.base.forward
    trial.base.forward = lambda *a: (orders.append(trial.base.layer_order), forward(*a))[1]
    initial = {k: v.clone() for k, v in trial.base.state_dict().items()}
    trial.warmup_then_restore(model, train_files)
    assert orders == [(0, 1, 2, 3), (0, 1, 2, 1, 2, 3)]  # one plain warmup step, one recurrent
    assert lines == ["warmup_step:1/1", "recurrence:prewarm active=1 virtual_layers:6", "future_warmup_step:1/1"]
    assert trial.base.layer_order == (0, 1, 2, 3)
    assert all(torch.equal(v, initial[k]) for k, v in trial.base.state_dict().items())
    assert all(not opt.state for opt in trial.training.optimizers.all)
    assert trial.techniques.report()["depth_recurrence"]["activated_at_step"] is None


def test_no_prewarm_when_recurrence_is_on_from_the_start(demo_data, tmp_path):
    trial, lines = recurrent_trial(demo_data, tmp_path, RECUR_START_STEP=0)
    train_files, _, _ = trial.load_data()
    model = trial.build_model()
    trial.training.optimizers = build_optimizers(trial.base, trial.cfg, trial.roles)
    trial.warmup_then_restore(model, train_files)
    assert lines == ["recurrence:activated step:0 layers:[1, 2] virtual_layers:6", "warmup_step:1/1"]


@pytest.mark.slow
def test_the_compiled_model_does_not_recompile_when_recurrence_switches_on(demo_data, tmp_path):
    import torch._dynamo

    torch._dynamo.reset()
    trial, lines = recurrent_trial(demo_data, tmp_path, TORCH_COMPILE="1")
    cfg = trial.cfg
    train_files, _, _ = trial.load_data()
    model = trial.build_model()
    assert trial.compiled
    trial.training.optimizers = build_optimizers(trial.base, cfg, trial.roles)
    trial.warmup_then_restore(model, train_files)
    loader = trial.new_loader(train_files)
    model.train()
    # Training steps as Trial.train takes them, across the activation step: any recompile raises.
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(START + 2):
            scale = lr_scale(cfg, step, 0.0)
            trial.techniques.before_step(Progress(step, scale, step / cfg.iterations, 0.0), trial.training)
            loss = trial.train_step(model, loader)
            apply_update(trial.base, trial.training.optimizers, cfg, step, scale)
            assert torch.isfinite(loss)
    assert f"recurrence:activated step:{START} layers:[1, 2] virtual_layers:6" in lines
    assert trial.base.layer_order == (0, 1, 2, 1, 2, 3)
