"""Inert-setting warnings for techniques whose switch is not a boolean field (a size, a layer
count, a choice): the same message shape as :func:`golf.techniques.base.warn_inert`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from golf.knobs import Checks

if TYPE_CHECKING:
    from golf.config import GolfConfig


def warn_inert_unless(cfg: GolfConfig, names: list[str], switch: str, checks: Checks) -> None:
    """Warn about each of ``names`` moved off its preset value although ``switch`` (e.g.
    "XSA_LAST_N>0") is not met, so the setting does nothing."""
    from golf.config import field_spec, reference_value

    for name in names:
        spec = field_spec(name)
        value = getattr(cfg, name)
        if value != reference_value(checks, name):
            checks.warn(f"{spec.env}={spec.format(value)} has no effect unless {switch}: "
                        f"set {switch} or drop {spec.env}")
