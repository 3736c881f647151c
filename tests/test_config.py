"""Config and presets (DESIGN.md contract 1): env names, aliases, parsing, validation, overlays."""

from __future__ import annotations

import pytest

from golf.config import (
    FIELD_SPECS, ConfigError, GolfConfig, config_from_env, field_spec, near_miss_env_keys, resolve, validate,
)
from golf.presets import SCALES, STACKS, preset_values, resolve_names


def test_defaults_are_the_reference_run():
    cfg = resolve("baseline")
    assert (cfg.num_layers, cfg.model_dim, cfg.num_heads, cfg.num_kv_heads) == (9, 512, 8, 4)
    assert (cfg.train_batch_tokens, cfg.train_seq_len, cfg.iterations) == (524_288, 1024, 20000)
    assert (cfg.matrix_lr, cfg.scalar_lr, cfg.tied_embed_lr) == (0.04, 0.04, 0.05)
    assert (cfg.warmdown_iters, cfg.warmup_steps, cfg.max_wallclock_seconds) == (1200, 20, 600.0)
    assert (cfg.quant_format, cfg.compressor) == ("int8", "zlib")
    assert cfg == GolfConfig()


def test_every_field_has_an_upper_snake_env_name_and_help():
    for spec in FIELD_SPECS:
        assert spec.env == spec.name.upper()
        assert spec.help, spec.name
    assert len({s.env for s in FIELD_SPECS}) == len(FIELD_SPECS)


def test_env_round_trip_reproduces_the_config():
    cfg = resolve("smoke", overrides={"QAT_ENABLED": 1, "QUANT_FORMAT": "int6", "SEED": 7})
    again, stack, scale = config_from_env({**cfg.to_env(), "GOLF_PRESET": "baseline", "GOLF_SCALE": "smoke"})
    assert again == cfg and (stack, scale) == ("baseline", "smoke")


@pytest.mark.parametrize("alias,canonical,value", [
    ("ENABLE_QAT", "qat_enabled", True), ("COMPRESSION", "compressor", "zstd"),
    ("LAWA_FREQ", "lawa_interval", 50), ("QAT_THRESHOLD", "late_qat_threshold", 0.15),
])
def test_community_aliases(alias, canonical, value):
    env = {alias: str(int(value) if isinstance(value, bool) else value)}
    cfg, _, _ = config_from_env(env)
    assert getattr(cfg, canonical) == value


def test_alias_and_canonical_that_disagree_is_an_error():
    with pytest.raises(ConfigError, match="set it only once"):
        config_from_env({"QAT_ENABLED": "1", "ENABLE_QAT": "0"})


def test_unknown_key_gets_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean QAT_ENABLED"):
        resolve("baseline", overrides={"QAT_ENABLE": "1"})


@pytest.mark.parametrize("key,value,message", [
    ("QAT_ENABLED", "maybe", "QAT_ENABLED='maybe' .* not a boolean: use 1 or 0"),
    ("NUM_LAYERS", "nine", "NUM_LAYERS='nine' .* not an integer"),
    ("NUM_LAYERS", "2.5", "not an integer"),
    ("MATRIX_LR", "fast", "not a number"),
    ("MATRIX_LR", "nan", "not a number"),
    ("QUANT_FORMAT", "int4", "not one of int8, int6"),
    ("LATE_QAT_THRESHOLD", "1.5", "above the maximum 1"),
    ("NUM_LAYERS", "0", "below the minimum 1"),
])
def test_bad_values_name_the_field_and_the_fix(key, value, message):
    with pytest.raises(ConfigError, match=message):
        resolve("baseline", overrides={key: value})


def test_typed_values_are_accepted_as_well_as_strings():
    cfg = resolve("baseline", overrides={"qat_enabled": True, "num_layers": 10, "mlp_mult": 3, "ITERATIONS": "1e3"})
    assert (cfg.qat_enabled, cfg.num_layers, cfg.mlp_mult, cfg.iterations) == (True, 10, 3.0, 1000)


def test_validation_reports_every_problem_at_once():
    cfg = resolve("baseline", overrides={"NUM_HEADS": 7, "QAT_ENABLED": 1, "LATE_QAT_THRESHOLD": 0.1,
                                         "QAT_START_FRAC": 0.5})
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    text = str(info.value)
    assert "NUM_HEADS=7" in text and "two start rules" in text and len(info.value.problems) >= 3


