"""Sliding-window evaluation (techniques.md 8.1; #137, #326, #635, #1260): windows of EVAL_SEQ_LEN
tokens every EVAL_STRIDE tokens, each scoring only its last EVAL_STRIDE positions (the first window
all of its own), so every validation token is scored exactly once with at least
EVAL_SEQ_LEN - EVAL_STRIDE tokens of context after the first window. It runs after the standard
round-trip evaluation as the evaluator ``sliding`` (log label ``<prefix>_sliding_window``), batched
EVAL_BATCH_SEQS windows at a time and compiled when the model is. The scoring is
:mod:`golf.sliding`; score-first TTT scores with the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from golf.evaluate import EvalInputs, EvalResult
from golf.knobs import Checks, knob
from golf.sliding import sliding_evaluate
from golf.techniques.base import Technique, warn_inert

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.evaluate import Evaluator


@dataclass(frozen=True)
class SlidingWindowSettings:
    sliding_window_enabled: bool = knob(False, "also evaluate with overlapping sliding windows (scored once each)")
    eval_stride: int = knob(64, "sliding windows start every N tokens and score their last N", min=1)
    eval_seq_len: int = knob(0, "sliding-window (and TTT) window length; 0 = TRAIN_SEQ_LEN", min=0)
    eval_batch_seqs: int = knob(32, "sliding windows per forward pass on each rank", min=1)


def eval_seq_len(cfg: GolfConfig) -> int:
    """The window length of the sliding-window and TTT evaluations."""
    return cfg.eval_seq_len or cfg.train_seq_len


def windows_in_use(cfg: GolfConfig) -> bool:
    """Whether an active evaluation scores sliding windows: this one, or TTT (which scores the same).

    Asked of the registry rather than by knob name, so a bundle without TTT carries none of it."""
    from golf.techniques import TECHNIQUES

    return any(getattr(t, "scores_sliding_windows", False) and t.is_enabled(cfg) for t in TECHNIQUES)


class SlidingWindowEvaluator:
    name = "sliding"
    legal = True

    def __init__(self, seq_len: int, stride: int, batch_seqs: int) -> None:
        self.seq_len, self.stride, self.batch_seqs = seq_len, stride, batch_seqs

    def label(self, metric_prefix: str) -> str:
        return f"{metric_prefix}_sliding_window"

    def __call__(self, inputs: EvalInputs) -> EvalResult:
        return sliding_evaluate(inputs.model, inputs.val_tokens, inputs.byte_counter, seq_len=self.seq_len,
                                stride=self.stride, batch_seqs=self.batch_seqs, ctx=inputs.ctx)


class SlidingWindow(Technique):
    name = "sliding_window"
    title = "sliding-window evaluation: every token scored once with EVAL_SEQ_LEN - EVAL_STRIDE context"
    spec = "8.1"
    settings = SlidingWindowSettings
    toggle = "sliding_window_enabled"
    scores_sliding_windows = True  # read by windows_in_use

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not windows_in_use(cfg):
            warn_inert(cfg, cls, [k for k in cls.knob_names() if k != cls.toggle], checks)
            return
        if cfg.eval_stride > eval_seq_len(cfg):
            checks.error(
                f"EVAL_STRIDE={cfg.eval_stride} is longer than the window (EVAL_SEQ_LEN or TRAIN_SEQ_LEN = "
                f"{eval_seq_len(cfg)}): tokens between windows would never be scored; use a stride of at most "
                f"{eval_seq_len(cfg)} (64 in the seeds)"
            )

    def evaluators(self) -> list[Evaluator]:
        cfg = self.cfg
        return [SlidingWindowEvaluator(eval_seq_len(cfg), cfg.eval_stride, cfg.eval_batch_seqs)]

    def report(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"seq_len": eval_seq_len(cfg), "stride": cfg.eval_stride, "batch_seqs": cfg.eval_batch_seqs}
