"""Printing a sweep: its plan, the per-trial table, the per-config summary, and significance.

Every significance line says which test, which metric, which margin and how many seeds, because a
"p = 0.03" without them means nothing. Configs are compared with the sweep's baseline on per-seed
val_bpb, one-sided, margin 0. A sweep runs the same seeds for every config, so by default
(``test="auto"``) a config that shares at least 2 finished seeds with the baseline gets the paired
t-test on those seeds (a seed that moves both configs alike cancels out); otherwise Welch's
two-sample t-test (as the leaderboard's p= notes), which ignores any pairing and is conservative
when seeds shift all configs alike. ``test="welch"`` or ``"paired"`` forces one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import pandas as pd

from sweeps.cost import (CONFIG_COST_COLUMNS, MONEY_COLUMNS, TRIAL_COST_COLUMNS, add_money_columns,
                         sweep_cost)
from sweeps.failures import CONFIG, FAILURE_CAUSE_KEY, FAILURE_KIND_KEY, STORAGE
from sweeps.results import (_TuneCallback, config_values, describe_statuses, finished,
                            labels_in_order, param_columns)
from sweeps.spec import DATA_KEYS, SweepPlan
from sweeps.stats import Comparison, Sample, StatsError, compare

TRIAL_VIEW = ("label", "seed", "status", "val_bpb", "val_loss", "bytes_total", "under_limit",
              "train_s", "eval_s", "steps", "step_avg_ms", "gpus", "gpu_s", "cpu_s", *MONEY_COLUMNS)
# Cost columns a view leaves out when no row has a non-zero value (a CPU sweep's GPU-seconds).
_COST_VIEW_COLUMNS = (*TRIAL_COST_COLUMNS, *CONFIG_COST_COLUMNS)
SIGNIFICANCE_TESTS = ("auto", "paired", "welch")
SIGNIFICANCE_METRIC = "bpb"
MIN_PAIRS = 2


@dataclass(frozen=True)
class ConfigComparison:
    """One config against the baseline: the comparison, or why there is none."""

    label: str
    baseline: str
    comparison: Comparison | None
    reason: str | None = None


def format_plan(plan: SweepPlan, location: str, *, list_trials: bool = False,
                sizes: Mapping[str, Any] | None = None) -> str:
    """What is about to run: program, scale, configs x seeds, resources, scheduler, storage, and
    each config's predicted artifact bytes (``sizes``: label -> golf.quant.sizing.SizePrediction)."""
    what = (f"golf.train, preset {plan.stack}" if plan.is_golf
            else f"{plan.program.describe()} {' '.join(plan.program.args)}".rstrip())
    if plan.gpus_per_trial:
        resources = (f"{plan.gpus_per_trial} GPU(s) per trial ({plan.nproc} ranks), "
                     f"{plan.cpus_per_trial:g} CPUs")
    else:
        resources = (f"CPU, {plan.cpu_procs} process(es) per trial, {plan.cpus_per_trial:g} CPU(s) "
                     "reserved")
    scheduler = ("FIFO (every trial runs to the end)" if plan.scheduler is None else
                 f"ASHA on val_bpb: grace {plan.scheduler.grace_steps} steps, max "
                 f"{plan.scheduler.max_steps}, reduction factor {plan.scheduler.reduction_factor:g}")
    data = ", ".join(f"{key}={_data_path(plan, key)}" for key in DATA_KEYS
                     if key in plan.fixed_env or key in plan.demo_keys) or "not used"
    if plan.demo_keys:
        which = "" if len(plan.demo_keys) == len(DATA_KEYS) else f"{', '.join(plan.demo_keys)}: "
        data += f" ({which}the demo corpus, built on each node on first use)"
    lines = [
        f"sweep {plan.name}: {len(plan.labels)} config(s) x {len(plan.seeds)} seed(s) = "
        f"{len(plan.labels) * len(plan.seeds)} trials at {plan.scale} scale",
        f"  program:   {what}",
        f"  fixed:     {_env_text(plan.fixed_env) or '(none)'}",
        f"  seeds:     {', '.join(map(str, plan.seeds))}",
        f"  resources: {resources}; at most {plan.max_concurrent or 'as many as fit'} at once",
        f"  scheduler: {scheduler}",
        f"  data:      {data}",
        f"  storage:   {location}",
    ]
    if plan.baseline_label:
        lines.append(f"  baseline:  {plan.baseline_label}")
    if plan.sequential is not None:
        lines[0] = (f"sweep {plan.name}: {len(plan.labels)} config(s) x up to {len(plan.seeds)} "
                    f"seed(s) = at most {len(plan.labels) * len(plan.seeds)} trials at "
                    f"{plan.scale} scale")
        lines.append(f"  rule:      {plan.sequential.describe()}")
    if sizes is not None:
        lines += format_sizes(plan, sizes)
    if list_trials:
        lines.append("trials:")
        lines += [f"  {i:>3}  {t.label}  seed={t.seed}" for i, t in enumerate(plan.trials)]
    return "\n".join(lines)


