"""Legal score-first test-time training (techniques.md 8.3, #635), with a probe that checks it.

The validation positions are cut into chunks of TTT_CHUNK_TOKENS; each sliding window (the windows
of :mod:`golf.sliding`) belongs to the chunk that holds its first scored position. For each chunk in
order the model first **scores** the chunk's windows (eval mode, no gradients), then, unless it is
the last chunk, **trains** on the chunk's tokens: TTT_EPOCHS passes over its EVAL_SEQ_LEN-token
sequences in batches of TTT_BATCH_SEQS, SGD with momentum (one optimizer for the whole pass, so
momentum carries across chunks), gradients averaged over ranks and clipped at TTT_GRAD_CLIP, the LR
on a cosine from TTT_LR at the first chunk to 0 at the last. Blocks below TTT_FREEZE_BLOCKS stay
frozen. A token is therefore scored by a model trained only on chunks before its own, all of which
were scored first.

TTT works on a copy of the model: the artifact's weights, which the other evaluators read, are
never changed.

The :class:`LegalityProbe` records, for every position, the optimizer step count when it was scored
and the number of the first update whose loss included it; the run is score-first when every
position was scored and no update used a position before it was scored.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from golf.distributed import DistContext, all_reduce, broadcast_object, synchronize
from golf.evaluate import EvalResult, autocast_for
from golf.sliding import (
    ScoreSums, is_compiled, plain_module, rank_slice, score_starts, scored_span, window_starts,
)
from golf.tokenizer import ByteCounter

NEVER = np.iinfo(np.int32).max
"""``first_update`` of a position no update used."""


@dataclass(frozen=True)
class TttPlan:
    seq_len: int
    stride: int
    chunk_tokens: int
    epochs: int
    lr: float
    momentum: float
    freeze_blocks: int
    batch_seqs: int
    grad_clip: float

    def chunk_lr(self, chunk: int, chunks: int) -> float:
        """Cosine over chunks: TTT_LR at the first, 0 at the last (which is never trained on)."""
        if chunks <= 1:
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * chunk / (chunks - 1)))


@dataclass
class LegalityProbe:
    """What happened to every position, as (lo, hi, count) events on each rank, made per position by
    :meth:`finish`: ``scored_at[p]`` the optimizer step count when p was scored (-1: never),
    ``first_update[p]`` the number (1-based) of the first update whose loss included p (NEVER: none)."""

    n_positions: int
    scored: list[tuple[int, int, int]] = field(default_factory=list)
    trained: list[tuple[int, int, int]] = field(default_factory=list)
    scored_at: np.ndarray | None = None
    first_update: np.ndarray | None = None
    times_scored: np.ndarray | None = None

    def record_scored(self, lo: int, hi: int, step_count: int) -> None:
        self.scored.append((lo, hi, step_count))

    def record_trained(self, lo: int, hi: int, update_number: int) -> None:
        self.trained.append((lo, hi, update_number))

    def finish(self) -> None:
        """Gather every rank's events and build the per-position arrays."""
        scored, trained = list(self.scored), list(self.trained)
        if dist.is_available() and dist.is_initialized():
            gathered: list[tuple[list, list] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self.scored, self.trained))
            scored = [e for s, _ in gathered for e in s]
            trained = [e for _, t in gathered for e in t]
        # int32/int8 per position: about 0.6 GB for the full 62M-token validation set
        self.scored_at = np.full(self.n_positions, -1, dtype=np.int32)
        self.first_update = np.full(self.n_positions, NEVER, dtype=np.int32)
        self.times_scored = np.zeros(self.n_positions, dtype=np.int8)
        for lo, hi, count in scored:
            self.scored_at[lo:hi] = np.maximum(self.scored_at[lo:hi], count)
            self.times_scored[lo:hi] += 1
        for lo, hi, number in trained:
            self.first_update[lo:hi] = np.minimum(self.first_update[lo:hi], number)

    def violations(self) -> dict[str, int]:
        """Counts of positions breaking the rules (all zero for a legal score-first pass)."""
        assert self.scored_at is not None and self.first_update is not None and self.times_scored is not None, (
            "call finish() first")
        return {
            "never_scored": int((self.times_scored == 0).sum()),
            "scored_twice": int((self.times_scored > 1).sum()),
            "trained_before_scored": int((self.first_update <= self.scored_at).sum()),
        }


