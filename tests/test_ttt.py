"""Legal score-first TTT (techniques.md 8.3): the probe's record of every position, the last chunk,
equality with the sliding-window evaluation without training, the artifact's weights untouched, the
technique's config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import golf.ttt
from golf.config import resolve, validate
from golf.distributed import DistContext
from golf.evaluate import EvalInputs
from golf.model import build_model
from golf.sliding import sliding_evaluate
from golf.techniques import TechniqueSet
from golf.techniques.ttt import ScoreFirstTttEvaluator, ttt_plan
from golf.tokenizer import ByteCounter, build_byte_tables, load_tokenizer
from golf.ttt import NEVER, LegalityProbe, TttPlan, probe_verdict, score_first_ttt

CPU_CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
SEQ, STRIDE, CHUNK = 32, 8, 64


def plan(**changes) -> TttPlan:
    values = dict(seq_len=SEQ, stride=STRIDE, chunk_tokens=CHUNK, epochs=2, lr=0.05, momentum=0.9, freeze_blocks=1,
                  batch_seqs=1, grad_clip=1.0)
    return TttPlan(**{**values, **changes})


@pytest.fixture
def setup(demo_data):
    torch.manual_seed(0)
    cfg = resolve("smoke", overrides={"DATA_PATH": demo_data.data_path, "TOKENIZER_PATH": demo_data.tokenizer_path,
                                      "NUM_LAYERS": "2", "TRAIN_SEQ_LEN": str(SEQ)})
    model = build_model(cfg, CPU_CTX.device).eval()
    with torch.no_grad():  # zero-initialised projections would make every position ignore its context
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    counter = ByteCounter(build_byte_tables(load_tokenizer(cfg.tokenizer_path), cfg.vocab_size), CPU_CTX.device)
    # a repeating text, so training on earlier chunks lowers the loss of later ones
    pattern = torch.randint(0, cfg.vocab_size, (48,), generator=torch.Generator().manual_seed(1))
    tokens = pattern.repeat(6)[: 4 * CHUNK + 21 + 1]  # 4 whole chunks and a short last one
    return cfg, model, counter, tokens


def test_the_probe_shows_every_position_scored_once_before_any_update_used_it(setup):
    cfg, model, counter, tokens = setup
    n = tokens.numel() - 1
    result, probe = score_first_ttt(model, tokens, counter, plan(), CPU_CTX)
    assert result.tokens == n
    assert probe.violations() == {"never_scored": 0, "scored_twice": 0, "trained_before_scored": 0}
    chunks = -(-n // CHUNK)
    steps_per_chunk = 2 * (CHUNK // SEQ)  # epochs x sequences (batches of one)
    for c in range(chunks):
        span = slice(c * CHUNK, min((c + 1) * CHUNK, n))
        # a chunk is scored after the updates of every earlier chunk, and trained on only afterwards
        assert set(probe.scored_at[span].tolist()) <= {c * steps_per_chunk, max(c - 1, 0) * steps_per_chunk}
        assert probe.scored_at[span][-1] == c * steps_per_chunk
        if c < chunks - 1:
            assert probe.first_update[span].min() == c * steps_per_chunk + 1
            assert (probe.first_update[span] > probe.scored_at[span]).all()
    # the last chunk is never trained on
    assert (probe.first_update[(chunks - 1) * CHUNK:] == NEVER).all()
    assert probe.first_update.max(initial=0) == NEVER and probe.first_update[: (chunks - 1) * CHUNK].max() < NEVER
    assert probe_verdict(probe) == (True, probe.violations())


def test_the_probe_catches_training_before_scoring_and_gaps():
    probe = LegalityProbe(10)
    probe.record_scored(0, 5, 0)
    probe.record_trained(0, 5, 1)
    probe.record_trained(5, 10, 1)  # the illegal order: positions 5..9 used by update 1 ...
    probe.record_scored(5, 9, 1)    # ... and scored after it; position 9 never scored
    probe.record_scored(0, 2, 1)    # positions 0, 1 scored twice, the second time after update 1 used them
    probe.finish()
    assert probe.violations() == {"never_scored": 1, "scored_twice": 2, "trained_before_scored": 2 + 4}
    assert probe_verdict(probe)[0] is False


@pytest.mark.parametrize("changes", [{"epochs": 0}, {"lr": 0.0}])
def test_without_training_the_score_is_the_sliding_window_score(setup, changes):
    cfg, model, counter, tokens = setup
    result, probe = score_first_ttt(model, tokens, counter, plan(**changes), CPU_CTX)
    sliding = sliding_evaluate(model, tokens, counter, seq_len=SEQ, stride=STRIDE, batch_seqs=4, ctx=CPU_CTX)
    assert (result.tokens, result.bytes) == (sliding.tokens, sliding.bytes)
    assert result.val_loss == pytest.approx(sliding.val_loss, rel=1e-6)
    assert probe.violations() == {"never_scored": 0, "scored_twice": 0, "trained_before_scored": 0}


def test_training_changes_the_score_on_a_copy_and_frozen_blocks_stay(setup):
    cfg, model, counter, tokens = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained, _ = score_first_ttt(model, tokens, counter, plan(), CPU_CTX)
    sliding = sliding_evaluate(model, tokens, counter, seq_len=SEQ, stride=STRIDE, batch_seqs=4, ctx=CPU_CTX)
    assert trained.val_loss < sliding.val_loss  # the text repeats: earlier chunks teach later ones
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"TTT changed the artifact's {k}"
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_blocks_are_not_trained(setup, monkeypatch):
    cfg, model, counter, tokens = setup
    learners = []
    real_unfreeze = golf.ttt._unfreeze

    def keep(learner, freeze_blocks):
        learners.append(learner)
        return real_unfreeze(learner, freeze_blocks)

    monkeypatch.setattr(golf.ttt, "_unfreeze", keep)
    score_first_ttt(model, tokens, counter, plan(freeze_blocks=1), CPU_CTX)
    learner = learners[0]
    for name, param in learner.named_parameters():
        changed = not torch.equal(param, model.get_parameter(name))
        assert changed == (not name.startswith("blocks.0.")), name


def test_the_technique_adds_the_evaluator_checks_and_reports_legality(setup, demo_data):
    cfg, model, counter, tokens = setup
    base = {"DATA_PATH": demo_data.data_path, "TOKENIZER_PATH": demo_data.tokenizer_path, "NUM_LAYERS": "2",
            "TRAIN_SEQ_LEN": str(SEQ)}
    on = resolve("smoke", overrides={**base, "USE_TTT": "1", "TTT_CHUNK_TOKENS": str(CHUNK), "EVAL_STRIDE": str(STRIDE),
                                     "TTT_EPOCHS": "1", "TTT_BATCH_SEQS": "2"})
    assert on.ttt_enabled
    [evaluator] = [e for e in TechniqueSet(on).evaluators() if e.name == "ttt"]
    assert isinstance(evaluator, ScoreFirstTttEvaluator) and evaluator.plan == ttt_plan(on)
    assert evaluator.label("final_int8_zlib") == "legal_ttt"
    lines: list[str] = []
    result = evaluator(EvalInputs(model, tokens, counter, on, CPU_CTX, grad_accum_steps=1, log=lines.append))
    assert evaluator.legal and result.tokens == tokens.numel() - 1
    assert any(line.startswith("ttt_legality score_first:1 never_scored:0 scored_twice:0 trained_before_scored:0")
               for line in lines)
    with pytest.raises(Exception, match="TTT_CHUNK_TOKENS=100 is not a multiple of the window length"):
        validate(resolve("smoke", overrides={**base, "TTT_ENABLED": "1", "TTT_CHUNK_TOKENS": "100"}), 1)
    with pytest.raises(Exception, match="TTT_FREEZE_BLOCKS=3 exceeds NUM_LAYERS=2"):
        validate(resolve("smoke", overrides={**base, "TTT_ENABLED": "1", "TTT_CHUNK_TOKENS": "64",
                                             "TTT_FREEZE_BLOCKS": "3"}), 1)
    reference = resolve("smoke", overrides=base)
    warnings = validate(resolve("smoke", overrides={**base, "TTT_LR": "0.001"}), 1, baseline=reference)
    assert any("TTT_LR=0.001 has no effect while TTT_ENABLED=0" in w for w in warnings)
    # TTT scores with the sliding windows, so their settings are not inert when only TTT is on
    warnings = validate(resolve("smoke", overrides={**base, "TTT_ENABLED": "1", "TTT_CHUNK_TOKENS": "64",
                                                    "EVAL_STRIDE": "16"}), 1, baseline=reference)
    assert not [w for w in warnings if "EVAL_STRIDE" in w]
    assert np.iinfo(np.int32).max == NEVER


@pytest.mark.slow
def test_a_compiled_model_gives_the_eager_number(setup):
    cfg, model, counter, tokens = setup
    eager, _ = score_first_ttt(model, tokens, counter, plan(batch_seqs=2), CPU_CTX)
    compiled, probe = score_first_ttt(torch.compile(model, dynamic=False), tokens, counter, plan(batch_seqs=2), CPU_CTX)
    assert probe.violations() == {"never_scored": 0, "scored_twice": 0, "trained_before_scored": 0}
    assert compiled.tokens == eager.tokens and compiled.val_loss == pytest.approx(eager.val_loss, rel=1e-4)
