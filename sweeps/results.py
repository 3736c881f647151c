"""The results table of an experiment, rebuilt from its trial directories alone (DESIGN contract 3).

One row per trial: its config label and every swept key as a column, seed, status, the headline
``val_bpb``/``val_loss`` and which evaluation they come from, artifact bytes (total, model, code)
and whether they fit 16,000,000, train and eval seconds, steps, ms per step, whether the wallclock
cap stopped training, the last in-training ``val_bpb``, the error (with the log's last lines), the
ranks and GPUs of the trial, the trial directory, and its cost in GPU-seconds (or CPU-seconds for
a CPU trial), train and eval apart (:mod:`sweeps.cost`). The numbers come from golf's ``run/result.json`` when the trial ran golf, and
from the trial's ``train.log`` otherwise (and for anything result.json lacks); the config, seed
and status come from the trial's ``trial.json``.

:class:`ResultsTableCallback` rewrites ``results.parquet`` and ``results.csv`` in the experiment
directory as trials end (at most every 2 s when they end in a burst), by rebuilding from the
trial directories (re-reading only those that can have changed since, :class:`TrialRows`), so
the written table is always what :func:`load_results` returns and nothing depends on the driver
surviving.
Experiment directories may be local paths or any URI pyarrow understands (``s3://``, ``gs://``).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from golf.atomic import write_bytes_atomic
from golf.contract import RESULT_FILE, SIZE_LIMIT_BYTES, TRAIN_LOG_FILE

from sweeps.cost import CONFIG_COST_COLUMNS, TRIAL_COST_COLUMNS, add_cost_columns, config_cost
from sweeps.logparse import parse_log_text

RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
SWEEP_RECORD = "sweep.json"
TRIAL_RECORD = "trial.json"
TRAIN_LOG = TRAIN_LOG_FILE
GOLF_RESULT = f"run/{RESULT_FILE}"
LN2 = math.log(2.0)
FINISHED = "TERMINATED"
UNKNOWN = "UNKNOWN"
STALE_RUNNING = ("its trial.json still says RUNNING, but no driver runs the experiment: the driver "
                 "or the node died, or the storage was full, before the trial could record how it "
                 "ended; run the sweep again to resume it")

# Columns after the label and the swept keys, in order.
ROW_COLUMNS = (
    "seed", "status", "val_bpb", "val_loss", "headline_metric", "bytes_total", "bytes_model",
    "bytes_code", "under_limit", "train_s", "eval_s", "steps", "step_avg_ms", "stopped_early",
    "last_val_bpb", "error", "trial_id", "attempt", "world_size", "gpus", "trial_dir",
)
# Derived from the columns above by sweeps.cost: devices x seconds (GPU, or CPU for CPU trials).
COST_COLUMNS = TRIAL_COST_COLUMNS
_FLOAT_COLUMNS = ("val_bpb", "val_loss", "train_s", "eval_s", "step_avg_ms", "last_val_bpb")
_INT_COLUMNS = ("seed", "bytes_total", "bytes_model", "bytes_code", "steps", "attempt", "world_size",
                "gpus")
_BOOL_COLUMNS = ("under_limit", "stopped_early")
# How much of an error goes into the table (the full text stays in trial.json).
_ERROR_LINES_IN_TABLE = 20
_INTEGER = re.compile(r"-?\d+")


class ResultsError(ValueError):
    """An experiment directory that cannot be read; the message says what to pass instead."""


# --------------------------------------------------------------------------------- storage
class ExperimentStore:
    """Read and write files of an experiment directory, local or remote, through pyarrow.fs."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        text = os.fspath(location)
        self.is_local = "://" not in text or text.startswith("file://")
        if self.is_local:
            text = str(Path(text.removeprefix("file://")).expanduser().resolve())
        self.location = text
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(text)
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise ResultsError(f"cannot open experiment directory {location}: {exc}") from None

    def path(self, *parts: str) -> str:
        return str(PurePosixPath(self.root, *parts))

    def display(self, *parts: str) -> str:
        """A path (local) or URI (remote) a person can paste."""
        if self.is_local:
            return str(Path(self.root, *parts))
        scheme = self.location.split("://", 1)[0]
        return f"{scheme}://{self.path(*parts)}"

    def exists(self) -> bool:
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def subdirs(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False))
        return sorted(PurePosixPath(i.path).name for i in infos if i.type == pafs.FileType.Directory)

    def read_text(self, *parts: str) -> str | None:
        """The file's text, or None when it does not exist (undecodable bytes are replaced)."""
        path = self.path(*parts)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as handle:
            return handle.read().decode("utf-8", errors="replace")

    def read_json(self, *parts: str) -> dict[str, Any] | None:
        text = self.read_text(*parts)
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a file so that readers see the old or the new version, never half of one."""
        if self.is_local:
            write_bytes_atomic(Path(self.root, *parts), data)
            return
        # Object stores replace an object atomically on upload.
        with self.fs.open_output_stream(self.path(*parts)) as handle:
            handle.write(data)

    def write_json(self, data: Any, *parts: str) -> None:
        self.write_bytes((json.dumps(data, indent=2) + "\n").encode(), *parts)


# --------------------------------------------------------------------------------- rows
def trial_row(store: ExperimentStore, name: str) -> dict[str, Any] | None:
    """The table row of one trial directory, or None when it is not a trial directory."""
    record = store.read_json(name, TRIAL_RECORD)
    tune_params = store.read_json(name, "params.json")
    if record is None and tune_params is None:
        return None
    row: dict[str, Any] = {column: None for column in ROW_COLUMNS}
    row["trial_dir"] = store.display(name)
    if record is not None:
        params = dict(record.get("params") or {})
        row.update(label=record.get("label"), seed=record.get("seed"), status=record.get("status"),
                   error=_short_error(record.get("error")), trial_id=record.get("trial_id"),
                   attempt=record.get("attempt"), world_size=record.get("nproc"),
                   gpus=record.get("gpus_per_trial"))
    else:
        # Tune created the trial but our code never ran in it (e.g. its worker failed to start).
        params = {str(k): str(v) for k, v in dict(tune_params.get("params") or {}).items()}
        error_text = store.read_text(name, "error.txt")
        row.update(label=",".join(f"{k}={v}" for k, v in params.items()) or None,
                   seed=tune_params.get("seed"),
                   status="ERROR" if error_text is not None else "PENDING",
                   error=_short_error(error_text), trial_id="_".join(name.split("_")[:2]))
    row["params"] = params
    log_text = store.read_text(name, TRAIN_LOG)
    summary = parse_log_text(log_text) if log_text is not None else None
    result = store.read_json(name, *GOLF_RESULT.split("/"))
    _fill_from_result(row, result)
    _fill_from_log(row, summary)
    if row["under_limit"] is None and row["bytes_total"] is not None:
        row["under_limit"] = row["bytes_total"] <= SIZE_LIMIT_BYTES
    return row


def _fill_from_result(row: dict[str, Any], result: Mapping[str, Any] | None) -> None:
    if not result:
        return
    metrics = result.get("metrics") or {}
    size = result.get("bytes") or {}
    timing = result.get("timing") or {}
    values = {
        "val_bpb": metrics.get("val_bpb"), "val_loss": metrics.get("val_loss"),
        "headline_metric": metrics.get("headline_metric"), "bytes_total": size.get("total"),
        "bytes_model": size.get("model"), "bytes_code": size.get("code"),
        "under_limit": size.get("under_limit"), "train_s": timing.get("train_s"),
        "eval_s": timing.get("eval_s"), "steps": timing.get("steps"),
        "step_avg_ms": timing.get("step_avg_ms"), "stopped_early": timing.get("stopped_early"),
        "world_size": result.get("world_size"),
    }
    for key, value in values.items():
        if value is not None:
            row[key] = value


def _fill_from_log(row: dict[str, Any], summary: Mapping[str, Any] | None) -> None:
    """Fill what golf's result.json did not give from the log (all of it for other scripts)."""
    if not summary:
        return
    headline = summary.get("headline") or {}
    train_ms, eval_ms = summary.get("train_time_ms"), summary.get("eval_time_ms_total")
    last_val = summary.get("last_val_line") or {}
    values = {
        "val_bpb": headline.get("val_bpb"), "val_loss": headline.get("val_loss"),
        "headline_metric": headline.get("label"),
        "bytes_total": summary.get("total_submission_bytes"),
        "bytes_model": summary.get("model_bytes"), "bytes_code": summary.get("code_bytes"),
        "train_s": None if train_ms is None else train_ms / 1000.0,
        "eval_s": None if eval_ms is None else eval_ms / 1000.0,
        "steps": summary.get("last_step"),
        "step_avg_ms": summary.get("step_avg_ms_last_train_line") or summary.get("step_avg_ms"),
        "stopped_early": summary.get("stopped_early_wallclock"),
        "last_val_bpb": last_val.get("val_bpb"),
    }
    for key, value in values.items():
        if row.get(key) is None and value is not None:
            row[key] = value


