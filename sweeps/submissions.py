"""Read and write the challenge's record ``submission.json`` files.

Records have written this file in many shapes over the challenge's life, so the reader is lenient
about *where* a number lives and strict about *what* it means:

* per-seed results come from ``seed_results`` (a dict keyed by the seed as a string), from ``seeds``
  when it is such a dict, or from ``seeds`` (a list of seeds) plus a parallel ``seed_scores`` list
  of val_bpb values; many early records report only a mean, and then :attr:`Submission.per_seed`
  is empty rather than invented;
* the mean comes from ``val_bpb`` / ``mean_val_bpb`` / ``mean_bpb`` (``val_loss`` /
  ``mean_val_loss`` / ``mean_val_loss_nats`` / ``val_loss_nats`` for nats), and may be missing;
* sizes come from ``bytes_total``, ``artifact_bytes`` / ``artifact_size_bytes`` /
  ``artifact_bytes_mean`` and ``bytes_code`` / ``code_bytes``;
* ``p_value`` is a number or a string such as ``"<0.001"``; the printed text is kept.

Anything odd that the reader tolerates is recorded in :attr:`Submission.notes`, so a caller can show
it instead of the file silently meaning something else.

The writer (:func:`submission_dict`, :func:`write_submission`) produces the schema of the newest
records: ``seed_results`` keyed by seed string (val_loss, val_bpb, artifact_bytes, steps,
step_avg_ms, train_time_s, eval_time_s), the mean val_loss/val_bpb with their standard deviations,
``bytes_total`` (the largest per-seed artifact, which is what must fit the cap), hardware and
version strings, and the author/name/date fields.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from golf.atomic import write_json_atomic

__all__ = [
    "SubmissionError",
    "SeedResult",
    "Submission",
    "load_submission",
    "submission_from_dict",
    "submission_dict",
    "write_submission",
]

LN2 = math.log(2.0)

# Key spellings seen in records, in order of preference.
_MEAN_BPB_KEYS = ("val_bpb", "mean_val_bpb", "mean_bpb")
_MEAN_LOSS_KEYS = ("val_loss", "mean_val_loss", "mean_val_loss_nats", "val_loss_nats")
_ARTIFACT_KEYS = ("artifact_bytes", "artifact_size_bytes", "artifact_bytes_mean")
_CODE_KEYS = ("bytes_code", "code_bytes")
_NAME_KEYS = ("name", "run_name")

# Per-seed keys: our field name -> (record key, scale to our unit).
_SEED_FIELDS: dict[str, tuple[tuple[str, float], ...]] = {
    "val_bpb": (("val_bpb", 1.0),),
    "val_loss": (("val_loss", 1.0),),
    "artifact_bytes": (("artifact_bytes", 1.0), ("bytes_total", 1.0)),
    "steps": (("steps", 1.0),),
    "step_avg_ms": (("step_avg_ms", 1.0), ("ms_per_step", 1.0)),
    "train_time_s": (("train_time_s", 1.0), ("train_time_ms", 0.001)),
    "eval_time_s": (("eval_time_s", 1.0), ("eval_time_ms", 0.001)),
}
_INT_SEED_FIELDS = ("artifact_bytes", "steps")


class SubmissionError(ValueError):
    """A submission file cannot be read, or lacks what the caller asked of it."""


@dataclass(frozen=True)
class SeedResult:
    """One seed's reported numbers: None where missing; unrecognised keys stay in ``extra``."""

    seed: str
    val_bpb: float | None = None
    val_loss: float | None = None
    artifact_bytes: int | None = None
    steps: int | None = None
    step_avg_ms: float | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The seed's entry in the current ``seed_results`` schema (None fields left out)."""
        out: dict[str, Any] = {}
        for name in ("val_loss", "val_bpb", "artifact_bytes", "steps", "step_avg_ms",
                     "train_time_s", "eval_time_s"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class Submission:
    """A record's ``submission.json``, normalised. ``raw`` keeps the file's dict untouched."""

    path: Path | None
    name: str | None
    author: str | None
    github_id: str | None
    date: str | None
    track: str | None
    val_bpb: float | None
    val_loss: float | None
    per_seed: tuple[SeedResult, ...]
    per_seed_source: str | None
    compliance_rerun: tuple[SeedResult, ...]
    bytes_total: int | None
    artifact_bytes: int | None
    code_bytes: int | None
    p_value: float | None
    p_value_text: str | None
    hardware: str | None
    notes: tuple[str, ...]
    raw: Mapping[str, Any]

    @property
    def label(self) -> str:
        """A short human name: the file name when there is one, else the run name."""
        if self.path is not None:
            return self.path.name
        return self.name or "submission"

    @property
    def seeds(self) -> tuple[str, ...]:
        return tuple(result.seed for result in self.per_seed)

    @property
    def tokens_per_byte(self) -> float | None:
        """Tokens per byte of the validation set, val_bpb * ln2 / val_loss, when both are reported.

        Uses the seeds that report both numbers (their mean ratio), else the two means; None when
        the file does not report both in any form.
        """
        ratios = [
            r.val_bpb * LN2 / r.val_loss
            for r in self.per_seed
            if r.val_bpb is not None and r.val_loss is not None and r.val_loss > 0
        ]
        if ratios:
            return statistics.fmean(ratios)
        if self.val_bpb is not None and self.val_loss is not None and self.val_loss > 0:
            return self.val_bpb * LN2 / self.val_loss
        return None

    def per_seed_values(self, metric: str = "bpb") -> list[float]:
        """Per-seed val_bpb (``metric="bpb"``) or val_loss in nats (``metric="nats"``).

        Raises :class:`SubmissionError` when the file reports only a mean or when a seed lacks the
        number; nothing is filled in from the mean.
        """
        field_name = _metric_field(metric)
        if not self.per_seed:
            mean = self.val_bpb if metric == "bpb" else self.val_loss
            shown = f" ({mean:g})" if mean is not None else ""
            raise SubmissionError(
                f"{self.label} reports only a mean{shown}, no per-seed {field_name} values"
            )
        values: list[float] = []
        for result in self.per_seed:
            value = getattr(result, field_name)
            if value is None:
                present = sorted(set(result.extra) | {
                    name for name in _SEED_FIELDS if getattr(result, name) is not None})
                raise SubmissionError(
                    f"{self.label}: seed {result.seed} (from {self.per_seed_source!r}) has no "
                    f"{field_name}; it reports {', '.join(present) or 'nothing'}"
                )
            values.append(value)
        return values


def _metric_field(metric: str) -> str:
    if metric == "bpb":
        return "val_bpb"
    if metric == "nats":
        return "val_loss"
    raise SubmissionError(f"unknown metric {metric!r}: use 'bpb' (val_bpb) or 'nats' (val_loss)")


# ---------------------------------------------------------------------------------------- reading


def load_submission(path: str | os.PathLike[str]) -> Submission:
    """Read a record's submission.json (any of the schema variants records have used)."""
    file_path = Path(path)
    try:
        text = file_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SubmissionError(f"submission file not found: {file_path}") from None
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"{file_path} is not UTF-8 text ({exc.reason}); is it a JSON file?") \
            from None
    except OSError as exc:
        raise SubmissionError(f"cannot read {file_path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubmissionError(
            f"{file_path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise SubmissionError(
            f"{file_path} holds a JSON {type(data).__name__}, but a submission.json is an object "
            "({\"val_bpb\": ..., \"seed_results\": {...}, ...})"
        )
    return submission_from_dict(data, path=file_path)


