"""submission.json reading (every schema variant the records use) and writing (the current one)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import SHARED_FIXTURES, TEST_DATA, shared_fixture
from sweeps.submissions import (
    SeedResult,
    Submission,
    SubmissionError,
    load_submission,
    submission_dict,
    write_submission,
)

OWN = TEST_DATA / "submissions"
LN2 = math.log(2)


def _fixture_names() -> list[str]:
    folder = SHARED_FIXTURES / "submissions"
    names = sorted(path.name for path in folder.glob("*.json")) if folder.is_dir() else []
    # In a plain clone, one placeholder case reports the skip instead of an empty parameter set.
    return names or ["(challenge fixtures absent)"]


def fixture_submission(name: str) -> Submission:
    return load_submission(shared_fixture("submissions", name))


# ------------------------------------------------------------------------- every fixture loads


@pytest.mark.parametrize("name", _fixture_names())
def test_every_fixture_submission_loads(name: str) -> None:
    sub = fixture_submission(name)
    assert sub.raw, "the raw dict is kept"
    # A score is reported somewhere: a mean, or per-seed numbers, or (one early record) a
    # val_loss that the reader flags in its notes.
    assert sub.val_bpb is not None or sub.per_seed or sub.val_loss is not None
    if sub.val_bpb is not None:
        assert 0.5 < sub.val_bpb < 3.0
    for result in sub.per_seed:
        assert result.seed
        if result.val_bpb is not None:
            assert 0.5 < result.val_bpb < 3.0
    if sub.tokens_per_byte is not None:
        assert 0.1 < sub.tokens_per_byte <= 1.01
    # Per-seed values either come out whole or the error says why; never a partial list.
    try:
        values = sub.per_seed_values("bpb")
    except SubmissionError as exc:
        assert "reports only a mean" in str(exc) or "has no val_bpb" in str(exc)
    else:
        assert len(values) == len(sub.per_seed) >= 1


# ------------------------------------------------------------------------- quirks, on fixtures


def test_fixture_seed_results_dict_with_full_fields() -> None:
    sub = fixture_submission("2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611.json")
    assert sub.per_seed_source == "seed_results"
    assert sub.seeds == ("42", "0", "1234")
    first = sub.per_seed[0]
    assert first.val_bpb == pytest.approx(1.05989454, abs=1e-9)
    assert first.val_loss == pytest.approx(2.31944212, abs=1e-9)
    assert first.artifact_bytes == 15897259
    assert first.steps == 4945
    assert first.step_avg_ms == pytest.approx(121.3)
    assert first.eval_time_s == pytest.approx(508.8)
    assert sub.bytes_total == 15907550
    assert sub.artifact_bytes == 15901919  # artifact_bytes_mean
    assert sub.author == "Benjamin Hadad" and sub.date == "2026-04-27"


def test_fixture_seeds_dict_qk5() -> None:
    sub = fixture_submission("2026-04-06_SP8192_QK5_LegalTTT_1.0828.json")
    assert sub.per_seed_source == "seeds"
    assert sub.seeds == ("0", "42", "1234")
    seed0 = sub.per_seed[0]
    assert seed0.val_bpb == pytest.approx(1.08209788, abs=1e-9)
    assert seed0.artifact_bytes == 15991018  # per-seed "bytes_total"
    assert seed0.train_time_s == pytest.approx(588.004)
    assert seed0.extra["ttt_time_ms"] == 293430
    assert sub.tokens_per_byte == pytest.approx(1.08209788 * LN2 / 2.79517119, rel=1e-3)


def test_fixture_seeds_dict_a2_gives_the_worked_example_values() -> None:
    sub = fixture_submission("2026-04-09_A2_Muon097_3Seed.json")
    assert sub.per_seed_source == "seeds"
    assert sub.per_seed_values("bpb") == pytest.approx([1.07928348, 1.07996676, 1.08024795],
                                                       abs=1e-9)
    assert sub.per_seed_values("nats") == pytest.approx([2.78790132, 2.78966630, 2.79039264],
                                                        abs=1e-9)
    assert sub.val_bpb == pytest.approx(1.07983273, abs=1e-9)
    assert sub.val_loss == pytest.approx(2.78932009, abs=1e-9)  # "mean_val_loss_nats"


def test_fixture_seeds_plus_seed_scores() -> None:
    sub = fixture_submission("2026-04-03_MuonEqR_DepthRecurrence_WD090_AllInt6.json")
    assert sub.per_seed_source == "seeds+seed_scores"
    assert sub.seeds == ("42", "0", "1337")
    assert sub.per_seed_values("bpb") == pytest.approx([1.09057, 1.09084, 1.09230], abs=1e-9)
    assert sub.val_loss is None and sub.tokens_per_byte is None
    with pytest.raises(SubmissionError, match="has no val_loss"):
        sub.per_seed_values("nats")


def test_fixture_only_a_mean() -> None:
    sub = fixture_submission("2026-03-17_NaiveBaseline.json")
    assert sub.per_seed == () and sub.per_seed_source is None
    assert sub.val_bpb == pytest.approx(1.2243657)
    assert sub.bytes_total == 15863489 and sub.code_bytes == 47642
    with pytest.raises(SubmissionError, match="reports only a mean"):
        sub.per_seed_values("bpb")


def test_fixture_string_p_value_and_run_name() -> None:
    sub = fixture_submission("2026-03-19_MLP3x_QAT_Int6_SlidingWindow.json")
    assert sub.p_value is None and sub.p_value_text == "<0.001"
    assert sub.name == "11L_MLP3x_WD04_Int6QAT_Zstd22_SlidingWindow"
    assert sub.artifact_bytes == 15427455  # artifact_bytes_mean
    assert sub.per_seed == ()  # "seeds" is only a list of seed numbers there


def test_fixture_numeric_p_value_and_mean_keys() -> None:
    sub = fixture_submission("2026-03-19_SlidingWindow_FP16Emb_10L_MuonWD_OvertoneInit.json")
    assert sub.p_value == pytest.approx(0.0001)
    assert sub.val_bpb == pytest.approx(1.17475315)  # mean_val_bpb
    assert sub.val_loss == pytest.approx(1.98352149)  # mean_val_loss
    assert sub.code_bytes == 50651 and sub.artifact_bytes == 15374243
    assert [r.step_avg_ms for r in sub.per_seed] == pytest.approx([57.55, 56.06, 57.18])


def test_fixture_null_val_loss_and_missing_code_bytes() -> None:
    sub = fixture_submission("2026-03-19_SwiGLU_WarmdownFix_QuarterBatch_1x5090.json")
    assert sub.val_loss is None and sub.code_bytes is None
    assert sub.val_bpb == pytest.approx(1.32814313)
    assert sub.hardware == "1xRTX5090"  # from "gpu"


def test_fixture_artifact_size_bytes_and_no_name() -> None:
    sub = fixture_submission("2026-03-19_smeargate_orthoinit_muonwd.json")
    assert sub.artifact_bytes == 15878809
    assert sub.name is None and sub.label == "2026-03-19_smeargate_orthoinit_muonwd.json"


def test_fixture_bpb_stored_as_val_loss_is_flagged() -> None:
    sub = fixture_submission("2026-03-20_10L_Int5MLP_MuonWD04_SWA50.json")
    assert sub.val_bpb is None and sub.val_loss == pytest.approx(1.14276)
    assert any("bpb under val_loss" in note for note in sub.notes)


def test_fixture_compliance_rerun() -> None:
    sub = fixture_submission("2026-04-29_SmearGateBOSFix_3Seed_1.06141.json")
    assert sub.seeds == ("42", "314", "1234")
    assert [r.seed for r in sub.compliance_rerun] == ["42", "314", "1234"]
    assert sub.compliance_rerun[0].val_bpb == pytest.approx(1.06083288)
    assert sub.compliance_rerun[0].train_time_s == pytest.approx(592.054)
    assert sub.per_seed[0].val_bpb == pytest.approx(1.06128183)


def test_fixture_seed_without_val_bpb() -> None:
    sub = fixture_submission("2026-03-29_LLaDA_MDLM_Diffusion.json")
    assert sub.seeds == ("42",) and sub.per_seed[0].val_bpb is None
    with pytest.raises(SubmissionError, match="val_var_bpb"):
        sub.per_seed_values("bpb")


def test_fixture_five_decimal_and_five_seed_values() -> None:
    sub = fixture_submission("2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2.json")
    assert len(sub.per_seed) == 5
    assert sub.per_seed_values("bpb")[0] == pytest.approx(1.08554, abs=1e-12)
    assert sub.code_bytes == 15516


# ------------------------------------------------------------------------- own data, plain clone


def test_own_current_schema() -> None:
    sub = load_submission(OWN / "current_schema.json")
    assert sub.per_seed_source == "seed_results"
    assert sub.seeds == ("7", "11", "13")
    assert sub.per_seed_values("bpb") == pytest.approx([1.1492, 1.1501, 1.1507])
    assert sub.tokens_per_byte == pytest.approx(0.41, rel=1e-6)
    assert sub.p_value == pytest.approx(0.0042) and sub.p_value_text == "0.0042"
    assert sub.code_bytes == 51234 and sub.bytes_total == 15900003
    assert sub.per_seed[2].eval_time_s == pytest.approx(403.5)
    assert sub.name == "Plain Seed Results" and sub.github_id == "test-author"
    assert sub.notes == ()


def test_own_seeds_dict() -> None:
    sub = load_submission(OWN / "seeds_dict.json")
    assert sub.per_seed_source == "seeds"
    assert sub.val_bpb == pytest.approx(1.2001)  # mean_bpb
    assert [r.artifact_bytes for r in sub.per_seed] == [15800001, 15800002]
    assert [r.train_time_s for r in sub.per_seed] == pytest.approx([588.0, 588.5])
    assert sub.artifact_bytes == 15800002  # artifact_size_bytes


def test_own_seed_scores_and_string_p_value() -> None:
    sub = load_submission(OWN / "seed_scores.json")
    assert sub.per_seed_values("bpb") == pytest.approx([1.3001, 1.3003, 1.3005])
    assert sub.p_value is None and sub.p_value_text == "<0.001"
    assert sub.artifact_bytes == 15700000


def test_own_mean_only() -> None:
    sub = load_submission(OWN / "mean_only.json")
    assert sub.name == "Only A Mean"  # run_name
    assert sub.val_loss is None and sub.code_bytes == 48000
    with pytest.raises(SubmissionError, match=r"reports only a mean \(1\.25\)"):
        sub.per_seed_values("bpb")


def test_own_compliance_rerun() -> None:
    sub = load_submission(OWN / "compliance_rerun.json")
    assert sub.per_seed_values("bpb") == pytest.approx([1.10001, 1.10003])
    assert [r.val_bpb for r in sub.compliance_rerun] == pytest.approx([1.10011, 1.10013])
    assert sub.code_bytes == 20000 and sub.tokens_per_byte is None


def test_own_bpb_in_val_loss_is_flagged() -> None:
    sub = load_submission(OWN / "bpb_in_val_loss.json")
    assert sub.val_bpb is None
    assert any("bpb under val_loss" in note for note in sub.notes)


def test_odd_values_are_noted_not_crashed_on(tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({
        "val_bpb": "1.2345",
        "seed_results": {"1": {"val_bpb": "n/a"}, "2": [1, 2]},
        "bytes_total": True,
        "seeds": [1, 2],
        "seed_scores": [1.0],
    }))
    sub = load_submission(path)
    assert sub.val_bpb == pytest.approx(1.2345)
    assert sub.bytes_total is None
    assert len(sub.per_seed) == 1 and sub.per_seed[0].val_bpb is None
    assert any("'n/a'" in note for note in sub.notes)
    assert any("seed_results.2" in note for note in sub.notes)
    assert any("boolean" in note for note in sub.notes)


def test_mean_computed_from_seeds_is_noted(tmp_path: Path) -> None:
    path = tmp_path / "no_mean.json"
    path.write_text(json.dumps({"seed_results": {"1": {"val_bpb": 1.1}, "2": {"val_bpb": 1.3}}}))
    sub = load_submission(path)
    assert sub.val_bpb == pytest.approx(1.2)
    assert any("computed from the 2 seeds" in note for note in sub.notes)


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("{not json", "not valid JSON: .* line 1, column 2"),
    ("[1, 2]", "holds a JSON list"),
])
def test_unreadable_files_give_clear_errors(tmp_path: Path, content: str | None,
                                            message: str) -> None:
    path = tmp_path / "submission.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SubmissionError, match=message):
        load_submission(path)


# ------------------------------------------------------------------------- writing


def _seeds() -> list[SeedResult]:
    return [
        SeedResult("42", val_bpb=1.06101234, val_loss=2.32101234, artifact_bytes=15901000,
                   steps=4940, step_avg_ms=121.4, train_time_s=596.1, eval_time_s=450.5),
        SeedResult("0", val_bpb=1.06201234, val_loss=2.32301234, artifact_bytes=15902000,
                   steps=4941, step_avg_ms=121.5, train_time_s=596.2, eval_time_s=451.5),
        SeedResult("1234", val_bpb=1.06301234, val_loss=2.32501234, artifact_bytes=15903000,
                   steps=4942, step_avg_ms=121.6, train_time_s=596.3, eval_time_s=452.5),
    ]


def _write(path: Path, **overrides: object) -> dict:
    fields = dict(name="Verified Config", author="Jane Golfer", github_id="janegolfer",
                  seed_results=_seeds(), hardware="8xH100 80GB SXM",
                  versions={"pytorch": "2.9.1+cu128", "cuda": "12.8"}, date="2026-05-02",
                  blurb="A verification batch.", code_bytes=52000,
                  technique_summary="baseline + QAT")
    fields.update(overrides)
    return write_submission(path, **fields)


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "record" / "submission.json"
    written = _write(path)
    sub = load_submission(path)
    assert sub.raw == written
    assert sub.name == "Verified Config" and sub.author == "Jane Golfer"
    assert sub.github_id == "janegolfer" and sub.date == "2026-05-02"
    assert sub.track == "10min_16mb" and sub.hardware == "8xH100 80GB SXM"
    assert sub.per_seed_source == "seed_results"
    assert sub.per_seed == tuple(_seeds())
    assert sub.val_bpb == pytest.approx(1.06201234, abs=1e-8)
    assert sub.val_loss == pytest.approx(2.32301234, abs=1e-8)
    assert sub.bytes_total == 15903000  # the largest seed's artifact: what must fit the cap
    assert sub.code_bytes == 52000
    assert sub.notes == ()
    assert written["seeds"] == [42, 0, 1234]
    assert written["val_bpb_std"] == pytest.approx(0.001, abs=1e-8)  # sample std, ddof=1
    assert written["pytorch_version"] == "2.9.1+cu128" and written["cuda_version"] == "12.8"
    assert written["artifact_bytes_mean"] == 15902000
    assert written["train_steps_mean"] == pytest.approx(4941)
    assert not list(tmp_path.joinpath("record").glob("*.tmp")), "no temp file left behind"


def test_written_schema_matches_the_newest_records(tmp_path: Path) -> None:
    newest = json.loads(shared_fixture(
        "submissions", "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611.json",
    ).read_text())
    written = _write(tmp_path / "submission.json")
    core = {"author", "github_id", "name", "date", "track", "val_loss", "val_bpb", "val_loss_std",
            "val_bpb_std", "seeds", "seed_results", "artifact_bytes_mean", "artifact_bytes_max",
            "bytes_total", "train_steps_mean", "step_avg_ms_mean", "hardware", "pytorch_version",
            "cuda_version", "technique_summary", "blurb"}
    assert core <= set(newest) and core <= set(written)
    newest_seed_keys = set(next(iter(newest["seed_results"].values())))
    assert newest_seed_keys <= set(written["seed_results"]["42"])
    assert all(isinstance(seed, str) for seed in written["seed_results"])


def test_single_seed_has_no_std(tmp_path: Path) -> None:
    written = _write(tmp_path / "s.json", seed_results=_seeds()[:1])
    assert "val_bpb_std" not in written and written["val_bpb"] == pytest.approx(1.06101234)


@pytest.mark.parametrize("overrides, message", [
    ({"seed_results": []}, "at least one seed"),
    ({"seed_results": [SeedResult("1", val_bpb=1.1)]}, "lacks val_bpb or val_loss"),
    ({"seed_results": [SeedResult("1", 1.1, 2.0), SeedResult("1", 1.2, 2.1)]}, "appears twice"),
    ({"extra": {"val_bpb": 1.0}}, "would replace the computed 'val_bpb'"),
])
def test_writer_rejects_bad_input(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(SubmissionError, match=message):
        _write(tmp_path / "s.json", **overrides)
    assert not (tmp_path / "s.json").exists()


def test_writer_extra_keys_and_default_date(tmp_path: Path) -> None:
    written = submission_dict(name="n", author="a", github_id="g", seed_results=_seeds(),
                              hardware="2xH100", extra={"p_value": 0.003})
    assert written["p_value"] == 0.003
    assert len(written["date"]) == 10 and written["date"][4] == "-"
    assert "bytes_code" not in written and "blurb" not in written
