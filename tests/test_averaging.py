"""The weight-averaging family on the technique seam (techniques.md 6.1-6.4): LAWA, EMA, SWA and
the choice among raw and averaged weights, driven through the hooks the training loop calls."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from golf.config import ConfigError, GolfConfig, resolve, validate
from golf.distributed import DistContext
from golf.evaluate import EvalResult
from golf.techniques import Candidates, Progress, TechniqueSet, TrainingRun
from golf.techniques.ema import Ema
from golf.techniques.lawa import Lawa
from golf.techniques.swa import Swa
from golf.techniques.weight_choice import WeightChoice

CPU_CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


class Tiny(nn.Module):
    """An fp32 matrix, a bf16 vector (like a bf16 tok_emb) and a float buffer that training changes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 3)
        self.vec = nn.Parameter(torch.randn(5).to(torch.bfloat16))
        self.register_buffer("seen", torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(self.lin(x)) * self.vec.float()[:3]).sum()  # bounded gradients: weights stay O(1)


def _run(cfg: GolfConfig, model: nn.Module) -> tuple[TrainingRun, list[str]]:
    lines: list[str] = []
    return TrainingRun(cfg=cfg, ctx=CPU_CTX, log=lines.append, model=model), lines


def _train_step(model: Tiny, opt: torch.optim.Optimizer) -> None:
    """A real optimizer step, so the weights move and get gradients (the averages must not)."""
    opt.zero_grad()
    model(torch.randn(2, 4)).backward()
    opt.step()
    with torch.no_grad():
        model.seen.add_(1.0)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _never_score(state):  # the selection flag off must not look at the validation set
    raise AssertionError("a candidate was evaluated with AVG_SELECT_BY_VAL=0")


def _drive(cfg: GolfConfig, scales: list[float], *, scorer=lambda model: _never_score) -> tuple[
    Tiny, list[dict], list[str], TechniqueSet, Candidates
]:
    """Train ``len(scales)`` steps through every active technique's hooks; returns the model after
    end_of_training, the state after each step (index 0 = the start), the log, the set, the
    candidates. ``scorer(model)`` gives the candidates' validation score."""
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    techniques = TechniqueSet(cfg)
    run, lines = _run(cfg, model)
    techniques.on_train_start(run)
    states = [_state(model)]
    for step, scale in enumerate(scales):
        techniques.before_step(Progress(step, scale, step / len(scales), 0.0), run)
        _train_step(model, opt)
        states.append(_state(model))
        techniques.after_step(Progress(step + 1, scale, (step + 1) / len(scales), 0.0), run)
    candidates = Candidates(model, scorer(model))
    techniques.end_of_training(run, candidates)
    return model, states, lines, techniques, candidates


def _report(techniques: TechniqueSet, name: str) -> dict:
    return techniques.report()[name]


def _warmdown(steps: int, warmdown: int) -> list[float]:
    """The LR scale of each step under a linear warmdown over the last ``warmdown`` steps."""
    return [1.0 if s < steps - warmdown else (steps - s) / warmdown for s in range(steps)]


# --- EMA (6.3) ----------------------------------------------------------------------------------
def test_ema_equals_the_closed_form_over_a_real_trajectory():
    d, steps = 0.9, 12
    cfg = resolve("baseline", overrides={"EMA_ENABLED": 1, "EMA_DECAY": d, "AVG_USE": "raw"})
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = Ema(cfg)
    run, _ = _run(cfg, model)
    ema.on_train_start(run)
    theta = [_state(model)]
    for t in range(1, steps + 1):
        _train_step(model, opt)
        theta.append(_state(model))
        ema.after_step(Progress(t, 1.0, t / steps, 0.0), run)
    assert set(ema.shadow) == {"lin.weight", "lin.bias", "vec", "seen"}  # the full state_dict's floats
    for name, shadow in ema.shadow.items():
        # ema_T = d^T θ_0 + (1-d) Σ_{t=1..T} d^(T-t) θ_t, in float64
        expected = d**steps * theta[0][name].double() + (1 - d) * sum(
            d ** (steps - t) * theta[t][name].double() for t in range(1, steps + 1)
        )
        assert shadow.dtype == torch.float32 and not shadow.requires_grad and shadow.grad is None
        torch.testing.assert_close(shadow.double(), expected, rtol=0, atol=1e-5)
    # the live weights moved away from the average: the comparison above could fail
    assert not torch.allclose(ema.shadow["lin.weight"], model.lin.weight.detach(), atol=1e-3)
    assert run.shared["ema"] is ema.shadow  # what SWA over EMA reads


