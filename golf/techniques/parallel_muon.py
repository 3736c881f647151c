"""Parallel Muon with parameter banks (techniques.md 4.5; #635, from PR #399 / R-2026-03-23).

- Banks: the block matrices of each family (q and o, k and v, MLP up, MLP down: same role group and
  shape) become one 3-D parameter ``[layers, out, in]`` with the :attr:`~golf.model.roles.Role.BANK`
  role (:mod:`golf.model.banks`); each block linear reads its slice, so the forward pass, the
  initialisation and QAT's fake quantization (which wraps the layer's master weight, bank slice or
  not: the seed's late QAT silently missed banks, 2.3) are unchanged.
- Update (:class:`golf.optim.muon.Muon` on a 3-D parameter): per matrix the same Nesterov + NS5
  update as plain Muon, orthogonalised as one batch; with several ranks each rank owns a
  contiguous block of slices (momentum for those only), and the updates meet in one all-gather.
- How a bank's gradient reaches its owner (``PARALLEL_MUON_GRAD_REDUCE``): ``reduce_scatter``
  (#635: DDP skips the banks, one reduce-scatter for all of them in the optimizer step) or
  ``all_reduce`` (DDP averages them with everything else, during the backward pass; each rank
  takes its slices). ``auto`` is reduce_scatter on NCCL and all_reduce on gloo, where a
  reduce-scatter costs about an all-reduce and cannot overlap the backward pass (measured: smoke
  scale, 2 ranks, reduce_scatter slower than plain Muon, all_reduce level with it). With
  ``GRAD_CLIP_NORM > 0`` it must be all_reduce: the clip must see the averaged gradient (#635
  clipped each rank's local gradient: not the same).
- Momentum lives in the optimizer state, so warmup-then-restore covers it.
- Export: the artifact stores per-layer 2-D weights under the names the model has without banks
  (:meth:`artifact_state`), in the same order with the same roles, so the artifact and the export
  policy are those of plain Muon; loading rebanks them.

Differences from #635, on purpose: fp32 gradients in the reduce-scatter and fp32 momentum (#635: bf16)
so that one rank gives exactly plain Muon's update; the clip rule above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from golf.knobs import Checks, knob
from golf.model.banks import BankLayout, bank_block_linears, rebank, unbank
from golf.model.roles import RoleMap
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.quant.policy import TensorFormat

COMPILED_PREFIX = "_orig_mod."
"""How torch.compile's wrapper names the module's parameters (DDP may wrap the compiled module)."""


GRAD_REDUCE_MODES = ("auto", "reduce_scatter", "all_reduce")


@dataclass(frozen=True)
class ParallelMuonSettings:
    parallel_muon: bool = knob(
        False, "Parallel Muon: block matrices in 3-D parameter banks, batched Newton-Schulz sharded across "
        "ranks (reduce-scatter / all-gather); the artifact still stores per-layer matrices",
    )
    parallel_muon_grad_reduce: str = knob(
        "auto", "how bank gradients reach the rank that owns them: reduce_scatter (#635), all_reduce "
        "(DDP's, then slicing) or auto (reduce_scatter on NCCL, all_reduce on gloo or with GRAD_CLIP_NORM)",
        choices=GRAD_REDUCE_MODES,
    )


def grad_reduce_mode(cfg: GolfConfig, world_size: int, backend: str) -> str:
    """The gradient reduction of the banks in force: "none" on one rank."""
    if world_size <= 1:
        return "none"
    if cfg.parallel_muon_grad_reduce != "auto":
        return cfg.parallel_muon_grad_reduce
    return "reduce_scatter" if backend == "nccl" and cfg.grad_clip_norm <= 0 else "all_reduce"


class ParallelMuon(Technique):
    name = "parallel_muon"
    title = "Parallel Muon: parameter banks, batched Newton-Schulz sharded across ranks"
    spec = "4.5"
    settings = ParallelMuonSettings
    toggle = "parallel_muon"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        super().check(cfg, world_size, checks)
        if not cfg.parallel_muon:
            return
        if cfg.parallel_muon_grad_reduce == "reduce_scatter" and cfg.grad_clip_norm > 0:
            checks.error(
                f"PARALLEL_MUON_GRAD_REDUCE=reduce_scatter with GRAD_CLIP_NORM={cfg.grad_clip_norm}: the clip "
                "would see each rank's own bank gradients, not their average; use all_reduce (or auto)"
            )
        if world_size == 1 and cfg.parallel_muon_grad_reduce != "auto":
            checks.warn(
                f"PARALLEL_MUON_GRAD_REDUCE={cfg.parallel_muon_grad_reduce} has no effect on one rank: "
                "drop it or run on several"
            )

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.layout: BankLayout | None = None
        self.gradient_reduction = "none"

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        # Each banked weight keeps its role in run.roles under its per-layer name (no longer a
        # parameter name): the export policy and QAT's grid choice see the matrices they see
        # without banks. The banks' own roles are added by the recipe after on_model.
        self.layout = bank_block_linears(run.model, run.roles)
        backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else ""
        self.gradient_reduction = grad_reduce_mode(self.cfg, run.ctx.world_size, backend)
        if self.gradient_reduction == "reduce_scatter":
            # DDP leaves the banks alone; Muon sees `_ddp_ignored` and reduce-scatters them itself.
            names = [name for bank in self.layout.members for name in (bank, COMPILED_PREFIX + bank)]
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(run.model, names)
        shapes = " ".join(f"{bank.split('.')[1]}:{list(run.model.get_parameter(bank).shape)}"
                          for bank in self.layout.members)
        run.log(f"parallel_muon: banks {shapes} gradient_reduction:{self.gradient_reduction}")

    def artifact_state(self, state: dict[str, Tensor], roles: RoleMap) -> tuple[dict[str, Tensor], RoleMap]:
        layout = self._layout()
        artifact = unbank(state, layout)
        return artifact, {name: role for name, role in roles.items() if name in artifact}

    def model_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return rebank(state, self._layout())

    def _layout(self) -> BankLayout:
        if self.layout is None:
            raise RuntimeError("parallel_muon: the banks are made in on_model; build the model first")
        return self.layout

    def report(self) -> dict[str, Any]:
        members = self.layout.members if self.layout is not None else {}
        return {"banks": {bank.split(".")[1]: len(names) for bank, names in members.items()},
                "gradient_reduction": self.gradient_reduction}