def format_sizes(plan: SweepPlan, sizes: Mapping[str, Any]) -> list[str]:
    """The plan's lines on predicted artifact bytes (model + code), one per config."""
    if not plan.is_golf:
        return ["  size:      not predicted (a competitor's script: only golf configs can be counted)"]
    if not sizes:
        return []
    predicted = [size for size in sizes.values() if not isinstance(size, str)]
    first = predicted[0] if predicted else None
    lines = [f"  size:      predicted artifact bytes (model + code) against the {first.limit:,}-byte limit; "
             f"interval {first.coverage}" if first else "  size:      predicted artifact bytes (model + code)"]
    width = max(len(label) for label in sizes)
    for label, size in sizes.items():
        if isinstance(size, str):  # why it could not be predicted
            lines.append(f"    {label:<{width}}  {size}")
            continue
        verdict = ("OVER the limit" if size.surely_over_limit else "may be over" if size.high > size.limit
                   else "fits")
        lines.append(f"    {label:<{width}}  {size.total:>12,}  [{size.low:,} - {size.high:,}]  {verdict}"
                     f"  ({size.regime}, {size.export}, code {size.code_bytes:,})")
    return lines


def _data_path(plan: SweepPlan, key: str) -> str:
    if key not in plan.demo_keys:
        return plan.fixed_env[key]
    from golf.corpus import demo_paths
    from sweeps.trial import demo_root

    paths = demo_paths(demo_root())  # this machine's; each node uses its own demo_root()
    return str(paths.data_path if key == "DATA_PATH" else paths.tokenizer_path)


def _env_text(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items() if k not in ("DATA_PATH", "TOKENIZER_PATH"))


def with_money(frame: pd.DataFrame, price_per_gpu_hour: float | None, *,
               summary: bool = False) -> pd.DataFrame:
    """The table (or summary) with the money columns when a price per GPU-hour is given."""
    if price_per_gpu_hour is None:
        return frame
    return add_money_columns(frame, price_per_gpu_hour, suffix="_sum" if summary else "")


