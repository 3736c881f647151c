"""The embedded demo corpus (``golf data demo``): real text every CPython installation carries.

Built offline and deterministically from

* the docstrings of the standard library's ``.py`` files (module, class and function
  docstrings, in source order, one document per file), read with :mod:`ast` from
  ``sysconfig.get_paths()["stdlib"]`` and never imported; test packages
  (``test``, ``tests``, ``idle_test``) and ``site-packages`` are skipped;
* the help topics of ``pydoc_data/topics.py`` (the text behind ``help("assert")``), one
  document per topic, read from its dict literal with :func:`ast.literal_eval`.

Identical texts are kept once, the documents are shuffled with a fixed seed and about 8% of
them go to validation (no document is in both splits). A SentencePiece BPE tokenizer with
1024 pieces is trained on the training documents only, with the settings of the challenge's
``fineweb_1024_bpe.model`` (see :data:`DEMO_TRAINER_SETTINGS`). Each document is written as
``[bos] + ids``, as the challenge's export does, in challenge-format shards:
``DIR/datasets/demo_sp1024/fineweb_{train,val}_*.bin``, ``DIR/tokenizers/demo_1024_bpe.model``
and ``DIR/datasets/demo_sp1024/manifest.json``. CPython 3.11 yields about 0.7 M training and
0.1 M validation tokens in a few seconds. The build is cached (a second call checks the
manifest and returns), rebuilt when the source files change (another Python), serialised
between processes by a file lock, and assembled in a temporary folder that is renamed into
place, so a crash never leaves a half-built corpus behind.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import platform
import random
import re
import shutil
import sysconfig
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np

from golf.atomic import write_bytes_atomic
from golf.corpus.lock import exclusive_lock
from golf.data import ShardError, read_shard_header, write_shard

PathLike = Union[str, os.PathLike]

DEMO_DATASET = "demo_sp1024"
DEMO_TOKENIZER = "demo_1024_bpe.model"
DEMO_VOCAB_SIZE = 1024
# Other sizes (``golf data demo --vocab 4096``: the SP4096/SP8192 records' vocabularies) live
# beside it as demo_sp<N> / demo_<N>_bpe.model; the stdlib text trains up to about this many pieces.
DEMO_MAX_VOCAB_SIZE = 8192
DEMO_MIN_VOCAB_SIZE = 256
DEMO_SEED = 1337
DEMO_VAL_FRACTION = 0.08
# Far below the challenge's 100M tokens per shard, so the demo has several training shards and
# the smoke runs exercise the loader's shard crossing and wrap-around like a real run.
DEMO_SHARD_TOKENS = 2**18
DEMO_MANIFEST_SCHEMA = "golf.demo_corpus/1"
# Part of the cache key: bump it whenever the build changes what it writes.
DEMO_BUILD_FORMAT = 1
DEMO_MIN_TEXT_BYTES = 200_000

# Copied from the challenge tokenizer's trainer_spec and normalizer_spec (fineweb_1024_bpe.model):
# BPE, 1024 pieces, no byte fallback (unseen characters become <unk>), digits split, NFKC with
# whitespace folding, no dummy "▁" prefix, pad/bos/eos/unk = 0/1/2/3.
DEMO_TRAINER_SETTINGS: dict[str, Any] = {
    "model_type": "bpe",
    "vocab_size": DEMO_VOCAB_SIZE,
    "character_coverage": 0.999,
    "byte_fallback": False,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "remove_extra_whitespaces": True,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "hard_vocab_limit": False,
    # The challenge trained with 16 threads; one thread makes the model bytes reproducible and
    # costs well under a second on this corpus.
    "num_threads": 1,
}
# SentencePiece skips training sentences longer than this (its default, also the challenge's).
_MAX_SENTENCE_BYTES = 4192

_SKIPPED_STDLIB_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
_DOCSTRING_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
# Fields that hold nested statements (or except handlers and match cases, which hold statements).
_STATEMENT_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")

DEMO_SOURCE_DESCRIPTION = (
    "docstrings of the Python standard library's .py files (module, class and function docstrings in "
    "source order, one document per file; read with ast from sysconfig's stdlib path, never imported; "
    "test packages and site-packages skipped) and the help topics of pydoc_data/topics.py (one "
    "document per topic)"
)


class CorpusError(RuntimeError):
    """The demo corpus cannot be built; the message says why and what to do."""


@dataclass(frozen=True)
class DataPaths:
    """Where a dataset's shards and its tokenizer live."""

    data_path: Path
    tokenizer_path: Path

    @property
    def manifest_path(self) -> Path:
        return self.data_path / "manifest.json"


