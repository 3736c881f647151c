"""Architecture toggles (techniques.md 7): each proven on the computation the model really does,
through assemble_model (the same path golf.train takes), at smoke shapes on CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from golf.config import resolve, validate
from golf.distributed import DistContext
from golf.knobs import ConfigError
from golf.model.layers import Rotary, apply_rotary
from golf.techniques import TechniqueSet
from golf.train import assemble_model, export_policy

CPU_CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def smoke(**overrides):
    return resolve("smoke", overrides=overrides)


def build(cfg, seed: int = 0):
    validate(cfg, check_runtime=False)
    torch.manual_seed(seed)
    techniques = TechniqueSet(cfg)
    built = assemble_model(cfg, CPU_CTX, techniques, export_policy(cfg, techniques), log=lambda line: None)
    return built.base, techniques


def tokens(cfg, batch: int = 2, seq: int = 32, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)


def randomize_projections(model, std: float = 0.05) -> None:
    """Zero-initialised output projections would hide a branch's effect."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for block in model.blocks:
            for w in (block.attn.proj.weight, block.mlp.proj.weight):
                w.copy_(torch.randn(w.shape, generator=gen) * std)


class Captured(TorchFunctionMode):
    """The arguments of every call to ``func`` (what the forward pass really computed with)."""

    def __init__(self, func) -> None:
        super().__init__()
        self.func, self.calls = func, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is self.func:
            self.calls.append([a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args])
        return func(*args, **kwargs)


# --- 7.1 MLP width ---------------------------------------------------------------------------------
def test_mlp_width_follows_the_multiple_or_the_hidden_size():
    model, _ = build(smoke(MLP_MULT=3))
    assert model.blocks[0].mlp.fc.weight.shape == (int(3 * 64), 64)
    model, _ = build(smoke(MLP_HIDDEN=40))
    assert all(b.mlp.fc.weight.shape == (40, 64) and b.mlp.proj.weight.shape == (64, 40) for b in model.blocks)


def test_mlp_mult_beside_mlp_hidden_is_warned_inert():
    warnings = validate(smoke(MLP_HIDDEN=40, MLP_MULT=3), check_runtime=False, baseline=smoke())
    assert any("MLP_MULT=3.0 has no effect" in w for w in warnings)


