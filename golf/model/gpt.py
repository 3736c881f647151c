"""The baseline GPT of the challenge (techniques.md 1.3): 9x512, GQA 8/4, relu^2 MLP, U-Net skips.

Architecture techniques (golf.techniques, techniques.md 7) change it through small seams, set in
their ``on_model`` hook before compile and empty or neutral in the baseline: each block knows its
``layer_idx``; ``Block.norm_scale`` / ``Block.parallel`` and ``MLP.activation`` are per-block
options; ``GPT.embedding_adders`` / ``GPT.input_transforms`` act on the input, ``GPT.skip_merge``
on the U-Net skips and ``GPT.layer_order`` on the execution order (depth recurrence); the
attention has value and output transforms (:mod:`golf.model.attention`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf.model.attention import CausalSelfAttention
from golf.model.layers import CastedLinear, ReluSquared, rms_norm
from golf.model.roles import ParamRole, Role, parameter_roles

if TYPE_CHECKING:
    from golf.config import GolfConfig


class MLP(nn.Module):
    role_group = "mlp"

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc = CastedLinear(dim, hidden)
        self.proj = CastedLinear(hidden, dim, zero_init=True)
        # A seam: techniques choose another activation before compile (LeakyReLU(slope)^2).
        self.activation: nn.Module = ReluSquared()

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.activation(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GolfConfig, kernel: str, layer_idx: int = 0) -> None:
        super().__init__()
        dim = cfg.model_dim
        self.layer_idx = layer_idx
        """The physical depth of this block (per-layer options: XSA last N, LN scale, VE layers)."""
        self.attn = CausalSelfAttention(
            dim, cfg.num_heads, cfg.num_kv_heads, cfg.rope_base, cfg.qk_gain_init, kernel
        )
        self.mlp = MLP(dim, cfg.mlp_hidden)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        # Row 0 weighs the running stream, row 1 the embedding anchor x0; init = pure stream.
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())
        # Per-block options techniques set before compile (plain values, fixed at trace time).
        self.norm_scale = 1.0
        """Multiplies both norm outputs (LN scale: 1/sqrt(layer_idx + 1))."""
        self.parallel = False
        """Attention and MLP both read the same (mixed) input and add to the stream together."""

    def parameter_roles(self) -> dict[str, ParamRole]:
        control = ParamRole(Role.CONTROL)
        return {"attn_scale": control, "mlp_scale": control, "resid_mix": control}

    def _norm(self, x: Tensor) -> Tensor:
        normed = rms_norm(x)
        return normed if self.norm_scale == 1.0 else normed * self.norm_scale

    def forward(self, x: Tensor, x0: Tensor, state: dict[str, Tensor] | None = None) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        if self.parallel:
            h = self._norm(x)
            return x + self.attn_scale.to(x.dtype) * self.attn(h, state) + self.mlp_scale.to(x.dtype) * self.mlp(h)
        x = x + self.attn_scale.to(x.dtype) * self.attn(self._norm(x), state)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(self._norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GolfConfig, kernel: str = "sdpa") -> None:
        super().__init__()
        self.logit_softcap = cfg.logit_softcap
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.num_encoder_layers = cfg.num_layers // 2
        self.num_decoder_layers = cfg.num_layers - self.num_encoder_layers
        num_skips = min(self.num_encoder_layers, self.num_decoder_layers)
        self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.model_dim, dtype=torch.float32))
        self.blocks = nn.ModuleList(Block(cfg, kernel, i) for i in range(cfg.num_layers))
        self.lm_head = None if cfg.tie_embeddings else CastedLinear(cfg.model_dim, cfg.vocab_size, zero_init=True)
        # Seams for techniques, empty in the baseline and set before compile:
        self.embedding_adders = nn.ModuleDict()
        """Named modules input_ids -> [B, T, d] summed into the token embedding before the input
        norm (BigramHash); their parameters are named ``embedding_adders.<name>.*``."""
        self.input_transforms = nn.ModuleDict()
        """Named modules x -> x applied after the input norm, before x0 is kept (SmearGate)."""
        self.skip_merge: nn.Module | None = None
        """(x, weighted skip, skip index) -> x in place of the plain sum x + w * skip."""
        self.layer_order: tuple[int, ...] = tuple(range(cfg.num_layers))
        """The blocks in execution order; a block may appear more than once (depth recurrence).
        A compiled graph is guarded on it, so changing it recompiles."""
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
        emb = self.tok_emb(input_ids)
        for adder in self.embedding_adders.values():
            emb = emb + adder(input_ids)
        x = rms_norm(emb)
        for transform in self.input_transforms.values():
            x = transform(x)
        x0 = x
        state: dict[str, Tensor] = {"input_ids": input_ids}
        order = self.layer_order
        num_encoder = len(order) // 2
        last_skip = self.skip_weights.size(0) - 1
        skips: list[Tensor] = []
        for idx in order[:num_encoder]:
            x = self.blocks[idx](x, x0, state)
            skips.append(x)
        # Decoder block i first takes the encoder output of the mirrored depth (last in, first out).
        # With more virtual than physical layers the last decoders share the last skip weight.
        for i, idx in enumerate(order[num_encoder:]):
            if skips:
                j = min(i, last_skip)
                skip = self.skip_weights[j].to(x.dtype) * skips.pop()
                x = x + skip if self.skip_merge is None else self.skip_merge(x, skip, j)
            x = self.blocks[idx](x, x0, state)
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
