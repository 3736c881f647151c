"""Verification batches: run one config (or a sweep's best few) on several seeds, write a record.

``sweeps verify --preset P --seeds 1337,42,2024`` or ``sweeps verify --from DIR --top K``
(:mod:`sweeps.commands.verify`) runs the seeds as one experiment, FIFO (every seed to the end),
then writes one folder per config, ready to open as a record PR:

* ``README.md``: what was run, the per-seed table, mean and std, compliance (every artifact at
  most 16,000,000 bytes; at full scale training and evaluation each at most 600 s), the
  acceptance test against a leaderboard's best when ``--leaderboard`` is given, and how to
  reproduce it (the exact command and every seed's torchrun command and environment);
* ``submission.json`` in the challenge's current schema (:mod:`sweeps.submissions`);
* ``train_gpt.py``: the script the seeds ran, whose bytes are the counted code (for golf, the
  run's bundle: :mod:`golf.bundle`), so the folder is a complete submission;
* ``train_seed<N>.log`` for every seed.

Violations are stated plainly in the README and on the console. A smoke-scale folder says, in its
name, title and submission, that it is a smoke test of the pipeline and not a record.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import shutil
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from golf.atomic import write_text_atomic
from golf.contract import RESULT_FILE, SIZE_LIMIT_BYTES, SUBMISSION_SCRIPT, TRAIN_LOG_FILE

from sweeps.results import (
    SWEEP_RECORD, ExperimentStore, finished, iter_trial_records, load_results,
    summarize, tokens_per_byte,
)
from sweeps.spec import DATA_KEYS, Sweep, parse_assignments, parse_seeds

TIME_LIMIT_S = 600.0
DEFAULT_RECORDS_DIR = "records"
DEFAULT_SEEDS = "1337,42,2024"


class VerifyError(ValueError):
    """A verification that cannot run as asked; the message says what to change."""


@dataclass
class Compliance:
    """The challenge's rules, checked per seed; ``violations`` is empty when all hold."""

    checks: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


# --------------------------------------------------------------------------------- the batch
def verification_sweep(*, preset: str | None = None, source: str | None = None, top: int = 1,
                       seeds: str = DEFAULT_SEEDS, overrides: Sequence[str] = (), scale: str | None = None,
                       name: str | None = None, max_failures: int = 2) -> tuple[Sweep, str]:
    """The sweep a verification runs, and the scale to run it at.

    Either ``preset`` (with ``overrides``, ``KEY=VALUE`` texts) or ``source``, an experiment
    directory whose ``top`` best configs are verified; ``seeds`` is a comma list.
    """
    seed_list = parse_seeds(seeds)
    settings = parse_assignments(overrides)
    if source is None:
        if preset is None:
            raise VerifyError("say what to verify: --preset NAME (with --set KEY=VALUE for "
                              "changes), or --from EXPERIMENT_DIR --top K")
        scale = scale or "smoke"
        # The smoke preset implies smoke scale: verify_smoke, not verify_smoke_smoke.
        name = name or _slug(f"verify_{preset}" if preset == scale else f"verify_{preset}_{scale}")
        return Sweep(name=name, preset=preset, fixed=settings, seeds=seed_list,
                     max_failures=max_failures,
                     description=f"verification of preset {preset}"), scale
    if preset is not None:
        raise VerifyError("--preset and --from are alternatives: give one of them")
    source_dir = source
    store = ExperimentStore(source_dir)
    source = store.read_json(SWEEP_RECORD)
    if source is None:
        raise VerifyError(f"{store.display(SWEEP_RECORD)} is missing: --from needs a directory "
                          "written by `sweeps run` (experiments/<sweep name>)")
    configs = top_configs(source_dir, top)
    scale = scale or source["scale"]
    fixed = {k: v for k, v in dict(source.get("fixed_env") or {}).items() if k not in DATA_KEYS}
    clash = [key for key in settings if any(key in params for params in configs)]
    if clash:
        raise VerifyError(f"--set {', '.join(clash)}: swept by the source experiment; the "
                          "verified configs keep their own values")
    fixed.update(settings)
    program = source.get("program") or {}
    name = name or _slug(f"verify_{source['name']}_top{top}_{scale}")
    sweep = Sweep(
        name=name, preset=source.get("stack") or "baseline", script=program.get("script"),
        script_args=tuple(program.get("args") or ()), configs=configs, fixed=fixed, seeds=seed_list,
        uses_data=bool(source.get("uses_data", True)), cpu_procs=int(source.get("cpu_procs", 1)),
        max_failures=max_failures,
        description=f"verification of the best {top} config(s) of {source_dir}")
    return sweep, scale