# --- 7.2 activation --------------------------------------------------------------------------------
def _mlp_on_points(cfg, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first MLP with identity fc/proj: its output is the activation at ``points``; also the
    gradient of the sum with respect to the points."""
    model, _ = build(cfg)
    mlp = model.blocks[0].mlp
    with torch.no_grad():
        mlp.fc.weight.copy_(torch.eye(*mlp.fc.weight.shape))
        mlp.proj.weight.copy_(torch.eye(*mlp.proj.weight.shape))
    x = torch.zeros(1, 1, 64)
    x[0, 0, : len(points)] = points
    x.requires_grad_(True)
    out = mlp(x)
    out.sum().backward()
    return out[0, 0, : len(points)].detach(), x.grad[0, 0, : len(points)]


def test_leaky_relu_squared_at_chosen_points():
    points = torch.tensor([2.0, -2.0, 0.5, -1.0, 0.0])
    out, grad = _mlp_on_points(smoke(MLP_ACT="leaky_relu2", LEAKY_SLOPE=0.5), points)
    assert torch.allclose(out, torch.tensor([4.0, 1.0, 0.25, 0.25, 0.0]))
    assert grad[1].item() == pytest.approx(-1.0)  # d/dh (0.5 h)^2 = 0.5 h at h = -2
    assert grad[0].item() == pytest.approx(4.0)
    # the baseline's relu^2 on the same points: nothing below zero, no gradient there
    out, grad = _mlp_on_points(smoke(), points)
    assert torch.allclose(out, torch.tensor([4.0, 0.0, 0.25, 0.0, 0.0]))
    assert grad[1].item() == 0.0


def test_leaky_slope_without_leaky_activation_is_warned_inert():
    warnings = validate(smoke(LEAKY_SLOPE=0.3), check_runtime=False, baseline=smoke())
    assert any("LEAKY_SLOPE=0.3 has no effect" in w for w in warnings)


# --- 7.9 partial RoPE ------------------------------------------------------------------------------
def test_partial_rope_rotates_only_the_first_dims():
    cfg = smoke(ROPE_DIMS=8)  # head dim 16 at smoke scale
    model, _ = build(cfg)
    attn = model.blocks[0].attn
    seen = {}
    hook = attn.c_q.register_forward_hook(lambda m, a, out: seen.__setitem__("q", out.detach()))
    ids = tokens(cfg, batch=1, seq=40)
    with Captured(F.scaled_dot_product_attention) as cap:
        model.logits(ids)
    hook.remove()
    q = cap.calls[0][0].transpose(1, 2)  # [B, T, H, D] as the kernel received it
    # the unrotated query: per-head RMSNorm of c_q's output times q_gain
    plain = F.rms_norm(seen["q"].unflatten(-1, (cfg.num_heads, 16)), (16,)) * attn.q_gain[None, None, :, None]
    assert torch.equal(q[..., 8:], plain[..., 8:])  # non-rotary dims: unrotated, at every position
    cos, sin = Rotary(8, cfg.rope_base)(40, q.device, q.dtype)
    assert torch.allclose(q[..., :8], apply_rotary(plain[..., :8], cos, sin), atol=1e-6)  # an 8-dim RoPE
    assert not torch.allclose(q[..., :8], plain[..., :8])
    # the same token everywhere: non-rotary dims equal at positions 0 and 30, rotary dims differ
    with Captured(F.scaled_dot_product_attention) as cap:
        model.logits(torch.full((1, 40), 5))
    q = cap.calls[0][0].transpose(1, 2)
    assert torch.equal(q[0, 0, :, 8:], q[0, 30, :, 8:]) and not torch.allclose(q[0, 0, :, :8], q[0, 30, :, :8])


def test_rope_dims_must_be_even_and_fit_the_head():
    with pytest.raises(ConfigError, match="ROPE_DIMS=7 is odd"):
        validate(smoke(ROPE_DIMS=7), check_runtime=False)
    with pytest.raises(ConfigError, match="ROPE_DIMS=32 exceeds the head dim 16"):
        validate(smoke(ROPE_DIMS=32), check_runtime=False)


# --- 7.10 LN scale ---------------------------------------------------------------------------------
def test_ln_scale_damps_block_i_norm_outputs_by_inverse_sqrt_depth():
    model, _ = build(smoke(LN_SCALE=1))
    randomize_projections(model)
    seen: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    for block in model.blocks:
        for branch in ("attn", "mlp"):
            hooks.append(getattr(block, branch).register_forward_pre_hook(
                lambda mod, args, key=(block.layer_idx, branch): seen.__setitem__(key, args[0].detach())))
    model.logits(tokens(model_cfg := smoke()))
    for hook in hooks:
        hook.remove()
    for (i, _branch), h in seen.items():
        rms = h.pow(2).mean(-1).sqrt()
        assert torch.allclose(rms, torch.full_like(rms, 1 / math.sqrt(i + 1)), atol=1e-4), (i, _branch)
    assert len(seen) == 2 * model_cfg.num_layers


# --- 7.8 XSA ---------------------------------------------------------------------------------------
def _attention_outputs(model, cfg):
    """Per block: (y [B, T, H, hd] before the output projection, v [B, T, Hkv, hd])."""
    out, hooks = {}, []
    for block in model.blocks:
        attn = block.attn
        hooks.append(attn.c_v.register_forward_hook(
            lambda mod, args, res, i=block.layer_idx: out.setdefault(i, {}).__setitem__("v", res.detach())))
        hooks.append(attn.proj.register_forward_pre_hook(
            lambda mod, args, i=block.layer_idx: out.setdefault(i, {}).__setitem__("y", args[0].detach())))
    model.logits(tokens(cfg))
    for hook in hooks:
        hook.remove()
    h, hkv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    return {i: (d["y"].unflatten(-1, (h, hd)), d["v"].unflatten(-1, (hkv, hd))) for i, d in out.items()}


def _own_value_components(y, v):
    """|<y_h, v_hat>| and |y_h| for every head and position (GQA: v of the head's group)."""
    group = y.size(2) // v.size(2)
    v_hat = F.normalize(v, dim=-1).repeat_interleave(group, dim=2)
    return (y * v_hat).sum(-1).abs(), y.norm(dim=-1)


def test_xsa_output_is_orthogonal_to_the_tokens_own_value_in_the_last_n_layers_only():
    cfg = smoke(XSA_LAST_N=2)
    model, _ = build(cfg)
    randomize_projections(model)
    outputs = _attention_outputs(model, cfg)
    for i, (y, v) in outputs.items():
        along, norm = _own_value_components(y, v)
        if i >= cfg.num_layers - 2:
            assert (along < 1e-3 * norm + 1e-6).all(), i
        else:  # ordinary attention keeps a clear component along its own value
            assert (along > 1e-2 * norm).float().mean() > 0.5, i


def test_xsa_on_more_layers_than_exist_covers_all():
    cfg = smoke(XSA_LAST_N=11)
    model, _ = build(cfg)
    assert all(len(b.attn.output_transforms) == 1 for b in model.blocks)


# --- 7.16 logit softcap and q_gain -----------------------------------------------------------------
def test_softcap_and_q_gain_take_the_seed_values():
    cfg = smoke(LOGIT_SOFTCAP=15, QK_GAIN_INIT=4.0)
    model, _ = build(cfg)
    with torch.no_grad():
        model.tok_emb.weight.mul_(400.0)  # large logits, so the cap binds
        logits = model.logits(tokens(cfg))
    assert 14 < logits.abs().max() <= 15  # tanh saturates to exactly the cap in fp32
    assert all(torch.equal(b.attn.q_gain, torch.full((cfg.num_heads,), 4.0)) for b in model.blocks)


# --- 7.3 SmearGate ---------------------------------------------------------------------------------
def _x0(model, ids):
    seen = {}
    hook = model.blocks[0].register_forward_pre_hook(lambda mod, args: seen.__setitem__("x0", args[1].detach()))
    logits = model.logits(ids)
    hook.remove()
    return seen["x0"], logits


def test_smear_gate_at_init_averages_each_position_with_the_previous():
    cfg = smoke(SMEAR_GATE=1)
    model, _ = build(cfg)
    ids = tokens(cfg)
    x0, _ = _x0(model, ids)
    x = F.rms_norm(model.tok_emb(ids), (cfg.model_dim,)).detach()
    assert torch.allclose(x0[:, 0], 0.5 * x[:, 0])
    assert torch.allclose(x0[:, 1:], 0.5 * (x[:, 1:] + x[:, :-1]))
    with torch.no_grad():
        model.input_transforms['smear'].gate.fill_(50.0)  # sigmoid = 1: the shifted input
    x0, _ = _x0(model, ids)
    assert torch.allclose(x0[:, 1:], x[:, :-1]) and torch.equal(x0[:, 0], torch.zeros_like(x0[:, 0]))


def test_smear_gate_closed_equals_the_ungated_model():
    cfg = smoke()
    plain, _ = build(cfg)
    gated, _ = build(smoke(SMEAR_GATE=1))
    with torch.no_grad():
        gated.input_transforms['smear'].gate.fill_(-1e4)  # sigmoid = 0 exactly: the gate says "no smear"
    ids = tokens(cfg)
    assert torch.equal(gated.logits(ids), plain.logits(ids))
    assert [n for n, _ in gated.named_parameters() if n not in dict(plain.named_parameters())] == ["input_transforms.smear.gate"]


# --- 7.4 / 7.5 hashed n-grams -------------------------------------------------------------------
def _int32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


def reference_bucket(window: list[int], buckets: int) -> int:
    """The documented hash, in wrapped int32 arithmetic, of (.., x_{t-1}, x_t)."""
    mults = (36313, 27191, 51497)
    h = 0
    for back, token in enumerate(reversed(window)):
        h ^= _int32(mults[back] * token)
    return _int32(h) % (buckets - 1)


@pytest.mark.parametrize("order,knobs,attr", [
    (2, {"BIGRAM_VOCAB_SIZE": 1536, "BIGRAM_DIM": 16}, "bigram"),
    (3, {"TRIGRAM_ENABLED": 1, "TRIGRAM_VOCAB_SIZE": 999, "TRIGRAM_DIM": 8}, "trigram"),
])
def test_hashed_ngram_indexes_the_documented_hash_of_the_previous_tokens(order, knobs, attr):
    cfg = smoke(**knobs)
    model, _ = build(cfg)
    module = model.embedding_adders[attr]
    buckets = module.buckets
    ids = tokens(cfg, batch=3, seq=64)
    with Captured(F.embedding) as cap:
        model.logits(ids)
    looked_up = [c[0] for c in cap.calls if c[1].shape == module.table.weight.shape]
    assert len(looked_up) == 1
    idx = looked_up[0]
    for b in range(ids.size(0)):
        row = ids[b].tolist()
        assert idx[b, : order - 1].tolist() == [buckets - 1] * (order - 1)
        expected = [reference_bucket(row[t - order + 1: t + 1], buckets) for t in range(order - 1, len(row))]
        assert idx[b, order - 1:].tolist() == expected
    assert int(idx.min()) >= 0 and int(idx.max()) <= buckets - 1
    # large ids overflow int32 in 36313 * x: the hash wraps as the seeds' int32 code does
    from golf.techniques.hashed_ngrams import ngram_buckets

    big = torch.tensor([[65535, 60001, 59999, 65000]])
    got = ngram_buckets(big, buckets, order)[0, order - 1:].tolist()
    assert got == [reference_bucket(big[0, t - order + 1: t + 1].tolist(), buckets) for t in range(order - 1, 4)]


def test_bigram_adds_nothing_at_init_and_has_the_documented_parameters():
    cfg = smoke(BIGRAM_VOCAB_SIZE=512, BIGRAM_DIM=16)
    plain, _ = build(smoke())
    model, _ = build(cfg)
    ids = tokens(cfg)
    assert torch.equal(model.logits(ids), plain.logits(ids))
    added = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert added == 512 * 16 + 16 * cfg.model_dim + 1
    assert model.embedding_adders['bigram'].scale.item() == pytest.approx(0.05)
    with torch.no_grad():  # once the table is non-zero the embedding really changes the input
        model.embedding_adders['bigram'].table.weight.normal_()
    assert not torch.allclose(model.logits(ids), plain.logits(ids))


def _built(cfg):
    validate(cfg, check_runtime=False)
    torch.manual_seed(0)
    techniques = TechniqueSet(cfg)
    policy = export_policy(cfg, techniques)
    return assemble_model(cfg, CPU_CTX, techniques, policy, log=lambda line: None), policy


def test_bigram_roles_route_the_projection_to_muon_or_adam_and_export_int6():
    from golf.model.roles import Role

    built, policy = _built(smoke(BIGRAM_VOCAB_SIZE=2048, BIGRAM_DIM=64, QUANT_FORMAT="int6"))
    roles = built.roles
    assert roles["embedding_adders.bigram.table.weight"].role is Role.EMBEDDING
    assert roles["embedding_adders.bigram.proj.weight"].role is Role.MATRIX
    assert roles["embedding_adders.bigram.scale"].role is Role.CONTROL
    table = built.base.embedding_adders['bigram'].table.weight
    fmt = policy.format_for("embedding_adders.bigram.table.weight", table, roles["embedding_adders.bigram.table.weight"])
    assert fmt.kind == "int" and fmt.bits == 6
    built, policy = _built(smoke(BIGRAM_VOCAB_SIZE=2048, BIGRAM_DIM=64, BIGRAM_PROJ_OPTIMIZER="adam"))
    assert built.roles["embedding_adders.bigram.proj.weight"].role is Role.CONTROL
    fmt = policy.format_for("embedding_adders.bigram.table.weight", built.base.embedding_adders['bigram'].table.weight, built.roles["embedding_adders.bigram.table.weight"])
    assert fmt.kind == "int" and fmt.bits == 8  # the int8 export keeps the reference rows (#137)


def test_bigram_knobs_without_buckets_are_warned_inert_and_one_bucket_is_an_error():
    warnings = validate(smoke(BIGRAM_DIM=64), check_runtime=False, baseline=smoke())
    assert any("BIGRAM_DIM=64 has no effect unless BIGRAM_VOCAB_SIZE>0" in w for w in warnings)
    with pytest.raises(ConfigError, match="BIGRAM_VOCAB_SIZE=1 leaves no hash bucket"):
        validate(smoke(BIGRAM_VOCAB_SIZE=1), check_runtime=False)


# --- 7.6 value residual ----------------------------------------------------------------------------
def test_value_residual_with_lambda_zero_one_equals_the_plain_model():
    cfg = smoke()
    plain, _ = build(cfg)
    mixed, _ = build(smoke(VALUE_RESIDUAL=1))
    randomize_projections(plain)
    randomize_projections(mixed)
    ids = tokens(cfg)
    assert not torch.allclose(mixed.logits(ids), plain.logits(ids))  # (0.5, 0.5) mixes v0 in
    with torch.no_grad():
        for block in mixed.blocks:
            block.attn.value_transforms["residual"].vr_lambda.copy_(torch.tensor([0.0, 1.0]))
    assert torch.equal(mixed.logits(ids), plain.logits(ids))


def test_value_residual_sends_later_losses_to_layer_zero_values():
    def layer0_value_grad(cfg):
        model, _ = build(cfg)
        randomize_projections(model)
        with torch.no_grad():
            model.blocks[0].attn.proj.weight.zero_()  # layer 0's own attention output is cut off
        ids = tokens(cfg)
        model(ids, torch.roll(ids, -1, 1)).backward()
        return model.blocks[0].attn.c_v.weight.grad.abs().sum().item()

    assert layer0_value_grad(smoke()) == 0.0
    assert layer0_value_grad(smoke(VALUE_RESIDUAL=1)) > 0.0
    # every layer carries its lambda, and each one (the first too) receives a gradient tensor
    model, _ = build(smoke(VALUE_RESIDUAL=1))
    ids = tokens(model_cfg := smoke())
    model(ids, torch.roll(ids, -1, 1)).backward()
    lambdas = [b.attn.value_transforms["residual"].vr_lambda for b in model.blocks]
    assert len(lambdas) == model_cfg.num_layers and all(p.grad is not None for p in lambdas)


# --- 7.7 gated attention ---------------------------------------------------------------------------
def test_gated_attention_at_init_scales_every_head_by_sigmoid_four():
    cfg = smoke()
    plain, _ = build(cfg)
    gated, _ = build(smoke(GATED_ATTENTION=1))
    a = _attention_outputs(plain, cfg)
    b = _attention_outputs(gated, cfg)
    # layer 0 sees identical inputs in both models: its gated output is 0.982 x the plain one
    y_plain, y_gated = a[0][0], b[0][0]
    assert torch.allclose(y_gated, torch.sigmoid(torch.tensor(4.0)) * y_plain, atol=1e-6)
    assert sum(p.numel() for p in gated.parameters()) - sum(p.numel() for p in plain.parameters()) == \
        cfg.num_layers * cfg.num_heads * (cfg.model_dim + 1)


# --- 7.12 sigmoid-gated skips ----------------------------------------------------------------------
def _first_decoder_input(model, ids):
    seen = {}
    enc = len(model.layer_order) // 2
    hooks = [
        model.blocks[enc - 1].register_forward_hook(lambda m, a, out: seen.__setitem__("skip", out.detach())),
        model.blocks[enc].register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach())),
    ]
    model.logits(ids)
    for h in hooks:
        h.remove()
    return seen["skip"], seen["x"]


