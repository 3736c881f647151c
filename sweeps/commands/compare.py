"""``sweeps compare``: is a new result significantly better? The test itself is :mod:`sweeps.stats`."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from sweeps.leaderboard import LeaderboardError
from sweeps import stats
from sweeps.stats import DEFAULT_ALPHA, METRICS, TESTS, Comparison, StatsError, compare, resolve_sample
from sweeps.submissions import SubmissionError

_TEST_NAMES = {
    "acceptance": "acceptance test (one-sided one-sample t-test, the challenge's record rule)",
    "welch": "Welch's unequal-variance t-test (one-sided, two-sample)",
    "paired": "paired t-test (one-sided, on per-seed differences new - baseline)",
}
_TEST_SHORT = {"acceptance": "acceptance test", "welch": "Welch's t-test",
               "paired": "paired t-test"}
_METRIC_NAMES = {"bpb": "val_bpb, bits per byte", "nats": "val_loss, nats per token"}


def _fmt_p(p: float) -> str:
    if p in (0.0, 1.0):
        return f"{p:g}"  # exact (zero-variance) answers, not rounded ones
    return f"{p:.2e}" if p < 1e-4 else f"{p:.4f}"


def _fmt_df(df: float | None) -> str:
    if df is None:
        return "undefined"
    return f"{df:.0f}" if float(df).is_integer() else f"{df:.2f}"


def format_comparison(c: Comparison) -> str:
    """A human summary; the verdict line always names the test, margin, metric and seed counts."""
    unit = c.metric
    confidence = round(100 * (1 - 2 * c.alpha), 6)
    hypothesis = ("mean(new - baseline) < -margin" if c.test == "paired"
                  else "mean(new) < mean(baseline) - margin")
    lines = [_TEST_NAMES[c.test], f"  H1: {hypothesis} (lower is better)"]
    for role, sample in (("new", c.new), ("baseline", c.baseline)):
        if sample is None:
            continue
        spread = (f", sd {np.std(sample.values, ddof=1):.8f}" if len(sample.values) > 1 else "")
        lines.append(f"  {role:<9} {len(sample.values)} value(s), mean {sample.mean:.8f}"
                     f"{spread}  [{sample.description}]")
    lines += [
        *([f"  pairs     {len(c.pairs)} matched by {c.paired_by}: {', '.join(c.pairs)}"]
          if c.paired_by else []),
        f"  metric    {c.metric} ({_METRIC_NAMES[c.metric]})",
        f"  margin    {c.margin_source}",
        f"  delta     mean(new) - mean(baseline) = {c.mean_delta:+.8f} {unit}; "
        f"{confidence:g}% CI [{c.ci_low:+.8f}, {c.ci_high:+.8f}]",
        f"  t = {c.t:.4f}, df = {_fmt_df(c.df)}, one-sided p = {_fmt_p(c.p_value)}",
    ]
    notes = list(c.notes)
    if c.test == "acceptance" and c.n_baseline == 1:
        notes.append("a single baseline number stands for the baseline's reported mean")
    lines += [f"  note: {note}" for note in notes]
    verdict = "SIGNIFICANT" if c.significant else "NOT significant"
    relation = "<" if c.significant else ">="
    if c.paired_by == "seed":
        counted = f"{len(c.pairs)} pairs (seeds {', '.join(c.pairs)})"
    elif c.paired_by == "position":
        counted = f"{len(c.pairs)} pairs (by position)"
    else:
        counted = f"seeds: {c.n_new} new, {c.n_baseline} baseline"
    lines.append(
        f"{verdict} at alpha {c.alpha:g} (p = {_fmt_p(c.p_value)} {relation} {c.alpha:g}): "
        f"{_TEST_SHORT[c.test]}, one-sided, margin {c.margin:.6g} {unit}, metric {c.metric}, "
        f"{counted}")
    return "\n".join(lines)


_DESCRIPTION = """\
Test whether new runs beat a baseline, one-sided (lower val_bpb / val_loss is better).

  --test acceptance  the challenge's record rule: a one-sided one-sample t-test of the new
                     per-seed values against mean(baseline) - margin, margin 0.005 nats by
                     default. The baseline is usually one number, the current best.
  --test welch       Welch's unequal-variance two-sample t-test on per-seed values, as in the
                     leaderboard's "p=..." notes: margin 0 unless --margin is given. Needs >= 2
                     values on each side.
  --test paired      the paired t-test (scipy.stats.ttest_rel) on per-seed differences, for
                     configs that ran the same seeds: margin 0 unless --margin is given. DIR:CONFIG
                     sources are matched by seed; value lists are paired by position (equal
                     lengths, same seed order). Needs >= 2 pairs.

