"""Every optimizer and schedule toggle trains at smoke scale, alone and with all the others on: in
process for the quick subset, and one real `golf train` process with all of them on (slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from golf.techniques.lr_schedule import LrSchedule
from golf.techniques.momentum_warmup import MomentumWarmup
from golf.techniques.muoneq import MuonEq
from golf.techniques.normuon import NorMuon
from golf.techniques.polar_ns import PolarNs
from golf.techniques.seq_len_warmup import SeqLenWarmup
from golf.techniques.weight_decay import WeightDecay
from optim_harness import build, smoke_config, train

STEPS = 20
SMALL = {"TRAIN_BATCH_TOKENS": 1024, "GRAD_ACCUM_STEPS": 1, "ITERATIONS": STEPS, "WARMUP_STEPS": 0}
ALONE = {
    WeightDecay: {"MUON_WD": 0.04, "ADAM_WD": 0.02, "EMBED_WD": 0.085},
    MomentumWarmup: {"MUON_WARMUP_FRAC": 0.15},
    MuonEq: {"MUONEQ_MODE": "rowcol"},
    NorMuon: {"NORMUON_ENABLED": 1, "NORMUON_MODE": "norm_preserving"},
    PolarNs: {"POLAR_NS": 1},
    LrSchedule: {"WARMDOWN_SHAPE": "cosine", "WARMDOWN_FRAC": 0.5, "LR_FLOOR": 0.1},
    SeqLenWarmup: {"SEQ_LEN_WARMUP": 1, "SEQ_LEN_START": 32},
}
ALL_ON = {
    "MUON_WD": 0.04, "ADAM_WD": 0.02, "EMBED_WD": 0.085, "MUON_WARMUP_FRAC": 0.15, "MUON_EQ_R": 1,
    "NORMUON_ENABLED": 1, "POLAR_NS": 1, "WARMDOWN_SHAPE": "cosine", "WARMDOWN_FRAC": 0.5, "LR_FLOOR": 0.1,
    "SEQ_LEN_WARMUP": 1, "SEQ_LEN_START": 32, "SEQ_LEN_EXPAND_FRAC": 0.5,
    "MATRIX_LR": 0.02,  # #137's NorMuon LR: its rows end near RMS 1, about 8x plain Muon's at width 64
}


def trains(demo, settings: dict, active: list[type]) -> None:
    cfg = smoke_config(demo, **SMALL, **settings)
    h = build(cfg)
    assert all(any(isinstance(t, technique) for t in h.techniques) for technique in active)
    initial = {n: p.detach().clone() for n, p in h.run.model.named_parameters()}
    losses = train(h, STEPS)
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    assert all(torch.isfinite(p).all() for p in h.run.model.parameters())
    moved = [n for n, p in h.run.model.named_parameters() if not torch.equal(p.detach(), initial[n])]
    assert len(moved) == len(initial)  # every parameter trained
    assert min(losses[-5:]) < losses[0]


@pytest.mark.parametrize("technique", list(ALONE), ids=lambda t: t.name)
def test_each_toggle_alone_trains_twenty_smoke_steps(demo_data, technique):
    trains(demo_data, ALONE[technique], [technique])


def test_all_toggles_together_train_twenty_smoke_steps(demo_data):
    trains(demo_data, ALL_ON, list(ALONE))


@pytest.mark.slow
def test_a_real_golf_train_run_with_every_optimizer_toggle_on(tmp_path, demo_data):
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOLF_")}
    env.update({"GOLF_PRESET": "smoke", "DATA_PATH": str(demo_data.data_path), "RUN_DIR": str(run_dir),
                "TOKENIZER_PATH": str(demo_data.tokenizer_path), "OMP_NUM_THREADS": "1",
                **{k: str(v) for k, v in ALL_ON.items()}})
    proc = subprocess.run([sys.executable, "-m", "golf.train"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    log = (run_dir / "train.log").read_text()
    assert result["status"] == "ok" and result["warnings"] == [] and result["timing"]["steps"] == 40
    assert math.isfinite(result["metrics"]["val_bpb"])
    t = result["techniques"]
    assert t["weight_decay"] == {"enabled": True, "muon_wd": 0.04, "adam_wd": 0.02, "embed_wd": 0.085}
    assert t["momentum_warmup"]["final_from_step"] == 6  # 0.15 of 40 iterations
    assert t["muoneq"]["mode"] == "row" and t["polar_ns"]["iterations"] == 5
    assert t["normuon"]["matrix_updates_rank0"] == 40 * 6 * 4  # every step, every matrix of the 4 blocks
    assert t["lr_schedule"]["warmdown_start_step"] == 21 and t["lr_schedule"]["min_lr_scale"] == pytest.approx(0.1)
    assert t["seq_len_warmup"]["switch_step"] == 20
    assert "seq_len_warmup:switch step:20 seq_len:32->128 budget_frac:0.500" in log
    assert "warmup_step:2/2" in log and "momentum_warmup:done step:6" in log
