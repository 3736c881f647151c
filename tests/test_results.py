"""The results table: rebuilt from trial directories, summarized, written, and compared."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from sweeps.results import (
    ResultsError, ResultsTableCallback, config_values, experiment_value_source, load_results,
    read_written_results, select_config, summarize, tokens_per_byte, write_results,
)
from sweeps.stats import StatsError, resolve_sample

ERRORED = "e3d9e_00005_QAT_ENABLED=1_seed2024"


pytestmark = pytest.mark.usefixtures("restore_value_sources")


def _result(experiment: Path, trial: str) -> dict:
    return json.loads((experiment / trial / "run" / "result.json").read_text())


def test_a_row_per_trial_with_the_numbers_of_its_result_json(experiment):
    table = load_results(experiment)
    assert list(table.columns[:3]) == ["label", "QAT_ENABLED", "seed"]
    assert table.attrs["param_columns"] == ["QAT_ENABLED"]
    assert len(table) == 6 and list(table["trial_id"]) == sorted(table["trial_id"])
    assert str(table["QAT_ENABLED"].dtype) == "Int64"
    first = table.iloc[0]
    result = _result(experiment, "e3d9e_00000_QAT_ENABLED=0_seed1337")
    assert first["label"] == "QAT_ENABLED=0" and first["QAT_ENABLED"] == 0 and first["seed"] == 1337
    assert first["status"] == "TERMINATED" and pd.isna(first["error"])
    assert first["val_bpb"] == result["metrics"]["val_bpb"]
    assert first["val_loss"] == result["metrics"]["val_loss"]
    assert first["headline_metric"] == result["metrics"]["headline_metric"]
    assert first["bytes_total"] == result["bytes"]["total"]
    assert first["bytes_model"] == result["bytes"]["model"]
    assert first["bytes_code"] == result["bytes"]["code"]
    assert bool(first["under_limit"]) is True
    assert first["train_s"] == result["timing"]["train_s"]
    assert first["eval_s"] == result["timing"]["eval_s"]
    assert first["steps"] == 10 and first["step_avg_ms"] == result["timing"]["step_avg_ms"]
    assert bool(first["stopped_early"]) is False
    assert first["world_size"] == 1 and first["attempt"] == 1
    assert first["trial_dir"] == str(experiment / "e3d9e_00000_QAT_ENABLED=0_seed1337")
    # The last in-training validation comes from the log.
    log = (experiment / "e3d9e_00000_QAT_ENABLED=0_seed1337" / "train.log").read_text()
    last_val = [line for line in log.splitlines() if line.startswith("step:") and "val_bpb:" in line][-1]
    assert first["last_val_bpb"] == float(last_val.split("val_bpb:")[1].split()[0])


def test_a_failed_trial_keeps_its_error_and_what_its_log_says(experiment):
    table = load_results(experiment)
    failed = table[table["trial_dir"].str.endswith(ERRORED)].iloc[0]
    assert failed["status"] == "ERROR"
    assert failed["error"].startswith("golf.train exited with status 1")
    assert "Connection closed by peer" in failed["error"]
    assert pd.isna(failed["val_bpb"]) and pd.isna(failed["bytes_total"])
    assert failed["steps"] == 4  # how far it got, from its train.log


def test_summary_per_config(experiment):
    table = load_results(experiment)
    summary = summarize(table).set_index("label")
    off = summary.loc["QAT_ENABLED=0"]
    done = table[(table["label"] == "QAT_ENABLED=0")]
    assert off["n"] == 3 and off["n_trials"] == 3
    assert off["val_bpb_mean"] == pytest.approx(done["val_bpb"].mean())
    assert off["val_bpb_std"] == pytest.approx(done["val_bpb"].std(ddof=1))
    assert off["val_loss_min"] == done["val_loss"].min()
    assert off["bytes_total_mean"] == pytest.approx(done["bytes_total"].astype(float).mean())
    on = summary.loc["QAT_ENABLED=1"]
    assert on["n"] == 2 and on["n_trials"] == 3  # the errored seed is counted, not averaged
    assert on["QAT_ENABLED"] == 1
    assert config_values(table, "QAT_ENABLED=1") == sorted(
        table[(table["label"] == "QAT_ENABLED=1") & (table["status"] == "TERMINATED")]["val_bpb"],
        key=lambda v: table.loc[table["val_bpb"] == v, "seed"].iloc[0])


def test_written_table_equals_the_rebuilt_one(experiment):
    written = write_results(experiment)
    assert (experiment / "results.csv").is_file()
    from_parquet = read_written_results(experiment)
    pd.testing.assert_frame_equal(from_parquet, load_results(experiment))
    pd.testing.assert_frame_equal(from_parquet, written)
    from_csv = pd.read_csv(experiment / "results.csv")
    assert list(from_csv.columns) == list(written.columns)
    assert from_csv["val_bpb"].tolist()[:5] == written["val_bpb"].tolist()[:5]


def test_a_trial_tune_created_but_never_ran(experiment):
    ghost = experiment / "e3d9e_00006_QAT_ENABLED=0_seed7"
    ghost.mkdir()
    (ghost / "params.json").write_text(json.dumps({"params": {"QAT_ENABLED": "0"}, "seed": 7}))
    (ghost / "error.txt").write_text("Failure # 1\nray.exceptions.RuntimeEnvSetupError: pip failed\n")
    row = load_results(experiment).iloc[-1]
    assert row["label"] == "QAT_ENABLED=0" and row["seed"] == 7 and row["status"] == "ERROR"
    assert "RuntimeEnvSetupError" in row["error"]
    (ghost / "error.txt").unlink()
    assert load_results(experiment).iloc[-1]["status"] == "PENDING"


def test_select_a_config_by_label_or_by_keys(experiment):
    table = load_results(experiment)
    assert select_config(table, "QAT_ENABLED=1")[0] == "QAT_ENABLED=1"
    assert select_config(table, "QAT_ENABLED=1.0")[0] == "QAT_ENABLED=1"  # numeric match
    with pytest.raises(ResultsError, match="matches no config"):
        select_config(table, "QAT_ENABLED=2")
    with pytest.raises(ResultsError, match="not a swept key"):
        select_config(table, "LAWA_ENABLED=1")
    with pytest.raises(ResultsError, match="neither a label nor KEY=VALUE"):
        select_config(table, "fast")
    ratio = tokens_per_byte(table[table["status"] == "TERMINATED"])
    expected = [b * math.log(2) / l for b, l in zip(table["val_bpb"][:5], table["val_loss"][:5])]
    assert ratio == pytest.approx(sum(expected) / 5)


def test_compare_value_source_reads_a_config_of_an_experiment(experiment, monkeypatch):
    from sweeps import stats

    # registered on a copy, so the sources other tests see are not changed behind their backs
    monkeypatch.setattr(stats, "VALUE_SOURCES", list(stats.VALUE_SOURCES))
    source = experiment_value_source()
    if not any(s.name == "experiment" for s in stats.VALUE_SOURCES):
        stats.register_value_source(source)
    sample = resolve_sample(f"{experiment}:QAT_ENABLED=0", metric="bpb", role="new")
    table = load_results(experiment)
    assert sample.values == tuple(config_values(table, "QAT_ENABLED=0"))
    off = table[table["label"] == "QAT_ENABLED=0"]
    assert sample.tokens_per_byte == pytest.approx(tokens_per_byte(off))
    nats = resolve_sample(f"{experiment}:QAT_ENABLED=1", metric="nats", role="baseline")
    assert len(nats.values) == 2 and all(v > 5 for v in nats.values)
    with pytest.raises(StatsError, match="holds 2 configs"):
        resolve_sample(str(experiment), metric="bpb", role="new")
    assert not source.claims("leaderboard:board.csv") and not source.claims("1.2,1.3")


def test_callback_settles_what_a_dead_trial_could_not_write(experiment):
    running = experiment / "e3d9e_00004_QAT_ENABLED=0_seed2024"
    record = json.loads((running / "trial.json").read_text())
    record["status"] = "RUNNING"
    (running / "trial.json").write_text(json.dumps(record))

    class FakeTrial:
        path = str(running)

        @staticmethod
        def get_error():
            return "ray.exceptions.ActorDiedError: the actor died unexpectedly (node lost)"

    callback = ResultsTableCallback(str(experiment))
    callback.on_trial_error(0, [], FakeTrial())
    settled = json.loads((running / "trial.json").read_text())
    assert settled["status"] == "ERROR" and "ActorDiedError" in settled["error"]
    assert (experiment / "results.parquet").is_file()
    # A trial that already recorded its own end is left alone.
    callback.on_trial_complete(0, [], FakeTrial())
    assert json.loads((running / "trial.json").read_text())["status"] == "ERROR"


def test_missing_experiment_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsError, match="no experiment directory"):
        load_results(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_results(empty).empty
    with pytest.raises(ResultsError, match="does not exist yet"):
        read_written_results(empty)