@dataclass(frozen=True)
class DemoData(DataPaths):
    """A built demo corpus: its paths and its token counts."""

    train_tokens: int
    val_tokens: int


@dataclass(frozen=True)
class SourceDocument:
    """One demo document: ``name`` says where it came from (``stdlib:json/decoder.py``, ``topic:assert``)."""

    name: str
    text: str


def demo_names(vocab_size: int = DEMO_VOCAB_SIZE) -> tuple[str, str]:
    """(dataset folder, tokenizer file) of the demo corpus with ``vocab_size`` pieces."""
    return f"demo_sp{vocab_size}", f"demo_{vocab_size}_bpe.model"


def check_demo_vocab(vocab_size: int) -> None:
    if not DEMO_MIN_VOCAB_SIZE <= vocab_size <= DEMO_MAX_VOCAB_SIZE:
        raise CorpusError(
            f"--vocab {vocab_size} is outside what the demo text can train: use {DEMO_MIN_VOCAB_SIZE}.."
            f"{DEMO_MAX_VOCAB_SIZE} (1024 is the baseline; 4096 and 8192 are the later records'), or fetch "
            "real data with `golf data fineweb --variant sp4096|sp8192`"
        )


def demo_paths(out_dir: PathLike = "data", vocab_size: int = DEMO_VOCAB_SIZE) -> DataPaths:
    """The demo corpus's shard folder and tokenizer under ``out_dir``, without building anything."""
    root = Path(out_dir).expanduser().resolve()
    dataset, tokenizer = demo_names(vocab_size)
    return DataPaths(data_path=root / "datasets" / dataset, tokenizer_path=root / "tokenizers" / tokenizer)


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_source_files(root: Path) -> list[Path]:
    """The stdlib's .py files, sorted by relative path, skipping tests and installed packages."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in _SKIPPED_STDLIB_DIRS]
        found.extend(Path(folder) / name for name in names if name.endswith(".py"))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _source_fingerprint(root: Path, files: list[Path]) -> str:
    """sha256 over the relative names and bytes of every source file: the demo's cache key."""
    digest = hashlib.sha256(f"golf-demo-format-{DEMO_BUILD_FORMAT}\n".encode())
    for path in files:
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _docstrings_in_source_order(node: ast.AST) -> Iterator[str]:
    """Docstrings of ``node`` and of the classes and functions nested in it, in source order.

    Only statement blocks are walked (docstrings cannot hide inside expressions), which keeps the
    walk to a small fraction of the syntax tree.
    """
    if isinstance(node, _DOCSTRING_OWNERS):
        doc = ast.get_docstring(node, clean=True)
        if doc:
            yield doc
    for block in _STATEMENT_BLOCKS:
        for child in getattr(node, block, None) or ():
            yield from _docstrings_in_source_order(child)


def _pydoc_topics(tree: ast.Module) -> dict[str, str]:
    """The ``topics`` dict literal of pydoc_data/topics.py (parsed, never imported)."""
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "topics"
        ):
            topics = ast.literal_eval(node.value)
            if isinstance(topics, dict):
                return {str(k): v for k, v in topics.items() if isinstance(v, str)}
    return {}


def _clean_text(text: str) -> str:
    return text.replace("\x00", " ").strip()


@dataclass(frozen=True)
class _DemoSource:
    root: Path
    files: list[Path]
    documents: list[SourceDocument]
    skipped_files: list[str]


