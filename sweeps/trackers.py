"""Experiment trackers: log every trial to MLflow and/or Weights & Biases through Ray Tune's own
logger callbacks (``ray.air.integrations.mlflow.MLflowLoggerCallback`` and
``ray.air.integrations.wandb.WandbLoggerCallback``, see :mod:`sweeps.wandb_logging`), never
through a client of our own.

A tracker is asked for as ``mlflow[:TRACKING_URI]`` or ``wandb[:PROJECT]`` (``--track``, repeatable).
:func:`resolve_trackers` checks every request before Ray starts (the package is importable, the URI
has a form MLflow can open, W&B online mode has an API key) and settles what is left open:

- MLflow: the tracking URI as given (a bare path becomes a ``file://`` URI), else
  ``MLFLOW_TRACKING_URI``, else a file store in the experiment directory (``<experiment>/mlruns``;
  with remote ``--storage`` a URI must be given). The MLflow experiment is the sweep's experiment
  name; each trial is one run, its params the trial's config keys (``params/KEY``) and seed, its
  tags the sweep, experiment, scale and stack.
- W&B: the project as given, else ``WANDB_PROJECT``, else the experiment name; the group is the experiment name, each
  trial one run (id = Tune's trial id), its config the trial's keys and seed, its tags the scale
  and stack. Mode: ``--wandb-mode``, else ``WANDB_MODE``, else online when an API key is at hand
  (``WANDB_API_KEY`` or a ``wandb login`` entry in ~/.netrc) and offline otherwise, so a machine
  without credentials never blocks on a prompt or the network; an offline run is uploaded later
  with ``wandb sync``. Runs are written under ``WANDB_DIR`` when set, else under the experiment
  directory (``<experiment>/wandb/``; with remote ``--storage``, each trial's directory).

Every number a trial reports reaches both: the live ``step``/``train_loss``/``val_bpb`` and the
final ``val_bpb``, ``val_loss``, ``bytes_total``, ``train_s`` and ``eval_s``.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sweeps.spec import SpecError

TRACKER_KINDS = ("mlflow", "wandb")
WANDB_MODES = ("auto", "online", "offline")
INSTALL_HINT = "pip install 'golf-sweeps[trackers]'"
# MLflow stores that need SQLAlchemy, which mlflow-skinny (the extra's package) leaves out.
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_MLFLOW_FORMS = ("file:///ABSOLUTE/PATH, a local path, http(s)://HOST[:PORT], databricks[://PROFILE] "
                 "or a database URI (sqlite:///mlflow.db)")
_DEFAULT_WANDB_HOST = "api.wandb.ai"


class TrackerError(SpecError):
    """A tracker request that cannot work as written (one line: the problem and the fix)."""


@dataclass(frozen=True)
class TrackerRequest:
    """A tracker as the command line asks for it: its kind and an optional target (an MLflow
    tracking URI or a W&B project)."""

    kind: str
    target: str | None = None


def parse_tracker(text: str) -> TrackerRequest:
    """``mlflow``, ``mlflow:URI``, ``wandb`` or ``wandb:PROJECT`` -> a :class:`TrackerRequest`."""
    kind, sep, target = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in TRACKER_KINDS:
        raise TrackerError(f"tracker {text!r}: use mlflow[:TRACKING_URI] or wandb[:PROJECT]")
    target = target.strip()
    if sep and not target:
        raise TrackerError(f"tracker {text!r}: nothing after ':' (drop it for the default, or "
                           f"name the {'tracking URI' if kind == 'mlflow' else 'project'})")
    return TrackerRequest(kind, target or None)


@dataclass(frozen=True)
class MLflowTracker:
    """Where and how the trials are logged to MLflow."""

    tracking_uri: str
    experiment_name: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def is_file_store(self) -> bool:
        return self.tracking_uri.startswith("file:")

    def environment(self) -> dict[str, str]:
        """Variables the driver needs before MLflow is imported (defaults; a user's value wins)."""
        if not self.is_file_store:
            return {}
        # MLflow 3 refuses its file store unless told that it is wanted; a file:// URI asked for
        # here is that. A local store stays local: no usage telemetry leaves the machine.
        return {"MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}

    def callback(self) -> Any:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return MLflowLoggerCallback(tracking_uri=self.tracking_uri,
                                    experiment_name=self.experiment_name, tags=dict(self.tags))

    def describe(self) -> str:
        return f"MLflow experiment {self.experiment_name} at {self.tracking_uri}"


@dataclass(frozen=True)
class WandbTracker:
    """Where and how the trials are logged to Weights & Biases."""

    project: str
    group: str
    mode: str  # "online" or "offline"
    mode_reason: str
    dir: str | None  # None: each trial's own directory (the logging actor's working directory)
    tags: tuple[str, ...] = ()

    def environment(self) -> dict[str, str]:
        env = {"WANDB_MODE": self.mode}  # Ray's callback asks for an API key unless it says offline
        if self.mode == "offline":
            env["WANDB_ERROR_REPORTING"] = "false"  # offline means nothing leaves the machine
        return env

    def callback(self) -> Any:
        from sweeps.wandb_logging import WandbCallback

        # Passed to wandb.init in Ray's logging actor, whose environment was fixed when Ray
        # started, so mode and directory go explicitly. System stats would sample the driver's
        # node, not the trial's ranks; silent keeps wandb's banner out of the progress lines.
        init_kwargs: dict[str, Any] = {
            "mode": self.mode, "tags": list(self.tags),
            "settings": {"silent": True, "x_disable_stats": True, "console": "off"},
        }
        if self.dir is not None:
            init_kwargs["dir"] = self.dir
        return WandbCallback(project=self.project, group=self.group, **init_kwargs)

    def describe(self) -> str:
        text = f"W&B project {self.project}, group {self.group}, {self.mode} ({self.mode_reason})"
        if self.mode == "offline":
            where = f"{self.dir}/wandb" if self.dir else "each trial's directory (uploaded with it)"
            text += f": runs in {where} (upload later with `wandb sync`)"
        return text


Tracker = MLflowTracker | WandbTracker


def resolve_trackers(requests: Sequence[TrackerRequest], *, experiment_dir: str,
                     experiment_name: str, tags: Mapping[str, str], wandb_mode: str = "auto",
                     env: Mapping[str, str] | None = None) -> list[Tracker]:
    """Check each request and settle its defaults (see the module docstring); raises
    :class:`TrackerError` naming the problem and the fix. Nothing is imported or started."""
    env = os.environ if env is None else env
    if wandb_mode not in WANDB_MODES:
        raise TrackerError(f"--wandb-mode {wandb_mode!r}: use one of {', '.join(WANDB_MODES)}")
    kinds = [request.kind for request in requests]
    for kind in TRACKER_KINDS:
        if kinds.count(kind) > 1:
            raise TrackerError(f"--track {kind} is given {kinds.count(kind)} times: give it once")
    if wandb_mode != "auto" and "wandb" not in kinds:
        raise TrackerError(f"--wandb-mode {wandb_mode} without --track wandb: add --track wandb "
                           "or drop --wandb-mode")
    trackers: list[Tracker] = []
    for request in requests:
        _require_package(request.kind)
        if request.kind == "mlflow":
            uri = _mlflow_uri(request.target, env, experiment_dir)
            trackers.append(MLflowTracker(uri, experiment_name, dict(tags)))
        else:
            mode, reason = _wandb_mode(wandb_mode, env)
            trackers.append(WandbTracker(
                project=request.target or env.get("WANDB_PROJECT") or experiment_name,
                group=experiment_name, mode=mode, mode_reason=reason,
                dir=_wandb_dir(env, experiment_dir),
                tags=tuple(f"{key}:{value}" for key, value in tags.items())))
    return trackers


def sweep_trackers(plan: Any, experiment_dir: str, requests: Sequence[TrackerRequest],
                   wandb_mode: str = "auto") -> list[Tracker]:
    """:func:`resolve_trackers` for a :class:`sweeps.spec.SweepPlan` stored at ``experiment_dir``
    (``<storage>/<experiment name>``): tagged with the sweep, its scale and its stack or script."""
    if not requests and wandb_mode == "auto":
        return []
    name = experiment_dir.rstrip("/").rsplit("/", 1)[-1]
    what = ("stack", plan.stack) if plan.is_golf else ("script", plan.program.describe())
    tags = {"sweep": plan.name, "scale": plan.scale, what[0]: str(what[1])}
    return resolve_trackers(requests, experiment_dir=experiment_dir, experiment_name=name,
                            tags=tags, wandb_mode=wandb_mode)


def apply_environment(trackers: Sequence[Tracker],
                      env: MutableMapping[str, str] | None = None) -> None:
    """Put the trackers' variables into the driver's environment, before Ray starts (a local
    Ray's workers, where W&B's logging actors run, inherit it) and before MLflow is imported."""
    env = os.environ if env is None else env
    for tracker in trackers:
        for key, value in tracker.environment().items():
            if key == "WANDB_MODE":
                env[key] = value  # the resolved mode already took the user's WANDB_MODE into account
            else:
                env.setdefault(key, value)


def tracker_callbacks(trackers: Sequence[Tracker]) -> list[Any]:
    """Ray Tune's callbacks for the trackers (imports MLflow / wandb)."""
    return [tracker.callback() for tracker in trackers]


def _require_package(kind: str) -> None:
    if importlib.util.find_spec(kind) is None:  # the kinds are named after their packages
        raise TrackerError(f"--track {kind} needs the {kind} package, which is not installed: "
                           f"{INSTALL_HINT}")


def _mlflow_uri(target: str | None, env: Mapping[str, str], experiment_dir: str) -> str:
    uri = target or env.get("MLFLOW_TRACKING_URI")
    if not uri:
        if "://" in experiment_dir:
            raise TrackerError(f"--track mlflow: the experiment is on remote storage "
                               f"({experiment_dir}), where no MLflow file store can live; name a "
                               "tracking server: --track mlflow:http://HOST:5000")
        return Path(experiment_dir, "mlruns").as_uri()
    if uri == "databricks":
        return uri
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "":
        return Path(uri).expanduser().resolve().as_uri()  # a plain path: a file store there
    if scheme == "file":
        if parsed.netloc or not parsed.path.startswith("/"):
            raise TrackerError(f"MLflow tracking URI {uri!r}: a file store needs an absolute path, "
                               "file:///ABSOLUTE/PATH (three slashes), or give the path itself")
        return uri
    if scheme in ("http", "https"):
        if not parsed.hostname:
            raise TrackerError(f"MLflow tracking URI {uri!r} names no host: use "
                               f"{scheme}://HOST[:PORT]")
        return uri
    if scheme == "databricks":
        return uri
    if scheme.split("+")[0] in _DATABASE_SCHEMES:
        if importlib.util.find_spec("sqlalchemy") is None:
            raise TrackerError(f"MLflow tracking URI {uri!r}: a database store needs SQLAlchemy, "
                               "which mlflow-skinny leaves out; `pip install mlflow` (the full "
                               "package), or use a file store (a path) or a tracking server")
        return uri
    raise TrackerError(f"MLflow tracking URI {uri!r}: unknown scheme {scheme!r}; use "
                       f"{_MLFLOW_FORMS}")


def _wandb_dir(env: Mapping[str, str], experiment_dir: str) -> str | None:
    if env.get("WANDB_DIR"):
        return str(Path(env["WANDB_DIR"]).expanduser().resolve())
    if "://" not in experiment_dir:
        return experiment_dir
    # Remote storage: Ray's default, the trial's local directory, which Tune uploads with it.
    return None


def _wandb_mode(asked: str, env: Mapping[str, str]) -> tuple[str, str]:
    """The W&B mode and why it is that one."""
    if asked != "auto":
        mode, reason = asked, "--wandb-mode"
    elif env.get("WANDB_MODE"):
        value = env["WANDB_MODE"].strip().lower()
        mode = {"dryrun": "offline", "run": "online"}.get(value, value)
        if mode not in ("online", "offline"):
            raise TrackerError(f"WANDB_MODE={env['WANDB_MODE']} with --track wandb: set it to "
                               "online or offline, or unset it (then: online when an API key "
                               "is at hand, else offline)")
        reason = "WANDB_MODE"
    elif _has_wandb_key(env):
        mode, reason = "online", "an API key is at hand"
    else:
        mode, reason = "offline", "no WANDB_API_KEY or wandb login"
    if mode == "online" and not _has_wandb_key(env):
        raise TrackerError("W&B online mode needs an API key: set WANDB_API_KEY or run "
                           "`wandb login`, or use --wandb-mode offline (upload later with "
                           "`wandb sync`)")
    return mode, reason


def _has_wandb_key(env: Mapping[str, str]) -> bool:
    """WANDB_API_KEY, or the ~/.netrc entry ``wandb login`` writes for the W&B host."""
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or f"https://{_DEFAULT_WANDB_HOST}").hostname
    path = env.get("NETRC") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host or _DEFAULT_WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False
