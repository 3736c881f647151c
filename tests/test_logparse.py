"""Tests of sweeps.logparse: the challenge's logs, our own logs, streaming, bad input, the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SHARED_FIXTURES, TEST_DATA, shared_fixture
from sweeps.logparse import (
    HEADLINE_FAMILIES,
    LogEvent,
    LogParser,
    headline_metric,
    parse_log_file,
    parse_log_text,
    says_nothing,
    seed_from_filename,
)
from sweeps.commands.parse_log import format_summary, register

# The fields of the fixtures' *.expected.json that describe the log itself (their `headline`
# block is what the record *reported*, checked separately below).
SCHEMA_FIELDS = (
    "seed", "seed_from_filename", "training_runs_in_file", "last_step", "planned_iterations",
    "step_avg_ms", "step_avg_ms_last_train_line", "train_time_ms", "stopped_early_wallclock",
    "code_bytes", "code_bytes_uncompressed", "total_submission_bytes", "total_submission_label",
    "raw_total_submission_bytes", "last_val_line", "final_metrics",
)
EXTRA_FIELDS = (
    "headline", "eval_time_ms_total", "model_params", "peak_memory_mib", "model_bytes",
    "final_eval_mode", "over_size_limit",
)
OWN_LOGS = TEST_DATA / "logs"
OWN_LOG_NAMES = sorted(p.name[:-len(".expected.json")] for p in OWN_LOGS.glob("*.expected.json"))
FIXTURE_LOGS = SHARED_FIXTURES / "logs"
FIXTURE_LOG_NAMES = (
    sorted(p.name[:-len(".expected.json")] for p in FIXTURE_LOGS.glob("*.expected.json"))
    if FIXTURE_LOGS.is_dir() else ["(challenge fixtures absent)"])


def field_diffs(expected, got, path: str = "") -> list[str]:
    """Differences between two parsed values: floats within 1e-9, ints stay ints, None is None."""
    if isinstance(expected, dict) and isinstance(got, dict):
        diffs = []
        for key in list(expected) + [k for k in got if k not in expected]:
            where = f"{path}.{key}" if path else key
            if key not in got:
                diffs.append(f"{where}: missing, expected {expected[key]!r}")
            elif key not in expected:
                diffs.append(f"{where}: unexpected {got[key]!r}")
            else:
                diffs.extend(field_diffs(expected[key], got[key], where))
        return diffs
    if type(expected) is not type(got):
        return [f"{path}: expected {expected!r} ({type(expected).__name__}), "
                f"got {got!r} ({type(got).__name__})"]
    if isinstance(expected, float):
        close = abs(expected - got) <= 1e-9
        return [] if close else [f"{path}: expected {expected!r}, got {got!r}"]
    return [] if expected == got else [f"{path}: expected {expected!r}, got {got!r}"]


def assert_fields_match(expected: dict, got: dict, fields, name: str) -> None:
    diffs = []
    for field in fields:
        diffs.extend(field_diffs({field: expected[field]}, {field: got[field]}))
    assert not diffs, f"{name}: {len(diffs)} field(s) differ:\n  " + "\n  ".join(diffs)


def fixture_pair(name: str) -> tuple[Path, dict]:
    log = shared_fixture("logs", name)
    expected = json.loads(shared_fixture("logs", name + ".expected.json").read_text("utf-8"))
    return log, expected


# --- the challenge's real logs --------------------------------------------------------------------
@pytest.mark.parametrize("name", FIXTURE_LOG_NAMES)
def test_fixture_log_matches_expected(name):
    log, expected = fixture_pair(name)
    assert_fields_match(expected, parse_log_file(log), SCHEMA_FIELDS, name)


@pytest.mark.parametrize("name", FIXTURE_LOG_NAMES)
def test_fixture_headline_is_the_reported_metric_or_a_ttt_result(name):
    """Our headline is the metric the record reported, unless the run also printed a TTT
    evaluation, which the headline rule deliberately prefers (see headline_metric)."""
    log, expected = fixture_pair(name)
    summary = parse_log_file(log)
    headline = summary["headline"]
    if summary["final_metrics"]:
        assert headline is not None
        metric = summary["final_metrics"][headline["label"]]
        assert headline["val_loss"] == metric["val_loss"]
        assert headline["val_bpb"] == metric["val_bpb"]
    else:
        assert headline is None
    primary = expected["headline"].get("primary_log_metric")
    if primary is None:
        return
    if headline["label"] != primary:
        primary_family = headline_metric({primary: summary["final_metrics"][primary]})["family"]
        assert headline["family"] in ("legal_ttt", "ttt") and primary_family not in ("legal_ttt",
                                                                                      "ttt"), \
            f"{name}: headline {headline['label']} but the record reports {primary}"


def test_fixture_logs_with_extras_are_plausible(shared_fixtures):
    """Extra fields on real logs: eval times add up, sizes are flagged against the cap."""
    summary = parse_log_file(
        shared_fixtures / "logs" / "2026-03-23_LeakyReLU_LegalTTT_ParallelMuon__train_seed1337.log")
    assert summary["headline"]["label"] == "legal_ttt_exact"
    # DIAGNOSTIC post_ema 1971 + int6 roundtrip 6562 + sliding window 74066 + legal_ttt 410268
    assert summary["eval_time_ms_total"] == 492867
    assert summary["model_params"] > 0 and summary["peak_memory_mib"] > 0
    assert summary["over_size_limit"] is False
    over = parse_log_file(
        shared_fixtures / "logs" / "2026-03-19_int6_STE QAT_ MLP_bigram _U_Net__train.log")
    assert over["total_submission_bytes"] == 16186500 and over["over_size_limit"] is True


# --- our own logs (the same code paths, in any clone) ---------------------------------------------
def test_own_logs_exist():
    assert len(OWN_LOG_NAMES) >= 5, f"expected the hand-written logs in {OWN_LOGS}"


@pytest.mark.parametrize("name", OWN_LOG_NAMES)
def test_own_log_matches_expected(name):
    expected = json.loads((OWN_LOGS / (name + ".expected.json")).read_text("utf-8"))
    got = parse_log_file(OWN_LOGS / name)
    assert set(got) == set(SCHEMA_FIELDS) | set(EXTRA_FIELDS)
    assert_fields_match(expected, got, SCHEMA_FIELDS + EXTRA_FIELDS, name)


def _all_logs() -> list[Path]:
    logs = [OWN_LOGS / name for name in OWN_LOG_NAMES]
    if FIXTURE_LOGS.is_dir():
        logs += [FIXTURE_LOGS / name for name in FIXTURE_LOG_NAMES]
    return logs


@pytest.mark.parametrize("log", _all_logs(), ids=lambda p: p.name)
def test_streaming_gives_the_whole_file_summary(log):
    whole = parse_log_file(log)
    text = log.read_bytes().decode("utf-8", errors="replace")
    assert parse_log_text(text, log.name) == whole
    for variant in (text.splitlines(True), text.splitlines(), text.replace("\n", "\r\n")
                    .splitlines(True)):
        parser = LogParser(log.name)
        for line in variant:
            parser.feed(line)
        assert parser.summary() == whole


def test_timestamp_prefix_is_ignored():
    log = OWN_LOGS / "refactored_seed42.log"
    plain = parse_log_file(log)
    stamped = "".join(f"{1776142719.4 + i / 10:.3f} {line}"
                      for i, line in enumerate(log.read_text("utf-8").splitlines(True)))
    assert parse_log_text(stamped, log.name) == plain


# --- streaming events -----------------------------------------------------------------------------
def _events(path: Path) -> list[LogEvent]:
    parser = LogParser(path.name)
    events = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            events.extend(parser.feed(line))
    return events


def test_events_of_a_golf_log_arrive_in_order():
    events = _events(OWN_LOGS / "golf_seed1337.log")
    # The source-code dump at the top of the file yields nothing: the first event is the run's.
    assert events[0] == LogEvent("seed", {"seed": 1337})
    vals = [e.values for e in events if e.kind == "val"]
    assert [v["step"] for v in vals] == [0, 1000, 13781]
    assert vals[1] == {"step": 1000, "total": 20000, "val_loss": 2.2613, "val_bpb": 1.3393,
                       "train_time_ms": 43561, "step_avg_ms": 43.56}
    trains = [e.values for e in events if e.kind == "train"]
    assert trains[1] == {"step": 200, "total": 20000, "train_loss": 2.8123, "train_time_ms": 8712,
                         "step_avg_ms": 43.56}
    stop = [e.values for e in events if e.kind == "stopping_early"]
    assert stop == [{"reason": "wallclock_cap", "train_time_ms": 600031, "step": 13781,
                     "total": 20000}]
    sizes = [(e.values["kind"], e.values["label"], e.values["bytes"])
             for e in events if e.kind == "size"]
    assert sizes == [("model", None, 67224983), ("code", None, 47642),
                     ("raw_total", None, 67272625), ("model", "int6+zstd-22", 15168579),
                     ("total", "int6+zstd-22", 15216221)]
    finals = [e.values for e in events if e.kind == "final"]
    assert [f["label"] for f in finals] == [
        "final_int6_zstd_roundtrip", "final_int6_zstd_roundtrip_exact", "final_sliding_window",
        "final_sliding_window_exact"]
    assert finals[0] == {"label": "final_int6_zstd_roundtrip", "val_loss": 2.0055,
                         "val_bpb": 1.1877, "eval_time_ms": 1401}


def test_refactored_train_lines_convert_minutes():
    trains = [e.values for e in _events(OWN_LOGS / "refactored_seed42.log") if e.kind == "train"]
    assert trains[1] == {"step": 500, "total": 20000, "train_loss": 3.3872,
                         "train_time_ms": 48000, "step_avg_ms": None}


def test_feed_returns_events_per_line_and_events_are_frozen():
    parser = LogParser()
    assert parser.feed("W0318 12:00:00.000 1 torch/distributed/run.py:792] warning\n") == []
    (event,) = parser.feed("step:5/10 train_loss:3.5000 train_time:100ms step_avg:20.00ms")
    assert event.kind == "train" and event.values["step"] == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.kind = "val"  # type: ignore[misc]
    # Several lines in one string (a \r progress redraw) are split.
    kinds = [e.kind for e in parser.feed("step:6/10 train_loss:3.4\rstep:6/10 val_loss:3.3 "
                                         "val_bpb:1.9\n")]
    assert kinds == ["train", "val"]


# --- line formats ---------------------------------------------------------------------------------
@pytest.mark.parametrize("line, label, metric", [
    ("final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms",
     "final_int8_zlib_roundtrip", {"val_loss": 2.0727, "val_bpb": 1.2244}),
    ("final_sliding_window_eval_exact stride:64 val_loss:1.96369923 val_bpb:1.16301431",
     "final_sliding_window_eval_exact",
     {"val_loss": 1.96369923, "val_bpb": 1.16301431, "stride": 64}),
    ("final_sliding val_loss:2.9877 val_bpb:1.1568 (stride=16, T=0.90) eval_time:428712ms",
     "final_sliding", {"val_loss": 2.9877, "val_bpb": 1.1568}),
    ("ttt_sliding:done val_loss=1.891102 val_bpb=1.120020 elapsed=407.5s",
     "ttt_sliding:done", {"val_loss": 1.891102, "val_bpb": 1.12002}),
    ("final_int8_zlib_roundtrip sliding val_loss:2.0210 sliding val_bpb:1.1969 eval_time:9ms",
     "final_int8_zlib_roundtrip sliding", {"val_loss": 2.021, "val_bpb": 1.1969}),
    ("final_int8_zlib_roundtrip_exact sliding val_loss:2.0209534 sliding val_bpb:1.19692464W0318 "
     "11:59:00.1 1 run.py:792] spliced console output",
     "final_int8_zlib_roundtrip_exact sliding", {"val_loss": 2.0209534, "val_bpb": 1.19692464}),
    ("diagnostic pre-quantization post-ema val_loss:2.76877360 val_bpb:1.07184400 eval_time:5993ms",
     "diagnostic pre-quantization post-ema", {"val_loss": 2.7687736, "val_bpb": 1.071844}),
    ("1776142719.400 quantized_ttt_phased val_loss:2.76951521 val_bpb:1.07216564 eval_time:5ms",
     "quantized_ttt_phased", {"val_loss": 2.76951521, "val_bpb": 1.07216564}),
])
def test_final_metric_lines(line, label, metric):
    summary = parse_log_text(line)
    assert summary["final_metrics"] == {label: metric}
    assert summary["training_runs_in_file"] == 0


@pytest.mark.parametrize("line", [
    '    log0(f"final_int8_zlib_roundtrip_exact val_loss:{q_loss:.8f} val_bpb:{q_bpb:.8f}")',
    'print(f"final_int6_roundtrip val_loss:{1.0:.4f} val_bpb:{1.0:.4f}")',
    '    seed = int(os.environ.get("SEED", 1337))',
    "        seed = 0",
    "step:1000 churn:0.0453",
    "step:1 QAT started (INT4)",
    "step:100000 checkpoint saved",
    "step:500 val_loss:2.5000 val_bpb:1.4000",
    "layer_loop:enabled step:2145 frac:0.350",
    "warmup_step:1/20",
    "warmup_step: 1/20",
    "loop_warmup_step: 1/20",
    "swa_started: step:3295 every:50",
    "ttt_progress: batch 10/100 running_bpb:1.230311",
    "tttg: c1/111 lr:0.001000 loss:2.3",
    "  eval: batch 20/100 running_loss:2.0368",
    "  ttt_chunk [1/1893] bpb=1.241882 time=0.4s",
    "ema_val_loss:2.1019 ema_val_bpb:1.2449",
    "Uploading train_gpt.py (55483 bytes)...",
    "  INT4+fp8+brotli: 15.42MB model + 0.077MB code = 15.50/16.00MB FITS",
    "est_raw:17.9MB (pre-compression) budget:16.00MB",
    "val_loss_every=4000 seed=notanumber",
])
def test_look_alike_lines_report_nothing(line):
    parser = LogParser()
    assert parser.feed(line) == []
    summary = parser.summary()
    assert summary["final_metrics"] == {} and summary["seed"] is None
    assert summary["last_step"] is None and summary["training_runs_in_file"] == 0


@pytest.mark.parametrize("line, seed", [
    ("seed:1337", 1337),
    ("  seed: 42", 42),
    ("  SEED=42", 42),
    ("activation_type=relu2 adam_eps=1e-08 seed=314 vocab_size=8192", 314),
    ("params:73685840 L:10 d:768 h:8 kv:4 ws:8 ga:1 s:1337", 1337),
    ("JEPA | params:36,915,884 (eval:32,816,684 train_only:4,099,200) L:10 ws:8 ga:1 s:42", 42),
])
def test_seed_lines(line, seed):
    assert parse_log_text(line)["seed"] == seed


@pytest.mark.parametrize("name, seed", [
    ("train_seed1338.log", 1338),
    ("train_seed_42.txt", 42),
    ("log_10mins_seed-1337.txt", 1337),
    ("4096_hybrid448_s1337.txt", 1337),
    ("ternary_log_42.txt", 42),
    ("train_seed1234_rerun_gptq8s.log", 1234),
    ("runs/exp1/seed_0.log", 0),
    ("2026-04-29_SmearGate_3Seed_1.06141__train_seed314_original.log", 314),
    ("2026-04-29_SmearGate_3Seed_1.06141__train.log", None),
    ("hybrid_gdn_1xh100_600s_seq16384.txt", None),
    ("log_eggroll_lora.txt", None),
    ("train0.txt", None),
    ("train.log", None),
])
def test_seed_from_filename(name, seed):
    assert seed_from_filename(name) == seed


def test_legendre_style_sizes_and_resumed_run():
    summary = parse_log_text(
        "Resuming from checkpoint: ./checkpoints/ckpt_step30000.pt\n"
        "step:30000/60000 val_loss:2.0349 val_bpb:1.2215 train_time:47870254ms\n"
        "step:30020/60000 train_loss:2.0055 lr_mul:0.0999 train_time:47902516ms "
        "step_avg:1595.69ms\n"
        "step:60000/60000 val_loss:2.0322 val_bpb:1.2079 train_time:96562184ms\n"
        "peak memory: 23749 MiB\n"
        "Raw model: 85587955 bytes | Code: 70969 bytes | Total: 85658924\n"
        "INT7+zlib model: 15370972 bytes | Total submission: 15441941 bytes\n"
        "final_INT7_zlib_roundtrip val_loss:2.0784 val_bpb:1.2353\n")
    assert summary["training_runs_in_file"] == 1
    assert (summary["last_step"], summary["train_time_ms"]) == (60000, 96562184)
    assert summary["step_avg_ms"] == 1595.69 and summary["stopped_early_wallclock"] is False
    assert summary["code_bytes"] == 70969 and summary["raw_total_submission_bytes"] == 85658924
    assert summary["total_submission_bytes"] == 15441941
    assert summary["total_submission_label"] is None
    assert summary["model_bytes"] == 15370972 and summary["peak_memory_mib"] == 23749
    assert summary["headline"]["family"] == "roundtrip" and summary["seed"] is None


def test_sizes_given_in_megabytes_only_stay_null():
    summary = parse_log_text(
        "step:6090/10000 val_loss:3.3782 val_bpb:1.3080 train_time:600460ms\n"
        "stopping_early: wallclock_cap train_time:600460ms step:6090/10000\n"
        "  INT4+fp8+brotli: 15.42MB model + 0.077MB code = 15.50/16.00MB FITS\n"
        "final_roundtrip val_loss:3.2855 val_bpb:1.2721\n")
    assert summary["code_bytes"] is None and summary["total_submission_bytes"] is None
    assert summary["over_size_limit"] is None


def test_eval_only_log_has_no_training_run():
    summary = parse_log_text(
        "Hyperparameters:\n  seed: 0\n  ttt_eval_only: True\n"
        "diagnostic quantized val_loss:2.35 val_bpb:1.07 eval_time:40000ms\n"
        "quantized_ttt_phased val_loss:2.32641216 val_bpb:1.06307957 eval_time:416500ms\n")
    assert summary["training_runs_in_file"] == 0 and summary["seed"] == 0
    assert summary["last_step"] is None and summary["stopped_early_wallclock"] is False
    assert summary["headline"] == {"label": "quantized_ttt_phased", "val_loss": 2.32641216,
                                   "val_bpb": 1.06307957, "family": "ttt"}
    assert summary["eval_time_ms_total"] == 456500


def test_two_unlabelled_totals_are_raw_then_artifact():
    summary = parse_log_text("Serialized model: 87412311 bytes\nCode size: 52183 bytes\n"
                             "Total submission size: 87464494 bytes\n"
                             "Serialized model int6+lzma: 15847002 bytes\n"
                             "Total submission size: 15899185 bytes\n")
    assert summary["raw_total_submission_bytes"] == 87464494
    assert summary["total_submission_bytes"] == 15899185
    assert summary["total_submission_label"] is None and summary["model_bytes"] == 15847002


def test_a_lone_uncompressed_code_size_is_the_code_size():
    summary = parse_log_text("Code size (uncompressed): 121884 bytes\n")
    assert summary["code_bytes"] == 121884 and summary["code_bytes_uncompressed"] is None


def test_size_limit_is_inclusive():
    assert parse_log_text("Total submission size int6+zstd: 16000000 bytes")[
        "over_size_limit"] is False
    assert parse_log_text("Total submission size int6+zstd: 16000001 bytes")[
        "over_size_limit"] is True


def test_a_later_run_does_not_inherit_the_earlier_runs_preamble():
    summary = parse_log_file(OWN_LOGS / "two_runs_seed7.log")
    assert summary["training_runs_in_file"] == 2
    assert summary["seed"] == 7
    assert summary["model_params"] is None  # printed by the first run only
    assert summary["final_eval_mode"] is None  # the first run's sliding-window mode line


def test_headline_families_in_order():
    metrics = {
        "pre-quantization post-ema": {"val_loss": 2.54, "val_bpb": 1.10},
        "final_int6_roundtrip_exact": {"val_loss": 2.56, "val_bpb": 1.11},
        "final_int6_sliding_window": {"val_loss": 2.52, "val_bpb": 1.098},
        "final_int6_sliding_window_exact": {"val_loss": 2.52, "val_bpb": 1.0979},
        "ttt_sliding:done": {"val_loss": 2.51, "val_bpb": 1.0970},
        "legal_ttt_exact": {"val_loss": 2.51, "val_bpb": 1.09701},
    }
    chosen = []
    while metrics:
        headline = headline_metric(metrics)
        chosen.append((headline["label"], headline["family"]))
        del metrics[headline["label"]]
    assert chosen == [
        ("legal_ttt_exact", "legal_ttt"), ("ttt_sliding:done", "ttt"),
        ("final_int6_sliding_window_exact", "sliding_window"),
        ("final_int6_sliding_window", "sliding_window"),
        ("final_int6_roundtrip_exact", "roundtrip"), ("pre-quantization post-ema", "pre_quant")]
    assert {family for _, family in chosen} <= set(HEADLINE_FAMILIES)
    assert headline_metric({}) is None


# --- it never crashes -----------------------------------------------------------------------------
def _assert_sane(summary: dict) -> None:
    assert set(summary) == set(SCHEMA_FIELDS) | set(EXTRA_FIELDS)
    json.dumps(summary, allow_nan=False)
    assert isinstance(summary["final_metrics"], dict)
    assert summary["training_runs_in_file"] >= 0


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    summary = parse_log_file(empty)
    _assert_sane(summary)
    assert summary == {**{field: None for field in SCHEMA_FIELDS + EXTRA_FIELDS},
                       "training_runs_in_file": 0, "stopped_early_wallclock": False,
                       "final_metrics": {}}


def test_random_bytes(tmp_path):
    rng = random.Random(20260418)
    for index in range(40):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20_000)))
        path = tmp_path / f"junk_seed{index}.bin"
        path.write_bytes(blob)
        summary = parse_log_file(path)
        _assert_sane(summary)
        assert summary["seed_from_filename"] == index


def test_non_utf8_bytes_around_real_lines(tmp_path):
    path = tmp_path / "latin1.log"
    path.write_bytes(b"caf\xe9 \xff\xfe\x00 noise\nseed:42\n\x80\x81step:10/100 train_loss:3.0\n"
                     b"step:10/100 val_loss:3.1 val_bpb:1.8 train_time:500ms\n"
                     b"Total submission size int8+zlib: 15000000 bytes\xe9\n")
    summary = parse_log_file(path)
    _assert_sane(summary)
    assert summary["seed"] == 42 and summary["last_val_line"] == {
        "step": 10, "val_loss": 3.1, "val_bpb": 1.8}
    assert summary["total_submission_bytes"] == 15000000


def test_huge_lines_and_huge_numbers():
    parser = LogParser()
    assert parser.feed("step:1/2 train_loss:1.0 " + "x" * 5_000_000) == []
    assert parser.feed("final_x val_loss:1.0 val_bpb:" + "9" * 100_000) == []
    assert parser.feed("step:" + "9" * 5000 + "/1 train_loss:1.0") == []
    assert parser.feed("seed:" + "1" * 5000) == []
    assert parser.feed("Total submission size: " + "7" * 5000 + " bytes") == []
    _assert_sane(parser.summary())


def test_file_without_line_breaks_and_carriage_return_progress(tmp_path):
    path = tmp_path / "progress.log"
    # 3 MB with no line break (read in chunks and skipped), then a \r-redrawn progress bar whose
    # last redraw is followed by the final metric on the same \n-terminated line.
    path.write_bytes(b"\x00junk" * 600_000 + b"\nseed:5\n"
                     + b"".join(b"\rttt 50%% |%d" % i for i in range(20_000))
                     + b"\rlegal_ttt_exact val_loss:2.08117690 val_bpb:1.23257690\n")
    summary = parse_log_file(path)
    assert summary["seed"] == 5
    assert summary["headline"]["label"] == "legal_ttt_exact"
    assert parse_log_text(path.read_bytes().decode("utf-8", errors="replace")) == summary


def test_source_code_only_file(tmp_path):
    code = (REPO_ROOT / "sweeps" / "logparse.py").read_text("utf-8")
    code += (OWN_LOGS / "golf_seed1337.log").read_text("utf-8").split("=" * 100)[0]
    path = tmp_path / "train_gpt.py"
    path.write_text(code, "utf-8")
    summary = parse_log_file(path)
    _assert_sane(summary)
    assert summary["final_metrics"] == {} and summary["training_runs_in_file"] == 0
    assert summary["seed"] is None and summary["total_submission_bytes"] is None


def test_truncated_copies(tmp_path):
    sources = [OWN_LOGS / name for name in OWN_LOG_NAMES]
    if FIXTURE_LOGS.is_dir():
        sources += [FIXTURE_LOGS / name for name in FIXTURE_LOG_NAMES]
    rng = random.Random(7)
    for source in sources:
        data = source.read_bytes()
        cuts = {rng.randrange(len(data)) for _ in range(4)} | {len(data) // 2}
        for cut in sorted(cuts):
            path = tmp_path / f"cut_{cut}_{source.name}"
            path.write_bytes(data[:cut])
            _assert_sane(parse_log_file(path))
            path.unlink()


def test_truncated_after_training_keeps_what_was_printed():
    text = (OWN_LOGS / "golf_seed1337.log").read_text("utf-8")
    cut = text[:text.index("peak memory")]
    summary = parse_log_text(cut)
    assert summary["last_step"] == 13781 and summary["stopped_early_wallclock"] is True
    assert summary["final_metrics"] == {} and summary["headline"] is None
    assert summary["total_submission_bytes"] is None and summary["over_size_limit"] is None
    # Cut in the middle of the last val line's number: it still parses, as what was printed.
    partial = parse_log_text(text[:text.index("step:13781/20000 val_loss") + len("step:13781/20")])
    _assert_sane(partial)
    assert partial["last_step"] == 13750


# --- CLI ------------------------------------------------------------------------------------------
def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sweeps")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_help_says_what_it_extracts(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli("parse-log", "--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "headline" in out and "null" in out and "--json" in out


def test_cli_human_output_starts_with_the_headline(capsys):
    log = str(OWN_LOGS / "golf_ttt_s42.txt")
    assert _cli("parse-log", log) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"file: {log}"
    assert lines[1] == "headline: legal_ttt_exact (legal_ttt) val_bpb=1.2325769 val_loss=2.0811769"
    assert "seed: 1337" in lines and "raw_total_submission_bytes: null" in lines
    assert format_summary(parse_log_file(log)).splitlines()[0].startswith("headline: ")


def test_cli_json_one_file_is_an_object(capsys):
    log = str(OWN_LOGS / "refactored_seed42.log")
    assert _cli("parse-log", log, "--json") == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["file"] == log and obj == {"file": log, **parse_log_file(log)}


def test_cli_json_several_files_keep_argument_order(capsys):
    logs = [str(OWN_LOGS / name) for name in reversed(OWN_LOG_NAMES)]
    assert _cli("parse-log", "--json", *logs) == 0
    assert [obj["file"] for obj in json.loads(capsys.readouterr().out)] == logs


def test_cli_missing_file_is_reported_and_the_rest_printed(capsys, tmp_path):
    missing = str(tmp_path / "nope.log")
    good = str(OWN_LOGS / "two_runs_seed7.log")
    assert _cli("parse-log", missing, good, str(tmp_path), "--json") == 2
    captured = capsys.readouterr()
    assert missing in captured.err and str(tmp_path) in captured.err
    assert [obj["file"] for obj in json.loads(captured.out)] == [good]


_CLI_PROGRAM = (
    "import argparse, sys\n"
    "from sweeps.commands.parse_log import register\n"
    "parser = argparse.ArgumentParser(prog='sweeps')\n"
    "register(parser.add_subparsers(dest='command'))\n"
    "args = parser.parse_args()\n"
    "sys.exit(args.func(args))\n")


def test_cli_as_a_real_process(tmp_path):
    program = _CLI_PROGRAM
    good = str(OWN_LOGS / "golf_seed1337.log")
    missing = str(tmp_path / "missing_seed3.log")
    done = subprocess.run([sys.executable, "-c", program, "parse-log", "--json", good, missing],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 2, done.stderr
    assert missing in done.stderr
    (obj,) = json.loads(done.stdout)
    assert obj["file"] == good and obj["headline"]["label"] == "final_sliding_window_exact"
    ok = subprocess.run([sys.executable, "-c", program, "parse-log", good],
                        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert ok.returncode == 0 and ok.stdout.startswith(f"file: {good}\nheadline: ")


def test_says_nothing_only_when_no_line_was_recognised(tmp_path):
    junk = tmp_path / "junk_seed7.bin"
    junk.write_bytes(bytes(random.Random(9).randrange(256) for _ in range(5000)))
    assert says_nothing(parse_log_file(junk))  # the file name's seed does not count
    assert not says_nothing(parse_log_text("seed:42\n"))
    assert not says_nothing(parse_log_text("step:0/20 val_loss:6.9 val_bpb:4.1 train_time:0ms\n"))


def test_cli_a_file_with_no_log_line_is_an_error_in_a_real_process(tmp_path):
    # Random bytes used to "parse" with exit 0 and every field null (issue 7, defect 9).
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(random.Random(20260418).randrange(256) for _ in range(20_000)))
    done = subprocess.run([sys.executable, "-c", _CLI_PROGRAM, "parse-log", str(junk)],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert str(junk) in line and "no Parameter Golf log line" in line
    good = str(OWN_LOGS / "golf_seed1337.log")
    mixed = subprocess.run([sys.executable, "-c", _CLI_PROGRAM, "parse-log", "--json", good, str(junk)],
                           capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert mixed.returncode == 2 and str(junk) in mixed.stderr and "Traceback" not in mixed.stderr
    assert [obj["file"] for obj in json.loads(mixed.stdout)] == [good]
