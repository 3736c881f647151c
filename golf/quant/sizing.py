"""Artifact bytes before training (issue 12, item 2): predicted from a config alone.

The model is built on the meta device (shapes, no values), every tensor the artifact stores is
given its format by the run's own export policy (the base rules plus every active technique's
``export_policy`` hook, after the techniques' ``artifact_state``, exactly as the export asks), and
the stored bytes are counted per group: integer codes per width, per-row fp16 scales, per-tensor
scales, fp16/fp32 passthrough, raw tensors. Compressed bytes are then

    sum over groups of stored bytes x the group's compressed ratio
    + the torch.save structure (the artifact object with one-element stand-in tensors, really
      serialized) x the codec's compressed ratio for it
    + the code bytes (the config's real bundle, :mod:`golf.bundle`).

Integer codes: a b-bit code stored in an int8 compresses to about ``(b - saved) / 8`` bytes, where
``saved`` (bits per code the codec removes) depends on the codec and on how trained the weights are:
weights a few dozen steps from their init (smoke runs) are Gaussian-like and their codes have a
different entropy than those of a model trained for 600 s on 8xH100 (heavier tails; more training
makes the codes *less* compressible, see the 1xH100 baseline logs at ~15.05 MB against ~15.82 MB
for 8xH100). So there are two calibrations, chosen by the training the config plans (tokens per
parameter, :data:`TRAINED_TOKENS_PER_PARAM`), and each states the interval that covered every
artifact it was calibrated on. ``benchmarks/size_prediction.py`` reproduces every constant below.

No Ray here, and nothing trains: a full-scale config takes well under a second once the golf
modules are loaded (the bundle's minified modules are cached across configs).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from golf.contract import SIZE_LIMIT_BYTES

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.compress import CodecSpec

BRIEF, TRAINED = "brief", "trained"
TRAINED_TOKENS_PER_PARAM = 50.0
"""Planned training tokens (ITERATIONS x TRAIN_BATCH_TOKENS) per parameter from which a config's
weights count as trained: smoke runs plan ~1, the challenge's 8xH100 runs ~400-600."""

# Bits per integer code that the codec saves, by (regime, codec, group): a group is a code width
# (``int6``), or ``int8 embedding`` for embeddings; a group with no entry of its own takes its
# width's, else the codec's (group None). Sources:
#  brief: golf's own smoke exports (benchmarks/size_prediction.py --calibrate runs them), each
#    group of codes compressed on its own; the mean over the runs. Smoke int8 matrices sit on the
#    floored grid's 1/127 steps with small weights, so they compress far better than int6 rows.
#    The codec's fallback (None, for widths no smoke run stores, e.g. int5) is its int6 value; for
#    zlib, which no int6 smoke run used, zstd's int6 value plus zlib - zstd on int8 matrices.
#  trained, zlib: the 8xH100 int8+zlib baseline records in ../shared/fixtures/logs (NaiveBaseline,
#    LongContextSeq2048 x2, SlidingWindowEval, TrainingOptSeq4096 x2, LoRA_TTT v0/v2/v3): mean fit.
#  trained, zstd: the 11-layer XSA4 records of 2026-03-20/21 (4 logs, 26,829,913 parameters: int6
#    attention/MLP, int8 embedding, zstd-22); its int5: 10L_Int5MLP_MuonWD04_SWA50 seeds 1337 and 42
#    (the pr326 stack: int6 attention, int5 MLP, 5% magnitude pruning, zstd-22) with int6 as fitted.
#  trained, brotli: MuonEqR_DepthRecurrence_WD090_AllInt6 seeds 0 and 42 (the pr1260 stack: GPTQ
#    mixed int5/int6, brotli-11 + byte shuffle): mean fit.
#  trained, lzma: no real record maps onto a golf config: zstd's trained value plus lzma - zstd on
#    the smoke exports' int6 codes (int5: lzma's value plus zstd's int5 - int6).
# A record fit gives one number for its codes, so the trained values are per codec (and int5).
SAVED_BITS: dict[tuple[str, str, str | None], float] = {
    (BRIEF, "zlib", "int8"): 2.100,
    (BRIEF, "zlib", "int8 embedding"): 0.672,
    (BRIEF, "zlib", None): 0.272,
    (BRIEF, "zstd", "int6"): 0.359,
    (BRIEF, "zstd", "int8"): 2.187,
    (BRIEF, "zstd", "int8 embedding"): 0.687,
    (BRIEF, "zstd", None): 0.359,
    (BRIEF, "lzma", "int6"): 0.269,
    (BRIEF, "lzma", "int8"): 2.200,
    (BRIEF, "lzma", "int8 embedding"): 0.637,
    (BRIEF, "lzma", None): 0.269,
    (BRIEF, "brotli", "int6"): 0.373,
    (BRIEF, "brotli", "int8"): 2.286,
    (BRIEF, "brotli", "int8 embedding"): 0.716,
    (BRIEF, "brotli", None): 0.373,
    (TRAINED, "zlib", None): 0.615,
    (TRAINED, "zstd", None): 1.452,
    (TRAINED, "zstd", "int5"): 1.057,
    (TRAINED, "lzma", None): 1.362,
    (TRAINED, "lzma", "int5"): 0.967,
    (TRAINED, "brotli", None): 2.401,
}

