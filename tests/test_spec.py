"""Sweep definitions: expansion, labels, and validation of a whole grid before anything runs."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from sweeps.spec import (
    DEFAULT_DATA_PATH, DEFAULT_TOKENIZER_PATH, Asha, SpecError, Sweep, config_label,
    parse_assignments, parse_seeds, plan_sweep,
)

REPO = Path(__file__).resolve().parents[1]
FAKE_SCRIPT = REPO / "tests" / "data" / "sweeps" / "fake_train_gpt.py"


def problems_of(sweep: Sweep, **kwargs) -> list[str]:
    with pytest.raises(SpecError) as caught:
        plan_sweep(sweep, **kwargs)
    return caught.value.problems


def test_the_flagship_sweep_is_four_configs_by_three_seeds_differing_only_in_the_toggles():
    sweep = runpy.run_path(str(REPO / "sweeps" / "qat_vs_lawa.py"), run_name="not_main")["SWEEP"]
    plan = plan_sweep(sweep, scale="smoke")
    assert plan.labels == ("QAT_ENABLED=0,LAWA_ENABLED=0", "QAT_ENABLED=0,LAWA_ENABLED=1",
                           "QAT_ENABLED=1,LAWA_ENABLED=0", "QAT_ENABLED=1,LAWA_ENABLED=1")
    assert plan.seeds == (1337, 42, 2024)
    assert plan.fixed_env == {"QUANT_FORMAT": "int6", "COMPRESSOR": "zstd"}
    assert plan.baseline_label == "QAT_ENABLED=0,LAWA_ENABLED=0"
    assert plan.gpus_per_trial == 0 and plan.nproc == 1 and plan.demo_data
    assert plan.scheduler is None
    trials = plan.trials
    assert len(trials) == 12
    # All configs of a seed, then the next seed: an interrupted sweep leaves complete seed sets.
    assert [t.seed for t in trials[:4]] == [1337] * 4
    assert {t.label for t in trials[:4]} == set(plan.labels)
    assert all(set(t.params) == {"QAT_ENABLED", "LAWA_ENABLED"} for t in trials)


def test_full_scale_takes_whole_nodes_and_the_data_paths_from_the_environment(tmp_path):
    sweep = Sweep(name="s", grid={"QAT_ENABLED": [0, 1]}, fixed={"QUANT_FORMAT": "int6"})
    plan = plan_sweep(sweep, scale="full", environ={})
    assert plan.gpus_per_trial == 8 and plan.nproc == 8 and plan.cpus_per_trial == 8
    assert plan.fixed_env["DATA_PATH"] == DEFAULT_DATA_PATH
    assert plan.fixed_env["TOKENIZER_PATH"] == DEFAULT_TOKENIZER_PATH
    assert not plan.demo_data
    job_env = {"DATA_PATH": "/mnt/fineweb", "TOKENIZER_PATH": "/mnt/tok.model"}
    plan = plan_sweep(sweep, scale="full", environ=job_env)
    assert plan.fixed_env["DATA_PATH"] == "/mnt/fineweb"
    # --set beats the environment; relative paths are made absolute against the driver's cwd.
    plan = plan_sweep(sweep, scale="full", environ=job_env, cwd=tmp_path,
                      overrides={"DATA_PATH": "data/shards"})
    assert plan.fixed_env["DATA_PATH"] == str(tmp_path / "data" / "shards")
    packed = plan_sweep(sweep, scale="full", gpus_per_trial=2, environ={})
    assert packed.gpus_per_trial == 2 and packed.nproc == 2


def test_every_problem_of_the_grid_is_reported_at_once():
    sweep = Sweep(
        name="bad",
        grid={"QAT_ENABLD": [0, 1], "NUM_HEADS": [3, 4], "LAWA_ENABLED": [0]},
        fixed={"SEED": 7, "ITERATIONS": "many", "RUN_DIR": "/tmp/x"},
        seeds=[1, 1],
        baseline={"NUM_HEADS": 8},
    )
    problems = problems_of(sweep)
    text = "\n".join(problems)
    assert "unknown config key 'QAT_ENABLD'; did you mean QAT_ENABLED" in text
    assert "SEED is set by the service" in text and "RUN_DIR is set by the service" in text
    assert "ITERATIONS='many'" in text and "not an integer" in text
    assert "seed(s) listed twice: [1]" in text
    assert "baseline {'NUM_HEADS': 8} matches 0 configs" in text
    # golf's own cross-field checks, attributed to the configs they concern, once each.
    heads = [p for p in problems if "not divisible by NUM_HEADS=3" in p]
    assert len(heads) == 1 and "[config NUM_HEADS=3,LAWA_ENABLED=0]" in heads[0]
    assert len(problems) == len(set(problems))


def test_a_problem_shared_by_configs_names_each_of_them():
    sweep = Sweep(name="q", grid={"QAT_ENABLED": [0, 1], "LAWA_ENABLED": [0, 1]},
                  fixed={"LATE_QAT_THRESHOLD": 0.2, "QAT_START_FRAC": 0.5})
    problems = problems_of(sweep)
    assert len(problems) == 1  # the QAT-off configs only get warnings: those knobs do nothing there
    assert "two start rules" in problems[0]
    assert "QAT_ENABLED=1,LAWA_ENABLED=0" in problems[0] and "QAT_ENABLED=1,LAWA_ENABLED=1" in problems[0]


def test_aliases_and_value_spellings_become_canonical_labels():
    sweep = Sweep(name="a", grid={"ENABLE_QAT": [False, True]},
                  fixed={"COMPRESSION": "zstd", "QUANT_FORMAT": "int6"}, baseline={"QAT_ENABLED": "off"})
    plan = plan_sweep(sweep)
    assert plan.labels == ("QAT_ENABLED=0", "QAT_ENABLED=1")
    assert plan.fixed_env == {"COMPRESSOR": "zstd", "QUANT_FORMAT": "int6"}
    assert plan.baseline_label == "QAT_ENABLED=0"


def test_overrides_and_the_grid_cannot_fight():
    sweep = Sweep(name="c", grid={"MATRIX_LR": [0.02, 0.04]}, fixed={"ITERATIONS": 20})
    text = "\n".join(problems_of(sweep, overrides={"MATRIX_LR": "0.03", "ITERATIONZ": "3"}))
    assert "--set MATRIX_LR=... would override a swept key" in text
    assert "did you mean ITERATIONS" in text
    both = Sweep(name="c", grid={"MATRIX_LR": [0.02]}, fixed={"MATRIX_LR": 0.03})
    assert any("both swept and in fixed" in p for p in problems_of(both))
    plan = plan_sweep(sweep, overrides={"ITERATIONS": "30"})
    assert plan.fixed_env["ITERATIONS"] == "30"


def test_explicit_configs_and_a_plain_preset():
    sweep = Sweep(name="e", configs=[{"MATRIX_LR": 0.02}, {"MATRIX_LR": 0.05, "ITERATIONS": 60}])
    plan = plan_sweep(sweep, seeds=(5,))
    assert plan.labels == ("MATRIX_LR=0.02", "MATRIX_LR=0.05,ITERATIONS=60")
    assert plan.swept_keys == ("MATRIX_LR", "ITERATIONS")
    single = plan_sweep(Sweep(name="one", preset="smoke"), seeds=(1, 2))
    assert single.labels == ("baseline",) and [t.params for t in single.trials] == [{}, {}]
    text = "\n".join(problems_of(Sweep(name="one", preset="smoke"), scale="full"))
    assert "already means scale 'smoke'" in text


def test_resources_are_checked():
    text = "\n".join(problems_of(Sweep(name="r", gpus_per_trial=3, cpu_procs=0, max_concurrent=0)))
    assert "gpus_per_trial=3" in text and "cpu_procs=0" in text and "max_concurrent=0" in text
    assert "sweep name" in "\n".join(problems_of(Sweep(name="has space")))


def test_asha_gets_its_horizon_from_the_trials():
    plan = plan_sweep(Sweep(name="x", grid={"MATRIX_LR": [0.02, 0.04]}, scheduler=Asha(grace_steps=10)),
                      overrides={"ITERATIONS": "40"})
    assert plan.scheduler == Asha(grace_steps=10, max_steps=40, reduction_factor=3.0)
    text = "\n".join(problems_of(Sweep(name="x", scheduler=Asha(grace_steps=0, reduction_factor=1))))
    assert "grace_steps=0" in text and "reduction_factor=1" in text


def test_a_competitors_script_is_checked_against_its_declared_keys(tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text("print('hi')\n")
    sweep = Sweep(name="f", script="train_gpt.py",
                  script_keys={"LR": float, "ITERATIONS": int, "USE_X": bool},
                  grid={"LR": [0.1, "fast"], "USE_X": ["yes", 0]}, fixed={"ITERATONS": 5})
    text = "\n".join(problems_of(sweep, cwd=tmp_path))
    assert "LR='fast' is not a float" in text
    assert "'ITERATONS' is not one of the script's declared keys" in text and "did you mean ITERATIONS" in text
    good = Sweep(name="f", script="train_gpt.py", script_keys={"LR": float, "USE_X": bool},
                 grid={"LR": [0.1, 0.2]}, fixed={"USE_X": "yes"}, uses_data=False)
    plan = plan_sweep(good, cwd=tmp_path)
    assert not plan.is_golf and plan.program.script == "train_gpt.py"
    assert plan.script_path == str(script)
    assert plan.fixed_env == {"USE_X": "1"}
    missing = "\n".join(problems_of(Sweep(name="f", script="nope.py"), cwd=tmp_path))
    assert "script 'nope.py' does not exist" in missing
    # Without declared keys any environment name goes, but SEED stays the service's.
    free = Sweep(name="f", script=str(FAKE_SCRIPT), grid={"ANYTHING": [1, 2]}, fixed={"seed": 3})
    assert any("seed is set by the service" in p for p in problems_of(free))


def test_fingerprint_follows_what_decides_results():
    sweep = Sweep(name="p", grid={"MATRIX_LR": [0.02, 0.04]})
    base = plan_sweep(sweep)
    assert plan_sweep(sweep).fingerprint() == base.fingerprint()
    assert plan_sweep(sweep, max_concurrent=1).fingerprint() == base.fingerprint()
    assert plan_sweep(sweep, seeds=(1,)).fingerprint() != base.fingerprint()
    assert plan_sweep(sweep, overrides={"ITERATIONS": "9"}).fingerprint() != base.fingerprint()
    described = base.describe()
    assert described["fingerprint"] == base.fingerprint()
    assert described["program"] == {"module": "golf.train", "script": None, "args": []}


def test_command_line_helpers():
    assert parse_assignments(["A=1", "B = x=y "]) == {"A": "1", "B": "x=y"}
    with pytest.raises(SpecError, match="is not KEY=VALUE"):
        parse_assignments(["A"])
    assert parse_seeds("1337, 42,2024") == (1337, 42, 2024)
    with pytest.raises(SpecError, match="not a whole number"):
        parse_seeds("1,x")
    assert config_label({}, "baseline") == "baseline"
    assert config_label({"A": "1", "B": "2"}, None) == "A=1,B=2"


def test_a_setting_that_is_inert_in_some_configs_is_a_warning_and_the_sweep_plans():
    """LATE_QAT_THRESHOLD does nothing in the QAT-off configs: that must not stop the grid."""
    sweep = Sweep(name="late", fixed={"LATE_QAT_THRESHOLD": 0.15, "QUANT_FORMAT": "int6"},
                  grid={"QAT_ENABLED": [0, 1]})
    plan = plan_sweep(sweep, scale="smoke", environ={})
    assert plan.labels == ("QAT_ENABLED=0", "QAT_ENABLED=1")
    assert plan.fixed_env["LATE_QAT_THRESHOLD"] == "0.15"
