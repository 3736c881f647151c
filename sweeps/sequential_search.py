"""The driver of sequential seeds: a Ray Tune ``Searcher`` that suggests trials round by round.

Round 1 runs the first seed of every config and of the baseline. After each round (every trial of
it ended), :func:`sweeps.sequential.decide` sorts each running config into better, not better or
undecided; the next round gives each undecided config its next seed, and the baseline every seed
a running config is about to get (the paired test needs shared seeds). A config whose trial
failed stops with that failure as its reason; a failed baseline seed stops every config that
needed it. When no config runs any more, :meth:`SequentialSearcher.suggest` returns
``Searcher.FINISHED``.

The decisions are written to ``<experiment>/sequential.json`` (:data:`DECISIONS_FILE`) whenever
they change, atomically, so the table and the summary can say how many seeds each config got and
why it stopped. Tune saves the searcher with the experiment and restores it on ``Tuner.restore``,
so a resumed sweep continues from the round it was in.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from sweeps.failures import FAILURE_CAUSE_KEY
from sweeps.sequential import BETTER, FAILED, NOT_BETTER, UNDECIDED, Decision, Sequential, decide

DECISIONS_FILE = "sequential.json"
DECISIONS_SCHEMA = "sweeps.sequential/1"
BASELINE = "baseline"


class SequentialSearcher(Searcher):
    """Suggest ``{"params": {...}, "seed": N}`` trials in rounds; see the module docstring.

    ``labels`` and ``variants`` are the plan's configs (the baseline among them);
    ``experiment_dir`` receives :data:`DECISIONS_FILE` (None: not written).
    """

    def __init__(self, rule: Sequential, labels: Sequence[str],
                 variants: Sequence[Mapping[str, str]], baseline: str,
                 experiment_dir: str | None = None, metric: str = "val_bpb",
                 mode: str = "min") -> None:
        super().__init__(metric=metric, mode=mode)
        self.rule = rule
        self.variants = {label: dict(v) for label, v in zip(labels, variants)}
        self.baseline = baseline
        self.experiment_dir = experiment_dir
        self.values: dict[str, dict[int, float]] = {label: {} for label in labels}
        self.trials: dict[str, tuple[str, int]] = {}  # every trial suggested: id -> (label, seed)
        self.pending: set[str] = set()  # suggested, not yet ended
        self.queue: list[tuple[str, int]] = []  # this round's trials not yet suggested
        self.failures: dict[str, str] = {}  # label -> why it stopped on a failed trial
        self.decisions: dict[str, Decision] = {}
        self.round = 0
        self.finished = False
        self._causes: dict[str, str] = {}  # trial id -> its last reported failure cause

    # ------------------------------------------------------------------ Tune's interface
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        # The search space is the plan's; Tune's param_space stays empty.
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self.queue and not self.pending:
            self._next_round()
            if not self.queue:
                self.finished = True
                self._write()
                return Searcher.FINISHED
        if not self.queue:
            return None  # wait for this round's trials to end
        label, seed = self.queue.pop(0)
        self.trials[trial_id] = (label, seed)
        self.pending.add(trial_id)
        return {"params": dict(self.variants[label]), "seed": seed}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get(FAILURE_CAUSE_KEY):
            self._causes[trial_id] = str(result[FAILURE_CAUSE_KEY])

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.trials:
            return
        self.pending.discard(trial_id)
        label, seed = self.trials[trial_id]
        value = (result or {}).get(self.metric or "val_bpb")
        final = (result or {}).get("phase", "final") == "final"
        if not error and final and isinstance(value, (int, float)) and value == value:
            self.values[label][seed] = float(value)
            if self.failures.get(label, "").startswith(f"seed {seed} "):
                del self.failures[label]  # a resumed errored trial finished after all
        else:
            cause = (self._causes.get(trial_id) or (result or {}).get(FAILURE_CAUSE_KEY)
                     or ("the trial failed" if error else "it ended before its final evaluation"))
            self.failures.setdefault(label, f"seed {seed} failed: {str(cause).splitlines()[0]}")
        self._write()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)
        if self.experiment_dir is not None:
            # Tune saves into its driver staging folder and then uploads that folder's .json files
            # over the experiment's; on a resumed run it holds the decisions file as it was when
            # the run began, so this keeps that copy current too.
            from golf.atomic import write_json_atomic

            write_json_atomic(Path(checkpoint_path).parent / DECISIONS_FILE, self.record())

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))

    def get_state(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in (
            "values", "trials", "pending", "queue", "failures", "decisions", "round", "finished")}

    def set_state(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    # ------------------------------------------------------------------ the rounds
    def running(self) -> list[str]:
        """Configs (not the baseline) without a final decision."""
        return [label for label in self.variants
                if label != self.baseline and label not in self.decisions]

    def _decide_all(self) -> None:
        base_failure = self.failures.get(self.baseline)
        for label in self.running():
            if label in self.failures:
                self.decisions[label] = Decision(FAILED, self.failures[label],
                                                 self._seeds_of(label))
            elif base_failure is not None:
                self.decisions[label] = Decision(FAILED, f"the baseline's {base_failure}",
                                                 self._seeds_of(label))
            else:
                decision = decide(self.rule, self.values[label], self.values[self.baseline])
                if decision.final:
                    self.decisions[label] = decision

    def _next_round(self) -> None:
        if self.round:
            self._decide_all()
        queue: list[tuple[str, int]] = []
        wanted: set[int] = set()
        for label in self.running():
            seed = next((s for s in self.rule.seeds if s not in self.values[label]), None)
            if seed is None:  # every seed ran and it is still undecided: decide() says why
                continue
            queue.append((label, seed))
            wanted.add(seed)
        base = [(self.baseline, seed) for seed in self.rule.seeds
                if seed in wanted and seed not in self.values[self.baseline]]
        self.queue = base + queue
        if self.queue:
            self.round += 1
        self._write()

    def _seeds_of(self, label: str) -> tuple[int, ...]:
        return tuple(s for s in self.rule.seeds if s in self.values[label])

    # ------------------------------------------------------------------ the decisions file
    def record(self) -> dict[str, Any]:
        """What :data:`DECISIONS_FILE` holds: the rule, and each config's seeds and state."""
        configs = {}
        for label in self.variants:
            seeds = list(self._seeds_of(label))
            if label == self.baseline:
                state, reason = BASELINE, (self.failures.get(label)
                                           or f"ran every seed a config needed ({len(seeds)})")
            elif label in self.decisions:
                state, reason = self.decisions[label].state, self.decisions[label].reason
            else:
                state, reason = UNDECIDED, f"running: {len(seeds)} seed(s) so far"
            configs[label] = {"state": state, "reason": reason, "seeds_run": seeds,
                              "values": {str(s): self.values[label][s] for s in seeds}}
        return {"schema": DECISIONS_SCHEMA, "rule": self.rule.describe(),
                "parameters": self.rule.as_dict(), "baseline": self.baseline,
                "round": self.round, "finished": self.finished, "configs": configs}

    def _write(self) -> None:
        if self.experiment_dir is None:
            return
        from sweeps.results import ExperimentStore

        ExperimentStore(self.experiment_dir).write_json(self.record(), DECISIONS_FILE)


def read_decisions(experiment_dir: str) -> dict[str, Any] | None:
    """The experiment's :data:`DECISIONS_FILE`, or None for a sweep with a plain seed list."""
    from sweeps.results import ExperimentStore

    record = ExperimentStore(experiment_dir).read_json(DECISIONS_FILE)
    return record if record and record.get("schema") == DECISIONS_SCHEMA else None


def with_stop_columns(summary: Any, record: Mapping[str, Any] | None) -> Any:
    """The per-config summary with ``seeds_run``, ``decision`` (better, not better, failed,
    baseline, undecided) and ``stop_reason`` from the decisions record (unchanged without one)."""
    if record is None or summary is None or summary.empty:
        return summary
    configs = record.get("configs", {})
    summary = summary.copy()
    summary["seeds_run"] = [len(configs.get(label, {}).get("seeds_run", []))
                            for label in summary["label"]]
    summary["decision"] = [configs.get(label, {}).get("state", "-") for label in summary["label"]]
    summary["stop_reason"] = [configs.get(label, {}).get("reason", "-")
                              for label in summary["label"]]
    return summary


__all__ = ["SequentialSearcher", "DECISIONS_FILE", "read_decisions", "with_stop_columns",
           "BETTER", "NOT_BETTER"]
