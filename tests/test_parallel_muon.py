"""Parallel Muon with parameter banks (techniques.md 4.5): the same update as plain Muon, sharded
across real gloo processes, an artifact that does not know about banks, QAT reaching the banks."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from golf.config import resolve
from golf.model.banks import BankLayout, rebank, unbank
from golf.model.layers import CastedLinear
from golf.quant import codec_spec, pack_artifact, unpack_artifact
from golf.quant.grid import fake_quantize_rows
from golf.techniques import Progress, TechniqueSet
from golf.techniques.parallel_muon import ParallelMuon
from golf.train import assemble_model, export_policy
from optim_harness import CPU_CTX, build, smoke_config, train
from test_optim_toggles import ALL_ON, SMALL, trains
from test_qat import LinearWeights

TESTS = Path(__file__).parent


def banked(h) -> ParallelMuon:
    return next(t for t in h.techniques if isinstance(t, ParallelMuon))


def per_layer_state(h) -> dict[str, torch.Tensor]:
    """The model's weights by their names without banks (what the artifact stores)."""
    state, _ = h.techniques.artifact_state(h.run.model.state_dict(), h.run.roles)
    return state


def perturb_zero_projections(model: torch.nn.Module) -> None:
    """The output projections start at zero; give every matrix a non-trivial start (same on both
    models: drawn by name from its own generator)."""
    for name, module in model.named_modules():
        if isinstance(module, CastedLinear) and module.zero_init:
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            with torch.no_grad():
                module.master_weight().copy_(torch.randn(module.master_weight().shape, generator=gen) * 0.02)


# --- the update ---------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, {"MUON_EQ_R": 1, "NORMUON_ENABLED": 1, "MUON_WD": 0.04}],
                         ids=["plain", "with_muoneq_normuon_wd"])
