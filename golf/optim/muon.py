"""Muon: momentum SGD whose update is orthogonalised by a Newton-Schulz iteration (techniques.md 1.4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

# Quintic Newton-Schulz coefficients of the reference: fast to converge, singular values end
# roughly in [0.7, 1.2] rather than exactly 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(g: Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """An approximately orthogonal matrix with the singular vectors of ``g`` (same shape as ``g``).

    Runs in ``dtype`` (bf16 on GPUs, as the reference; fp32 is faster on CPUs without bf16 units).
    """
    a, b, c = NS_COEFFICIENTS
    if g.ndim == 3:
        return _batched_newton_schulz5(g, steps, eps, dtype)
    x = g.to(dtype)
    x = x / (x.norm() + eps)
    transposed = g.size(0) > g.size(1)
    if transposed:  # iterate on the wide orientation: X X^T is the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


def _batched_newton_schulz5(g: Tensor, steps: int, eps: float, dtype: torch.dtype) -> Tensor:
    """:func:`newton_schulz5` of every matrix of a batch ``[batch, rows, cols]`` at once (batched
    matmuls), each normalised by its own Frobenius norm (Parallel Muon, techniques.md 4.5)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    transposed = g.size(-2) > g.size(-1)
    if transposed:
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if transposed else x


UpdateTransform = Callable[[Tensor, dict[str, Any], dict[str, Any]], Tensor]
"""``(update, the parameter's optimizer state, its param group) -> update``: a step in the Muon
update that a technique adds (MuonEq-R before the orthogonalisation, NorMuon after). State it
keeps goes in the parameter's optimizer state, so warmup-then-restore and state_dict cover it."""

Orthogonalizer = Callable[[Tensor, int, torch.dtype], Tensor]
"""``(update, iterations, dtype) -> orthogonalised update`` (same shape)."""


