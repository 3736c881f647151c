"""QAT as a technique (techniques.md 2.2-2.5): proven through the weight F.linear really receives.

The rows here are wider than 2^bits (model_dim 128: attention rows of 128, MLP rows of 128 and
256), so an unsnapped row would show more distinct values than its grid allows and the on-grid
assertions can fail.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from golf.config import resolve, validate
from golf.distributed import DistContext
from golf.model import build_model
from golf.optim import build_optimizers
from golf.quant.grid import fake_quantize_rows, row_scales
from golf.techniques import Progress, TechniqueSet
from golf.train import assemble_model, export_policy

CPU_CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def qat_cfg(**overrides):
    return resolve("smoke", overrides={"MODEL_DIM": 128, "NUM_LAYERS": 2, "QAT_ENABLED": 1, **overrides})


def assembled(cfg, seed: int = 0):
    torch.manual_seed(seed)
    techniques = TechniqueSet(cfg)
    built = assemble_model(cfg, CPU_CTX, techniques, export_policy(cfg, techniques), log=lambda line: None)
    # zero-initialised projections would make every row trivially "on the grid"
    for block in built.base.blocks:
        torch.nn.init.normal_(block.attn.proj.weight, std=0.05)
        torch.nn.init.normal_(block.mlp.proj.weight, std=0.05)
    qat = next(t for t in techniques if t.name == "qat")
    return built, techniques, qat


class LinearWeights(TorchFunctionMode):
    """Every weight F.linear receives, in call order (what the forward pass actually used)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            self.weights.append(args[1].detach().clone())
        return func(*args, **kwargs)


def forward_weights(model, cfg, *, train: bool = True) -> list[torch.Tensor]:
    model.train(train)
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    with LinearWeights() as seen:
        model(x, x)
    return seen.weights


