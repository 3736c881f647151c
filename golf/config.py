"""Every knob of the golf pipeline, in one typed object (DESIGN.md contract 1).

A field's environment variable is the UPPER_SNAKE of its name; community spellings from the seed
PRs (techniques.md 10.7) are accepted as aliases, so ``QAT_ENABLED=1 torchrun -m golf.train`` and
``ENABLE_QAT=1 ...`` mean the same thing. Defaults are the reference run (the ``baseline`` stack);
presets and scales are overlays applied on top (see :mod:`golf.presets`).

Everything is validated before any compute: unknown keys get a did-you-mean, wrong types and
out-of-range values name the field and the fix, and incompatible combinations are reported
together so a sweep can reject a bad grid before its first trial starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from golf.contract import PRESET_ENV, SCALE_ENV
from golf.knobs import Checks, ConfigError, knob
from golf.quant.compress import codec_spec, missing_package
from golf.techniques import SECTIONS, TECHNIQUES



@dataclass(frozen=True)
class CoreSettings:
    """The pipeline's own knobs; each technique's knobs live in its module (golf.techniques)."""

    # --- run and data -------------------------------------------------------------------------
    data_path: str = knob(
        "./data/datasets/fineweb10B_sp1024",
        "folder holding fineweb_train_*.bin and fineweb_val_*.bin shards",
    )
    tokenizer_path: str = knob(
        "./data/tokenizers/fineweb_1024_bpe.model", "SentencePiece model used for byte accounting"
    )
    run_id: str = knob("", "name of the run; empty = a fresh timestamped id")
    run_dir: str = knob("", "where train.log, result.json and the artifact go; empty = runs/<RUN_ID>")
    seed: int = knob(1337, "seed for weights init and everything random")
    log_to_file: bool = knob(True, "also write the log to RUN_DIR/train.log (0 when a launcher tees stdout)")
    eval_only_from: str = knob(
        "", "a finished run's folder: skip training and evaluate the artifact it left (resume)"
    )

    # --- tokens and batches -------------------------------------------------------------------
    vocab_size: int = knob(1024, "vocabulary size; must equal the tokenizer's", min=2, max=65536)
    train_seq_len: int = knob(1024, "training sequence length in tokens", min=2)
    train_batch_tokens: int = knob(524_288, "tokens per optimizer step, all ranks together", min=1)
    grad_accum_steps: int = knob(
        0, "micro-steps per optimizer step; 0 = 8 / world size, as the reference", min=0
    )
    val_batch_size: int = knob(524_288, "validation tokens per forward pass, all ranks together", min=1)
    val_max_tokens: int = knob(0, "use only the first N validation tokens; 0 = the whole set", min=0)

    # --- model (techniques.md 1.3) --------------------------------------------------------------
    num_layers: int = knob(9, "transformer blocks", min=1)
    model_dim: int = knob(512, "residual width", min=2)
    num_heads: int = knob(8, "query heads", min=1)
    num_kv_heads: int = knob(4, "key/value heads (grouped-query attention)", min=1)
    mlp_mult: float = knob(2.0, "MLP hidden width as a multiple of model_dim", min=0.0)
    mlp_hidden_size: int = knob(
        0, "MLP hidden width in units, overriding MLP_MULT (#130 suggests 992); 0 = MLP_MULT x MODEL_DIM",
        aliases=("MLP_HIDDEN",), min=0,
    )
    tie_embeddings: bool = knob(True, "share the token embedding with the output head")
    rope_base: float = knob(10000.0, "rotary embedding base", min=1.0)
    logit_softcap: float = knob(30.0, "logits = c * tanh(z / c)", min=0.0)
    qk_gain_init: float = knob(1.5, "initial per-head query gain (inverse attention temperature)")
    tied_embed_init_std: float = knob(0.005, "std of the tied embedding's normal init", min=0.0)

    # --- optimizers (techniques.md 1.4) ---------------------------------------------------------
    embed_lr: float = knob(0.6, "Adam LR of the untied token embedding", min=0.0)
    head_lr: float = knob(0.008, "Adam LR of the untied output head", min=0.0)
    tied_embed_lr: float = knob(0.05, "Adam LR of the tied embedding", min=0.0)
    matrix_lr: float = knob(0.04, "Muon LR of the block matrices", min=0.0)
    scalar_lr: float = knob(0.04, "Adam LR of scalars, control tensors and skip weights", min=0.0)
    muon_momentum: float = knob(0.95, "Muon momentum after warmup", min=0.0, max=1.0)
    muon_backend_steps: int = knob(5, "Newton-Schulz iterations per Muon update", min=1)
    muon_momentum_warmup_start: float = knob(0.85, "Muon momentum at step 0", min=0.0, max=1.0)
    muon_momentum_warmup_steps: int = knob(500, "steps of linear momentum warmup; 0 = none", min=0)
    beta1: float = knob(0.9, "Adam beta1", min=0.0, max=1.0)
    beta2: float = knob(0.95, "Adam beta2", min=0.0, max=1.0)
    adam_eps: float = knob(1e-8, "Adam epsilon", min=0.0)
    grad_clip_norm: float = knob(0.0, "clip the global gradient norm to this; 0 = off", min=0.0)

    # --- schedule and timing (techniques.md 1.5) ------------------------------------------------
    iterations: int = knob(20000, "upper bound on optimizer steps", min=1)
    warmup_steps: int = knob(20, "compile/autotune steps whose effects are then undone", min=0)
    warmdown_iters: int = knob(1200, "linear LR decay over the last N (estimated) steps; 0 = none", min=0)
    max_wallclock_seconds: float = knob(600.0, "training time cap in seconds; 0 = no cap", min=0.0)
    eval_budget_seconds: float = knob(
        600.0, "evaluation time budget the final evaluations are totalled against (reported, not enforced)", min=0.0
    )
    val_loss_every: int = knob(1000, "validate every N steps (and at the last); 0 = only at the end", min=0)
    train_log_every: int = knob(200, "log train loss every N steps (and steps 1-10); 0 = never", min=0)

    # --- export (techniques.md 1.6, 2.1, 3.7) ---------------------------------------------------
    quant_format: str = knob(
        "int8", "export quantization: int8 (reference) or int6 for attention/MLP matrices",
        choices=("int8", "int6"),
    )
    compressor: str = knob(
        "zlib", "artifact compression codec, named in the artifact's header",
        aliases=("COMPRESSION",), choices=("zlib", "zstd", "lzma", "brotli"),
    )
    compressor_level: int = knob(
        0, "codec level (lzma: preset, brotli: quality); 0 = the codec's default: zlib 9, zstd 22, "
        "lzma 9|extreme, brotli 11", min=0,
    )
    byte_shuffle: int = knob(
        0, "byte-shuffle stride before compression (2 splits 16-bit values, as #1260); 0 = off", min=0,
    )
    quant_grid: str = knob(
        "relative", "int6 scale convention: relative (rowmax/31) or floored (max(rowmax/31, 1/31))",
        choices=("relative", "floored"),
    )
    quant_keep_float_max_numel: int = knob(
        65_536, "tensors with at most this many elements are stored as floats", min=0
    )
    code_wrapper: str = knob(
        "none", "the submitted train_gpt.py: none (plain, minified) or lzma_b85 (self-extracting, as #1260)",
        choices=("none", "lzma_b85"),
    )

    # --- runtime --------------------------------------------------------------------------------
    device: str = knob("auto", "auto (CUDA when present), cuda or cpu", choices=("auto", "cuda", "cpu"))
    torch_compile: str = knob(
        "auto", "torch.compile the model: auto (on CUDA only), 1 or 0", choices=("auto", "1", "0")
    )
    attention: str = knob(
        "auto", "attention kernel: auto (FlashAttention when importable on CUDA, else SDPA), flash, sdpa",
        choices=("auto", "flash", "sdpa"),
    )



@dataclass(frozen=True)
class GolfConfig(*reversed(SECTIONS), CoreSettings):  # fields: core first, then each technique's
    """Every knob: the core settings plus each registered technique's section."""

    def replace(self, **changes: Any) -> GolfConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_env(self) -> dict[str, str]:
        """Every field as its canonical environment variable (strings, booleans as 1/0)."""
        return {spec.env: spec.format(getattr(self, spec.name)) for spec in FIELD_SPECS}

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        if self.mlp_hidden_size > 0:
            return self.mlp_hidden_size
        return int(self.mlp_mult * self.model_dim)

    def grad_accum_for(self, world_size: int) -> int:
        if self.grad_accum_steps > 0:
            return self.grad_accum_steps
        return max(8 // world_size, 1)


@dataclass(frozen=True)
class FieldSpec:
    """How one config field is named, parsed, documented and checked."""

    name: str
    env: str
    aliases: tuple[str, ...]
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None
    min: float | None
    max: float | None

    def parse(self, raw: Any, source: str) -> Any:
        """Turn a string (or an already-typed value) into this field's type, or raise ConfigError."""
        where = f"{self.env}={raw!r} ({source})"
        if self.type is bool:
            value = _parse_bool(raw)
            if value is None:
                raise ConfigError(f"{where} is not a boolean: use 1 or 0 (true/false, yes/no, on/off)")
        elif self.type is int:
            value = _parse_int(raw)
            if value is None:
                raise ConfigError(f"{where} is not an integer: use a whole number such as {self.default}")
        elif self.type is float:
            value = _parse_float(raw)
            if value is None:
                raise ConfigError(f"{where} is not a number: use a value such as {self.default}")
        else:
            value = str(raw).strip()
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where} is not one of {', '.join(self.choices)}: pick one of those")
        if self.min is not None and value < self.min:
            raise ConfigError(f"{where} is below the minimum {_num(self.min)}: use a value >= {_num(self.min)}")
        if self.max is not None and value > self.max:
            raise ConfigError(f"{where} is above the maximum {_num(self.max)}: use a value <= {_num(self.max)}")
        return value

    def format(self, value: Any) -> str:
        if self.type is bool:
            return "1" if value else "0"
        return str(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _parse_bool(raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    return None


def _parse_int(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    text = str(raw).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:  # accept "1e3" or "4.0" when they are whole numbers
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def _parse_float(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    try:
        value = float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _build_specs() -> tuple[FieldSpec, ...]:
    hints = {"str": str, "int": int, "float": float, "bool": bool}
    specs = []
    for f in dataclasses.fields(GolfConfig):
        meta = f.metadata
        specs.append(
            FieldSpec(
                name=f.name,
                env=f.name.upper(),
                aliases=tuple(meta["aliases"]),
                type=hints[f.type] if isinstance(f.type, str) else f.type,
                default=f.default,
                help=meta["help"],
                choices=meta["choices"],
                min=meta["min"],
                max=meta["max"],
            )
        )
    return tuple(specs)


FIELD_SPECS: tuple[FieldSpec, ...] = _build_specs()
_BY_KEY: dict[str, FieldSpec] = {}
for _spec in FIELD_SPECS:
    for _key in (_spec.env, _spec.name, *_spec.aliases):
        _BY_KEY[_key.upper()] = _spec


def field_spec(key: str) -> FieldSpec:
    """The field a key names (env name, field name or alias, any case), or ConfigError with a hint."""
    spec = _BY_KEY.get(key.strip().upper())
    if spec is None:
        raise ConfigError(unknown_key_message(key))
    return spec


def unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key.strip().upper(), list(_BY_KEY), n=3, cutoff=0.6)
    canon = list(dict.fromkeys(_BY_KEY[c].env for c in close))  # best match first, no repeats
    hint = f"; did you mean {' or '.join(canon)}?" if canon else ""
    return f"unknown config key {key!r}{hint} (`golf train --list-config` lists every key)"


def parse_overrides(overrides: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Typed values by field name for {key: value}; every bad key or value is reported at once."""
    parsed: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    for key, raw in overrides.items():
        try:
            spec = field_spec(key)
            value = spec.parse(raw, source)
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        if spec.name in parsed and parsed[spec.name] != value:
            problems.append(
                f"{origin[spec.name]} and {key} ({source}) both set {spec.env} to different values: "
                "set it only once"
            )
            continue
        parsed[spec.name] = value
        origin[spec.name] = key
    if problems:
        raise ConfigError(problems)
    return parsed


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The config values an environment sets (canonical names and aliases)."""
    present = {k: v for k, v in environ.items() if k in _ENV_KEYS}
    return parse_overrides(present, "environment")


_ENV_KEYS = frozenset(k for spec in FIELD_SPECS for k in (spec.env, *spec.aliases))


def near_miss_env_keys(environ: Mapping[str, str]) -> list[str]:
    """Environment variables that look like misspelt config keys (warned about, not fatal)."""
    notes = []
    known = sorted(_ENV_KEYS)
    for key in environ:
        if key in _ENV_KEYS or not key.isupper():
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.88)
        if close:
            notes.append(f"environment variable {key} is not a golf setting and is ignored; did you mean {close[0]}?")
    return notes


def resolve(
    preset: str | None = None,
    scale: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> GolfConfig:
    """Defaults < preset < scale < environment < explicit overrides, parsed and range-checked.

    Cross-field checks that depend on the world size are in :func:`validate`.
    """
    from golf.presets import preset_values  # presets import this module

    values = preset_values(preset, scale)
    if environ is not None:
        values.update(env_overrides(environ))
    if overrides:
        values.update(parse_overrides(overrides, "override"))
    return GolfConfig(**values)


def config_from_env(environ: Mapping[str, str] | None = None) -> tuple[GolfConfig, str, str]:
    """The config a torchrun rank runs with: GOLF_PRESET / GOLF_SCALE plus every setting in the env.

    Returns (config, preset name, scale name).
    """
    from golf.presets import resolve_names

    env = os.environ if environ is None else environ
    stack, scale = resolve_names(env.get(PRESET_ENV) or None, env.get(SCALE_ENV) or None)
    return resolve(stack, scale, environ=env), stack, scale


def validate(
    cfg: GolfConfig, world_size: int = 1, *, check_runtime: bool = True, baseline: GolfConfig | None = None
) -> list[str]:
    """Cross-field checks: raises ConfigError listing every problem with its fix; returns the
    warnings (settings that have no effect), which the run logs once and keeps in result.json.

    ``baseline`` is the config of the run's preset and scale alone (``resolve(stack, scale)``):
    only settings that differ from it are warned about; without it, from the defaults.

    ``check_runtime`` also checks that the machine can honour the choice (zstandard installed,
    FlashAttention importable when forced). A sweep driver on a CPU head node passes False for the
    checks that only the GPU workers can answer.
    """
    checks = Checks(baseline=baseline)
    _core_checks(cfg, world_size, checks)
    _export_checks(cfg, checks)
    for technique in TECHNIQUES:
        technique.check(cfg, world_size, checks)
    if check_runtime:
        _runtime_checks(cfg, checks)
    if checks.errors:
        raise ConfigError(checks.errors)
    return checks.warnings


def _core_checks(cfg: GolfConfig, world_size: int, checks: Checks) -> None:
    if cfg.model_dim % cfg.num_heads:
        checks.error(
            f"MODEL_DIM={cfg.model_dim} is not divisible by NUM_HEADS={cfg.num_heads}: "
            "pick a head count that divides the width"
        )
    elif cfg.head_dim % 2:
        checks.error(
            f"head dim MODEL_DIM/NUM_HEADS = {cfg.head_dim} is odd; rotary embeddings need an even "
            "head dim: change MODEL_DIM or NUM_HEADS"
        )
    if cfg.num_heads % cfg.num_kv_heads:
        checks.error(
            f"NUM_HEADS={cfg.num_heads} is not a multiple of NUM_KV_HEADS={cfg.num_kv_heads}: "
            "grouped-query attention needs whole groups"
        )
    if cfg.mlp_hidden < 1:
        checks.error(f"MLP_MULT={cfg.mlp_mult} gives an empty MLP at MODEL_DIM={cfg.model_dim}")
    if cfg.mlp_hidden_size > 0 and cfg.mlp_mult != reference_value(checks, "mlp_mult"):
        checks.warn(
            f"MLP_MULT={cfg.mlp_mult} has no effect while MLP_HIDDEN={cfg.mlp_hidden_size} sets the "
            "width: drop one of them"
        )
    if world_size < 1:
        checks.error(f"world size {world_size} must be at least 1")
    else:
        checks.errors.extend(_batch_problems(cfg, world_size))
    # Knobs of the embedding/head that the other tying choice never reads.
    inert = ("embed_lr", "head_lr") if cfg.tie_embeddings else ("tied_embed_lr", "tied_embed_init_std")
    for name in inert:
        spec = field_spec(name)
        if getattr(cfg, name) != reference_value(checks, name):
            checks.warn(
                f"{spec.env}={spec.format(getattr(cfg, name))} has no effect with "
                f"TIE_EMBEDDINGS={int(cfg.tie_embeddings)}: drop it or set TIE_EMBEDDINGS={int(not cfg.tie_embeddings)}"
            )


def reference_value(checks: Checks, name: str) -> Any:
    """What a setting is before the user's changes: the preset/scale's value, else the default."""
    return getattr(checks.baseline, name) if checks.baseline is not None else field_spec(name).default


def _export_checks(cfg: GolfConfig, checks: Checks) -> None:
    """The codec settings name a codec that exists, with a level and stride it accepts."""
    try:
        codec_spec(cfg.compressor, cfg.compressor_level, cfg.byte_shuffle)
    except ValueError as exc:
        checks.error(
            f"COMPRESSOR={cfg.compressor} COMPRESSOR_LEVEL={cfg.compressor_level} "
            f"BYTE_SHUFFLE={cfg.byte_shuffle}: {exc}"
        )


def _runtime_checks(cfg: GolfConfig, checks: Checks) -> None:
    package = missing_package(cfg.compressor)
    if package:
        checks.error(
            f"COMPRESSOR={cfg.compressor} needs the {package} package, which is not installed: "
            f"pip install {package} (or choose COMPRESSOR=zlib)"
        )
    if cfg.attention == "flash" and importlib.util.find_spec("flash_attn") is None and importlib.util.find_spec("flash_attn_interface") is None:
        checks.error(
            "ATTENTION=flash but FlashAttention is not importable: "
            'pip install --no-build-isolation -e ".[gpu]", or use ATTENTION=auto'
        )


def _batch_problems(cfg: GolfConfig, world_size: int) -> list[str]:
    problems = []
    accum = cfg.grad_accum_for(world_size)
    if cfg.grad_accum_steps == 0 and 8 % world_size:
        problems.append(
            f"world size {world_size} does not divide 8, so the reference's grad accumulation "
            "(8 / world size) is not whole: set GRAD_ACCUM_STEPS explicitly"
        )
        return problems
    per_micro = world_size * accum
    if cfg.train_batch_tokens % per_micro:
        problems.append(
            f"TRAIN_BATCH_TOKENS={cfg.train_batch_tokens} is not divisible by world size x grad "
            f"accumulation = {world_size} x {accum}: use a multiple of {per_micro * cfg.train_seq_len}"
        )
    elif (cfg.train_batch_tokens // per_micro) % cfg.train_seq_len:
        problems.append(
            f"TRAIN_BATCH_TOKENS={cfg.train_batch_tokens} gives {cfg.train_batch_tokens // per_micro} "
            f"tokens per rank and micro-step, not a multiple of TRAIN_SEQ_LEN={cfg.train_seq_len}: "
            f"use a multiple of {per_micro * cfg.train_seq_len}"
        )
    if cfg.val_batch_size // per_micro < cfg.train_seq_len:
        problems.append(
            f"VAL_BATCH_SIZE={cfg.val_batch_size} gives less than one sequence per rank: use at "
            f"least {per_micro * cfg.train_seq_len}"
        )
    if cfg.val_max_tokens and cfg.val_max_tokens <= cfg.train_seq_len:
        problems.append(
            f"VAL_MAX_TOKENS={cfg.val_max_tokens} is not more than one sequence "
            f"(TRAIN_SEQ_LEN={cfg.train_seq_len}): raise it or use 0 for the whole set"
        )
    return problems


def describe_fields() -> str:
    """A table of every key: env name, aliases, default and meaning (for --list-config)."""
    rows = []
    for spec in FIELD_SPECS:
        names = spec.env + (f" (alias {', '.join(spec.aliases)})" if spec.aliases else "")
        allowed = f" [{'|'.join(spec.choices)}]" if spec.choices else ""
        rows.append(f"{names:<40} default {spec.format(spec.default)!s:<36} {spec.help}{allowed}")
    return "\n".join(rows)