def test_skip_gates_mix_stream_and_skip_convexly():
    cfg = smoke(SKIP_GATES_ENABLED=1)
    model, _ = build(cfg)
    randomize_projections(model)
    ids = tokens(cfg)
    w = model.skip_weights[0].detach()
    # the last encoder block's output is both the stream and the skip entering decoder block 0
    skip, x = _first_decoder_input(model, ids)
    assert torch.allclose(x, 0.5 * skip + 0.5 * (w * skip), atol=1e-6)
    with torch.no_grad():
        model.skip_merge.gates.fill_(1e4)
    skip, x = _first_decoder_input(model, ids)
    assert torch.allclose(x, skip, atol=1e-6)  # g -> +inf: the skip is ignored
    with torch.no_grad():
        model.skip_merge.gates.fill_(-1e4)
        model.skip_weights.fill_(0.3)
    skip, x = _first_decoder_input(model, ids)
    assert torch.allclose(x, 0.3 * skip, atol=1e-6)  # g -> -inf: only w * skip passes


# --- 7.13 orthogonal init --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["zero_proj", "all_scaled"])
def test_ortho_init_makes_large_linears_orthogonal_and_scales_projections(mode):
    cfg = smoke(ORTHO_INIT=mode, MLP_MULT=2)
    model, _ = build(cfg)
    c_q = model.blocks[0].attn.c_q.weight  # 64 x 64
    assert torch.allclose(c_q @ c_q.T, torch.eye(64), atol=1e-5)
    fc = model.blocks[1].mlp.fc.weight  # 128 x 64: orthonormal columns
    assert torch.allclose(fc.T @ fc, torch.eye(64), atol=1e-5)
    proj = model.blocks[2].mlp.proj.weight  # 64 x 128
    if mode == "zero_proj":
        assert not proj.any()  # zero-initialised projections stay zero (#635, #1260)
    else:
        expected = math.sqrt(64) / math.sqrt(2 * cfg.num_layers)
        assert proj.norm().item() == pytest.approx(expected, rel=1e-5)
        assert torch.allclose(proj @ proj.T * (2 * cfg.num_layers), torch.eye(64), atol=1e-4)
    small = model.blocks[0].attn.c_k.weight  # 32 x 64: below the 64 threshold, left as built
    plain, _ = build(smoke(MLP_MULT=2))
    assert torch.equal(small, plain.blocks[0].attn.c_k.weight)


