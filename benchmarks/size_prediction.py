"""How well golf.quant.sizing predicts artifact bytes before training, and where its constants come from.

    OMP_NUM_THREADS=1 python benchmarks/size_prediction.py              # errors: records + smoke runs
    OMP_NUM_THREADS=1 python benchmarks/size_prediction.py --calibrate  # also refit the constants
    ... --runs DIR      keep the smoke runs in DIR and reuse those already there

1. Real records (../shared/fixtures/logs): each log whose architecture a golf config (a preset
   and settings) reproduces (its logged model_params must equal the golf model's, or the row says
   so and is skipped). The model bytes are the fixture's total_submission_bytes - code_bytes; the
   record's own code is not golf's bundle, so the model bytes are what is predicted. ``fit`` rows
   calibrated the trained constants, ``held-out`` rows did not.
2. golf's own smoke exports, run for real (`golf train --preset smoke ...`): total bytes (model +
   the bundle's code) against the prediction.
3. The time a sweep's size check takes per config (a 24-config full-scale grid, warm).

``--calibrate`` prints SAVED_BITS, FLOAT_RATIOS and STRUCTURE_RATIOS as the data give them, next
to the values in golf/quant/sizing.py (the interval half-widths follow from the errors printed).
Without a GPU it runs on 2 cores in about 5-10 minutes (13 smoke runs), seconds with --runs reused.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from golf.config import resolve  # noqa: E402
from golf.quant import sizing  # noqa: E402
from golf.quant.compress import codec_spec, compress  # noqa: E402
from golf.quant.container import decode  # noqa: E402

LOGS = REPO.parent / "shared" / "fixtures" / "logs"


@dataclass(frozen=True)
class Record:
    log: str
    preset: str
    overrides: dict[str, object]
    role: str  # "fit" or "held-out"
    why: str = ""
    fits: str | None = None  # the SAVED_BITS group a fit record calibrates (None: the codec's)


_BASELINE = {}
_XSA11 = {"NUM_LAYERS": 11, "MLP_MULT": 3, "XSA_LAST_N": 4, "ROPE_DIMS": 16, "LN_SCALE": 1, "SMEAR_GATE": 1,
          "BIGRAM_VOCAB_SIZE": 2048, "BIGRAM_DIM": 128, "EMA_ENABLED": 1, "QUANT_FORMAT": "int6",
          "QUANT_GRID": "floored", "COMPRESSOR": "zstd"}
RECORDS = [
    *(Record(f, "baseline", _BASELINE, "fit") for f in (
        "2026-03-17_NaiveBaseline__train.log",
        "2026-03-18_LongContextSeq2048__train.log",
        "2026-03-18_LongContextSeq2048__train_seed1338.log",
        "2026-03-19_SlidingWindowEval__train.log",
        "2026-03-19_TrainingOptSeq4096__train.log",
        "2026-03-19_TrainingOptSeq4096__train_seed1338.log",
        "2026-03-17_LoRA_TTT__train_v0.txt",
        "2026-03-17_LoRA_TTT__train_v2.txt",
        "2026-03-17_LoRA_TTT__train_v3.txt",
    )),
    Record("2026-03-18_Quasi10Bfrom50B_SP1024_9x512_KV4_4h_pgut3__train.log", "baseline", _BASELINE,
           "held-out", "4 hours of training, not 10 minutes"),
    # The 11-layer XSA4 stack of 2026-03-20/21 (int6 attention/MLP on the floored grid, int8
    # embedding, zstd-22): these settings give its logged 26,829,913 parameters. Its bigram table
    # is int8 there and int6 in golf (327,680 of 26.8M codes). The 1.1248 seed2025 log repeats
    # train.log's bytes exactly, so it is left out.
    *(Record(f, "baseline", _XSA11, "fit") for f in (
        "2026-03-20_11L_EfficientPartialXSA_FA3_SWA120__train.log",
        "2026-03-20_11L_XSA4_EMA_Int6_MLP3x_WD04_1.1271__train_seed2025.log",
        "2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248__train.log",
        "2026-03-21_11L_XSA4_EMA_PartialRoPE_LateQAT_1.1248__train_seed42.log",
    )),
    # #326's log names its artifact int6+zstd (the preset follows its README: lzma); its int6
    # attention takes the value the XSA records fit, so it calibrates int5.
    *(Record(f"2026-03-20_10L_Int5MLP_MuonWD04_SWA50__train_seed{s}.log", "pr326", {"COMPRESSOR": "zstd"}, "fit",
             fits="int5") for s in (1337, 42)),
    *(Record(f"2026-04-03_MuonEqR_DepthRecurrence_WD090_AllInt6__train_seed{s}.log", "pr1260", {}, "fit")
      for s in (0, 42)),
    # Same architecture and int6+brotli, no mixed int5 (an assumption: its code is not in the fixtures).
    *(Record(f"2026-04-01_Vocab4096_MLPMult4_WD085__train_seed{s}.log", "pr1260", {"MIXED_QUANT": 0},
             "held-out", "all-int6 GPTQ assumed") for s in (1337, 42)),
]

SMOKE_RUNS = {
    "int8+zlib": [],
    "int8+zstd": ["COMPRESSOR=zstd"],
    "int8+lzma": ["COMPRESSOR=lzma"],
    "int8+brotli+shuffle2": ["COMPRESSOR=brotli", "BYTE_SHUFFLE=2"],
    "int6+zstd": ["QUANT_FORMAT=int6", "COMPRESSOR=zstd"],
    "int6+lzma": ["QUANT_FORMAT=int6", "COMPRESSOR=lzma"],
    "int6+brotli+shuffle2": ["QUANT_FORMAT=int6", "COMPRESSOR=brotli", "BYTE_SHUFFLE=2"],
    "qat int6+zstd": ["QAT_ENABLED=1", "QUANT_FORMAT=int6", "COMPRESSOR=zstd"],
    "mlp4 int8+zlib": ["MLP_MULT=4"],
    "fp16 embed int6+zstd": ["FP16_EMBED=1", "QUANT_FORMAT=int6", "COMPRESSOR=zstd"],
    "fp16 embed int6+brotli+shuffle2": ["FP16_EMBED=1", "QUANT_FORMAT=int6", "COMPRESSOR=brotli", "BYTE_SHUFFLE=2"],
    "fp16 embed int8+zlib": ["FP16_EMBED=1"],
    "fp16 embed int6+lzma": ["FP16_EMBED=1", "QUANT_FORMAT=int6", "COMPRESSOR=lzma"],
}


def record_bytes(log: str) -> tuple[int, int]:
    """(model_params from the log, model bytes = fixture total - code)."""
    expected = json.loads((LOGS / f"{log}.expected.json").read_text())
    text = (LOGS / log).read_text(errors="replace")
    params = int(re.search(r"^model_params:(\d+)", text, re.M).group(1))
    return params, int(expected["total_submission_bytes"]) - int(expected["code_bytes"])


def record_config(record: Record):
    return resolve(record.preset, overrides=record.overrides)


def smoke_run(name: str, settings: list[str], runs: Path) -> dict:
    run_dir = runs / re.sub(r"[^A-Za-z0-9]+", "_", name)
    state = run_dir / "train_state.json"
    if not state.is_file():
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-m", "golf.cli", "train", "--preset", "smoke",
                               f"RUN_DIR={run_dir}", *settings], cwd=REPO, env=env,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"smoke run {name} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    out = json.loads(state.read_text())
    out["run_dir"] = str(run_dir)
    return out


def smoke_config(settings: list[str]):
    return resolve("baseline", "smoke", overrides=dict(s.split("=", 1) for s in settings))


# --- calibration ---------------------------------------------------------------------------------
def measured_groups(artifact: Path, group_of: dict[str, str]):
    """(codec, {group: (elements, bytes compressed on its own)}) of a real artifact; ``group_of``
    names each integer tensor's group (:attr:`golf.quant.sizing.ExportCount.group_of`)."""
    decoded = decode(artifact.read_bytes())
    codec = decoded.codec
    obj = torch.load(io.BytesIO(decoded.raw), map_location="cpu", weights_only=True)
    qmeta = obj.get("qmeta", {})
    parts: dict[str, list[bytes]] = defaultdict(list)
    elements: dict[str, int] = defaultdict(int)
    for name, q in obj["quantized"].items():
        group = group_of[name]
        assert sizing.code_width(group) == int(qmeta.get(name, {}).get("bits", 8)), name
        parts[group].append(q.numpy().tobytes())
        elements[group] += q.numel()
        s = obj["scales"][name]
        key = "scale_fp16" if s.dtype == torch.float16 else "scale_fp32"
        parts[key].append(s.contiguous().view(torch.uint8).numpy().tobytes())
        elements[key] += s.numel()
    for name, t in obj["passthrough"].items():
        key = {torch.float16: "fp16", torch.float32: "fp32", torch.bfloat16: "bf16"}.get(t.dtype, "raw")
        parts[key].append(t.contiguous().view(torch.uint8).numpy().tobytes())
        elements[key] += t.numel()
    return codec, {k: (elements[k], len(compress(b"".join(v), codec))) for k, v in parts.items()}


