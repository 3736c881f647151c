"""Pruning primitives (techniques.md 3.6): zeros that the codec packs for free.

- :func:`magnitude_prune_`: the smallest-|w| fraction of a float weight set to 0 (#326).
- :func:`prune_pm1_codes`: the cheapest fraction of a tensor's +-1 integer codes set to 0, cheapest
  = smallest ``s_r^2`` of their row, the error a dropped +-1 code adds (#635's selective pruning).
"""

from __future__ import annotations

import torch
from torch import Tensor


def magnitude_prune_(w: Tensor, frac: float) -> int:
    """Set the ``round(frac * numel)`` smallest-|w| entries of ``w`` to 0 in place (ties by index);
    returns how many."""
    count = int(round(frac * w.numel()))
    if count <= 0:
        return 0
    flat = w.detach().view(-1)
    order = torch.argsort(flat.abs().float(), stable=True)
    flat[order[:count]] = 0
    return count


def prune_pm1_codes(q: Tensor, scale: Tensor, frac: float) -> tuple[Tensor, int]:
    """``q`` with the cheapest ``round(frac * #(|q| = 1))`` of its +-1 codes set to 0, cheapest =
    smallest ``s_r^2`` of their row (ties by position); returns the codes and how many."""
    flat = q.reshape(-1).clone()
    candidates = torch.nonzero(flat.abs() == 1).flatten()
    count = int(round(frac * candidates.numel()))
    if count <= 0:
        return q, 0
    cost = scale.float().reshape(-1).square().repeat_interleave(q.shape[-1])[candidates]
    flat[candidates[torch.argsort(cost, stable=True)[:count]]] = 0
    return flat.reshape(q.shape), count
