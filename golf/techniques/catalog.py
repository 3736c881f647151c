"""The catalogue of technique toggles (`golf toggles`), generated from the registry and the config:
every knob of every registered technique with its variable, aliases, default, meaning and the
techniques.md section that specifies it. Nothing here is written by hand, so it cannot go stale."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToggleRow:
    technique: str
    title: str
    spec: str
    variable: str
    aliases: tuple[str, ...]
    default: str
    meaning: str
    choices: tuple[str, ...] | None
    is_switch: bool
    """Whether this knob is the one that switches the technique on."""


def toggle_rows() -> list[ToggleRow]:
    from golf.config import field_spec
    from golf.techniques import TECHNIQUES

    rows = []
    for technique in TECHNIQUES:
        for name in technique.knob_names():
            spec = field_spec(name)
            rows.append(ToggleRow(
                technique=technique.name, title=technique.title, spec=technique.spec, variable=spec.env,
                aliases=spec.aliases, default=spec.format(spec.default), meaning=spec.help,
                choices=spec.choices, is_switch=name == technique.toggle,
            ))
    return rows