def _short_error(error: str | None) -> str | None:
    if not error:
        return None
    lines = error.rstrip().splitlines()
    if len(lines) <= _ERROR_LINES_IN_TABLE + 1:
        return "\n".join(lines)
    return "\n".join([lines[0], "...", *lines[-_ERROR_LINES_IN_TABLE:]])


# --------------------------------------------------------------------------------- the table
class TrialRows:
    """The rows of an experiment's trial directories, re-reading only what can still change.

    A trial that ran to the end (TERMINATED) or was stopped by Tune (STOPPED) never runs again,
    so its row is read once and kept; every other trial directory (running, pending, failed and
    perhaps retried, interrupted and perhaps resumed) is read again on each :meth:`refresh`, as is
    any trial passed to :meth:`forget`. A sweep's driver rewrites the table as each of N trials ends;
    rebuilding it from every directory each time read O(N^2) files over the sweep.
    """

    SETTLED = (FINISHED, "STOPPED")

    def __init__(self, store: ExperimentStore) -> None:
        self.store = store
        self._settled: dict[str, dict[str, Any]] = {}

    def forget(self, name: str) -> None:
        """Read this trial directory again at the next refresh (Tune says it changed)."""
        self._settled.pop(name, None)

    def refresh(self) -> list[dict[str, Any]]:
        """Every trial directory's row, in directory order (callers must not modify them)."""
        rows = []
        names = self.store.subdirs()
        for name in names:
            row = self._settled.get(name)
            if row is None:
                row = trial_row(self.store, name)
                if row is None:
                    continue
                if row["status"] in self.SETTLED:
                    self._settled[name] = row
                else:
                    self._settled.pop(name, None)
            rows.append(row)
        if len(self._settled) > len(names):
            present = set(names)
            self._settled = {k: v for k, v in self._settled.items() if k in present}
        return rows


