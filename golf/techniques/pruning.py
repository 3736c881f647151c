"""Pruning before or inside quantization (techniques.md 3.6): more zeros, which the codec packs.

- ``PRUNE_MODE=magnitude`` (#326, ``PRUNE_FRAC=0.05``): after the final weights are chosen and
  before quantization (and before GPTQ sees them), every matrix the export quantizes has its
  ``PRUNE_FRAC`` smallest-magnitude entries set to exactly 0.
- ``PRUNE_MODE=selective_pm1`` (#635's P2 commit): after quantization (after GPTQ's codes, when
  on), the codes with |q| = 1 are ordered by a cheap error proxy, their row's ``s^2``, and the
  cheapest ``PRUNE_FRAC`` of them in each tensor become 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from golf.knobs import Checks, knob
from golf.model.roles import Role
from golf.quant.export import quantize_tensor
from golf.quant.pruning import magnitude_prune_, prune_pm1_codes
from golf.quant.policy import Codes, TensorFormat
from golf.techniques.base import Candidates, Technique, TrainingRun

if TYPE_CHECKING:
    from collections.abc import Callable

    from golf.config import GolfConfig

PRUNE_MODES = ("magnitude", "selective_pm1")


@dataclass(frozen=True)
class PruneSettings:
    prune_frac: float = knob(
        0.0, "fraction pruned: of each quantized matrix's weights (magnitude) or of its +-1 codes "
        "(selective_pm1); 0 = off", min=0.0, max=1.0,
    )
    prune_mode: str = knob(
        "magnitude", "magnitude (#326: smallest |w| to 0 before quantization) or selective_pm1 (#635: "
        "cheapest +-1 codes to 0 after it)", choices=PRUNE_MODES,
    )


def _quantized_matrix(fmt: TensorFormat, tensor: Tensor) -> bool:
    return fmt.kind == "int" and fmt.scheme == "per_row" and tensor.ndim == 2


class MagnitudePruning(Technique):
    name = "pruning"
    title = "pruning: magnitude (before quantization) or selective +-1 codes (after it)"
    spec = "3.6"
    settings = PruneSettings
    toggle = None

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cfg.prune_frac > 0 and cfg.prune_mode == "magnitude"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if cfg.prune_frac <= 0:
            from golf.config import reference_value

            if cfg.prune_mode != reference_value(checks, "prune_mode"):
                checks.warn(f"PRUNE_MODE={cfg.prune_mode} has no effect while PRUNE_FRAC=0: set PRUNE_FRAC or drop it")

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.export_format: Callable[[str, Tensor], TensorFormat] | None = None
        self.pruned: dict[str, int] = {}
        self.total = 0

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        self.export_format = export_format

    @torch.no_grad()
    def end_of_training(self, run: TrainingRun, candidates: Candidates) -> None:
        for name, param in run.model.named_parameters():
            role = run.roles.get(name)
            if role is not None and role.role is Role.BANK and param.numel() // param.shape[0] > self.cfg.quant_keep_float_max_numel:
                # A bank is exported as its per-layer matrices: each is pruned as one tensor.
                count = sum(magnitude_prune_(layer, self.cfg.prune_frac) for layer in param.data)
            elif role is not None and _quantized_matrix(self.export_format(name, param), param):
                count = magnitude_prune_(param.data, self.cfg.prune_frac)
            else:
                continue
            self.pruned[name], self.total = count, self.total + param.numel()
        run.log(f"pruning:magnitude frac:{self.cfg.prune_frac} tensors:{len(self.pruned)} "
                f"zeroed:{sum(self.pruned.values())}/{self.total}")

    def report(self) -> dict[str, Any]:
        return {"mode": "magnitude", "frac": self.cfg.prune_frac, "zeroed": sum(self.pruned.values()),
                "of": self.total, "tensors": dict(sorted(self.pruned.items()))}


class SelectivePruning(Technique):
    """The ``selective_pm1`` mode of :class:`MagnitudePruning`'s knobs; it runs after GPTQ in the
    registry so that it prunes the codes GPTQ chose."""

    name = "pruning_pm1"
    title = "selective +-1 pruning of the quantized codes (PRUNE_MODE=selective_pm1)"
    spec = "3.6"
    settings = None
    toggle = None

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cfg.prune_frac > 0 and cfg.prune_mode == "selective_pm1"

    @classmethod
    def knob_names(cls) -> list[str]:
        """The knobs it reads (the config section is :class:`MagnitudePruning`'s)."""
        return MagnitudePruning.knob_names()

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.pruned: dict[str, int] = {}

    def quantized_codes(self, name: str, tensor: Tensor, fmt: TensorFormat, proposed: Codes | None) -> Codes | None:
        if tensor.ndim != 2:
            return None
        if proposed is None:
            q, scale = quantize_tensor(name, tensor, fmt)
            proposed = Codes(q, scale, "rtn")
        q, count = prune_pm1_codes(proposed.q, proposed.scale, self.cfg.prune_frac)
        self.pruned[name] = count
        return Codes(q, proposed.scale, f"{proposed.method}+prune_pm1")

    def report(self) -> dict[str, Any]:
        return {"mode": "selective_pm1", "frac": self.cfg.prune_frac, "zeroed": sum(self.pruned.values()),
                "tensors": dict(sorted(self.pruned.items()))}
