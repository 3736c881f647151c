"""Muon variants as toggles: MuonEq (4.4), NorMuon (4.3), Polar Express coefficients (POLAR_NS) and
momentum warmup by budget fraction (4.2), each proved on the update Muon actually computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import golf.optim.muon as muon_module
from golf.config import ConfigError, resolve, validate
from golf.optim import Muon, OptimizerSet, muon_momentum, newton_schulz5
from golf.techniques import TrainingRun
from golf.techniques.momentum_warmup import MomentumWarmup
from golf.techniques.muoneq import MuonEq, muoneq_mode
from golf.techniques.normuon import NorMuon
from golf.techniques.polar_ns import POLAR_EXPRESS_COEFFICIENTS, PolarNs, polar_express
from golf.train import apply_update
from optim_harness import CPU_CTX

MOMENTUM = 0.9


def muon_under(technique: type, shape: tuple[int, int], momentum: float = MOMENTUM, **overrides: object):
    """A one-matrix Muon (lr 1, fp32) extended by ``technique`` as configured, the way training does."""
    cfg = resolve("baseline", overrides=overrides)
    validate(cfg)
    p = nn.Parameter(torch.zeros(shape))
    muon = Muon([p], lr=1.0, momentum=momentum, ns_dtype=torch.float32)
    for group in muon.param_groups:
        group["base_lr"], group["roles"] = 1.0, ("matrix", "bank")
    run = TrainingRun(cfg=cfg, ctx=CPU_CTX, log=lambda line: None, model=nn.Module(),
                      optimizers=OptimizerSet(all=[muon], muon=muon))
    assert technique.is_enabled(cfg)
    instance = technique(cfg)
    instance.on_train_start(run)
    return p, muon, instance


def uneven_gradient(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Rows and columns of very different sizes, so equal norms cannot happen by chance."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.logspace(-2, 1, shape[0])[torch.randperm(shape[0], generator=g)]
    cols = torch.logspace(-1, 1, shape[1])[torch.randperm(shape[1], generator=g)]
    return torch.randn(shape, generator=g) * rows[:, None] * cols[None, :]


@pytest.fixture
def ns_calls(monkeypatch):
    """Every (input, output) of the Newton-Schulz iteration Muon runs."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def capture(g, **kwargs):
        out = newton_schulz5(g, **kwargs)
        calls.append((g.detach().clone(), out.detach().clone()))
        return out

    monkeypatch.setattr(muon_module, "newton_schulz5", capture)
    return calls


# --- MuonEq ----------------------------------------------------------------------------------
def test_muoneq_row_mode_feeds_newton_schulz_unit_rows(ns_calls):
    p, muon, _ = muon_under(MuonEq, (48, 32), MUONEQ_MODE="row")
    g = uneven_gradient((48, 32))
    p.grad = g.clone()
    muon.step()
    (ns_in, _), = ns_calls
    torch.testing.assert_close(ns_in.norm(dim=1), torch.ones(48), rtol=0, atol=1e-6)
    # the same direction per row as the Nesterov update (1 + mu) g
    nesterov = (1 + MOMENTUM) * g
    torch.testing.assert_close(ns_in, nesterov / nesterov.norm(dim=1, keepdim=True), rtol=1e-6, atol=1e-7)


def test_muoneq_rowcol_mode_scales_both_sides_by_the_pre_scaling_norms(ns_calls):
    p, muon, _ = muon_under(MuonEq, (40, 24), MUONEQ_MODE="rowcol")
    g = uneven_gradient((40, 24), seed=1)
    p.grad = g.clone()
    muon.step()
    (ns_in, _), = ns_calls
    u = (1 + MOMENTUM) * g
    r, c = u.norm(dim=1, keepdim=True), u.norm(dim=0, keepdim=True)
    torch.testing.assert_close(ns_in, u / r / c, rtol=1e-5, atol=0)
    one_after_the_other = (u / r) / (u / r).norm(dim=0, keepdim=True)
    assert (ns_in - one_after_the_other).abs().max() > 1e-2 * one_after_the_other.abs().max()


def test_muoneq_col_mode_and_the_exponent(ns_calls):
    p, muon, _ = muon_under(MuonEq, (24, 40), MUONEQ_MODE="col")
    g = uneven_gradient((24, 40), seed=2)
    p.grad = g.clone()
    muon.step()
    torch.testing.assert_close(ns_calls[0][0].norm(dim=0), torch.ones(40), rtol=0, atol=1e-6)
    p, muon, _ = muon_under(MuonEq, (24, 40), MUONEQ_MODE="row", MUONEQ_EXP=-0.25)
    p.grad = g.clone()
    muon.step()
    u = (1 + MOMENTUM) * g
    torch.testing.assert_close(ns_calls[1][0], u / u.norm(dim=1, keepdim=True).sqrt(), rtol=1e-5, atol=0)


