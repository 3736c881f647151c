"""Which weights training ends with: the raw ones or an average (techniques.md 6.4).

The averaging techniques (LAWA, EMA, SWA) each offer their weights; this technique loads one.
``AVG_USE=auto`` takes the offer of the last averaging technique in registry order that made one
(SWA over EMA over LAWA), ``raw`` keeps the weights training ended with, a name takes that
technique's offer. ``AVG_SELECT_BY_VAL=1`` instead scores the raw weights and every offer on the
validation set and keeps the lowest val_bpb, as #137 and #635 do: a model choice made on the
validation set (mild test-set selection, and extra evaluation time), so it is off by default,
says so in the log, and with it off no candidate is ever evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from golf.knobs import Checks, knob
from golf.techniques.averaging import averaging_techniques
from golf.techniques.base import Candidates, Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig

AVG_USE_CHOICES = ("auto", "raw", "lawa", "ema", "swa")


@dataclass(frozen=True)
class WeightChoiceSettings:
    avg_use: str = knob(
        "auto", "final weights: auto (the last averaging technique that offered: swa, else ema, else lawa), "
        "raw, or the named average", choices=AVG_USE_CHOICES,
    )
    avg_select_by_val: bool = knob(
        False, "choose the final weights (raw or an average) by their val_bpb on the VALIDATION set",
    )


class WeightChoice(Technique):
    name = "weight_choice"
    title = "choose the final weights among raw and the averages (by rule, or by validation score behind a flag)"
    spec = "6.4"
    settings = WeightChoiceSettings
    toggle = None
    always_on = True

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        from golf.config import field_spec

        averaging = averaging_techniques()
        on = [t for t in averaging if t.is_enabled(cfg)]
        switches = ", ".join(field_spec(t.toggle).env for t in averaging if t.toggle)
        if cfg.avg_use not in ("auto", "raw"):
            named = next(t for t in averaging if t.name == cfg.avg_use)
            if not named.is_enabled(cfg):
                switch = field_spec(named.toggle).env
                checks.error(f"AVG_USE={cfg.avg_use} but {switch}=0, so there is no {cfg.avg_use} average: "
                             f"set {switch}=1 or AVG_USE=auto")
        elif cfg.avg_use == "raw" and not on:
            checks.warn(f"AVG_USE=raw has no effect while no weight averaging is on ({switches} all 0): drop AVG_USE")
        if cfg.avg_select_by_val and not on:
            checks.warn(f"AVG_SELECT_BY_VAL=1 has nothing to choose while no weight averaging is on "
                        f"({switches} all 0): turn one on or drop AVG_SELECT_BY_VAL")
        elif cfg.avg_select_by_val and cfg.avg_use != "auto":
            checks.warn(f"AVG_USE={cfg.avg_use} has no effect with AVG_SELECT_BY_VAL=1 (the lowest validation "
                        "val_bpb is kept): drop AVG_USE or AVG_SELECT_BY_VAL")

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.offered: list[str] = []
        self.chosen = "raw"
        self.scores: dict[str, dict[str, float]] = {}

    def end_of_training(self, run: TrainingRun, candidates: Candidates) -> None:
        self.offered = list(candidates.offered)
        if self.cfg.avg_select_by_val:
            self._select_by_validation(run, candidates)
            return
        use = self.cfg.avg_use
        if use == "auto":
            use = self.offered[-1] if self.offered else "raw"
        if use == "raw":
            return
        if use not in candidates.offered:
            run.log(f"avg_use:{use} offered no weights; keeping the final weights")
            return
        self._apply(use, candidates.offered[use], run, candidates)

    def _select_by_validation(self, run: TrainingRun, candidates: Candidates) -> None:
        if not self.offered:
            run.log("avg_select_by_val: no averaged weights were offered; keeping the final weights without evaluating")
            return
        run.log(f"avg_select_by_val:1 choosing the final weights by their val_bpb on the VALIDATION set "
                f"(a model choice made on validation data) among raw, {', '.join(self.offered)}")
        states: dict[str, dict[str, Tensor]] = {"raw": candidates.raw(), **candidates.offered}
        for name, state in states.items():
            result = candidates.score(name, state)
            self.scores[name] = {"val_loss": result.val_loss, "val_bpb": result.val_bpb}
            run.log(f"avg_select_by_val:{name} val_loss:{result.val_loss:.8f} val_bpb:{result.val_bpb:.8f} "
                    f"eval_time:{1000 * result.seconds:.0f}ms")
        best = min(states, key=lambda name: self.scores[name]["val_bpb"])  # ties keep the earlier: raw first
        run.log(f"Using {best} weights (val_bpb={self.scores[best]['val_bpb']:.4f})")
        # Scoring loaded each candidate in turn, so the raw weights too must be loaded back explicitly.
        self._apply(best, states[best], run, candidates)

    def _apply(self, name: str, state: dict[str, Tensor], run: TrainingRun, candidates: Candidates) -> None:
        if name != "raw":
            run.log(candidates.applying[name])
        candidates.use(name, state)
        self.chosen = name

    def report(self) -> dict[str, Any]:
        return {
            "use": self.cfg.avg_use, "select_by_val": self.cfg.avg_select_by_val,
            "offered": list(self.offered), "chosen": self.chosen,
            **({"val_scores": dict(self.scores)} if self.scores else {}),
        }