def _without_idle_cost(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop cost columns with no non-zero value: a CPU sweep shows CPU-seconds, not 0 GPU-s."""
    idle = [c for c in _COST_VIEW_COLUMNS
            if c in frame.columns and not (pd.to_numeric(frame[c], errors="coerce").fillna(0) != 0).any()]
    return frame.drop(columns=idle)


def format_table(frame: pd.DataFrame, columns: Sequence[str] = TRIAL_VIEW, *,
                 price_per_gpu_hour: float | None = None) -> str:
    """The per-trial table for a terminal (errors listed under it, first line each); with a price
    per GPU-hour, its money columns."""
    if frame.empty:
        return "(no trials yet)"
    frame = with_money(frame, price_per_gpu_hour)
    shown = _without_idle_cost(frame[[c for c in columns if c in frame.columns]])
    shown = _display(shown, digits=4)
    text = shown.to_string(index=False)
    failed = frame[frame["error"].notna()]
    if not failed.empty:
        text += "\nerrors:"
        for _, row in failed.iterrows():
            first = str(row["error"]).splitlines()[0]
            text += (f"\n  {row['label']} seed={row['seed']}: {first}"
                     f"\n    (full text: {row['trial_dir']}/trial.json)")
    return text


def format_summary(summary: pd.DataFrame, *, price_per_gpu_hour: float | None = None) -> str:
    """Per-config n, mean/std/min/max of val_bpb and val_loss, mean bytes and seconds, GPU- (or
    CPU-) seconds summed over the config's trials, and with a price per GPU-hour their money."""
    if summary.empty:
        return "(no configs)"
    summary = with_money(summary, price_per_gpu_hour, summary=True)
    # A sequential sweep's stop reasons are sentences: format_sequential prints them below.
    hidden = [*param_columns(summary), *(["stop_reason"] if "stop_reason" in summary else [])]
    view = _display(_without_idle_cost(summary.drop(columns=hidden)), digits=5)
    return view.to_string(index=False)


def format_cost(frame: pd.DataFrame, price_per_gpu_hour: float | None = None) -> str:
    """The sweep's total cost: GPU-seconds (train, eval), GPU-hours, money; CPU-seconds for CPU
    trials, labelled as such."""
    totals = sweep_cost(frame)
    lines = []
    gpu = totals["gpu_s_sum"]
    if gpu == gpu and gpu > 0:
        line = (f"cost of the sweep: {gpu:.1f} GPU-seconds = {gpu / 3600:.4f} GPU-hours (GPUs x "
                f"wall seconds; train {totals['train_gpu_s_sum']:.1f}, eval "
                f"{totals['eval_gpu_s_sum']:.1f})")
        if price_per_gpu_hour is not None:
            money = gpu / 3600 * price_per_gpu_hour
            line += (f"; at {price_per_gpu_hour:g} per GPU-hour: {money:.4f} (train "
                     f"{totals['train_gpu_s_sum'] / 3600 * price_per_gpu_hour:.4f}, eval "
                     f"{totals['eval_gpu_s_sum'] / 3600 * price_per_gpu_hour:.4f})")
        lines.append(line)
    cpu = totals["cpu_s_sum"]
    if cpu == cpu and cpu > 0:
        line = (f"{'cost of the sweep' if not lines else 'and'}: CPU trials {cpu:.1f} CPU-seconds "
                f"(processes x wall seconds, 0 GPUs; train {totals['train_cpu_s_sum']:.1f}, eval "
                f"{totals['eval_cpu_s_sum']:.1f})")
        if price_per_gpu_hour is not None:
            line += "; CPU-seconds are not priced per GPU-hour"
        lines.append(line)
    return "\n".join(lines) or "cost of the sweep: no trial recorded its seconds yet"


def _display(frame: pd.DataFrame, digits: int) -> pd.DataFrame:
    """Text cells: floats to ``digits`` decimals (byte counts and seconds >= 100 whole), '-' for
    missing values of any dtype."""
    def cell(value: object) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and value != value):
            return "-"
        if isinstance(value, float):
            return f"{value:.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"
        return str(value)

    return frame.astype(object).apply(lambda column: column.map(cell))


def _seeded_sample(frame: pd.DataFrame, label: str) -> Sample:
    """A config's finished val_bpb values with their seeds (in seed order)."""
    rows = finished(frame)
    rows = rows[rows["label"] == label].sort_values("seed")
    return Sample(tuple(config_values(frame, label, SIGNIFICANCE_METRIC)), SIGNIFICANCE_METRIC,
                  description=label, seeds=tuple(str(seed) for seed in rows["seed"]))


def compare_with_baseline(frame: pd.DataFrame, baseline: str | None,
                          test: str = "auto") -> list[ConfigComparison]:
    """Each config against the baseline (one-sided, val_bpb, margin 0).

    ``test="auto"``: the paired t-test when the config and the baseline share >= 2 finished
    seeds, else Welch's; "paired" or "welch" force one.
    """
    if test not in SIGNIFICANCE_TESTS:
        raise ValueError(f"test must be one of {SIGNIFICANCE_TESTS}, got {test!r}")
    if baseline is None:
        return []
    base = _seeded_sample(frame, baseline)
    out = []
    for label in labels_in_order(frame):
        if label == baseline:
            continue
        sample = _seeded_sample(frame, label)
        assert sample.seeds is not None and base.seeds is not None
        shared = len(set(sample.seeds) & set(base.seeds))
        chosen = test if test != "auto" else ("paired" if shared >= MIN_PAIRS else "welch")
        if chosen == "paired" and shared < MIN_PAIRS:
            out.append(ConfigComparison(label, baseline, None,
                                        f"the paired test needs >= {MIN_PAIRS} seeds finished on "
                                        f"both sides (shared: {shared})"))
            continue
        if chosen == "welch" and (len(sample.values) < 2 or len(base.values) < 2):
            out.append(ConfigComparison(label, baseline, None,
                                        f"needs >= 2 finished seeds on each side (have "
                                        f"{len(sample.values)} vs {len(base.values)})"))
            continue
        try:
            result = compare(sample, base, test=chosen, metric=SIGNIFICANCE_METRIC, margin=0.0)
        except StatsError as err:
            out.append(ConfigComparison(label, baseline, None, str(err)))
            continue
        out.append(ConfigComparison(label, baseline, result))
    return out


