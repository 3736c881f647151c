"""Building blocks of the baseline GPT (techniques.md 1.3): linear layers, norms, rotary embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.model.roles import ParamRole, Role


class CastedLinear(nn.Linear):
    """A linear layer whose fp32 master weight is cast to the activation dtype inside the matmul.

    ``train_weight`` is a seam for techniques that change the weight the forward pass uses in
    training (QAT's fake quantization): a module mapping the master weight to the weight used.
    Evaluation always uses the plain (or exported) weight.
    """

    def __init__(self, in_features: int, out_features: int, *, zero_init: bool = False) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.zero_init = zero_init
        self.train_weight: nn.Module | None = None

    def parameter_roles(self) -> dict[str, ParamRole]:
        return {"weight": ParamRole(Role.MATRIX)}

    def effective_weight(self) -> Tensor:
        if self.train_weight is not None and self.training:
            return self.train_weight(self.weight)
        return self.weight

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
        dims = self.rotary_dims
        inv_freq = 1.0 / (base ** (torch.arange(0, dims, 2, dtype=torch.float32) / dims))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        t = torch.arange(seq_len, device=device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(t, self.inv_freq.to(device))
        return freqs.cos().to(dtype), freqs.sin().to(dtype)


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
