"""Sigmoid-gated U-Net skips (techniques.md 7.12; #1260 ``SKIP_GATES_ENABLED=1``): a decoder block's
input becomes the convex mix ``sigmoid(g) x + (1 - sigmoid(g)) (w skip)`` instead of the sum
``x + w skip``; ``g`` [n_skip, d] starts at 0 (an even average), fp32, scalar Adam."""

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


@dataclass(frozen=True)
class SkipGatesSettings:
    skip_gates_enabled: bool = knob(False, "mix U-Net skips through a learned sigmoid gate (#1260)")


class SkipGate(nn.Module):
    def __init__(self, num_skips: int, dim: int, device: torch.device) -> None:
        super().__init__()
        self.gates = nn.Parameter(torch.zeros(num_skips, dim, dtype=torch.float32, device=device))

    def parameter_roles(self) -> dict[str, ParamRole]:
        return {"gates": ParamRole(Role.CONTROL)}

    def forward(self, x: Tensor, weighted_skip: Tensor, index: int) -> Tensor:
        g = torch.sigmoid(self.gates[index].to(x.dtype))
        return g * x + (1 - g) * weighted_skip


class SkipGates(Technique):
    name = "skip_gates"
    title = "sigmoid-gated U-Net skips: a learned convex mix of stream and skip"
    spec = "7.12"
    settings = SkipGatesSettings
    toggle = "skip_gates_enabled"

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        weights = run.model.skip_weights
        run.model.skip_merge = SkipGate(weights.size(0), weights.size(1), weights.device)

    def report(self) -> dict[str, Any]:
        return {"skips": self.cfg.num_layers // 2}
