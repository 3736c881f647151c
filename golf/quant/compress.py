"""Compression back ends of the artifact (techniques.md 3.7): a registry of codecs, one entry each,
and the byte shuffle that may run before any of them.

- zlib (default level 9, the reference's), zstd (22), lzma (preset 9 | PRESET_EXTREME, #326) and
  brotli (quality 11, #1260); a :class:`CodecSpec` names one with its options, and the artifact's
  header records it (:mod:`golf.quant.container`), so decompression never guesses.
- byte shuffle with stride k (#1260's ``_byte_shuffle``, k = 2): the bytes at offsets = 0 mod k,
  then those = 1 mod k, ...; it puts the high and low bytes of 16-bit values (fp16 scales,
  passthrough weights) into separate runs, which the codec then compresses better.

A missing codec package is an error with the fix, never a silent switch to another codec: #137 and
#635 fell back to zlib when ``zstandard`` was absent, which changes the artifact size a sweep
records without anything in the log saying so. ``zstandard`` and ``brotli`` are imported only when
their codec is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import lzma
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

MAX_SHUFFLE_STRIDE = 255


class CodecUnavailableError(ImportError):
    """The package a codec needs is not installed (the message says what to install)."""


@dataclass(frozen=True)
class Codec:
    """One registry entry: how a codec is named, leveled, labelled and run."""

    name: str
    default_level: int
    levels: range
    """Levels (zlib/zstd level, lzma preset, brotli quality) a :class:`CodecSpec` may ask for."""
    compress_fn: Callable[[bytes, int, bool], bytes]
    """``(data, level, extreme) -> compressed``."""
    decompress_fn: Callable[[bytes], bytes]
    package: str = ""
    """The pip package (and module) the codec imports; empty for the standard library."""
    default_extreme: bool = False
    """lzma only: whether the default adds PRESET_EXTREME."""
    bare_label_level: int | None = None
    """A level at which the label is the bare name: ``zlib`` means zlib-9, the reference's text."""

    def label(self, level: int, extreme: bool) -> str:
        if level == self.bare_label_level and not extreme:
            return self.name
        return f"{self.name}-{level}{'e' if extreme else ''}"

    def ensure_available(self) -> None:
        if self.package:
            _import_package(self)


def _import_package(codec: Codec) -> ModuleType:
    try:
        return importlib.import_module(codec.package)
    except ImportError as exc:
        raise CodecUnavailableError(
            f"the {codec.name} compressor needs the '{codec.package}' package, which is not "
            f"importable: run `pip install {codec.package}` (or choose COMPRESSOR=zlib); golf never "
            "falls back to another codec because that would change the artifact size silently"
        ) from exc


def _zstd_compress(data: bytes, level: int, extreme: bool) -> bytes:
    return _import_package(CODECS["zstd"]).ZstdCompressor(level=level).compress(data)


def _zstd_decompress(data: bytes) -> bytes:
    zstandard = _import_package(CODECS["zstd"])
    # A streaming decompressor also accepts frames written without their content size; it returns
    # what it has for a truncated frame, so the end of the frame is checked explicitly.
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    out = decompressor.decompress(data)
    if not decompressor.eof:
        raise ValueError("the zstd frame ends before its end mark (truncated)")
    return out


def _lzma_compress(data: bytes, level: int, extreme: bool) -> bytes:
    # The .xz container with its default CRC64 check, as #326's lzma.compress(raw, preset=...).
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=level | (lzma.PRESET_EXTREME if extreme else 0))


def _brotli_compress(data: bytes, level: int, extreme: bool) -> bytes:
    return _import_package(CODECS["brotli"]).compress(data, quality=level)


def _brotli_decompress(data: bytes) -> bytes:
    return _import_package(CODECS["brotli"]).decompress(data)


def _zlib_decompress(data: bytes) -> bytes:
    decompressor = zlib.decompressobj()
    out = decompressor.decompress(data)
    if not decompressor.eof:
        raise ValueError("the zlib stream ends before its end mark (truncated)")
    return out


CODECS: Mapping[str, Codec] = {
    codec.name: codec
    for codec in (
        Codec("zlib", 9, range(1, 10), lambda d, level, _: zlib.compress(d, level), _zlib_decompress,
              bare_label_level=9),
        Codec("zstd", 22, range(1, 23), _zstd_compress, _zstd_decompress, package="zstandard"),
        Codec("lzma", 9, range(0, 10), _lzma_compress, lzma.decompress, default_extreme=True),
        Codec("brotli", 11, range(0, 12), _brotli_compress, _brotli_decompress, package="brotli"),
    )
}
CODEC_NAMES = tuple(CODECS)


def _codec(name: str) -> Codec:
    codec = CODECS.get(name) if isinstance(name, str) else None
    if codec is None:
        raise ValueError(f"compressor {name!r} is unknown: use one of {', '.join(CODEC_NAMES)}")
    return codec


