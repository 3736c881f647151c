"""The final evaluation as a list of evaluators, and the stated headline rule (DESIGN.md contract 4)."""

from __future__ import annotations

import pytest
import torch

from golf.config import resolve
from golf.distributed import DistContext
from golf.evaluate import (
    HEADLINE_RULE, EvalInputs, EvalResult, FinalEvaluation, StandardEvaluator, evaluate, pick_headline,
    token_losses_and_bytes,
)
from golf.model import build_model
from golf.tokenizer import ByteCounter, build_byte_tables, load_tokenizer

CPU_CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def final(name: str, bpb: float, legal: bool = True) -> FinalEvaluation:
    return FinalEvaluation(name, f"final_{name}", legal, EvalResult(bpb * 1.6, bpb, 100, 160, 0.1))


def test_the_headline_is_the_lowest_val_bpb_among_legal_evaluations():
    ran = {"roundtrip": final("roundtrip", 1.20), "sliding": final("sliding", 1.18),
           "ttt_peek": final("ttt_peek", 1.10, legal=False)}
    assert pick_headline(ran).name == "sliding"
    assert pick_headline({"roundtrip": final("roundtrip", 1.2)}).name == "roundtrip"
    # ties keep the first that ran
    assert pick_headline({"a": final("a", 1.1), "b": final("b", 1.1)}).name == "a"
    with pytest.raises(ValueError, match="no legal final evaluation ran"):
        pick_headline({"ttt_peek": final("ttt_peek", 1.0, legal=False)})
    assert "legal" in HEADLINE_RULE and "round-tripped" in HEADLINE_RULE


def test_standard_evaluator_is_todays_evaluation_and_per_token_losses_add_up(demo_data):
    torch.manual_seed(0)
    cfg = resolve("smoke", overrides={"DATA_PATH": demo_data.data_path, "TOKENIZER_PATH": demo_data.tokenizer_path})
    model = build_model(cfg, CPU_CTX.device).eval()
    sp = load_tokenizer(cfg.tokenizer_path)
    counter = ByteCounter(build_byte_tables(sp, cfg.vocab_size), CPU_CTX.device)
    tokens = torch.randint(0, cfg.vocab_size, (4 * cfg.train_seq_len + 1,), generator=torch.Generator().manual_seed(1))
    inputs = EvalInputs(model, tokens, counter, cfg, CPU_CTX, grad_accum_steps=1)
    evaluator = StandardEvaluator()
    assert evaluator.label("final_int8_zlib") == "final_int8_zlib_roundtrip" and evaluator.legal
    result = evaluator(inputs)
    direct = evaluate(model, tokens, counter, seq_len=cfg.train_seq_len, batch_tokens=cfg.val_batch_size,
                      grad_accum_steps=1, ctx=CPU_CTX)
    assert (result.val_loss, result.val_bpb, result.tokens, result.bytes) == (
        direct.val_loss, direct.val_bpb, direct.tokens, direct.bytes)
    # the per-token view: losses sum to mean x tokens, bytes to the evaluation's byte count
    x = tokens[:-1].reshape(-1, cfg.train_seq_len)
    y = tokens[1:].reshape(-1, cfg.train_seq_len)
    losses, token_bytes = token_losses_and_bytes(model, x, y, counter)
    assert losses.shape == token_bytes.shape == y.shape
    assert float(losses.double().sum()) == pytest.approx(result.val_loss * result.tokens, rel=1e-6)
    assert int(token_bytes.sum()) == result.bytes
