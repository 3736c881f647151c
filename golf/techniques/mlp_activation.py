"""MLP activation (techniques.md 7.2): relu(h)^2 (the baseline) or LeakyReLU(slope)(h)^2 (#635,
#1260 with slope 0.5: h^2 for h > 0, slope^2 * h^2 below, so negative inputs keep a gradient).

The activation is a module each MLP holds; this technique swaps it before compile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor, nn

from golf.knobs import Checks, knob
from golf.techniques.base import Technique, TrainingRun
from golf.techniques.inert import warn_inert_unless

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.policy import TensorFormat

MLP_ACTIVATIONS = ("relu2", "leaky_relu2")


@dataclass(frozen=True)
class MlpActivationSettings:
    mlp_act: str = knob(
        "relu2", "MLP activation: relu2 (baseline) or leaky_relu2 (LeakyReLU(LEAKY_SLOPE)^2, #635/#1260)",
        choices=MLP_ACTIVATIONS,
    )
    leaky_slope: float = knob(0.5, "negative slope of leaky_relu2 (the seeds use 0.5)", min=0.0)


class LeakyReluSquared(nn.Module):
    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, negative_slope=self.slope).square()

    def extra_repr(self) -> str:
        return f"slope={self.slope}"


class MlpActivation(Technique):
    name = "mlp_act"
    title = "MLP activation: relu^2 or LeakyReLU(slope)^2"
    spec = "7.2"
    settings = MlpActivationSettings

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cfg.mlp_act != "relu2"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if cfg.mlp_act == "relu2":
            warn_inert_unless(cfg, ["leaky_slope"], "MLP_ACT=leaky_relu2", checks)

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        for block in run.model.blocks:
            block.mlp.activation = LeakyReluSquared(self.cfg.leaky_slope)

    def report(self) -> dict[str, Any]:
        return {"activation": self.cfg.mlp_act, "slope": self.cfg.leaky_slope}
