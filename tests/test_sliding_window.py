"""Sliding-window evaluation (techniques.md 8.1): coverage, context, equality with the standard
evaluation at stride = sequence length, rank split, and the technique's config."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from golf.config import resolve, validate
from golf.distributed import DistContext
from golf.evaluate import EvalInputs, evaluate
from golf.model import build_model
from golf.sliding import score_starts, sliding_evaluate, window_starts
from golf.techniques import TechniqueSet
from golf.techniques.sliding_window import SlidingWindowEvaluator
from golf.tokenizer import ByteCounter, build_byte_tables, load_tokenizer

CPU_CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


class OneBytePerToken:
    """Byte tables where every token is one byte, so bytes scored = tokens scored."""

    def token_bytes(self, prev_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(target_ids)


def scored(loss_fn, n: int, seq_len: int, stride: int, batch_seqs: int = 3, fixed_shape: bool = False):
    tokens = torch.arange(n + 1, dtype=torch.int32)  # token i is position i's input: losses can name positions
    return score_starts(loss_fn, tokens, window_starts(n, seq_len, stride), OneBytePerToken(), seq_len=seq_len,
                        stride=stride, batch_seqs=batch_seqs, n_positions=n, fixed_shape=fixed_shape)


@pytest.mark.parametrize("n, seq_len, stride", [(64, 16, 4), (67, 16, 4), (70, 16, 5), (64, 16, 16), (61, 16, 16),
                                                (10, 16, 4), (16, 16, 3), (100, 8, 1)])
@pytest.mark.parametrize("fixed_shape", [False, True])
def test_every_position_is_scored_exactly_once(n, seq_len, stride, fixed_shape):
    total = scored(lambda x, y: torch.ones(x.shape), n, seq_len, stride, fixed_shape=fixed_shape)
    assert int(total.tokens) == n and int(total.bytes) == n
    for p in range(n):
        times = scored(lambda x, y, p=p: (x == p).float(), n, seq_len, stride, fixed_shape=fixed_shape)
        assert float(times.loss) == 1.0, f"position {p} scored {float(times.loss)} times"


@pytest.mark.parametrize("n, seq_len, stride", [(64, 16, 4), (70, 16, 5), (100, 8, 1), (61, 16, 16)])
def test_every_token_after_the_first_window_has_seq_len_minus_stride_context(n, seq_len, stride):
    # the loss of a position is its offset in its window: the number of tokens before it there
    def short_context(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        offset = x - x[:, :1]
        beyond_first_window = x >= seq_len
        return (beyond_first_window & (offset < seq_len - stride)).float()

    assert float(scored(short_context, n, seq_len, stride).loss) == 0.0
    # and the check can fail: the first window's own positions do have less context
    first_window = scored(lambda x, y: ((x < seq_len) & (x - x[:, :1] < seq_len - stride)).float(), n, seq_len, stride)
    assert float(first_window.loss) == seq_len - stride


def test_window_starts_follow_the_coverage_rule():
    assert window_starts(64, 16, 4).tolist() == list(range(0, 52, 4))  # kept while ws + 12 < 64
    assert window_starts(10, 16, 4).tolist() == [0]
    with pytest.raises(ValueError, match="stride"):
        window_starts(64, 16, 17)


@pytest.fixture
def smoke_model(demo_data):
    torch.manual_seed(0)
    cfg = resolve("smoke", overrides={"DATA_PATH": demo_data.data_path, "TOKENIZER_PATH": demo_data.tokenizer_path})
    model = build_model(cfg, CPU_CTX.device).eval()
    with torch.no_grad():  # zero-initialised projections would make every position ignore its context
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    counter = ByteCounter(build_byte_tables(load_tokenizer(cfg.tokenizer_path), cfg.vocab_size), CPU_CTX.device)
    tokens = torch.randint(0, cfg.vocab_size, (6 * cfg.train_seq_len + 1,), generator=torch.Generator().manual_seed(1))
    return cfg, model, counter, tokens


def test_stride_equal_to_the_sequence_length_is_the_standard_evaluation(smoke_model):
    cfg, model, counter, tokens = smoke_model
    standard = evaluate(model, tokens, counter, seq_len=cfg.train_seq_len, batch_tokens=cfg.val_batch_size,
                        grad_accum_steps=1, ctx=CPU_CTX)
    sliding = sliding_evaluate(model, tokens, counter, seq_len=cfg.train_seq_len, stride=cfg.train_seq_len,
                               batch_seqs=4, ctx=CPU_CTX)
    assert (sliding.tokens, sliding.bytes) == (standard.tokens, standard.bytes) == (tokens.numel() - 1, standard.bytes)
    assert sliding.val_loss == pytest.approx(standard.val_loss, rel=1e-6)
    assert sliding.val_bpb == pytest.approx(standard.val_bpb, rel=1e-6)


def test_overlapping_windows_score_every_token_once_and_padding_changes_nothing(smoke_model):
    cfg, model, counter, tokens = smoke_model
    s = cfg.train_seq_len
    result = sliding_evaluate(model, tokens, counter, seq_len=s, stride=s // 4, batch_seqs=5, ctx=CPU_CTX)
    assert result.tokens == tokens.numel() - 1
    # the compiled path's padded rows and a longer window (past the cut of the val tokens) add nothing
    n = tokens.numel() - 1
    for seq_len, stride in ((s, s // 4), (s + s // 2, s // 2)):
        plain, padded = (score_starts(model.token_losses, tokens, window_starts(n, seq_len, stride), counter,
                                      seq_len=seq_len, stride=stride, batch_seqs=5, n_positions=n, fixed_shape=fixed)
                         for fixed in (False, True))
        assert int(plain.tokens) == int(padded.tokens) == n
        assert float(padded.loss) == pytest.approx(float(plain.loss), rel=1e-6)
    # more context per scored token than the standard evaluation's average: a different number
    standard = evaluate(model, tokens, counter, seq_len=s, batch_tokens=cfg.val_batch_size, grad_accum_steps=1,
                        ctx=CPU_CTX)
    assert result.val_loss != pytest.approx(standard.val_loss, rel=1e-6)


def test_the_technique_adds_the_evaluator_and_checks_its_settings(demo_data):
    base = {"DATA_PATH": demo_data.data_path, "TOKENIZER_PATH": demo_data.tokenizer_path}
    cfg = resolve("smoke", overrides={**base, "SLIDING_WINDOW_ENABLED": "1", "EVAL_STRIDE": "32", "EVAL_BATCH_SEQS": "8"})
    [evaluator] = [e for e in TechniqueSet(cfg).evaluators() if e.name == "sliding"]
    assert isinstance(evaluator, SlidingWindowEvaluator) and evaluator.legal
    assert (evaluator.seq_len, evaluator.stride, evaluator.batch_seqs) == (cfg.train_seq_len, 32, 8)
    assert evaluator.label("final_int8_zlib") == "final_int8_zlib_sliding_window"
    assert not [e for e in TechniqueSet(resolve("smoke", overrides=base)).evaluators() if e.name == "sliding"]
    with pytest.raises(Exception, match="EVAL_STRIDE=256 is longer than the window"):
        validate(resolve("smoke", overrides={**base, "SLIDING_WINDOW_ENABLED": "1", "EVAL_STRIDE": "256"}), 1)
    warnings = validate(resolve("smoke", overrides={**base, "EVAL_STRIDE": "32"}), 1, baseline=resolve("smoke", overrides=base))
    assert any("EVAL_STRIDE=32 has no effect while SLIDING_WINDOW_ENABLED=0" in w for w in warnings)


def test_the_evaluator_runs_on_eval_inputs(smoke_model):
    cfg, model, counter, tokens = smoke_model
    evaluator = SlidingWindowEvaluator(cfg.train_seq_len, cfg.train_seq_len // 2, 4)
    result = evaluator(EvalInputs(model, tokens, counter, cfg, CPU_CTX, grad_accum_steps=1))
    direct = sliding_evaluate(model, tokens, counter, seq_len=cfg.train_seq_len, stride=cfg.train_seq_len // 2,
                              batch_seqs=4, ctx=CPU_CTX)
    assert (result.val_loss, result.tokens, result.bytes) == (direct.val_loss, direct.tokens, direct.bytes)


# --- two gloo ranks ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sliding_rank(rank: int, world: int, port: int, cfg, state, tokens, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = build_model(cfg, torch.device("cpu"))
        model.load_state_dict(state)
        counter = ByteCounter(build_byte_tables(load_tokenizer(cfg.tokenizer_path), cfg.vocab_size), torch.device("cpu"))
        ctx = DistContext(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))
        result = sliding_evaluate(model, tokens, counter, seq_len=cfg.train_seq_len, stride=cfg.train_seq_len // 4,
                                  batch_seqs=3, ctx=ctx)
        out[rank] = (result.val_loss, result.val_bpb, result.tokens, result.bytes)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_number(smoke_model):
    cfg, model, counter, tokens = smoke_model
    tokens = tokens[: 5 * cfg.train_seq_len + 1]
    single = sliding_evaluate(model, tokens, counter, seq_len=cfg.train_seq_len, stride=cfg.train_seq_len // 4,
                              batch_seqs=3, ctx=CPU_CTX)
    out = mp.Manager().dict()
    mp.spawn(_sliding_rank, args=(2, _free_port(), cfg, model.state_dict(), tokens, out), nprocs=2, join=True)
    assert out[0] == out[1]
    loss, bpb, n_tokens, n_bytes = out[0]
    assert (n_tokens, n_bytes) == (single.tokens, single.bytes) == (tokens.numel() - 1, single.bytes)
    assert loss == pytest.approx(single.val_loss, rel=1e-6) and bpb == pytest.approx(single.val_bpb, rel=1e-6)


@pytest.mark.slow
def test_a_compiled_model_scores_through_its_compiled_per_token_losses(smoke_model):
    from golf.sliding import _COMPILED_TOKEN_LOSSES, token_loss_fn

    cfg, model, counter, tokens = smoke_model
    compiled = torch.compile(model, dynamic=False)
    kwargs = dict(seq_len=cfg.train_seq_len, stride=cfg.train_seq_len // 4, batch_seqs=5, ctx=CPU_CTX)
    eager = sliding_evaluate(model, tokens, counter, **kwargs)
    result = sliding_evaluate(compiled, tokens, counter, **kwargs)
    assert model in _COMPILED_TOKEN_LOSSES and token_loss_fn(compiled) is _COMPILED_TOKEN_LOSSES[model]
    assert token_loss_fn(model) == model.token_losses  # the plain module is scored eagerly
    assert (result.tokens, result.bytes) == (eager.tokens, eager.bytes)
    assert result.val_loss == pytest.approx(eager.val_loss, rel=1e-5)


def test_a_bundle_with_sliding_windows_and_no_ttt_carries_no_ttt(demo_data):
    from golf.bundle import kept_techniques

    base = {"DATA_PATH": demo_data.data_path, "TOKENIZER_PATH": demo_data.tokenizer_path}
    kept = [t.name for t in kept_techniques(resolve("smoke", overrides={**base, "SLIDING_WINDOW_ENABLED": "1"}),
                                             resolve("smoke", overrides=base))]
    assert "sliding_window" in kept and "ttt" not in kept
