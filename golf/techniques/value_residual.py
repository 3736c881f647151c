"""Value residual, ResFormer-style (techniques.md 7.6; #635 ``USE_VALUE_RESIDUAL=1``): the first
block executed keeps its raw values v0; every later attention uses ``lambda0 * v0 + lambda1 * v``
before attention (so XSA sees the mixed values). Each layer has its own ``vr_lambda`` (init
(0.5, 0.5), fp32, scalar Adam), the first layer's included, as in #635's parameter count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from golf.knobs import knob
from golf.model.roles import ParamRole, Role
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.quant.policy import TensorFormat

FIRST_VALUES = "value_residual_v0"


@dataclass(frozen=True)
class ValueResidualSettings:
    value_residual: bool = knob(
        False, "mix the first layer's values into every later attention (ResFormer, #635)",
        aliases=("USE_VALUE_RESIDUAL",),
    )


class ValueResidualMix(nn.Module):
    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.vr_lambda = nn.Parameter(torch.tensor([0.5, 0.5], dtype=torch.float32, device=device))

    def parameter_roles(self) -> dict[str, ParamRole]:
        return {"vr_lambda": ParamRole(Role.CONTROL)}

    def forward(self, v: Tensor, state: dict[str, Tensor]) -> Tensor:
        if FIRST_VALUES not in state:
            state[FIRST_VALUES] = v
            # The first layer does not mix; its lambda stays in the graph with a zero gradient so
            # DDP (which expects a gradient for every parameter) does not stall.
            return v + (self.vr_lambda.sum() * 0).to(v.dtype)
        lam = self.vr_lambda.to(v.dtype)
        return lam[0] * state[FIRST_VALUES] + lam[1] * v


class ValueResidual(Technique):
    name = "value_residual"
    title = "value residual (ResFormer): later layers mix in the first layer's values"
    spec = "7.6"
    settings = ValueResidualSettings
    toggle = "value_residual"

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        for block in run.model.blocks:
            # last in the value seam: value embeddings are added to a layer's own values first
            block.attn.value_transforms["residual"] = ValueResidualMix(block.attn.q_gain.device)

    def report(self) -> dict[str, Any]:
        return {"layers": self.cfg.num_layers}
