"""Artifact byte accounting (techniques.md 1.6, 3.8): compressed model bytes + code bytes.

A challenge submission counts the UTF-8 bytes of the code that runs. For the golf pipeline that is
the source of the ``golf`` modules the run actually imported, so the code size is read from
``sys.modules`` rather than from a hand-kept list of files that could go stale. Take it once the
pipeline is fully imported (at export time): a module imported later is not counted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from golf.contract import SIZE_LIMIT_BYTES


def _belongs_to(module_name: str, package: str) -> bool:
    return module_name == package or module_name.startswith(package + ".")


def _module_name(key: str, module: object) -> str:
    # `python -m golf.train` (and torchrun -m) runs the entry module as "__main__"; its spec keeps
    # the real name, and its source is as much a part of the run as any imported module.
    if key == "__main__":
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name:
            return spec.name
    return key


def loaded_source_files(package: str = "golf") -> list[Path]:
    """The ``.py`` files of ``package`` imported in this process, sorted, each exactly once.

    Includes the entry module of ``python -m package.module``. Raises if an imported module of
    the package has no ``.py`` source (bytecode-only or compiled), since its size cannot be counted
    honestly.
    """
    files: set[Path] = set()
    for key, module in list(sys.modules.items()):
        if module is None or not _belongs_to(_module_name(key, module), package):
            continue
        location = getattr(module, "__file__", None)
        if location is None:  # a namespace package: a directory, no code of its own
            continue
        path = Path(location).resolve()
        if path.suffix != ".py":
            raise ValueError(
                f"module {key!r} was loaded from {path}, not from .py source, so its code bytes "
                "cannot be counted: run from a source checkout (pip install -e .)"
            )
        files.add(path)
    return sorted(files)


def code_bytes(files: Sequence[Path]) -> int:
    """Total UTF-8 byte length of ``files`` (each must be valid UTF-8 text)."""
    total = 0
    for path in files:
        data = Path(path).read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not UTF-8 text ({exc}): save it as UTF-8") from exc
        total += len(data)
    return total


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
