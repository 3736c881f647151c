"""Quantization of the trained model: integer grids, STE QAT, export formats, compression, and
the byte accounting of the artifact. No Ray here; zstandard is imported only when zstd is used."""

from golf.quant.artifact import SIZE_LIMIT_BYTES, ArtifactSize, code_bytes, loaded_source_files
from golf.quant.compress import (
    CODECS,
    CodecUnavailableError,
    codec_label,
    compress,
    decompress,
    detect_codec,
    ensure_available,
)
from golf.quant.export import (
    CONTROL_TENSOR_NAME_PATTERNS,
    INT6_BITS,
    QUANT_FORMATS,
    ExportFormat,
    dequantize_state_dict,
    is_control_tensor,
    is_int6_tensor,
    pack_artifact,
    qat_target_names,
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
from golf.quant.qat import ste_fake_quant

__all__ = [
    "CODECS",
    "CONTROL_TENSOR_NAME_PATTERNS",
    "GRID_MODES",
    "INT6_BITS",
    "QUANT_FORMATS",
    "SIZE_LIMIT_BYTES",
    "ArtifactSize",
    "CodecUnavailableError",
    "ExportFormat",
    "clip_range",
    "code_bytes",
    "codec_label",
    "compress",
    "decompress",
    "dequantize_rows",
    "dequantize_state_dict",
    "detect_codec",
    "ensure_available",
    "fake_quantize_rows",
    "is_control_tensor",
    "is_int6_tensor",
    "loaded_source_files",
    "pack_artifact",
    "qat_target_names",
    "quantize_rows",
    "quantize_state_dict",
    "row_scales",
    "ste_fake_quant",
    "unpack_artifact",
]
