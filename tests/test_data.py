"""Shards and loaders (golf/data.py): format, validation errors, and the reference's data order."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from golf.data import (
    HEADER_BYTES,
    HEADER_INTS,
    SHARD_MAGIC,
    SHARD_VERSION,
    DistributedTokenLoader,
    ShardError,
    TokenStream,
    load_validation_tokens,
    read_shard,
    read_shard_header,
    shard_files,
    write_shard,
)


def _raw_shard(path: Path, *, magic: int = SHARD_MAGIC, version: int = SHARD_VERSION, count: int, tokens: int) -> Path:
    """A shard file with a hand-made header, for the malformed cases write_shard refuses to produce."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = magic, version, count
    path.write_bytes(header.tobytes() + np.arange(tokens, dtype="<u2").tobytes())
    return path


def _write_shards(folder: Path, split: str, sizes: list[int], start: int = 0) -> tuple[list[Path], np.ndarray]:
    """Shards of consecutive token ids (so every position is recognisable) and their concatenation."""
    files, chunks, next_id = [], [], start
    for index, size in enumerate(sizes):
        tokens = (np.arange(next_id, next_id + size) % 65536).astype(np.int64)
        next_id += size
        path = folder / f"fineweb_{split}_{index:06d}.bin"
        write_shard(path, tokens)
        files.append(path)
        chunks.append(tokens)
    return files, np.concatenate(chunks)


# ---- format ------------------------------------------------------------------------------------


def test_round_trip_header_size_and_read_only_memmap(tmp_path):
    tokens = np.array([0, 1, 2, 1023, 65535, 7], dtype=np.int64)
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, tokens)

    assert path.stat().st_size == HEADER_BYTES + 2 * len(tokens)
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    assert (header[0], header[1], header[2]) == (20240520, 1, len(tokens))
    assert not header[3:].any()
    assert np.frombuffer(path.read_bytes()[HEADER_BYTES:], dtype="<u2").tolist() == tokens.tolist()

    loaded = read_shard(path)
    assert isinstance(loaded, np.memmap)
    assert loaded.dtype == np.uint16
    assert loaded.tolist() == tokens.tolist()
    with pytest.raises(ValueError):
        loaded[0] = 5
    assert read_shard_header(path) == len(tokens)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_round_trip_of_an_empty_shard(tmp_path):
    path = tmp_path / "fineweb_val_000000.bin"
    write_shard(path, [])
    assert path.stat().st_size == HEADER_BYTES
    assert read_shard(path).shape == (0,)


