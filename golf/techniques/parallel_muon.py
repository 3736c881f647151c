"""Parallel Muon with parameter banks (techniques.md 4.5; #635, from PR #399 / R-2026-03-23).

- Banks: the block matrices of each family (q and o, k and v, MLP up, MLP down: same role group and
  shape) become one 3-D parameter ``[layers, out, in]`` with the :attr:`~golf.model.roles.Role.BANK`
  role (:mod:`golf.model.banks`); each block linear reads its slice, so the forward pass, the
  initialisation and QAT's fake quantization (which wraps the layer's master weight, bank slice or
  not: the seed's late QAT silently missed banks, 2.3) are unchanged.
- Update (:class:`golf.optim.muon.Muon` on a 3-D parameter): per matrix the same Nesterov + NS5
  update as plain Muon, orthogonalised as one batch; with several ranks each rank owns a
  contiguous block of slices (momentum for those only), and the updates meet in an all-gather.
  The gradient of a bank reaches the owner by a reduce-scatter instead of DDP's all-reduce. With
  ``GRAD_CLIP_NORM > 0`` DDP still averages the banks, because the clip must see the averaged
  gradient (#635 clipped each rank's local gradient: not the same); each rank then takes its
  slices of it.
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


@dataclass(frozen=True)
class ParallelMuonSettings:
    parallel_muon: bool = knob(
        False, "Parallel Muon: block matrices in 3-D parameter banks, batched Newton-Schulz sharded across "
        "ranks (reduce-scatter / all-gather); the artifact still stores per-layer matrices",
    )


class ParallelMuon(Technique):
    name = "parallel_muon"
    title = "Parallel Muon: parameter banks, batched Newton-Schulz sharded across ranks"
    spec = "4.5"
    settings = ParallelMuonSettings
    toggle = "parallel_muon"

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.layout: BankLayout | None = None
        self.gradient_reduction = "none"

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        # Each banked weight keeps its role in run.roles under its per-layer name (no longer a
        # parameter name): the export policy and QAT's grid choice see the matrices they see
        # without banks. The banks' own roles are added by the recipe after on_model.
        self.layout = bank_block_linears(run.model, run.roles)
        if run.ctx.world_size > 1:
            if self.cfg.grad_clip_norm > 0:
                self.gradient_reduction = "ddp_all_reduce"
            else:
                names = [name for bank in self.layout.members for name in (bank, COMPILED_PREFIX + bank)]
                DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(run.model, names)
                self.gradient_reduction = "reduce_scatter"
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

