"""The baseline GPT (techniques.md 1.3), the roles of its parameters and its per-token losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from golf.config import resolve
from golf.model import ParamRole, Role, build_model, parameter_roles
from golf.model.attention import CausalSelfAttention
from golf.model.layers import Rotary, apply_rotary

CPU = torch.device("cpu")


def small_cfg(**overrides):
    return resolve("smoke", overrides={"QUANT_FORMAT": "int6", **overrides})


def test_baseline_parameter_count_matches_the_reference_log():
    model = build_model(resolve("baseline"), CPU)
    assert sum(p.numel() for p in model.parameters()) == 17_059_912  # model_params:17059912
    assert model.skip_weights.shape == (4, 512)
    assert model.blocks[0].mlp.fc.weight.shape == (1024, 512)
    assert model.blocks[0].attn.c_k.weight.shape == (256, 512)


def test_init_follows_the_reference():
    torch.manual_seed(0)
    cfg = resolve("baseline", overrides={"NUM_LAYERS": 2})
    model = build_model(cfg, CPU)
    assert abs(model.tok_emb.weight.std().item() - 0.005) < 5e-4
    for block in model.blocks:
        assert torch.count_nonzero(block.attn.proj.weight) == 0
        assert torch.count_nonzero(block.mlp.proj.weight) == 0
        assert torch.equal(block.attn.q_gain, torch.full((8,), 1.5))
        assert torch.equal(block.resid_mix[0], torch.ones(512)) and torch.equal(block.resid_mix[1], torch.zeros(512))
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_logits_are_softcapped():
    torch.manual_seed(0)
    cfg = small_cfg(LOGIT_SOFTCAP=3.0)
    model = build_model(cfg, CPU)
    with torch.no_grad():
        model.tok_emb.weight.mul_(400)  # push raw logits far past the cap
        logits = model.logits(torch.randint(0, cfg.vocab_size, (2, 16)))
    # fp32 tanh saturates to exactly 1 far out, so the bound is inclusive
    assert logits.abs().max() <= 3.0 and logits.abs().max() > 2.9


def test_initial_loss_is_near_uniform():
    torch.manual_seed(0)
    cfg = resolve("baseline", overrides={"NUM_LAYERS": 2})
    model = build_model(cfg, CPU)
    x = torch.randint(0, 1024, (2, 64))
    y = torch.randint(0, 1024, (2, 64))
    assert abs(model(x, y).item() - math.log(1024)) < 0.05


def test_grouped_query_attention_equals_explicit_key_value_repetition():
    torch.manual_seed(0)
    attn = CausalSelfAttention(64, num_heads=4, num_kv_heads=2, rope_base=10000.0, qk_gain_init=1.5)
    torch.nn.init.normal_(attn.proj.weight, std=0.1)
    x = torch.randn(2, 10, 64)
    out = attn(x)
    # reference: repeat each KV head for its query group and run plain causal attention
    q = attn.c_q(x).view(2, 10, 4, 16)
    k = attn.c_k(x).view(2, 10, 2, 16)
    v = attn.c_v(x).view(2, 10, 2, 16)
    q, k = F.rms_norm(q, (16,)), F.rms_norm(k, (16,))
    cos, sin = attn.rotary(10, CPU, q.dtype)
    q, k = apply_rotary(q, cos, sin) * 1.5, apply_rotary(k, cos, sin)
    k, v = k.repeat_interleave(2, dim=2), v.repeat_interleave(2, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / 4.0
    scores = scores.masked_fill(torch.triu(torch.ones(10, 10, dtype=torch.bool), 1), float("-inf"))
    y = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).reshape(2, 10, 64)
    torch.testing.assert_close(out, attn.proj(y), rtol=1e-5, atol=1e-5)


def test_rotary_rotates_pairs_and_leaves_position_zero_alone():
    rot = Rotary(16, 10000.0)
    cos, sin = rot(8, CPU, torch.float32)
    x = torch.randn(1, 8, 2, 16)
    y = apply_rotary(x, cos, sin)
    torch.testing.assert_close(y[:, 0], x[:, 0])
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))


def test_causality_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    cfg = small_cfg()
    model = build_model(cfg, CPU).eval()
    for block in model.blocks:  # make the branches non-trivial
        torch.nn.init.normal_(block.attn.proj.weight, std=0.05)
        torch.nn.init.normal_(block.mlp.proj.weight, std=0.05)
    x = torch.randint(0, cfg.vocab_size, (1, 20))
    x2 = x.clone()
    x2[0, 15:] = (x2[0, 15:] + 1) % cfg.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(model.logits(x)[:, :15], model.logits(x2)[:, :15])


# --- parameter roles ---------------------------------------------------------------------------
def test_every_parameter_has_the_role_its_module_declares():
    model = build_model(resolve("baseline"), CPU)
    roles = parameter_roles(model)
    assert set(roles) == {name for name, _ in model.named_parameters()}
    assert roles["tok_emb.weight"] == ParamRole(Role.EMBEDDING)
    assert roles["skip_weights"].role is Role.CONTROL
    block = {name.split(".", 2)[2]: role for name, role in roles.items() if name.startswith("blocks.0.")}
    assert block == {
        "attn.c_q.weight": ParamRole(Role.MATRIX, "attn"), "attn.c_k.weight": ParamRole(Role.MATRIX, "attn"),
        "attn.c_v.weight": ParamRole(Role.MATRIX, "attn"), "attn.proj.weight": ParamRole(Role.MATRIX, "attn"),
        "attn.q_gain": ParamRole(Role.CONTROL, "attn"),
        "mlp.fc.weight": ParamRole(Role.MATRIX, "mlp"), "mlp.proj.weight": ParamRole(Role.MATRIX, "mlp"),
        "attn_scale": ParamRole(Role.CONTROL), "mlp_scale": ParamRole(Role.CONTROL), "resid_mix": ParamRole(Role.CONTROL),
    }
    untied = parameter_roles(build_model(resolve("smoke", overrides={"TIE_EMBEDDINGS": 0}), CPU))
    assert untied["lm_head.weight"] == ParamRole(Role.HEAD)  # the parent's declaration wins over CastedLinear's


def test_a_parameter_nobody_declared_is_an_error_not_a_silent_default():
    model = build_model(resolve("smoke"), CPU)
    model.blocks[0].extra_gain = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"parameters without a role: blocks\.0\.extra_gain"):
        parameter_roles(model)


def test_token_losses_average_to_the_mean_loss():
    torch.manual_seed(0)
    cfg = resolve("smoke")
    model = build_model(cfg, CPU).eval()
    x = torch.randint(0, cfg.vocab_size, (3, 40))
    y = torch.randint(0, cfg.vocab_size, (3, 40))
    with torch.no_grad():
        per_token = model.token_losses(x, y)
        mean = model(x, y)
    assert per_token.shape == (3, 40) and per_token.dtype == torch.float32
    torch.testing.assert_close(per_token.sum(), mean * y.numel(), rtol=1e-6, atol=1e-5)
