"""Artifact bytes predicted before training (golf.quant.sizing) and the sweep refusing a config that
cannot fit (sweeps.feasibility, run_sweep, `sweeps run --dry-run`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from golf.config import resolve
from golf.contract import SIZE_LIMIT_BYTES
from golf.quant import sizing
from golf.quant.export import pack_artifact
from sweeps.cli import main
from sweeps.experiment import RunOptions, run_sweep
from sweeps.spec import SpecError, Sweep

REPO = Path(__file__).resolve().parents[1]
FLAGSHIP = REPO / "sweeps" / "qat_vs_lawa.py"
# The reference's shape with a 12x MLP: about 64M parameters, nearly 4 times the baseline's 17M.
HUGE_MLP = 12

# `sweeps` CLI runs may register value sources process-wide (as in test_cli_sweeps).
pytestmark = pytest.mark.usefixtures("restore_value_sources")


def _real_export(cfg):
    """The export of ``cfg``'s freshly built CPU model, packed as the run packs it."""
    from golf.distributed import DistContext
    from golf.quant.compress import codec_spec
    from golf.techniques import TechniqueSet
    from golf.train import assemble_model, export_policy

    torch.manual_seed(0)
    techniques = TechniqueSet(cfg)
    policy = export_policy(cfg, techniques)
    cpu = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    built = assemble_model(cfg, cpu, techniques, policy, log=lambda line: None)
    state, roles = techniques.artifact_state(built.base.state_dict(), built.roles)
    codec = codec_spec(cfg.compressor, cfg.compressor_level, cfg.byte_shuffle)
    return pack_artifact(state, roles, policy, codec)[1]


@pytest.mark.parametrize("settings", [{}, {"QAT_ENABLED": 1, "QUANT_FORMAT": "int6", "COMPRESSOR": "zlib"},
                                      {"FP16_EMBED": 1, "MLP_MULT": 3}])
def test_the_meta_count_is_what_the_real_export_stores(settings):
    """Per format: the tensors and payload bytes counted on the meta device equal those the real
    export of the same config stores (codes + scales for integer formats)."""
    cfg = resolve("baseline", "smoke", overrides=settings)
    count = sizing.count_export(cfg)
    stats = _real_export(cfg)
    tensors: dict[str, int] = {}
    for key, group in count.groups.items():
        if not key.startswith("scale"):  # int groups by width, as the export counts them
            width = f"int{sizing.code_width(key)}" if key.startswith("int") else key
            tensors[width] = tensors.get(width, 0) + group.tensors
            if not key.startswith("int"):
                assert group.stored_bytes == stats.format_bytes[key], key
    assert tensors == stats.formats
    # an integer format's payload is its codes and its scales
    codes_and_scales = sum(g.stored_bytes for k, g in count.groups.items() if k.startswith(("int", "scale")))
    assert codes_and_scales == sum(n for k, n in stats.format_bytes.items() if k.startswith("int"))
    assert count.param_count == stats.param_count


def test_a_full_scale_prediction_counts_the_seeds_parameters_and_its_own_code():
    cfg = resolve("pr137")
    prediction = sizing.predict_artifact_bytes(cfg, "pr137", "full")
    assert prediction.param_count == 21_778_504 and prediction.regime == sizing.TRAINED
    from golf.bundle import build_bundle

    assert prediction.code_bytes == len(build_bundle(cfg, "pr137", "full").data)
    assert prediction.low <= prediction.total <= prediction.high
    assert set(prediction.groups) == {"int6", "fp16", "fp32", "scale_fp16"}
    assert prediction.limit == SIZE_LIMIT_BYTES


def test_the_baseline_fits_and_a_huge_mlp_is_surely_over():
    fits = sizing.predict_artifact_bytes(resolve("baseline"))
    assert not fits.surely_over_limit
    huge = sizing.predict_artifact_bytes(resolve("baseline", overrides={"MLP_MULT": HUGE_MLP}))
    assert huge.surely_over_limit and huge.low > SIZE_LIMIT_BYTES


def test_mixed_quant_widens_the_interval_by_the_matrices_it_may_narrow():
    mixed = sizing.count_export(resolve("pr1260"))
    assert mixed.narrowed == len(mixed.narrowable) - resolve("pr1260").n_int6_layers > 0
    assert sizing.count_export(resolve("pr1260", overrides={"MIXED_QUANT": 0})).narrowed == 0


def _sweep_file(tmp_path: Path, grid: dict) -> Path:
    path = tmp_path / "sizes.py"
    path.write_text("from sweeps.spec import Sweep\n"
                    f"SWEEP = Sweep(name='sizes', preset='baseline', grid={grid!r}, seeds=[1337])\n")
    return path


