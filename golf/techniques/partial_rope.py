"""Partial RoPE (techniques.md 7.9; #635, #1260 ``ROPE_DIMS=16``): rotary position only on the
first ROPE_DIMS dims of each query/key head (pairs (i, i + ROPE_DIMS/2), frequencies
``base^(-2i/ROPE_DIMS)``); the other dims carry no position information. Applied where the
baseline rotates: after the q/k RMSNorm, before q_gain."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from golf.knobs import Checks, knob
from golf.model.layers import Rotary
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.policy import TensorFormat


@dataclass(frozen=True)
class PartialRopeSettings:
    rope_dims: int = knob(0, "rotate only the first N dims of each head (#635/#1260: 16); 0 = all", min=0)


class PartialRope(Technique):
    name = "partial_rope"
    title = "partial RoPE: rotary position on the first ROPE_DIMS dims of each head"
    spec = "7.9"
    settings = PartialRopeSettings

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cfg.rope_dims > 0

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if cfg.rope_dims == 0:
            return
        if cfg.rope_dims % 2:
            checks.error(f"ROPE_DIMS={cfg.rope_dims} is odd: rotary pairs need an even count (e.g. 16)")
        elif cfg.model_dim % cfg.num_heads == 0 and cfg.rope_dims > cfg.head_dim:
            checks.error(f"ROPE_DIMS={cfg.rope_dims} exceeds the head dim {cfg.head_dim}: "
                         f"use at most {cfg.head_dim}, or 0 for all")

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        for block in run.model.blocks:
            attn = block.attn
            attn.rotary = Rotary(attn.head_dim, self.cfg.rope_base, self.cfg.rope_dims).to(attn.rotary.inv_freq.device)

    def report(self) -> dict[str, Any]:
        return {"rope_dims": self.cfg.rope_dims}