def test_muon_eq_r_is_the_records_switch_for_row_mode(ns_calls):
    cfg = resolve("baseline", environ={"MUON_EQ_R": "1"})
    assert muoneq_mode(cfg) == "row" and MuonEq.is_enabled(cfg)
    p, muon, _ = muon_under(MuonEq, (32, 16), MUON_EQ_R=1)
    p.grad = uneven_gradient((32, 16), seed=3)
    muon.step()
    torch.testing.assert_close(ns_calls[0][0].norm(dim=1), torch.ones(32), rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="MUON_EQ_R=1 asks for row equilibration but MUONEQ_MODE=col"):
        validate(resolve("baseline", overrides={"MUON_EQ_R": 1, "MUONEQ_MODE": "col"}))
    assert any("MUONEQ_EXP=-0.25 has no effect while MUONEQ_MODE=off" in w
               for w in validate(resolve("baseline", overrides={"MUONEQ_EXP": -0.25})))


# --- NorMuon ---------------------------------------------------------------------------------
def first_update(p: nn.Parameter, muon: Muon, g: torch.Tensor) -> torch.Tensor:
    """The applied update of one step from zero weights and state, divided by lr (1) and the aspect scale."""
    p.grad = g.clone()
    before = p.detach().clone()
    muon.step()
    rows, cols = p.shape
    return (before - p.detach()) / max(1.0, rows / cols) ** 0.5


@pytest.mark.parametrize("beta2, beta", [(0.0, 0.95), (0.5, 0.5)])
def test_normuon_first_step_rows_have_rms_one_over_sqrt_one_minus_beta(beta2, beta):
    p, muon, _ = muon_under(NorMuon, (96, 32), momentum=0.95, NORMUON_ENABLED=1, NORMUON_BETA2=beta2)
    # (a Gaussian gradient: rows of the NS output whose mean square nears the 1e-8 epsilon would not
    # reach 1/sqrt(1 - beta), by the formula itself)
    update = first_update(p, muon, torch.randn(96, 32, generator=torch.Generator().manual_seed(4)))
    row_rms = update.square().mean(dim=1).sqrt()
    torch.testing.assert_close(row_rms, torch.full((96,), (1 - beta) ** -0.5), rtol=1e-4, atol=0)


def test_normuon_rows_settle_at_rms_one_under_a_steady_gradient():
    p, muon, technique = muon_under(NorMuon, (48, 32), momentum=0.95, NORMUON_ENABLED=1)
    g = torch.randn(48, 32, generator=torch.Generator().manual_seed(5))
    for _ in range(400):
        update = first_update(p, muon, g)
    torch.testing.assert_close(update.square().mean(dim=1).sqrt(), torch.ones(48), rtol=1e-3, atol=0)
    assert technique.report()["matrix_updates_rank0"] == 400


def test_normuon_norm_preserving_equalises_rows_and_keeps_the_newton_schulz_norm(ns_calls):
    p, muon, _ = muon_under(NorMuon, (96, 32), momentum=0.95, NORMUON_ENABLED=1, NORMUON_MODE="norm_preserving")
    update = first_update(p, muon, torch.randn(96, 32, generator=torch.Generator().manual_seed(6)))
    (_, ns_out), = ns_calls
    row_rms = update.square().mean(dim=1).sqrt()
    torch.testing.assert_close(row_rms, row_rms.mean().expand(96), rtol=1e-4, atol=0)
    torch.testing.assert_close(update.norm(), ns_out.norm(), rtol=1e-5, atol=0)
    # plain Muon's rows are far from equal: the normalisation did the work
    plain = ns_out.square().mean(dim=1).sqrt()
    assert plain.max() / plain.min() > 1.3


# --- Polar Express ---------------------------------------------------------------------------
def test_polar_express_coefficients_map_every_singular_value_near_one():
    """The published schedule's guarantee, on the scalar polynomials: every sigma in [1e-3, 1]
    (after the 2% safety scaling) ends in [0.84, 1.15]; the reference quintic's ends in [0.47, 1.21]."""
    sigma = np.logspace(-3, 0, 4000)
    pe = sigma / 1.02
    for a, b, c in POLAR_EXPRESS_COEFFICIENTS:
        pe = a * pe + b * pe**3 + c * pe**5
    assert 0.84 < pe.min() and pe.max() < 1.15
    ns = sigma.copy()
    for _ in range(5):
        ns = 3.4445 * ns - 4.7750 * ns**3 + 2.0315 * ns**5
    assert ns.min() < 0.5 and ns.max() > 1.2


