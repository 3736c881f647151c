"""Run a sweep with Ray Tune: connect to Ray, start or resume the experiment, and sum it up.

:func:`run_sweep` is what ``python sweeps/<file>.py`` and ``sweeps run`` end in:

1. resolve and validate every trial (:func:`sweeps.spec.plan_sweep`) before touching Ray;
2. take the experiment directory's lock (:mod:`sweeps.lock`): a second driver is refused;
3. connect to Ray: attach to the cluster named by ``RAY_ADDRESS`` (what ``ray job submit`` sets,
   so trials use the job's ``working_dir``), else start a local Ray on this machine;
4. resume the experiment when its directory holds an unfinished one (``Tuner.restore`` with
   errored trials resumed from their checkpoints), refuse when the sweep changed since (naming
   what changed), start over with ``restart`` (the old directory is kept aside), or start anew;
5. run it (FIFO, or the sweep's ASHA), with the results table rewritten as trials end; failures
   a retry cannot fix are not retried, and SIGINT/SIGTERM or a full disk stop it gracefully
   (:mod:`sweeps.supervision`): the trials it stopped are marked INTERRUPTED;
6. rebuild the table, summarize each config, and compare each config with the baseline; a sweep
   stopped by a signal then raises :class:`sweeps.supervision.SweepInterrupted`.

Storage: a local path (default ``experiments/`` under the current directory) where trials write
in place, or a URI (``s3://``, ``gs://``) where Tune uploads each trial's files; a multi-node
cluster needs one of those two shared between its nodes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

import pandas as pd

from sweeps import report
from sweeps.failures import CONFIG, is_storage_full
from sweeps.lock import ExperimentBusy, ExperimentLock, command_line
from sweeps.results import (
    SWEEP_RECORD, ExperimentStore, ResultsTableCallback, iter_trial_records, load_results,
    summarize, write_results,
)
from sweeps.supervision import (
    QuietTuneLogs, RetryPolicy, StopSignals, StorageWatch, SweepInterrupted, TrialsInFlight,
    signal_name,
)
from sweeps.datacheck import check_local_data
from sweeps.feasibility import over_limit_problems, over_limit_warnings, predict_plan_sizes
from sweeps.spec import Sweep, SweepPlan, SpecError, plan_sweep
from sweeps.trackers import Tracker, apply_environment, sweep_trackers, tracker_callbacks
from sweeps.trial import TrialStorage, code_root, demo_root, make_trainable

DEFAULT_STORAGE = "experiments"
RESUME_MODES = ("auto", "resume", "restart")
METRIC, MODE = "val_bpb", "min"


@dataclass
class RunOptions:
    """The command line's say over a sweep (see ``sweeps run --help``)."""

    scale: str = "smoke"
    storage: str | None = None
    name: str | None = None
    seeds: tuple[int, ...] | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    max_concurrent: int | None = None
    gpus_per_trial: int | None = None
    resume: str = "auto"
    dry_run: bool = False
    verbose: bool = False  # Tune's own status tables instead of one line per trial event
    price_per_gpu_hour: float | None = None  # adds money columns to the printed outcome
    allow_over_limit: bool = False  # run configs predicted over the byte limit (sweeps.feasibility)
    # Experiment trackers (sweeps.trackers.TrackerRequest), logged through Ray Tune's callbacks.
    trackers: tuple[Any, ...] = ()
    wandb_mode: str = "auto"


