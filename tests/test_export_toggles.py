"""Export toggles (techniques.md 3.1-3.6), each proven through what the artifact actually stores:
fp16 embedding, per-group grid widths, GPTQ-lite's clip search, full-Hessian GPTQ, the mixed
int5/int6 allocation and pruning."""

from __future__ import annotations

import pytest
import torch

from golf.config import ConfigError, resolve, validate
from golf.distributed import DistContext
from golf.quant.export import pack_artifact, quantize_state_dict, unpack_artifact
from golf.quant.compress import codec_spec
from golf.quant.gptq import act_order, clip_search_codes, gptq_codes, rtn_codes
from golf.techniques import Candidates, TechniqueSet
from golf.techniques.gptq import output_error
from golf.quant.pruning import magnitude_prune_, prune_pm1_codes
from golf.train import assemble_model, export_policy

CPU_CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
FP16_REL = 2.0**-11
ZLIB = codec_spec("zlib")


def cfg_with(**overrides):
    return resolve("smoke", overrides={"MODEL_DIM": 64, "NUM_LAYERS": 2, **overrides})


def trained_like(cfg, seed: int = 0):
    """The assembled model with every weight random (zero-initialised projections would quantize
    trivially), its techniques and export policy."""
    torch.manual_seed(seed)
    techniques = TechniqueSet(cfg)
    policy = export_policy(cfg, techniques)
    built = assemble_model(cfg, CPU_CTX, techniques, policy, log=lambda line: None)
    with torch.no_grad():
        for name, p in built.base.named_parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.05)
    return built, techniques, policy


def export_obj(built, policy):
    obj, stats = quantize_state_dict(built.base.state_dict(), built.roles, policy)
    return obj, stats


# --- 3.2 fp16 embedding, 3.1 per-group widths -------------------------------------------------
@pytest.mark.parametrize("env", ["FP16_EMBED", "FP16_EMBED_EXPORT"])
def test_fp16_embed_is_stored_fp16_and_round_trips_to_fp16_precision(env):
    cfg = resolve("smoke", overrides={"MODEL_DIM": 64, "NUM_LAYERS": 2}, environ={env: "1"})
    assert cfg.fp16_embed
    built, _, policy = trained_like(cfg)
    obj, _ = export_obj(built, policy)
    assert "tok_emb.weight" not in obj["quantized"]
    assert obj["passthrough"]["tok_emb.weight"].dtype == torch.float16
    blob, _ = pack_artifact(built.base.state_dict(), built.roles, policy, ZLIB)
    restored = unpack_artifact(blob).state_dict["tok_emb.weight"]
    trained = built.base.tok_emb.weight.detach()
    assert restored.dtype == trained.dtype
    # fp16 precision: 2**-11 relative, and half the subnormal step 2**-24 below fp16's normal range
    assert ((restored - trained).abs() <= trained.abs() * FP16_REL + 2.0**-25).all()
    # off: the reference's int8 rows
    base_obj, _ = export_obj(*trained_like(cfg_with())[::2])
    assert "tok_emb.weight" in base_obj["quantized"]


def test_group_widths_put_every_mlp_weight_on_the_int5_grid_and_attn_on_int6():
    cfg = cfg_with(QUANT_BITS_MLP=5, QUANT_BITS_ATTN=6, QUANT_BITS_EMBED=6, QUANT_GRID="floored")
    built, _, policy = trained_like(cfg)
    blob, stats = pack_artifact(built.base.state_dict(), built.roles, policy, ZLIB)
    restored = unpack_artifact(blob)
    obj, _ = export_obj(built, policy)
    groups = {"mlp": 15, "attn": 31}
    seen = {"mlp": 0, "attn": 0}
    for name, role in built.roles.items():
        if role.group in groups and role.is_matrix and name in obj["quantized"]:
            c = groups[role.group]
            q, s = obj["quantized"][name], obj["scales"][name]
            assert int(q.abs().max()) <= c
            # the dequantized weight divided by its stored row scale is an integer in the grid
            grid = restored.state_dict[name].float() / s.float().unsqueeze(-1)
            assert torch.allclose(grid, grid.round(), atol=1e-3)
            assert int(grid.round().abs().max()) <= c
            seen[role.group] += 1
    assert seen["mlp"] == 2 * 2 and seen["attn"] == 2 * 4  # fc, proj / q, k, v, proj per layer
    assert int(obj["quantized"]["tok_emb.weight"].abs().max()) <= 31
    assert stats.formats["int5"] == 4 and stats.formats["int6"] == 9


