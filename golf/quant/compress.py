"""Compression back ends of the artifact (techniques.md 3.7): zlib level 9 and zstd level 22.

A missing codec package is an error with the fix, never a silent switch to another codec: #137 and
#635 fell back to zlib when ``zstandard`` was absent, which changes the artifact size a sweep
records without anything in the log saying so. ``zstandard`` is imported only when zstd is used.
Decompression needs no codec name: it is read from the data's magic bytes.
"""

from __future__ import annotations

import zlib
from types import ModuleType

CODECS = ("zlib", "zstd")

ZLIB_LEVEL = 9
ZSTD_LEVEL = 22

_LABELS = {"zlib": "zlib", "zstd": f"zstd-{ZSTD_LEVEL}"}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class CodecUnavailableError(ImportError):
    """The package a codec needs is not installed (the message says what to install)."""


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"compressor {codec!r} is unknown: use one of {CODECS}")


def _zstandard() -> ModuleType:
    try:
        import zstandard
    except ImportError as exc:
        raise CodecUnavailableError(
            "the zstd compressor needs the 'zstandard' package, which is not importable: "
            "run `pip install zstandard` (or choose COMPRESSOR=zlib); golf never falls back to "
            "another codec because that would change the artifact size silently"
        ) from exc
    return zstandard


def ensure_available(codec: str) -> None:
    """Raise :class:`CodecUnavailableError` now, before any expensive work, if ``codec`` cannot run."""
    _check_codec(codec)
    if codec == "zstd":
        _zstandard()


def codec_label(codec: str) -> str:
    """The codec as log lines name it: ``"zlib"`` or ``"zstd-22"``."""
    _check_codec(codec)
    return _LABELS[codec]


def compress(data: bytes, codec: str) -> bytes:
    """``data`` compressed with zlib (level 9) or zstd (level 22, single-threaded, deterministic)."""
    _check_codec(codec)
    if codec == "zlib":
        return zlib.compress(data, ZLIB_LEVEL)
    return _zstandard().ZstdCompressor(level=ZSTD_LEVEL).compress(data)


def _is_zlib_header(data: bytes) -> bool:
    # RFC 1950: CMF says deflate (low nibble 8) with a window of at most 32 KiB, and the 16-bit
    # big-endian header is a multiple of 31.
    if len(data) < 2:
        return False
    cmf, flg = data[0], data[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0


def detect_codec(data: bytes) -> str:
    """Which of :data:`CODECS` produced ``data``, from its magic bytes."""
    if data[:4] == _ZSTD_MAGIC:
        return "zstd"
    if _is_zlib_header(data):
        return "zlib"
    raise ValueError(
        f"data starting with {data[:8].hex(' ') or '(nothing)'} is neither a zstd frame "
        f"(magic {_ZSTD_MAGIC.hex(' ')}) nor a zlib stream (78 ..): it is not an artifact written "
        "by golf.quant; check the file path, or re-create it with the export step"
    )


def decompress(data: bytes) -> bytes:
    """Inverse of :func:`compress`; the codec is detected from the magic bytes."""
    codec = detect_codec(data)
    if codec == "zlib":
        return zlib.decompress(data)
    # A streaming decompressor also accepts frames written without their content size.
    return _zstandard().ZstdDecompressor().decompressobj().decompress(data)