def test_ema_offers_its_shadow_in_the_model_dtypes_and_weight_choice_loads_it():
    cfg = resolve("baseline", overrides={"USE_EMA": 1, "EMA_DECAY": 0.8})
    model, states, lines, techniques, candidates = _drive(cfg, [1.0] * 6)
    offered = candidates.offered["ema"]
    assert offered["vec"].dtype == torch.bfloat16 and offered["lin.weight"].dtype == torch.float32
    assert all(t.device.type == "cpu" for t in offered.values())
    shadow = techniques.active[0].shadow
    assert torch.equal(model.vec.detach(), shadow["vec"].to(torch.bfloat16))
    torch.testing.assert_close(model.lin.weight.detach(), shadow["lin.weight"])
    assert not torch.equal(model.lin.weight.detach(), states[-1]["lin.weight"])
    assert candidates.chosen == "ema" and "ema:applying EMA weights (decay=0.8, updates=6)" in lines
    report = _report(techniques, "ema")
    assert report["updates"] == 6 and report["first_update_step"] == 1 and report["last_update_step"] == 6
    assert report["shadow_dtype"] == "float32" and report["decay"] == 0.8


# --- SWA (6.2) ----------------------------------------------------------------------------------
def test_swa_averages_exactly_the_snapshots_at_the_triggering_steps_and_keeps_dtypes():
    scales = _warmdown(40, 20)
    cfg = resolve("baseline", overrides={"SWA_ENABLED": 1, "SWA_THRESHOLD": 0.6, "SWA_EVERY": 3})
    model, states, lines, techniques, candidates = _drive(cfg, scales)
    # after step s (1-based count of completed steps), the step just taken ran at scales[s-1]
    triggering = [s for s in range(1, 41) if scales[s - 1] < 0.6 and s % 3 == 0]
    assert triggering == [30, 33, 36, 39]
    offered = candidates.offered["swa"]
    for name, tensor in states[0].items():
        mean = torch.stack([states[s][name].float() for s in triggering]).mean(0)
        assert offered[name].dtype == tensor.dtype  # bf16 stays bf16
        torch.testing.assert_close(offered[name], mean.to(tensor.dtype), rtol=0, atol=1e-6)
        torch.testing.assert_close(model.state_dict()[name], mean.to(tensor.dtype), rtol=0, atol=1e-6)
    # a one-step shift of the trigger would average other weights: the check above can fail
    shifted = torch.stack([states[s + 1]["lin.weight"] for s in triggering]).mean(0)
    assert not torch.allclose(shifted, offered["lin.weight"], atol=1e-4)
    assert "swa:applying averaged 4 checkpoints" in lines and candidates.chosen == "swa"
    assert any(line.startswith("swa:start step:30 ") for line in lines)
    report = _report(techniques, "swa")
    assert report["snapshot_steps"] == triggering and report["snapshots"] == 4 and report["source"] == "raw"


def test_swa_over_ema_averages_the_ema_shadow_at_the_triggering_steps():
    scales = _warmdown(20, 10)
    d = 0.5
    cfg = resolve("baseline", overrides={"SWA_ENABLED": 1, "SWA_SOURCE": "ema", "SWA_START_FRAC": 0.5,
                                         "SWA_EVERY": 2, "EMA_ENABLED": 1, "EMA_DECAY": d, "AVG_USE": "swa"})
    model, states, lines, techniques, candidates = _drive(cfg, scales)
    ema = {k: v.double() for k, v in states[0].items()}
    shadows = {}
    for s in range(1, 21):
        ema = {k: d * v + (1 - d) * states[s][k].double() for k, v in ema.items()}
        shadows[s] = ema
    triggering = [s for s in range(1, 21) if scales[s - 1] < 0.5 and s % 2 == 0]
    for name in ("lin.weight", "vec"):
        mean = torch.stack([shadows[s][name] for s in triggering]).mean(0)
        torch.testing.assert_close(candidates.offered["swa"][name].double(), mean.to(states[0][name].dtype).double(),
                                   rtol=0, atol=1e-5)
    assert candidates.chosen == "swa"
    torch.testing.assert_close(model.lin.weight.detach().double(), torch.stack(
        [shadows[s]["lin.weight"] for s in triggering]).mean(0), rtol=0, atol=1e-5)


