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
    """Rotary position embedding over all head dims, half-split pairing (dim i with i + hd/2)."""

    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        t = torch.arange(seq_len, device=device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(t, self.inv_freq.to(device))
        return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` of shape [B, T, H, D] by per-position angles of shape [T, D/2]."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)
