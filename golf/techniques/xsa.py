"""XSA, exclusive self-attention on the last N layers (techniques.md 7.8; #635 4, #1260 all 11).

Each query head's output loses its component along the token's own value vector (of its KV
group): ``y <- y - (y . v_hat) v_hat`` with ``v_hat = v / |v|``. GQA-aware by broadcasting over the
heads of a group; no parameters. It runs on the values attention used (after value residual or
value embeddings) and before any head gate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor, nn

from golf.knobs import knob
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.policy import TensorFormat


@dataclass(frozen=True)
class XsaSettings:
    xsa_last_n: int = knob(
        0, "exclusive self-attention on the last N layers (#635: 4, #1260: 11 = all; more than "
        "NUM_LAYERS means all); 0 = off", min=0,
    )


class ExclusiveSelfAttention(nn.Module):
    """(y [B, T, H, hd], v [B, T, Hkv, hd], x) -> y without its component along its own value."""

    def forward(self, y: Tensor, v: Tensor, x: Tensor) -> Tensor:
        bsz, seqlen, heads, head_dim = y.shape
        kv_heads = v.size(2)
        grouped = y.reshape(bsz, seqlen, kv_heads, heads // kv_heads, head_dim)
        v_hat = F.normalize(v, dim=-1).unsqueeze(3)
        grouped = grouped - (grouped * v_hat).sum(dim=-1, keepdim=True) * v_hat
        return grouped.reshape(bsz, seqlen, heads, head_dim)


def xsa_layers(cfg: GolfConfig) -> list[int]:
    return list(range(max(cfg.num_layers - cfg.xsa_last_n, 0), cfg.num_layers))


class Xsa(Technique):
    name = "xsa"
    title = "exclusive self-attention (XSA) on the last N layers"
    spec = "7.8"
    settings = XsaSettings

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cfg.xsa_last_n > 0

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        chosen = set(xsa_layers(self.cfg))
        for block in run.model.blocks:
            if block.layer_idx in chosen:
                block.attn.output_transforms["xsa"] = ExclusiveSelfAttention()

    def report(self) -> dict[str, Any]:
        return {"layers": xsa_layers(self.cfg)}
