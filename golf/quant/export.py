"""The artifact: every state_dict tensor stored in the format the export policy gives it
(:mod:`golf.quant.policy`), the object ``torch.save``'d and compressed behind a codec header
(:mod:`golf.quant.container`).

Formats (:class:`golf.quant.policy.TensorFormat`): ``raw`` (non-float tensors, as they are),
``float`` passthrough in fp32/fp16/bf16 (the original dtype recorded and restored), and ``int``:
int8 codes of 2..8 bits with per-row fp16 scales or one fp32 scale per tensor, on the relative or
floored grid (techniques.md 2.1), each row clipped at its max |w| (``absmax``, the grid QAT trains
on, :mod:`golf.quant.grid`) or at the reference's 99.99984th percentile of |w| (``percentile``).

The object's layout (its ``__quant_format__``) is the oldest one that can say what is stored, so
that payloads written before the per-tensor policy keep their bytes:

- ``int8_clean_per_row_v1``: the reference's own (techniques.md 1.6), when every tensor is stored
  as the reference stores it. With zlib-9 and no shuffle the artifact is the reference's bare zlib
  stream, byte for byte, so its size compares with the leaderboard's ``int8+zlib`` runs. (One
  extension, as before: a control tensor that is not fp32 gets its dtype recorded so the
  roundtrip restores it; the reference returned such a tensor as fp32.)
- ``int6_attn_mlp_per_row_v1``: golf's int6 format, when int6 absmax rows are the only addition;
  the int6+zstd-22 payload inside the container is the frame golf wrote before the container.
- ``golf_tensor_policy_v1``: anything else; ``qmeta`` records each integer tensor's scheme, bits,
  grid and clip rule.

All three have the keys ``quantized``, ``scales``, ``dtypes``, ``passthrough`` (and ``qmeta``,
``passthrough_orig_dtypes`` when not empty), and one reader dequantizes them all.

The fp16 scale subtlety (techniques.md 2.1): QAT snaps a row to ``s * q`` with ``s`` in fp32; the
export derives the same codes ``q`` from the same fp32 ``s`` (so the codes match QAT's exactly)
and then stores ``s`` as fp16. The roundtrip value ``q * fp16(s)`` therefore differs from the
value trained against by at most ``|q| * |fp16(s) - s| <= c * s * 2**-11`` (``c * s`` is the row
max on the relative grid): far below the half step ``s / 2`` that quantization itself costs.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from golf.model.roles import ParamRole, state_roles
from golf.quant import container
from golf.quant.compress import CodecSpec, ensure_available
from golf.quant.grid import _RELATIVE_MIN_SCALE, clip_range, quantize_rows
from golf.quant.policy import (
    FP16,
    FP32,
    RAW,
    Codes,
    REFERENCE_INT8_ROWS,
    REFERENCE_INT8_TENSOR,
    ExportPolicy,
    TensorFormat,
)

REFERENCE_LAYOUT = "int8_clean_per_row_v1"
INT6_LAYOUT = "int6_attn_mlp_per_row_v1"
POLICY_LAYOUT = "golf_tensor_policy_v1"
LAYOUTS = (REFERENCE_LAYOUT, INT6_LAYOUT, POLICY_LAYOUT)

INT8_CLIP_PERCENTILE = 99.99984
INT8_CLIP_Q = INT8_CLIP_PERCENTILE / 100.0
PER_ROW_SCALE_DTYPE = torch.float16
FLOAT_STORE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# torch.quantile refuses a single reduction over more elements than this.
_QUANTILE_MAX_NUMEL = 2**24


@dataclass(frozen=True)
class ExportFormat:
    """The export a run is configured with: the base rules' format, the codec, and the names the
    log, the metrics and the artifact file get from them."""

    quant: str
    """``"int8"`` (the reference export) or ``"int6"`` (attention/MLP matrices on the int6 grid)."""
    codec: CodecSpec
    grid: str = "relative"
    """Grid convention of the int6 rows (:data:`golf.quant.grid.GRID_MODES`)."""
    keep_float_max_numel: int = 65_536
    """Float tensors with at most this many elements are stored as floats instead of quantized."""

    def __post_init__(self) -> None:
        if not isinstance(self.codec, CodecSpec):
            raise ValueError(f"export codec {self.codec!r} is not a CodecSpec: build it with golf.quant.codec_spec")
        self.base_policy()  # checks quant, grid and keep_float_max_numel

    @property
    def label(self) -> str:
        """Name in log lines: ``int8+zlib`` (the reference's text), ``int6+zstd-22``,
        ``int6+lzma-9e``, ``int6+brotli-11+shuffle2``."""
        return f"{self.quant}+{self.codec.label}"

    @property
    def metric_prefix(self) -> str:
        """Prefix of the roundtrip metric, e.g. ``final_int8_zlib`` (the caller adds ``_roundtrip``)."""
        return f"final_{self.quant}_{self.codec.name}"

    @property
    def filename(self) -> str:
        """Artifact file name, e.g. ``final_model.int8.ptz``."""
        return f"final_model.{self.quant}.ptz"

    def base_policy(self) -> ExportPolicy:
        """The base rules of this format, without any technique's overrides."""
        return ExportPolicy(quant=self.quant, grid=self.grid, keep_float_max_numel=self.keep_float_max_numel)


def format_key(fmt: TensorFormat) -> str:
    """The short name a format is counted under: ``int6``, ``int8``, ``fp16``, ``fp32``, ``raw``."""
    if fmt.kind == "int":
        return f"int{fmt.bits}"
    return fmt.dtype if fmt.kind == "float" else "raw"


def _key_order(key: str) -> tuple[int, int, str]:
    if key.startswith("int"):
        return (0, int(key[3:]), key)
    return (1 if key != "raw" else 2, 0, key)


@dataclass
class ExportStats:
    """What the export stored: tensor counts and bytes per format, and the artifact's sizes."""

    param_count: int = 0
    num_tensors: int = 0
    baseline_tensor_bytes: int = 0
    """The state_dict's tensors as they are."""
    payload_bytes: int = 0
    """The stored tensors (codes, scales, passthrough)."""
    formats: dict[str, int] = field(default_factory=dict)
    """Tensors per format key (:func:`format_key`)."""
    format_bytes: dict[str, int] = field(default_factory=dict)
    """Payload bytes per format key."""
    layout: str = ""
    raw_torch_bytes: int = 0
    """The torch.save output (0 until packed)."""
    compressed_bytes: int = 0
    """The artifact's model bytes (0 until packed)."""
    codec: str = ""
    """The codec's label (empty until packed)."""
    methods: dict[str, int] = field(default_factory=dict)
    """Tensors whose codes a technique supplied (GPTQ, clip search, pruning), per method."""
    target: dict[str, Any] = field(default_factory=dict)
    """A byte target's fitting: what was done to fit, and ``shortfall_message`` when it could not."""

    def count(self, fmt: TensorFormat, nbytes: int) -> None:
        key = format_key(fmt)
        self.formats[key] = self.formats.get(key, 0) + 1
        self.format_bytes[key] = self.format_bytes.get(key, 0) + nbytes
        self.payload_bytes += nbytes

    def summary(self) -> str:
        """Tensor counts per format for the log, e.g. ``int6:18 int8:2 fp16:5 fp32:40 raw:1``."""
        return " ".join(f"{key}:{self.formats[key]}" for key in sorted(self.formats, key=_key_order))

    def as_dict(self) -> dict[str, Any]:
        """For train_state.json / result.json."""
        return {
            "param_count": self.param_count, "num_tensors": self.num_tensors,
            "baseline_tensor_bytes": self.baseline_tensor_bytes, "payload_bytes": self.payload_bytes,
            "raw_torch_bytes": self.raw_torch_bytes, "compressed_bytes": self.compressed_bytes,
            "layout": self.layout, "codec": self.codec, "formats": dict(self.formats),
            "format_bytes": dict(self.format_bytes), "summary": self.summary(),
            **({"methods": dict(self.methods)} if self.methods else {}),
            **({"target": dict(self.target)} if self.target else {}),
        }


@dataclass(frozen=True)
class UnpackedArtifact:
    state_dict: dict[str, Tensor]
    """The dequantized state_dict: the original keys, shapes and dtypes."""
    codec: CodecSpec
    """The codec the artifact names (a headerless one: zlib-9 or zstd-22, what golf wrote then)."""
    headerless: bool
    """True for the reference's bare zlib stream and artifacts from before the container."""
    layout: str
    """The object's ``__quant_format__``."""


# --- which format each tensor gets --------------------------------------------------------------


def export_formats(
    state_dict: Mapping[str, Tensor], roles: Mapping[str, ParamRole], policy: ExportPolicy
) -> dict[str, TensorFormat]:
    """The format ``policy`` gives each state_dict entry; ``roles`` are the parameters' roles
    (:func:`golf.model.roles.parameter_roles`), every other entry is a buffer."""
    stray = [name for name in roles if name not in state_dict]
    if stray:
        shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        raise ValueError(
            f"roles name {shown}, which the state_dict does not have: pass the roles of the model "
            "the state_dict came from (parameter_roles of the uncompiled model)"
        )
    entry_roles = state_roles(list(state_dict), roles)
    formats = {}
    for name, tensor in state_dict.items():
        fmt = policy.format_for(name, tensor, entry_roles[name])
        _check_storable(name, tensor, fmt)
        formats[name] = fmt
    return formats


def _check_storable(name: str, t: Tensor, fmt: TensorFormat) -> None:
    if fmt.kind != "raw" and not t.is_floating_point():
        raise ValueError(
            f"the export policy gives {name!r} ({t.dtype}) the format {fmt}, but only raw can store a "
            "non-float tensor: fix the technique's export_policy override"
        )
    if fmt.kind == "int" and fmt.scheme == "per_row" and t.ndim < 2:
        raise ValueError(
            f"the export policy gives {name!r} (shape {tuple(t.shape)}) per-row scales, but it has no "
            "rows: use per_tensor or a float format for vectors and scalars"
        )


def _reference_stores(t: Tensor, fmt: TensorFormat) -> bool:
    """Whether the reference export stores ``t`` this way (so its object layout can say it)."""
    if fmt == RAW:
        return not t.is_floating_point()
    if fmt == FP32:
        return True
    if fmt == FP16:
        return t.dtype in (torch.float32, torch.bfloat16, torch.float16)
    if fmt == REFERENCE_INT8_ROWS:
        return t.ndim == 2
    return fmt == REFERENCE_INT8_TENSOR and t.ndim != 2


def _is_legacy_int6(t: Tensor, fmt: TensorFormat) -> bool:
    return fmt.kind == "int" and fmt.bits == 6 and fmt.scheme == "per_row" and fmt.clip == "absmax" and t.ndim == 2


def _layout(state: Mapping[str, Tensor], formats: Mapping[str, TensorFormat]) -> str:
    has_int6 = False
    for name, t in state.items():
        if _reference_stores(t, formats[name]):
            continue
        if not _is_legacy_int6(t, formats[name]):
            return POLICY_LAYOUT
        has_int6 = True
    return INT6_LAYOUT if has_int6 else REFERENCE_LAYOUT


def _qmeta(layout: str, fmt: TensorFormat) -> dict[str, object] | None:
    per_row = fmt.scheme == "per_row"
    if layout == REFERENCE_LAYOUT:
        return {"scheme": "per_row", "axis": 0} if per_row else None
    if layout == INT6_LAYOUT:
        meta: dict[str, object] = {"scheme": fmt.scheme, **({"axis": 0} if per_row else {}), "bits": fmt.bits}
        return {**meta, "grid": fmt.grid} if fmt.bits == 6 else meta
    # Per row here means one scale per index of every dimension but the last.
    return {"scheme": fmt.scheme, "bits": fmt.bits, "grid": fmt.grid, "clip": fmt.clip}


# --- quantizers -------------------------------------------------------------------------------


def _row_percentile(a: Tensor, q: float) -> Tensor:
    """The ``q`` quantile of each row of ``a`` (rows = all but the last dim), in chunks of rows
    that torch.quantile accepts (each row's quantile does not depend on the other rows)."""
    rows = a.reshape(-1, a.shape[-1])
    if rows.numel() == 0:
        return torch.zeros(a.shape[:-1], dtype=torch.float32)
    per_chunk = max(_QUANTILE_MAX_NUMEL // max(rows.shape[1], 1), 1)
    if rows.shape[1] > _QUANTILE_MAX_NUMEL:
        raise ValueError(
            f"a row of {rows.shape[1]} elements is too long for the percentile clip (torch.quantile "
            f"takes at most {_QUANTILE_MAX_NUMEL}): use the absmax clip for this tensor"
        )
    parts = [torch.quantile(chunk, q, dim=1) for chunk in rows.split(per_chunk)]
    return (parts[0] if len(parts) == 1 else torch.cat(parts)).reshape(a.shape[:-1])


def _quantize_rows_percentile(t32: Tensor, bits: int, grid: str) -> tuple[Tensor, Tensor]:
    """Per-row codes with the reference's percentile clip; for int8 on the floored grid this is
    the reference's per-row int8 exactly (clip, scale ``max(clip/127, 1/127)``, codes in +-127)."""
    c = clip_range(bits)
    clip_abs = _row_percentile(t32.abs(), INT8_CLIP_Q)
    bound = clip_abs.unsqueeze(-1)
    clipped = torch.maximum(torch.minimum(t32, bound), -bound)
    if grid == "floored":
        scale = (clip_abs / c).clamp_min(1.0 / c)
    else:
        scale = (clip_abs / c).clamp_min(_RELATIVE_MIN_SCALE)
    q = torch.clamp(torch.round(clipped / scale.unsqueeze(-1)), -c, c).to(torch.int8).contiguous()
    return q, scale


def _quantize_per_tensor(name: str, t32: Tensor, fmt: TensorFormat) -> tuple[Tensor, Tensor]:
    """One fp32 scale for the whole tensor. The reference's (int8, percentile, relative, and a
    scale of 1 for an all-zero tensor) is reproduced exactly; the clip value is taken as a Python
    float, as the reference does, so the scale rounds the same way."""
    c = clip_range(fmt.bits)
    if not t32.numel():
        clip_abs = 0.0
    elif fmt.clip == "absmax":
        clip_abs = float(t32.abs().max().item())
    else:
        if t32.numel() > _QUANTILE_MAX_NUMEL:
            raise ValueError(
                f"tensor {name!r} (shape {tuple(t32.shape)}) is too large for a per-tensor percentile "
                f"scale (torch.quantile takes at most {_QUANTILE_MAX_NUMEL} elements): store it as "
                "2-D matrices (one per layer) so it gets per-row scales, or use the absmax clip"
            )
        clip_abs = float(torch.quantile(t32.abs().flatten(), INT8_CLIP_Q).item())
    if fmt.grid == "floored":
        step = max(clip_abs / c, 1.0 / c)
    else:
        step = clip_abs / c if clip_abs > 0 else 1.0
    scale = torch.tensor(step, dtype=torch.float32)
    clipped = torch.clamp(t32, -clip_abs, clip_abs)
    q = torch.clamp(torch.round(clipped / scale), -c, c).to(torch.int8).contiguous()
    return q, scale


def quantize_tensor(name: str, t: Tensor, fmt: TensorFormat) -> tuple[Tensor, Tensor]:
    """Round-to-nearest codes and stored scales of one tensor in integer format ``fmt`` (what the
    export stores when no technique supplies codes); per-row scales come back as fp16."""
    return _quantize(name, t, fmt)


def code_bounds(fmt: TensorFormat) -> tuple[int, int]:
    """The lowest and highest code a per-row integer format may store (relative rows may reach
    ``-(c+1)``, techniques.md 2.1)."""
    c = clip_range(fmt.bits)
    return (-(c + 1) if fmt.grid == "relative" else -c), c


def _checked_codes(name: str, t: Tensor, fmt: TensorFormat, codes: Codes) -> tuple[Tensor, Tensor]:
    """A technique's codes, refused unless they fit the tensor and its format's grid."""
    low, high = code_bounds(fmt)
    q, scale = codes.q.detach().to("cpu"), codes.scale.detach().to("cpu")
    if fmt.scheme != "per_row" or q.dtype != torch.int8 or tuple(q.shape) != tuple(t.shape) \
            or tuple(scale.shape) != tuple(t.shape[:-1]):
        raise ValueError(
            f"{codes.method} supplied codes {tuple(q.shape)} {q.dtype} with scales {tuple(scale.shape)} for "
            f"{name!r} {tuple(t.shape)} in format {fmt}: a coder must return int8 codes shaped like the "
            "tensor and one scale per row of a per-row format"
        )
    if q.numel() and (int(q.min()) < low or int(q.max()) > high):
        raise ValueError(
            f"{codes.method} codes of {name!r} span [{int(q.min())}, {int(q.max())}], outside the "
            f"int{fmt.bits} grid [{low}, {high}] its format {fmt} stores: fix the coder"
        )
    scale16 = scale.to(PER_ROW_SCALE_DTYPE)
    if not torch.isfinite(scale16).all():
        raise ValueError(f"{codes.method} gave {name!r} a scale outside the fp16 range: the weights have blown up")
    return q.contiguous(), scale16.contiguous()


def _quantize(name: str, t: Tensor, fmt: TensorFormat) -> tuple[Tensor, Tensor]:
    if fmt.scheme == "per_tensor":
        return _quantize_per_tensor(name, t.float(), fmt)
    if fmt.clip == "absmax":
        q, scale = quantize_rows(t, fmt.bits, fmt.grid)  # QAT's codes, bit for bit
    else:
        q, scale = _quantize_rows_percentile(t.float(), fmt.bits, fmt.grid)
    scale16 = scale.to(PER_ROW_SCALE_DTYPE)
    if not torch.isfinite(scale16).all():
        raise ValueError(
            f"tensor {name!r} has a row whose step ({float(scale.max()):.3g}) is above the fp16 range of "
            f"its stored scale ({fmt}): the weights have blown up; check the run's learning rate and "
            "loss curve"
        )
    return q, scale16.contiguous()


def _check_finite(state_dict: Mapping[str, Tensor]) -> None:
    bad = [name for name, t in state_dict.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(
            f"cannot quantize non-finite weights (NaN or inf) in {shown}: training diverged; "
            "lower the learning rate or check the loss curve before exporting"
        )


def _nbytes(t: Tensor) -> int:
    return int(t.numel()) * int(t.element_size())


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --- the artifact object ------------------------------------------------------------------------


def quantize_state_dict(
    state_dict: Mapping[str, Tensor], roles: Mapping[str, ParamRole], policy: ExportPolicy
) -> tuple[dict[str, object], ExportStats]:
    """The object to ``torch.save``: each tensor in the format ``policy`` gives it (see
    :func:`export_formats`), and the stats of what was stored."""
    _check_finite(state_dict)
    state = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    formats = export_formats(state, roles, policy)
    supplied = {
        name: codes for name, fmt in formats.items() if fmt.kind == "int" and fmt.scheme == "per_row"
        and (codes := policy.codes_for(name, state[name], fmt)) is not None
    }
    # Codes that are not round-to-nearest's are recorded per tensor, which only the policy layout can say.
    layout = POLICY_LAYOUT if supplied else _layout(state, formats)
    quantized: dict[str, Tensor] = {}
    scales: dict[str, Tensor] = {}
    dtypes: dict[str, str] = {}
    passthrough: dict[str, Tensor] = {}
    orig_dtypes: dict[str, str] = {}
    qmeta: dict[str, dict[str, object]] = {}
    stats = ExportStats(layout=layout)

    for name, t in state.items():
        fmt = formats[name]
        stats.param_count += int(t.numel())
        stats.num_tensors += 1
        stats.baseline_tensor_bytes += _nbytes(t)
        if fmt.kind == "int":
            if name in supplied:
                q, s = _checked_codes(name, t, fmt, supplied[name])
                stats.methods[supplied[name].method] = stats.methods.get(supplied[name].method, 0) + 1
            else:
                q, s = _quantize(name, t, fmt)
            quantized[name], scales[name], dtypes[name] = q, s, _dtype_name(t.dtype)
            meta = _qmeta(layout, fmt)
            if meta is not None:
                qmeta[name] = {**meta, "method": supplied[name].method} if name in supplied else meta
            stats.count(fmt, _nbytes(q) + _nbytes(s))
            continue
        if fmt.kind == "float":
            stored = t.to(FLOAT_STORE_DTYPES[fmt.dtype])
            if stored.dtype != t.dtype:
                orig_dtypes[name] = _dtype_name(t.dtype)
        else:
            stored = t
        # A clone owns exactly its own storage: torch.save writes a view's whole storage, and the
        # artifact must not grow with whatever the tensor happened to be sliced from.
        passthrough[name] = stored.clone()
        stats.count(fmt, _nbytes(stored))

    obj: dict[str, object] = {
        "__quant_format__": layout,
        "quantized": quantized,
        "scales": scales,
        "dtypes": dtypes,
        "passthrough": passthrough,
    }
    if qmeta:
        obj["qmeta"] = qmeta
    if orig_dtypes:
        obj["passthrough_orig_dtypes"] = orig_dtypes
    return obj, stats


def dequantize_state_dict(obj: Mapping[str, object]) -> dict[str, Tensor]:
    """The state_dict back from :func:`quantize_state_dict`'s object (any of :data:`LAYOUTS`):
    same keys, same dtypes."""
    layout = obj.get("__quant_format__") if isinstance(obj, Mapping) else None
    if layout not in LAYOUTS:
        raise ValueError(
            f"not a golf quantized state_dict (__quant_format__={layout!r}, expected one of "
            f"{LAYOUTS}): it was written by another exporter; re-export it with golf.quant"
        )
    out: dict[str, Tensor] = {}
    orig_dtypes = obj.get("passthrough_orig_dtypes", {})
    for name, q in obj["quantized"].items():
        s = obj["scales"][name]
        if s.ndim == 0:
            values = q.float() * float(s.item())
        elif tuple(s.shape) == tuple(q.shape[:-1]):
            values = q.float() * s.float().unsqueeze(-1)
        else:
            raise ValueError(
                f"tensor {name!r}: scales of shape {tuple(s.shape)} do not fit codes of shape "
                f"{tuple(q.shape)}: the artifact is corrupt; re-create it with the export step"
            )
        out[name] = values.to(dtype=getattr(torch, obj["dtypes"][name])).contiguous()
    for name, t in obj["passthrough"].items():
        restored = t.detach().to("cpu").contiguous()
        if name in orig_dtypes:
            restored = restored.to(dtype=getattr(torch, orig_dtypes[name])).contiguous()
        out[name] = restored
    return out


def pack_artifact(
    state_dict: Mapping[str, Tensor], roles: Mapping[str, ParamRole], policy: ExportPolicy, codec: CodecSpec
) -> tuple[bytes, ExportStats]:
    """The artifact of ``state_dict``: each tensor in its policy format, compressed with ``codec``
    behind the container header (or the reference's bare zlib stream, see the module doc).

    A codec whose package is missing fails here, before any quantization work.
    """
    ensure_available(codec)
    obj, stats = quantize_state_dict(state_dict, roles, policy)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    raw = buffer.getvalue()
    blob = container.encode(raw, codec, reference_object=stats.layout == REFERENCE_LAYOUT)
    stats.raw_torch_bytes, stats.compressed_bytes, stats.codec = len(raw), len(blob), codec.label
    return blob, stats


def unpack_artifact(blob: bytes) -> UnpackedArtifact:
    """The dequantized state_dict of an artifact (this format or the headerless older ones) and
    the codec it names; a foreign or corrupt file is a ValueError that says so."""
    decoded = container.decode(blob)
    try:
        obj = torch.load(io.BytesIO(decoded.raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or foreign archive
        raise ValueError(
            f"the decompressed artifact is not a loadable torch.save archive ({exc}): the file is "
            "corrupt or not a golf artifact; re-create it with the export step"
        ) from exc
    state = dequantize_state_dict(obj)
    return UnpackedArtifact(state, decoded.codec, decoded.headerless, obj["__quant_format__"])
