"""The building blocks of config sections: a knob (a field with its meaning, aliases and range),
the error type every configuration problem raises, and the result of a section's checks.

Kept apart from :mod:`golf.config` so that technique modules, which own their config sections
(DESIGN.md contract 4), can declare knobs without importing the assembled config.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration problem; the message names the field and the fix."""

    def __init__(self, problems: str | Iterable[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} configuration problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(message)


def knob(
    default: Any,
    help: str,
    *,
    aliases: tuple[str, ...] = (),
    choices: tuple[str, ...] | None = None,
    min: float | None = None,
    max: float | None = None,
) -> Any:
    """A config field with its one-line meaning, accepted aliases and allowed values."""
    meta = {"help": help, "aliases": aliases, "choices": choices, "min": min, "max": max}
    return field(default=default, metadata=meta)


@dataclass
class Checks:
    """What a section's checks found: errors (the run cannot go) and warnings (a setting that has
    no effect: logged once and kept in result.json["warnings"])."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    baseline: Any = None
    """The config the run's preset and scale give before the user's settings: a setting is only
    worth a warning when the user changed it (a scale shrinking LAWA_INTERVAL is not)."""

    def error(self, message: str) -> None:
        self.errors.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def extend(self, other: Checks) -> None:
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)
