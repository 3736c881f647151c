"""Artifact byte accounting (techniques.md 1.6, 3.8): compressed model bytes + code bytes.

A challenge submission counts the UTF-8 bytes of the one script that runs. For a golf run that
script is its bundle (:mod:`golf.bundle`): the golf code the run's config needs in one file,
written to RUN_DIR/train_gpt.py at the end of the run; a run that is itself a bundle counts, and
copies, its own file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from golf.contract import SIZE_LIMIT_BYTES

if TYPE_CHECKING:
    from golf.config import GolfConfig


def running_bundle() -> Path | None:
    """The train_gpt.py this process runs from, when it is a bundle (its entry sets golf.__bundle__)."""
    import golf

    location = getattr(golf, "__bundle__", None)
    return Path(location) if location else None


def submission_code(cfg: GolfConfig, stack: str, scale: str) -> bytes:
    """The script a submission of this run is: the bundle it runs from, else the bundle of its
    config (preset ``stack`` at ``scale``)."""
    bundle = running_bundle()
    if bundle is not None:
        return bundle.read_bytes()
    from golf.bundle import build_bundle  # the builder is never inside a bundle

    return build_bundle(cfg, stack, scale).data


def code_bytes(script: bytes) -> int:
    """The counted size of a script: its UTF-8 byte length (it must be valid UTF-8 text)."""
    try:
        script.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the submitted script is not UTF-8 text ({exc}): save it as UTF-8") from exc
    return len(script)


@dataclass(frozen=True)
class ArtifactSize:
    """Bytes that count against the challenge's decimal 16,000,000-byte limit."""

    model: int
    """Compressed model file bytes."""
    code: int
    """Source code bytes."""
    limit: int = SIZE_LIMIT_BYTES

    @property
    def total(self) -> int:
        return self.model + self.code

    @property
    def under_limit(self) -> bool:
        return self.total <= self.limit

    def as_dict(self) -> dict[str, int | bool]:
        """The ``bytes`` block of result.json: model, code, total, limit, under_limit."""
        return {
            "model": self.model,
            "code": self.code,
            "total": self.total,
            "limit": self.limit,
            "under_limit": self.under_limit,
        }
