"""Full-Hessian GPTQ (techniques.md 3.4) and the mixed int5/int6 allocation it enables (3.5).

At the end of training (after the final weights are chosen), forward hooks on every linear layer
the export stores on a per-row grid collect ``H = mean over batches of X^T X`` from
``GPTQ_CALIBRATION_BATCHES`` batches: fresh training batches (the recipe's
``TrainingRun.calibration_batches``; #1260) or, with ``GPTQ_CALIBRATION=self_generated``, sequences
the model samples itself at temperature 0.8 (R-2026-03-25 / #1019: no training data after the
window). Each matrix is then quantized by :func:`golf.quant.gptq.gptq_codes` (dead columns, damping,
act-order, Cholesky error compensation in blocks of ``GPTQ_BLOCK_SIZE``) and those codes are what
the artifact stores. With a wallclock cap this must happen inside ``GPTQ_RESERVE_SECONDS``, which
the LR schedule subtracts from training; the time taken is logged and reported against it.

``MIXED_QUANT=1``: the matrices are ranked by trace(H) (their total squared input, #1260's
sensitivity); the ``N_INT6_LAYERS`` most sensitive keep their width, the rest drop to int5.

QAT x GPTQ (techniques.md 9): weights trained for round-to-nearest may lose under GPTQ's codes. With
QAT on, GPTQ still runs, and the log and report give its calibration-batch output error against
round-to-nearest's, so the interaction is measured rather than hidden.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from golf.evaluate import autocast_for
from golf.knobs import Checks, knob
from golf.model.layers import CastedLinear
from golf.model.roles import ParamRole
from golf.quant.export import quantize_tensor
from golf.quant.gptq import clip_search_codes, gptq_codes
from golf.quant.policy import Codes, TensorFormat
from golf.techniques.base import Candidates, Technique, TrainingRun, warn_inert

if TYPE_CHECKING:
    from golf.config import GolfConfig

CALIBRATION_SOURCES = ("train", "self_generated")
MIXED_LOW_BITS = 5
GENERATION_TEMPERATURE = 0.8


@dataclass(frozen=True)
class GptqSettings:
    gptq_enabled: bool = knob(False, "full-Hessian GPTQ of the per-row integer matrices after training (#1260)")
    gptq_calibration_batches: int = knob(
        64, "batches (train) or sampled sequences (self_generated) the Hessians are averaged over", min=1,
    )
    gptq_calibration: str = knob(
        "train", "Hessians from fresh training batches (#1260) or from sequences the model samples itself "
        "(R-2026-03-25 / #1019)", choices=CALIBRATION_SOURCES,
    )
    gptq_block_size: int = knob(128, "columns per lazy-update block", min=1)
    gptq_act_order: bool = knob(True, "quantize columns in descending diag(H) order")
    mixed_quant: bool = knob(
        False, "GPTQ matrices outside the N_INT6_LAYERS most sensitive (by trace(H)) are stored as int5 (#1260)",
    )
    n_int6_layers: int = knob(32, "MIXED_QUANT: how many of the most sensitive matrices keep their width", min=0)


class Gptq(Technique):
    name = "gptq"
    title = "full-Hessian GPTQ with calibration inside the reserved time; mixed int5/int6 by trace(H)"
    spec = "3.4-3.5"
    settings = GptqSettings
    toggle = "gptq_enabled"

    @classmethod
    def check(cls, cfg: GolfConfig, world_size: int, checks: Checks) -> None:
        if not cfg.gptq_enabled:
            warn_inert(cfg, cls, [k for k in cls.knob_names() if k != cls.toggle], checks)
            return
        if cfg.max_wallclock_seconds > 0 and cfg.gptq_reserve_seconds <= 0:
            checks.error(
                f"GPTQ_ENABLED=1 with MAX_WALLCLOCK_SECONDS={cfg.max_wallclock_seconds} needs GPTQ_RESERVE_SECONDS>0: "
                "its calibration uses training data, so it must run inside the training budget (#1260: 10)"
            )
        if cfg.parallel_muon:
            checks.error(
                "GPTQ_ENABLED=1 with PARALLEL_MUON=1 is not supported yet: GPTQ quantizes each block linear's own "
                "weight, and the banks replace those with slices of a 3-D parameter; turn one of them off"
            )
        if cfg.mixed_quant and cfg.qat_enabled:
            checks.error(
                "MIXED_QUANT=1 with QAT_ENABLED=1: QAT fixes each matrix's width before training (QAT_BITS_ATTN, "
                "QAT_BITS_MLP) and the mixed allocation would store some on another grid; keep one"
            )
        if not cfg.mixed_quant:
            warn_inert(cfg, cls, ["n_int6_layers"], checks)
        if cfg.quant_keep_float_max_numel >= cfg.model_dim * max(cfg.model_dim, cfg.mlp_hidden):
            checks.error(
                f"GPTQ_ENABLED=1 but no matrix exceeds QUANT_KEEP_FLOAT_MAX_NUMEL={cfg.quant_keep_float_max_numel}: "
                "every one is stored as a float, so there is nothing to quantize; lower it or turn GPTQ off"
            )

    def __init__(self, cfg: GolfConfig) -> None:
        super().__init__(cfg)
        self.export_format: Callable[[str, Tensor], TensorFormat] | None = None
        self.codes: dict[str, Codes] = {}
        self.source: dict[str, Tensor] = {}
        self.hessians: dict[str, Tensor] = {}
        self.narrower: dict[tuple[str, int], Codes] = {}
        self.bits: dict[str, int] = {}
        self.traces: dict[str, float] = {}
        self.low_bits: set[str] = set()
        self.fallbacks: list[str] = []
        self.dead_columns = 0
        self.seconds: float | None = None
        self.output_err = 0.0
        self.rtn_output_err = 0.0
        self.tokens = 0

    # --- formats: the mixed allocation drops the least sensitive matrices to int5 ----------------
    def export_policy(self, name: str, tensor: Tensor, role: ParamRole, proposed: TensorFormat) -> TensorFormat | None:
        if name in self.low_bits and proposed.kind == "int" and proposed.bits > MIXED_LOW_BITS:
            return TensorFormat.rows(MIXED_LOW_BITS, proposed.grid, proposed.clip)
        return None

    def on_model(self, run: TrainingRun, export_format: Callable[[str, Tensor], TensorFormat]) -> None:
        self.export_format = export_format

    def targets(self, model: nn.Module) -> dict[str, CastedLinear]:
        """The linear layers whose weights the export stores on a per-row integer grid."""
        assert self.export_format is not None, "on_model runs before end_of_training"
        out = {}
        for module_name, module in model.named_modules():
            if isinstance(module, CastedLinear):
                fmt = self.export_format(f"{module_name}.weight", module.weight)
                if fmt.kind == "int" and fmt.scheme == "per_row" and module.weight.ndim == 2:
                    out[f"{module_name}.weight"] = module
        return out

    # --- calibration ------------------------------------------------------------------------
    def calibration(self, run: TrainingRun) -> Iterator[Tensor]:
        n = self.cfg.gptq_calibration_batches
        if self.cfg.gptq_calibration == "self_generated":
            return self_generated_batches(run.model, n, self.cfg.train_seq_len, self.cfg.vocab_size,
                                          run.ctx.device, seed=self.cfg.seed + run.ctx.rank)
        if run.calibration_batches is None:
            raise ValueError(
                "GPTQ_CALIBRATION=train needs training batches, but this run has none to give "
                "(TrainingRun.calibration_batches is unset): use GPTQ_CALIBRATION=self_generated"
            )
        return run.calibration_batches(n)

    @torch.no_grad()
    def collect_hessians(self, run: TrainingRun, modules: dict[str, CastedLinear]) -> dict[str, Tensor]:
        hessians = {name: torch.zeros(m.in_features, m.in_features, device=m.weight.device) for name, m in modules.items()}

        def hook(name: str) -> Callable[..., None]:
            def accumulate(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
                x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
                hessians[name].addmm_(x.T, x)
            return accumulate

        handles = [m.register_forward_pre_hook(hook(name)) for name, m in modules.items()]
        model = run.model
        was_training = model.training
        model.eval()
        batches = 0
        try:
            for tokens in self.calibration(run):
                with autocast_for(run.ctx.device):
                    model.logits(tokens)
                batches += 1
                self.tokens += int(tokens.numel())
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        return {name: h / max(batches, 1) for name, h in hessians.items()}

    def end_of_training(self, run: TrainingRun, candidates: Candidates) -> None:
        cfg = self.cfg
        start = time.perf_counter()
        modules = self.targets(run.model)
        hessians = self.collect_hessians(run, modules)
        self.hessians = hessians
        self.traces = {name: float(torch.trace(h)) for name, h in hessians.items()}
        # The sensitivity a byte target drops bits by (techniques.md 3.5: trace(H)).
        run.shared["hessian_trace"] = dict(self.traces)
        if cfg.mixed_quant:
            ranked = sorted(self.traces, key=lambda name: (-self.traces[name], name))
            self.low_bits = set(ranked[cfg.n_int6_layers:])
        for name, module in modules.items():
            fmt = self.export_format(name, module.weight)
            # On the weight's device (GPTQ's column loop is slow on a CPU at full scale); the snapshot
            # kept on the CPU is what the export's weights must equal.
            w = module.weight.detach().float().clone()
            found = gptq_codes(w, hessians[name], fmt.bits, fmt.grid, block_size=cfg.gptq_block_size,
                               reorder=cfg.gptq_act_order)
            if found is None:  # H not positive definite even damped: #1260's clip-search fallback
                self.fallbacks.append(name)
                lite = clip_search_codes(w, fmt.bits, fmt.grid)
                q, scale = lite.q.cpu(), lite.scale.cpu()
            else:
                q, scale = found.q, found.scale
                self.dead_columns += found.dead_columns
            self.codes[name] = Codes(q, scale, "gptq")
            self.source[name], self.bits[name] = w.cpu(), fmt.bits
            self.output_err += output_error(w, q.to(w.device), scale.to(w.device), hessians[name])
            q_rtn, s_rtn = quantize_tensor(name, w, fmt)
            self.rtn_output_err += output_error(w, q_rtn, s_rtn, hessians[name])
        self.seconds = time.perf_counter() - start
        ratio = self.output_err / self.rtn_output_err if self.rtn_output_err > 0 else float("nan")
        mixed = f" int5:{len(self.low_bits)}" if cfg.mixed_quant else ""
        run.log(f"gptq: matrices:{len(self.codes)}{mixed} calibration:{cfg.gptq_calibration} tokens:{self.tokens} "
                f"time:{self.seconds:.1f}s reserve:{cfg.gptq_reserve_seconds}s output_err_vs_rtn:{ratio:.4f} "
                f"fallbacks:{len(self.fallbacks)} dead_columns:{self.dead_columns}")
        if cfg.qat_enabled:
            run.log(f"gptq:warning QAT trained these weights for round-to-nearest; GPTQ's calibration output error "
                    f"is {ratio:.4f}x round-to-nearest's (techniques.md 9): compare the roundtrip val_bpb with GPTQ off")
        if cfg.max_wallclock_seconds > 0 and self.seconds > cfg.gptq_reserve_seconds:
            run.log(f"gptq:warning took {self.seconds:.1f}s, more than GPTQ_RESERVE_SECONDS={cfg.gptq_reserve_seconds}: "
                    "training plus calibration ran past MAX_WALLCLOCK_SECONDS; raise the reserve")

    def quantized_codes(self, name: str, tensor: Tensor, fmt: TensorFormat, proposed: Codes | None) -> Codes | None:
        codes = self.codes.get(name)
        if codes is None:
            return None
        # The codes belong to the weights GPTQ saw; anything else would store a different model.
        if not torch.equal(tensor.detach().float().cpu(), self.source[name]):
            raise ValueError(
                f"GPTQ's codes for {name!r} were computed for other weights: a technique changed the weights "
                "after GPTQ; it must come before GPTQ in the registry"
            )
        if fmt.bits != self.bits[name]:
            # A byte target took a bit from this matrix: GPTQ again on its Hessian at the new width.
            key = (name, fmt.bits)
            if key not in self.narrower:
                hessian = self.hessians[name]
                w = self.source[name].to(hessian.device)
                found = gptq_codes(w, hessian, fmt.bits, fmt.grid,
                                   block_size=self.cfg.gptq_block_size, reorder=self.cfg.gptq_act_order)
                lite = found or clip_search_codes(w, fmt.bits, fmt.grid)
                self.narrower[key] = Codes(lite.q.cpu(), lite.scale.cpu(), "gptq")
            return self.narrower[key]
        return codes

    def report(self) -> dict[str, Any]:
        cfg = self.cfg
        out: dict[str, Any] = {
            "calibration": cfg.gptq_calibration, "calibration_batches": cfg.gptq_calibration_batches,
            "calibration_tokens": self.tokens, "block_size": cfg.gptq_block_size, "act_order": cfg.gptq_act_order,
            "matrices": sorted(self.codes), "fallbacks": self.fallbacks, "dead_columns": self.dead_columns,
            "seconds": self.seconds, "reserve_seconds": cfg.gptq_reserve_seconds,
            "output_err": self.output_err, "rtn_output_err": self.rtn_output_err,
        }
        if cfg.mixed_quant:
            out["int5"] = sorted(self.low_bits)
            out["trace_h"] = dict(sorted(self.traces.items()))
        if cfg.qat_enabled:
            out["qat_interaction"] = {"output_err_vs_rtn": self.output_err / self.rtn_output_err
                                      if self.rtn_output_err > 0 else None}
        return out


def output_error(w: Tensor, q: Tensor, scale: Tensor, hessian: Tensor) -> float:
    """``tr((W - W_hat) H (W - W_hat)^T)``: the layer's mean squared output error per calibration
    batch, for the codes ``q`` at stored scales ``scale``."""
    delta = w.float() - q.float() * scale.float().unsqueeze(-1)
    return float(torch.einsum("ri,ij,rj->", delta, hessian.float(), delta))


@torch.no_grad()
def self_generated_batches(model: nn.Module, n: int, seq_len: int, vocab_size: int, device: torch.device,
                           seed: int, per_batch: int = 8) -> Iterator[Tensor]:
    """``n`` sequences of ``seq_len`` tokens the model samples itself at temperature 0.8, from a
    random first token, yielded in batches of ``per_batch``: calibration that reads no data."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        remaining = n
        while remaining > 0:
            rows = min(per_batch, remaining)
            tokens = torch.randint(0, vocab_size, (rows, 1), generator=generator)
            for _ in range(seq_len - 1):
                with autocast_for(device):
                    logits = model.logits(tokens.to(device))[:, -1].float().cpu()
                probs = torch.softmax(logits / GENERATION_TEMPERATURE, dim=-1)
                tokens = torch.cat([tokens, torch.multinomial(probs, 1, generator=generator)], dim=1)
            remaining -= rows
            yield tokens.to(device)
    finally:
        model.train(was_training)