def submission_from_dict(data: Mapping[str, Any], *, path: Path | None = None) -> Submission:
    """Normalise an already-parsed submission dict (see :func:`load_submission`)."""
    notes: list[str] = []

    per_seed, per_seed_source = _read_per_seed(data, notes)
    rerun: tuple[SeedResult, ...] = ()
    compliance = data.get("compliance_rerun")
    if isinstance(compliance, Mapping) and "seed_results" in compliance:
        rerun = _seed_results_dict(compliance["seed_results"], "compliance_rerun.seed_results",
                                   notes)

    val_bpb = _first_number(data, _MEAN_BPB_KEYS, notes)
    val_loss = _first_number(data, _MEAN_LOSS_KEYS, notes)
    if val_bpb is None and per_seed and all(r.val_bpb is not None for r in per_seed):
        val_bpb = statistics.fmean(r.val_bpb for r in per_seed)  # type: ignore[misc]
        notes.append(f"no mean val_bpb in the file; computed from the {len(per_seed)} seeds")
    if val_bpb is None and val_loss is not None:
        # One early record stored its bpb under val_loss; a reader cannot tell, so say so.
        notes.append(
            "reports val_loss but no val_bpb; some early records put the bpb under val_loss, "
            "so check the record's README before treating it as nats"
        )

    p_value, p_value_text = _read_p_value(data.get("p_value"), notes)

    return Submission(
        path=path,
        name=_first_text(data, _NAME_KEYS),
        author=_first_text(data, ("author",)),
        github_id=_first_text(data, ("github_id",)),
        date=_first_text(data, ("date",)),
        track=_first_text(data, ("track",)),
        val_bpb=val_bpb,
        val_loss=val_loss,
        per_seed=per_seed,
        per_seed_source=per_seed_source,
        compliance_rerun=rerun,
        bytes_total=_as_int(_first_number(data, ("bytes_total",), notes)),
        artifact_bytes=_as_int(_first_number(data, _ARTIFACT_KEYS, notes)),
        code_bytes=_as_int(_first_number(data, _CODE_KEYS, notes)),
        p_value=p_value,
        p_value_text=p_value_text,
        hardware=_first_text(data, ("hardware", "gpu", "platform")),
        notes=tuple(notes),
        raw=data,
    )


