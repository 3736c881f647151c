"""Replay sequential seed allocation on the real per-seed results of the challenge's records.

Usage: ``python benchmarks/sequential_seeds.py [--fixtures DIR] [--test paired|welch]
[--window N] [--split obrien-fleming|equal]`` (fixtures default: ../shared/fixtures)

Construction (fixed before looking at any outcome):

* records: every ``submissions/*.json`` fixture that reports >= 3 per-seed val_bpb values outside
  the non-record track, in date order (file name); each contributes its first 3 values, in the
  order the file lists them. Records ran different seed numbers, so "seed i" of two records is
  their i-th value: independent runs, which the paired test may pair in any fixed order.
* sweeps: each record in turn is the baseline, and the configs are its neighbours, the 2 records
  before and the 2 after it in date order (``--window``): close calls, like a competitor's
  candidates around the current best. ``--construction all`` makes every other record a config
  instead (mostly easy calls), printed as a second view.
* the rule: ``Sequential(seeds=3 positions, min_seeds=2, test, margin 0, alpha 0.01,
  futility_alpha 0.01, prior_sd PRIOR_SEED_SD_BPB, split "obrien-fleming")``, the defaults, the
  same for every sweep. Said plainly: the O'Brien-Fleming split and the curtailment (stop once
  no remaining values could make the full grid's test significant) were added after a first
  replay with equal alpha shares and no curtailment (``--split equal`` still prints the split's
  part) disagreed with the full grid 6 times out of 86 (paired) and saved 20%; neither change
  was fitted to a case.
* the full grid: every config and the baseline run all 3 seeds, and a config is better when the
  same test at the same alpha (0.01, margin 0) says so on them.
* trial-hours per seed: the record's ``train_time_s + eval_time_s`` for that seed when both are
  given, else 20 minutes (a 10-minute training cap plus evaluation and start-up).

Prints the trial-hours of the full grid and of the sequential rule, the % saved, how many
decisions agree with the full grid's, and every disagreeing case.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sweeps.sequential import BETTER, Sequential, full_grid_better, replay  # noqa: E402
from sweeps.submissions import SubmissionError, load_submission  # noqa: E402

SEEDS = 3
DEFAULT_TRIAL_HOURS = 20 / 60


@dataclass(frozen=True)
class Record:
    name: str
    values: tuple[float, ...]
    hours: tuple[float, ...]  # trial-hours per seed


def load_records(fixtures: Path) -> list[Record]:
    """Records with >= SEEDS per-seed val_bpb values (non-record track left out), date order."""
    records = []
    for path in sorted((fixtures / "submissions").glob("*.json")):
        submission = load_submission(path)
        if submission.track and "non_record" in submission.track:
            continue
        try:
            values = submission.per_seed_values("bpb")
        except SubmissionError:
            continue
        if len(values) < SEEDS:
            continue
        hours = tuple(
            (r.train_time_s + r.eval_time_s) / 3600
            if r.train_time_s is not None and r.eval_time_s is not None else DEFAULT_TRIAL_HOURS
            for r in submission.per_seed[:SEEDS])
        records.append(Record(path.stem, tuple(values[:SEEDS]), hours))
    return records


@dataclass
class Tally:
    full_hours: float = 0.0
    sequential_hours: float = 0.0
    decisions: int = 0
    agree: int = 0
    better_full: int = 0
    better_sequential: int = 0
    disagreements: list[str] | None = None
    seeds_used: dict[int, int] | None = None


def run(records: list[Record], rule: Sequential, construction: str, window: int) -> Tally:
    tally = Tally(disagreements=[], seeds_used={})
    for index, base in enumerate(records):
        if construction == "all":
            others = [r for r in records if r is not base]
        else:
            others = [records[j] for j in range(max(0, index - window),
                                                 min(len(records), index + window + 1))
                      if j != index]
        decided, base_seeds = replay(rule, {r.name: r.values for r in others}, base.values)
        tally.full_hours += sum(base.hours) + sum(sum(r.hours) for r in others)
        tally.sequential_hours += sum(base.hours[:base_seeds])
        for other in others:
            decision = decided[other.name]
            used = len(decision.seeds)
            tally.seeds_used[used] = tally.seeds_used.get(used, 0) + 1
            tally.sequential_hours += sum(other.hours[:used])
            full = full_grid_better(rule, other.values, base.values)
            mine = decision.state == BETTER
            tally.decisions += 1
            tally.better_full += full
            tally.better_sequential += mine
            if full == mine:
                tally.agree += 1
            else:
                tally.disagreements.append(
                    f"{other.name} vs baseline {base.name}: full grid "
                    f"{'better' if full else 'not better'}, sequential {decision.reason}")
    return tally


def report(tally: Tally, title: str) -> str:
    saved = 1 - tally.sequential_hours / tally.full_hours
    lines = [
        title,
        f"  trial-hours: full grid {tally.full_hours:.1f}, sequential {tally.sequential_hours:.1f}"
        f" ({saved:.1%} saved)",
        f"  decisions agreeing with the full grid: {tally.agree}/{tally.decisions} "
        f"({tally.agree / tally.decisions:.1%}); better: full grid {tally.better_full}, "
        f"sequential {tally.better_sequential}",
        "  configs by seeds run: " + ", ".join(
            f"{n} seed(s): {count}" for n, count in sorted((tally.seeds_used or {}).items())),
    ]
    for case in tally.disagreements or []:
        lines.append(f"  disagrees: {case}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixtures", default=str(ROOT.parent / "shared" / "fixtures"))
    parser.add_argument("--test", choices=("paired", "welch"), default=None,
                        help="one test (default: both)")
    parser.add_argument("--window", type=int, default=2, help="neighbours on each side")
    parser.add_argument("--split", choices=("obrien-fleming", "equal"), default="obrien-fleming")
    args = parser.parse_args(argv)
    fixtures = Path(args.fixtures)
    if not (fixtures / "submissions").is_dir():
        print(f"error: no {fixtures}/submissions: pass --fixtures PATH to the challenge fixtures",
              file=sys.stderr)
        return 2
    records = load_records(fixtures)
    print(f"{len(records)} records with >= {SEEDS} per-seed val_bpb values; {SEEDS} seeds each")
    for test in ([args.test] if args.test else ["paired", "welch"]):
        rule = Sequential(seeds=tuple(range(1, SEEDS + 1)), test=test, split=args.split)
        print(rule.describe())
        for construction in ("neighbours", "all"):
            what = (f"each record the baseline, its {args.window} neighbours on each side the "
                    "configs" if construction == "neighbours" else
                    "each record the baseline, every other record a config")
            print(report(run(records, rule, construction, args.window),
                         f"{test}, {construction} ({what}):"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
