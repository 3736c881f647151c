"""Experiment trackers through Ray Tune's own callbacks: the ``--track`` grammar, the checks made
before Ray starts, the callbacks built, and (slow) a real local sweep logged to an MLflow file
store and to W&B offline runs, read back with MLflow's client and from W&B's run files.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps import trackers as trk
from sweeps.cli import add_sweep_options, main as sweeps_main, options_from_args
from sweeps.experiment import RunOptions, run_sweep
from sweeps.spec import Sweep, plan_sweep
from sweeps.trackers import (
    INSTALL_HINT, MLflowTracker, TrackerError, TrackerRequest, WandbTracker, apply_environment,
    parse_tracker, resolve_trackers, sweep_trackers,
)

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "/data/experiments/tracked"


def _resolve(*texts: str, env: dict[str, str] | None = None, wandb_mode: str = "auto",
             experiment_dir: str = EXPERIMENT):
    return resolve_trackers([parse_tracker(t) for t in texts], experiment_dir=experiment_dir,
                            experiment_name="tracked", tags={"scale": "smoke"},
                            wandb_mode=wandb_mode, env=env if env is not None else {})


# --------------------------------------------------------------------------------- the grammar
def test_parse_tracker_forms():
    assert parse_tracker("mlflow") == TrackerRequest("mlflow")
    assert parse_tracker("MLflow:http://host:5000") == TrackerRequest("mlflow", "http://host:5000")
    assert parse_tracker("mlflow:file:///tmp/mlruns") == TrackerRequest("mlflow", "file:///tmp/mlruns")
    assert parse_tracker("wandb") == TrackerRequest("wandb")
    assert parse_tracker("wandb:golf") == TrackerRequest("wandb", "golf")


@pytest.mark.parametrize("text, needle", [
    ("tensorboard", "use mlflow[:TRACKING_URI] or wandb[:PROJECT]"),
    ("wandb:", "nothing after ':'"),
    ("mlflow: ", "nothing after ':'"),
])
def test_parse_tracker_refuses(text, needle):
    with pytest.raises(TrackerError, match=None) as err:
        parse_tracker(text)
    assert needle in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------- MLflow URIs
def test_mlflow_uri_defaults_and_forms(tmp_path, monkeypatch):
    (default,) = _resolve("mlflow")
    assert default.tracking_uri == f"file://{EXPERIMENT}/mlruns"
    assert default.experiment_name == "tracked" and default.tags == {"scale": "smoke"}
    (from_env,) = _resolve("mlflow", env={"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"})
    assert from_env.tracking_uri == "http://mlflow.internal:5000"
    monkeypatch.chdir(tmp_path)
    (relative,) = _resolve("mlflow:stores/mlruns")
    assert relative.tracking_uri == (tmp_path / "stores" / "mlruns").as_uri()
    (given,) = _resolve("mlflow:file:///srv/mlruns")
    assert given.tracking_uri == "file:///srv/mlruns" and given.is_file_store
    (server,) = _resolve("mlflow:https://mlflow.example.com")
    assert not server.is_file_store and server.environment() == {}
    assert _resolve("mlflow:databricks")[0].tracking_uri == "databricks"


@pytest.mark.parametrize("uri, needle", [
    ("file://tmp", "file:///ABSOLUTE/PATH (three slashes)"),
    ("http://", "names no host"),
    ("ftp://host/x", "unknown scheme 'ftp'"),
])
def test_mlflow_uri_refusals_name_the_fix(uri, needle):
    with pytest.raises(TrackerError) as err:
        _resolve(f"mlflow:{uri}")
    assert needle in str(err.value)


def test_mlflow_database_store_needs_sqlalchemy():
    if importlib.util.find_spec("sqlalchemy") is not None:
        assert _resolve("mlflow:sqlite:///mlflow.db")[0].tracking_uri == "sqlite:///mlflow.db"
        return
    with pytest.raises(TrackerError, match="needs SQLAlchemy.*pip install mlflow"):
        _resolve("mlflow:sqlite:///mlflow.db")


def test_mlflow_on_remote_storage_needs_a_uri():
    with pytest.raises(TrackerError, match="--track mlflow:http://HOST:5000"):
        _resolve("mlflow", experiment_dir="s3://bucket/golf/tracked")
    (server,) = _resolve("mlflow:http://h:5000", experiment_dir="s3://bucket/golf/tracked")
    assert server.tracking_uri == "http://h:5000"


# --------------------------------------------------------------------------------- W&B modes
def test_wandb_defaults_offline_without_a_key(tmp_path):
    (tracker,) = _resolve("wandb", env={"HOME": str(tmp_path)})
    assert (tracker.project, tracker.group, tracker.mode) == ("tracked", "tracked", "offline")
    assert tracker.dir == EXPERIMENT and tracker.tags == ("scale:smoke",)
    assert f"runs in {EXPERIMENT}/wandb" in tracker.describe()
    (named,) = _resolve("wandb", env={"HOME": str(tmp_path), "WANDB_PROJECT": "golf"})
    assert (named.project, named.group) == ("golf", "tracked")
    (remote,) = _resolve("wandb", env={"HOME": str(tmp_path)}, experiment_dir="s3://b/tracked")
    assert remote.dir is None  # Ray's default: the trial's directory, uploaded with it
    assert tracker.environment() == {"WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false"}


def test_wandb_online_with_a_key_from_the_environment_or_a_login(tmp_path):
    (keyed,) = _resolve("wandb:golf", env={"HOME": str(tmp_path), "WANDB_API_KEY": "k" * 40})
    assert (keyed.project, keyed.mode) == ("golf", "online")
    assert keyed.environment() == {"WANDB_MODE": "online"}
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (logged_in,) = _resolve("wandb", env={"HOME": str(tmp_path)})
    assert logged_in.mode == "online"
    # A login for another host is not one for W&B.
    (elsewhere,) = _resolve("wandb", env={"HOME": str(tmp_path),
                                          "WANDB_BASE_URL": "https://wandb.corp.example"})
    assert elsewhere.mode == "offline"


def test_wandb_mode_from_the_option_then_the_environment(tmp_path):
    home = {"HOME": str(tmp_path)}
    assert _resolve("wandb", env={**home, "WANDB_MODE": "dryrun"})[0].mode == "offline"
    keyed = {**home, "WANDB_API_KEY": "k" * 40, "WANDB_MODE": "offline"}
    assert _resolve("wandb", env=keyed)[0].mode == "offline"
    assert _resolve("wandb", env=keyed, wandb_mode="online")[0].mode == "online"
    with pytest.raises(TrackerError, match="WANDB_API_KEY or run `wandb login`"):
        _resolve("wandb", env=home, wandb_mode="online")
    with pytest.raises(TrackerError, match="WANDB_MODE=disabled with --track wandb"):
        _resolve("wandb", env={**home, "WANDB_MODE": "disabled"})


def test_wandb_dir_from_the_environment(tmp_path):
    (tracker,) = _resolve("wandb", env={"HOME": str(tmp_path), "WANDB_DIR": str(tmp_path / "wb")})
    assert tracker.dir == str(tmp_path / "wb")
    assert "runs in" in tracker.describe() and str(tmp_path / "wb") in tracker.describe()


def test_requests_that_contradict_themselves():
    with pytest.raises(TrackerError, match="--track wandb is given 2 times"):
        _resolve("wandb", "wandb:other")
    with pytest.raises(TrackerError, match="--wandb-mode offline without --track wandb"):
        _resolve("mlflow", wandb_mode="offline")


def test_a_missing_package_names_the_extra(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def without_wandb(name, *args):
        return None if name == "wandb" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_wandb)
    with pytest.raises(TrackerError) as err:
        _resolve("mlflow", "wandb")
    assert str(err.value) == (f"--track wandb needs the wandb package, which is not installed: "
                              f"{INSTALL_HINT}")


# --------------------------------------------------------------------------------- environment
def test_apply_environment_keeps_the_users_choices_but_sets_the_mode():
    mlflow_tracker = MLflowTracker("file:///x/mlruns", "tracked")
    wandb_tracker = WandbTracker("p", "g", "offline", "test", None)
    env = {"MLFLOW_DISABLE_TELEMETRY": "false", "WANDB_MODE": "online"}
    apply_environment([mlflow_tracker, wandb_tracker], env)
    assert env == {"MLFLOW_DISABLE_TELEMETRY": "false", "MLFLOW_ALLOW_FILE_STORE": "true",
                   "WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false"}


# --------------------------------------------------------------------------------- callbacks
def test_callbacks_are_rays_own(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.air.integrations.wandb import WandbLoggerCallback

    mlflow_cb, wandb_cb = trk.tracker_callbacks([
        MLflowTracker("file:///x/mlruns", "tracked", {"scale": "smoke"}),
        WandbTracker("proj", "tracked", "offline", "test", str(tmp_path), ("scale:smoke",)),
    ])
    assert type(mlflow_cb) is MLflowLoggerCallback
    assert (mlflow_cb.tracking_uri, mlflow_cb.experiment_name, mlflow_cb.tags) == (
        "file:///x/mlruns", "tracked", {"scale": "smoke"})
    assert isinstance(wandb_cb, WandbLoggerCallback)
    assert (wandb_cb.project, wandb_cb.group) == ("proj", "tracked")
    assert wandb_cb.kwargs["mode"] == "offline" and wandb_cb.kwargs["dir"] == str(tmp_path)
    assert wandb_cb.kwargs["tags"] == ["scale:smoke"]


# --------------------------------------------------------------------------------- command line
def _golf_sweep() -> Sweep:
    return Sweep(name="tracked", preset="baseline", grid={"LAWA_ENABLED": [0, 1]}, seeds=[1337])


def test_command_line_options_reach_run_options():
    parser = argparse.ArgumentParser()
    add_sweep_options(parser)
    args = parser.parse_args(["--track", "mlflow:http://h:5000", "--track", "wandb",
                              "--wandb-mode", "offline"])
    options = options_from_args(args)
    assert options.trackers == (TrackerRequest("mlflow", "http://h:5000"), TrackerRequest("wandb"))
    assert options.wandb_mode == "offline"
    assert options_from_args(parser.parse_args([])).trackers == ()


def test_dry_run_states_the_trackers_with_the_sweeps_tags(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = io.StringIO()
    run_sweep(_golf_sweep(), RunOptions(storage=str(tmp_path), dry_run=True,
                                        trackers=(TrackerRequest("mlflow"), TrackerRequest("wandb"))),
              out=out)
    text = out.getvalue()
    assert f"tracking:  MLflow experiment tracked at file://{tmp_path}/tracked/mlruns" in text
    assert "tracking:  W&B project tracked, group tracked, offline (WANDB_MODE)" in text
    plan = plan_sweep(_golf_sweep(), scale="smoke")
    (tracker,) = sweep_trackers(plan, str(tmp_path / "tracked"), [TrackerRequest("mlflow")])
    assert tracker.tags == {"sweep": "tracked", "scale": "smoke", "stack": "baseline"}


def test_bad_tracker_is_one_line_before_anything_runs(tmp_path, capsys):
    sweep_file = tmp_path / "tracked.py"
    sweep_file.write_text("from sweeps import Sweep\nSWEEP = Sweep(name='tracked', "
                          "grid={'LAWA_ENABLED': [0, 1]}, seeds=[1337])\n")
    code = sweeps_main(["run", str(sweep_file), "--storage", str(tmp_path / "exp"),
                        "--track", "mlflow:file://tmp"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "file:///ABSOLUTE/PATH (three slashes)" in err
    assert not (tmp_path / "exp").exists()  # nothing started, nothing written


# --------------------------------------------------------------------------------- slow: real sweep
SWEEP_FILE = """\
from sweeps import Sweep
SWEEP = Sweep(name="tracked", preset="baseline", grid={"LAWA_ENABLED": [0, 1]}, seeds=[1337],
              fixed={"ITERATIONS": 8, "VAL_LOSS_EVERY": 4})
