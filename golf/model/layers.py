"""Building blocks of the baseline GPT (techniques.md 1.3): linear layers, norms, rotary embeddings."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.model.roles import ParamRole, Role


class CastedLinear(nn.Linear):
    """A linear layer whose fp32 master weight is cast to the activation dtype inside the matmul.

    ``train_weight`` is a seam for techniques that change the weight the forward pass uses in
    training (QAT's fake quantization): a module mapping the master weight to the weight used.
    Evaluation always uses the plain (or exported) weight.

    ``weight_source`` is a seam for techniques that keep the master weight elsewhere (Parallel
    Muon's parameter banks): a callable returning it, after which the layer has no ``weight``
    parameter of its own. :meth:`master_weight` is the master weight either way.
    """

    def __init__(self, in_features: int, out_features: int, *, zero_init: bool = False) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.zero_init = zero_init
        self.train_weight: nn.Module | None = None
        self.weight_source: Callable[[], Tensor] | None = None

    def parameter_roles(self) -> dict[str, ParamRole]:
        return {} if self.weight_source is not None else {"weight": ParamRole(Role.MATRIX)}

    def master_weight(self) -> Tensor:
        return self.weight if self.weight_source is None else self.weight_source()

    def effective_weight(self) -> Tensor:
        if self.train_weight is not None and self.training:
            return self.train_weight(self.master_weight())
        return self.master_weight()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight().to(x.dtype))


def rms_norm(x: Tensor) -> Tensor:
    """RMSNorm over the last dimension, no learned weight, PyTorch's default eps."""
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    """Rotary position embedding, half-split pairing (dim i with i + rotary_dims/2).

    ``rotary_dims`` < head_dim is partial RoPE (techniques.md 7.9): only the first ``rotary_dims``
    dims of each head rotate, at frequencies ``base^(-2i/rotary_dims)``; the rest carry no position.
    """

    def __init__(self, head_dim: int, base: float, rotary_dims: int = 0) -> None:
        super().__init__()
        self.rotary_dims = rotary_dims if rotary_dims > 0 else head_dim
        if self.rotary_dims % 2 or self.rotary_dims > head_dim:
            raise ValueError(f"rotary dims {self.rotary_dims} must be even and at most the head dim {head_dim}")
        self.base = base
        self.register_buffer("inv_freq", rotary_inv_freq(base, self.rotary_dims), persistent=False)
        self.ntk_train_len = 0
        """A seam (NTK-aware scaling, techniques.md 8.2): > 0 is the length T0 the rotary was built
        for; a longer sequence T rotates with the base scaled by (T/T0)^(D/(D-2)). 0 = never scale."""

    def frequencies(self, seq_len: int) -> Tensor:
        """The inverse frequencies a sequence of ``seq_len`` rotates with."""
        if self.ntk_train_len and seq_len > self.ntk_train_len:
            base = ntk_base(self.base, self.rotary_dims, seq_len / self.ntk_train_len)
            return rotary_inv_freq(base, self.rotary_dims).to(self.inv_freq.device)
        return self.inv_freq

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        inv_freq = self.frequencies(seq_len)
        t = torch.arange(seq_len, device=device, dtype=inv_freq.dtype)
        freqs = torch.outer(t, inv_freq.to(device))
        return freqs.cos().to(dtype), freqs.sin().to(dtype)


def rotary_inv_freq(base: float, dims: int) -> Tensor:
    """``base^(-2i/dims)`` for i < dims/2 (fp32)."""
    return 1.0 / (base ** (torch.arange(0, dims, 2, dtype=torch.float32) / dims))


def ntk_base(base: float, dims: int, length_ratio: float) -> float:
    """NTK-aware RoPE base for a sequence ``length_ratio`` times the built length: b * r^(D/(D-2))."""
    if dims <= 2:
        raise ValueError(f"NTK scaling needs more than 2 rotary dims, got {dims}")
    return base * length_ratio ** (dims / (dims - 2))


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first 2*cos.size(-1) dims of ``x`` [B, T, H, D] by per-position angles [T, R/2];
    the remaining dims pass through unchanged (partial RoPE)."""
    rotary = 2 * cos.size(-1)
    if rotary < x.size(-1):
        return torch.cat((apply_rotary(x[..., :rotary], cos, sin), x[..., rotary:]), dim=-1)
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class ReluSquared(nn.Module):
    """relu(h)^2, the baseline MLP activation."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x).square()
