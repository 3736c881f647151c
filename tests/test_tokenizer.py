"""Byte accounting for val_bpb (golf/tokenizer.py), checked by hand and against real tokenizers."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import sentencepiece as spm
import torch
from sentencepiece import sentencepiece_model_pb2

from golf.tokenizer import (
    ByteCounter,
    ByteTables,
    bits_per_byte,
    build_byte_tables,
    check_vocab,
    count_bytes,
    count_target_bytes,
    load_tokenizer,
)

# ---- a synthetic piece table, every count checked by hand ----------------------------------------


class FakePieces:
    """The SentencePieceProcessor methods the table builder uses, over a hand-written vocabulary."""

    def __init__(self, pieces: list[tuple[str, str]]) -> None:
        self.pieces = pieces

    def vocab_size(self) -> int:
        return len(self.pieces)

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i][0]

    def is_control(self, i: int) -> bool:
        return self.pieces[i][1] == "control"

    def is_unknown(self, i: int) -> bool:
        return self.pieces[i][1] == "unknown"

    def is_unused(self, i: int) -> bool:
        return self.pieces[i][1] == "unused"

    def is_byte(self, i: int) -> bool:
        return self.pieces[i][1] == "byte"


SYNTHETIC = FakePieces(
    [
        ("<pad>", "control"),  # 0
        ("<s>", "control"),  # 1
        ("</s>", "control"),  # 2
        ("<unk>", "unknown"),  # 3
        ("<0x41>", "byte"),  # 4
        ("\u2581the", "normal"),  # 5: 3 bytes + a leading space
        ("the", "normal"),  # 6: 3 bytes
        ("\u2581", "normal"),  # 7: a lone space
        ("é", "normal"),  # 8: 2 bytes in UTF-8
        ("\u2581日本", "normal"),  # 9: 6 bytes + a leading space
        ("<reserved>", "unused"),  # 10
    ]
)


@pytest.fixture
def synthetic_tables() -> ByteTables:
    return build_byte_tables(SYNTHETIC, vocab_size=12)  # id 11 lies beyond the tokenizer


def test_synthetic_tables_by_hand(synthetic_tables):
    t = synthetic_tables
    assert t.table_size == 12
    assert t.base_bytes.dtype == np.int16
    assert t.base_bytes.tolist() == [0, 0, 0, 0, 1, 3, 3, 0, 2, 6, 0, 0]
    assert t.has_leading_space.tolist() == [False] * 5 + [True, False, True, False, True, False, False]
    assert t.is_boundary.tolist() == [True] * 4 + [False] * 6 + [True, True]


@pytest.mark.parametrize(
    "ids, expected",
    [
        ([1, 5, 6, 7, 9], 3 + 3 + 1 + 7),  # after BOS "▁the" loses its space; "▁" and "▁日本" keep theirs
        ([3, 5], 3),  # after <unk> (a boundary): no space byte
        ([10, 9], 6),  # after an unused id: no space byte
        ([11, 5], 3),  # after an id beyond the tokenizer: no space byte
        ([4, 5], 1 + 3),  # after a byte piece (not a boundary): the space counts
        ([5, 3], 0),  # an unknown target counts nothing
        ([5, 4], 1),  # a byte-fallback target counts one byte
        ([6, 8], 2),  # "é": 2 UTF-8 bytes
        ([6, 1], 0),  # control ids count nothing
        ([6, 11], 0),  # ids beyond the tokenizer count nothing
        ([5], 0),  # a single token has no target
    ],
)
def test_synthetic_counts_by_hand(synthetic_tables, ids, expected):
    assert count_bytes(synthetic_tables, ids) == expected
    if len(ids) > 1:
        counter = ByteCounter(synthetic_tables, torch.device("cpu"))
        prev, target = torch.tensor(ids[:-1]), torch.tensor(ids[1:])
        counted = counter.count(prev, target)
        assert counted.dtype == torch.float64 and counted.dim() == 0
        assert counted.item() == expected


def test_byte_counter_batches_and_checks_shapes(synthetic_tables):
    counter = ByteCounter(synthetic_tables, torch.device("cpu"))
    prev = torch.tensor([[1, 5, 6, 7], [3, 4, 10, 11]])
    target = torch.tensor([[5, 6, 7, 9], [5, 5, 9, 5]])
    # row 0: 3 + 3 + 1 + 7; row 1: 3 + 4 + 6 + 3
    assert counter.count(prev, target).item() == 14 + 16
    with pytest.raises(ValueError, match="same shape"):
        counter.count(prev, target[:, :3])


def test_count_bytes_rejects_ids_outside_the_table(synthetic_tables):
    with pytest.raises(ValueError, match=r"\[0, 11\]"):
        count_bytes(synthetic_tables, [1, 12])


# ---- small real SentencePiece models trained here (cover a plain clone without fixtures) -----------

WORDS = (
    "the of and to in is was for on that with as by at from his her they this have not are had but "
    "which one were all their there been has when who will more no if out so said what up its about "
    "into than them can only other new some could time these two may then do first any my now such "
    "like our over man me even most made after also did many before must through back years where much"
).split()


def _training_text(seed: int = 7, lines: int = 1500) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
        words[0] = words[0].capitalize()
        out.append(" ".join(words) + rng.choice([".", "!", "?", ",", ";", ":"]) + f" {rng.randint(0, 999)}")
    return out


def _train(**settings) -> spm.SentencePieceProcessor:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_text()),
        model_writer=model,
        model_type="bpe",
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
        **settings,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


@pytest.fixture(scope="module")
def byte_fallback_sp() -> spm.SentencePieceProcessor:
    return _train(vocab_size=400, byte_fallback=True)


@pytest.fixture(scope="module")
def no_fallback_sp() -> spm.SentencePieceProcessor:
    # The challenge tokenizer's settings: no byte fallback, no dummy prefix.
    return _train(vocab_size=160, byte_fallback=False, add_dummy_prefix=False, split_digits=True)


def _decoded_target_bytes(sp, ids: list[int]) -> int:
    """What decode says ids[1:] add: the full decode minus the decode of the first token alone."""
    return len(sp.decode(ids).encode("utf-8")) - len(sp.decode(ids[:1]).encode("utf-8"))


def test_byte_fallback_pieces_count_one_byte_each(byte_fallback_sp):
    sp = byte_fallback_sp
    tables = build_byte_tables(sp, sp.vocab_size())
    byte_ids = [i for i in range(sp.vocab_size()) if sp.is_byte(i)]
    assert len(byte_ids) == 256
    assert (tables.base_bytes[byte_ids] == 1).all() and not tables.is_boundary[byte_ids].any()
    # Characters never seen in training are spelled in byte pieces, which decode exactly, so the
    # metric equals the decoded length for any text.
    for text in ["the man said: naïve café, 日本語 ½ ☃!", "one ~weird~ {thing} <there>", "Ünïcödé only"]:
        ids = sp.encode(text)
        assert any(sp.is_byte(i) for i in ids)
        assert count_bytes(tables, ids) == _decoded_target_bytes(sp, ids)
        with_bos = [sp.bos_id()] + ids
        assert count_bytes(tables, with_bos) == len(sp.decode(ids).encode("utf-8"))


def test_unknown_pieces_count_zero_bytes_without_byte_fallback(no_fallback_sp, tmp_path):
    sp = no_fallback_sp
    path = tmp_path / "tiny.model"
    path.write_bytes(sp.serialized_model_proto())
    ids = sp.encode("the#man")
    assert ids.count(sp.unk_id()) == 1
    # Every character after the first piece counts, except "#", which became <unk> (0 bytes).
    first = sp.decode(ids[:1])
    assert count_target_bytes(path, ids) == len("the#man") - len(first) - len("#")
    unk_surface = len(" \u2047 ".encode("utf-8"))
    assert _decoded_target_bytes(sp, ids) == count_target_bytes(path, ids) + unk_surface


# ---- the challenge's sp1024 tokenizer ---------------------------------------------------------------

ASCII_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "   Leading spaces, then words: they are folded away!",
    'Prices rose 12.5% in 2023 (year-over-year); analysts said "wow" - really?',
    "It's 10:45 on a Monday/Tuesday, and we're    waiting... still waiting.",
    "Call me Ishmael. Some years ago - never mind how long precisely - I went to sea.",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9 $100 & more!",
]


@pytest.fixture
def real_sp(real_tokenizer_path):
    return load_tokenizer(real_tokenizer_path)


def test_real_tokenizer_matches_decode_on_ascii_text(real_tokenizer_path, real_sp):
    sp = real_sp
    tables = build_byte_tables(sp, 1024)
    counter = ByteCounter(tables, torch.device("cpu"))
    for text in ASCII_TEXTS:
        ids = sp.encode(text)
        assert sp.unk_id() not in ids, f"test text has a character outside the vocabulary: {text!r}"
        assert count_target_bytes(real_tokenizer_path, ids) == _decoded_target_bytes(sp, ids)
        # As in the shards, where every document starts with BOS: BOS + text scores every byte.
        with_bos = [sp.bos_id()] + ids
        assert count_bytes(tables, with_bos) == len(sp.decode(ids).encode("utf-8"))
        ids_t = torch.tensor(with_bos)
        assert counter.count(ids_t[:-1], ids_t[1:]).item() == len(sp.decode(ids).encode("utf-8"))


def test_real_tokenizer_unknown_pieces_count_zero_bytes(real_tokenizer_path, real_sp):
    sp = real_sp
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(real_tokenizer_path.read_bytes())
    assert proto.trainer_spec.byte_fallback is False  # so characters outside the vocabulary become <unk>
    unk_surface = proto.trainer_spec.unk_surface  # " ⁇ ": decode shows it, the metric must not count it
    assert len(unk_surface.encode("utf-8")) == 5

    ids = sp.encode("x#y")
    assert [sp.id_to_piece(i) for i in ids] == ["x", "<unk>", "y"]
    assert count_target_bytes(real_tokenizer_path, ids) == 1
    assert _decoded_target_bytes(sp, ids) == 1 + len(unk_surface.encode("utf-8"))

    for text in ["email me @ home", "a {brace} and a <tag>", "naïve café", "x = y + z * 2"]:
        ids = sp.encode(text)
        n_unk = ids.count(sp.unk_id())
        assert n_unk > 0
        counted = count_target_bytes(real_tokenizer_path, ids)
        # Decode renders each <unk> as the placeholder; removing it leaves what the reference counts,
        # except that a word after <unk> loses its leading space (an <unk> is a boundary).
        spaces_after_unk = sum(
            1
            for prev, cur in zip(ids[:-1], ids[1:])
            if prev == sp.unk_id() and sp.id_to_piece(cur).startswith("\u2581")
        )
        expected = _decoded_target_bytes(sp, ids) - n_unk * len(unk_surface.encode("utf-8")) - spaces_after_unk
        assert counted == expected


def test_check_vocab(real_tokenizer_path, real_sp):
    check_vocab(real_sp, 1024, real_tokenizer_path)
    with pytest.raises(ValueError) as info:
        check_vocab(real_sp, 4096, real_tokenizer_path)
    message = str(info.value)
    assert str(real_tokenizer_path) in message and "1024 pieces" in message and "VOCAB_SIZE" in message


def test_tables_wider_than_the_tokenizer(real_sp):
    tables = build_byte_tables(real_sp, 1100)
    assert tables.table_size == 1100
    assert tables.is_boundary[1024:].all() and not tables.base_bytes[1024:].any()
    assert build_byte_tables(real_sp, 512).table_size == 1024


def test_uniform_predictor_bpb_on_real_text(real_sp):
    sp = real_sp
    ids = [sp.bos_id()] + sp.encode(" ".join(ASCII_TEXTS))
    tables = build_byte_tables(sp, 1024)
    tokens = len(ids) - 1
    scored_bytes = count_bytes(tables, ids)
    uniform_loss = tokens * math.log(1024)  # -ln(1/V) per token
    assert bits_per_byte(uniform_loss, tokens, scored_bytes) == pytest.approx(math.log2(1024) * tokens / scored_bytes, rel=1e-12)


# ---- bits per byte and loading ---------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [2, 1024, 4096, 8192])
def test_uniform_predictor_bpb(vocab):
    tokens, scored_bytes = 1000, 2437
    loss_sum = tokens * math.log(vocab)
    assert bits_per_byte(loss_sum, tokens, scored_bytes) == pytest.approx(math.log2(vocab) * tokens / scored_bytes, rel=1e-12)


def test_bits_per_byte_is_float64_and_rejects_empty_counts():
    value = bits_per_byte(np.float32(1.5), 3, 7)
    assert isinstance(value, float)
    assert value == pytest.approx(1.5 / 3 / math.log(2) * 3 / 7, rel=1e-15)
    with pytest.raises(ValueError, match="scored nothing"):
        bits_per_byte(1.0, 0, 10)
    with pytest.raises(ValueError, match="scored nothing"):
        bits_per_byte(1.0, 10, 0)


def test_load_tokenizer_errors(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(FileNotFoundError) as info:
        load_tokenizer(missing)
    assert str(missing) in str(info.value) and "golf data demo" in str(info.value)
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"definitely not a protobuf")
    with pytest.raises(ValueError) as info:
        load_tokenizer(garbage)
    assert str(garbage) in str(info.value) and "not a valid SentencePiece model" in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_byte_counter_on_cuda_matches_the_cpu(synthetic_tables):
    prev = torch.tensor([[1, 5, 6, 7], [3, 4, 10, 11]])
    target = torch.tensor([[5, 6, 7, 9], [5, 5, 9, 5]])
    on_gpu = ByteCounter(synthetic_tables, torch.device("cuda")).count(prev.cuda(), target.cuda())
    assert on_gpu.is_cuda and on_gpu.dtype == torch.float64
    assert on_gpu.item() == ByteCounter(synthetic_tables, torch.device("cpu")).count(prev, target).item() == 30