class Muon(torch.optim.Optimizer):
    """Nesterov momentum + Newton-Schulz orthogonalisation, for 2-D weight matrices.

    Per matrix: ``buf = mu*buf + g``; ``u = g + mu*buf``; ``u = NS5(u) * sqrt(max(1, rows/cols))``;
    ``W -= lr * u``. With several ranks, matrix i is orthogonalised on rank ``i % world_size`` only;
    the updates meet in one flat buffer that is summed across ranks, so every rank applies all of
    them (the reference's split of the Newton-Schulz work).

    Techniques extend the update (golf.techniques): ``before_orthogonalize`` and
    ``after_orthogonalize`` transforms around NS5 (they must not modify their input in place: it
    may be the gradient), another ``orthogonalizer`` in place of NS5, and decoupled weight decay
    ``W *= 1 - lr * weight_decay`` with the group's scheduled LR, before the update.

    A 3-D parameter is a bank of matrices ``[layers, rows, cols]`` (Parallel Muon, techniques.md
    4.5): each matrix gets exactly the update above (its own momentum, transforms and per-matrix
    state), but the work is sharded by slices: with several ranks, rank r owns a contiguous block
    of ``ceil(layers / world_size)`` slices, keeps momentum for those only, orthogonalises them as
    one batch, and the updates meet in an all-gather. A bank DDP was told to ignore
    (``_ddp_ignored``) arrives with this rank's own gradient, which a reduce-scatter averages into
    the owned slices; otherwise DDP has averaged it and each rank takes its slices.
    """

    def __init__(
        self, params, lr: float, momentum: float, backend_steps: int = 5, nesterov: bool = True,
        ns_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov,
                                      weight_decay=0.0))
        self.ns_dtype = ns_dtype
        self.before_orthogonalize: list[UpdateTransform] = []
        self.after_orthogonalize: list[UpdateTransform] = []
        self.orthogonalizer: Orthogonalizer | None = None
        """None: the reference's quintic :func:`newton_schulz5`."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim not in (2, 3):
                    raise ValueError(f"Muon takes 2-D matrices and 3-D banks only; got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch.optim signature
        distributed = dist.is_available() and dist.is_initialized()
        world_size = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        for group in self.param_groups:
            for bank in (p for p in group["params"] if p.ndim == 3):
                self._step_bank(bank, group, world_size, rank)
            params = [p for p in group["params"] if p.ndim == 2]
            if not params:
                continue
            momentum = group["momentum"]
            updates = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=self.ns_dtype)
            offset = 0
            for i, p in enumerate(params):
                if i % world_size == rank and p.grad is not None:
                    g = p.grad
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(g)
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(g)
                    if group["nesterov"]:
                        g = g.add(buf, alpha=momentum)
                    for transform in self.before_orthogonalize:
                        g = transform(g, state, group)
                    if self.orthogonalizer is None:
                        u = newton_schulz5(g, steps=group["backend_steps"], dtype=self.ns_dtype)
                    else:
                        u = self.orthogonalizer(g, group["backend_steps"], self.ns_dtype)
                    for transform in self.after_orthogonalize:
                        u = transform(u, state, group)
                    u *= max(1.0, u.size(0) / u.size(1)) ** 0.5
                    updates[offset : offset + p.numel()] = u.reshape(-1)
                offset += p.numel()
            if distributed:
                dist.all_reduce(updates, op=dist.ReduceOp.SUM)
            offset = 0
            decay = group["lr"] * group["weight_decay"]
            for p in params:
                if decay and p.grad is not None:
                    p.mul_(1.0 - decay)
                p.add_(updates[offset : offset + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
                offset += p.numel()
        return None

    def _orthogonalized(self, g: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor:
        """One matrix's update from its Nesterov-combined gradient: transforms, NS5, transforms, scale."""
        for transform in self.before_orthogonalize:
            g = transform(g, state, group)
        if self.orthogonalizer is None:
            u = newton_schulz5(g, steps=group["backend_steps"], dtype=self.ns_dtype)
        else:
            u = self.orthogonalizer(g, group["backend_steps"], self.ns_dtype)
        for transform in self.after_orthogonalize:
            u = transform(u, state, group)
        u *= max(1.0, u.size(0) / u.size(1)) ** 0.5
        return u

    def _step_bank(self, p: Tensor, group: dict[str, Any], world_size: int, rank: int) -> None:
        if p.grad is None:
            return
        layers, rows, cols = p.shape
        per_rank = -(-layers // world_size)
        lo = min(rank * per_rank, layers)
        hi = min(lo + per_rank, layers)
        if world_size > 1 and getattr(p, "_ddp_ignored", False):
            grad = p.grad
            if per_rank * world_size != layers:
                grad = torch.cat((grad, grad.new_zeros(per_rank * world_size - layers, rows, cols)))
            owned = grad.new_empty(per_rank, rows, cols)
            dist.reduce_scatter_tensor(owned, grad.contiguous(), op=dist.ReduceOp.SUM)
            g = owned[: hi - lo].div_(world_size)
        else:
            g = p.grad[lo:hi]
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(g)  # this rank's slices only
        buf = state["momentum_buffer"]
        momentum = group["momentum"]
        buf.mul_(momentum).add_(g)
        if group["nesterov"]:
            g = g.add(buf, alpha=momentum)
        if hi == lo:
            u = g.new_empty(0, rows, cols, dtype=self.ns_dtype)
        elif self.before_orthogonalize or self.after_orthogonalize or self.orthogonalizer is not None:
            # Transforms and other orthogonalizers take one matrix and may keep per-matrix state:
            # each slice keeps its own, by its index in the bank.
            slice_states = state.setdefault("slices", {})
            u = torch.stack([
                self._orthogonalized(g[j], slice_states.setdefault(lo + j, {}), group).to(self.ns_dtype)
                for j in range(hi - lo)
            ])
        else:
            u = newton_schulz5(g, steps=group["backend_steps"], dtype=self.ns_dtype)
            u *= max(1.0, rows / cols) ** 0.5
        if world_size > 1:
            owned_u = u.new_zeros(per_rank, rows, cols)
            owned_u[: hi - lo] = u
            gathered = u.new_empty(per_rank * world_size, rows, cols)
            dist.all_gather_into_tensor(gathered, owned_u)
            u = gathered[:layers]
        decay = group["lr"] * group["weight_decay"]
        if decay:
            p.mul_(1.0 - decay)
        p.add_(u.to(p.dtype), alpha=-group["lr"])
