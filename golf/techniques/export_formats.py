"""Export formats by role (techniques.md 3.1-3.2): which grid each family of tensors is stored on.

- ``FP16_EMBED`` (#130, #137, #326, #635; records' ``FP16_EMBED_EXPORT``): the tied embedding is
  stored as fp16 instead of int8. It is both the input lookup and the output head, so its
  quantization error counts twice (3.2).
- ``QUANT_BITS_EMBED``: the embedding on its own per-row grid (e.g. int6) instead of the reference's
  percentile int8.
- ``QUANT_BITS_ATTN`` / ``QUANT_BITS_MLP``: attention / MLP matrices on per-row int8/int6/int5 grids
  (#326's int6 attention, int5 MLP) without QAT. QAT owns these widths when it is on
  (``QAT_BITS_ATTN`` / ``QAT_BITS_MLP``: the grid it trains on is the grid stored), so setting
  both is an error rather than a silent precedence.

Every grid here is per row, absmax-clipped, on the ``QUANT_GRID`` convention (2.1); small tensors
stay float by the base rule (``QUANT_KEEP_FLOAT_MAX_NUMEL``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from golf.knobs import Checks, knob
from golf.model.roles import ParamRole, Role
from golf.quant.policy import FP16, TensorFormat
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from collections.abc import Callable

    from golf.config import GolfConfig

GROUP_KNOBS = {"attn": "quant_bits_attn", "mlp": "quant_bits_mlp"}
QAT_KNOBS = {"attn": "QAT_BITS_ATTN", "mlp": "QAT_BITS_MLP"}


@dataclass(frozen=True)
class ExportFormatSettings:
    fp16_embed: bool = knob(
        False, "store the tied embedding as fp16 instead of int8 (about +0.5 MB, quant gap 0.007 -> 0.0005)",
        aliases=("FP16_EMBED_EXPORT",),
    )
    quant_bits_embed: int = knob(
        0, "store the embedding on a per-row grid of this width (absmax, QUANT_GRID); 0 = the reference's int8",
        min=0, max=8,
    )
    quant_bits_attn: int = knob(
        0, "store attention matrices on a per-row grid of this width (8, 6, 5...) without QAT; 0 = base rules",
        min=0, max=8,
    )
    quant_bits_mlp: int = knob(
        0, "store MLP matrices on a per-row grid of this width without QAT (#326: 5); 0 = base rules",
        min=0, max=8,
    )


class ExportFormats(Technique):
    name = "export_formats"
    title = "export formats by role: fp16 embedding, embedding/attention/MLP grid widths"
    spec = "3.1-3.2"
    settings = ExportFormatSettings
    toggle = None

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cls.any_knob_set(cfg)

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        for name in ("quant_bits_embed", *GROUP_KNOBS.values()):
            if getattr(cfg, name) == 1:
                checks.error(f"{name.upper()}=1 is not a grid width: use 2..8, or 0 for the base rules")
        if cfg.fp16_embed and cfg.quant_bits_embed:
            checks.error(
                f"FP16_EMBED=1 and QUANT_BITS_EMBED={cfg.quant_bits_embed} both set the embedding's format: keep one"
            )
        if cfg.qat_enabled:
            for group, name in GROUP_KNOBS.items():
                if getattr(cfg, name):
                    checks.error(
                        f"{name.upper()}={getattr(cfg, name)} with QAT_ENABLED=1: QAT stores {group} matrices on "
                        f"the grid it trains on, set by {QAT_KNOBS[group]}; use that knob instead"
                    )
        embed_numel = cfg.vocab_size * cfg.model_dim
        if (cfg.fp16_embed or cfg.quant_bits_embed) and embed_numel <= cfg.quant_keep_float_max_numel:
            checks.warn(
                f"{'FP16_EMBED=1' if cfg.fp16_embed else f'QUANT_BITS_EMBED={cfg.quant_bits_embed}'} has no effect: "
                f"the embedding ({embed_numel} elements) is at most QUANT_KEEP_FLOAT_MAX_NUMEL="
                f"{cfg.quant_keep_float_max_numel}, so it is stored as fp16 anyway"
            )

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.changed: Counter[str] = Counter()

    def _format(self, role: ParamRole, tensor: Tensor, proposed: TensorFormat) -> TensorFormat | None:
        cfg = self.cfg
        if proposed.kind != "int":
            return None  # small tensors stay float, control tensors fp32
        if role.role is Role.EMBEDDING:
            if cfg.fp16_embed:
                return FP16
            if cfg.quant_bits_embed and tensor.ndim == 2:
                return TensorFormat.rows(cfg.quant_bits_embed, cfg.quant_grid)
            return None
        bits = getattr(cfg, GROUP_KNOBS[role.group]) if role.is_matrix and role.group in GROUP_KNOBS else 0
        if bits and tensor.ndim >= 2:
            return TensorFormat.rows(bits, cfg.quant_grid)
        return None

    def export_policy(self, name: str, tensor: Tensor, role: ParamRole, proposed: TensorFormat) -> TensorFormat | None:
        return self._format(role, tensor, proposed)

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        # The formats the final policy gives the families this technique sets, for the report.
        for name, param in run.model.named_parameters():
            role = run.roles.get(name)
            if role is not None and (role.role is Role.EMBEDDING or role.is_matrix and role.group in GROUP_KNOBS):
                self.changed[f"{role}:{export_format(name, param)}"] += 1

    def report(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "fp16_embed": cfg.fp16_embed, "bits_embed": cfg.quant_bits_embed or None,
            "bits_attn": cfg.quant_bits_attn or None, "bits_mlp": cfg.quant_bits_mlp or None,
            "formats": dict(sorted(self.changed.items())),
        }
