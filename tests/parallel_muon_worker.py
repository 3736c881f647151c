"""One rank of a Parallel Muon run for tests/test_parallel_muon.py: run it under torchrun.

``python -m torch.distributed.run --standalone --nproc_per_node N parallel_muon_worker.py OUT_DIR
GRAD_CLIP_NORM PARALLEL_MUON PARALLEL_MUON_GRAD_REDUCE`` trains a small model for a few steps on fixed batches, the global batch
split over the ranks, through the recipe's own pieces (assemble_model with DDP, build_optimizers,
train_step, apply_update), and writes ``OUT_DIR/rank<r>.pt``: the per-layer weights (as the
artifact stores them), the shape of each bank's momentum on this rank, and the gradient reduction.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from golf.config import resolve
from golf.distributed import init_distributed, shutdown
from golf.optim import build_optimizers
from golf.techniques import TechniqueSet
from golf.train import apply_update, assemble_model, export_policy, train_step

STEPS = 3
GLOBAL_SEQS, SEQ_LEN = 8, 64


class FixedBatches:
    """Step s's global batch is the same in every run; rank r takes its contiguous share."""

    def __init__(self, vocab: int, rank: int, world: int) -> None:
        self.vocab, self.rank, self.world, self.step = vocab, rank, world, 0

    def next_batch(self, global_tokens: int, seq_len: int, accum: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(1000 + self.step)
        self.step += 1
        tokens = torch.randint(0, self.vocab, (GLOBAL_SEQS, SEQ_LEN + 1), generator=gen)
        share = GLOBAL_SEQS // self.world
        mine = tokens[self.rank * share:(self.rank + 1) * share]
        return mine[:, :-1], mine[:, 1:]


def main() -> None:
    out_dir, clip, parallel, reduce = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    cfg = resolve("smoke", overrides={
        "MODEL_DIM": 64, "NUM_LAYERS": 3, "NUM_HEADS": 4, "NUM_KV_HEADS": 2, "MLP_MULT": 2,
        "TRAIN_SEQ_LEN": SEQ_LEN, "TRAIN_BATCH_TOKENS": GLOBAL_SEQS * SEQ_LEN, "GRAD_ACCUM_STEPS": 1,
        "GRAD_CLIP_NORM": float(clip), "PARALLEL_MUON": int(parallel), "TORCH_COMPILE": "0",
        "PARALLEL_MUON_GRAD_REDUCE": reduce,
    })
    ctx = init_distributed("cpu")
    try:
        torch.manual_seed(cfg.seed)
        techniques = TechniqueSet(cfg)
        built = assemble_model(cfg, ctx, techniques, export_policy(cfg, techniques), log=lambda line: None)
        # The zero-initialised projections would make the first steps degenerate: perturb every
        # weight, by its per-layer name so that banked and plain models start the same.
        gen = torch.Generator().manual_seed(7)
        state, _ = techniques.artifact_state(built.base.state_dict(), built.roles)
        state = {k: v + torch.randn(v.shape, generator=gen) * 0.02 if v.is_floating_point() else v
                 for k, v in state.items()}
        built.base.load_state_dict(techniques.model_state(state), strict=True)
        optimizers = build_optimizers(built.base, cfg, built.roles)
        batches = FixedBatches(cfg.vocab_size, ctx.rank, ctx.world_size)
        built.train_model.train()
        for step in range(STEPS):
            train_step(built.train_model, batches, optimizers, cfg, 1, ctx.device)
            apply_update(built.base, optimizers, cfg, step, 1.0)
        state, _ = techniques.artifact_state(built.base.state_dict(), built.roles)
        momentum = {name: tuple(optimizers.muon.state[p]["momentum_buffer"].shape)
                    for name, p in built.base.named_parameters() if p.ndim == 3}
        reduction = next((t.gradient_reduction for t in techniques if t.name == "parallel_muon"), "plain")
        torch.save({"state": state, "momentum": momentum, "reduction": reduction}, out_dir / f"rank{ctx.rank}.pt")
    finally:
        shutdown(together=True)


if __name__ == "__main__":
    main()