"""

FINAL_METRICS = ("val_bpb", "val_loss", "bytes_total", "train_s", "eval_s")


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """This environment without credentials or a Ray address, and with every phone-home off."""
    env = {k: v for k, v in os.environ.items()
           if k != "RAY_ADDRESS" and not k.startswith(("WANDB_", "MLFLOW_"))}
    env.update(
        WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wandb_root"), WANDB_SILENT="true",
        WANDB_ERROR_REPORTING="false", WANDB_DISABLE_GIT="true",
        WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"), WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"),
        WANDB_DATA_DIR=str(tmp_path / "wandb_data"), MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true", RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO) + (os.pathsep + os.environ["PYTHONPATH"]
                                if os.environ.get("PYTHONPATH") else ""),
    )
    return env


def _wandb_records(path: Path):
    """The records of a W&B transaction log (``run-ID.wandb``), decoded with wandb's protobuf.

    wandb 0.31 ships no Python reader for it; the file is LevelDB's log format (32 KiB blocks of
    checksummed chunks: 4-byte CRC, 2-byte length, 1-byte type) behind a 7-byte ``:W&B`` header.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    block, offset, pending = 32768, 7, b""
    while offset + 7 <= len(data):
        room = block - offset % block
        if room < 7:
            offset += room  # the block's tail is padding
            continue
        length, kind = struct.unpack_from("<HB", data, offset + 4)
        if kind == 0 and length == 0:
            offset += room  # zero-filled rest of the block
            continue
        chunk = data[offset + 7:offset + 7 + length]
        offset += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def _wandb_run(run_dir: Path) -> dict:
    """An offline run's config and the last value of each logged key."""
    config, history, summary = {}, {}, {}
    (log,) = run_dir.glob("run-*.wandb")
    for record in _wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            for item in record.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            for item in record.history.item:
                history[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return {"config": config, "last": history, "summary": summary}


@pytest.mark.slow
def test_a_real_sweep_reaches_the_mlflow_store_and_wandb_offline_runs(tmp_path, monkeypatch):
    sweep_file = tmp_path / "tracked.py"
    sweep_file.write_text(SWEEP_FILE)
    storage, store = tmp_path / "experiments", tmp_path / "mlruns"
    env = _offline_env(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "sweeps.cli", "run", str(sweep_file), "--storage", str(storage),
         "--max-concurrent", "2", "--track", f"mlflow:{store.as_uri()}", "--track", "wandb"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"tracking:  MLflow experiment tracked at {store.as_uri()}" in run.stdout
    assert "tracking:  W&B project tracked, group tracked, offline (WANDB_MODE)" in run.stdout

    from sweeps.results import load_results

    table = load_results(storage / "tracked")
    assert list(table["status"]) == ["TERMINATED", "TERMINATED"]
    rows = {(str(row.LAWA_ENABLED), int(row.seed)): row for row in table.itertuples()}

    # MLflow: one run per trial in the sweep's experiment, read back with MLflow's own client.
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow's first import
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None, f"no MLflow experiment 'tracked' in {store}"
    mlflow_runs = [{"status": r.info.status, "params": r.data.params, "tags": r.data.tags,
                    "metrics": r.data.metrics}
                   for r in client.search_runs([experiment.experiment_id])]
    assert len(mlflow_runs) == 2
    for mlflow_run in mlflow_runs:
        key = (mlflow_run["params"]["params/LAWA_ENABLED"], int(mlflow_run["params"]["seed"]))
        row = rows[key]
        assert mlflow_run["status"] == "FINISHED"
        assert mlflow_run["tags"]["scale"] == "smoke" and mlflow_run["tags"]["stack"] == "baseline"
        for metric in FINAL_METRICS:
            assert mlflow_run["metrics"][metric] == pytest.approx(float(getattr(row, metric)),
                                                                  rel=1e-9), metric

    # W&B: one offline run per trial under WANDB_DIR, named by Tune's trial id.
    run_dirs = sorted((tmp_path / "wandb_root" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 2, run_dirs
    trial_ids = {row.trial_id: key for key, row in rows.items()}
    for run_dir in run_dirs:
        trial_id = run_dir.name.split("-", 3)[-1]
        key = trial_ids[trial_id]
        offline = _wandb_run(run_dir)
        assert str(offline["config"]["params"]["LAWA_ENABLED"]) == key[0]
        assert offline["config"]["seed"] == key[1]
        for metric in FINAL_METRICS:
            expected = pytest.approx(float(getattr(rows[key], metric)), rel=1e-9)
            assert offline["last"][metric] == expected, metric
            assert offline["summary"][metric] == expected, metric
