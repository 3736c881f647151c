"""The Ray Tune trainable: one trial is one ``torchrun`` process tree of golf or of any script.

:func:`run_trial` is a function trainable living in this importable module (never ``__main__``),
so Ray pickles it by reference and every worker runs its own copy of this code. For one trial it

* works out the trial's world: its GPUs as Ray assigned them (``CUDA_VISIBLE_DEVICES`` passes
  through untouched; CPU trials get an empty one so nothing grabs a GPU), one rank per GPU or
  ``cpu_procs`` ranks on CPU;
* builds the child's environment from the plan: golf's preset and scale, the sweep's fixed keys,
  this trial's keys and seed, absolute data paths (the demo corpus at smoke scale, built on this
  node on first use; the configured shards checked at full scale), ``RUN_DIR`` under the trial
  directory and ``LOG_TO_FILE=0`` (the trial tees the output itself);
* launches torchrun (:mod:`sweeps.launcher`), writes every output line to ``train.log``, parses it
  with :class:`sweeps.logparse.LogParser` as it comes and reports ``step``, ``train_loss`` and
  ``val_bpb`` to Tune, so schedulers can act on live numbers; every report carries ``val_bpb``
  (Tune's strict metric checking), so reporting starts at the first validation line;
* reports a Tune checkpoint holding the artifact and ``train_state.json`` when the run prints
  ``artifact_saved: DIR`` (golf does; any script may); a retried trial that finds that checkpoint
  only evaluates it (``EVAL_ONLY_FROM``), it does not train again;
* ends with the final metrics: golf's ``result.json``, or the log's headline for other scripts.

Next to ``train.log`` it keeps ``trial.json`` (config, seed, status, error with the log's last
lines, the command to reproduce it), so the results table can be rebuilt from trial directories
alone. A failed run raises :class:`TrialError` carrying the log's tail; Tune records the trial as
ERROR and the sweep goes on. Just before, the trial reports what kind of failure it was and its
one-line cause (:mod:`sweeps.failures`), so that the driver does not retry a configuration or data
error or a full disk, and can print the cause once.
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golf.atomic import write_json_atomic
from golf.contract import (
    ARTIFACT_FILE_KEY, ARTIFACT_SAVED_PREFIX, EVAL_ONLY_FROM_ENV, PRESET_ENV, RESULT_FILE, SCALE_ENV,
    TRAIN_LOG_FILE, TRAIN_STATE_FILE,
)

from sweeps.failures import (
    CONFIG, FAILURE_CAUSE_KEY, FAILURE_KIND_KEY, RUN, STORAGE, Failure, classify_run_failure,
    storage_full_error,
)
from sweeps.launcher import (
    DEFAULT_STOP_GRACE_S, Program, TorchrunProcess, reproduce_command, torchrun_argv,
)
from sweeps.logparse import LogEvent, LogParser
from sweeps.spec import DATA_KEYS, SweepPlan

TRIAL_RECORD = "trial.json"
TRAIN_LOG = TRAIN_LOG_FILE
RUN_SUBDIR = "run"  # golf's RUN_DIR: Tune writes its own result.json into the trial dir itself
TRIAL_SCHEMA = "sweeps.trial/1"
ERROR_TAIL_LINES = 30
# Lines kept while a run streams: enough to look past torchrun's own ~30-line failure report.
_TAIL_BUFFER_LINES = 200
# torchrun's agent announces a failed rank on one line, then prints its traceback and a banner.
_AGENT_FAILURE = re.compile(r"^[EW]\d{4} .*torch/distributed/elastic/.*\] failed \(exitcode: -?\d+\)")
GOLF_PRESET_ENV, GOLF_SCALE_ENV = PRESET_ENV, SCALE_ENV
_ARTIFACT_SAVED = re.compile(re.escape(ARTIFACT_SAVED_PREFIX) + r"\s*(\S.*?)\s*$")

# Statuses a trial.json can hold. TERMINATED: ran to the end. STOPPED: Tune stopped it before the
# end (a scheduler or stopper). ERROR: failed. INTERRUPTED: the driver was stopped (a signal) while
# it ran; resuming the experiment continues it. RUNNING: running, or its process vanished with the
# driver/node before it could say otherwise (the results table then shows UNKNOWN).
STATUSES = ("RUNNING", "TERMINATED", "STOPPED", "ERROR", "INTERRUPTED")


class TrialError(RuntimeError):
    """A trial that could not run or whose run failed; the message ends with the log's last lines.

    ``failure`` says what kind of failure it is and its one-line cause (:mod:`sweeps.failures`).
    """

    def __init__(self, message: str, failure: Failure | None = None) -> None:
        super().__init__(message)
        self.failure = failure or Failure(RUN, message.splitlines()[0] if message else "failed")


@dataclass(frozen=True)
class TrialStorage:
    """Where trials write their files.

    ``experiment_dir`` set (a local or shared filesystem path): straight into
    ``<experiment_dir>/<trial dir name>``, live. None (cloud storage): into the trial's working
    directory, which Tune uploads to the trial's storage directory (``SyncConfig(sync_artifacts)``).
    """

    experiment_dir: str | None

    def trial_dir(self, trial_dir_name: str) -> Path:
        if self.experiment_dir is not None:
            return Path(self.experiment_dir) / trial_dir_name
        return Path.cwd()


def make_trainable(plan: SweepPlan, storage: TrialStorage) -> Any:
    """The Tune trainable for a plan: :func:`run_trial` with its parameters and resources."""
    from ray import tune

    resources: dict[str, float] = {"cpu": plan.cpus_per_trial}
    if plan.gpus_per_trial:
        resources["gpu"] = plan.gpus_per_trial
    return tune.with_resources(tune.with_parameters(run_trial, plan=plan, storage=storage), resources)


def run_trial(config: Mapping[str, Any], plan: SweepPlan, storage: TrialStorage) -> None:
    """Run one trial (Tune function trainable); ``config`` is ``{"params": {...}, "seed": N}``."""
    from ray import tune

    context = tune.get_context()
    trial_dir = storage.trial_dir(Path(context.get_trial_dir()).name)
    params = {str(key): str(value) for key, value in dict(config["params"]).items()}
    seed = int(config["seed"])
    checkpoint = tune.get_checkpoint()
    try:
        record = TrialRecord.begin(
            trial_dir, plan=plan, params=params, seed=seed, trial_id=context.get_trial_id(),
            trial_name=context.get_trial_name(), eval_only=checkpoint is not None)
    except OSError as err:
        failure = _storage_failure(err, trial_dir)
        if failure is None:
            raise
        _report_failure(failure)
        raise TrialError(failure.cause, failure) from None
    reporter = _LiveReporter(record, fresh_metric_only=plan.scheduler is not None)
    try:
        nproc, gpu_ids = _world(plan)
        program = _program_on_this_node(plan)
        data_env = _data_env(plan)
        run_dir = trial_dir / RUN_SUBDIR
        run_dir.mkdir(parents=True, exist_ok=True)
        config_env = trial_config_env(plan, params, seed, data_env)
        env = child_env(plan, config_env, run_dir=run_dir, run_id=context.get_trial_name(),
                        gpu_ids=gpu_ids, base=os.environ)
        record.update(nproc=nproc, gpu_ids=gpu_ids,
                      cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
                      command=reproduce_command(plan.program, nproc, config_env),
                      env=config_env)
        with (checkpoint.as_directory() if checkpoint is not None else nullcontext(None)) as ckpt:
            if ckpt is not None:
                env[EVAL_ONLY_FROM_ENV] = str(ckpt)
            returncode = _stream(program, nproc, env, run_dir, record, reporter)
        if returncode != 0:
            failure = classify_run_failure(list(record.tail), returncode=returncode,
                                           is_golf=plan.is_golf)
            raise TrialError(_failure_message(plan, record, returncode, run_dir, failure.cause),
                             failure)
        final = _final_metrics(plan, run_dir, reporter, record)
        record.finish("TERMINATED")
        reporter.report(final)
    except SystemExit:
        if not reporter.stopped_by_tune:
            record.finish("ERROR", error="the trial process was asked to exit")
        raise
    except TrialError as err:
        _end_failed(record, err.failure, str(err))
        raise
    except BaseException as err:
        failure = _storage_failure(err, trial_dir)
        if failure is not None:
            # Its tail is of no use (the disk, not the run, failed), and a traceback per write
            # that failed would bury the one line that says so.
            _end_failed(record, failure, failure.cause)
            raise TrialError(failure.cause, failure) from None
        message = f"{type(err).__name__}: {err}{_tail_text(record)}"
        _end_failed(record, Failure(RUN, f"{type(err).__name__}: {err}"), message)
        raise TrialError(message) from err


def _end_failed(record: TrialRecord, failure: Failure, message: str) -> None:
    """Record a failed attempt, then tell the driver its kind before the error reaches Tune."""
    try:
        record.finish("ERROR", error=message, failure=failure.kind, cause=failure.cause)
    except OSError as err:
        if storage_full_error(err) is None:
            raise
        # The storage is full: trial.json keeps saying RUNNING, which the table shows as UNKNOWN.
    _report_failure(failure)


def _report_failure(failure: Failure) -> None:
    """The trial's last report: what kind of failure (:class:`sweeps.supervision.RetryPolicy`
    takes a trial's retries away when a retry cannot help) and its one-line cause (the driver's
    progress lines). ``val_bpb`` is there for Tune's strict metric check; no ``step``, so a
    scheduler ignores the report."""
    from ray import tune

    tune.report({"val_bpb": None, "phase": "failed", FAILURE_KIND_KEY: failure.kind,
                 FAILURE_CAUSE_KEY: failure.cause})


def _storage_failure(err: BaseException, trial_dir: Path) -> Failure | None:
    full = storage_full_error(err)
    if full is None:
        return None
    name = getattr(full, "filename", None)
    detail = f" (writing {name})" if name else ""
    return Failure(STORAGE, f"storage full at {trial_dir.parent}{detail}")


# --------------------------------------------------------------------------------- environment
def trial_config_env(plan: SweepPlan, params: Mapping[str, str], seed: int,
                     data_env: Mapping[str, str]) -> dict[str, str]:
    """The environment that decides the run (what a person sets to reproduce it by hand)."""
    env: dict[str, str] = {}
    if plan.is_golf:
        env[GOLF_PRESET_ENV] = str(plan.stack)
        env[GOLF_SCALE_ENV] = plan.scale
    env.update(plan.fixed_env)
    env.update(data_env)
    env.update(params)
    env["SEED"] = str(seed)
    return env


def child_env(plan: SweepPlan, config_env: Mapping[str, str], *, run_dir: Path, run_id: str,
              gpu_ids: list[str], base: Mapping[str, str]) -> dict[str, str]:
    """The torchrun child's full environment: this worker's, cleaned, plus the trial's config."""
    env = dict(base)
    if plan.is_golf:
        # golf reads every config key from the environment: a stray one exported on a node
        # (ITERATIONS=..., an alias) must not silently change this trial's config.
        from golf.config import FIELD_SPECS

        for spec in FIELD_SPECS:
            for key in (spec.env, *spec.aliases):
                env.pop(key, None)
        env.pop(GOLF_PRESET_ENV, None)
        env.pop(GOLF_SCALE_ENV, None)
        env["RUN_DIR"] = str(run_dir)
        env["LOG_TO_FILE"] = "0"
        # The child imports the same golf as this worker, whatever its own sys.path would find.
        root = str(code_root())
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(config_env)
    env["RUN_ID"] = run_id
    env["PYTHONUNBUFFERED"] = "1"
    if plan.gpus_per_trial == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
        if "OMP_NUM_THREADS" not in base:
            env["OMP_NUM_THREADS"] = str(max(1, int(plan.cpus_per_trial // plan.cpu_procs)))
    elif "CUDA_VISIBLE_DEVICES" not in env:
        # Ray leaves it unset under RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES; without it every
        # trial packed on the node would see (and use) all GPUs.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    return env


def code_root() -> Path:
    """The folder holding the ``golf`` and ``sweeps`` packages this process imported."""
    return Path(__file__).resolve().parents[1]


def demo_root() -> Path:
    """Where the demo corpus lives on this node: ``data/`` of a checkout, else a user cache."""
    root = code_root()
    if (root / "pyproject.toml").is_file() and os.access(root, os.W_OK):
        return root / "data"
    return Path.home() / ".cache" / "golf-sweeps" / "data"


def _setup_error(message: str) -> TrialError:
    """A node that cannot run the trial as planned: retrying on it would fail the same way."""
    return TrialError(message, Failure(CONFIG, message))


def _world(plan: SweepPlan) -> tuple[int, list[str]]:
    if plan.gpus_per_trial == 0:
        return plan.cpu_procs, []
    import ray

    ids = [str(gpu) for gpu in ray.get_gpu_ids()]
    if len(ids) != plan.gpus_per_trial:
        raise _setup_error(f"Ray gave this trial {len(ids)} GPU(s) ({','.join(ids) or 'none'}) but "
                           f"the sweep asks for {plan.gpus_per_trial} per trial; check the cluster's "
                           "GPU resources (`ray status`)")
    return len(ids), ids


def _program_on_this_node(plan: SweepPlan) -> Program:
    if plan.is_golf:
        return plan.program
    script = Path(str(plan.program.script))
    candidates = [script] if script.is_absolute() else [
        Path(os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd())) / script]
    if plan.script_path:
        candidates.append(Path(plan.script_path))
    for candidate in candidates:
        if candidate.is_file():
            return Program(script=str(candidate), args=plan.program.args)
    looked = ", ".join(str(c) for c in candidates)
    raise _setup_error(f"script {plan.program.script} not found on node {socket.gethostname()} "
                       f"(looked at {looked}); keep it inside the directory you submit with "
                       "`ray job submit --working-dir .`, or on storage every node mounts")


def _data_env(plan: SweepPlan) -> dict[str, str]:
    if not plan.uses_data:
        return {}
    env: dict[str, str] = {}
    if plan.demo_keys:
        paths = _demo_paths(demo_root())
        env = {key: paths[key] for key in plan.demo_keys}
    data, tokenizer = (plan.fixed_env.get(key) for key in DATA_KEYS)
    missing = []
    if data is not None and not Path(data).is_dir():
        missing.append(f"DATA_PATH={data} (a folder of fineweb_train_*.bin / fineweb_val_*.bin shards)")
    if tokenizer is not None and not Path(tokenizer).is_file():
        missing.append(f"TOKENIZER_PATH={tokenizer} (the SentencePiece .model file)")
    if missing:
        raise _setup_error(
            f"data missing on node {socket.gethostname()}: {'; '.join(missing)}. Put the data on "
            "every GPU node (bake it into the image, or `golf data fineweb` in the node setup), "
            "or point the sweep elsewhere: DATA_PATH=... TOKENIZER_PATH=... in the job's "
            "environment, or --set DATA_PATH=... --set TOKENIZER_PATH=...")
    return env


# Demo corpora this worker process has built or checked. Checking one reads every source file
# it was made from (about a second on a cold cache); a worker that Tune reuses for the next trial
# (reuse_actors) checks once, and golf's own preflight still checks the shards of every run.
_DEMO_CHECKED: dict[Path, dict[str, str]] = {}


def _demo_paths(root: Path) -> dict[str, str]:
    """DATA_PATH and TOKENIZER_PATH of the demo corpus under ``root``, built on first use."""
    if root not in _DEMO_CHECKED:
        from golf.corpus import build_demo

        demo = build_demo(root, quiet=True)
        _DEMO_CHECKED[root] = {"DATA_PATH": str(demo.data_path),
                               "TOKENIZER_PATH": str(demo.tokenizer_path)}
    return _DEMO_CHECKED[root]


# --------------------------------------------------------------------------------- running
def _stream(program: Program, nproc: int, env: dict[str, str], run_dir: Path,
            record: TrialRecord, reporter: _LiveReporter) -> int:
    """Run torchrun; tee, parse and report every line; always leave no process behind."""
    parser = LogParser()
    argv = torchrun_argv(program, nproc)
    with open(record.log_path, "a", encoding="utf-8", buffering=1) as log:
        if record.eval_only:
            log.write(f"sweeps: attempt {record.data['attempt']}: evaluating the checkpointed "
                      f"artifact ({env[EVAL_ONLY_FROM_ENV]}); training finished in an earlier attempt\n")
        proc = TorchrunProcess(argv, env=env, cwd=run_dir, stop_grace_s=DEFAULT_STOP_GRACE_S,
                               niceness=_node_niceness())
        record.update(torchrun_pid=proc.pid, torchrun_niceness=proc.niceness)
        try:
            for line in proc.lines():
                log.write(line + "\n")
                record.tail.append(line)
                for event in parser.feed(line):
                    reporter.on_event(event)
                saved = _ARTIFACT_SAVED.match(line)
                if saved:
                    reporter.checkpoint(Path(saved.group(1)), record.trial_dir)
            return proc.wait()
        finally:
            proc.stop()
            reporter.parser_summary = parser.summary()


def _node_niceness() -> int | None:
    """The niceness the trial's processes should run at: that of the node's Ray (the raylet).

    Ray starts its workers at niceness 15 (``RAY_worker_niceness``) so that they yield to the
    raylet; a torchrun started here would inherit it, and on a node whose cores are shared the
    trial would then run slower than the same command typed in a shell. The raylet, the worker's
    parent, runs at the niceness the node was started with. None outside a Ray worker.
    """
    import ray

    if not ray.is_initialized():
        return None
    try:
        return os.getpriority(os.PRIO_PROCESS, os.getppid())
    except (OSError, AttributeError):  # not POSIX, or the parent is gone
        return None


class _LiveReporter:
    """Turns log events into Tune reports; remembers the latest numbers.

    ``fresh_metric_only``: report at validation lines only. A scheduler decides at the first
    report past each of its milestones, and a train line's report would carry the val_bpb of an
    earlier validation (the challenge's scripts print step N's train line before its val line).
    """

    def __init__(self, record: TrialRecord, *, fresh_metric_only: bool = False) -> None:
        self.record = record
        self.fresh_metric_only = fresh_metric_only
        self.step: int | None = None
        self.train_loss: float | None = None
        self.val_bpb: float | None = None
        self.val_loss: float | None = None
        self.stopped_by_tune = False
        self.parser_summary: dict[str, Any] | None = None

    def on_event(self, event: LogEvent) -> None:
        values = event.values
        if event.kind == "train":
            self.step = values.get("step", self.step)
            if values.get("train_loss") is not None:
                self.train_loss = values["train_loss"]
            if self.fresh_metric_only:
                return
        elif event.kind == "val":
            self.step = values.get("step", self.step)
            self.val_bpb, self.val_loss = values.get("val_bpb"), values.get("val_loss")
        else:
            return
        # Tune checks that every report carries the configured metric, so the first report
        # waits for the first validation line (the challenge's scripts validate at step 0).
        if self.val_bpb is not None:
            self.report(self.live_metrics())

    def live_metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {"step": self.step, "val_bpb": self.val_bpb,
                                   "val_loss": self.val_loss, "phase": "train"}
        if self.train_loss is not None:
            metrics["train_loss"] = self.train_loss
        return metrics

    def checkpoint(self, run_dir: Path, trial_dir: Path) -> None:
        """Report a checkpoint of the artifact + train_state.json (for eval-only retries).

        Any program may use this protocol (golf does): print ``artifact_saved: DIR`` once DIR
        holds ``train_state.json`` naming its ``artifact_file``, and honour ``EVAL_ONLY_FROM``.
        """
        from ray import tune

        state_path = run_dir / TRAIN_STATE_FILE
        if self.val_bpb is None or not state_path.is_file():
            # Every report must carry val_bpb (golf always validates before it exports), and
            # without train_state.json there is nothing an eval-only retry could use.
            return
        state = json.loads(state_path.read_text())
        staging = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=trial_dir))
        try:
            for source in (state_path, run_dir / state[ARTIFACT_FILE_KEY]):
                try:
                    os.link(source, staging / source.name)
                except OSError:
                    shutil.copy2(source, staging / source.name)
            metrics = {**self.live_metrics(), "phase": "artifact_saved"}
            # Ray logs every persisted checkpoint at INFO from the worker, which the driver echoes
            # between the sweep's own progress lines; the table records the checkpoint instead.
            logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
            self.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(staging)))
            self.record.update(checkpointed_from=str(run_dir))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        from ray import tune

        try:
            tune.report(metrics, checkpoint=checkpoint)
        except SystemExit:
            # Tune wakes a reporting trial it wants stopped (scheduler, stopper) with SystemExit.
            self.stopped_by_tune = True
            if self.record.data["status"] == "RUNNING":
                self.record.finish("STOPPED")
            raise