def test_write_shard_replaces_atomically_and_keeps_the_old_file_on_bad_input(tmp_path):
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, [1, 2, 3])
    with pytest.raises(ValueError, match="65535"):
        write_shard(path, [1, 70000])
    with pytest.raises(ValueError, match=r"min -1"):
        write_shard(path, [-1, 3])
    with pytest.raises(ValueError, match="integers"):
        write_shard(path, [0.5, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        write_shard(path, [[1, 2], [3, 4]])
    assert read_shard(path).tolist() == [1, 2, 3]
    write_shard(path, np.array([9, 8], dtype=np.uint16))
    assert read_shard(path).tolist() == [9, 8]


# ---- malformed shards: each its own clear error, naming the file ---------------------------------


def test_wrong_magic(tmp_path):
    path = _raw_shard(tmp_path / "bad_magic.bin", magic=12345, count=4, tokens=4)
    with pytest.raises(ShardError) as info:
        read_shard(path)
    message = str(info.value)
    assert str(path) in message and "magic number 12345" in message and "20240520" in message


def test_wrong_version(tmp_path):
    path = _raw_shard(tmp_path / "bad_version.bin", version=7, count=4, tokens=4)
    with pytest.raises(ShardError) as info:
        read_shard(path)
    message = str(info.value)
    assert str(path) in message and "version 7" in message and "expected 1" in message


def test_file_shorter_than_the_header(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ShardError) as info:
        read_shard(path)
    message = str(info.value)
    assert str(path) in message and "100 bytes" in message and "shorter than the 1024-byte header" in message


def test_truncated_file_says_expected_and_actual_size(tmp_path):
    path = _raw_shard(tmp_path / "truncated.bin", count=10, tokens=6)
    with pytest.raises(ShardError) as info:
        read_shard(path)
    message = str(info.value)
    assert str(path) in message
    assert f"{HEADER_BYTES + 20} bytes, but it is {HEADER_BYTES + 12} bytes" in message
    assert "truncated or still being written" in message


def test_file_longer_than_declared(tmp_path):
    path = _raw_shard(tmp_path / "long.bin", count=3, tokens=5)
    with pytest.raises(ShardError, match=r"declares 3 tokens"):
        read_shard(path)


def test_negative_token_count(tmp_path):
    path = _raw_shard(tmp_path / "negative.bin", count=-4, tokens=0)
    with pytest.raises(ShardError) as info:
        read_shard(path)
    message = str(info.value)
    assert str(path) in message and "negative token count (-4)" in message


def test_missing_file(tmp_path):
    path = tmp_path / "fineweb_train_000000.bin"
    with pytest.raises(ShardError) as info:
        read_shard(path)
    assert str(path) in str(info.value) and "golf data demo" in str(info.value)


def test_shard_error_is_a_value_error():
    assert issubclass(ShardError, ValueError)


# ---- shard discovery ----------------------------------------------------------------------------


def test_shard_files_sorted_by_name_per_split(tmp_path):
    for name in ("fineweb_train_000002.bin", "fineweb_train_000000.bin", "fineweb_val_000000.bin", "fineweb_train_000001.bin"):
        write_shard(tmp_path / name, [1])
    (tmp_path / "manifest.json").write_text("{}")
    assert [p.name for p in shard_files(tmp_path, "train")] == [
        "fineweb_train_000000.bin",
        "fineweb_train_000001.bin",
        "fineweb_train_000002.bin",
    ]
    assert [p.name for p in shard_files(str(tmp_path), "val")] == ["fineweb_val_000000.bin"]


def test_shard_files_errors_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        shard_files(tmp_path, "train")
    assert str(tmp_path) in str(info.value)
    assert "golf data demo" in str(info.value) and "golf data fineweb" in str(info.value)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        shard_files(missing, "val")
    with pytest.raises(ValueError, match="'train' or 'val'"):
        shard_files(tmp_path, "test")


# ---- the train stream -----------------------------------------------------------------------------


def test_token_stream_walks_shards_in_order_and_wraps(tmp_path):
    files, everything = _write_shards(tmp_path, "train", [5, 3, 7])
    stream = TokenStream(files)
    assert stream.total_tokens == 15
    taken = np.concatenate([stream.take(n) for n in (4, 0, 6, 9, 15, 2)])
    cyclic = np.resize(everything, taken.size)  # np.resize repeats the array cyclically
    assert taken.tolist() == cyclic.tolist()
    assert stream.take(0).dtype == np.uint16


def test_token_stream_skips_empty_shards_and_rejects_all_empty(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", [])
    write_shard(tmp_path / "fineweb_train_000001.bin", [4, 5])
    write_shard(tmp_path / "fineweb_train_000002.bin", [])
    stream = TokenStream(shard_files(tmp_path, "train"))
    assert stream.take(5).tolist() == [4, 5, 4, 5, 4]
    with pytest.raises(ShardError, match="every shard is empty"):
        TokenStream([tmp_path / "fineweb_train_000000.bin"])


def test_token_stream_validates_every_shard_up_front(tmp_path):
    files, _ = _write_shards(tmp_path, "train", [4, 4])
    with open(files[1], "r+b") as handle:
        handle.truncate(HEADER_BYTES + 2)
    with pytest.raises(ShardError, match=str(files[1])):
        TokenStream(files)


# ---- the distributed loader ------------------------------------------------------------------------


def _optimizer_step(loaders: list[DistributedTokenLoader], global_tokens: int, seq_len: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every micro-batch of one optimizer step, in the order world size 1 would see them."""
    world_size = len(loaders)
    grad_accum = 8 // world_size
    batches = []
    for _ in range(grad_accum):
        batches.extend(loader.next_batch(global_tokens, seq_len, grad_accum) for loader in loaders)
    return batches


@pytest.mark.parametrize("world_size", [2, 4, 8])
def test_global_batch_does_not_depend_on_world_size(tmp_path, world_size):
    # Small shards of odd sizes: one optimizer step (8 spans of 9 tokens) crosses shard boundaries
    # and the six steps wrap around the 110-token stream several times.
    files, _ = _write_shards(tmp_path, "train", [37, 50, 23])
    global_tokens, seq_len = 64, 4
    single = [DistributedTokenLoader(files, 0, 1, torch.device("cpu"))]
    shared = [DistributedTokenLoader(files, rank, world_size, torch.device("cpu")) for rank in range(world_size)]
    for _ in range(6):
        reference = _optimizer_step(single, global_tokens, seq_len)
        distributed = _optimizer_step(shared, global_tokens, seq_len)
        assert len(reference) == len(distributed) == 8
        for (x1, y1), (x2, y2) in zip(reference, distributed):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_micro_batch_shapes_dtype_and_shift(tmp_path):
    files, everything = _write_shards(tmp_path, "train", [40, 40])
    loader = DistributedTokenLoader(files, 1, 2, "cpu")
    x, y = loader.next_batch(global_tokens=32, seq_len=4, grad_accum_steps=2)
    # local_tokens = 32 / (2 * 2) = 8; the stream yields 2 * 9 tokens; rank 1 keeps tokens 9..17.
    assert x.shape == y.shape == (2, 4)
    assert x.dtype == y.dtype == torch.int64
    assert x.device.type == "cpu"
    assert x.flatten().tolist() == everything[9:17].tolist()
    assert y.flatten().tolist() == everything[10:18].tolist()


def test_loader_divisibility_errors_are_clear(tmp_path):
    files, _ = _write_shards(tmp_path, "train", [100])
    loader = DistributedTokenLoader(files, 0, 2, "cpu")
    with pytest.raises(ValueError, match=r"does not split evenly over world_size 2 x grad_accum_steps 4 = 8"):
        loader.next_batch(global_tokens=100, seq_len=4, grad_accum_steps=4)
    with pytest.raises(ValueError, match=r"not a multiple of the sequence length 16"):
        loader.next_batch(global_tokens=64, seq_len=16, grad_accum_steps=4)
    with pytest.raises(ValueError, match="positive"):
        loader.next_batch(global_tokens=64, seq_len=0, grad_accum_steps=4)


def test_loader_rejects_bad_rank_and_world_size(tmp_path):
    files, _ = _write_shards(tmp_path, "train", [10])
    with pytest.raises(ValueError, match=r"rank must lie in \[0, 1\]"):
        DistributedTokenLoader(files, 2, 2, "cpu")
    with pytest.raises(ValueError, match="world_size"):
        DistributedTokenLoader(files, 0, 0, "cpu")


# ---- validation tokens -----------------------------------------------------------------------------


def test_validation_tokens_concatenate_and_cut(tmp_path):
    files, everything = _write_shards(tmp_path, "val", [10, 13])  # N = 23 tokens
    tokens = load_validation_tokens(files, seq_len=4)
    assert tokens.dtype == torch.int64 and tokens.device.type == "cpu"
    assert tokens.numel() == (23 - 1) // 4 * 4 + 1 == 21
    assert tokens.tolist() == everything[:21].tolist()

    exact = load_validation_tokens(files, seq_len=11)  # (23 - 1) is a multiple of 11: nothing cut
    assert exact.numel() == 23


def test_validation_token_limit_applies_before_the_cut(tmp_path):
    files, everything = _write_shards(tmp_path, "val", [10, 13])
    limited = load_validation_tokens(files, seq_len=4, max_tokens=15)
    assert limited.tolist() == everything[: (15 - 1) // 4 * 4 + 1].tolist()
    assert load_validation_tokens(files, seq_len=4, max_tokens=1000).numel() == 21


def test_validation_needs_seq_len_plus_one_tokens(tmp_path):
    files, _ = _write_shards(tmp_path, "val", [3, 2])
    assert load_validation_tokens(files, seq_len=4).numel() == 5
    with pytest.raises(ValueError) as info:
        load_validation_tokens(files, seq_len=5)
    message = str(info.value)
    assert "at least seq_len + 1 = 6 tokens" in message and "hold 5" in message and str(files[0]) in message
    with pytest.raises(ValueError, match="limited to the first 4"):
        load_validation_tokens(files, seq_len=4, max_tokens=4)
    with pytest.raises(ValueError, match="no validation shards"):
        load_validation_tokens([], seq_len=4)


def test_large_shard_is_mapped_not_read(tmp_path):
    # A shard is mapped lazily: take() copies only the requested tokens, whatever the shard size.
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, np.arange(1 << 20) % 1024)
    stream = TokenStream([path])
    assert isinstance(stream._tokens, np.memmap)
    chunk = stream.take(10)
    assert not isinstance(chunk, np.memmap) and chunk.base is None
    assert chunk.tolist() == list(range(10))
    assert os.path.getsize(path) == HEADER_BYTES + 2 * (1 << 20)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loader_moves_batches_to_the_device(tmp_path):
    files, everything = _write_shards(tmp_path, "train", [40])
    x, y = DistributedTokenLoader(files, 0, 1, torch.device("cuda")).next_batch(16, 4, 1)
    assert x.is_cuda and y.is_cuda and x.dtype == torch.int64
    assert x.cpu().flatten().tolist() == everything[:16].tolist()
