"""A sweep, declared: what to vary, what to hold fixed, which seeds, on what resources.

A sweep file is a few lines of data (see ``sweeps/qat_vs_lawa.py``)::

    SWEEP = Sweep(
        name="qat_vs_lawa",
        preset="baseline",
        fixed={"QUANT_FORMAT": "int6", "COMPRESSOR": "zstd"},
        grid={"QAT_ENABLED": [0, 1], "LAWA_ENABLED": [0, 1]},
        seeds=[1337, 42, 2024],
        baseline={"QAT_ENABLED": 0, "LAWA_ENABLED": 0},
    )

:func:`plan_sweep` turns it, for one scale and the command line's options, into a
:class:`SweepPlan`: every trial's config resolved and validated (golf's own checks, with
did-you-mean for unknown keys; declared types for a competitor's script), every problem of the
whole grid reported at once in one :class:`SpecError`, before Ray or any trial starts.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from golf.config import ConfigError, field_spec, resolve, validate
from golf.contract import EVAL_ONLY_FROM_ENV
from golf.presets import SCALES, resolve_names

from sweeps.launcher import Program
from sweeps.sequential import Sequential, seed_list_problems, sequential_problems

GOLF_MODULE = "golf.train"
SCALE_NAMES = tuple(SCALES)
DEFAULT_SCALE = "smoke"
DEFAULT_SEEDS = (1337, 42, 2024)
GPU_CHOICES = (0, 1, 2, 4, 8)
# Full-scale data on the nodes (overridable by the job's environment or --set).
DEFAULT_DATA_PATH = "/data/golf/datasets/fineweb10B_sp1024"
DEFAULT_TOKENIZER_PATH = "/data/golf/tokenizers/fineweb_1024_bpe.model"
DATA_KEYS = ("DATA_PATH", "TOKENIZER_PATH")
# Keys the service sets itself for every trial: a sweep may not set them.
MANAGED_KEYS = {
    "SEED": "seeds are a sweep axis of their own: use seeds=[...] or --seeds",
    "RUN_DIR": "each trial writes into its own trial directory",
    "RUN_ID": "each trial is named after its Tune trial",
    "LOG_TO_FILE": "the service tees the output into the trial's train.log",
    EVAL_ONLY_FROM_ENV: "the service sets it when it retries a trial from its checkpoint",
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCRIPT_TYPES = {bool: "bool", int: "int", float: "float", str: "str", Path: "path"}


class SpecError(ValueError):
    """A sweep that cannot run as written; ``problems`` lists every problem with its fix."""

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems in the sweep:\n" + "\n".join(
                f"  - {problem}" for problem in self.problems)
        super().__init__(message)


@dataclass(frozen=True)
class Asha:
    """ASHA early stopping on the live ``val_bpb``, in optimizer steps (exploratory sweeps only).

    Rungs are at ``grace_steps * reduction_factor**k`` steps below ``max_steps``; at each, a trial
    whose latest ``val_bpb`` is worse than the best ``1/reduction_factor`` of those that reached
    it before is stopped. Trials report at validation lines, so a rung sees the val_bpb of the
    first validation at or after it. ASHA stops trials independently, so seeds of one config may
    end at different steps; sweeps meant to show a significant difference between configs should
    run every seed to the end (no scheduler: FIFO).
    """

    grace_steps: int
    max_steps: int | None = None  # the horizon; None: the largest ITERATIONS of the sweep's trials
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class Sweep:
    """A declarative sweep: a base preset, the varied keys, the fixed keys, seeds and resources.

    ``grid`` maps a config key to its values (their cartesian product); ``configs`` lists explicit
    configs instead of or in addition to the grid (each a mapping of keys to values). ``fixed``
    applies to every trial. Keys are golf config keys (any spelling ``golf train --list-config``
    accepts) unless ``script`` names a competitor's ``train_gpt.py``; its keys are then environment
    variables, checked against ``script_keys`` ({NAME: type}) when given. ``gpus_per_trial`` is
    0, 1, 2, 4 or 8 (default: 8 at full scale, 0 = CPU at smoke scale); CPU trials run
    ``cpu_procs`` processes. ``baseline`` names the config the others are compared with.
    ``uses_data`` says that the trainer reads DATA_PATH/TOKENIZER_PATH (the service provides the
    demo corpus at smoke scale and checks the paths at full scale).
    """

    name: str
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    configs: Sequence[Mapping[str, Any]] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    seeds: Sequence[int] | Sequential = DEFAULT_SEEDS  # Sequential(...): seeds only where undecided
    preset: str = "baseline"
    script: str | None = None
    script_args: Sequence[str] = ()
    script_keys: Mapping[str, type] | None = None
    gpus_per_trial: int | None = None
    cpus_per_trial: float | None = None
    cpu_procs: int = 1
    scheduler: Asha | None = None
    max_concurrent: int | None = None
    max_failures: int = 2
    baseline: Mapping[str, Any] | None = None
    uses_data: bool = True
    description: str = ""


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its config label, the varied keys as environment strings, and its seed."""

    label: str
    params: dict[str, str]
    seed: int