def test_ortho_scaled_proj_scales_the_bigram_projection_only():
    cfg = smoke(ORTHO_INIT="scaled_proj", BIGRAM_VOCAB_SIZE=256, BIGRAM_DIM=64)
    model, _ = build(cfg)
    p = model.embedding_adders["bigram"].proj.weight  # 64 x 64
    assert torch.allclose(p @ p.T * (2 * cfg.num_layers), torch.eye(64), atol=1e-4)
    assert not model.blocks[0].attn.proj.weight.any()


# --- 7.14 phase-transition resid_mix -----------------------------------------------------------
def test_phase_resid_mix_init_follows_the_formula():
    cfg = smoke(RESID_MIX_INIT="phase", NUM_LAYERS=10)
    model, _ = build(cfg)
    for i, block in enumerate(model.blocks):
        phi = 1 / (1 + math.exp(-3 * (i / 9 - 0.5)))
        assert torch.allclose(block.resid_mix[0], torch.full((64,), phi))
        assert torch.allclose(block.resid_mix[1], torch.full((64,), 1 - phi))
    assert model.blocks[0].resid_mix[0, 0].item() == pytest.approx(0.182, abs=1e-3)
    assert model.blocks[9].resid_mix[0, 0].item() == pytest.approx(0.818, abs=1e-3)