def top_configs(experiment_dir: str, k: int) -> list[dict[str, str]]:
    """The swept values of the ``k`` configs with the lowest mean val_bpb (finished trials)."""
    if k < 1:
        raise VerifyError(f"--top {k}: give a number >= 1")
    frame = load_results(experiment_dir)
    summary = summarize(frame)
    ranked = summary[summary["n"] > 0].sort_values("val_bpb_mean", kind="stable")
    if ranked.empty:
        raise VerifyError(f"{experiment_dir} has no finished trial with a val_bpb to rank "
                          f"(`sweeps table {experiment_dir}` shows what happened)")
    if len(ranked) < k:
        raise VerifyError(f"--top {k}: {experiment_dir} has only {len(ranked)} config(s) with "
                          "finished trials")
    params_by_label: dict[str, dict[str, str]] = {}
    for record in iter_trial_records(experiment_dir):
        params_by_label.setdefault(record.get("label"), dict(record.get("params") or {}))
    return [params_by_label[label] for label in ranked["label"].head(k)]


@dataclass
class Verification:
    """What a verification produced: the sweep's outcome and one record folder per config."""

    outcome: Any  # sweeps.experiment.SweepOutcome
    records: list[tuple[Path, Compliance]] = field(default_factory=list)

    @property
    def all_finished(self) -> bool:
        return self.outcome.all_finished


def run_verification(sweep: Sweep, options: Any, *, out_dir: Path, leaderboard: str | None,
                     author: str, github_id: str, command: str) -> Verification:
    """Run the batch (``options``: a :class:`sweeps.experiment.RunOptions`), then write a record
    folder per config; a dry run writes nothing."""
    from sweeps.experiment import run_sweep

    if leaderboard:
        _best_row(leaderboard)  # a bad leaderboard is an error now, not after the runs
    outcome = run_sweep(sweep, options)
    verification = Verification(outcome)
    if options.dry_run:
        return verification
    assert outcome.table is not None
    for label in dict.fromkeys(outcome.table["label"].dropna()):
        rows = outcome.table[outcome.table["label"] == label]
        verification.records.append(write_record(
            rows, label=label, scale=options.scale, plan=outcome.plan, out_dir=out_dir,
            experiment_dir=outcome.experiment_dir, command=command, leaderboard=leaderboard,
            author=author, github_id=github_id))
    return verification


# --------------------------------------------------------------------------------- record folder
def write_record(rows: pd.DataFrame, *, label: str, scale: str, plan: Any, out_dir: Path,
                 experiment_dir: str, command: str, leaderboard: str | None, author: str,
                 github_id: str) -> tuple[Path, Compliance]:
    """Write README.md, submission.json and the seeds' logs for one config; see module doc."""
    from sweeps.submissions import SeedResult, write_submission

    smoke = scale != "full"
    date = _dt.date.today().isoformat()
    program = plan.stack or Path(str(plan.program.script)).stem
    base = program if label == program else f"{program}_{label}"
    folder = out_dir / _slug(f"{date}_{'SMOKE-TEST_' if smoke else ''}{base}")
    folder.mkdir(parents=True, exist_ok=True)
    order = {seed: index for index, seed in enumerate(plan.seeds)}
    rows = rows.sort_values("seed", key=lambda seeds: seeds.map(lambda s: order.get(int(s), len(order))))
    done = finished(rows)
    mine = {int(r["seed"]): r for r in iter_trial_records(experiment_dir) if r.get("label") == label}
    records = {seed: mine[seed] for seed in sorted(mine, key=lambda s: order.get(s, len(order)))}

    logs = []
    for seed, record in records.items():
        source = Path(record["trial_dir"]) / TRAIN_LOG_FILE
        if source.is_file():
            target = folder / f"train_seed{seed}.log"
            shutil.copyfile(source, target)
            logs.append(target.name)

    script, script_problem = submitted_script(plan, records)
    if script is not None:
        (folder / SUBMISSION_SCRIPT).write_bytes(script)
    compliance = check_compliance(rows, smoke, script_bytes=None if script is None else len(script),
                                  script_problem=script_problem)
    ratio = tokens_per_byte(done)
    significance = _leaderboard_significance(done, ratio, leaderboard) if leaderboard else None
    name = f"{'SMOKE TEST (not a record): ' if smoke else ''}{base}"
    first_result = _golf_result(records)
    submission_path = None
    if not done.empty:
        seed_results = [SeedResult(seed=str(int(r.seed)), val_bpb=float(r.val_bpb),
                                   val_loss=float(r.val_loss), artifact_bytes=_int(r.bytes_total),
                                   steps=_int(r.steps), step_avg_ms=_float(r.step_avg_ms),
                                   train_time_s=_float(r.train_s), eval_time_s=_float(r.eval_s))
                        for r in done.itertuples()]
        extra: dict[str, Any] = {"scale": scale, "config": label,
                                 "compliance": {"ok": compliance.ok,
                                                "violations": compliance.violations}}
        if smoke:
            extra["smoke_test"] = True
        if significance is not None:
            extra["p_value"] = significance["p_value"]
        write_submission(
            folder / "submission.json", name=name, author=author, github_id=github_id,
            seed_results=seed_results, hardware=_hardware(first_result, rows),
            versions=_versions(first_result), date=date,
            blurb=f"{label} on {len(seed_results)} seed(s), verified by `sweeps verify`",
            code_bytes=len(script) if script is not None else _int(done["bytes_code"].max()), extra=extra)
        submission_path = "submission.json"
    readme = _readme(name=name, smoke=smoke, label=label, plan=plan, rows=rows, done=done,
                     records=records, compliance=compliance, significance=significance,
                     command=command, logs=logs, submission=submission_path,
                     script=None if script is None else len(script),
                     experiment_dir=experiment_dir, identity_missing=not (author and github_id))
    write_text_atomic(folder / "README.md", readme)
    return folder, compliance


