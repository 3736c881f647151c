"""The baseline GPT (techniques.md 1.3) and QAT wired into it (2.2, 2.3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from golf.config import resolve
from golf.model import CastedLinear, FakeQuant, attach_fake_quant, build_model, set_fake_quant
from golf.model.attention import CausalSelfAttention
from golf.model.layers import Rotary, apply_rotary
from golf.quant import ExportFormat, is_int6_tensor, qat_target_names
from golf.quant.grid import fake_quantize_rows

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


# --- QAT wired into the model ------------------------------------------------------------------
def qat_model(cfg):
    fmt = ExportFormat(quant="int6", compressor="zstd", grid=cfg.quant_grid,
                       keep_float_max_numel=cfg.quant_keep_float_max_numel)
    model = build_model(cfg, CPU)
    names = attach_fake_quant(model, lambda n, w: is_int6_tensor(n, w, fmt), FakeQuant(6, cfg.quant_grid))
    return model, fmt, names


def capture_effective_weights(model):
    """Weights that F.linear really receives, captured in the forward pass."""
    seen = {}
    for name, module in model.named_modules():
        if isinstance(module, CastedLinear):
            module.register_forward_hook(
                lambda m, inp, out, name=name: seen.__setitem__(f"{name}.weight", m.effective_weight().detach().clone())
            )
    return seen


def test_qat_covers_exactly_the_weights_the_export_puts_on_the_int6_grid():
    cfg = small_cfg(QAT_ENABLED=1)
    model, fmt, names = qat_model(cfg)
    assert names == sorted(qat_target_names(model.named_parameters(), fmt))
    assert len(names) == 6 * cfg.num_layers  # q, k, v, o, fc, proj of every block


@pytest.mark.parametrize("grid", ["relative", "floored"])
def test_qat_forward_rows_are_on_the_int6_grid_and_gradients_reach_latent_weights(grid):
    torch.manual_seed(0)
    cfg = small_cfg(QAT_ENABLED=1, QUANT_GRID=grid)
    model, _, names = qat_model(cfg)
    for block in model.blocks:
        torch.nn.init.normal_(block.attn.proj.weight, std=0.05)
        torch.nn.init.normal_(block.mlp.proj.weight, std=0.05)
    seen = capture_effective_weights(model)
    set_fake_quant(model, True)
    model.train()
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    model(x, x).backward()
    params = dict(model.named_parameters())
    for name in names:
        w_eff = seen[name]
        assert max(len(torch.unique(row)) for row in w_eff) <= 2**6
        torch.testing.assert_close(w_eff, fake_quantize_rows(params[name].detach(), 6, grid), rtol=0, atol=0)
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0
    # evaluation always uses the plain latent weights
    model.eval()
    seen.clear()
    with torch.no_grad():
        model(x, x)
    for name in names:
        assert torch.equal(seen[name], params[name].detach())


@pytest.mark.slow
def test_late_qat_switch_reaches_the_compiled_graph_without_recompiling():
    """techniques.md 2.3: flipping QAT on mid-run must change what the compiled model computes."""
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = small_cfg(QAT_ENABLED=1, NUM_LAYERS=2)
    model, _, names = qat_model(cfg)
    for block in model.blocks:
        torch.nn.init.normal_(block.attn.proj.weight, std=0.05)
        torch.nn.init.normal_(block.mlp.proj.weight, std=0.05)
    model.train()
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    before = compiled(x, x).detach()
    set_fake_quant(model, True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        after = compiled(x, x).detach()
    assert not torch.equal(before, after)
    # eager reference: the same model with every QAT weight replaced by its fake-quantized value
    reference = build_model(cfg, CPU).train()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        params = dict(reference.named_parameters())
        for name in names:
            params[name].copy_(fake_quantize_rows(params[name], 6, cfg.quant_grid))
    torch.testing.assert_close(after, reference(x, x).detach(), rtol=1e-5, atol=1e-5)
