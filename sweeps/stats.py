"""Is a new result really better? The two significance tests the challenge uses, on scipy.

Lower is better for both metrics (val_bpb in bits per byte, val_loss in nats per token), so every
test here is one-sided with the alternative "the new mean is lower":

``acceptance`` (the challenge's record rule)
    A record must beat the best by at least 0.005 nats with p < 0.01 over several seeds. Early
    record READMEs showed it with a one-sided one-sample t-test of the new seeds' values against
    ``mean(baseline) - margin``: H1 is ``mean(new) < mean(baseline) - margin``. The baseline is one
    number (the previous best) or several values, of which only the mean is used. Needs >= 2 new
    values.
``welch`` (the leaderboard's later ``p=...`` notes)
    Welch's unequal-variance two-sample t-test, one-sided, on per-seed values, with no margin
    unless one is given: H1 is ``mean(new) < mean(baseline) - margin``. Needs >= 2 values on each
    side.
``paired`` (configs of one sweep, which run the same seeds)
    The paired one-sided t-test (``scipy.stats.ttest_rel``) on the per-seed differences
    ``new - baseline``: H1 is ``mean(new - baseline) < -margin``, margin 0 unless given. A seed
    that moves both configs alike cancels out, so it is more powerful than Welch's test when
    seeds share their noise. Pairs are matched by seed when both samples carry seeds, else by
    position (equal lengths only, and the result says so). Needs >= 2 pairs.

The margin is in the unit of the values compared. Without ``margin`` the acceptance test uses the
challenge's 0.005 nats; comparing bpb values, that becomes ``0.005 / ln 2 * tokens_per_byte`` bpb
(since bpb = nats / ln 2 * tokens/bytes), with the tokens-per-byte ratio given or derived from a
submission that reports both val_bpb and val_loss. Welch's test without ``margin`` uses 0.

The result's ``(ci_low, ci_high)`` is the central ``1 - 2*alpha`` confidence interval for
``mean_delta = mean(new) - mean(baseline)`` (98% at the default alpha 0.01), from the same standard
error and degrees of freedom as the test. Its upper end is the one-sided ``1 - alpha`` upper
confidence bound, so a result is significant exactly when ``ci_high < -margin``. For the acceptance
test the baseline mean is taken as exact, as that test does; for the paired test the interval is
that of the mean per-seed difference.

Values come from *value sources* (:data:`VALUE_SOURCES`, resolved by :func:`resolve_sample`): a
comma list of numbers, a submission.json, or (baseline only) ``leaderboard:FILE.csv[:RUN NAME]``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import scipy.stats

from sweeps.leaderboard import LeaderboardError, read_leaderboard
from sweeps.submissions import LN2, SubmissionError, load_submission

__all__ = [
    "DEFAULT_MARGIN_NATS",
    "DEFAULT_ALPHA",
    "TESTS",
    "METRICS",
    "StatsError",
    "Sample",
    "Comparison",
    "compare",
    "ValueSource",
    "VALUE_SOURCES",
    "register_value_source",
    "resolve_sample",
]

DEFAULT_MARGIN_NATS = 0.005
"""The challenge's required improvement over the best, in nats per token."""
DEFAULT_ALPHA = 0.01
"""The challenge's significance level (p < 0.01)."""
TESTS = ("acceptance", "welch", "paired")
METRICS = ("bpb", "nats")


class StatsError(ValueError):
    """Input a comparison cannot use; the message names the problem and the fix."""


@dataclass(frozen=True)
class Sample:
    """Values to compare, their metric ("bpb" or "nats"), and where they came from.

    ``tokens_per_byte`` (val_bpb * ln2 / val_loss of the runs) is set when the source knows it; it
    converts the 0.005-nat margin into bpb. ``seeds`` (one per value, as text) is set when the
    source knows which seed gave each value; the paired test matches pairs by it.
    """

    values: tuple[float, ...]
    metric: str
    tokens_per_byte: float | None = None
    description: str = ""
    seeds: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise StatsError(f"unknown metric {self.metric!r}: use 'bpb' or 'nats'")
        values = tuple(float(v) for v in self.values)
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise StatsError(f"{self.description or 'values'}: {bad[0]} is not a finite number")
        object.__setattr__(self, "values", values)
        if self.seeds is not None:
            seeds = tuple(str(seed) for seed in self.seeds)
            if len(seeds) != len(values) or len(set(seeds)) != len(seeds):
                raise StatsError(f"{self.description or 'values'}: need one distinct seed per "
                                 f"value, got seeds {list(seeds)} for {len(values)} value(s)")
            object.__setattr__(self, "seeds", seeds)
        if self.tokens_per_byte is not None:
            _check_tokens_per_byte(self.tokens_per_byte)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


