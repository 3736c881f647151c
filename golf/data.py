"""Token shards in the challenge's format, and the loaders that read them.

A shard is a 1024-byte header of 256 little-endian int32 values (``header[0]`` = 20240520,
``header[1]`` = 1, ``header[2]`` = n) followed by n little-endian uint16 token ids; the file is
exactly ``1024 + 2 * n`` bytes. Training reads ``fineweb_train_*.bin`` and evaluation reads
``fineweb_val_*.bin``, each in sorted file-name order.

The loaders reproduce the reference trainer's data order exactly (techniques.md section 1.1):

* :class:`TokenStream` walks one global cursor over the shards and wraps around at the end;
* :class:`DistributedTokenLoader` takes ``world_size * (local_tokens + 1)`` contiguous tokens per
  micro-step and gives rank r the r-th span, so the global batch does not depend on how many
  processes share it;
* :func:`load_validation_tokens` concatenates the validation shards and cuts them to
  ``floor((N - 1) / seq_len) * seq_len + 1`` tokens.

Shards are memory-mapped: a 100M-token shard costs address space, not RAM, and a ``take`` copies
only the tokens it returns.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Sequence, Union

import numpy as np
import torch

from golf.atomic import write_atomic

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
MAX_TOKEN_ID = int(np.iinfo(np.uint16).max)

PathLike = Union[str, os.PathLike]

_FETCH_HINT = (
    "build the offline demo corpus with `golf data demo --out DIR`, or fetch the challenge data "
    "with `golf data fineweb --variant sp1024 --train-shards N --out DIR`"
)


class DataError(ValueError):
    """The data or tokenizer a run points at cannot be used; the message names the file, the defect
    and the fix. A run stops on it with exit status 2 and no traceback: retrying cannot help."""


class ShardError(DataError):
    """A shard file is missing or malformed; the message names the file, the defect and the fix."""


def check_token_ids(tokens: np.ndarray, vocab_size: int, path: PathLike, offset: int = 0) -> None:
    """Raise :class:`ShardError` naming the first id of ``tokens`` outside ``[0, vocab_size)``.

    ``tokens`` are the shard's tokens from token ``offset`` on; the error names the file, the
    token's position in it and the fix, instead of the embedding's bare ``index out of range``.
    """
    if tokens.size == 0 or int(tokens.max()) < vocab_size:
        return
    index = int(np.argmax(tokens >= vocab_size))
    position = offset + index
    raise ShardError(
        f"shard {path} holds token id {int(tokens[index])} at token {position} (byte "
        f"{HEADER_BYTES + 2 * position}), outside the vocabulary (VOCAB_SIZE={vocab_size}): the shards were "
        "written with another tokenizer; point DATA_PATH at shards made with TOKENIZER_PATH's tokenizer, or "
        "set VOCAB_SIZE and TOKENIZER_PATH to the tokenizer the shards were made with"
    )


def write_shard(path: PathLike, tokens: object) -> None:
    """Write ``tokens`` (a 1-D array-like of integers in [0, 65535]) as a shard at ``path``.

    The file is written under a temporary name in the same folder and renamed into place, so a
    reader never sees a half-written shard and a crash leaves no truncated file behind.
    """
    path = Path(path)
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise ValueError(f"write_shard({path}): tokens must be 1-D, got shape {array.shape}; flatten them first")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(
            f"write_shard({path}): tokens must be integers, got dtype {array.dtype}; "
            "convert token ids with .astype(np.int64) before writing"
        )
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > MAX_TOKEN_ID:
            raise ValueError(
                f"write_shard({path}): token ids must lie in [0, {MAX_TOKEN_ID}] to fit uint16, found "
                f"min {low} and max {high}; the vocabulary is too large for the shard format"
            )
    if array.size >= 2**31:
        raise ValueError(
            f"write_shard({path}): {array.size} tokens do not fit the int32 count in the header; "
            "split them over several shards"
        )
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, array.size

    def write(handle: BinaryIO) -> None:
        handle.write(header.tobytes())
        handle.write(array.astype(TOKEN_DTYPE, copy=False).tobytes())

    write_atomic(path, write)


def read_shard_header(path: PathLike) -> int:
    """Validate the shard at ``path`` (header and file size) and return its token count.

    Reads only the 1024-byte header, so it is cheap enough to check every shard before training.
    Raises :class:`ShardError` for a missing file, a file shorter than the header, a wrong magic
    number or version, a negative token count, or a size that disagrees with the count.
    """
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"shard {path} does not exist (or is not a file); {_FETCH_HINT}")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(
            f"shard {path} is {size} bytes, shorter than the {HEADER_BYTES}-byte header: the file is "
            "truncated or not a shard; delete it and rebuild or re-download it"
        )
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    magic, version, count = int(header[0]), int(header[1]), int(header[2])
    if magic != SHARD_MAGIC:
        raise ShardError(
            f"shard {path} has magic number {magic} in header[0], expected {SHARD_MAGIC}: it is not a "
            "token shard in the challenge format; point the data path at a folder of fineweb_*.bin "
            "shards written by `golf data` or the challenge's download script"
        )
    if version != SHARD_VERSION:
        raise ShardError(
            f"shard {path} has format version {version} in header[1], expected {SHARD_VERSION}: it was "
            "written by an incompatible tool; rebuild it with `golf data demo` or re-download it"
        )
    if count < 0:
        raise ShardError(
            f"shard {path} declares a negative token count ({count}) in header[2]: the header is "
            "corrupt; delete the file and rebuild or re-download it"
        )
    expected = HEADER_BYTES + 2 * count
    if size != expected:
        raise ShardError(
            f"shard {path} declares {count} tokens, so it should be {HEADER_BYTES} + 2 * {count} = "
            f"{expected} bytes, but it is {size} bytes: the file is probably truncated or still being "
            "written; wait for the writer to finish, or delete it and rebuild or re-download it"
        )
    return count


def read_shard(path: PathLike) -> np.ndarray:
    """Validate the shard at ``path`` and return its tokens as a read-only uint16 memory map.

    An empty shard returns an empty (read-only) uint16 array, since a zero-length file region
    cannot be mapped.
    """
    count = read_shard_header(path)
    if count == 0:
        empty = np.empty(0, dtype=TOKEN_DTYPE)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(count,))


def shard_files(data_path: PathLike, split: str) -> list[Path]:
    """The ``fineweb_{split}_*.bin`` shards in ``data_path``, sorted by file name.

    ``split`` is ``"train"`` or ``"val"``. A missing folder or an empty match is an error that
    names the folder and the command that fills it.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    folder = Path(data_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} does not exist; {_FETCH_HINT}, then pass DIR/datasets/<name>")
    files = sorted(folder.glob(f"fineweb_{split}_*.bin"))
    if not files:
        raise FileNotFoundError(
            f"no {split} shards (fineweb_{split}_*.bin) in {folder}; {_FETCH_HINT}, "
            "and point the data path at the folder that holds the shards"
        )
    return files


