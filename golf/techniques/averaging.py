"""What the weight-averaging techniques (LAWA, EMA, SWA; techniques.md 6.1-6.3) have in common.

Each one keeps its own running state during training and, at the end, *offers* a full state_dict
under its name; it never loads it. :class:`~golf.techniques.weight_choice.WeightChoice` decides
which offer (or the raw weights) becomes the final model, so that choosing is one rule in one
place (``AVG_USE``, ``AVG_SELECT_BY_VAL``) however many averaging techniques are on.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from golf.techniques.base import Technique


class Averaging(Technique):
    """A technique that offers averaged weights under its ``name`` at the end of training."""


def averaging_techniques() -> list[type[Averaging]]:
    """The registered averaging techniques, in registry order (a later one is preferred by AVG_USE=auto)."""
    from golf.techniques import TECHNIQUES  # the registry imports this module

    return [t for t in TECHNIQUES if issubclass(t, Averaging)]


@torch.no_grad()
def offered_state(model: nn.Module, averaged: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The model's full state_dict on CPU, each entry of ``averaged`` standing in for the model's
    own, cast to that entry's dtype (an average is computed in fp32; the model keeps its dtypes)."""
    out: dict[str, Tensor] = {}
    for name, tensor in model.state_dict().items():
        source = averaged.get(name, tensor)
        out[name] = source.detach().to(device="cpu", dtype=tensor.dtype, copy=True)
    return out


def float_state(model: nn.Module) -> dict[str, Tensor]:
    """The floating-point entries of the model's state_dict (parameters and float buffers), live."""
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
