"""The technique protocol (DESIGN.md contract 4).

A technique is one class in one module that owns its config section (a frozen dataclass of knobs,
composed into :class:`golf.config.GolfConfig`), its checks, and the hook points it uses. The
training recipe (:meth:`golf.train.Trial.run`) calls the hooks of every active technique in
registry order and never names one. Every hook has a no-op default, so a technique implements
only what it uses:

========================  ================================================================
``check`` (classmethod)   errors for settings that cannot run, warnings for settings that
                          have no effect; before any compute, on the driver too
``override_roles``        change the role of a parameter (its optimizer group, weight decay
                          and export format follow)
``export_policy``         change the stored format of one tensor
``quantized_codes``       supply the integer codes of one tensor (GPTQ, clip search, pruning)
``export_artifact``       pack the artifact itself (fitting a byte target)
``on_model``              change the model once it is built, before compile and DDP
``artifact_state``        the state the artifact stores, from the model's (unbank banks)
``model_state``           the model's state from an artifact's (the inverse)
``warmup_future``         switch on, for extra warmup steps, what training switches on later
                          (so its graph is compiled before the clock starts); undone after
``on_train_start``        after warmup-and-restore, before step 0
``before_step``           before each optimizer step (step, LR scale, budget fraction)
``train_seq_len``         the sequence length of the step's batches (after before_step)
``warmup_seq_lens``       other sequence lengths the warmup steps must run, so each is compiled
``after_step``            after each optimizer step
``end_of_training``       offer or choose final weights (:class:`Candidates`)
``evaluators``            final evaluations of the round-tripped artifact
``report``                what it actually did, into result.json["techniques"]
========================  ================================================================

A switch flipped in a step hook must be a tensor write (techniques.md 2.3): a Python attribute read
inside a compiled graph is baked in at the first trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from golf.knobs import Checks
from golf.model.roles import ParamRole, RoleMap

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.distributed import DistContext
    from golf.evaluate import EvalResult, Evaluator
    from golf.optim import OptimizerSet
    from golf.quant.compress import CodecSpec
    from golf.quant.export import ExportStats
    from golf.quant.policy import Codes, ExportPolicy, TensorFormat


@dataclass(frozen=True)
class Progress:
    """Where training stands at a step hook; the same on every rank.

    In ``before_step``, ``step`` is the index of the step about to run and ``budget_fraction``
    the fraction of the training budget spent before it. In ``after_step``, ``step`` counts the
    steps completed (the step just taken is ``step - 1``) and ``budget_fraction`` includes it.
    ``lr_scale`` is the schedule's multiplier for the step in question in both.
    """

    step: int
    lr_scale: float
    budget_fraction: float
    elapsed_ms: float


@dataclass
class TrainingRun:
    """What a technique's hooks may read and act on."""

    cfg: GolfConfig
    ctx: DistContext
    log: Callable[[str], None]
    model: nn.Module
    """The plain module (not compiled, not DDP-wrapped): weights, switches, averaging."""
    roles: RoleMap = field(default_factory=dict)
    optimizers: OptimizerSet | None = None
    shared: dict[str, Any] = field(default_factory=dict)
    """State one technique publishes for a later one in registry order (EMA's shadow weights,
    which SWA may average)."""
    calibration_batches: Callable[[int], Iterator[Tensor]] | None = None
    """``calibration_batches(n)``: n fresh batches of training input tokens ``[batch, seq]`` on the
    model's device (this rank's share), for statistics taken after training (GPTQ's Hessians);
    None where the recipe has no training data (eval-only)."""