def _final_metrics(plan: SweepPlan, run_dir: Path, reporter: _LiveReporter,
                   record: TrialRecord) -> dict[str, Any]:
    """The trial's last report: golf's result.json, or the log's headline for other scripts."""
    if plan.is_golf:
        result_path = run_dir / RESULT_FILE
        if not result_path.is_file():
            raise TrialError(f"golf.train exited 0 but wrote no {result_path}{_tail_text(record)}")
        result = json.loads(result_path.read_text())
        if result.get("status") != "ok":
            raise TrialError(f"golf.train's result.json says status {result.get('status')!r}: "
                             f"{result.get('error')}{_tail_text(record)}")
        metrics, size, timing = result["metrics"], result["bytes"], result["timing"]
        return {"step": timing.get("steps"), "val_bpb": metrics["val_bpb"],
                "val_loss": metrics["val_loss"], "bytes_total": size.get("total"),
                "train_s": timing.get("train_s"), "eval_s": timing.get("eval_s"), "phase": "final"}
    summary = reporter.parser_summary or {}
    headline = summary.get("headline")
    if not headline:
        raise TrialError(
            f"{plan.program.describe()} exited 0 but printed no final evaluation line such as "
            "'final_int8_zlib_roundtrip_exact val_loss:2.0055 val_bpb:1.1877' (the challenge's "
            f"log format), so the trial has no val_bpb{_tail_text(record)}")
    train_ms = summary.get("train_time_ms")
    eval_ms = summary.get("eval_time_ms_total")
    return {"step": summary.get("last_step"), "val_bpb": headline["val_bpb"],
            "val_loss": headline["val_loss"], "bytes_total": summary.get("total_submission_bytes"),
            "train_s": None if train_ms is None else train_ms / 1000.0,
            "eval_s": None if eval_ms is None else eval_ms / 1000.0, "phase": "final"}


