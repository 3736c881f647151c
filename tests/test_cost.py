"""Cost accounting: devices x wall seconds per trial (train and eval apart), per config, per sweep,
and the price per GPU-hour, on the project's own test experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sweeps import report
from sweeps.cli import main
from sweeps.cost import add_money_columns, sweep_cost
from sweeps.results import load_results, read_written_results, summarize, write_results

GPUS = 8


def _as_gpu_trials(experiment: Path, gpus: int = GPUS) -> None:
    """Turn the copy's trials into GPU trials (as a --gpus-per-trial 8 sweep records them)."""
    for record_path in experiment.glob("*/trial.json"):
        record = json.loads(record_path.read_text())
        record.update(gpus_per_trial=gpus, nproc=gpus)
        record_path.write_text(json.dumps(record))


def test_cpu_trials_count_processes_times_seconds_and_no_gpu(experiment: Path) -> None:
    table = load_results(experiment)
    assert (table["gpus"] == 0).all() and (table["world_size"] == 1).all()
    for part in ("train", "eval"):
        expected = table["world_size"].astype(float) * table[f"{part}_s"]
        pd.testing.assert_series_equal(table[f"{part}_cpu_s"], expected, check_names=False)
        assert (table[f"{part}_gpu_s"] == 0).all()
    # the errored trial trained 0.772 s and never evaluated: its cost is its training
    errored = table[table["status"] == "ERROR"].iloc[0]
    assert pd.isna(errored["eval_cpu_s"]) and errored["cpu_s"] == pytest.approx(errored["train_s"])
    finished = table[table["status"] == "TERMINATED"]
    assert (finished["cpu_s"] == finished["train_cpu_s"] + finished["eval_cpu_s"]).all()
    assert (table["gpu_s"] == 0).all()


def test_gpu_trials_count_gpus_times_seconds_per_config_and_sweep(experiment: Path) -> None:
    _as_gpu_trials(experiment)
    table = load_results(experiment)
    assert (table["gpus"] == GPUS).all()
    assert list(table["train_gpu_s"]) == pytest.approx(list(GPUS * table["train_s"]))
    done = table[table["eval_s"].notna()]
    assert list(done["eval_gpu_s"]) == pytest.approx(list(GPUS * done["eval_s"]))
    assert list(done["gpu_s"]) == pytest.approx(list(GPUS * (done["train_s"] + done["eval_s"])))
    assert table["cpu_s"].isna().all()  # GPU trials are billed by their GPUs

    summary = summarize(table).set_index("label")
    for label, rows in table.groupby("label"):
        # every trial of the config counts, the errored one too
        assert summary.loc[label, "train_gpu_s_sum"] == pytest.approx(GPUS * rows["train_s"].sum())
        assert summary.loc[label, "eval_gpu_s_sum"] == pytest.approx(GPUS * rows["eval_s"].sum())
    totals = sweep_cost(table)
    assert totals["gpu_s_sum"] == pytest.approx(
        GPUS * (table["train_s"].sum() + table["eval_s"].sum()))
    assert totals["gpu_s_sum"] == pytest.approx(summary["gpu_s_sum"].sum())

    # the written table carries the same columns
    write_results(experiment)
    written = read_written_results(experiment)
    assert list(written["gpu_s"]) == pytest.approx(list(table["gpu_s"]))


def test_price_per_gpu_hour_multiplies(experiment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _as_gpu_trials(experiment)
    table = load_results(experiment)
    priced = add_money_columns(table, 3.0)
    assert list(priced["cost"]) == pytest.approx(list(table["gpu_s"] / 3600 * 3.0))
    assert list(priced["train_cost"]) == pytest.approx(list(table["train_gpu_s"] / 3600 * 3.0))
    summary = add_money_columns(summarize(table), 3.0, suffix="_sum")
    assert list(summary["cost"]) == pytest.approx(list(summary["gpu_s_sum"] / 3600 * 3.0))

    assert main(["table", str(experiment), "--json", "--price-per-gpu-hour", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["cost"] for r in rows] == pytest.approx([r["gpu_s"] / 3600 * 3.0 for r in rows])

    assert main(["table", str(experiment), "--price-per-gpu-hour", "3"]) == 0
    out = capsys.readouterr().out
    gpu_s = sweep_cost(table)["gpu_s_sum"]
    assert (f"cost of the sweep: {gpu_s:.1f} GPU-seconds = {gpu_s / 3600:.4f} GPU-hours" in out)
    assert f"at 3 per GPU-hour: {gpu_s / 3600 * 3:.4f}" in out
    header = out.splitlines()[1].split()
    assert {"gpus", "gpu_s", "train_cost", "eval_cost", "cost"} <= set(header)


def test_cpu_sweep_output_is_labelled_cpu_seconds(experiment: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", str(experiment)]) == 0
    out = capsys.readouterr().out
    cpu_s = sweep_cost(load_results(experiment))["cpu_s_sum"]
    assert f"cost of the sweep: CPU trials {cpu_s:.1f} CPU-seconds (processes x wall seconds, 0 GPUs" in out
    header = out.splitlines()[1].split()
    assert "cpu_s" in header and "gpu_s" not in header  # no column of zeros


def test_bad_price_is_a_one_line_error(experiment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["table", str(experiment), "--price-per-gpu-hour", "cheap"])
    assert exit_info.value.code == 2
    assert "the price per GPU-hour must be a number >= 0" in capsys.readouterr().err


def test_outcome_prints_cost(experiment: Path) -> None:
    _as_gpu_trials(experiment, gpus=1)
    table = load_results(experiment)
    text = report.format_outcome(table, summarize(table), [], None, str(experiment),
                                 price_per_gpu_hour=2.0)
    assert "cost of the sweep:" in text and "per GPU-hour" in text and "gpu_s_sum" in text


@pytest.mark.slow
def test_a_gpu_sweep_on_ray_prints_its_cost_and_money(tmp_path: Path) -> None:
    """A real sweep on a simulated 8-GPU node (Ray books the GPUs; the fake trainer runs 8 ranks)."""
    import io

    import ray
    from ray.cluster_utils import Cluster

    from sweeps.experiment import RunOptions, run_sweep
    from sweeps.spec import Sweep

    fake = Path(__file__).resolve().parent / "data" / "sweeps" / "fake_train_gpt.py"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    cluster.add_node(num_cpus=8, num_gpus=8)
    ray.init(address=cluster.address)
    try:
        sweep = Sweep(name="priced", script=str(fake), uses_data=False, max_failures=0,
                      gpus_per_trial=8, seeds=[1, 2], fixed={"ITERATIONS": 5})
        out = io.StringIO()
        outcome = run_sweep(sweep, RunOptions(scale="full", storage=str(tmp_path),
                                              price_per_gpu_hour=4.0), out=out)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert outcome.all_finished
    table = outcome.table
    assert (table["gpus"] == 8).all()
    assert list(table["gpu_s"]) == pytest.approx(list(8 * (table["train_s"] + table["eval_s"])))
    gpu_s = float(table["gpu_s"].sum())
    text = out.getvalue()
    assert f"cost of the sweep: {gpu_s:.1f} GPU-seconds" in text
    assert f"at 4 per GPU-hour: {gpu_s / 3600 * 4.0:.4f}" in text