# --- 7.11 value embeddings -----------------------------------------------------------------------
def test_value_embeddings_reach_only_the_chosen_layers():
    cfg = smoke(VE_ENABLED=1, VE_DIM=16, VE_LAYERS="2,3")
    plain, _ = build(smoke())
    model, _ = build(cfg)
    kv_dim = cfg.num_kv_heads * cfg.head_dim
    added = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert added == cfg.vocab_size * 16 + 16 * kv_dim + 1 + 2
    assert [b.layer_idx for b in model.blocks if "ve" in b.attn.value_transforms] == [2, 3]
    ids = tokens(cfg)
    assert torch.equal(model.logits(ids), plain.logits(ids))  # zero projection: nothing at init
    with torch.no_grad():
        model.value_embedding.proj.weight.normal_()
    randomize_projections(model)
    randomize_projections(plain)
    # the values attention consumed: identical below the chosen layers, changed in them
    with Captured(F.scaled_dot_product_attention) as cap_ve:
        model.logits(ids)
    with Captured(F.scaled_dot_product_attention) as cap_plain:
        plain.logits(ids)
    for i in range(cfg.num_layers):
        same = torch.allclose(cap_ve.calls[i][2], cap_plain.calls[i][2])
        assert same == (i < 2), i
    with pytest.raises(ConfigError, match="VE_LAYERS='9,10': layer 9 does not exist with NUM_LAYERS=4"):
        validate(smoke(VE_ENABLED=1), check_runtime=False)
    assert [b.layer_idx for b in build(smoke(VE_ENABLED=1, VE_LAYERS="-1"))[0].blocks
            if "ve" in b.attn.value_transforms] == [3]


