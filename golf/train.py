"""One trial: data -> model -> train -> quantize -> evaluate (DESIGN.md contract 2).

Run it as ``torchrun --standalone --nproc_per_node=N -m golf.train`` with the config in the
environment (``golf train`` does that for one machine). The recipe is :meth:`Trial.run`; it prints
the challenge's own log lines, writes the compressed artifact before the final evaluation starts,
and ends with ``RUN_DIR/result.json``. Exit status 0 means every stage succeeded.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import io
import json
import math
import os
import platform
import random
import secrets
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import golf
from golf.config import ConfigError, GolfConfig, config_from_env, near_miss_env_keys, resolve, validate
from golf.contract import (
    ARTIFACT_FILE_KEY, ARTIFACT_SAVED_PREFIX, RESULT_FILE, RESULT_SCHEMA, SUBMISSION_SCRIPT, TRAIN_LOG_FILE,
    TRAIN_STATE_FILE,
)
from golf.data import DataError, DistributedTokenLoader, load_validation_tokens, shard_files
from golf.distributed import (
    DistContext, all_reduce, barrier, broadcast_object, init_distributed, shutdown, synchronize,
    world_size_from_env,
)
from golf.evaluate import (
    HEADLINE_RULE, EvalInputs, EvalResult, FinalEvaluation, StandardEvaluator, autocast_for, eval_budget, evaluate,
    pick_headline,
)
from golf.model import build_model, parameter_roles
from golf.model.attention import resolve_attention
from golf.model.roles import RoleMap
from golf.optim import (
    OptimizerSet, budget_fraction, build_optimizers, lr_scale, muon_momentum, training_budget_ms,
)
from golf.preflight import preflight
from golf.quant import (
    ArtifactSize, ExportFormat, code_bytes, codec_spec, pack_artifact, submission_code, unpack_artifact,
)
from golf.quant.policy import ExportPolicy, TensorFormat
from golf.runlog import RunLog, eprint, write_bytes_atomic, write_json_atomic
from golf.techniques import Candidates, Progress, TechniqueSet, TrainingRun
from golf.tokenizer import ByteCounter, build_byte_tables, check_vocab, load_tokenizer

# Fields that describe where and how a run executes rather than what was trained; an eval-only
# resume takes these from its own environment and everything else from the training run.
RUNTIME_FIELDS = (
    "data_path", "tokenizer_path", "run_id", "run_dir", "eval_only_from", "log_to_file", "device",
    "torch_compile", "attention",
)


class RunStopped(Exception):
    """The launcher asked the run to stop (SIGTERM), e.g. a scheduler stopping the trial."""


@dataclass
class TrainOutcome:
    steps: int = 0
    train_ms: float = 0.0
    stopped_early: bool = False


def export_format(cfg: GolfConfig) -> ExportFormat:
    return ExportFormat(
        quant=cfg.quant_format, codec=codec_spec(cfg.compressor, cfg.compressor_level, cfg.byte_shuffle),
        grid=cfg.quant_grid, keep_float_max_numel=cfg.quant_keep_float_max_numel,
    )


def export_policy(cfg: GolfConfig, techniques: TechniqueSet) -> ExportPolicy:
    """The export's base rules for the config's format, with every active technique's overrides."""
    return techniques.export_policy(export_format(cfg).base_policy())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


