"""Learning curves of one trial: ``train_loss`` and in-training ``val_bpb`` against the step.

They come from the trial's ``train.log`` through :class:`sweeps.logparse.LogParser`, so every
trainer whose log the parser reads gets its curves. A log may hold several training runs (a retry
that trained again from the start appends to the same file); like the parser's summary, the curves
describe the **last** run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sweeps.logparse import LogParser

__all__ = ["LearningCurves", "curves_from_lines", "curves_from_text"]

# The parser's line breaks (str.splitlines would also split on form feeds and the like).
_LINE_BREAK = re.compile(r"\r\n?|\n")


@dataclass
class LearningCurves:
    """Points of the last training run in a log, in log order."""

    train_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_bpb: list[float] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.train_steps and not self.val_steps


def curves_from_lines(lines: Iterable[str]) -> LearningCurves:
    """The learning curves of the last training run among ``lines``."""
    parser = LogParser()
    curves = LearningCurves()
    previous: tuple[int, int] | None = None
    for line in lines:
        for event in parser.feed(line):
            if event.kind not in ("train", "val"):
                continue
            step, total = event.values["step"], event.values["total"]
            # The parser's own rule for a new run: the step counter goes back or the planned
            # total changes. What the earlier run drew is then not this run's curve.
            if previous is not None and (step < previous[0] or total != previous[1]):
                curves = LearningCurves()
            previous = (step, total)
            if event.kind == "val":
                curves.val_steps.append(step)
                curves.val_bpb.append(event.values["val_bpb"])
            elif event.values.get("train_loss") is not None:
                curves.train_steps.append(step)
                curves.train_loss.append(event.values["train_loss"])
    return curves


def curves_from_text(text: str) -> LearningCurves:
    """The learning curves of the last training run in a whole log held in a string."""
    return curves_from_lines(_LINE_BREAK.split(text))
