"""NorMuon: per-row second-moment normalisation of the orthogonalised Muon update (techniques.md 4.3).

After Newton-Schulz and before the aspect-ratio scale, for the update ``O`` of shape [m, n] with a
per-row fp32 state ``v`` (starting at 0, kept in the parameter's optimizer state):

- ``v <- beta * v + (1 - beta) * mean_j(O_ij^2)``;
- ``no_renorm`` (#137's form): ``O_i <- O_i / sqrt(v_i + 1e-8)``. No bias correction and no
  renormalisation: once ``v`` settles each row has RMS about 1 (plain Muon: about 1/sqrt(n)), and
  on the first step rows are scaled by a further 1/sqrt(1 - beta), so #137 pairs it with a lower
  MATRIX_LR;
- ``norm_preserving`` (the official NorMuon, as in modded-nanogpt): ``O_i <- O_i / sqrt(max(v_i, 1e-10))``,
  then the whole matrix is rescaled to the Frobenius norm ``O`` had, so the step size stays Muon's.

``beta`` is ``NORMUON_BETA2``, or with 0 (the default) the current Muon momentum, as #137 uses.
(modded-nanogpt normalises along whichever of rows or columns is longer; this module always
normalises rows, the output channels, as #137 and techniques.md do.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from golf.knobs import Checks, knob
from golf.techniques.base import Technique, TrainingRun, warn_inert

if TYPE_CHECKING:
    from golf.config import GolfConfig

NORMUON_MODES = ("no_renorm", "norm_preserving")
STATE_KEY = "normuon_v"


@dataclass(frozen=True)
class NorMuonSettings:
    normuon_enabled: bool = knob(False, "NorMuon: divide each row of the orthogonalised Muon update by its running RMS")
    normuon_mode: str = knob(
        "no_renorm", "no_renorm (#137: no renormalisation, rows end near RMS 1) or norm_preserving (official NorMuon: "
        "rescaled to the update's Frobenius norm)", choices=NORMUON_MODES,
    )
    normuon_beta2: float = knob(
        0.0, "decay of the per-row second moment; 0 = the current Muon momentum (#137)", min=0.0, max=0.9999,
    )


def normuon_update(update: Tensor, v: Tensor, beta: float, mode: str) -> Tensor:
    """The normalised update (fp32, a new tensor); updates the per-row second moment ``v`` in place."""
    o = update.float()
    row_ms = o.square().mean(dim=1)
    v.mul_(beta).add_(row_ms, alpha=1.0 - beta)
    if mode == "no_renorm":
        return o / (v + 1e-8).sqrt().unsqueeze(1)
    if mode == "norm_preserving":
        scaled = o * v.clamp_min(1e-10).rsqrt().unsqueeze(1)
        return scaled * (o.norm() / scaled.norm().clamp_min(1e-10))
    raise ValueError(f"unknown NorMuon mode {mode!r}: use one of {', '.join(NORMUON_MODES)}")


class NorMuon(Technique):
    name = "normuon"
    title = "NorMuon: per-row RMS normalisation after Newton-Schulz (#137's form or norm-preserving)"
    spec = "4.3"
    settings = NorMuonSettings
    toggle = "normuon_enabled"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.normuon_enabled:
            warn_inert(cfg, cls, ["normuon_mode", "normuon_beta2"], checks)

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.updates = 0

    def on_train_start(self, run: TrainingRun) -> None:
        if run.optimizers is None:
            raise RuntimeError("NorMuon: on_train_start without optimizers; build them first")
        mode, fixed_beta = self.cfg.normuon_mode, self.cfg.normuon_beta2

        @torch.no_grad()
        def after_orthogonalize(update: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor:
            if STATE_KEY not in state:
                state[STATE_KEY] = torch.zeros(update.size(0), dtype=torch.float32, device=update.device)
            self.updates += 1
            beta = fixed_beta if fixed_beta > 0 else group["momentum"]
            return normuon_update(update, state[STATE_KEY], beta, mode)

        run.optimizers.muon.after_orthogonalize.append(after_orthogonalize)
        beta = fixed_beta if fixed_beta > 0 else "muon_momentum"
        run.log(f"normuon: mode:{mode} beta:{beta} (after Newton-Schulz)")

    def report(self) -> dict[str, Any]:
        # Each rank normalises the matrices it owns (golf.optim.muon); the report comes from rank 0.
        return {"mode": self.cfg.normuon_mode, "beta2": self.cfg.normuon_beta2 or "muon_momentum",
                "matrix_updates_rank0": self.updates}
