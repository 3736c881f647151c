"""Parallel residual from a chosen layer on (#1260's ``PARALLEL_RESIDUAL`` switch; GPT-J style):
in those blocks attention and MLP both read the same normalised input and add to the stream
together, ``x + a * attn(n(x)) + m * mlp(n(x))``, instead of the MLP reading the stream after
attention. No parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from golf.knobs import Checks, knob
from golf.techniques.base import Technique, TrainingRun, warn_inert

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.policy import TensorFormat


@dataclass(frozen=True)
class ParallelResidualSettings:
    parallel_residual: bool = knob(False, "attention and MLP read the same input (from PARALLEL_RESIDUAL_START on)")
    parallel_residual_start: int = knob(0, "first (physical) layer with a parallel residual", min=0)


class ParallelResidual(Technique):
    name = "parallel_residual"
    title = "parallel residual: attention and MLP from the same input, from a chosen layer on"
    spec = "7.15"
    settings = ParallelResidualSettings
    toggle = "parallel_residual"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.parallel_residual:
            warn_inert(cfg, cls, ["parallel_residual_start"], checks)
        elif cfg.parallel_residual_start >= cfg.num_layers:
            checks.warn(f"PARALLEL_RESIDUAL_START={cfg.parallel_residual_start} is past the last layer "
                        f"({cfg.num_layers - 1}), so no block is parallel: pick a layer below "
                        f"NUM_LAYERS={cfg.num_layers}")

    def layers(self) -> list[int]:
        return list(range(self.cfg.parallel_residual_start, self.cfg.num_layers))

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        chosen = set(self.layers())
        for block in run.model.blocks:
            block.parallel = block.layer_idx in chosen

    def report(self) -> dict[str, Any]:
        return {"layers": self.layers()}
