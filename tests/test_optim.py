"""Muon, the optimizer groups and the LR/momentum schedule (techniques.md 1.4, 1.5)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from golf.config import resolve
from golf.model import Role, build_model, parameter_roles
from golf.optim import Muon, budget_fraction, build_optimizers, lr_scale, muon_momentum, newton_schulz5

CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_newton_schulz_output_is_close_to_orthogonal(dtype):
    torch.manual_seed(0)
    g = torch.randn(512, 1536)
    u = newton_schulz5(g, steps=5, dtype=dtype).float()
    singular = torch.linalg.svdvals(u)
    assert singular.min() > 0.5 and singular.max() < 1.5
    # orthogonal rows up to that spread: U U^T close to I on average
    gram = u @ u.T
    assert (gram.diagonal() - 1).abs().mean() < 0.3
    off = gram - torch.diag(gram.diagonal())
    assert off.abs().mean() < 0.02
    # scale invariance: only the direction of G matters
    torch.testing.assert_close(newton_schulz5(g * 1000, dtype=dtype).float(), u, rtol=0, atol=2e-2 if dtype == torch.bfloat16 else 1e-4)


def test_newton_schulz_handles_tall_matrices_by_transposing():
    torch.manual_seed(0)
    g = torch.randn(300, 100)
    u = newton_schulz5(g, dtype=torch.float32)
    assert u.shape == g.shape
    s = torch.linalg.svdvals(u)
    assert s.min() > 0.5 and s.max() < 1.5


def test_muon_update_magnitude():
    torch.manual_seed(0)
    for rows, cols in ((256, 512), (512, 128)):
        p = torch.nn.Parameter(torch.zeros(rows, cols))
        opt = Muon([p], lr=1.0, momentum=0.0, nesterov=False, ns_dtype=torch.float32)
        p.grad = torch.randn(rows, cols)
        opt.step()
        expected = (min(rows, cols) ** 0.5) * max(1.0, rows / cols) ** 0.5
        assert abs(p.detach().norm().item() / expected - 1) < 0.25


def test_muon_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(4))], lr=0.1, momentum=0.9)


def test_optimizer_groups_hold_the_right_parameters():
    cfg = resolve("baseline", overrides={"NUM_LAYERS": 3})
    model = build_model(cfg, CPU)
    roles = parameter_roles(model)
    opts = build_optimizers(model, cfg, roles)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [[names[id(p)] for g in opt.param_groups for p in g["params"]] for opt in opts.all]
    token, muon, scalars = groups
    assert token == ["tok_emb.weight"]
    assert opts.all[1] is opts.muon
    # the role decides: every block matrix to Muon, every control tensor to the scalar Adam group
    assert set(muon) == {n for n, r in roles.items() if r.role is Role.MATRIX}
    assert len(muon) == 6 * 3 and all(n.startswith("blocks.") for n in muon)
    assert set(scalars) == {n for n, r in roles.items() if r.role is Role.CONTROL}
    assert "skip_weights" in scalars and "blocks.0.resid_mix" in scalars and "blocks.2.attn.q_gain" in scalars
    assert len(token) + len(muon) + len(scalars) == len(list(model.parameters()))
    lrs = [g["base_lr"] for opt in opts.all for g in opt.param_groups]
    assert lrs == [cfg.tied_embed_lr, cfg.matrix_lr, cfg.scalar_lr]


def test_untied_head_gets_its_own_adam_group():
    cfg = resolve("baseline", overrides={"NUM_LAYERS": 1, "TIE_EMBEDDINGS": 0})
    model = build_model(cfg, CPU)
    opts = build_optimizers(model, cfg, parameter_roles(model))
    assert [g["base_lr"] for opt in opts.all for g in opt.param_groups] == [cfg.embed_lr, cfg.head_lr, cfg.matrix_lr, cfg.scalar_lr]
    assert opts.all[1].param_groups[0]["params"][0] is model.lm_head.weight


def test_wallclock_warmdown_is_one_then_linear_to_zero_at_the_cap():
    cfg = resolve("baseline")  # 600 s cap, 1200 warmdown iterations
    step_ms = 50.0
    # before the window: remaining time exceeds 1200 expected steps
    assert lr_scale(cfg, 100, 100 * step_ms) == 1.0
    window_ms = 1200 * step_ms
    for remaining in (window_ms, window_ms / 2, window_ms / 4, 0.0):
        elapsed = 600_000 - remaining
        step = int(elapsed / step_ms)
        assert lr_scale(cfg, step, elapsed) == pytest.approx(remaining / (1200 * elapsed / step), rel=1e-9)
    assert lr_scale(cfg, 12000, 600_000) == 0.0


def test_step_based_warmdown_without_a_cap():
    cfg = resolve("baseline", overrides={"MAX_WALLCLOCK_SECONDS": 0, "ITERATIONS": 100, "WARMDOWN_ITERS": 20})
    scales = [lr_scale(cfg, s, 0.0) for s in range(101)]
    assert scales[:80] == [1.0] * 80
    assert scales[80] == 1.0 and scales[90] == pytest.approx(0.5) and scales[99] == pytest.approx(0.05)


def test_momentum_warmup_is_linear_then_constant():
    cfg = resolve("baseline")
    assert muon_momentum(cfg, 0) == pytest.approx(0.85)
    assert muon_momentum(cfg, 250) == pytest.approx(0.90)
    assert muon_momentum(cfg, 500) == muon_momentum(cfg, 5000) == pytest.approx(0.95)


def test_budget_fraction_uses_time_with_a_cap_and_steps_without():
    assert budget_fraction(resolve("baseline"), 10, 300_000) == pytest.approx(0.5)
    assert budget_fraction(resolve("smoke"), 20, 1e9) == pytest.approx(20 / resolve("smoke").iterations)


# --- the Newton-Schulz work split across ranks -------------------------------------------------
def _muon_rank(rank: int, world: int, port: int, grads: list, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        opt = Muon(params, lr=0.1, momentum=0.9, ns_dtype=torch.float32)
        for _ in range(2):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
        if rank == 0:
            out["params"] = [p.detach().clone() for p in params]
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_muon_split_across_two_gloo_ranks_equals_one_process():
    torch.manual_seed(0)
    grads = [torch.randn(32, 16), torch.randn(16, 48), torch.randn(24, 24)]
    single = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    opt = Muon(single, lr=0.1, momentum=0.9, ns_dtype=torch.float32)
    for _ in range(2):
        for p, g in zip(single, grads):
            p.grad = g.clone()
        opt.step()
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_muon_rank, args=(2, _free_port(), grads, out), nprocs=2, join=True)
    for got, want in zip(out["params"], single):
        torch.testing.assert_close(got, want.detach(), rtol=1e-6, atol=1e-6)
