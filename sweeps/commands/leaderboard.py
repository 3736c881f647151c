"""``sweeps leaderboard``: a leaderboard CSV's rows, best run and problems (:mod:`sweeps.leaderboard`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Mapping

from sweeps.leaderboard import Leaderboard, LeaderboardError, against_best, read_leaderboard

_EPILOG = """\
examples:
  sweeps leaderboard leaderboard_10min.csv
  sweeps leaderboard leaderboard_10min.csv --json
  sweeps leaderboard leaderboard_10min.csv --against 1.0795 --tokens-per-byte 0.2683
  sweeps leaderboard leaderboard_10min.csv --against records/my_run/submission.json

The CSV needs a run column (run, name, title, ...) and a score column (score, val_bpb, bpb, ...);
author, date, summary and info_url columns are used when present. Rows whose score is empty or not
a number are listed as problems with their line number (the header is line 1).
"""


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``leaderboard`` subcommand to a ``sweeps`` argument parser."""
    parser = subparsers.add_parser(
        "leaderboard",
        help="read a leaderboard CSV: its rows, the best run, rows it could not use",
        description=(
            "Read a leaderboard CSV (the challenge's README tables exported as CSV, or a\n"
            "spreadsheet's export of them) and print its rows, the best run (lowest val_bpb)\n"
            "and any rows that could not be used, with their line numbers."),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE.csv", help="the leaderboard CSV file")
    parser.add_argument("--json", action="store_true",
                        help='print {"rows": [...], "best": {...}, "problems": [...]} as JSON')
    parser.add_argument(
        "--against", metavar="VALUE_OR_SUBMISSION.json",
        help="also print this result's delta to the best row, in bpb and in nats: a val_bpb "
             "number, or a submission.json (its mean val_bpb, and its tokens-per-byte ratio "
             "when it reports both val_bpb and val_loss)")
    parser.add_argument(
        "--tokens-per-byte", type=float, metavar="R",
        help="tokens per byte of your tokenizer on the validation set (val_bpb * ln2 / val_loss "
             "of any of your runs), to express --against's delta in nats")
    parser.set_defaults(func=run_leaderboard)


def run_leaderboard(args: argparse.Namespace) -> int:
    """Handler of ``sweeps leaderboard``; returns the exit code (2 on bad input)."""
    try:
        board = read_leaderboard(args.file)
        against = None
        if args.against is not None:
            if board.best is None:
                raise LeaderboardError(f"{args.file} has no usable row to compare against")
            against = against_best(board, args.against, args.tokens_per_byte)
    except LeaderboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = board.to_dict()
        if against is not None:
            out["against"] = against
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(format_leaderboard(board, against))
    return 0


def format_leaderboard(board: Leaderboard, against: Mapping[str, Any] | None = None) -> str:
    """Human view: the table (best row marked), the best row, the problems, the --against delta."""
    best = board.best
    lines: list[str] = []
    if board.rows:
        run_width = min(60, max(len("run"), *(len(row.run) for row in board.rows)))
        lines.append(f"  {'line':>4}  {'score':<8}  {'run':<{run_width}}  {'author':<20}  date")
        for row in board.rows:
            mark = "*" if row is best else " "
            run = row.run if len(row.run) <= run_width else row.run[:run_width - 3] + "..."
            lines.append(f"{mark} {row.line:>4}  {row.score_text:<8}  {run:<{run_width}}  "
                         f"{(row.author or '')[:20]:<20}  {row.date or ''}")
    lines.append("")
    if best is not None:
        by = f" by {best.author}" if best.author else ""
        on = f" on {best.date}" if best.date else ""
        lines.append(f"best: {best.run} ({best.score_text} bpb{by}{on}, line {best.line})")
    else:
        lines.append("best: none (no row has a usable score)")
    lines.append(f"{len(board.rows)} rows read from {board.path or 'the CSV'}")
    if board.problems:
        lines.append(f"{len(board.problems)} rows not used:")
        lines.extend(f"  line {problem.line}: {problem.reason}" for problem in board.problems)
    if against is not None:
        nats = against["delta_nats"]
        nats_text = (f"{nats:+.5f} nats" if nats is not None else
                     "nats unknown (pass --tokens-per-byte R, R = val_bpb * ln2 / val_loss)")
        lines.append(f"{against['label']}: {against['val_bpb']:.8g} bpb; delta to best "
                     f"{against['delta_bpb']:+.5f} bpb, {nats_text} (negative = better)")
    return "\n".join(lines)
