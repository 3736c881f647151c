"""Byte accounting for bits-per-byte, from a SentencePiece tokenizer's piece table.

The challenge scores ``val_bpb = (val_loss / ln 2) * tokens / bytes``, where the bytes are
counted from the tokens, not from the raw text (techniques.md section 1.2). One pass over the
vocabulary builds three lookup tables:

* ``base_bytes[id]``: 0 for control, unknown and unused ids; 1 for byte-fallback ids; otherwise
  the UTF-8 length of the piece after removing a leading "▁" (U+2581);
* ``has_leading_space[id]``: the piece starts with "▁";
* ``is_boundary[id]``: true for control, unknown and unused ids and for ids beyond the
  tokenizer's vocabulary, false for normal and byte pieces.

A target token t that follows p counts
``base_bytes[t] + (has_leading_space[t] and not is_boundary[p])`` bytes: a word's leading space
is counted unless the word starts a document. An unknown piece counts 0 bytes, although
``decode`` renders it as a placeholder (" ⁇ "): the metric follows the reference, not decode.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import sentencepiece as spm
import torch

LEADING_SPACE = "\u2581"

PathLike = Union[str, os.PathLike]

_FETCH_HINT = (
    "build the demo tokenizer with `golf data demo --out DIR` (DIR/tokenizers/demo_1024_bpe.model) or "
    "fetch the challenge's with `golf data fineweb --variant sp1024 --train-shards N --out DIR` "
    "(DIR/tokenizers/fineweb_1024_bpe.model)"
)


@dataclass(frozen=True)
class ByteTables:
    """Per-id lookup tables of length ``table_size`` (see the module docstring)."""

    base_bytes: np.ndarray  # int16
    has_leading_space: np.ndarray  # bool
    is_boundary: np.ndarray  # bool

    @property
    def table_size(self) -> int:
        return int(self.base_bytes.shape[0])


def load_tokenizer(path: PathLike) -> spm.SentencePieceProcessor:
    """Load the SentencePiece model at ``path``, with a clear error if it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {path} does not exist; {_FETCH_HINT}, and set TOKENIZER_PATH to it")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as exc:
        raise ValueError(
            f"tokenizer {path} is not a valid SentencePiece model ({exc}); the file is corrupt or of another "
            f"kind: delete it and {_FETCH_HINT}"
        ) from exc


def build_byte_tables(sp: spm.SentencePieceProcessor, vocab_size: int) -> ByteTables:
    """The byte lookup tables for ``sp``, sized ``max(sp vocabulary, vocab_size)``.

    Ids at or beyond the tokenizer's vocabulary (a model whose embedding is larger than the
    tokenizer) count 0 bytes and are boundaries, like control ids.
    """
    sp_size = int(sp.vocab_size())
    table_size = max(sp_size, int(vocab_size))
    base_bytes = np.zeros(table_size, dtype=np.int16)
    has_leading_space = np.zeros(table_size, dtype=np.bool_)
    is_boundary = np.ones(table_size, dtype=np.bool_)
    for token_id in range(sp_size):
        if sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id):
            continue
        is_boundary[token_id] = False
        if sp.is_byte(token_id):
            base_bytes[token_id] = 1
            continue
        piece = sp.id_to_piece(token_id)
        if piece.startswith(LEADING_SPACE):
            has_leading_space[token_id] = True
            piece = piece[len(LEADING_SPACE) :]
        base_bytes[token_id] = len(piece.encode("utf-8"))
    return ByteTables(base_bytes=base_bytes, has_leading_space=has_leading_space, is_boundary=is_boundary)


def count_bytes(tables: ByteTables, token_ids: object) -> int:
    """The bytes the metric counts for ``token_ids[1:]``, each target given its predecessor."""
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= tables.table_size):
        raise ValueError(
            f"token ids must lie in [0, {tables.table_size - 1}] for this tokenizer, found "
            f"min {int(ids.min())} and max {int(ids.max())}; the ids come from another vocabulary"
        )
    if ids.size < 2:
        return 0
    prev, target = ids[:-1], ids[1:]
    counted = tables.base_bytes[target].astype(np.int64)
    counted += tables.has_leading_space[target] & ~tables.is_boundary[prev]
    return int(counted.sum())


def count_target_bytes(tokenizer_path: PathLike, token_ids: object) -> int:
    """The bytes the metric counts for ``token_ids[1:]`` under the tokenizer at ``tokenizer_path``."""
    sp = load_tokenizer(tokenizer_path)
    return count_bytes(build_byte_tables(sp, sp.vocab_size()), token_ids)


class ByteCounter:
    """The byte tables on a device, for counting scored bytes inside evaluation."""

    def __init__(self, tables: ByteTables, device: torch.device) -> None:
        self.device = torch.device(device)
        self.base_bytes = torch.as_tensor(tables.base_bytes, dtype=torch.int16, device=self.device)
        self.has_leading_space = torch.as_tensor(tables.has_leading_space, dtype=torch.bool, device=self.device)
        self.is_boundary = torch.as_tensor(tables.is_boundary, dtype=torch.bool, device=self.device)

    def count(self, prev_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """Float64 scalar on the device: the summed bytes of ``target_ids``, each after ``prev_ids``.

        The two tensors have the same shape; the ids must lie inside the tables (no range check,
        which would cost a device synchronisation per batch).
        """
        return self.token_bytes(prev_ids, target_ids).sum().to(torch.float64)

    def token_bytes(self, prev_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """The bytes of each target token after its predecessor (int64, the ids' shape)."""
        if prev_ids.shape != target_ids.shape:
            raise ValueError(
                f"prev_ids and target_ids must have the same shape, got {tuple(prev_ids.shape)} and "
                f"{tuple(target_ids.shape)}"
            )
        counted = self.base_bytes[target_ids].to(torch.int64)
        counted += (self.has_leading_space[target_ids] & ~self.is_boundary[prev_ids]).to(torch.int64)
        return counted


def check_vocab(sp: spm.SentencePieceProcessor, vocab_size: int, tokenizer_path: PathLike) -> None:
    """Raise if the tokenizer's vocabulary differs from the model's ``VOCAB_SIZE``."""
    actual = int(sp.vocab_size())
    if actual != int(vocab_size):
        raise ValueError(
            f"tokenizer {tokenizer_path} has {actual} pieces but VOCAB_SIZE is {vocab_size}: the model "
            f"would score ids the tokenizer never produces, or miss ids it does; set VOCAB_SIZE={actual}, "
            f"or point TOKENIZER_PATH (and the data path) at a {vocab_size}-piece tokenizer and its shards"
        )


def bits_per_byte(loss_sum_nats: float, token_count: float, byte_count: float) -> float:
    """``(loss_sum / token_count) / ln 2 * (token_count / byte_count)`` in float64."""
    if token_count <= 0 or byte_count <= 0:
        raise ValueError(
            f"bits_per_byte needs positive token and byte counts, got {token_count} tokens and {byte_count} bytes; "
            "the evaluation scored nothing"
        )
    loss_per_token = float(loss_sum_nats) / float(token_count)
    return loss_per_token / math.log(2.0) * (float(token_count) / float(byte_count))