# Compressed bytes per stored byte of the float groups, by (group, codec, shuffled). Source: golf's
# smoke exports, each group compressed on its own (means over the runs); trained float weights are
# assumed to compress alike, which the trained intervals absorb.
FLOAT_RATIOS: dict[tuple[str, str, bool], float] = {
    ("fp16", "zlib", False): 0.920,
    ("fp16", "zstd", False): 0.917,
    ("fp16", "lzma", False): 0.888,
    ("fp16", "brotli", True): 0.840,
    ("fp32", "zlib", False): 0.897,
    ("fp32", "zstd", False): 0.896,
    ("fp32", "lzma", False): 0.845,
    ("fp32", "brotli", True): 0.829,
    ("scale_fp16", "zlib", False): 0.015,
    ("scale_fp16", "zstd", False): 0.450,
    ("scale_fp16", "lzma", False): 0.447,
    ("scale_fp16", "brotli", True): 0.372,
}
DEFAULT_FLOAT_RATIO = 1.0
"""Where no smoke export measured a (group, codec, shuffle): stored bytes as they are."""

# Compressed bytes per byte of the artifact's structure (torch.save's pickle and zip records, the
# bytes that are not tensor data), by codec. Source: golf's smoke exports: the artifact's bytes
# less its groups compressed on their own, over the structure bytes of its stand-in object.
STRUCTURE_RATIOS: dict[str, float] = {"zlib": 0.331, "zstd": 0.355, "lzma": 0.166, "brotli": 0.237}
DEFAULT_STRUCTURE_RATIO = 0.35

# Half-width of the interval, as a fraction of the predicted model bytes, and what it covered
# (benchmarks/size_prediction.py prints every error):
#  brief: the 13 smoke exports' largest model-bytes error (1.5%) x 1.5, rounded up;
#  trained: the 20 real records that map onto golf configs (17 fitted: largest error 1.4%; 3 held
#    out: 0.36% and 2.95%, the latter with an assumed export layout): the largest, rounded up.
INTERVAL: dict[str, float] = {BRIEF: 0.025, TRAINED: 0.03}
COVERAGE: dict[str, str] = {
    BRIEF: "it held all 13 golf smoke exports calibrated on",
    TRAINED: "it held all 20 real 8xH100 records that map onto golf configs, 3 of them held out",
}


@dataclass(frozen=True)
class StoredGroup:
    """One kind of stored bytes: how many tensors and elements, their bytes before and after compression."""

    tensors: int
    elements: int
    stored_bytes: int
    compressed_bytes: float


