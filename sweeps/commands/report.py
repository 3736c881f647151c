"""``sweeps report DIR``: an experiment's HTML page with its figures (:mod:`sweeps.htmlreport`)."""

from __future__ import annotations

import argparse
import sys

from sweeps.htmlreport import DEFAULT_REPORT_NAME, ReportError, write_report
from sweeps.leaderboard import LeaderboardError
from sweeps.results import ResultsError

USER_ERROR = 2

_EPILOG = f"""\
examples:
  sweeps report experiments/qat_vs_lawa
  sweeps report experiments/qat_vs_lawa --leaderboard leaderboard_10min.csv
  sweeps report experiments/qat_vs_lawa --baseline QAT_ENABLED=0,LAWA_ENABLED=0 --out qat.html

The page (default DIR/{DEFAULT_REPORT_NAME}) is self-contained: its figures are embedded PNGs, also
written beside it as <page>_val_bpb.png, <page>_curves.png and <page>_bytes.png. What the
experiment lacks (failed trials, a single seed, no baseline, no logs) is a note on the page.
"""


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``report`` subcommand to a ``sweeps`` argument parser."""
    parser = subparsers.add_parser(
        "report", help="write an HTML page of an experiment: figures, summary, significance",
        description=(
            "Write one self-contained HTML page about an experiment: val_bpb per config with\n"
            "each seed and the confidence interval of its difference from the baseline, the\n"
            "learning curves from the trials' logs, artifact bytes against val_bpb with the\n"
            "16,000,000-byte limit, and the per-config summary table."),
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", metavar="DIR", help="experiment directory (local path or URI)")
    parser.add_argument("--out", metavar="PATH",
                        help=f"where to write the page (default: DIR/{DEFAULT_REPORT_NAME}; "
                             "required for a remote DIR)")
    parser.add_argument("--leaderboard", metavar="CSV",
                        help="a leaderboard CSV: its best val_bpb becomes a line in the figures "
                             "and a column of the table")
    parser.add_argument("--baseline", metavar="LABEL",
                        help="the config the others are tested against: its label or "
                             "KEY=VALUE,... (default: the sweep's baseline)")
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Handler of ``sweeps report``; returns the exit code (2 on bad input)."""
    try:
        written = write_report(args.dir, args.out, leaderboard=args.leaderboard,
                               baseline=args.baseline)
    except (ReportError, ResultsError, LeaderboardError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    figures = ", ".join(path.name for path in written.figures.values()) or "none"
    print(f"report: {written.page}")
    print(f"figures beside it: {figures}")
    for note in written.notes:
        print(f"note: {note}")
    return 0
