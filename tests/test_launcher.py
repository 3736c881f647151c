"""The torchrun launcher and its rank wrapper: commands, streaming, and no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.launcher import (
    RANKWRAP, Program, TorchrunProcess, child_pids, pid_alive, reproduce_command, torchrun_argv,
    wait_until_gone,
)

FAKE_SCRIPT = Path(__file__).resolve().parent / "data" / "sweeps" / "fake_train_gpt.py"


def test_program_runs_a_module_or_a_script():
    assert Program(module="golf.train").rank_argv() == ["-m", "golf.train"]
    assert Program(script="train_gpt.py", args=("--x", "1")).rank_argv() == ["train_gpt.py", "--x", "1"]
    with pytest.raises(ValueError):
        Program()
    with pytest.raises(ValueError):
        Program(module="golf.train", script="train_gpt.py")


def test_torchrun_argv_is_standalone_with_the_rank_wrapper():
    argv = torchrun_argv(Program(module="golf.train"), 8, python="/venv/bin/python")
    assert argv == ["/venv/bin/python", "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node=8", str(RANKWRAP), "-m", "golf.train"]
    assert not any(a.startswith(("--rdzv", "--master_port", "--master-port")) for a in argv)
    with pytest.raises(ValueError):
        torchrun_argv(Program(module="golf.train"), 0)


def test_reproduce_command_is_the_plain_torchrun_line():
    text = reproduce_command(Program(script="my dir/train_gpt.py"), 2, {"SEED": "42", "NOTE": "a b"})
    assert text == "SEED=42 NOTE='a b' torchrun --standalone --nproc_per_node=2 'my dir/train_gpt.py'"
    assert "rankwrap" not in reproduce_command(Program(module="golf.train"), 8)


def _run_wrapper(tmp_path: Path, *args: str) -> dict:
    """Run rankwrap.py directly (as torchrun would) and return what the program saw."""
    out = subprocess.run([sys.executable, str(RANKWRAP), *args], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines())
    return lines


def test_rankwrap_runs_a_script_like_python_does(tmp_path):
    (tmp_path / "sibling.py").write_text("VALUE = 'sibling'\n")
    script = tmp_path / "train.py"
    script.write_text(
        "import sys, sibling\n"
        "print('name=' + __name__)\nprint('argv=' + ' '.join(sys.argv))\n"
        "print('path0=' + sys.path[0])\nprint('sibling=' + sibling.VALUE)\n")
    seen = _run_wrapper(tmp_path, str(script), "--lr", "3")
    assert seen == {"name": "__main__", "argv": f"{script} --lr 3", "path0": str(tmp_path),
                    "sibling": "sibling"}


def test_rankwrap_runs_a_module_like_python_m(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "entry.py").write_text(
        "import sys\nprint('name=' + __name__)\nprint('argv=' + ' '.join(sys.argv[1:]))\n"
        "print('path0=' + sys.path[0])\n")
    seen = _run_wrapper(tmp_path, "-m", "pkg.entry", "a", "b")
    assert seen == {"name": "__main__", "argv": "a b", "path0": str(tmp_path)}


def test_rankwrap_without_a_program_prints_its_usage(tmp_path):
    out = subprocess.run([sys.executable, str(RANKWRAP)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "usage: rankwrap.py" in out.stderr


def test_child_pids_finds_grandchildren():
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time\n"
                               "subprocess.Popen(['sleep', '30'])\n"
                               "print('ready', flush=True)\ntime.sleep(30)\n"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        tree = child_pids(parent.pid)
        assert len(tree) == 1 and pid_alive(tree[0])
        assert child_pids(tree[0]) == []
    finally:
        for pid in child_pids(parent.pid):
            os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()


def _wait_for_pid_files(pid_dir: Path, count: int, proc: TorchrunProcess) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        files = sorted(pid_dir.glob("rank*.pid"))
        if len(files) == count and all(f.read_text() for f in files):
            return [int(f.read_text()) for f in files]
        assert proc.proc.poll() is None, "torchrun ended before its ranks started"
        time.sleep(0.1)
    raise AssertionError(f"the ranks did not write {count} pid files")


@pytest.mark.slow
def test_streams_every_rank_line_and_returns_the_exit_status(tmp_path):
    env = dict(os.environ, SEED="42", ITERATIONS="4", STEP_SECONDS="0")
    with TorchrunProcess(torchrun_argv(Program(script=str(FAKE_SCRIPT)), 2), env=env,
                         cwd=tmp_path) as proc:
        lines = list(proc.lines())
        assert proc.wait() == 0
    assert sum(line.startswith("rank_env:") for line in lines) == 2
    assert "seed:42" in lines
    assert any(line.startswith("final_int8_zlib_roundtrip_exact ") for line in lines)
    assert not any(line.endswith("\n") for line in lines)

    failing = dict(env, FAIL_AT_STEP="2")
    with TorchrunProcess(torchrun_argv(Program(script=str(FAKE_SCRIPT)), 1), env=failing,
                         cwd=tmp_path) as proc:
        lines = list(proc.lines())
        assert proc.wait() != 0
    assert any("fake failure at step 2" in line for line in lines)


@pytest.mark.slow
def test_stop_ends_torchrun_and_every_rank(tmp_path):
    env = dict(os.environ, SILENT_AFTER="1", PID_DIR=str(tmp_path), STEP_SECONDS="0")
    proc = TorchrunProcess(torchrun_argv(Program(script=str(FAKE_SCRIPT)), 2), env=env, cwd=tmp_path,
                           stop_grace_s=5)
    ranks = _wait_for_pid_files(tmp_path, 2, proc)
    proc.stop()
    assert proc.proc.returncode is not None
    assert wait_until_gone(ranks, timeout_s=15) == []


@pytest.mark.slow
def test_ranks_die_with_a_killed_torchrun(tmp_path):
    """SIGKILL on torchrun (what a dying Ray worker's group cleanup does) takes the ranks along."""
    env = dict(os.environ, SILENT_AFTER="1", PID_DIR=str(tmp_path), STEP_SECONDS="0")
    proc = TorchrunProcess(torchrun_argv(Program(script=str(FAKE_SCRIPT)), 2), env=env, cwd=tmp_path)
    try:
        ranks = _wait_for_pid_files(tmp_path, 2, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.proc.wait()
        # No stop(): only the kernel's PR_SET_PDEATHSIG (set by rankwrap) can end the ranks now.
        assert wait_until_gone(ranks, timeout_s=15) == []
    finally:
        proc.stop()
