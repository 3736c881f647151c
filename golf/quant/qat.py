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

import math

import torch
from torch import Tensor

from golf.quant.grid import clip_range, fake_quantize_rows, row_scales


def ste_fake_quant(w: Tensor, alpha: Tensor, bits: int, mode: str) -> Tensor:
    """``W_eff = w + alpha * stopgrad(fake_quantize_rows(w) - w)``.

    ``alpha`` is a 0-dim float tensor (a registered buffer) in {0., 1.}: 0 gives ``w`` itself,
    1 gives the fake-quantized weight exactly (each row on its ``bits``-bit grid). The gradient
    with respect to ``w`` is the gradient with respect to ``W_eff`` in both cases.
    """
    _check_alpha(alpha)
    w_const = w.detach()
    w_hat = fake_quantize_rows(w_const, bits, mode)
    # Same value as the formula above, arranged so that both ends are bit-exact: lerp returns its
    # end points exactly at weight 0 and 1, and (w - w_const) is exactly zero in the forward pass
    # while carrying the identity gradient (the straight-through estimator).
    return torch.lerp(w_const, w_hat, alpha.to(w.dtype)) + (w - w_const)


def noise_fake_quant(w: Tensor, alpha: Tensor, bits: int, mode: str) -> Tensor:
    """``w + alpha * stopgrad(n)``, ``n ~ N(0, (s_r / sqrt(12))^2)`` drawn afresh every call.

    ``s_r`` is the row's step on its ``bits``-bit grid, so the noise has the standard deviation of
    uniform rounding error on that grid (#130's noise mode, techniques.md 2.4). Unlike #130, which
    added the noise to ``weight.data`` in a forward pre-hook and subtracted it after the optimizer
    step (accumulating across micro-steps), nothing is written to the weight: the perturbation
    lives only in the forward pass, and the gradient reaches ``w`` unchanged.
    """
    _check_alpha(alpha)
    sigma = row_scales(w.detach(), bits, mode) / math.sqrt(12.0)
    noise = torch.randn_like(w, dtype=torch.float32) * sigma.unsqueeze(-1)
    return w + alpha.to(w.dtype) * noise.to(w.dtype)


def soft_round_fake_quant(w: Tensor, alpha: Tensor, bits: int, mode: str, sharpness: float) -> Tensor:
    """Soft-round QAT (techniques.md 2.5): ``s * clamp(floor(u) + sigmoid(a (frac(u) - 1/2)), -c, c)``
    with ``u = w / s``; the gradient flows through the sigmoid (no straight-through estimator).

    ``alpha`` switches it in exactly like :func:`ste_fake_quant` (0 gives ``w`` itself).
    ``sharpness`` is ``a``: large values approach hard rounding.
    """
    _check_alpha(alpha)
    c = clip_range(bits)
    scale = row_scales(w.detach(), bits, mode).unsqueeze(-1)
    u = w.float() / scale
    base = torch.floor(u).detach()
    soft = base + torch.sigmoid(sharpness * (u - base - 0.5))
    w_soft = (torch.clamp(soft, -c, c) * scale).to(w.dtype)
    return torch.lerp(w, w_soft, alpha.to(w.dtype))


def _check_alpha(alpha: Tensor) -> None:
    if alpha.ndim != 0 or not alpha.is_floating_point():
        raise ValueError(
            f"alpha must be a 0-dim float tensor (a registered buffer set to 0. or 1.), got "
            f"shape {tuple(alpha.shape)} dtype {alpha.dtype}: a Python bool would be constant-folded "
            "by torch.compile (techniques.md 2.3)"
        )
