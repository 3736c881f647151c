"""Parameter roles (DESIGN.md contract 4): what a tensor *is*, decided once when the model is built.

A role, not a tensor's ``ndim`` or a fragment of its name, decides a parameter's optimizer group,
its weight decay and its export format. Modules declare the roles of their own parameters with a
``parameter_roles()`` method (names relative to the module, dotted names allowed for children);
a parent's declaration overrides its children's, so a GPT can say that its ``lm_head`` linear is a
head rather than a block matrix. A module can also set ``role_group`` ("attn", "mlp", ...): the
matrices below it carry that group, which per-group options (int5 MLP / int6 attention) select on.
A technique that adds parameters declares their roles the same way, or overrides roles through its
``override_roles`` hook.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum

from torch import nn


class Role(str, Enum):
    MATRIX = "matrix"
    """A 2-D weight of a linear map inside the blocks: Muon, quantized at export."""
    BANK = "bank"
    """A 3-D stack of per-layer matrices (Parallel Muon): Muon, unbanked at export."""
    EMBEDDING = "embedding"
    """The token embedding (also the output head when tied)."""
    HEAD = "head"
    """The untied output head."""
    CONTROL = "control"
    """Gains, scales, mixes and skip weights: the scalar Adam group, fp32 at export."""
    BUFFER = "buffer"
    """A state_dict entry that is not a parameter."""


@dataclass(frozen=True)
class ParamRole:
    role: Role
    group: str = ""
    """The family a matrix belongs to ("attn", "mlp"; empty when none), from the nearest module
    with a ``role_group``."""

    @property
    def is_matrix(self) -> bool:
        return self.role in (Role.MATRIX, Role.BANK)

    def __str__(self) -> str:
        return f"{self.role.value}:{self.group}" if self.group else self.role.value


RoleMap = dict[str, ParamRole]


def parameter_roles(model: nn.Module) -> RoleMap:
    """The role of every parameter of ``model`` by its ``named_parameters()`` name.

    Raises ValueError naming each parameter that no module declared, so a new parameter can never
    fall into an optimizer group or export format by accident.
    """
    declared: RoleMap = {}
    _collect(model, "", "", declared)
    roles: RoleMap = {}
    missing = []
    for name, _ in model.named_parameters():
        if name in declared:
            roles[name] = declared[name]
        else:
            missing.append(name)
    if missing:
        raise ValueError(
            f"parameters without a role: {', '.join(missing)}; declare them in the owning module's "
            "parameter_roles() (golf.model.roles) or in a technique's override_roles hook"
        )
    return roles


def _collect(module: nn.Module, prefix: str, group: str, out: RoleMap) -> None:
    group = getattr(module, "role_group", group)
    for child_name, child in module.named_children():
        _collect(child, f"{prefix}{child_name}.", group, out)
    declare = getattr(module, "parameter_roles", None)
    if declare is None:
        return
    for name, role in declare().items():
        out[prefix + name] = role if role.group or not group else replace(role, group=group)


def state_roles(state_names: list[str] | Mapping[str, object], roles: Mapping[str, ParamRole]) -> RoleMap:
    """Roles of state_dict entries: a parameter's own role, :attr:`Role.BUFFER` for the rest."""
    return {name: roles.get(name, ParamRole(Role.BUFFER)) for name in state_names}
