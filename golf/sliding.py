"""Sliding-window scoring of the validation tokens (techniques.md 8.1), shared by the sliding-window
evaluator and score-first test-time training.

Positions are target indices: position p is the prediction of token p + 1 from tokens 0..p, so a
validation set of N + 1 tokens has N positions. Windows of S input tokens start at 0, stride,
2*stride, ... and a window is kept while it has something new to score (``ws + S - stride < N``,
the coverage rule of #1218's fix). The first window scores all of its positions; every later one
scores only its last ``stride``, which therefore see at least S - stride tokens of context, and a
window running past the end scores up to N. Every position is then scored exactly once.

Windows run in batches of one shape: a window running past the end is padded on the right (causal
attention keeps the padding out of every scored position) and, when the model is compiled, the last
batch is padded with unscored rows, so a compiled model sees a single input shape.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from golf.distributed import DistContext, all_reduce, synchronize
from golf.evaluate import EvalResult, autocast_for
from golf.tokenizer import ByteCounter, bits_per_byte

TokenLossFn = Callable[[Tensor, Tensor], Tensor]
"""(input ids [B, S], target ids [B, S]) -> per-token losses [B, S] in nats."""

_COMPILED_TOKEN_LOSSES: weakref.WeakKeyDictionary[nn.Module, TokenLossFn] = weakref.WeakKeyDictionary()


def is_compiled(model: nn.Module) -> bool:
    return hasattr(model, "_orig_mod")


def plain_module(model: nn.Module) -> nn.Module:
    """The module under a ``torch.compile`` wrapper (the module itself when not compiled)."""
    return getattr(model, "_orig_mod", model)


def token_loss_fn(model: nn.Module) -> TokenLossFn:
    """``model.token_losses``, compiled (once per module, static shapes) when ``model`` is compiled.

    ``torch.compile(module)`` compiles only ``forward``; the per-token losses are another method, so
    they get their own compiled function, kept for the module's lifetime so later evaluators reuse it.
    """
    base = plain_module(model)
    if not is_compiled(model):
        return base.token_losses
    if base not in _COMPILED_TOKEN_LOSSES:
        _COMPILED_TOKEN_LOSSES[base] = torch.compile(base.token_losses, dynamic=False)
    return _COMPILED_TOKEN_LOSSES[base]


def window_starts(n_positions: int, seq_len: int, stride: int) -> Tensor:
    """Start of every kept window (int64): 0, stride, ... while ``ws + S - stride < N``."""
    if not 0 < stride <= seq_len:
        raise ValueError(f"stride must be in [1, seq_len={seq_len}], got {stride}")
    return torch.arange(0, max(n_positions - seq_len + stride, 1), stride, dtype=torch.int64)


def scored_span(starts: Tensor, seq_len: int, stride: int, n_positions: int) -> tuple[Tensor, Tensor]:
    """[lo, hi) of the positions each window scores: all of the first window, the last ``stride`` of
    every other, cut at N."""
    lo = torch.where(starts == 0, torch.zeros_like(starts), starts + seq_len - stride)
    hi = torch.clamp(starts + seq_len, max=n_positions)
    return lo, hi


@dataclass
class ScoreSums:
    """Float64 sums on the device: NLL in nats, scored tokens and their bytes."""

    loss: Tensor
    tokens: Tensor
    bytes: Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> ScoreSums:
        return cls(*(torch.zeros((), device=device, dtype=torch.float64) for _ in range(3)))

    def add(self, other: ScoreSums) -> None:
        self.loss += other.loss
        self.tokens += other.tokens
        self.bytes += other.bytes

    def all_reduce(self) -> None:
        for t in (self.loss, self.tokens, self.bytes):
            all_reduce(t, "sum")

    def result(self, seconds: float) -> EvalResult:
        loss, tokens, n_bytes = self.loss.item(), int(self.tokens.item()), int(self.bytes.item())
        return EvalResult(val_loss=loss / tokens, val_bpb=bits_per_byte(loss, tokens, n_bytes),
                          tokens=tokens, bytes=n_bytes, seconds=seconds)


@torch.no_grad()
def score_windows(
    loss_fn: TokenLossFn, tokens: Tensor, starts: Tensor, byte_counter: ByteCounter, *,
    seq_len: int, stride: int, n_positions: int, pad_rows_to: int = 0,
) -> ScoreSums:
    """Score one batch of windows: ``tokens`` (the validation tokens on the model's device) at window
    ``starts`` (on the same device); ``pad_rows_to`` > len(starts) adds unscored rows (one shape)."""
    device = tokens.device
    rows = starts.numel()
    if pad_rows_to > rows:
        starts = torch.cat((starts, starts[-1:].expand(pad_rows_to - rows)))
    offsets = torch.arange(seq_len, device=device)
    positions = starts[:, None] + offsets[None, :]
    lo, hi = scored_span(starts, seq_len, stride, n_positions)
    scored = (positions >= lo[:, None]) & (positions < hi[:, None])
    scored[rows:] = False
    # Past the end every input repeats the last valid position: causal attention keeps it out of
    # every scored position, and the ids stay real tokens.
    index = positions.clamp(max=n_positions - 1)
    x, y = tokens[index].long(), tokens[index + 1].long()
    with autocast_for(device):
        losses = loss_fn(x, y)
    weight = scored.to(torch.float64)
    return ScoreSums(
        loss=(losses.to(torch.float64) * weight).sum(),
        tokens=weight.sum(),
        bytes=(byte_counter.token_bytes(x, y).to(torch.float64) * weight).sum(),
    )


def rank_slice(count: int, ctx: DistContext) -> slice:
    """This rank's contiguous share of ``count`` items."""
    return slice(count * ctx.rank // ctx.world_size, count * (ctx.rank + 1) // ctx.world_size)


def score_starts(
    loss_fn: TokenLossFn, tokens: Tensor, starts: Tensor, byte_counter: ByteCounter, *,
    seq_len: int, stride: int, batch_seqs: int, n_positions: int, fixed_shape: bool,
) -> ScoreSums:
    """Score ``starts`` (this rank's windows) in batches of ``batch_seqs``; the sums stay local."""
    sums = ScoreSums.zeros(tokens.device)
    starts = starts.to(tokens.device)
    for first in range(0, starts.numel(), batch_seqs):
        batch = starts[first : first + batch_seqs]
        sums.add(score_windows(loss_fn, tokens, batch, byte_counter, seq_len=seq_len, stride=stride,
                               n_positions=n_positions, pad_rows_to=batch_seqs if fixed_shape else 0))
    return sums


def sliding_evaluate(
    model: nn.Module, val_tokens: Tensor, byte_counter: ByteCounter, *,
    seq_len: int, stride: int, batch_seqs: int, ctx: DistContext,
) -> EvalResult:
    """Sliding-window evaluation of ``model`` (compiled or not) over every validation position once;
    each rank scores a contiguous slice of the windows and the sums are all-reduced."""
    synchronize(ctx.device)
    started = time.perf_counter()
    n_positions = val_tokens.numel() - 1
    tokens = val_tokens.to(ctx.device, dtype=torch.int32)
    every = window_starts(n_positions, seq_len, stride)
    starts = every[rank_slice(every.numel(), ctx)]
    base = plain_module(model)
    was_training = base.training
    base.eval()
    try:
        sums = score_starts(token_loss_fn(model), tokens, starts, byte_counter, seq_len=seq_len, stride=stride,
                            batch_seqs=batch_seqs, n_positions=n_positions, fixed_shape=is_compiled(model))
    finally:
        base.train(was_training)
    sums.all_reduce()
    synchronize(ctx.device)
    return sums.result(time.perf_counter() - started)
