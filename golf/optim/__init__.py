"""Optimizers and schedules (weight averaging lives in golf.techniques)."""

from golf.optim.groups import OptimizerSet, build_optimizers, params_by_role
from golf.optim.muon import Muon, newton_schulz5
from golf.optim.schedule import budget_fraction, lr_scale, muon_momentum, training_budget_ms

__all__ = [
    "Muon", "OptimizerSet", "budget_fraction", "build_optimizers", "lr_scale",
    "muon_momentum", "newton_schulz5", "params_by_role", "training_budget_ms",
]