@dataclass(frozen=True)
class SizePrediction:
    """The artifact's predicted bytes (model + code), its interval and where the bytes come from."""

    total: int
    low: int
    high: int
    coverage: str
    model_bytes: int
    code_bytes: int
    overhead_bytes: int
    """torch.save structure and container header, compressed."""
    groups: dict[str, StoredGroup]
    regime: str
    export: str
    """The export's log label, e.g. ``int6+zstd-22``."""
    param_count: int
    limit: int = SIZE_LIMIT_BYTES
    target_bytes: int = 0
    """TARGET_BYTES of the config: the export narrows and prunes to fit it (0: none)."""
    notes: tuple[str, ...] = ()

    @property
    def surely_over_limit(self) -> bool:
        """Even the interval's low end is over the limit (what a sweep refuses)."""
        return self.low > self.limit


@dataclass
class _Count:
    tensors: int = 0
    elements: int = 0
    stored_bytes: int = 0


@dataclass
class ExportCount:
    """What the export of a config stores, counted on the meta device."""

    groups: dict[str, _Count] = field(default_factory=dict)
    int_bits: dict[int, int] = field(default_factory=dict)
    """Integer code elements per width."""
    group_of: dict[str, str] = field(default_factory=dict)
    """The group of each integer tensor (``int8``, ``int8 embedding``, ``int6``, ...)."""
    param_count: int = 0
    stand_in: dict[str, object] = field(default_factory=dict)
    """The artifact object with one-element tensors: its structure, not its data."""
    reference_layout: bool = False
    narrowable: list[int] = field(default_factory=list)
    """Element counts of the matrices a mixed int5/int6 export chooses among after training."""
    narrowed: int = 0
    """How many of them it narrows by a bit."""

    def add(self, key: str, elements: int, stored_bytes: int, tensors: int = 1) -> None:
        count = self.groups.setdefault(key, _Count())
        count.tensors += tensors
        count.elements += elements
        count.stored_bytes += stored_bytes


def regime_of(cfg: GolfConfig, param_count: int) -> str:
    """``trained`` when the config plans at least :data:`TRAINED_TOKENS_PER_PARAM` tokens per parameter."""
    tokens = cfg.iterations * cfg.train_batch_tokens
    return TRAINED if tokens >= TRAINED_TOKENS_PER_PARAM * max(param_count, 1) else BRIEF


