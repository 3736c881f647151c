"""Orthogonal init with muP-style output scaling (techniques.md 7.13, "OrthoInit").

``ORTHO_INIT`` picks a seed's variant; each makes every linear weight with both dims >= 64
orthogonal (gain 1) once the model, and every technique's added layers, exist:

- ``zero_proj`` (#635, #1260): zero-initialised layers (the output projections) stay zero;
- ``scaled_proj`` (#326): as zero_proj, and the other (non-zero) ``proj`` layers, in practice
  BigramHash's projection, are then scaled by 1/sqrt(2L);
- ``all_scaled`` (#137): the zero-initialised output projections are overwritten too, so every
  ``proj`` layer starts as an orthogonal matrix scaled by 1/sqrt(2L).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from golf.knobs import knob
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.policy import TensorFormat

ORTHO_MODES = ("off", "zero_proj", "scaled_proj", "all_scaled")
MIN_DIM = 64


@dataclass(frozen=True)
class OrthoInitSettings:
    ortho_init: str = knob(
        "off", "orthogonal init: off, zero_proj (#635/#1260), scaled_proj (#326) or all_scaled (#137)",
        choices=ORTHO_MODES,
    )


def is_proj(name: str) -> bool:
    return name == "proj" or name.endswith(".proj")


class OrthoInit(Technique):
    name = "ortho_init"
    title = "orthogonal init of large linears, muP-style 1/sqrt(2L) output projections"
    spec = "7.13"
    settings = OrthoInitSettings

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cfg.ortho_init != "off"

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.orthogonal: list[str] = []
        self.scaled: list[str] = []

    @torch.no_grad()
    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        mode = self.cfg.ortho_init
        out_scale = 1.0 / math.sqrt(2 * self.cfg.num_layers)
        for name, module in run.model.named_modules():
            if not isinstance(module, nn.Linear) or min(module.weight.shape) < MIN_DIM:
                continue
            zero = getattr(module, "zero_init", False) or not bool(module.weight.any())
            proj = is_proj(name)
            if zero and not (mode == "all_scaled" and proj):
                continue
            nn.init.orthogonal_(module.weight, gain=1.0)
            self.orthogonal.append(name)
            if proj and mode in ("scaled_proj", "all_scaled"):
                module.weight.mul_(out_scale)
                self.scaled.append(name)

    def report(self) -> dict[str, Any]:
        return {"mode": self.cfg.ortho_init, "orthogonal": len(self.orthogonal), "scaled": self.scaled}