def _read_per_seed(data: Mapping[str, Any], notes: list[str]) -> tuple[tuple[SeedResult, ...],
                                                                         str | None]:
    if "seed_results" in data:
        results = _seed_results_dict(data["seed_results"], "seed_results", notes)
        return results, ("seed_results" if results else None)
    seeds = data.get("seeds")
    if isinstance(seeds, Mapping):
        results = _seed_results_dict(seeds, "seeds", notes)
        return results, ("seeds" if results else None)
    if isinstance(seeds, list) and "seed_scores" in data:
        scores = data["seed_scores"]
        if not isinstance(scores, list) or len(scores) != len(seeds):
            notes.append(
                f"'seed_scores' ({_describe_len(scores)}) does not pair up with 'seeds' "
                f"({len(seeds)} seeds); per-seed values ignored"
            )
            return (), None
        results = []
        for seed, score in zip(seeds, scores):
            value = _number(score, f"seed_scores[{seed}]", notes)
            results.append(SeedResult(seed=str(seed), val_bpb=value))
        return tuple(results), "seeds+seed_scores"
    return (), None


def _describe_len(value: Any) -> str:
    return f"{len(value)} values" if isinstance(value, list) else type(value).__name__


def _seed_results_dict(value: Any, where: str, notes: list[str]) -> tuple[SeedResult, ...]:
    if not isinstance(value, Mapping):
        notes.append(f"'{where}' is a {type(value).__name__}, not a dict keyed by seed; ignored")
        return ()
    results = []
    for seed, entry in value.items():
        if not isinstance(entry, Mapping):
            notes.append(f"'{where}.{seed}' is not an object of numbers; ignored")
            continue
        results.append(_seed_result(str(seed), entry, f"{where}.{seed}", notes))
    return tuple(results)


def _seed_result(seed: str, entry: Mapping[str, Any], where: str, notes: list[str]) -> SeedResult:
    values: dict[str, Any] = {}
    used: set[str] = set()
    for name, spellings in _SEED_FIELDS.items():
        for key, scale in spellings:
            if key in entry:
                used.add(key)
                number = _number(entry[key], f"{where}.{key}", notes)
                if number is not None:
                    number *= scale
                    values[name] = _as_int(number) if name in _INT_SEED_FIELDS else number
                    break
    extra = {key: val for key, val in entry.items() if key not in used}
    return SeedResult(seed=seed, extra=extra, **values)


