"""The artifact container (techniques.md 3.7): a header names the codec and its options, so every
codec and the byte shuffle decode without guessing; only the reference export stays headerless."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from export_states import reference_mix_roles

from golf.model.roles import ParamRole, Role
from golf.quant.compress import CODEC_NAMES, CodecSpec, CodecUnavailableError, codec_spec, compress
from golf.quant.container import MAGIC, VERSION, decode, encode
from golf.quant.export import pack_artifact, unpack_artifact
from golf.quant.policy import ExportPolicy


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return {
        "tok_emb.weight": torch.randn(64, 48, generator=g).to(torch.bfloat16),
        "blocks.0.attn.c_q.weight": torch.randn(48, 48, generator=g) * 0.05,
        "blocks.0.mlp.fc.weight": torch.randn(96, 48, generator=g) * 0.05,
        "blocks.0.attn_scale": torch.rand(48, generator=g),
        "skip_weights": torch.rand(1, 48, generator=g),
    }


STATE = _state()
ROLES = reference_mix_roles(STATE)
INT6 = ExportPolicy(quant="int6", keep_float_max_numel=512)
INT8 = ExportPolicy(quant="int8", keep_float_max_numel=512)

SPECS = [codec_spec(name) for name in CODEC_NAMES] + [
    codec_spec("zlib", 6), codec_spec("lzma", 6), codec_spec("brotli", 0, 2), codec_spec("zstd", 0, 4),
]


def _header(blob: bytes) -> dict:
    assert blob[:4] == MAGIC and blob[4] == VERSION
    length = int.from_bytes(blob[5:7], "big")
    return json.loads(blob[7:7 + length])


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_each_codec_round_trips_and_the_header_names_it(spec: CodecSpec) -> None:
    blob, stats = pack_artifact(STATE, ROLES, INT6, spec)
    assert _header(blob) == {"codec": spec.name, "level": spec.level, "extreme": spec.extreme, "shuffle": spec.shuffle}
    assert stats.codec == spec.label and stats.compressed_bytes == len(blob)
    unpacked = unpack_artifact(blob)
    assert unpacked.codec == spec and not unpacked.headerless
    reference = unpack_artifact(pack_artifact(STATE, ROLES, INT6, codec_spec("zlib", 1))[0]).state_dict
    assert all(torch.equal(unpacked.state_dict[n], reference[n]) for n in STATE)


def test_the_payload_after_the_header_is_the_codec_output_of_the_shuffled_bytes() -> None:
    raw = bytes(range(256)) * 40
    spec = codec_spec("brotli", 0, 2)
    blob = encode(raw, spec, reference_object=False)
    length = int.from_bytes(blob[5:7], "big")
    assert blob[7 + length:] == compress(raw, spec)
    decoded = decode(blob)
    assert (decoded.raw, decoded.codec, decoded.headerless) == (raw, spec, False)


def test_byte_shuffle_round_trips_through_the_artifact() -> None:
    plain = pack_artifact(STATE, ROLES, INT6, codec_spec("zstd"))[0]
    shuffled = pack_artifact(STATE, ROLES, INT6, codec_spec("zstd", 0, 2))[0]
    assert plain[7:] != shuffled[7:]
    a, b = unpack_artifact(plain).state_dict, unpack_artifact(shuffled).state_dict
    assert all(torch.equal(a[n], b[n]) for n in STATE)


def test_only_the_reference_export_is_headerless() -> None:
    reference = pack_artifact(STATE, ROLES, INT8, codec_spec("zlib"))[0]
    assert reference[:1] == b"\x78" and unpack_artifact(reference).headerless
    for policy, spec in [
        (INT8, codec_spec("zlib", 6)),         # another level
        (INT8, codec_spec("zlib", 0, 2)),      # a shuffle
        (INT8, codec_spec("zstd")),            # another codec
        (INT6, codec_spec("zlib")),            # another format
    ]:
        blob = pack_artifact(STATE, ROLES, policy, spec)[0]
        assert blob[:4] == MAGIC, (policy.quant, spec.label)
        assert unpack_artifact(blob).codec == spec


def test_an_override_that_changes_nothing_keeps_the_reference_bytes() -> None:
    no_change = ExportPolicy(quant="int8", keep_float_max_numel=512, overrides=(lambda n, t, r, p: p,))
    assert pack_artifact(STATE, ROLES, no_change, codec_spec("zlib"))[0] == pack_artifact(STATE, ROLES, INT8, codec_spec("zlib"))[0]


def test_headerless_streams_decode_with_the_codec_golf_wrote_them_with() -> None:
    raw = b"torch.save bytes" * 100
    zlib_blob, zstd_blob = compress(raw, codec_spec("zlib")), compress(raw, codec_spec("zstd"))
    assert (decode(zlib_blob).raw, decode(zlib_blob).codec, decode(zlib_blob).headerless) == (raw, codec_spec("zlib"), True)
    assert (decode(zstd_blob).raw, decode(zstd_blob).codec, decode(zstd_blob).headerless) == (raw, codec_spec("zstd"), True)


def _with_header(fields: object, payload: bytes = b"", version: int = VERSION) -> bytes:
    text = json.dumps(fields).encode()
    return MAGIC + bytes([version]) + len(text).to_bytes(2, "big") + text + payload


GOOD = {"codec": "zlib", "level": 9, "extreme": False, "shuffle": 0}


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"", "is not a golf artifact"),
        (b"PK\x03\x04 a zip file", "is not a golf artifact"),
        (b"\x78\x00 bad zlib header", "is not a golf artifact"),
        (b"BSHF\x02 a #1260 shuffled blob", "is not a golf artifact"),
        (MAGIC + b"\x01", "truncated"),
        (_with_header(GOOD)[:-3], "truncated"),
        (_with_header(GOOD, version=2), "container version is 2.*re-export"),
        (MAGIC + b"\x01\x00\x03{x}", "not readable JSON"),
        (_with_header([1, 2]), "not an object"),
        (_with_header({**GOOD, "codec": "gzip"}), "compressor 'gzip' is unknown"),
        (_with_header({**GOOD, "codec": ["zlib"]}), r"compressor \['zlib'\] is unknown"),
        (_with_header({**GOOD, "extreme": "no"}), "extreme flag must be true or false"),
        (_with_header({**GOOD, "level": 99}), "outside 1..9"),
        (_with_header({"codec": "zlib"}), "expected.*extreme"),
        (_with_header(GOOD, compress(b"x" * 1000, codec_spec("zlib"))[:-5]), "does not decompress.*truncated"),
        (_with_header(GOOD, b"not zlib at all"), "does not decompress"),
    ],
)
def test_foreign_and_corrupt_files_are_clear_errors(blob: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        unpack_artifact(blob)


def test_missing_brotli_is_a_clear_error_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = pack_artifact(STATE, ROLES, INT6, codec_spec("brotli"))[0]
    monkeypatch.setitem(sys.modules, "brotli", None)  # `import brotli` now raises ImportError
    with pytest.raises(CodecUnavailableError, match="pip install brotli.*never falls back"):
        unpack_artifact(blob)
    # Packing fails before any quantization work: the NaN would fail that first otherwise.
    bad = {"w": torch.full((64, 64), float("nan"))}
    with pytest.raises(CodecUnavailableError, match="pip install brotli"):
        pack_artifact(bad, {"w": ParamRole(Role.MATRIX, "mlp")}, INT6, codec_spec("brotli"))
