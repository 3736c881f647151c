"""``sweeps verify``: run configs on several seeds, write record folders (:mod:`sweeps.verify`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from golf.contract import SIZE_LIMIT_BYTES
from golf.presets import preset_names

from sweeps.results import ResultsError
from sweeps.spec import GPU_CHOICES, SCALE_NAMES
from sweeps.verify import (
    DEFAULT_RECORDS_DIR, DEFAULT_SEEDS, VerifyError, run_verification, verification_sweep,
)

_EPILOG = f"""\
what it writes (one folder per config, under --out):
  README.md          per-seed table, mean/std, compliance, significance, how to reproduce
  submission.json    the challenge's schema: seed_results, means, bytes_total, hardware, versions
  train_seed<N>.log  every seed's train log

compliance: every artifact <= {SIZE_LIMIT_BYTES:,} bytes; at full scale training <= 600 s and
evaluation <= 600 s. Violations are printed and stated in the README. Smoke-scale folders are
named and titled as smoke tests, never as records.

examples:
  sweeps verify --preset smoke --seeds 1337,42                      # pipeline check on CPU
  sweeps verify --preset baseline --scale full --set QAT_ENABLED=1 --set QUANT_FORMAT=int6 \\
                --seeds 1337,42,2024 --leaderboard leaderboard_10min.csv
  sweeps verify --from experiments/qat_vs_lawa --top 1 --seeds 1337,42,2024
"""


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``verify`` subcommand to a ``sweeps`` argument parser."""
    parser = subparsers.add_parser(
        "verify", help="run a config on several seeds and write a record folder for a PR",
        description="Run a verification batch: one config (--preset ... --set ...) or the best K "
                    "configs of an earlier sweep (--from DIR --top K), each on every seed, FIFO, "
                    "then write a record folder per config.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_argument_group("what to verify")
    what.add_argument("--preset", help=f"a golf preset: {', '.join(preset_names())}")
    what.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="config key for every seed (repeatable)")
    what.add_argument("--from", dest="source", metavar="DIR",
                      help="an experiment directory written by `sweeps run`")
    what.add_argument("--top", type=int, default=1, metavar="K",
                      help="with --from: verify the K configs with the lowest mean val_bpb (default 1)")
    what.add_argument("--seeds", default=DEFAULT_SEEDS, metavar="S1,S2,...",
                      help=f"seeds (default {DEFAULT_SEEDS})")
    what.add_argument("--scale", choices=SCALE_NAMES,
                      help="smoke or full (default: smoke for --preset; the source's for --from)")
    run = parser.add_argument_group("how to run it")
    run.add_argument("--storage", metavar="PATH_OR_URI",
                     help="experiments folder (default experiments/)")
    run.add_argument("--name", help="experiment name (default verify_<preset or source>_<scale>)")
    run.add_argument("--gpus-per-trial", type=int, choices=GPU_CHOICES, metavar="G",
                     help="GPUs per seed's run (default 8 at full scale, 0 at smoke)")
    run.add_argument("--max-concurrent", type=int, metavar="N", help="at most N seeds at once")
    run.add_argument("--max-failures", type=int, default=2, metavar="N",
                     help="retries of a failed seed (default 2; eval-only when its artifact exists)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--resume", dest="resume", action="store_const", const="resume", default="auto",
                      help="require an experiment to resume")
    mode.add_argument("--restart", dest="resume", action="store_const", const="restart",
                      help="move an existing experiment of this name aside and start over")
    run.add_argument("--dry-run", action="store_true", help="validate and list the runs only")
    run.add_argument("--verbose", action="store_true",
                     help="show Ray Tune's status tables instead of one line per trial event")
    out = parser.add_argument_group("the record folder")
    out.add_argument("--out", default=DEFAULT_RECORDS_DIR, metavar="DIR",
                     help=f"where record folders go (default {DEFAULT_RECORDS_DIR}/)")
    out.add_argument("--leaderboard", metavar="FILE.csv",
                     help="also test against this leaderboard's best row (the acceptance rule: "
                          "0.005 nats, p < 0.01, one-sided)")
    out.add_argument("--author", default="", help="author for submission.json")
    out.add_argument("--github-id", default="", help="GitHub id for submission.json")
    parser.set_defaults(func=_run_verify_command)


def _run_verify_command(args: argparse.Namespace) -> int:
    """Handler of ``sweeps verify``: run the batch, print each record folder and its compliance."""
    from sweeps.experiment import RunOptions

    argv = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "verify" else _rebuild_argv(args)
    try:
        sweep, scale = verification_sweep(
            preset=args.preset, source=args.source, top=args.top, seeds=args.seeds,
            overrides=args.overrides, scale=args.scale, name=args.name, max_failures=args.max_failures)
        options = RunOptions(scale=scale, storage=args.storage, name=sweep.name,
                             max_concurrent=args.max_concurrent, gpus_per_trial=args.gpus_per_trial,
                             resume=args.resume, dry_run=args.dry_run, verbose=args.verbose)
        verification = run_verification(
            sweep, options, out_dir=Path(args.out), leaderboard=args.leaderboard, author=args.author,
            github_id=args.github_id, command="sweeps verify " + " ".join(shlex.quote(a) for a in argv))
    except ResultsError as err:
        raise VerifyError(str(err)) from None
    if args.dry_run:
        return 0
    for folder, compliance in verification.records:
        print(f"\nrecord folder: {folder}")
        for line in compliance.violations:
            print(f"  VIOLATION: {line}")
        if compliance.ok:
            print("  compliance: every check passed")
    return 0 if verification.all_finished else 1


def _rebuild_argv(args: argparse.Namespace) -> list[str]:
    """The options as given (for the README), when not called from the console command."""
    argv: list[str] = []
    for option, value in (("--preset", args.preset), ("--from", args.source),
                          ("--top", args.top if args.source else None), ("--seeds", args.seeds),
                          ("--scale", args.scale), ("--name", args.name)):
        if value is not None:
            argv += [option, str(value)]
    for item in args.overrides:
        argv += ["--set", item]
    return argv
