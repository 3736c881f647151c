"""Codes better than round-to-nearest for a per-row grid (techniques.md 3.3-3.4).

- :func:`clip_search_codes` (GPTQ-lite, #635 / #137): each row tries a few clip values and keeps
  the one with the smallest reconstruction error. Round-to-nearest's own codes are always among
  the candidates, so no row can get worse than what the export would store without the search.
- :func:`gptq_codes` (full-Hessian GPTQ, #1260): with ``H = E[x x^T]`` of the layer's inputs, the
  columns are quantized one at a time (in blocks, most active columns first) and each column's
  rounding error is pushed onto the columns not yet quantized through the Cholesky factor of
  ``H^-1``, so the layer's *output* error, not the weight error, is what gets minimised.

Every scale is rounded to fp16 before the codes are chosen, because fp16 is what the artifact
stores: the error a candidate is judged by is the error the artifact will have.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from golf.quant.grid import _RELATIVE_MIN_SCALE, clip_range, quantize_rows

CLIP_PERCENTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
"""#635's GPTQ-lite and #1260's GPTQ: clip at this quantile of a row's |w|."""
CLIP_FACTORS = (0.85, 0.90, 0.925, 0.95, 0.975, 0.99, 0.995, 1.0)
"""#137's int8 clip search: clip at this fraction of a row's max |w|."""
CLIP_CANDIDATES = {"percentiles": CLIP_PERCENTILES, "factors": CLIP_FACTORS}
DAMPING = 0.01
"""#1260: ``H += 0.01 * mean(diag H) * I`` before the Cholesky factorisation."""


def _row_quantile(a: Tensor, q: float) -> Tensor:
    if q >= 1.0:
        return a.amax(dim=-1)
    return torch.quantile(a, q, dim=-1)


def _stored_scale(clip: Tensor, c: int, grid: str) -> Tensor:
    """The per-row scale for clip values ``clip`` as the artifact stores it (fp16, back in fp32)."""
    floor = 1.0 / c if grid == "floored" else _RELATIVE_MIN_SCALE
    return (clip / c).clamp_min(floor).to(torch.float16).float()


def _round_codes(w: Tensor, scale: Tensor, c: int) -> Tensor:
    # A relative row of zeros has an fp16 scale of 0; its codes are 0.
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.clamp(torch.round(w / safe), -c, c) * (scale > 0)


def rtn_codes(w: Tensor, bits: int, grid: str) -> tuple[Tensor, Tensor]:
    """Round-to-nearest codes and the fp16 scales the export stores (the export's absmax rows)."""
    q, scale = quantize_rows(w, bits, grid)
    return q, scale.to(torch.float16)


@dataclass(frozen=True)
class SearchResult:
    q: Tensor
    """int8 codes."""
    scale: Tensor
    """fp16 per-row scales."""
    chosen: Tensor
    """Per row: the index of the chosen candidate, -1 for round-to-nearest's own codes."""


def clip_search_codes(w: Tensor, bits: int, grid: str, candidates: tuple[float, ...] = CLIP_PERCENTILES,
                      mode: str = "percentiles", baseline: tuple[Tensor, Tensor] | None = None) -> SearchResult:
    """Per-row clip search: each row keeps the candidate clip (a quantile of |w|, or a fraction of
    max |w| with ``mode="factors"``) with the smallest squared reconstruction error; ties and
    anything no better than ``baseline`` (codes, stored scales; default round-to-nearest on absmax
    rows) keep the baseline's codes."""
    if w.ndim != 2:
        raise ValueError(f"the clip search needs a matrix, got shape {tuple(w.shape)}")
    c = clip_range(bits)
    w32 = w.detach().float()
    best_q, best_s = baseline if baseline is not None else rtn_codes(w32, bits, grid)
    best_err = (w32 - best_q.float() * best_s.float().unsqueeze(-1)).square().sum(-1)
    best_q, best_s = best_q.float(), best_s.float()
    chosen = torch.full((w32.shape[0],), -1, dtype=torch.long, device=w32.device)
    absw = w32.abs()
    rowmax = absw.amax(dim=-1)
    for index, value in enumerate(candidates):
        clip = _row_quantile(absw, value) if mode == "percentiles" else rowmax * value
        scale = _stored_scale(clip, c, grid)
        q = _round_codes(w32, scale.unsqueeze(-1), c)
        err = (w32 - q * scale.unsqueeze(-1)).square().sum(-1)
        better = err < best_err
        best_q = torch.where(better.unsqueeze(-1), q, best_q)
        best_s = torch.where(better, scale, best_s)
        best_err = torch.where(better, err, best_err)
        chosen = torch.where(better, torch.full_like(chosen, index), chosen)
    return SearchResult(best_q.to(torch.int8), best_s.to(torch.float16), chosen)