def test_swa_that_never_triggers_offers_nothing_and_keeps_the_weights():
    cfg = resolve("baseline", overrides={"SWA_ENABLED": 1, "SWA_EVERY": 2})
    model, states, lines, techniques, candidates = _drive(cfg, [1.0] * 8)  # no warmdown: scale stays 1
    assert candidates.offered == {} and candidates.chosen is None
    assert torch.equal(model.lin.weight.detach(), states[-1]["lin.weight"])
    assert any(line.startswith("swa:no snapshot was taken") for line in lines)


# --- LAWA (6.1) ---------------------------------------------------------------------------------
def test_lawa_final_weights_equal_the_mean_of_the_snapshots_at_the_due_steps():
    cfg = resolve("baseline", overrides={"LAWA_ENABLED": 1, "LAWA_INTERVAL": 4, "LAWA_START_FRAC": 0.5,
                                         "MAX_WALLCLOCK_SECONDS": 0})
    model, states, lines, techniques, candidates = _drive(cfg, [1.0] * 40)
    due = [s for s in range(1, 41) if s % 4 == 0 and s / 40 >= 0.5]
    assert due[0] == 20  # exactly at the start fraction: the trigger is >=
    assert _report(techniques, "lawa")["snapshot_steps"] == due and _report(techniques, "lawa")["snapshots"] == 6
    for name in ("lin.weight", "lin.bias", "vec"):
        mean = torch.stack([states[s][name].float() for s in due]).mean(0).to(states[0][name].dtype)
        torch.testing.assert_close(model.state_dict()[name], mean, rtol=0, atol=1e-6)
        assert model.state_dict()[name].dtype == states[0][name].dtype
    # buffers are not averaged: they keep the value training ended with
    assert torch.equal(model.seen, states[-1]["seen"])
    assert "lawa:applying average of 6 checkpoints" in lines and candidates.chosen == "lawa"


def test_lawa_k_keeps_only_the_last_k_snapshots():
    cfg = resolve("baseline", overrides={"LAWA_ENABLED": 1, "LAWA_K": 2, "LAWA_FREQ": 2, "LAWA_START_FRAC": 0.0})
    model, states, lines, techniques, candidates = _drive(cfg, [1.0] * 8)
    report = _report(techniques, "lawa")
    assert report["snapshot_steps"] == [2, 4, 6, 8] and report["averaged_steps"] == [6, 8] and report["snapshots"] == 2
    torch.testing.assert_close(model.lin.weight.detach(), (states[6]["lin.weight"] + states[8]["lin.weight"]) / 2)
    assert "lawa:applying average of 2 checkpoints" in lines


def test_lawa_with_no_snapshot_leaves_the_weights():
    cfg = resolve("baseline", overrides={"LAWA_ENABLED": 1, "LAWA_INTERVAL": 100, "ITERATIONS": 100})
    model, states, lines, techniques, candidates = _drive(cfg, [1.0] * 5)
    assert candidates.offered == {} and candidates.chosen is None
    assert torch.equal(model.lin.weight.detach(), states[-1]["lin.weight"])
    assert "lawa:no snapshot was taken (start_frac=0.8, interval=100, steps=5); keeping the final weights" in lines
    assert not any("applying" in line for line in lines)


# --- choosing the final weights (6.4) -----------------------------------------------------------
ALL_AVERAGING = {"LAWA_ENABLED": 1, "LAWA_INTERVAL": 2, "LAWA_START_FRAC": 0.5, "MAX_WALLCLOCK_SECONDS": 0,
                 "EMA_ENABLED": 1, "EMA_DECAY": 0.9, "SWA_ENABLED": 1, "SWA_EVERY": 2, "SWA_START_FRAC": 0.6}


