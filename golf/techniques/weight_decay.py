"""Decoupled weight decay by parameter role (techniques.md 4.1).

Before each update ``W <- W * (1 - lr_t * wd)``, where ``lr_t`` is the group's *scheduled* LR, so
the decay fades out with the warmdown as the seeds' does. The role decides the decay:

- ``MUON_WD``: the block matrices (and banks) Muon updates (#137 ``MUON_WEIGHT_DECAY=0.01``;
  #326 ``WEIGHT_DECAY=0.04``; #635 0.04; #1260 0.085);
- ``ADAM_WD``: the scalar/control Adam group (#635 0.04, #1260 0.02; AdamW's rule);
- ``EMBED_WD``: the token embedding's Adam group (#1260 0.085; #635 and #326 decay it with
  their single Adam decay, so set ``EMBED_WD`` to the same value as ``ADAM_WD`` for those).

The untied output head is not decayed: no seed decays it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from golf.knobs import Checks, knob
from golf.model.roles import Role
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig

# Knob -> the parameter roles it decays.
DECAYED_ROLES = {"muon_wd": (Role.MATRIX, Role.BANK), "adam_wd": (Role.CONTROL,), "embed_wd": (Role.EMBEDDING,)}


@dataclass(frozen=True)
class WeightDecaySettings:
    muon_wd: float = knob(
        0.0, "decoupled weight decay of the Muon matrices: W *= 1 - lr*wd before each update, lr as "
        "scheduled; 0 = off (#326's WEIGHT_DECAY also decays Adam: set ADAM_WD and EMBED_WD too)",
        aliases=("MUON_WEIGHT_DECAY", "WEIGHT_DECAY"), min=0.0,
    )
    adam_wd: float = knob(0.0, "decoupled (AdamW) weight decay of the scalar/control Adam group; 0 = off", min=0.0)
    embed_wd: float = knob(0.0, "decoupled (AdamW) weight decay of the token embedding; 0 = off", min=0.0)


class WeightDecay(Technique):
    name = "weight_decay"
    title = "decoupled weight decay by role (Muon matrices, Adam scalars, token embedding), at the scheduled LR"
    spec = "4.1"
    settings = WeightDecaySettings
    toggle = None

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return any(getattr(cfg, name) > 0 for name in DECAYED_ROLES)

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        token_lr = "tied_embed_lr" if cfg.tie_embeddings else "embed_lr"
        for name, lr_name in (("muon_wd", "matrix_lr"), ("adam_wd", "scalar_lr"), ("embed_wd", token_lr)):
            wd, lr = getattr(cfg, name), getattr(cfg, lr_name)
            if wd * lr >= 1.0:
                checks.error(
                    f"{name.upper()}={wd} with {lr_name.upper()}={lr} gives lr*wd = {wd * lr:g} >= 1, which "
                    f"zeroes or flips the weights every step: use a decay below {1.0 / lr:g} (the seeds use 0.01-0.085)"
                )

    def on_train_start(self, run: TrainingRun) -> None:
        if run.optimizers is None:
            raise RuntimeError("weight decay: on_train_start without optimizers; build them first")
        by_role = {role: getattr(self.cfg, name) for name, roles in DECAYED_ROLES.items() for role in roles}
        run.optimizers.set_weight_decay(by_role)
        run.log(f"weight_decay: muon:{self.cfg.muon_wd} adam:{self.cfg.adam_wd} embed:{self.cfg.embed_wd} "
                "(decoupled, times the scheduled lr)")

    def report(self) -> dict[str, Any]:
        return {"muon_wd": self.cfg.muon_wd, "adam_wd": self.cfg.adam_wd, "embed_wd": self.cfg.embed_wd}