@dataclass
class SweepOutcome:
    """What a sweep run produced (the table is None for a dry run)."""

    plan: SweepPlan
    experiment_dir: str
    table: pd.DataFrame | None = None
    summary: pd.DataFrame | None = None
    comparisons: list[report.ConfigComparison] = field(default_factory=list)
    resumed: bool = False
    wall_s: float | None = None
    command: str = ""  # the command line that ran it (and resumes it)
    interrupted_by: int | None = None  # the signal that stopped it
    interrupted: int = 0  # trials marked INTERRUPTED
    storage_full_at: str | None = None
    # One-line causes of configuration or data failures -> the trials each failed.
    fix_first: dict[str, list[str]] = field(default_factory=dict)

    @property
    def all_finished(self) -> bool:
        return self.table is not None and bool((self.table["status"] == "TERMINATED").all())

    def next_step(self) -> str | None:
        """What to do now, when not every trial finished (None when they all did)."""
        if self.table is None or (self.all_finished and self.interrupted_by is None):
            return None
        return report.format_next_step(
            command=self.command,
            interrupted_by=None if self.interrupted_by is None else signal_name(self.interrupted_by),
            storage_full=self.storage_full_at is not None, interrupted=self.interrupted,
            fix_first=self.fix_first,
            unfinished=int((self.table["status"] != "TERMINATED").sum()))


def experiment_location(plan: SweepPlan, options: RunOptions, cwd: str | None = None) -> str:
    """``<storage>/<name>``: a local absolute path, or a URI."""
    storage = options.storage or DEFAULT_STORAGE
    name = options.name or plan.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise SpecError(f"--name {name!r}: use letters, digits, '_', '-' or '.' (it names a folder)")
    if "://" in storage and not storage.startswith("file://"):
        return storage.rstrip("/") + "/" + name
    root = Path(storage.removeprefix("file://")).expanduser()
    if not root.is_absolute():
        root = Path(cwd or os.getcwd()) / root
    return str((root / name).resolve())


def run_sweep(sweep: Sweep, options: RunOptions, *, out: TextIO | None = None) -> SweepOutcome:
    """Validate, run (or resume) and sum up a sweep; see the module docstring."""
    out = out or sys.stdout
    plan = plan_sweep(sweep, scale=options.scale, seeds=options.seeds, overrides=options.overrides,
                      gpus_per_trial=options.gpus_per_trial, max_concurrent=options.max_concurrent)
    location = experiment_location(plan, options)
    trackers = sweep_trackers(plan, location, options.trackers, options.wandb_mode)
    sizes = predict_plan_sizes(plan)  # from the configs alone, before Ray and any trial
    print(report.format_plan(plan, location, list_trials=options.dry_run, sizes=sizes), file=out)
    for tracker in trackers:
        print(f"  tracking:  {tracker.describe()}", file=out)
    for warning in _warnings(plan):
        print(f"warning: {warning}", file=out)
    for warning in over_limit_warnings(sizes):
        print(f"warning: {warning}", file=out)
    over_limit = over_limit_problems(sizes, allowed=options.allow_over_limit)
    if over_limit and not options.allow_over_limit:
        raise SpecError(over_limit)
    for problem in over_limit:
        print(f"warning: {problem}", file=out)
    outcome = SweepOutcome(plan=plan, experiment_dir=location)
    if options.dry_run:
        print("dry run: nothing was started", file=out)
        return outcome

    check_local_data(plan, out)  # a bad shard or tokenizer stops here, before Ray and any trial
    store = ExperimentStore(location)
    outcome.command = command_line()
    with _experiment_lock(store), StopSignals() as signals:
        _run_experiment(plan, store, options, outcome, signals, out, trackers)
    if outcome.interrupted_by is not None:
        raise SweepInterrupted(outcome.interrupted_by, outcome)
    return outcome


@contextmanager
def _experiment_lock(store: ExperimentStore) -> Iterator[None]:
    """Hold the experiment's lock (local storage; an object store has none to take)."""
    if not store.is_local:
        yield
        return
    lock = ExperimentLock(store.root)
    try:
        lock.acquire()
    except ExperimentBusy as err:
        raise SpecError(str(err)) from None
    try:
        yield
    finally:
        lock.release()