def test_group_widths_and_qat_widths_cannot_both_be_set():
    with pytest.raises(ConfigError, match="QUANT_BITS_MLP=5 with QAT_ENABLED=1.*QAT_BITS_MLP"):
        validate(cfg_with(QUANT_BITS_MLP=5, QAT_ENABLED=1))
    with pytest.raises(ConfigError, match="FP16_EMBED=1 and QUANT_BITS_EMBED"):
        validate(cfg_with(FP16_EMBED=1, QUANT_BITS_EMBED=6))
    # QAT's own widths with the embedding toggle are fine
    validate(cfg_with(QAT_ENABLED=1, QAT_BITS_MLP=5, FP16_EMBED=1))


def test_fp16_embed_warns_when_the_embedding_is_small_enough_to_stay_float():
    warnings = validate(cfg_with(FP16_EMBED=1, QUANT_KEEP_FLOAT_MAX_NUMEL=10**6), baseline=cfg_with())
    assert any("FP16_EMBED=1 has no effect" in w for w in warnings)


# --- 3.3 GPTQ-lite --------------------------------------------------------------------------
@pytest.mark.parametrize("grid", ["floored", "relative"])
@pytest.mark.parametrize("mode", ["percentiles", "factors"])
def test_clip_search_is_never_worse_than_round_to_nearest_in_any_row(grid, mode):
    g = torch.Generator().manual_seed(1)
    # heavy-tailed rows, where clipping the outlier pays
    # rows well above 1, so the floored grid's 1/c floor does not fix the scale
    w = torch.randn(64, 256, generator=g) * 0.5
    w += (torch.rand(64, 256, generator=g) < 0.01) * torch.randn(64, 256, generator=g) * 5.0
    from golf.quant.gptq import CLIP_CANDIDATES

    found = clip_search_codes(w, 6, grid, CLIP_CANDIDATES[mode], mode)
    q_rtn, s_rtn = rtn_codes(w, 6, grid)
    err = (w - found.q.float() * found.scale.float().unsqueeze(-1)).square().sum(-1)
    err_rtn = (w - q_rtn.float() * s_rtn.float().unsqueeze(-1)).square().sum(-1)
    assert (err <= err_rtn).all()
    assert (err < err_rtn).sum() > 10  # the search does something on these rows
    assert int(found.q.abs().max()) <= 32
    again = clip_search_codes(w, 6, grid, CLIP_CANDIDATES[mode], mode)
    assert torch.equal(again.q, found.q) and torch.equal(again.scale, found.scale)


def test_gptq_lite_codes_are_what_the_artifact_stores():
    cfg = cfg_with(QUANT_FORMAT="int6", GPTQ_LITE=1)
    built, techniques, policy = trained_like(cfg)
    state = built.base.state_dict()
    blob, stats = pack_artifact(state, built.roles, policy, ZLIB)
    restored = unpack_artifact(blob).state_dict
    name = "blocks.0.mlp.proj.weight"
    found = clip_search_codes(state[name], 6, cfg.quant_grid)
    assert torch.equal(restored[name], (found.q.float() * found.scale.float().unsqueeze(-1)).to(restored[name].dtype))
    assert stats.methods["gptq_lite"] == stats.formats["int6"] + stats.formats["int8"]
    report = next(t for t in techniques if t.name == "gptq_lite").report()
    assert report["weight_sq_err"] < report["rtn_weight_sq_err"]


# --- 3.4 full GPTQ ----------------------------------------------------------------------------
def correlated_inputs(n: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols) * 0.3
    return torch.randn(n, cols, generator=g) @ mix


@pytest.mark.parametrize("reorder", [True, False])
def test_gptq_output_error_is_below_round_to_nearest_at_the_same_scales(reorder):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(48, 96, generator=g) * 0.05
    x = correlated_inputs(2048, 96)
    h = x.T @ x / x.shape[0]
    found = gptq_codes(w, h, 6, "floored", block_size=32, reorder=reorder, percentiles=(1.0,))
    q_rtn, s_rtn = rtn_codes(w, 6, "floored")
    assert torch.equal(found.scale, s_rtn)  # the same scales: only the codes differ
    err = (x @ (w - found.q.float() * found.scale.float().unsqueeze(-1)).T).square().sum()
    err_rtn = (x @ (w - q_rtn.float() * s_rtn.float().unsqueeze(-1)).T).square().sum()
    assert err < 0.9 * err_rtn
    assert int(found.q.abs().max()) <= 31


def test_gptq_dead_column_gives_a_zero_weight_column_and_act_order_is_a_permutation():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(16, 32, generator=g) * 0.05
    x = correlated_inputs(512, 32)
    x[:, 5] = 0
    h = x.T @ x / x.shape[0]
    found = gptq_codes(w, h, 6, "floored", block_size=8)
    assert found.dead_columns == 1 and (found.q[:, 5] == 0).all()
    perm = act_order(h)
    assert torch.equal(torch.sort(perm).values, torch.arange(32))
    assert torch.equal(perm[torch.argsort(perm)], torch.arange(32))