def load_results(experiment_dir: str | os.PathLike[str], *,
                 driver_running: bool | None | str = "ask",
                 trial_rows: TrialRows | None = None) -> pd.DataFrame:
    """The results table of an experiment, rebuilt from its trial directories (see module doc).

    A trial.json that still says RUNNING when no driver runs the experiment is stale: its driver
    or node died, or the storage filled up, before the trial could record how it ended. Such rows
    show status UNKNOWN. ``driver_running`` says whether a driver runs it; by default the lock's
    holder file tells (:func:`sweeps.lock.driver_is_running`; None: cannot tell, rows stay as
    they are). ``trial_rows`` reuses the rows of trials that ended earlier (the driver's
    :class:`ResultsTableCallback`); by default every trial directory is read.
    """
    store = ExperimentStore(experiment_dir)
    if not store.exists():
        raise ResultsError(f"no experiment directory at {store.display()}: pass the folder a sweep "
                           "wrote (by default experiments/<sweep name>)")
    rows = [dict(row) for row in (trial_rows or TrialRows(store)).refresh()]
    if driver_running == "ask":
        from sweeps.lock import driver_is_running

        driver_running = driver_is_running(store.root) if store.is_local else None
    if driver_running is False:
        for row in rows:
            if row["status"] == "RUNNING":
                row["status"] = UNKNOWN
                row["error"] = row["error"] or STALE_RUNNING
    return rows_to_frame(rows)