def _read_demo_source(root: Path, files: list[Path]) -> _DemoSource:
    documents: list[SourceDocument] = []
    skipped: list[str] = []
    topics: dict[str, str] = {}
    for path in files:
        relative = path.relative_to(root).as_posix()
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
            if relative == "pydoc_data/topics.py":
                topics = _pydoc_topics(tree)
        except (SyntaxError, ValueError):
            # A file this interpreter cannot parse (a stray Python 2 file in some distributions).
            skipped.append(relative)
            continue
        text = _clean_text("\n\n".join(_docstrings_in_source_order(tree)))
        if text:
            documents.append(SourceDocument(f"stdlib:{relative}", text))
    for key in sorted(topics):
        text = _clean_text(topics[key])
        if text:
            documents.append(SourceDocument(f"topic:{key}", text))
    seen: set[str] = set()
    unique = []
    for doc in documents:
        if doc.text not in seen:
            seen.add(doc.text)
            unique.append(doc)
    return _DemoSource(root=root, files=files, documents=unique, skipped_files=skipped)


def collect_demo_documents() -> list[SourceDocument]:
    """The demo corpus's documents in canonical order (before the seeded shuffle), deduplicated."""
    root = _stdlib_root()
    return _read_demo_source(root, _stdlib_source_files(root)).documents


def split_demo_documents(documents: list[SourceDocument]) -> tuple[list[SourceDocument], list[SourceDocument]]:
    """Shuffle with :data:`DEMO_SEED` and split into (train, val); val gets ~:data:`DEMO_VAL_FRACTION`."""
    if len(documents) < 2:
        raise CorpusError(
            f"the demo corpus needs at least 2 documents, found {len(documents)}; this Python installation "
            "lacks its standard-library sources: install them, or use `golf data fineweb` instead"
        )
    shuffled = list(documents)
    random.Random(DEMO_SEED).shuffle(shuffled)
    n_val = min(len(shuffled) - 1, max(1, round(len(shuffled) * DEMO_VAL_FRACTION)))
    return shuffled[n_val:], shuffled[:n_val]


def _training_sentences(documents: list[SourceDocument]) -> Iterator[str]:
    """Paragraphs of the documents; an over-long paragraph is fed line by line so none is dropped."""
    for doc in documents:
        for paragraph in re.split(r"\n\s*\n", doc.text):
            paragraph = paragraph.strip()
            if not paragraph:
                continue
            if len(paragraph.encode("utf-8")) <= _MAX_SENTENCE_BYTES:
                yield paragraph
            else:
                yield from (line.strip() for line in paragraph.splitlines() if line.strip())


def train_demo_tokenizer(documents: list[SourceDocument], vocab_size: int = DEMO_VOCAB_SIZE) -> bytes:
    """A serialized SentencePiece model trained on ``documents`` with :data:`DEMO_TRAINER_SETTINGS`
    (and ``vocab_size`` pieces)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_training_sentences(documents),
        model_writer=model,
        minloglevel=2,
        **{**DEMO_TRAINER_SETTINGS, "vocab_size": vocab_size},
    )
    return model.getvalue()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_split(folder: Path, split: str, tokens: np.ndarray, shard_tokens: int) -> list[dict[str, Any]]:
    entries = []
    for index, start in enumerate(range(0, len(tokens), shard_tokens)):
        name = f"fineweb_{split}_{index:06d}.bin"
        chunk = tokens[start : start + shard_tokens]
        write_shard(folder / name, chunk)
        entries.append({"file": name, "tokens": int(len(chunk)), "sha256": _sha256_file(folder / name)})
    return entries


def _encode_documents(sp: Any, documents: list[SourceDocument]) -> np.ndarray:
    """``[bos] + ids`` for each document, concatenated, as the challenge's export writes them."""
    encoded = sp.encode([doc.text for doc in documents], out_type=int)
    pieces = []
    for ids in encoded:
        pieces.append(np.array([sp.bos_id()], dtype=np.int64))
        pieces.append(np.asarray(ids, dtype=np.int64))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def _shard_entries_valid(folder: Path, entries: Any) -> bool:
    if not isinstance(entries, list) or not entries:
        return False
    for entry in entries:
        path = folder / str(entry.get("file", ""))
        try:
            if read_shard_header(path) != entry.get("tokens") or _sha256_file(path) != entry.get("sha256"):
                return False
        except ShardError:
            return False
    return True


