"""Throughput of a preset: ms per optimizer step, tokens per second and model FLOPs utilisation.

Runs real training steps (forward, backward, Muon/Adam) on synthetic tokens, so no data is needed,
under the same torchrun/DDP/compile setup as ``golf.train``. Launch it with ``golf bench``.

The comparison point is the reference run (R-2026-03-17_NaiveBaseline log): 43.54 ms per step of
524,288 tokens on 8xH100, i.e. about 1.505M tokens/s per GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from golf.config import ConfigError, config_from_env, validate
from golf.distributed import DistContext, init_distributed, shutdown, synchronize, world_size_from_env
from golf.model import CastedLinear
from golf.optim import build_optimizers
from golf.techniques import Progress, TechniqueSet
from golf.train import apply_update, assemble_model, describe_device, export_policy, train_step

REFERENCE_MS_PER_STEP = 43.54
REFERENCE_TOKENS_PER_STEP = 524_288
REFERENCE_GPUS = 8

# Dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment, most specific first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
    ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0), ("L4", 121.0),
)


class SyntheticBatches:
    """Random token batches with the loader's interface, made once so timing excludes their creation."""

    def __init__(self, vocab_size: int, seed: int, device: torch.device) -> None:
        self.vocab_size, self.device = vocab_size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        world = world_size_from_env()
        key = (global_tokens // (world * grad_accum_steps), seq_len)
        if key not in self.cache:
            span = torch.randint(0, self.vocab_size, (key[0] + 1,), generator=self.generator)
            self.cache[key] = (span[:-1].reshape(-1, seq_len).to(self.device), span[1:].reshape(-1, seq_len).to(self.device))
        return self.cache[key]


def model_flops_per_token(model: nn.Module, num_layers: int, model_dim: int, seq_len: int, tied: bool) -> float:
    """Training FLOPs per token: 6 x matmul parameters + causal attention (half of 12 * L * T * d)."""
    matmul_params = sum(m.master_weight().numel() for m in model.modules() if isinstance(m, CastedLinear))
    if tied:
        matmul_params += model.tok_emb.weight.numel()  # the tied embedding is also the output matmul
    return 6.0 * matmul_params + 6.0 * num_layers * seq_len * model_dim


def peak_tflops(device: torch.device, override: float) -> float | None:
    if override > 0:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in PEAK_BF16_TFLOPS if fragment in name), None)