def format_comparisons(comparisons: Sequence[ConfigComparison], baseline: str | None) -> str:
    if baseline is None:
        return "significance: no baseline config in the sweep (Sweep(baseline={...}) names one)"
    if not comparisons:
        return f"significance: only the baseline {baseline} ran"
    lines = [
        f"significance against the baseline {baseline}: one-sided (H1: the config's val_bpb is "
        "lower), on per-seed val_bpb (bits per byte), margin 0, alpha 0.01. Which test applies: "
        f"the paired t-test (on per-seed differences) where the config and the baseline share "
        f">= {MIN_PAIRS} finished seeds, else Welch's unequal-variance t-test (which ignores "
        "pairing); each line names its test.",
    ]
    for item in comparisons:
        if item.comparison is None:
            lines.append(f"  {item.label}: not tested: {item.reason}")
            continue
        c = item.comparison
        verdict = "significant" if c.significant else "not significant"
        df = "undefined" if c.df is None else f"{c.df:.1f}"
        if c.test == "paired":
            which = f"paired t-test, {len(c.pairs)} pairs (seeds {', '.join(c.pairs)})"
        else:
            which = f"Welch's t-test, n={c.n_new} vs {c.n_baseline}"
        lines.append(
            f"  {item.label}: delta {c.mean_delta:+.5f} bpb ({which}), "
            f"t={c.t:.3f}, df={df}, p={c.p_value:.4g}: {verdict} at p < {c.alpha:g}")
        lines += [f"    note: {note}" for note in c.notes]
    return "\n".join(lines)


def format_outcome(table: pd.DataFrame, summary: pd.DataFrame,
                   comparisons: Sequence[ConfigComparison], baseline: str | None,
                   location: str, *, price_per_gpu_hour: float | None = None,
                   sequential: Mapping[str, Any] | None = None) -> str:
    """The end of a sweep: per-trial table, per-config summary, cost, significance, where files
    are; with ``sequential`` (the decisions record of sequential seeds), the rule and why each
    config stopped."""
    parts = ["", f"results ({describe_statuses(table)}):",
             format_table(table, price_per_gpu_hour=price_per_gpu_hour), "",
             "per config (n = finished seeds; *_sum = over all its trials):",
             format_summary(summary, price_per_gpu_hour=price_per_gpu_hour), "",
             format_cost(table, price_per_gpu_hour), ""]
    if sequential is not None:
        parts += [format_sequential(sequential), ""]
    if baseline is not None or len(labels_in_order(table)) > 1:
        parts += [format_comparisons(comparisons, baseline), ""]
    parts.append(f"table: {location}/results.parquet and results.csv "
                 f"(`sweeps table {location}` rebuilds it)")
    return "\n".join(parts)


def format_sequential(record: Mapping[str, Any]) -> str:
    """The rule of a sequential-seeds sweep and, per config, the seeds it ran and why it stopped."""
    lines = [f"{record.get('rule', 'sequential seeds')}"]
    for label, entry in record.get("configs", {}).items():
        seeds = entry.get("seeds_run", [])
        shown = ", ".join(map(str, seeds)) or "none"
        state, reason = str(entry.get("state")), str(entry.get("reason"))
        why = reason if reason.startswith(state) else f"{state}: {reason}"
        lines.append(f"  {label}: {len(seeds)} seed(s) ({shown}): {why}")
    if not record.get("finished"):
        lines.append("  (the sweep did not finish: running it again resumes the rounds)")
    return "\n".join(lines)


def format_next_step(*, command: str, interrupted_by: str | None = None,
                     storage_full: bool = False, interrupted: int = 0,
                     fix_first: Mapping[str, Sequence[str]] | None = None,
                     unfinished: int = 0) -> str | None:
    """What to do after a sweep that did not finish every trial (None when it did).

    ``fix_first``: one-line causes of failures that running again cannot fix (a configuration or
    data error), each with the trials it failed; those come first, because the same command
    would only fail them again.
    """
    lines = []
    if interrupted_by is not None:
        lines.append(f"stopped by {interrupted_by}: {interrupted} running trial(s) marked "
                     "INTERRUPTED; finished trials are kept")
    if storage_full:
        lines.append("the storage is full: free space on it (or pass --storage elsewhere) first")
    if fix_first:
        lines.append(f"{sum(len(v) for v in fix_first.values())} trial(s) failed on a configuration "
                     "or data error that running again will not fix:")
        for cause, trials in fix_first.items():
            lines.append(f"  {cause}")
            lines.append(f"    (trials: {', '.join(trials)})")
        lines.append("fix that, then run the same command again: finished trials are kept and the "
                     "failed ones run again (if the fix changes the sweep or its --set values, add "
                     "--restart or pass --name NEW)")
    if lines and (interrupted_by is not None or storage_full):
        lines.append(f"resume with: {command}")
    elif not lines and unfinished:
        lines.append(f"{unfinished} trial(s) did not finish; run the same command again to resume "
                     f"(errored trials are retried, from their saved artifact when they have one): "
                     f"{command}")
    return "\n".join(lines) or None


