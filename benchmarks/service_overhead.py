"""What does the sweep service cost per trial, over running the same torchrun command by hand?

Runs golf's smoke config N times by hand (``torchrun --standalone --nproc_per_node=1 -m
golf.train`` with the trial's environment, as ``trial.json``'s ``command`` says) and N times as
trials of one sweep (one trial at a time, the same seeds), on this machine, and prints:

* hand-run wall time per run (half of the runs before the service batch, half after, so drift
  in a shared machine's load affects both sides alike);
* service wall time per trial: ``Tuner.fit()`` time / N, and the time inside the trainable;
* the difference and the ratio, and the one-off cost of starting a local Ray.

    python benchmarks/service_overhead.py             # 3 repetitions
    python benchmarks/service_overhead.py --repeats 5 --iterations 20
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


def service_runs(seeds: list[int], iterations: int | None, workdir: Path) -> dict[str, float]:
    """The same runs as one sweep, one trial at a time; timings in seconds."""
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    fixed = {"ITERATIONS": iterations} if iterations is not None else {}
    sweep = Sweep(name="overhead", preset="baseline", seeds=seeds, fixed=fixed, max_failures=0)
    with open(os.devnull, "w") as quiet:
        outcome = run_sweep(sweep, RunOptions(storage=str(workdir / "experiments"), max_concurrent=1,
                                                 verbose=0),
                            out=quiet)
    ray.shutdown()
    if not outcome.all_finished:
        raise SystemExit(f"a service trial failed; see {outcome.experiment_dir}")
    inside = []
    for trial_dir in outcome.table["trial_dir"]:
        record = json.loads(Path(trial_dir, "trial.json").read_text())
        began, ended = (dt.datetime.fromisoformat(record[k]) for k in ("started_at", "ended_at"))
        inside.append((ended - began).total_seconds())
    return {"ray_start_s": ray_start, "fit_s": outcome.wall_s or math.nan,
            "inside_mean_s": statistics.fmean(inside)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs on each side (default 3)")
    parser.add_argument("--iterations", type=int, help="ITERATIONS (default: the smoke preset's)")
    args = parser.parse_args()
    from golf.corpus import build_demo

    demo = build_demo(demo_root(), quiet=True)
    data = {"DATA_PATH": str(demo.data_path), "TOKENIZER_PATH": str(demo.tokenizer_path)}
    seeds = [SEED_BASE + i for i in range(args.repeats)]
    with tempfile.TemporaryDirectory(prefix="service_overhead_") as tmp:
        workdir = Path(tmp)
        before = (args.repeats + 1) // 2
        hand = [hand_run(seed, args.iterations, data, workdir) for seed in seeds[:before]]
        service = service_runs(seeds, args.iterations, workdir)
        hand += [hand_run(seed, args.iterations, data, workdir) for seed in seeds[before:]]

    hand_mean = statistics.fmean(hand)
    hand_sd = statistics.stdev(hand) if len(hand) > 1 else math.nan
    per_trial = service["fit_s"] / args.repeats
    print(f"golf smoke config{'' if args.iterations is None else f', ITERATIONS={args.iterations}'}, "
          f"1 CPU process per run, {args.repeats} run(s) per side, one at a time, on "
          f"{os.cpu_count()} cores")
    print(f"hand-run torchrun wall per run:       {hand_mean:7.2f} s (sd {hand_sd:.2f}; "
          f"runs: {', '.join(f'{h:.2f}' for h in hand)})")
    print(f"service wall per trial (fit / N):     {per_trial:7.2f} s (fit {service['fit_s']:.2f} s)")
    print(f"  of which inside the trainable:      {service['inside_mean_s']:7.2f} s")
    print(f"difference per trial:                 {per_trial - hand_mean:+7.2f} s")
    print(f"ratio service / hand:                 {per_trial / hand_mean:7.3f}")
    print(f"one-off: starting a local Ray:        {service['ray_start_s']:7.2f} s")


if __name__ == "__main__":
    main()