def run(ctx: DistContext, steps: int, warmup: int, peak_override: float) -> dict[str, Any]:
    cfg, stack, scale = config_from_env()
    torch.manual_seed(cfg.seed)
    techniques = TechniqueSet(cfg)
    built = assemble_model(cfg, ctx, techniques, export_policy(cfg, techniques), log=lambda line: None)
    optimizers = build_optimizers(built.base, cfg, built.roles)
    accum = cfg.grad_accum_for(ctx.world_size)
    batches = SyntheticBatches(cfg.vocab_size, cfg.seed + ctx.rank, ctx.device)
    built.train_model.train()
    # The techniques' step hooks run as in training (QAT switched on from step 0, EMA updates, ...),
    # so a technique's cost per step is part of what is measured.
    built.run.optimizers = optimizers
    techniques.on_train_start(built.run)
    total = warmup + steps
    times_ms = []
    for i in range(total):
        synchronize(ctx.device)
        started = time.perf_counter()
        techniques.before_step(Progress(i, 1.0, i / total, 0.0), built.run)
        train_step(built.train_model, batches, optimizers, cfg, accum, ctx.device)
        apply_update(built.base, optimizers, cfg, step=i, scale=1.0)
        techniques.after_step(Progress(i + 1, 1.0, (i + 1) / total, 0.0), built.run)
        synchronize(ctx.device)
        if i >= warmup:
            times_ms.append(1000.0 * (time.perf_counter() - started))
    ms_per_step = statistics.median(times_ms)
    tokens_per_s = cfg.train_batch_tokens / (ms_per_step / 1000.0)
    flops_per_token = model_flops_per_token(built.base, cfg.num_layers, cfg.model_dim, cfg.train_seq_len, cfg.tie_embeddings)
    achieved_tflops_per_gpu = flops_per_token * tokens_per_s / ctx.world_size / 1e12
    peak = peak_tflops(ctx.device, peak_override)
    reference_per_gpu = REFERENCE_TOKENS_PER_STEP / (REFERENCE_MS_PER_STEP / 1000.0) / REFERENCE_GPUS
    return {
        "preset": stack, "scale": scale, "world_size": ctx.world_size, "device": describe_device(ctx.device),
        "attention": built.kernel, "compile": built.compiled,
        "params": sum(p.numel() for p in built.base.parameters()),
        "tokens_per_step": cfg.train_batch_tokens, "grad_accum_steps": accum,
        "timed_steps": steps, "warmup_steps": warmup,
        "ms_per_step": ms_per_step, "ms_per_step_mean": statistics.fmean(times_ms),
        "ms_per_step_min": min(times_ms), "ms_per_step_max": max(times_ms),
        "tokens_per_s": tokens_per_s, "tokens_per_s_per_gpu": tokens_per_s / ctx.world_size,
        "model_tflops_per_gpu": achieved_tflops_per_gpu,
        "peak_tflops_per_gpu": peak,
        "mfu": achieved_tflops_per_gpu / peak if peak else None,
        "peak_memory_mib": torch.cuda.max_memory_allocated(ctx.device) // 2**20 if ctx.device.type == "cuda" else None,
        "reference": {"ms_per_step": REFERENCE_MS_PER_STEP, "tokens_per_step": REFERENCE_TOKENS_PER_STEP,
                      "gpus": REFERENCE_GPUS, "tokens_per_s_per_gpu": reference_per_gpu},
        "per_gpu_throughput_vs_reference": tokens_per_s / ctx.world_size / reference_per_gpu,
    }


def report(r: dict[str, Any]) -> str:
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (no bf16 peak known for this device; pass --peak-tflops)"
    ref = r["reference"]
    lines = [
        f"bench: preset={r['preset']} scale={r['scale']} world_size={r['world_size']} device={r['device']} "
        f"attention={r['attention']} compile={r['compile']}",
        f"bench: params={r['params']} tokens_per_step={r['tokens_per_step']} grad_accum_steps={r['grad_accum_steps']} "
        f"timed_steps={r['timed_steps']} (after {r['warmup_steps']} untimed)",
        f"bench: ms_per_step={r['ms_per_step']:.2f} (median; mean {r['ms_per_step_mean']:.2f}, "
        f"min {r['ms_per_step_min']:.2f}, max {r['ms_per_step_max']:.2f})",
        f"bench: tokens_per_s={r['tokens_per_s']:,.0f} per_gpu={r['tokens_per_s_per_gpu']:,.0f} "
        f"model_tflops_per_gpu={r['model_tflops_per_gpu']:.1f} mfu={mfu}",
        f"bench: reference baseline {ref['gpus']}xH100: {ref['ms_per_step']} ms/step at {ref['tokens_per_step']:,} "
        f"tokens = {ref['tokens_per_s_per_gpu']:,.0f} tokens/s per GPU; this run per GPU: "
        f"{r['per_gpu_throughput_vs_reference']:.3f}x of that",
    ]
    if r["peak_memory_mib"] is not None:
        lines.append(f"bench: peak memory allocated {r['peak_memory_mib']} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="golf.bench")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=0.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        print("golf.bench: --steps must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    try:
        cfg, _, _ = config_from_env()
        validate(cfg, world_size_from_env())
    except ConfigError as err:
        print(f"golf.bench: {err}", file=sys.stderr)
        return 2
    ctx = init_distributed(cfg.device)
    succeeded = False
    try:
        result = run(ctx, args.steps, args.warmup, args.peak_tflops)
        if ctx.is_master:
            print(report(result), flush=True)
            if args.json:
                args.json.write_text(json.dumps(result, indent=2) + "\n")
        succeeded = True
        return 0
    finally:
        shutdown(together=succeeded)


if __name__ == "__main__":
    sys.exit(main())