def test_one_rank_parallel_muon_is_plain_muons_update(demo_data, extra):
    settings = {**SMALL, **extra}
    plain = build(smoke_config(demo_data, **settings))
    par = build(smoke_config(demo_data, **settings, PARALLEL_MUON=1))
    assert per_layer_state(par).keys() == plain.run.model.state_dict().keys()
    for h in (plain, par):
        perturb_zero_projections(h.run.model)
    start = per_layer_state(par)
    for name, tensor in plain.run.model.state_dict().items():
        assert torch.equal(start[name], tensor), name  # the same initial model
    banks = [p for p in par.run.optimizers.muon.param_groups[0]["params"] if p.ndim == 3]
    assert len(banks) == 4  # q+o, k+v, MLP up, MLP down
    train(plain, 4)
    train(par, 4)
    after = per_layer_state(par)
    moved = 0
    for name, tensor in plain.run.model.state_dict().items():
        torch.testing.assert_close(after[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
        moved += not torch.equal(tensor, start[name])
    assert moved > 20


def test_the_momentum_of_banks_is_in_the_optimizer_state_that_warmup_restores(demo_data):
    h = build(smoke_config(demo_data, **SMALL, PARALLEL_MUON=1))
    muon = h.run.optimizers.muon
    bank = next(p for p in muon.param_groups[0]["params"] if p.ndim == 3)
    initial = copy.deepcopy(h.run.optimizers.state_dicts())  # as Trial.warmup_then_restore does
    train(h, 2)
    assert muon.state[bank]["momentum_buffer"].shape == bank.shape and muon.state[bank]["momentum_buffer"].abs().sum() > 0
    h.run.optimizers.load_state_dicts(initial)
    assert "momentum_buffer" not in muon.state[bank]


def test_banked_layers_read_their_slice_and_keep_the_parameter_count(demo_data):
    plain = build(smoke_config(demo_data, **SMALL))
    par = build(smoke_config(demo_data, **SMALL, PARALLEL_MUON=1))
    count = lambda h: sum(p.numel() for p in h.run.model.parameters())  # noqa: E731
    assert count(par) == count(plain)
    model = par.run.model
    bank = model.get_parameter("banks.attn_64x64.weight")  # q of every layer, then o of every layer
    layers = len(model.blocks)
    assert bank.shape[0] == 2 * layers
    for i, block in enumerate(model.blocks):
        assert "weight" not in dict(block.attn.c_q.named_parameters())
        # `weight` (what QAT, GPTQ and FLOP counts read) is the slice itself, sharing the bank's storage
        assert block.attn.c_q.weight.data_ptr() == bank[i].data_ptr()
        assert block.attn.proj.weight.data_ptr() == bank[layers + i].data_ptr()
        assert isinstance(block.attn.c_q, CastedLinear)


# --- the artifact -------------------------------------------------------------------------------


def test_rebank_undoes_unbank_exactly(demo_data):
    h = build(smoke_config(demo_data, **SMALL, PARALLEL_MUON=1))
    train(h, 2)
    layout: BankLayout = banked(h).layout
    sd = h.run.model.state_dict()
    flat = unbank(sd, layout)
    assert not any(name.startswith("banks.") for name in flat)
    assert all(t.ndim == 2 for name, t in flat.items() if ".attn.c_" in name or ".mlp." in name)
    back = rebank(flat, layout)
    assert list(back) == list(sd)
    assert all(torch.equal(back[name], sd[name]) for name in sd)
    assert list(unbank(back, layout)) == list(flat)


def test_the_artifact_has_the_plain_models_entries_formats_and_bytes(demo_data):
    plain = build(smoke_config(demo_data, **SMALL))
    par = build(smoke_config(demo_data, **SMALL, PARALLEL_MUON=1))
    state, roles = per_layer_state(par), par.techniques.artifact_state(par.run.model.state_dict(), par.run.roles)[1]
    codec = codec_spec("zlib", 9, 0)
    plain_state = plain.run.model.state_dict()
    assert list(state) == list(plain_state) and all(torch.equal(state[k], plain_state[k]) for k in state)
    plain_blob, plain_stats = pack_artifact(plain_state, plain.run.roles, export_policy(plain.cfg, plain.techniques), codec)
    blob, stats = pack_artifact(state, roles, export_policy(par.cfg, par.techniques), codec)
    assert blob == plain_blob and stats.summary() == plain_stats.summary()
    # ... and it loads back into the banked model (rebanked): the model then holds the artifact's weights
    with torch.no_grad():
        for p in par.run.model.parameters():
            p.zero_()
    restored = unpack_artifact(blob).state_dict
    par.run.model.load_state_dict(par.techniques.model_state(restored), strict=True)
    loaded = per_layer_state(par)
    assert all(torch.equal(loaded[k], restored[k]) for k in restored)
    assert any(not torch.equal(restored[k], state[k]) for k in state)  # int8: not the raw weights


# --- QAT reaches the banks ----------------------------------------------------------------------


def test_qat_puts_the_banked_weights_on_the_grid_in_the_forward_pass():
    cfg = resolve("smoke", overrides={"MODEL_DIM": 128, "NUM_LAYERS": 2, "QAT_ENABLED": 1, "PARALLEL_MUON": 1})
    torch.manual_seed(0)
    techniques = TechniqueSet(cfg)
    built = assemble_model(cfg, CPU_CTX, techniques, export_policy(cfg, techniques), log=lambda line: None)
    banks = {n: p for n, p in built.base.named_parameters() if n.startswith("banks.")}
    assert len(banks) == 4
    with torch.no_grad():
        for p in banks.values():
            p.normal_(std=0.05)  # the zero-initialised projections would sit on any grid
    qat = next(t for t in techniques if t.name == "qat")
    assert len(qat.layers) == 12  # every banked linear of both blocks
    master = per_layer = techniques.artifact_state(built.base.state_dict(), built.roles)[0]
    names = [f"blocks.{i}.{n}.weight" for i in range(2)
             for n in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj")]

    def seen() -> list[torch.Tensor]:
        built.base.train()
        x = torch.randint(0, cfg.vocab_size, (2, 32))
        with LinearWeights() as record:
            built.base(x, x)
        return record.weights[: len(names)]  # the tied head comes last

    before = seen()
    assert all(torch.equal(w, master[n]) for w, n in zip(before, names, strict=True))  # QAT not on yet
    qat.before_step(Progress(0, 1.0, 0.0, 0.0), built.run)
    after = seen()
    for w, name in zip(after, names, strict=True):
        layer = qat.layers[name]
        expected = fake_quantize_rows(per_layer[name], layer.bits, layer.grid)
        assert torch.equal(w, expected), name
        assert not torch.equal(w, master[name]), name


# --- every toggle trains with it on -------------------------------------------------------------


def test_parallel_muon_alone_trains_twenty_smoke_steps(demo_data):
    trains(demo_data, {"PARALLEL_MUON": 1}, [ParallelMuon])


def test_parallel_muon_with_every_optimizer_toggle_trains_twenty_smoke_steps(demo_data):
    trains(demo_data, {**ALL_ON, "PARALLEL_MUON": 1}, [ParallelMuon])


# --- two real gloo processes --------------------------------------------------------------------


def run_worker(out: Path, nproc: int, clip: float, parallel: int, reduce: str = "auto") -> list[dict]:
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
         str(TESTS / "parallel_muon_worker.py"), str(out), str(clip), str(parallel), reduce],
        env=env, cwd=TESTS, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(nproc)]


def max_diff(a: dict, b: dict) -> float:
    assert list(a["state"]) == list(b["state"])
    return max((a["state"][k] - b["state"][k]).abs().max().item() for k in a["state"])


@pytest.mark.slow
def test_two_gloo_ranks_shard_the_banks_and_match_one_rank(tmp_path):
    one = run_worker(tmp_path / "one", 1, 0.0, 1)[0]
    scattered = run_worker(tmp_path / "scattered", 2, 0.0, 1, "reduce_scatter")
    sliced = run_worker(tmp_path / "sliced", 2, 0.0, 1)[0]  # auto on gloo
    plain_two = run_worker(tmp_path / "plain_two", 2, 0.0, 0)[0]
    clipped = run_worker(tmp_path / "clipped", 2, 0.5, 1)[0]
    plain_clipped = run_worker(tmp_path / "plain_clipped", 2, 0.5, 0)[0]
    assert one["reduction"] == "none" and scattered[0]["reduction"] == "reduce_scatter"
    assert sliced["reduction"] == "all_reduce" and clipped["reduction"] == "all_reduce"
    # Each rank keeps momentum for its own contiguous slices only: 6 slices -> 3 + 3, 3 -> 2 + 1.
    assert one["momentum"]["banks.attn_64x64.weight"] == (6, 64, 64)
    assert [r["momentum"]["banks.attn_64x64.weight"][0] for r in scattered] == [3, 3]
    assert [r["momentum"]["banks.mlp_128x64.weight"][0] for r in scattered] == [2, 1]
    assert sliced["momentum"] == scattered[0]["momentum"]
    assert max_diff(scattered[0], scattered[1]) == 0.0  # the all-gather gives every rank every update
    # The sharded update is plain Muon's on the same ranks, with either gradient reduction ...
    assert max_diff(scattered[0], plain_two) < 1e-6
    assert max_diff(sliced, plain_two) < 1e-6
    assert max_diff(clipped, plain_clipped) < 1e-6
    # ... and matches one process up to the float rounding of averaging two half-batch gradients
    # (NS5 amplifies it in the weakest directions; a wrong shard is off by orders of magnitude more).
    assert max_diff(scattered[0], one) < 1e-3


@pytest.mark.slow
def test_banked_qat_switch_reaches_the_compiled_graph():
    """The banked forward compiles as one graph, and QAT switched on mid-run snaps the banks in it."""
    import torch._dynamo

    from golf.model import build_model

    torch._dynamo.reset()
    cfg = resolve("smoke", overrides={"MODEL_DIM": 128, "NUM_LAYERS": 1, "QAT_ENABLED": 1, "PARALLEL_MUON": 1,
                                      "LATE_QAT_THRESHOLD": 0.5})
    torch.manual_seed(0)
    techniques = TechniqueSet(cfg)
    built = assemble_model(cfg, CPU_CTX, techniques, export_policy(cfg, techniques), log=lambda line: None)
    with torch.no_grad():
        for name, p in built.base.named_parameters():
            if name.startswith("banks."):
                p.normal_(std=0.05)
    qat = next(t for t in techniques if t.name == "qat")
    model = built.base.train()
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    before = compiled(x, x).detach()
    qat.before_step(Progress(5, 0.4, 0.5, 0.0), built.run)
    with torch._dynamo.config.patch(error_on_recompile=True):
        after = compiled(x, x).detach()
    assert not torch.equal(before, after)
    # eager reference: the model without banks, every QAT weight replaced by its fake-quantized value
    plain_cfg = resolve("smoke", overrides={"MODEL_DIM": 128, "NUM_LAYERS": 1})
    reference = build_model(plain_cfg, CPU_CTX.device).train()
    reference.load_state_dict(techniques.artifact_state(model.state_dict(), built.roles)[0])
    with torch.no_grad():
        for name, layer in qat.layers.items():
            param = reference.get_parameter(name)
            param.copy_(fake_quantize_rows(param, layer.bits, layer.grid))
    torch.testing.assert_close(after, reference(x, x).detach(), rtol=1e-5, atol=1e-5)


# --- settings -----------------------------------------------------------------------------------


def test_settings_are_checked_before_any_compute():
    from golf.config import ConfigError, validate

    def checked(world: int, **overrides) -> list[str]:
        return validate(resolve("smoke", overrides=overrides), world, baseline=resolve("smoke"))

    with pytest.raises(ConfigError, match="PARALLEL_MUON_GRAD_REDUCE=reduce_scatter with GRAD_CLIP_NORM"):
        checked(2, PARALLEL_MUON=1, PARALLEL_MUON_GRAD_REDUCE="reduce_scatter", GRAD_CLIP_NORM=0.3)
    assert checked(2, PARALLEL_MUON=1, PARALLEL_MUON_GRAD_REDUCE="reduce_scatter") == []
    assert any("has no effect on one rank" in w for w in checked(1, PARALLEL_MUON=1, PARALLEL_MUON_GRAD_REDUCE="all_reduce"))
    assert any("PARALLEL_MUON_GRAD_REDUCE=all_reduce has no effect while PARALLEL_MUON=0" in w
               for w in checked(2, PARALLEL_MUON_GRAD_REDUCE="all_reduce"))
    from golf.techniques.parallel_muon import grad_reduce_mode

    cfg = resolve("smoke", overrides={"PARALLEL_MUON": 1})
    assert [grad_reduce_mode(cfg, 2, b) for b in ("nccl", "gloo")] == ["reduce_scatter", "all_reduce"]
    assert grad_reduce_mode(resolve("smoke", overrides={"PARALLEL_MUON": 1, "GRAD_CLIP_NORM": 0.3}), 2, "nccl") == "all_reduce"
    assert grad_reduce_mode(cfg, 1, "nccl") == "none"
