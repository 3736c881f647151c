"""Which parameter goes to which optimizer, with which learning rate (techniques.md 1.4).

Muon takes every 2-D block matrix that is not a control tensor; Adam takes the token embedding,
the untied head (if any) and the scalars/control tensors/skip weights, each group at its own LR.
Every group carries ``base_lr`` so the schedule can set ``lr = base_lr * scale`` each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from golf.config import GolfConfig
from golf.model import GPT, is_control_tensor
from golf.optim.muon import Muon


@dataclass
class OptimizerSet:
    """The run's optimizers; ``muon`` is also in ``all`` (its momentum follows its own warmup)."""

    all: list[torch.optim.Optimizer]
    muon: Muon

    def zero_grad(self) -> None:
        for opt in self.all:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.all:
            opt.step()

    def set_lr_scale(self, scale: float) -> None:
        for opt in self.all:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale

    def set_muon_momentum(self, momentum: float) -> None:
        for group in self.muon.param_groups:
            group["momentum"] = momentum

    def state_dicts(self) -> list[dict]:
        return [opt.state_dict() for opt in self.all]

    def load_state_dicts(self, states: list[dict]) -> None:
        for opt, state in zip(self.all, states, strict=True):
            opt.load_state_dict(state)


def split_block_params(model: GPT) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(Muon matrices, scalar/control params) of the blocks, plus the skip weights as scalars."""
    matrices, scalars = [], []
    for name, p in model.blocks.named_parameters():
        if p.ndim == 2 and not is_control_tensor(name):
            matrices.append(p)
        else:
            scalars.append(p)
    if model.skip_weights.numel() > 0:
        scalars.append(model.skip_weights)
    return matrices, scalars


def build_optimizers(model: GPT, cfg: GolfConfig) -> OptimizerSet:
    matrices, scalars = split_block_params(model)
    device = model.tok_emb.weight.device
    fused = device.type == "cuda"
    adam = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, fused=fused)
    token_lr = cfg.tied_embed_lr if cfg.tie_embeddings else cfg.embed_lr

    def adam_group(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
        return torch.optim.Adam([{"params": params, "lr": lr, "base_lr": lr}], **adam)

    optimizers: list[torch.optim.Optimizer] = [adam_group([model.tok_emb.weight], token_lr)]
    if model.lm_head is not None:
        optimizers.append(adam_group([model.lm_head.weight], cfg.head_lr))
    # NS5 in bf16 is the reference on GPUs; CPUs without bf16 units are faster (and exact-er) in fp32.
    ns_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    muon = Muon(matrices, lr=cfg.matrix_lr, momentum=cfg.muon_momentum,
                backend_steps=cfg.muon_backend_steps, ns_dtype=ns_dtype)
    for group in muon.param_groups:
        group["base_lr"] = cfg.matrix_lr
    optimizers += [muon, adam_group(scalars, cfg.scalar_lr)]
    return OptimizerSet(all=optimizers, muon=muon)
