"""How close is the sliding-window evaluation to its forward-FLOP floor?

The sliding-window evaluation (techniques.md 8.1) runs one forward pass of EVAL_SEQ_LEN tokens per
window, about EVAL_SEQ_LEN / EVAL_STRIDE times the forward work of the standard evaluation. Its
floor is that work done at the throughput the same model reaches in the standard evaluation. This
script measures both on synthetic validation tokens (no data needed) and prints

* the FLOPs of one forward pass (counted by ``torch.utils.flop_counter``) and of each evaluation;
* each evaluation's seconds (best of ``--repeats``, after one untimed warm-up that compiles);
* the ratio: (standard-eval FLOP/s) / (sliding-window FLOP/s); 1.0 is the floor, the issue asks for
  at most 1.25.

    python benchmarks/sliding_window.py                           # smoke scale, CPU
    python benchmarks/sliding_window.py --preset baseline --scale full --device cuda --compile 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from golf.config import resolve
from golf.distributed import DistContext
from golf.evaluate import autocast_for, evaluate
from golf.model import build_model
from golf.model.attention import resolve_attention
from golf.sliding import sliding_evaluate, token_loss_fn, window_starts
from golf.tokenizer import ByteCounter, ByteTables


def forward_flops(model: torch.nn.Module, seq_len: int, vocab_size: int, device: torch.device) -> int:
    x = torch.randint(0, vocab_size, (1, seq_len), device=device)
    with torch.no_grad(), autocast_for(device), FlopCounterMode(display=False) as counter:
        model.token_losses(x, x)
    return counter.get_total_flops()


def best_seconds(run, repeats: int) -> float:
    run()  # warm-up: compilation and allocator
    return min(run().seconds for _ in range(repeats))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="baseline")
    parser.add_argument("--scale", default="smoke")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", default="0", choices=("0", "1"))
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=0, help="window length; 0 = the preset's TRAIN_SEQ_LEN")
    parser.add_argument("--batch-seqs", type=int, default=32)
    parser.add_argument("--val-tokens", type=int, default=0, help="0 = the scale's VAL_MAX_TOKENS (or 1M)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    cfg = resolve(args.preset, args.scale)
    device = torch.device(args.device)
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=device)
    seq_len = args.seq_len or cfg.train_seq_len
    if args.stride > seq_len:
        parser.error(f"--stride {args.stride} is longer than the window {seq_len}: use at most {seq_len}")
    torch.manual_seed(0)
    base = build_model(cfg, device, resolve_attention("auto", device)).eval()
    model = torch.compile(base, dynamic=False) if args.compile == "1" else base
    n = args.val_tokens or cfg.val_max_tokens or 1 << 20
    n = (n - 1) // cfg.train_seq_len * cfg.train_seq_len + 1  # the loader's cut
    tokens = torch.randint(0, cfg.vocab_size, (n,), generator=torch.Generator().manual_seed(1))
    # Byte counts do not change the work; one byte per token keeps the script free of a tokenizer.
    ones = ByteTables(base_bytes=np.ones(cfg.vocab_size, np.int16), has_leading_space=np.zeros(cfg.vocab_size, bool),
                      is_boundary=np.zeros(cfg.vocab_size, bool))
    counter = ByteCounter(ones, device)

    standard_s = best_seconds(lambda: evaluate(model, tokens, counter, seq_len=cfg.train_seq_len,
                                               batch_tokens=cfg.val_batch_size, grad_accum_steps=1, ctx=ctx),
                              args.repeats)
    token_loss_fn(model)  # compiled once here when compiling, as the evaluator would
    sliding_s = best_seconds(lambda: sliding_evaluate(model, tokens, counter, seq_len=seq_len, stride=args.stride,
                                                      batch_seqs=args.batch_seqs, ctx=ctx), args.repeats)

    windows = window_starts(n - 1, seq_len, args.stride).numel()
    standard_flops = (n - 1) // cfg.train_seq_len * forward_flops(base, cfg.train_seq_len, cfg.vocab_size, device)
    sliding_flops = windows * forward_flops(base, seq_len, cfg.vocab_size, device)
    standard_rate, sliding_rate = standard_flops / standard_s, sliding_flops / sliding_s
    print(f"preset:{args.preset} scale:{args.scale} device:{device} compile:{args.compile} val_tokens:{n - 1}")
    print(f"standard: seq_len:{cfg.train_seq_len} flops:{standard_flops:.4g} seconds:{standard_s:.3f} "
          f"flop_per_s:{standard_rate:.4g}")
    print(f"sliding: seq_len:{seq_len} stride:{args.stride} batch_seqs:{args.batch_seqs} windows:{windows} "
          f"flops:{sliding_flops:.4g} seconds:{sliding_s:.3f} flop_per_s:{sliding_rate:.4g}")
    print(f"work_ratio:{sliding_flops / standard_flops:.2f} time_ratio:{sliding_s / standard_s:.2f} "
          f"floor_ratio:{standard_rate / sliding_rate:.3f} (1.0 = the standard eval's throughput; target <= 1.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
