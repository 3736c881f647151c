"""Sequential seed allocation: run more seeds only where they can still change a decision.

A sweep declares ``Sweep(seeds=Sequential(seeds=(1337, 42, 2024, 7, 99), ...))``. Every config
runs its first seed; after each round, a config is *decided better* than the baseline, *decided
not better*, or *undecided*; only undecided configs (and the baseline, for the seeds they need)
get the next seed, up to the pool's length. :func:`decide` is the rule, a pure function of the
per-seed values of a config and of the baseline; :mod:`sweeps.sequential_search` drives Ray Tune
with it.

Why the rule is honest:

* **better** is claimed only by the sweep's own test (``paired`` or ``welch``, one-sided, with the
  sweep's margin) at a share of ``alpha`` for that look; the looks are the rounds at which such a
  claim could be made (``min_seeds`` .. the pool's length) and their shares sum to ``alpha``
  (O'Brien-Fleming spending by default, or equal shares). By Bonferroni's inequality the chance
  of any false claim over all looks is at most ``alpha``: the full grid's one test at ``alpha``
  has the same bound, and every claim is also significant at ``alpha`` on the seeds it saw.
* **not better** (futility) can only lose a claim, never make one: a config whose mean is above
  the baseline's minus the margin by more than ``z(1 - futility_alpha)`` standard errors stops.
  The standard error comes from the declared seed-to-seed standard deviation ``prior_sd`` (default
  :data:`PRIOR_SEED_SD_BPB`, the pooled per-seed spread of the challenge's records), or from the
  seeds' own spread once that is larger, so it works from the first seed.
  A config also stops once no values of its remaining seeds could make the full grid's test on
  all of them significant (curtailment: the full grid would say not better too).
* a config still undecided at its maximum is **not better**: its test at its look's share failed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SEQUENTIAL_TESTS = ("paired", "welch")
ALPHA_SPLITS = ("obrien-fleming", "equal")
BETTER, NOT_BETTER, UNDECIDED, FAILED = "better", "not better", "undecided", "failed"
# Pooled sample standard deviation of per-seed val_bpb over the 24 records of
# ../shared/fixtures/submissions that report >= 2 seeds (measure_seed_sd; tests re-measure it).
PRIOR_SEED_SD_BPB = 0.00073


@dataclass(frozen=True)
class Sequential:
    """Seeds allocated round by round (see the module docstring for the rule).

    ``seeds``: the pool, in the order they run; its length is each config's maximum.
    ``min_seeds``: the fewest seeds on which "better" may be claimed (the t-tests need 2).
    ``test``: "paired" (per-seed differences; configs share seeds) or "welch".
    ``margin``: how much lower (val_bpb) a config must be. ``alpha``: the sweep's level, split
    over the looks by ``split``: "obrien-fleming" (the shares an O'Brien-Fleming spending function
    gives each look: little early, most at the last look, which keeps the full grid's power there)
    or "equal" (alpha / looks each). ``futility_alpha``: how sure "clearly worse" must be.
    ``prior_sd``: the seed-to-seed standard deviation of val_bpb assumed before a config's own
    seeds show theirs (None: :data:`PRIOR_SEED_SD_BPB`, measured on full-scale records; declare
    your own at other scales).
    """

    seeds: Sequence[int] = (1337, 42, 2024, 7, 99)
    min_seeds: int = 2
    test: str = "paired"
    margin: float = 0.0
    alpha: float = 0.01
    futility_alpha: float = 0.01
    prior_sd: float | None = None
    split: str = "obrien-fleming"

    @property
    def max_seeds(self) -> int:
        return len(self.seeds)

    @property
    def looks(self) -> int:
        """Rounds at which "better" may be claimed: min_seeds .. max_seeds."""
        return max(1, self.max_seeds - self.min_seeds + 1)

    def alpha_at(self, seeds: int) -> float:
        """The share of alpha a "better" claim on ``seeds`` seeds must beat; the shares of all
        looks sum to alpha, so Bonferroni's inequality bounds the false claims by alpha."""
        if seeds < self.min_seeds:
            return 0.0
        if self.split == "equal":
            return self.alpha / self.looks
        seeds = min(seeds, self.max_seeds)
        before = 0.0 if seeds == self.min_seeds else self._spent(seeds - 1)
        return self._spent(seeds) - before

    def _spent(self, seeds: int) -> float:
        """O'Brien-Fleming-type spending, one-sided: 2 - 2 Phi(z(1 - alpha/2) / sqrt(t))."""
        from scipy.stats import norm

        fraction = seeds / self.max_seeds
        return float(2.0 * norm.sf(norm.ppf(1.0 - self.alpha / 2.0) / math.sqrt(fraction)))

    @property
    def sd(self) -> float:
        return PRIOR_SEED_SD_BPB if self.prior_sd is None else float(self.prior_sd)

    def describe(self) -> str:
        """The rule in two plain sentences, for the plan and the outcome."""
        shares = ", ".join(f"{self.alpha_at(k):.2g} at {k}"
                           for k in range(self.min_seeds, self.max_seeds + 1))
        how = ("O'Brien-Fleming shares" if self.split == "obrien-fleming"
               else f"equal shares, alpha/{self.looks}")
        return (f"sequential seeds: up to {self.max_seeds} seeds per config; a config is better "
                f"than the baseline only when the one-sided {_test_name(self)} on val_bpb (margin "
                f"{self.margin:g}) gives p below its look's share of alpha {self.alpha:g} "
                f"({how}: {shares} seeds; they sum to alpha, so by Bonferroni at most "
                f"{self.alpha:g} false claims overall, as the full grid). It "
                f"stops as not better once its mean is above the baseline's minus the margin by "
                f"more than z({1 - self.futility_alpha:g}) = {self.z_futility:.2f} standard errors "
                f"(seed-to-seed sd {self.sd:g} bpb, or the seeds' own when larger)"
                + ", or once no values of its other seeds could make the full grid's test "
                f"significant, or when its {self.max_seeds} seeds are spent.")

    @property
    def z_futility(self) -> float:
        from scipy.stats import norm

        return float(norm.ppf(1.0 - self.futility_alpha))

    def as_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "min_seeds": self.min_seeds, "test": self.test,
                "margin": self.margin, "alpha": self.alpha, "futility_alpha": self.futility_alpha,
                "prior_sd": self.prior_sd, "split": self.split}