def count_export(cfg: GolfConfig) -> ExportCount:
    """Build ``cfg``'s model on the meta device and count what its export stores, per format."""
    from golf.distributed import DistContext
    from golf.model.roles import Role
    from golf.quant.export import _layout, _qmeta, export_formats
    from golf.quant.export import REFERENCE_LAYOUT
    from golf.techniques import TechniqueSet
    from golf.train import assemble_model, export_policy

    # Orthogonal init needs values (a QR decomposition); it changes no shape, so it is left out.
    shaped = dataclasses.replace(cfg, ortho_init="off") if getattr(cfg, "ortho_init", "off") != "off" else cfg
    techniques = TechniqueSet(shaped)
    policy = export_policy(shaped, techniques)
    meta = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("meta"))
    with torch.device("meta"):
        built = assemble_model(shaped, meta, techniques, policy, log=lambda line: None)
        state, roles = techniques.artifact_state(built.base.state_dict(), built.roles)
    formats = export_formats(state, roles, policy)
    layout = _layout(state, formats)

    count = ExportCount(param_count=sum(p.numel() for p in built.base.parameters()),
                        reference_layout=layout == REFERENCE_LAYOUT)
    obj: dict[str, Any] = {"__quant_format__": layout, "quantized": {}, "scales": {}, "dtypes": {},
                           "passthrough": {}}
    qmeta: dict[str, object] = {}
    orig: dict[str, str] = {}
    float_dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    for name, t in state.items():
        fmt, n = formats[name], int(t.numel())
        if fmt.kind == "int":
            # Embeddings are trained by Adam at their own LR, not Muon: their codes compress differently.
            embedding = name in roles and roles[name].role is Role.EMBEDDING
            key = f"int{fmt.bits}{' embedding' if embedding else ''}"
            count.add(key, n, n)
            count.group_of[name] = key
            count.int_bits[fmt.bits] = count.int_bits.get(fmt.bits, 0) + n
            if fmt.scheme == "per_row":
                rows = n // max(int(t.shape[-1]), 1)
                count.add("scale_fp16", rows, 2 * rows)
            else:
                count.add("scale_fp32", 1, 4)
            obj["quantized"][name] = torch.zeros(1, dtype=torch.int8)
            obj["scales"][name] = torch.zeros(1, dtype=torch.float16 if fmt.scheme == "per_row" else torch.float32)
            obj["dtypes"][name] = str(t.dtype).removeprefix("torch.")
            meta_entry = _qmeta(layout, fmt)
            if meta_entry is not None:
                qmeta[name] = meta_entry
        elif fmt.kind == "float":
            dtype = float_dtypes[fmt.dtype]
            size = torch.empty((), dtype=dtype).element_size()
            count.add(fmt.dtype, n, n * size)
            obj["passthrough"][name] = torch.zeros(1, dtype=dtype)
            if dtype != t.dtype:
                orig[name] = str(t.dtype).removeprefix("torch.")
        else:
            count.add("raw", n, n * t.element_size())
            obj["passthrough"][name] = torch.zeros(1, dtype=t.dtype)
    if qmeta:
        obj["qmeta"] = qmeta
    if orig:
        obj["passthrough_orig_dtypes"] = orig
    count.stand_in = obj
    _count_mixed_quant(shaped, techniques, built.base, count)
    return count


def _count_mixed_quant(cfg: GolfConfig, techniques: Any, model: torch.nn.Module, count: ExportCount) -> None:
    """GPTQ's mixed allocation narrows all but the N_INT6_LAYERS most sensitive matrices to int5
    after training (by Hessian trace); which ones is unknown before, how many is not."""
    if not getattr(cfg, "mixed_quant", False):
        return
    gptq = next((t for t in techniques if hasattr(t, "targets") and hasattr(t, "low_bits")), None)
    if gptq is None:
        return
    targets = gptq.targets(model)
    sizes = [int(m.weight.numel()) for m in targets.values()]
    count.narrowable = sorted(sizes)
    count.narrowed = max(len(sizes) - cfg.n_int6_layers, 0)


def _float_ratio(group: str, codec: CodecSpec) -> float:
    shuffled = codec.shuffle > 0
    # A stride the smoke exports did not measure with this codec: its measurement the other way.
    return FLOAT_RATIOS.get((group, codec.name, shuffled),
                            FLOAT_RATIOS.get((group, codec.name, not shuffled), DEFAULT_FLOAT_RATIO))


def structure_bytes(count: ExportCount) -> int:
    """The artifact's torch.save bytes that are not tensor data: its stand-in object serialized,
    less the stand-ins' own one element each."""
    buffer = io.BytesIO()
    torch.save(count.stand_in, buffer)
    data = sum(t.numel() * t.element_size() for part in ("quantized", "scales", "passthrough")
               for t in count.stand_in.get(part, {}).values())
    return buffer.tell() - data


def overhead_bytes(count: ExportCount, codec: CodecSpec) -> int:
    """The artifact's structure (pickle, zip records, container header) once compressed."""
    return round(structure_bytes(count) * STRUCTURE_RATIOS.get(codec.name, DEFAULT_STRUCTURE_RATIO))


def code_width(group: str) -> int:
    """The code width of an integer group key: ``int8 embedding`` -> 8."""
    return int(group[3:].split()[0])


