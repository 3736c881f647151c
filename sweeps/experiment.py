"""Run a sweep with Ray Tune: connect to Ray, start or resume the experiment, and sum it up.

:func:`run_sweep` is what ``python sweeps/<file>.py`` and ``sweeps run`` end in:

1. resolve and validate every trial (:func:`sweeps.spec.plan_sweep`) before touching Ray;
2. connect to Ray: attach to the cluster named by ``RAY_ADDRESS`` (what ``ray job submit`` sets,
   so trials use the job's ``working_dir``), else start a local Ray on this machine;
3. resume the experiment when its directory holds an unfinished one (``Tuner.restore`` with
   errored trials resumed from their checkpoints), refuse when the sweep changed since, start
   over with ``restart`` (the old directory is kept aside), or start a new one;
4. run it (FIFO, or the sweep's ASHA), with the results table rewritten as trials end;
5. rebuild the table, summarize each config, and compare each config with the baseline.

Storage: a local path (default ``experiments/`` under the current directory) where trials write
in place, or a URI (``s3://``, ``gs://``) where Tune uploads each trial's files; a multi-node
cluster needs one of those two shared between its nodes.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from sweeps import report
from sweeps.results import (
    SWEEP_RECORD, ExperimentStore, ResultsTableCallback, summarize, write_results,
)
from sweeps.spec import Sweep, SweepPlan, SpecError, plan_sweep
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

    @property
    def all_finished(self) -> bool:
        return self.table is not None and bool((self.table["status"] == "TERMINATED").all())


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
    print(report.format_plan(plan, location, list_trials=options.dry_run), file=out)
    for warning in _warnings(plan):
        print(f"warning: {warning}", file=out)
    outcome = SweepOutcome(plan=plan, experiment_dir=location)
    if options.dry_run:
        print("dry run: nothing was started", file=out)
        return outcome

    store = ExperimentStore(location)
    resume = _decide_resume(plan, store, options.resume, out)
    ray_mode = connect_ray(plan, out)
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
    tuner = _tuner(plan, store, resume, options.verbose, out)
    outcome.resumed = resume
    try:
        tuner.fit()
    finally:
        outcome.wall_s = time.perf_counter() - start
        outcome.table = write_results(location)
    outcome.summary = summarize(outcome.table)
    outcome.comparisons = report.compare_with_baseline(outcome.table, plan.baseline_label)
    print(report.format_outcome(outcome.table, outcome.summary, outcome.comparisons,
                                plan.baseline_label, location), file=out)
    return outcome


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


def _plan_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    keys = ("scale", "stack", "program", "fixed_env", "variants", "seeds", "gpus_per_trial",
            "cpu_procs")
    changed = [key for key in keys if stored.get(key) != current.get(key)]
    return "changed: " + ", ".join(changed) if changed else "its fingerprint differs"


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


def _tuner(plan: SweepPlan, store: ExperimentStore, resume: bool, verbose: bool, out: TextIO) -> Any:
    from ray import tune

    trainable = make_trainable(plan, TrialStorage(store.root if store.is_local else None))
    if resume:
        return tune.Tuner.restore(store.location, trainable=trainable, resume_errored=True)
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
        callbacks=[ResultsTableCallback(store.location)] + ([] if verbose else [report.ProgressCallback(plan, out)]),
        verbose=1 if verbose else 0,
    )
    tune_config = tune.TuneConfig(
        metric=METRIC, mode=MODE, scheduler=scheduler, num_samples=1,
        max_concurrent_trials=plan.max_concurrent, trial_dirname_creator=trial_dirname,
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
