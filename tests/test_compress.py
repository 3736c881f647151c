"""Compression back ends (techniques.md 3.7): the codec registry, byte shuffle, and loud failure."""

from __future__ import annotations

import lzma
import random
import subprocess
import sys
import zlib

import brotli
import pytest
import torch
import zstandard

from golf.quant.compress import (
    CODEC_NAMES,
    CODECS,
    REFERENCE_CODEC,
    CodecSpec,
    CodecUnavailableError,
    byte_shuffle,
    byte_unshuffle,
    codec_spec,
    compress,
    decompress,
    ensure_available,
    missing_package,
)

PAYLOADS = {
    "empty": b"",
    "one_byte": b"\x00",
    "text": ("Parameter Golf " * 500).encode(),
    "random": random.Random(0).randbytes(50_000),
    "int6_like": torch.randint(
        -31, 32, (40_000,), dtype=torch.int8, generator=torch.Generator().manual_seed(0)
    ).numpy().tobytes(),
}
# fp16 values of similar magnitude: the high bytes repeat, the low bytes do not; the case
# byte shuffle is for.
FP16_LIKE = (torch.randn(60_000, generator=torch.Generator().manual_seed(1)) * 0.02).half().numpy().tobytes()


def test_registry_has_one_entry_per_codec_with_the_seed_defaults() -> None:
    assert CODEC_NAMES == ("zlib", "zstd", "lzma", "brotli")
    defaults = {name: codec_spec(name) for name in CODEC_NAMES}
    assert defaults == {
        "zlib": CodecSpec("zlib", 9),
        "zstd": CodecSpec("zstd", 22),
        "lzma": CodecSpec("lzma", 9, extreme=True),
        "brotli": CodecSpec("brotli", 11),
    }
    assert [defaults[n].label for n in CODEC_NAMES] == ["zlib", "zstd-22", "lzma-9e", "brotli-11"]
    assert all(CODECS[n].name == n for n in CODEC_NAMES)
    assert REFERENCE_CODEC == defaults["zlib"]


@pytest.mark.parametrize(
    ("args", "label"),
    [
        (("zlib", 6), "zlib-6"),
        (("zstd", 3), "zstd-3"),
        (("lzma", 6), "lzma-6"),
        (("lzma", 9), "lzma-9"),
        (("brotli", 0, 2), "brotli-11+shuffle2"),
        (("zstd", 22, 4), "zstd-22+shuffle4"),
    ],
)
def test_labels_name_level_extreme_and_shuffle(args: tuple, label: str) -> None:
    assert codec_spec(*args).label == label


@pytest.mark.parametrize("name", CODEC_NAMES)
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("shuffle", [0, 2, 3])
def test_roundtrip(name: str, payload: str, shuffle: int) -> None:
    spec = codec_spec(name, 0, shuffle)
    data = PAYLOADS[payload]
    blob = compress(data, spec)
    assert decompress(blob, spec) == data
    assert compress(data, spec) == blob  # deterministic


def test_each_codec_runs_the_library_at_its_level() -> None:
    data = PAYLOADS["text"] + PAYLOADS["int6_like"]
    assert compress(data, codec_spec("zlib")) == zlib.compress(data, 9)
    assert compress(data, codec_spec("zlib", 4)) == zlib.compress(data, 4)
    assert compress(data, codec_spec("zstd")) == zstandard.ZstdCompressor(level=22).compress(data)
    assert compress(data, codec_spec("lzma")) == lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
    assert compress(data, codec_spec("lzma", 6)) == lzma.compress(data, preset=6)
    assert compress(data, codec_spec("brotli")) == brotli.compress(data, quality=11)
    assert compress(data, codec_spec("brotli", 5)) == brotli.compress(data, quality=5)


@pytest.mark.parametrize("stride", [2, 3, 4, 7])
@pytest.mark.parametrize("length", [0, 1, 2, 5, 6, 1001])
def test_byte_shuffle_round_trips_any_length(stride: int, length: int) -> None:
    data = random.Random(length).randbytes(length)
    shuffled = byte_shuffle(data, stride)
    assert sorted(shuffled) == sorted(data) and len(shuffled) == len(data)
    assert byte_unshuffle(shuffled, stride) == data


def test_byte_shuffle_has_the_1260_layout() -> None:
    # #1260: the bytes at even offsets, then the bytes at odd offsets.
    assert byte_shuffle(b"aAbBcCd", 2) == b"abcdABC"
    assert byte_shuffle(bytes(range(7)), 3) == bytes([0, 3, 6, 1, 4, 2, 5])


def test_byte_shuffle_helps_on_fp16_data() -> None:
    plain = compress(FP16_LIKE, codec_spec("zlib"))
    shuffled = compress(FP16_LIKE, codec_spec("zlib", 0, 2))
    assert len(shuffled) < len(plain)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("gzip",), "unknown: use one of zlib, zstd, lzma, brotli"),
        (("zlib", 22), r"zlib level 22 is outside 1\.\.9"),
        (("zstd", 23), r"outside 1\.\.22"),
        (("brotli", 12), r"outside 0\.\.11"),
        (("lzma", 10), r"outside 0\.\.9.*PRESET_EXTREME"),
        (("zlib", 0, 1), "stride 1 would not move a byte"),
        (("zlib", 0, 256), r"2\.\.255"),
    ],
)
def test_bad_specs_name_the_problem(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        codec_spec(*args)


def test_extreme_is_an_lzma_option_only() -> None:
    with pytest.raises(ValueError, match="lzma preset option"):
        CodecSpec("zstd", 22, extreme=True)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_corrupt_or_truncated_payloads_are_clear_errors(name: str) -> None:
    spec = codec_spec(name)
    blob = compress(PAYLOADS["random"], spec)
    with pytest.raises(ValueError, match="does not decompress.*corrupt or truncated"):
        decompress(blob[: len(blob) // 2], spec)


@pytest.mark.parametrize(("name", "module"), [("zstd", "zstandard"), ("brotli", "brotli")])
def test_missing_package_fails_loudly_with_the_fix(monkeypatch: pytest.MonkeyPatch, name: str, module: str) -> None:
    spec = codec_spec(name)
    blob = compress(PAYLOADS["text"], spec)
    # A None entry in sys.modules makes `import <module>` raise ImportError, as if uninstalled.
    monkeypatch.setitem(sys.modules, module, None)
    for call in (lambda: compress(b"data", spec), lambda: decompress(blob, spec), lambda: ensure_available(spec)):
        with pytest.raises(CodecUnavailableError, match=f"pip install {module}.*never falls back"):
            call()
    # Never a silent fallback, and the standard library codecs are unaffected.
    for other in ("zlib", "lzma"):
        assert decompress(compress(b"data", codec_spec(other)), codec_spec(other)) == b"data"
        ensure_available(codec_spec(other))


def test_missing_package_is_found_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "brotli" else real(n, *a))
    assert missing_package("brotli") == "brotli"
    assert missing_package("zstd") == "" and missing_package("zlib") == "" and missing_package("lzma") == ""


def test_importing_golf_quant_loads_neither_codec_packages_nor_ray() -> None:
    code = "import sys, golf.quant; print(sorted({'zstandard', 'brotli', 'ray'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