def rows_to_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows (with a ``params`` dict each) -> the table, param columns typed, trial order."""
    param_keys: list[str] = []
    for row in rows:
        param_keys += [key for key in row.get("params", {}) if key not in param_keys]
    clash = [key for key in param_keys if key in (*ROW_COLUMNS, *COST_COLUMNS, "label")]
    if clash:
        raise ResultsError(f"swept key(s) {clash} collide with table columns; rename them")
    records = []
    for row in rows:
        record = {"label": row.get("label")}
        record.update({key: row.get("params", {}).get(key) for key in param_keys})
        record.update({column: row.get(column) for column in ROW_COLUMNS})
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=["label", *param_keys, *ROW_COLUMNS])
    for key in param_keys:
        frame[key] = _typed_param_column(frame[key])
    for column in _FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in _INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").round().astype("Int64")
    for column in _BOOL_COLUMNS:
        frame[column] = frame[column].astype("boolean")
    for column in ("label", "status", "headline_metric", "error", "trial_id", "trial_dir"):
        frame[column] = frame[column].astype("string")
    add_cost_columns(frame)
    frame = frame.sort_values("trial_id", kind="stable", na_position="last").reset_index(drop=True)
    frame.attrs["param_columns"] = list(param_keys)
    return frame


def _typed_param_column(values: pd.Series) -> pd.Series:
    """Swept values travel as strings; show 0/1/4 as integers and 0.04 as floats when all agree."""
    present = values.dropna().astype(str)
    if len(present) and all(_INTEGER.fullmatch(v) for v in present):
        return pd.to_numeric(values).astype("Int64")
    try:
        pd.to_numeric(present, errors="raise")
    except (ValueError, TypeError):
        return values.astype("string")
    return pd.to_numeric(values).astype("float64")


def param_columns(frame: pd.DataFrame) -> list[str]:
    """The swept keys' columns of a table (between ``label`` and ``seed``)."""
    if "param_columns" in frame.attrs:
        return list(frame.attrs["param_columns"])
    columns = list(frame.columns)
    return columns[columns.index("label") + 1:columns.index("seed")]


def write_results(experiment_dir: str | os.PathLike[str], *,
                  driver_running: bool | None | str = "ask",
                  trial_rows: TrialRows | None = None) -> pd.DataFrame:
    """Rebuild the table and write ``results.parquet`` and ``results.csv`` beside the trials
    (``driver_running`` and ``trial_rows``: see :func:`load_results`)."""
    store = ExperimentStore(experiment_dir)
    frame = load_results(experiment_dir, driver_running=driver_running, trial_rows=trial_rows)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    store.write_bytes(buffer.getvalue(), RESULTS_PARQUET)
    store.write_bytes(frame.to_csv(index=False).encode(), RESULTS_CSV)
    return frame


