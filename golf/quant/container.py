"""The artifact's container: a small header naming the codec and its options, then the payload.

Layout (version 1)::

    b"GOLF"   4 bytes, the magic
    version   1 byte (1)
    length    2 bytes, big-endian: the length of the header text
    header    UTF-8 JSON, sorted keys, no spaces: {"codec":"brotli","extreme":false,"level":11,"shuffle":2}
    payload   the codec's output for the (byte-shuffled) torch.save bytes

Why a header: brotli and a byte-shuffled stream have no magic bytes of their own, and a level or a
shuffle stride cannot be read back from any codec's output, so decoding must be told, not guess.

The one exception is the reference export (techniques.md 1.6): int8 object + zlib-9, no shuffle,
is written as the bare zlib stream the reference writes, byte for byte, because its size is
compared with the leaderboard's ``int8+zlib`` runs. Artifacts written before this container
existed (bare zlib streams, bare zstd frames) still decode: the magic tells them apart (a zlib
stream starts with 0x78 here, a zstd frame with 28 b5 2f fd, neither with ``GOLF``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from golf.quant.compress import REFERENCE_CODEC, CodecSpec, compress, decompress

MAGIC = b"GOLF"
VERSION = 1
_FIXED = struct.Struct(">4sBH")  # magic, version, header length
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What the formats before the container were written with (the only levels golf used then).
_LEGACY_ZLIB = REFERENCE_CODEC
_LEGACY_ZSTD = CodecSpec("zstd", 22)


@dataclass(frozen=True)
class Decoded:
    raw: bytes
    """The payload, decompressed and unshuffled: torch.save bytes."""
    codec: CodecSpec
    headerless: bool
    """True for a bare zlib stream or zstd frame (the reference format, or golf before the header)."""


def encode(raw: bytes, codec: CodecSpec, *, reference_object: bool) -> bytes:
    """``raw`` compressed with ``codec`` behind the header, or, for the reference export
    (``reference_object`` and zlib-9 without shuffle), the reference's bare zlib stream."""
    payload = compress(raw, codec)
    if is_headerless_reference(codec, reference_object):
        return payload
    header = json.dumps(codec.header_fields(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    return _FIXED.pack(MAGIC, VERSION, len(header)) + header + payload


def is_headerless_reference(codec: CodecSpec, reference_object: bool) -> bool:
    """Whether :func:`encode` writes the bare reference stream for this codec and object."""
    return reference_object and codec == REFERENCE_CODEC


def decode(blob: bytes) -> Decoded:
    """The torch.save bytes of an artifact and the codec that packed them (header or legacy)."""
    if blob[:4] == MAGIC:
        codec, payload = _read_header(blob)
        return Decoded(decompress(payload, codec), codec, headerless=False)
    if blob[:4] == _ZSTD_MAGIC:
        return Decoded(decompress(blob, _LEGACY_ZSTD), _LEGACY_ZSTD, headerless=True)
    if _is_zlib_header(blob):
        return Decoded(decompress(blob, _LEGACY_ZLIB), _LEGACY_ZLIB, headerless=True)
    raise ValueError(
        f"data starting with {blob[:8].hex(' ') or '(nothing)'} is not a golf artifact: it has no "
        f"{MAGIC.decode()} header and is neither a bare zlib stream (78 ..) nor a zstd frame "
        f"({_ZSTD_MAGIC.hex(' ')}) of the older formats; check the file path, or re-create it with "
        "the export step"
    )


def _read_header(blob: bytes) -> tuple[CodecSpec, bytes]:
    if len(blob) < _FIXED.size:
        raise ValueError(f"the artifact ends inside its {MAGIC.decode()} header ({len(blob)} bytes): it is truncated")
    _, version, length = _FIXED.unpack_from(blob)
    if version != VERSION:
        raise ValueError(
            f"the artifact's container version is {version}, this golf reads version {VERSION}: "
            "read it with the golf version that wrote it, or re-export it"
        )
    end = _FIXED.size + length
    if len(blob) < end:
        raise ValueError(f"the artifact ends inside its header ({len(blob)} of {end} bytes): it is truncated")
    try:
        fields = json.loads(blob[_FIXED.size:end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the artifact's header is not readable JSON ({exc}): the file is corrupt") from exc
    if not isinstance(fields, dict):
        raise ValueError(f"the artifact's header is {fields!r}, not an object of codec options: the file is corrupt")
    return CodecSpec.from_header_fields(fields), blob[end:]


def _is_zlib_header(data: bytes) -> bool:
    # RFC 1950: CMF says deflate (low nibble 8) with a window of at most 32 KiB, and the 16-bit
    # big-endian header is a multiple of 31.
    if len(data) < 2:
        return False
    cmf, flg = data[0], data[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0
