"""NTK-aware RoPE scaling (techniques.md 8.2): plain frequencies up to the built length, the ratio
formula beyond it, the seam set on every block, and #635's always-on quirk."""

from __future__ import annotations

import math

import pytest
import torch

from golf.config import resolve, validate
from golf.distributed import DistContext
from golf.model.layers import Rotary, ntk_base, rotary_inv_freq
from golf.techniques import TechniqueSet
from golf.techniques.ntk_rope import NtkRope
from golf.train import assemble_model, export_policy

CPU = torch.device("cpu")


@pytest.mark.parametrize("head_dim, dims", [(64, 0), (64, 16), (32, 8)])
def test_frequencies_are_plain_up_to_the_built_length_and_follow_the_ratio_beyond(head_dim, dims):
    t0 = 256
    plain, scaled = Rotary(head_dim, 10000.0, dims), Rotary(head_dim, 10000.0, dims)
    scaled.ntk_train_len = t0
    d = scaled.rotary_dims
    for length in (1, t0 // 2, t0):
        assert torch.equal(scaled.frequencies(length), plain.inv_freq)
        for got, want in zip(scaled(length, CPU, torch.float32), plain(length, CPU, torch.float32)):
            assert torch.equal(got, want)
    ratio = scaled.frequencies(2 * t0) / plain.inv_freq
    i = torch.arange(d // 2, dtype=torch.float64)
    torch.testing.assert_close(ratio.double(), 2.0 ** (-(2 * i / d) * d / (d - 2)), rtol=1e-5, atol=0)
    assert ratio[1:].lt(1).all()  # every frequency but the first is lowered
    cos, sin = scaled(2 * t0, CPU, torch.float32)
    assert torch.equal(cos[0], torch.ones(d // 2)) and torch.equal(sin[0], torch.zeros(d // 2))  # position 0


def test_the_seeds_effective_bases():
    assert ntk_base(10000.0, 16, 2048 / 1024) == pytest.approx(22082, abs=1)  # #635's quirk
    assert ntk_base(10000.0, 64, 4096 / 2048) == pytest.approx(20452, abs=1)  # #326 at EVAL_SEQ_LEN=4096
    torch.testing.assert_close(rotary_inv_freq(10000.0, 16), 1.0 / 10000.0 ** (torch.arange(0, 16, 2) / 16))


def _assembled(demo_data, **overrides):
    cfg = resolve("smoke", overrides={"DATA_PATH": demo_data.data_path, "TOKENIZER_PATH": demo_data.tokenizer_path,
                                      "TORCH_COMPILE": "0", **overrides})
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=CPU)
    techniques = TechniqueSet(cfg)
    return cfg, techniques, assemble_model(cfg, ctx, techniques, export_policy(cfg, techniques), log=lambda _: None)


def test_the_technique_sets_every_block_and_reproduces_the_always_on_quirk(demo_data):
    # the quirk: built for half the training length, so training itself runs scaled
    cfg, techniques, built = _assembled(demo_data, ROPE_NTK="1", ROPE_NTK_TRAIN_LEN="64", ROPE_DIMS="8")
    assert any(isinstance(t, NtkRope) for t in techniques)
    d = 8
    want = rotary_inv_freq(cfg.rope_base * 2.0 ** (d / (d - 2)), d)
    for block in built.base.blocks:
        assert block.attn.rotary.rotary_dims == d and block.attn.rotary.ntk_train_len == 64
        torch.testing.assert_close(block.attn.rotary.frequencies(cfg.train_seq_len), want)
    report = next(t for t in techniques if isinstance(t, NtkRope)).report()
    assert report["train_base"] == pytest.approx(cfg.rope_base * 2 ** (8 / 6))
    # the forward pass uses it: the same weights score differently without the scaling
    x = torch.randint(0, cfg.vocab_size, (2, cfg.train_seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in built.base.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        scaled = built.base.token_losses(x, x)
        for block in built.base.blocks:
            block.attn.rotary.ntk_train_len = 0
        plain = built.base.token_losses(x, x)
    assert not torch.allclose(scaled, plain)
    # by default T0 = TRAIN_SEQ_LEN: training is untouched
    cfg, _, built = _assembled(demo_data, ROPE_NTK="1", SLIDING_WINDOW_ENABLED="1", EVAL_SEQ_LEN="256")
    rotary = built.base.blocks[0].attn.rotary
    assert torch.equal(rotary.frequencies(cfg.train_seq_len), rotary.inv_freq)
    assert not torch.equal(rotary.frequencies(256), rotary.inv_freq)


def test_checks(demo_data):
    base = {"DATA_PATH": demo_data.data_path, "TOKENIZER_PATH": demo_data.tokenizer_path}
    reference = resolve("smoke", overrides=base)
    warnings = validate(resolve("smoke", overrides={**base, "ROPE_NTK": "1"}), 1, baseline=reference)
    assert any("ROPE_NTK=1 has no effect: no sequence is longer than ROPE_NTK_TRAIN_LEN=128" in w for w in warnings)
    warnings = validate(resolve("smoke", overrides={**base, "ROPE_NTK_TRAIN_LEN": "64"}), 1, baseline=reference)
    assert any("ROPE_NTK_TRAIN_LEN=64 has no effect while ROPE_NTK=0" in w for w in warnings)
    assert not [w for w in validate(resolve("smoke", overrides={**base, "ROPE_NTK": "1", "SLIDING_WINDOW_ENABLED": "1",
                                                                  "EVAL_SEQ_LEN": "256"}), 1, baseline=reference)
                if "ROPE_NTK" in w]
    with pytest.raises(Exception, match="ROPE_NTK=1 needs more than 2 rotary dims"):
        validate(resolve("smoke", overrides={**base, "ROPE_NTK": "1", "ROPE_DIMS": "2", "ROPE_NTK_TRAIN_LEN": "64"}), 1)
    assert math.isfinite(ntk_base(10000.0, 4, 2.0))
