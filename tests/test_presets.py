"""One preset per seed stack (techniques.md 10): valid at both scales, the seeds' parameter counts at
full scale, a leave-one-out ablation grid, and (slow) each trains end to end at smoke scale."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from golf.config import resolve, validate
from golf.distributed import DistContext
from golf.presets import STACKS
from golf.techniques import TechniqueSet
from golf.train import assemble_model, export_policy
from sweeps.ablate import ablation_sweep, stack_techniques
from sweeps.spec import plan_sweep

SEED_PRESETS = ("pr130", "pr137", "pr326", "pr635", "pr1260")
# The seeds' logged model_params (techniques.md 10.1); #130 never ran and keeps the baseline's shape.
LOGGED_PARAMS = {"pr130": 17_059_912, "pr137": 21_778_504, "pr326": 25_517_137, "pr635": 26_809_543,
                 "pr1260": 34_401_371}


def test_every_seed_stack_is_a_preset_that_validates_at_both_scales_without_warnings():
    assert set(SEED_PRESETS) <= set(STACKS)
    for preset in SEED_PRESETS:
        full = resolve(preset)
        assert validate(full, world_size=8, check_runtime=False, baseline=full) == []
        smoke = resolve(preset, "smoke")
        assert validate(smoke, world_size=1, check_runtime=False, baseline=smoke) == []


@pytest.mark.parametrize("preset", SEED_PRESETS)
def test_full_scale_parameter_count_equals_the_seeds_log(preset):
    cfg = resolve(preset, overrides={"ORTHO_INIT": "off"})  # init needs values, not just shapes
    techniques = TechniqueSet(cfg)
    meta = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("meta"))
    with torch.device("meta"):  # shapes only
        built = assemble_model(cfg, meta, techniques, export_policy(cfg, techniques), log=lambda line: None)
    assert sum(p.numel() for p in built.base.parameters()) == LOGGED_PARAMS[preset]


def test_the_smoke_scale_keeps_what_a_stacks_techniques_depend_on():
    pr1260 = resolve("pr1260", "smoke")
    assert pr1260.num_layers == 11 and pr1260.recur_layers == "4,5" and pr1260.recur_start_step == 20
    assert pr1260.data_path.endswith("demo_sp4096") and pr1260.vocab_size == 4096
    assert pr1260.model_dim == 64 and pr1260.iterations == 40  # still tiny
    baseline = resolve("baseline", "smoke")
    assert baseline.num_layers == 4 and baseline.recur_start_step == resolve("baseline").recur_start_step


def test_the_ablation_of_pr635_is_the_full_stack_and_each_technique_off():
    techniques = stack_techniques("pr635")
    assert {"parallel_muon", "xsa", "smear_gate", "bigram_hash", "ema", "swa", "qat", "ttt",
            "sliding_window", "gptq_lite"} <= set(techniques)
    plan = plan_sweep(ablation_sweep("pr635", seeds=[1337]), scale="smoke", environ={})
    assert plan.baseline_label == "pr635" and plan.labels[0] == "pr635"
    assert len(plan.labels) == 1 + len(techniques)
    assert "XSA_LAST_N=0" in plan.labels and "PARALLEL_MUON=0" in plan.labels
    # EMA off would leave SWA averaging EMA weights that do not exist: SWA falls back to raw
    assert "EMA_ENABLED=0,SWA_SOURCE=raw" in plan.labels


@pytest.mark.slow
@pytest.mark.parametrize("preset", SEED_PRESETS)
def test_each_seed_preset_trains_exports_and_evaluates_at_smoke_scale(preset, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOLF_")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "golf.cli", "train", "--preset", preset, "--scale", "smoke", "RUN_DIR=run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "ok" and result["bytes"]["under_limit"]
    assert result["preset"] == preset and result["warnings"] == []
    on = {name for name, entry in result["techniques"].items() if entry.get("enabled")}
    assert set(stack_techniques(preset)) <= on


def test_pr137_exports_the_layout_its_log_reports():
    """#137's train.log: `int6:54 int8:0 passthrough:38` (every attention/MLP matrix on int6, the
    fp16 embedding and the 37 control tensors kept as floats)."""
    from collections import Counter

    from golf.quant.export import export_formats

    cfg = resolve("pr137", overrides={"ORTHO_INIT": "off"})
    techniques = TechniqueSet(cfg)
    meta = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("meta"))
    with torch.device("meta"):
        built = assemble_model(cfg, meta, techniques, export_policy(cfg, techniques), log=lambda line: None)
    formats = export_formats(built.base.state_dict(), built.roles, export_policy(cfg, techniques))
    kinds = Counter("int6" if f.kind == "int" and f.bits == 6 else "int8" if f.kind == "int" else "passthrough"
                    for f in formats.values())
    assert kinds == {"int6": 54, "passthrough": 38}
    assert str(formats["tok_emb.weight"]) == "fp16"