def run_gptq(cfg, batches: list[torch.Tensor]):
    built, techniques, policy = trained_like(cfg)
    built.run.calibration_batches = lambda n: iter(batches[:n])
    candidates = Candidates(built.base, score=lambda state: None)
    techniques.end_of_training(built.run, candidates)
    gptq = next(t for t in techniques if t.name == "gptq")
    return built, gptq, policy


def calibration(cfg, n: int = 4, seed: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, cfg.vocab_size, (4, 64), generator=g) for _ in range(n)]


def test_gptq_reduces_layer_output_error_on_a_calibration_batch_and_the_artifact_stores_its_codes():
    cfg = cfg_with(QUANT_FORMAT="int6", QUANT_GRID="floored", GPTQ_ENABLED=1, GPTQ_CALIBRATION_BATCHES=4)
    batches = calibration(cfg)
    built, gptq, policy = run_gptq(cfg, batches)
    assert len(gptq.codes) == 2 * 6 and gptq.tokens == 4 * 4 * 64
    state = built.base.state_dict()
    blob, stats = pack_artifact(state, built.roles, policy, ZLIB)
    restored = unpack_artifact(blob).state_dict
    assert stats.methods == {"gptq": 12}
    name = "blocks.1.mlp.proj.weight"
    codes = gptq.codes[name]
    assert torch.equal(restored[name], (codes.q.float() * codes.scale.float().unsqueeze(-1)).to(restored[name].dtype))
    # the layer's real inputs on a calibration batch
    inputs = []
    module = built.base.get_submodule(name.removesuffix(".weight"))
    handle = module.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach().reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        built.base.eval()
        built.base.logits(batches[0])
    handle.remove()
    x, w = inputs[0].float(), state[name].float()
    q_rtn, s_rtn = rtn_codes(w, 6, "floored")
    err = (x @ (w - restored[name].float()).T).square().sum()
    err_rtn = (x @ (w - q_rtn.float() * s_rtn.float().unsqueeze(-1)).T).square().sum()
    assert err < err_rtn
    assert gptq.output_err < gptq.rtn_output_err


def test_gptq_refuses_codes_for_weights_changed_after_it():
    cfg = cfg_with(QUANT_FORMAT="int6", GPTQ_ENABLED=1, GPTQ_CALIBRATION_BATCHES=2)
    built, gptq, policy = run_gptq(cfg, calibration(cfg, 2))
    with torch.no_grad():
        built.base.blocks[0].mlp.proj.weight.mul_(1.5)
    with pytest.raises(ValueError, match="computed for other weights"):
        pack_artifact(built.base.state_dict(), built.roles, policy, ZLIB)


def test_gptq_self_generated_calibration_reads_no_training_data():
    cfg = cfg_with(QUANT_FORMAT="int6", GPTQ_ENABLED=1, GPTQ_CALIBRATION="self_generated",
                   GPTQ_CALIBRATION_BATCHES=2, TRAIN_SEQ_LEN=16)
    built, techniques, policy = trained_like(cfg)
    built.run.calibration_batches = None
    techniques.end_of_training(built.run, Candidates(built.base, score=lambda s: None))
    gptq = next(t for t in techniques if t.name == "gptq")
    assert gptq.tokens == 2 * 16 and len(gptq.codes) == 12


def test_gptq_with_a_wallclock_cap_needs_a_reserve_and_qat_interaction_is_reported():
    with pytest.raises(ConfigError, match="GPTQ_RESERVE_SECONDS>0"):
        validate(cfg_with(GPTQ_ENABLED=1, MAX_WALLCLOCK_SECONDS=60))
    validate(cfg_with(GPTQ_ENABLED=1, MAX_WALLCLOCK_SECONDS=60, GPTQ_RESERVE_SECONDS=5))
    with pytest.raises(ConfigError, match="GPTQ_ENABLED=1 with PARALLEL_MUON=1 is not supported"):
        validate(cfg_with(GPTQ_ENABLED=1, PARALLEL_MUON=1))
    cfg = cfg_with(QAT_ENABLED=1, GPTQ_ENABLED=1, GPTQ_CALIBRATION_BATCHES=2)
    lines: list[str] = []
    built, techniques, policy = trained_like(cfg)
    built.run.calibration_batches = lambda n: iter(calibration(cfg, n))
    built.run.log = lines.append
    techniques.end_of_training(built.run, Candidates(built.base, score=lambda s: None))
    gptq = next(t for t in techniques if t.name == "gptq")
    ratio = gptq.report()["qat_interaction"]["output_err_vs_rtn"]
    assert ratio == pytest.approx(gptq.output_err / gptq.rtn_output_err)
    assert any(line.startswith("gptq:warning QAT trained") and f"{ratio:.4f}x" in line for line in lines)