The margin is in the unit of --metric. Comparing bpb (the default), the acceptance test's 0.005
nats becomes 0.005 / ln 2 * tokens_per_byte bpb, with the ratio from --tokens-per-byte or from a
submission.json that reports val_bpb and val_loss per seed; without either, give --margin in bpb
or compare in nats.

The result is significant when p < --alpha (default 0.01). The confidence interval printed is the
central (1 - 2*alpha) interval for mean(new) - mean(baseline) (98% by default): its upper end is
the one-sided (1 - alpha) bound, so "significant" means exactly "upper end < -margin".
"""


def _epilog() -> str:
    sources = "\n".join(
        f"  {source.syntax}\n      {source.help}"
        + ("" if source.roles == ("new", "baseline") else f" [{', '.join(source.roles)} only]")
        for source in stats.VALUE_SOURCES)  # looked up now: sources registered since import count
    return f"""\
value sources for --new and --baseline:
{sources}

examples:
  # the leaderboard's "beats #1493 (p=0.020)": Welch, per-seed bpb, no margin -> p = 0.0203
  sweeps compare --new 1.07928348,1.07996676,1.08024795 \\
                 --baseline 1.08079352,1.08103103,1.08118408 --test welch --json

  # the record rule against the leaderboard's best row (margin from the submission's ratio)
  sweeps compare --new records/my_run/submission.json --baseline leaderboard:leaderboard_10min.csv

  # two configs of one sweep, paired by seed
  sweeps compare --new experiments/qat_vs_lawa:QAT_ENABLED=1,LAWA_ENABLED=0 \\
                 --baseline experiments/qat_vs_lawa:QAT_ENABLED=0,LAWA_ENABLED=0 --test paired

  # the same in nats, on val_loss values
  sweeps compare --new 2.7879,2.7897,2.7904 --baseline 2.7925 --metric nats

--json prints {{"test", "metric", "margin", "n_new", "n_baseline", "t", "df", "p_value",
"mean_delta", "ci_low", "ci_high", "significant"}}; t is -Infinity/Infinity and p 0 or 1 when the
values have zero variance (an exact difference), and df is null where undefined; the paired test
adds "paired_by" ("seed" or "position") and "pairs" (the seeds, or #1, #2... by position). Exit status: 0
when the test ran (significant or not), 2 on bad input.
"""


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``compare`` subcommand to a ``sweeps`` argument parser."""
    parser = subparsers.add_parser(
        "compare",
        help="is a new result significantly better? (the record rule, Welch's or the paired t-test)",
        description=_DESCRIPTION,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--new", required=True, metavar="SOURCE",
                        help="the new runs' values (see value sources below)")
    parser.add_argument("--baseline", required=True, metavar="SOURCE",
                        help="the values to beat (see value sources below)")
    parser.add_argument("--test", choices=TESTS, default="acceptance",
                        help="acceptance (default: the challenge's record rule), welch, or paired "
                             "(same seeds on both sides)")
    parser.add_argument("--metric", choices=METRICS, default="bpb",
                        help="bpb (val_bpb, default) or nats (val_loss); the unit of the values "
                             "and of --margin")
    parser.add_argument("--margin", type=float, metavar="M",
                        help="required improvement in the unit of --metric (default: 0.005 nats "
                             "for acceptance, converted to bpb when comparing bpb; 0 for welch "
                             "and paired)")
    parser.add_argument("--tokens-per-byte", type=float, metavar="R",
                        help="tokens per byte of the validation set (val_bpb * ln2 / val_loss of "
                             "your runs), to convert the 0.005-nat margin into bpb")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help="significance level; significant means p < alpha (default 0.01)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Handler of ``sweeps compare``; returns the exit code (2 on bad input)."""
    try:
        new = resolve_sample(args.new, metric=args.metric, role="new")
        baseline = resolve_sample(args.baseline, metric=args.metric, role="baseline")
        result = compare(new, baseline, test=args.test, metric=args.metric, margin=args.margin,
                         tokens_per_byte=args.tokens_per_byte, alpha=args.alpha)
    except (StatsError, SubmissionError, LeaderboardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_comparison(result))
    return 0
