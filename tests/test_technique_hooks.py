"""The technique protocol (DESIGN.md contract 4): a probe technique registered in a real golf.train
process records every hook call; the recipe must call each at the right moment, with the step,
LR scale and budget fraction the schedule gives, identically on every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from golf.config import resolve
from golf.optim.schedule import lr_scale

ITERATIONS = 6
PROBE_SCRIPT = textwrap.dedent('''
    """golf.train with a probe technique appended to the registry."""
    import json, os, sys
    import golf.techniques as registry
    from golf.techniques import Technique

    class Probe(Technique):
        name = "probe"
        title = "records every hook call"
        spec = "test"

        def __init__(self, cfg):
            super().__init__(cfg)
            self.calls = []
            self.rank = int(os.environ.get("RANK", "0"))

        def _record(self, hook, progress=None, **extra):
            entry = {"hook": hook, **extra}
            if progress is not None:
                entry.update(step=progress.step, lr_scale=progress.lr_scale,
                             budget_fraction=progress.budget_fraction)
            self.calls.append(entry)
            path = os.path.join(os.environ["RUN_DIR"], f"probe.rank{self.rank}.json")
            with open(path, "w") as f:
                json.dump(self.calls, f)

        def override_roles(self, roles):
            self._record("override_roles", params=len(roles))

        def on_model(self, run, export_format):
            fmt = export_format("blocks.0.attn.c_q.weight", run.model.blocks[0].attn.c_q.weight)
            self._record("on_model", compiled=hasattr(run.model, "_orig_mod"), c_q=str(fmt))

        def on_train_start(self, run):
            self._record("on_train_start", has_optimizers=run.optimizers is not None)

        def before_step(self, progress, run):
            self._record("before_step", progress)

        def after_step(self, progress, run):
            self._record("after_step", progress)

        def end_of_training(self, run, candidates):
            self._record("end_of_training", offered=sorted(candidates.offered))

        def evaluators(self):
            self._record("evaluators")
            return []

        def report(self):
            self._record("report")
            return {"hooks_seen": sorted({c["hook"] for c in self.calls})}

    registry.TECHNIQUES = (*registry.TECHNIQUES, Probe)
    from golf.train import main
    sys.exit(main())
''')


def run_probe(tmp_path: Path, demo, nproc: int) -> tuple[list[list[dict]], dict]:
    script = tmp_path / "probe_train.py"
    script.write_text(PROBE_SCRIPT)
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLF_", "QAT", "LAWA", "EMA", "SWA"))}
    env.update(GOLF_PRESET="smoke", DATA_PATH=str(demo.data_path), TOKENIZER_PATH=str(demo.tokenizer_path),
               RUN_DIR=str(run_dir), ITERATIONS=str(ITERATIONS), WARMUP_STEPS="1", VAL_LOSS_EVERY="0",
               WARMDOWN_ITERS="3", OMP_NUM_THREADS="1")
    if nproc == 1:
        command = [sys.executable, str(script)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    calls = [json.loads((run_dir / f"probe.rank{r}.json").read_text()) for r in range(nproc)]
    return calls, json.loads((run_dir / "result.json").read_text())


def check_calls(calls: list[dict], rank: int = 0) -> None:
    hooks = [c["hook"] for c in calls]
    # the recipe's order
    assert hooks[:3] == ["override_roles", "on_model", "override_roles"]
    assert hooks[3] == "on_train_start" and calls[3]["has_optimizers"]
    steps = hooks[4 : 4 + 2 * ITERATIONS]
    assert steps == ["before_step", "after_step"] * ITERATIONS
    # rank 0 writes the training record (with the report) before every rank evaluates the artifact
    assert hooks[4 + 2 * ITERATIONS :] == ["end_of_training", *(["report"] if rank == 0 else []), "evaluators"]
    # the model is seen before compile/DDP, with its export formats known
    assert calls[1]["compiled"] is False and calls[1]["c_q"] == "int8:per_row:floored:percentile"
    # step, LR scale (no wallclock cap: the last WARMDOWN_ITERS steps decay) and budget fraction
    cfg = resolve("smoke", overrides={"ITERATIONS": ITERATIONS, "WARMDOWN_ITERS": 3})
    before = [c for c in calls if c["hook"] == "before_step"]
    after = [c for c in calls if c["hook"] == "after_step"]
    for step, (b, a) in enumerate(zip(before, after)):
        assert (b["step"], a["step"]) == (step, step + 1)
        assert b["lr_scale"] == a["lr_scale"] == lr_scale(cfg, step, 0.0)
        assert b["budget_fraction"] == pytest.approx(step / ITERATIONS)
        assert a["budget_fraction"] == pytest.approx((step + 1) / ITERATIONS)
    assert [b["lr_scale"] for b in before] == [1.0, 1.0, 1.0, 1.0, 2 / 3, 1 / 3]


def test_every_hook_is_called_in_order_with_the_schedule_on_one_rank(tmp_path, demo_data):
    (calls,), result = run_probe(tmp_path, demo_data, 1)
    check_calls(calls)
    assert result["techniques"]["probe"]["hooks_seen"] == sorted(
        {"override_roles", "on_model", "on_train_start", "before_step", "after_step", "end_of_training", "report"})


@pytest.mark.slow
def test_two_gloo_ranks_see_the_same_hooks_with_the_same_progress(tmp_path, demo_data):
    calls, result = run_probe(tmp_path, demo_data, 2)
    for rank, rank_calls in enumerate(calls):
        check_calls(rank_calls, rank)
    assert [c for c in calls[0] if c["hook"] != "report"] == calls[1]
    assert result["world_size"] == 2
