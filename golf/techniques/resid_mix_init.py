"""Phase-transition resid_mix init (techniques.md 7.14; #326): block i of L starts with
``resid_mix = (phi_i, 1 - phi_i)``, ``phi_i = sigmoid(3 (i / (L - 1) - 0.5))``, so early layers
lean on the input anchor x0 and late layers on the running stream."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from golf.knobs import knob
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.policy import TensorFormat


@dataclass(frozen=True)
class ResidMixInitSettings:
    resid_mix_init: str = knob(
        "default", "resid_mix init: default (pure stream) or phase (#326's sigmoid over depth)",
        choices=("default", "phase"),
    )


def phase(layer: int, num_layers: int) -> float:
    depth = layer / (num_layers - 1) if num_layers > 1 else 0.0
    return 1.0 / (1.0 + math.exp(-3.0 * (depth - 0.5)))


class ResidMixInit(Technique):
    name = "resid_mix_init"
    title = "phase-transition resid_mix init over depth"
    spec = "7.14"
    settings = ResidMixInitSettings

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cfg.resid_mix_init != "default"

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        with torch.no_grad():
            for block in run.model.blocks:
                phi = phase(block.layer_idx, len(run.model.blocks))
                block.resid_mix[0].fill_(phi)
                block.resid_mix[1].fill_(1.0 - phi)

    def report(self) -> dict[str, Any]:
        return {"phi": [round(phase(i, self.cfg.num_layers), 6) for i in range(self.cfg.num_layers)]}
