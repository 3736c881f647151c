"""The figures of ``sweeps report``, drawn with matplotlib's Agg canvas into PNG bytes.

Each function takes plain data (no results table, no files) and returns one PNG. Figures are built
on :class:`matplotlib.figure.Figure` with an Agg canvas of their own, never through pyplot: nothing
opens a window, no global backend is switched, and a figure is freed as soon as it is saved.
Every text that came from a user (config labels, run names) is drawn literally: mathtext is off,
so a ``$`` in a run name stays a dollar sign.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sweeps.curves import LearningCurves
from sweeps.stats import Comparison

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# matplotlib is imported where a figure is drawn, not here: it takes about a second to import,
# and the `sweeps` command imports this module's callers for every subcommand.

__all__ = [
    "BytesPoint",
    "ReferenceLine",
    "TrialCurves",
    "bytes_figure",
    "config_colours",
    "curves_figure",
    "val_bpb_figure",
]

Colour = tuple[float, float, float, float]

_DPI = 100
_LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False}
_REFERENCE_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.2}
_LIMIT_STYLE = {"color": "crimson", "linestyle": "-", "linewidth": 1.5}
# Bytes spanning more than this ratio (a smoke artifact against the 16 MB limit) get a log axis.
_LOG_AXIS_RATIO = 20.0
# Legend text is wrapped to lines of about this many characters.
_LEGEND_LINE_CHARS = 48


@dataclass(frozen=True)
class ReferenceLine:
    """A val_bpb every figure shows as a horizontal line (the leaderboard's best)."""

    value: float
    label: str


@dataclass(frozen=True)
class TrialCurves:
    """One trial's learning curves, with the config it belongs to."""

    label: str
    seed: object
    curves: LearningCurves
    finished: bool


@dataclass(frozen=True)
class BytesPoint:
    """One finished trial: its artifact bytes and its val_bpb."""

    label: str
    bytes_total: int
    val_bpb: float


def config_colours(labels: Sequence[str]) -> dict[str, Colour]:
    """One distinct colour per config, the same in every figure."""
    import matplotlib

    if len(labels) <= 20:
        # Qualitative maps are indexed by integer: colour i of 10 (or 20) distinct ones.
        cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
        return {label: tuple(cmap(i)) for i, label in enumerate(labels)}
    cmap = matplotlib.colormaps["turbo"]
    return {label: tuple(cmap(i / (len(labels) - 1))) for i, label in enumerate(labels)}


def _literal_text():
    """Draw user text as written: no mathtext (a ``$`` in a label), no LaTeX."""
    import matplotlib

    return matplotlib.rc_context(_LITERAL_TEXT)


def _tick_label(label: str) -> str:
    """A config label over several lines, one ``KEY=value`` each, so long grids stay readable."""
    return label.replace(",", ",\n")


def _wrap(text: str, width: int = _LEGEND_LINE_CHARS) -> str:
    """A legend entry over lines of at most about ``width`` characters, broken after commas
    (between a config's ``KEY=value`` pairs) or else between words."""
    if len(text) <= width:
        return text
    if "," in text:
        lines = [""]
        for part in text.split(","):
            piece = part if not lines[-1] else "," + part
            if lines[-1] and len(lines[-1]) + len(piece) > width:
                lines[-1] += ","
                lines.append(part)
            else:
                lines[-1] += piece
        return "\n".join(lines)
    return textwrap.fill(text, width)


def _legend_columns(names: Sequence[str], line_chars: int) -> int:
    """How many legend columns fit under a figure ``line_chars`` characters wide."""
    longest = max((len(line) for name in names for line in name.splitlines()), default=1)
    return max(1, min(4, len(names), line_chars // (longest + 8)))


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def val_bpb_figure(labels: Sequence[str], seed_values: Mapping[str, Sequence[float]],
                   comparisons: Mapping[str, Comparison], baseline: str | None,
                   colours: Mapping[str, Colour], reference: ReferenceLine | None = None) -> bytes:
    """Top: each finished seed's val_bpb per config, with the config's mean. Bottom (when any
    config was tested): each config's mean difference from the baseline with its confidence
    interval; a filled marker is significant, a hollow one is not."""
    with _literal_text():
        with_deltas = bool(comparisons)
        figure = _new_figure(max(6.0, 1.6 * len(labels) + 2.0), 7.5 if with_deltas else 4.5)
        if with_deltas:
            top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        else:
            top, bottom = figure.subplots(1, 1), None
        positions = range(len(labels))
        for x, label in zip(positions, labels):
            values = list(seed_values.get(label, ()))
            if not values:
                continue
            # Spread a config's seeds a little sideways so equal values stay visible.
            offsets = [0.0] if len(values) == 1 else [
                -0.15 + 0.3 * i / (len(values) - 1) for i in range(len(values))]
            top.scatter([x + o for o in offsets], values, color=colours[label], s=36, zorder=3,
                        edgecolors="black", linewidths=0.5)
            mean = sum(values) / len(values)
            top.hlines(mean, x - 0.3, x + 0.3, color=colours[label], linewidth=2.5, zorder=2)
        if reference is not None:
            top.axhline(reference.value, **_REFERENCE_STYLE, label=_wrap(reference.label))
            top.legend(loc="best", fontsize="small")
        top.set_ylabel("val_bpb (each seed; bar = mean)")
        top.set_title("val_bpb per config")
        top.grid(axis="y", alpha=0.3)
        if bottom is not None:
            _draw_deltas(bottom, labels, comparisons, baseline, colours)
        axis = bottom if bottom is not None else top
        axis.set_xticks(list(positions), [_tick_label(label) for label in labels], fontsize="small")
        axis.set_xlim(-0.6, len(labels) - 0.4)
        return _png(figure)


def _draw_deltas(axis, labels: Sequence[str], comparisons: Mapping[str, Comparison],
                 baseline: str | None, colours: Mapping[str, Colour]) -> None:
    levels = set()
    for x, label in enumerate(labels):
        if label == baseline:
            axis.annotate("baseline", (x, 0.0), ha="center", va="bottom", fontsize="small",
                          xytext=(0, 4), textcoords="offset points")
            continue
        comparison = comparisons.get(label)
        if comparison is None:
            axis.annotate("not tested", (x, 0.0), ha="center", va="bottom", fontsize="small",
                          color="grey", xytext=(0, 4), textcoords="offset points")
            continue
        levels.add(round(100 * (1 - 2 * comparison.alpha)))
        delta = comparison.mean_delta
        spread = [[delta - comparison.ci_low], [comparison.ci_high - delta]]
        axis.errorbar([x], [delta], yerr=spread,
                      fmt="o", color=colours[label], capsize=6, markersize=8,
                      markerfacecolor=colours[label] if comparison.significant else "white",
                      zorder=3)
    axis.axhline(0.0, color="grey", linewidth=1)
    level = f"{levels.pop()}% " if len(levels) == 1 else ""
    axis.set_ylabel(f"val_bpb - baseline\n(mean, {level}CI)")
    axis.grid(axis="y", alpha=0.3)


def curves_figure(trials: Sequence[TrialCurves], colours: Mapping[str, Colour],
                  reference: ReferenceLine | None = None) -> bytes:
    """Left: in-training val_bpb against the step; right: train_loss against the step. One line
    per trial, coloured by config; a trial that did not finish is dashed."""
    with _literal_text():
        figure = _new_figure(12.0, 5.0)
        val_axis, train_axis = figure.subplots(1, 2)
        for trial in trials:
            style = {"color": colours[trial.label], "linewidth": 1.2, "alpha": 0.85,
                     "linestyle": "-" if trial.finished else "--"}
            curves = trial.curves
            if curves.val_steps:
                val_axis.plot(curves.val_steps, curves.val_bpb, marker="o", markersize=3, **style)
            if curves.train_steps:
                train_axis.plot(curves.train_steps, curves.train_loss, **style)
        if reference is not None:
            val_axis.axhline(reference.value, **_REFERENCE_STYLE)
        val_axis.set(xlabel="step", ylabel="val_bpb", title="validation during training")
        train_axis.set(xlabel="step", ylabel="train_loss", title="training loss")
        for axis in (val_axis, train_axis):
            axis.grid(alpha=0.3)
        handles, names = _config_legend(trials, colours, reference)
        names = [_wrap(name) for name in names]
        # About 150 characters of small legend text fit across the 12-inch figure.
        figure.legend(handles, names, loc="outside lower center",
                      ncols=_legend_columns(names, 150), fontsize="small")
        return _png(figure)


def _config_legend(trials: Sequence[TrialCurves], colours: Mapping[str, Colour],
                   reference: ReferenceLine | None):
    from matplotlib.lines import Line2D

    labels = list(dict.fromkeys(trial.label for trial in trials))
    handles = [Line2D([], [], color=colours[label], linewidth=2) for label in labels]
    names = list(labels)
    if any(not trial.finished for trial in trials):
        handles.append(Line2D([], [], color="grey", linestyle="--"))
        names.append("did not finish")
    if reference is not None:
        handles.append(Line2D([], [], **_REFERENCE_STYLE))
        names.append(reference.label)
    return handles, names


def bytes_figure(points: Sequence[BytesPoint], limit: int, colours: Mapping[str, Colour],
                 reference: ReferenceLine | None = None) -> bytes:
    """Each finished trial's artifact bytes against its val_bpb, with the size limit as a vertical
    line (a log axis when the artifacts are far below it)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    with _literal_text():
        figure = _new_figure(11.0, 5.5)
        axis = figure.subplots(1, 1)
        for label in dict.fromkeys(point.label for point in points):
            mine = [point for point in points if point.label == label]
            axis.scatter([p.bytes_total for p in mine], [p.val_bpb for p in mine],
                         color=colours[label], s=40, edgecolors="black", linewidths=0.5,
                         label=_wrap(label), zorder=3)
        axis.axvline(limit, **_LIMIT_STYLE, label=f"limit {limit:,} bytes")
        if reference is not None:
            axis.axhline(reference.value, **_REFERENCE_STYLE, label=_wrap(reference.label))
        smallest = min(point.bytes_total for point in points)
        largest = max(limit, *(point.bytes_total for point in points))
        if smallest > 0 and largest / smallest > _LOG_AXIS_RATIO:
            axis.set_xscale("log")
            axis.set_xlabel("artifact bytes (compressed model + code; log scale)")
        else:
            axis.set_xlabel("artifact bytes (compressed model + code)")
        # Whole byte counts with thousands separators: the default log labels are mathtext,
        # which is off here, and a linear axis would print an offset like "1e7".
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_ylabel("val_bpb")
        axis.set_title("artifact size against val_bpb")
        axis.grid(alpha=0.3)
        figure.legend(*axis.get_legend_handles_labels(), loc="outside right upper",
                      fontsize="small")
        return _png(figure)
