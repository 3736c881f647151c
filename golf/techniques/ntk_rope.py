"""NTK-aware RoPE scaling (techniques.md 8.2; #326's EVAL_SEQ_LEN=4096, #635's hidden quirk): a
sequence of T tokens longer than the length T0 the rotary was built for rotates with the base
``b' = ROPE_BASE * (T/T0)^(D/(D-2))`` (D = the rotary dims, ROPE_DIMS or the head dim); lengths up to
T0 are untouched. T0 is ROPE_NTK_TRAIN_LEN, TRAIN_SEQ_LEN by default, so training is unchanged and
only a longer evaluation window (EVAL_SEQ_LEN with sliding windows or TTT) is scaled.

``ROPE_NTK_TRAIN_LEN=1024`` with TRAIN_SEQ_LEN=2048 reproduces #635 (and the R-2026-03-21..23
lineage), whose rotary was built for 1024 tokens: the scaling is then on in training and evaluation
alike, an effective base of 10000 * 2^(16/14) ~ 22,082 on its 16 partial-RoPE dims.

The seam is ``Rotary.ntk_train_len``; the technique is registered after partial RoPE, which
replaces the rotary modules in its own ``on_model``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from golf.knobs import Checks, knob
from golf.model.layers import ntk_base
from golf.techniques.base import Technique, TrainingRun, warn_inert
from golf.techniques.sliding_window import eval_seq_len, windows_in_use

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.policy import TensorFormat


@dataclass(frozen=True)
class NtkRopeSettings:
    rope_ntk: bool = knob(False, "NTK-aware RoPE: scale the rotary base for sequences longer than ROPE_NTK_TRAIN_LEN")
    rope_ntk_train_len: int = knob(
        0, "the length the rotary is built for (T0); 0 = TRAIN_SEQ_LEN; #635's always-on quirk: 1024",
        aliases=("ROPE_TRAIN_SEQ_LEN",), min=0,
    )


def ntk_train_len(cfg: GolfConfig) -> int:
    return cfg.rope_ntk_train_len or cfg.train_seq_len


def rotary_dims(cfg: GolfConfig) -> int:
    return cfg.rope_dims or cfg.head_dim


def longest_sequence(cfg: GolfConfig) -> int:
    """The longest sequence the model sees: training, or an evaluation's windows."""
    return max(cfg.train_seq_len, eval_seq_len(cfg) if windows_in_use(cfg) else 0)


class NtkRope(Technique):
    name = "ntk_rope"
    title = "NTK-aware RoPE: a larger rotary base for sequences longer than the built length"
    spec = "8.2"
    settings = NtkRopeSettings
    toggle = "rope_ntk"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        from golf.config import reference_value

        if not cfg.rope_ntk:
            warn_inert(cfg, cls, ["rope_ntk_train_len"], checks)
            return
        if rotary_dims(cfg) <= 2:
            checks.error(f"ROPE_NTK=1 needs more than 2 rotary dims (ROPE_DIMS={cfg.rope_dims}): "
                         "the exponent D/(D-2) is undefined; use ROPE_DIMS=16 or more")
        if longest_sequence(cfg) <= ntk_train_len(cfg) and cfg.rope_ntk != reference_value(checks, "rope_ntk"):
            checks.warn(
                f"ROPE_NTK=1 has no effect: no sequence is longer than ROPE_NTK_TRAIN_LEN={ntk_train_len(cfg)} "
                f"(longest: {longest_sequence(cfg)}); set EVAL_SEQ_LEN above it with SLIDING_WINDOW_ENABLED=1, "
                "or drop ROPE_NTK"
            )

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        for block in run.model.blocks:
            block.attn.rotary.ntk_train_len = ntk_train_len(self.cfg)

    def report(self) -> dict[str, Any]:
        cfg, t0 = self.cfg, ntk_train_len(self.cfg)

        def base_at(length: int) -> float:
            return ntk_base(cfg.rope_base, rotary_dims(cfg), length / t0) if length > t0 else cfg.rope_base

        return {"train_len": t0, "rotary_dims": rotary_dims(cfg), "train_base": base_at(cfg.train_seq_len),
                "eval_base": base_at(longest_sequence(cfg))}
