"""SmearGate (techniques.md 7.3; #326, #635 ``USE_SMEARGATE=1``): each position's input mixes in
the previous position's, ``x'_t = (1 - s) x_t + s x_{t-1}`` with ``s = sigmoid(gate)`` per channel
and ``x_{-1} = 0``. It acts after the input norm (and after any hashed n-gram embedding), before
x0 is kept, so x0 is the smeared input too. ``gate`` starts at 0 (s = 0.5) and trains with the
scalar Adam group; it is stored in fp32.
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


@dataclass(frozen=True)
class SmearGateSettings:
    smear_gate: bool = knob(
        False, "mix each position's input with the previous one through a learned gate (#326, #635)",
        aliases=("USE_SMEARGATE", "SMEARGATE"),
    )


class SmearGate(nn.Module):
    def __init__(self, dim: int, device: torch.device) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim, dtype=torch.float32, device=device))

    def parameter_roles(self) -> dict[str, ParamRole]:
        return {"gate": ParamRole(Role.CONTROL)}

    def forward(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.gate.to(x.dtype))
        previous = F.pad(x[:, :-1], (0, 0, 1, 0))  # x_{-1} = 0
        return (1 - s) * x + s * previous


class Smear(Technique):
    name = "smear_gate"
    title = "SmearGate: a learned per-channel mix of each position with the previous one"
    spec = "7.3"
    settings = SmearGateSettings
    toggle = "smear_gate"

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        run.model.input_transforms["smear"] = SmearGate(self.cfg.model_dim, run.model.tok_emb.weight.device)

    def report(self) -> dict[str, Any]:
        return {"params": self.cfg.model_dim}
