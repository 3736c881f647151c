"""The model: the challenge's baseline GPT, its building blocks and the roles of its parameters."""

from golf.model.gpt import GPT, build_model
from golf.model.layers import CastedLinear
from golf.model.roles import ParamRole, Role, parameter_roles

__all__ = ["GPT", "CastedLinear", "ParamRole", "Role", "build_model", "parameter_roles"]
