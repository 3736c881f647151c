"""The service under faults: the fault table of issue 7, with real drivers, a real local Ray, real
torchrun trials and real files.

| fault                                   | what the service does                     | test |
|-----------------------------------------|-------------------------------------------|------|
| trainer SIGKILLed mid-train             | retried; says it trains from the start    | test_a_killed_trainer_is_retried_and_a_data_error_is_not |
| trainer SIGKILLed mid-eval              | retried eval-only; says so                | (same) |
| a data / config error in a trial        | not retried; one line; summary says what to fix | (same) |
| SIGTERM to the driver                   | table written, INTERRUPTED, resume, 143   | test_sigterm_stops_the_sweep_and_it_resumes |
| resumed sweep                           | own clock, counts earlier sessions' trials | (same) |
| a changed sweep resumed                 | refusal names only what changed, old -> new | (same) |
| two drivers on one directory            | the second exits 2 naming the first       | test_a_second_driver_is_refused_and_ctrl_c_stops_the_first |
| SIGINT to the driver's process group    | table written, INTERRUPTED, resume, 130   | (same) |
| driver SIGKILLed                        | no process left; the lock does not stick; resumes | tests/test_experiment.py::test_a_killed_driver_leaves_no_process_and_the_experiment_resumes |
| storage full                            | "storage full at PATH" once; finished rows kept; UNKNOWN | test_a_full_disk_is_said_once_and_finished_rows_are_kept |
| golf's own data errors                  | classified as not worth a retry           | test_golf_data_errors_are_classified_as_not_retryable |
| the lock's holder SIGKILLed             | the kernel frees the lock; the holder is named while alive | test_the_lock_names_its_holder_and_dies_with_it |
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.failures import CONFIG, RUN, STORAGE, classify_run_failure
from sweeps.launcher import child_pids, pid_alive, wait_until_gone
from sweeps.lock import ExperimentBusy, ExperimentLock, driver_is_running, read_holder
from sweeps.results import load_results

REPO = Path(__file__).resolve().parents[1]
FAULT_SCRIPT = Path(__file__).resolve().parent / "data" / "sweeps" / "fault_train.py"
PROGRESS = re.compile(r"^\[\s*(\d+\.\d)s\] (.*)$", re.MULTILINE)

SWEEP_FILE = """\
from sweeps import Sweep, main
SWEEP = Sweep(name={name!r}, script={script!r}, uses_data=False, seeds=[1],
              configs={configs!r}, fixed={fixed!r}, max_failures={max_failures})
if __name__ == "__main__":
    raise SystemExit(main(SWEEP))
