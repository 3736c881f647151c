"""EMA of the weights (techniques.md 6.3; #635, #1260 and the records).

After every optimizer step ``ema <- d*ema + (1-d)*theta`` over every floating-point entry of the
state_dict (parameters and float buffers). The shadow copy is fp32 and stays on the training
device (#635 removed a per-step ``.cpu()`` copy that stalled every step); it starts from the weights
real training starts from, after warmup-and-restore, and never takes part in autograd. At the
end it is offered as candidate ``ema``, cast back to the model's dtypes, on CPU. SWA over EMA
(``SWA_SOURCE=ema``) reads the shadow through ``run.shared["ema"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from golf.knobs import Checks, knob
from golf.techniques.averaging import Averaging, float_state, offered_state
from golf.techniques.base import Candidates, Progress, TrainingRun, warn_inert

if TYPE_CHECKING:
    from golf.config import GolfConfig


@dataclass(frozen=True)
class EmaSettings:
    ema_enabled: bool = knob(
        False, "keep an exponential moving average of the weights (fp32, on the training device) and offer it at the end",
        aliases=("USE_EMA",),
    )
    ema_decay: float = knob(
        0.997, "EMA decay d: ema = d*ema + (1-d)*weights after every step; averages about 1/(1-d) steps",
        min=0.0, max=1.0,
    )


class Ema(Averaging):
    name = "ema"
    title = "exponential moving average of the weights, fp32 on the training device"
    spec = "6.3"
    settings = EmaSettings
    toggle = "ema_enabled"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.ema_enabled:
            warn_inert(cfg, cls, [k for k in cls.knob_names() if k != cls.toggle], checks)
            return
        if cfg.ema_decay >= 1.0:
            checks.error(
                f"EMA_DECAY={cfg.ema_decay} never moves the average off the initial weights: "
                "use a value below 1 such as 0.997"
            )

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.shadow: dict[str, Tensor] | None = None
        self.updates = 0
        self.first_update_step: int | None = None
        self.last_update_step: int | None = None

    @torch.no_grad()
    def on_train_start(self, run: TrainingRun) -> None:
        self.shadow = {k: v.detach().to(dtype=torch.float32, copy=True) for k, v in float_state(run.model).items()}
        run.shared[self.name] = self.shadow

    @torch.no_grad()
    def after_step(self, progress: Progress, run: TrainingRun) -> None:
        if self.shadow is None:
            raise RuntimeError("EMA: after_step before on_train_start; the training loop must call on_train_start first")
        live = float_state(run.model)
        shadows = list(self.shadow.values())
        thetas = [live[k] if live[k].dtype == torch.float32 else live[k].float() for k in self.shadow]
        d = self.cfg.ema_decay
        # Two fused passes over all tensors instead of a Python loop per tensor: this runs every step.
        torch._foreach_mul_(shadows, d)
        torch._foreach_add_(shadows, thetas, alpha=1.0 - d)
        self.updates += 1
        if self.first_update_step is None:
            self.first_update_step = progress.step
        self.last_update_step = progress.step

    def end_of_training(self, run: TrainingRun, candidates: Candidates) -> None:
        if self.shadow is None or self.updates == 0:
            run.log("ema:no update was made (no training step ran); keeping the final weights")
            return
        candidates.offer(
            self.name, offered_state(run.model, self.shadow),
            applying=f"ema:applying EMA weights (decay={self.cfg.ema_decay}, updates={self.updates})",
        )

    def report(self) -> dict[str, Any]:
        first = next(iter(self.shadow.values()), None) if self.shadow else None
        return {
            "decay": self.cfg.ema_decay, "updates": self.updates,
            "first_update_step": self.first_update_step, "last_update_step": self.last_update_step,
            "shadow_dtype": None if first is None else str(first.dtype).removeprefix("torch."),
            "shadow_device": None if first is None else str(first.device),
            "shadow_tensors": 0 if self.shadow is None else len(self.shadow),
        }
