"""Hashed n-gram embeddings (techniques.md 7.4 BigramHash, 7.5 TrigramHash): a table indexed by a
hash of the current and previous token ids, projected to the model width, scaled, and added to
the token embedding before the input norm.

Hash (int32 arithmetic on the ids, as the seeds' code; not R-2026-03-20's README formula):
``idx_t = (36313 x_t XOR 27191 x_{t-1} [XOR 51497 x_{t-2}]) mod (B - 1)``; the first n - 1
positions of each sequence take the reserved bucket B - 1. The table starts at zero, so the module
adds exactly nothing at init.

Roles, as the seeds: the table trains with the token-embedding Adam group; the projection with
Muon (#137, #326) or the scalar Adam group (#635: ``BIGRAM_PROJ_OPTIMIZER=adam``); the scale
with scalar Adam. Export: under QUANT_FORMAT=int6 the table (and the projection, when larger than
the float passthrough) is stored int6 (#326, #635); under int8 the reference int8 rows (#137).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from golf.knobs import Checks, knob
from golf.model.layers import CastedLinear
from golf.model.roles import ParamRole, Role
from golf.quant.policy import TensorFormat
from golf.techniques.base import Technique, TrainingRun
from golf.techniques.inert import warn_inert_unless

if TYPE_CHECKING:
    from golf.config import GolfConfig

HASH_MULTIPLIERS = (36313, 27191, 51497)
"""Multiplier of x_t, x_{t-1}, x_{t-2}."""
PROJ_OPTIMIZERS = ("muon", "adam")


def ngram_buckets(ids: Tensor, buckets: int, order: int) -> Tensor:
    """The bucket of every position of ``ids`` [B, T] for n-grams of ``order`` (2 or 3) tokens."""
    x = ids.to(torch.int32)
    mixed = HASH_MULTIPLIERS[0] * x[:, order - 1:]
    for back in range(1, order):
        mixed = torch.bitwise_xor(mixed, HASH_MULTIPLIERS[back] * x[:, order - 1 - back: x.size(1) - back])
    idx = torch.remainder(mixed, buckets - 1)
    first = torch.full_like(x[:, : order - 1], buckets - 1)
    return torch.cat((first, idx), dim=1).long()


class HashedNgramEmbedding(nn.Module):
    def __init__(
        self, order: int, buckets: int, dim: int, model_dim: int, scale_init: float, *,
        zero_proj: bool, proj_role: Role, device: torch.device,
    ) -> None:
        super().__init__()
        self.order, self.buckets = order, buckets
        self.table = nn.Embedding(buckets, dim, device=device)
        nn.init.zeros_(self.table.weight)
        self.proj = CastedLinear(dim, model_dim, zero_init=zero_proj).to(device)
        if zero_proj:
            nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(scale_init, dtype=torch.float32, device=device))
        self.proj_role = proj_role

    def parameter_roles(self) -> dict[str, ParamRole]:
        return {
            "table.weight": ParamRole(Role.EMBEDDING),
            "proj.weight": ParamRole(self.proj_role, "ngram" if self.proj_role is Role.MATRIX else ""),
            "scale": ParamRole(Role.CONTROL),
        }

    def forward(self, ids: Tensor) -> Tensor:
        h = self.proj(self.table(ngram_buckets(ids, self.buckets, self.order)))
        return self.scale.to(h.dtype) * h


def _int6_when_quantized(tensor_names: tuple[str, ...], cfg: GolfConfig):
    def policy(name: str, tensor: Tensor, role: ParamRole, proposed: TensorFormat) -> TensorFormat | None:
        if name in tensor_names and cfg.quant_format == "int6" and proposed.kind == "int" and tensor.ndim == 2:
            return TensorFormat.rows(6, cfg.quant_grid)
        return None

    return policy


@dataclass(frozen=True)
class BigramHashSettings:
    bigram_vocab_size: int = knob(
        0, "buckets of the BigramHash embedding (#137 4096, #326 10240, #635 1536); 0 = off", min=0,
    )
    bigram_dim: int = knob(128, "width of the BigramHash table before its projection", min=1)
    bigram_scale_init: float = knob(0.05, "initial scale of the BigramHash output")
    bigram_proj_optimizer: str = knob(
        "muon", "optimizer of the BigramHash projection: muon (#137, #326) or adam (#635, scalar Adam)",
        choices=PROJ_OPTIMIZERS,
    )


class BigramHash(Technique):
    name = "bigram_hash"
    title = "BigramHash: hashed (previous, current) token embedding added to the input"
    spec = "7.4"
    settings = BigramHashSettings
    attribute = "bigram"

    @classmethod
    def is_enabled(cls, cfg: GolfConfig) -> bool:
        return cfg.bigram_vocab_size > 0

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if cfg.bigram_vocab_size == 0:
            names = ["bigram_dim", "bigram_scale_init", "bigram_proj_optimizer"]
            warn_inert_unless(cfg, names, "BIGRAM_VOCAB_SIZE>0", checks)
        elif cfg.bigram_vocab_size < 2:
            checks.error(f"BIGRAM_VOCAB_SIZE={cfg.bigram_vocab_size} leaves no hash bucket beside the "
                         "reserved first-position one: use at least 2 (the seeds use 1536-10240), or 0 for off")

    def _module(self, device: torch.device) -> HashedNgramEmbedding:
        cfg = self.cfg
        role = Role.MATRIX if cfg.bigram_proj_optimizer == "muon" else Role.CONTROL
        return HashedNgramEmbedding(2, cfg.bigram_vocab_size, cfg.bigram_dim, cfg.model_dim, cfg.bigram_scale_init,
                                    zero_proj=False, proj_role=role, device=device)

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        module = self._module(run.model.tok_emb.weight.device)
        run.model.embedding_adders[self.attribute] = module

    def export_policy(self, name: str, tensor: Tensor, role: ParamRole, proposed: TensorFormat) -> TensorFormat | None:
        names = tuple(f"embedding_adders.{self.attribute}.{p}.weight" for p in ("table", "proj"))
        return _int6_when_quantized(names, self.cfg)(name, tensor, role, proposed)

    def report(self) -> dict[str, Any]:
        return {"buckets": self.cfg.bigram_vocab_size, "dim": self.cfg.bigram_dim,
                "proj_optimizer": self.cfg.bigram_proj_optimizer}


@dataclass(frozen=True)
class TrigramHashSettings:
    trigram_enabled: bool = knob(False, "add a hashed trigram embedding (S635v1)", aliases=("USE_TRIGRAMHASH",))
    trigram_vocab_size: int = knob(4096, "buckets of the TrigramHash embedding", min=2)
    trigram_dim: int = knob(128, "width of the TrigramHash table before its projection", min=1)
    trigram_scale_init: float = knob(0.03, "initial scale of the TrigramHash output")


class TrigramHash(Technique):
    name = "trigram_hash"
    title = "TrigramHash: hashed (x_{t-2}, x_{t-1}, x_t) embedding added to the input (S635v1)"
    spec = "7.5"
    settings = TrigramHashSettings
    toggle = "trigram_enabled"
    attribute = "trigram"

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        cfg = self.cfg
        # S635v1: zero table and zero projection (a Muon matrix).
        module = HashedNgramEmbedding(3, cfg.trigram_vocab_size, cfg.trigram_dim, cfg.model_dim,
                                      cfg.trigram_scale_init, zero_proj=True, proj_role=Role.MATRIX,
                                      device=run.model.tok_emb.weight.device)
        run.model.embedding_adders[self.attribute] = module

    def export_policy(self, name: str, tensor: Tensor, role: ParamRole, proposed: TensorFormat) -> TensorFormat | None:
        names = tuple(f"embedding_adders.{self.attribute}.{p}.weight" for p in ("table", "proj"))
        return _int6_when_quantized(names, self.cfg)(name, tensor, role, proposed)

    def report(self) -> dict[str, Any]:
        return {"buckets": self.cfg.trigram_vocab_size, "dim": self.cfg.trigram_dim}
