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
            self._step_banks([p for p in group["params"] if p.ndim == 3], group, world_size, rank)
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
                    updates[offset : offset + p.numel()] = self._orthogonalized(g, state, group).reshape(-1)
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

    def _step_banks(self, banks: list[Tensor], group: dict[str, Any], world_size: int, rank: int) -> None:
        """Every bank of the group: one reduce-scatter (of the banks DDP ignored) and one all-gather
        for all of them, however many banks there are (each collective has a latency to pay)."""
        banks = [p for p in banks if p.grad is not None]
        if not banks:
            return
        shards = [_Shard(p, world_size, rank) for p in banks]
        unreduced = [s for s in shards if world_size > 1 and getattr(s.p, "_ddp_ignored", False)]
        grads = {id(s): s.p.grad[s.lo:s.hi] for s in shards if s not in unreduced}
        if unreduced:
            # Row r of the send buffer holds, bank after bank, the (zero-padded) slices rank r owns.
            send = torch.cat([s.padded(s.p.grad).view(world_size, -1) for s in unreduced], dim=1)
            owned = send.new_empty(send.size(1))
            dist.reduce_scatter_tensor(owned, send.contiguous().view(-1), op=dist.ReduceOp.SUM)
            owned.div_(world_size)
            for s, part in zip(unreduced, owned.split([s.owned_numel for s in unreduced]), strict=True):
                grads[id(s)] = part.view(s.per_rank, s.rows, s.cols)[: s.hi - s.lo]
        updates = [self._bank_update(s, grads[id(s)], group) for s in shards]
        if world_size > 1:
            local = torch.cat([s.padded_owned(u).reshape(-1) for s, u in zip(shards, updates, strict=True)])
            gathered = local.new_empty(world_size, local.numel())
            dist.all_gather_into_tensor(gathered.view(-1), local)
            parts = gathered.split([s.owned_numel for s in shards], dim=1)
            updates = [part.reshape(world_size * s.per_rank, s.rows, s.cols)[: s.layers]
                       for s, part in zip(shards, parts, strict=True)]
        decay = group["lr"] * group["weight_decay"]
        for s, u in zip(shards, updates, strict=True):
            if decay:
                s.p.mul_(1.0 - decay)
            s.p.add_(u.to(s.p.dtype), alpha=-group["lr"])

    def _bank_update(self, s: _Shard, g: Tensor, group: dict[str, Any]) -> Tensor:
        """The orthogonalised update of the slices this rank owns (``g``: their averaged gradient)."""
        state = self.state[s.p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(g)  # this rank's slices only
        buf = state["momentum_buffer"]
        momentum = group["momentum"]
        buf.mul_(momentum).add_(g)
        if group["nesterov"]:
            g = g.add(buf, alpha=momentum)
        if s.hi == s.lo:
            return g.new_empty(0, s.rows, s.cols, dtype=self.ns_dtype)
        if self.before_orthogonalize or self.after_orthogonalize or self.orthogonalizer is not None:
            # Transforms and other orthogonalizers take one matrix and may keep per-matrix state:
            # each slice keeps its own, by its index in the bank.
            slice_states = state.setdefault("slices", {})
            return torch.stack([
                self._orthogonalized(g[j], slice_states.setdefault(s.lo + j, {}), group).to(self.ns_dtype)
                for j in range(s.hi - s.lo)
            ])
        u = newton_schulz5(g, steps=group["backend_steps"], dtype=self.ns_dtype)
        u *= max(1.0, s.rows / s.cols) ** 0.5
        return u


class _Shard:
    """The contiguous slices ``[lo, hi)`` of a bank that one rank owns: ``ceil(layers / world)``
    slices per rank, the bank zero-padded to ``per_rank * world`` slices for the collectives."""

    def __init__(self, p: Tensor, world_size: int, rank: int) -> None:
        self.p = p
        self.world_size = world_size
        self.layers, self.rows, self.cols = p.shape
        self.per_rank = -(-self.layers // world_size)
        self.lo = min(rank * self.per_rank, self.layers)
        self.hi = min(self.lo + self.per_rank, self.layers)
        self.owned_numel = self.per_rank * self.rows * self.cols

    def padded(self, full: Tensor) -> Tensor:
        missing = self.per_rank * self.world_size - self.layers
        return full if not missing else torch.cat((full, full.new_zeros(missing, self.rows, self.cols)))

    def padded_owned(self, owned: Tensor) -> Tensor:
        out = owned.new_zeros(self.per_rank, self.rows, self.cols)
        out[: owned.size(0)] = owned
        return out
