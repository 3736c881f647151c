"""Sequential seeds: the rule on values whose decision is known, its honesty over random draws,
the Tune searcher round by round (called directly, no Ray), its saved state, the sweep's checks,
and one real smoke-scale sweep end to end.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from sweeps.sequential import (BETTER, FAILED, NOT_BETTER, PRIOR_SEED_SD_BPB, UNDECIDED,
                               Sequential, decide, full_grid_better, measure_seed_sd, replay)
from sweeps.sequential_search import DECISIONS_FILE, SequentialSearcher, read_decisions
from sweeps.spec import Asha, SpecError, Sweep, plan_sweep
from sweeps.stats import compare

FAKE_SCRIPT = Path(__file__).resolve().parent / "data" / "sweeps" / "fake_train_gpt.py"
POOL = (1337, 42, 2024, 7, 99)
BASE = [1.1000, 1.1012, 1.0991, 1.1005, 1.0996]  # a baseline's per-seed val_bpb, sd ~0.0008


def test_a_clear_win_stops_after_the_minimum_seeds():
    rule = Sequential(seeds=POOL, min_seeds=3)
    win = [v - 0.010 + e for v, e in zip(BASE, (1e-5, -1e-5, 2e-5, 0, 1e-5))]
    decisions, baseline_seeds = replay(rule, {"win": win}, BASE)
    assert decisions["win"].state == BETTER
    assert decisions["win"].seeds == POOL[:3]
    assert baseline_seeds == 3  # nothing ran on after the last config was decided
    assert "paired t-test" in decisions["win"].reason


def test_a_clear_loss_stops_after_one_seed():
    rule = Sequential(seeds=POOL)
    decisions, baseline_seeds = replay(rule, {"loss": [v + 0.02 for v in BASE]}, BASE)
    assert decisions["loss"].state == NOT_BETTER
    assert decisions["loss"].seeds == POOL[:1]
    assert baseline_seeds == 1
    assert "standard errors" in decisions["loss"].reason


def test_a_close_call_uses_the_maximum():
    rule = Sequential(seeds=POOL)
    # Better on 4 seeds, too unevenly for p < its share, yet a 5th could still win: all 5 run.
    close = [v + e for v, e in zip(BASE, (-0.0004, -0.0002, -0.0006, -0.0003, +0.0005))]
    decisions, baseline_seeds = replay(rule, {"close": close}, BASE)
    assert decisions["close"].state == NOT_BETTER
    assert decisions["close"].seeds == POOL
    assert baseline_seeds == len(POOL)
    assert "at the maximum 5 seeds" in decisions["close"].reason


def test_undecided_in_between_and_the_alpha_shares_sum_to_alpha():
    rule = Sequential(seeds=POOL, min_seeds=2)
    state = decide(rule, {1337: 1.0995}, {1337: 1.1000})
    assert state.state == UNDECIDED and not state.final
    for split in ("obrien-fleming", "equal"):
        shared = Sequential(seeds=POOL, min_seeds=2, split=split)
        shares = [shared.alpha_at(k) for k in range(1, len(POOL) + 1)]
        assert shares[0] == 0.0 and all(s > 0 for s in shares[1:])
        assert sum(shares) == pytest.approx(shared.alpha)


@pytest.mark.parametrize("test", ["paired", "welch"])
def test_never_claims_what_the_full_grid_test_would_not(test):
    """Random draws, half with no difference at all and half with effects of every size.

    Every "better" claim must be significant by the same test at the sweep's alpha on the seeds it
    ran (and on all seeds when it ran them all), and under no difference the claims may not
    exceed alpha (the full grid's own false-positive bound), up to Monte Carlo error.
    """
    rng = np.random.default_rng(20261203)
    rule = Sequential(seeds=POOL, min_seeds=2, test=test, alpha=0.05)
    draws, null_claims, null_draws, curtailed = 1500, 0, 0, 0
    for index in range(draws):
        shared_noise = rng.normal(0, 0.0007, len(POOL))  # a seed moves both configs alike
        effect = 0.0 if index % 2 == 0 else rng.choice([-0.004, -0.002, -0.001, 0.001, 0.003])
        base = 1.1 + shared_noise + rng.normal(0, 0.0004, len(POOL))
        config = 1.1 + effect + shared_noise + rng.normal(0, 0.0004, len(POOL))
        decisions, _ = replay(rule, {"c": list(config)}, list(base))
        decision = decisions["c"]
        if decision.state == BETTER:
            k = len(decision.seeds)
            seen = compare(list(config[:k]), list(base[:k]), test=test, metric="bpb", margin=0.0,
                           alpha=rule.alpha)
            assert seen.significant and seen.p_value < rule.alpha_at(k)
            if k == len(POOL):
                assert full_grid_better(rule, list(config), list(base))
        if "no values of its other" in decision.reason:  # curtailed: it could never win
            curtailed += 1
            assert not full_grid_better(rule, list(config), list(base))
        if effect == 0.0:
            null_draws += 1
            null_claims += decision.state == BETTER
    # The count of false claims is binomial with rate <= alpha; 0.999 quantile as the bar.
    assert null_claims <= scipy.stats.binom.ppf(0.999, null_draws, rule.alpha)
    assert curtailed > 0


@pytest.mark.parametrize("test", ["paired", "welch"])
def test_curtailment_stops_a_config_that_can_no_longer_win(test):
    """With 3 seeds, a first seed on which the config is worse leaves the paired t-test at most
    t = -2 (the other two differences equal and very negative), short of t(0.99, 2 df) = 6.96;
    Welch's t then stays under sqrt(2) * 2, short of its smallest bar t(0.99, 4 df) = 3.75."""
    rule = Sequential(seeds=(1, 2, 3), prior_sd=0.01, test=test)  # a wide prior: z-rule waits
    decision = decide(rule, {1: 1.1001}, {1: 1.1000})
    assert decision.state == NOT_BETTER and "no values of its other 2 seed(s)" in decision.reason
    assert decide(rule, {1: 1.0999}, {1: 1.1000}).state == UNDECIDED  # a better first seed waits
    five = Sequential(seeds=POOL, prior_sd=0.01, test=test)  # 4 seeds to come can still win
    assert decide(five, {1337: 1.1001}, {1337: 1.1000}).state == UNDECIDED


def test_the_prior_sd_is_the_fixtures_pooled_spread(shared_fixtures):
    from sweeps.submissions import SubmissionError, load_submission

    per_seed = []
    for path in sorted((shared_fixtures / "submissions").glob("*.json")):
        try:
            per_seed.append(load_submission(path).per_seed_values("bpb"))
        except SubmissionError:
            continue
    assert round(measure_seed_sd(per_seed), 5) == PRIOR_SEED_SD_BPB


# ------------------------------------------------------------------------- the searcher
LABELS = ("base", "loss", "win", "close")
VARIANTS = ({"LR": "0.1"}, {"LR": "9"}, {"LR": "0.2"}, {"LR": "0.11"})
VALUES = {
    "base": {1: 1.1000, 2: 1.1012, 3: 1.0991},
    "loss": {1: 1.1300, 2: 1.1310, 3: 1.1290},
    "win": {1: 1.0500, 2: 1.0512, 3: 1.0491},
    "close": {1: 1.0995, 2: 1.10071, 3: 1.0994},  # -0.0005, -0.00049, +0.0003
}


def _searcher(tmp_path: Path | None = None) -> SequentialSearcher:
    rule = Sequential(seeds=(1, 2, 3), min_seeds=2)
    return SequentialSearcher(rule, LABELS, VARIANTS, "base",
                              None if tmp_path is None else str(tmp_path))


def _label(config: dict) -> str:
    return LABELS[VARIANTS.index(config["params"])]


def _round(searcher: SequentialSearcher, start: int) -> list[tuple[str, str, int]]:
    """Take every suggestion of a round: (trial id, label, seed), until the searcher waits."""
    out = []
    while True:
        trial_id = f"t{start + len(out)}"
        config = searcher.suggest(trial_id)
        if config is None or config == SequentialSearcher.FINISHED:
            return out
        out.append((trial_id, _label(config), config["seed"]))


def _finish(searcher: SequentialSearcher, trials: list[tuple[str, str, int]]) -> None:
    for trial_id, label, seed in trials:
        searcher.on_trial_complete(trial_id, {"val_bpb": VALUES[label][seed], "phase": "final"})


def test_the_searcher_runs_rounds_and_finishes(tmp_path):
    searcher = _searcher(tmp_path)
    first = _round(searcher, 0)
    assert [(label, seed) for _, label, seed in first] == [
        ("base", 1), ("loss", 1), ("win", 1), ("close", 1)]
    assert searcher.suggest("waiting") is None  # the round's trials have not ended
    _finish(searcher, first)

    second = _round(searcher, 10)  # the loss stopped after its first seed
    assert [(label, seed) for _, label, seed in second] == [("base", 2), ("win", 2), ("close", 2)]
    _finish(searcher, second)
    third = _round(searcher, 20)  # the win was decided on 2 seeds
    assert [(label, seed) for _, label, seed in third] == [("base", 3), ("close", 3)]
    _finish(searcher, third)
    assert searcher.suggest("t30") == SequentialSearcher.FINISHED

    record = read_decisions(str(tmp_path))
    assert record is not None and record["finished"]
    states = {label: (entry["state"], entry["seeds_run"])
              for label, entry in record["configs"].items()}
    assert states == {"base": ("baseline", [1, 2, 3]), "loss": (NOT_BETTER, [1]),
                      "win": (BETTER, [1, 2]), "close": (NOT_BETTER, [1, 2, 3])}
    assert "O'Brien-Fleming" in record["rule"]
    json.loads((tmp_path / DECISIONS_FILE).read_text())  # one whole JSON document


def test_a_failed_trial_stops_its_config_with_the_cause():
    searcher = _searcher()
    first = _round(searcher, 0)
    for trial_id, label, seed in first:
        if label == "close":
            searcher.on_trial_result(trial_id, {"val_bpb": None, "phase": "failed",
                                                "failure_cause": "golf exited 2: bad shard"})
            searcher.on_trial_complete(trial_id, None, error=True)
        else:
            searcher.on_trial_complete(trial_id, {"val_bpb": VALUES[label][seed],
                                                  "phase": "final"})
    second = _round(searcher, 10)
    assert ("close", 2) not in [(label, seed) for _, label, seed in second]
    decision = searcher.decisions["close"]
    assert decision.state == FAILED and decision.reason == "seed 1 failed: golf exited 2: bad shard"


def test_a_failed_baseline_seed_stops_the_configs_that_needed_it():
    searcher = _searcher()
    first = _round(searcher, 0)
    for trial_id, label, seed in first:
        if label == "base":
            searcher.on_trial_complete(trial_id, None, error=True)
        else:
            searcher.on_trial_complete(trial_id, {"val_bpb": VALUES[label][seed],
                                                  "phase": "final"})
    assert searcher.suggest("t9") == SequentialSearcher.FINISHED
    assert all(searcher.decisions[label].state == FAILED for label in ("loss", "win", "close"))
    assert searcher.decisions["win"].reason.startswith("the baseline's seed 1 failed")


def test_save_and_restore_continue_the_same_rounds(tmp_path):
    original = _searcher()
    _finish(original, _round(original, 0))
    second = _round(original, 10)
    _finish(original, second[:1])  # one trial of round 2 ended, two still run
    original.save(str(tmp_path / "searcher.pkl"))

    restored = _searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    for searcher in (original, restored):
        assert searcher.suggest("waiting") is None
        _finish(searcher, second[1:])
    assert _round(restored, 20) == _round(original, 20)
    assert restored.get_state() == original.get_state()


# ------------------------------------------------------------------------- the sweep
def _sweep(**fields) -> Sweep:
    defaults = dict(name="seq", script=str(FAKE_SCRIPT), uses_data=False,
                    grid={"LR": [0.1, 0.2]}, baseline={"LR": 0.1}, seeds=Sequential(seeds=POOL))
    return Sweep(**{**defaults, **fields})


def test_a_sequential_plan_is_picklable_and_its_fingerprint_holds_the_rule():
    plan = plan_sweep(_sweep())
    assert plan.sequential == Sequential(seeds=POOL) and plan.seeds == POOL
    assert pickle.loads(pickle.dumps(plan)) == plan
    stricter = plan_sweep(_sweep(seeds=Sequential(seeds=POOL, alpha=0.001)))
    assert stricter.fingerprint() != plan.fingerprint()
    assert plan.describe()["sequential"]["alpha"] == 0.01


def test_seeds_on_the_command_line_force_a_plain_list():
    plan = plan_sweep(_sweep(), seeds=(1, 2))
    assert plan.sequential is None and plan.seeds == (1, 2)
    assert plan.fingerprint() == plan_sweep(_sweep(seeds=[1, 2])).fingerprint()


@pytest.mark.parametrize("fields, fix", [
    (dict(seeds=Sequential(seeds=POOL, min_seeds=1)), "min_seeds=2"),
    (dict(seeds=Sequential(seeds=POOL, test="anova")), "use 'paired'"),
    (dict(seeds=Sequential(seeds=POOL, alpha=0.7)), "between 0 and 0.5"),
    (dict(seeds=Sequential(seeds=POOL, prior_sd=-1.0)), "positive number"),
    (dict(seeds=Sequential(seeds=(1, 1, 2))), "list each once"),
    (dict(seeds=Sequential(seeds=POOL, split="pocock")), "'obrien-fleming'"),
    (dict(baseline=None), "baseline={...}"),
    (dict(scheduler=Asha(grace_steps=2, max_steps=10)), "drop scheduler=Asha"),
])
def test_a_bad_sequential_names_the_fix(fields, fix):
    with pytest.raises(SpecError) as caught:
        plan_sweep(_sweep(**fields))
    assert fix in str(caught.value)


def test_the_plan_states_the_rule():
    from sweeps.report import format_plan

    text = format_plan(plan_sweep(_sweep()), "/tmp/x")
    assert "up to 5 seed(s) = at most 10 trials" in text
    assert "rule:      sequential seeds: up to 5 seeds per config" in text


@pytest.mark.slow
def test_a_real_sequential_sweep_shows_seeds_and_stop_reasons(tmp_path, monkeypatch):
    """Smoke-scale golf against a frozen baseline (every LR 0): a config whose only change has no
    effect on training ties it, and with 2 seeds one tied pair can never become significant, so
    it stops after 1 seed; a config that trains is better on seed 1 and runs its 2nd seed."""
    import io

    import ray

    from sweeps.experiment import RunOptions, run_sweep

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    frozen = {"MATRIX_LR": 0.0, "SCALAR_LR": 0.0, "TIED_EMBED_LR": 0.0}
    sweep = Sweep(name="seq_smoke", preset="smoke",
                  fixed={"ITERATIONS": 4, "VAL_MAX_TOKENS": 8192},
                  configs=[{**frozen, "EVAL_BUDGET_SECONDS": 600},
                           {**frozen, "EVAL_BUDGET_SECONDS": 599}, {"MATRIX_LR": 0.04}],
                  seeds=Sequential(seeds=(1337, 42)),
                  baseline={**frozen, "EVAL_BUDGET_SECONDS": 600},
                  cpus_per_trial=0.5)  # round 1's three trials at once: one wave, not two
    ray.init(num_cpus=2, include_dashboard=False)
    out = io.StringIO()
    try:
        outcome = run_sweep(sweep, RunOptions(storage=str(tmp_path), max_concurrent=3), out=out)
    finally:
        ray.shutdown()
    text = out.getvalue()
    base = "MATRIX_LR=0.0,SCALAR_LR=0.0,TIED_EMBED_LR=0.0,EVAL_BUDGET_SECONDS=600.0"
    twin, trains = base.replace("600.0", "599.0"), "MATRIX_LR=0.04"
    assert len(outcome.table) == 5 and outcome.all_finished, text  # 3 + 2 trials, not 6
    summary = outcome.summary.set_index("label")
    assert summary.loc[twin, "seeds_run"] == 1 and summary.loc[twin, "decision"] == NOT_BETTER
    assert summary.loc[trains, "seeds_run"] == 2
    assert summary.loc[trains, "decision"] in (BETTER, NOT_BETTER)
    assert summary.loc[base, "seeds_run"] == 2 and summary.loc[base, "decision"] == "baseline"
    assert f"  {twin}: 1 seed(s) (1337): not better after 1 seed(s)" in text
    assert "no values of its other 1 seed(s) could make the paired t-test" in text
    assert (f"  {trains}: 2 seed(s) (1337, 42): better after 2 seeds" in text
            or f"  {trains}: 2 seed(s) (1337, 42): not better at the maximum 2 seeds" in text)
    assert "sequential seeds: up to 2 seeds per config" in text
    record = json.loads((Path(outcome.experiment_dir) / DECISIONS_FILE).read_text())
    assert record["finished"] and record["configs"][twin]["seeds_run"] == [1337]


RESUME_DRIVER = """\
import sys
from sweeps import RunOptions, Sequential, Sweep, run_sweep
sweep = Sweep(name="resumed", script=sys.argv[1], uses_data=False, max_failures=0,
              configs=[{"LR": 0.5}, {"LR": 0.1}, {"LR": 2.0}], baseline={"LR": 0.5},
              seeds=Sequential(seeds=(1, 2, 3)),
              fixed={"ITERATIONS": 6, "STEP_SECONDS": 0.4})
outcome = run_sweep(sweep, RunOptions(storage=sys.argv[2], max_concurrent=1))
sys.exit(0 if outcome.all_finished else 1)
"""


def _saved_round(experiment: Path) -> dict | None:
    """The searcher's state in Tune's newest experiment save (None before the first)."""
    saves = sorted(experiment.glob("searcher-state-*.pkl"), key=lambda p: p.stat().st_mtime)
    try:
        return pickle.loads(saves[-1].read_bytes()) if saves else None
    except (EOFError, pickle.UnpicklingError):
        return None  # caught between Tune's write and rename


@pytest.mark.slow
def test_a_killed_sequential_sweep_resumes_its_rounds(tmp_path):
    """SIGKILL the driver once Tune has saved the searcher in round 2; running it again resumes
    the rounds from there (fake trials: the seed shifts every config alike, so the LR decides)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from sweeps.launcher import child_pids, pid_alive

    driver = tmp_path / "driver.py"
    driver.write_text(RESUME_DRIVER)
    storage = tmp_path / "experiments"
    experiment = storage / "resumed"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"OMP_NUM_THREADS": "1"}
    argv = [sys.executable, str(driver), str(FAKE_SCRIPT), str(storage)]
    first = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    ray_tree: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while True:
            state = _saved_round(experiment)
            if state and state["round"] == 2 and state["pending"]:
                break
            assert first.poll() is None, "the driver ended before round 2"
            assert time.monotonic() < deadline, "Tune never saved the searcher in round 2"
            time.sleep(0.2)
        ray_tree = child_pids(first.pid)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        for pid in ray_tree:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert state["decisions"]["LR=0.1"].state == NOT_BETTER  # decided in round 1, before the kill

    second = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming the experiment" in second.stdout
    record = read_decisions(str(experiment))
    assert record is not None and record["finished"]
    runs = {label: (entry["state"], entry["seeds_run"])
            for label, entry in record["configs"].items()}
    assert runs == {"LR=0.5": ("baseline", [1, 2]), "LR=0.1": (NOT_BETTER, [1]),
                    "LR=2.0": (BETTER, [1, 2])}
    from sweeps.results import load_results

    done = load_results(experiment)
    done = done[done["status"] == "TERMINATED"]
    assert sorted(zip(done["label"], done["seed"])) == [
        ("LR=0.1", 1), ("LR=0.5", 1), ("LR=0.5", 2), ("LR=2.0", 1), ("LR=2.0", 2)]
