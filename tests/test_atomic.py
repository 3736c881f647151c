"""golf.atomic: the one atomic-write helper every writer of golf and sweeps uses."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from golf.atomic import write_atomic, write_bytes_atomic, write_json_atomic, write_text_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_get_the_umask_mode_not_mkstemps_0600(tmp_path, umask):
    # Each writer runs in a child process with its own umask: the umask is process-wide state.
    program = (
        "import os, sys\n"
        "os.umask(int(sys.argv[1], 8))\n"
        "from pathlib import Path\n"
        "from golf.atomic import write_bytes_atomic, write_json_atomic\n"
        "from sweeps.submissions import SeedResult, write_submission\n"
        "root = Path(sys.argv[2])\n"
        "write_bytes_atomic(root / 'a.bin', b'x')\n"
        "write_json_atomic(root / 'run' / 'result.json', {'ok': 1})\n"
        "write_submission(root / 'submission.json', name='n', author='a', github_id='g', hardware='cpu',\n"
        "                 seed_results=[SeedResult(seed='1', val_bpb=1.2, val_loss=2.0, artifact_bytes=10)])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", program, oct(umask), str(tmp_path)], check=True, env=env, timeout=120)
    for name in ("a.bin", "run/result.json", "submission.json"):
        assert _mode(tmp_path / name) == 0o666 & ~umask, name


def test_replaces_whole_files_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "deep" / "state.json"
    write_json_atomic(target, {"step": 1, "name": "é"})
    assert target.read_text() == '{\n  "step": 1,\n  "name": "\\u00e9"\n}\n'
    write_json_atomic(target, {"name": "é"}, ensure_ascii=False)
    assert json.loads(target.read_text(encoding="utf-8")) == {"name": "é"}
    write_text_atomic(target, "plain")
    assert target.read_text() == "plain"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "artifact.ptz"
    write_bytes_atomic(target, b"old")

    def half_then_fail(handle):
        handle.write(b"ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact.ptz"]


def test_json_is_written_as_the_writers_it_replaced_wrote_it(tmp_path):
    # result.json / train_state.json / trial.json used json.dump(indent=2) plus a newline; NaN stays
    # allowed (a diverged run's loss).
    obj = {"a": [1, 2], "loss": float("nan"), "nested": {"b": None}}
    write_json_atomic(tmp_path / "x.json", obj)
    assert (tmp_path / "x.json").read_text() == json.dumps(obj, indent=2) + "\n"
