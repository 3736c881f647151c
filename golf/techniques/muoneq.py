"""MuonEq: equilibrate the Muon update's rows and/or columns before Newton-Schulz (techniques.md 4.4).

After the Nesterov combine and before the orthogonalisation, with row norms ``r_i = ||U_i||`` and
column norms ``c_j = ||U_:j||`` both taken from the same input (two-sided, not one after the other):

- ``row`` (MuonEq-R, #1260; later records' ``MUON_EQ_R=1``): ``U_ij * r_i^(2e)``;
- ``col``: ``U_ij * c_j^(2e)``;
- ``rowcol``: ``U_ij * r_i^(2e) * c_j^(2e)``;

with the exponent ``e = MUONEQ_EXP`` on the squared norms (-1/2 by default, so ``row`` divides each
row by its L2 norm; the MuonEq reference also offers -1/4). Norms are floored at 1e-7 as in #1260's
``U_i / max(||U_i||, 1e-7)``; the reference adds 1e-8 to the squared norm instead, which differs only
for rows or columns of norm below about 1e-4. No state: NS5 renormalises by the Frobenius norm as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from golf.knobs import Checks, knob
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig

MUONEQ_MODES = ("off", "row", "col", "rowcol")
NORM_FLOOR = 1e-7


@dataclass(frozen=True)
class MuonEqSettings:
    muoneq_mode: str = knob(
        "off", "scale the Muon update's rows (row = MuonEq-R, #1260), columns or both by their norms "
        "before Newton-Schulz", choices=MUONEQ_MODES,
    )
    muoneq_exp: float = knob(
        -0.5, "MuonEq exponent on the squared row/column norms (-0.5 = divide by the norm; reference also -0.25)",
        min=-1.0, max=0.0,
    )
    muon_eq_r: bool = knob(False, "the records' switch for MuonEq-R: the same as MUONEQ_MODE=row")


def muoneq_mode(cfg: GolfConfig) -> str:
    """The mode in force: MUONEQ_MODE, or row when only the records' MUON_EQ_R=1 is set."""
    if cfg.muoneq_mode == "off" and cfg.muon_eq_r:
        return "row"
    return cfg.muoneq_mode


def equilibrate(update: Tensor, mode: str, exponent: float = -0.5) -> Tensor:
    """``update`` with its rows and/or columns scaled by ``norm ** (2 * exponent)`` (a new tensor)."""
    if mode not in MUONEQ_MODES:
        raise ValueError(f"unknown MuonEq mode {mode!r}: use one of {', '.join(MUONEQ_MODES)}")
    if mode == "off":
        return update
    u = update.float()

    def divisor(dim: int) -> Tensor:
        norm = u.norm(dim=dim, keepdim=True).clamp_min(NORM_FLOOR)
        # -1/2 divides by the norm itself: #1260's arithmetic exactly
        return norm if exponent == -0.5 else norm.pow(-2.0 * exponent)

    scaled = u
    if mode in ("row", "rowcol"):
        scaled = scaled / divisor(1)
    if mode in ("col", "rowcol"):
        scaled = scaled / divisor(0)
    return scaled.to(update.dtype)


class MuonEq(Technique):
    name = "muoneq"
    title = "MuonEq: row (MuonEq-R), column or two-sided equilibration of the Muon update before Newton-Schulz"
    spec = "4.4"
    settings = MuonEqSettings
    toggle = None

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return muoneq_mode(cfg) != "off"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if cfg.muon_eq_r and cfg.muoneq_mode not in ("off", "row"):
            checks.error(
                f"MUON_EQ_R=1 asks for row equilibration but MUONEQ_MODE={cfg.muoneq_mode}: "
                "drop MUON_EQ_R or set MUONEQ_MODE=row"
            )
        from golf.config import reference_value

        if muoneq_mode(cfg) == "off" and cfg.muoneq_exp != reference_value(checks, "muoneq_exp"):
            checks.warn(
                f"MUONEQ_EXP={cfg.muoneq_exp} has no effect while MUONEQ_MODE=off: set MUONEQ_MODE "
                "(row, col or rowcol) or drop MUONEQ_EXP"
            )

    def on_train_start(self, run: TrainingRun) -> None:
        if run.optimizers is None:
            raise RuntimeError("MuonEq: on_train_start without optimizers; build them first")
        mode, exponent = muoneq_mode(self.cfg), self.cfg.muoneq_exp

        @torch.no_grad()
        def before_orthogonalize(update: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor:
            return equilibrate(update, mode, exponent)

        run.optimizers.muon.before_orthogonalize.append(before_orthogonalize)
        run.log(f"muoneq: mode:{mode} exp:{exponent} (before Newton-Schulz)")

    def report(self) -> dict[str, Any]:
        return {"mode": muoneq_mode(self.cfg), "exp": self.cfg.muoneq_exp}
