"""The export policy: how each state_dict tensor is stored in the artifact (DESIGN.md contract 4).

A policy maps (name, tensor, role) to a :class:`TensorFormat`. The base rules are the reference
export's (techniques.md 1.6) plus the int6 attention/MLP format (#137), decided by role and size:

1. non-float tensors: stored as they are;
2. control tensors (gains, scales, mixes, skip weights): fp32, whatever their size;
3. float tensors with at most ``keep_float_max_numel`` elements: fp16 (original dtype recorded);
4. int6 format only: attention and MLP matrices: per-row int6 on the format's grid, absmax rows;
5. every other 2-D float tensor: the reference's per-row int8 (99.99984th-percentile clip,
   floored scale);
6. any other float tensor: one per-tensor int8 scale from the same percentile, no floor.

Techniques change single tensors through their ``export_policy`` hook, applied in registry order
after the base rules; each sees the format proposed so far and returns a replacement or None.

A technique may also supply the integer codes of a tensor itself (:class:`Codes`, through a
``coders`` entry): GPTQ's error-compensated codes, a clip search's, or codes a pruner zeroed. The
format still decides the grid width; the export checks the codes lie in it and stores them
instead of round-to-nearest's. Coders run in registry order, each seeing the codes proposed so far.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from golf.model.roles import ParamRole, Role
from golf.quant.grid import GRID_MODES

# The base rules' formats: the reference's int8, or int6 attention/MLP matrices on top of it.
QUANT_FORMATS = ("int8", "int6")
FLOAT_DTYPES = ("fp32", "fp16", "bf16")
INT_SCHEMES = ("per_row", "per_tensor")
INT_CLIPS = ("absmax", "percentile")
# Families of block matrices that the int6 format puts on the int6 grid (#137).
INT6_GROUPS = ("attn", "mlp")


@dataclass(frozen=True)
class TensorFormat:
    """How one tensor is stored."""

    kind: str
    """``raw`` (non-float, as it is), ``float`` (passthrough in ``dtype``) or ``int`` (codes + scales)."""
    dtype: str = "fp32"
    """float: the stored dtype."""
    bits: int = 8
    """int: code width (2..8); codes are stored as int8."""
    scheme: str = "per_row"
    """int: one fp16 scale per row, or one fp32 scale for the tensor."""
    grid: str = "floored"
    """int: ``relative`` (s = clip/c) or ``floored`` (s = max(clip/c, 1/c)); techniques.md 2.1."""
    clip: str = "absmax"
    """int: a row's clip value is its max |w| (``absmax``) or the reference's 99.99984th
    percentile of |w| (``percentile``)."""

    def __post_init__(self) -> None:
        if self.kind not in ("raw", "float", "int"):
            raise ValueError(f"tensor format kind {self.kind!r} is unknown: use raw, float or int")
        if self.kind == "float" and self.dtype not in FLOAT_DTYPES:
            raise ValueError(f"float passthrough dtype {self.dtype!r} is unknown: use one of {FLOAT_DTYPES}")
        if self.kind == "int":
            if not 2 <= self.bits <= 8:
                raise ValueError(f"integer format bits={self.bits} is outside 2..8")
            if self.scheme not in INT_SCHEMES or self.grid not in GRID_MODES or self.clip not in INT_CLIPS:
                raise ValueError(
                    f"integer format scheme={self.scheme!r} grid={self.grid!r} clip={self.clip!r}: "
                    f"use scheme in {INT_SCHEMES}, grid in {GRID_MODES}, clip in {INT_CLIPS}"
                )

    @classmethod
    def rows(cls, bits: int, grid: str, clip: str = "absmax") -> TensorFormat:
        return cls(kind="int", bits=bits, scheme="per_row", grid=grid, clip=clip)

    @property
    def on_absmax_row_grid(self) -> bool:
        """Whether this is a per-row integer grid that :mod:`golf.quant.grid` reproduces exactly
        (what STE QAT can train against)."""
        return self.kind == "int" and self.scheme == "per_row" and self.clip == "absmax"

    def __str__(self) -> str:
        if self.kind == "raw":
            return "raw"
        if self.kind == "float":
            return self.dtype
        return f"int{self.bits}:{self.scheme}:{self.grid}:{self.clip}"


REFERENCE_INT8_ROWS = TensorFormat(kind="int", bits=8, scheme="per_row", grid="floored", clip="percentile")
REFERENCE_INT8_TENSOR = TensorFormat(kind="int", bits=8, scheme="per_tensor", grid="relative", clip="percentile")
FP32 = TensorFormat(kind="float", dtype="fp32")
FP16 = TensorFormat(kind="float", dtype="fp16")
RAW = TensorFormat(kind="raw")

# (name, tensor, role, proposed) -> replacement or None
PolicyOverride = Callable[[str, Tensor, ParamRole, TensorFormat], "TensorFormat | None"]


@dataclass(frozen=True)
class Codes:
    """Integer codes of one per-row tensor supplied by a technique instead of round-to-nearest's."""

    q: Tensor
    """int8 codes shaped like the tensor."""
    scale: Tensor
    """One scale per row (shape ``q.shape[:-1]``); stored as fp16."""
    method: str
    """Who made them (``gptq``, ``gptq_lite``, ``gptq+prune_pm1``), recorded in the artifact's qmeta."""


# (name, tensor, format, codes proposed so far or None) -> replacement or None
Coder = Callable[[str, Tensor, TensorFormat, "Codes | None"], "Codes | None"]


def base_format(
    tensor: Tensor, role: ParamRole, *, quant: str, grid: str, keep_float_max_numel: int
) -> TensorFormat:
    """The base rules above for one tensor."""
    if not tensor.is_floating_point():
        return RAW
    if role.role is Role.CONTROL:
        return FP32
    if tensor.numel() <= keep_float_max_numel:
        return FP16
    if quant == "int6" and role.is_matrix and role.group in INT6_GROUPS and tensor.ndim == 2:
        return TensorFormat.rows(6, grid)
    if tensor.ndim == 2:
        return REFERENCE_INT8_ROWS
    return REFERENCE_INT8_TENSOR


@dataclass(frozen=True)
class ExportPolicy:
    """The base rules of an export format plus the techniques' overrides, in order."""

    quant: str = "int8"
    grid: str = "relative"
    keep_float_max_numel: int = 65_536
    overrides: Sequence[PolicyOverride] = ()
    coders: Sequence[Coder] = ()

    def __post_init__(self) -> None:
        if self.quant not in QUANT_FORMATS:
            raise ValueError(f"export quant {self.quant!r} is unknown: use one of {QUANT_FORMATS}")
        if self.grid not in GRID_MODES:
            raise ValueError(f"export grid {self.grid!r} is unknown: use one of {GRID_MODES}")
        numel = self.keep_float_max_numel
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise ValueError(f"keep_float_max_numel={numel!r} must be an int >= 0 (the reference uses 65536)")

    def format_for(self, name: str, tensor: Tensor, role: ParamRole) -> TensorFormat:
        fmt = base_format(
            tensor, role, quant=self.quant, grid=self.grid, keep_float_max_numel=self.keep_float_max_numel
        )
        for override in self.overrides:
            changed = override(name, tensor, role, fmt)
            if changed is not None:
                fmt = changed
        return fmt

    def codes_for(self, name: str, tensor: Tensor, fmt: TensorFormat) -> Codes | None:
        """The technique-supplied codes of a per-row integer tensor, or None (round-to-nearest)."""
        codes: Codes | None = None
        for coder in self.coders:
            changed = coder(name, tensor, fmt, codes)
            if changed is not None:
                codes = changed
        return codes
