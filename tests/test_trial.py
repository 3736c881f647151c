"""The trial runner: its environment and records (unit), then trials on a real local Ray with real
torchrun: golf at smoke scale, a competitor's script, failures, eval-only retries from a
checkpoint, and a scheduler's stop leaving no process behind.

One local Ray (2 CPUs) serves all the slow tests of the module.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from sweeps.experiment import RunOptions, run_sweep
from sweeps.launcher import wait_until_gone
from sweeps.results import load_results, read_written_results
from sweeps.spec import Asha, Sweep, plan_sweep
from sweeps.trial import (
    TrialError, TrialRecord, _data_env, _program_on_this_node, child_env, code_root, failure_excerpt,
    trial_config_env,
)

FAKE_SCRIPT = Path(__file__).resolve().parent / "data" / "sweeps" / "fake_train_gpt.py"
FAKE_KEYS = {"LR": float, "ITERATIONS": int, "VAL_EVERY": int, "STEP_SECONDS": float,
             "FAIL_AT_STEP": int, "FAIL_EVAL_ONCE": bool, "PID_DIR": str}
EXACT = re.compile(r"final_int8_zlib_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def run(sweep: Sweep, tmp_path: Path, **options):
    return run_sweep(sweep, RunOptions(storage=str(tmp_path / "experiments"), **options))


def fake_sweep(name: str, **fields) -> Sweep:
    fields.setdefault("uses_data", False)
    fields.setdefault("max_failures", 0)
    return Sweep(name=name, script=str(FAKE_SCRIPT), script_keys=FAKE_KEYS, **fields)


# --------------------------------------------------------------------------------- unit
def test_a_golf_childs_environment_is_the_plan_and_nothing_stray(tmp_path):
    plan = plan_sweep(Sweep(name="e", grid={"MATRIX_LR": [0.02]}, fixed={"ITERATIONS": 30}))
    config = trial_config_env(plan, {"MATRIX_LR": "0.02"}, 42,
                              {"DATA_PATH": "/d", "TOKENIZER_PATH": "/t.model"})
    assert config == {"GOLF_PRESET": "baseline", "GOLF_SCALE": "smoke", "ITERATIONS": "30",
                      "DATA_PATH": "/d", "TOKENIZER_PATH": "/t.model", "MATRIX_LR": "0.02",
                      "SEED": "42"}
    node = {"PATH": "/bin", "ENABLE_QAT": "1", "WARMUP_STEPS": "9", "GOLF_SCALE": "full",
            "CUDA_VISIBLE_DEVICES": "0,1", "PYTHONPATH": "/site"}
    env = child_env(plan, config, run_dir=tmp_path, run_id="t1", gpu_ids=[], base=node)
    assert "ENABLE_QAT" not in env and "WARMUP_STEPS" not in env  # a node's stray config is dropped
    assert env["GOLF_SCALE"] == "smoke" and env["PATH"] == "/bin"
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["OMP_NUM_THREADS"] == "1"  # a CPU trial
    assert env["RUN_DIR"] == str(tmp_path) and env["LOG_TO_FILE"] == "0" and env["RUN_ID"] == "t1"
    assert env["PYTHONPATH"] == f"{code_root()}:/site"


def test_gpu_trials_keep_rays_mask_and_scripts_keep_their_environment(tmp_path):
    gpu = plan_sweep(Sweep(name="g", seeds=[1]), scale="full", gpus_per_trial=2, environ={})
    config = trial_config_env(gpu, {}, 1, {})
    env = child_env(gpu, config, run_dir=tmp_path, run_id="t", gpu_ids=["2", "3"],
                    base={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and "OMP_NUM_THREADS" not in env
    unmasked = child_env(gpu, config, run_dir=tmp_path, run_id="t", gpu_ids=["4", "5"], base={})
    assert unmasked["CUDA_VISIBLE_DEVICES"] == "4,5"
    script = plan_sweep(Sweep(name="s", script=str(FAKE_SCRIPT), uses_data=False, seeds=[1]))
    env = child_env(script, trial_config_env(script, {}, 1, {}), run_dir=tmp_path, run_id="t",
                    gpu_ids=[], base={"ITERATIONS": "5", "PYTHONPATH": "/site"})
    assert env["ITERATIONS"] == "5" and env["PYTHONPATH"] == "/site" and "GOLF_PRESET" not in env
    assert "RUN_DIR" not in env and env["SEED"] == "1"


def test_failure_excerpt_looks_past_torchruns_own_report():
    program = [f"step:{i}/6 train_loss:5.0" for i in range(40)] + ["RuntimeError: the real reason"]
    agent = ["E1122 19:11:19.364000 21841 torch/distributed/elastic/multiprocessing/api.py:1002] "
             "failed (exitcode: 3) local_rank: 0 (pid: 21848) of binary: /venv/bin/python",
             "Traceback (most recent call last):"] + ["  File ..."] * 20 + [
             "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ", "=" * 60,
             "/work/sweeps/rankwrap.py FAILED"] + ["  exitcode  : 3"] * 10
    excerpt = failure_excerpt(program + agent, count=5)
    assert excerpt[-2:] == ["RuntimeError: the real reason", agent[0]] and len(excerpt) == 5
    assert failure_excerpt(program, count=3) == program[-3:]


def test_a_fresh_attempt_keeps_the_earlier_attempts_files(tmp_path):
    plan = plan_sweep(Sweep(name="r", seeds=[1]))
    first = TrialRecord.begin(tmp_path, plan=plan, params={}, seed=1, trial_id="a_00000",
                              trial_name="run_a_00000", eval_only=False)
    assert first.data["attempt"] == 1 and first.data["status"] == "RUNNING"
    (tmp_path / "train.log").write_text("attempt one\n")
    (tmp_path / "run").mkdir()
    second = TrialRecord.begin(tmp_path, plan=plan, params={}, seed=1, trial_id="a_00000",
                               trial_name="run_a_00000", eval_only=False)
    assert second.data["attempt"] == 2
    assert (tmp_path / "train.log.attempt1").read_text() == "attempt one\n"
    assert (tmp_path / "run.attempt1").is_dir() and not (tmp_path / "run").exists()
    (tmp_path / "train.log").write_text("attempt two trained\n")
    third = TrialRecord.begin(tmp_path, plan=plan, params={}, seed=1, trial_id="a_00000",
                              trial_name="run_a_00000", eval_only=True)
    assert third.data["attempt"] == 3 and third.eval_only
    assert (tmp_path / "train.log").read_text() == "attempt two trained\n"  # eval-only appends
    third.finish("ERROR", error="boom")
    saved = json.loads((tmp_path / "trial.json").read_text())
    assert saved["status"] == "ERROR" and saved["error"] == "boom" and saved["ended_at"]


def test_a_trial_fails_fast_and_clearly_when_its_node_lacks_data_or_script(tmp_path, monkeypatch):
    plan = plan_sweep(Sweep(name="d", seeds=[1]), scale="full",
                      environ={"DATA_PATH": str(tmp_path / "shards"), "TOKENIZER_PATH": "/no/tok.model"})
    with pytest.raises(TrialError) as caught:
        _data_env(plan)
    message = str(caught.value)
    assert f"DATA_PATH={tmp_path / 'shards'}" in message and "TOKENIZER_PATH=/no/tok.model" in message
    assert "--set DATA_PATH=" in message
    (tmp_path / "shards").mkdir()
    (tmp_path / "tok.model").write_bytes(b"x")
    present = plan_sweep(Sweep(name="d", seeds=[1]), scale="full",
                         environ={"DATA_PATH": str(tmp_path / "shards"),
                                  "TOKENIZER_PATH": str(tmp_path / "tok.model")})
    assert _data_env(present) == {}  # the paths travel in the plan's fixed environment

    script = tmp_path / "train_gpt.py"
    script.write_text("print(1)\n")
    relative = plan_sweep(Sweep(name="s", script="train_gpt.py", uses_data=False, seeds=[1]),
                          cwd=tmp_path)
    job_dir = tmp_path / "job_working_dir"
    job_dir.mkdir()
    (job_dir / "train_gpt.py").write_text("print(2)\n")
    # On a worker the relative path is found in the job's working_dir first.
    monkeypatch.setenv("TUNE_ORIG_WORKING_DIR", str(job_dir))
    assert _program_on_this_node(relative).script == str(job_dir / "train_gpt.py")
    (job_dir / "train_gpt.py").unlink()
    assert _program_on_this_node(relative).script == str(script)  # then the driver's path
    script.unlink()
    with pytest.raises(TrialError, match="script train_gpt.py not found on node"):
        _program_on_this_node(relative)


# --------------------------------------------------------------------------------- on Ray
@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_golf_trial_at_smoke_scale_lands_in_the_table_with_its_own_numbers(tmp_path):
    sweep = Sweep(name="golf_smoke", preset="baseline", seeds=[1337],
                  fixed={"ITERATIONS": 12, "QUANT_FORMAT": "int6", "COMPRESSOR": "zstd"})
    outcome = run(sweep, tmp_path)
    assert outcome.all_finished
    row = outcome.table.iloc[0]
    trial_dir = Path(row["trial_dir"])
    result = json.loads((trial_dir / "run" / "result.json").read_text())
    assert result["status"] == "ok" and result["seed"] == 1337 and result["scale"] == "smoke"
    assert result["config"]["quant_format"] == "int6" and result["config"]["iterations"] == 12
    assert row["val_bpb"] == result["metrics"]["val_bpb"]
    assert row["val_loss"] == result["metrics"]["val_loss"]
    assert row["headline_metric"] == result["metrics"]["headline_metric"]
    assert row["bytes_total"] == result["bytes"]["total"] and bool(row["under_limit"])
    assert row["train_s"] == result["timing"]["train_s"] and row["steps"] == 12

    record = json.loads((trial_dir / "trial.json").read_text())
    assert record["status"] == "TERMINATED" and record["nproc"] == 1
    assert record["cuda_visible_devices"] == ""
    assert record["env"]["GOLF_PRESET"] == "baseline" and record["env"]["GOLF_SCALE"] == "smoke"
    assert Path(record["env"]["DATA_PATH"]).is_absolute()
    assert record["command"].endswith("torchrun --standalone --nproc_per_node=1 -m golf.train")
    # golf wrote into RUN_DIR=<trial>/run (not over Tune's own result.json) and did not write its
    # own log (LOG_TO_FILE=0): the service's train.log is the only one.
    assert result["config"]["run_dir"] == str(trial_dir / "run") and not result["config"]["log_to_file"]
    assert not (trial_dir / "run" / "train.log").exists()
    log = (trial_dir / "train.log").read_text()
    assert f"artifact_saved: {trial_dir / 'run'}" in log
    # The artifact was checkpointed for eval-only retries.
    checkpoint = trial_dir / "checkpoint_000000"
    state = json.loads((checkpoint / "train_state.json").read_text())
    assert (checkpoint / state["artifact_file"]).is_file()
    # Tune got live step/val_bpb reports before the final one.
    progress = pd.read_csv(trial_dir / "progress.csv")
    assert list(progress["phase"])[-1] == "final"
    live = progress[progress["phase"] == "train"]
    assert len(live) >= 3 and live["val_bpb"].notna().all() and live["step"].is_monotonic_increasing
    assert progress["val_bpb"].iloc[-1] == result["metrics"]["val_bpb"]


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_foreign_script_on_two_ranks_and_a_failing_trial(tmp_path):
    sweep = fake_sweep(
        "foreign", cpu_procs=2, seeds=[7],
        configs=[{"LR": 0.1}, {"LR": 0.5}, {"LR": 0.3, "FAIL_AT_STEP": 3}],
        fixed={"ITERATIONS": 6, "STEP_SECONDS": 0.02})
    outcome = run(sweep, tmp_path)
    table = outcome.table.set_index("label")
    assert not outcome.all_finished
    for label in ("LR=0.1", "LR=0.5"):
        row = table.loc[label]
        assert row["status"] == "TERMINATED" and pd.isna(row["error"])
        log = Path(row["trial_dir"], "train.log").read_text()
        loss, bpb = (float(v) for v in EXACT.search(log).groups())
        assert row["val_bpb"] == bpb and row["val_loss"] == loss
        total = int(re.search(r"Total submission size int8\+zlib: (\d+) bytes", log).group(1))
        assert row["bytes_total"] == total and row["steps"] == 6 and row["world_size"] == 2
        ranks = re.findall(r"rank_env: rank:(\d) local_rank:(\d) world_size:2 cuda_visible_devices:(\S*)", log)
        assert sorted(ranks) == [("0", "0", ""), ("1", "1", "")]
    failed = table.loc["FAIL_AT_STEP=3,LR=0.3"] if "FAIL_AT_STEP=3,LR=0.3" in table.index \
        else table.loc["LR=0.3,FAIL_AT_STEP=3"]
    assert failed["status"] == "ERROR"
    assert "exited with status" in failed["error"]
    assert "fake failure at step 3" in failed["error"]  # the log's tail is in the table
    record = json.loads(Path(failed["trial_dir"], "trial.json").read_text())
    assert record["status"] == "ERROR" and "fake failure at step 3" in record["error"]
    # The table written while the sweep ran is the one the trial directories give.
    pd.testing.assert_frame_equal(read_written_results(outcome.experiment_dir),
                                  load_results(outcome.experiment_dir))


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_trial_lost_during_evaluation_is_retried_from_its_checkpoint_without_training(tmp_path):
    sweep = fake_sweep("eval_retry", seeds=[3], max_failures=1,
                       fixed={"ITERATIONS": 4, "STEP_SECONDS": 0.02, "FAIL_EVAL_ONCE": 1})
    outcome = run(sweep, tmp_path)
    assert outcome.all_finished
    row = outcome.table.iloc[0]
    trial_dir = Path(row["trial_dir"])
    record = json.loads((trial_dir / "trial.json").read_text())
    assert record["attempt"] == 2 and record["eval_only"] and record["status"] == "TERMINATED"
    log = (trial_dir / "train.log").read_text()
    assert log.count("step:1/4 train_loss") == 1  # trained once
    assert "simulated node loss during evaluation" in log
    assert "evaluating the checkpointed artifact" in log and "eval_only: artifact model.bin from" in log
    loss, bpb = (float(v) for v in EXACT.search(log).groups())
    assert row["val_bpb"] == bpb and row["val_loss"] == loss
    expected = 4.0 + 2.5 * math.exp(-0.3 * 4) + 3 / 1000.0 + 0.01  # the fake's formula, seed 3
    assert loss == pytest.approx(expected, abs=1e-8)
    assert (trial_dir / "checkpoint_000000" / "model.bin").is_file()


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_scheduler_stop_ends_the_trial_and_all_its_processes(tmp_path):
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    # One at a time, the better config first: ASHA keeps the first trial to reach a rung and stops
    # a later, worse one there, so the second trial is stopped at step 2 of 40.
    sweep = fake_sweep("asha", cpu_procs=2, seeds=[1], configs=[{"LR": 0.5}, {"LR": 0.05}],
                       fixed={"ITERATIONS": 40, "VAL_EVERY": 1, "STEP_SECONDS": 0.1,
                              "PID_DIR": str(pid_dir)},
                       scheduler=Asha(grace_steps=2, max_steps=40, reduction_factor=2))
    outcome = run(sweep, tmp_path, max_concurrent=1)
    table = outcome.table.set_index("label")
    assert table.loc["LR=0.5", "status"] == "TERMINATED"
    stopped = table.loc["LR=0.05"]
    assert stopped["status"] == "STOPPED" and pd.isna(stopped["val_bpb"])
    assert stopped["steps"] < 40 and not pd.isna(stopped["last_val_bpb"])
    pids = [int(p.read_text()) for p in pid_dir.glob("rank*.pid")]
    assert len(pids) == 4  # two trials, two ranks each
    assert wait_until_gone(pids, timeout_s=20) == []
