"""Compression back ends (techniques.md 3.7): round trips, detection, and loud failure."""

from __future__ import annotations

import random
import subprocess
import sys
import zlib

import pytest
import torch
import zstandard

from golf.quant.compress import (
    CODECS,
    CodecUnavailableError,
    codec_label,
    compress,
    decompress,
    detect_codec,
    ensure_available,
)
from golf.quant.export import ExportFormat, pack_artifact

PAYLOADS = {
    "empty": b"",
    "one_byte": b"\x00",
    "text": ("Parameter Golf " * 500).encode(),
    "random": random.Random(0).randbytes(50_000),
    "int6_like": torch.randint(
        -31, 32, (40_000,), dtype=torch.int8, generator=torch.Generator().manual_seed(0)
    ).numpy().tobytes(),
}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_roundtrip(codec: str, name: str) -> None:
    data = PAYLOADS[name]
    blob = compress(data, codec)
    assert detect_codec(blob) == codec
    assert decompress(blob) == data


def test_levels_are_zlib_9_and_zstd_22() -> None:
    data = PAYLOADS["text"] + PAYLOADS["int6_like"]
    assert compress(data, "zlib") == zlib.compress(data, 9)
    assert compress(data, "zstd") == zstandard.ZstdCompressor(level=22).compress(data)


def test_compression_is_deterministic() -> None:
    data = PAYLOADS["int6_like"]
    for codec in CODECS:
        assert compress(data, codec) == compress(data, codec)


def test_labels() -> None:
    assert codec_label("zlib") == "zlib"
    assert codec_label("zstd") == "zstd-22"


def test_unknown_codec_names_the_choices() -> None:
    for call in (lambda: compress(b"x", "brotli"), lambda: codec_label("lzma")):
        with pytest.raises(ValueError, match="zlib"):
            call()


def test_zstd_frame_without_content_size_decompresses() -> None:
    data = PAYLOADS["text"]
    blob = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(data)
    assert decompress(blob) == data


@pytest.mark.parametrize("junk", [b"", b"PK\x03\x04 a zip file", b"\x78\x00 bad zlib header", b"BSHF\x02"])
def test_unknown_data_is_a_clear_error(junk: bytes) -> None:
    with pytest.raises(ValueError, match="neither a zstd frame"):
        decompress(junk)


def test_missing_zstandard_fails_loudly_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    zstd_blob = compress(PAYLOADS["text"], "zstd")
    # A None entry in sys.modules makes `import zstandard` raise ImportError, as if uninstalled.
    monkeypatch.setitem(sys.modules, "zstandard", None)

    for call in (
        lambda: compress(b"data", "zstd"),
        lambda: decompress(zstd_blob),
        lambda: ensure_available("zstd"),
    ):
        with pytest.raises(CodecUnavailableError, match="pip install zstandard"):
            call()
    # Never a silent fallback, and zlib is unaffected.
    assert decompress(compress(b"data", "zlib")) == b"data"
    ensure_available("zlib")


def test_missing_zstandard_is_reported_before_quantizing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)
    # The NaN would fail quantization: the codec error must come first, before any work.
    state = {"blocks.0.mlp.fc.weight": torch.full((64, 64), float("nan"))}
    with pytest.raises(CodecUnavailableError, match="pip install zstandard"):
        pack_artifact(state, ExportFormat(quant="int6", compressor="zstd", keep_float_max_numel=16))


def test_importing_golf_quant_loads_neither_zstandard_nor_ray() -> None:
    code = "import sys, golf.quant; print(sorted({'zstandard', 'ray'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
