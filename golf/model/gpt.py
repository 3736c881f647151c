"""The baseline GPT of the challenge (techniques.md 1.3): 9x512, GQA 8/4, relu^2 MLP, U-Net skips."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.model.attention import CausalSelfAttention
from golf.model.layers import CastedLinear, rms_norm
from golf.model.roles import ParamRole, Role, parameter_roles

if TYPE_CHECKING:
    from golf.config import GolfConfig


class MLP(nn.Module):
    role_group = "mlp"

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc = CastedLinear(dim, hidden)
        self.proj = CastedLinear(hidden, dim, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: GolfConfig, kernel: str) -> None:
        super().__init__()
        dim = cfg.model_dim
        self.attn = CausalSelfAttention(
            dim, cfg.num_heads, cfg.num_kv_heads, cfg.rope_base, cfg.qk_gain_init, kernel
        )
        self.mlp = MLP(dim, cfg.mlp_hidden)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        # Row 0 weighs the running stream, row 1 the embedding anchor x0; init = pure stream.
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())

    def parameter_roles(self) -> dict[str, ParamRole]:
        control = ParamRole(Role.CONTROL)
        return {"attn_scale": control, "mlp_scale": control, "resid_mix": control}

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GolfConfig, kernel: str = "sdpa") -> None:
        super().__init__()
        self.logit_softcap = cfg.logit_softcap
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.num_encoder_layers = cfg.num_layers // 2
        self.num_decoder_layers = cfg.num_layers - self.num_encoder_layers
        num_skips = min(self.num_encoder_layers, self.num_decoder_layers)
        self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.model_dim, dtype=torch.float32))
        self.blocks = nn.ModuleList(Block(cfg, kernel) for _ in range(cfg.num_layers))
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(cfg.model_dim, cfg.vocab_size, zero_init=True)
        self._init_weights(cfg)

    def parameter_roles(self) -> dict[str, ParamRole]:
        roles = {"tok_emb.weight": ParamRole(Role.EMBEDDING), "skip_weights": ParamRole(Role.CONTROL)}
        if self.lm_head is not None:
            roles["lm_head.weight"] = ParamRole(Role.HEAD)
        return roles

    def _init_weights(self, cfg: GolfConfig) -> None:
        if self.lm_head is None:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=cfg.tied_embed_init_std)
        for module in self.modules():
            if isinstance(module, CastedLinear) and module.zero_init:
                nn.init.zeros_(module.weight)

    def logits(self, input_ids: Tensor) -> Tensor:
        """Soft-capped logits [B, T, V] (fp32)."""
        x = rms_norm(self.tok_emb(input_ids))
        x0 = x
        skips: list[Tensor] = []
        for block in self.blocks[: self.num_encoder_layers]:
            x = block(x, x0)
            skips.append(x)
        # Decoder block i first takes the encoder output of the mirrored depth (last in, first out).
        for i, block in enumerate(self.blocks[self.num_encoder_layers :]):
            if skips:
                x = x + self.skip_weights[i].to(x.dtype) * skips.pop()
            x = block(x, x0)
        x = rms_norm(x)
        z = F.linear(x, self.tok_emb.weight) if self.lm_head is None else self.lm_head(x)
        c = self.logit_softcap
        return (c * torch.tanh(z.float() / c)) if c > 0 else z.float()

    def forward(self, input_ids: Tensor, target_ids: Tensor) -> Tensor:
        """Mean next-token cross-entropy in nats (fp32)."""
        logits = self.logits(input_ids)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target_ids.reshape(-1))

    def token_losses(self, input_ids: Tensor, target_ids: Tensor) -> Tensor:
        """Next-token cross-entropy of every position in nats, shape [B, T] (fp32).

        Evaluators that weigh or select positions (sliding windows, test-time training) need the
        per-token losses; their mean is :meth:`forward` up to float summation order.
        """
        logits = self.logits(input_ids)
        losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target_ids.reshape(-1), reduction="none")
        return losses.view_as(target_ids)


def build_model(cfg: GolfConfig, device: torch.device, kernel: str = "sdpa") -> GPT:
    """The GPT on ``device`` in the reference's precision layout.

    On CUDA the model is bf16 except the CastedLinear master weights and the small/control tensors,
    which stay fp32 (the token embedding stays bf16, as in the reference). On CPU everything is fp32.
    """
    model = GPT(cfg, kernel).to(device)
    if device.type == "cuda":
        model = model.bfloat16()
        for module in model.modules():
            if isinstance(module, CastedLinear):
                module.float()
        for name, role in parameter_roles(model).items():
            param = model.get_parameter(name)
            if role.role is Role.CONTROL and param.dtype != torch.float32:
                param.data = param.data.float()
    return model