def calibrate(smoke: dict[str, dict], records: list[tuple[Record, int]]) -> None:
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    saved: dict[tuple[str, str, str | None], list[float]] = defaultdict(list)
    ratios: dict[tuple[str, str, bool], list[float]] = defaultdict(list)
    structure: dict[str, list[float]] = defaultdict(list)
    for name, state in smoke.items():
        count = sizing.count_export(smoke_config(SMOKE_RUNS[name]))
        codec, groups = measured_groups(Path(state["run_dir"]) / state["artifact_file"], count.group_of)
        for key, (n, nbytes) in groups.items():
            if key.startswith("int"):
                bits = sizing.code_width(key)
                for group in (key, None):
                    saved[(sizing.BRIEF, codec.name, group)].append(bits - 8 * nbytes / n)
            else:
                stored = n * {"scale_fp16": 2, "fp16": 2, "bf16": 2}.get(key, 4)
                ratios[(key, codec.name, codec.shuffle > 0)].append(nbytes / stored)
        rest = state["model_bytes"] - sum(nbytes for _, nbytes in groups.values())
        structure[codec.name].append(rest / sizing.structure_bytes(count))
    zlib_none = mean(saved[(sizing.BRIEF, "zstd", "int6")]) + mean(saved[(sizing.BRIEF, "zlib", "int8")]) \
        - mean(saved[(sizing.BRIEF, "zstd", "int8")])
    print("\nSAVED_BITS, brief (smoke exports, each code group compressed on its own; a codec's None in "
          f"the code is its int6 value; zlib's: zstd int6 + (zlib - zstd) int8 = {zlib_none:.3f}):")
    for key, values in sorted(saved.items(), key=str):
        if key[2] is not None:  # the code's fallbacks are derived as the header says
            print(f"  {key}: {mean(values):.3f},   # n={len(values)}; in code: {sizing.SAVED_BITS.get(key)}")
    print("FLOAT_RATIOS (smoke exports):")
    for key, values in sorted(ratios.items()):
        print(f"  {key}: {mean(values):.3f},   # n={len(values)}; in code: {sizing.FLOAT_RATIOS.get(key)}")
    print("STRUCTURE_RATIOS (smoke exports):")
    for key, values in sorted(structure.items()):
        print(f"  {key!r}: {mean(values):.3f},   # n={len(values)}; in code: {sizing.STRUCTURE_RATIOS.get(key)}")
    # Records in list order; a record that fits one group (``fits``) takes the others' values from
    # the fits before it, else from the code.
    trained: dict[tuple[str, str, str | None], list[float]] = defaultdict(list)
    fitted = dict(sizing.SAVED_BITS)
    for record, model_bytes in records:
        if record.role != "fit":
            continue
        cfg = record_config(record)
        count = sizing.count_export(cfg)
        codec = codec_spec(cfg.compressor, cfg.compressor_level, cfg.byte_shuffle)
        target = (sizing.TRAINED, codec.name, record.fits)
        fitted.setdefault(target, fitted[(sizing.TRAINED, codec.name, None)])  # so its groups find it
        floats = sum(c.stored_bytes * sizing._float_ratio(k, codec) for k, c in count.groups.items()
                     if not k.startswith("int"))
        code_bytes = model_bytes - floats - sizing.overhead_bytes(count, codec)
        bits = sum(b * n for b, n in count.int_bits.items())
        if count.narrowed:
            bits -= count.narrowed * sum(count.narrowable) / len(count.narrowable)
        known, elements = 0.0, 0
        for key, group in count.groups.items():
            if not key.startswith("int"):
                continue
            if sizing.saved_bits_key(sizing.TRAINED, codec.name, key, fitted) == target:
                elements += group.elements
            else:
                known += group.elements * fitted[sizing.saved_bits_key(sizing.TRAINED, codec.name, key, fitted)]
        trained[target].append((bits - 8 * code_bytes - known) / elements)
        fitted[target] = mean(trained[target])
    print("SAVED_BITS, trained (fit on the real records):")
    for key, values in trained.items():
        print(f"  {key}: {mean(values):.3f},   # n={len(values)}; in code: {sizing.SAVED_BITS.get(key)}")
    trained_zstd = {"zstd": trained.get((sizing.TRAINED, "zstd", None), [])}
    lzma, zstd = (sizing.BRIEF, "lzma", "int6"), (sizing.BRIEF, "zstd", "int6")
    if trained_zstd["zstd"] and lzma in saved and zstd in saved:
        value = mean(trained_zstd["zstd"]) + mean(saved[lzma]) - mean(saved[zstd])
        print(f"  ('trained', 'lzma', None): {value:.3f},   # zstd's trained + (lzma - zstd) on smoke int6; "
              f"in code: {sizing.SAVED_BITS.get((sizing.TRAINED, 'lzma', None))}")
        int5 = trained.get((sizing.TRAINED, "zstd", "int5"))
        if int5:
            value5 = value + mean(int5) - mean(trained_zstd["zstd"])
            print(f"  ('trained', 'lzma', 'int5'): {value5:.3f},   # lzma's + (int5 - int6) of zstd; "
                  f"in code: {sizing.SAVED_BITS.get((sizing.TRAINED, 'lzma', 'int5'))}")