@dataclass(frozen=True)
class GptqResult:
    q: Tensor
    """int8 codes in the original column order."""
    scale: Tensor
    """fp16 per-row scales."""
    clip: float
    """The chosen clip percentile."""
    dead_columns: int
    """Columns whose input never fired (diag H = 0); their weights are set to 0."""


def act_order(h: Tensor) -> Tensor:
    """Column order of GPTQ's "act-order": descending diag(H), ties by index (stable)."""
    return torch.argsort(torch.diagonal(h), descending=True, stable=True)


def gptq_codes(w: Tensor, hessian: Tensor, bits: int, grid: str, *, block_size: int = 128,
               reorder: bool = True, percentiles: tuple[float, ...] = CLIP_PERCENTILES) -> GptqResult | None:
    """#1260's GPTQ of ``w`` [rows, cols] against ``hessian`` = E[x x^T] of its inputs [cols, cols].

    Returns None when H (damped) is not positive definite, so the caller can fall back to the clip
    search as #1260 does.
    """
    if w.ndim != 2 or tuple(hessian.shape) != (w.shape[1], w.shape[1]):
        raise ValueError(f"GPTQ needs a matrix [rows, cols] and H [cols, cols], got {tuple(w.shape)} and "
                         f"{tuple(hessian.shape)}")
    c = clip_range(bits)
    W = w.detach().float().clone()
    H = hessian.detach().float().to(W.device).clone()
    cols = W.shape[1]
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += DAMPING * torch.diagonal(H).mean() * torch.eye(cols, dtype=H.dtype, device=H.device)
    perm = act_order(H) if reorder else torch.arange(cols, device=H.device)
    W, H = W[:, perm], H[perm][:, perm]
    try:
        L = torch.linalg.cholesky(H)
        U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    except RuntimeError:  # torch.linalg.LinAlgError: not positive definite
        return None
    absw = W.abs()
    best: tuple[float, Tensor, Tensor, float] | None = None
    for p in percentiles:
        scale = _stored_scale(_row_quantile(absw, p), c, grid)
        s = scale.unsqueeze(-1)
        Q = torch.zeros_like(W)
        work = W.clone()
        for i1 in range(0, cols, block_size):
            i2 = min(i1 + block_size, cols)
            block = work[:, i1:i2].clone()
            errors = torch.zeros_like(block)
            U1 = U[i1:i2, i1:i2]
            for j in range(i2 - i1):
                q = _round_codes(block[:, j:j + 1], s, c)
                Q[:, i1 + j] = q[:, 0]
                err = (block[:, j:j + 1] - q * s) / U1[j, j]
                block[:, j:] -= err * U1[j:j + 1, j:]
                errors[:, j:j + 1] = err
            work[:, i2:] -= errors @ U[i1:i2, i2:]
        mse = float((W - Q * s).square().mean())
        if best is None or mse < best[0]:
            best = (mse, Q, scale, p)
    _, Q, scale, p = best
    inverse = torch.argsort(perm)
    return GptqResult(Q[:, inverse].to(torch.int8).cpu().contiguous(), scale.to(torch.float16).cpu(), p, int(dead.sum()))
