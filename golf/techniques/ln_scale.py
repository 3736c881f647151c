"""LN scale (techniques.md 7.10; #1260 ``LN_SCALE=1``): in block i (its physical index, also when
depth recurrence runs it twice) both RMSNorm outputs are multiplied by 1/sqrt(i + 1), damping
the deeper layers' branch inputs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from golf.knobs import knob
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.quant.policy import TensorFormat


@dataclass(frozen=True)
class LnScaleSettings:
    ln_scale: bool = knob(False, "scale block i's norm outputs by 1/sqrt(i+1) (#1260)")


class LnScale(Technique):
    name = "ln_scale"
    title = "LN scale: block i's norm outputs times 1/sqrt(i+1)"
    spec = "7.10"
    settings = LnScaleSettings
    toggle = "ln_scale"

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        for block in run.model.blocks:
            block.norm_scale = 1.0 / math.sqrt(block.layer_idx + 1)

    def report(self) -> dict[str, Any]:
        return {"factors": [round(1.0 / math.sqrt(i + 1), 6) for i in range(self.cfg.num_layers)]}
