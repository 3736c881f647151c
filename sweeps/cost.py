"""What a sweep cost: accelerator-seconds per trial, per config and per sweep, and their price.

A trial holds its devices for its whole wall time, so its cost is devices x wall seconds, kept
apart for training and evaluation (the table's ``train_s`` and ``eval_s``):

* a GPU trial (``gpus`` > 0, the plan's gpus_per_trial): ``train_gpu_s = gpus x train_s``,
  ``eval_gpu_s = gpus x eval_s``, ``gpu_s`` their sum;
* a CPU trial (``gpus`` == 0) uses no GPU, so its GPU-seconds are 0 and what it used is reported
  as CPU-seconds instead: ``train_cpu_s = processes x train_s`` and so on, processes being the
  trial's ranks (``world_size``). CPU-seconds are never priced per GPU-hour, and a GPU trial's
  CPU-seconds are left missing (its GPUs are what it is billed for).

A part whose seconds are unknown (a trial that failed before evaluating) is missing (NaN), and a
total counts the parts that are known. With a price per GPU-hour, :func:`add_money_columns` adds
``train_cost``, ``eval_cost`` and ``cost`` (``gpu_s / 3600 x price``, in the price's currency).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "TRIAL_COST_COLUMNS",
    "CONFIG_COST_COLUMNS",
    "MONEY_COLUMNS",
    "add_cost_columns",
    "config_cost",
    "sweep_cost",
    "add_money_columns",
    "check_price",
]

_PARTS = ("train", "eval")
TRIAL_COST_COLUMNS = ("train_gpu_s", "eval_gpu_s", "gpu_s", "train_cpu_s", "eval_cpu_s", "cpu_s")
"""Per-trial cost columns, after the table's own (see the module docstring)."""
CONFIG_COST_COLUMNS = tuple(f"{column}_sum" for column in TRIAL_COST_COLUMNS)
"""Per-config sums over every trial of the config (finished or not: a failed trial cost too)."""
MONEY_COLUMNS = ("train_cost", "eval_cost", "cost")
SECONDS_PER_HOUR = 3600.0


def add_cost_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add :data:`TRIAL_COST_COLUMNS` to a results table (in place; also returned).

    Needs ``gpus``, ``world_size``, ``train_s`` and ``eval_s``; rows whose device count is unknown
    get NaN.
    """
    gpus = pd.to_numeric(frame["gpus"], errors="coerce").astype("float64")
    procs = pd.to_numeric(frame["world_size"], errors="coerce").astype("float64")
    on_gpu = gpus > 0
    on_cpu = gpus == 0
    seconds = {part: pd.to_numeric(frame[f"{part}_s"], errors="coerce").astype("float64")
               for part in _PARTS}
    for part in _PARTS:
        # A CPU trial used no GPU: 0 GPU-seconds, not unknown ones. A GPU trial's CPU time is not
        # what it is billed for, so its CPU-seconds stay missing.
        frame[f"{part}_gpu_s"] = (gpus * seconds[part]).where(on_gpu, np.nan).mask(on_cpu, 0.0)
        frame[f"{part}_cpu_s"] = (procs * seconds[part]).where(on_cpu, np.nan)
    for device in ("gpu", "cpu"):
        train, evaluation = frame[f"train_{device}_s"], frame[f"eval_{device}_s"]
        frame[f"{device}_s"] = train.add(evaluation, fill_value=0.0)  # NaN only when both are
    return frame


def config_cost(rows: pd.DataFrame) -> dict[str, float]:
    """The sums of :data:`TRIAL_COST_COLUMNS` over ``rows`` (NaN when no row knows a part)."""
    return {f"{column}_sum": float(rows[column].sum(min_count=1))
            for column in TRIAL_COST_COLUMNS}


def sweep_cost(frame: pd.DataFrame) -> dict[str, float]:
    """The whole table's totals, keyed like :func:`config_cost`."""
    return config_cost(frame)


def add_money_columns(frame: pd.DataFrame, price_per_gpu_hour: float,
                      suffix: str = "") -> pd.DataFrame:
    """A copy of a table (``suffix=""``) or summary (``suffix="_sum"``) with :data:`MONEY_COLUMNS`:
    its GPU-seconds x ``price_per_gpu_hour`` / 3600."""
    check_price(price_per_gpu_hour)
    out = frame.copy()
    out.attrs.update(frame.attrs)
    for money, seconds in zip(MONEY_COLUMNS, ("train_gpu_s", "eval_gpu_s", "gpu_s")):
        out[money] = out[f"{seconds}{suffix}"] / SECONDS_PER_HOUR * price_per_gpu_hour
    return out


def check_price(price: Any) -> float:
    """The price as a float, or ValueError naming the problem."""
    try:
        value = float(price)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"the price per GPU-hour must be a number >= 0 (e.g. 2.50), got {price!r}")
    return value