def test_polar_ns_replaces_the_quintic_in_the_muon_update():
    p, muon, _ = muon_under(PolarNs, (96, 48), POLAR_NS=1)
    g = torch.randn(96, 48, generator=torch.Generator().manual_seed(7))
    update = first_update(p, muon, g)
    expected = polar_express((1 + MOMENTUM) * g, 5, torch.float32)
    torch.testing.assert_close(update, expected, rtol=1e-5, atol=1e-7)
    singular = torch.linalg.svdvals(update)
    quintic = torch.linalg.svdvals(newton_schulz5((1 + MOMENTUM) * g, dtype=torch.float32))
    assert (singular - 1).abs().max() < (quintic - 1).abs().max()
    with pytest.raises(ConfigError, match="POLAR_NS=1 has coefficients for 5 iterations but MUON_BACKEND_STEPS=6"):
        validate(resolve("baseline", overrides={"POLAR_NS": 1, "MUON_BACKEND_STEPS": 6}))


# --- momentum warmup by budget fraction --------------------------------------------------------
def test_momentum_warmup_by_wallclock_fraction_follows_the_formula_then_stays():
    cfg = resolve("baseline", overrides={"MUON_WARMUP_FRAC": 0.15, "MUON_MOMENTUM_WARMUP_START": 0.92,
                                         "MUON_MOMENTUM": 0.99})
    assert MomentumWarmup.is_enabled(cfg)
    # #137: over the first 0.15 x 600 s = 90 s of training, whatever the step count
    for step in (0, 10, 10_000):
        assert muon_momentum(cfg, step, 0.0) == pytest.approx(0.92)
        assert muon_momentum(cfg, step, 45_000.0) == pytest.approx(0.955)
        assert muon_momentum(cfg, step, 90_000.0) == 0.99
        assert muon_momentum(cfg, step, 500_000.0) == 0.99
    # without a cap the budget is ITERATIONS steps: 0.25 x 40 = the first 10 steps
    smoke = resolve("smoke", overrides={"MUON_WARMUP_FRAC": 0.25})
    assert [muon_momentum(smoke, s) for s in (0, 5, 10, 30)] == pytest.approx([0.85, 0.90, 0.95, 0.95])


def test_the_update_step_sets_the_momentum_from_the_training_time():
    p, muon, technique = muon_under(MomentumWarmup, (8, 8), MUON_WARMUP_FRAC=0.15,
                                    MUON_MOMENTUM_WARMUP_START=0.92, MUON_MOMENTUM=0.99)
    optimizers = OptimizerSet(all=[muon], muon=muon)
    apply_update(nn.Linear(1, 1), optimizers, technique.cfg, step=3, scale=1.0, elapsed_ms=45_000.0)
    assert muon.param_groups[0]["momentum"] == pytest.approx(0.955)
    warnings = validate(technique.cfg.replace(muon_momentum_warmup_steps=1500))
    assert any("MUON_MOMENTUM_WARMUP_STEPS=1500 has no effect with MUON_WARMUP_FRAC=0.15" in w for w in warnings)


# --- several ranks ---------------------------------------------------------------------------
VARIANTS = {"MUON_EQ_R": 1, "NORMUON_ENABLED": 1, "POLAR_NS": 1, "MUON_WD": 0.1}


def extended_muon(params: list[nn.Parameter]) -> Muon:
    """Muon with MuonEq-R, NorMuon, Polar Express and weight decay installed by their techniques."""
    from golf.techniques.weight_decay import WeightDecay

    cfg = resolve("baseline", overrides=VARIANTS)
    muon = Muon(params, lr=0.1, momentum=0.9, ns_dtype=torch.float32)
    for group in muon.param_groups:
        group["base_lr"], group["roles"] = 0.1, ("matrix", "bank")
    run = TrainingRun(cfg=cfg, ctx=CPU_CTX, log=lambda line: None, model=nn.Module(),
                      optimizers=OptimizerSet(all=[muon], muon=muon))
    for technique in (WeightDecay, MuonEq, NorMuon, PolarNs):
        technique(cfg).on_train_start(run)
    return muon


def _variants_rank(rank: int, world: int, port: int, grads: list, out: dict) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        params = [nn.Parameter(torch.ones_like(g)) for g in grads]
        muon = extended_muon(params)
        for _ in range(3):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            muon.step()
        out[rank] = [p.detach().clone() for p in params]
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_variants_split_across_two_gloo_ranks_equal_one_process():
    """Each matrix's MuonEq/NorMuon work (and NorMuon's state) stays on the rank that owns it; weight
    decay runs on every rank: two ranks end with the single process's weights."""
    import socket

    import torch.multiprocessing as mp

    torch.manual_seed(0)
    grads = [torch.randn(32, 16), torch.randn(16, 48), torch.randn(24, 24)]
    single = [nn.Parameter(torch.ones_like(g)) for g in grads]
    muon = extended_muon(single)
    for _ in range(3):
        for p, g in zip(single, grads):
            p.grad = g.clone()
        muon.step()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_variants_rank, args=(2, port, grads, out), nprocs=2, join=True)
    for rank in (0, 1):
        for got, want in zip(out[rank], single):
            torch.testing.assert_close(got, want.detach(), rtol=1e-6, atol=1e-6)
