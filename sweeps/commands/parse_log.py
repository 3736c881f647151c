"""``sweeps parse-log``: what Parameter Golf train logs say. Parsing logs is :mod:`sweeps.logparse`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sweeps.logparse import parse_log_file, says_nothing

_EPILOG = """\
what it extracts (the last training run when a file holds several):
  headline                  the evaluation the score is quoted from: legal TTT, other TTT,
                            sliding window, quantized roundtrip, then pre-quantization
  seed, seed_from_filename  the seed the log prints; the one its file name encodes
  training_runs_in_file     how many times the step counter starts over (0: eval-only log)
  last_step, planned_iterations, step_avg_ms, step_avg_ms_last_train_line
  train_time_ms, stopped_early_wallclock
  code_bytes, code_bytes_uncompressed, total_submission_bytes, total_submission_label,
  raw_total_submission_bytes, model_bytes, over_size_limit (total > 16,000,000 bytes)
  last_val_line             the last in-training validation {step, val_loss, val_bpb}
  final_metrics             every post-training evaluation {label: {val_loss, val_bpb, ...}}
  eval_time_ms_total, model_params, peak_memory_mib, final_eval_mode

Anything the log does not print is null: the parser never guesses. Unreadable files, and files
with no Parameter Golf line at all, are reported on stderr and make the exit status 2; the other
files are still printed.

examples:
  sweeps parse-log runs/trial_0001/train.log
  sweeps parse-log records/*/train_seed*.log --json > summaries.json
"""


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``parse-log`` subcommand to a ``sweeps`` argument parser."""
    parser = subparsers.add_parser(
        "parse-log",
        help="extract steps, timing, sizes, seed and final val_bpb from Parameter Golf train logs",
        description=(
            "Read Parameter Golf train logs (the challenge's train_gpt.py, its refactored\n"
            "successors, ternary/XNOR/JEPA scripts, golf's own pipeline) and print what each\n"
            "one reports: the headline val_bpb, every final evaluation, steps and timing,\n"
            "artifact and code sizes, the seed. Source-code dumps and launcher noise in the\n"
            "log are ignored."),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="train log file(s)")
    parser.add_argument(
        "--json", action="store_true",
        help="print JSON: one object for one file, a list of objects (in argument order) for "
             "several; each object has a \"file\" key with the path as given")
    parser.set_defaults(func=run_parse_log)


def run_parse_log(args: argparse.Namespace) -> int:
    """Handler of ``sweeps parse-log``; returns 0, or 2 when a file is unreadable or no train log."""
    results: list[dict] = []
    status = 0
    for path in args.files:
        try:
            summary = parse_log_file(path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            print(f"sweeps parse-log: cannot read {path}: {reason} (check the path and that it is "
                  "a readable file)", file=sys.stderr)
            status = 2
            continue
        if says_nothing(summary):
            print(f"sweeps parse-log: {path} holds no Parameter Golf log line (no step, size, seed or "
                  "final evaluation line such as 'step:20/20 val_loss:2.1 val_bpb:1.2 ...'): pass the "
                  "train log a trainer printed", file=sys.stderr)
            status = 2
            continue
        results.append({"file": path, **summary})
    if args.json:
        if len(args.files) == 1:
            if results:
                print(json.dumps(results[0], indent=2))
        else:
            print(json.dumps(results, indent=2))
    elif results:
        print("\n\n".join(format_summary(result) for result in results))
    return status


def _format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return " ".join(f"{key}={_format_value(item)}" for key, item in value.items())
    return str(value)


def format_summary(summary: dict) -> str:
    """The human view of one summary: ``key: value`` lines, the file and the headline first."""
    lines = []
    if "file" in summary:
        lines.append(f"file: {summary['file']}")
    headline = summary.get("headline")
    if headline is None:
        lines.append("headline: null")
    else:
        lines.append(f"headline: {headline['label']} ({headline['family']}) "
                     f"val_bpb={headline['val_bpb']} val_loss={headline['val_loss']}")
    for key, value in summary.items():
        if key in ("file", "headline", "final_metrics"):
            continue
        lines.append(f"{key}: {_format_value(value)}")
    metrics = summary.get("final_metrics") or {}
    if metrics:
        lines.append("final_metrics:")
        width = max(len(label) for label in metrics)
        for label, metric in metrics.items():
            lines.append(f"  {label:<{width}}  {_format_value(metric)}")
    else:
        lines.append("final_metrics: none")
    return "\n".join(lines)