def read_written_results(experiment_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The ``results.parquet`` last written into the experiment directory."""
    store = ExperimentStore(experiment_dir)
    path = store.path(RESULTS_PARQUET)
    if store.fs.get_file_info(path).type != pafs.FileType.File:
        raise ResultsError(f"{store.display(RESULTS_PARQUET)} does not exist yet; "
                           f"`sweeps table {store.display()}` rebuilds the table from the trials")
    with store.fs.open_input_file(path) as handle:
        frame = pd.read_parquet(handle)
    frame.attrs["param_columns"] = param_columns(frame)
    return frame


# --------------------------------------------------------------------------------- summaries
SUMMARY_COLUMNS = (
    "n", "n_trials", "val_bpb_mean", "val_bpb_std", "val_bpb_min", "val_bpb_max", "val_loss_mean",
    "val_loss_std", "val_loss_min", "val_loss_max", "bytes_total_mean", "train_s_mean",
    "eval_s_mean", *CONFIG_COST_COLUMNS,
)


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of trials that ran to the end and have a val_bpb."""
    return frame[(frame["status"] == FINISHED) & frame["val_bpb"].notna()]


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per config: n (finished trials), n_trials, mean/std/min/max of val_bpb and val_loss,
    mean bytes, mean train and eval seconds, and the config's GPU- and CPU-seconds summed over all
    its trials (finished or not; see :mod:`sweeps.cost`). Configs keep the table's order; std is
    the sample standard deviation (NaN for n = 1)."""
    params = param_columns(frame)
    done = finished(frame)
    rows = []
    for label in dict.fromkeys(frame["label"].dropna()):
        mine = frame[frame["label"] == label]
        ok = done[done["label"] == label]
        row: dict[str, Any] = {"label": label}
        row.update({key: mine[key].iloc[0] for key in params})
        row.update({
            "n": len(ok), "n_trials": len(mine),
            "val_bpb_mean": ok["val_bpb"].mean(), "val_bpb_std": ok["val_bpb"].std(ddof=1),
            "val_bpb_min": ok["val_bpb"].min(), "val_bpb_max": ok["val_bpb"].max(),
            "val_loss_mean": ok["val_loss"].mean(), "val_loss_std": ok["val_loss"].std(ddof=1),
            "val_loss_min": ok["val_loss"].min(), "val_loss_max": ok["val_loss"].max(),
            "bytes_total_mean": ok["bytes_total"].astype("float64").mean(),
            "train_s_mean": ok["train_s"].mean(), "eval_s_mean": ok["eval_s"].mean(),
            **config_cost(mine),
        })
        rows.append(row)
    summary = pd.DataFrame.from_records(rows, columns=["label", *params, *SUMMARY_COLUMNS])
    summary.attrs["param_columns"] = params
    return summary


def tokens_per_byte(rows: pd.DataFrame) -> float | None:
    """Mean of val_bpb * ln2 / val_loss over rows that have both (None when none has)."""
    usable = rows[rows["val_bpb"].notna() & rows["val_loss"].notna() & (rows["val_loss"] > 0)]
    if usable.empty:
        return None
    return float((usable["val_bpb"] * LN2 / usable["val_loss"]).mean())


def select_config(frame: pd.DataFrame, selector: str) -> tuple[str, pd.DataFrame]:
    """The rows of one config, named by its label or by ``KEY=VALUE,...`` (a subset of its keys).

    Values compare as the sweep wrote them, and numerically when both sides are numbers
    (``QAT_ENABLED=1`` matches 1, ``LR=0.040`` matches 0.04). Raises ResultsError listing the
    configs when the selector matches none or several.
    """
    labels = list(dict.fromkeys(frame["label"].dropna()))
    if selector in labels:
        return selector, frame[frame["label"] == selector]
    wanted = {}
    for item in selector.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ResultsError(f"config {selector!r} is neither a label nor KEY=VALUE,...; "
                               f"the configs are: {'; '.join(labels)}")
        wanted[key.strip()] = value.strip()
    params = param_columns(frame)
    unknown = [key for key in wanted if key not in params]
    if unknown:
        raise ResultsError(f"config {selector!r}: {', '.join(unknown)} is not a swept key of this "
                           f"experiment (swept: {', '.join(params) or 'none'})")
    matching = []
    for label in labels:
        first = frame[frame["label"] == label].iloc[0]
        if all(_same_value(first[key], value) for key, value in wanted.items()):
            matching.append(label)
    if len(matching) != 1:
        found = "no config" if not matching else f"{len(matching)} configs ({'; '.join(matching)})"
        raise ResultsError(f"config {selector!r} matches {found}; name exactly one of: "
                           f"{'; '.join(labels)}")
    return matching[0], frame[frame["label"] == matching[0]]


def _same_value(cell: Any, text: str) -> bool:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)) or cell is pd.NA:
        return False
    if str(cell) == text:
        return True
    try:
        return float(cell) == float(text)
    except (TypeError, ValueError):
        return False


def config_values(frame: pd.DataFrame, label: str, metric: str = "bpb") -> list[float]:
    """Finished trials' val_bpb (``bpb``) or val_loss (``nats``) of one config, in seed order."""
    rows = finished(frame)
    rows = rows[rows["label"] == label].sort_values("seed")
    column = "val_bpb" if metric == "bpb" else "val_loss"
    return [float(v) for v in rows[column]]


# --------------------------------------------------------------------------------- Tune callback
try:
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover - ray is a dependency; keep `sweeps table` importable
    _TuneCallback = object  # type: ignore[assignment,misc]


# Trials ending in a burst share one rewrite of the table: each rewrite serializes every row and
# syncs two files to disk, which a 1,000-trial sweep cannot afford once per trial end.
TABLE_REWRITE_INTERVAL_S = 2.0


class ResultsTableCallback(_TuneCallback):  # type: ignore[misc,valid-type]
    """Rewrite the experiment's table as trials end (and when the experiment ends).

    A trial's end is written at once, unless the table was written less than ``min_interval_s``
    ago; it is then written with the next rewrite, at most ``min_interval_s`` later (Tune calls
    :meth:`on_step_end` many times a second) or when the experiment ends. Only the rows that can
    have changed are read again (:class:`TrialRows`), so the written table is the full rebuild.

    It also settles what a trial could not write itself: a trial whose process died (its node
    lost, the actor killed) is marked ERROR with Tune's error, and one that Tune stopped while it
    was running (a scheduler) is marked STOPPED.
    """

    def __init__(self, experiment_dir: str, storage_watch: Any = None,
                 min_interval_s: float = TABLE_REWRITE_INTERVAL_S) -> None:
        self.experiment_dir = experiment_dir
        # A full disk is said once by the watch (sweeps.supervision.StorageWatch), which also
        # stops the sweep; this callback then stops trying to write.
        self.storage_watch = storage_watch
        self.min_interval_s = min_interval_s
        self._rows: TrialRows | None = None
        self._pending = False
        self._written_at: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment; the row cache is this session's own.
        return {**self.__dict__, "_rows": None, "_pending": False, "_written_at": None}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._settle(trial, "STOPPED", None)
        self._trial_ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = None
        try:
            error = str(trial.get_error() or "") or None
        except Exception as exc:  # noqa: BLE001 - the error text is best effort
            error = f"(Tune's error text could not be read: {exc})"
        self._settle(trial, "ERROR", error or "the trial failed (no error text from Tune)")
        self._trial_ended(trial)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._pending and self._due():
            self._write()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._write()

    def _trial_ended(self, trial: Any) -> None:
        if self._rows is not None:
            self._rows.forget(PurePosixPath(str(trial.path)).name)
        self._pending = True
        if self._due():
            self._write()

    def _due(self) -> bool:
        return (self._written_at is None
                or time.monotonic() - self._written_at >= self.min_interval_s)

    def _settle(self, trial: Any, status: str, error: str | None) -> None:
        store = ExperimentStore(self.experiment_dir)
        name = PurePosixPath(str(trial.path)).name
        record = store.read_json(name, TRIAL_RECORD)
        if record is None or record.get("status") != "RUNNING":
            return
        record.update(status=status, error=record.get("error") or error)
        try:
            store.write_json(record, name, TRIAL_RECORD)
        except OSError as exc:
            if not self._storage_full(exc):
                raise

    def _write(self) -> None:
        self._pending = False
        self._written_at = time.monotonic()
        if self.storage_watch is not None and self.storage_watch.full_at is not None:
            return
        if self._rows is None:
            self._rows = TrialRows(ExperimentStore(self.experiment_dir))
        try:
            write_results(self.experiment_dir, trial_rows=self._rows)
        except Exception as exc:  # noqa: BLE001 - a table hiccup must never abort the sweep
            if not self._storage_full(exc):
                print(f"sweeps: could not write the results table in {self.experiment_dir}: {exc} "
                      f"(`sweeps table {self.experiment_dir}` rebuilds it)", flush=True)

    def _storage_full(self, exc: BaseException) -> bool:
        from sweeps.failures import is_storage_full

        if self.storage_watch is None or not is_storage_full(exc):
            return False
        self.storage_watch.notice(self.experiment_dir)
        return True


def labels_in_order(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["label"].dropna()))