def sequential_problems(rule: Any) -> list[str]:
    """Every problem of a Sequential(...), each with its fix (empty when it is sound)."""
    if not isinstance(rule, Sequential):
        return [f"seeds must be a list of seeds or Sequential(...), got {rule!r}"]
    problems = []
    seeds = rule.seeds
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        return [f"Sequential(seeds={seeds!r}) must be a non-empty list of seeds, e.g. "
                "seeds=(1337, 42, 2024, 7, 99)"]
    problems += seed_list_problems(seeds, "Sequential(seeds=...)")
    if (isinstance(rule.min_seeds, bool) or not isinstance(rule.min_seeds, int)
            or not 2 <= rule.min_seeds <= len(seeds)):
        problems.append(f"Sequential(min_seeds={rule.min_seeds!r}) must be a whole number from 2 "
                        f"(a t-test needs 2 seeds) to the pool's {len(seeds)} seeds: set "
                        f"min_seeds=2, or give more seeds")
    if rule.test not in SEQUENTIAL_TESTS:
        problems.append(f"Sequential(test={rule.test!r}): use 'paired' (configs share seeds) or "
                        "'welch'")
    if not _number(rule.margin) or rule.margin < 0:
        problems.append(f"Sequential(margin={rule.margin!r}) must be a number >= 0 (val_bpb the "
                        "config must beat the baseline by; 0 for any improvement)")
    for name in ("alpha", "futility_alpha"):
        value = getattr(rule, name)
        if not _number(value) or not 0 < value < 0.5:
            problems.append(f"Sequential({name}={value!r}) must be between 0 and 0.5 (the "
                            "challenge uses 0.01)")
    if rule.split not in ALPHA_SPLITS:
        problems.append(f"Sequential(split={rule.split!r}): use 'obrien-fleming' or 'equal'")
    if rule.prior_sd is not None and (not _number(rule.prior_sd) or rule.prior_sd <= 0):
        problems.append(f"Sequential(prior_sd={rule.prior_sd!r}) must be a positive number (the "
                        f"seed-to-seed sd of val_bpb), or None for {PRIOR_SEED_SD_BPB:g}")
    return problems


def seed_list_problems(seeds: Sequence[Any], where: str = "seeds") -> list[str]:
    """Problems of a list of seeds (a plain sweep's or a Sequential pool): each a whole number
    >= 0, each listed once."""
    problems = []
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        problems.append(f"{where} must be whole numbers >= 0, got {bad}")
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        problems.append(f"{where}: seed(s) listed twice: {repeated} (each seed is one trial "
                        "per config; list each once)")
    return problems


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


@dataclass(frozen=True)
class Decision:
    """A config's state against the baseline after the seeds it ran, and why, in one line."""

    state: str  # BETTER, NOT_BETTER, UNDECIDED (or FAILED, set by the driver)
    reason: str
    seeds: tuple[int, ...] = ()
    p_value: float | None = None

    @property
    def final(self) -> bool:
        return self.state != UNDECIDED


