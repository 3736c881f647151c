"""Which parameter goes to which optimizer, with which learning rate (techniques.md 1.4).

A parameter's role decides (golf.model.roles): Muon takes the block matrices (and banks); Adam
takes the token embedding, the untied head and the control tensors, each group at its own LR.
Every group carries ``base_lr`` so the schedule can set ``lr = base_lr * scale`` each step, and
``roles`` (the role values of its parameters) so per-role settings such as weight decay find it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from golf.model.roles import Role, RoleMap
from golf.optim.muon import Muon

if TYPE_CHECKING:
    from golf.config import GolfConfig


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

    def scale_base_lr(self, factor: float) -> None:
        """Multiply every group's base LR by ``factor`` from now on (the schedule still applies)."""
        for opt in self.all:
            for group in opt.param_groups:
                group["base_lr"] *= factor

    def set_weight_decay(self, by_role: Mapping[Role, float]) -> None:
        """Decoupled weight decay per role: ``W *= 1 - lr * wd`` before each update, with the
        group's scheduled LR (AdamW's rule for the Adam groups; Muon applies the same rule)."""
        for opt in self.all:
            for group in opt.param_groups:
                decays = {by_role.get(Role(role), 0.0) for role in group["roles"]}
                if len(decays) > 1:
                    raise ValueError(
                        f"one optimizer group holds roles {', '.join(group['roles'])} with different weight "
                        f"decays {sorted(decays)}: give them the same decay"
                    )
                group["weight_decay"] = decays.pop()
                if isinstance(opt, torch.optim.Adam):
                    group["decoupled_weight_decay"] = True

    def set_muon_momentum(self, momentum: float) -> None:
        for group in self.muon.param_groups:
            group["momentum"] = momentum

    def state_dicts(self) -> list[dict]:
        return [opt.state_dict() for opt in self.all]

    def load_state_dicts(self, states: list[dict]) -> None:
        for opt, state in zip(self.all, states, strict=True):
            opt.load_state_dict(state)


def params_by_role(model: nn.Module, roles: RoleMap) -> dict[Role, list[nn.Parameter]]:
    """The model's parameters grouped by role, each list in ``named_parameters()`` order."""
    grouped: dict[Role, list[nn.Parameter]] = {role: [] for role in Role}
    for name, p in model.named_parameters():
        grouped[roles[name].role].append(p)
    return grouped


def build_optimizers(model: nn.Module, cfg: GolfConfig, roles: RoleMap) -> OptimizerSet:
    by_role = params_by_role(model, roles)
    device = next(model.parameters()).device
    fused = device.type == "cuda"
    adam = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, fused=fused)
    token_lr = cfg.tied_embed_lr if cfg.tie_embeddings else cfg.embed_lr

    def adam_group(role: Role, lr: float) -> torch.optim.Adam:
        return torch.optim.Adam([{"params": by_role[role], "lr": lr, "base_lr": lr, "roles": (role.value,)}], **adam)

    optimizers: list[torch.optim.Optimizer] = [adam_group(Role.EMBEDDING, token_lr)]
    if by_role[Role.HEAD]:
        optimizers.append(adam_group(Role.HEAD, cfg.head_lr))
    # NS5 in bf16 is the reference on GPUs; CPUs without bf16 units are faster (and exact-er) in fp32.
    ns_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    muon = Muon(by_role[Role.MATRIX] + by_role[Role.BANK], lr=cfg.matrix_lr, momentum=cfg.muon_momentum,
                backend_steps=cfg.muon_backend_steps, ns_dtype=ns_dtype)
    for group in muon.param_groups:
        group["base_lr"] = cfg.matrix_lr
        group["roles"] = (Role.MATRIX.value, Role.BANK.value)
    optimizers += [muon, adam_group(Role.CONTROL, cfg.scalar_lr)]
    return OptimizerSet(all=optimizers, muon=muon)
