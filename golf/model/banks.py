"""Parameter banks (techniques.md 4.5, #635 from PR #399): the block matrices of one family stacked
into one 3-D parameter ``[layers, out, in]`` so that Muon orthogonalises them as one batch.

A family is every block linear with the same role group and shape, slices ordered by their name
inside the block, then by layer: in the baseline GPT that is #635's layout, q then o of every layer
(``attn_{d}x{d}``), k then v (``attn_{kv}x{d}``), the MLP up and the MLP down projections. Each
banked :class:`~golf.model.layers.CastedLinear` reads its weight from its slice through the
layer's ``weight_source`` seam, so the forward pass (and QAT's fake quantization, which wraps the
layer's master weight) is the same computation as without banks.

The model's own state_dict names the banks (``banks.<family>.weight``); :func:`unbank` turns such a
state into the per-layer 2-D entries of the model without banks (same names, same order, same
values) and :func:`rebank` turns it back, so an artifact does not depend on banking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from golf.model.layers import CastedLinear
from golf.model.roles import ParamRole, Role

BANKS_ATTR = "banks"
"""The ModuleDict of the model holding the banks (its state_dict entries: ``banks.<family>.weight``)."""


class ParameterBank(nn.Module):
    """One 3-D parameter holding the matrices of one family, slice ``i`` being one layer's weight."""

    def __init__(self, weight: Tensor, group: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.group = group

    def parameter_roles(self) -> dict[str, ParamRole]:
        return {"weight": ParamRole(Role.BANK, self.group)}


class BankSlice:
    """A banked layer's master weight: slice ``index`` of the bank, read afresh every forward so
    autograd sends the gradient into the bank. Not a module, so the bank is registered once."""

    def __init__(self, bank: ParameterBank, index: int) -> None:
        self.bank, self.index = bank, index

    def __call__(self) -> Tensor:
        return self.bank.weight[self.index]


class BankedLinear(CastedLinear):
    """A :class:`CastedLinear` whose weight lives in a bank (its class once banked): ``weight``
    reads its slice, so code that inspects ``layer.weight`` (QAT's grid choice, GPTQ's Hessians,
    FLOP counts) works unchanged; the forward pass reads it through ``weight_source``."""

    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        return self.weight_source()


@dataclass(frozen=True)
class BankLayout:
    """Which per-layer weights each bank holds, and both state_dict key orders."""

    members: dict[str, tuple[str, ...]]
    """Bank state_dict name -> the per-layer weight names of its slices, in slice order."""
    unbanked_order: tuple[str, ...]
    """The model's state_dict keys without banks (the artifact's order)."""
    banked_order: tuple[str, ...]
    """The model's state_dict keys with banks."""


def bank_block_linears(model: nn.Module, roles: Mapping[str, ParamRole]) -> BankLayout:
    """Move the weights of every block linear with the :attr:`Role.MATRIX` role into banks, one per
    (role group, shape, dtype, device) family; the layers then read their slices. In place."""
    unbanked_order = tuple(model.state_dict())
    families: dict[tuple, list[tuple[str, int, str, CastedLinear]]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, CastedLinear) or module.weight_source is not None:
            continue
        parts = name.split(".")
        if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
            continue
        role = roles[f"{name}.weight"]
        if role.role is not Role.MATRIX:
            continue
        w = module.weight
        key = (role.group, tuple(w.shape), w.dtype, w.device)
        families.setdefault(key, []).append((".".join(parts[2:]), int(parts[1]), name, module))
    if not families:
        raise ValueError("no block linear with the matrix role to bank: the model has no blocks.<i>.* CastedLinear")
    banks = getattr(model, BANKS_ATTR, None)
    if banks is None:
        banks = nn.ModuleDict()
        model.add_module(BANKS_ATTR, banks)
    members: dict[str, tuple[str, ...]] = {}
    for (group, shape, _, _), layers in families.items():
        layers.sort(key=lambda item: (item[0], item[1]))
        bank_name = f"{group or 'matrix'}_{shape[0]}x{shape[1]}"
        while bank_name in banks:
            bank_name += "_"
        stacked = torch.stack([module.weight.detach() for _, _, _, module in layers])
        bank = ParameterBank(stacked, group)
        bank.weight.requires_grad_(all(module.weight.requires_grad for _, _, _, module in layers))
        banks[bank_name] = bank
        for index, (_, _, _, module) in enumerate(layers):
            del module.weight
            module.weight_source = BankSlice(bank, index)
            module.__class__ = BankedLinear
        members[f"{BANKS_ATTR}.{bank_name}.weight"] = tuple(f"{name}.weight" for _, _, name, _ in layers)
    return BankLayout(members, unbanked_order, tuple(model.state_dict()))


def unbank(state: Mapping[str, Tensor], layout: BankLayout) -> dict[str, Tensor]:
    """``state`` with every bank replaced by its per-layer 2-D weights (copies, not views, so each
    is saved on its own), in the order of the model without banks."""
    slices: dict[str, Tensor] = {}
    for bank, names in layout.members.items():
        if bank in state:
            slices.update((name, state[bank][i].clone()) for i, name in enumerate(names))
    return _ordered({**state, **slices}, layout.unbanked_order, exclude=set(layout.members))


def rebank(state: Mapping[str, Tensor], layout: BankLayout) -> dict[str, Tensor]:
    """``state`` with the per-layer weights of every bank stacked back into it (the inverse of
    :func:`unbank`), in the banked model's order."""
    banks: dict[str, Tensor] = {}
    consumed: set[str] = set()
    for bank, names in layout.members.items():
        present = [name for name in names if name in state]
        if not present:
            continue
        if len(present) != len(names):
            missing = sorted(set(names) - set(present))
            raise KeyError(f"cannot rebank {bank}: the state lacks {', '.join(missing)}")
        banks[bank] = torch.stack([state[name] for name in names])
        consumed.update(names)
    return _ordered({**state, **banks}, layout.banked_order, exclude=consumed)


def _ordered(state: Mapping[str, Tensor], order: tuple[str, ...], exclude: set[str]) -> dict[str, Tensor]:
    out = {name: state[name] for name in order if name in state and name not in exclude}
    out.update((name, t) for name, t in state.items() if name not in out and name not in exclude)
    return out