def describe_statuses(frame: pd.DataFrame) -> str:
    """``12 trials: 11 TERMINATED, 1 ERROR``."""
    counts = frame["status"].value_counts()
    parts = ", ".join(f"{count} {status}" for status, count in counts.items())
    return f"{len(frame)} trial{'s' if len(frame) != 1 else ''}: {parts or 'none'}"


def iter_trial_records(experiment_dir: str | os.PathLike[str]) -> Iterable[dict[str, Any]]:
    """Every trial's ``trial.json`` in the experiment (trial directory order)."""
    store = ExperimentStore(experiment_dir)
    for name in store.subdirs():
        record = store.read_json(name, TRIAL_RECORD)
        if record is not None:
            yield {**record, "trial_dir": store.display(name)}


# --------------------------------------------------------------------------------- compare source
def experiment_value_source() -> Any:
    """``sweeps compare``'s value source for ``DIR:CONFIG`` (a config of an experiment directory).

    CONFIG is a label of the table (``QAT_ENABLED=1,LAWA_ENABLED=0``) or a subset of its keys;
    ``DIR`` alone works for an experiment with a single config. The values are the config's
    finished seeds; tokens per byte (for the 0.005-nat margin) is their val_bpb * ln2 / val_loss.
    Register it with ``sweeps.stats.register_value_source``.
    """
    from sweeps.stats import ValueSource

    return ValueSource(
        name="experiment",
        syntax="DIR[:CONFIG]",
        help="a sweep's experiment directory and one of its configs (label or KEY=VALUE,...)",
        claims=_experiment_claims,
        resolve=_experiment_resolve,
    )


