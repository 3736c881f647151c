"""Experiments on Ray: GPU placement on simulated 8-GPU nodes, a driver killed outright (no
process survives it, and the experiment resumes), and the resume/restart rules.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.experiment import RunOptions, _decide_resume, experiment_location, run_sweep
from sweeps.launcher import child_pids, pid_alive, wait_until_gone
from sweeps.results import ExperimentStore, load_results
from sweeps.spec import SpecError, Sweep, plan_sweep

FAKE_SCRIPT = Path(__file__).resolve().parent / "data" / "sweeps" / "fake_train_gpt.py"
RANK_ENV = re.compile(r"rank_env: rank:(\d+) local_rank:(\d+) world_size:(\d+) cuda_visible_devices:(\S*)")


def fake_sweep(name: str, **fields) -> Sweep:
    return Sweep(name=name, script=str(FAKE_SCRIPT), uses_data=False, max_failures=0, **fields)


def _interval(record: dict) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.fromisoformat(record["started_at"]), dt.datetime.fromisoformat(record["ended_at"])


def _records(experiment_dir: str) -> list[dict]:
    return [json.loads(p.read_text()) | {"trial_dir": str(p.parent)}
            for p in sorted(Path(experiment_dir).glob("*/trial.json"))]


@pytest.fixture(scope="module")
def gpu_cluster():
    """A CPU-only head and two nodes of 8 fake GPUs each (Ray only books the numbers)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=8, num_gpus=8)
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_whole_node_trials_two_at_once_and_a_third_waits(gpu_cluster, tmp_path):
    sweep = fake_sweep("nodes", gpus_per_trial=8, seeds=[1, 2, 3],
                       fixed={"ITERATIONS": 10, "STEP_SECONDS": 0.15})
    outcome = run_sweep(sweep, RunOptions(scale="full", storage=str(tmp_path)))
    assert outcome.all_finished
    records = sorted(_records(outcome.experiment_dir), key=lambda r: r["started_at"])
    assert len(records) == 3
    for record in records:
        ranks = RANK_ENV.findall(Path(record["trial_dir"], "train.log").read_text())
        assert sorted(int(local) for _, local, _, _ in ranks) == list(range(8))
        assert {world for _, _, world, _ in ranks} == {"8"}
        # every rank sees the trial's whole node: Ray's mask, passed through untouched
        assert {cvd for _, _, _, cvd in ranks} == {",".join(map(str, range(8)))}
        assert record["nproc"] == 8 and sorted(record["gpu_ids"], key=int) == [str(i) for i in range(8)]
    first, second, third = records
    (s1, e1), (s2, e2), (s3, _) = (_interval(r) for r in records)
    assert s2 < e1 and s1 < e2, "the first two trials ran at the same time"
    assert first["node_id"] != second["node_id"], "on different nodes"
    assert s3 >= min(e1, e2), "the third waited for a node to free up"
    assert third["node_id"] in (first["node_id"], second["node_id"])
    head = gpu_cluster.head_node.node_id
    assert head not in {r["node_id"] for r in records}, "nothing ran on the CPU-only head"


@pytest.mark.slow
def test_packed_trials_on_a_node_see_disjoint_gpus(gpu_cluster, tmp_path):
    sweep = fake_sweep("packed", gpus_per_trial=2, cpus_per_trial=1, seeds=list(range(8)),
                       fixed={"ITERATIONS": 10, "STEP_SECONDS": 0.2})
    outcome = run_sweep(sweep, RunOptions(scale="full", storage=str(tmp_path)))
    assert outcome.all_finished
    records = _records(outcome.experiment_dir)
    seen = {}
    for record in records:
        ranks = RANK_ENV.findall(Path(record["trial_dir"], "train.log").read_text())
        masks = {cvd for _, _, _, cvd in ranks}
        assert len(ranks) == 2 and len(masks) == 1
        mask = masks.pop()
        assert mask == record["cuda_visible_devices"] and len(mask.split(",")) == 2
        seen[record["trial_id"]] = (record, set(mask.split(",")))
    overlapping = 0
    items = list(seen.values())
    for i, (a, gpus_a) in enumerate(items):
        for b, gpus_b in items[i + 1:]:
            (sa, ea), (sb, eb) = _interval(a), _interval(b)
            if a["node_id"] == b["node_id"] and sa < eb and sb < ea:
                overlapping += 1
                assert not gpus_a & gpus_b, f"trials {a['trial_id']} and {b['trial_id']} shared GPUs"
    assert overlapping > 0, "no two trials shared a node at the same time; the check proved nothing"