def submitted_script(plan: Any, records: Mapping[int, Mapping[str, Any]]) -> tuple[bytes | None, str | None]:
    """The one script the seeds ran (golf: the train_gpt.py each run wrote; a competitor's: its
    script), and what is wrong when there is not exactly one."""
    if not plan.is_golf:
        path = Path(str(plan.program.script))
        if not path.is_file():
            return None, f"the script {path} is not on this machine: copy it into the folder as {SUBMISSION_SCRIPT}"
        return path.read_bytes(), None
    scripts = {seed: path.read_bytes() for seed, record in records.items()
               if (path := Path(record["trial_dir"]) / "run" / SUBMISSION_SCRIPT).is_file()}
    if not scripts:
        return None, (f"no {SUBMISSION_SCRIPT}: the runs wrote none (golf older than its bundle); "
                      f"write it with `golf bundle` and add it before opening the PR")
    first = next(iter(scripts.values()))
    differing = [str(seed) for seed, data in scripts.items() if data != first]
    if differing:
        return first, (f"seed(s) {', '.join(differing)} ran a different {SUBMISSION_SCRIPT} than seed "
                       f"{next(iter(scripts))}: a record is one script run with several seeds")
    return first, None


def check_compliance(rows: pd.DataFrame, smoke: bool, *, script_bytes: int | None = None,
                     script_problem: str | None = None) -> Compliance:
    """Artifact size for every seed (its model plus the submitted script, ``script_bytes``, when
    known); training and eval time at full scale; every seed finished; one script."""
    result = Compliance()
    for row in rows.itertuples():
        if row.status != "TERMINATED":
            first = str(row.error).splitlines()[0] if isinstance(row.error, str) else row.status
            result.violations.append(f"seed {row.seed} did not finish ({row.status}): {first}")
            continue
        size = _int(row.bytes_total)
        model, code = _int(getattr(row, "bytes_model", None)), _int(getattr(row, "bytes_code", None))
        if script_bytes is not None and model is not None:
            size = model + script_bytes  # the code counted is the file in the folder
        if script_bytes is not None and code is not None and code != script_bytes:
            result.violations.append(f"seed {row.seed}: the run counted {code:,} code bytes, but "
                                     f"{SUBMISSION_SCRIPT} is {script_bytes:,} bytes")
        if size is None:
            result.violations.append(f"seed {row.seed}: the artifact size is unknown (no "
                                     "'Total submission size' line)")
        elif size > SIZE_LIMIT_BYTES:
            result.violations.append(f"seed {row.seed}: artifact {size:,} bytes is over the "
                                     f"{SIZE_LIMIT_BYTES:,}-byte limit")
        if smoke:
            continue
        for what, value in (("training", _float(row.train_s)), ("evaluation", _float(row.eval_s))):
            if value is None:
                result.violations.append(f"seed {row.seed}: {what} time unknown")
            elif value > TIME_LIMIT_S:
                result.violations.append(f"seed {row.seed}: {what} took {value:.1f} s, over the "
                                         f"{TIME_LIMIT_S:.0f} s limit")
    if script_problem:
        result.violations.append(script_problem)
    if script_bytes is not None:
        result.checks.append(f"code: {SUBMISSION_SCRIPT}, {script_bytes:,} bytes, counted in every seed's total")
    sizes = [s for s in (_int(v) for v in rows["bytes_total"]) if s is not None]
    result.checks.append(f"artifact <= {SIZE_LIMIT_BYTES:,} bytes: largest "
                         f"{max(sizes):,} bytes" if sizes else "artifact size: unknown")
    if smoke:
        result.checks.append("training <= 600 s and evaluation <= 600 s: not checked at smoke "
                             "scale (the limits apply to 8xH100 runs)")
    else:
        train = [v for v in (_float(x) for x in rows["train_s"]) if v is not None]
        evals = [v for v in (_float(x) for x in rows["eval_s"]) if v is not None]
        result.checks.append(f"training <= 600 s: longest {max(train):.1f} s" if train
                             else "training time: unknown")
        result.checks.append(f"evaluation <= 600 s: longest {max(evals):.1f} s" if evals
                             else "evaluation time: unknown")
    return result


