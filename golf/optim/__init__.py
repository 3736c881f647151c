"""Optimizers, schedules and weight averaging."""

from golf.optim.groups import OptimizerSet, build_optimizers, split_block_params
from golf.optim.lawa import Lawa
from golf.optim.muon import Muon, newton_schulz5
from golf.optim.schedule import budget_fraction, lr_scale, muon_momentum

__all__ = [
    "Lawa", "Muon", "OptimizerSet", "budget_fraction", "build_optimizers", "lr_scale",
    "muon_momentum", "newton_schulz5", "split_block_params",
]