# --- parallel residual ---------------------------------------------------------------------------
def test_parallel_residual_feeds_attention_and_mlp_the_same_input_from_the_chosen_layer():
    cfg = smoke(PARALLEL_RESIDUAL=1, PARALLEL_RESIDUAL_START=2)
    model, _ = build(cfg)
    randomize_projections(model)
    seen: dict[tuple[int, str], torch.Tensor] = {}
    hooks = [getattr(b, br).register_forward_pre_hook(
        lambda m, a, key=(b.layer_idx, br): seen.__setitem__(key, a[0].detach()))
        for b in model.blocks for br in ("attn", "mlp")]
    model.logits(tokens(cfg))
    for h in hooks:
        h.remove()
    for i in range(cfg.num_layers):
        assert torch.equal(seen[(i, "attn")], seen[(i, "mlp")]) == (i >= 2), i


# --- 7.15 depth recurrence -------------------------------------------------------------------------
def test_recurrence_virtual_order_matches_1260():
    from golf.techniques.depth_recurrence import virtual_order

    assert virtual_order([4, 5], 1, 11) == (0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 10)
    assert virtual_order([1, 2], 2, 4) == (0, 1, 2, 1, 2, 1, 2, 3)


def _recurrent(start: int = 5, **extra):
    cfg = smoke(RECUR_LAYERS="1,2", RECUR_START_STEP=start, **extra)
    validate(cfg, check_runtime=False)
    torch.manual_seed(0)
    techniques = TechniqueSet(cfg)
    lines: list[str] = []
    built = assemble_model(cfg, CPU_CTX, techniques, export_policy(cfg, techniques), log=lines.append)
    randomize_projections(built.base)
    recurrence = next(t for t in techniques if t.name == "depth_recurrence")
    return cfg, built, techniques, recurrence, lines


def test_recurrence_switches_on_at_its_step_and_takes_effect_under_torch_compile():
    from golf.techniques import Progress

    cfg, built, techniques, recurrence, lines = _recurrent(start=5)
    base = built.base
    assert sum(p.numel() for p in base.parameters()) == sum(p.numel() for p in build(smoke())[0].parameters())
    compiled = torch.compile(base, backend="aot_eager", fullgraph=True, dynamic=False)
    ids = tokens(cfg)
    with torch.no_grad():
        before = compiled.logits(ids)
        for step in range(5):
            techniques.before_step(Progress(step, 1.0, step / 10, 0.0), built.run)
        assert compiled.logits(ids).equal(before)  # not yet: step 4 < RECUR_START_STEP
        techniques.before_step(Progress(5, 1.0, 0.5, 0.0), built.run)
        after = compiled.logits(ids)
        eager = base.logits(ids)
    assert base.layer_order == (0, 1, 2, 1, 2, 3)
    assert not torch.allclose(after, before)          # the switch reached the compiled graph
    assert torch.allclose(after, eager, atol=1e-5)    # and it runs the recurrent order
    assert lines == ["recurrence:activated step:5 layers:[1, 2] virtual_layers:6"]
    assert recurrence.report()["activated_at_step"] == 5


