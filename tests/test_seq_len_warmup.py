"""Sequence-length warmup (techniques.md 5.5) through the recipe itself (golf.train.Trial): the
batch shapes before and after the switch, equal tokens per step, the switch at the stated fraction,
both shapes run in the warmup steps, and no crash at step 0 where #130's did."""

from __future__ import annotations

import pytest
import torch

from golf.config import ConfigError, resolve, validate
from golf.optim import build_optimizers
from golf.train import Trial
from optim_harness import CPU_CTX


def recording_trial(demo, tmp_path, **overrides):
    cfg = resolve("smoke", overrides={"DATA_PATH": demo.data_path, "TOKENIZER_PATH": demo.tokenizer_path,
                                      "RUN_DIR": tmp_path / "run", "LOG_TO_FILE": 0, **overrides})
    warnings = validate(cfg, 1, baseline=resolve("smoke"))
    trial = Trial(cfg, "baseline", "smoke", CPU_CTX, warnings)
    lines: list[str] = []
    trial.log = lines.append  # the run's log lines, in memory
    shapes: list[tuple[int, ...]] = []
    new_loader = trial.new_loader

    def recording_loader(train_files):
        loader = new_loader(train_files)
        next_batch = loader.next_batch

        def record(*args):
            x, y = next_batch(*args)
            assert x.shape == y.shape
            shapes.append(tuple(x.shape))
            return x, y

        loader.next_batch = record
        return loader

    trial.new_loader = recording_loader
    return trial, shapes, lines


def test_short_sequences_until_the_fraction_then_full_length_with_the_same_tokens(demo_data, tmp_path):
    # smoke: 4096 tokens per step in 8 micro-batches of 512 tokens; 8 steps, switch at half of them
    trial, shapes, lines = recording_trial(demo_data, tmp_path, SEQ_LEN_WARMUP=1, SEQ_LEN_START=32,
                                           SEQ_LEN_EXPAND_FRAC=0.5, ITERATIONS=8, VAL_LOSS_EVERY=0,
                                           VAL_MAX_TOKENS=4096, WARMUP_STEPS=2)
    cfg = trial.cfg
    train_files, val_tokens, byte_counter = trial.load_data()
    model = trial.build_model()
    trial.training.optimizers = build_optimizers(trial.base, cfg, trial.roles)
    trial.warmup_then_restore(model, train_files)
    accum = trial.accum
    # the warmup ran a step at each length, so a compiled model has met both shapes
    assert shapes == [(4, 128)] * accum + [(16, 32)] * accum
    shapes.clear()
    outcome = trial.train(model, train_files, val_tokens, byte_counter)
    assert outcome.steps == 8
    per_step = [shapes[i * accum:(i + 1) * accum] for i in range(8)]
    assert per_step[:4] == [[(16, 32)] * accum] * 4  # [4B, L/4]: four times the sequences
    assert per_step[4:] == [[(4, 128)] * accum] * 4  # [B, L] from the first step at budget fraction 0.5
    assert {sum(rows * length for rows, length in step) for step in per_step} == {cfg.train_batch_tokens}
    assert "seq_len_warmup:switch step:4 seq_len:32->128 budget_frac:0.500" in lines
    report = trial.techniques.report()["seq_len_warmup"]
    assert report["switch_step"] == 4 and report["steps_at_start_len"] == 4 and report["enabled"]


def test_step_zero_trains_where_130_crashed_and_a_late_fraction_never_switches(demo_data, tmp_path):
    trial, shapes, lines = recording_trial(demo_data, tmp_path, SEQ_LEN_WARMUP=1, SEQ_LEN_START=64,
                                           SEQ_LEN_EXPAND_FRAC=1.0, ITERATIONS=2, VAL_LOSS_EVERY=0,
                                           VAL_MAX_TOKENS=4096, WARMUP_STEPS=0)
    train_files, val_tokens, byte_counter = trial.load_data()
    model = trial.build_model()
    trial.training.optimizers = build_optimizers(trial.base, trial.cfg, trial.roles)
    outcome = trial.train(model, train_files, val_tokens, byte_counter)
    assert outcome.steps == 2 and set(shapes) == {(8, 64)}
    assert not any("switch" in line for line in lines)
    assert trial.techniques.report()["seq_len_warmup"]["switch_step"] is None
    assert all(torch.isfinite(p).all() for p in trial.base.parameters())


def test_lengths_that_cannot_work_are_refused_before_any_compute():
    with pytest.raises(ConfigError, match="SEQ_LEN_START=128 is not shorter than TRAIN_SEQ_LEN=128"):
        validate(resolve("smoke", overrides={"SEQ_LEN_WARMUP": 1, "SEQ_LEN_START": 128}))
    with pytest.raises(ConfigError, match="SEQ_LEN_START=96 does not divide the 512 tokens of each rank's micro-batch"):
        validate(resolve("smoke", overrides={"SEQ_LEN_WARMUP": 1, "SEQ_LEN_START": 96}))
    warnings = validate(resolve("smoke", overrides={"SEQ_LEN_WARMUP": 1, "SEQ_LEN_START": 64, "WARMUP_STEPS": 1}))
    assert any("WARMUP_STEPS=1 compiles only one of the two sequence lengths" in w for w in warnings)
    off = validate(resolve("smoke", overrides={"SEQ_LEN_START": 64}), baseline=resolve("smoke"))
    assert any("SEQ_LEN_START=64 has no effect while SEQ_LEN_WARMUP=0" in w for w in off)