@dataclass(frozen=True)
class Comparison:
    """Outcome of :func:`compare`. :meth:`to_dict` gives the documented JSON keys only.

    ``t`` is -inf or +inf (and ``p_value`` 0 or 1) when the values have zero variance, so the
    difference is exact; ``df`` is None when it is undefined (Welch with zero variance on both
    sides). For the paired test ``n_new`` and ``n_baseline`` both count the pairs, ``pairs`` names
    the seeds paired (or the positions, as ``#1``, ``#2``...) and ``paired_by`` is "seed" or
    "position". The remaining fields (alpha, the samples, how the margin was chosen, notes) serve the
    human summary.
    """

    test: str
    metric: str
    margin: float
    n_new: int
    n_baseline: int
    t: float
    df: float | None
    p_value: float
    mean_delta: float
    ci_low: float
    ci_high: float
    significant: bool
    alpha: float = DEFAULT_ALPHA
    new: Sample | None = None
    baseline: Sample | None = None
    margin_source: str = ""
    tokens_per_byte: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    pairs: tuple[str, ...] = ()
    paired_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        paired = {"paired_by": self.paired_by, "pairs": list(self.pairs)} if self.paired_by else {}
        return {
            "test": self.test,
            "metric": self.metric,
            "margin": self.margin,
            "n_new": self.n_new,
            "n_baseline": self.n_baseline,
            "t": self.t,
            "df": self.df,
            "p_value": self.p_value,
            "mean_delta": self.mean_delta,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "significant": self.significant,
            **paired,
        }


