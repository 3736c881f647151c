"""Check a local sweep's data on the driver, before Ray starts.

When the trials run on this machine, their data is this machine's: a truncated shard, a shard with
a bad header, validation ids outside the vocabulary or a tokenizer that is not the right
SentencePiece model would fail every trial the same way. :func:`check_local_data` runs golf's own
:func:`golf.preflight.preflight` for each distinct data setting of the sweep's configs and reports
every problem at once, as a :class:`sweeps.spec.SpecError` (exit 2), before anything starts. On a
cluster the nodes' data is checked by each trial instead (golf exits 2 on it).
"""

from __future__ import annotations

import os
from typing import TextIO

from sweeps.spec import SpecError, SweepPlan


def runs_on_this_machine() -> bool:
    """Whether the sweep's trials will run here: a local Ray to be started, or one already running
    in this process whose only node is this machine."""
    if os.environ.get("RAY_ADDRESS"):
        return False
    import ray

    if not ray.is_initialized():
        return True
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    return len(nodes) == 1 and nodes[0].get("NodeManagerAddress") == ray.util.get_node_ip_address()


def check_local_data(plan: SweepPlan, out: TextIO) -> None:
    """Run golf's data checks for every config of a golf sweep that runs here; raise SpecError."""
    if not (plan.is_golf and plan.uses_data) or not runs_on_this_machine():
        return
    from golf.config import resolve
    from golf.data import DataError
    from golf.preflight import preflight

    data_env: dict[str, str] = {}
    if plan.demo_keys:
        from golf.corpus import build_demo
        from sweeps.trial import demo_root

        demo = build_demo(demo_root(), quiet=True)  # once here, so the trials find it ready
        print(f"demo corpus: {demo.data_path}", file=out)
        paths = {"DATA_PATH": str(demo.data_path), "TOKENIZER_PATH": str(demo.tokenizer_path)}
        data_env = {key: paths[key] for key in plan.demo_keys}
    found: dict[tuple, str | None] = {}  # data setting -> its problem (None: fine)
    problems: dict[str, list[str]] = {}
    for label, variant in zip(plan.labels, plan.variants):
        cfg = resolve(str(plan.stack), plan.scale, overrides={**plan.fixed_env, **data_env, **variant})
        key = (cfg.data_path, cfg.tokenizer_path, cfg.vocab_size, cfg.train_seq_len, cfg.val_max_tokens)
        if key not in found:
            try:
                preflight(cfg)
                found[key] = None
            except DataError as err:
                found[key] = str(err)
        if found[key] is not None:
            problems.setdefault(found[key], []).append(label)
    if problems:
        raise SpecError([f"{problem} [config {', '.join(labels)}]" for problem, labels in problems.items()])
