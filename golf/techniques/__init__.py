"""The technique registry: every technique golf carries, in the order its hooks run.

Order matters where techniques meet: QAT's ``on_model`` reads the final export format of each
weight, so it runs after every technique that changes roles or export formats; the averaging
techniques offer their weights before :class:`~golf.techniques.weight_choice.WeightChoice`
picks among them.
"""

from __future__ import annotations

from golf.techniques.base import Candidates, Progress, Technique, TrainingRun, warn_inert
from golf.techniques.depth_recurrence import DepthRecurrence
from golf.techniques.ema import Ema
from golf.techniques.export_formats import ExportFormats
from golf.techniques.gated_attention import GatedAttention
from golf.techniques.gptq import Gptq
from golf.techniques.gptq_lite import GptqLite
from golf.techniques.hashed_ngrams import BigramHash, TrigramHash
from golf.techniques.lawa import Lawa
from golf.techniques.ln_scale import LnScale
from golf.techniques.lr_schedule import LrSchedule
from golf.techniques.mlp_activation import MlpActivation
from golf.techniques.ntk_rope import NtkRope
from golf.techniques.momentum_warmup import MomentumWarmup
from golf.techniques.muoneq import MuonEq
from golf.techniques.normuon import NorMuon
from golf.techniques.ortho_init import OrthoInit
from golf.techniques.parallel_muon import ParallelMuon
from golf.techniques.parallel_residual import ParallelResidual
from golf.techniques.partial_rope import PartialRope
from golf.techniques.polar_ns import PolarNs
from golf.techniques.pruning import MagnitudePruning, SelectivePruning
from golf.techniques.qat import Qat
from golf.techniques.resid_mix_init import ResidMixInit
from golf.techniques.seq_len_warmup import SeqLenWarmup
from golf.techniques.set import TechniqueSet
from golf.techniques.skip_gates import SkipGates
from golf.techniques.sliding_window import SlidingWindow
from golf.techniques.smear_gate import Smear
from golf.techniques.swa import Swa
from golf.techniques.ttt import Ttt
from golf.techniques.target_bytes import TargetBytes
from golf.techniques.value_embeddings import ValueEmbeddings
from golf.techniques.value_residual import ValueResidual
from golf.techniques.weight_choice import WeightChoice
from golf.techniques.weight_decay import WeightDecay
from golf.techniques.xsa import Xsa

TECHNIQUES: tuple[type[Technique], ...] = (
    # architecture: modules that add layers first, then per-block options, then the init that
    # must see every layer (OrthoInit), all before QAT reads the final export formats
    BigramHash, TrigramHash, Smear, MlpActivation, PartialRope, NtkRope, LnScale, ValueEmbeddings, ValueResidual,
    Xsa, GatedAttention, SkipGates, ParallelResidual, DepthRecurrence, ResidMixInit, OrthoInit,
    # parameter banks: after every block linear exists and is initialised, before QAT wraps them
    ParallelMuon,
    # optimizer and schedule: they change the optimizers and the step, never roles or formats
    WeightDecay, MomentumWarmup, MuonEq, NorMuon, PolarNs, LrSchedule, SeqLenWarmup,
    # export formats by role: before QAT, which trains on the final formats
    ExportFormats,
    Qat, Lawa, Ema, Swa, WeightChoice,
    # export: on the chosen final weights; magnitude pruning before GPTQ sees them, GPTQ's codes
    # before the clip search (which leaves supplied codes alone) and the +-1 pruning of the codes;
    # the byte target packs last, with every other technique's formats and codes in place
    MagnitudePruning, Gptq, GptqLite, SelectivePruning, TargetBytes,
    # evaluation: the final evaluators, in the order they run
    SlidingWindow, Ttt)

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
