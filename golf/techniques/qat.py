"""Quantization-aware training (techniques.md 2.2-2.5): the weights the artifact stores on an
integer grid are trained through that grid.

- Which weights: every linear weight whose final export format is a per-row absmax grid (the grid
  :mod:`golf.quant.grid` reproduces exactly). QAT itself sets that format for attention and MLP
  matrices, with per-group widths (``QAT_BITS_ATTN``, ``QAT_BITS_MLP``: #326's int6 attention /
  int5 MLP) on the export's grid convention (``QUANT_GRID``), so training and export cannot
  disagree about a tensor.
- How (``QAT_MODE``): ``ste`` snaps the weight to its grid in the forward pass with a
  straight-through gradient (#137, #326, #635); ``noise`` adds Gaussian noise with the standard
  deviation of rounding error on the grid (#130); ``softround`` rounds through a sigmoid of
  sharpness ``QAT_SOFTROUND_SHARPNESS`` (the record #1260 names).
- When: from step 0; or once the LR scale falls below ``LATE_QAT_THRESHOLD`` (the records' late
  QAT); or once ``QAT_START_FRAC`` of the training budget is spent (#130; #635's
  ``QAT_TIME_FRAC=0.15`` is ``QAT_START_FRAC=0.85``). The switch is a tensor written in
  ``before_step``, so a compiled graph sees it (2.3).
- ``QAT_LR_SCALE`` (#130's "Muon-aware" QAT) multiplies every optimizer group's base LR once, when
  QAT switches on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from golf.knobs import Checks, knob
from golf.model.layers import CastedLinear
from golf.model.roles import ParamRole
from golf.quant.policy import TensorFormat
from golf.quant.qat import noise_fake_quant, soft_round_fake_quant, ste_fake_quant
from golf.techniques.base import Progress, Technique, TrainingRun, warn_inert

if TYPE_CHECKING:
    from golf.config import GolfConfig

QAT_MODES = ("ste", "noise", "softround")
# The matrix families QAT puts on its grid, and the knob giving each one's width.
GROUP_BITS = {"attn": "qat_bits_attn", "mlp": "qat_bits_mlp"}


@dataclass(frozen=True)
class QatSettings:
    qat_enabled: bool = knob(
        False, "train attention/MLP weights through their export grid (fake quantization)",
        aliases=("ENABLE_QAT", "USE_LATE_QAT", "LATE_QAT"),
    )
    qat_mode: str = knob(
        "ste", "ste (snap, straight-through gradient), noise (rounding-sized Gaussian noise) or "
        "softround (sigmoid rounding)", choices=QAT_MODES,
    )
    qat_bits_attn: int = knob(6, "grid width of attention matrices under QAT (and in the artifact)", min=2, max=8)
    qat_bits_mlp: int = knob(6, "grid width of MLP matrices under QAT (and in the artifact); #326 uses 5", min=2, max=8)
    late_qat_threshold: float = knob(
        0.0, "start QAT once the LR scale falls below this; 0 = not by LR scale",
        aliases=("QAT_THRESHOLD",), min=0.0, max=1.0,
    )
    qat_start_frac: float = knob(
        0.0, "start QAT once this fraction of the training budget is spent; 0 = not by time",
        min=0.0, max=1.0,
    )
    qat_lr_scale: float = knob(
        1.0, "multiply every optimizer group's LR by this when QAT switches on (#130: 0.5)", min=0.0,
    )
    qat_softround_sharpness: float = knob(
        16.0, "softround mode: sigmoid sharpness (1 = soft, 16 = close to hard rounding)", min=0.0,
    )


class FakeQuantWeight(nn.Module):
    """The weight a QAT layer uses in training, switched by the 0-dim tensor ``alpha``."""

    def __init__(self, fmt: TensorFormat, mode: str, sharpness: float, device: torch.device) -> None:
        super().__init__()
        self.bits, self.grid, self.mode, self.sharpness = fmt.bits, fmt.grid, mode, sharpness
        self.register_buffer("alpha", torch.zeros((), dtype=torch.float32, device=device), persistent=False)

    def forward(self, w: Tensor) -> Tensor:
        if self.mode == "noise":
            return noise_fake_quant(w, self.alpha, self.bits, self.grid)
        if self.mode == "softround":
            return soft_round_fake_quant(w, self.alpha, self.bits, self.grid, self.sharpness)
        return ste_fake_quant(w, self.alpha, self.bits, self.grid)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, bits={self.bits}, grid={self.grid}"


class Qat(Technique):
    name = "qat"
    title = "quantization-aware training: STE, noise or soft-round, per-group widths, late start"
    spec = "2.2-2.5"
    settings = QatSettings
    toggle = "qat_enabled"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.qat_enabled:
            warn_inert(cfg, cls, [k for k in cls.knob_names() if k != cls.toggle], checks)
            return
        if cfg.late_qat_threshold > 0 and cfg.qat_start_frac > 0:
            checks.error(
                f"LATE_QAT_THRESHOLD={cfg.late_qat_threshold} and QAT_START_FRAC={cfg.qat_start_frac} "
                "are two start rules: keep one (LR scale or fraction of the budget)"
            )
        largest = cfg.model_dim * max(cfg.model_dim, cfg.mlp_hidden)
        if largest <= cfg.quant_keep_float_max_numel:
            checks.error(
                f"QAT_ENABLED=1 but no attention/MLP matrix exceeds QUANT_KEEP_FLOAT_MAX_NUMEL="
                f"{cfg.quant_keep_float_max_numel} (the largest has {largest} elements), so the export "
                "keeps them all in float and there is no grid to train on: lower "
                "QUANT_KEEP_FLOAT_MAX_NUMEL or turn QAT off"
            )
        from golf.config import reference_value

        if cfg.qat_mode != "softround" and cfg.qat_softround_sharpness != reference_value(checks, "qat_softround_sharpness"):
            checks.warn(
                f"QAT_SOFTROUND_SHARPNESS={cfg.qat_softround_sharpness} has no effect with "
                f"QAT_MODE={cfg.qat_mode}: set QAT_MODE=softround or drop it"
            )

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.layers: dict[str, FakeQuantWeight] = {}
        self.enabled_at_step: int | None = None
        self.enabled_at: dict[str, float] = {}
        self.lr_scaled = False

    # --- export: the grid QAT trains on is the grid the artifact stores ---------------------
    def export_policy(self, name: str, tensor: Tensor, role: ParamRole, proposed: TensorFormat) -> TensorFormat | None:
        if role.is_matrix and role.group in GROUP_BITS and proposed.kind == "int":
            return TensorFormat.rows(getattr(self.cfg, GROUP_BITS[role.group]), self.cfg.quant_grid)
        return None

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        cfg = self.cfg
        for module_name, module in run.model.named_modules():
            if not isinstance(module, CastedLinear):
                continue
            weight_name = f"{module_name}.weight"  # its name in the artifact, banked or not
            weight = module.master_weight()
            fmt = export_format(weight_name, weight)
            if fmt.on_absmax_row_grid:
                module.train_weight = FakeQuantWeight(fmt, cfg.qat_mode, cfg.qat_softround_sharpness, weight.device)
                self.layers[weight_name] = module.train_weight
        if not self.layers:
            raise ValueError(
                "QAT_ENABLED=1 but no linear weight is exported on a per-row integer grid: "
                "lower QUANT_KEEP_FLOAT_MAX_NUMEL or turn QAT off"
            )

    # --- the switch -----------------------------------------------------------------------------
    def _due(self, progress: Progress) -> bool:
        if self.cfg.late_qat_threshold > 0:
            return progress.lr_scale < self.cfg.late_qat_threshold
        if self.cfg.qat_start_frac > 0:
            return progress.budget_fraction >= self.cfg.qat_start_frac
        return True

    def before_step(self, progress: Progress, run: TrainingRun) -> None:
        if self.enabled_at_step is not None or not self._due(progress):
            return
        for layer in self.layers.values():
            layer.alpha.fill_(1.0)  # a tensor write: the compiled graph reads it (techniques.md 2.3)
        self.enabled_at_step = progress.step
        self.enabled_at = {"lr_scale": progress.lr_scale, "budget_fraction": progress.budget_fraction}
        if progress.step > 0:
            run.log(f"late_qat:enabled step:{progress.step} scale:{progress.lr_scale:.4f} "
                    f"budget_frac:{progress.budget_fraction:.3f}")
        if self.cfg.qat_lr_scale != 1.0 and run.optimizers is not None:
            run.optimizers.scale_base_lr(self.cfg.qat_lr_scale)
            self.lr_scaled = True
            run.log(f"qat:lr_scale:{self.cfg.qat_lr_scale} applied to every optimizer group at step:{progress.step}")

    def report(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.late_qat_threshold > 0:
            start = f"lr_scale<{cfg.late_qat_threshold}"
        elif cfg.qat_start_frac > 0:
            start = f"budget_frac>={cfg.qat_start_frac}"
        else:
            start = "step0"
        widths = Counter(f"int{layer.bits}" for layer in self.layers.values())
        return {
            "mode": cfg.qat_mode, "grid": cfg.quant_grid, "start": start,
            "layers": sorted(self.layers), "bits": dict(sorted(widths.items())),
            "enabled_at_step": self.enabled_at_step, **({"enabled_at": self.enabled_at} if self.enabled_at else {}),
            "lr_scale_applied": cfg.qat_lr_scale if self.lr_scaled else None,
        }
