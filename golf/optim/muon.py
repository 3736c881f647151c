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
    x = g.to(dtype)
    x = x / (x.norm() + eps)
    transposed = g.size(0) > g.size(1)
    if transposed:  # iterate on the wide orientation: X X^T is the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


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
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D matrices only; got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch.optim signature
        distributed = dist.is_available() and dist.is_initialized()
        world_size = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        for group in self.param_groups:
            params = group["params"]
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