"""


def _sweep_file(tmp_path: Path, name: str, configs: list[dict], fixed: dict,
                max_failures: int = 2) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(SWEEP_FILE.format(name=name, script=str(FAULT_SCRIPT), configs=configs,
                                      fixed=fixed, max_failures=max_failures))
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _driver_argv(sweep_file: Path, storage: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sweeps.cli", "run", str(sweep_file), "--storage", str(storage),
            "--max-concurrent", "1", *extra]


def _wait_for(predicate, proc: subprocess.Popen | None, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc is None or proc.poll() is None, f"the driver ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _log_has(experiment: Path, label_part: str, text: str) -> bool:
    for log in experiment.glob(f"*{label_part}*/train.log"):
        try:
            if text in log.read_text():
                return True
        except OSError:
            pass
    return False


def _trial(experiment: Path, label_part: str) -> dict:
    (path,) = experiment.glob(f"*{label_part}*/trial.json")
    return json.loads(path.read_text()) | {"trial_dir": str(path.parent)}


def _table(experiment: Path, *, cli: bool = False) -> dict[str, dict]:
    """The experiment's table by label: what `sweeps table DIR --json` prints (``cli``: run it)."""
    if cli:
        out = subprocess.run([sys.executable, "-m", "sweeps.cli", "table", str(experiment),
                              "--json"], env=_env(), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
    else:
        rows = json.loads(load_results(experiment).to_json(orient="records"))
    return {row["label"]: row for row in rows}


@pytest.fixture
def drivers():
    """Drivers a test starts in the background; any still running at its end (a failed test)
    is killed with its whole process tree, Ray included."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], cwd: Path) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=_env(), cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            tree = child_pids(proc.pid)
            proc.kill()
            proc.communicate()
            for pid in tree:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _finish(proc: subprocess.Popen, timeout_s: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out, err


# --------------------------------------------------------------------------------- without Ray
@pytest.mark.slow
def test_golf_data_errors_are_classified_as_not_retryable(tmp_path):
    """A real golf.train under torchrun, given a tokenizer that is not a SentencePiece model."""
    bad = tmp_path / "bad.model"
    bad.write_text("not a model\n")
    env = _env() | {"GOLF_PRESET": "baseline", "GOLF_SCALE": "smoke", "RUN_DIR": str(tmp_path / "run"),
                    "DATA_PATH": str(tmp_path / "data"), "TOKENIZER_PATH": str(bad)}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=1", "-m", "golf.train"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    lines = (out.stdout + out.stderr).splitlines()
    assert out.returncode != 0
    failure = classify_run_failure(lines, returncode=out.returncode, is_golf=True)
    assert failure.kind == CONFIG and not failure.retry_helps
    assert "\n" not in failure.cause and str(tmp_path) in failure.cause

    crash = ["Traceback (most recent call last):", '  File "x.py", line 3, in <module>',
             "RuntimeError: NCCL timeout after 600 s",
             "E0101 00:00:00.000000 1 torch/distributed/elastic/multiprocessing/api.py:1] "
             "failed (exitcode: 1) local_rank: 0 (pid: 7) of binary: python"]
    assert classify_run_failure(crash, returncode=1, is_golf=True).kind == RUN
    assert classify_run_failure(crash, returncode=1, is_golf=True).cause == \
        "RuntimeError: NCCL timeout after 600 s"
    assert classify_run_failure(["OSError: [Errno 28] No space left on device"], returncode=1,
                                is_golf=False).kind == STORAGE


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    experiment = tmp_path / "exp" / "name"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sweeps.lock import ExperimentLock; "
         "lock = ExperimentLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
         "time.sleep(600)",
         str(experiment)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert driver_is_running(experiment) is True
        with pytest.raises(ExperimentBusy) as busy:
            ExperimentLock(experiment).acquire()
        message = str(busy.value)
        assert f"pid {holder.pid} on host " in message and "running since " in message
        assert "--name NEW" in message
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        # The kernel dropped the lock with its holder; the stale holder file says a dead pid.
        assert read_holder(experiment).pid == holder.pid
        assert driver_is_running(experiment) is False
        with ExperimentLock(experiment):
            assert read_holder(experiment).pid == os.getpid()
        assert read_holder(experiment) is None  # a clean release removes the holder file
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_verify_help_names_real_presets(capsys):
    from golf.presets import preset_names
    from sweeps.cli import main

    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    text = capsys.readouterr().out
    assert "--list-presets" not in text
    assert all(name in text for name in preset_names())


# --------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_a_killed_trainer_is_retried_and_a_data_error_is_not(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    sweep = _sweep_file(tmp_path, "faults", fixed={"ITERATIONS": 4, "STEP_SECONDS": 0.05,
                                                   "MARK_DIR": str(marks)},
                        configs=[{"LR": 0.1, "KILL_AT": "train"}, {"LR": 0.2, "KILL_AT": "eval"},
                                 {"LR": 0.3, "DATA_ERROR": 1}])
    storage = tmp_path / "experiments"
    # umask 027: the service's files must get 0640, not a fixed 0600 or 0644.
    out = subprocess.run(["sh", "-c", 'umask 027 && exec "$@"', "sh",
                          *_driver_argv(sweep, storage)],
                         env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    experiment = storage / "faults"
    progress = [line for _, line in PROGRESS.findall(out.stdout)]

    train_kill = _trial(experiment, "KILL_AT=train")
    assert train_kill["status"] == "TERMINATED" and train_kill["attempt"] == 2
    assert not train_kill["eval_only"]
    assert any(line.startswith("retrying LR=0.1,KILL_AT=train seed 1 (attempt 2 of 3):")
               and line.endswith("no artifact was saved, so the retry trains from the start")
               for line in progress), progress

    eval_kill = _trial(experiment, "KILL_AT=eval")
    assert eval_kill["status"] == "TERMINATED" and eval_kill["attempt"] == 2 and eval_kill["eval_only"]
    assert any(line.startswith("retrying LR=0.2,KILL_AT=eval seed 1 (attempt 2 of 3):")
               and line.endswith("its artifact was saved, so the retry only evaluates it")
               for line in progress), progress
    log = Path(eval_kill["trial_dir"], "train.log").read_text()
    assert log.count("step:1/4 train_loss") == 1 and "eval_only: artifact model.bin" in log

    data_error = _trial(experiment, "DATA_ERROR=1")
    assert data_error["status"] == "ERROR" and data_error["attempt"] == 1  # not retried
    assert data_error["failure"] == CONFIG
    assert data_error["cause"].startswith("golf.data.ShardError: shard /data/fineweb_train_000000.bin")
    assert not list(Path(data_error["trial_dir"]).glob("train.log.attempt*"))
    cause_lines = [line for line in progress if "token id 5000" in line]
    assert len(cause_lines) == 1 and cause_lines[0].startswith("ERROR    LR=0.3,DATA_ERROR=1 seed 1:")
    assert "not retried" in cause_lines[0]
    assert "Traceback" not in out.stdout + out.stderr
    # The summary says what to fix, and that a plain rerun will not.
    assert "failed on a configuration or data error that running again will not fix" in out.stderr
    assert "token id 5000 at offset 522" in out.stderr and "fix that, then run" in out.stderr

    table = _table(experiment)
    assert table["LR=0.1,KILL_AT=train"]["status"] == "TERMINATED"
    assert table["LR=0.2,KILL_AT=eval"]["val_bpb"] is not None
    for path in (Path(data_error["trial_dir"], "trial.json"), experiment / "results.csv"):
        assert path.stat().st_mode & 0o777 == 0o640, path


SHORT, LONG = "LR=0.1,ITERATIONS=3", "LR=0.2,ITERATIONS=60"


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_it_resumes(tmp_path, drivers):
    pids = tmp_path / "pids"
    pids.mkdir()
    sweep = _sweep_file(tmp_path, "stops", fixed={"STEP_SECONDS": 0.1, "PID_DIR": str(pids)},
                        configs=[{"LR": 0.1, "ITERATIONS": 3}, {"LR": 0.2, "ITERATIONS": 60}])
    storage = tmp_path / "experiments"
    experiment = storage / "stops"
    argv = _driver_argv(sweep, storage)

    # 1. SIGTERM to the driver (as `kill` or a job scheduler sends it) while the second trial trains.
    first = drivers(argv, tmp_path)
    _wait_for(lambda: _log_has(experiment, "LR=0.2", "step:3/60"), first, "the second trial")
    first.send_signal(signal.SIGTERM)
    code, out, err = _finish(first)
    assert code == 143, out[-3000:] + err[-3000:]
    assert "stopped by SIGTERM" in out and "Traceback" not in out + err
    assert f"resume with: sweeps run {sweep} --storage {storage} --max-concurrent 1" in err
    table = _table(experiment)
    assert table[SHORT]["status"] == "TERMINATED" and table[SHORT]["val_bpb"] is not None
    assert table[LONG]["status"] == "INTERRUPTED"
    assert (experiment / "results.csv").read_text().count("INTERRUPTED") == 1
    ranks = [int(p.read_text()) for p in pids.glob("rank*.pid")]
    assert wait_until_gone(ranks, timeout_s=20) == [], "a rank outlived the stopped sweep"

    # 2. Resumed to the end: this session's clock, and a count that includes earlier sessions.
    # A driver SIGKILLed before Tune flushed a trial's own result files leaves them missing, and
    # Tune then logs "Failed to fetch metrics" while it restores; the sweep's table needs neither.
    short_dir = Path(_trial(experiment, "LR=0.1")["trial_dir"])
    for name in ("result.json", "progress.csv"):
        (short_dir / name).unlink()
    started = time.monotonic()
    second = subprocess.run(argv, env=_env(), cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    wall = time.monotonic() - started
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming the experiment" in second.stdout
    progress = PROGRESS.findall(second.stdout)
    assert progress[-1][1].endswith("(2/2 ended)"), progress
    assert all(float(clock) <= wall for clock, _ in progress), (progress, wall)
    assert "Failed to fetch metrics" not in second.stdout + second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    table = _table(experiment)
    assert {row["status"] for row in table.values()} == {"TERMINATED"}
    assert table[LONG]["attempt"] == 2

    # 3. The same sweep with one setting added: refused, naming only that change.
    changed = subprocess.run([*argv, "--set", "VAL_EVERY=2"], env=_env(), cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2
    assert '(changed: fixed_env VAL_EVERY: (unset) -> "2");' in changed.stderr
    for unchanged in ("variants", "seeds", "program", "STEP_SECONDS", "Traceback"):
        assert unchanged not in changed.stderr


@pytest.mark.slow
def test_a_second_driver_is_refused_and_ctrl_c_stops_the_first(tmp_path, drivers):
    pids = tmp_path / "pids"
    pids.mkdir()
    sweep = _sweep_file(tmp_path, "twice", fixed={"ITERATIONS": 3000, "STEP_SECONDS": 0.1,
                                                  "PID_DIR": str(pids)},
                        configs=[{"LR": 0.1}], max_failures=0)
    storage = tmp_path / "experiments"
    experiment = storage / "twice"
    argv = _driver_argv(sweep, storage)
    first = drivers(argv, tmp_path)
    _wait_for(lambda: _log_has(experiment, "LR=0.1", "step:2/3000"), first, "the first trial")
    second = subprocess.run(argv, env=_env(), cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    (line,) = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    assert f"being run by another driver: pid {first.pid} on host " in line
    assert "running since " in line and "sweeps run" in line and "--name NEW" in line
    assert "started a local Ray" not in second.stdout  # refused before starting anything
    # Reading the table takes no lock, writes no table, and sees the live trial.
    assert _table(experiment, cli=True)["LR=0.1"]["status"] == "RUNNING"
    assert not (experiment / "results.csv").exists()
    assert read_holder(experiment).pid == first.pid and first.poll() is None
    assert not list(experiment.glob("*/*.attempt*")), "the first run's files were moved"
    # Ctrl-C in a terminal: SIGINT to the driver's whole process group.
    os.killpg(first.pid, signal.SIGINT)
    code, out, err = _finish(first)
    assert code == 130, out[-2000:] + err[-2000:]
    assert "stopped by SIGINT" in out and "Traceback" not in out + err
    assert f"resume with: sweeps run {sweep} --storage {storage} --max-concurrent 1" in err
    assert _table(experiment)["LR=0.1"]["status"] == "INTERRUPTED"
    ranks = [int(p.read_text()) for p in pids.glob("rank*.pid")]
    assert ranks and wait_until_gone(ranks, timeout_s=20) == []


def _can_mount_tmpfs(tmp_path: Path) -> str | None:
    """Why a private size-limited tmpfs cannot be mounted here (None when it can)."""
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    probe = tmp_path / "probe"
    probe.mkdir()
    out = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
                         capture_output=True, text=True)
    return None if out.returncode == 0 else f"cannot mount a private tmpfs: {out.stderr.strip()}"


@pytest.mark.slow
def test_a_full_disk_is_said_once_and_finished_rows_are_kept(tmp_path):
    """The experiment lives on a 6 MiB tmpfs (mounted in a private mount namespace, so nothing
    outside sees it); the second trial fills it, as another job's output would."""
    reason = _can_mount_tmpfs(tmp_path)
    if reason:
        pytest.skip(reason)
    disk = tmp_path / "disk"
    disk.mkdir()
    sweep = _sweep_file(tmp_path, "full", fixed={"ITERATIONS": 4, "STEP_SECONDS": 0.05},
                        configs=[{"LR": 0.1}, {"LR": 0.2, "FILL_STORAGE": str(disk)}, {"LR": 0.3}])
    argv = " ".join(_driver_argv(sweep, disk))
    table = f"{sys.executable} -m sweeps.cli table {disk}/full --json"
    script = (f"mount -t tmpfs -o size=6m tmpfs {disk} && cd {tmp_path} && "
              f"{{ {argv} > run.out 2> run.err; echo $? > run.rc; }} && "
              f"{table} > table.json 2> table.err; ls -a {disk} > disk.ls")
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=_env(), timeout=300, check=True)
    code = int((tmp_path / "run.rc").read_text())
    out, err = (tmp_path / "run.out").read_text(), (tmp_path / "run.err").read_text()
    assert code == 1, out[-3000:] + err[-3000:]
    said = (out + err).count("storage full at ")
    assert said == 1, out[-4000:] + err[-4000:]
    assert f"storage full at {disk}/full" in out
    assert "Traceback" not in out + err and "No space left" not in out + err
    assert "resume with: " in err
    rows = {row["label"]: row for row in json.loads((tmp_path / "table.json").read_text())}
    assert rows["LR=0.1"]["status"] == "TERMINATED" and rows["LR=0.1"]["val_bpb"] is not None
    filled = rows[next(label for label in rows if "FILL_STORAGE" in label)]
    assert filled["status"] in ("UNKNOWN", "INTERRUPTED", "ERROR")  # never a stale RUNNING
    assert "LR=0.3" not in rows or rows["LR=0.3"]["status"] != "RUNNING"
    assert ".full.lock.json" not in (tmp_path / "disk.ls").read_text()  # released at exit
