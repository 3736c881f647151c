"""Size feasibility of a sweep before any trial starts (issue 12, item 2).

Each golf config of a plan gets its artifact bytes predicted from the config alone
(:func:`golf.quant.sizing.predict_artifact_bytes`). A config is refused when even the low end of
its interval is over the challenge's limit: competitors tune configs to within a few tenths of a
percent under 16,000,000 bytes, so refusing on the point estimate would turn away exactly the
configs that records are made of whenever the estimate errs high; the interval's low end is over
the limit only for a config that cannot fit. A config whose interval straddles the limit runs, with
a warning. ``--allow-over-limit`` runs refused configs anyway.
"""

from __future__ import annotations

from collections.abc import Mapping

from golf.config import resolve
from golf.quant.sizing import SizePrediction, predict_artifact_bytes

from sweeps.spec import SweepPlan


def predict_plan_sizes(plan: SweepPlan) -> dict[str, SizePrediction | str]:
    """Each config's predicted artifact bytes by label, or why it could not be predicted (the
    plan shows that, and the sweep runs: a predictor's gap never blocks a valid sweep); empty for
    a competitor's script."""
    if not plan.is_golf:
        return {}
    sizes: dict[str, SizePrediction | str] = {}
    for label, variant in zip(plan.labels, plan.variants):
        cfg = resolve(plan.stack, plan.scale, overrides={**plan.fixed_env, **variant})
        try:
            sizes[label] = predict_artifact_bytes(cfg, plan.stack, plan.scale)
        except Exception as err:  # the model or a technique could not be built on the meta device
            sizes[label] = f"not predicted ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
    return sizes


def _predicted(sizes: Mapping[str, SizePrediction | str]) -> dict[str, SizePrediction]:
    return {label: size for label, size in sizes.items() if isinstance(size, SizePrediction)}


def over_limit_problems(sizes: Mapping[str, SizePrediction | str], *, allowed: bool = False) -> list[str]:
    """One line per config that cannot fit: its predicted bytes, and the fix (or, ``allowed``, that
    it runs anyway)."""
    problems = []
    for label, size in _predicted(sizes).items():
        if size.surely_over_limit and not _fitted_at_export(size):
            what = (f"config {label}: predicted {size.total:,} bytes (interval {size.low:,}-{size.high:,}), "
                    f"over the {size.limit:,}-byte limit even at the interval's low end")
            problems.append(f"{what}: running it anyway (--allow-over-limit)" if allowed else
                            f"{what}: make it smaller (fewer layers, a narrower MLP, int6/int5 export, a "
                            f"stronger COMPRESSOR, or TARGET_BYTES={size.limit}), or pass --allow-over-limit "
                            "to run it anyway")
    return problems


def over_limit_warnings(sizes: Mapping[str, SizePrediction | str]) -> list[str]:
    """Configs whose interval straddles the limit: they run, but may end over it."""
    return [f"config {label}: predicted {size.total:,} bytes, interval {size.low:,}-{size.high:,} reaches "
            f"over the {size.limit:,}-byte limit: it may end over it"
            for label, size in _predicted(sizes).items()
            if size.high > size.limit and not size.surely_over_limit and not _fitted_at_export(size)]


def _fitted_at_export(size: SizePrediction) -> bool:
    # TARGET_BYTES narrows and prunes the artifact at export until it fits (or stops the run
    # before evaluation, naming the shortfall): the prediction as configured does not decide it.
    return 0 < size.target_bytes <= size.limit