def test_resume_rules(tmp_path):
    sweep = fake_sweep("rules", configs=[{"LR": 0.1}], seeds=[1])
    plan = plan_sweep(sweep)
    location = experiment_location(plan, RunOptions(storage=str(tmp_path)))
    store = ExperimentStore(location)
    out = open(os.devnull, "w")
    assert _decide_resume(plan, store, "auto", out) is False  # nothing there: start
    with pytest.raises(SpecError, match="nothing to resume"):
        _decide_resume(plan, store, "resume", out)
    Path(location).mkdir(parents=True)
    Path(location, "stray_trial").mkdir()
    with pytest.raises(SpecError, match="no experiment Tune can resume"):
        _decide_resume(plan, store, "auto", out)
    assert _decide_resume(plan, store, "restart", out) is False
    assert not Path(location).exists()
    assert len(list(tmp_path.glob("rules.before-restart-*"))) == 1
    with pytest.raises(SpecError, match="--name"):
        experiment_location(plan, RunOptions(name="a b"))


DRIVER = """\
import sys
from sweeps import RunOptions, Sweep, run_sweep
sweep = Sweep(name="killed", script=sys.argv[1], uses_data=False, cpu_procs=2, seeds=[1],
              configs=[{"LR": 0.1}, {"LR": 0.2}],
              fixed={"ITERATIONS": 6, "STEP_SECONDS": 0.05, "PID_DIR": sys.argv[3]})
outcome = run_sweep(sweep, RunOptions(storage=sys.argv[2], max_concurrent=1))
sys.exit(0 if outcome.all_finished else 1)
"""


@pytest.mark.slow
def test_a_killed_driver_leaves_no_process_and_the_experiment_resumes(tmp_path):
    """SIGKILL the driver (it started its own local Ray) while a trial's ranks sit silent."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    pids, storage = tmp_path / "pids", tmp_path / "experiments"
    pids.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    argv = [sys.executable, str(driver), str(FAKE_SCRIPT), str(storage), str(pids)]
    # SILENT_AFTER reaches the ranks through the local Ray's environment, not through the sweep,
    # so the second run is the same sweep and resumes it.
    first = subprocess.Popen(argv, env={**env, "SILENT_AFTER": "1"}, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ray_tree: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(list(pids.glob("rank*.pid"))) < 2:
            assert first.poll() is None, "the driver ended before its trial started"
            assert time.monotonic() < deadline, "the trial's ranks never started"
            time.sleep(0.2)
        time.sleep(1.0)  # the ranks are now silent, each blocked in its sleep
        ranks = [int(p.read_text()) for p in pids.glob("rank*.pid")]
        ray_tree = child_pids(first.pid)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert wait_until_gone(ranks, timeout_s=30) == [], "rank processes outlived the driver"
    finally:
        # Ray's own node processes that the dead driver started are ours to clean up.
        for pid in ray_tree:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)

    table = load_results(storage / "killed")
    # trial.json still says RUNNING, but its driver is dead: the table does not pretend it runs.
    assert list(table["status"]) == ["UNKNOWN"]
    second = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming the experiment" in second.stdout
    assert "Failed to fetch metrics" not in second.stdout + second.stderr
    table = load_results(storage / "killed")
    assert list(table["status"]) == ["TERMINATED", "TERMINATED"]
    attempts = {row.label: row.attempt for row in table.itertuples()}
    assert attempts == {"LR=0.1": 2, "LR=0.2": 1}
    killed_dir = Path(table.iloc[0]["trial_dir"])
    assert (killed_dir / "train.log.attempt1").is_file()  # the first attempt's log is kept