# --- the error report --------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibrate", action="store_true", help="refit the constants and print them")
    parser.add_argument("--runs", type=Path, help="folder for the smoke runs (default: a temporary one)")
    args = parser.parse_args()
    runs = args.runs or Path(tempfile.mkdtemp(prefix="size_prediction_"))
    runs.mkdir(parents=True, exist_ok=True)

    print("1. real records: model bytes (the fixture's total - its code bytes)")
    print(f"  {'record':<66} {'role':<9} {'actual':>10} {'predicted':>10} {'error':>7}  interval")
    records, errors = [], defaultdict(list)
    for record in RECORDS:
        if not (LOGS / record.log).is_file():
            print(f"  {record.log}: fixture missing (../shared absent?), skipped")
            continue
        params, model_bytes = record_bytes(record.log)
        cfg = record_config(record)
        count = sizing.count_export(cfg)
        if count.param_count != params:
            print(f"  {record.log}: golf's {record.preset} has {count.param_count} parameters, the log "
                  f"{params}: not the same architecture, skipped")
            continue
        records.append((record, model_bytes))
        prediction = sizing.predict_artifact_bytes(cfg, record.preset, "full", code=0)
        err = (prediction.model_bytes - model_bytes) / model_bytes
        inside = prediction.low <= model_bytes <= prediction.high
        errors[record.role].append(abs(err))
        print(f"  {record.log[:66]:<66} {record.role:<9} {model_bytes:>10} {prediction.model_bytes:>10} "
              f"{100 * err:>+6.2f}%  [{prediction.low}, {prediction.high}] {'inside' if inside else 'OUTSIDE'}"
              f"{'  (' + record.why + ')' if record.why else ''}")
    for role, values in errors.items():
        print(f"  {role}: n={len(values)}, mean |error| {100 * sum(values) / len(values):.2f}%, "
              f"max {100 * max(values):.2f}%")

    print(f"\n2. golf smoke exports (run for real into {runs}): total bytes = model + code")
    print(f"  {'config':<24} {'actual':>8} {'predicted':>9} {'error':>7}  interval  seconds per prediction")
    smoke, smoke_errors = {}, []
    for name, settings in SMOKE_RUNS.items():
        state = smoke_run(name, settings, runs)
        smoke[name] = state
        actual = state["model_bytes"] + state["code_bytes"]
        start = time.perf_counter()
        prediction = sizing.predict_artifact_bytes(smoke_config(settings), "baseline", "smoke")
        seconds = time.perf_counter() - start
        err = (prediction.total - actual) / actual
        model_err = (prediction.model_bytes - state["model_bytes"]) / state["model_bytes"]
        smoke_errors.append(abs(err))
        inside = prediction.low <= actual <= prediction.high
        code = "exact" if prediction.code_bytes == state["code_bytes"] else "differs"
        print(f"  {name:<24} {actual:>8} {prediction.total:>9} {100 * err:>+6.2f}%  "
              f"[{prediction.low}, {prediction.high}] {'inside' if inside else 'OUTSIDE'}  {seconds:.2f}s"
              f"  (model alone {100 * model_err:+.2f}%, code {code})")
    print(f"  n={len(smoke_errors)}, mean |error| {100 * sum(smoke_errors) / len(smoke_errors):.2f}%, "
          f"max {100 * max(smoke_errors):.2f}%")
    plan_timing()
    if args.calibrate:
        calibrate(smoke, records)


def plan_timing() -> None:
    """Seconds per config of a sweep's size check: a 24-config full-scale grid, once warm."""
    from sweeps.feasibility import predict_plan_sizes
    from sweeps.spec import Sweep, plan_sweep

    sweep = Sweep(name="timing", preset="baseline", seeds=[1337],
                  grid={"MLP_MULT": [2, 3, 4], "QAT_ENABLED": [0, 1], "LAWA_ENABLED": [0, 1],
                        "NUM_LAYERS": [9, 11]}, fixed={"QUANT_FORMAT": "int6", "COMPRESSOR": "zstd"})
    plan = plan_sweep(sweep, scale="full", environ={})
    predict_plan_sizes(plan)  # warm: golf's modules imported, the bundle's minified modules cached
    start = time.perf_counter()
    sizes = predict_plan_sizes(plan)
    seconds = time.perf_counter() - start
    print(f"\n3. a sweep's size check: {len(sizes)} full-scale configs in {seconds:.1f} s = "
          f"{seconds / len(sizes):.2f} s per config (warm)")


if __name__ == "__main__":
    main()
