"""Per-row symmetric integer grids (techniques.md 2.1).

One scale per output row; a row's values become ``s * q`` with ``q`` a small signed integer.
The seeds disagree on how ``s`` is chosen, so both conventions live here behind one flag:

- ``"relative"`` (#137, #326): ``s = rowmax / c``, only guarded against zero. Every row spreads over
  the full grid whatever its magnitude; ``q`` stays in ``[-c, c]`` because ``|w| <= rowmax``, the
  extra negative code ``-(c+1)`` of the clamp is never reached.
- ``"floored"`` (BASE int8, #635, #1260): ``s = max(rowmax / c, 1 / c)``. A row whose max is below 1
  keeps the absolute step ``1/c`` and uses fewer levels, which ties artifact size to weight size.

Here a "row" is everything but the last dimension: for a 2-D ``[out, in]`` matrix that is the output
channel (dim 0); a 3-D bank ``[layers, out, in]`` gets exactly the grids of its 2-D slices. The
row max is the absolute max of the row (the #137 convention for QAT and for int6 export).
Everything is computed in fp32, whatever the weight's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

GRID_MODES = ("relative", "floored")

# Guards the relative scale of an all-zero row against a division by zero (its codes are all 0).
_RELATIVE_MIN_SCALE = 1e-12


def clip_range(bits: int) -> int:
    """Largest positive code ``c = 2**(bits-1) - 1`` of a signed ``bits``-bit grid (int6: 31)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(
            f"bits={bits!r} is not a supported integer grid width: use an int from 2 to 8 "
            "(codes are stored in int8; int6 = 6, int5 = 5, int8 = 8)"
        )
    return 2 ** (bits - 1) - 1


def _check_mode(mode: str) -> None:
    if mode not in GRID_MODES:
        raise ValueError(f"grid mode {mode!r} is unknown: use one of {GRID_MODES} (techniques.md 2.1)")


def _check_rows(w: Tensor) -> None:
    if not w.is_floating_point():
        raise TypeError(f"per-row quantization needs a float tensor, got dtype {w.dtype}")
    if w.ndim < 2:
        raise ValueError(
            f"per-row quantization needs a matrix (or a stack of them), got shape {tuple(w.shape)}; "
            "vectors and scalars are kept in float by the export"
        )


def row_scales(w: Tensor, bits: int, mode: str) -> Tensor:
    """fp32 scale of each row of ``w`` (shape ``w.shape[:-1]``) under the given grid convention."""
    c = clip_range(bits)
    _check_mode(mode)
    _check_rows(w)
    rowmax = w.detach().float().abs().amax(dim=-1)
    if mode == "relative":
        return (rowmax / c).clamp_min(_RELATIVE_MIN_SCALE)
    return (rowmax / c).clamp_min(1.0 / c)


def quantize_rows(w: Tensor, bits: int, mode: str) -> tuple[Tensor, Tensor]:
    """Integer codes and per-row scales of ``w``: ``(q int8 shaped like w, scale fp32 [rows])``.

    relative: ``q = clamp(round(w/s), -(c+1), c)``; floored: ``q = clamp(round(w/s), -c, c)``.
    """
    scale = row_scales(w, bits, mode)
    c = clip_range(bits)
    low = -(c + 1) if mode == "relative" else -c
    q = torch.clamp(torch.round(w.detach().float() / scale.unsqueeze(-1)), low, c)
    return q.to(torch.int8).contiguous(), scale.contiguous()


def dequantize_rows(q: Tensor, scale: Tensor) -> Tensor:
    """fp32 values ``scale * q`` of codes from :func:`quantize_rows` (scale may be fp16 or fp32)."""
    if tuple(scale.shape) != tuple(q.shape[:-1]):
        raise ValueError(
            f"scale shape {tuple(scale.shape)} does not match the rows of q {tuple(q.shape)}: "
            f"expected one scale per row, shape {tuple(q.shape[:-1])}"
        )
    return q.float() * scale.float().unsqueeze(-1)


def fake_quantize_rows(w: Tensor, bits: int, mode: str) -> Tensor:
    """``w`` snapped to its per-row grid, in ``w``'s dtype and outside autograd (no gradient)."""
    q, scale = quantize_rows(w, bits, mode)
    return dequantize_rows(q, scale).to(w.dtype)
