"""A stack's parts as a sweep: the full preset plus one config per technique with that technique off.

"What does each part of #635 contribute?" is then a two-line sweep file (sweeps/ablate_pr635.py):

    from sweeps.ablate import ablation_sweep
    SWEEP = ablation_sweep("pr635")

run like any other: ``python sweeps/ablate_pr635.py --scale smoke`` or ``sweeps run FILE``.

A technique is "on" in the stack when the registry says it is active under the preset's config
and not under the baseline's; turning it off sets its switch to 0, or, for a technique switched on
by a value (XSA_LAST_N, ROPE_DIMS, ...), its knobs back to the baseline's values. The full stack is the baseline config of the comparison, so each row's difference from it
is what that technique contributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from golf.config import ConfigError, field_spec, resolve, validate
from golf.techniques import TECHNIQUES
from sweeps.spec import DEFAULT_SEEDS, Sweep

def stack_techniques(preset: str) -> list[str]:
    """Names of the techniques the preset switches on beyond the baseline, in registry order."""
    stack, base = resolve(preset), resolve("baseline")
    return [t.name for t in TECHNIQUES
            if not t.always_on and t.is_enabled(stack) and not t.is_enabled(base)]


def technique_off(preset: str, name: str) -> dict[str, Any]:
    """The settings that switch technique ``name`` off in ``preset``: its knobs at the baseline's values.

    When another technique cannot run without it (SWA_SOURCE=ema without EMA), the one setting of
    that technique that makes the config valid again is reset to the baseline's value too.
    """
    technique = next(t for t in TECHNIQUES if t.name == name)
    stack, base = resolve(preset), resolve("baseline")
    if technique.toggle is not None:  # its other knobs become inert (warnings, not errors)
        off = {field_spec(technique.toggle).env: False}
    else:
        off = {field_spec(k).env: getattr(base, k) for k in technique.knob_names()
               if getattr(stack, k) != getattr(base, k)}
    if _problems(preset, off) is None:
        return off
    dependents = [k for t in TECHNIQUES if t.name != name for k in t.knob_names()
                  if k != t.toggle and getattr(stack, k) != getattr(base, k)]
    for knob in dependents:
        attempt = {**off, field_spec(knob).env: getattr(base, knob)}
        if _problems(preset, attempt) is None:
            return attempt
    raise ValueError(f"switching {name} off in {preset} leaves an invalid config: {_problems(preset, off)}")


def _problems(preset: str, overrides: dict[str, Any]) -> str | None:
    try:
        validate(resolve(preset, overrides=overrides), check_runtime=False)
    except ConfigError as err:
        return str(err)
    return None


def ablation_sweep(preset: str, *, seeds: Sequence[int] = DEFAULT_SEEDS, name: str | None = None) -> Sweep:
    """The full stack and, for each of its techniques, the stack without it (leave-one-out)."""
    techniques = stack_techniques(preset)
    if not techniques:
        raise ValueError(f"preset {preset!r} switches on no technique beyond the baseline: nothing to ablate")
    configs = [technique_off(preset, t) for t in techniques]
    return Sweep(
        name=name or f"ablate_{preset}",
        preset=preset,
        configs=[{}, *configs],
        seeds=tuple(seeds),
        baseline={},
        description=f"leave-one-out of {preset}: the full stack, then without each of {', '.join(techniques)}",
    )