def decide(rule: Sequential, config: Mapping[int, float],
           baseline: Mapping[int, float]) -> Decision:
    """Better, not better or undecided, from per-seed val_bpb (seed -> value) of both sides.

    The config's seeds are all used; the paired test pairs them with the baseline's same seeds,
    Welch's test takes the baseline's values for the config's seeds (the baseline runs each
    seed a running config needs, so both sides have the same seeds).
    """
    from sweeps.stats import StatsError, compare

    seeds = tuple(seed for seed in rule.seeds if seed in config)
    shared = tuple(seed for seed in seeds if seed in baseline)
    k = len(seeds)
    if not shared:
        return Decision(UNDECIDED, f"undecided: {k} seed(s), none yet on the baseline", seeds)
    mine = [config[s] for s in shared]
    theirs = [baseline[s] for s in shared]
    delta = sum(mine) / len(mine) - sum(theirs) / len(theirs)

    p_value = None
    if len(shared) >= rule.min_seeds:
        try:
            result = compare(mine, theirs, test=rule.test, metric="bpb", margin=float(rule.margin),
                             alpha=rule.alpha)
        except StatsError:
            result = None
        if result is not None:
            p_value = result.p_value
            share = rule.alpha_at(len(shared))
            if p_value < share:
                return Decision(BETTER, f"better after {k} seeds: {_test_name(rule)} "
                                f"p={p_value:.3g} < {share:.3g} (this look's share of alpha "
                                f"{rule.alpha:g}), delta {delta:+.5f} bpb", seeds, p_value)

    if k < rule.max_seeds and not _can_still_win(rule, mine, theirs):
        return Decision(NOT_BETTER, f"not better after {k} seed(s): delta {delta:+.5f} bpb, and no "
                        f"values of its other {rule.max_seeds - k} seed(s) could make the "
                        f"{_test_name(rule)} on all {rule.max_seeds} significant at "
                        f"{rule.alpha:g}", seeds, p_value)
    se = _standard_error(rule, mine, theirs)
    gap = delta + float(rule.margin)  # > 0: above the bar the config must get under
    if gap > rule.z_futility * se:
        return Decision(NOT_BETTER, f"not better after {k} seed(s): delta {delta:+.5f} bpb is "
                        f"{gap / se:.1f} standard errors ({se:.5f}) above -margin "
                        f"(stop at {rule.z_futility:.2f})", seeds, p_value)
    shown = "" if p_value is None else f", {_test_name(rule)} p={p_value:.3g}"
    if k >= rule.max_seeds:
        bar = "" if p_value is None else f" >= {rule.alpha_at(k):.3g}"
        return Decision(NOT_BETTER, f"not better at the maximum {k} seeds: delta {delta:+.5f} bpb"
                        f"{shown}{bar}", seeds, p_value)
    return Decision(UNDECIDED, f"undecided after {k} seed(s): delta {delta:+.5f} bpb{shown}",
                    seeds, p_value)


def _lowest_t(gaps: Sequence[float], n: int) -> float:
    """The lowest one-sample t (mean / (sd / sqrt n)) that n values can reach, given these.

    The free n - k values give the lowest t when all equal one c (their variance is then least
    for their sum), and t(c) has a single stationary point, c = sum(g^2) / sum(g), besides its
    limit -sqrt(m (n-1) / k) as c -> -inf; so the lowest t is the lower of the two. -inf when
    the given values are equal and negative (all n equal: an exact, zero-variance result).
    """
    k = len(gaps)
    m = n - k
    if max(gaps) < 0 and max(gaps) == min(gaps):
        return -math.inf
    lowest = -math.sqrt(m * (n - 1) / k)
    total, squares = sum(gaps), sum(g * g for g in gaps)
    if total != 0:
        values = [*gaps, *([squares / total] * m)]
        if max(values) != min(values):
            lowest = min(lowest, sum(values) / n / (_sd(values) / math.sqrt(n)))
    return lowest


