"""Is the data usable? Every check that needs no model, done before any compute.

A run (and a sweep, for each config, before it starts Ray) calls :func:`preflight` right after
validating its config. It reads every shard's 1024-byte header and checks the file size against
it, loads the tokenizer (is it a SentencePiece model, does its vocabulary match VOCAB_SIZE), and
checks the ids of the validation tokens the run will score. Training shards are too large to read
up front; their ids are checked on the loader's first pass over each
(:class:`golf.data.TokenStream`). Each problem is a :class:`golf.data.DataError` whose one-line
message names the file, the defect and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from golf.data import DataError, ShardError, check_token_ids, read_shard, read_shard_header, shard_files
from golf.tokenizer import check_vocab, load_tokenizer

if TYPE_CHECKING:
    from golf.config import GolfConfig


@dataclass(frozen=True)
class DataSummary:
    """What the checks found: shard counts and token totals."""

    train_shards: int
    val_shards: int
    train_tokens: int
    val_tokens: int


def preflight(cfg: GolfConfig) -> DataSummary:
    """Check ``cfg``'s shards and tokenizer; raise :class:`DataError` on the first problem."""
    data_path, tokenizer_path = Path(cfg.data_path), Path(cfg.tokenizer_path)
    try:
        train_files = shard_files(data_path, "train")
        val_files = shard_files(data_path, "val")
    except FileNotFoundError as err:
        raise DataError(f"DATA_PATH: {err}") from None
    train_counts = [read_shard_header(path) for path in train_files]
    val_counts = [read_shard_header(path) for path in val_files]
    if not any(train_counts):
        raise ShardError(f"every training shard in {data_path} is empty (0 tokens); rebuild or re-download the data")
    check_tokenizer(tokenizer_path, cfg.vocab_size)
    wanted = sum(val_counts) if cfg.val_max_tokens == 0 else min(sum(val_counts), cfg.val_max_tokens)
    if wanted < cfg.train_seq_len + 1:
        raise ShardError(
            f"the validation shards in {data_path} hold {sum(val_counts)} tokens"
            f"{f' (VAL_MAX_TOKENS={cfg.val_max_tokens})' if cfg.val_max_tokens else ''}, fewer than one sequence "
            f"plus one (TRAIN_SEQ_LEN + 1 = {cfg.train_seq_len + 1}); add validation data or lower TRAIN_SEQ_LEN"
        )
    left = wanted
    for path, count in zip(val_files, val_counts):
        if left <= 0:
            break
        if count:
            check_token_ids(read_shard(path)[:left], cfg.vocab_size, path)
        left -= count
    return DataSummary(len(train_files), len(val_files), sum(train_counts), sum(val_counts))


def check_tokenizer(path: Path, vocab_size: int) -> None:
    """The tokenizer at ``path`` exists, is a SentencePiece model and has ``vocab_size`` pieces."""
    try:
        check_vocab(load_tokenizer(path), vocab_size, path)
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"TOKENIZER_PATH: {err}") from None
