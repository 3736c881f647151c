"""Quantization of the trained model: integer grids, STE QAT, the per-tensor export policy, the
codec registry and the artifact container, and the byte accounting of the artifact. No Ray here;
zstandard and brotli are imported only when their codec is used."""

from golf.quant.artifact import SIZE_LIMIT_BYTES, ArtifactSize, code_bytes, submission_code
from golf.quant.compress import (
    CODEC_NAMES,
    CODECS,
    REFERENCE_CODEC,
    Codec,
    CodecSpec,
    CodecUnavailableError,
    codec_spec,
    ensure_available,
)
from golf.quant.export import (
    ExportFormat,
    ExportStats,
    UnpackedArtifact,
    dequantize_state_dict,
    export_formats,
    pack_artifact,
    quantize_state_dict,
    unpack_artifact,
)
from golf.quant.grid import (
    GRID_MODES,
    clip_range,
    dequantize_rows,
    fake_quantize_rows,
    quantize_rows,
    row_scales,
)
from golf.quant.policy import QUANT_FORMATS, ExportPolicy, TensorFormat
from golf.quant.qat import ste_fake_quant

__all__ = [
    "CODECS",
    "CODEC_NAMES",
    "GRID_MODES",
    "QUANT_FORMATS",
    "REFERENCE_CODEC",
    "SIZE_LIMIT_BYTES",
    "ArtifactSize",
    "Codec",
    "CodecSpec",
    "CodecUnavailableError",
    "ExportFormat",
    "ExportPolicy",
    "ExportStats",
    "TensorFormat",
    "UnpackedArtifact",
    "clip_range",
    "code_bytes",
    "codec_spec",
    "dequantize_rows",
    "dequantize_state_dict",
    "ensure_available",
    "export_formats",
    "fake_quantize_rows",
    "pack_artifact",
    "quantize_rows",
    "quantize_state_dict",
    "row_scales",
    "ste_fake_quant",
    "submission_code",
    "unpack_artifact",
]
