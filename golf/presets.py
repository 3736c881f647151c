"""Named overlays on the config defaults: technique stacks and scales (DESIGN.md contract 1).

A *stack* says which techniques are on and with which hyperparameters (``baseline`` is the
reference run and equals the defaults). A *scale* says how big the run is: ``full`` is the
challenge's (8xH100, 600 s), ``smoke`` shrinks every shape and step count so the same stack trains,
exports and evaluates in seconds on 2 CPU cores. A scale never changes a toggle.

``--preset smoke`` is shorthand for the baseline stack at smoke scale.
"""

from __future__ import annotations

from typing import Any

from golf.config import ConfigError, GolfConfig, field_spec, unknown_key_message

DEMO_DATA_PATH = "./data/datasets/demo_sp1024"
DEMO_TOKENIZER_PATH = "./data/tokenizers/demo_1024_bpe.model"

STACKS: dict[str, dict[str, Any]] = {
    # The reference train_gpt.py (R-2026-03-17_NaiveBaseline): the config defaults themselves.
    "baseline": {},
}

SCALES: dict[str, dict[str, Any]] = {
    "full": {},
    # Tiny shapes on the embedded demo corpus. No wallclock cap, so a smoke run is decided by its
    # step count and is reproducible seed for seed; every step-count knob shrinks with the run so
    # warmdown, momentum warmup, LAWA snapshots and validation still happen inside it.
    "smoke": {
        "data_path": DEMO_DATA_PATH,
        "tokenizer_path": DEMO_TOKENIZER_PATH,
        "num_layers": 4,
        "model_dim": 64,
        "num_heads": 4,
        "num_kv_heads": 2,
        "train_seq_len": 128,
        "train_batch_tokens": 4096,
        "val_batch_size": 16384,
        "val_max_tokens": 32768,
        "iterations": 40,
        "warmup_steps": 2,
        "warmdown_iters": 12,
        "muon_momentum_warmup_steps": 12,
        "max_wallclock_seconds": 0.0,
        "val_loss_every": 20,
        "train_log_every": 10,
        "lawa_interval": 2,
        "swa_every": 2,
        # Smoke matrices are far below the reference's 65,536-element float passthrough, so without
        # this the quantized formats (and QAT's effect on them) would never be exercised.
        "quant_keep_float_max_numel": 1024,
    },
}

# Shorthands accepted wherever a preset name is: name -> (stack, scale).
SHORTHANDS: dict[str, tuple[str, str]] = {"smoke": ("baseline", "smoke")}


def resolve_names(preset: str | None, scale: str | None) -> tuple[str, str]:
    """(stack, scale) for a preset name (or shorthand) and an optional scale, with clear errors."""
    preset = (preset or "baseline").strip()
    if preset in SHORTHANDS:
        stack, implied_scale = SHORTHANDS[preset]
        if scale and scale != implied_scale:
            raise ConfigError(
                f"preset {preset!r} already means scale {implied_scale!r} but scale {scale!r} was asked "
                f"for: use --preset {stack} --scale {scale}"
            )
        scale = implied_scale
    else:
        stack = preset
    if stack not in STACKS:
        raise ConfigError(
            f"unknown preset {preset!r}: choose one of {', '.join(sorted([*STACKS, *SHORTHANDS]))}"
        )
    scale = (scale or "full").strip()
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    return stack, scale


def preset_values(preset: str | None, scale: str | None) -> dict[str, Any]:
    """Field values (by field name) of a stack at a scale, over the defaults."""
    stack, scale = resolve_names(preset, scale)
    values: dict[str, Any] = {}
    for overlay in (STACKS[stack], SCALES[scale]):
        values.update(overlay)
    return values


def preset_names() -> list[str]:
    return sorted([*STACKS, *SHORTHANDS])


def _check_overlays() -> None:
    """Overlays name real fields with valid values (fails at import, so a typo cannot ship)."""
    known = {spec for spec in GolfConfig.__dataclass_fields__}
    for table in (STACKS, SCALES):
        for name, overlay in table.items():
            for key, value in overlay.items():
                if key not in known:
                    raise ConfigError(f"preset {name!r}: {unknown_key_message(key)}")
                field_spec(key).parse(value, f"preset {name!r}")


_check_overlays()