def _number(value: Any, where: str, notes: list[str]) -> float | None:
    """A JSON number (or numeric string) as float; None for null; a note for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        notes.append(f"'{where}' is a boolean, not a number; ignored")
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            notes.append(f"'{where}' is the text {value!r}, not a number; ignored")
            return None
    else:
        notes.append(f"'{where}' is a {type(value).__name__}, not a number; ignored")
        return None
    if not math.isfinite(number):
        notes.append(f"'{where}' is {value!r}, not a finite number; ignored")
        return None
    return number


def _first_number(data: Mapping[str, Any], keys: Sequence[str], notes: list[str]) -> float | None:
    for key in keys:
        if key in data:
            number = _number(data[key], key, notes)
            if number is not None:
                return number
    return None


def _first_text(data: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _as_int(value: float | None) -> int | None:
    return None if value is None else int(round(value))


def _read_p_value(value: Any, notes: list[str]) -> tuple[float | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), json.dumps(value)
    if isinstance(value, str):
        try:
            return float(value.strip()), value
        except ValueError:
            # e.g. "<0.001": a bound, not a value; keep the text rather than pretend.
            return None, value
    notes.append(f"'p_value' is a {type(value).__name__}; ignored")
    return None, None


# ---------------------------------------------------------------------------------------- writing


def submission_dict(
    *,
    name: str,
    author: str,
    github_id: str,
    seed_results: Sequence[SeedResult],
    hardware: str,
    versions: Mapping[str, str] | None = None,
    date: str | None = None,
    track: str = "10min_16mb",
    blurb: str | None = None,
    code_bytes: int | None = None,
    technique_summary: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a submission.json dict in the challenge's current schema.

    ``seed_results`` must give every seed's val_bpb and val_loss (nats). The means are rounded to 8
    decimals, as the records' ``*_exact`` log lines print them; standard deviations are sample
    standard deviations (ddof=1). ``bytes_total`` is the largest per-seed ``artifact_bytes`` (each
    seed's compressed model plus code, the number that must fit under 16,000,000). ``versions``
    maps a component to its version, written as ``<component>_version`` (``{"pytorch":
    "2.9.1+cu128"}`` becomes ``"pytorch_version": "2.9.1+cu128"``). ``date`` defaults to today
    (ISO). ``extra`` adds top-level keys; it may not replace a key this function computes.
    """
    if not seed_results:
        raise SubmissionError("a submission needs at least one seed result")
    seen: set[str] = set()
    for result in seed_results:
        if result.seed in seen:
            raise SubmissionError(f"seed {result.seed} appears twice in seed_results")
        seen.add(result.seed)
        if result.val_bpb is None or result.val_loss is None:
            raise SubmissionError(
                f"seed {result.seed} lacks val_bpb or val_loss; a record reports both for every "
                "seed (take them from the trial's result.json metrics)"
            )

    bpb = [r.val_bpb for r in seed_results]
    loss = [r.val_loss for r in seed_results]
    out: dict[str, Any] = {
        "author": author,
        "github_id": github_id,
        "name": name,
    }
    if blurb is not None:
        out["blurb"] = blurb
    out["date"] = date or _dt.date.today().isoformat()
    out["track"] = track
    out["val_loss"] = round(statistics.fmean(loss), 8)  # type: ignore[arg-type]
    out["val_bpb"] = round(statistics.fmean(bpb), 8)  # type: ignore[arg-type]
    if len(seed_results) >= 2:
        out["val_loss_std"] = round(statistics.stdev(loss), 8)  # type: ignore[arg-type]
        out["val_bpb_std"] = round(statistics.stdev(bpb), 8)  # type: ignore[arg-type]
    out["seeds"] = [_seed_for_list(r.seed) for r in seed_results]
    out["seed_results"] = {r.seed: r.to_dict() for r in seed_results}

    artifacts = [r.artifact_bytes for r in seed_results]
    if all(a is not None for a in artifacts):
        mean_artifact = statistics.fmean(artifacts)  # type: ignore[arg-type]
        out["artifact_bytes_mean"] = int(round(mean_artifact))
        out["artifact_bytes_max"] = max(artifacts)  # type: ignore[type-var]
        out["bytes_total"] = max(artifacts)  # type: ignore[type-var]
    if code_bytes is not None:
        out["bytes_code"] = int(code_bytes)
    for name_out, attr, digits in (("train_steps_mean", "steps", 2),
                                   ("step_avg_ms_mean", "step_avg_ms", 2),
                                   ("train_time_s_mean", "train_time_s", 3),
                                   ("eval_time_s_mean", "eval_time_s", 2)):
        numbers = [getattr(r, attr) for r in seed_results]
        if all(n is not None for n in numbers):
            out[name_out] = round(statistics.fmean(numbers), digits)
    out["hardware"] = hardware
    for component, version in (versions or {}).items():
        out[f"{component}_version"] = version
    if technique_summary is not None:
        out["technique_summary"] = technique_summary
    for key, value in (extra or {}).items():
        if key in out:
            raise SubmissionError(
                f"extra key {key!r} would replace the computed {key!r}; pass it through the "
                "matching argument instead"
            )
        out[key] = value
    return out


def _seed_for_list(seed: str) -> int | str:
    # Records list seeds as JSON numbers ("seeds": [42, 0, 1234]) and key seed_results by text.
    return int(seed) if seed.lstrip("-").isdigit() else seed


def write_submission(path: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
    """Write :func:`submission_dict` (same keyword arguments) to ``path`` atomically; return it."""
    data = submission_dict(**fields)
    # A killed process never leaves half a submission.json behind.
    write_json_atomic(path, data, ensure_ascii=False)
    return data
