"""The ``sweeps`` command: run sweeps, read their tables, compare, verify, report, and the log tools.

Also :func:`sweep_main`, the shared ``main`` of every sweep file (``python sweeps/qat_vs_lawa.py
--scale full``), so a sweep file and ``sweeps run FILE`` take the same options.

User errors (a bad sweep, a missing directory, a typo in a key) print one clear message and exit
with status 2, without a traceback. A sweep whose trials did not all finish exits with 1.

``run`` and ``table`` live here; ``compare``, ``leaderboard``, ``parse-log``, ``report`` and ``verify`` are in
:mod:`sweeps.commands`, one module each, over domain modules that return data.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from golf.config import ConfigError

from sweeps.spec import GPU_CHOICES, SCALE_NAMES, SpecError, Sweep, parse_assignments, parse_seeds

USER_ERROR = 2

_DESCRIPTION = """\
Parameter Golf sweeps on Ray Tune: run a grid of configs x seeds (locally or on a Ray cluster of
8xH100 nodes), get one table of every trial, test which configs really differ, and turn the best
config into a record folder ready for a PR.
"""

_EPILOG = """\
examples:
  sweeps run sweeps/qat_vs_lawa.py                       # local Ray, smoke scale, demo corpus
  sweeps run sweeps/qat_vs_lawa.py --dry-run             # check the grid, list the trials
  ray job submit --working-dir . -- python sweeps/qat_vs_lawa.py --scale full
  sweeps table experiments/qat_vs_lawa
  sweeps compare --new experiments/qat_vs_lawa:QAT_ENABLED=1,LAWA_ENABLED=0 \\
                 --baseline experiments/qat_vs_lawa:QAT_ENABLED=0,LAWA_ENABLED=0 --test welch
  sweeps verify --from experiments/qat_vs_lawa --top 1 --seeds 1337,42,2024
  sweeps report experiments/qat_vs_lawa                  # HTML page with the figures

`sweeps COMMAND --help` explains each command.
"""

_SWEEP_EPILOG = """\
resuming: run the same command again after an interruption (Ctrl-C, a killed driver, a lost node):
an unfinished experiment of the same name is resumed (finished trials are kept, errored ones are
retried from their checkpoint). --restart moves the old experiment aside and starts over.
Concurrency and retry settings are those the experiment started with.
Ctrl-C or SIGTERM stops the trials, writes the table (stopped trials: INTERRUPTED) and exits with
130 / 143. One driver per experiment directory: a second one exits 2 and names the first. A
configuration or data error in a trial is not retried.

examples:
  %(prog)s --dry-run
  %(prog)s --seeds 1337 --set ITERATIONS=20          # a quick look
  %(prog)s --scale full --storage s3://bucket/golf   # on a cluster, via ray job submit
"""


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    """The options every sweep takes (a sweep file's own main and ``sweeps run``)."""
    parser.add_argument("--scale", choices=SCALE_NAMES, default="smoke",
                        help="smoke: CPU, tiny model, demo corpus (default); full: 8xH100 trials "
                             "on the FineWeb data")
    parser.add_argument("--storage", metavar="PATH_OR_URI",
                        help="where experiments live (default: experiments/ here; s3://... or "
                             "gs://... or a shared path on a multi-node cluster)")
    parser.add_argument("--name", help="experiment name (default: the sweep's name)")
    parser.add_argument("--seeds", type=_seeds_arg, metavar="S1,S2,...",
                        help="seeds to run instead of the sweep's (e.g. 1337,42,2024)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="set a config key for every trial (repeatable), e.g. --set ITERATIONS=200")
    parser.add_argument("--max-concurrent", type=_positive_int, metavar="N",
                        help="run at most N trials at once (default: as many as resources allow)")
    parser.add_argument("--gpus-per-trial", type=int, choices=GPU_CHOICES, metavar="G",
                        help="GPUs per trial: 0 (CPU), 1, 2, 4 or 8 (default: 8 at full scale, "
                             "0 at smoke); packed trials each see only their own GPUs")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", dest="resume", action="store_const", const="resume",
                      default="auto", help="require an experiment to resume (default: resume it "
                                           "when there is one, else start)")
    mode.add_argument("--restart", dest="resume", action="store_const", const="restart",
                      help="start over: move an existing experiment of this name aside")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate every trial's config, list the trials and each config's "
                             "predicted artifact bytes; run nothing")
    parser.add_argument("--allow-over-limit", action="store_true",
                        help="run configs whose predicted artifact is over the 16,000,000-byte "
                             "limit even at its interval's low end (refused by default)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray Tune's status tables instead of one line per trial event")
    _add_price_option(parser)
    _add_tracker_options(parser)


