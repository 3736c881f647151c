"""Causal grouped-query self-attention (techniques.md 1.3) and the choice of attention kernel.

Tensors stay in [batch, time, heads, head_dim] layout, the layout FlashAttention takes directly;
PyTorch's SDPA gets a transposed view.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.model.layers import CastedLinear, Rotary, apply_rotary, rms_norm
from golf.model.roles import ParamRole, Role


def _import_flash_attn() -> tuple[str, Callable[..., Tensor]] | None:
    """FlashAttention 3 (Hopper) if installed, else FlashAttention 2, else None."""
    for module_name, label in (("flash_attn_interface", "flash3"), ("flash_attn", "flash2")):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return label, module.flash_attn_func
    return None


def resolve_attention(choice: str, device: torch.device) -> str:
    """The kernel a run uses: "flash3", "flash2" or "sdpa" (with a clear error when forced wrongly)."""
    flash = _import_flash_attn() if device.type == "cuda" else None
    if choice == "sdpa":
        return "sdpa"
    if choice == "flash":
        if device.type != "cuda":
            raise RuntimeError("ATTENTION=flash needs a CUDA device; use ATTENTION=auto or sdpa on CPU")
        if flash is None:
            raise RuntimeError(
                'ATTENTION=flash but FlashAttention is not importable: pip install --no-build-isolation -e ".[gpu]"'
            )
        return flash[0]
    return flash[0] if flash is not None else "sdpa"


def causal_attention(q: Tensor, k: Tensor, v: Tensor, kernel: str) -> Tensor:
    """Causal attention of [B, T, H, D] queries over [B, T, Hkv, D] keys/values -> [B, T, H, D]."""
    if kernel.startswith("flash"):
        flash = _import_flash_attn()
        assert flash is not None and flash[0] == kernel, f"kernel {kernel} was resolved but is gone"
        out = flash[1](q, k, v, causal=True)
        return out[0] if isinstance(out, tuple) else out  # FA3 also returns the log-sum-exp
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        is_causal=True, enable_gqa=k.size(2) != q.size(2),
    )
    return y.transpose(1, 2)


class CausalSelfAttention(nn.Module):
    role_group = "attn"

    def __init__(
        self, dim: int, num_heads: int, num_kv_heads: int, rope_base: float, qk_gain_init: float,
        kernel: str = "sdpa",
    ) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim)
        self.c_k = CastedLinear(dim, kv_dim)
        self.c_v = CastedLinear(dim, kv_dim)
        self.proj = CastedLinear(dim, dim, zero_init=True)
        # Queries and keys are unit-RMS per head, so this gain is an inverse temperature.
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init, dtype=torch.float32))
        self.rotary = Rotary(self.head_dim, rope_base)
        self.kernel = kernel
        # Seams for techniques (empty in the baseline), named modules run in insertion order:
        # value_transforms map (v [B, T, Hkv, hd], state) -> v before attention (value embeddings,
        # value residual); output_transforms map (y [B, T, H, hd], v, x) -> y after it, before the
        # output projection (XSA, head gates).
        self.value_transforms = nn.ModuleDict()
        self.output_transforms = nn.ModuleDict()

    def parameter_roles(self) -> dict[str, ParamRole]:
        return {"q_gain": ParamRole(Role.CONTROL)}

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None) -> Tensor:
        """``state``: per-forward tensors shared across layers (the input ids, layer 0's values)."""
        bsz, seqlen, dim = x.shape
        q = self.c_q(x).reshape(bsz, seqlen, self.num_heads, self.head_dim)
        k = self.c_k(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim)
        v = self.c_v(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim)
        for transform in self.value_transforms.values():
            v = transform(v, state)
        q, k = rms_norm(q), rms_norm(k)
        cos, sin = self.rotary(seqlen, x.device, q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = causal_attention(q, k, v, self.kernel)
        for transform in self.output_transforms.values():
            y = transform(y, v, x)
        return self.proj(y.reshape(bsz, seqlen, dim))