class Candidates:
    """Final weights on offer at the end of training: the raw weights and what averaging made.

    Techniques that average offer a full state_dict (on CPU, the model's dtypes) under their name;
    the weight-choice technique picks one and loads it with :meth:`use`. ``score`` evaluates a candidate on the
    validation set, so it is handed only to a technique whose flag says it may look there.
    """

    def __init__(self, model: nn.Module, score: Callable[[dict[str, Tensor]], EvalResult]) -> None:
        self.model = model
        self.offered: dict[str, dict[str, Tensor]] = {}
        self.applying: dict[str, str] = {}
        self._score = score
        self.scores: dict[str, EvalResult] = {}
        self.chosen: str | None = None
        """The name of the candidate :meth:`use` loaded last (None: the raw weights stayed)."""

    def offer(self, name: str, state: dict[str, Tensor], applying: str = "") -> None:
        """``applying``: the log line to print if and where these weights are loaded."""
        self.offered[name] = state
        self.applying[name] = applying or f"{name}:applying {name} weights"

    def raw(self) -> dict[str, Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def score(self, name: str, state: dict[str, Tensor]) -> EvalResult:
        self.scores[name] = self._score(state)
        return self.scores[name]

    @torch.no_grad()
    def load(self, state: dict[str, Tensor]) -> None:
        self.model.load_state_dict(state, strict=True)

    def use(self, name: str, state: dict[str, Tensor]) -> None:
        """Load candidate ``name`` as the final weights ("raw" for the weights training ended with)."""
        self.load(state)
        self.chosen = name


class Technique:
    """Base class: every hook does nothing."""

    name: ClassVar[str]
    """Key in result.json["techniques"] and in `golf toggles`."""
    title: ClassVar[str]
    spec: ClassVar[str]
    """techniques.md section(s)."""
    settings: ClassVar[type | None] = None
    """The config section: a frozen dataclass of knobs (golf.knobs.knob)."""
    toggle: ClassVar[str | None] = None
    """The boolean field that switches the technique on; None = on by a value of its own knobs
    (``is_enabled`` says which) or, with ``always_on``, always."""
    always_on: ClassVar[bool] = False
    """Part of every run (the weight choice): not listed as a switched-on technique."""

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return True if cls.toggle is None else bool(getattr(cfg, cls.toggle))

    @classmethod
    def any_knob_set(cls, cfg: GolfConfig) -> bool:
        """Whether any knob of the section differs from its default: ``is_enabled`` for a technique
        that is a set of adjustments rather than one switch."""
        return any(getattr(cfg, name) != f.default for name, f in cls.settings.__dataclass_fields__.items())

    @classmethod
    def knob_names(cls) -> list[str]:
        if cls.settings is None:
            return []
        return list(cls.settings.__dataclass_fields__)

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        """Default: when off, every knob of the section that differs from its default is inert."""
        if cls.toggle is None or cls.is_enabled(cfg):
            return
        warn_inert(cfg, cls, [k for k in cls.knob_names() if k != cls.toggle], checks)

    def __init__(self, cfg: GolfConfig) -> None:
        self.cfg = cfg

    # --- hooks -------------------------------------------------------------------------------
    def override_roles(self, roles: RoleMap) -> None:
        pass

    def export_policy(self, name: str, tensor: Tensor, role: ParamRole, proposed: TensorFormat) -> TensorFormat | None:
        return None

    def quantized_codes(self, name: str, tensor: Tensor, fmt: TensorFormat, proposed: Codes | None) -> Codes | None:
        """The codes the artifact stores for a per-row integer tensor; ``proposed`` is what an
        earlier technique supplied (None: round-to-nearest). Return None to leave it."""
        return None

    def export_artifact(self, run: TrainingRun, state: dict[str, Tensor], roles: RoleMap, policy: ExportPolicy,
                        codec: CodecSpec, code_bytes: int) -> tuple[bytes, ExportStats] | None:
        """Pack the artifact (rank 0) instead of the plain ``pack_artifact``; None = no opinion. A
        pack that misses what it promised sets ``stats.target["shortfall_message"]``: the run stops
        with it once the artifact and train_state are written."""
        return None

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        """``export_format(name, tensor)`` is the final export format of a parameter."""

    def artifact_state(self, state: dict[str, Tensor], roles: RoleMap) -> tuple[dict[str, Tensor], RoleMap] | None:
        """The state_dict the artifact stores and the roles of its entries, from the model's own
        (Parallel Muon: per-layer 2-D weights in place of its banks); None = unchanged."""
        return None

    def model_state(self, state: dict[str, Tensor]) -> dict[str, Tensor] | None:
        """The inverse of :meth:`artifact_state`: the model's state_dict from an artifact's."""
        return None

    def warmup_future(self, run: TrainingRun) -> Callable[[], None] | None:
        """Switch on now what this technique switches on later in training (depth recurrence's
        layer order), for extra warmup steps that compile that graph before the clock starts;
        return what switches it back (called before the warmup's weights and optimizer state are
        restored). None: nothing changes later, or nothing a compiled graph would notice."""
        return None

    def on_train_start(self, run: TrainingRun) -> None:
        pass

    def before_step(self, progress: Progress, run: TrainingRun) -> None:
        pass

    def train_seq_len(self) -> int | None:
        """The sequence length of the coming step's training batches, asked after ``before_step``
        (the token count per step stays TRAIN_BATCH_TOKENS); None = no opinion (TRAIN_SEQ_LEN)."""
        return None

    def warmup_seq_lens(self) -> tuple[int, ...]:
        """Sequence lengths besides TRAIN_SEQ_LEN that training will use: the warmup steps run each,
        so a compiled model meets every shape before the clock starts."""
        return ()

    def after_step(self, progress: Progress, run: TrainingRun) -> None:
        pass

    def end_of_training(self, run: TrainingRun, candidates: Candidates) -> None:
        pass

    def evaluators(self) -> list[Evaluator]:
        return []

    def report(self) -> dict[str, Any]:
        return {}


def warn_inert(cfg: GolfConfig, technique: type[Technique], names: list[str], checks: Checks) -> None:
    """Warn about each of ``names`` set away from its default while ``technique`` is off."""
    from golf.config import field_spec, reference_value

    switch = field_spec(technique.toggle).env if technique.toggle else technique.name
    for name in names:
        spec = field_spec(name)
        value = getattr(cfg, name)
        if value != reference_value(checks, name):
            checks.warn(
                f"{spec.env}={spec.format(value)} has no effect while {switch}=0: "
                f"set {switch}=1 or drop {spec.env}"
            )
