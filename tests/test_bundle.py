"""The submission bundle (techniques.md 3.8): one train_gpt.py with exactly the code a config needs,
minified or self-extracting, that reruns the run it was built for."""

from __future__ import annotations

import ast
import base64
import json
import lzma
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from golf.bundle import build_bundle, minify
from golf.config import resolve

REPO = Path(__file__).resolve().parents[1]


def smoke_bundle(**settings: str):
    return build_bundle(resolve("baseline", "smoke", overrides=settings), "baseline", "smoke")


def test_minify_strips_docstrings_comments_and_type_only_code_and_keeps_the_program() -> None:
    source = '''"""Module doc."""
from __future__ import annotations
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from golf.config import GolfConfig  # only for annotations


class Box:
    """Class doc."""

    size: int = 3
    """Attribute doc."""

    def twice(self, cfg: GolfConfig | None = None) -> int:
        """Method doc."""
        # drop me
        return "# not a comment".count("#") + 2 * self.size


def empty():
    """Only a docstring."""
'''
    out = minify(source)
    for gone in ("Module doc", "Class doc", "Attribute doc", "Method doc", "drop me", "golf.config", "Only a"):
        assert gone not in out
    assert "# not a comment" in out and "def twice(self, cfg=None):" in out and "size: int = 3" in out
    assert "\n  return" in out  # one space per indentation level
    space: dict = {}
    exec(compile(out, "minified", "exec"), space)
    assert space["Box"]().twice() == 7 and space["empty"]() is None
    assert space["Box"].__annotations__ == {"size": "int"}  # a dataclass needs its field annotations


def test_a_technique_that_is_off_is_not_in_the_bundle() -> None:
    off, on = smoke_bundle(), smoke_bundle(QAT_ENABLED="1")
    assert "golf.techniques.qat" not in off.modules and "qat" in off.left_out
    assert b"FakeQuantWeight" not in off.data and b"QAT_ENABLED" in off.data  # named only to refuse it
    assert "golf.techniques.qat" in on.modules and "qat" in on.techniques
    assert b"class FakeQuantWeight(nn.Module)" in on.data
    # the registry of the bundle lists exactly its techniques
    assert re.search(rb"TECHNIQUES: tuple\[type\[Technique\], \.\.\.\] = \(([^)]*)\)", off.data).group(1).count(b",") \
        == len(off.techniques) - 1


def test_the_bundle_is_minified_and_far_smaller_than_every_golf_module() -> None:
    bundle = smoke_bundle()
    text = bundle.data.decode("utf-8")
    assert '"""One trial: data -> model -> train' not in text  # golf/train.py's docstring
    assert "# Every budget decision uses the training time" not in text  # one of its comments
    assert "golf.cli" not in bundle.modules and "golf.bundle" not in bundle.modules
    everything = sum(len(p.read_bytes()) for p in (REPO / "golf").rglob("*.py"))
    assert len(bundle.data) < everything / 2
    ast.parse(text)


def test_self_extracting_bundle_is_smaller_and_holds_the_plain_one() -> None:
    plain, wrapped = smoke_bundle(), smoke_bundle(CODE_WRAPPER="lzma_b85")
    assert wrapped.wrapper == "lzma_b85" and len(wrapped.data) < len(plain.data) / 2
    call = ast.parse(wrapped.data).body[1].value  # exec(compile(lzma.decompress(b85decode(...)), ...))
    packed = call.args[0].args[0].args[0].args[0].value
    raw_filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    inner = lzma.decompress(base64.b85decode(packed), format=lzma.FORMAT_RAW, filters=raw_filters)
    # the same program, except that it knows it is wrapped (so a run from it copies itself)
    assert inner.replace(b"SETTINGS = {'CODE_WRAPPER': 'lzma_b85'}", b"SETTINGS = {}") == plain.data