def score_first_ttt(
    model: nn.Module, val_tokens: Tensor, byte_counter: ByteCounter, plan: TttPlan, ctx: DistContext,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[EvalResult, LegalityProbe]:
    """Score-first TTT of a copy of ``model`` (compiled when ``model`` is) over the validation set."""
    synchronize(ctx.device)
    started = time.perf_counter()
    n_positions = val_tokens.numel() - 1
    tokens = val_tokens.to(ctx.device, dtype=torch.int32)
    compiled = is_compiled(model)
    learner = copy.deepcopy(plain_module(model))
    trainable = _unfreeze(learner, plan.freeze_blocks)
    optimizer = torch.optim.SGD(trainable, lr=plan.lr, momentum=plan.momentum)
    score_fn = torch.compile(learner.token_losses, dynamic=False) if compiled else learner.token_losses
    train_fn = torch.compile(learner, dynamic=False) if compiled else learner

    starts = window_starts(n_positions, plan.seq_len, plan.stride)
    first_scored, last_scored = scored_span(starts, plan.seq_len, plan.stride, n_positions)
    chunks = -(-n_positions // plan.chunk_tokens)
    # windows of chunk c: [bounds[c], bounds[c + 1]) (their first scored positions increase)
    bounds = torch.searchsorted(first_scored, torch.arange(chunks + 1) * plan.chunk_tokens).tolist()
    log(f"ttt_sliding:start chunks={chunks} chunk_tokens={plan.chunk_tokens} total_windows={starts.numel()} "
        f"stride={plan.stride} ttt_lr={plan.lr} ttt_epochs={plan.epochs} freeze_blocks={plan.freeze_blocks}")
    log(f"ttt_sliding:params unfrozen={sum(p.numel() for p in trainable)} "
        f"frozen={sum(p.numel() for p in learner.parameters()) - sum(p.numel() for p in trainable)}")

    probe = LegalityProbe(n_positions)
    sums = ScoreSums.zeros(ctx.device)
    updates = 0
    for chunk in range(chunks):
        in_chunk = torch.arange(bounds[chunk], bounds[chunk + 1])
        mine = in_chunk[rank_slice(in_chunk.numel(), ctx)]
        learner.eval()
        if mine.numel():
            sums.add(score_starts(score_fn, tokens, starts[mine], byte_counter, seq_len=plan.seq_len, stride=plan.stride,
                                  batch_seqs=plan.batch_seqs, n_positions=n_positions, fixed_shape=compiled))
            probe.record_scored(int(first_scored[mine[0]]), int(last_scored[mine[-1]]), updates)
        if chunk == chunks - 1 or plan.epochs == 0:
            continue
        for group in optimizer.param_groups:
            group["lr"] = plan.chunk_lr(chunk, chunks)
        learner.train()
        updates = _train_chunk(train_fn, trainable, optimizer, tokens, chunk, plan, ctx, probe, updates)
    learner.eval()
    probe.finish()
    sums.all_reduce()
    synchronize(ctx.device)
    result = sums.result(time.perf_counter() - started)
    log(f"ttt_sliding:done val_loss={result.val_loss:.6f} val_bpb={result.val_bpb:.6f} elapsed={result.seconds:.1f}s")
    return result, probe


def _unfreeze(model: nn.Module, freeze_blocks: int) -> list[nn.Parameter]:
    """Make every parameter trainable except those of blocks 0..freeze_blocks-1; return the trainable."""
    frozen = tuple(f"blocks.{i}." for i in range(freeze_blocks))
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(frozen))
        if param.requires_grad:
            trainable.append(param)
    return trainable


def _train_chunk(
    train_fn: Callable[[Tensor, Tensor], Tensor], trainable: list[nn.Parameter], optimizer: torch.optim.Optimizer,
    tokens: Tensor, chunk: int, plan: TttPlan, ctx: DistContext, probe: LegalityProbe, updates: int,
) -> int:
    """TTT_EPOCHS passes over the chunk's sequences, split across ranks; returns the update count."""
    first = chunk * plan.chunk_tokens
    seqs = plan.chunk_tokens // plan.seq_len
    share = range(seqs)[rank_slice(seqs, ctx)]
    steps_per_epoch = -(-(-(-seqs // ctx.world_size)) // plan.batch_seqs)  # the same on every rank
    offsets = torch.arange(plan.seq_len + 1, device=tokens.device)
    for _ in range(plan.epochs):
        for step in range(steps_per_epoch):
            batch = share[step * plan.batch_seqs : (step + 1) * plan.batch_seqs]
            optimizer.zero_grad(set_to_none=False)
            if len(batch):
                starts = first + plan.seq_len * torch.tensor(list(batch), device=tokens.device)
                span = tokens[starts[:, None] + offsets[None, :]].long()
                with autocast_for(ctx.device):
                    loss = train_fn(span[:, :-1], span[:, 1:])
                loss.backward()
            for param in trainable:
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                all_reduce(param.grad, "avg")
            if plan.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, plan.grad_clip)
            optimizer.step()
            updates += 1
            if len(batch):
                lo = first + plan.seq_len * batch[0]
                probe.record_trained(lo, lo + plan.seq_len * len(batch), updates)
    optimizer.zero_grad(set_to_none=True)
    return updates


def probe_verdict(probe: LegalityProbe) -> tuple[bool, dict[str, int]]:
    """(score-first, the violation counts), decided on rank 0 and the same on every rank."""
    counts = probe.violations()
    return broadcast_object((not any(counts.values()), counts))
