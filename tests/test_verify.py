"""Verification batches: choosing configs, compliance, and the record folder for a PR."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sweeps.results import config_values, load_results
from sweeps.spec import plan_sweep
from sweeps.submissions import load_submission
from sweeps.verify import (
    VerifyError, check_compliance, top_configs, verification_sweep, write_record,
)

DATA = Path(__file__).resolve().parent / "data" / "sweeps"
EXPERIMENT = DATA / "experiment_qat_small"
LEADERBOARD = DATA / "leaderboard_smoke.csv"


@pytest.fixture
def experiment(tmp_path) -> Path:
    target = tmp_path / "qat_small"
    shutil.copytree(EXPERIMENT, target)
    return target


def _args(**given) -> dict:
    values = dict(preset=None, source=None, top=1, seeds="1337,42,2024", scale=None, overrides=[],
                  name=None, max_failures=2)
    values.update(given)
    return values


def _rows(**columns) -> pd.DataFrame:
    base = dict(seed=[1, 2], status=["TERMINATED", "TERMINATED"], bytes_total=[15_000_000, 15_500_000],
                train_s=[590.0, 599.0], eval_s=[80.0, 90.0], error=[None, None])
    base.update(columns)
    return pd.DataFrame(base)


def test_compliance_counts_the_submitted_script():
    rows = _rows(bytes_model=[15_950_000, 15_000_000], bytes_code=[50_001, 50_001],
                 bytes_total=[16_000_001, 15_050_001])
    # the runs counted what the folder holds: the larger seed is over by one byte
    over = check_compliance(rows, smoke=True, script_bytes=50_001)
    assert over.violations == ["seed 1: artifact 16,000,001 bytes is over the 16,000,000-byte limit"]
    assert "code: train_gpt.py, 50,001 bytes, counted in every seed's total" in over.checks
    # a script that is not the one the runs counted is named, and its own bytes decide the size
    other = check_compliance(rows, smoke=True, script_bytes=50_000)
    assert other.violations == [
        "seed 1: the run counted 50,001 code bytes, but train_gpt.py is 50,000 bytes",
        "seed 2: the run counted 50,001 code bytes, but train_gpt.py is 50,000 bytes"]
    missing = check_compliance(rows.assign(bytes_total=[15_000_000, 15_000_000]), smoke=True,
                               script_problem="no train_gpt.py: ...")
    assert missing.violations == ["no train_gpt.py: ..."]


def test_compliance_checks_size_time_and_completion():
    assert check_compliance(_rows(), smoke=False).ok
    over = check_compliance(_rows(bytes_total=[16_000_001, 15_000_000], train_s=[601.5, 500.0],
                                  eval_s=[80.0, 612.0]), smoke=False)
    assert over.violations == [
        "seed 1: artifact 16,000,001 bytes is over the 16,000,000-byte limit",
        "seed 1: training took 601.5 s, over the 600 s limit",
        "seed 2: evaluation took 612.0 s, over the 600 s limit",
    ]
    failed = check_compliance(_rows(status=["TERMINATED", "ERROR"], error=[None, "boom\nlast lines"]),
                              smoke=False)
    assert failed.violations == ["seed 2 did not finish (ERROR): boom"]
    smoke = check_compliance(_rows(train_s=[900.0, 900.0]), smoke=True)
    assert smoke.ok and any("not checked at smoke scale" in c for c in smoke.checks)


def test_top_configs_rank_by_mean_val_bpb(experiment):
    assert top_configs(str(experiment), 1) == [{"QAT_ENABLED": "1"}]
    assert top_configs(str(experiment), 2) == [{"QAT_ENABLED": "1"}, {"QAT_ENABLED": "0"}]
    with pytest.raises(VerifyError, match="has only 2 config"):
        top_configs(str(experiment), 3)


def test_verification_sweeps_from_a_preset_or_an_experiment(experiment):
    sweep, scale = verification_sweep(**_args(preset="smoke", overrides=["ITERATIONS=30"]))
    assert scale == "smoke" and sweep.fixed == {"ITERATIONS": "30"} and sweep.seeds == (1337, 42, 2024)
    assert sweep.scheduler is None and sweep.name == "verify_smoke"
    sweep, scale = verification_sweep(**_args(source=str(experiment), top=1, seeds="5,6"))
    assert scale == "smoke" and sweep.configs == [{"QAT_ENABLED": "1"}]
    assert sweep.fixed == {"QUANT_FORMAT": "int6", "COMPRESSOR": "zstd", "ITERATIONS": "10"}
    assert sweep.name == "verify_qat_small_top1_smoke"
    plan = plan_sweep(sweep, scale=scale)
    assert plan.labels == ("QAT_ENABLED=1",) and plan.seeds == (5, 6)
    with pytest.raises(VerifyError, match="swept by the source"):
        verification_sweep(**_args(source=str(experiment), overrides=["QAT_ENABLED=0"]))
    with pytest.raises(VerifyError, match="--preset NAME"):
        verification_sweep(**_args())
    with pytest.raises(VerifyError, match="sweep.json is missing"):
        verification_sweep(**_args(source=str(experiment / "e3d9e_00000_QAT_ENABLED=0_seed1337")))


def test_record_folder_of_a_smoke_config_with_a_failed_seed(experiment, tmp_path):
    sweep, scale = verification_sweep(**_args(source=str(experiment), top=1))
    table = load_results(experiment)
    plan = plan_sweep(sweep, scale=scale, seeds=(1337, 42, 2024))
    rows = table[table["label"] == "QAT_ENABLED=1"]
    folder, compliance = write_record(
        rows, label="QAT_ENABLED=1", scale="smoke", plan=plan, out_dir=tmp_path / "records",
        experiment_dir=str(experiment), command="sweeps verify --from X --top 1",
        leaderboard=str(LEADERBOARD), author="tester", github_id="tester-gh")
    assert folder.name.endswith("SMOKE-TEST_baseline_QAT_ENABLED=1")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "submission.json", "train_seed1337.log", "train_seed2024.log", "train_seed42.log"]
    assert compliance.violations and "seed 2024 did not finish (ERROR)" in compliance.violations[0]
    # these trials are older than golf's bundle: the folder says that it lacks the code
    assert any(v.startswith("no train_gpt.py") for v in compliance.violations)

    submission = load_submission(folder / "submission.json")
    assert submission.seeds == ("1337", "42")  # only finished seeds carry numbers
    assert sorted(submission.per_seed_values("bpb")) == sorted(config_values(table, "QAT_ENABLED=1"))
    assert submission.raw["smoke_test"] is True and submission.name.startswith("SMOKE TEST")
    assert submission.raw["compliance"]["ok"] is False
    assert submission.bytes_total == int(rows["bytes_total"].max())
    assert submission.raw["pytorch_version"] and submission.hardware == "1 x cpu:x86_64"

    readme = (folder / "README.md").read_text()
    assert readme.startswith("# SMOKE TEST (not a record)")
    assert "Smoke test, not a record" in readme
    assert "**VIOLATION:** seed 2024 did not finish (ERROR)" in readme
    assert "| 1337 | TERMINATED | 3.62927" in readme
    assert "Smoke reference (3.7000 bpb)" in readme and "acceptance test" in readme
    assert "n = 2 seeds" in readme
    assert "GOLF_PRESET=baseline GOLF_SCALE=smoke" in readme and "torchrun --standalone" in readme
    log = (folder / "train_seed1337.log").read_text()
    assert log == (Path(rows.iloc[0]["trial_dir"]) / "train.log").read_text()


@pytest.mark.slow
def test_verify_at_smoke_scale_writes_a_valid_record_folder(tmp_path):
    command = [str(Path(sys.executable).parent / "sweeps"), "verify", "--preset", "smoke",
               "--seeds", "1337,42", "--set", "ITERATIONS=6", "--storage", str(tmp_path / "exp"),
               "--out", str(tmp_path / "records"), "--leaderboard", str(LEADERBOARD),
               "--author", "tester", "--github-id", "tester"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    folders = list((tmp_path / "records").iterdir())
    assert len(folders) == 1 and "SMOKE-TEST" in folders[0].name
    folder = folders[0]
    assert f"record folder: {folder}" in done.stdout and "compliance: every check passed" in done.stdout
    submission = load_submission(folder / "submission.json")
    assert submission.seeds == ("1337", "42")
    table = load_results(tmp_path / "exp" / "verify_smoke")
    for result in submission.per_seed:
        row = table[table["seed"] == int(result.seed)].iloc[0]
        run = json.loads((Path(row["trial_dir"]) / "run" / "result.json").read_text())
        assert result.val_bpb == run["metrics"]["val_bpb"] and result.val_loss == run["metrics"]["val_loss"]
        assert result.artifact_bytes == run["bytes"]["total"] and result.steps == 6
        assert result.eval_time_s == run["timing"]["eval_s"]
        log = (folder / f"train_seed{result.seed}.log").read_text()
        assert f"seed:{result.seed}" in log and "final_int8_zlib_roundtrip_exact" in log
    readme = (folder / "README.md").read_text()
    assert "Smoke test, not a record" in readme and "every check passed" in readme
    # the folder holds the code the seeds ran and counted: the bundle every run wrote
    script = (folder / "train_gpt.py").read_bytes()
    assert submission.code_bytes == len(script) and f"`train_gpt.py`: the code, {len(script):,} bytes" in readme
    for result in submission.per_seed:
        row = table[table["seed"] == int(result.seed)].iloc[0]
        assert (Path(row["trial_dir"]) / "run" / "train_gpt.py").read_bytes() == script
        assert result.artifact_bytes == int(row["bytes_model"]) + len(script)
    # ... and that script reruns a seed to the same val_bpb, with only the seed, data and run
    # folder in its environment
    first = submission.per_seed[0]
    row = table[table["seed"] == int(first.seed)].iloc[0]
    config = json.loads((Path(row["trial_dir"]) / "run" / "result.json").read_text())["config"]
    rerun_env = {**env, "OMP_NUM_THREADS": "1", "SEED": first.seed, "RUN_DIR": str(tmp_path / "rerun"),
                 "DATA_PATH": config["data_path"], "TOKENIZER_PATH": config["tokenizer_path"]}
    rerun = subprocess.run([sys.executable, str(folder / "train_gpt.py")], cwd=tmp_path, env=rerun_env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((tmp_path / "rerun" / "result.json").read_text())["metrics"]["val_bpb"] == first.val_bpb
