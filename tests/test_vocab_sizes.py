"""Vocabulary sizes other than 1024 (techniques.md 7.17): `golf data demo --vocab N` trains the demo
tokenizer at that size beside the 1024 one, and a run with VOCAB_SIZE=N trains on it; a VOCAB_SIZE
that differs from the tokenizer is refused before compute (tests/test_preflight.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from golf.corpus.cli import main as data_main
from golf.corpus.demo import DEMO_DATASET, DEMO_TOKENIZER, demo_names, demo_paths
from golf.data import read_shard

REPO = Path(__file__).resolve().parents[1]


def test_demo_names_keep_1024_where_it_was_and_put_other_sizes_beside_it(tmp_path):
    assert demo_names() == (DEMO_DATASET, DEMO_TOKENIZER)
    paths = demo_paths(tmp_path, 4096)
    assert paths.data_path == tmp_path.resolve() / "datasets" / "demo_sp4096"
    assert paths.tokenizer_path == tmp_path.resolve() / "tokenizers" / "demo_4096_bpe.model"


def test_demo_vocab_out_of_range_is_a_one_line_error_before_any_work(tmp_path, capsys):
    assert data_main(["data", "demo", "--vocab", "100", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--vocab 100 is outside what the demo text can train: use 256..8192" in err
    assert err.count("\n") == 1 and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_demo_at_2048_pieces_trains_a_run_with_that_vocabulary(tmp_path):
    assert data_main(["data", "demo", "--vocab", "2048", "--out", str(tmp_path / "data")]) == 0
    paths = demo_paths(tmp_path / "data", 2048)
    import sentencepiece as spm

    assert spm.SentencePieceProcessor(model_file=str(paths.tokenizer_path)).vocab_size() == 2048
    ids = np.concatenate([read_shard(p) for p in sorted(paths.data_path.glob("fineweb_train_*.bin"))])
    assert int(ids.max()) < 2048 and (ids >= 1024).mean() > 0.05  # the new pieces are really used
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RUN_DIR": str(tmp_path / "run")}
    cmd = [sys.executable, "-m", "golf.cli", "train", "--preset", "smoke", "VOCAB_SIZE=2048",
           f"DATA_PATH={paths.data_path}", f"TOKENIZER_PATH={paths.tokenizer_path}", "ITERATIONS=4",
           "VAL_LOSS_EVERY=0", "WARMUP_STEPS=0"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "final_int8_zlib_roundtrip_exact" in log
    # the embedding follows the vocabulary: 2048 x 64 at smoke width
    params = int(log.split("model_params:")[1].split()[0])
    assert params > 2048 * 64
    # the 1024 default against this tokenizer is refused before compute, in one line
    wrong = [c for c in cmd if c != "VOCAB_SIZE=2048"]
    refused = subprocess.run(wrong, cwd=REPO, env={**env, "RUN_DIR": str(tmp_path / "wrong")},
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2
    assert "has 2048 pieces but VOCAB_SIZE is 1024" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "wrong" / "train.log").exists()