class Trial:
    def __init__(self, cfg: GolfConfig, stack: str, scale: str, ctx: DistContext, warnings: list[str] | None = None) -> None:
        self.cfg, self.stack, self.scale, self.ctx = cfg, stack, scale, ctx
        self.fmt = export_format(cfg)
        self.accum = cfg.grad_accum_for(ctx.world_size)
        self.techniques = TechniqueSet(cfg)
        self.policy = export_policy(cfg, self.techniques)
        run_id, run_dir = self._agree_on_run_dir()
        self.run_id, self.run_dir = run_id, run_dir
        self.log = RunLog(ctx.is_master, run_dir / TRAIN_LOG_FILE if cfg.log_to_file else None)
        self.warnings = list(warnings or [])
        self.result: dict[str, Any] = {
            "schema": RESULT_SCHEMA, "status": "running", "error": None, "run_id": run_id,
            "preset": stack, "scale": scale, "seed": cfg.seed, "world_size": ctx.world_size,
            "device": describe_device(ctx.device), "config": cfg.to_dict(), "warnings": self.warnings,
            "metrics": {"val_bpb": None, "val_loss": None, "headline_metric": None, "headline_rule": HEADLINE_RULE,
                        "evaluations": {}},
            "bytes": None, "timing": None, "techniques": {}, "artifact": None, "versions": versions(),
        }

    def _agree_on_run_dir(self) -> tuple[str, Path]:
        run_id = self.cfg.run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        run_dir = Path(self.cfg.run_dir or f"runs/{run_id}").resolve()
        run_id, run_dir = broadcast_object((run_id, str(run_dir)))
        if self.ctx.is_master:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        barrier()
        return run_id, Path(run_dir)

    # ------------------------------------------------------------------------------------------
    def run(self) -> None:
        """The recipe."""
        cfg = self.cfg
        seed_everything(cfg.seed)
        train_files, val_tokens, byte_counter = self.load_data()
        model = self.build_model()
        self.log_header(train_files, val_tokens)
        if cfg.eval_only_from:
            train_state = self.adopt_finished_training()
        else:
            self.training.optimizers = build_optimizers(self.base, cfg, self.roles)
            self.warmup_then_restore(model, train_files)
            outcome = self.train(model, train_files, val_tokens, byte_counter)
            self.choose_final_weights(val_tokens, byte_counter)
            train_state = self.export(outcome)
        self.evaluate_artifact(train_state, val_tokens, byte_counter)
        self.finish("ok")

    # --- data and model ------------------------------------------------------------------------
    def load_data(self) -> tuple[list[Path], torch.Tensor, ByteCounter]:
        cfg = self.cfg
        train_files = shard_files(cfg.data_path, "train")
        val_files = shard_files(cfg.data_path, "val")
        sp = load_tokenizer(cfg.tokenizer_path)
        check_vocab(sp, cfg.vocab_size, cfg.tokenizer_path)
        byte_counter = ByteCounter(build_byte_tables(sp, cfg.vocab_size), self.ctx.device)
        val_tokens = load_validation_tokens(val_files, cfg.train_seq_len, cfg.val_max_tokens)
        return train_files, val_tokens, byte_counter

    def build_model(self) -> nn.Module:
        """The model to train with (compiled and/or DDP-wrapped); ``self.base`` is the plain module."""
        built = assemble_model(self.cfg, self.ctx, self.techniques, self.policy, self.log)
        self.base, self.eval_model, self.roles, self.training = built.base, built.eval_model, built.roles, built.run
        self.kernel, self.compiled = built.kernel, built.compiled
        return built.train_model

    def log_header(self, train_files: list[Path], val_tokens: torch.Tensor) -> None:
        cfg, log = self.cfg, self.log
        token_lr = cfg.tied_embed_lr if cfg.tie_embeddings else cfg.embed_lr
        log(f"run_id:{self.run_id} run_dir:{self.run_dir} preset:{self.stack} scale:{self.scale}")
        for warning in self.warnings:
            log(f"warning: {warning}")
        log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={cfg.tokenizer_path}")
        log(f"train_loader:dataset:{Path(cfg.data_path).name} train_shards:{len(train_files)}")
        log(f"val_loader:shards pattern={Path(cfg.data_path) / 'fineweb_val_*.bin'} tokens:{val_tokens.numel() - 1}")
        log(f"model_params:{sum(p.numel() for p in self.base.parameters())}")
        log(f"world_size:{self.ctx.world_size} grad_accum_steps:{self.accum}")
        log(f"device:{describe_device(self.ctx.device)} attention:{self.kernel} compile:{self.compiled}")
        if self.ctx.cpu_threads is not None:
            log(self.ctx.cpu_threads.log_line)
        log(f"attention_mode:gqa num_heads:{cfg.num_heads} num_kv_heads:{cfg.num_kv_heads}")
        log(f"tie_embeddings:{cfg.tie_embeddings} embed_lr:{token_lr} "
            f"head_lr:{0.0 if cfg.tie_embeddings else cfg.head_lr} matrix_lr:{cfg.matrix_lr} scalar_lr:{cfg.scalar_lr}")
        log(f"train_batch_tokens:{cfg.train_batch_tokens} train_seq_len:{cfg.train_seq_len} "
            f"iterations:{cfg.iterations} warmup_steps:{cfg.warmup_steps} "
            f"max_wallclock_seconds:{cfg.max_wallclock_seconds:.3f}")
        switched_on = [t for t in self.techniques if not type(t).always_on]
        log(f"techniques:{','.join(type(t).name for t in switched_on) or 'none'} export:{self.fmt.label}")
        for technique in switched_on:
            knobs = " ".join(f"{k}={getattr(cfg, k)}" for k in type(technique).knob_names() if k != type(technique).toggle)
            log(f"{type(technique).name}:{knobs}")
        log(f"seed:{cfg.seed}")

    # --- training ------------------------------------------------------------------------------
    def train_step(self, model: nn.Module, loader: DistributedTokenLoader, seq_len: int | None = None) -> torch.Tensor:
        return train_step(model, loader, self.training.optimizers, self.cfg, self.accum, self.ctx.device, seq_len)

    def new_loader(self, train_files: list[Path]) -> DistributedTokenLoader:
        return DistributedTokenLoader(train_files, self.ctx.rank, self.ctx.world_size, self.ctx.device,
                                      vocab_size=self.cfg.vocab_size)

    def warmup_then_restore(self, model: nn.Module, train_files: list[Path]) -> None:
        """Run WARMUP_STEPS real steps (compilation, autotuning), then undo every effect of them."""
        cfg, base, optimizers = self.cfg, self.base, self.training.optimizers
        if cfg.warmup_steps <= 0:
            return
        initial_weights = {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}
        initial_optimizers = copy.deepcopy(optimizers.state_dicts())
        loader = self.new_loader(train_files)
        model.train()
        # Every sequence length training will use gets warmup steps, so each shape is compiled now.
        seq_lens = self.techniques.warmup_seq_lens(cfg.train_seq_len)

        def warmup_steps(label: str) -> None:
            for i in range(cfg.warmup_steps):
                self.train_step(model, loader, seq_lens[i % len(seq_lens)])
                optimizers.step()
                optimizers.zero_grad()
                if cfg.warmup_steps <= 20 or (i + 1) % 10 == 0 or i + 1 == cfg.warmup_steps:
                    self.log(f"{label}:{i + 1}/{cfg.warmup_steps}")

        warmup_steps("warmup_step")
        # As many again with every switch training flips later already on (depth recurrence's
        # layer order), so the graph met at the switch is compiled before the clock starts.
        undo = self.techniques.warmup_future(self.training)
        if undo:
            warmup_steps("future_warmup_step")
            for switch_back in reversed(undo):
                switch_back()
        base.load_state_dict(initial_weights, strict=True)
        optimizers.load_state_dicts(initial_optimizers)
        optimizers.zero_grad()

    def train(self, model: nn.Module, train_files: list[Path], val_tokens: torch.Tensor,
              byte_counter: ByteCounter) -> TrainOutcome:
        cfg, ctx, log, run = self.cfg, self.ctx, self.log, self.training
        loader = self.new_loader(train_files)  # a fresh stream: the warmup's batches are not reused
        # Statistics taken after training (GPTQ's Hessians) continue this stream: unseen training batches.
        run.calibration_batches = lambda n: (
            loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, self.accum)[0] for _ in range(n))
        cap_ms = training_budget_ms(cfg)
        outcome = TrainOutcome()
        self.techniques.on_train_start(run)
        training_ms, elapsed_ms = 0.0, 0.0
        stop_after: int | None = None
        step = 0
        model.train()
        synchronize(ctx.device)
        t0 = time.perf_counter()
        while True:
            last_step = step == cfg.iterations or (stop_after is not None and step >= stop_after)
            if last_step or (cfg.val_loss_every > 0 and step % cfg.val_loss_every == 0):
                synchronize(ctx.device)
                training_ms += 1000.0 * (time.perf_counter() - t0)
                val = self.evaluate(val_tokens, byte_counter)
                check_finite(val.val_loss, f"validation loss at step {step}")
                log(f"step:{step}/{cfg.iterations} val_loss:{val.val_loss:.4f} val_bpb:{val.val_bpb:.4f} "
                    f"train_time:{training_ms:.0f}ms step_avg:{training_ms / max(step, 1):.2f}ms")
                self.record_eval("pre_quant", f"step:{step}", val)
                synchronize(ctx.device)
                t0 = time.perf_counter()
            if last_step:
                if stop_after is not None and step < cfg.iterations:
                    outcome.stopped_early = True
                    log(f"stopping_early: wallclock_cap train_time:{training_ms:.0f}ms step:{step}/{cfg.iterations}")
                break
            # Every budget decision uses the training time at the end of the previous step, agreed
            # across ranks, so all ranks flip switches and take snapshots on the same step.
            scale = lr_scale(cfg, step, elapsed_ms)
            self.techniques.before_step(Progress(step, scale, budget_fraction(cfg, step, elapsed_ms), elapsed_ms), run)
            train_loss = self.train_step(model, loader, self.techniques.train_seq_len(cfg.train_seq_len))
            apply_update(self.base, run.optimizers, cfg, step, scale, elapsed_ms)
            step += 1
            elapsed_ms = training_ms + 1000.0 * (time.perf_counter() - t0)
            if ctx.is_distributed and cap_ms is not None:
                elapsed_ms = all_reduce(torch.tensor(elapsed_ms, device=ctx.device, dtype=torch.float64), "max").item()
            self.techniques.after_step(Progress(step, scale, budget_fraction(cfg, step, elapsed_ms), elapsed_ms), run)
            if cfg.train_log_every > 0 and (step <= 10 or step % cfg.train_log_every == 0 or stop_after is not None):
                loss = all_reduce(train_loss.detach().clone(), "avg").item()
                log(f"step:{step}/{cfg.iterations} train_loss:{loss:.4f} train_time:{elapsed_ms:.0f}ms "
                    f"step_avg:{elapsed_ms / step:.2f}ms")
                check_finite(loss, f"train loss at step {step}")
            if stop_after is None and cap_ms is not None and elapsed_ms >= cap_ms:
                stop_after = step
        outcome.steps, outcome.train_ms = step, training_ms
        return outcome

    def choose_final_weights(self, val_tokens: torch.Tensor, byte_counter: ByteCounter) -> None:
        """End of training: averaging techniques offer weights, the weight choice loads one; when it
        is not the raw weights, measure it before quantization as the reference logs do."""
        def score(state: dict[str, torch.Tensor]) -> EvalResult:
            self.base.load_state_dict(state, strict=True)
            return self.evaluate(val_tokens, byte_counter)

        candidates = Candidates(self.base, score)
        self.techniques.end_of_training(self.training, candidates)
        if candidates.chosen in (None, "raw"):
            return
        # A choice made by validation score already measured the weights it loaded.
        val = candidates.scores.get(candidates.chosen) or self.evaluate(val_tokens, byte_counter)
        self.log(f"pre-quantization post-{candidates.chosen} val_loss:{val.val_loss:.8f} val_bpb:{val.val_bpb:.8f} "
                 f"eval_time:{1000 * val.seconds:.0f}ms")
        self.record_eval(f"pre_quant_post_{candidates.chosen}", f"pre-quantization post-{candidates.chosen}", val)

    # --- export and the final evaluation -------------------------------------------------------
    def export(self, outcome: TrainOutcome) -> dict[str, Any]:
        """Write the compressed artifact and train_state.json (rank 0), then let every rank go on."""
        log, fmt = self.log, self.fmt
        state, roles = self.techniques.artifact_state(self.base.state_dict(), self.roles)
        train_state: dict[str, Any] = {}
        if self.ctx.is_master:
            # The submission is one script: the golf code this config needs (RUN_DIR/train_gpt.py).
            script = submission_code(self.cfg, self.stack, self.scale)
            write_bytes_atomic(self.run_dir / SUBMISSION_SCRIPT, script)
            code = code_bytes(script)
            raw = io.BytesIO()
            torch.save(state, raw)
            log(f"Serialized model: {raw.tell()} bytes")
            log(f"Code size: {code} bytes")
            log(f"Total submission size: {raw.tell() + code} bytes")
            packed = self.techniques.export_artifact(self.training, state, roles, self.policy, fmt.codec, code)
            blob, stats = packed if packed is not None else pack_artifact(state, roles, self.policy, fmt.codec)
            artifact_path = self.run_dir / fmt.filename
            write_bytes_atomic(artifact_path, blob)
            ratio = stats.baseline_tensor_bytes / max(stats.payload_bytes, 1)
            log(f"Serialized model {fmt.label}: {len(blob)} bytes (payload:{stats.payload_bytes} "
                f"raw_torch:{stats.raw_torch_bytes} payload_ratio:{ratio:.2f}x)")
            log(f"export_formats: {stats.summary()}")
            log(f"Total submission size {fmt.label}: {len(blob) + code} bytes")
            train_state = {
                "config": self.cfg.to_dict(), "preset": self.stack, "scale": self.scale,
                ARTIFACT_FILE_KEY: fmt.filename, "artifact_sha256": _sha256(blob),
                "model_bytes": len(blob), "code_bytes": code,
                "code_file": SUBMISSION_SCRIPT,
                "steps": outcome.steps, "train_ms": outcome.train_ms, "stopped_early": outcome.stopped_early,
                "world_size": self.ctx.world_size, "device": describe_device(self.ctx.device),
                "techniques": self.techniques.report(),
                "evaluations": self.result["metrics"]["evaluations"],
                "quant_stats": stats.as_dict(),
            }
            write_json_atomic(self.run_dir / TRAIN_STATE_FILE, train_state)
            log(f"{ARTIFACT_SAVED_PREFIX} {self.run_dir}")
        train_state = broadcast_object(train_state)
        # A promise the export could not keep (a byte target) stops the run before evaluation; the
        # artifact and train_state are on disk.
        shortfall = train_state["quant_stats"].get("target", {}).get("shortfall_message")
        if shortfall:
            raise ConfigError(shortfall)
        return train_state

    def adopt_finished_training(self) -> dict[str, Any]:
        """EVAL_ONLY_FROM: take the artifact and training record of an earlier run of this config."""
        source = Path(self.cfg.eval_only_from).resolve()
        state_path = source / TRAIN_STATE_FILE
        if not state_path.is_file():
            raise FileNotFoundError(
                f"EVAL_ONLY_FROM={source} has no {TRAIN_STATE_FILE}: point it at the RUN_DIR of a run "
                f"that printed '{ARTIFACT_SAVED_PREFIX}'"
            )
        train_state = json.loads(state_path.read_text())
        trained = {k: v for k, v in train_state["config"].items() if k not in RUNTIME_FIELDS}
        mismatched = sorted(k for k, v in trained.items() if getattr(self.cfg, k) != v)
        if mismatched:
            raise ConfigError(
                f"EVAL_ONLY_FROM={source} was trained with a different config ({', '.join(k.upper() for k in mismatched)}): "
                "evaluate it with the settings it was trained with"
            )
        blob = (source / train_state[ARTIFACT_FILE_KEY]).read_bytes()
        if _sha256(blob) != train_state["artifact_sha256"]:
            raise ValueError(f"{source / train_state[ARTIFACT_FILE_KEY]} does not match the checksum in {state_path}: the artifact is damaged")
        if self.ctx.is_master and source != self.run_dir:
            write_bytes_atomic(self.run_dir / train_state[ARTIFACT_FILE_KEY], blob)
            write_json_atomic(self.run_dir / TRAIN_STATE_FILE, train_state)
            if (source / SUBMISSION_SCRIPT).is_file():  # the code counted goes with the artifact
                write_bytes_atomic(self.run_dir / SUBMISSION_SCRIPT, (source / SUBMISSION_SCRIPT).read_bytes())
        barrier()
        self.result["metrics"]["evaluations"].update(train_state.get("evaluations", {}))
        self.log(f"eval_only: artifact {train_state[ARTIFACT_FILE_KEY]} from {source} "
                 f"(trained {train_state['steps']} steps in {train_state['train_ms'] / 1000:.1f}s)")
        self.log(f"Code size: {train_state['code_bytes']} bytes")
        self.log(f"Total submission size {self.fmt.label}: {train_state['model_bytes'] + train_state['code_bytes']} bytes")
        return train_state

    def evaluate_artifact(self, train_state: dict[str, Any], val_tokens: torch.Tensor,
                          byte_counter: ByteCounter) -> None:
        """Read the artifact back from disk, dequantize it into the model, run every evaluator and
        take the headline by the stated rule."""
        artifact_path = self.run_dir / train_state[ARTIFACT_FILE_KEY]
        state = self.techniques.model_state(unpack_artifact(artifact_path.read_bytes()).state_dict)
        self.base.load_state_dict(state, strict=True)
        inputs = EvalInputs(self.eval_model, val_tokens, byte_counter, self.cfg, self.ctx, self.accum, log=self.log)
        finals: dict[str, FinalEvaluation] = {}
        for evaluator in [StandardEvaluator(), *self.techniques.evaluators()]:
            label = evaluator.label(self.fmt.metric_prefix)
            val = evaluator(inputs)
            self.log(f"{label} val_loss:{val.val_loss:.4f} val_bpb:{val.val_bpb:.4f} eval_time:{1000 * val.seconds:.0f}ms")
            self.log(f"{label}_exact val_loss:{val.val_loss:.8f} val_bpb:{val.val_bpb:.8f}")
            self.record_eval(evaluator.name, label, val, legal=evaluator.legal)
            finals[evaluator.name] = FinalEvaluation(evaluator.name, label, evaluator.legal, val)
        headline = pick_headline(finals)
        self.log(f"headline:{headline.label} val_bpb:{headline.result.val_bpb:.8f} (rule: {HEADLINE_RULE})")
        budget = eval_budget(finals, self.cfg.eval_budget_seconds)
        self.log("eval_time " + " ".join(f"{name}:{s:.1f}s" for name, s in budget.seconds.items())
                 + f" total:{budget.total_s:.1f}s budget:{budget.budget_s:g}s within_budget:{int(budget.within)}")
        if not budget.within:
            self.log(f"warning: the final evaluations took {budget.total_s:.0f}s, over the {budget.budget_s:g}s "
                     "evaluation budget (EVAL_BUDGET_SECONDS)")
        size = ArtifactSize(model=train_state["model_bytes"], code=train_state["code_bytes"])
        self.result["metrics"].update(val_bpb=headline.result.val_bpb, val_loss=headline.result.val_loss,
                                      headline_metric=headline.label)
        self.result["bytes"] = {**size.as_dict()}
        self.result["artifact"] = str(artifact_path)
        self.result["techniques"] = train_state["techniques"]
        self.result["timing"] = {
            "train_s": train_state["train_ms"] / 1000.0,
            "eval_s": budget.total_s,
            "eval_budget": budget.as_dict(),
            "steps": train_state["steps"],
            "step_avg_ms": train_state["train_ms"] / max(train_state["steps"], 1),
            "stopped_early": train_state["stopped_early"],
        }

    # --- bookkeeping ---------------------------------------------------------------------------
    def evaluate(self, val_tokens: torch.Tensor, byte_counter: ByteCounter) -> EvalResult:
        return evaluate(
            self.eval_model, val_tokens, byte_counter, seq_len=self.cfg.train_seq_len,
            batch_tokens=self.cfg.val_batch_size, grad_accum_steps=self.accum, ctx=self.ctx,
        )

    def record_eval(self, kind: str, label: str, val: EvalResult, *, legal: bool = True) -> None:
        self.result["metrics"]["evaluations"][kind] = {
            "label": label, "val_loss": val.val_loss, "val_bpb": val.val_bpb, "eval_s": val.seconds,
            "tokens": val.tokens, "bytes": val.bytes, "legal": legal,
        }

    def finish(self, status: str, error: str | None = None) -> None:
        self.result["status"], self.result["error"] = status, error
        if self.ctx.is_master:
            write_json_atomic(self.run_dir / RESULT_FILE, self.result)
        self.log.close()