@pytest.mark.parametrize("world_size,overrides,fragment", [
    (3, {}, "does not divide 8"),
    (1, {"TRAIN_BATCH_TOKENS": 1001}, "not divisible"),
    (1, {"TRAIN_BATCH_TOKENS": 8 * 1000}, "not a multiple of TRAIN_SEQ_LEN"),
    (8, {"VAL_BATCH_SIZE": 4096}, "less than one sequence per rank"),
    (1, {"QAT_ENABLED": 1, "QUANT_FORMAT": "int6", "QUANT_KEEP_FLOAT_MAX_NUMEL": 10**9},
     "keeps them all in float and there is no grid to train on"),
])
def test_batch_and_combination_checks(world_size, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        validate(resolve("baseline", overrides=overrides), world_size=world_size)


def test_valid_configs_pass_for_the_reference_world_sizes():
    for world_size in (1, 2, 4, 8):
        validate(resolve("baseline"), world_size=world_size)
        validate(resolve("smoke"), world_size=world_size if world_size <= 2 else 1)
    validate(resolve("smoke", overrides={"QAT_ENABLED": 1, "QUANT_FORMAT": "int6", "COMPRESSOR": "zstd",
                                         "LATE_QAT_THRESHOLD": 0.3, "LAWA_ENABLED": 1}))


@pytest.mark.parametrize("overrides,warning", [
    ({"LATE_QAT_THRESHOLD": 0.15}, "LATE_QAT_THRESHOLD=0.15 has no effect while QAT_ENABLED=0"),
    ({"LAWA_INTERVAL": 50, "LAWA_K": 3}, "LAWA_INTERVAL=50 has no effect while LAWA_ENABLED=0"),
    ({"EMBED_LR": 0.3}, "EMBED_LR=0.3 has no effect with TIE_EMBEDDINGS=1"),
    ({"TIE_EMBEDDINGS": 0, "TIED_EMBED_LR": 0.1}, "TIED_EMBED_LR=0.1 has no effect with TIE_EMBEDDINGS=0"),
])
def test_settings_that_do_nothing_are_warnings_not_errors(overrides, warning):
    warnings = validate(resolve("baseline", overrides=overrides))
    assert any(w.startswith(warning) for w in warnings), warnings


def test_only_the_users_settings_are_warned_about_not_the_scales():
    """The smoke scale shrinks LAWA_INTERVAL for every run; that is not the user's doing."""
    smoke = resolve("smoke")
    assert validate(smoke, baseline=smoke) == []
    assert validate(resolve("smoke", overrides={"LAWA_INTERVAL": 4}), baseline=smoke) == [
        "LAWA_INTERVAL=4 has no effect while LAWA_ENABLED=0: set LAWA_ENABLED=1 or drop LAWA_INTERVAL"]


def test_near_miss_environment_variables_are_flagged():
    notes = near_miss_env_keys({"QAT_ENABLE": "1", "PATH": "/bin", "RANK": "0", "LOCAL_RANK": "0"})
    assert len(notes) == 1 and "did you mean QAT_ENABLED" in notes[0]


def test_presets_and_scales():
    assert resolve_names("smoke", None) == ("baseline", "smoke")
    assert resolve_names("baseline", None) == ("baseline", "full")
    assert resolve_names(None, "smoke") == ("baseline", "smoke")
    with pytest.raises(ConfigError, match="choose one of"):
        resolve_names("pr999", None)
    with pytest.raises(ConfigError, match="already means scale"):
        resolve_names("smoke", "full")


def test_a_scale_changes_shapes_never_toggles():
    toggles = {s.name for s in FIELD_SPECS if s.type is bool or s.choices}
    runtime = {"log_to_file", "device", "torch_compile", "attention"}
    for scale, overlay in SCALES.items():
        assert not (set(overlay) & (toggles - runtime)), f"scale {scale} changes a toggle"


def test_smoke_scale_is_small():
    cfg = resolve("smoke")
    assert cfg.iterations <= 100 and cfg.model_dim <= 128 and cfg.max_wallclock_seconds == 0
    assert "demo_sp1024" in cfg.data_path and "demo_1024_bpe" in cfg.tokenizer_path
    assert {"baseline", "pr130", "pr137", "pr326", "pr635", "pr1260"} <= set(STACKS)
    assert preset_values("baseline", "full") == {}


def test_field_spec_lookup_by_any_name():
    assert field_spec("qat_enabled") is field_spec("QAT_ENABLED") is field_spec("ENABLE_QAT")
