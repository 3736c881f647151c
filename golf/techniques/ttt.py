"""Legal score-first test-time training (techniques.md 8.3; #635 ``USE_TTT=1``, records
``TTT_ENABLED``) as the final evaluator ``ttt`` (log label ``legal_ttt``), after the standard and
sliding-window evaluations. Every chunk of TTT_CHUNK_TOKENS is scored with the sliding windows
(EVAL_SEQ_LEN, EVAL_STRIDE) before a copy of the model trains on it; the algorithm is
:mod:`golf.ttt`.

The evaluator is legal only when its probe confirms the pass was score-first: every position scored
once, none used by an update before it was scored. ``TTT_EPOCHS=0`` (or ``TTT_LR=0``) scores exactly
the sliding-window evaluation. #635's values are the defaults; CONTEXT.md's advice for one GPU is
``TTT_LR=0.0005 TTT_EPOCHS=1 TTT_FREEZE_BLOCKS=2`` (the 8-GPU LR diverged there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from golf.evaluate import EvalInputs, EvalResult
from golf.knobs import Checks, knob
from golf.techniques.base import Technique
from golf.techniques.sliding_window import eval_seq_len
from golf.ttt import TttPlan, probe_verdict, score_first_ttt

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.evaluate import Evaluator


@dataclass(frozen=True)
class TttSettings:
    ttt_enabled: bool = knob(False, "score-first test-time training on the validation chunks (legal TTT)",
                             aliases=("USE_TTT",))
    ttt_lr: float = knob(0.002, "SGD learning rate at the first chunk (cosine to 0 at the last)", min=0.0)
    ttt_epochs: int = knob(3, "passes over each chunk's tokens after scoring it; 0 = score only", min=0)
    ttt_chunk_tokens: int = knob(32768, "validation tokens per chunk (a multiple of the window length)", min=1)
    ttt_freeze_blocks: int = knob(0, "blocks 0..N-1 stay frozen", min=0)
    ttt_momentum: float = knob(0.9, "SGD momentum, carried across chunks", min=0.0, max=1.0)
    ttt_batch_seqs: int = knob(32, "sequences per TTT step and windows per scoring batch on each rank", min=1)
    ttt_grad_clip: float = knob(1.0, "clip the averaged gradient's global norm; 0 = no clipping", min=0.0)


def ttt_plan(cfg: GolfConfig) -> TttPlan:
    return TttPlan(
        seq_len=eval_seq_len(cfg), stride=cfg.eval_stride, chunk_tokens=cfg.ttt_chunk_tokens, epochs=cfg.ttt_epochs,
        lr=cfg.ttt_lr, momentum=cfg.ttt_momentum, freeze_blocks=cfg.ttt_freeze_blocks, batch_seqs=cfg.ttt_batch_seqs,
        grad_clip=cfg.ttt_grad_clip,
    )


class ScoreFirstTttEvaluator:
    name = "ttt"

    def __init__(self, plan: TttPlan) -> None:
        self.plan = plan
        self.legal = True
        """Set by the probe after the run: True only for a verified score-first pass."""
        self.violations: dict[str, int] | None = None

    def label(self, metric_prefix: str) -> str:
        return "legal_ttt"

    def __call__(self, inputs: EvalInputs) -> EvalResult:
        result, probe = score_first_ttt(inputs.model, inputs.val_tokens, inputs.byte_counter, self.plan, inputs.ctx,
                                        inputs.log)
        self.legal, self.violations = probe_verdict(probe)
        counts = " ".join(f"{k}:{v}" for k, v in self.violations.items())
        inputs.log(f"ttt_legality score_first:{int(self.legal)} {counts}"
                   + ("" if self.legal else " (not legal: this number cannot be the headline)"))
        return result


class Ttt(Technique):
    name = "ttt"
    title = "legal score-first test-time training: each chunk scored, then trained on"
    spec = "8.3"
    settings = TttSettings
    toggle = "ttt_enabled"
    scores_sliding_windows = True
    """It scores with the sliding windows' settings (EVAL_SEQ_LEN, EVAL_STRIDE)."""

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.ttt_enabled:
            super().check(cfg, world_size, checks)
            return
        window = eval_seq_len(cfg)
        if cfg.ttt_chunk_tokens % window:
            checks.error(
                f"TTT_CHUNK_TOKENS={cfg.ttt_chunk_tokens} is not a multiple of the window length (EVAL_SEQ_LEN or "
                f"TRAIN_SEQ_LEN = {window}): each chunk is trained on as whole sequences; use a multiple of {window}"
            )
        if cfg.ttt_freeze_blocks > cfg.num_layers:
            checks.error(f"TTT_FREEZE_BLOCKS={cfg.ttt_freeze_blocks} exceeds NUM_LAYERS={cfg.num_layers}: "
                         f"use at most {cfg.num_layers}")

    def evaluators(self) -> list[Evaluator]:
        return [ScoreFirstTttEvaluator(ttt_plan(self.cfg))]

    def report(self) -> dict[str, Any]:
        plan = ttt_plan(self.cfg)
        return {"seq_len": plan.seq_len, "stride": plan.stride, "chunk_tokens": plan.chunk_tokens,
                "epochs": plan.epochs, "lr": plan.lr}
