"""Pieces of golf.train in-process: warmup-then-restore, bench FLOPs, the golf CLI's checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from golf.bench import model_flops_per_token
from golf.cli import main as golf_main
from golf.cli import parse_assignments
from golf.config import ConfigError, resolve
from golf.distributed import DistContext
from golf.model import build_model
from golf.optim import build_optimizers
from golf.train import Trial

CPU_CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_warmup_then_restore_leaves_no_trace(tmp_path, demo_data):
    cfg = resolve("smoke", overrides={"DATA_PATH": demo_data.data_path, "TOKENIZER_PATH": demo_data.tokenizer_path,
                                      "RUN_DIR": tmp_path / "run", "LOG_TO_FILE": 0, "WARMUP_STEPS": 3})
    trial = Trial(cfg, "baseline", "smoke", CPU_CTX)
    train_files, _, _ = trial.load_data()
    model = trial.build_model()
    base = trial.base
    optimizers = trial.training.optimizers = build_optimizers(base, cfg, trial.roles)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    trial.warmup_then_restore(model, train_files)
    after = base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not opt.state for opt in optimizers.all)
    assert all(p.grad is None for p in base.parameters())
    # the real run starts from token 0 again: a fresh loader gives the first batch
    first_x, _ = trial.new_loader(train_files).next_batch(cfg.train_batch_tokens, cfg.train_seq_len, trial.accum)
    again_x, _ = trial.new_loader(train_files).next_batch(cfg.train_batch_tokens, cfg.train_seq_len, trial.accum)
    assert torch.equal(first_x, again_x)
    trial.log.close()


def test_bench_flops_count_the_matmuls_and_attention():
    cfg = resolve("baseline")
    model = build_model(cfg, torch.device("cpu"))
    blocks = 9 * (512 * 512 * 2 + 512 * 256 * 2 + 512 * 1024 * 2)
    expected = 6 * (blocks + 1024 * 512) + 6 * 9 * 1024 * 512
    assert model_flops_per_token(model, 9, 512, 1024, tied=True) == expected


def test_assignments_parse_and_reject_junk():
    assert parse_assignments(["QAT_ENABLED=1", "RUN_DIR=a=b"]) == {"QAT_ENABLED": "1", "RUN_DIR": "a=b"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignments(["QAT_ENABLED"])


def test_golf_cli_reports_config_errors_with_exit_2(capsys):
    assert golf_main(["train", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert golf_main(["train", "--preset", "smoke", "NUM_HEADS=3"]) == 2
    assert "NUM_HEADS=3" in capsys.readouterr().err
    assert golf_main(["train", "--list-config"]) == 0
    listing = capsys.readouterr().out
    assert "QAT_ENABLED (alias ENABLE_QAT, USE_LATE_QAT, LATE_QAT)" in listing and "LAWA_INTERVAL (alias LAWA_FREQ)" in listing


@pytest.mark.slow
def test_golf_bench_measures_a_preset(tmp_path, demo_data):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "golf.cli", "bench", "--preset", "smoke", "--steps", "3", "--warmup", "1",
         "--json", str(out), f"DATA_PATH={demo_data.data_path}", f"TOKENIZER_PATH={demo_data.tokenizer_path}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["timed_steps"] == 3 and result["ms_per_step"] > 0
    assert result["tokens_per_s"] == pytest.approx(4096 / (result["ms_per_step"] / 1000))
    assert result["mfu"] is None and result["reference"]["ms_per_step"] == 43.54  # no GPU peak on CPU
    assert "ms_per_step=" in proc.stdout and "reference baseline 8xH100" in proc.stdout