@dataclass
class AssembledModel:
    base: nn.Module         # the plain module (weights, export, averaging)
    eval_model: nn.Module   # base, compiled when compiling
    train_model: nn.Module  # eval_model, DDP-wrapped when distributed
    kernel: str
    compiled: bool
    roles: RoleMap
    run: TrainingRun        # what the techniques' hooks see


def assemble_model(
    cfg: GolfConfig, ctx: DistContext, techniques: TechniqueSet, policy: ExportPolicy,
    log: Callable[[str], None] = print,
) -> AssembledModel:
    """Build the GPT, give every parameter its role, let the techniques change the model (with the
    export format of every parameter known), then compile (if asked/auto on CUDA) and DDP-wrap."""
    kernel = resolve_attention(cfg.attention, ctx.device)
    base = build_model(cfg, ctx.device, kernel)
    roles = techniques.override_roles(parameter_roles(base))
    run = TrainingRun(cfg=cfg, ctx=ctx, log=log, model=base, roles=roles)

    def export_format(name: str, tensor: torch.Tensor) -> TensorFormat:
        if name not in roles:  # added by an earlier technique's on_model: its module declares it
            roles.update(techniques.override_roles(parameter_roles(base)))
        return policy.format_for(name, tensor, roles[name])

    techniques.on_model(run, export_format)
    roles.update(techniques.override_roles(parameter_roles(base)))
    compiled = cfg.torch_compile == "1" or (cfg.torch_compile == "auto" and ctx.device.type == "cuda")
    eval_model: nn.Module = base
    if compiled:
        # FlashAttention's extension call is not traceable as one graph; SDPA is.
        eval_model = torch.compile(base, dynamic=False, fullgraph=kernel == "sdpa")
    train_model = eval_model
    if ctx.is_distributed:
        train_model = DistributedDataParallel(
            eval_model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            **_no_buffer_sync_per_forward(),
        )
    return AssembledModel(base, eval_model, train_model, kernel, compiled, roles, run)