def saved_bits_key(regime: str, codec: str, group: str,
                   table: Mapping[tuple[str, str, str | None], float] = SAVED_BITS) -> tuple[str, str, str | None]:
    """The entry of ``table`` an integer group takes: its own, else its width's, else the codec's."""
    for key in (group, f"int{code_width(group)}"):
        if (regime, codec, key) in table:
            return (regime, codec, key)
    return (regime, codec, None)


def saved_bits(regime: str, codec: str, group: str) -> float:
    """Bits per code of an integer group that ``codec`` saves (:data:`SAVED_BITS`)."""
    return SAVED_BITS[saved_bits_key(regime, codec, group)]


def predict_model_bytes(
    count: ExportCount, codec: CodecSpec, regime: str,
) -> tuple[float, float, float, dict[str, StoredGroup], int]:
    """(point, low, high) model bytes of a counted export, its groups, and the overhead bytes."""
    groups: dict[str, StoredGroup] = {}
    total = 0.0
    for key, c in sorted(count.groups.items()):
        if key.startswith("int"):
            bits = code_width(key)
            compressed = c.elements * max(bits - saved_bits(regime, codec.name, key), 0.5) / 8
        else:
            compressed = c.stored_bytes * _float_ratio(key, codec)
        groups[key] = StoredGroup(c.tensors, c.elements, c.stored_bytes, compressed)
        total += compressed
    overhead = overhead_bytes(count, codec)
    point = total + overhead
    low, high = point, point
    if count.narrowed:
        # Narrowing by one bit saves one bit per element of the matrices it picks: at most the
        # largest ones', at least the smallest ones'; the point takes the mean matrix.
        k, sizes = count.narrowed, count.narrowable
        most, least = sum(sizes[-k:]) / 8, sum(sizes[:k]) / 8
        mean = k * (sum(sizes) / len(sizes)) / 8
        point, low, high = point - mean, low - most, high - least
    half = INTERVAL[regime]
    return point, low * (1 - half), high * (1 + half), groups, overhead


def config_code_bytes(cfg: GolfConfig, stack: str, scale: str) -> int:
    """The bytes of the config's submission script (its bundle), as the run will count them."""
    from golf.bundle import build_bundle
    from golf.quant.artifact import code_bytes

    return code_bytes(build_bundle(cfg, stack, scale).data)


def predict_artifact_bytes(cfg: GolfConfig, stack: str = "baseline", scale: str = "full", *,
                           code: int | None = None) -> SizePrediction:
    """The artifact bytes (compressed model + code) a run of ``cfg`` will have, without training.

    ``stack`` and ``scale`` name the preset the config was resolved from (the bundle, hence the code
    bytes, depends on them); ``code`` gives the code bytes instead (a competitor's own script).
    """
    from golf.quant.compress import codec_spec

    codec = codec_spec(cfg.compressor, cfg.compressor_level, cfg.byte_shuffle)
    count = count_export(cfg)
    regime = regime_of(cfg, count.param_count)
    point, low, high, groups, overhead = predict_model_bytes(count, codec, regime)
    code_bytes = config_code_bytes(cfg, stack, scale) if code is None else code
    notes = []
    if count.narrowed:
        notes.append(f"MIXED_QUANT narrows {count.narrowed} of {len(count.narrowable)} matrices to int5 "
                     "after training; the interval spans the largest and the smallest of them")
    if getattr(cfg, "target_bytes", 0):
        notes.append(f"TARGET_BYTES={cfg.target_bytes}: the export narrows and prunes to fit it")
    return SizePrediction(
        total=round(point) + code_bytes, low=int(low) + code_bytes, high=round(high + 0.5) + code_bytes,
        coverage=f"+-{100 * INTERVAL[regime]:g}% of the model bytes ({COVERAGE[regime]})",
        model_bytes=round(point), code_bytes=code_bytes, overhead_bytes=overhead, groups=groups,
        regime=regime, export=f"{cfg.quant_format}+{codec.label}", param_count=count.param_count,
        target_bytes=int(getattr(cfg, "target_bytes", 0)), notes=tuple(notes),
    )
