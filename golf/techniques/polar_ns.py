"""Polar Express: per-iteration Newton-Schulz coefficients for Muon (``POLAR_NS``).

The reference iterates one quintic, ``X <- a X + (b A + c A^2) X`` with ``A = X X^T`` and
``(a, b, c) = (3.4445, -4.7750, 2.0315)`` every time, from ``X = G / (||G||_F + 1e-7)``. Polar
Express (Amsel, Persson, Musco, Gower, arXiv 2505.16932) picks a different minimax-optimal quintic
for each iteration, which converges faster and ends with singular values closer to 1. The table
below is the one later records use, copied from KellerJordan/modded-nanogpt ``train_gpt.py``
("Computed for num_iters=5, safety_factor=2e-2, cushion=2"), with its normalisation
``X = G / (||G||_F * 1.02 + 1e-6)``. The iteration is otherwise the reference's: the wide
orientation, in bf16 on GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from golf.knobs import Checks, knob
from golf.techniques.base import Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig

POLAR_EXPRESS_COEFFICIENTS: tuple[tuple[float, float, float], ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
# The spectral norm must start at most 1 for the schedule's guarantees; the Frobenius norm bounds
# it, and the 2% margin covers bf16 rounding.
SAFETY_FACTOR = 1.02
EPS = 1e-6


@dataclass(frozen=True)
class PolarNsSettings:
    polar_ns: bool = knob(
        False, "orthogonalise Muon updates with the Polar Express per-iteration coefficients instead of the "
        "reference's fixed quintic (computed for MUON_BACKEND_STEPS=5)",
    )


def polar_express(g: Tensor, steps: int = 5, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """The Polar Express approximation of the orthogonal polar factor of ``g`` (same shape)."""
    if steps > len(POLAR_EXPRESS_COEFFICIENTS):
        raise ValueError(
            f"Polar Express has coefficients for {len(POLAR_EXPRESS_COEFFICIENTS)} iterations, "
            f"{steps} were asked: set MUON_BACKEND_STEPS<={len(POLAR_EXPRESS_COEFFICIENTS)}"
        )
    x = g.to(dtype)
    x = x / (x.norm() * SAFETY_FACTOR + EPS)
    transposed = g.size(0) > g.size(1)
    if transposed:
        x = x.T
    for a, b, c in POLAR_EXPRESS_COEFFICIENTS[:steps]:
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


class PolarNs(Technique):
    name = "polar_ns"
    title = "Polar Express Newton-Schulz coefficients (one minimax quintic per iteration) for Muon"
    spec = "1.4"
    settings = PolarNsSettings
    toggle = "polar_ns"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.polar_ns:
            return
        steps = len(POLAR_EXPRESS_COEFFICIENTS)
        if cfg.muon_backend_steps > steps:
            checks.error(
                f"POLAR_NS=1 has coefficients for {steps} iterations but MUON_BACKEND_STEPS="
                f"{cfg.muon_backend_steps}: set MUON_BACKEND_STEPS<={steps} or POLAR_NS=0"
            )
        elif cfg.muon_backend_steps < steps:
            checks.warn(
                f"POLAR_NS=1 with MUON_BACKEND_STEPS={cfg.muon_backend_steps} runs only the first "
                f"{cfg.muon_backend_steps} of the {steps} iterations the coefficients were computed for"
            )

    def on_train_start(self, run: TrainingRun) -> None:
        if run.optimizers is None:
            raise RuntimeError("POLAR_NS: on_train_start without optimizers; build them first")
        run.optimizers.muon.orthogonalizer = polar_express
        run.log(f"polar_ns: Polar Express coefficients, {self.cfg.muon_backend_steps} iterations")

    def report(self) -> dict[str, Any]:
        coefficients = [list(c) for c in POLAR_EXPRESS_COEFFICIENTS[: self.cfg.muon_backend_steps]]
        return {"iterations": self.cfg.muon_backend_steps, "coefficients": coefficients}