@dataclass(frozen=True)
class SweepPlan:
    """A sweep resolved for one scale and command line: everything a trial needs, validated.

    Picklable and small: the trial runner receives it through ``tune.with_parameters``.
    ``fixed_env`` holds the environment strings common to every trial (the sweep's ``fixed`` plus
    ``--set``, and the data paths when they are not the demo corpus).
    """

    name: str
    scale: str
    stack: str | None  # golf stack; None for a competitor's script
    program: Program
    script_path: str | None  # absolute path of a script on the driver (None for golf)
    fixed_env: dict[str, str]
    variants: tuple[dict[str, str], ...]
    labels: tuple[str, ...]
    seeds: tuple[int, ...]
    swept_keys: tuple[str, ...]
    gpus_per_trial: int
    cpus_per_trial: float
    cpu_procs: int
    scheduler: Asha | None
    max_concurrent: int | None
    max_failures: int
    baseline_label: str | None
    demo_data: bool  # smoke scale: the trial provides the demo corpus for the data keys not set
    uses_data: bool
    description: str = ""
    sequential: Sequential | None = None  # the rule when seeds are allocated round by round

    @property
    def is_golf(self) -> bool:
        return self.stack is not None

    @property
    def nproc(self) -> int:
        return self.gpus_per_trial or self.cpu_procs

    @property
    def demo_keys(self) -> tuple[str, ...]:
        """The data keys whose value is the demo corpus's (built on each node on first use)."""
        return tuple(key for key in DATA_KEYS if key not in self.fixed_env) if self.demo_data else ()

    @property
    def trials(self) -> list[TrialSpec]:
        """Every trial in the order Tune runs them (all configs of one seed, then the next)."""
        return [TrialSpec(label, dict(params), seed)
                for seed in self.seeds
                for label, params in zip(self.labels, self.variants)]

    def label_of(self, params: Mapping[str, str]) -> str:
        return config_label(params, self.stack)

    def describe(self) -> dict[str, Any]:
        """JSON-able description, stored as the experiment's ``sweep.json``."""
        out = asdict(self)
        out["program"] = {"module": self.program.module, "script": self.program.script,
                          "args": list(self.program.args)}
        out["scheduler"] = asdict(self.scheduler) if self.scheduler else None
        out["fingerprint"] = self.fingerprint()
        return out

    def fingerprint(self) -> str:
        """A hash of what decides the trials' results (not concurrency or retry settings)."""
        decisive = {
            "scale": self.scale, "stack": self.stack, "program": self.program.rank_argv(),
            "fixed_env": self.fixed_env, "variants": list(self.variants), "seeds": list(self.seeds),
            "gpus_per_trial": self.gpus_per_trial, "cpu_procs": self.cpu_procs,
        }
        if self.sequential is not None:  # absent for a plain seed list: old fingerprints stand
            decisive["sequential"] = self.sequential.as_dict()
        text = json.dumps(decisive, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_label(params: Mapping[str, str], stack: str | None) -> str:
    """``KEY=value,KEY=value`` in the sweep's key order; the stack name for the base config."""
    if not params:
        return stack or "default"
    return ",".join(f"{key}={value}" for key, value in params.items())


def parse_assignments(items: Sequence[str], option: str = "--set") -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> dict, with a clear error for an item without ``=``."""
    out: dict[str, str] = {}
    problems = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"{option} {item!r} is not KEY=VALUE (example: {option} ITERATIONS=200)")
            continue
        out[key.strip()] = value.strip()
    if problems:
        raise SpecError(problems)
    return out


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1337,42,2024"`` -> (1337, 42, 2024)."""
    seeds = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit():
            raise SpecError(f"--seeds {text!r}: {item!r} is not a whole number >= 0 "
                            "(example: --seeds 1337,42,2024)")
        seeds.append(int(item))
    return tuple(seeds)


# ---------------------------------------------------------------------------------------------
def plan_sweep(
    sweep: Sweep,
    *,
    scale: str = DEFAULT_SCALE,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, str] | None = None,
    gpus_per_trial: int | None = None,
    max_concurrent: int | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> SweepPlan:
    """Resolve and validate a sweep for ``scale`` and the command line's options.

    ``overrides`` (``--set``) apply to every trial; ``environ`` is the driver's environment (for
    DATA_PATH / TOKENIZER_PATH at full scale); relative paths are taken from ``cwd``. Raises
    :class:`SpecError` listing every problem of every trial.
    """
    environ = os.environ if environ is None else environ
    base_dir = Path(cwd or os.getcwd())
    problems: list[str] = []
    if scale not in SCALE_NAMES:
        raise SpecError(f"unknown scale {scale!r}: use one of {', '.join(SCALE_NAMES)}")
    if not isinstance(sweep.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", sweep.name):
        problems.append(f"sweep name {sweep.name!r} must be letters, digits, '_', '-' or '.' "
                        "(it names the experiment directory)")

    keys = _KeyRules(sweep, scale, base_dir, problems)
    fixed = keys.normalize(sweep.fixed, "fixed")
    cli = keys.normalize(overrides or {}, "--set")
    grid: dict[str, list[str]] = {}
    for raw_key, values in dict(sweep.grid).items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            problems.append(f"grid[{raw_key!r}] must be a non-empty list of values, e.g. [0, 1]")
            continue
        key = keys.canonical_key(str(raw_key).strip(), "grid")
        if key is None:
            continue
        column = [keys.value(key, value, f"grid[{raw_key!r}]") for value in values]
        if any(text is None for text in column):
            continue
        if len(set(column)) != len(column):
            problems.append(f"grid[{raw_key!r}] lists a value twice: {list(values)}")
        if key in grid:
            problems.append(f"grid sets {key} twice (two spellings of one key): keep one")
        grid[key] = column  # type: ignore[assignment]
    explicit = [keys.normalize(config, f"configs[{index}]")
                for index, config in enumerate(sweep.configs)]

    swept = list(grid)
    for config in explicit:
        swept += [key for key in config if key not in swept]
    for key in swept:
        if key in fixed:
            problems.append(f"{key} is both swept and in fixed: set it in one place")
        if key in cli:
            problems.append(f"--set {key}=... would override a swept key: remove it from the "
                            "command line, or edit the sweep's grid")
    fixed_env = {**fixed, **cli}

    variants = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else []
    variants += [dict(config) for config in explicit]
    if not variants:
        variants = [{}]
    labels = [config_label(v, keys.stack) for v in variants]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        problems.append(f"config(s) listed twice: {', '.join(duplicates)}")

    # --seeds on the command line forces a plain list, even over a Sequential(...) sweep.
    sequential = sweep.seeds if seeds is None and isinstance(sweep.seeds, Sequential) else None
    if sequential is not None:
        seed_list = tuple(sequential.seeds) if isinstance(sequential.seeds, Sequence) else ()
        problems += sequential_problems(sequential)
    else:
        seed_list = tuple(seeds) if seeds is not None else tuple(sweep.seeds)
        problems += _seed_problems(seed_list)
    gpus = _gpus(sweep, scale, gpus_per_trial, problems)
    cpu_procs = sweep.cpu_procs
    if not isinstance(cpu_procs, int) or cpu_procs < 1:
        problems.append(f"cpu_procs={cpu_procs!r} must be a whole number >= 1")
        cpu_procs = 1
    cpus = sweep.cpus_per_trial if sweep.cpus_per_trial is not None else float(gpus or cpu_procs)
    if not (isinstance(cpus, (int, float)) and cpus > 0):
        problems.append(f"cpus_per_trial={cpus!r} must be a positive number")
        cpus = 1.0
    concurrency = max_concurrent if max_concurrent is not None else sweep.max_concurrent
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        problems.append(f"max_concurrent={concurrency!r} must be a whole number >= 1")
    if not isinstance(sweep.max_failures, int) or sweep.max_failures < 0:
        problems.append(f"max_failures={sweep.max_failures!r} must be a whole number >= 0")

    # Each data key keeps its own default: at smoke scale the demo corpus's file, at full scale
    # the job's environment or the node image's path; setting one key never moves the other.
    demo = scale == "smoke" and sweep.uses_data and not all(k in fixed_env for k in DATA_KEYS)
    if sweep.uses_data:
        for key, default in zip(DATA_KEYS, (DEFAULT_DATA_PATH, DEFAULT_TOKENIZER_PATH)):
            if scale == "smoke" and key not in fixed_env:
                continue  # the trial fills it in with the demo corpus's path on its node
            value = fixed_env.get(key) or environ.get(key) or default
            fixed_env[key] = str((base_dir / value).resolve()) if not os.path.isabs(value) else value
    if not sweep.uses_data and keys.stack is not None:
        problems.append("uses_data=False is only for a script that reads no DATA_PATH: golf.train "
                        "always needs its data")

    baseline_label = None
    if sweep.baseline is not None:
        wanted = keys.normalize(sweep.baseline, "baseline")
        # An empty baseline names the config that varies nothing (the preset as it is).
        matches = [label for label, v in zip(labels, variants)
                   if (all(v.get(k) == value for k, value in wanted.items()) if wanted else not v)]
        if len(matches) == 1:
            baseline_label = matches[0]
        elif wanted:
            problems.append(f"baseline {dict(sweep.baseline)} matches {len(matches)} configs "
                            f"({', '.join(matches) or 'none'}); it must name exactly one of: "
                            f"{'; '.join(labels)}")

    scheduler = sweep.scheduler
    if scheduler is not None:
        problems += _asha_problems(scheduler)
    if sequential is not None:
        problems += _sequential_sweep_problems(sweep, baseline_label, len(labels))

    if keys.stack is not None:
        problems += _golf_problems(keys.stack, scale, fixed_env, variants, labels, seed_list,
                                   gpus or cpu_procs)
    if problems:
        raise SpecError(problems)

    if scheduler is not None and scheduler.max_steps is None and keys.stack is not None:
        iterations = max(resolve(keys.stack, scale, overrides={**fixed_env, **v}).iterations
                         for v in variants)
        scheduler = Asha(scheduler.grace_steps, iterations, scheduler.reduction_factor)
    elif scheduler is not None and scheduler.max_steps is None:
        raise SpecError("Asha(max_steps=...) is needed for a script's sweep: the service cannot "
                        "know how many steps the script runs")

    return SweepPlan(
        name=sweep.name,
        scale=scale,
        stack=keys.stack,
        program=keys.program,
        script_path=keys.script_path,
        fixed_env=fixed_env,
        variants=tuple(variants),
        labels=tuple(labels),
        seeds=seed_list,
        swept_keys=tuple(swept),
        gpus_per_trial=gpus,
        cpus_per_trial=float(cpus),
        cpu_procs=cpu_procs,
        scheduler=scheduler,
        max_concurrent=concurrency,
        max_failures=sweep.max_failures,
        baseline_label=baseline_label,
        demo_data=demo,
        uses_data=sweep.uses_data,
        description=sweep.description,
        sequential=sequential,
    )


class _KeyRules:
    """How a sweep's keys and values are checked and spelled: golf's config, or a script's env."""

    def __init__(self, sweep: Sweep, scale: str, base_dir: Path, problems: list[str]) -> None:
        self.problems = problems
        self.script_keys = dict(sweep.script_keys) if sweep.script_keys is not None else None
        self.script_path: str | None = None
        if sweep.script is None:
            try:
                self.stack: str | None = resolve_names(sweep.preset, scale)[0]
            except ConfigError as err:
                problems.extend(err.problems)
                self.stack = "baseline"
            if sweep.script_keys is not None or sweep.script_args:
                problems.append("script_keys/script_args describe a competitor's script: set "
                                "script='path/to/train_gpt.py' too, or drop them")
            self.program = Program(module=GOLF_MODULE)
        else:
            self.stack = None
            path = Path(sweep.script).expanduser()
            absolute = path if path.is_absolute() else (base_dir / path)
            if not absolute.is_file():
                problems.append(f"script {sweep.script!r} does not exist (looked at {absolute}); "
                                "give the path of your train_gpt.py, relative to where you run "
                                "the sweep or absolute")
            self.script_path = str(absolute.resolve())
            # Relative paths travel as written: on a cluster they are found again inside the
            # job's working_dir, where the driver's absolute path may not exist.
            self.program = Program(script=str(sweep.script),
                                   args=tuple(str(a) for a in sweep.script_args))
            for name, kind in (self.script_keys or {}).items():
                if not _ENV_NAME.fullmatch(str(name)):
                    problems.append(f"script_keys: {name!r} is not an environment variable name")
                if kind not in _SCRIPT_TYPES:
                    problems.append(f"script_keys[{name!r}] = {kind!r}: use one of bool, int, "
                                    "float, str, pathlib.Path")

    def normalize(self, mapping: Mapping[str, Any], where: str) -> dict[str, str]:
        """Canonical key -> environment string; problems are collected, bad items dropped."""
        out: dict[str, str] = {}
        if not isinstance(mapping, Mapping):
            self.problems.append(f"{where} must be a mapping of KEY to value, "
                                 f"got {type(mapping).__name__}")
            return out
        for raw_key, value in mapping.items():
            key = str(raw_key).strip()
            canonical = self.canonical_key(key, where)
            if canonical is None:
                continue
            text = self.value(canonical, value, where)
            if text is None:
                continue
            if canonical in out and out[canonical] != text:
                self.problems.append(f"{where} sets {canonical} twice with different values")
            out[canonical] = text
        return out

    def canonical_key(self, key: str, where: str) -> str | None:
        upper = key.upper()
        if self.stack is not None:
            try:
                canonical = field_spec(key).env
            except ConfigError as err:
                self.problems.append(f"{where}: {err}")
                return None
        else:
            if not _ENV_NAME.fullmatch(key):
                self.problems.append(f"{where}: {key!r} is not an environment variable name")
                return None
            canonical = key
            if self.script_keys is not None and key not in self.script_keys:
                if key not in DATA_KEYS:
                    close = difflib.get_close_matches(key, list(self.script_keys), n=1, cutoff=0.6)
                    hint = f"; did you mean {close[0]}?" if close else ""
                    self.problems.append(
                        f"{where}: {key!r} is not one of the script's declared keys "
                        f"({', '.join(self.script_keys) or 'none'}){hint} "
                        "(add it to script_keys if the script reads it)")
                    return None
        managed = canonical if self.stack is not None else upper
        if managed in MANAGED_KEYS:
            self.problems.append(f"{where}: {key} is set by the service ({MANAGED_KEYS[managed]})")
            return None
        return canonical

    def value(self, key: str, value: Any, where: str) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            self.problems.append(f"{where}: {key}={value} is not a finite number")
            return None
        if not isinstance(value, (str, int, float, bool, Path)):
            self.problems.append(f"{where}: {key}={value!r} must be a string, number or boolean")
            return None
        if self.stack is not None:
            spec = field_spec(key)
            try:
                return spec.format(spec.parse(value, where))
            except ConfigError as err:
                self.problems.extend(err.problems)
                return None
        return self._script_value(key, value, where)

    def _script_value(self, key: str, value: Any, where: str) -> str | None:
        kind = (self.script_keys or {}).get(key)
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        if kind in (None, str, Path):
            return text
        if kind is bool:
            if text.strip().lower() in ("1", "true", "yes", "on"):
                return "1"
            if text.strip().lower() in ("0", "false", "no", "off"):
                return "0"
        elif kind is int:
            try:
                return str(int(text))
            except ValueError:
                pass
        elif kind is float:
            try:
                number = float(text)
                if math.isfinite(number):
                    return text
            except ValueError:
                pass
        self.problems.append(f"{where}: {key}={value!r} is not a {_SCRIPT_TYPES[kind]} "
                             f"(script_keys declares {key} as {_SCRIPT_TYPES[kind]})")
        return None


def _seed_problems(seeds: Sequence[int]) -> list[str]:
    if not seeds:
        return ["seeds is empty: give at least one seed, e.g. seeds=[1337]"]
    return seed_list_problems(seeds)


def _sequential_sweep_problems(sweep: Sweep, baseline_label: str | None,
                               configs: int) -> list[str]:
    """What a Sequential(...) needs of the rest of the sweep."""
    problems = []
    if sweep.baseline is None:
        problems.append("Sequential seeds decide each config against the baseline: name it with "
                        "baseline={...}, or use a plain seed list")
    elif baseline_label is not None and configs < 2:
        problems.append("Sequential seeds need at least one config besides the baseline: add "
                        "configs to the grid, or use a plain seed list")
    if sweep.scheduler is not None:
        problems.append("Sequential seeds need every trial's final val_bpb, and ASHA stops trials "
                        "early: drop scheduler=Asha(...), or use a plain seed list")
    return problems


def _gpus(sweep: Sweep, scale: str, override: int | None, problems: list[str]) -> int:
    gpus = override if override is not None else sweep.gpus_per_trial
    if gpus is None:
        gpus = 8 if scale == "full" else 0
    if gpus not in GPU_CHOICES or isinstance(gpus, bool):
        problems.append(f"gpus_per_trial={gpus!r}: use one of {', '.join(map(str, GPU_CHOICES))} "
                        "(8 = a whole 8xH100 node, 0 = CPU)")
        return 0
    return gpus


def _asha_problems(asha: Asha) -> list[str]:
    problems = []
    if not isinstance(asha, Asha):
        return [f"scheduler must be Asha(...) or None (FIFO), got {asha!r}"]
    if not isinstance(asha.grace_steps, int) or asha.grace_steps < 1:
        problems.append(f"Asha(grace_steps={asha.grace_steps!r}) must be a whole number >= 1")
    if asha.max_steps is not None and (not isinstance(asha.max_steps, int)
                                       or asha.max_steps <= asha.grace_steps):
        problems.append(f"Asha(max_steps={asha.max_steps!r}) must exceed grace_steps")
    if not asha.reduction_factor > 1:
        problems.append(f"Asha(reduction_factor={asha.reduction_factor!r}) must be > 1")
    return problems


def _golf_problems(stack: str, scale: str, fixed_env: Mapping[str, str],
                   variants: Sequence[Mapping[str, str]], labels: Sequence[str],
                   seeds: Sequence[int], world_size: int) -> list[str]:
    """golf's own checks for every (config, seed); a problem shared by seeds is listed once."""
    found: dict[str, list[str]] = {}
    for label, variant in zip(labels, variants):
        for seed in seeds:
            overrides = {**fixed_env, **variant, "SEED": str(seed)}
            try:
                cfg = resolve(stack, scale, overrides=overrides)
                validate(cfg, world_size=world_size, check_runtime=False)
            except ConfigError as err:
                for problem in err.problems:
                    found.setdefault(problem, [])
                    if label not in found[problem]:
                        found[problem].append(label)
    return [f"{problem} [config {', '.join(where)}]" for problem, where in found.items()]