def _failure_message(plan: SweepPlan, record: TrialRecord, returncode: int, run_dir: Path,
                     cause: str | None = None) -> str:
    what = plan.program.describe()
    reason = f"{what} exited with status {returncode}"
    result_path = run_dir / RESULT_FILE
    error = None
    if plan.is_golf and result_path.is_file():
        try:
            error = json.loads(result_path.read_text()).get("error")
        except (OSError, ValueError):
            error = None
    # The first line is what the table shows: the run's own error, else the classified cause.
    if error or cause:
        reason += f": {error or cause}"
    return reason + _tail_text(record)


def _tail_text(record: TrialRecord) -> str:
    lines = failure_excerpt(list(record.tail))
    if not lines:
        return " (it printed nothing)"
    return f"\nlast lines of {record.log_path}:\n" + "\n".join(lines)


def failure_excerpt(lines: list[str], count: int = ERROR_TAIL_LINES) -> list[str]:
    """The last ``count`` lines that say why a run failed.

    When torchrun reports a failed rank, its own traceback and banner (about 30 lines) would push
    the program's last words out of a plain tail; the excerpt then ends at the agent's one-line
    ``failed (exitcode: N) local_rank: R`` notice instead.
    """
    for index in range(len(lines) - 1, -1, -1):
        if _AGENT_FAILURE.match(lines[index]):
            return lines[max(0, index + 1 - count):index + 1]
    return lines[-count:]


