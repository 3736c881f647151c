"""The export section of the config: codec, level and byte shuffle, checked before any compute."""

from __future__ import annotations

import importlib.util

import pytest

from golf.config import ConfigError, field_spec, resolve, validate
from golf.quant.compress import CODEC_NAMES, codec_spec
from golf.quant.export import ExportFormat


def _format(**overrides: object) -> ExportFormat:
    cfg = resolve("smoke", overrides=overrides)
    return ExportFormat(
        quant=cfg.quant_format, codec=codec_spec(cfg.compressor, cfg.compressor_level, cfg.byte_shuffle),
        grid=cfg.quant_grid, keep_float_max_numel=cfg.quant_keep_float_max_numel,
    )


def test_compressor_choices_are_the_codec_registry() -> None:
    assert field_spec("COMPRESSOR").choices == CODEC_NAMES
    assert field_spec("COMPRESSION").name == "compressor"  # #130's spelling


@pytest.mark.parametrize(
    ("overrides", "label"),
    [
        ({}, "int8+zlib"),
        ({"QUANT_FORMAT": "int6", "COMPRESSOR": "zstd"}, "int6+zstd-22"),
        ({"QUANT_FORMAT": "int6", "COMPRESSOR": "lzma"}, "int6+lzma-9e"),
        ({"QUANT_FORMAT": "int6", "COMPRESSOR": "lzma", "COMPRESSOR_LEVEL": 6}, "int6+lzma-6"),
        ({"QUANT_FORMAT": "int6", "COMPRESSION": "brotli", "BYTE_SHUFFLE": 2}, "int6+brotli-11+shuffle2"),
    ],
)
def test_settings_give_the_labels_the_logs_use(overrides: dict, label: str) -> None:
    validate(resolve("smoke", overrides=overrides))
    assert _format(**overrides).label == label


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"COMPRESSOR": "zlib", "COMPRESSOR_LEVEL": 22}, r"COMPRESSOR_LEVEL=22 .*zlib level 22 is outside 1\.\.9"),
        ({"COMPRESSOR": "brotli", "COMPRESSOR_LEVEL": 12}, r"outside 0\.\.11"),
        ({"BYTE_SHUFFLE": 1}, r"BYTE_SHUFFLE=1: .*stride 1 would not move a byte"),
    ],
)
def test_bad_codec_settings_are_errors_even_without_runtime_checks(overrides: dict, match: str) -> None:
    # A sweep driver validates with check_runtime=False: a bad level must still stop the grid.
    with pytest.raises(ConfigError, match=match):
        validate(resolve("smoke", overrides=overrides), check_runtime=False)


@pytest.mark.parametrize("key", ["COMPRESSOR_LEVEL", "BYTE_SHUFFLE"])
def test_negative_levels_and_strides_are_rejected_when_parsed(key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key}=.*below the minimum 0"):
        resolve("smoke", overrides={key: -1})


def test_a_missing_codec_package_is_a_runtime_error_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "brotli" else real(name, *a))
    cfg = resolve("smoke", overrides={"COMPRESSOR": "brotli"})
    with pytest.raises(ConfigError, match=r"COMPRESSOR=brotli needs the brotli package.*pip install brotli"):
        validate(cfg)
    validate(cfg, check_runtime=False)  # the head node of a sweep need not have it
