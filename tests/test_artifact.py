"""Artifact byte accounting (techniques.md 3.8): the code bytes are the bytes of the one script
that is submitted, the run's bundle (golf.bundle)."""

from __future__ import annotations

import pytest

import golf
from golf.bundle import build_bundle
from golf.config import resolve
from golf.quant.artifact import SIZE_LIMIT_BYTES, ArtifactSize, code_bytes, running_bundle, submission_code


def test_code_bytes_counts_utf8_bytes_not_characters() -> None:
    script = "VALUE = 'héllo'\n".encode("utf-8")
    assert code_bytes(script) == len(script) == 17
    assert code_bytes(b"") == 0


def test_code_bytes_rejects_non_utf8() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        code_bytes("x = 'é'\n".encode("latin-1"))


def test_submission_code_is_the_bundle_of_the_config() -> None:
    cfg = resolve("baseline", "smoke")
    assert running_bundle() is None
    assert submission_code(cfg, "baseline", "smoke") == build_bundle(cfg, "baseline", "smoke").data


def test_a_run_from_a_bundle_counts_its_own_file(tmp_path, monkeypatch) -> None:
    script = tmp_path / "train_gpt.py"
    script.write_bytes(b"print('the file that runs')\n")
    monkeypatch.setattr(golf, "__bundle__", str(script), raising=False)
    assert running_bundle() == script
    assert submission_code(resolve("baseline", "smoke"), "baseline", "smoke") == script.read_bytes()


def test_artifact_size_against_the_decimal_limit() -> None:
    assert SIZE_LIMIT_BYTES == 16_000_000
    at_limit = ArtifactSize(model=15_952_358, code=47_642)
    assert at_limit.total == 16_000_000 and at_limit.under_limit
    over = ArtifactSize(model=15_952_359, code=47_642)
    assert over.total == 16_000_001 and not over.under_limit
    assert over.as_dict() == {
        "model": 15_952_359, "code": 47_642, "total": 16_000_001, "limit": 16_000_000,
        "under_limit": False,
    }
