"""The technique registry: every technique golf carries, in the order its hooks run.

Order matters where techniques meet: QAT's ``on_model`` reads the final export format of each
weight, so it runs after every technique that changes roles or export formats; the averaging
techniques offer their weights before :class:`~golf.techniques.weight_choice.WeightChoice`
picks among them.
"""

from __future__ import annotations

from golf.techniques.base import Candidates, Progress, Technique, TrainingRun, warn_inert
from golf.techniques.ema import Ema
from golf.techniques.lawa import Lawa
from golf.techniques.qat import Qat
from golf.techniques.set import TechniqueSet
from golf.techniques.swa import Swa
from golf.techniques.weight_choice import WeightChoice

TECHNIQUES: tuple[type[Technique], ...] = (Qat, Lawa, Ema, Swa, WeightChoice)

# Config sections in registry order (golf.config composes GolfConfig from them).
SECTIONS: tuple[type, ...] = tuple(t.settings for t in TECHNIQUES if t.settings is not None)


def technique_named(name: str) -> type[Technique]:
    for technique in TECHNIQUES:
        if technique.name == name:
            return technique
    raise KeyError(f"no technique named {name!r}: known are {', '.join(t.name for t in TECHNIQUES)}")


__all__ = [
    "SECTIONS", "TECHNIQUES", "Candidates", "Progress", "Technique", "TechniqueSet", "TrainingRun",
    "technique_named", "warn_inert",
]
