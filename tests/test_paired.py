"""The paired one-sided t-test: scipy's ttest_rel, pairs by seed or by position, in compare and in
the sweep's end-of-run significance report."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from sweeps import stats
from sweeps.commands import compare as compare_command
from sweeps.commands.compare import format_comparison
from sweeps.report import compare_with_baseline, format_comparisons
from sweeps.results import experiment_value_source, load_results
from sweeps.stats import Sample, StatsError, compare

# Differences -0.0015, -0.0010, -0.0010: mean -0.0035/3, sd sqrt(2.5e-7/3), so by hand
# t = mean / (sd / sqrt 3) = -7 exactly, df 2, and P(T_2 < -7) = 1/2 - 7 / (2 sqrt(2 + 49)).
HAND_NEW = (1.0793, 1.0800, 1.0802)
HAND_BASELINE = (1.0808, 1.0810, 1.0812)
HAND_T = -7.0
HAND_P = 0.5 - 7.0 / (2.0 * math.sqrt(51.0))


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sweeps")
    compare_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_hand_computed_case() -> None:
    result = compare(HAND_NEW, HAND_BASELINE, test="paired")
    assert result.t == pytest.approx(HAND_T, rel=1e-9)
    assert result.df == 2
    assert result.p_value == pytest.approx(HAND_P, rel=1e-9)
    assert result.mean_delta == pytest.approx(-0.0035 / 3, rel=1e-9)
    assert result.significant  # p = 0.0099 < 0.01, where Welch's test on the same values is not
    assert not compare(HAND_NEW, HAND_BASELINE, test="welch").significant
    assert result.paired_by == "position" and result.pairs == ("#1", "#2", "#3")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("margin", [0.0, 0.0007])
def test_matches_scipy_ttest_rel(seed: int, margin: float) -> None:
    rng = np.random.default_rng(200 + seed)
    n = 3 + seed
    shared_noise = rng.normal(0, 0.01, n)  # a seed moves both configs alike
    baseline = 1.08 + shared_noise + rng.normal(0, 0.0005, n)
    new = baseline - 0.001 + rng.normal(0, 0.0005, n)
    expected = scipy.stats.ttest_rel(new, baseline - margin, alternative="less")
    result = compare(list(new), list(baseline), test="paired", margin=margin)
    assert result.t == pytest.approx(float(expected.statistic), rel=1e-10)
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-10)
    assert result.df == n - 1 and result.margin == margin
    # the one-sided upper bound is below -margin exactly when p < alpha
    assert (result.ci_high < -margin) == result.significant


def test_pairs_are_matched_by_seed_not_by_order() -> None:
    new = Sample((1.0800, 1.0793, 1.0802, 1.0700), "bpb", seeds=(42, 1337, 2024, 7))
    baseline = Sample((1.0812, 1.0808, 1.0810), "bpb", seeds=(2024, 1337, 42))
    result = compare(new, baseline, test="paired")
    # seed 1337: 1.0793 vs 1.0808; 42: 1.0800 vs 1.0810; 2024: 1.0802 vs 1.0812 (7 is unpaired)
    expected = scipy.stats.ttest_rel([1.0800, 1.0793, 1.0802], [1.0810, 1.0808, 1.0812],
                                     alternative="less")
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-10)
    assert result.pairs == ("42", "1337", "2024") and result.paired_by == "seed"
    assert any("7 ran on one side only" in note for note in result.notes)


def test_fewer_than_two_pairs_is_a_clear_error() -> None:
    with pytest.raises(StatsError, match="at least 2 seeds present on both sides, got 1"):
        compare(Sample((1.0, 1.1), "bpb", seeds=(1, 2)), Sample((1.2, 1.3), "bpb", seeds=(2, 3)),
                test="paired")
    with pytest.raises(StatsError, match="equal counts, got 2 new and 3 baseline"):
        compare([1.0, 1.1], [1.2, 1.3, 1.4], test="paired")
    with pytest.raises(StatsError, match="at least 2 pairs, got 1"):
        compare([1.0], [1.2], test="paired")


def test_cli_value_lists_say_they_are_paired_by_position(capsys: pytest.CaptureFixture[str]) -> None:
    new = ",".join(map(str, HAND_NEW))
    baseline = ",".join(map(str, HAND_BASELINE))
    assert run_cli(["compare", "--new", new, "--baseline", baseline, "--test", "paired"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("paired t-test (one-sided")
    assert "pairs     3 matched by position" in out
    assert "paired by position" in out
    assert out.strip().splitlines()[-1] == (
        "SIGNIFICANT at alpha 0.01 (p = 0.0099 < 0.01): paired t-test, one-sided, margin 0 bpb, "
        "metric bpb, 3 pairs (by position)")
    assert run_cli(["compare", "--new", "1,2", "--baseline", "1,2,3", "--test", "paired"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the paired test needs") and len(err.strip().splitlines()) == 1


def test_cli_experiment_configs_are_paired_by_seed(experiment: Path, monkeypatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(stats, "VALUE_SOURCES", list(stats.VALUE_SOURCES))
    if not any(source.name == "experiment" for source in stats.VALUE_SOURCES):  # a CLI run may have
        stats.register_value_source(experiment_value_source())                   # registered it already
    # QAT_ENABLED=1's seed 2024 errored, so seeds 42 and 1337 pair
    argv = ["compare", "--new", f"{experiment}:QAT_ENABLED=1",
            "--baseline", f"{experiment}:QAT_ENABLED=0", "--test", "paired"]
    assert run_cli([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    table = load_results(experiment)
    done = table[table["status"] == "TERMINATED"].set_index(["label", "seed"])["val_bpb"]
    seeds = [42, 1337]
    expected = scipy.stats.ttest_rel([done[("QAT_ENABLED=1", s)] for s in seeds],
                                     [done[("QAT_ENABLED=0", s)] for s in seeds], alternative="less")
    assert data["test"] == "paired" and data["paired_by"] == "seed"
    assert data["pairs"] == ["42", "1337"] and data["n_new"] == 2
    assert data["p_value"] == pytest.approx(float(expected.pvalue), rel=1e-10)
    assert run_cli(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "paired t-test, one-sided, margin 0 bpb, metric bpb, 2 pairs (seeds 42, 1337)" in last


def _reseed(experiment: Path, label: str, seeds: dict[int, int]) -> None:
    for record_path in experiment.glob("*/trial.json"):
        record = json.loads(record_path.read_text())
        if record["label"] == label:
            record["seed"] = seeds[record["seed"]]
            record_path.write_text(json.dumps(record))


def test_sweep_report_uses_paired_when_seeds_are_shared_else_welch(experiment: Path) -> None:
    table = load_results(experiment)
    [paired] = compare_with_baseline(table, "QAT_ENABLED=0")
    assert paired.comparison is not None and paired.comparison.test == "paired"
    assert paired.comparison.pairs == ("42", "1337")
    text = format_comparisons([paired], "QAT_ENABLED=0")
    assert "Which test applies: the paired t-test" in text
    assert "QAT_ENABLED=1: delta" in text and "(paired t-test, 2 pairs (seeds 42, 1337))" in text

    [welch] = compare_with_baseline(table, "QAT_ENABLED=0", test="welch")
    assert welch.comparison is not None and welch.comparison.test == "welch"
    assert "(Welch's t-test, n=2 vs 3)" in format_comparisons([welch], "QAT_ENABLED=0")

    _reseed(experiment, "QAT_ENABLED=1", {1337: 7, 42: 8, 2024: 9})
    [unshared] = compare_with_baseline(load_results(experiment), "QAT_ENABLED=0")
    assert unshared.comparison is not None and unshared.comparison.test == "welch"
    [refused] = compare_with_baseline(load_results(experiment), "QAT_ENABLED=0", test="paired")
    assert refused.comparison is None and "shared: 0" in (refused.reason or "")
