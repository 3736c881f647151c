"""Leaderboard CSV reading (lenient form, strict meaning), the best row, deltas, and the CLI."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from conftest import TEST_DATA, shared_fixture
from sweeps.commands import leaderboard as leaderboard_command
from sweeps.leaderboard import LeaderboardError, Problem, delta_to_best, read_leaderboard

OWN = TEST_DATA / "leaderboard"
LN2 = math.log(2)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sweeps")
    leaderboard_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


# ------------------------------------------------------------------------- challenge fixtures


def test_fixture_canonical_export() -> None:
    board = read_leaderboard(shared_fixture("leaderboard", "leaderboard_10min.csv"))
    assert len(board.rows) == 44 and board.problems == ()
    assert [row.line for row in board.rows] == list(range(2, 46))
    best = board.best
    assert best is not None
    assert best.run == "BOS-Fixed SmearGate + LQER + SparseAttnGate + 9-Hparam Stack"
    assert best.score == 1.0611 and best.author == "codemath3000" and best.date == "2026-04-27"
    assert best.info_url == "https://github.com/openai/parameter-golf/pull/1855"
    assert "p=0.188" in (best.summary or "")
    seq2048 = board.find("2048 seq length")
    assert seq2048.score_text == "1.206" and seq2048.score == pytest.approx(1.206)
    assert board.find("LeakyReLU² + Legal Score-First TTT + Parallel Muon").score == 1.1194
    assert board.find("naive baseline").run == "Naive Baseline"  # case-insensitive fallback


def test_fixture_nonrecord_table() -> None:
    board = read_leaderboard(shared_fixture("leaderboard", "leaderboard_nonrecord.csv"))
    assert len(board.rows) == 15 and board.problems == ()
    assert board.best is not None and board.best.run == "1 Bit Quantization"
    assert board.best.score_text == "1.1239"


def test_fixture_spreadsheet_export_equals_canonical_row_for_row() -> None:
    canonical = read_leaderboard(shared_fixture("leaderboard", "leaderboard_10min.csv"))
    sheet = read_leaderboard(shared_fixture("leaderboard", "leaderboard_10min_excel.csv"))
    assert sheet.problems == ()
    assert [row.to_dict() for row in sheet.rows] == [row.to_dict() for row in canonical.rows]
    assert sheet.columns == {"date": "Date", "author": "Author", "run": "Run", "score": "Score",
                             "info_url": "Info URL", "summary": "Summary"}


# ------------------------------------------------------------------------- own data


def test_own_spreadsheet_equals_canonical() -> None:
    canonical = read_leaderboard(OWN / "canonical.csv")
    sheet = read_leaderboard(OWN / "spreadsheet.csv")
    assert len(canonical.rows) == 4 and canonical.problems == () and sheet.problems == ()
    assert [row.to_dict() for row in sheet.rows] == [row.to_dict() for row in canonical.rows]
    first = canonical.rows[0]
    assert first.summary == "Late QAT, EMA and sliding eval; 3-seed mean (p=0.004 vs #12)"
    assert canonical.rows[1].run == "LeakyReLU² Sweep"
    assert canonical.find("Longer Warmdown").score_text == "1.150"
    assert canonical.best is first


def test_problem_rows_are_reported_with_physical_line_numbers() -> None:
    board = read_leaderboard(OWN / "problems.csv")  # BOM, CRLF, blank + empty rows, LF in a cell
    assert board.columns == {"run": "Run", "score": "BPB", "author": "Author", "date": "Date",
                             "summary": "Notes"}
    assert [(row.line, row.run, row.score_text) for row in board.rows] == [
        (2, "Good One", "1.1000"),
        (7, "Multi Line", "1.2000"),
        (11, "Spaces", "1.0900"),
    ]
    assert board.rows[1].summary == "first line\nsecond line"
    assert board.rows[2].summary == "summary, with comma"
    assert [problem.line for problem in board.problems] == [3, 4, 9, 10, 12]
    reasons = {problem.line: problem.reason for problem in board.problems}
    assert reasons[3] == "no score (the 'BPB' cell is empty)"
    assert reasons[4] == "score 'n/a' is not a number"
    assert reasons[9].startswith("6 cells but the header has 5")
    assert reasons[10].startswith("score 1.4000 has no run name")
    assert reasons[12] == "score 'inf' is not a number"
    assert board.best is not None and board.best.run == "Spaces"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_numbers_do_not_depend_on_line_endings(tmp_path: Path, newline: str) -> None:
    text = newline.join(["name,val_bpb", "", "a,1.1", "b,", ",", "c,1.0"]) + newline
    path = tmp_path / "lb.csv"
    path.write_bytes(text.encode())
    board = read_leaderboard(path)
    assert [(row.line, row.run) for row in board.rows] == [(3, "a"), (6, "c")]
    assert board.problems == (Problem(4, "no score (the 'val_bpb' cell is empty)"),)


def test_missing_score_column_names_found_and_expected() -> None:
    with pytest.raises(LeaderboardError) as info:
        read_leaderboard(OWN / "no_score_column.csv")
    message = str(info.value)
    assert "no recognisable score column" in message
    assert "'Name', 'Author', 'Result'" in message
    assert "val_bpb" in message and "rename the header cell" in message


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\n\n", "is empty"),
    (b"run,score,bpb\nx,1.0,1.0\n", "columns 'score' and 'bpb' both read as the 'score' column"),
    (b"run,score\nx,\"1.0\"oops\n", "line 2: malformed CSV"),
    (b"run,score\nx,1.0\nsemaine,\xe9\n", "not UTF-8 .* 'CSV UTF-8'"),
])
def test_unusable_files_give_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "lb.csv"
    path.write_bytes(content)
    with pytest.raises(LeaderboardError, match=message):
        read_leaderboard(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(LeaderboardError, match="not found"):
        read_leaderboard(tmp_path / "absent.csv")
    with pytest.raises(LeaderboardError, match="is a directory"):
        read_leaderboard(tmp_path)


def test_header_only_has_no_best(tmp_path: Path) -> None:
    path = tmp_path / "lb.csv"
    path.write_text("Run,Score\n")
    board = read_leaderboard(path)
    assert board.rows == () and board.best is None
    assert board.to_dict() == {"rows": [], "best": None, "problems": []}


def test_find_reports_duplicates_and_suggestions(tmp_path: Path) -> None:
    path = tmp_path / "lb.csv"
    path.write_text("run,score\nSame,1.1\nSame,1.2\nOther Run,1.3\n")
    board = read_leaderboard(path)
    with pytest.raises(LeaderboardError, match="lines 2, 3"):
        board.find("Same")
    with pytest.raises(LeaderboardError, match="did you mean 'Other Run'"):
        board.find("Other Rn")


def test_tied_best_is_the_first_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "lb.csv"
    path.write_text("run,score\nfirst,1.10\nsecond,1.1\n")
    assert read_leaderboard(path).best.run == "first"  # type: ignore[union-attr]


def test_unknown_columns_are_kept_as_extra(tmp_path: Path) -> None:
    path = tmp_path / "lb.csv"
    path.write_text("Run,Score,Track,Seeds\nx,1.1,10min,3\n")
    row = read_leaderboard(path).rows[0]
    assert row.extra == {"Track": "10min", "Seeds": "3"}
    assert row.to_dict()["extra"] == {"Track": "10min", "Seeds": "3"}
    assert row.author is None and "summary" not in row.to_dict()


# ------------------------------------------------------------------------- deltas


def test_delta_to_best() -> None:
    delta = delta_to_best(1.0810, 1.0795, 0.27)
    assert delta["delta_bpb"] == pytest.approx(-0.0015)
    assert delta["delta_nats"] == pytest.approx(-0.0015 * LN2 / 0.27)
    assert delta_to_best(1.0810, 1.09, None) == {"delta_bpb": pytest.approx(0.009),
                                                 "delta_nats": None}
    with pytest.raises(LeaderboardError, match="positive"):
        delta_to_best(1.0, 1.0, 0.0)


# ------------------------------------------------------------------------- CLI


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["leaderboard", str(OWN / "problems.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"rows", "best", "problems"}
    assert out["best"]["run"] == "Spaces" and out["best"]["line"] == 11
    assert {"run", "score", "score_text", "author", "date", "line"} <= set(out["rows"][0])
    assert out["problems"][0] == {"line": 3, "reason": "no score (the 'BPB' cell is empty)"}


def test_cli_human(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["leaderboard", str(OWN / "problems.csv")]) == 0
    out = capsys.readouterr().out
    assert "best: Spaces (1.0900 bpb by grace on 2026-04-07, line 11)" in out
    assert "5 rows not used:" in out
    assert "line 4: score 'n/a' is not a number" in out
    assert any(line.startswith("*") and "Spaces" in line for line in out.splitlines())


def test_cli_against_a_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["leaderboard", str(OWN / "canonical.csv"), "--against", "1.0900",
                    "--tokens-per-byte", "0.41", "--json"]) == 0
    against = json.loads(capsys.readouterr().out)["against"]
    assert against["delta_bpb"] == pytest.approx(-0.005)
    assert against["delta_nats"] == pytest.approx(-0.005 * LN2 / 0.41)
    assert run_cli(["leaderboard", str(OWN / "canonical.csv"), "--against", "1.0900"]) == 0
    assert "nats unknown (pass --tokens-per-byte" in capsys.readouterr().out


def test_cli_against_a_submission(capsys: pytest.CaptureFixture[str]) -> None:
    submission = TEST_DATA / "submissions" / "current_schema.json"
    assert run_cli(["leaderboard", str(OWN / "canonical.csv"), "--against",
                    str(submission)]) == 0
    out = capsys.readouterr().out
    # mean 1.15 against the best 1.0950, with the submission's own 0.41 tokens per byte
    assert "delta to best +0.05500 bpb, +0.09298 nats" in out


@pytest.mark.parametrize("argv, message", [
    (["leaderboard", "absent.csv"], "leaderboard file not found: absent.csv"),
    (["leaderboard", str(OWN / "no_score_column.csv")], "no recognisable score column"),
    (["leaderboard", str(OWN / "canonical.csv"), "--against", "best"], "neither a number"),
    (["leaderboard", str(OWN / "canonical.csv"), "--against",
      str(TEST_DATA / "submissions" / "bpb_in_val_loss.json")], "reports no val_bpb"),
])
def test_cli_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert run_cli(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and message in captured.err
