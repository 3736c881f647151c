"""The active techniques of one run, called together at each hook point in registry order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from golf.model.roles import ParamRole, RoleMap
from golf.techniques.base import Candidates, Progress, Technique, TrainingRun

if TYPE_CHECKING:
    from golf.config import GolfConfig
    from golf.evaluate import Evaluator
    from golf.quant.compress import CodecSpec
    from golf.quant.export import ExportStats
    from golf.quant.policy import ExportPolicy, TensorFormat


class TechniqueSet:
    def __init__(self, cfg: GolfConfig, registry: Sequence[type[Technique]] | None = None) -> None:
        if registry is None:
            from golf.techniques import TECHNIQUES

            registry = TECHNIQUES
        self.cfg = cfg
        self.active: list[Technique] = [t(cfg) for t in registry if t.is_enabled(cfg)]

    def __iter__(self):
        return iter(self.active)

    def override_roles(self, roles: RoleMap) -> RoleMap:
        for technique in self.active:
            technique.override_roles(roles)
        return roles

    def export_policy(self, base: ExportPolicy) -> ExportPolicy:
        """``base`` with every active technique's per-tensor override appended, in order."""
        from dataclasses import replace

        overrides: list[Callable[[str, Tensor, ParamRole, TensorFormat], TensorFormat | None]] = [
            *base.overrides, *(t.export_policy for t in self.active)
        ]
        coders = [*base.coders, *(t.quantized_codes for t in self.active)]
        return replace(base, overrides=tuple(overrides), coders=tuple(coders))

    def export_artifact(self, run: TrainingRun, state: dict[str, Tensor], roles: RoleMap, policy: ExportPolicy,
                        codec: CodecSpec, code_bytes: int) -> tuple[bytes, ExportStats] | None:
        """The first active technique's own pack of the artifact, or None (the plain pack)."""
        for technique in self.active:
            packed = technique.export_artifact(run, state, roles, policy, codec, code_bytes)
            if packed is not None:
                return packed
        return None

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        for technique in self.active:
            technique.on_model(run, export_format)

    def artifact_state(self, state: dict[str, Tensor], roles: RoleMap) -> tuple[dict[str, Tensor], RoleMap]:
        """The state_dict the artifact stores and its entries' roles (unchanged unless a technique says)."""
        for technique in self.active:
            changed = technique.artifact_state(state, roles)
            if changed is not None:
                state, roles = changed
        return state, roles

    def model_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The model's state_dict from an artifact's: :meth:`artifact_state` undone, in reverse order."""
        for technique in reversed(self.active):
            changed = technique.model_state(state)
            if changed is not None:
                state = changed
        return state

    def warmup_future(self, run: TrainingRun) -> list[Callable[[], None]]:
        """Switch on every active technique's future state; the functions that switch each back."""
        undo = [technique.warmup_future(run) for technique in self.active]
        return [u for u in undo if u is not None]

    def on_train_start(self, run: TrainingRun) -> None:
        for technique in self.active:
            technique.on_train_start(run)

    def before_step(self, progress: Progress, run: TrainingRun) -> None:
        for technique in self.active:
            technique.before_step(progress, run)

    def train_seq_len(self, default: int) -> int:
        """The coming step's sequence length: the first active technique's answer, else ``default``."""
        for technique in self.active:
            seq_len = technique.train_seq_len()
            if seq_len is not None:
                return seq_len
        return default

    def warmup_seq_lens(self, default: int) -> list[int]:
        """Every sequence length training will use, ``default`` first, each once."""
        lengths = [default]
        for technique in self.active:
            lengths += [n for n in technique.warmup_seq_lens() if n not in lengths]
        return lengths

    def after_step(self, progress: Progress, run: TrainingRun) -> None:
        for technique in self.active:
            technique.after_step(progress, run)

    def end_of_training(self, run: TrainingRun, candidates: Candidates) -> None:
        for technique in self.active:
            technique.end_of_training(run, candidates)

    def evaluators(self) -> list[Evaluator]:
        return [e for technique in self.active for e in technique.evaluators()]

    def report(self) -> dict[str, Any]:
        """result.json["techniques"]: every registered technique, with what the active ones did."""
        from golf.techniques import TECHNIQUES

        active = {type(t).name: t for t in self.active}
        out: dict[str, Any] = {}
        for technique in TECHNIQUES:
            if technique.toggle is None and technique.name not in active:
                continue
            entry: dict[str, Any] = {"enabled": technique.name in active}
            if technique.name in active:
                entry.update(active[technique.name].report())
            out[technique.name] = entry
        return out
