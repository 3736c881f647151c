"""Artifact bytes and round-trip val_bpb of every compressor on the same weights (techniques.md 3.7).

Takes a finished run directory (train_state.json and its artifact), dequantizes the artifact, and
packs those same weights with each codec, with and without the stride-2 byte shuffle; each packed
artifact is read back and evaluated on the run's validation tokens. The codecs are lossless, so
the val_bpb column must be one number; the bytes column is the comparison.

    OMP_NUM_THREADS=1 RUN_DIR=/tmp/smoke golf train --preset smoke
    python benchmarks/compressors.py /tmp/smoke
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from golf.config import GolfConfig
from golf.contract import ARTIFACT_FILE_KEY, TRAIN_STATE_FILE
from golf.data import load_validation_tokens, shard_files
from golf.distributed import DistContext
from golf.evaluate import evaluate
from golf.model import build_model, parameter_roles
from golf.quant.compress import CODEC_NAMES, codec_spec
from golf.quant.export import pack_artifact, unpack_artifact
from golf.techniques import TechniqueSet
from golf.tokenizer import ByteCounter, build_byte_tables, load_tokenizer
from golf.train import export_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished golf run (train_state.json and its artifact)")
    args = parser.parse_args()
    state_json = json.loads((args.run_dir / TRAIN_STATE_FILE).read_text())
    cfg = GolfConfig(**state_json["config"])
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    weights = unpack_artifact((args.run_dir / state_json[ARTIFACT_FILE_KEY]).read_bytes()).state_dict
    model = build_model(cfg, ctx.device)
    roles = parameter_roles(model)
    policy = export_policy(cfg, TechniqueSet(cfg))
    val_tokens = load_validation_tokens(shard_files(cfg.data_path, "val"), cfg.train_seq_len, cfg.val_max_tokens)
    byte_counter = ByteCounter(build_byte_tables(load_tokenizer(cfg.tokenizer_path), cfg.vocab_size), ctx.device)
    print(f"run:{args.run_dir} export:{cfg.quant_format} params:{sum(t.numel() for t in weights.values())}")
    print(f"{'codec':<24}{'bytes':>10}{'vs zlib':>10}  val_bpb")
    reference = None
    for name in CODEC_NAMES:
        for shuffle in (0, 2):
            spec = codec_spec(name, 0, shuffle)
            blob, _ = pack_artifact(weights, roles, policy, spec)
            model.load_state_dict(unpack_artifact(blob).state_dict, strict=True)
            result = evaluate(model, val_tokens, byte_counter, seq_len=cfg.train_seq_len,
                              batch_tokens=cfg.val_batch_size, grad_accum_steps=cfg.grad_accum_for(1), ctx=ctx)
            reference = reference or len(blob)
            print(f"{spec.label:<24}{len(blob):>10}{len(blob) / reference - 1:>+10.2%}  {result.val_bpb:.8f}")


if __name__ == "__main__":
    main()
