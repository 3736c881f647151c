"""The `sweeps` command and the sweep files' shared main; `ray job submit` of the flagship."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from sweeps.cli import main
from sweeps.launcher import child_pids, pid_alive, wait_until_gone
from sweeps.results import config_values, load_results
from sweeps.stats import compare

REPO = Path(__file__).resolve().parents[1]
FLAGSHIP = REPO / "sweeps" / "qat_vs_lawa.py"
VENV_BIN = Path(sys.executable).parent


pytestmark = pytest.mark.usefixtures("restore_value_sources")


def test_help_names_every_command_with_examples(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for command in ("run", "table", "compare", "verify", "leaderboard", "parse-log", "report"):
        assert f"  {command}" in text
    assert "examples:" in text and "ray job submit" in text
    for command in ("run", "table", "compare", "verify", "leaderboard", "parse-log", "report"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
    assert "DIR[:CONFIG]" in capsys.readouterr().out  # compare knows experiment directories


def test_table_prints_and_exports(experiment, capsys):
    assert main(["table", str(experiment)]) == 0
    text = capsys.readouterr().out
    assert "6 trials: 5 TERMINATED, 1 ERROR" in text and "per config" in text
    assert main(["table", str(experiment), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and rows[0]["label"] == "QAT_ENABLED=0" and rows[0]["QAT_ENABLED"] == 0
    assert main(["table", str(experiment), "--csv", "--write"]) == 0
    csv = capsys.readouterr().out
    assert csv.splitlines()[0].startswith("label,QAT_ENABLED,seed,status,val_bpb")
    assert (experiment / "results.parquet").is_file()


def test_compare_two_configs_of_an_experiment(experiment, capsys):
    code = main(["compare", "--new", f"{experiment}:QAT_ENABLED=1",
                 "--baseline", f"{experiment}:QAT_ENABLED=0", "--test", "welch", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    table = load_results(experiment)
    expected = compare(config_values(table, "QAT_ENABLED=1"), config_values(table, "QAT_ENABLED=0"),
                       test="welch", metric="bpb")
    assert result["p_value"] == pytest.approx(expected.p_value)
    assert (result["n_new"], result["n_baseline"]) == (2, 3)
    # by label too, and the acceptance test takes its margin from the rows' tokens per byte
    assert main(["compare", "--new", f"{experiment}:QAT_ENABLED=0", "--baseline", "3.70"]) == 0
    assert "tokens/byte (from the new values" in capsys.readouterr().out
    assert main(["compare", "--new", f"{experiment}:QAT_ENABLED=7", "--baseline", "1.0"]) == 2
    assert "matches no config" in capsys.readouterr().err


def test_user_errors_exit_2_without_a_traceback(tmp_path, capsys):
    assert main(["table", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no experiment directory") and "Traceback" not in err
    assert main(["run", str(tmp_path / "missing.py")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad_sweep.py"
    bad.write_text("from sweeps import Sweep\n"
                   "SWEEP = Sweep(name='bad', grid={'QAT_ENABLD': [0, 1]})\n")
    assert main(["run", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "did you mean QAT_ENABLED" in err and "Traceback" not in err
    empty = tmp_path / "no_sweep.py"
    empty.write_text("x = 1\n")
    assert main(["run", str(empty)]) == 2
    assert "defines no SWEEP" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["run", str(FLAGSHIP), "--seeds", "1,x"])
    assert done.value.code == 2


def test_dry_run_of_the_flagship_lists_the_trials(capsys):
    assert main(["run", str(FLAGSHIP), "--dry-run", "--scale", "full", "--seeds", "1337,42"]) == 0
    text = capsys.readouterr().out
    assert "4 config(s) x 2 seed(s) = 8 trials at full scale" in text
    assert "8 GPU(s) per trial (8 ranks)" in text and "QUANT_FORMAT=int6 COMPRESSOR=zstd" in text
    assert "DATA_PATH=" in text and "dry run: nothing was started" in text


def test_the_sweep_file_runs_as_a_script_from_anywhere(tmp_path):
    out = subprocess.run([sys.executable, str(FLAGSHIP), "--dry-run", "--set", "ITERATIONS=30"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "12 trials at smoke scale" in out.stdout
    assert f"storage:   {tmp_path / 'experiments' / 'qat_vs_lawa'}" in out.stdout
    bad = subprocess.run([sys.executable, str(FLAGSHIP), "--set", "ITERATONS=3", "--dry-run"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "did you mean ITERATIONS" in bad.stderr
    assert "Traceback" not in bad.stderr


# --------------------------------------------------------------------------------- ray job submit
def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _fresh_copy(target: Path) -> Path:
    """The repository as a fresh clone has it: no virtualenv, no data, no runs."""
    ignore = shutil.ignore_patterns(".venv", ".git", "data", "experiments", "records", "runs",
                                    "__pycache__", "*.egg-info", ".pytest_cache")
    shutil.copytree(REPO, target, ignore=ignore)
    return target


@pytest.mark.slow
def test_ray_job_submit_runs_the_flagship_from_a_fresh_copy(tmp_path):
    copy = _fresh_copy(tmp_path / "clone")
    storage = tmp_path / "experiments"
    gcs, dashboard, agent_http, agent_grpc, runtime_env, metrics = _free_ports(6)
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths must fit
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    # A private throwaway cluster: no token to hand around.
    env["RAY_AUTH_MODE"] = "disabled"
    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
         f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent_http}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
         f"--metrics-export-port={metrics}", f"--temp-dir={temp_dir}"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, "ray start --head exited"
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the head's dashboard never came up"
                time.sleep(1)
        submit = subprocess.run(
            [str(VENV_BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(copy),
             "--", "python", "sweeps/qat_vs_lawa.py", "--seeds", "1337", "--set", "ITERATIONS=6",
             "--storage", str(storage)],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        output = submit.stdout + submit.stderr
        assert submit.returncode == 0, output[-5000:]
        assert "attached to the Ray cluster" in output
        assert "results (4 trials: 4 TERMINATED)" in output
        assert "significance against the baseline QAT_ENABLED=0,LAWA_ENABLED=0" in output
    finally:
        tree = child_pids(head.pid)
        head.send_signal(signal.SIGTERM)
        for pid in tree:
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        for pid in wait_until_gone(tree, timeout_s=15):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)

    table = load_results(storage / "qat_vs_lawa")
    assert len(table) == 4 and set(table["status"]) == {"TERMINATED"}
    for trial_dir in table["trial_dir"]:
        record = json.loads(Path(trial_dir, "trial.json").read_text())
        # The trial ran the job's copy of the code, not this checkout's (nor an installed one),
        # and built the demo corpus inside that copy on first use.
        assert Path(record["code_root"]) != REPO and "_ray_pkg_" in record["code_root"]
        assert record["env"]["DATA_PATH"].startswith(record["code_root"])
        result = json.loads(Path(trial_dir, "run", "result.json").read_text())
        assert result["config"]["iterations"] == 6 and result["config"]["quant_format"] == "int6"