def _no_buffer_sync_per_forward() -> dict[str, bool]:
    """DDP's switch for not re-broadcasting buffers every forward (they are the same on every rank:
    rotary tables and QAT switches); torch 2.13 renamed it, older versions only know the old name."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def train_step(
    model: nn.Module, loader: Any, optimizers: OptimizerSet, cfg: GolfConfig, accum: int, device: torch.device,
    seq_len: int | None = None,
) -> torch.Tensor:
    """Forward/backward over the micro-steps of one optimizer step; returns this rank's mean loss.

    ``loader`` is anything with the ``next_batch(global_tokens, seq_len, grad_accum_steps)`` of
    :class:`golf.data.DistributedTokenLoader`; ``seq_len`` (default TRAIN_SEQ_LEN) cuts the same
    tokens into sequences of another length.
    """
    seq_len = seq_len or cfg.train_seq_len
    optimizers.zero_grad()
    total = torch.zeros((), device=device)
    for micro in range(accum):
        x, y = loader.next_batch(cfg.train_batch_tokens, seq_len, accum)
        # Gradients are all-reduced once per optimizer step, on the last micro-step.
        skip_sync = isinstance(model, DistributedDataParallel) and micro < accum - 1
        with model.no_sync() if skip_sync else contextlib.nullcontext():
            with autocast_for(device):
                loss = model(x, y)
            (loss / accum).backward()
        total += loss.detach()
    return total / accum


def apply_update(
    base: nn.Module, optimizers: OptimizerSet, cfg: GolfConfig, step: int, scale: float, elapsed_ms: float = 0.0
) -> None:
    """Momentum warmup, LR schedule, optional clipping, then every optimizer's step; ``elapsed_ms``
    is the training time before this step (the momentum warmup may go by time)."""
    optimizers.set_muon_momentum(muon_momentum(cfg, step, elapsed_ms))
    optimizers.set_lr_scale(scale)
    if cfg.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(base.parameters(), cfg.grad_clip_norm)
    optimizers.step()
    optimizers.zero_grad()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise FloatingPointError(
            f"{what} is {value}: training diverged; lower the learning rates "
            "(MATRIX_LR, SCALAR_LR, TIED_EMBED_LR) or set GRAD_CLIP_NORM"
        )


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def versions() -> dict[str, str | None]:
    import sentencepiece

    return {
        "golf": getattr(golf, "__version__", None), "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "numpy": np.__version__,
        "sentencepiece": sentencepiece.__version__,
    }


def _raise_stop(signum: int, frame: object) -> None:
    raise RunStopped(f"stopped by signal {signal.Signals(signum).name}")


def main() -> int:
    rank = int(os.environ.get("RANK", "0"))
    try:
        cfg, stack, scale = config_from_env()
        warnings = validate(cfg, world_size_from_env(), baseline=resolve(stack, scale))
        preflight(cfg)  # shards and tokenizer, before any process group or model exists
    except (ConfigError, DataError) as err:
        if rank == 0:
            eprint(f"golf.train: {err}")
        return 2
    if rank == 0:
        for note in near_miss_env_keys(os.environ):
            eprint(f"golf.train: warning: {note}")
    signal.signal(signal.SIGTERM, _raise_stop)
    ctx = init_distributed(cfg.device)
    trial: Trial | None = None
    succeeded = False
    try:
        trial = Trial(cfg, stack, scale, ctx, warnings)
        trial.run()
        succeeded = True
        return 0
    except BaseException as err:  # noqa: BLE001 - every failure ends in result.json and a clear last line
        stopped = isinstance(err, (RunStopped, KeyboardInterrupt))
        message = f"{type(err).__name__}: {err}"
        if rank == 0:
            if not stopped and not isinstance(err, (ConfigError, DataError, FileNotFoundError)):
                traceback.print_exc(file=sys.stderr)
            (trial.log if trial is not None else eprint)(f"golf.train failed: {message}")
        if trial is not None:
            trial.finish("stopped" if stopped else "failed", message)
        # A data error (a training shard's token ids, found on the loader's first pass) fails
        # every retry the same way: exit 2, like a bad config.
        return 143 if stopped else 2 if isinstance(err, DataError) else 1
    finally:
        shutdown(together=succeeded)


if __name__ == "__main__":
    sys.exit(main())