def _leaderboard_significance(done: pd.DataFrame, ratio: float | None,
                              leaderboard: str) -> dict[str, Any]:
    """The challenge's acceptance test against the leaderboard's best row."""
    from sweeps.leaderboard import delta_to_best
    from sweeps.stats import StatsError, compare

    best = _best_row(leaderboard)
    values = [float(v) for v in done["val_bpb"]]
    out: dict[str, Any] = {"leaderboard": leaderboard, "best_run": best.run,
                           "best_score": best.score, "best_text": best.score_text,
                           "n": len(values), "tokens_per_byte": ratio, "p_value": None}
    if values:
        out.update(delta_to_best(best.score, statistics.fmean(values), ratio))
    try:
        result = compare(values, [best.score], test="acceptance", metric="bpb",
                         tokens_per_byte=ratio)
    except StatsError as err:
        out["not_tested"] = str(err)
        return out
    out.update(p_value=result.p_value, significant=result.significant, margin_bpb=result.margin,
               t=result.t, df=result.df, mean_delta=result.mean_delta, alpha=result.alpha)
    return out


def _best_row(leaderboard: str) -> Any:
    from sweeps.leaderboard import LeaderboardError, read_leaderboard

    try:
        best = read_leaderboard(leaderboard).best
    except LeaderboardError as err:
        raise VerifyError(f"--leaderboard: {err}") from None
    if best is None:
        raise VerifyError(f"--leaderboard {leaderboard} has no row with a usable score")
    return best