def _run_experiment(plan: SweepPlan, store: ExperimentStore, options: RunOptions,
                    outcome: SweepOutcome, signals: StopSignals, out: TextIO,
                    trackers: list[Tracker]) -> None:
    location = store.location
    resume = _decide_resume(plan, store, options.resume, out)
    apply_environment(trackers)  # before a local Ray starts: its workers inherit it
    ray_mode = connect_ray(plan, out)
    signals.install()  # ray.init() put its own SIGTERM handler (sys.exit) in place of ours
    _check_resources(plan, ray_mode, location, out)
    if ray_mode == "attached" and options.storage is None:
        print(f"warning: results go to {location}, under the directory the driver runs in (for "
              "`ray job submit`, the job's temporary copy of the working directory on the head "
              "node); pass --storage with a lasting path or s3://... / gs://...", file=out)
    if plan.demo_data and ray_mode == "local":
        from golf.corpus import build_demo

        demo = build_demo(demo_root(), quiet=True)  # once here, so trials find it ready
        print(f"demo corpus: {demo.data_path}", file=out)

    # Each trial checkpoints once (its artifact); Tune warns when several trials do so within a
    # few seconds of each other, which is harmless here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    start = time.perf_counter()
    watch, in_flight = StorageWatch(location, out), TrialsInFlight()
    outcome.resumed = resume
    forced = False
    try:
        # Tune logs "Failed to fetch metrics" already while it restores an experiment.
        with QuietTuneLogs(verbose=options.verbose, storage=watch):
            signals.tune_running()
            try:
                tuner = _tuner(plan, store, resume, options.verbose, out,
                               [watch, in_flight, *tracker_callbacks(trackers)])
                tuner.fit()
            except SweepInterrupted:
                forced = True  # a second signal: Tune was stopped without cleaning up
            except Exception as err:
                if not is_storage_full(err):
                    raise
                watch.notice(location)
            finally:
                signals.tune_done()
    finally:
        outcome.wall_s = time.perf_counter() - start
        outcome.interrupted_by = signals.received
        if signals.received is not None or watch.full_at is not None:
            if signals.received is not None:
                print(f"stopped by {signal_name(signals.received)}: trials stopped, writing the "
                      "table of what finished", file=out, flush=True)
            if forced:
                import ray

                ray.shutdown()  # ends the trials Tune had no time to stop
            outcome.interrupted = _mark_interrupted(location, in_flight, signals.received)
        outcome.storage_full_at = watch.full_at
        outcome.table = _final_table(location, watch)
    outcome.fix_first = _config_failures(location, outcome.table)
    decisions = None
    if plan.sequential is not None:
        from sweeps.sequential_search import read_decisions, with_stop_columns

        decisions = read_decisions(location)
    outcome.summary = summarize(outcome.table)
    if decisions is not None:
        outcome.summary = with_stop_columns(outcome.summary, decisions)
    outcome.comparisons = report.compare_with_baseline(outcome.table, plan.baseline_label)
    print(report.format_outcome(outcome.table, outcome.summary, outcome.comparisons,
                                plan.baseline_label, location,
                                price_per_gpu_hour=options.price_per_gpu_hour,
                                sequential=decisions), file=out)


def _mark_interrupted(location: str, in_flight: TrialsInFlight, signum: int | None) -> int:
    """Mark the trials the driver stopped as INTERRUPTED; return how many.

    The trials Tune had running, whatever their worker managed to write while it was stopped,
    and any trial.json still saying RUNNING (nothing runs once Tune has returned). Each trial's
    worker (on this host) is given time to exit first, so that it cannot overwrite the mark. On a
    full disk the marks cannot be written: those trials show as UNKNOWN.
    """
    from sweeps.launcher import wait_until_gone
    from sweeps.trial import TRIAL_RECORD

    store = ExperimentStore(location)
    stopped = {PurePosixPath(path).name for path in in_flight.running.values()}
    how = f"the driver was stopped ({signal_name(signum)})" if signum else "the storage was full"
    marked = 0
    for name in store.subdirs():
        record = store.read_json(name, TRIAL_RECORD)
        if record is None or (name not in stopped and record.get("status") != "RUNNING"):
            continue
        if record.get("host") == socket.gethostname() and record.get("pid"):
            wait_until_gone([int(record["pid"])], timeout_s=15)
            record = store.read_json(name, TRIAL_RECORD) or record
        if record.get("status") == "TERMINATED":
            continue  # it finished as the driver stopped: its row stands
        record.update(status="INTERRUPTED", error=f"interrupted: {how}; running the sweep again "
                      "resumes it", ended_at=_dt.datetime.now(_dt.timezone.utc).isoformat(
                          timespec="milliseconds"))
        try:
            store.write_json(record, name, TRIAL_RECORD)
        except OSError as err:
            if not is_storage_full(err):
                raise
            continue
        marked += 1
    return marked