def _split_experiment_spec(spec: str) -> tuple[str, str | None] | None:
    if spec.startswith("leaderboard:"):
        return None
    if _looks_like_experiment(Path(spec)):
        return spec, None
    for index in range(len(spec) - 1, 0, -1):
        if spec[index] == ":" and _looks_like_experiment(Path(spec[:index])):
            return spec[:index], spec[index + 1:]
    return None


def _looks_like_experiment(path: Path) -> bool:
    if not path.is_dir():
        return False
    if (path / SWEEP_RECORD).is_file() or (path / RESULTS_PARQUET).is_file():
        return True
    return any((child / TRIAL_RECORD).is_file() for child in path.iterdir() if child.is_dir())


def _experiment_claims(spec: str) -> bool:
    return _split_experiment_spec(spec) is not None


def _experiment_resolve(spec: str, metric: str, role: str) -> Any:
    from sweeps.stats import Sample, StatsError

    split = _split_experiment_spec(spec)
    assert split is not None
    directory, selector = split
    try:
        frame = load_results(directory)
        labels = labels_in_order(frame)
        if selector is None:
            if len(labels) != 1:
                raise ResultsError(f"{directory} holds {len(labels)} configs; write "
                                   f"--{role} {directory}:CONFIG with CONFIG one of: "
                                   f"{'; '.join(labels)}")
            selector = labels[0]
        label, _ = select_config(frame, selector)
    except ResultsError as err:
        raise StatsError(str(err)) from None
    rows = finished(frame)
    rows = rows[rows["label"] == label].sort_values("seed")
    if rows.empty:
        raise StatsError(f"--{role} {spec}: config {label} has no finished trial with a val_bpb "
                         f"(`sweeps table {directory}` shows their status)")
    column = "val_bpb" if metric == "bpb" else "val_loss"
    seeds = ", ".join(str(s) for s in rows["seed"])
    return Sample(tuple(float(v) for v in rows[column]), metric, tokens_per_byte(rows),
                  f"{directory}: {label} (seeds {seeds})",
                  seeds=tuple(str(seed) for seed in rows["seed"]))
