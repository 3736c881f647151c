"""Decoupled weight decay by role (techniques.md 4.1): W <- W * (1 - lr_t * wd) with the scheduled LR."""

from __future__ import annotations

import pytest
import torch

from golf.config import ConfigError, resolve, validate
from golf.model import Role, build_model, parameter_roles
from golf.optim import build_optimizers
from golf.techniques import TechniqueSet, TrainingRun
from golf.techniques.weight_decay import WeightDecay
from optim_harness import CPU, CPU_CTX


def _run(**overrides: object) -> tuple[TrainingRun, TechniqueSet]:
    cfg = resolve("baseline", overrides={"NUM_LAYERS": 2, "MODEL_DIM": 64, "NUM_HEADS": 4, "NUM_KV_HEADS": 2,
                                         **overrides})
    validate(cfg)
    model = build_model(cfg, CPU)
    roles = parameter_roles(model)
    run = TrainingRun(cfg=cfg, ctx=CPU_CTX, log=lambda line: None, model=model, roles=roles,
                      optimizers=build_optimizers(model, cfg, roles))
    techniques = TechniqueSet(cfg)
    techniques.on_train_start(run)
    return run, techniques


@pytest.mark.parametrize("tied", [1, 0])
def test_a_zero_gradient_step_scales_each_weight_by_exactly_one_minus_scheduled_lr_times_its_roles_decay(tied):
    run, techniques = _run(MUON_WD=0.04, ADAM_WD=0.02, EMBED_WD=0.085, TIE_EMBEDDINGS=tied,
                           MATRIX_LR=0.05, SCALAR_LR=0.03, TIED_EMBED_LR=0.07, EMBED_LR=0.6)
    cfg, model = run.cfg, run.model
    assert any(isinstance(t, WeightDecay) for t in techniques)
    with torch.no_grad():  # nonzero weights everywhere, so a missing decay cannot hide behind a zero
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    scale = 0.5  # mid-warmdown: the decay must use the scheduled LR, not the base LR
    run.optimizers.set_lr_scale(scale)
    run.optimizers.step()
    token_lr = cfg.tied_embed_lr if tied else cfg.embed_lr
    expected_decay = {Role.MATRIX: cfg.matrix_lr * cfg.muon_wd, Role.CONTROL: cfg.scalar_lr * cfg.adam_wd,
                      Role.EMBEDDING: token_lr * cfg.embed_wd, Role.HEAD: 0.0}
    seen = set()
    for name, p in model.named_parameters():
        role = run.roles[name].role
        factor = 1.0 - scale * expected_decay[role]
        assert torch.equal(p.detach(), before[name] * factor), (name, role)
        seen.add(role)
    assert seen == ({Role.MATRIX, Role.CONTROL, Role.EMBEDDING} | (set() if tied else {Role.HEAD}))


def test_without_decay_the_technique_is_off_and_a_zero_gradient_step_changes_nothing():
    run, techniques = _run()
    assert not any(isinstance(t, WeightDecay) for t in techniques)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    for p in run.model.parameters():
        p.grad = torch.zeros_like(p)
    run.optimizers.set_lr_scale(1.0)
    run.optimizers.step()
    assert all(torch.equal(p.detach(), before[n]) for n, p in run.model.named_parameters())


def test_community_names_and_bad_values():
    assert resolve("baseline", environ={"MUON_WEIGHT_DECAY": "0.01"}).muon_wd == 0.01  # #137
    assert resolve("baseline", environ={"WEIGHT_DECAY": "0.04"}).muon_wd == 0.04  # #326, S635v1
    with pytest.raises(ConfigError, match="MUON_WD=30.0 with MATRIX_LR=0.04 gives lr\\*wd = 1.2 >= 1"):
        validate(resolve("baseline", overrides={"MUON_WD": 30}))
    with pytest.raises(ConfigError, match="ADAM_WD"):
        resolve("baseline", overrides={"ADAM_WD": -0.1})
