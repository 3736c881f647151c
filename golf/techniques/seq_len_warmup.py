"""Sequence-length warmup (techniques.md 5.5, #130).

Until ``SEQ_LEN_EXPAND_FRAC`` of the training budget is spent, every micro-batch is cut into
``SEQ_LEN_START``-token sequences; from the first step at or past that fraction on, into
``TRAIN_SEQ_LEN`` ones. The tokens per step stay ``TRAIN_BATCH_TOKENS`` (so 4x the sequences at
256 vs 1024): only attention work, quadratic in length, shrinks; positions past SEQ_LEN_START are
not trained before the switch. Validation always uses TRAIN_SEQ_LEN.

What #130 got wrong and this does not: its switch read a time variable assigned later in the loop,
so ``SEQ_LEN_WARMUP=1`` crashed at step 0 (here the decision reads the step's ``Progress``, which
exists from step 0); its warmup steps compiled only the full length, so the compiled model stalled
to recompile at the switch (here the warmup steps run both lengths); and it never said when it
switched (here the switch step is logged and in result.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from golf.knobs import Checks, knob
from golf.techniques.base import Progress, Technique, TrainingRun, warn_inert

if TYPE_CHECKING:
    from golf.config import GolfConfig


@dataclass(frozen=True)
class SeqLenWarmupSettings:
    seq_len_warmup: bool = knob(
        False, "train on SEQ_LEN_START-token sequences until SEQ_LEN_EXPAND_FRAC of the budget, then "
        "TRAIN_SEQ_LEN; the tokens per step stay the same",
    )
    seq_len_start: int = knob(256, "sequence length before the switch", min=2)
    seq_len_expand_frac: float = knob(
        0.5, "switch to TRAIN_SEQ_LEN at the first step once this fraction of the training budget is spent",
        min=0.0, max=1.0,
    )


class SeqLenWarmup(Technique):
    name = "seq_len_warmup"
    title = "sequence-length warmup: short sequences, same tokens per step, until a fraction of the budget"
    spec = "5.5"
    settings = SeqLenWarmupSettings
    toggle = "seq_len_warmup"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.seq_len_warmup:
            warn_inert(cfg, cls, ["seq_len_start", "seq_len_expand_frac"], checks)
            return
        if cfg.seq_len_start >= cfg.train_seq_len:
            checks.error(
                f"SEQ_LEN_START={cfg.seq_len_start} is not shorter than TRAIN_SEQ_LEN={cfg.train_seq_len}: "
                "use a shorter start length (#130: 256) or SEQ_LEN_WARMUP=0"
            )
        if world_size >= 1 and not (cfg.grad_accum_steps == 0 and 8 % world_size):
            shares = world_size * cfg.grad_accum_for(world_size)
            per_micro = cfg.train_batch_tokens // shares
            if cfg.train_batch_tokens % shares == 0 and per_micro % cfg.seq_len_start:
                checks.error(
                    f"SEQ_LEN_START={cfg.seq_len_start} does not divide the {per_micro} tokens of each rank's "
                    f"micro-batch (TRAIN_BATCH_TOKENS={cfg.train_batch_tokens} / {shares}): use a length "
                    f"that divides {per_micro}, such as a power of two"
                )
        if cfg.seq_len_expand_frac == 0:
            checks.warn(
                "SEQ_LEN_WARMUP=1 has no effect with SEQ_LEN_EXPAND_FRAC=0: the switch comes before the "
                "first step; raise SEQ_LEN_EXPAND_FRAC (#130: 0.5) or drop SEQ_LEN_WARMUP"
            )
        if cfg.warmup_steps == 1:
            checks.warn(
                "WARMUP_STEPS=1 compiles only one of the two sequence lengths of SEQ_LEN_WARMUP=1, so a "
                "compiled model stalls to recompile at the switch: use WARMUP_STEPS>=2"
            )

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.switch_step: int | None = None
        self.switch_budget_fraction: float | None = None
        self.steps = 0

    def on_train_start(self, run: TrainingRun) -> None:
        cfg = self.cfg
        run.log(f"seq_len_warmup: seq_len:{cfg.seq_len_start} until budget_frac:{cfg.seq_len_expand_frac}, "
                f"then {cfg.train_seq_len} ({cfg.train_batch_tokens} tokens per step throughout)")

    def before_step(self, progress: Progress, run: TrainingRun) -> None:
        self.steps = progress.step + 1
        if self.switch_step is None and progress.budget_fraction >= self.cfg.seq_len_expand_frac:
            self.switch_step, self.switch_budget_fraction = progress.step, progress.budget_fraction
            run.log(f"seq_len_warmup:switch step:{progress.step} seq_len:{self.cfg.seq_len_start}->"
                    f"{self.cfg.train_seq_len} budget_frac:{progress.budget_fraction:.3f}")

    def train_seq_len(self) -> int | None:
        return self.cfg.seq_len_start if self.switch_step is None else None

    def warmup_seq_lens(self) -> tuple[int, ...]:
        return (self.cfg.seq_len_start,)

    def report(self) -> dict[str, Any]:
        short = self.steps if self.switch_step is None else self.switch_step
        return {
            "seq_len_start": self.cfg.seq_len_start, "seq_len": self.cfg.train_seq_len,
            "expand_frac": self.cfg.seq_len_expand_frac, "switch_step": self.switch_step,
            "switch_budget_fraction": self.switch_budget_fraction, "steps_at_start_len": short,
        }
