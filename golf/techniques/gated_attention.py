"""Gated attention (techniques.md 7.7; #635 ``USE_GATED_ATTENTION=1``): each head's output is
multiplied by ``sigmoid(W_g x + b_g)``, one gate per head from the normalised attention input,
after attention (and after XSA), before the output projection. ``W_g`` starts at zero and ``b_g``
at 4 (every gate sigmoid(4) = 0.982); an fp32 control tensor (scalar Adam, fp32 at export),
H * (d + 1) parameters per layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.knobs import knob
from golf.model.roles import ParamRole, Role
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.quant.policy import TensorFormat

GATE_BIAS_INIT = 4.0


@dataclass(frozen=True)
class GatedAttentionSettings:
    gated_attention: bool = knob(
        False, "a learned sigmoid gate per attention head (#635)", aliases=("USE_GATED_ATTENTION",),
    )


class HeadGate(nn.Linear):
    """(y [B, T, H, hd], v, x [B, T, d]) -> y * sigmoid(W x + b) per head."""

    def __init__(self, dim: int, heads: int, device: torch.device) -> None:
        super().__init__(dim, heads, bias=True, device=device, dtype=torch.float32)
        with torch.no_grad():
            self.weight.zero_()
            self.bias.fill_(GATE_BIAS_INIT)

    def parameter_roles(self) -> dict[str, ParamRole]:
        return {"weight": ParamRole(Role.CONTROL), "bias": ParamRole(Role.CONTROL)}

    def forward(self, y: Tensor, v: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        # Cast like CastedLinear: the fp32 gate also runs on a bf16 stream outside autocast.
        gate = torch.sigmoid(F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype)))
        return y * gate.to(y.dtype).unsqueeze(-1)


class GatedAttention(Technique):
    name = "gated_attention"
    title = "gated attention: a learned sigmoid gate on each head's output"
    spec = "7.7"
    settings = GatedAttentionSettings
    toggle = "gated_attention"

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        for block in run.model.blocks:
            attn = block.attn
            attn.output_transforms["head_gate"] = HeadGate(self.cfg.model_dim, attn.num_heads, attn.q_gain.device)

    def report(self) -> dict[str, Any]:
        return {"bias_init": GATE_BIAS_INIT}