def _add_tracker_options(parser: argparse.ArgumentParser) -> None:
    from sweeps.trackers import WANDB_MODES

    parser.add_argument("--track", dest="trackers", action="append", default=[],
                        type=_tracker_arg, metavar="mlflow[:URI]|wandb[:PROJECT]",
                        help="log every trial to MLflow or Weights & Biases through Ray Tune's "
                             "callbacks (repeatable). MLflow URI default: MLFLOW_TRACKING_URI, "
                             "else a file store in the experiment directory; W&B project "
                             "default: WANDB_PROJECT, else the experiment name")
    parser.add_argument("--wandb-mode", choices=WANDB_MODES, default="auto",
                        help="W&B online or offline (default auto: WANDB_MODE, else online when "
                             "an API key is at hand, else offline; `wandb sync` uploads later)")


def _tracker_arg(text: str):  # -> TrackerRequest
    from sweeps.trackers import TrackerError, parse_tracker

    try:
        return parse_tracker(text)
    except TrackerError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_price_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--price-per-gpu-hour", type=_price_arg, metavar="P",
                        help="add money columns: GPU-seconds / 3600 x P (train, eval, total), "
                             "per trial, per config and for the sweep; CPU trials are not priced")


def _price_arg(text: str) -> float:
    from sweeps.cost import check_price

    try:
        return check_price(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def options_from_args(args: argparse.Namespace):  # -> RunOptions
    from sweeps.experiment import RunOptions

    return RunOptions(scale=args.scale, storage=args.storage, name=args.name, seeds=args.seeds,
                      overrides=parse_assignments(args.overrides),
                      max_concurrent=args.max_concurrent, gpus_per_trial=args.gpus_per_trial,
                      resume=args.resume, dry_run=args.dry_run, verbose=args.verbose,
                      price_per_gpu_hour=args.price_per_gpu_hour,
                      allow_over_limit=args.allow_over_limit,
                      trackers=tuple(args.trackers), wandb_mode=args.wandb_mode)


def _seeds_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_seeds(text)
    except SpecError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _run_sweep(sweep: Sweep, args: argparse.Namespace) -> int:
    from sweeps.experiment import run_sweep

    outcome = run_sweep(sweep, options_from_args(args))
    if args.dry_run or outcome.all_finished:
        return 0
    print(outcome.next_step() or "not every trial finished", file=sys.stderr)
    return 1


def sweep_main(sweep: Sweep, argv: Sequence[str] | None = None) -> int:
    """The ``main`` of a sweep file: ``raise SystemExit(main(SWEEP))``."""
    parser = argparse.ArgumentParser(
        prog=f"python {sys.argv[0]}" if sys.argv and sys.argv[0] else sweep.name,
        description=sweep.description or f"Run the {sweep.name} sweep.",
        epilog=_SWEEP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_options(parser)
    args = parser.parse_args(argv)
    return _guarded(lambda: _run_sweep(sweep, args))


# --------------------------------------------------------------------------------- commands
def load_sweep_file(path: str) -> Sweep:
    """The ``SWEEP`` a sweep file defines (the file runs without its ``__main__`` block)."""
    file = Path(path)
    if not file.is_file():
        raise SpecError(f"sweep file {path} does not exist (example: sweeps run sweeps/qat_vs_lawa.py)")
    namespace = runpy.run_path(str(file), run_name="sweeps_file")
    sweep = namespace.get("SWEEP")
    if not isinstance(sweep, Sweep):
        raise SpecError(f"{path} defines no SWEEP = Sweep(...) (found "
                        f"{type(sweep).__name__ if sweep is not None else 'nothing'})")
    return sweep


def _cmd_run(args: argparse.Namespace) -> int:
    return _run_sweep(load_sweep_file(args.file), args)


def _cmd_table(args: argparse.Namespace) -> int:
    from sweeps import report
    from sweeps.results import describe_statuses, load_results, summarize, write_results

    frame = write_results(args.dir) if args.write else load_results(args.dir)
    price = args.price_per_gpu_hour
    if args.json:
        print(report.with_money(frame, price).to_json(orient="records", indent=2))
    elif args.csv:
        sys.stdout.write(report.with_money(frame, price).to_csv(index=False))
    else:
        print(f"{args.dir} ({describe_statuses(frame)}):")
        print(report.format_table(frame, price_per_gpu_hour=price))
        from sweeps.sequential_search import read_decisions, with_stop_columns

        decisions = read_decisions(args.dir)  # None unless the sweep allocated seeds sequentially
        print("\nper config (n = finished seeds; *_sum = over all its trials):")
        print(report.format_summary(with_stop_columns(summarize(frame), decisions),
                                    price_per_gpu_hour=price))
        print()
        print(report.format_cost(frame, price))
        if decisions is not None:
            print()
            print(report.format_sequential(decisions))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``sweeps`` argument parser with every subcommand."""
    from sweeps import stats
    from sweeps.commands import compare, leaderboard, parse_log, verify
    from sweeps.commands import report as report_command
    from sweeps.results import experiment_value_source

    parser = argparse.ArgumentParser(prog="sweeps", description=_DESCRIPTION, epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run a sweep file (local Ray, or the cluster of a `ray job submit`)",
        description="Run a sweep file: every trial's config is validated first, then the trials "
                    "run on Ray Tune (a local Ray, or the cluster RAY_ADDRESS names) and the "
                    "results table is written to the experiment directory as trials end.",
        epilog=_SWEEP_EPILOG.replace("%(prog)s", "sweeps run sweeps/qat_vs_lawa.py"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("file", metavar="SWEEP_FILE", help="a Python file defining SWEEP = Sweep(...)")
    add_sweep_options(run)
    run.set_defaults(func=_cmd_run)

    table = commands.add_parser(
        "table", help="print an experiment's results table (rebuilt from its trial directories)",
        description="Rebuild an experiment's results table from its trial directories (each "
                    "trial's trial.json, train.log and golf result.json) and print it with the "
                    "per-config summary. Works while the sweep runs, and after its driver died.",
        epilog="examples:\n  sweeps table experiments/qat_vs_lawa\n"
               "  sweeps table experiments/qat_vs_lawa --csv > qat_vs_lawa.csv\n"
               "  sweeps table s3://bucket/golf/qat_vs_lawa --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    table.add_argument("dir", metavar="DIR", help="experiment directory (local path or URI)")
    form = table.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="one JSON object per trial")
    form.add_argument("--csv", action="store_true", help="CSV on stdout")
    table.add_argument("--write", action="store_true",
                       help="also rewrite DIR/results.parquet and results.csv")
    _add_price_option(table)
    table.set_defaults(func=_cmd_table)

    try:
        stats.register_value_source(experiment_value_source())
    except ValueError:
        pass  # already registered by an earlier build_parser() in this process
    compare.register(commands)
    verify.register(commands)
    leaderboard.register(commands)
    parse_log.register(commands)
    report_command.register(commands)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from sweeps.leaderboard import LeaderboardError
    from sweeps.results import ResultsError
    from sweeps.stats import StatsError
    from sweeps.submissions import SubmissionError
    from sweeps.verify import VerifyError

    return (SpecError, ConfigError, ResultsError, VerifyError, LeaderboardError, StatsError,
            SubmissionError, FileNotFoundError)


def _guarded(action) -> int:
    try:
        return int(action() or 0)
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt as err:
        # A sweep stopped by SIGINT/SIGTERM has written its table; it says how to resume.
        outcome = getattr(err, "outcome", None)
        print((outcome.next_step() if outcome is not None else None) or "interrupted",
              file=sys.stderr)
        return int(getattr(err, "exit_code", 130))
    except BrokenPipeError:
        # `sweeps table DIR | head`: the reader left; say nothing more (and not at exit either).
        sys.stdout = open(os.devnull, "w")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sweeps`` console command."""
    args = build_parser().parse_args(argv)
    return _guarded(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