@pytest.mark.parametrize("use, loaded", [("auto", "swa"), ("swa", "swa"), ("ema", "ema"), ("lawa", "lawa"), ("raw", None)])
def test_without_the_selection_flag_the_rule_picks_and_no_candidate_is_evaluated(use, loaded):
    calls = []

    def score(state):
        calls.append(state)
        raise AssertionError("evaluated a candidate with AVG_SELECT_BY_VAL=0")

    cfg = resolve("baseline", overrides={**ALL_AVERAGING, "AVG_USE": use})
    model, states, lines, techniques, candidates = _drive(cfg, _warmdown(10, 6), scorer=lambda model: score)
    assert calls == [] and candidates.scores == {}
    assert list(candidates.offered) == ["lawa", "ema", "swa"]  # registry order
    expected = states[-1] if loaded is None else candidates.offered[loaded]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
    assert candidates.chosen == loaded
    assert not any("VALIDATION" in line for line in lines)
    assert _report(techniques, "weight_choice") == {
        "enabled": True, "use": use, "select_by_val": False, "offered": ["lawa", "ema", "swa"], "chosen": loaded or "raw",
    }


def _score_by_distance(target: torch.Tensor, seen: list[str]):
    """A validation score that is lower the closer lin.weight is to ``target``; like the training
    loop's, it loads the candidate into the model before evaluating."""
    def scorer(model: nn.Module):
        def score(state):
            model.load_state_dict(state)
            seen.append("scored")
            bpb = float((model.lin.weight.detach() - target).abs().sum())
            return EvalResult(val_loss=bpb * 0.7, val_bpb=bpb, tokens=10, bytes=20, seconds=0.001)
        return score
    return scorer


@pytest.mark.parametrize("winner", ["raw", "lawa", "ema", "swa"])
def test_with_the_selection_flag_every_candidate_is_scored_and_the_lowest_kept(winner):
    cfg = resolve("baseline", overrides={**ALL_AVERAGING, "AVG_SELECT_BY_VAL": 1})
    # A first run without scoring shows each candidate's weights; the same run again (same seed)
    # with a score that makes ``winner`` the closest must end with ``winner``'s weights.
    _, states, _, _, reference = _drive(cfg.replace(avg_select_by_val=False, avg_use="raw"), _warmdown(10, 6))
    options = {"raw": states[-1], **reference.offered}
    seen: list[str] = []
    model, _, lines, techniques, candidates = _drive(
        cfg, _warmdown(10, 6), scorer=_score_by_distance(options[winner]["lin.weight"], seen)
    )
    assert len(seen) == 4 and set(candidates.scores) == {"raw", "lawa", "ema", "swa"}
    assert candidates.chosen == winner
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, options[winner][name], rtol=0, atol=0)
    assert any("VALIDATION set" in line for line in lines)
    for name in ("raw", "lawa", "ema", "swa"):
        assert any(line.startswith(f"avg_select_by_val:{name} val_loss:") and "val_bpb:" in line for line in lines)
    assert any(line.startswith(f"Using {winner} weights (val_bpb=") for line in lines)
    report = _report(techniques, "weight_choice")
    assert report["chosen"] == winner and report["select_by_val"] is True
    assert set(report["val_scores"]) == {"raw", "lawa", "ema", "swa"}
    assert report["val_scores"][winner]["val_bpb"] == min(s["val_bpb"] for s in report["val_scores"].values())


def test_selection_flag_with_nothing_offered_evaluates_nothing():
    cfg = resolve("baseline", overrides={"SWA_ENABLED": 1, "AVG_SELECT_BY_VAL": 1})
    model, states, lines, techniques, candidates = _drive(cfg, [1.0] * 4)  # SWA never triggers
    assert candidates.scores == {} and candidates.chosen is None
    assert torch.equal(model.lin.weight.detach(), states[-1]["lin.weight"])