def _readme(*, name: str, smoke: bool, label: str, plan: Any, rows: pd.DataFrame,
            done: pd.DataFrame, records: Mapping[int, Mapping[str, Any]], compliance: Compliance,
            significance: Mapping[str, Any] | None, command: str, logs: Sequence[str],
            submission: str | None, experiment_dir: str, identity_missing: bool,
            script: int | None = None) -> str:
    lines = [f"# {name}", ""]
    if smoke:
        lines += ["> **Smoke test, not a record.** This folder was produced at smoke scale (CPU, a "
                  "tiny model, the embedded demo corpus) to test the pipeline end to end. Its "
                  "numbers are not comparable with the leaderboard; do not submit it as a record.",
                  ""]
    what = (f"golf.train with preset `{plan.stack}` at {plan.scale} scale" if plan.is_golf
            else f"`{plan.program.describe()}` at {plan.scale} scale")
    fixed = " ".join(f"{k}={v}" for k, v in plan.fixed_env.items() if k not in DATA_KEYS)
    lines += [f"What: {what}, config `{label}`.",
              f"Fixed settings: `{fixed or '(none)'}`.",
              f"Seeds: {', '.join(str(int(s)) for s in rows['seed'])}; experiment: `{experiment_dir}`.",
              "", "## Results", "",
              "| seed | status | val_bpb | val_loss | artifact bytes | steps | step_avg ms | train s "
              "| eval s |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows.itertuples():
        lines.append(f"| {r.seed} | {r.status} | {_fmt(r.val_bpb, 8)} | {_fmt(r.val_loss, 8)} | "
                     f"{_fmt_int(r.bytes_total)} | {_fmt_int(r.steps)} | {_fmt(r.step_avg_ms, 2)} | "
                     f"{_fmt(r.train_s, 1)} | {_fmt(r.eval_s, 2)} |")
    if not done.empty:
        bpb, loss = list(done["val_bpb"]), list(done["val_loss"])
        std_bpb = statistics.stdev(bpb) if len(bpb) > 1 else math.nan
        std_loss = statistics.stdev(loss) if len(loss) > 1 else math.nan
        lines += ["", f"Mean over {len(bpb)} finished seed(s): val_bpb **{statistics.fmean(bpb):.8f}**"
                      f" (std {_fmt(std_bpb, 8)}), val_loss {statistics.fmean(loss):.8f} "
                      f"(std {_fmt(std_loss, 8)})."]
    lines += ["", "## Compliance", ""]
    lines += [f"- {check}" for check in compliance.checks]
    if compliance.ok:
        lines.append("- every seed finished and every check passed")
    else:
        lines += [f"- **VIOLATION:** {violation}" for violation in compliance.violations]
    if significance is not None:
        lines += ["", "## Significance against the leaderboard", "",
                  _significance_text(significance, smoke)]
    lines += ["", "## Reproduce", "", "The whole batch:", "", "```", command, "```", "",
              "Each seed by hand (from the repository root; paths as on the machine that ran it):", ""]
    for seed, record in records.items():
        if record.get("command"):
            lines += [f"seed {seed}:", "```", record["command"], "```"]
    if script is not None:
        data = "DATA_PATH=... TOKENIZER_PATH=... " if plan.uses_data else ""
        world = (_int(rows["world_size"].max()) if "world_size" in rows else None) or 8
        lines += ["", f"Or from this folder, as the challenge runs a record (the settings are "
                      f"{SUBMISSION_SCRIPT}'s defaults):", "", "```",
                  f"{data}SEED=<seed> torchrun --standalone --nproc_per_node={world} {SUBMISSION_SCRIPT}", "```"]
    versions = _versions(_golf_result(records))
    if versions:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    lines += ["", "## Files", ""]
    if script is not None:
        lines.append(f"- `{SUBMISSION_SCRIPT}`: the code, {script:,} bytes (the code bytes counted)")
    if submission:
        lines.append(f"- `{submission}`: the challenge's submission schema, per-seed results")
        if identity_missing:
            lines.append("  (its author / github_id are empty: rerun with --author and --github-id, "
                         "or fill them in, before opening the PR)")
    lines += [f"- `{log}`" for log in logs]
    return "\n".join(lines) + "\n"


def _significance_text(s: Mapping[str, Any], smoke: bool) -> str:
    head = (f"Against the best row of `{s['leaderboard']}`: {s['best_run']} ({s['best_text']} bpb). ")
    if s.get("delta_bpb") is not None:
        nats = s.get("delta_nats")
        head += (f"Mean delta {s['delta_bpb']:+.5f} bpb"
                 + (f" ({nats:+.5f} nats)" if nats is not None else "") + ". ")
    if "not_tested" in s:
        text = head + f"The acceptance test was not run: {s['not_tested']}"
    else:
        verdict = "significant" if s["significant"] else "NOT significant"
        text = head + (
            f"The challenge's acceptance test (one-sided one-sample t-test of the per-seed val_bpb "
            f"against best - margin), margin 0.005 nats = {s['margin_bpb']:.6f} bpb at "
            f"{s['tokens_per_byte']:.5f} tokens/byte, n = {s['n']} seeds: t = {s['t']:.3f}, "
            f"p = {s['p_value']:.4g}: **{verdict}** at p < {s['alpha']:g}.")
    if smoke:
        text += " (Smoke-scale numbers cannot be compared with full-scale records; this only "
        text += "exercises the check.)"
    return text


# --------------------------------------------------------------------------------- helpers
def _golf_result(records: Mapping[int, Mapping[str, Any]]) -> dict[str, Any] | None:
    import json

    for _, record in sorted(records.items()):
        path = Path(record["trial_dir"]) / "run" / RESULT_FILE
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except ValueError:
                continue
    return None


def _hardware(result: Mapping[str, Any] | None, rows: pd.DataFrame) -> str:
    world = _int(rows["world_size"].max()) if "world_size" in rows else None
    device = (result or {}).get("device")
    if device and world:
        return f"{world} x {device}"
    return f"{world or '?'} process(es), device not reported"


def _versions(result: Mapping[str, Any] | None) -> dict[str, str]:
    names = {"torch": "pytorch"}
    versions = (result or {}).get("versions") or {}
    return {names.get(k, k): str(v) for k, v in versions.items() if v is not None}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,\-]+", "_", text).strip("_")[:120]


def _int(value: Any) -> int | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


def _float(value: Any) -> float | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _fmt(value: Any, digits: int) -> str:
    number = _float(value)
    return "-" if number is None or math.isnan(number) else f"{number:.{digits}f}"


def _fmt_int(value: Any) -> str:
    number = _int(value)
    return "-" if number is None else f"{number:,}"
