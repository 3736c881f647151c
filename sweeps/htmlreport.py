"""``sweeps report``: one self-contained HTML page about an experiment, with its figures as PNGs.

The page holds the per-config summary table (with each config's difference from the baseline,
its confidence interval and test, from :func:`sweeps.report.compare_with_baseline`), the
significance text the end of a sweep prints, and three figures (:mod:`sweeps.reportfigures`):

* ``val_bpb``: each finished seed's val_bpb per config, and each config's difference from the
  baseline with its confidence interval;
* ``curves``: in-training val_bpb and train_loss against the step, one line per trial, from each
  trial's ``train.log`` (:mod:`sweeps.curves`);
* ``bytes``: artifact bytes against val_bpb, with golf's 16,000,000-byte limit.

Given a leaderboard CSV, its best val_bpb is a horizontal line in every val_bpb axis. The PNGs are
embedded in the page as data URIs (the page travels alone: mail it, attach it to a PR) and also
written beside it. What an experiment lacks (failed trials, one seed, no baseline, no logs) becomes
a note on the page, never an error; only input that names nothing usable is an error
(:class:`ReportError`, :class:`~sweeps.results.ResultsError`,
:class:`~sweeps.leaderboard.LeaderboardError`), raised before any figure is drawn.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from golf.atomic import write_bytes_atomic
from golf.contract import SIZE_LIMIT_BYTES

from sweeps import report
from sweeps.curves import curves_from_text
from sweeps.leaderboard import Leaderboard, delta_to_best, read_leaderboard
from sweeps.report import ConfigComparison
from sweeps.reportfigures import (BytesPoint, ReferenceLine, TrialCurves, bytes_figure,
                                  config_colours, curves_figure, val_bpb_figure)
from sweeps.results import (FINISHED, SWEEP_RECORD, TRAIN_LOG, ExperimentStore, describe_statuses,
                            finished, labels_in_order, load_results, select_config, summarize)

__all__ = ["DEFAULT_REPORT_NAME", "FIGURE_KEYS", "Report", "ReportError", "ReportFigure",
           "WrittenReport", "build_report", "default_out", "write_report"]

DEFAULT_REPORT_NAME = "report.html"
FIGURE_KEYS = ("val_bpb", "curves", "bytes")


class ReportError(ValueError):
    """The report cannot be made from what was given; the message says what to pass instead."""


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the page: ``key`` is one of :data:`FIGURE_KEYS`."""

    key: str
    title: str
    caption: str
    png: bytes


