"""How much does the sweep service cost per trial when a sweep is large?

Plans and schedules a grid of N trials (default 1,000) on a simulated cluster of 8-GPU nodes
(``ray.cluster_utils.Cluster``: one raylet per node on this host, GPUs as fake resources, a
CPU-only head) through the real service, ``sweeps.experiment.run_sweep``: every trial is a whole
node (``gpus_per_trial=8``) running ``torchrun --standalone --nproc_per_node=8`` of a trivial
trainer that prints a challenge-format final line and exits. It prints:

* planning time (``plan_sweep``: validating and expanding the grid);
* cluster start time (one-off, not the service's);
* ``Tuner.fit()`` wall time and how many nodes ran trials;
* the time inside the trainable per trial (``trial.json``'s started_at -> ended_at: launching,
  streaming and waiting for torchrun);
* how long a node sits idle between one trial's end and the next one's start on it;
* the scheduler's overhead per trial = (fit wall x nodes that ran trials - the time inside all
  trainables) / trials: the node-seconds during the sweep in which no trial's own code ran
  (Tune's start, actor and placement-group start, results processing, the driver's callbacks,
  the table), per trial. It is "fit wall / trials x concurrency - time inside", with the
  concurrency measured: when trials end faster than Tune starts workers on more nodes, fewer
  nodes take part. The goal is below 0.5 s per trial.

The trainer is trivial but torchrun is real, so on a machine with few cores the torchrun
agents (each imports torch) and their 8 ranks compete for CPU with the raylets; the inside time
shows that part. ``--launch direct`` runs the trainer without torchrun (one process, the rest of
the trial unchanged) to measure the scheduler alone on such a machine.

    python benchmarks/scheduling_scale.py                       # 1,000 trials on 16 nodes
    python benchmarks/scheduling_scale.py --trials 64 --nodes 4 # a quick try
    python benchmarks/scheduling_scale.py --trials 64 --nodes 4 --profile driver.prof
    python benchmarks/scheduling_scale.py --launch direct           # 2 cores: the scheduler alone
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a clone that is not installed

from sweeps.experiment import RunOptions, run_sweep  # noqa: E402
from sweeps.spec import Sweep, plan_sweep  # noqa: E402
from sweeps.trial import code_root  # noqa: E402

GPUS_PER_NODE = 8
# What a trial must print for the service to take its numbers from the log (a script trial).
TRAINER = '''\
import os
if os.environ.get("RANK", "0") == "0":
    print("step:1/1 val_loss:2.00000000 val_bpb:1.20000000 train_time:1ms step_avg:1.00ms")
    print("final_int8_zlib_roundtrip_exact val_loss:2.00000000 val_bpb:1.20000000", flush=True)
'''


def scale_sweep(trainer: Path, trials: int) -> Sweep:
    """``trials`` configs of one seed, each a whole 8-GPU node running the trivial trainer."""
    return Sweep(name="scale", script=str(trainer), script_keys={"TRIAL_INDEX": int},
                 grid={"TRIAL_INDEX": list(range(trials))}, seeds=[1337],
                 gpus_per_trial=GPUS_PER_NODE, cpus_per_trial=1, uses_data=False, max_failures=0)


def _launch_without_torchrun() -> None:
    """Ray worker setup hook (``--launch direct``): trials run ``python SCRIPT`` as one process.

    Everything else in the trial (environment, streaming, parsing, reports, trial.json) is the
    service's own code; only torchrun's start-up (importing torch: about 2 CPU-seconds a trial,
    which a hand-run torchrun pays as well) and its 8 ranks are left out, so that a machine with
    few cores measures the scheduler rather than torchrun.
    """
    import sys as _sys

    import sweeps.trial

    def direct_argv(program, nproc, *, python=None):  # noqa: ANN001, ANN202 - torchrun_argv's
        return [python or _sys.executable, *program.rank_argv()]

    sweeps.trial.torchrun_argv = direct_argv


def start_cluster(nodes: int, cpus_per_node: float, direct: bool) -> tuple[object, float]:
    """A CPU-only head and ``nodes`` fake 8-GPU nodes; the driver connects. Returns (cluster, s)."""
    import ray
    from ray.cluster_utils import Cluster

    start = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0,
                                                             "include_dashboard": False})
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus_per_node, num_gpus=GPUS_PER_NODE)
    # Workers import this checkout's sweeps (as connect_ray arranges for a local Ray).
    runtime_env: dict[str, object] = {"env_vars": {"PYTHONPATH": str(code_root())}}
    if direct:
        runtime_env["worker_process_setup_hook"] = _launch_without_torchrun
    ray.init(address=cluster.address, log_to_driver=False, runtime_env=runtime_env)
    cluster.wait_for_nodes()
    return cluster, time.perf_counter() - start


def trial_spans(table: object) -> list[dict[str, object]]:
    """Each trial's node, start and end inside the trainable, from its trial.json."""
    spans = []
    for trial_dir in table["trial_dir"]:  # type: ignore[index]
        record = json.loads(Path(trial_dir, "trial.json").read_text())
        began, ended = (dt.datetime.fromisoformat(record[k]) for k in ("started_at", "ended_at"))
        spans.append({"node": record.get("node_id"), "start": began, "end": ended,
                      "inside_s": (ended - began).total_seconds()})
    return spans


