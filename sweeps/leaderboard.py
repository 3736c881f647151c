"""Read leaderboard CSVs as competitors get them, and measure a result against the best row.

The reader is lenient about the *form* of a CSV (a UTF-8 byte-order mark, CRLF line endings,
quoted commas, reordered columns, column names in any case or spelling among the usual synonyms:
``val_bpb`` / ``bpb`` / ``Score`` for the score, ``Name`` / ``Run`` for the run) and strict about
its *meaning*: a row without a numeric score is never dropped silently but reported in
:attr:`Leaderboard.problems` with its physical line number (header = line 1) and the reason. Rows of
only empty cells and blank lines are formatting and are skipped.

Scores are val_bpb: lower is better, so the best row is the one with the lowest score.

``sweeps leaderboard FILE.csv`` (:mod:`sweeps.commands.leaderboard`) prints the table, the best row
and the problems; :func:`against_best` measures one result against the best row.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from sweeps.submissions import LN2, SubmissionError, load_submission

__all__ = [
    "LeaderboardError",
    "LeaderboardRow",
    "Problem",
    "Leaderboard",
    "read_leaderboard",
    "against_best",
    "delta_to_best",
]

# Canonical column -> accepted header spellings, compared after lower-casing and dropping every
# character that is not a letter or digit ("Info URL", "info_url" and "info-url" all match).
COLUMN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "run": ("run", "name", "run_name", "title", "submission", "record", "entry"),
    "score": ("score", "val_bpb", "bpb", "score_bpb", "mean_val_bpb", "val_bpb_mean", "mean_bpb"),
    "author": ("author", "authors", "by", "user", "github_id", "github"),
    "summary": ("summary", "description", "notes", "blurb", "details"),
    "date": ("date", "submitted", "day"),
    "info_url": ("info_url", "info", "url", "link", "readme", "pr"),
}
REQUIRED_COLUMNS = ("run", "score")
_OPTIONAL_COLUMNS = ("author", "summary", "date", "info_url")


class LeaderboardError(ValueError):
    """A leaderboard file cannot be read as a leaderboard at all."""


@dataclass(frozen=True)
class Problem:
    """A data row that could not be used, with its 1-based physical line number in the file."""

    line: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason}


@dataclass(frozen=True)
class LeaderboardRow:
    """One usable row. ``score`` is val_bpb; ``score_text`` is the cell exactly as printed."""

    line: int
    run: str
    score: float
    score_text: str
    author: str | None = None
    date: str | None = None
    summary: str | None = None
    info_url: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "line": self.line,
            "run": self.run,
            "score": self.score,
            "score_text": self.score_text,
            "author": self.author,
            "date": self.date,
        }
        if self.summary is not None:
            out["summary"] = self.summary
        if self.info_url is not None:
            out["info_url"] = self.info_url
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


@dataclass(frozen=True)
class Leaderboard:
    """A parsed leaderboard: usable rows in file order, the problems, and the header mapping."""

    path: Path | None
    rows: tuple[LeaderboardRow, ...]
    problems: tuple[Problem, ...]
    columns: Mapping[str, str]  # canonical name -> header as written in the file

    @property
    def best(self) -> LeaderboardRow | None:
        """The row with the lowest score (the first in file order on a tie); None if no rows."""
        if not self.rows:
            return None
        return min(self.rows, key=lambda row: row.score)

    def find(self, run: str) -> LeaderboardRow:
        """The row named ``run`` (exact match, else case-insensitive); a clear error if none."""
        wanted = run.strip()
        for matcher in (lambda name: name == wanted,
                        lambda name: name.casefold() == wanted.casefold()):
            hits = [row for row in self.rows if matcher(row.run)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                lines = ", ".join(str(row.line) for row in hits)
                raise LeaderboardError(
                    f"{self._label}: run {wanted!r} appears on lines {lines}; give the score "
                    "itself instead (e.g. --baseline 1.0810)"
                )
        close = difflib.get_close_matches(wanted, [row.run for row in self.rows], n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(name) for name in close)}?" if close else (
            "; `sweeps leaderboard FILE.csv` lists the run names")
        raise LeaderboardError(f"{self._label}: no run named {wanted!r}{hint}")

    @property
    def _label(self) -> str:
        return str(self.path) if self.path is not None else "leaderboard"

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "rows": [row.to_dict() for row in self.rows],
            "best": best.to_dict() if best is not None else None,
            "problems": [problem.to_dict() for problem in self.problems],
        }


# ---------------------------------------------------------------------------------------- reading


def read_leaderboard(path: str | os.PathLike[str]) -> Leaderboard:
    """Read a leaderboard CSV file (see the module docstring for what is tolerated)."""
    file_path = Path(path)
    try:
        data = file_path.read_bytes()
    except FileNotFoundError:
        raise LeaderboardError(f"leaderboard file not found: {file_path}") from None
    except IsADirectoryError:
        raise LeaderboardError(f"{file_path} is a directory; pass the leaderboard CSV file") \
            from None
    except OSError as exc:
        raise LeaderboardError(f"cannot read {file_path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LeaderboardError(
            f"{file_path} is not UTF-8 (byte {exc.start} cannot be decoded); export it again as "
            "'CSV UTF-8' from the spreadsheet"
        ) from None
    return parse_leaderboard(text, path=file_path)


def parse_leaderboard(text: str, *, path: Path | None = None) -> Leaderboard:
    """Parse leaderboard CSV text (a leading byte-order mark is ignored)."""
    label = str(path) if path is not None else "leaderboard"
    # newline="" keeps CR/LF as written so the csv module counts physical lines itself, including
    # the line breaks inside quoted cells.
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), strict=True)
    header: list[str] | None = None
    columns: dict[str, int] = {}
    rows: list[LeaderboardRow] = []
    problems: list[Problem] = []
    end_of_previous = 0
    try:
        for cells in reader:
            start = end_of_previous + 1
            end_of_previous = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # a blank line or a row of empty cells: formatting, not data
            if header is None:
                header = cells
                columns = _map_columns(header, label)
                continue
            row = _read_row(cells, start, header, columns, problems)
            if row is not None:
                rows.append(row)
    except csv.Error as exc:
        raise LeaderboardError(
            f"{label}, line {reader.line_num}: malformed CSV ({exc}); check the quoting there"
        ) from None
    if header is None:
        raise LeaderboardError(f"{label} is empty: expected a header line such as "
                               "'run,score,author,summary,date,info_url' and one row per run")
    return Leaderboard(
        path=path,
        rows=tuple(rows),
        problems=tuple(problems),
        columns={name: header[index].strip() for name, index in columns.items()},
    )


def _normalise_header(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.strip().lstrip("\ufeff").casefold())


_SYNONYM_TO_COLUMN = {
    _normalise_header(spelling): column
    for column, spellings in COLUMN_SYNONYMS.items()
    for spelling in spellings
}


def _map_columns(header: Sequence[str], label: str) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        column = _SYNONYM_TO_COLUMN.get(_normalise_header(name))
        if column is None:
            continue
        if column in columns:
            first = header[columns[column]].strip()
            raise LeaderboardError(
                f"{label}: columns {first!r} and {name.strip()!r} both read as the {column!r} "
                "column; rename or delete one of them"
            )
        columns[column] = index
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        found = ", ".join(repr(name.strip()) for name in header)
        expected = "; ".join(
            f"{column}: one of {', '.join(COLUMN_SYNONYMS[column])}" for column in missing)
        raise LeaderboardError(
            f"{label}: no recognisable {' or '.join(missing)} column. Columns found: {found}. "
            f"Expected {expected} (any case; spaces and punctuation ignored); rename the header "
            "cell to one of those"
        )
    return columns


def _read_row(cells: list[str], line: int, header: Sequence[str], columns: Mapping[str, int],
              problems: list[Problem]) -> LeaderboardRow | None:
    if len(cells) > len(header):
        problems.append(Problem(line, (
            f"{len(cells)} cells but the header has {len(header)}; a cell with a comma probably "
            "lacks its quotes")))
        return None

    def cell(column: str) -> str | None:
        index = columns.get(column)
        if index is None or index >= len(cells):
            return None
        return cells[index].strip() or None

    run = cell("run")
    score_text = cell("score")
    score_header = header[columns["score"]].strip()
    if score_text is None:
        problems.append(Problem(line, f"no score (the {score_header!r} cell is empty)"))
        return None
    try:
        score = float(score_text)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        problems.append(Problem(line, f"score {score_text!r} is not a number"))
        return None
    if run is None:
        problems.append(Problem(line, f"score {score_text} has no run name (the "
                                      f"{header[columns['run']].strip()!r} cell is empty)"))
        return None
    known = set(columns.values())
    extra = {
        header[index].strip(): value.strip()
        for index, value in enumerate(cells)
        if index not in known and header[index].strip() and value.strip()
    }
    return LeaderboardRow(
        line=line,
        run=run,
        score=score,
        score_text=score_text,
        author=cell("author"),
        date=cell("date"),
        summary=cell("summary"),
        info_url=cell("info_url"),
        extra=extra,
    )


# ---------------------------------------------------------------------------------------- deltas


def delta_to_best(best_score_bpb: float, config_mean_bpb: float,
                  tokens_per_byte: float | None) -> dict[str, float | None]:
    """How far a result is from the leaderboard's best; negative = better than the best.

    ``delta_bpb = config_mean_bpb - best_score_bpb``. ``delta_nats`` is the same gap per token,
    ``delta_bpb * ln 2 / tokens_per_byte`` (the challenge's 0.005-nat rule is in this unit); it is
    None when ``tokens_per_byte`` (val_bpb * ln2 / val_loss of the run) is unknown.
    """
    if tokens_per_byte is not None and not (tokens_per_byte > 0 and math.isfinite(tokens_per_byte)):
        raise LeaderboardError(f"tokens_per_byte must be a positive number, got {tokens_per_byte}")
    delta_bpb = config_mean_bpb - best_score_bpb
    delta_nats = None if tokens_per_byte is None else delta_bpb * LN2 / tokens_per_byte
    return {"delta_bpb": delta_bpb, "delta_nats": delta_nats}


def against_best(board: Leaderboard, spec: str, tokens_per_byte: float | None) -> dict[str, Any]:
    """One result measured against the board's best row (``--against``).

    ``spec`` is a val_bpb number or a submission.json. Returns ``label``, ``val_bpb``,
    ``tokens_per_byte`` and the :func:`delta_to_best` keys.
    """
    best = board.best
    if best is None:
        raise LeaderboardError(f"{board.path or 'the leaderboard'} has no usable row to compare "
                               "against")
    value, ratio, label = _resolve_against(spec, tokens_per_byte)
    return {"label": label, "val_bpb": value, "tokens_per_byte": ratio,
            **delta_to_best(best.score, value, ratio)}


def _resolve_against(spec: str, tokens_per_byte: float | None) -> tuple[float, float | None, str]:
    """``--against``: a val_bpb number or a submission.json; returns (bpb, tokens/byte, label)."""
    try:
        value = float(spec)
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return value, tokens_per_byte, spec
    if not (spec.endswith(".json") or Path(spec).is_file()):
        raise LeaderboardError(
            f"--against {spec!r} is neither a number (a val_bpb such as 1.0795) nor a "
            "submission.json path")
    try:
        submission = load_submission(spec)
    except SubmissionError as exc:
        raise LeaderboardError(str(exc)) from None
    if submission.val_bpb is None:
        raise LeaderboardError(
            f"{spec} reports no val_bpb; pass the value itself: --against 1.0795")
    ratio = tokens_per_byte if tokens_per_byte is not None else submission.tokens_per_byte
    return submission.val_bpb, ratio, f"{submission.label} (mean val_bpb)"