def test_golf_bundle_command_writes_the_same_bytes_in_another_process(tmp_path) -> None:
    out = tmp_path / "sub" / "train_gpt.py"
    proc = subprocess.run([sys.executable, "-m", "golf.cli", "bundle", "--preset", "smoke", "QAT_ENABLED=1",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == smoke_bundle(QAT_ENABLED="1").data  # deterministic: no set or hash order
    assert f"{len(out.read_bytes())} bytes" in proc.stdout and "left out:" in proc.stdout


def run_bundle(script: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GOLF_", "QAT", "LAWA"))}
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env={**clean, "OMP_NUM_THREADS": "1", **env}, timeout=300)


@pytest.fixture
def smoke_script(tmp_path) -> Path:
    script = tmp_path / "train_gpt.py"
    script.write_bytes(smoke_bundle().data)
    return script


def test_a_setting_of_a_left_out_technique_stops_the_bundle(smoke_script, tmp_path) -> None:
    proc = run_bundle(smoke_script, tmp_path, ENABLE_QAT="1", RUN_DIR=str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "train_gpt.py: ENABLE_QAT=1 sets qat, which this train_gpt.py leaves out (built with QAT_ENABLED=0): "
        "build one with `golf bundle ... QAT_ENABLED=1`"]
    assert not (tmp_path / "run").exists()


def test_a_left_out_setting_at_the_value_it_was_built_with_is_accepted(smoke_script, tmp_path) -> None:
    # LAWA_INTERVAL=2 is what the smoke scale sets; the run then goes on to the data check.
    proc = run_bundle(smoke_script, tmp_path, LAWA_INTERVAL="2", QAT_ENABLED="0",
                      DATA_PATH=str(tmp_path / "no_data"))
    assert proc.returncode == 2 and "no_data" in proc.stderr and "leaves out" not in proc.stderr


def test_the_bundle_refuses_another_preset(smoke_script, tmp_path) -> None:
    proc = run_bundle(smoke_script, tmp_path, GOLF_PRESET="baseline", GOLF_SCALE="full")
    assert proc.returncode == 2
    assert "built for preset baseline at scale smoke, not baseline at full" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- the bundle reruns the run ---------------------------------------------------------------------
TIMING = re.compile(r"\b\d+(?:\.\d+)?m?s\b")  # 8902ms, 222.56ms, 3.3s: every duration in the log


def comparable_lines(log: str) -> list[str]:
    """The log without what differs between two runs of the same thing: times and paths."""
    out = []
    for line in log.splitlines():
        if line.startswith(("run_id:", "artifact_saved:", "val_loader:")):
            continue
        out.append(TIMING.sub("T", line))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("settings,launcher", [
    ({"QAT_ENABLED": "1", "EMA_ENABLED": "1"}, "python"),
    ({"CODE_WRAPPER": "lzma_b85"}, "torchrun"),
], ids=["qat_ema_python", "selfextract_torchrun"])
def test_the_bundle_of_a_run_reruns_it(tmp_path, demo_data, settings, launcher) -> None:
    data = {"DATA_PATH": str(demo_data.data_path), "TOKENIZER_PATH": str(demo_data.tokenizer_path)}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GOLF_", "QAT", "LAWA", "EMA"))}
    env = {**clean, "OMP_NUM_THREADS": "1"}
    words = [f"{k}={v}" for k, v in {**data, **settings, "RUN_DIR": str(tmp_path / "golf")}.items()]
    trained = subprocess.run([sys.executable, "-m", "golf.cli", "train", "--preset", "smoke", *words],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    script = tmp_path / "golf" / "train_gpt.py"
    golf_result = json.loads((tmp_path / "golf" / "result.json").read_text())
    assert golf_result["bytes"]["code"] == len(script.read_bytes())
    assert f"Code size: {len(script.read_bytes())} bytes" in (tmp_path / "golf" / "train.log").read_text()

    # the bundle alone, with only the data and run folder in its environment: no golf on the path
    # would be used either (the bundle refuses golf modules it does not hold)
    command = [sys.executable, str(script)] if launcher == "python" else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(script)]
    rerun = subprocess.run(command, cwd=tmp_path, env={**env, **data, "RUN_DIR": str(tmp_path / "bundle")},
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    bundle_result = json.loads((tmp_path / "bundle" / "result.json").read_text())
    assert bundle_result["metrics"]["val_bpb"] == golf_result["metrics"]["val_bpb"]
    assert bundle_result["bytes"] == golf_result["bytes"]
    assert (tmp_path / "bundle" / "train_gpt.py").read_bytes() == script.read_bytes()
    assert comparable_lines((tmp_path / "bundle" / "train.log").read_text()) == \
        comparable_lines((tmp_path / "golf" / "train.log").read_text())