def test_recurrence_reuses_the_same_block_objects_and_sums_their_gradients():
    cfg, built, _, _, _ = _recurrent(start=0)
    base = built.base
    calls: list[int] = []
    hooks = [b.register_forward_pre_hook(lambda m, a, i=b.layer_idx: calls.append(i)) for b in base.blocks]
    ids = tokens(cfg)
    targets = torch.roll(ids, -1, 1)
    base(ids, targets).backward()
    for h in hooks:
        h.remove()
    assert calls == [0, 1, 2, 1, 2, 3]
    shared = {n: p.grad.clone() for n, p in base.blocks[1].named_parameters()}
    # the same network unrolled: the second pass through block 1 uses an identical copy
    import copy

    base.zero_grad()
    base.blocks.append(copy.deepcopy(base.blocks[1]))
    base.layer_order = (0, 1, 2, 4, 2, 3)
    base(ids, targets).backward()
    for name, p in base.blocks[1].named_parameters():
        unrolled = p.grad + dict(base.blocks[4].named_parameters())[name].grad
        assert torch.allclose(shared[name], unrolled, atol=1e-6), name


def test_recurrence_skip_wiring_on_the_virtual_sequence():
    """13 virtual layers over 11: six skips pushed, decoders 0..5 pop with weights 0,1,2,3,4,4."""
    cfg = smoke(NUM_LAYERS=11, RECUR_LAYERS="4,5")
    model, _ = build(cfg)
    used: list[int] = []

    class Spy(torch.nn.Module):
        def forward(self, x, skip, j):
            used.append(j)
            return x + skip

    model.skip_merge = Spy()
    model.logits(tokens(cfg))
    assert len(model.layer_order) == 13 and used == [0, 1, 2, 3, 4, 4]


def test_recurrence_layers_are_checked():
    with pytest.raises(ConfigError, match="RECUR_LAYERS='4,5': layer 4 does not exist with NUM_LAYERS=4"):
        validate(smoke(RECUR_LAYERS="4,5"), check_runtime=False)
    warnings = validate(smoke(RECUR_START_STEP=10), check_runtime=False, baseline=smoke())
    assert any("RECUR_START_STEP=10 has no effect unless RECUR_LAYERS is set" in w for w in warnings)


# --- every toggle trains, alone and all together -----------------------------------------------
ALONE = {
    "mlp_hidden": {"MLP_HIDDEN": 96},
    "mlp_act": {"MLP_ACT": "leaky_relu2"},
    "partial_rope": {"ROPE_DIMS": 8},
    "ln_scale": {"LN_SCALE": 1},
    "xsa": {"XSA_LAST_N": 2},
    "smear_gate": {"SMEAR_GATE": 1},
    "bigram_hash": {"BIGRAM_VOCAB_SIZE": 512, "BIGRAM_DIM": 32},
    "trigram_hash": {"TRIGRAM_ENABLED": 1, "TRIGRAM_VOCAB_SIZE": 512, "TRIGRAM_DIM": 32},
    "value_residual": {"VALUE_RESIDUAL": 1},
    "gated_attention": {"GATED_ATTENTION": 1},
    "skip_gates": {"SKIP_GATES_ENABLED": 1},
    "ortho_init": {"ORTHO_INIT": "all_scaled"},
    "resid_mix_init": {"RESID_MIX_INIT": "phase"},
    "value_embeddings": {"VE_ENABLED": 1, "VE_DIM": 16, "VE_LAYERS": "2,3"},
    "parallel_residual": {"PARALLEL_RESIDUAL": 1, "PARALLEL_RESIDUAL_START": 2},
    "depth_recurrence": {"RECUR_LAYERS": "1,2", "RECUR_START_STEP": 5},
}
ALL_ON = {k: v for knobs in ALONE.values() for k, v in knobs.items()}


class FixedBatches:
    """A loader that serves the same batch every micro-step (a memorisable target)."""

    def __init__(self, cfg, seed: int = 3) -> None:
        gen = torch.Generator().manual_seed(seed)
        seqs = cfg.train_batch_tokens // cfg.train_seq_len // 8
        self.x = torch.randint(0, cfg.vocab_size, (max(seqs, 1), cfg.train_seq_len), generator=gen)

    def next_batch(self, global_tokens, seq_len, grad_accum_steps):
        return self.x, torch.roll(self.x, -1, 1)


