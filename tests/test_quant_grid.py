"""Per-row integer grids (techniques.md 2.1): both scale conventions, codes, scales, values."""

from __future__ import annotations

import pytest
import torch

from golf.quant.grid import (
    GRID_MODES,
    clip_range,
    dequantize_rows,
    fake_quantize_rows,
    quantize_rows,
    row_scales,
)


def _matrix(rows: int = 24, cols: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Row magnitudes spread over two decades so both sides of the floored grid's 1.0 knee occur.
    row_size = torch.logspace(-1.5, 0.5, rows).unsqueeze(1)
    return torch.randn(rows, cols, generator=g) * row_size


def test_clip_range_of_common_widths() -> None:
    assert clip_range(8) == 127
    assert clip_range(6) == 31
    assert clip_range(5) == 15


@pytest.mark.parametrize("bits", [1, 9, 6.0, True, "6"])
def test_clip_range_rejects_unsupported_widths(bits: object) -> None:
    with pytest.raises(ValueError, match="bits="):
        clip_range(bits)  # type: ignore[arg-type]


def test_unknown_mode_names_the_choices() -> None:
    with pytest.raises(ValueError, match="relative"):
        quantize_rows(_matrix(), 6, "absolute")


def test_vectors_and_integer_tensors_are_rejected() -> None:
    with pytest.raises(ValueError, match="matrix"):
        quantize_rows(torch.randn(10), 6, "relative")
    with pytest.raises(TypeError, match="float"):
        quantize_rows(torch.ones(3, 4, dtype=torch.int32), 6, "relative")


@pytest.mark.parametrize("bits", [5, 6, 8])
def test_relative_grid_uses_the_full_symmetric_range_of_every_row(bits: int) -> None:
    c = clip_range(bits)
    w = _matrix()
    q, scale = quantize_rows(w, bits, "relative")
    assert q.dtype == torch.int8 and q.shape == w.shape
    assert scale.dtype == torch.float32 and scale.shape == (w.shape[0],)
    torch.testing.assert_close(scale, w.abs().amax(dim=1) / c, rtol=0, atol=0)
    # |w| <= rowmax, so the extra negative code -(c+1) is never reached and the row max hits c.
    assert int(q.min()) >= -c
    assert torch.equal(q.abs().amax(dim=1), torch.full((w.shape[0],), c, dtype=torch.int8))
    for row in q:
        assert row.unique().numel() <= 2 * c + 1


@pytest.mark.parametrize("bits", [5, 6, 8])
def test_floored_grid_keeps_the_absolute_step_below_one(bits: int) -> None:
    c = clip_range(bits)
    w = _matrix()
    q, scale = quantize_rows(w, bits, "floored")
    rowmax = w.abs().amax(dim=1)
    small = rowmax < 1.0
    assert small.any() and (~small).any()
    torch.testing.assert_close(scale[small], torch.full_like(scale[small], 1.0 / c), rtol=0, atol=0)
    torch.testing.assert_close(scale[~small], rowmax[~small] / c, rtol=0, atol=0)
    # techniques.md 2.1: with the floor, max|q| = round(rowmax * c) when rowmax < 1.
    expected_max = torch.round(rowmax[small] * c).to(torch.int8)
    assert torch.equal(q[small].abs().amax(dim=1), expected_max)
    assert int(q.abs().max()) <= c
    for row in q:
        assert row.unique().numel() <= 2 * c + 1


def test_floored_example_from_the_spec() -> None:
    row = torch.linspace(-0.1, 0.1, 41).unsqueeze(0)
    q, _ = quantize_rows(row, 6, "floored")
    assert int(q.min()) == -3 and int(q.max()) == 3


@pytest.mark.parametrize("mode", GRID_MODES)
@pytest.mark.parametrize("bits", [5, 6, 8])
def test_roundtrip_error_is_at_most_half_a_step(mode: str, bits: int) -> None:
    w = _matrix(seed=bits)
    q, scale = quantize_rows(w, bits, mode)
    error = (dequantize_rows(q, scale) - w).abs()
    # Half a step, plus the fp32 rounding of the division and the product.
    bound = scale.unsqueeze(1) * (0.5 + 1e-5)
    assert bool((error <= bound).all())


def test_all_zero_row_gives_zero_codes_without_nan() -> None:
    w = _matrix(rows=4)
    w[2] = 0.0
    for mode in GRID_MODES:
        q, scale = quantize_rows(w, 6, mode)
        assert bool(torch.isfinite(scale).all())
        assert bool((q[2] == 0).all())
        assert bool((fake_quantize_rows(w, 6, mode)[2] == 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fake_quantize_keeps_dtype_and_takes_no_gradient(dtype: torch.dtype) -> None:
    w = _matrix().to(dtype).requires_grad_()
    snapped = fake_quantize_rows(w, 6, "relative")
    assert snapped.dtype == dtype and snapped.shape == w.shape
    assert not snapped.requires_grad
    q, scale = quantize_rows(w, 6, "relative")
    assert torch.equal(snapped, dequantize_rows(q, scale).to(dtype))


def test_fake_quantized_weight_is_a_fixed_point() -> None:
    """Snapping an already snapped matrix gives the same codes and (almost) the same scale."""
    w = _matrix()
    for mode in GRID_MODES:
        snapped = fake_quantize_rows(w, 6, mode)
        q1, s1 = quantize_rows(w, 6, mode)
        q2, s2 = quantize_rows(snapped, 6, mode)
        assert torch.equal(q1, q2)
        torch.testing.assert_close(s2, s1, rtol=1e-6, atol=0)


def test_a_stack_of_matrices_gets_the_grids_of_its_slices() -> None:
    bank = torch.stack([_matrix(seed=s) for s in range(3)])
    q, scale = quantize_rows(bank, 6, "floored")
    assert scale.shape == bank.shape[:2]
    for i in range(bank.shape[0]):
        q_i, s_i = quantize_rows(bank[i], 6, "floored")
        assert torch.equal(q[i], q_i) and torch.equal(scale[i], s_i)


def test_row_scales_matches_quantize_rows() -> None:
    w = _matrix()
    for mode in GRID_MODES:
        assert torch.equal(row_scales(w, 6, mode), quantize_rows(w, 6, mode)[1])


def test_dequantize_rejects_mismatched_scales() -> None:
    q, scale = quantize_rows(_matrix(rows=5), 6, "relative")
    with pytest.raises(ValueError, match="one scale per row"):
        dequantize_rows(q, scale[:4])
