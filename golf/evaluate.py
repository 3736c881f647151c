"""Validation loss and bits per byte on the fixed validation tokens (techniques.md 1.2), and the
final evaluation as a list of evaluators.

The standard evaluation: non-overlapping sequences of TRAIN_SEQ_LEN are split contiguously across
ranks; loss, token and byte counts are summed in float64 and all-reduced before the division, so
the number does not depend on the world size beyond float summation order.

The final evaluation runs every configured :class:`Evaluator` on the round-tripped artifact (the
standard one first; techniques add sliding windows, test-time training, ...) and takes as the
headline the best legal one that ran (:func:`pick_headline`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from golf.distributed import DistContext, all_reduce, synchronize
from golf.tokenizer import ByteCounter, bits_per_byte

if TYPE_CHECKING:
    from golf.config import GolfConfig

HEADLINE_RULE = "the lowest val_bpb among the legal evaluations of the round-tripped artifact"


@dataclass(frozen=True)
class EvalResult:
    val_loss: float  # mean cross-entropy, nats per token
    val_bpb: float   # bits per byte of the underlying text
    tokens: int
    bytes: int
    seconds: float


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs (the reference); CPUs run in fp32."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    val_tokens: torch.Tensor,
    byte_counter: ByteCounter,
    *,
    seq_len: int,
    batch_tokens: int,
    grad_accum_steps: int,
    ctx: DistContext,
) -> EvalResult:
    """Standard (non-overlapping) evaluation of ``model`` (a callable giving the mean loss)."""
    synchronize(ctx.device)
    started = time.perf_counter()
    local_batch_seqs = batch_tokens // (ctx.world_size * grad_accum_steps) // seq_len
    total_seqs = (val_tokens.numel() - 1) // seq_len
    first = total_seqs * ctx.rank // ctx.world_size
    last = total_seqs * (ctx.rank + 1) // ctx.world_size
    loss_sum = torch.zeros((), device=ctx.device, dtype=torch.float64)
    token_count = torch.zeros((), device=ctx.device, dtype=torch.float64)
    byte_count = torch.zeros((), device=ctx.device, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for start in range(first, last, local_batch_seqs):
            end = min(start + local_batch_seqs, last)
            span = val_tokens[start * seq_len : end * seq_len + 1].to(ctx.device, dtype=torch.int64, non_blocking=True)
            x = span[:-1].reshape(-1, seq_len)
            y = span[1:].reshape(-1, seq_len)
            with autocast_for(ctx.device):
                loss = model(x, y).detach()
            n = float(y.numel())
            loss_sum += loss.to(torch.float64) * n
            token_count += n
            byte_count += byte_counter.count(x.reshape(-1), y.reshape(-1))
    finally:
        model.train(was_training)
    for t in (loss_sum, token_count, byte_count):
        all_reduce(t, "sum")
    loss_sum_nats, tokens, n_bytes = loss_sum.item(), int(token_count.item()), int(byte_count.item())
    synchronize(ctx.device)
    return EvalResult(
        val_loss=loss_sum_nats / tokens,
        val_bpb=bits_per_byte(loss_sum_nats, tokens, n_bytes),
        tokens=tokens,
        bytes=n_bytes,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class EvalInputs:
    """What every evaluator gets: the model (compiled when compiling) and the validation set."""

    model: nn.Module
    val_tokens: torch.Tensor
    byte_counter: ByteCounter
    cfg: GolfConfig
    ctx: DistContext
    grad_accum_steps: int
    log: Callable[[str], None] = field(default=lambda _: None)
    """The run's log (rank 0 prints): for an evaluator's own lines besides its metric lines."""


class Evaluator(Protocol):
    name: str
    """Key in result.json["metrics"]["evaluations"] (``roundtrip``, ``sliding``, ``ttt``, ...)."""
    legal: bool
    """Whether the challenge's rules let this number be the score (e.g. TTT that trains on a
    token before scoring it is not)."""

    def label(self, metric_prefix: str) -> str:
        """The log line's metric name, e.g. ``final_int8_zlib_roundtrip``."""
        ...

    def __call__(self, inputs: EvalInputs) -> EvalResult: ...


class StandardEvaluator:
    """Non-overlapping windows of TRAIN_SEQ_LEN: the reference's final evaluation."""

    name = "roundtrip"
    legal = True

    def label(self, metric_prefix: str) -> str:
        return f"{metric_prefix}_roundtrip"

    def __call__(self, inputs: EvalInputs) -> EvalResult:
        return evaluate(
            inputs.model, inputs.val_tokens, inputs.byte_counter, seq_len=inputs.cfg.train_seq_len,
            batch_tokens=inputs.cfg.val_batch_size, grad_accum_steps=inputs.grad_accum_steps, ctx=inputs.ctx,
        )


@dataclass(frozen=True)
class FinalEvaluation:
    name: str
    label: str
    legal: bool
    result: EvalResult


def pick_headline(evaluations: Mapping[str, FinalEvaluation]) -> FinalEvaluation:
    """The best legal evaluation that ran: the lowest val_bpb (ties: the first that ran)."""
    legal = [e for e in evaluations.values() if e.legal]
    if not legal:
        raise ValueError(
            f"no legal final evaluation ran (ran: {', '.join(evaluations) or 'none'}): "
            "the standard evaluation is always legal; check the configured evaluators"
        )
    return min(legal, key=lambda e: e.result.val_bpb)


@dataclass(frozen=True)
class EvalBudget:
    """The final evaluations' seconds against the challenge's evaluation budget (techniques.md 8.4:
    10 minutes on 8xH100 on top of training; #635's evaluations came to about 665 s)."""

    budget_s: float
    seconds: dict[str, float]
    """Each evaluator's seconds, in the order they ran."""

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    @property
    def within(self) -> bool:
        return self.total_s <= self.budget_s

    def as_dict(self) -> dict[str, object]:
        return {"budget_s": self.budget_s, "total_s": self.total_s, "within_budget": self.within,
                "seconds": dict(self.seconds)}


def eval_budget(evaluations: Mapping[str, FinalEvaluation], budget_s: float) -> EvalBudget:
    return EvalBudget(budget_s, {name: e.result.seconds for name, e in evaluations.items()})


@torch.no_grad()
def token_losses_and_bytes(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, byte_counter: ByteCounter
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token losses [B, T] (fp32, nats) of ``model`` (its ``token_losses``) and the byte count
    of every target token [B, T] (int64), for evaluators that score positions selectively."""
    losses = model.token_losses(x, y)
    return losses, byte_counter.token_bytes(x, y)