@dataclass
class Report:
    """Everything the page shows, before it is written."""

    name: str
    location: str
    statuses: str
    baseline: str | None
    summary: pd.DataFrame
    comparisons: list[ConfigComparison]
    significance: str
    failed: pd.DataFrame
    figures: list[ReportFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    leaderboard: Leaderboard | None = None
    leaderboard_path: str | None = None


@dataclass(frozen=True)
class WrittenReport:
    """Where the page and its PNGs were written, and the notes the page carries."""

    page: Path
    figures: dict[str, Path]
    notes: list[str]


# --------------------------------------------------------------------------------- inputs
def default_out(experiment_dir: str | os.PathLike[str]) -> Path:
    """``DIR/report.html`` for a local experiment; a remote one needs an explicit path."""
    store = ExperimentStore(experiment_dir)
    if not store.is_local:
        raise ReportError(f"{store.display()} is not a local directory: pass --out PATH "
                          "(a local file such as report.html) for the page")
    return Path(store.display(DEFAULT_REPORT_NAME))


def check_out_path(out: str | os.PathLike[str]) -> Path:
    """The page's path, refused before any work when the page could not be written there."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise ReportError(f"--out {out} is a directory: give the page's file name, e.g. "
                          f"{path / DEFAULT_REPORT_NAME}")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ReportError(f"--out {out}: {ancestor} is a file, not a folder; choose another path")
    if not os.access(ancestor, os.W_OK):
        raise ReportError(f"--out {out}: cannot write in {ancestor} (no permission); choose "
                          "another path")
    return path


# --------------------------------------------------------------------------------- the report
def build_report(experiment_dir: str | os.PathLike[str], *,
                 leaderboard: str | os.PathLike[str] | None = None,
                 baseline: str | None = None) -> Report:
    """Read an experiment (and a leaderboard CSV) and draw the page's figures.

    ``baseline`` is a config label or ``KEY=VALUE,...`` (as ``sweeps compare`` takes); by default
    the baseline the sweep named. Bad input raises before any figure is drawn.
    """
    board = None if leaderboard is None else read_leaderboard(leaderboard)
    table = load_results(experiment_dir)
    store = ExperimentStore(experiment_dir)
    if table.empty:
        raise ReportError(f"{store.display()} holds no trials yet: run the sweep first "
                          "(`sweeps run FILE`), or pass the folder it wrote")
    record = store.read_json(SWEEP_RECORD) or {}
    notes: list[str] = []
    if baseline is not None:
        baseline, _ = select_config(table, baseline)
    else:
        baseline = _sweep_baseline(record, table, notes)
    labels = labels_in_order(table)
    comparisons = report.compare_with_baseline(table, baseline)
    content = Report(
        name=str(record.get("name") or PurePosixPath(store.root).name),
        location=store.display(), statuses=describe_statuses(table), baseline=baseline,
        summary=summarize(table), comparisons=comparisons,
        significance=report.format_comparisons(comparisons, baseline),
        failed=_unfinished(table), notes=notes, leaderboard=board,
        leaderboard_path=None if leaderboard is None else os.fspath(leaderboard))
    reference = _reference_line(board, notes)
    colours = config_colours(labels)
    _note_failures(table, notes)
    _note_untested(comparisons, notes)
    tested = {item.label: item.comparison for item in comparisons if item.comparison is not None}
    done = finished(table)
    done = done[done["label"].notna()]
    seed_values = {label: [float(v) for v in done[done["label"] == label]
                           .sort_values("seed")["val_bpb"]] for label in labels}
    if done.empty:
        notes.append("no trial finished with a val_bpb: no val_bpb figure and no bytes figure")
    else:
        content.figures.append(ReportFigure(
            "val_bpb", "val_bpb per config",
            _val_bpb_caption(baseline, tested, reference),
            val_bpb_figure(labels, seed_values, tested, baseline, colours, reference)))
    trials = _trial_curves(store, table, notes)
    if trials:
        content.figures.append(ReportFigure(
            "curves", "learning curves",
            "In-training val_bpb (left) and train_loss (right) against the step, from each "
            "trial's train.log; one line per trial, one colour per config; a trial that did not "
            "finish is dashed.", curves_figure(trials, colours, reference)))
    points = _bytes_points(done, notes)
    if points:
        content.figures.append(ReportFigure(
            "bytes", "artifact bytes against val_bpb",
            f"Each finished trial's artifact (compressed model + code) against its val_bpb; the "
            f"vertical line is the challenge's limit of {SIZE_LIMIT_BYTES:,} bytes.",
            bytes_figure(points, SIZE_LIMIT_BYTES, colours, reference)))
    return content


def _sweep_baseline(record: Mapping[str, Any], table: pd.DataFrame, notes: list[str]) -> str | None:
    named = record.get("baseline_label")
    if named is None:
        notes.append("no baseline: the sweep names none (Sweep(baseline={...})), so no config is "
                     "tested; pass --baseline LABEL to test every config against one")
        return None
    if named not in labels_in_order(table):
        notes.append(f"the sweep's baseline {named} has no trial in this directory, so no config "
                     "is tested; pass --baseline LABEL to test against another config")
        return None
    return str(named)


def _reference_line(board: Leaderboard | None, notes: list[str]) -> ReferenceLine | None:
    if board is None:
        return None
    best = board.best
    if best is None:
        notes.append(f"the leaderboard {board.path} has no row with a usable score: no "
                     "leaderboard line")
        return None
    return ReferenceLine(best.score, f"leaderboard best: {best.run} ({best.score_text})")


def _note_failures(table: pd.DataFrame, notes: list[str]) -> None:
    failed = _unfinished(table)
    if failed.empty:
        return
    counts = ", ".join(f"{count} {status}" for status, count in
                       failed["status"].fillna("UNKNOWN").value_counts().items())
    notes.append(f"{len(failed)} of {len(table)} trials did not finish ({counts}): they are "
                 "left out of the val_bpb and bytes figures and the statistics, their curves are "
                 "dashed; the table of unfinished trials below says why")


def _unfinished(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"].fillna("UNKNOWN") != FINISHED]


def _note_untested(comparisons: Sequence[ConfigComparison], notes: list[str]) -> None:
    for item in comparisons:
        if item.comparison is None:
            notes.append(f"{item.label} is not tested against the baseline: {item.reason}")


def _val_bpb_caption(baseline: str | None, tested: Mapping[str, Any],
                     reference: ReferenceLine | None) -> str:
    text = "Top: each finished seed's val_bpb per config (bar: the config's mean)."
    if tested:
        alphas = sorted({c.alpha for c in tested.values()})
        levels = "/".join(f"{round(100 * (1 - 2 * alpha))}%" for alpha in alphas)
        text += (f" Bottom: each config's mean val_bpb minus the baseline {baseline}'s, with its "
                 f"{levels} confidence interval, whose upper end is the one-sided test's bound "
                 f"at alpha {'/'.join(f'{a:g}' for a in alphas)} (the table names each config's "
                 "test); a filled marker is significant, a hollow one is not.")
    if reference is not None:
        text += f" Dashed line: {reference.label}."
    return text


def _trial_name(trial_dir: str) -> str:
    return trial_dir.rstrip("/").rsplit("/", 1)[-1]


def _trial_curves(store: ExperimentStore, table: pd.DataFrame,
                  notes: list[str]) -> list[TrialCurves]:
    trials, no_log, no_steps = [], [], []
    for _, row in table.iterrows():
        if pd.isna(row["trial_dir"]) or pd.isna(row["label"]):
            continue
        name = _trial_name(str(row["trial_dir"]))
        text = store.read_text(name, TRAIN_LOG)
        if text is None:
            no_log.append(name)
            continue
        curves = curves_from_text(text)
        if curves.empty:
            no_steps.append(name)
            continue
        trials.append(TrialCurves(str(row["label"]), row["seed"], curves,
                                  row["status"] == FINISHED))
    if no_log:
        notes.append(f"no train.log in {len(no_log)} trial folder(s), so no learning curve for "
                     f"them: {', '.join(no_log)}")
    if no_steps:
        notes.append(f"the train.log of {len(no_steps)} trial(s) has no step line yet: "
                     f"{', '.join(no_steps)}")
    if not trials:
        notes.append("no learning curves: no trial has a train.log with step lines")
    return trials


def _bytes_points(done: pd.DataFrame, notes: list[str]) -> list[BytesPoint]:
    usable = done[done["bytes_total"].notna()]
    if len(usable) < len(done):
        notes.append(f"{len(done) - len(usable)} finished trial(s) reported no artifact bytes: "
                     "they are not in the bytes figure")
    if not done.empty and usable.empty:
        notes.append("no finished trial reported its artifact bytes: no bytes figure")
    return [BytesPoint(str(row["label"]), int(row["bytes_total"]), float(row["val_bpb"]))
            for _, row in usable.iterrows()]


# --------------------------------------------------------------------------------- the page
def write_report(experiment_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                 *, leaderboard: str | os.PathLike[str] | None = None,
                 baseline: str | None = None) -> WrittenReport:
    """Build the report and write the page (default ``DIR/report.html``) and, beside it, one PNG
    per figure (``<page stem>_<figure>.png``)."""
    page = check_out_path(out if out is not None else default_out(experiment_dir))
    content = build_report(experiment_dir, leaderboard=leaderboard, baseline=baseline)
    files = {figure.key: page.with_name(f"{page.stem}_{figure.key}.png")
             for figure in content.figures}
    try:
        for figure in content.figures:
            write_bytes_atomic(files[figure.key], figure.png)
        write_bytes_atomic(page, render_html(content, {k: p.name for k, p in files.items()})
                           .encode("utf-8"))
    except OSError as err:
        raise ReportError(f"cannot write the report at {page}: {err.strerror or err}; choose "
                          "another --out") from None
    return WrittenReport(page, files, list(content.notes))


def render_html(content: Report, figure_files: Mapping[str, str] | None = None) -> str:
    """The page: every text escaped, every figure an embedded PNG (``figure_files`` names the
    copies written beside it)."""
    figure_files = figure_files or {}
    esc = _escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>sweeps report: {esc(content.name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>sweeps report: {esc(content.name)}</h1>",
        f'<p class="where">{esc(content.location)}: {esc(content.statuses)}; baseline: '
        f"{esc(content.baseline or 'none')}</p>",
    ]
    if content.notes:
        parts.append('<section id="notes"><h2>Notes</h2><ul class="notes">')
        parts += [f"<li>{esc(note)}</li>" for note in content.notes]
        parts.append("</ul></section>")
    parts.append('<section id="summary"><h2>Per config</h2>')
    parts.append(_summary_table(content))
    parts.append(f'<pre class="significance">{esc(content.significance)}</pre></section>')
    if content.leaderboard is not None:
        parts.append(_leaderboard_section(content))
    for figure in content.figures:
        data = base64.b64encode(figure.png).decode("ascii")
        copy = figure_files.get(figure.key)
        written = (f' (also <a href="{esc(copy)}">{esc(copy)}</a>)' if copy else "")
        parts.append(
            f'<figure id="figure-{esc(figure.key)}" data-figure="{esc(figure.key)}">'
            f"<h2>{esc(figure.title)}</h2>"
            f'<img src="data:image/png;base64,{data}" alt="{esc(figure.title)}">'
            f"<figcaption>{esc(figure.caption)}{written}</figcaption></figure>")
    if not content.failed.empty:
        parts.append(_failed_table(content.failed))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}"
    "table{border-collapse:collapse;font-size:0.9em;margin:0.5em 0}"
    "th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:right;vertical-align:top}"
    "th:first-child,td:first-child{text-align:left}"
    "td.text{text-align:left;white-space:pre-wrap}"
    "ul.notes li{margin:0.2em 0}pre{background:#f6f6f6;padding:0.6em;white-space:pre-wrap}"
    "figure{margin:1.5em 0}img{max-width:100%;border:1px solid #ddd}"
    "figcaption{font-size:0.9em;color:#444;max-width:60em}"
)


_COST_HEADERS = {"gpu_s_sum": "GPU-seconds (all trials)", "cpu_s_sum": "CPU-seconds (all trials)"}


def _number(value: Any, digits: int) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.{digits}f}"


def _bytes_text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{round(float(value)):,}"


def _summary_table(content: Report) -> str:
    by_label = {item.label: item for item in content.comparisons}
    best = content.leaderboard.best if content.leaderboard is not None else None
    costs = [column for column in ("gpu_s_sum", "cpu_s_sum")
             if column in content.summary and (content.summary[column].fillna(0) != 0).any()]
    head = ["config", "finished / trials", "val_bpb mean", "std", "min", "max", "val_loss mean",
            "bytes mean", "train s", "eval s", *(_COST_HEADERS[c] for c in costs),
            "delta vs baseline", "CI of delta", "test", "p", "verdict"]
    if best is not None:
        head.append("vs leaderboard best")
    rows = ["<table><thead><tr>" + "".join(f"<th>{_escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>"]
    for _, row in content.summary.iterrows():
        label = str(row["label"])
        cells = [label, f"{row['n']} / {row['n_trials']}", _number(row["val_bpb_mean"], 5),
                 _number(row["val_bpb_std"], 5), _number(row["val_bpb_min"], 5),
                 _number(row["val_bpb_max"], 5), _number(row["val_loss_mean"], 5),
                 _bytes_text(row["bytes_total_mean"]), _number(row["train_s_mean"], 1),
                 _number(row["eval_s_mean"], 1), *(_number(row[c], 1) for c in costs),
                 *_comparison_cells(label, content.baseline, by_label.get(label))]
        if best is not None:
            cells.append(_against_best(best.score, row))
        rows.append("<tr>" + "".join(
            f'<td class="text">{_escape(cell)}</td>' if i == 0 else f"<td>{_escape(cell)}</td>"
            for i, cell in enumerate(cells)) + "</tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _comparison_cells(label: str, baseline: str | None,
                      item: ConfigComparison | None) -> list[str]:
    if label == baseline:
        return ["(baseline)", "", "", "", ""]
    if item is None:
        return ["-", "-", "-", "-", "no baseline" if baseline is None else "-"]
    c = item.comparison
    if c is None:
        return ["-", "-", "-", "-", f"not tested: {item.reason}"]
    level = round(100 * (1 - 2 * c.alpha))
    which = f"paired, {len(c.pairs)} pairs" if c.test == "paired" else \
        f"Welch, n={c.n_new} vs {c.n_baseline}"
    verdict = "significant" if c.significant else "not significant"
    return [f"{c.mean_delta:+.5f}", f"[{c.ci_low:+.5f}, {c.ci_high:+.5f}] ({level}%)", which,
            f"{c.p_value:.4g}", f"{verdict} at p < {c.alpha:g}"]


def _against_best(best_score: float, row: pd.Series) -> str:
    mean = row["val_bpb_mean"]
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{delta_to_best(best_score, float(mean), None)['delta_bpb']:+.5f} bpb"


def _leaderboard_section(content: Report) -> str:
    board = content.leaderboard
    assert board is not None
    best = board.best
    lines = [f"leaderboard: {content.leaderboard_path} ({len(board.rows)} usable rows"
             f"{f', {len(board.problems)} rows not used' if board.problems else ''})"]
    if best is not None:
        by = f" by {best.author}" if best.author else ""
        lines.append(f"best: {best.run}{by}: {best.score_text} bpb (line {best.line})")
    return ('<section id="leaderboard"><h2>Leaderboard</h2>'
            + "".join(f"<p>{_escape(line)}</p>" for line in lines) + "</section>")


def _failed_table(failed: pd.DataFrame) -> str:
    rows = ['<section id="unfinished"><h2>Trials that did not finish</h2><table><thead><tr>'
            "<th>config</th><th>seed</th><th>status</th><th>error (first line)</th>"
            "</tr></thead><tbody>"]
    for _, row in failed.iterrows():
        error = "" if pd.isna(row["error"]) else str(row["error"]).splitlines()[0]
        seed = "-" if pd.isna(row["seed"]) else str(row["seed"])
        rows.append("<tr>" + "".join(f'<td class="text">{_escape(cell)}</td>' for cell in (
            row["label"] if not pd.isna(row["label"]) else "-", seed, row["status"], error))
            + "</tr>")
    rows.append("</tbody></table></section>")
    return "\n".join(rows)
