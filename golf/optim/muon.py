"""Muon: momentum SGD whose update is orthogonalised by a Newton-Schulz iteration (techniques.md 1.4)."""

from __future__ import annotations

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


class Muon(torch.optim.Optimizer):
    """Nesterov momentum + Newton-Schulz orthogonalisation, for 2-D weight matrices.

    Per matrix: ``buf = mu*buf + g``; ``u = g + mu*buf``; ``u = NS5(u) * sqrt(max(1, rows/cols))``;
    ``W -= lr * u``. With several ranks, matrix i is orthogonalised on rank ``i % world_size`` only;
    the updates meet in one flat buffer that is summed across ranks, so every rank applies all of
    them (the reference's split of the Newton-Schulz work).
    """

    def __init__(
        self, params, lr: float, momentum: float, backend_steps: int = 5, nesterov: bool = True,
        ns_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov))
        self.ns_dtype = ns_dtype
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
                    u = newton_schulz5(g, steps=group["backend_steps"], dtype=self.ns_dtype)
                    u *= max(1.0, u.size(0) / u.size(1)) ** 0.5
                    updates[offset : offset + p.numel()] = u.reshape(-1)
                offset += p.numel()
            if distributed:
                dist.all_reduce(updates, op=dist.ReduceOp.SUM)
            offset = 0
            for p in params:
                p.add_(updates[offset : offset + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
                offset += p.numel()
        return None