# --- 3.5 mixed int5/int6 ----------------------------------------------------------------------
def test_mixed_allocation_drops_the_least_sensitive_matrices_to_the_int5_grid():
    cfg = cfg_with(QUANT_FORMAT="int6", GPTQ_ENABLED=1, GPTQ_CALIBRATION_BATCHES=3, MIXED_QUANT=1, N_INT6_LAYERS=5)
    built, gptq, policy = run_gptq(cfg, calibration(cfg, 3))
    blob, stats = pack_artifact(built.base.state_dict(), built.roles, policy, ZLIB)
    obj, _ = quantize_state_dict(built.base.state_dict(), built.roles, policy)
    assert len(gptq.low_bits) == 12 - 5 and stats.formats["int5"] == 7 and stats.formats["int6"] == 5
    for name in gptq.low_bits:
        assert int(obj["quantized"][name].abs().max()) <= 15
        assert obj["qmeta"][name]["bits"] == 5
    high = set(gptq.codes) - gptq.low_bits
    assert max(gptq.traces[n] for n in gptq.low_bits) <= min(gptq.traces[n] for n in high)
    with pytest.raises(ConfigError, match="MIXED_QUANT=1 with QAT_ENABLED=1"):
        validate(cfg_with(GPTQ_ENABLED=1, MIXED_QUANT=1, QAT_ENABLED=1))


# --- 3.6 pruning ------------------------------------------------------------------------------
def test_magnitude_pruning_zeroes_the_stated_fraction_of_every_quantized_matrix():
    cfg = cfg_with(PRUNE_FRAC=0.05)
    built, techniques, policy = trained_like(cfg)
    before = {k: v.clone() for k, v in built.base.state_dict().items()}
    techniques.end_of_training(built.run, Candidates(built.base, score=lambda s: None))
    pruning = next(t for t in techniques if t.name == "pruning")
    assert len(pruning.pruned) == 2 * 6 + 1  # block matrices and the embedding
    for name, t in built.base.state_dict().items():
        if name in pruning.pruned:
            zeros = int((t == 0).sum())
            assert zeros == round(0.05 * t.numel())
            kept = before[name][t != 0].abs()
            assert kept.min() >= before[name][t == 0].abs().max()
        else:
            assert torch.equal(t, before[name])


def test_selective_pm1_pruning_zeroes_the_stated_fraction_of_the_cheapest_pm1_codes():
    q = torch.tensor([[1, -1, 2, 1], [1, 0, -1, 3], [-1, 1, 1, 1]], dtype=torch.int8)
    scale = torch.tensor([0.2, 0.1, 0.3], dtype=torch.float16)
    pruned, count = prune_pm1_codes(q, scale, 0.6)  # 0.6 of 9 codes
    assert count == 5 and int(((q.abs() == 1) & (pruned == 0)).sum()) == 5
    assert (pruned[1] == torch.tensor([0, 0, 0, 3], dtype=torch.int8)).all()  # row 1 is cheapest
    assert (pruned[2] == q[2]).all()  # row 2 is dearest
    cfg = cfg_with(QUANT_FORMAT="int6", PRUNE_FRAC=0.1, PRUNE_MODE="selective_pm1")
    built, techniques, policy = trained_like(cfg)
    obj, stats = quantize_state_dict(built.base.state_dict(), built.roles, policy)
    plain, _ = quantize_state_dict(built.base.state_dict(), built.roles, export_policy(cfg_with(QUANT_FORMAT="int6"),
                                                                                         TechniqueSet(cfg_with())))
    name = "blocks.0.attn.c_q.weight"
    pm1 = int((plain["quantized"][name].abs() == 1).sum())
    newly_zero = int(((plain["quantized"][name] != 0) & (obj["quantized"][name] == 0)).sum())
    assert newly_zero == round(0.1 * pm1) and obj["qmeta"][name]["method"] == "rtn+prune_pm1"


def test_magnitude_prune_helper_counts():
    w = torch.arange(1.0, 101.0)
    assert magnitude_prune_(w, 0.03) == 3 and torch.equal(w[:3], torch.zeros(3)) and w[3] == 4.0
    assert output_error(torch.ones(2, 2), torch.ones(2, 2, dtype=torch.int8), torch.ones(2), torch.eye(2)) == 0.0


def test_magnitude_pruning_prunes_each_layer_matrix_of_a_parameter_bank():
    cfg = cfg_with(PRUNE_FRAC=0.05, PARALLEL_MUON=1)
    built, techniques, _ = trained_like(cfg)
    techniques.end_of_training(built.run, Candidates(built.base, score=lambda s: None))
    banks = [(n, p) for n, p in built.base.named_parameters() if n.startswith("banks.")]
    assert banks
    for _, bank in banks:
        for layer in bank.detach():
            assert int((layer == 0).sum()) == round(0.05 * layer.numel())
