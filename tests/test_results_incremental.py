"""The driver's table rewrite as trials end: incremental, throttled, and equal to a full rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import sweeps.results as results
from sweeps.results import ResultsTableCallback, load_results, read_written_results


class _Trial:
    """What the callback reads of a Tune trial: its directory (and its error, when it failed)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    @staticmethod
    def get_error() -> str:
        return "ray.exceptions.ActorDiedError: the actor died unexpectedly"


def _set_status(trial_dir: Path, status: str) -> None:
    record = json.loads((trial_dir / "trial.json").read_text())
    record["status"] = status
    (trial_dir / "trial.json").write_text(json.dumps(record))


def _trial_dirs(experiment: Path) -> list[Path]:
    return sorted(path for path in experiment.iterdir() if path.is_dir())


def _assert_written_is_full_rebuild(experiment: Path) -> None:
    written = read_written_results(experiment)
    rebuilt = load_results(experiment)
    # The parquet round trip turns the table's string columns into objects; values must agree.
    pd.testing.assert_frame_equal(written.astype(object), rebuilt.astype(object),
                                  check_dtype=False)


@pytest.fixture
def running_experiment(experiment: Path) -> Path:
    """The small experiment as a driver sees it mid-sweep: the last three trials still running."""
    for trial_dir in _trial_dirs(experiment)[3:]:
        _set_status(trial_dir, "RUNNING")
    return experiment


def test_each_trial_end_writes_the_full_rebuild_reading_only_what_can_change(
        running_experiment, monkeypatch):
    experiment = running_experiment
    dirs = _trial_dirs(experiment)
    reads: list[str] = []
    real_trial_row = results.trial_row

    def counting_trial_row(store, name):
        reads.append(name)
        return real_trial_row(store, name)

    monkeypatch.setattr(results, "trial_row", counting_trial_row)
    callback = ResultsTableCallback(str(experiment), min_interval_s=0)

    _set_status(dirs[3], "TERMINATED")
    callback.on_trial_complete(0, [], _Trial(dirs[3]))
    assert len(reads) == len(dirs)  # the first write reads every trial once
    _assert_written_is_full_rebuild(experiment)

    reads.clear()
    _set_status(dirs[4], "TERMINATED")
    callback.on_trial_complete(0, [], _Trial(dirs[4]))
    # Finished trials are not read again: only the one that ended and the one still running.
    assert sorted(reads) == sorted([dirs[4].name, dirs[5].name])
    _assert_written_is_full_rebuild(experiment)

    reads.clear()
    callback.on_trial_error(0, [], _Trial(dirs[5]))  # its process died: the callback settles it
    assert reads == [dirs[5].name]
    _assert_written_is_full_rebuild(experiment)
    assert read_written_results(experiment)["status"].tolist()[5] == "ERROR"


def test_a_finished_trial_tune_reports_again_is_read_again(running_experiment):
    experiment = running_experiment
    dirs = _trial_dirs(experiment)
    callback = ResultsTableCallback(str(experiment), min_interval_s=0)
    callback.on_experiment_end([])
    # A retried trial's directory changes after it finished once; its own event says so.
    record = json.loads((dirs[0] / "trial.json").read_text())
    record["attempt"] = 7
    (dirs[0] / "trial.json").write_text(json.dumps(record))
    callback.on_trial_complete(0, [], _Trial(dirs[0]))
    assert read_written_results(experiment)["attempt"].tolist()[0] == 7
    _assert_written_is_full_rebuild(experiment)


def test_ends_in_a_burst_share_one_rewrite_and_none_is_lost(running_experiment, monkeypatch):
    experiment = running_experiment
    dirs = _trial_dirs(experiment)
    clock = [1000.0]
    monkeypatch.setattr(results.time, "monotonic", lambda: clock[0])
    callback = ResultsTableCallback(str(experiment), min_interval_s=2.0)

    _set_status(dirs[3], "TERMINATED")
    callback.on_trial_complete(0, [], _Trial(dirs[3]))  # the first end is written at once
    assert read_written_results(experiment)["status"].tolist()[3] == "TERMINATED"

    clock[0] += 0.5
    _set_status(dirs[4], "TERMINATED")
    callback.on_trial_complete(0, [], _Trial(dirs[4]))
    callback.on_step_end(0, [])
    assert read_written_results(experiment)["status"].tolist()[4] != "TERMINATED"  # not yet

    clock[0] += 2.0
    callback.on_step_end(0, [])  # the interval has passed: the pending end is written
    assert read_written_results(experiment)["status"].tolist()[4] == "TERMINATED"
    _assert_written_is_full_rebuild(experiment)

    clock[0] += 0.1
    _set_status(dirs[5], "TERMINATED")
    callback.on_trial_complete(0, [], _Trial(dirs[5]))
    callback.on_experiment_end([])  # the experiment's end writes whatever is pending
    assert read_written_results(experiment)["status"].tolist()[5] == "TERMINATED"
    _assert_written_is_full_rebuild(experiment)


def test_the_row_cache_is_not_pickled_with_the_experiment(running_experiment):
    import pickle

    callback = ResultsTableCallback(str(running_experiment), min_interval_s=0)
    callback.on_experiment_end([])
    restored = pickle.loads(pickle.dumps(callback))
    assert restored._rows is None and restored.experiment_dir == callback.experiment_dir