def _final_table(location: str, watch: StorageWatch) -> pd.DataFrame:
    """The table once Tune has returned (no trial runs): written, unless the disk is full."""
    if watch.full_at is None:
        try:
            return write_results(location, driver_running=False)
        except OSError as err:
            if not is_storage_full(err):
                raise
            watch.notice(location)
    return load_results(location, driver_running=False)


def _config_failures(location: str, table: pd.DataFrame) -> dict[str, list[str]]:
    """Causes of the failures running again cannot fix -> the trials (``label seed N``) each hit."""
    causes: dict[str, list[str]] = {}
    if table is None or not (table["status"] == "ERROR").any():
        return causes
    for record in iter_trial_records(location):
        if record.get("status") == "ERROR" and record.get("failure") == CONFIG:
            cause = str(record.get("cause") or "a configuration or data error")
            causes.setdefault(cause, []).append(f"{record.get('label')} seed {record.get('seed')}")
    return causes


def _warnings(plan: SweepPlan) -> list[str]:
    notes = []
    if plan.scheduler is not None and len(plan.seeds) > 1:
        notes.append("ASHA stops trials one by one, so some seeds of a config may end early and "
                     "the configs' seed sets will differ; run significance sweeps without a "
                     "scheduler (FIFO)")
    if plan.is_golf:
        from golf.config import FIELD_SPECS

        ignored = sorted(key for spec in FIELD_SPECS for key in (spec.env, *spec.aliases)
                         if key in os.environ and key not in ("DATA_PATH", "TOKENIZER_PATH"))
        if ignored:
            notes.append(f"{', '.join(ignored)} set in this shell: trials ignore it (a sweep's "
                         "config comes from the sweep file and --set KEY=VALUE)")
    return notes


def _decide_resume(plan: SweepPlan, store: ExperimentStore, mode: str, out: TextIO) -> bool:
    """True to restore the experiment at ``store``; False to start a new one there."""
    from ray.tune import Tuner

    if mode not in RESUME_MODES:
        raise SpecError(f"resume mode {mode!r}: use one of {', '.join(RESUME_MODES)}")
    where = store.display()
    exists = store.exists() and bool(store.subdirs() or store.read_text(SWEEP_RECORD))
    if mode == "restart":
        if exists:
            moved = _move_aside(store)
            print(f"restart: the earlier experiment was moved to {moved}", file=out)
        return False
    restorable = Tuner.can_restore(store.location)
    if not restorable:
        if mode == "resume":
            raise SpecError(f"nothing to resume at {where}: no Tune experiment state there "
                            "(run without --resume to start it)")
        if exists:
            raise SpecError(f"{where} holds files but no experiment Tune can resume (it was "
                            "stopped before its first save): use --restart to move it aside and "
                            "start over, or --name NEW")
        return False
    stored = store.read_json(SWEEP_RECORD) or {}
    if stored.get("fingerprint") and stored["fingerprint"] != plan.fingerprint():
        changes = _plan_changes(stored, plan.describe())
        raise SpecError(f"the experiment at {where} was started from a different sweep "
                        f"({changes}); use --restart to start over (the old one is kept aside) "
                        "or --name NEW to keep both")
    print(f"resuming the experiment at {where} (finished trials are kept; unfinished and errored "
          "ones continue from their last checkpoint)", file=out)
    return True