def _cached_demo(paths: DataPaths, fingerprint: str) -> tuple[DemoData | None, str]:
    """The demo described by a valid manifest that matches ``fingerprint``, or (None, why not)."""
    if not paths.manifest_path.is_file():
        return None, "no manifest yet"
    try:
        manifest = json.loads(paths.manifest_path.read_text(encoding="utf-8"))
        if manifest.get("schema") != DEMO_MANIFEST_SCHEMA or manifest.get("format") != DEMO_BUILD_FORMAT:
            return None, "the manifest was written by another version of the builder"
        if manifest["source"]["files_sha256"] != fingerprint:
            return None, "the standard-library sources changed (another Python installation)"
        if not paths.tokenizer_path.is_file() or _sha256_file(paths.tokenizer_path) != manifest["tokenizer"]["sha256"]:
            return None, f"the tokenizer {paths.tokenizer_path} is missing or differs from the manifest"
        shards = manifest["shards"]
        listed = {entry["file"] for split in ("train", "val") for entry in shards[split]}
        present = {p.name for p in paths.data_path.glob("fineweb_*.bin")}
        if listed != present:
            return None, "the shard files differ from the manifest"
        for split in ("train", "val"):
            if not _shard_entries_valid(paths.data_path, shards[split]):
                return None, f"a {split} shard is missing, truncated or modified"
        tokens = manifest["tokens"]
        return DemoData(paths.data_path, paths.tokenizer_path, int(tokens["train"]), int(tokens["val"])), ""
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, "the manifest is unreadable"


def _remove_leftovers(folder: Path, prefix: str) -> None:
    """Delete temporary folders of crashed builds (safe: the caller holds the build lock)."""
    if folder.is_dir():
        for leftover in folder.glob(f"{prefix}*"):
            shutil.rmtree(leftover, ignore_errors=True)


def build_demo(out_dir: PathLike = "data", *, quiet: bool = False, vocab_size: int = DEMO_VOCAB_SIZE) -> DemoData:
    """Build (or reuse) the demo corpus under ``out_dir``; see the module docstring.

    ``vocab_size`` pieces (default 1024, the baseline's) go to ``demo_sp<N>``. Returns the shard
    folder, the tokenizer path and the token counts. Prints a summary unless ``quiet``.
    """
    check_demo_vocab(vocab_size)
    paths = demo_paths(out_dir, vocab_size)
    root = _stdlib_root()
    files = _stdlib_source_files(root)
    if not files:
        raise CorpusError(
            f"no standard-library .py sources under {root}; the demo corpus is built from them. Install the "
            "Python standard-library sources, or fetch real data with `golf data fineweb`"
        )
    fingerprint = _source_fingerprint(root, files)
    cached, _ = _cached_demo(paths, fingerprint)
    if cached is None:
        datasets_dir = paths.data_path.parent
        lock = datasets_dir / f".{paths.data_path.name}.lock"
        waiting = f"another process is building the demo corpus in {paths.data_path}; waiting for it"
        with exclusive_lock(lock, waiting, quiet):
            cached, reason = _cached_demo(paths, fingerprint)
            if cached is None:
                if not quiet and paths.manifest_path.exists():
                    print(f"rebuilding the demo corpus: {reason}", flush=True)
                return _build_demo_locked(paths, root, files, fingerprint, quiet, vocab_size)
    if not quiet:
        print(
            f"demo corpus already built in {cached.data_path}: {cached.train_tokens:,} train tokens, "
            f"{cached.val_tokens:,} val tokens; tokenizer {cached.tokenizer_path}",
            flush=True,
        )
    return cached


