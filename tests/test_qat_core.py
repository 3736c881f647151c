"""STE fake quantization (techniques.md 2.2) and its tensor switch under torch.compile (2.3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from golf.quant.grid import GRID_MODES, fake_quantize_rows
from golf.quant.qat import ste_fake_quant


def _weight(rows: int = 16, cols: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, cols, generator=g) * 0.05).requires_grad_()


class _QATLinear(nn.Module):
    """The smallest module shaped like a QAT CastedLinear: a weight and an alpha buffer."""

    def __init__(self, weight: torch.Tensor, bits: int = 6, mode: str = "relative") -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.register_buffer("qat_alpha", torch.zeros(()))
        self.bits = bits
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, ste_fake_quant(self.weight, self.qat_alpha, self.bits, self.mode))


@pytest.mark.parametrize("mode", GRID_MODES)
@pytest.mark.parametrize("bits", [5, 6, 8])
def test_alpha_one_puts_every_row_on_the_grid(mode: str, bits: int) -> None:
    w = _weight()
    w_eff = ste_fake_quant(w, torch.tensor(1.0), bits, mode)
    assert torch.equal(w_eff, fake_quantize_rows(w, bits, mode))
    for row in w_eff.detach():
        assert row.unique().numel() <= 2**bits


@pytest.mark.parametrize("mode", GRID_MODES)
def test_alpha_zero_is_the_weight_itself(mode: str) -> None:
    w = _weight()
    assert torch.equal(ste_fake_quant(w, torch.tensor(0.0), 6, mode), w)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_gradient_passes_straight_through(alpha: float) -> None:
    w = _weight()
    x = torch.randn(8, w.shape[1])
    upstream = torch.randn(8, w.shape[0])

    w_eff = ste_fake_quant(w, torch.tensor(alpha), 6, "relative")
    (F.linear(x, w_eff) * upstream).sum().backward()

    w_eff_leaf = w_eff.detach().clone().requires_grad_()
    (F.linear(x, w_eff_leaf) * upstream).sum().backward()
    assert torch.equal(w.grad, w_eff_leaf.grad)


def test_bf16_weight_keeps_its_dtype() -> None:
    w = _weight().detach().to(torch.bfloat16)
    w_eff = ste_fake_quant(w, torch.tensor(1.0), 6, "floored")
    assert w_eff.dtype == torch.bfloat16
    assert torch.equal(w_eff, fake_quantize_rows(w, 6, "floored"))


@pytest.mark.parametrize("alpha", [True, 1.0, torch.ones(1), torch.tensor(1)])
def test_alpha_must_be_a_0dim_float_tensor(alpha: object) -> None:
    with pytest.raises((ValueError, AttributeError), match="alpha|ndim"):
        ste_fake_quant(_weight(), alpha, 6, "relative")  # type: ignore[arg-type]


def _switch_check(module: nn.Module, run: nn.Module) -> None:
    """The "is it really on" check of techniques.md 2.3 on ``run`` (``module`` or its compiled form).

    Flipping the buffer must change the output of the very same callable, after which the output
    and the weight gradient equal an eager reference built from the fake-quantized weight.
    """
    torch.manual_seed(1)
    x = torch.randn(6, module.weight.shape[1])
    plain = F.linear(x, module.weight.detach())

    off = run(x)
    torch.testing.assert_close(off, plain, rtol=1e-6, atol=1e-6)

    module.qat_alpha.fill_(1.0)
    on = run(x)
    snapped = fake_quantize_rows(module.weight, module.bits, module.mode)
    reference = F.linear(x, snapped)
    assert not torch.allclose(on, off, rtol=1e-4, atol=1e-4), "QAT switch had no effect"
    torch.testing.assert_close(on, reference, rtol=1e-6, atol=1e-6)

    upstream = torch.randn_like(on)
    module.weight.grad = None
    (on * upstream).sum().backward()
    snapped_leaf = snapped.clone().requires_grad_()
    (F.linear(x, snapped_leaf) * upstream).sum().backward()
    torch.testing.assert_close(module.weight.grad, snapped_leaf.grad, rtol=1e-6, atol=1e-6)

    module.qat_alpha.fill_(0.0)
    torch.testing.assert_close(run(x).detach(), plain, rtol=1e-6, atol=1e-6)


def test_switch_takes_effect_in_eager_mode() -> None:
    module = _QATLinear(_weight())
    _switch_check(module, module)


def test_switch_takes_effect_in_a_compiled_graph_without_recompiling() -> None:
    torch._dynamo.reset()
    try:
        module = _QATLinear(_weight(), bits=6, mode="floored")
        compiled = torch.compile(module, fullgraph=True)
        compiled(torch.randn(6, module.weight.shape[1]))  # the one and only trace
        # Any recompilation below (a guard on the alpha value, say) is a test failure: the same
        # graph must serve both settings, or a late switch would silently never take effect.
        with torch._dynamo.config.patch(error_on_recompile=True):
            _switch_check(module, compiled)
    finally:
        torch._dynamo.reset()
