"""Fixed, seeded state dicts for the export tests, with the reference model's mix of names, shapes,
dtypes and roles, built by hand so that they do not move when golf.model changes.

``reference_mix_state`` is the state dict whose artifact hashes the export tests pin: change it and
the pinned hashes must be recomputed from the export code they pin (see tests/test_artifact_compat.py).
"""

from __future__ import annotations

import torch

from golf.model.roles import ParamRole, Role, RoleMap

WIDTH = 288  # c_q/proj (288x288) are above the reference's 65,536 keep-float threshold, c_k/c_v not
LAYERS = 2
VOCAB = 1024
KV = 144
HIDDEN = 2 * WIDTH


def _weights(g: torch.Generator, rows: int, cols: int, std: float = 0.02) -> torch.Tensor:
    """Gaussian weights with a few large outliers per tensor (what the percentile clip is for)."""
    w = torch.randn(rows, cols, generator=g) * std
    flat = w.view(-1)
    picks = torch.randint(0, flat.numel(), (max(rows // 16, 1),), generator=g)
    flat[picks] *= 40.0
    return w


def reference_mix_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The reference GPT's state_dict layout at a small width, plus the odd entries the export
    rules must also handle (a large control tensor, a bf16 control, an fp16 matrix, a large float
    buffer, an integer buffer, an all-zero row)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {
        "tok_emb.weight": _weights(g, VOCAB, WIDTH, 0.5).to(torch.bfloat16),
        "skip_weights": torch.rand(1, WIDTH, generator=g) + 0.5,
    }
    for i in range(LAYERS):
        p = f"blocks.{i}."
        state.update({
            p + "attn.c_q.weight": _weights(g, WIDTH, WIDTH),
            p + "attn.c_k.weight": _weights(g, KV, WIDTH),
            p + "attn.c_v.weight": _weights(g, KV, WIDTH),
            p + "attn.proj.weight": _weights(g, WIDTH, WIDTH),
            p + "attn.q_gain": torch.full((4,), 1.5) + 0.1 * torch.randn(4, generator=g),
            p + "mlp.fc.weight": _weights(g, HIDDEN, WIDTH),
            p + "mlp.proj.weight": _weights(g, WIDTH, HIDDEN),
            p + "attn_scale": torch.rand(WIDTH, generator=g) + 0.5,
            p + "mlp_scale": torch.rand(WIDTH, generator=g) + 0.5,
            p + "resid_mix": torch.rand(2, WIDTH, generator=g),
        })
    state["blocks.1.attn.c_v.weight"] = state["blocks.1.attn.c_v.weight"].half()
    state["blocks.1.resid_mix"] = state["blocks.1.resid_mix"].to(torch.bfloat16)
    state["blocks.0.mlp.fc.weight"][7].zero_()
    state["blocks.0.attn_scales"] = torch.rand(240, WIDTH, generator=g)  # large, still control
    state["rotary.table"] = torch.randn(70_000, generator=g)  # large non-matrix buffer
    state["step_counter"] = torch.tensor(1234, dtype=torch.int64)
    return state


def reference_mix_roles(state: dict[str, torch.Tensor]) -> RoleMap:
    """The roles golf.model declares for these names; buffers get Role.BUFFER."""
    roles: RoleMap = {}
    for name in state:
        if name in ("rotary.table", "step_counter"):
            roles[name] = ParamRole(Role.BUFFER)
        elif name == "tok_emb.weight":
            roles[name] = ParamRole(Role.EMBEDDING)
        elif name == "lm_head.weight":
            roles[name] = ParamRole(Role.HEAD)
        elif name.endswith((".weight",)) and (".attn." in name or ".mlp." in name):
            roles[name] = ParamRole(Role.MATRIX, "attn" if ".attn." in name else "mlp")
        else:
            roles[name] = ParamRole(Role.CONTROL)
    return roles


def legacy_small_state() -> dict[str, torch.Tensor]:
    """The state dict of the artifacts in tests/data/artifacts, written by golf.quant as of commit
    6f5f535 with keep_float_max_numel=512 (int8+zlib, and int6+zstd)."""
    g = torch.Generator().manual_seed(7)
    return {
        "tok_emb.weight": (torch.randn(64, 32, generator=g) * 0.3).to(torch.bfloat16),
        "blocks.0.attn.c_q.weight": torch.randn(32, 32, generator=g) * 0.05,
        "blocks.0.attn.q_gain": torch.full((4,), 1.5),
        "blocks.0.mlp.fc.weight": torch.randn(64, 32, generator=g) * 0.05,
        "blocks.0.mlp.proj.weight": torch.randn(32, 64, generator=g) * 0.05,
        "blocks.0.attn_scale": torch.rand(32, generator=g),
        "blocks.0.resid_mix": torch.rand(2, 32, generator=g).to(torch.bfloat16),
        "skip_weights": torch.rand(1, 32, generator=g),
        "rotary.table": torch.randn(1500, generator=g),
        "small.bias": torch.randn(8, generator=g),
        "step_counter": torch.tensor(99, dtype=torch.int64),
    }


def legacy_small_roles(state: dict[str, torch.Tensor]) -> RoleMap:
    roles = reference_mix_roles(state)
    roles["small.bias"] = ParamRole(Role.BUFFER)
    return roles