def compare(
    new: Sample | Sequence[float],
    baseline: Sample | Sequence[float],
    *,
    test: str = "acceptance",
    metric: str = "bpb",
    margin: float | None = None,
    tokens_per_byte: float | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """Test whether ``new`` is lower than ``baseline`` by more than ``margin`` (one-sided).

    ``test`` is "acceptance", "welch" or "paired" (see the module docstring); ``metric`` is "bpb" or "nats"
    and must match any :class:`Sample` given. ``margin`` is in the metric's unit; None means the
    challenge's 0.005 nats for the acceptance test (converted to bpb with ``tokens_per_byte``, else
    the new sample's ratio, else the baseline's) and 0 for Welch's and the paired test. ``significant`` is
    ``p_value < alpha``.
    """
    if test not in TESTS:
        raise StatsError(f"unknown test {test!r}: use 'acceptance' (the challenge's record rule), "
                         "'welch' (the leaderboard's p= notes) or 'paired' (same seeds on both "
                         "sides)")
    if metric not in METRICS:
        raise StatsError(f"unknown metric {metric!r}: use 'bpb' (val_bpb) or 'nats' (val_loss)")
    if not 0 < alpha < 0.5:
        raise StatsError(f"alpha must be between 0 and 0.5 (the challenge uses 0.01), got {alpha}")
    if tokens_per_byte is not None:
        _check_tokens_per_byte(tokens_per_byte)
    new_sample = _as_sample(new, metric, "new")
    base_sample = _as_sample(baseline, metric, "baseline")
    notes: list[str] = []
    pairs: tuple[str, ...] = ()
    paired_by: str | None = None
    if test == "paired":
        x, y, pairs, paired_by = _pair(new_sample, base_sample, notes)
    else:
        _check_counts(test, new_sample, base_sample)
        x = np.asarray(new_sample.values)
        y = np.asarray(base_sample.values)

    ratio, ratio_source = _pick_tokens_per_byte(tokens_per_byte, new_sample, base_sample, notes)
    margin_value, margin_source = _resolve_margin(test, metric, margin, ratio, ratio_source)

    mean_delta = float(x.mean() - y.mean())
    gap = mean_delta + margin_value  # negative when the new mean is below the threshold
    if test == "paired":
        se = math.sqrt(_variance(x - y) / len(x))
        df = float(len(x) - 1)
    elif test == "acceptance":
        se = math.sqrt(_variance(x) / len(x))
        df: float | None = float(len(x) - 1)
    else:
        part_x = _variance(x) / len(x)
        part_y = _variance(y) / len(y)
        se = math.sqrt(part_x + part_y)
        # Welch-Satterthwaite degrees of freedom; undefined when both variances are zero.
        denominator = part_x ** 2 / (len(x) - 1) + part_y ** 2 / (len(y) - 1)
        df = (part_x + part_y) ** 2 / denominator if denominator > 0 else None

    if se == 0.0:
        t, p_value = _degenerate(gap)
        notes.append(
            "every value on the tested side(s) is identical, so the seed-to-seed noise is zero and "
            "the difference is exact (t is infinite); check that the seeds really differ "
            "(did SEED reach the trainer?) before trusting it")
        ci_low = ci_high = mean_delta
    else:
        t, p_value = _scipy_test(test, x, y, margin_value)
        assert df is not None  # se > 0 implies a defined df
        half_width = float(scipy.stats.t.ppf(1.0 - alpha, df)) * se
        ci_low, ci_high = mean_delta - half_width, mean_delta + half_width

    return Comparison(
        test=test,
        metric=metric,
        margin=margin_value,
        n_new=len(x),
        n_baseline=len(y),
        t=t,
        df=df,
        p_value=p_value,
        mean_delta=mean_delta,
        ci_low=ci_low,
        ci_high=ci_high,
        significant=bool(p_value < alpha),
        alpha=alpha,
        new=new_sample,
        baseline=base_sample,
        margin_source=margin_source,
        tokens_per_byte=ratio,
        notes=tuple(notes),
        pairs=pairs,
        paired_by=paired_by,
    )


def _pair(new: Sample, baseline: Sample,
          notes: list[str]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str]:
    """The paired test's two aligned arrays, the pairs' names, and how they were matched."""
    if new.seeds is not None and baseline.seeds is not None:
        base_by_seed = dict(zip(baseline.seeds, baseline.values))
        shared = [seed for seed in new.seeds if seed in base_by_seed]
        if len(shared) < 2:
            raise StatsError(
                f"the paired test needs at least 2 seeds present on both sides, got "
                f"{len(shared)} (new seeds {', '.join(new.seeds)}; baseline seeds "
                f"{', '.join(baseline.seeds)}); run the same seeds for both configs, or use "
                "--test welch for unpaired samples")
        unmatched = [s for s in (*new.seeds, *baseline.seeds) if s not in shared]
        if unmatched:
            notes.append(f"seed(s) {', '.join(dict.fromkeys(unmatched))} ran on one side only and "
                         "are left out of the pairs")
        new_by_seed = dict(zip(new.seeds, new.values))
        return (np.asarray([new_by_seed[s] for s in shared]),
                np.asarray([base_by_seed[s] for s in shared]), tuple(shared), "seed")
    if len(new.values) != len(baseline.values):
        raise StatsError(
            f"the paired test needs the same seeds on both sides; without seeds the values are "
            f"paired by position, which needs equal counts, got {len(new.values)} new and "
            f"{len(baseline.values)} baseline value(s); give DIR:CONFIG sources (they carry "
            "seeds), equal-length lists in the same seed order, or use --test welch")
    if len(new.values) < 2:
        raise StatsError(f"the paired test needs at least 2 pairs, got {len(new.values)}; "
                         "run more seeds")
    notes.append("the values carry no seeds on "
                 + ("either side" if new.seeds is None and baseline.seeds is None else "one side")
                 + ", so they are paired by position (1st with 1st, ...): list them in the same "
                   "seed order")
    return (np.asarray(new.values), np.asarray(baseline.values),
            tuple(f"#{i + 1}" for i in range(len(new.values))), "position")


def _as_sample(values: Sample | Sequence[float], metric: str, role: str) -> Sample:
    if isinstance(values, Sample):
        if values.metric != metric:
            raise StatsError(
                f"the {role} values are {values.metric} but the comparison is in {metric}; "
                f"compare like with like (--metric {values.metric}, or {role} values in {metric})")
        return values
    if isinstance(values, (str, bytes)):
        raise StatsError(f"{role} values must be numbers, not the text {values!r}; "
                         "resolve_sample() turns a source text into a Sample")
    return Sample(tuple(values), metric, None, f"{role} values")


def _check_tokens_per_byte(ratio: float) -> None:
    if not (math.isfinite(ratio) and ratio > 0):
        raise StatsError(f"tokens per byte must be a positive number (val_bpb * ln2 / val_loss "
                         "of your runs: about 0.41 for sp1024, 0.27 for sp8192 on FineWeb), got "
                         f"{ratio}")


def _check_counts(test: str, new: Sample, baseline: Sample) -> None:
    if len(new.values) < 2:
        raise StatsError(
            f"the {'acceptance' if test == 'acceptance' else 'Welch'} test needs at least 2 new "
            f"values (one per seed), got {len(new.values)} ({new.description}); run more seeds")
    if not baseline.values:
        raise StatsError("no baseline values: give the number to beat, e.g. --baseline 1.0810")
    if test == "welch" and len(baseline.values) < 2:
        raise StatsError(
            f"Welch's test needs at least 2 baseline values (one per seed), got "
            f"{len(baseline.values)} ({baseline.description}); pass the baseline record's per-seed "
            "values (its submission.json, or --baseline v1,v2,v3), or use --test acceptance to "
            "test against a single number")


def _pick_tokens_per_byte(given: float | None, new: Sample, baseline: Sample,
                          notes: list[str]) -> tuple[float | None, str]:
    if given is not None:
        return given, "--tokens-per-byte"
    if new.tokens_per_byte is not None:
        other = baseline.tokens_per_byte
        if other is not None and abs(other - new.tokens_per_byte) > 0.005 * new.tokens_per_byte:
            notes.append(
                f"the two sides have different tokens-per-byte ratios ({new.tokens_per_byte:.4f} "
                f"new, {other:.4f} baseline), so they use different tokenizers; the margin uses "
                "the new side's ratio, and only bpb is comparable across tokenizers")
        return new.tokens_per_byte, "the new values' val_bpb/val_loss"
    if baseline.tokens_per_byte is not None:
        return baseline.tokens_per_byte, "the baseline values' val_bpb/val_loss"
    return None, ""


def _resolve_margin(test: str, metric: str, margin: float | None, ratio: float | None,
                    ratio_source: str) -> tuple[float, str]:
    if margin is not None:
        if not (math.isfinite(margin) and margin >= 0):
            raise StatsError(f"--margin must be a number >= 0 (how much lower the new mean must "
                             f"be, in {metric}), got {margin}")
        return float(margin), f"{margin:g} {metric}, given"
    if test == "welch":
        return 0.0, f"0 {metric}: Welch's test without --margin, as the leaderboard's p= notes"
    if test == "paired":
        return 0.0, f"0 {metric}: the paired test without --margin"
    if metric == "nats":
        return DEFAULT_MARGIN_NATS, f"{DEFAULT_MARGIN_NATS:g} nats: the challenge's rule"
    if ratio is None:
        raise StatsError(
            f"the acceptance margin is {DEFAULT_MARGIN_NATS:g} nats, and converting it to bpb "
            "needs your tokenizer's tokens-per-byte ratio, which these values do not carry. Give "
            "--margin M in bpb, or --tokens-per-byte R (R = val_bpb * ln2 / val_loss of any of "
            "your runs), or compare val_loss values in nats (--metric nats); a submission.json "
            "with per-seed val_bpb and val_loss supplies R by itself")
    value = DEFAULT_MARGIN_NATS / LN2 * ratio
    return value, (f"{value:.6f} bpb: the challenge's {DEFAULT_MARGIN_NATS:g} nats at "
                   f"{ratio:.4f} tokens/byte (from {ratio_source})")


def _variance(values: np.ndarray) -> float:
    """Sample variance (ddof=1), exactly 0 when all values are equal.

    numpy's mean of n equal floats can be off by an ulp, which would leave a 1e-34 "variance" and
    an astronomically large but finite t; equal values must take the exact zero-variance path.
    """
    return 0.0 if np.ptp(values) == 0 else float(values.var(ddof=1))


def _degenerate(gap: float) -> tuple[float, float]:
    """t and one-sided p when the standard error is zero: the sign of the gap decides exactly."""
    if gap < 0:
        return -math.inf, 0.0
    if gap > 0:
        return math.inf, 1.0
    return 0.0, 0.5  # exactly on the threshold: no evidence either way


def _scipy_test(test: str, x: np.ndarray, y: np.ndarray, margin: float) -> tuple[float, float]:
    if test == "paired":
        result = scipy.stats.ttest_rel(x, y - margin, alternative="less")
        return float(result.statistic), float(result.pvalue)
    with warnings.catch_warnings():
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            # One constant side is legitimate for Welch (its variance term is just 0); scipy warns
            # about it as if precision were lost.
            warnings.filterwarnings("ignore", message="Precision loss occurred",
                                    category=RuntimeWarning)
        if test == "acceptance":
            result = scipy.stats.ttest_1samp(x, popmean=float(y.mean()) - margin,
                                             alternative="less")
        else:
            result = scipy.stats.ttest_ind(x, y - margin, equal_var=False, alternative="less")
    return float(result.statistic), float(result.pvalue)


# ---------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ValueSource:
    """One way to write ``--new`` / ``--baseline``.

    ``claims(spec)`` says whether the text is this source's; ``resolve(spec, metric, role)`` turns
    it into a :class:`Sample` (``role`` is "new" or "baseline", for messages) or raises a
    ``ValueError`` subclass with a clear message. ``syntax`` and ``help`` appear in ``--help``.
    """

    name: str
    syntax: str
    help: str
    claims: Callable[[str], bool]
    resolve: Callable[[str, str, str], Sample]
    roles: tuple[str, ...] = ("new", "baseline")


def _numbers_claim(spec: str) -> bool:
    return True  # the fallback: anything no other source claims is read as numbers


def _numbers_resolve(spec: str, metric: str, role: str) -> Sample:
    items = [item.strip() for item in spec.split(",")]
    values = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            what = "an empty item" if not item else f"{item!r} is not a number"
            raise StatsError(f"--{role} {spec!r}: {what}. --{role} takes {_syntax_list(role)}")
        values.append(value)
    return Sample(tuple(values), metric, None, "comma list")


def _submission_claim(spec: str) -> bool:
    return spec.lower().endswith(".json") or Path(spec).is_file()


def _submission_resolve(spec: str, metric: str, role: str) -> Sample:
    if spec.lower().endswith(".csv"):
        raise StatsError(f"--{role} {spec!r} looks like a leaderboard CSV; write "
                         f"leaderboard:{spec} to use its best row as the baseline")
    submission = load_submission(spec)
    try:
        values = submission.per_seed_values(metric)
    except SubmissionError as exc:
        mean = submission.val_bpb if metric == "bpb" else submission.val_loss
        single = (f", or (acceptance test only) its mean alone with --{role} {mean:g}"
                  if role == "baseline" and mean is not None else "")
        raise SubmissionError(
            f"{exc}; pass the per-seed values with --{role} v1,v2,...{single}") from None
    seeds = ", ".join(submission.seeds)
    return Sample(tuple(values), metric, submission.tokens_per_byte,
                  f"{submission.label}: seeds {seeds} from '{submission.per_seed_source}'")


_LEADERBOARD_PREFIX = "leaderboard:"


def _leaderboard_claim(spec: str) -> bool:
    return spec.startswith(_LEADERBOARD_PREFIX)


def _split_leaderboard_spec(rest: str) -> tuple[str, str | None]:
    """``FILE.csv`` or ``FILE.csv:RUN NAME``; the file part is the prefix that names a file."""
    if Path(rest).is_file():
        return rest, None
    for index, char in enumerate(rest):
        if char == ":" and Path(rest[:index]).is_file():
            return rest[:index], rest[index + 1:]
    lowered = rest.lower()
    end = lowered.find(".csv")
    return (rest[:end + 4] if end >= 0 else rest), None


def _leaderboard_resolve(spec: str, metric: str, role: str) -> Sample:
    rest = spec[len(_LEADERBOARD_PREFIX):]
    if not rest:
        raise StatsError("leaderboard: needs a file: leaderboard:FILE.csv or "
                         "leaderboard:FILE.csv:RUN NAME")
    if metric != "bpb":
        raise StatsError("leaderboard scores are val_bpb; compare in bpb (--metric bpb), or give "
                         "the baseline's val_loss values in nats as a comma list")
    file_name, run = _split_leaderboard_spec(rest)
    board = read_leaderboard(file_name)
    if run is not None and run.strip():
        row = board.find(run)
        which = f"row {row.run!r}"
    else:
        row = board.best  # type: ignore[assignment]
        if row is None:
            raise LeaderboardError(f"{file_name} has no row with a usable score")
        which = f"best row {row.run!r}"
    description = f"{file_name}: {which} (line {row.line}, {row.score_text} bpb)"
    if board.problems:
        lines = ", ".join(str(problem.line) for problem in board.problems)
        description += f"; {len(board.problems)} unusable row(s) on line(s) {lines} not considered"
    return Sample((row.score,), metric, None, description)


VALUE_SOURCES: list[ValueSource] = [
    ValueSource(
        name="leaderboard",
        syntax="leaderboard:FILE.csv[:RUN NAME]",
        help="a leaderboard CSV's best row, or the row of that run (one number, bpb)",
        claims=_leaderboard_claim,
        resolve=_leaderboard_resolve,
        roles=("baseline",),
    ),
    ValueSource(
        name="submission",
        syntax="PATH/submission.json",
        help="a record's per-seed values (val_bpb, or val_loss with --metric nats)",
        claims=_submission_claim,
        resolve=_submission_resolve,
    ),
    ValueSource(
        name="numbers",
        syntax="V1,V2,...",
        help="numbers separated by commas, in the unit of --metric",
        claims=_numbers_claim,
        resolve=_numbers_resolve,
    ),
]
"""Value sources, tried in order; the last one (numbers) takes whatever the others do not claim.

To add a source (say ``experiment:DIR:CONFIG``), write its ``claims``/``resolve`` functions and call
:func:`register_value_source`; ``--help`` and error messages pick it up from here.
"""


def register_value_source(source: ValueSource) -> None:
    """Add a value source, tried before the catch-all comma list of numbers.

    Register before :func:`sweeps.commands.compare.register` builds the ``compare`` parser, so
    ``--help`` lists it.
    """
    if any(existing.name == source.name for existing in VALUE_SOURCES):
        raise ValueError(f"a value source named {source.name!r} is already registered")
    VALUE_SOURCES.insert(len(VALUE_SOURCES) - 1, source)


def resolve_sample(spec: str, *, metric: str = "bpb", role: str = "new") -> Sample:
    """Turn the text of ``--new`` or ``--baseline`` (``role``) into a :class:`Sample`."""
    if metric not in METRICS:
        raise StatsError(f"unknown metric {metric!r}: use 'bpb' or 'nats'")
    text = spec.strip()
    if not text:
        raise StatsError(f"--{role} is empty; it takes {_syntax_list(role)}")
    for source in VALUE_SOURCES:
        if source.claims(text):
            if role not in source.roles:
                raise StatsError(f"--{role} cannot be {source.syntax} ({source.name} is only for "
                                 f"{' or '.join('--' + r for r in source.roles)}); --{role} takes "
                                 f"{_syntax_list(role)}")
            return source.resolve(text, metric, role)
    raise StatsError(f"--{role} {spec!r}: not understood; it takes {_syntax_list(role)}")


def _syntax_list(role: str) -> str:
    forms = [source.syntax for source in VALUE_SOURCES if role in source.roles]
    return ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else forms[0]
