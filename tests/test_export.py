"""Export formats (techniques.md 1.6, 2.1, 3.1): the reference int8 and int6 for attention/MLP."""

from __future__ import annotations

import hashlib
import io
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import shared_fixture
from torch import nn

from golf.quant.compress import compress, decompress
from golf.quant.export import (
    INT8_CLIP_Q,
    ExportFormat,
    dequantize_state_dict,
    is_int6_tensor,
    pack_artifact,
    qat_target_names,
    quantize_state_dict,
    unpack_artifact,
)
from golf.quant.grid import GRID_MODES, fake_quantize_rows, quantize_rows

# fp16 keeps 11 significant bits: rounding a scale to fp16 moves it by at most 2**-11 of itself.
FP16_REL = 2.0**-11

CONTROL_NAMES = ("skip_weights", "resid_mix", "attn_scale", "mlp_scale", "q_gain")


class _Attn(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.c_q = nn.Linear(d, d, bias=False)
        self.c_k = nn.Linear(d, d // 2, bias=False)
        self.c_v = nn.Linear(d, d // 2, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.q_gain = nn.Parameter(torch.full((4,), 1.5))


class _MLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 2 * d, bias=False)
        self.proj = nn.Linear(2 * d, d, bias=False)


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.attn = _Attn(d)
        self.mlp = _MLP(d)
        self.attn_scale = nn.Parameter(torch.rand(d) + 0.5)
        self.mlp_scale = nn.Parameter(torch.rand(d) + 0.5)
        self.resid_mix = nn.Parameter(torch.rand(2, d))


class _TinyGPT(nn.Module):
    """The reference model's parameter names at a small scale (d=64, 2 layers, vocab 256)."""

    def __init__(self, d: int = 64, layers: int = 2, vocab: int = 256) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(_Block(d) for _ in range(layers))
        self.skip_weights = nn.Parameter(torch.rand(1, d))
        self.lm_head = nn.Linear(d, vocab, bias=False)


def _model(seed: int = 0) -> _TinyGPT:
    torch.manual_seed(seed)
    return _TinyGPT()


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A model state_dict plus the odd tensors the rules must also handle."""
    state = dict(_model(seed).state_dict())
    g = torch.Generator().manual_seed(seed)
    state["tok_emb.weight"] = state["tok_emb.weight"].to(torch.bfloat16)  # as on the GPU
    state["step_counter"] = torch.tensor(1234, dtype=torch.int64)  # non-float: kept as is
    state["rotary.table"] = torch.randn(3000, generator=g)  # large non-matrix: per-tensor int8
    state["final_norm.weight"] = torch.rand(64, generator=g, dtype=torch.float32)  # small: fp16
    state["blocks.0.attn_scales"] = torch.rand(40, 64, generator=g)  # large control: still fp32
    state["blocks.1.resid_mix"] = state["blocks.1.resid_mix"].to(torch.bfloat16)  # bf16 control
    return state


SMALL = 1024  # keep-float threshold that sends every matrix of the tiny model to quantization


def _fmt(quant: str, compressor: str = "zlib", grid: str = "relative", keep: int = SMALL) -> ExportFormat:
    return ExportFormat(quant=quant, compressor=compressor, grid=grid, keep_float_max_numel=keep)


ALL_FORMATS = [_fmt("int8")] + [_fmt("int6", "zstd", grid) for grid in GRID_MODES]


# --- ExportFormat ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quant", "compressor", "label", "prefix", "filename"),
    [
        ("int8", "zlib", "int8+zlib", "final_int8_zlib", "final_model.int8.ptz"),
        ("int8", "zstd", "int8+zstd-22", "final_int8_zstd", "final_model.int8.ptz"),
        ("int6", "zlib", "int6+zlib", "final_int6_zlib", "final_model.int6.ptz"),
        ("int6", "zstd", "int6+zstd-22", "final_int6_zstd", "final_model.int6.ptz"),
    ],
)
def test_format_names(quant: str, compressor: str, label: str, prefix: str, filename: str) -> None:
    fmt = ExportFormat(quant=quant, compressor=compressor)
    assert (fmt.label, fmt.metric_prefix, fmt.filename) == (label, prefix, filename)
    assert fmt.grid == "relative" and fmt.keep_float_max_numel == 65_536


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"quant": "int4", "compressor": "zlib"}, "quant"),
        ({"quant": "int6", "compressor": "lzma"}, "compressor"),
        ({"quant": "int6", "compressor": "zstd", "grid": "percentile"}, "grid"),
        ({"quant": "int6", "compressor": "zstd", "keep_float_max_numel": -1}, "keep_float_max_numel"),
    ],
)
def test_bad_format_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ExportFormat(**kwargs)


# --- the reference int8 format ----------------------------------------------------------------------


def test_int8_object_has_the_reference_layout() -> None:
    state = _state()
    obj, stats = quantize_state_dict(state, _fmt("int8"))
    assert obj["__quant_format__"] == "int8_clean_per_row_v1"
    assert set(obj) == {
        "__quant_format__", "quantized", "scales", "dtypes", "passthrough", "qmeta",
        "passthrough_orig_dtypes",
    }
    matrices = {n for n, t in state.items() if t.ndim == 2 and t.numel() > SMALL and "attn_scales" not in n}
    assert set(obj["qmeta"]) == matrices
    assert all(meta == {"scheme": "per_row", "axis": 0} for meta in obj["qmeta"].values())
    assert set(obj["quantized"]) == matrices | {"rotary.table"}
    assert obj["scales"]["rotary.table"].ndim == 0
    assert obj["dtypes"]["tok_emb.weight"] == "bfloat16"
    for name in matrices:
        assert obj["quantized"][name].dtype == torch.int8
        assert obj["scales"][name].dtype == torch.float16
        assert int(obj["quantized"][name].abs().max()) <= 127
    assert stats["num_int8"] == len(matrices) + 1 and stats["num_int6"] == 0
    assert stats["num_passthrough"] == len(state) - stats["num_int8"]
    assert stats["param_count"] == sum(t.numel() for t in state.values())


def test_int8_codes_of_a_row_on_the_1_over_127_grid_are_exact() -> None:
    """Rows with values k/127 and max <= 1 have scale 1/127 (the floor), so q = k exactly."""
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(-127, 128, (96, 256), generator=g)
    obj, _ = quantize_state_dict({"blocks.0.mlp.fc.weight": codes.float() / 127}, _fmt("int8"))
    assert torch.equal(obj["quantized"]["blocks.0.mlp.fc.weight"], codes.to(torch.int8))
    scale = obj["scales"]["blocks.0.mlp.fc.weight"]
    assert torch.equal(scale, torch.full_like(scale, 1.0 / 127))


def test_int8_roundtrip_error_and_clipping_at_the_reference_size() -> None:
    torch.manual_seed(4)
    g = torch.Generator().manual_seed(4)
    heavy_tails = torch.distributions.StudentT(3.0).sample((300, 512)) * 0.02
    state = {
        "blocks.0.mlp.fc.weight": heavy_tails,
        "tok_emb.weight": (torch.randn(160, 512, generator=g) * 0.8).to(torch.bfloat16),
    }
    fmt = ExportFormat(quant="int8", compressor="zlib")  # the reference's 65,536 threshold
    obj, _ = quantize_state_dict(state, fmt)
    restored = dequantize_state_dict(obj)
    for name, w in state.items():
        w32 = w.float()
        q = obj["quantized"][name]
        assert int(q.abs().max()) <= 127
        clip = torch.quantile(w32.abs(), INT8_CLIP_Q, dim=1)
        scale = (clip / 127).clamp_min(1 / 127)
        clipped = w32.abs() > clip[:, None]
        # The percentile sits between the two largest entries: at most ~0.00016% of a row (and
        # at least one entry's worth) is clipped.
        max_clipped = math.floor((w.shape[1] - 1) * (1 - INT8_CLIP_Q)) + 1
        assert int(clipped.sum(dim=1).max()) <= max_clipped
        error = (restored[name].float() - w32).abs()
        # Half a step, the fp16 rounding of the stored scale on up to 127 steps, and the final
        # cast back to the tensor's own dtype (bf16 keeps 8 significant bits).
        cast = w32.abs() * (2.0**-8 if w.dtype == torch.bfloat16 else 0.0)
        bound = scale[:, None] * (0.5 + 127 * FP16_REL + 1e-5) + cast
        assert bool((error <= bound)[~clipped].all())


# --- the int6 format --------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", GRID_MODES)
def test_int6_sorts_tensors_as_137(grid: str) -> None:
    state = _state()
    fmt = _fmt("int6", "zstd", grid)
    obj, stats = quantize_state_dict(state, fmt)
    assert obj["__quant_format__"] == "int6_attn_mlp_per_row_v1"
    int6 = {n for n, meta in obj["qmeta"].items() if meta["bits"] == 6}
    modules = ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")
    assert int6 == {f"blocks.{i}.{m}.weight" for i in range(2) for m in modules}
    assert all(obj["qmeta"][n]["grid"] == grid for n in int6)
    # Large tensors outside attention/MLP stay on the reference int8 path, with their bits recorded.
    int8 = {n for n, meta in obj["qmeta"].items() if meta["bits"] == 8}
    assert int8 == {"tok_emb.weight", "lm_head.weight", "rotary.table"}
    assert obj["qmeta"]["rotary.table"]["scheme"] == "per_tensor"
    assert (stats["num_int6"], stats["num_int8"]) == (len(int6), len(int8))
    for name in int6:
        q = obj["quantized"][name]
        assert q.dtype == torch.int8 and obj["scales"][name].dtype == torch.float16
        assert -32 <= int(q.min()) and int(q.max()) <= 31
        if grid == "floored":
            assert int(q.min()) >= -31


@pytest.mark.parametrize("grid", GRID_MODES)
def test_int6_roundtrip_error_is_half_a_step_plus_fp16_scale_rounding(grid: str) -> None:
    state = _state()
    restored = dequantize_state_dict(quantize_state_dict(state, _fmt("int6", "zstd", grid))[0])
    for name, w in state.items():
        if not is_int6_tensor(name, w, _fmt("int6", "zstd", grid)):
            continue
        _, scale = quantize_rows(w, 6, grid)
        error = (restored[name] - w).abs()
        bound = scale[:, None] * (0.5 + 31 * FP16_REL + 1e-5)
        assert bool((error <= bound).all()), name
        # Every restored value is an integer number of its row's stored (fp16) step.
        steps = restored[name] / scale.to(torch.float16).float()[:, None]
        assert torch.equal(steps, torch.round(steps))


@pytest.mark.parametrize("grid", GRID_MODES)
def test_int6_codes_equal_the_qat_codes_exactly(grid: str) -> None:
    """The export derives q from the same fp32 scale QAT uses, so the codes match bit for bit,
    both for the raw weights and for weights already snapped onto the grid by QAT; only the
    stored scale (fp16) differs from QAT's fp32 one."""
    fmt = _fmt("int6", "zstd", grid)
    state = {n: w for n, w in _state().items() if is_int6_tensor(n, w, fmt)}
    snapped = {n: fake_quantize_rows(w, 6, grid) for n, w in state.items()}
    obj_raw, _ = quantize_state_dict(state, fmt)
    obj_snapped, _ = quantize_state_dict(snapped, fmt)
    restored = dequantize_state_dict(obj_snapped)
    for name, w in state.items():
        q_qat, s_qat = quantize_rows(w, 6, grid)
        assert torch.equal(obj_raw["quantized"][name], q_qat)
        assert torch.equal(obj_snapped["quantized"][name], q_qat)
        # The one documented mismatch: |q| * |fp16(s) - s| between export and QAT forward value.
        drift = (restored[name] - snapped[name]).abs()
        assert bool((drift <= q_qat.abs().float() * s_qat[:, None] * FP16_REL + 1e-9).all())


def test_qat_targets_are_exactly_the_int6_exported_weights() -> None:
    model = _model()
    fmt = _fmt("int6", "zstd")
    targets = qat_target_names(model.named_parameters(), fmt)
    obj, _ = quantize_state_dict(model.state_dict(), fmt)
    assert sorted(targets) == sorted(n for n, meta in obj["qmeta"].items() if meta["bits"] == 6)
    assert len(targets) == 2 * 6


def test_qat_targets_refuse_a_toggle_that_would_do_nothing() -> None:
    model = _model()
    with pytest.raises(ValueError, match="QUANT_FORMAT=int6"):
        qat_target_names(model.named_parameters(), _fmt("int8"))
    with pytest.raises(ValueError, match="QUANT_KEEP_FLOAT_MAX_NUMEL"):
        qat_target_names(model.named_parameters(), ExportFormat(quant="int6", compressor="zstd"))


# --- rules shared by all formats ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f"{f.label}-{f.grid}")
def test_roundtrip_keeps_keys_dtypes_and_exact_tensors(fmt: ExportFormat) -> None:
    state = _state()
    restored = unpack_artifact(pack_artifact(state, fmt)[0])
    assert set(restored) == set(state)
    for name, t in state.items():
        assert restored[name].dtype == t.dtype, name
        assert restored[name].shape == t.shape, name
    for name in state:
        if any(c in name for c in CONTROL_NAMES):
            assert torch.equal(restored[name], state[name]), name
    assert torch.equal(restored["step_counter"], state["step_counter"])
    # Small non-control floats survive through fp16.
    torch.testing.assert_close(
        restored["final_norm.weight"], state["final_norm.weight"].half().float(), rtol=0, atol=0
    )


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f"{f.label}-{f.grid}")
def test_stored_dtypes_of_passthrough_tensors(fmt: ExportFormat) -> None:
    obj, _ = quantize_state_dict(_state(), fmt)
    stored = obj["passthrough"]
    for name in ("skip_weights", "blocks.0.attn_scales", "blocks.1.resid_mix", "blocks.0.attn.q_gain"):
        assert stored[name].dtype == torch.float32, name
    assert stored["final_norm.weight"].dtype == torch.float16
    assert obj["passthrough_orig_dtypes"]["final_norm.weight"] == "float32"
    assert obj["passthrough_orig_dtypes"]["blocks.1.resid_mix"] == "bfloat16"
    assert "skip_weights" not in obj["passthrough_orig_dtypes"]
    assert stored["step_counter"].dtype == torch.int64


def test_passthrough_does_not_carry_the_storage_it_was_sliced_from() -> None:
    big = torch.randn(100_000)
    state = {"skip_weights": big[:64].view(1, 64)}
    blob, stats = pack_artifact(state, _fmt("int8"))
    assert stats["raw_torch_bytes"] < 10_000
    assert torch.equal(unpack_artifact(blob)["skip_weights"], state["skip_weights"])


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f"{f.label}-{f.grid}")
def test_pack_reports_the_blob_size_and_is_deterministic(fmt: ExportFormat) -> None:
    blob, stats = pack_artifact(_state(), fmt)
    assert stats["compressed_bytes"] == len(blob)
    assert stats["raw_torch_bytes"] == len(decompress(blob))
    assert stats["payload_bytes"] < stats["baseline_tensor_bytes"]
    assert pack_artifact(_state(), fmt)[0] == blob


