"""Value embeddings (techniques.md 7.11; #1260 ``VE_ENABLED=1 VE_DIM=128 VE_LAYERS=9,10``): a
shared token table [V, VE_DIM] (init N(0, 0.01)) projected to the key/value width (zero-init),
times a shared scale (init 0.1) and a per-layer scale (init 1), is added to the values of the
chosen layers. Adds V * VE_DIM + VE_DIM * kv_dim + 1 + |VE_LAYERS| parameters.

Roles: the table trains with the token-embedding Adam group, the projection with Muon (a matrix
of group "ve"), the scales with scalar Adam.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from golf.knobs import Checks, knob
from golf.model.layers import CastedLinear
from golf.model.roles import ParamRole, Role
from golf.techniques.base import Technique, TrainingRun, warn_inert
from golf.techniques.layer_lists import parse_layers

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.policy import TensorFormat

TABLE_INIT_STD = 0.01
SHARED_SCALE_INIT = 0.1


@dataclass(frozen=True)
class ValueEmbeddingSettings:
    ve_enabled: bool = knob(False, "add a shared value embedding to the values of VE_LAYERS (#1260)")
    ve_dim: int = knob(128, "width of the value-embedding table", min=1)
    ve_layers: str = knob(
        "9,10", "comma-separated layers that receive the value embedding (negative counts from the end)",
    )


class SharedValueEmbedding(nn.Module):
    def __init__(self, vocab: int, dim: int, kv_dim: int, device: torch.device) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, dim, device=device)
        nn.init.normal_(self.table.weight, std=TABLE_INIT_STD)
        self.proj = CastedLinear(dim, kv_dim, zero_init=True).to(device)
        nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(SHARED_SCALE_INIT, dtype=torch.float32, device=device))

    def parameter_roles(self) -> dict[str, ParamRole]:
        return {"table.weight": ParamRole(Role.EMBEDDING), "proj.weight": ParamRole(Role.MATRIX, "ve"),
                "scale": ParamRole(Role.CONTROL)}

    def forward(self, ids: Tensor) -> Tensor:
        h = self.proj(self.table(ids))
        return self.scale.to(h.dtype) * h


class LayerValueEmbedding(nn.Module):
    """One layer's use of the shared embedding (held by the GPT, not registered here twice)."""

    def __init__(self, shared: SharedValueEmbedding, device: torch.device) -> None:
        super().__init__()
        self.__dict__["shared"] = shared  # a plain reference: its parameters live in the GPT
        self.layer_scale = nn.Parameter(torch.ones((), dtype=torch.float32, device=device))

    def parameter_roles(self) -> dict[str, ParamRole]:
        return {"layer_scale": ParamRole(Role.CONTROL)}

    def forward(self, v: Tensor, state: dict[str, Tensor]) -> Tensor:
        e = self.shared(state["input_ids"])
        return v + (self.layer_scale.to(e.dtype) * e).to(v.dtype).view_as(v)


class ValueEmbeddings(Technique):
    name = "value_embeddings"
    title = "value embeddings: a shared token table added to the values of chosen layers"
    spec = "7.11"
    settings = ValueEmbeddingSettings
    toggle = "ve_enabled"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.ve_enabled:
            warn_inert(cfg, cls, ["ve_dim", "ve_layers"], checks)
            return
        try:
            parse_layers(cfg.ve_layers, cfg.num_layers, "VE_LAYERS")
        except ValueError as exc:
            checks.error(str(exc))

    def layers(self) -> list[int]:
        return parse_layers(self.cfg.ve_layers, self.cfg.num_layers, "VE_LAYERS")

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        cfg, model = self.cfg, run.model
        device = model.tok_emb.weight.device
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        model.value_embedding = SharedValueEmbedding(cfg.vocab_size, cfg.ve_dim, kv_dim, device)
        chosen = set(self.layers())
        for block in model.blocks:
            if block.layer_idx in chosen:
                block.attn.value_transforms["ve"] = LayerValueEmbedding(model.value_embedding, device)

    def report(self) -> dict[str, Any]:
        return {"layers": self.layers(), "dim": self.cfg.ve_dim}