def _build_demo_locked(
    paths: DataPaths, root: Path, files: list[Path], fingerprint: str, quiet: bool, vocab_size: int = DEMO_VOCAB_SIZE,
) -> DemoData:
    started = time.perf_counter()
    datasets_dir = paths.data_path.parent
    dataset = paths.data_path.name
    _remove_leftovers(datasets_dir, f".{dataset}.build-")
    _remove_leftovers(datasets_dir, f".{dataset}.old-")
    source = _read_demo_source(root, files)
    train_docs, val_docs = split_demo_documents(source.documents)
    text_bytes = {
        split: sum(len(d.text.encode("utf-8")) for d in docs) for split, docs in (("train", train_docs), ("val", val_docs))
    }
    if text_bytes["train"] + text_bytes["val"] < DEMO_MIN_TEXT_BYTES:
        raise CorpusError(
            f"the standard library under {root} yields only {text_bytes['train'] + text_bytes['val']:,} bytes of "
            f"docstrings, fewer than the {DEMO_MIN_TEXT_BYTES:,} the demo needs (stripped sources?); install "
            "the full standard library, or fetch real data with `golf data fineweb`"
        )

    staging = datasets_dir / f".{dataset}.build-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        import sentencepiece as spm

        model_bytes = train_demo_tokenizer(train_docs, vocab_size)
        sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        if sp.vocab_size() != vocab_size:
            raise CorpusError(
                f"the standard library under {root} is too small or uniform to train {vocab_size} pieces "
                f"(got {sp.vocab_size()}); install the full standard library, or fetch real data with "
                "`golf data fineweb`"
            )
        tokens = {"train": _encode_documents(sp, train_docs), "val": _encode_documents(sp, val_docs)}
        shards = {split: _write_split(staging, split, tokens[split], DEMO_SHARD_TOKENS) for split in ("train", "val")}
        text_sha = hashlib.sha256()
        for doc in source.documents:
            text_sha.update(doc.name.encode("utf-8") + b"\0" + doc.text.encode("utf-8") + b"\0")
        build_seconds = time.perf_counter() - started
        manifest = {
            "schema": DEMO_MANIFEST_SCHEMA,
            "format": DEMO_BUILD_FORMAT,
            "dataset": dataset,
            "source": {
                "description": DEMO_SOURCE_DESCRIPTION,
                "python_version": platform.python_version(),
                "python_implementation": platform.python_implementation(),
                "stdlib_path": str(root),
                "files": len(files),
                "skipped_files": source.skipped_files,
                "files_sha256": fingerprint,
                "text_sha256": text_sha.hexdigest(),
                "documents": len(source.documents),
                "text_bytes": text_bytes["train"] + text_bytes["val"],
            },
            "split": {
                "seed": DEMO_SEED,
                "val_fraction": DEMO_VAL_FRACTION,
                "train_documents": [d.name for d in train_docs],
                "val_documents": [d.name for d in val_docs],
            },
            "tokenizer": {
                "file": f"tokenizers/{paths.tokenizer_path.name}",
                "sha256": hashlib.sha256(model_bytes).hexdigest(),
                "vocab_size": int(sp.vocab_size()),
                "trainer_settings": {**DEMO_TRAINER_SETTINGS, "vocab_size": vocab_size},
                "modelled_on": "fineweb_1024_bpe.model (the challenge's sp1024 tokenizer)",
            },
            "document_format": "[bos_id] + ids per document, no eos, as the challenge's export",
            "shard_tokens": DEMO_SHARD_TOKENS,
            "shards": shards,
            "tokens": {split: int(len(tokens[split])) for split in ("train", "val")},
            "text_bytes": text_bytes,
            "build_seconds": round(build_seconds, 3),
            "built_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _install_demo(staging, model_bytes, paths)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    built = DemoData(paths.data_path, paths.tokenizer_path, manifest["tokens"]["train"], manifest["tokens"]["val"])
    if not quiet:
        print(
            f"built the demo corpus in {build_seconds:.1f} s: {len(source.documents)} documents "
            f"({len(train_docs)} train, {len(val_docs)} val), {manifest['source']['text_bytes']:,} bytes of text "
            f"-> {built.train_tokens:,} train tokens in {len(shards['train'])} shard(s), {built.val_tokens:,} val "
            f"tokens in {len(shards['val'])} shard(s)\n  data: {built.data_path}\n  tokenizer: {built.tokenizer_path}",
            flush=True,
        )
    return built


def _install_demo(staging: Path, model_bytes: bytes, paths: DataPaths) -> None:
    """Swap the finished build into place.

    The old shard folder is moved away first, so between any two steps either no manifest exists
    (the next call rebuilds) or the manifest matches the tokenizer it records by hash.
    """
    retired = None
    if paths.data_path.exists():
        retired = paths.data_path.with_name(f".{paths.data_path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(paths.data_path, retired)
    write_bytes_atomic(paths.tokenizer_path, model_bytes)
    os.rename(staging, paths.data_path)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
