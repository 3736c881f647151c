"""What does the sweep service cost per trial, over running the same torchrun command by hand?

Runs golf's smoke config N times by hand (``torchrun --standalone --nproc_per_node=1 -m
golf.train`` with the trial's environment, as ``trial.json``'s ``command`` says) and N times as
trials of one sweep (one trial at a time, the same seeds), on this machine, and prints:

* hand-run wall time per run (half of the runs before the service batch, half after, so drift
  in a shared machine's load affects both sides alike);
* service wall time per trial in steady state (first trial's start to last trial's end, / N:
  each trial's time inside the trainable plus the service's gap between trials), and all-in
  (``Tuner.fit()`` time / N, which adds what a sweep pays once: Tune's start, the first worker);
* the differences and ratios, the one-off cost per sweep, and of starting a local Ray.

``--rounds R`` repeats hand runs / sweep / hand runs R times and prints each figure's median and
range over the rounds, so a shared machine's noise shows.

    python benchmarks/service_overhead.py                                   # 12 s runs, 3 each
    python benchmarks/service_overhead.py --iterations 250 --repeats 3 --rounds 3   # ~60 s runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone that is not installed

from sweeps.experiment import RunOptions, run_sweep  # noqa: E402
from sweeps.spec import Sweep  # noqa: E402
from sweeps.trial import demo_root  # noqa: E402

SEED_BASE = 1000


def hand_run(seed: int, iterations: int | None, data: dict[str, str], workdir: Path) -> float:
    """One plain torchrun of golf at smoke scale; returns its wall time in seconds."""
    run_dir = workdir / f"hand_seed{seed}_{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLF_", "RAY_"))}
    env.update(GOLF_PRESET="baseline", GOLF_SCALE="smoke", SEED=str(seed), RUN_DIR=str(run_dir),
               LOG_TO_FILE="0", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", **data)
    if iterations is not None:
        env["ITERATIONS"] = str(iterations)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=1", "-m", "golf.train"], env=env, cwd=workdir,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"hand run failed (seed {seed}):\n{done.stderr[-3000:]}")
    return wall


def service_runs(name: str, seeds: list[int], iterations: int | None,
                 workdir: Path) -> dict[str, float]:
    """The same runs as one sweep, one trial at a time (Ray already started); seconds.

    ``steady_s``: from the first trial's start to the last one's end inside the trainable, per
    trial: each trial's own time plus the gap the service leaves between trials. ``fit_s`` adds
    what a sweep pays once (Tune's start, the first worker, the last result's processing).
    """
    fixed = {"ITERATIONS": iterations} if iterations is not None else {}
    sweep = Sweep(name=name, preset="baseline", seeds=seeds, fixed=fixed, max_failures=0)
    with open(os.devnull, "w") as quiet:
        outcome = run_sweep(sweep, RunOptions(storage=str(workdir / "experiments"), max_concurrent=1,
                                                 verbose=0),
                            out=quiet)
    if not outcome.all_finished:
        raise SystemExit(f"a service trial failed; see {outcome.experiment_dir}")
    spans = []
    for trial_dir in outcome.table["trial_dir"]:
        record = json.loads(Path(trial_dir, "trial.json").read_text())
        spans.append(tuple(dt.datetime.fromisoformat(record[k]) for k in ("started_at", "ended_at")))
    inside = [(ended - began).total_seconds() for began, ended in spans]
    steady = (max(e for _, e in spans) - min(b for b, _ in spans)).total_seconds() / len(spans)
    return {"fit_s": outcome.wall_s or math.nan, "steady_s": steady,
            "inside_mean_s": statistics.fmean(inside)}


def _spread(values: list[float], digits: int = 3) -> str:
    """``median (min-max)``."""
    return (f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-"
            f"{max(values):.{digits}f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs on each side per round (default 3)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of hand runs, a sweep, hand runs (default 1)")
    parser.add_argument("--iterations", type=int,
                        help="ITERATIONS (default: the smoke preset's 40, about 12 s a run on 2 "
                             "cores; 250 makes a run of about 60 s)")
    args = parser.parse_args()
    if args.repeats < 1 or args.rounds < 1:
        parser.error("--repeats and --rounds must be at least 1")
    import ray
    from golf.corpus import build_demo

    demo = build_demo(demo_root(), quiet=True)
    data = {"DATA_PATH": str(demo.data_path), "TOKENIZER_PATH": str(demo.tokenizer_path)}
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    rounds = []
    try:
        with tempfile.TemporaryDirectory(prefix="service_overhead_") as tmp:
            workdir = Path(tmp)
            for number in range(args.rounds):
                seeds = [SEED_BASE + number * args.repeats + i for i in range(args.repeats)]
                before = (args.repeats + 1) // 2
                hand = [hand_run(seed, args.iterations, data, workdir) for seed in seeds[:before]]
                service = service_runs(f"overhead{number}", seeds, args.iterations, workdir)
                hand += [hand_run(seed, args.iterations, data, workdir) for seed in seeds[before:]]
                rounds.append({"hand": hand, **service})
                hand_mean = statistics.fmean(hand)
                print(f"round {number + 1}: hand {', '.join(f'{h:.2f}' for h in hand)} s; service "
                      f"steady {service['steady_s']:.2f} s/trial (inside {service['inside_mean_s']:.2f}),"
                      f" fit {service['fit_s']:.2f} s; ratio steady {service['steady_s'] / hand_mean:.3f}"
                      f", all-in {service['fit_s'] / args.repeats / hand_mean:.3f}", flush=True)
    finally:
        ray.shutdown()

    n = args.repeats
    hand_means = [statistics.fmean(r["hand"]) for r in rounds]
    steady = [r["steady_s"] for r in rounds]
    allin = [r["fit_s"] / n for r in rounds]
    print(f"golf smoke config{'' if args.iterations is None else f', ITERATIONS={args.iterations}'}, "
          f"1 CPU process per run, {n} run(s) per side in each of {args.rounds} round(s), one at a "
          f"time, on {os.cpu_count()} cores; median (min-max) over rounds")
    print(f"hand-run torchrun wall per run:          {_spread(hand_means, 2)} s")
    print(f"service per trial, steady (first start to last end / N): {_spread(steady, 2)} s")
    print(f"  of which inside the trainable:         "
          f"{_spread([r['inside_mean_s'] for r in rounds], 2)} s")
    print(f"service per trial, all-in (fit / N):     {_spread(allin, 2)} s")
    print(f"difference per trial, steady:            "
          f"{_spread([s - h for s, h in zip(steady, hand_means)], 2)} s")
    print(f"ratio service / hand, steady:            "
          f"{_spread([s / h for s, h in zip(steady, hand_means)])}")
    print(f"ratio service / hand, all-in (N={n}):     "
          f"{_spread([a / h for a, h in zip(allin, hand_means)])}")
    print(f"one-off per sweep (fit - N x steady):    "
          f"{_spread([r['fit_s'] - n * r['steady_s'] for r in rounds], 2)} s")
    print(f"one-off: starting a local Ray:           {ray_start:.2f} s")


if __name__ == "__main__":
    main()
