"""Each data key keeps its own default (issue 7, defect 4), and the plan's `data:` line shows both.

Setting TOKENIZER_PATH alone used to switch DATA_PATH to the full-scale default
(/data/golf/datasets/fineweb10B_sp1024), and the trial then failed with "data missing on node" for
a path the user never typed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps import trial as trial_module
from sweeps.experiment import RunOptions, run_sweep
from sweeps.spec import DEFAULT_DATA_PATH, DEFAULT_TOKENIZER_PATH, Sweep, plan_sweep
from sweeps.trial import TrialError, _data_env, trial_config_env

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo_here(demo_data, monkeypatch):
    """Trials find the session's demo corpus as this node's (no build into the checkout)."""
    monkeypatch.setattr(trial_module, "demo_root", lambda: demo_data.data_path.parent.parent)
    return demo_data


def test_setting_the_tokenizer_alone_keeps_the_demo_shards(demo_here, tmp_path):
    tokenizer = tmp_path / "my.model"
    tokenizer.write_bytes(demo_here.tokenizer_path.read_bytes())
    plan = plan_sweep(Sweep(name="t", seeds=[1]), overrides={"TOKENIZER_PATH": str(tokenizer)})
    assert "DATA_PATH" not in plan.fixed_env and plan.fixed_env["TOKENIZER_PATH"] == str(tokenizer)
    assert plan.demo_keys == ("DATA_PATH",)
    env = trial_config_env(plan, {}, 1, _data_env(plan))
    assert env["DATA_PATH"] == str(demo_here.data_path) and env["TOKENIZER_PATH"] == str(tokenizer)
    assert DEFAULT_DATA_PATH not in env.values()


def test_setting_the_shards_alone_keeps_the_demo_tokenizer(demo_here, tmp_path):
    plan = plan_sweep(Sweep(name="d", seeds=[1]), overrides={"DATA_PATH": "shards"}, cwd=tmp_path)
    assert plan.fixed_env["DATA_PATH"] == str(tmp_path / "shards") and plan.demo_keys == ("TOKENIZER_PATH",)
    with pytest.raises(TrialError) as caught:  # the folder does not exist: only it is named
        _data_env(plan)
    assert f"DATA_PATH={tmp_path / 'shards'}" in str(caught.value)
    missing = str(caught.value).split(". Put the data")[0]
    assert "TOKENIZER_PATH" not in missing  # the demo tokenizer is not reported missing
    (tmp_path / "shards").mkdir()
    assert _data_env(plan) == {"TOKENIZER_PATH": str(demo_here.tokenizer_path)}


def test_full_scale_defaults_stay_per_key():
    plan = plan_sweep(Sweep(name="f", seeds=[1]), scale="full", environ={"DATA_PATH": "/mnt/shards"},
                      overrides={"TOKENIZER_PATH": "/mnt/tok.model"})
    assert plan.fixed_env["DATA_PATH"] == "/mnt/shards" and plan.fixed_env["TOKENIZER_PATH"] == "/mnt/tok.model"
    plan = plan_sweep(Sweep(name="f", seeds=[1]), scale="full", environ={}, overrides={"TOKENIZER_PATH": "/t.model"})
    assert plan.fixed_env["DATA_PATH"] == DEFAULT_DATA_PATH and plan.fixed_env["TOKENIZER_PATH"] == "/t.model"
    assert plan.demo_keys == ()
    assert plan_sweep(Sweep(name="f", seeds=[1]), scale="full", environ={}).fixed_env["TOKENIZER_PATH"] == \
        DEFAULT_TOKENIZER_PATH


def test_the_plans_data_line_shows_both_paths(demo_here):
    out = io.StringIO()
    run_sweep(Sweep(name="p", seeds=[1]), RunOptions(dry_run=True, overrides={"TOKENIZER_PATH": "/x/tok.model"}),
              out=out)
    (line,) = [line for line in out.getvalue().splitlines() if line.strip().startswith("data:")]
    assert f"DATA_PATH={demo_here.data_path}" in line and "TOKENIZER_PATH=/x/tok.model" in line
    assert "DATA_PATH: the demo corpus" in line


def test_dry_run_in_a_real_process_shows_both_paths(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "DATA_PATH", "TOKENIZER_PATH")}
    env.update(PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps.cli", "run", str(REPO_ROOT / "sweeps" / "qat_vs_lawa.py"), "--dry-run",
         "--set", "TOKENIZER_PATH=/x/tok.model"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.strip().startswith("data:")]
    assert "DATA_PATH=" in line and "demo_sp1024" in line and "TOKENIZER_PATH=/x/tok.model" in line
    assert DEFAULT_DATA_PATH not in proc.stdout