# --------------------------------------------------------------------------------- trial.json
class TrialRecord:
    """The trial's own account of itself, ``trial.json`` next to ``train.log`` (atomic rewrites)."""

    def __init__(self, trial_dir: Path, data: dict[str, Any]) -> None:
        self.trial_dir = trial_dir
        self.data = data
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_BUFFER_LINES)

    @property
    def log_path(self) -> Path:
        return self.trial_dir / TRAIN_LOG

    @property
    def eval_only(self) -> bool:
        return bool(self.data.get("eval_only"))

    @classmethod
    def begin(cls, trial_dir: Path, *, plan: SweepPlan, params: Mapping[str, str], seed: int,
              trial_id: str, trial_name: str, eval_only: bool) -> TrialRecord:
        """Start an attempt: count it, keep an earlier full attempt's log and run folder aside."""
        trial_dir.mkdir(parents=True, exist_ok=True)
        previous = read_trial_record(trial_dir)
        attempt = int(previous.get("attempt", 0)) + 1 if previous else 1
        if attempt > 1 and not eval_only:
            # A fresh start of a trial that ran before: keep what the earlier attempt left.
            for name in (TRAIN_LOG, RUN_SUBDIR):
                old = trial_dir / name
                if old.exists():
                    old.rename(trial_dir / f"{name}.attempt{attempt - 1}")
        data = {
            "schema": TRIAL_SCHEMA,
            "experiment": plan.name,
            "trial_id": trial_id,
            "trial_name": trial_name,
            "label": plan.label_of(params),
            "params": dict(params),
            "seed": seed,
            "status": "RUNNING",
            "error": None,
            "attempt": attempt,
            "eval_only": eval_only,
            "program": plan.program.describe(),
            "preset": plan.stack,
            "scale": plan.scale,
            "gpus_per_trial": plan.gpus_per_trial,
            "host": socket.gethostname(),
            "node_id": _node_id(),
            "pid": os.getpid(),
            "python": sys.executable,
            "code_root": str(code_root()),
            "started_at": _now(),
            "ended_at": None,
        }
        record = cls(trial_dir, data)
        record.write()
        return record

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def finish(self, status: str, error: str | None = None, **fields: Any) -> None:
        assert status in STATUSES
        self.data.update(status=status, error=error, ended_at=_now(), **fields)
        self.write()

    def write(self) -> None:
        write_json_atomic(self.trial_dir / TRIAL_RECORD, self.data)


def read_trial_record(trial_dir: Path) -> dict[str, Any]:
    """A trial directory's ``trial.json`` as a dict ({} when there is none or it is unreadable)."""
    try:
        return json.loads((trial_dir / TRIAL_RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
