"""A byte target never fails silently: the export narrows the least sensitive tensors and prunes
+-1 codes to fit, says which, or stops the run with the shortfall after writing the artifact."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_export_toggles import ZLIB, calibration, cfg_with, run_gptq, trained_like

from golf.quant import container
from golf.quant.export import pack_artifact, quantize_state_dict, unpack_artifact
from golf.quant.target import droppable, pack_to_target, proxy_sensitivity
from golf.techniques.target_bytes import TargetBytes

REPO = Path(__file__).resolve().parents[1]


def fit_inputs(**overrides):
    cfg = cfg_with(QUANT_FORMAT="int6", **overrides)
    built, techniques, policy = trained_like(cfg)
    state = built.base.state_dict()
    candidates = droppable(state, built.roles, policy, 5)
    order = sorted(candidates, key=lambda n: (proxy_sensitivity(state[n]), n))
    return cfg, built, techniques, policy, state, order


def sizes(state, roles, policy, order):
    full = len(pack_to_target(state, roles, policy, ZLIB, 10**9, order).blob)
    narrow = len(pack_to_target(state, roles, policy, ZLIB, 0, order, allow_prune=False).blob)
    return full, narrow


def test_a_reachable_target_narrows_the_fewest_least_sensitive_tensors_onto_the_int5_grid():
    cfg, built, _, policy, state, order = fit_inputs()
    full, narrow = sizes(state, built.roles, policy, order)
    assert narrow < full
    # the size with the 6 least sensitive tensors narrowed is reachable with at most those 6
    budget = len(pack_to_target(state, built.roles, policy, ZLIB, 0, order[:6], allow_prune=False).blob)
    assert budget < full
    out = pack_to_target(state, built.roles, policy, ZLIB, budget, order)
    assert len(out.blob) <= budget and out.shortfall == 0 and out.prune_frac == 0
    assert 0 < len(out.dropped) <= 6 and out.dropped == order[:len(out.dropped)]
    # one tensor fewer does not fit: the allocation is the smallest that does
    fewer = pack_to_target(state, built.roles, policy, ZLIB, 0, order[:len(out.dropped) - 1], allow_prune=False)
    assert len(fewer.blob) > budget
    obj = torch.load(io.BytesIO(container.decode(out.blob).raw), weights_only=True)
    restored = unpack_artifact(out.blob).state_dict
    for name in out.dropped:
        assert obj["qmeta"][name]["bits"] == 5 and int(obj["quantized"][name].abs().max()) <= 16
        grid = restored[name].float() / obj["scales"][name].float().unsqueeze(-1)
        assert torch.allclose(grid, grid.round(), atol=1e-3)


def test_when_narrowing_is_not_enough_it_prunes_pm1_codes_and_says_how_many():
    cfg, built, _, policy, state, order = fit_inputs()
    _, narrow = sizes(state, built.roles, policy, order)
    budget = narrow - 300
    out = pack_to_target(state, built.roles, policy, ZLIB, budget, order)
    assert out.shortfall == 0 and len(out.blob) <= budget
    assert 0 < out.prune_frac < 1 and out.pruned_codes > 0 and out.dropped == order


def test_a_target_that_cannot_be_met_reports_the_shortfall():
    cfg, built, _, policy, state, order = fit_inputs()
    out = pack_to_target(state, built.roles, policy, ZLIB, 1000, order)
    assert out.shortfall == len(out.blob) - 1000 > 0 and out.prune_frac == 1.0


def test_mixed_int5_int6_by_hessian_trace_respects_its_byte_target():
    cfg = cfg_with(QUANT_FORMAT="int6", QUANT_GRID="floored", GPTQ_ENABLED=1, GPTQ_CALIBRATION_BATCHES=3,
                   TARGET_BYTES=1, TARGET_PRUNE=0)
    built, gptq, policy = run_gptq(cfg, calibration(cfg, 3))
    state = built.base.state_dict()
    full = len(pack_artifact(state, built.roles, policy, ZLIB)[0])
    code = 5000
    target = TargetBytes(dataclasses.replace(cfg, target_bytes=full + code - 400))
    built.run.log = lambda line: None
    blob, stats = target.export_artifact(built.run, state, built.roles, policy, ZLIB, code)
    assert len(blob) + code <= full + code - 400 and "shortfall_message" not in stats.target
    assert stats.target["sensitivity"] == "trace_h"
    dropped = stats.target["dropped_bit"]
    kept = set(gptq.codes) - set(dropped)
    assert dropped and max(gptq.traces[n] for n in dropped) <= min(gptq.traces[n] for n in kept)
    obj, _ = quantize_state_dict(state, built.roles, policy)  # the plain policy still says int6
    restored = unpack_artifact(blob).state_dict
    for name in dropped:
        codes = gptq.narrower[(name, 5)]
        assert int(codes.q.abs().max()) <= 15  # GPTQ again at int5, and that is what is stored
        assert torch.equal(restored[name], (codes.q.float() * codes.scale.float().unsqueeze(-1)).to(restored[name].dtype))
    assert obj["qmeta"][dropped[0]]["bits"] == 6


@pytest.mark.slow
def test_an_unreachable_target_stops_the_run_before_evaluation_with_the_artifact_written(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RUN_DIR": str(tmp_path / "run"), "TARGET_BYTES": "100000",
           "QUANT_FORMAT": "int6", "ITERATIONS": "4", "VAL_LOSS_EVERY": "0"}
    proc = subprocess.run([sys.executable, "-m", "golf.cli", "train", "--preset", "smoke"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "TARGET_BYTES=100000 cannot be met" in out and "Traceback" not in out
    assert "roundtrip" not in out  # stopped before evaluation
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert state["quant_stats"]["target"]["shortfall"] > 0
    assert (tmp_path / "run" / state["artifact_file"]).stat().st_size == state["model_bytes"]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and "cannot be met" in result["error"]