class ProgressCallback(_TuneCallback):  # type: ignore[misc,valid-type]
    """One line per trial start, end, failure or retry: the sweep's progress without Tune's tables.

    ``sweeps run --verbose`` shows Tune's own status tables instead. A failure's line carries its
    one-line cause (the trial's last report, see :mod:`sweeps.failures`); a retry's line says
    whether the retry only evaluates the saved artifact or trains again from the start.
    """

    def __init__(self, plan: SweepPlan, out: TextIO) -> None:
        self.plan, self.out = plan, out
        self.total = len(plan.trials)
        self.ended = 0
        self.started = time.monotonic()
        self._counted = False
        self._failures: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state (for Tuner.restore); a stream
        # cannot be pickled, and a restored sweep prints to its own stdout anyway.
        return {**self.__dict__, "out": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.out = self.out or sys.stdout

    def setup(self, **info: Any) -> None:
        # Each session's clock starts with its own run (time.monotonic() of an earlier process
        # means nothing here), and its count with what earlier sessions finished.
        self.started = time.monotonic()
        self._counted = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._counted and trials:
            self._counted = True
            self.ended = sum(1 for trial in trials if trial.status in ("TERMINATED", "ERROR"))
            self.total = max(self.total, len(trials))

    def _name(self, trial: Any) -> str:
        config = trial.config or {}
        return f"{self.plan.label_of(config.get('params') or {})} seed {config.get('seed')}"

    def _print(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.1f}s] {text}", file=self.out, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failures.pop(trial.trial_id, None)
        self._print(f"started  {self._name(trial)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if result.get(FAILURE_KIND_KEY) is not None:
            self._failures[trial.trial_id] = result

    def _cause(self, trial: Any) -> tuple[str | None, str]:
        failure = self._failures.pop(trial.trial_id, None)
        if failure is None:
            # No last report: the trial's process itself died (a lost node, a killed worker).
            return None, "its process died (node lost or process killed)"
        return failure.get(FAILURE_KIND_KEY), str(failure.get(FAILURE_CAUSE_KEY) or "failed")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _, cause = self._cause(trial)
        attempt = _failures_so_far(trial) + 1
        limit = getattr(trial, "max_failures", None)
        of = f" of {limit + 1}" if isinstance(limit, int) and limit >= 0 else ""
        if trial.checkpoint is not None:
            plan = "its artifact was saved, so the retry only evaluates it"
        else:
            plan = "no artifact was saved, so the retry trains from the start"
        self._print(f"retrying {self._name(trial)} (attempt {attempt}{of}): {cause}; {plan}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended += 1
        result = trial.last_result or {}
        if result.get("phase") == "final" and result.get("val_bpb") is not None:
            detail = f"val_bpb {result['val_bpb']:.5f}"
            if result.get("bytes_total") is not None:
                detail += f", {int(result['bytes_total']):,} bytes"
        else:
            detail = f"stopped by the scheduler at step {result.get('step', '?')}"
        seconds = result.get("time_total_s")
        took = f" in {seconds:.1f}s" if isinstance(seconds, (int, float)) else ""
        self._print(f"finished {self._name(trial)}: {detail}{took} ({self.ended}/{self.total} ended)")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended += 1
        kind, cause = self._cause(trial)
        if kind == STORAGE:
            cause = "the storage is full (see above)"  # said once, by the storage watch
        elif kind == CONFIG:
            cause += " (not retried: every attempt would fail the same way)"
        self._print(f"ERROR    {self._name(trial)}: {cause} ({self.ended}/{self.total} ended)")


def _failures_so_far(trial: Any) -> int:
    metadata = getattr(trial, "run_metadata", None)
    return int(getattr(metadata, "num_failures", 0) or 0)
