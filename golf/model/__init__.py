"""The model: the challenge's baseline GPT and its building blocks."""

from golf.model.gpt import (
    GPT,
    attach_fake_quant,
    build_model,
    is_control_tensor,
    set_fake_quant,
)
from golf.model.layers import CastedLinear, FakeQuant

__all__ = [
    "GPT", "CastedLinear", "FakeQuant", "attach_fake_quant",
    "build_model", "is_control_tensor", "set_fake_quant",
]