def linear_names(model) -> list[str]:
    """Weight names of the block linears in forward order (q, k, v, proj, fc, proj per block)."""
    return [f"blocks.{i}.{name}.weight" for i in range(len(model.blocks))
            for name in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")]


def start(qat, built, step: int = 0, lr_scale: float = 1.0, frac: float = 0.0):
    qat.before_step(Progress(step, lr_scale, frac, 0.0), built.run)


def distinct_per_row(w: torch.Tensor) -> int:
    return max(int(torch.unique(row).numel()) for row in w)


@pytest.mark.parametrize("grid", ["relative", "floored"])
def test_the_forward_pass_receives_every_int6_weight_on_its_grid(grid):
    cfg = qat_cfg(QUANT_GRID=grid)
    built, _, qat = assembled(cfg)
    names = linear_names(built.base)
    assert sorted(qat.layers) == sorted(names)
    params = dict(built.base.named_parameters())
    before = forward_weights(built.base, cfg)[: len(names)]
    assert all(distinct_per_row(w) > 2**6 for w in before)  # unsnapped rows are wider than the grid
    start(qat, built)
    seen = forward_weights(built.base, cfg)[: len(names)]
    for name, w in zip(names, seen):
        assert distinct_per_row(w) <= 2**6, name
        assert torch.equal(w, fake_quantize_rows(params[name].detach(), 6, grid)), name


def test_int5_mlp_and_int6_attention_groups_reach_the_forward_pass_and_the_export():
    cfg = qat_cfg(QAT_BITS_MLP=5, QUANT_FORMAT="int6")
    built, techniques, qat = assembled(cfg)
    start(qat, built)
    seen = dict(zip(linear_names(built.base), forward_weights(built.base, cfg)))
    policy = export_policy(cfg, techniques)
    for name, w in seen.items():
        bits = 5 if ".mlp." in name else 6
        assert distinct_per_row(w) <= 2**bits, name
        assert distinct_per_row(w) > 2**5 or bits == 5, name  # attention really is int6, not int5
        fmt = policy.format_for(name, built.base.get_parameter(name), built.roles[name])
        assert (fmt.bits, fmt.grid) == (bits, cfg.quant_grid), name


def test_qat_decides_the_export_grid_even_when_the_format_is_int8():
    """QAT trains attention/MLP on its grid, so those tensors are exported on it (no mismatch)."""
    cfg = qat_cfg(QUANT_FORMAT="int8")
    built, techniques, _ = assembled(cfg)
    policy = export_policy(cfg, techniques)
    fmt = policy.format_for("blocks.0.mlp.fc.weight", built.base.blocks[0].mlp.fc.weight, built.roles["blocks.0.mlp.fc.weight"])
    assert fmt.on_absmax_row_grid and fmt.bits == 6
    emb = policy.format_for("tok_emb.weight", built.base.tok_emb.weight, built.roles["tok_emb.weight"])
    assert not emb.on_absmax_row_grid  # the embedding keeps the reference int8 percentile rows


def test_evaluation_uses_the_plain_weights_and_gradients_reach_the_latent_weights():
    cfg = qat_cfg()
    built, _, qat = assembled(cfg)
    start(qat, built)
    names = linear_names(built.base)
    params = dict(built.base.named_parameters())
    with torch.no_grad():
        seen = forward_weights(built.base, cfg, train=False)[: len(names)]
    for name, w in zip(names, seen):
        assert torch.equal(w, params[name].detach())
    built.base.train()
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    built.base(x, x).backward()
    assert all(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in names)


def test_late_start_by_lr_scale_and_by_budget_fraction():
    for overrides, due, not_due in (
        ({"LATE_QAT_THRESHOLD": 0.15}, dict(lr_scale=0.14), dict(lr_scale=0.15)),
        ({"QAT_START_FRAC": 0.85}, dict(frac=0.85), dict(frac=0.84)),
    ):
        cfg = qat_cfg(**overrides)
        built, _, qat = assembled(cfg)
        name = "blocks.0.mlp.fc.weight"
        start(qat, built, step=7, **not_due)
        assert distinct_per_row(forward_weights(built.base, cfg)[4]) > 2**6 and qat.enabled_at_step is None
        start(qat, built, step=8, **due)
        w = forward_weights(built.base, cfg)[4]
        assert torch.equal(w, fake_quantize_rows(built.base.get_parameter(name).detach(), 6, cfg.quant_grid))
        assert qat.enabled_at_step == 8


def test_qat_lr_scale_cuts_every_groups_base_lr_once_at_activation():
    cfg = qat_cfg(QAT_LR_SCALE=0.5, QAT_START_FRAC=0.75)
    built, _, qat = assembled(cfg)
    built.run.optimizers = build_optimizers(built.base, cfg, built.roles)
    groups = [g for opt in built.run.optimizers.all for g in opt.param_groups]
    initial = [g["base_lr"] for g in groups]
    start(qat, built, step=3, frac=0.5)
    assert [g["base_lr"] for g in groups] == initial
    start(qat, built, step=9, frac=0.8)
    start(qat, built, step=10, frac=0.9)  # once only
    assert [g["base_lr"] for g in groups] == [lr * 0.5 for lr in initial]
    built.run.optimizers.set_lr_scale(0.4)
    assert [g["lr"] / 0.4 for g in groups] == pytest.approx([lr * 0.5 for lr in initial])


def test_noise_mode_perturbs_by_the_rounding_error_std_and_leaves_the_weight_alone():
    cfg = qat_cfg(QAT_MODE="noise", QAT_BITS_ATTN=8, QAT_BITS_MLP=8)
    built, _, qat = assembled(cfg, seed=1)
    start(qat, built)
    name = "blocks.0.mlp.proj.weight"  # [128, 256]: 256 samples per row
    w = built.base.get_parameter(name).detach().clone()
    first = forward_weights(built.base, cfg)[5]
    second = forward_weights(built.base, cfg)[5]
    assert torch.equal(built.base.get_parameter(name).detach(), w)  # nothing written to the weight
    assert not torch.equal(first, second)  # a fresh draw every forward
    expected = row_scales(w, 8, cfg.quant_grid) / math.sqrt(12.0)
    measured = (first - w).std(dim=1)
    assert torch.allclose(measured, expected, rtol=0.25)
    assert abs(float((measured / expected).mean()) - 1.0) < 0.05


def test_softround_rounds_through_a_sigmoid_with_a_real_gradient():
    cfg = qat_cfg(QAT_MODE="softround", QAT_SOFTROUND_SHARPNESS=16)
    built, _, qat = assembled(cfg)
    start(qat, built)
    name = "blocks.0.attn.c_q.weight"
    w = built.base.get_parameter(name)
    used = forward_weights(built.base, cfg)[0]
    snapped = fake_quantize_rows(w.detach(), 6, cfg.quant_grid)
    step = row_scales(w.detach(), 6, cfg.quant_grid).unsqueeze(-1)
    assert float(((used - snapped).abs() / step).max()) < 0.5  # close to the grid ...
    assert not torch.equal(used, snapped)                       # ... but not snapped
    assert not torch.equal(used, w.detach())                    # ... and not the plain weight
    # no straight-through: the gradient is shaped by the sigmoid, not the identity
    layer = built.base.blocks[0].attn.c_q
    w_leaf = w.detach().clone().requires_grad_()
    layer.train_weight(w_leaf).sum().backward()
    assert not torch.allclose(w_leaf.grad, torch.ones_like(w_leaf))


def test_inert_qat_settings_warn_and_two_start_rules_are_an_error():
    warnings = validate(resolve("smoke", overrides={"LATE_QAT_THRESHOLD": 0.15}), baseline=resolve("smoke"))
    assert warnings == ["LATE_QAT_THRESHOLD=0.15 has no effect while QAT_ENABLED=0: "
                        "set QAT_ENABLED=1 or drop LATE_QAT_THRESHOLD"]
    with pytest.raises(ValueError, match="two start rules"):
        validate(qat_cfg(LATE_QAT_THRESHOLD=0.2, QAT_START_FRAC=0.5))
    assert validate(qat_cfg(QAT_MODE="ste", QAT_SOFTROUND_SHARPNESS=4), baseline=resolve("smoke")) == [
        "QAT_SOFTROUND_SHARPNESS=4.0 has no effect with QAT_MODE=ste: set QAT_MODE=softround or drop it"]


def test_community_names_switch_qat_on():
    for alias in ("ENABLE_QAT", "USE_LATE_QAT", "LATE_QAT", "QAT_ENABLED"):
        assert resolve("smoke", overrides={alias: 1}).qat_enabled
    assert resolve("smoke", overrides={"QAT_THRESHOLD": 0.1}).late_qat_threshold == 0.1
    assert resolve("smoke", overrides={"QAT_MODE": "noise"}).qat_mode == "noise"


@pytest.mark.slow
def test_late_qat_switch_reaches_the_compiled_graph_without_recompiling():
    """techniques.md 2.3: flipping QAT on mid-run must change what the compiled model computes."""
    import torch._dynamo

    torch._dynamo.reset()
    cfg = qat_cfg(LATE_QAT_THRESHOLD=0.5, NUM_LAYERS=1)
    built, _, qat = assembled(cfg)
    model = built.base.train()
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    before = compiled(x, x).detach()
    start(qat, built, step=5, lr_scale=0.4)
    with torch._dynamo.config.patch(error_on_recompile=True):
        after = compiled(x, x).detach()
    assert not torch.equal(before, after)
    # eager reference: the same model with every QAT weight replaced by its fake-quantized value
    reference = build_model(cfg, CPU_CTX.device).train()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name in qat.layers:
            param = reference.get_parameter(name)
            param.copy_(fake_quantize_rows(param, 6, cfg.quant_grid))
    torch.testing.assert_close(after, reference(x, x).detach(), rtol=1e-5, atol=1e-5)
