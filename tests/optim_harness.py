"""In-process helpers for the optimizer and schedule toggle tests: the model, roles and optimizers
as the recipe builds them, with the active techniques' ``on_train_start`` run, and the training
step of :meth:`golf.train.Trial.train` (hooks, sequence length, schedule, update) on a real loader."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from golf.config import GolfConfig, resolve, validate
from golf.data import DistributedTokenLoader, shard_files
from golf.distributed import DistContext
from golf.optim import budget_fraction, build_optimizers, lr_scale
from golf.techniques import Progress, TechniqueSet, TrainingRun
from golf.train import apply_update, assemble_model, export_policy, train_step

CPU = torch.device("cpu")
CPU_CTX = DistContext(rank=0, world_size=1, local_rank=0, device=CPU)


@dataclass
class Harness:
    cfg: GolfConfig
    techniques: TechniqueSet
    run: TrainingRun
    train_model: torch.nn.Module
    lines: list[str] = field(default_factory=list)


def smoke_config(demo, **overrides: object) -> GolfConfig:
    cfg = resolve("smoke", overrides={"DATA_PATH": demo.data_path, "TOKENIZER_PATH": demo.tokenizer_path,
                                      "LOG_TO_FILE": 0, **overrides})
    validate(cfg, 1, baseline=resolve("smoke"))
    return cfg


def build(cfg: GolfConfig) -> Harness:
    """assemble_model + build_optimizers + on_train_start, as Trial.run does on one CPU rank."""
    torch.manual_seed(cfg.seed)
    techniques = TechniqueSet(cfg)
    lines: list[str] = []
    built = assemble_model(cfg, CPU_CTX, techniques, export_policy(cfg, techniques), log=lines.append)
    built.run.optimizers = build_optimizers(built.base, cfg, built.roles)
    techniques.on_train_start(built.run)
    return Harness(cfg, techniques, built.run, built.train_model, lines)


def train(h: Harness, steps: int, on_batch=None) -> list[float]:
    """``steps`` optimizer steps as Trial.train takes them without a wallclock cap; the losses."""
    cfg = h.cfg
    loader = DistributedTokenLoader(shard_files(cfg.data_path, "train"), 0, 1, CPU, vocab_size=cfg.vocab_size)
    if on_batch is not None:
        next_batch = loader.next_batch

        def recording(*args):
            x, y = next_batch(*args)
            on_batch(x)
            return x, y

        loader.next_batch = recording
    accum = cfg.grad_accum_for(1)
    losses = []
    h.train_model.train()
    for step in range(steps):
        scale = lr_scale(cfg, step, 0.0)
        h.techniques.before_step(Progress(step, scale, budget_fraction(cfg, step, 0.0), 0.0), h.run)
        loss = train_step(h.train_model, loader, h.run.optimizers, cfg, accum, CPU,
                          h.techniques.train_seq_len(cfg.train_seq_len))
        apply_update(h.run.model, h.run.optimizers, cfg, step, scale, 0.0)
        h.techniques.after_step(Progress(step + 1, scale, budget_fraction(cfg, step + 1, 0.0), 0.0), h.run)
        losses.append(loss.item())
    return losses