@dataclass(frozen=True)
class CodecSpec:
    """A codec with its options: what the artifact header records and the log label names."""

    name: str
    level: int
    extreme: bool = False
    """lzma only: PRESET_EXTREME on top of the preset (#326's ``9 | PRESET_EXTREME``)."""
    shuffle: int = 0
    """Byte-shuffle stride applied before the codec; 0 = off."""

    def __post_init__(self) -> None:
        codec = _codec(self.name)
        if isinstance(self.level, bool) or not isinstance(self.level, int) or self.level not in codec.levels:
            default = f"{codec.default_level}{' | PRESET_EXTREME' if codec.default_extreme else ''}"
            raise ValueError(
                f"{self.name} level {self.level!r} is outside {codec.levels.start}..{codec.levels.stop - 1}: "
                f"use a level in that range, or 0 for the codec's default ({default})"
            )
        if not isinstance(self.extreme, bool):
            raise ValueError(f"the extreme flag must be true or false, got {self.extreme!r}")
        if self.extreme and self.name != "lzma":
            raise ValueError(f"the extreme flag is an lzma preset option; {self.name} has none")
        stride = self.shuffle
        if isinstance(stride, bool) or not isinstance(stride, int) or not (stride == 0 or 2 <= stride <= MAX_SHUFFLE_STRIDE):
            raise ValueError(
                f"byte-shuffle stride {stride!r} is not 0 (off) or 2..{MAX_SHUFFLE_STRIDE}: use 2 for "
                "16-bit values (#1260), 4 for 32-bit ones; stride 1 would not move a byte"
            )

    @property
    def codec(self) -> Codec:
        return CODECS[self.name]

    @property
    def label(self) -> str:
        """The codec as log lines name it: ``zlib`` (level 9), ``zstd-22``, ``lzma-9e``,
        ``brotli-11+shuffle2``."""
        label = self.codec.label(self.level, self.extreme)
        return f"{label}+shuffle{self.shuffle}" if self.shuffle else label

    def header_fields(self) -> dict[str, Any]:
        """The options as the artifact header stores them."""
        return {"codec": self.name, "level": self.level, "extreme": self.extreme, "shuffle": self.shuffle}

    @classmethod
    def from_header_fields(cls, fields: Mapping[str, Any]) -> CodecSpec:
        expected = {"codec", "level", "extreme", "shuffle"}
        if set(fields) != expected:
            raise ValueError(
                f"the artifact header has fields {sorted(fields)}, expected {sorted(expected)}: it was "
                "written by another golf version; read it with that version or re-export it"
            )
        return cls(fields["codec"], fields["level"], fields["extreme"], fields["shuffle"])


def codec_spec(name: str, level: int = 0, shuffle: int = 0) -> CodecSpec:
    """The spec for a codec name and level (0 = the codec's default: zlib 9, zstd 22,
    lzma 9 | PRESET_EXTREME, brotli 11) with an optional byte-shuffle stride (0 = off)."""
    codec = _codec(name)
    if level == 0:
        return CodecSpec(name, codec.default_level, codec.default_extreme, shuffle)
    return CodecSpec(name, level, False, shuffle)


REFERENCE_CODEC = CodecSpec("zlib", 9)
"""The reference export's compression: zlib level 9, no shuffle."""


def missing_package(name: str) -> str:
    """The pip package codec ``name`` needs and that is not installed, or ``""``; looks without
    importing, so a config check stays cheap."""
    codec = _codec(name)
    if codec.package and importlib.util.find_spec(codec.package) is None:
        return codec.package
    return ""


def ensure_available(spec: CodecSpec) -> None:
    """Raise :class:`CodecUnavailableError` now, before any expensive work, if ``spec`` cannot run."""
    spec.codec.ensure_available()


def byte_shuffle(data: bytes, stride: int) -> bytes:
    """The bytes at offsets 0, k, 2k, ..., then 1, k+1, ..., for stride k (#1260's order)."""
    return b"".join(data[i::stride] for i in range(stride))


def byte_unshuffle(data: bytes, stride: int) -> bytes:
    """Inverse of :func:`byte_shuffle`."""
    out = bytearray(len(data))
    start = 0
    for i in range(stride):
        count = len(range(i, len(data), stride))
        out[i::stride] = data[start:start + count]
        start += count
    return bytes(out)


def compress(data: bytes, spec: CodecSpec) -> bytes:
    """``data`` byte-shuffled (when the spec says so) and compressed; deterministic."""
    if spec.shuffle:
        data = byte_shuffle(data, spec.shuffle)
    return spec.codec.compress_fn(data, spec.level, spec.extreme)


def decompress(data: bytes, spec: CodecSpec) -> bytes:
    """Inverse of :func:`compress` with the same spec; a corrupt payload is a ValueError."""
    try:
        raw = spec.codec.decompress_fn(data)
    except CodecUnavailableError:
        raise
    except Exception as exc:  # each codec raises its own error type for corrupt data
        raise ValueError(
            f"the artifact's {spec.label} payload does not decompress ({exc}): the file is corrupt "
            "or truncated; re-create it with the export step"
        ) from exc
    return byte_unshuffle(raw, spec.shuffle) if spec.shuffle else raw
