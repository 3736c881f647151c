"""Validation loss and bits per byte on the fixed validation tokens (techniques.md 1.2).

Non-overlapping sequences of TRAIN_SEQ_LEN are split contiguously across ranks; loss, token and
byte counts are summed in float64 and all-reduced before the division, so the number does not
depend on the world size beyond float summation order.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from torch import nn

from golf.distributed import DistContext, all_reduce, synchronize
from golf.tokenizer import ByteCounter, bits_per_byte


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
