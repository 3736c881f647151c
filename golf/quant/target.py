"""Fitting the artifact under a byte target (techniques.md 3.5-3.6, issue 10: "a byte target
never fails silently").

:func:`pack_to_target` packs the artifact as configured; if it is over its budget it takes, in this
order, the smallest step that fits:

1. drop one bit (int6 -> int5, ...) from the per-row integer tensors, least sensitive first, down to
   ``min_bits``: the smallest number of tensors that fits (binary search; every probe is a real
   pack, so the size is measured, never estimated);
2. with every droppable tensor dropped, prune the cheapest fraction of the +-1 codes of every
   per-row tensor (:func:`golf.quant.pruning.prune_pm1_codes`), the smallest fraction that fits;
3. otherwise report the shortfall: the caller stops the run before evaluation.

The outcome says exactly what was done (which tensors dropped a bit, the pruned fraction and count)
and the artifact returned is always the last real pack, whose size it reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor

from golf.model.roles import ParamRole
from golf.quant.compress import CodecSpec
from golf.quant.export import ExportStats, export_formats, pack_artifact, quantize_tensor
from golf.quant.policy import Codes, ExportPolicy, TensorFormat
from golf.quant.pruning import prune_pm1_codes

PRUNE_SEARCH_STEPS = 10
"""Bisection steps on the pruned fraction: resolution 1/1024 of the +-1 codes."""


@dataclass
class FitOutcome:
    blob: bytes
    stats: ExportStats
    budget: int
    """Model bytes allowed (the target less the code bytes)."""
    dropped: list[str] = field(default_factory=list)
    """Tensors stored one bit narrower than configured, least sensitive first."""
    prune_frac: float = 0.0
    pruned_codes: int = 0
    probes: int = 0
    """Packs made to find the fit."""

    @property
    def shortfall(self) -> int:
        """Bytes over the budget of the smallest artifact found (0 when it fits)."""
        return max(len(self.blob) - self.budget, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget_model_bytes": self.budget, "model_bytes": len(self.blob), "shortfall": self.shortfall,
            "dropped_bit": list(self.dropped), "prune_pm1_frac": self.prune_frac,
            "pruned_codes": self.pruned_codes, "probes": self.probes,
        }


def droppable(state: Mapping[str, Tensor], roles: Mapping[str, ParamRole], policy: ExportPolicy,
              min_bits: int) -> dict[str, TensorFormat]:
    """The per-row integer tensors wider than ``min_bits``: those a bit can be taken from."""
    formats = export_formats(state, roles, policy)
    return {name: fmt for name, fmt in formats.items()
            if fmt.kind == "int" and fmt.scheme == "per_row" and fmt.bits > min_bits}


def proxy_sensitivity(w: Tensor) -> float:
    """Where no Hessian is known: ``cols * sum_r rowmax_r^2``, the scale of a per-row grid's squared
    error (its step is ``rowmax / c``), so a bit is taken first where the absolute error added is least."""
    rows = w.detach().float().reshape(-1, w.shape[-1])
    return float(rows.abs().amax(dim=-1).square().sum() * rows.shape[-1])


def pack_to_target(
    state: Mapping[str, Tensor], roles: Mapping[str, ParamRole], policy: ExportPolicy, codec: CodecSpec,
    budget: int, order: Sequence[str], *, min_bits: int = 5, allow_prune: bool = True,
) -> FitOutcome:
    """The artifact of ``state`` under ``budget`` model bytes if any step above reaches it, else the
    smallest one tried; ``order``: the droppable tensors (:func:`droppable`), least sensitive first."""
    probes = 0
    pruned = {"count": 0}

    def pack(k: int, frac: float) -> tuple[bytes, ExportStats]:
        nonlocal probes
        probes += 1
        drop = set(order[:k])

        def narrower(name: str, t: Tensor, role: ParamRole, proposed: TensorFormat) -> TensorFormat | None:
            if name in drop and proposed.kind == "int" and proposed.bits > min_bits:
                return replace(proposed, bits=proposed.bits - 1)
            return None

        def prune(name: str, t: Tensor, fmt: TensorFormat, proposed: Codes | None) -> Codes | None:
            if t.ndim != 2:
                return None
            if proposed is None:
                q, s = quantize_tensor(name, t, fmt)
                proposed = Codes(q, s, "rtn")
            q, count = prune_pm1_codes(proposed.q, proposed.scale, frac)
            pruned["count"] += count
            return Codes(q, proposed.scale, f"{proposed.method}+prune_pm1")

        pruned["count"] = 0
        fitted = replace(policy, overrides=(*policy.overrides, narrower),
                         coders=(*policy.coders, prune) if frac > 0 else policy.coders)
        return pack_artifact(state, roles, fitted, codec)

    def outcome(k: int, frac: float, packed: tuple[bytes, ExportStats]) -> FitOutcome:
        return FitOutcome(packed[0], packed[1], budget, list(order[:k]), frac, pruned["count"] if frac else 0, probes)

    packed = pack(0, 0.0)
    if len(packed[0]) <= budget:
        return outcome(0, 0.0, packed)
    k_all = len(order)
    packed_all = pack(k_all, 0.0) if order else packed
    if len(packed_all[0]) <= budget:
        lo, hi = 1, k_all  # the smallest number of narrower tensors that fits lies in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            if len(pack(mid, 0.0)[0]) <= budget:
                hi = mid
            else:
                lo = mid + 1
        return outcome(hi, 0.0, pack(hi, 0.0))
    if not allow_prune:
        return outcome(k_all, 0.0, packed_all)
    packed_max = pack(k_all, 1.0)
    if len(packed_max[0]) > budget:
        return outcome(k_all, 1.0, packed_max)
    lo, hi = 0.0, 1.0  # hi fits, lo does not
    for _ in range(PRUNE_SEARCH_STEPS):
        mid = (lo + hi) / 2
        if len(pack(k_all, mid)[0]) <= budget:
            hi = mid
        else:
            lo = mid
    return outcome(k_all, hi, pack(k_all, hi))