_DECISIVE_KEYS = ("scale", "stack", "program", "fixed_env", "variants", "seeds", "gpus_per_trial",
                  "cpu_procs", "sequential")


def _plan_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """What differs between the stored sweep.json and this sweep, as ``key: old -> new``.

    Both sides are compared as JSON (sweep.json holds lists where the plan holds tuples), and a
    mapping (``fixed_env``, ``program``) is compared key by key.
    """
    old_plan, new_plan = (json.loads(json.dumps({k: side.get(k) for k in _DECISIVE_KEYS}))
                          for side in (stored, current))
    changes = []
    for key in _DECISIVE_KEYS:
        old, new = old_plan[key], new_plan[key]
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for sub in [*old, *(k for k in new if k not in old)]:
                if old.get(sub) != new.get(sub):
                    changes.append(f"{key} {sub}: {_shown(old.get(sub))} -> {_shown(new.get(sub))}")
        else:
            changes.append(f"{key}: {_shown(old)} -> {_shown(new)}")
    if not changes:
        return "its fingerprint differs, though no setting does: the sweep's code changed"
    return "changed: " + "; ".join(changes)


def _shown(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value)


def _move_aside(store: ExperimentStore) -> str:
    if not store.is_local:
        raise SpecError(f"--restart cannot move {store.display()} aside on remote storage: pass "
                        "--name NEW for a fresh experiment")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = f"{store.root}.before-restart-{stamp}"
    shutil.move(store.root, target)
    return target


