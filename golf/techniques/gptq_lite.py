"""GPTQ-lite (techniques.md 3.3): a per-row clip search at export, no training cost.

Every per-row integer matrix the export stores tries the candidate clips (``GPTQ_LITE_CLIPS``:
#635's quantiles {0.999 ... 1.0} of |w|, or #137's fractions {0.85 ... 1.0} of max |w|) and each
row keeps the one with the smallest reconstruction error; round-to-nearest's own codes are a
candidate too, so no row gets worse. Codes another technique already supplied (GPTQ) are left alone.

With QAT on, the weights were trained to sit on round-to-nearest's grid, so a clipped row usually
loses; the report says how many rows moved and the error against round-to-nearest (techniques.md 9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from golf.knobs import Checks, knob
from golf.quant.export import quantize_tensor
from golf.quant.gptq import CLIP_CANDIDATES, clip_search_codes
from golf.quant.policy import Codes, TensorFormat
from golf.techniques.base import Technique, warn_inert

if TYPE_CHECKING:
    from golf.config import GolfConfig


@dataclass(frozen=True)
class GptqLiteSettings:
    gptq_lite: bool = knob(False, "per-row clip search at export (#635's GPTQ-lite; zero training cost)")
    gptq_lite_clips: str = knob(
        "percentiles", "candidate clips: percentiles (#635: quantiles 0.999..1.0 of |w|) or factors "
        "(#137: 0.85..1.0 x max|w|)", choices=tuple(CLIP_CANDIDATES),
    )


class GptqLite(Technique):
    name = "gptq_lite"
    title = "GPTQ-lite: per-row clip search over candidate clip values at export"
    spec = "3.3"
    settings = GptqLiteSettings
    toggle = "gptq_lite"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.gptq_lite:
            warn_inert(cfg, cls, ["gptq_lite_clips"], checks)

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.tensors = 0
        self.rows = 0
        self.rows_changed = 0
        self.sq_err = 0.0
        self.rtn_sq_err = 0.0

    def quantized_codes(self, name: str, tensor: Tensor, fmt: TensorFormat, proposed: Codes | None) -> Codes | None:
        if proposed is not None or tensor.ndim != 2:
            return None
        mode = self.cfg.gptq_lite_clips
        # The baseline is what the export would store without the search (absmax or percentile rows).
        q_rtn, s_rtn = quantize_tensor(name, tensor, fmt)
        found = clip_search_codes(tensor, fmt.bits, fmt.grid, CLIP_CANDIDATES[mode], mode, (q_rtn, s_rtn))
        w = tensor.detach().float()
        self.tensors += 1
        self.rows += int(found.chosen.numel())
        self.rows_changed += int((found.chosen >= 0).sum())
        self.sq_err += float((w - found.q.float() * found.scale.float().unsqueeze(-1)).square().sum())
        self.rtn_sq_err += float((w - q_rtn.float() * s_rtn.float().unsqueeze(-1)).square().sum())
        return Codes(found.q, found.scale, "gptq_lite")

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clips": self.cfg.gptq_lite_clips, "tensors": self.tensors, "rows": self.rows,
            "rows_clipped": self.rows_changed, "weight_sq_err": self.sq_err, "rtn_weight_sq_err": self.rtn_sq_err,
        }
        if self.cfg.qat_enabled:
            out["qat_interaction"] = (
                "QAT trained these weights for round-to-nearest; the clip search kept round-to-nearest's codes "
                f"in {self.rows - self.rows_changed} of {self.rows} rows (weight error {self.sq_err:.6g} vs "
                f"round-to-nearest {self.rtn_sq_err:.6g})"
            )
        return out