def test_an_over_limit_config_is_refused_before_ray_starts(tmp_path, capsys):
    import ray

    sweep = Sweep(name="sizes", preset="baseline", grid={"MLP_MULT": [2, HUGE_MLP]}, seeds=[1337])
    with pytest.raises(SpecError) as refused:
        run_sweep(sweep, RunOptions(scale="full", storage=str(tmp_path / "experiments")))
    assert len(refused.value.problems) == 1
    problem = refused.value.problems[0]
    assert f"MLP_MULT={HUGE_MLP}" in problem and "over the 16,000,000-byte limit" in problem
    assert "--allow-over-limit" in problem and "\n" not in problem
    assert not ray.is_initialized()
    assert not (tmp_path / "experiments").exists()  # no experiment directory, no trial
    # the command line: one clear line, exit 2, no traceback
    file = _sweep_file(tmp_path, {"MLP_MULT": [2, HUGE_MLP]})
    assert main(["run", str(file), "--scale", "full", "--storage", str(tmp_path / "experiments")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config MLP_MULT={HUGE_MLP}") and "predicted" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not ray.is_initialized() and not (tmp_path / "experiments").exists()


def test_allow_over_limit_plans_the_sweep_with_a_warning(tmp_path, capsys):
    file = _sweep_file(tmp_path, {"MLP_MULT": [2, HUGE_MLP]})
    assert main(["run", str(file), "--scale", "full", "--dry-run", "--allow-over-limit"]) == 0
    out = capsys.readouterr().out
    assert f"MLP_MULT={HUGE_MLP}" in out and "OVER the limit" in out
    assert "running it anyway (--allow-over-limit)" in out and "dry run: nothing was started" in out


def test_dry_run_shows_each_configs_predicted_bytes(capsys):
    assert main(["run", str(FLAGSHIP), "--dry-run", "--scale", "full", "--seeds", "1337"]) == 0
    out = capsys.readouterr().out
    assert "predicted artifact bytes (model + code) against the 16,000,000-byte limit" in out
    for label in ("QAT_ENABLED=0,LAWA_ENABLED=0", "QAT_ENABLED=1,LAWA_ENABLED=1"):
        line = next(line for line in out.splitlines() if line.strip().startswith(label + " "))
        assert "fits" in line and "trained, int6+zstd-22" in line


def test_a_competitors_script_is_not_predicted(tmp_path):
    from sweeps import report
    from sweeps.feasibility import predict_plan_sizes
    from sweeps.spec import plan_sweep

    script = tmp_path / "train_gpt.py"
    script.write_text("print('hi')\n")
    plan = plan_sweep(Sweep(name="theirs", script=str(script), uses_data=False, seeds=[1]), scale="smoke")
    sizes = predict_plan_sizes(plan)
    assert sizes == {}
    assert "size:      not predicted (a competitor's script" in report.format_plan(plan, "here", sizes=sizes)


@pytest.mark.slow
def test_the_prediction_holds_a_real_smoke_exports_bytes(tmp_path):
    """A real `golf train --preset smoke` run (int6 + zstd): its model + code bytes lie inside the
    interval predicted from its config."""
    settings = ["QUANT_FORMAT=int6", "COMPRESSOR=zstd", "ITERATIONS=40"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "golf.cli", "train", "--preset", "smoke",
                           f"RUN_DIR={tmp_path / 'run'}", *settings], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    actual = state["model_bytes"] + state["code_bytes"]
    cfg = resolve("baseline", "smoke", overrides=dict(s.split("=", 1) for s in settings))
    prediction = sizing.predict_artifact_bytes(cfg, "baseline", "smoke")
    assert prediction.regime == sizing.BRIEF
    assert prediction.code_bytes == state["code_bytes"]
    assert prediction.low <= actual <= prediction.high, (prediction, actual)


def test_a_config_the_predictor_cannot_build_is_shown_and_not_blocked(monkeypatch, capsys):
    """A gap of the predictor (a technique that needs values on the meta device) never stops a
    valid sweep: the plan says why that config was not predicted, and the dry run goes on."""
    from sweeps import feasibility

    def cannot(cfg, stack, scale):
        raise RuntimeError("Tensor.item() cannot be called on meta tensors")

    monkeypatch.setattr(feasibility, "predict_artifact_bytes", cannot)
    assert main(["run", str(FLAGSHIP), "--dry-run", "--seeds", "1337"]) == 0
    out = capsys.readouterr().out
    assert "QAT_ENABLED=0,LAWA_ENABLED=0  not predicted (RuntimeError: Tensor.item() cannot be called" in out
    assert "dry run: nothing was started" in out
