"""Straight-through fake quantization for QAT that stays switchable under torch.compile.

The forward pass sees the weight snapped to its int export grid (:mod:`golf.quant.grid`), the
backward pass treats the snap as the identity (straight-through estimator, techniques.md 2.2).

Why the switch is a tensor (techniques.md 2.3): a Python bool read inside a compiled graph is
baked in as a constant at the first trace. #635's late QAT flipped such a flag mid-run and the
compiled graph never saw it, so QAT "never activated". Here the switch is ``alpha``, a 0-dim float
buffer holding 0. or 1.; flipping it with ``alpha.fill_(1.0)`` changes a graph *input*, so the
same compiled graph computes the quantized forward from the next step on, without a recompile.

Apply it to the fp32 master weight, before the cast to the matmul dtype, so the grid is the one
the export computes from the same fp32 weight.
"""

from __future__ import annotations

import torch
from torch import Tensor

from golf.quant.grid import fake_quantize_rows


def ste_fake_quant(w: Tensor, alpha: Tensor, bits: int, mode: str) -> Tensor:
    """``W_eff = w + alpha * stopgrad(fake_quantize_rows(w) - w)``.

    ``alpha`` is a 0-dim float tensor (a registered buffer) in {0., 1.}: 0 gives ``w`` itself,
    1 gives the fake-quantized weight exactly (each row on its ``bits``-bit grid). The gradient
    with respect to ``w`` is the gradient with respect to ``W_eff`` in both cases.
    """
    if alpha.ndim != 0 or not alpha.is_floating_point():
        raise ValueError(
            f"alpha must be a 0-dim float tensor (a registered buffer set to 0. or 1.), got "
            f"shape {tuple(alpha.shape)} dtype {alpha.dtype}: a Python bool would be constant-folded "
            "by torch.compile (techniques.md 2.3)"
        )
    w_const = w.detach()
    w_hat = fake_quantize_rows(w_const, bits, mode)
    # Same value as the formula above, arranged so that both ends are bit-exact: lerp returns its
    # end points exactly at weight 0 and 1, and (w - w_const) is exactly zero in the forward pass
    # while carrying the identity gradient (the straight-through estimator).
    return torch.lerp(w_const, w_hat, alpha.to(w.dtype)) + (w - w_const)