class TokenStream:
    """One global cursor over the shards in sorted order that wraps around at the end.

    Every shard header is validated up front; only the shard under the cursor is mapped. With
    ``vocab_size``, the ids are checked on the first pass over each shard (a shard read end to end
    once is not checked again), so a shard from another tokenizer stops the run with its file and
    offset named, at the cost of one ``max`` over each batch's tokens.
    """

    def __init__(self, files: Sequence[PathLike], vocab_size: int | None = None) -> None:
        if not files:
            raise ValueError(f"TokenStream needs at least one shard file; {_FETCH_HINT}")
        counted = [(Path(f), read_shard_header(f)) for f in files]
        self._files = [(path, count) for path, count in counted if count > 0]
        if not self._files:
            names = ", ".join(str(path) for path, _ in counted)
            raise ShardError(f"every shard is empty (0 tokens): {names}; rebuild or re-download the data")
        self.total_tokens = sum(count for _, count in self._files)
        self.vocab_size = vocab_size
        self._checked: set[int] = set()  # shards whose ids were all checked
        self._file_index = 0
        self._tokens = read_shard(self._files[0][0])
        self._pos = 0

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` tokens as a new uint16 array, advancing (and wrapping) the cursor."""
        if n < 0:
            raise ValueError(f"TokenStream.take needs n >= 0, got {n}")
        out = np.empty(n, dtype=np.uint16)
        filled = 0
        while filled < n:
            available = self._tokens.shape[0] - self._pos
            if available == 0:
                self._advance_file()
                continue
            k = min(available, n - filled)
            segment = self._tokens[self._pos : self._pos + k]
            if self.vocab_size is not None and self._file_index not in self._checked:
                check_token_ids(segment, self.vocab_size, self._files[self._file_index][0], self._pos)
            out[filled : filled + k] = segment
            self._pos += k
            filled += k
            if self._pos == self._tokens.shape[0]:
                self._checked.add(self._file_index)
        return out

    def _advance_file(self) -> None:
        self._file_index = (self._file_index + 1) % len(self._files)
        self._tokens = read_shard(self._files[self._file_index][0])
        self._pos = 0


class DistributedTokenLoader:
    """Per-rank micro-batches with the reference trainer's span semantics.

    Each call takes ``world_size * (local_tokens + 1)`` tokens from the shared stream, where
    ``local_tokens = global_tokens // (world_size * grad_accum_steps)``; rank r keeps the r-th
    span. Every rank walks the same stream, so the ranks stay in step without communicating.
    ``vocab_size`` turns on the first-pass id check of :class:`TokenStream`.
    """

    def __init__(
        self, files: Sequence[PathLike], rank: int, world_size: int, device: torch.device,
        vocab_size: int | None = None,
    ) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size - 1}] for world_size {world_size}, got {rank}")
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.stream = TokenStream(files, vocab_size)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (x, y) for one micro-step: int64 ``[local_tokens // seq_len, seq_len]`` each."""
        if global_tokens <= 0 or seq_len <= 0 or grad_accum_steps <= 0:
            raise ValueError(
                f"next_batch needs positive sizes, got global_tokens={global_tokens}, seq_len={seq_len}, "
                f"grad_accum_steps={grad_accum_steps}"
            )
        shares = self.world_size * grad_accum_steps
        if global_tokens % shares:
            raise ValueError(
                f"the global batch of {global_tokens} tokens (TRAIN_BATCH_TOKENS) does not split evenly over "
                f"world_size {self.world_size} x grad_accum_steps {grad_accum_steps} = {shares} micro-batches; "
                f"choose TRAIN_BATCH_TOKENS as a multiple of {shares * seq_len}"
            )
        local_tokens = global_tokens // shares
        if local_tokens % seq_len:
            raise ValueError(
                f"each micro-batch holds {global_tokens} / {shares} = {local_tokens} tokens, which is not a "
                f"multiple of the sequence length {seq_len} (TRAIN_SEQ_LEN); choose TRAIN_BATCH_TOKENS as a "
                f"multiple of {shares * seq_len}"
            )
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)
        start = self.rank * span
        local = torch.from_numpy(chunk[start : start + span].astype(np.int64))
        x = local[:-1].reshape(-1, seq_len)
        y = local[1:].reshape(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def load_validation_tokens(files: Sequence[PathLike], seq_len: int, max_tokens: int = 0) -> torch.Tensor:
    """All validation shards concatenated and cut to ``floor((N - 1) / seq_len) * seq_len + 1`` tokens.

    ``max_tokens > 0`` keeps only the first ``max_tokens`` tokens before the cut (0 keeps all).
    Returns an int64 tensor on the CPU.
    """
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0 (0 = all validation tokens), got {max_tokens}")
    if not files:
        raise ValueError(f"no validation shards given; {_FETCH_HINT}")
    counts = [read_shard_header(f) for f in files]
    available = sum(counts)
    wanted = available if max_tokens == 0 else min(available, max_tokens)
    if wanted < seq_len + 1:
        names = ", ".join(str(f) for f in files)
        limit = f" (limited to the first {max_tokens})" if max_tokens else ""
        raise ValueError(
            f"validation needs at least seq_len + 1 = {seq_len + 1} tokens, but the shards hold {available}"
            f"{limit}: {names}; use a shorter sequence length, raise the token limit, or add validation data"
        )
    usable = ((wanted - 1) // seq_len) * seq_len + 1
    out = np.empty(usable, dtype=np.int64)
    filled = 0
    for path, count in zip(files, counts):
        if filled == usable:
            break
        if count == 0:
            continue
        k = min(count, usable - filled)
        out[filled : filled + k] = read_shard(path)[:k]
        filled += k
    return torch.from_numpy(out)