def test_artifact_bytes_are_identical_in_a_fresh_process() -> None:
    code = (
        "import hashlib, sys; sys.path.insert(0, 'tests'); import test_export as t; "
        "print(hashlib.sha256(t.pack_artifact(t._state(), t._fmt('int6', 'zstd'))[0]).hexdigest())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    here = hashlib.sha256(pack_artifact(_state(), _fmt("int6", "zstd"))[0]).hexdigest()
    assert result.stdout.strip() == here


def test_non_finite_weights_are_named() -> None:
    state = _state()
    state["blocks.1.mlp.fc.weight"][3, 5] = float("nan")
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc\.weight.*diverged"):
        quantize_state_dict(state, _fmt("int6", "zstd"))


def test_foreign_artifacts_are_clear_errors() -> None:
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(3)}, buffer)
    with pytest.raises(ValueError, match="__quant_format__"):
        unpack_artifact(compress(buffer.getvalue(), "zlib"))
    with pytest.raises(ValueError, match="not a loadable torch.save archive"):
        unpack_artifact(compress(b"not a torch archive", "zstd"))
    with pytest.raises(ValueError, match="neither a zstd frame"):
        unpack_artifact(b"garbage")


def _baseline_shaped_state() -> dict[str, torch.Tensor]:
    """Zeros in the reference 9x512 model's state_dict layout (vocab 1024, 4 KV heads, MLP 2x,
    tied embeddings kept in bf16), in its parameter order. Byte counts do not depend on values."""
    d, layers, kv, hidden = 512, 9, 256, 1024
    state = {"tok_emb.weight": torch.zeros(1024, d, dtype=torch.bfloat16), "skip_weights": torch.ones(4, d)}
    for i in range(layers):
        p = f"blocks.{i}."
        state.update({
            p + "attn.c_q.weight": torch.zeros(d, d),
            p + "attn.c_k.weight": torch.zeros(kv, d),
            p + "attn.c_v.weight": torch.zeros(kv, d),
            p + "attn.proj.weight": torch.zeros(d, d),
            p + "attn.q_gain": torch.full((8,), 1.5),
            p + "mlp.fc.weight": torch.zeros(hidden, d),
            p + "mlp.proj.weight": torch.zeros(d, hidden),
            p + "attn_scale": torch.ones(d),
            p + "mlp_scale": torch.ones(d),
            p + "resid_mix": torch.ones(2, d),
        })
    return state


def test_int8_matches_the_reference_byte_counts_of_the_baseline_log() -> None:
    """The reference run's own log states its parameter count and its int8 payload and torch.save
    sizes; the same layout through our int8 format must give the same numbers."""
    log = shared_fixture("logs", "2026-03-17_NaiveBaseline__train.log").read_text(encoding="utf-8")
    params = int(re.search(r"^model_params:(\d+)$", log, re.M).group(1))
    sizes = re.search(r"int8\+zlib: \d+ bytes \(payload:(\d+) raw_torch:(\d+)", log)
    payload, raw_torch = map(int, sizes.groups())

    _, stats = pack_artifact(_baseline_shaped_state(), ExportFormat(quant="int8", compressor="zlib"))
    assert stats["param_count"] == params
    assert stats["payload_bytes"] == payload
    # torch.save's container adds a few records around the pickled object; with the same object
    # layout the total matches the reference run's (checked with torch 2.13), so a mismatch means
    # the object layout changed, or torch changed its container format.
    assert stats["raw_torch_bytes"] == raw_torch
    assert stats["num_int8"] == 9 * 6 + 1 and stats["num_passthrough"] == 9 * 4 + 1
