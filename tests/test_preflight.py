"""Bad data is found before any compute (issue 7, defect 3): golf.preflight, the loader's id check.

Real files (a copy of the demo corpus, damaged one way per test) and real processes: `python -m
golf.train`, `golf train` with two ranks, and `sweeps run` on a local machine. Each bad input must
end with exit status 2 and one line that names the file and the fix, without a traceback, before a
model or a process group (or, for a sweep, Ray) exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from golf import data as golf_data
from golf.config import resolve
from golf.data import (
    HEADER_BYTES, DataError, DistributedTokenLoader, ShardError, read_shard, shard_files, write_shard,
)
from golf.preflight import preflight

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def corpus(tmp_path, demo_data) -> tuple[Path, Path]:
    """A private copy of the demo corpus's shards and tokenizer, for a test to damage."""
    shards = tmp_path / "shards"
    shutil.copytree(demo_data.data_path, shards)
    tokenizer = tmp_path / "tok.model"
    shutil.copyfile(demo_data.tokenizer_path, tokenizer)
    return shards, tokenizer


def _env(shards: Path, tokenizer: Path, run_dir: Path, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLF_", "QAT", "LAWA"))}
    env.update({"GOLF_PRESET": "smoke", "DATA_PATH": str(shards), "TOKENIZER_PATH": str(tokenizer),
                "RUN_DIR": str(run_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)})
    env.update({k: str(v) for k, v in settings.items()})
    return env


def _golf_train(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "golf.train"], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _one_line(proc: subprocess.CompletedProcess, *parts: str) -> str:
    """The process exited 2 with exactly one stderr line holding ``parts``, and no traceback."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    for part in parts:
        assert part in line, line
    return line


def _with_token(path: Path, position: int, token: int) -> None:
    tokens = np.array(read_shard(path), dtype=np.int64)
    tokens[position] = token
    write_shard(path, tokens)


# ---- golf.train: every check before the process group and the model --------------------------------


def test_truncated_train_shard_exits_2_before_any_compute(corpus, tmp_path):
    shards, tokenizer = corpus
    shard = shards / "fineweb_train_000001.bin"
    shard.write_bytes(shard.read_bytes()[:-6])
    proc = _golf_train(_env(shards, tokenizer, tmp_path / "run"), tmp_path)
    _one_line(proc, "golf.train:", str(shard), "truncated", "re-download")
    assert not (tmp_path / "run").exists()  # no run directory: nothing was built or written


def test_shard_with_a_bad_header_exits_2(corpus, tmp_path):
    shards, tokenizer = corpus
    shard = shards / "fineweb_val_000000.bin"
    blob = bytearray(shard.read_bytes())
    blob[0:4] = np.array([1234], dtype="<i4").tobytes()
    shard.write_bytes(bytes(blob))
    proc = _golf_train(_env(shards, tokenizer, tmp_path / "run"), tmp_path)
    _one_line(proc, str(shard), "magic number 1234", "20240520")


def test_tokenizer_that_is_not_sentencepiece_exits_2(corpus, tmp_path):
    shards, tokenizer = corpus
    tokenizer.write_text("this is a vocabulary list, not a SentencePiece model\n")
    proc = _golf_train(_env(shards, tokenizer, tmp_path / "run"), tmp_path)
    _one_line(proc, "TOKENIZER_PATH:", str(tokenizer), "not a valid SentencePiece model")


def test_vocab_size_that_differs_from_the_tokenizer_exits_2(corpus, tmp_path):
    shards, tokenizer = corpus
    proc = _golf_train(_env(shards, tokenizer, tmp_path / "run", VOCAB_SIZE=512), tmp_path)
    _one_line(proc, str(tokenizer), "1024 pieces but VOCAB_SIZE is 512", "VOCAB_SIZE=1024")


def test_validation_id_outside_the_vocabulary_names_file_and_offset(corpus, tmp_path):
    # Today's failure: `IndexError: index out of range in self` from the embedding, naming no file.
    shards, tokenizer = corpus
    shard = shards / "fineweb_val_000000.bin"
    _with_token(shard, 123, 1500)
    proc = _golf_train(_env(shards, tokenizer, tmp_path / "run"), tmp_path)
    _one_line(proc, str(shard), "token id 1500 at token 123", f"byte {HEADER_BYTES + 2 * 123}",
              "VOCAB_SIZE=1024", "point DATA_PATH at shards made with TOKENIZER_PATH's tokenizer")


def test_golf_train_with_two_ranks_reports_the_shard_without_torchrun_noise(corpus, tmp_path):
    shards, tokenizer = corpus
    shard = shards / "fineweb_train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:HEADER_BYTES - 10])
    env = _env(shards, tokenizer, tmp_path / "run")
    proc = subprocess.run(
        [sys.executable, "-m", "golf.cli", "train", "--preset", "smoke", "--nproc-per-node", "2",
         f"DATA_PATH={shards}", f"TOKENIZER_PATH={tokenizer}"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    line = _one_line(proc, "golf:", str(shard), "shorter than the 1024-byte header")
    assert line.startswith("golf: ")
    assert "torch.distributed" not in proc.stderr and not (tmp_path / "run").exists()


# ---- the checks themselves -------------------------------------------------------------------------


def _cfg(shards: Path, tokenizer: Path, **settings: object):
    return resolve("smoke", overrides={"DATA_PATH": str(shards), "TOKENIZER_PATH": str(tokenizer),
                                       **{k: str(v) for k, v in settings.items()}})


def test_preflight_counts_what_it_checked(corpus, demo_data):
    shards, tokenizer = corpus
    summary = preflight(_cfg(shards, tokenizer))
    assert summary.train_shards == len(shard_files(shards, "train")) >= 2
    assert (summary.train_tokens, summary.val_tokens) == (demo_data.train_tokens, demo_data.val_tokens)


def test_preflight_checks_only_the_validation_tokens_the_run_scores(corpus):
    shards, tokenizer = corpus
    shard = shards / "fineweb_val_000000.bin"
    _with_token(shard, 5000, 1500)
    with pytest.raises(ShardError, match="at token 5000"):
        preflight(_cfg(shards, tokenizer))
    preflight(_cfg(shards, tokenizer, VAL_MAX_TOKENS=4096))  # the bad id lies beyond what is scored


def test_preflight_missing_folder_and_too_little_validation_data(corpus, tmp_path):
    shards, tokenizer = corpus
    with pytest.raises(DataError, match="DATA_PATH: data folder .*nowhere does not exist"):
        preflight(_cfg(tmp_path / "nowhere", tokenizer))
    for path in shard_files(shards, "val"):
        path.unlink()
    write_shard(shards / "fineweb_val_000000.bin", np.arange(10) % 1024)
    with pytest.raises(ShardError, match="hold 10 tokens.*fewer than one sequence"):
        preflight(_cfg(shards, tokenizer))


def _shards(tmp_path: Path, *arrays: np.ndarray) -> list[Path]:
    paths = []
    for index, tokens in enumerate(arrays):
        paths.append(tmp_path / f"fineweb_train_{index:06d}.bin")
        write_shard(paths[-1], tokens)
    return paths


def test_loader_names_a_training_id_outside_the_vocabulary_on_its_first_pass(tmp_path):
    good = np.arange(3000) % 100
    bad = np.arange(3000) % 100
    bad[2777] = 4000
    files = _shards(tmp_path, good, bad)
    loader = DistributedTokenLoader(files, rank=0, world_size=1, device=torch.device("cpu"), vocab_size=100)
    with pytest.raises(ShardError) as caught:
        for _ in range(100):
            loader.next_batch(global_tokens=256, seq_len=32, grad_accum_steps=1)
    message = str(caught.value)
    assert str(files[1]) in message and "token id 4000 at token 2777" in message
    assert f"byte {HEADER_BYTES + 2 * 2777}" in message
    # Without a vocabulary size the loader serves the tokens as before (the pre-existing behaviour).
    plain = DistributedTokenLoader(files, rank=0, world_size=1, device=torch.device("cpu"))
    served = [plain.next_batch(256, 32, 1)[0] for _ in range(30)]
    assert max(int(x.max()) for x in served) == 4000


def test_loader_checks_each_shard_once_and_serves_the_same_tokens(tmp_path, monkeypatch):
    files = _shards(tmp_path, np.arange(1000) % 50, (np.arange(700) * 7) % 50)
    calls: list[int] = []
    real_check = golf_data.check_token_ids

    def counting(tokens, vocab_size, path, offset=0):
        calls.append(len(tokens))
        real_check(tokens, vocab_size, path, offset)

    monkeypatch.setattr(golf_data, "check_token_ids", counting)
    checked = DistributedTokenLoader(files, 0, 1, torch.device("cpu"), vocab_size=50)
    plain = DistributedTokenLoader(files, 0, 1, torch.device("cpu"))
    for _ in range(40):  # about seven passes over the 1700 tokens
        x_checked, y_checked = checked.next_batch(64, 16, 1)
        x_plain, y_plain = plain.next_batch(64, 16, 1)
        assert torch.equal(x_checked, x_plain) and torch.equal(y_checked, y_plain)
    assert sum(calls) == 1700  # every token checked exactly once: the first pass only


# ---- a sweep on this machine checks its data before Ray ---------------------------------------------


def test_local_sweep_with_a_bad_shard_exits_2_before_ray(corpus, tmp_path):
    shards, tokenizer = corpus
    shard = shards / "fineweb_val_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps.cli", "run", str(REPO_ROOT / "sweeps" / "qat_vs_lawa.py"), "--seeds", "1",
         "--set", f"DATA_PATH={shards}", "--set", f"TOKENIZER_PATH={tokenizer}", "--storage", str(tmp_path / "exp")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    line = _one_line(proc, "error: ", str(shard), "truncated")
    # One problem for the four configs that share the data, each named.
    assert line.count("QAT_ENABLED=") == 4
    assert "Ray" not in proc.stdout and not (tmp_path / "exp").exists()


# ---- a training shard's ids: the loader's first pass, inside the run --------------------------------


@pytest.mark.slow
def test_training_id_outside_the_vocabulary_stops_the_run_with_exit_2(corpus, tmp_path):
    # Found when the loader first reads the shard (reading every training shard up front would
    # cost minutes at full scale); the run ends as a data error: exit 2, no traceback, one line.
    shards, tokenizer = corpus
    shard = shards / "fineweb_train_000000.bin"
    _with_token(shard, 5, 3000)
    run_dir = tmp_path / "run"
    proc = _golf_train(_env(shards, tokenizer, run_dir, ITERATIONS=2, WARMUP_STEPS=0), tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("golf.train failed: ShardError:") and str(shard) in last
    assert "token id 3000 at token 5" in last and "VOCAB_SIZE=1024" in last
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and "token id 3000" in result["error"]
