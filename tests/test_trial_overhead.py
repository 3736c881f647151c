"""What the service no longer adds to a trial: a worker reused for the next trial, the demo corpus
checked once per worker, and torchrun at the node's priority rather than Ray's worker niceness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import golf.corpus
from sweeps import trial
from sweeps.experiment import RunOptions, run_sweep
from sweeps.spec import Sweep

FAKE_SCRIPT = Path(__file__).resolve().parent / "data" / "sweeps" / "fake_train_gpt.py"


def test_a_worker_checks_the_demo_corpus_once(tmp_path, monkeypatch):
    calls: list[Path] = []
    real_build = golf.corpus.build_demo

    def counting_build(root, **kwargs):
        calls.append(Path(root))
        return real_build(root, **kwargs)

    monkeypatch.setattr(golf.corpus, "build_demo", counting_build)
    monkeypatch.setattr(trial, "_DEMO_CHECKED", {})
    root = trial.demo_root()
    first = trial._demo_paths(root)
    second = trial._demo_paths(root)
    assert first == second and calls == [root]
    assert Path(first["DATA_PATH"]).is_dir() and Path(first["TOKENIZER_PATH"]).is_file()


@pytest.mark.slow
def test_trials_one_after_another_run_in_one_reused_worker(tmp_path):
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        sweep = Sweep(name="reuse", script=str(FAKE_SCRIPT), uses_data=False, max_failures=0,
                      seeds=[1, 2, 3], fixed={"ITERATIONS": 4, "STEP_SECONDS": 0.01})
        outcome = run_sweep(sweep, RunOptions(storage=str(tmp_path), max_concurrent=1))
    finally:
        ray.shutdown()
    assert outcome.all_finished
    records = [json.loads(p.read_text()) for p in sorted(Path(outcome.experiment_dir).glob("*/trial.json"))]
    assert len(records) == 3
    # One worker process ran every trial: no actor start (and no import of the trainable) after
    # the first; each trial still wrote its own directory and got its own torchrun.
    assert len({r["pid"] for r in records}) == 1
    assert len({r["torchrun_pid"] for r in records}) == 3
    assert sorted(r["seed"] for r in records) == [1, 2, 3]
    assert all(Path(outcome.experiment_dir).glob("*/train.log"))


# A process at a given niceness (15 is what Ray gives its workers) launches torchrun the way a
# trial does.
_LAUNCH_FROM_NICENESS = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from sweeps.launcher import Program, TorchrunProcess, torchrun_argv
    os.setpriority(os.PRIO_PROCESS, 0, int(sys.argv[1]))
    niceness = None if sys.argv[2] == "inherit" else int(sys.argv[2])
    script = {script!r}
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    with TorchrunProcess(torchrun_argv(Program(script=script), 2), env=env, cwd={cwd!r},
                         niceness=niceness) as proc:
        for line in proc.lines():
            print(line, flush=True)
        sys.exit(proc.wait())
""")
_PRINT_NICENESS = "import os\nprint('rank_niceness:', os.getpriority(os.PRIO_PROCESS, 0), flush=True)\n"


def _rank_niceness(tmp_path: Path, niceness: str, launcher_niceness: int = 15) -> list[int]:
    script = tmp_path / "print_niceness.py"
    script.write_text(_PRINT_NICENESS)
    code = _LAUNCH_FROM_NICENESS.format(root=str(trial.code_root()), script=str(script),
                                        cwd=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code, str(launcher_niceness), niceness],
                          capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    return [int(line.split()[-1]) for line in done.stdout.splitlines()
            if line.startswith("rank_niceness:")]


@pytest.mark.slow
def test_torchrun_and_its_ranks_take_the_niceness_set_at_launch(tmp_path):
    """Without privileges: a niceness above the launcher's (allowed to anyone) reaches torchrun
    before it spawns its ranks; without one, they inherit the launcher's."""
    start = os.getpriority(os.PRIO_PROCESS, 0)
    assert start <= 10, "the test needs to start below niceness 10 to tell the values apart"
    assert _rank_niceness(tmp_path, "inherit", launcher_niceness=10) == [10, 10]
    assert _rank_niceness(tmp_path, "13", launcher_niceness=10) == [13, 13]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "setpriority") or os.geteuid() != 0,
                    reason="lowering a niceness needs root (or CAP_SYS_NICE)")
def test_torchrun_and_its_ranks_run_at_the_niceness_asked_for(tmp_path):
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert mine < 15, "the test needs to run below niceness 15 to tell the two apart"
    assert _rank_niceness(tmp_path, "inherit") == [15, 15]  # what a Ray worker's child gets
    assert _rank_niceness(tmp_path, str(mine)) == [mine, mine]