# --- config: sections, aliases, inert settings are warnings, impossible ones errors --------------
def test_aliases_and_defaults():
    cfg = resolve("baseline", overrides={"USE_EMA": 1, "SWA_THRESHOLD": 0.2, "LAWA_FREQ": 50, "SWA_EVERY": 50})
    assert cfg.ema_enabled and cfg.swa_start_frac == 0.2 and cfg.lawa_interval == 50 and cfg.swa_every == 50
    base = resolve("baseline")
    assert (base.ema_decay, base.swa_start_frac, base.swa_every, base.swa_source) == (0.997, 0.35, 25, "raw")
    assert (base.lawa_start_frac, base.lawa_interval, base.lawa_k) == (0.8, 200, 0)
    assert (base.avg_use, base.avg_select_by_val) == ("auto", False)
    assert resolve("baseline", environ={"EMA_ENABLED": "1", "AVG_SELECT_BY_VAL": "1"}).avg_select_by_val


@pytest.mark.parametrize("overrides, expected", [
    ({"LAWA_INTERVAL": 50}, "LAWA_INTERVAL=50 has no effect while LAWA_ENABLED=0"),
    ({"LAWA_K": 5, "LAWA_START_FRAC": 0.5}, "LAWA_K=5 has no effect while LAWA_ENABLED=0"),
    ({"EMA_DECAY": 0.99}, "EMA_DECAY=0.99 has no effect while EMA_ENABLED=0"),
    ({"SWA_EVERY": 50}, "SWA_EVERY=50 has no effect while SWA_ENABLED=0"),
    ({"SWA_SOURCE": "ema"}, "SWA_SOURCE=ema has no effect while SWA_ENABLED=0"),
    ({"AVG_SELECT_BY_VAL": 1}, "AVG_SELECT_BY_VAL=1 has nothing to choose while no weight averaging is on"),
    ({"AVG_USE": "raw"}, "AVG_USE=raw has no effect while no weight averaging is on"),
    ({"AVG_SELECT_BY_VAL": 1, "EMA_ENABLED": 1, "AVG_USE": "ema"}, "AVG_USE=ema has no effect with AVG_SELECT_BY_VAL=1"),
])
def test_inert_settings_are_warnings_not_errors(overrides, expected):
    warnings = validate(resolve("baseline", overrides=overrides))
    assert any(w.startswith(expected) for w in warnings), warnings


def test_settings_that_take_effect_give_no_warning():
    on = resolve("baseline", overrides={**ALL_AVERAGING, "AVG_USE": "ema", "SWA_SOURCE": "ema"})
    assert validate(on) == []


@pytest.mark.parametrize("overrides, expected", [
    ({"SWA_ENABLED": 1, "SWA_SOURCE": "ema"}, "SWA_SOURCE=ema averages the EMA weights but EMA_ENABLED=0: set EMA_ENABLED=1"),
    ({"AVG_USE": "swa"}, "AVG_USE=swa but SWA_ENABLED=0, so there is no swa average: set SWA_ENABLED=1 or AVG_USE=auto"),
    ({"AVG_USE": "lawa", "EMA_ENABLED": 1}, "AVG_USE=lawa but LAWA_ENABLED=0"),
    ({"LAWA_ENABLED": 1, "LAWA_INTERVAL": 500, "ITERATIONS": 100}, "LAWA_INTERVAL=500 is longer than ITERATIONS=100"),
    ({"SWA_ENABLED": 1, "SWA_EVERY": 500, "ITERATIONS": 100}, "SWA_EVERY=500 is longer than ITERATIONS=100"),
    ({"EMA_ENABLED": 1, "EMA_DECAY": 1.0}, "EMA_DECAY=1.0 never moves the average"),
])
def test_combinations_that_cannot_act_are_errors(overrides, expected):
    with pytest.raises(ConfigError) as err:
        validate(resolve("baseline", overrides=overrides))
    assert expected in str(err.value)


def test_the_registry_runs_the_averages_before_the_choice():
    from golf.techniques import TECHNIQUES

    order = [t for t in TECHNIQUES if t in (Lawa, Ema, Swa, WeightChoice)]
    assert order == [Lawa, Ema, Swa, WeightChoice]  # auto prefers the later: SWA over EMA over LAWA
