"""A byte target for the submission (issue 10; techniques.md 3.5-3.6): ``TARGET_BYTES`` is the
most the artifact plus the code may weigh, and it never fails silently.

The export packs the artifact as configured; if it is over, it drops one bit from the least
sensitive per-row integer tensors (int6 -> int5: the mixed allocation), then prunes the cheapest
+-1 codes (``TARGET_PRUNE``), each step the smallest that fits (:func:`golf.quant.target.pack_to_target`).
Sensitivity is trace(H) when GPTQ collected Hessians (#1260; only its matrices are then narrowed),
else a documented proxy (:func:`golf.quant.target.proxy_sensitivity`). The log and the report say
which tensors dropped a bit and what was pruned. A target no step reaches stops the run with the
shortfall before evaluation: the artifact and train_state are written first, so nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from golf.knobs import Checks, knob
from golf.model.roles import RoleMap
from golf.quant.target import FitOutcome, droppable, pack_to_target, proxy_sensitivity
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.compress import CodecSpec
    from golf.quant.export import ExportStats
    from golf.quant.policy import ExportPolicy


@dataclass(frozen=True)
class TargetBytesSettings:
    target_bytes: int = knob(
        0, "the most artifact + code may weigh (the cap is 16000000); the export drops bits and prunes to "
        "fit, or stops with the shortfall; 0 = no target", min=0,
    )
    target_min_bits: int = knob(5, "TARGET_BYTES: never narrow a tensor below this width", min=2, max=8)
    target_prune: bool = knob(True, "TARGET_BYTES: prune the cheapest +-1 codes when narrowing is not enough")


class TargetBytes(Technique):
    name = "target_bytes"
    title = "byte target: narrow the least sensitive tensors, then prune +-1 codes, or stop with the shortfall"
    spec = "3.5-3.6"
    settings = TargetBytesSettings
    toggle = None

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cfg.target_bytes > 0

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if cfg.target_bytes <= 0:
            from golf.config import reference_value

            for name in ("target_min_bits", "target_prune"):
                if getattr(cfg, name) != reference_value(checks, name):
                    checks.warn(f"{name.upper()}={getattr(cfg, name)} has no effect while TARGET_BYTES=0: "
                                "set TARGET_BYTES or drop it")

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.outcome: FitOutcome | None = None
        self.code_bytes = 0
        self.sensitivity_source = ""

    def export_artifact(self, run: TrainingRun, state: dict[str, Tensor], roles: RoleMap, policy: ExportPolicy,
                        codec: CodecSpec, code_bytes: int) -> tuple[bytes, ExportStats] | None:
        cfg = self.cfg
        self.code_bytes = code_bytes
        candidates = droppable(state, roles, policy, cfg.target_min_bits)
        traces = run.shared.get("hessian_trace")
        if traces:
            sensitivity = {name: traces[name] for name in candidates if name in traces}
            self.sensitivity_source = "trace_h"
        else:
            sensitivity = {name: proxy_sensitivity(state[name]) for name in candidates}
            self.sensitivity_source = "proxy_rowmax2"
        order = sorted(sensitivity, key=lambda name: (sensitivity[name], name))
        budget = cfg.target_bytes - code_bytes
        outcome = pack_to_target(state, roles, policy, codec, budget, order,
                                 min_bits=cfg.target_min_bits, allow_prune=cfg.target_prune)
        self.outcome = outcome
        stats = outcome.stats
        stats.target = {"target_bytes": cfg.target_bytes, "code_bytes": code_bytes,
                        "sensitivity": self.sensitivity_source, **outcome.as_dict()}
        total = len(outcome.blob) + code_bytes
        shown = ",".join(outcome.dropped[:8]) + (f",+{len(outcome.dropped) - 8} more" if len(outcome.dropped) > 8 else "")
        run.log(f"target_bytes:{cfg.target_bytes} total:{total} fits:{outcome.shortfall == 0} "
                f"dropped_bit:{len(outcome.dropped)}[{shown}] prune_pm1_frac:{outcome.prune_frac:.4f} "
                f"pruned_codes:{outcome.pruned_codes} probes:{outcome.probes}")
        if outcome.shortfall:
            steps = f"every droppable tensor ({len(outcome.dropped)}) at one bit less"
            if cfg.target_prune:
                steps += " and every +-1 code pruned"
            stats.target["shortfall_message"] = (
                f"TARGET_BYTES={cfg.target_bytes} cannot be met: the smallest artifact found ({steps}) is "
                f"{len(outcome.blob)} model + {code_bytes} code = {total} bytes, {outcome.shortfall} over; "
                "the artifact and train_state are written; raise TARGET_BYTES, lower TARGET_MIN_BITS or "
                "shrink the model"
            )
        return outcome.blob, stats

    def report(self) -> dict[str, Any]:
        if self.outcome is None:
            return {"target_bytes": self.cfg.target_bytes}
        return {"target_bytes": self.cfg.target_bytes, "code_bytes": self.code_bytes,
                "sensitivity": self.sensitivity_source, **self.outcome.as_dict()}
