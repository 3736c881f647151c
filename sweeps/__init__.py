"""golf sweeps: Ray Tune sweeps of Parameter Golf trials, their results, statistics and records.

What a sweep file needs::

    from sweeps import Asha, Sweep, main

    SWEEP = Sweep(name="my_idea", grid={"QAT_ENABLED": [0, 1]}, seeds=[1337, 42, 2024])

    if __name__ == "__main__":
        raise SystemExit(main(SWEEP))

and for notebooks: ``load_results(experiment_dir)`` (the per-trial table as a pandas DataFrame)
and ``summarize(table)`` (one row per config). Names are imported on first use, so importing a
submodule (``sweeps.logparse``) does not pull in Ray or pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Asha", "RunOptions", "Sequential", "Sweep", "load_results", "main", "run_sweep",
           "summarize"]

_EXPORTS = {
    "Asha": "sweeps.spec",
    "Sweep": "sweeps.spec",
    "Sequential": "sweeps.sequential",
    "RunOptions": "sweeps.experiment",
    "run_sweep": "sweeps.experiment",
    "load_results": "sweeps.results",
    "summarize": "sweeps.results",
}

if TYPE_CHECKING:  # pragma: no cover
    from sweeps.experiment import RunOptions, run_sweep
    from sweeps.results import load_results, summarize
    from sweeps.sequential import Sequential
    from sweeps.spec import Asha, Sweep


def main(sweep: Any, argv: Any = None) -> int:
    """Run a sweep file's ``SWEEP`` with the shared options (``--scale``, ``--seeds``, ...)."""
    from sweeps.cli import sweep_main

    return sweep_main(sweep, argv)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
