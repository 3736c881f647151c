"""Depth recurrence (techniques.md 7.15; #1260 ``RECUR_LAYERS=4,5 RECUR_START_STEP=3000``): from a
training step on, the chosen layers run again right after their first pass, with the same
parameter objects (the whole physical block: attention, MLP, scales, resid_mix and its LN-scale
factor).

- Virtual order: ``[0 .. c-1] + RECUR_LAYERS * RECUR_REPEATS + [c .. L-1]`` with
  ``c = max(RECUR_LAYERS) + 1``; for 11 layers and 4,5 once: 0,1,2,3,4,5,4,5,6,7,8,9,10.
- U-Net on the virtual sequence (the GPT's skip wiring follows ``layer_order``): enc = n // 2,
  decoder i uses skip weight ``min(i, n_skip - 1)``, and decoders beyond the pushed skips get none.
- The switch is the GPT's ``layer_order``, which a compiled graph is guarded on, so writing it
  would recompile at activation (tests/test_architecture.py proves it under torch.compile). As in
  #1260, the warmup therefore also runs WARMUP_STEPS steps with the recurrent order
  (``warmup_future``) before everything is restored, so both graphs are compiled before the clock
  starts. ``RECUR_START_STEP=0`` activates it before compile.
- Evaluation uses the order training ended with; an ``EVAL_ONLY_FROM`` run uses the recurrent
  order when the source run trained past the start step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from golf.contract import TRAIN_STATE_FILE
from golf.knobs import Checks, knob
from golf.techniques.base import Progress, Technique, TrainingRun
from golf.techniques.inert import warn_inert_unless
from golf.techniques.layer_lists import parse_layers

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.policy import TensorFormat


@dataclass(frozen=True)
class DepthRecurrenceSettings:
    recur_layers: str = knob("", "layers that run again after their first pass (#1260: 4,5); empty = off")
    recur_repeats: int = knob(1, "extra passes through RECUR_LAYERS", min=1)
    recur_start_step: int = knob(0, "training step from which the layers repeat (#1260: 3000); 0 = from the start", min=0)


def virtual_order(layers: list[int], repeats: int, num_layers: int) -> tuple[int, ...]:
    cut = max(layers) + 1
    return (*range(cut), *(layers * repeats), *range(cut, num_layers))


class DepthRecurrence(Technique):
    name = "depth_recurrence"
    title = "depth recurrence: chosen layers repeat with shared weights from a training step on"
    spec = "7.15"
    settings = DepthRecurrenceSettings

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return bool(cfg.recur_layers.strip())

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.recur_layers.strip():
            warn_inert_unless(cfg, ["recur_repeats", "recur_start_step"], "RECUR_LAYERS is set", checks)
            return
        try:
            parse_layers(cfg.recur_layers, cfg.num_layers, "RECUR_LAYERS")
        except ValueError as exc:
            checks.error(str(exc))
        if cfg.recur_start_step >= cfg.iterations:
            checks.warn(f"RECUR_START_STEP={cfg.recur_start_step} is not below ITERATIONS={cfg.iterations}, "
                        "so the layers never repeat: lower RECUR_START_STEP")

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.layers = parse_layers(cfg.recur_layers, cfg.num_layers, "RECUR_LAYERS")
        self.order = virtual_order(self.layers, cfg.recur_repeats, cfg.num_layers)
        self.activated_at_step: int | None = None

    def activate(self, run: TrainingRun, step: int) -> None:
        run.model.layer_order = self.order
        self.activated_at_step = step
        run.log(f"recurrence:activated step:{step} layers:{self.layers} virtual_layers:{len(self.order)}")

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        if self.cfg.recur_start_step == 0 or self._source_trained_past_start():
            self.activate(run, 0)

    def _source_trained_past_start(self) -> bool:
        if not self.cfg.eval_only_from:
            return False
        state = Path(self.cfg.eval_only_from) / TRAIN_STATE_FILE
        return state.is_file() and json.loads(state.read_text()).get("steps", 0) > self.cfg.recur_start_step

    def warmup_future(self, run: TrainingRun) -> Callable[[], None] | None:
        """#1260's prewarm: the warmup also runs the recurrent order, so activation mid-run finds
        its graph compiled instead of recompiling on the clock."""
        if self.activated_at_step is not None or self.cfg.recur_start_step >= self.cfg.iterations:
            return None
        before = run.model.layer_order
        run.model.layer_order = self.order
        run.log(f"recurrence:prewarm active=1 virtual_layers:{len(self.order)}")

        def switch_back() -> None:
            run.model.layer_order = before

        return switch_back

    def before_step(self, progress: Progress, run: TrainingRun) -> None:
        if self.activated_at_step is None and progress.step >= self.cfg.recur_start_step:
            self.activate(run, progress.step)

    def report(self) -> dict[str, Any]:
        return {"layers": self.layers, "repeats": self.cfg.recur_repeats, "virtual_order": list(self.order),
                "activated_at_step": self.activated_at_step}