def _can_still_win(rule: Sequential, mine: Sequence[float], theirs: Sequence[float]) -> bool:
    """Could some values of the remaining seeds (both sides) make the full grid's test, on all
    max_seeds seeds at the full alpha, significant? False only when provably not (curtailment).

    Paired: the lowest t of the differences plus the margin (:func:`_lowest_t`) against
    t(1 - alpha, n - 1). Welch: for any level psi, t <= sqrt(2) max(A, B), where A is how far
    below psi the config's mean can get in its own standard errors and B how far above it the
    baseline's (since (a + b) / sqrt(c^2 + d^2) <= sqrt(2) max(a / c, b / d)); the best psi on a
    grid bounds t, against the smallest critical value Welch's df can give, t(1 - alpha, 2n - 2).
    """
    from scipy.stats import t as student

    n, margin = rule.max_seeds, float(rule.margin)
    if len(mine) >= n:
        return True
    # A hair of slack towards "can": a rounding error must not stop a config that could win.
    slack = 1 - 1e-9
    if rule.test == "paired":
        gaps = [a - b + margin for a, b in zip(mine, theirs)]
        return _lowest_t(gaps, n) < -float(student.ppf(1.0 - rule.alpha, n - 1)) * slack
    shifted = [b - margin for b in theirs]

    def sides(psi: float) -> tuple[float, float]:
        return (-_lowest_t([x - psi for x in mine], n), -_lowest_t([psi - y for y in shifted], n))

    # A rises with psi and B falls, so the best psi is where they cross: bisect for it (any psi
    # gives a valid bound, so stopping the search early only makes the bound looser).
    low, high = min(*mine, *shifted), max(*mine, *shifted)
    span = (high - low) or 1e-6
    low, high = low - span, high + span
    bound = math.inf
    for _ in range(60):
        psi = (low + high) / 2
        below, above = sides(psi)
        bound = min(bound, math.sqrt(2) * max(below, above))
        if below < above:
            low = psi
        else:
            high = psi
    return bound > float(student.ppf(1.0 - rule.alpha, 2 * n - 2)) * slack


def _test_name(rule: Sequential) -> str:
    return "paired t-test" if rule.test == "paired" else "Welch's t-test"


def _standard_error(rule: Sequential, mine: Sequence[float], theirs: Sequence[float]) -> float:
    """The futility rule's standard error of delta: the prior sd's, or the seeds' own if larger.

    The prior treats the two sides as independent (sd * sqrt(1/n + 1/m)), which is at least the
    paired test's error when seeds share noise: stopping for futility stays on the cautious side.
    """
    n, m = len(mine), len(theirs)
    prior = rule.sd * math.sqrt(1.0 / n + 1.0 / m)
    if rule.test == "paired" and n >= 2:
        diffs = [a - b for a, b in zip(mine, theirs)]
        own = _sd(diffs) / math.sqrt(n)
    elif rule.test == "welch" and n >= 2 and m >= 2:
        own = math.sqrt(_sd(mine) ** 2 / n + _sd(theirs) ** 2 / m)
    else:
        own = 0.0
    return max(prior, own)


def _sd(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def full_grid_better(rule: Sequential, config: Sequence[float], baseline: Sequence[float]) -> bool:
    """The full grid's decision on the same values: the rule's test at the full alpha."""
    from sweeps.stats import compare

    return compare(list(config), list(baseline), test=rule.test, metric="bpb",
                   margin=float(rule.margin), alpha=rule.alpha).significant


def replay(rule: Sequential, configs: Mapping[str, Sequence[float]],
           baseline: Sequence[float]) -> tuple[dict[str, Decision], int]:
    """Run the rule's rounds on known per-seed values (value i = the pool's seed i).

    Returns each config's decision and how many seeds the baseline ran: what the Ray driver
    does, without Ray (the replay benchmark and the tests use it). Every side needs a value for
    each of the pool's seeds (the full grid's values).
    """
    short = [label for label, values in [("baseline", baseline), *configs.items()]
             if len(values) < rule.max_seeds]
    if short:
        raise ValueError(f"replay needs {rule.max_seeds} values per side; {', '.join(short)} "
                         "has fewer")
    pool = list(rule.seeds)
    decided: dict[str, Decision] = {}
    base_seeds = 0
    for round_index in range(len(pool)):
        running = [label for label in configs if label not in decided]
        if not running:
            break
        base_seeds = round_index + 1
        base = dict(zip(pool[:base_seeds], baseline))
        for label in running:
            decision = decide(rule, dict(zip(pool[:round_index + 1], configs[label])), base)
            if decision.final:
                decided[label] = decision
    return decided, base_seeds


def measure_seed_sd(per_seed: Iterable[Sequence[float]]) -> float:
    """Pooled sample standard deviation of per-seed values over records with >= 2 seeds."""
    squares, dof = 0.0, 0
    for values in per_seed:
        if len(values) < 2:
            continue
        squares += _sd(values) ** 2 * (len(values) - 1)
        dof += len(values) - 1
    if dof == 0:
        raise ValueError("no record with >= 2 seeds to measure the seed-to-seed spread on")
    return math.sqrt(squares / dof)