def train_steps(cfg, steps: int = 20) -> list[float]:
    from golf.optim import build_optimizers
    from golf.optim.schedule import lr_scale
    from golf.techniques import Progress
    from golf.train import apply_update, train_step

    validate(cfg, check_runtime=False)
    torch.manual_seed(0)
    techniques = TechniqueSet(cfg)
    built = assemble_model(cfg, CPU_CTX, techniques, export_policy(cfg, techniques), log=lambda line: None)
    built.run.optimizers = build_optimizers(built.base, cfg, built.roles)
    loader, losses = FixedBatches(cfg), []
    for step in range(steps):
        scale = lr_scale(cfg, step, 0.0)
        techniques.before_step(Progress(step, scale, step / steps, 0.0), built.run)
        losses.append(train_step(built.train_model, loader, built.run.optimizers, cfg, 1, CPU_CTX.device).item())
        apply_update(built.base, built.run.optimizers, cfg, step, scale)
    return losses


@pytest.mark.parametrize("name", [*ALONE, "all"])
def test_every_toggle_trains_at_smoke_scale(name):
    knobs = ALL_ON if name == "all" else ALONE[name]
    losses = train_steps(smoke(**knobs, ITERATIONS=20))
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.5, losses


# --- full-scale parameter counts of the seeds' architectures (techniques.md 10) ------------------
SEED_ARCHITECTURES = {
    # seed: (settings, logged model_params)
    "BASE": ({}, 17_059_912),
    "#137 (logged run: MLP 3x, no bigram/smear)": ({"MLP_MULT": 3}, 21_778_504),
    "#326": ({"NUM_LAYERS": 10, "MLP_MULT": 3.0, "SMEAR_GATE": 1, "BIGRAM_VOCAB_SIZE": 10240,
              "BIGRAM_DIM": 128, "RESID_MIX_INIT": "phase"}, 25_517_137),
    "#635": ({"NUM_LAYERS": 11, "MLP_MULT": 3.0, "MLP_ACT": "leaky_relu2", "ROPE_DIMS": 16, "XSA_LAST_N": 4,
              "BIGRAM_VOCAB_SIZE": 1536, "BIGRAM_DIM": 128, "BIGRAM_PROJ_OPTIMIZER": "adam", "SMEAR_GATE": 1,
              "VALUE_RESIDUAL": 1, "GATED_ATTENTION": 1}, 26_809_543),
    "#1260": ({"VOCAB_SIZE": 4096, "NUM_LAYERS": 11, "MLP_MULT": 4.0, "MLP_ACT": "leaky_relu2", "ROPE_DIMS": 16,
               "QK_GAIN_INIT": 4.0, "XSA_LAST_N": 11, "LN_SCALE": 1, "VE_ENABLED": 1, "VE_DIM": 128,
               "VE_LAYERS": "9,10", "SKIP_GATES_ENABLED": 1, "RECUR_LAYERS": "4,5", "RECUR_START_STEP": 3000},
              34_401_371),
}


@pytest.mark.parametrize("seed", list(SEED_ARCHITECTURES))
def test_full_scale_parameter_count_equals_the_seed_log(seed):
    settings, logged = SEED_ARCHITECTURES[seed]
    cfg = resolve("baseline", overrides=settings)
    validate(cfg, check_runtime=False)
    techniques = TechniqueSet(cfg)
    meta = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("meta"))
    with torch.device("meta"):  # shapes only: no 30M-parameter allocation
        built = assemble_model(cfg, meta, techniques, export_policy(cfg, techniques), log=lambda line: None)
    assert sum(p.numel() for p in built.base.parameters()) == logged


def test_all_toggles_compile_as_one_graph_and_match_eager():
    """fullgraph=True, as golf.train compiles with SDPA: no toggle may break the graph."""
    cfg = smoke(**{**ALL_ON, "RECUR_START_STEP": 0})
    model, _ = build(cfg)
    randomize_projections(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=False)
    ids = tokens(cfg)
    targets = torch.roll(ids, -1, 1)
    loss = compiled(ids, targets)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    eager = model(ids, targets)
    eager.backward()
    assert torch.allclose(loss, eager, atol=1e-5)
    for name, p in model.named_parameters():
        assert name in grads and torch.allclose(grads[name], p.grad, atol=1e-5), name


@pytest.mark.slow
def test_a_smoke_run_with_every_architecture_toggle_on_finishes(tmp_path):
    """The real `golf train` process (preflight, warmup, training, export, round-trip evaluation)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    settings = [f"{k}={v}" for k, v in ALL_ON.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RUN_DIR": str(tmp_path / "run")}
    done = subprocess.run([sys.executable, "-m", "golf.cli", "train", "--preset", "smoke", "ITERATIONS=12", *settings],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "recurrence:activated step:5 layers:[1, 2] virtual_layers:6" in log
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "ok" and math.isfinite(result["metrics"]["val_bpb"])
    assert set(ALONE) - {"mlp_hidden"} <= {k for k, v in result["techniques"].items() if v.get("enabled")}
