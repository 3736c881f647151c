"""CPU ranks size torch's thread pool (issue 7, defect 10): golf.distributed.init_distributed.

Real processes: ranks started the way torchrun and other launchers start them (RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE, a gloo rendezvous), each reporting the thread count torch really uses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from golf.distributed import _cgroup_cpu_limit, pick_cpu_threads, usable_cpus

REPO_ROOT = Path(__file__).resolve().parents[1]

_RANK = (
    "import json, torch\n"
    "from golf.distributed import init_distributed, shutdown\n"
    "ctx = init_distributed('cpu')\n"
    "print(json.dumps({'rank': ctx.rank, 'threads': torch.get_num_threads(),\n"
    "                  'line': ctx.cpu_threads.log_line}), flush=True)\n"
    "shutdown(together=True)\n"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ranks(world_size: int, **extra: str) -> list[dict]:
    """Start ``world_size`` ranks of one job on this machine; each reports its thread count."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(PYTHONPATH=str(REPO_ROOT), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size), **extra)
    procs = [subprocess.Popen([sys.executable, "-c", _RANK], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world_size)]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def test_ranks_share_the_cores_instead_of_each_taking_all_of_them():
    cpus = usable_cpus()
    reports = _ranks(2)
    expected = max(1, cpus // 2)
    for report in reports:
        assert report["threads"] == expected
        assert report["line"] == f"cpu_threads:{expected} ({cpus} core{'s' if cpus != 1 else ''} / 2 ranks)"


def test_an_explicit_omp_num_threads_is_respected():
    (report,) = _ranks(1, OMP_NUM_THREADS="1")
    assert report["threads"] == 1 and report["line"] == "cpu_threads:1 (OMP_NUM_THREADS=1)"


def test_pick_cpu_threads_rules():
    assert pick_cpu_threads({}, 2, cpus=16).count == 8
    assert pick_cpu_threads({}, 3, cpus=2).count == 1  # never 0
    assert pick_cpu_threads({"OMP_NUM_THREADS": "3"}, 8, cpus=2).count == 3
    odd = pick_cpu_threads({"OMP_NUM_THREADS": "lots"}, 1, cpus=4)
    assert odd.count == 4 and "OMP_NUM_THREADS='lots' is not a whole number" in odd.reason
    assert pick_cpu_threads({}, 1, cpus=1).log_line == "cpu_threads:1 (1 core / 1 rank)"


def test_a_container_cpu_quota_caps_the_count(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_cpu_limit(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_cpu_limit(tmp_path) == 4
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_cpu_limit(tmp_path) is None


@pytest.mark.slow
def test_golf_train_logs_its_thread_count(tmp_path, demo_data):
    """`python -m golf.train` on CPU, without OMP_NUM_THREADS: cores / 1 rank, in train.log."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
           and not k.startswith(("GOLF_", "QAT", "LAWA"))}
    env.update(PYTHONPATH=str(REPO_ROOT), GOLF_PRESET="smoke", DATA_PATH=str(demo_data.data_path),
               TOKENIZER_PATH=str(demo_data.tokenizer_path), RUN_DIR=str(tmp_path / "run"), ITERATIONS="1",
               VAL_LOSS_EVERY="0", WARMUP_STEPS="0")
    proc = subprocess.run([sys.executable, "-m", "golf.train"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    cpus = usable_cpus()
    expected = f"cpu_threads:{cpus} ({cpus} core{'s' if cpus != 1 else ''} / 1 rank)"
    assert expected in (tmp_path / "run" / "train.log").read_text().splitlines()