def node_gaps(spans: list[dict[str, object]]) -> list[float]:
    """Seconds each node sat between one trial's end and the next trial's start on it."""
    by_node: dict[object, list[dict[str, object]]] = {}
    for span in spans:
        by_node.setdefault(span["node"], []).append(span)
    gaps = []
    for runs in by_node.values():
        runs.sort(key=lambda span: span["start"])  # type: ignore[arg-type,return-value]
        gaps += [(later["start"] - earlier["end"]).total_seconds()  # type: ignore[operator]
                 for earlier, later in zip(runs, runs[1:])]
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials in the grid (default 1000)")
    parser.add_argument("--nodes", type=int, default=16, help="simulated 8-GPU nodes (default 16)")
    parser.add_argument("--cpus-per-node", type=float, default=1,
                        help="CPUs each simulated node declares (default 1; a trial asks for 1)")
    parser.add_argument("--launch", choices=("torchrun", "direct"), default="torchrun",
                        help="torchrun: as the service runs every trial (default); direct: "
                             "python SCRIPT, without torchrun's start-up (few cores)")
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the driver's fit() into FILE and print its top functions")
    parser.add_argument("--storage", help="experiment storage (default: a temporary folder)")
    args = parser.parse_args()
    if args.trials < 1 or args.nodes < 1:
        parser.error("--trials and --nodes must be at least 1")
    if args.cpus_per_node < 1:
        parser.error("--cpus-per-node must be at least 1: each trial asks for 1 CPU")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import ray

    with tempfile.TemporaryDirectory(prefix="scheduling_scale_") as tmp:
        trainer = Path(tmp) / "trivial_train.py"
        trainer.write_text(TRAINER)
        sweep = scale_sweep(trainer, args.trials)
        start = time.perf_counter()
        plan = plan_sweep(sweep, scale="full")
        plan_s = time.perf_counter() - start

        cluster, cluster_s = start_cluster(args.nodes, args.cpus_per_node, args.launch == "direct")
        storage = args.storage or str(Path(tmp) / "experiments")
        profiler = cProfile.Profile() if args.profile else None
        log = Path(tmp) / "sweep.out"
        try:
            with open(log, "w") as out:
                if profiler is not None:
                    profiler.enable()
                outcome = run_sweep(sweep, RunOptions(scale="full", storage=storage), out=out)
                if profiler is not None:
                    profiler.disable()
        finally:
            ray.shutdown()
            cluster.shutdown()  # type: ignore[attr-defined]
        table = outcome.table
        done = int((table["status"] == "TERMINATED").sum())
        if done != args.trials:
            tail = log.read_text().splitlines()[-20:]
            raise SystemExit(f"only {done} of {args.trials} trials finished; the sweep said:\n"
                             + "\n".join(tail))
        spans = trial_spans(table)

    fit_s = outcome.wall_s or float("nan")
    inside = [float(span["inside_s"]) for span in spans]  # type: ignore[arg-type]
    used = len({span["node"] for span in spans})
    gaps = sorted(node_gaps(spans)) or [float("nan")]
    overhead_s = (fit_s * used - sum(inside)) / args.trials
    launch = ("torchrun --nproc_per_node=8" if args.launch == "torchrun"
              else "python SCRIPT (no torchrun)")
    print(f"{args.trials} trials (1 per 8-GPU node) on {args.nodes} simulated nodes, "
          f"{os.cpu_count()} cores on this machine; each trial runs {launch}")
    print(f"planning (plan_sweep):                {plan_s:8.2f} s  ({len(plan.trials)} trials)")
    print(f"cluster start (one-off):              {cluster_s:8.2f} s")
    print(f"fit wall time:                        {fit_s:8.2f} s  ({used} node(s) ran trials)")
    print(f"inside the trainable per trial:       {statistics.median(inside):8.2f} s median "
          f"(mean {statistics.fmean(inside):.2f}, max {max(inside):.2f})")
    print(f"node idle between trials:             {statistics.median(gaps):8.2f} s median "
          f"(90th percentile {gaps[int(0.9 * (len(gaps) - 1))]:.2f}, max {gaps[-1]:.2f})")
    print(f"scheduler overhead per trial:         {overhead_s:8.2f} s  = (fit x nodes used - time "
          "inside trainables) / trials: node-seconds not running a trial, Tune's start included; "
          "goal < 0.5 s")
    if profiler is not None:
        profiler.dump_stats(args.profile)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
        print(text.getvalue())


if __name__ == "__main__":
    main()