def connect_ray(plan: SweepPlan, out: TextIO) -> str:
    """Attach to ``RAY_ADDRESS``'s cluster, reuse an initialized Ray, or start a local one.

    Returns "attached", "existing" or "local".
    """
    import ray

    if ray.is_initialized():
        return "existing"
    if os.environ.get("RAY_ADDRESS"):
        # Inside `ray job submit` RAY_ADDRESS is set, and a bare init() joins the job's cluster
        # with the job's runtime_env (its working_dir) for every trial.
        ray.init()
        print(f"attached to the Ray cluster at {os.environ['RAY_ADDRESS']}", file=out)
        return "attached"
    # A fresh local Ray. The workers (and the trials' torchrun children) get this code on their
    # PYTHONPATH, so a clone that is not pip-installed runs the code the driver validated.
    pythonpath = str(code_root()) + (os.pathsep + os.environ["PYTHONPATH"]
                                     if os.environ.get("PYTHONPATH") else "")
    ray.init(address="local", include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    resources = ray.cluster_resources()
    print(f"started a local Ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs",
          file=out)
    return "local"


def _check_resources(plan: SweepPlan, ray_mode: str, location: str, out: TextIO) -> None:
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
    need = f"{plan.gpus_per_trial} GPU(s) and {plan.cpus_per_trial:g} CPU(s) per trial"
    if ray_mode == "local" and (gpus < plan.gpus_per_trial or cpus < plan.cpus_per_trial):
        raise SpecError(f"this machine's Ray has {gpus:g} GPUs and {cpus:g} CPUs but the sweep "
                        f"needs {need}: use --scale smoke (CPU), lower --gpus-per-trial, or "
                        "submit it to a GPU cluster (ray job submit --working-dir . -- python ...)")
    if ray_mode != "local" and gpus < plan.gpus_per_trial:
        print(f"warning: the cluster has {gpus:g} GPUs now and the sweep needs {need}; trials "
              "wait until the autoscaler adds GPU nodes", file=out)
    if ray_mode != "local" and len(ray.nodes()) > 1 and "://" not in location:
        print(f"warning: results go to {location} on this node; on a multi-node cluster that "
              "path must be shared storage mounted on every node (NFS), or pass --storage "
              "s3://... / gs://...", file=out)


def _tuner(plan: SweepPlan, store: ExperimentStore, resume: bool, verbose: bool, out: TextIO,
           supervisors: list[Any]) -> Any:
    from ray import tune

    trainable = make_trainable(plan, TrialStorage(store.root if store.is_local else None))
    watch = next((s for s in supervisors if isinstance(s, StorageWatch)), None)

    def callbacks(max_failures: int) -> list[Any]:
        return [RetryPolicy(max_failures), *supervisors, ResultsTableCallback(store.location, watch),
                *([] if verbose else [report.ProgressCallback(plan, out)])]

    if resume:
        tuner = tune.Tuner.restore(store.location, trainable=trainable, resume_errored=True)
        # Tune restores the callbacks pickled when the experiment started: another process's
        # progress clock and counts, another stream. This session's own replace them (the
        # retry budget stays the one the experiment started with).
        internal = getattr(tuner, "_local_tuner", None)
        if internal is not None:
            run_config = internal.get_run_config()
            run_config.callbacks = callbacks(run_config.failure_config.max_failures
                                             if run_config.failure_config else plan.max_failures)
        return tuner
    store.write_json(plan.describe(), SWEEP_RECORD)
    scheduler = None
    if plan.scheduler is not None:
        from ray.tune.schedulers import ASHAScheduler

        # ASHA stops any trial whose time reaches max_t; one step past the horizon lets a trial
        # that finished training go on to quantize and evaluate.
        scheduler = ASHAScheduler(time_attr="step", max_t=plan.scheduler.max_steps + 1,
                                  grace_period=plan.scheduler.grace_steps,
                                  reduction_factor=plan.scheduler.reduction_factor)
    storage_root, name = store.location.rsplit("/", 1)
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage_root,
        failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        sync_config=tune.SyncConfig(sync_artifacts=not store.is_local),
        callbacks=callbacks(plan.max_failures),
        verbose=1 if verbose else 0,
    )
    if plan.sequential is not None:
        from sweeps.sequential_search import SequentialSearcher

        # Seeds round by round: the searcher suggests every trial and ends the sweep itself.
        assert plan.baseline_label is not None  # plan_sweep requires one for Sequential
        searcher = SequentialSearcher(plan.sequential, plan.labels, plan.variants,
                                      plan.baseline_label, store.location)
        tune_config = tune.TuneConfig(
            metric=METRIC, mode=MODE, search_alg=searcher, num_samples=-1,
            max_concurrent_trials=plan.max_concurrent, trial_dirname_creator=trial_dirname,
            reuse_actors=True)  # as the grid below: one worker start per slot, not per trial
        return tune.Tuner(trainable, param_space={}, tune_config=tune_config,
                          run_config=run_config)
    tune_config = tune.TuneConfig(
        metric=METRIC, mode=MODE, scheduler=scheduler, num_samples=1,
        max_concurrent_trials=plan.max_concurrent, trial_dirname_creator=trial_dirname,
        # The next trial runs in the worker (and placement group) the last one left: no worker
        # process start and import of the trainable per trial. Every trial of a sweep asks for
        # the same resources; a worker whose trial does not end in time is not reused.
        reuse_actors=True,
    )
    param_space = {"params": tune.grid_search([dict(v) for v in plan.variants]),
                   "seed": tune.grid_search(list(plan.seeds))}
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                      run_config=run_config)


def trial_dirname(trial: Any) -> str:
    """``<trial id>_<KEY=value,...>_seed<N>``: readable trial folders (picklable by reference)."""
    params = trial.config.get("params") or {}
    label = ",".join(f"{k}={v}" for k, v in params.items()) or "base"
    slug = re.sub(r"[^A-Za-z0-9._=,\-]+", "_", label)[:80]
    return f"{trial.trial_id}_{slug}_seed{trial.config.get('seed')}"
