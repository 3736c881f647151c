"""Token data for the pipeline: the embedded demo corpus, the FineWeb fetch, and `golf data`.

Demo corpus (``golf data demo``)
    Built offline and deterministically from text that every CPython installation carries:

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

FineWeb (``golf data fineweb``)
    Fetches the challenge's published, pre-tokenized FineWeb cache from the Hugging Face dataset
    repositories with the layout of the challenge's ``data/cached_challenge_fineweb.py``: inside
    the repo, ``datasets/manifest.json`` lists the datasets (``stats.files_train``,
    ``stats.files_val``) and tokenizers (``model_path``), shards live at
    ``datasets/datasets/<dataset>/fineweb_{train,val}_NNNNNN.bin`` (numbered from 0) and
    tokenizers at ``datasets/tokenizers/<name>.model``. Locally they land at
    ``DIR/datasets/<dataset>/`` and ``DIR/tokenizers/``, the challenge's own local layout, with the
    manifest kept as ``DIR/datasets/<dataset>/hub_manifest.json``.
"""

from __future__ import annotations

import argparse
import ast
import errno
import hashlib
import io
import json
import numbers
import os
import platform
import random
import re
import shutil
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Union

import numpy as np

from golf.data import ShardError, read_shard_header, write_shard
from golf.tokenizer import load_tokenizer

PathLike = Union[str, os.PathLike]

# --------------------------------------------------------------------------------------------
# Demo corpus
# --------------------------------------------------------------------------------------------

DEMO_DATASET = "demo_sp1024"
DEMO_TOKENIZER = "demo_1024_bpe.model"
DEMO_VOCAB_SIZE = 1024
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


def demo_paths(out_dir: PathLike = "data") -> DataPaths:
    """The demo corpus's shard folder and tokenizer under ``out_dir``, without building anything."""
    root = Path(out_dir).expanduser().resolve()
    return DataPaths(data_path=root / "datasets" / DEMO_DATASET, tokenizer_path=root / "tokenizers" / DEMO_TOKENIZER)


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


def train_demo_tokenizer(documents: list[SourceDocument]) -> bytes:
    """A serialized SentencePiece model trained on ``documents`` with :data:`DEMO_TRAINER_SETTINGS`."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_training_sentences(documents),
        model_writer=model,
        minloglevel=2,
        **DEMO_TRAINER_SETTINGS,
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


@contextmanager
def _exclusive_lock(lock_path: Path, waiting_message: str, quiet: bool) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX ``flock``) for the block."""
    try:
        import fcntl
    except ImportError as exc:  # Windows
        raise CorpusError(
            "building or fetching data needs POSIX file locks (Linux or macOS); run `golf data` there "
            "and copy the resulting data folder"
        ) from exc
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(waiting_message, flush=True)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_leftovers(folder: Path, prefix: str) -> None:
    """Delete temporary folders of crashed builds (safe: the caller holds the build lock)."""
    if folder.is_dir():
        for leftover in folder.glob(f"{prefix}*"):
            shutil.rmtree(leftover, ignore_errors=True)


def build_demo(out_dir: PathLike = "data", *, quiet: bool = False) -> DemoData:
    """Build (or reuse) the demo corpus under ``out_dir``; see the module docstring.

    Returns the shard folder, the tokenizer path and the token counts. Prints a summary unless
    ``quiet``.
    """
    paths = demo_paths(out_dir)
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
        lock = datasets_dir / f".{DEMO_DATASET}.lock"
        waiting = f"another process is building the demo corpus in {paths.data_path}; waiting for it"
        with _exclusive_lock(lock, waiting, quiet):
            cached, reason = _cached_demo(paths, fingerprint)
            if cached is None:
                if not quiet and paths.manifest_path.exists():
                    print(f"rebuilding the demo corpus: {reason}", flush=True)
                return _build_demo_locked(paths, root, files, fingerprint, quiet)
    if not quiet:
        print(
            f"demo corpus already built in {cached.data_path}: {cached.train_tokens:,} train tokens, "
            f"{cached.val_tokens:,} val tokens; tokenizer {cached.tokenizer_path}",
            flush=True,
        )
    return cached


def _build_demo_locked(paths: DataPaths, root: Path, files: list[Path], fingerprint: str, quiet: bool) -> DemoData:
    started = time.perf_counter()
    datasets_dir = paths.data_path.parent
    _remove_leftovers(datasets_dir, f".{DEMO_DATASET}.build-")
    _remove_leftovers(datasets_dir, f".{DEMO_DATASET}.old-")
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

    staging = datasets_dir / f".{DEMO_DATASET}.build-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        import sentencepiece as spm

        model_bytes = train_demo_tokenizer(train_docs)
        sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        if sp.vocab_size() != DEMO_VOCAB_SIZE:
            raise CorpusError(
                f"the standard library under {root} is too small or uniform to train {DEMO_VOCAB_SIZE} pieces "
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
            "dataset": DEMO_DATASET,
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
                "file": f"tokenizers/{DEMO_TOKENIZER}",
                "sha256": hashlib.sha256(model_bytes).hexdigest(),
                "vocab_size": int(sp.vocab_size()),
                "trainer_settings": DEMO_TRAINER_SETTINGS,
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
        retired = paths.data_path.with_name(f".{DEMO_DATASET}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(paths.data_path, retired)
    paths.tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_model = paths.tokenizer_path.with_name(f".{paths.tokenizer_path.name}.tmp-{os.getpid()}")
    tmp_model.write_bytes(model_bytes)
    os.replace(tmp_model, paths.tokenizer_path)
    os.rename(staging, paths.data_path)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# FineWeb fetch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinewebVariant:
    """A published pre-tokenized FineWeb export."""

    name: str
    repo_id: str
    dataset: str
    tokenizer: str
    vocab_size: int
    about: str


# Facts from the challenge's data/cached_challenge_fineweb.py and its records' READMEs: the
# public cache holds sp1024 only; the sp4096 and sp8192 exports that later records train on are
# published in @clarkkev's repo with the same layout. Shard counts come from each repo's manifest.
FINEWEB_VARIANTS: dict[str, FinewebVariant] = {
    "sp1024": FinewebVariant(
        "sp1024", "willdepueoai/parameter-golf", "fineweb10B_sp1024", "fineweb_1024_bpe.model", 1024,
        "the challenge's published cache and baseline tokenizer",
    ),
    "sp4096": FinewebVariant(
        "sp4096", "kevclark/parameter-golf", "fineweb10B_sp4096", "fineweb_4096_bpe.model", 4096,
        "@clarkkev's export, used by record #1260",
    ),
    "sp8192": FinewebVariant(
        "sp8192", "kevclark/parameter-golf", "fineweb10B_sp8192", "fineweb_8192_bpe.model", 8192,
        "@clarkkev's export, used by later records",
    ),
}
HUB_REMOTE_ROOT = "datasets"
HUB_MANIFEST = "hub_manifest.json"
# Downloads land here first (huggingface_hub keeps its resume state beside them), then are
# validated and moved into place.
_HUB_STAGING = ".hub_download"
HUB_CONNECT_TIMEOUT_S = 5.0
DEFAULT_TRAIN_SHARDS = 80
_DEFAULT_ENDPOINT = "https://huggingface.co"


class FetchError(RuntimeError):
    """The FineWeb data could not be fetched; the message says what failed and how to fix it."""


@dataclass(frozen=True)
class _Wanted:
    remote: str  # path inside the Hugging Face repo
    local: Path
    kind: str  # "shard" or "tokenizer"


def fineweb_variant(name: str) -> FinewebVariant:
    """The published export called ``name``, or a ValueError listing the valid names."""
    try:
        return FINEWEB_VARIANTS[name]
    except KeyError:
        valid = ", ".join(f"{v.name} ({v.about})" for v in FINEWEB_VARIANTS.values())
        raise ValueError(f"unknown FineWeb variant {name!r}; valid variants: {valid}") from None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or _DEFAULT_ENDPOINT).rstrip("/")


def _manual_layout(spec: FinewebVariant, data_path: Path, tokenizer_dir: Path, train_shards: int) -> str:
    last = f" ... fineweb_train_{train_shards - 1:06d}.bin" if train_shards > 1 else ""
    train = f"fineweb_train_000000.bin{last} and " if train_shards else ""
    return (
        f"copy {train}fineweb_val_000000.bin (and any further val shards) into {data_path}/ and the tokenizer "
        f"into {tokenizer_dir / spec.tokenizer}, then re-run this command: it validates local files without "
        "the network"
    )


def _require_hub(endpoint: str, repo_id: str, what: str, manual: str) -> None:
    """Fail fast, naming what was needed, when the Hub cannot be used."""
    if _env_flag("HF_HUB_OFFLINE"):
        raise FetchError(
            f"cannot fetch {what} from the Hugging Face dataset {repo_id}: HF_HUB_OFFLINE is set. Unset "
            f"HF_HUB_OFFLINE on a machine with network access, or {manual}"
        )
    request = urllib.request.Request(
        f"{endpoint}/api/datasets/{repo_id}", method="HEAD", headers={"User-Agent": "golf-sweeps"}
    )
    try:
        urllib.request.urlopen(request, timeout=HUB_CONNECT_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # the server answered; access problems are reported by the download itself
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(
            f"cannot reach the Hugging Face Hub at {endpoint} (within {HUB_CONNECT_TIMEOUT_S:g} s: {reason}) to "
            f"fetch {what} from the dataset {repo_id}. Check the network connection (and HF_ENDPOINT or "
            f"HTTPS_PROXY if you set them), or {manual}"
        ) from exc


def _download(repo_id: str, remote: str, staging: Path, endpoint: str, manual: str) -> Path:
    """Download one file of the repo into ``staging``; clear errors for every failure."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    remote_path = PurePosixPath(remote)
    try:
        return Path(
            hf_hub_download(
                repo_id=repo_id,
                filename=remote_path.name,
                subfolder=str(remote_path.parent),
                repo_type="dataset",
                local_dir=staging,
                endpoint=endpoint,
            )
        )
    except LocalEntryNotFoundError as exc:
        raise FetchError(
            f"lost the connection to {endpoint} while fetching {remote} from {repo_id}; files fetched so far are "
            f"kept: re-run the same command to continue, or {manual}"
        ) from exc
    except (GatedRepoError, RepositoryNotFoundError) as exc:
        raise FetchError(
            f"the Hugging Face dataset {repo_id} is not accessible ({type(exc).__name__}): it may be gated or "
            "private, so log in with `hf auth login` (or set HF_TOKEN) and accept its terms on the website, or "
            f"pass --repo-id with a repository you can read; or {manual}"
        ) from exc
    except EntryNotFoundError as exc:
        raise FetchError(
            f"the Hugging Face dataset {repo_id} has no file {remote}: its layout differs from the challenge's "
            f"({HUB_REMOTE_ROOT}/manifest.json, {HUB_REMOTE_ROOT}/datasets/<dataset>/, {HUB_REMOTE_ROOT}/tokenizers/); "
            f"check the repository, pass another --repo-id, or {manual}"
        ) from exc
    except Exception as exc:  # network and HTTP errors differ across huggingface_hub versions
        raise FetchError(
            f"fetching {remote} from {repo_id} failed ({type(exc).__name__}: {exc}); files fetched so far are kept: "
            f"re-run the same command to continue, or {manual}"
        ) from exc


def _move_into_place(source: Path, target: Path) -> None:
    """Atomically move a downloaded file to ``target`` (copying when it is a link or on another disk)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not source.is_symlink():
        try:
            os.replace(source, target)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.copyfile(source.resolve(), tmp)
    os.replace(tmp, target)
    source.unlink()


def _local_problem(wanted: _Wanted, vocab_size: int) -> str | None:
    """Why the local copy of ``wanted`` is unusable, or None when it is valid."""
    if not wanted.local.is_file():
        return "missing"
    try:
        if wanted.kind == "shard":
            read_shard_header(wanted.local)
        else:
            sp = load_tokenizer(wanted.local)
            if sp.vocab_size() != vocab_size:
                return f"{wanted.local} has {sp.vocab_size()} pieces, expected {vocab_size}"
    except (ShardError, ValueError) as exc:
        return str(exc)
    return None


def _read_hub_manifest(path: Path, spec: FinewebVariant, repo_id: str) -> tuple[int, int, str]:
    """(train shards, val shards, tokenizer model path) of ``spec``'s dataset in a hub manifest."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        datasets = manifest.get("datasets", [])
        entry = next((d for d in datasets if d.get("name") == spec.dataset), None)
        if entry is None:
            listed = ", ".join(str(d.get("name")) for d in datasets) or "none"
            raise FetchError(
                f"the manifest of {repo_id} ({path}) lists no dataset {spec.dataset} (it lists: {listed}); choose "
                "another --variant or --repo-id"
            )
        stats = entry.get("stats") or {}
        files_train, files_val = int(stats["files_train"]), int(stats["files_val"])
        tokenizers = manifest.get("tokenizers", [])
        tokenizer = next((t for t in tokenizers if t.get("name") == entry.get("tokenizer_name")), None)
        model_path = None if tokenizer is None else (tokenizer.get("model_path") or tokenizer.get("path"))
        if not model_path:
            raise FetchError(
                f"the manifest of {repo_id} ({path}) names no tokenizer model for {spec.dataset}; the published "
                "layout changed: check the repository or pass another --repo-id"
            )
        return files_train, files_val, str(model_path)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FetchError(
            f"the manifest {path} of {repo_id} is malformed ({type(exc).__name__}: {exc}); delete it and re-run to "
            "fetch it again"
        ) from exc


def fetch_fineweb(
    variant: str,
    train_shards: int,
    out_dir: PathLike = "data",
    *,
    repo_id: str | None = None,
    quiet: bool = False,
) -> tuple[Path, Path]:
    """Fetch the first ``train_shards`` training shards, all validation shards and the tokenizer.

    Returns ``(data_path, tokenizer_path)``. Files already present and valid are kept (so a second
    call, or files copied in by hand, need no network); downloaded shards are validated before they
    are moved into place. ``repo_id`` overrides the variant's Hugging Face dataset repository.
    """
    spec = fineweb_variant(variant)
    if isinstance(train_shards, bool) or not isinstance(train_shards, numbers.Integral) or train_shards < 0:
        raise ValueError(
            f"train_shards must be a whole number >= 0 (0 fetches only validation data and the tokenizer), got "
            f"{train_shards!r}"
        )
    repo = repo_id or spec.repo_id
    root = Path(out_dir).expanduser().resolve()
    data_path = root / "datasets" / spec.dataset
    tokenizer_dir = root / "tokenizers"
    manual = _manual_layout(spec, data_path, tokenizer_dir, train_shards)
    endpoint = _hub_endpoint()
    lock = data_path.parent / f".{spec.dataset}.lock"
    with _exclusive_lock(lock, f"another process is fetching {spec.dataset} into {root}; waiting for it", quiet):
        manifest_path = data_path / HUB_MANIFEST
        if not manifest_path.is_file():
            copied_by_hand = _complete_without_manifest(spec, data_path, tokenizer_dir, train_shards)
            if copied_by_hand is not None:
                if not quiet:
                    print(f"fineweb {spec.name}: using the shards and tokenizer already in {root}", flush=True)
                return copied_by_hand
            _require_hub(endpoint, repo, f"{HUB_REMOTE_ROOT}/manifest.json", manual)
            staging = root / _HUB_STAGING
            downloaded = _download(repo, f"{HUB_REMOTE_ROOT}/manifest.json", staging, endpoint, manual)
            _move_into_place(downloaded, manifest_path)
        files_train, files_val, model_path = _read_hub_manifest(manifest_path, spec, repo)
        if train_shards > files_train:
            raise ValueError(
                f"--train-shards {train_shards} is out of range for {spec.name}: {repo} publishes {files_train} "
                f"training shards of {spec.dataset}, so valid values are 0..{files_train}"
            )
        tokenizer_path = tokenizer_dir / PurePosixPath(model_path).name
        shards = [f"fineweb_val_{i:06d}.bin" for i in range(files_val)]
        shards += [f"fineweb_train_{i:06d}.bin" for i in range(train_shards)]
        wanted = [_Wanted(f"{HUB_REMOTE_ROOT}/datasets/{spec.dataset}/{name}", data_path / name, "shard") for name in shards]
        wanted.append(_Wanted(f"{HUB_REMOTE_ROOT}/{model_path}", tokenizer_path, "tokenizer"))
        _fetch_missing(wanted, spec, repo, root, endpoint, manual, quiet)
        # Only after success: after a failure, the staging folder holds what resumes the download.
        shutil.rmtree(root / _HUB_STAGING, ignore_errors=True)
    if not quiet:
        print(
            f"fineweb {spec.name}: {files_val} val shard(s) and {train_shards} of {files_train} train shard(s) in "
            f"{data_path}; tokenizer {tokenizer_path}",
            flush=True,
        )
    return data_path, tokenizer_path


def _complete_without_manifest(
    spec: FinewebVariant, data_path: Path, tokenizer_dir: Path, train_shards: int
) -> tuple[Path, Path] | None:
    """(data_path, tokenizer_path) when files copied in by hand already cover the request."""
    tokenizer = _Wanted("", tokenizer_dir / spec.tokenizer, "tokenizer")
    train = [_Wanted("", data_path / f"fineweb_train_{i:06d}.bin", "shard") for i in range(train_shards)]
    val = [_Wanted("", p, "shard") for p in sorted(data_path.glob("fineweb_val_*.bin"))]
    if not val or any(_local_problem(w, spec.vocab_size) for w in [tokenizer, *train, *val]):
        return None
    return data_path, tokenizer.local


def _fetch_missing(
    wanted: list[_Wanted], spec: FinewebVariant, repo: str, root: Path, endpoint: str, manual: str, quiet: bool
) -> None:
    todo = []
    for item in wanted:
        problem = _local_problem(item, spec.vocab_size)
        if problem is None:
            continue
        if problem != "missing" and not quiet:
            # Kept until its replacement has downloaded and validated, then atomically replaced.
            print(f"fetching {item.local} again: {problem}", flush=True)
        todo.append(item)
    if not todo:
        return
    names = ", ".join(item.local.name for item in todo[:3]) + (f" and {len(todo) - 3} more" if len(todo) > 3 else "")
    _require_hub(endpoint, repo, names, manual)
    staging = root / _HUB_STAGING
    for index, item in enumerate(todo, 1):
        if not quiet:
            print(f"[{index}/{len(todo)}] {repo}: {item.remote}", flush=True)
        downloaded = _download(repo, item.remote, staging, endpoint, manual)
        problem = _local_problem(_Wanted(item.remote, downloaded, item.kind), spec.vocab_size)
        if problem is not None:
            downloaded.unlink()
            raise FetchError(
                f"the downloaded {item.remote} from {repo} is unusable ({problem}); re-run to download it again"
            )
        _move_into_place(downloaded, item.local)


# --------------------------------------------------------------------------------------------
# `golf data` commands
# --------------------------------------------------------------------------------------------

_DEMO_HELP = f"""\
Build the embedded demo corpus: offline, deterministic, a few seconds on 2 cores.

Source: {DEMO_SOURCE_DESCRIPTION}.
Documents are shuffled with seed {DEMO_SEED}; ~{DEMO_VAL_FRACTION:.0%} go to validation. A SentencePiece BPE
tokenizer with {DEMO_VOCAB_SIZE} pieces, trained on the training documents with the challenge tokenizer's
settings, encodes each document as [bos] + ids into challenge-format shards:

  DIR/datasets/{DEMO_DATASET}/fineweb_train_*.bin, fineweb_val_*.bin, manifest.json
  DIR/tokenizers/{DEMO_TOKENIZER}

A second call reuses a valid build; another Python installation (other sources) rebuilds.
"""

_FINEWEB_HELP = """\
Fetch the challenge's pre-tokenized FineWeb shards and tokenizer from Hugging Face into
DIR/datasets/fineweb10B_<variant>/ and DIR/tokenizers/ (the challenge's own layout). Every
validation shard is fetched; training shards 0..N-1 of 100M tokens (~200 MB) each. Files already
present and valid are kept, so re-running resumes and needs no network once complete.

Variants:
{variants}

Offline (or with HF_HUB_OFFLINE=1) it stops at once and says which files to copy where.
"""


_OUT_HELP = "folder that receives datasets/ and tokenizers/ (default: ./data)"


def _report_error(command: str, exc: BaseException) -> int:
    print(f"golf data {command}: error: {exc}", file=sys.stderr)
    return 2


def run_demo_command(args: argparse.Namespace) -> int:
    """Handler of ``golf data demo``: 0 on success, 2 with a message on stderr on failure."""
    try:
        build_demo(args.out)
    except (CorpusError, ShardError, OSError) as exc:
        return _report_error("demo", exc)
    return 0


def run_fineweb_command(args: argparse.Namespace) -> int:
    """Handler of ``golf data fineweb``: 0 on success, 2 with a message on stderr on failure."""
    try:
        fetch_fineweb(args.variant, args.train_shards, args.out, repo_id=args.repo_id)
    except (FetchError, CorpusError, ValueError, OSError) as exc:
        return _report_error("fineweb", exc)
    return 0


def add_data_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``data`` with its sub-commands ``demo`` and ``fineweb`` (each sets ``func``)."""
    data = subparsers.add_parser(
        "data",
        help="build the demo corpus or fetch the challenge's FineWeb shards",
        description="Token shards and tokenizers for training and evaluation.",
    )
    commands = data.add_subparsers(dest="data_command", metavar="{demo,fineweb}")
    commands.required = True
    demo = commands.add_parser(
        "demo",
        help="build the offline demo corpus from the Python standard library's text (seconds)",
        description=_DEMO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="data", metavar="DIR", help=_OUT_HELP)
    demo.set_defaults(func=run_demo_command)

    variants = "\n".join(f"  {v.name}  {v.repo_id:<28} {v.about}" for v in FINEWEB_VARIANTS.values())
    fineweb = commands.add_parser(
        "fineweb",
        help="fetch the challenge's FineWeb shards and tokenizer from Hugging Face",
        description=_FINEWEB_HELP.format(variants=variants),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fineweb.add_argument(
        "--variant", default="sp1024", choices=sorted(FINEWEB_VARIANTS), help="tokenizer family (default: sp1024)"
    )
    fineweb.add_argument(
        "--train-shards",
        type=int,
        default=DEFAULT_TRAIN_SHARDS,
        metavar="N",
        help=f"training shards to fetch, 100M tokens each (default: {DEFAULT_TRAIN_SHARDS}, as the challenge's "
        "script; the baseline's 10-minute 8xH100 run reads 13,780 x 524,288 = 7.2B tokens)",
    )
    fineweb.add_argument("--out", default="data", metavar="DIR", help=_OUT_HELP)
    fineweb.add_argument(
        "--repo-id", default=None, help="Hugging Face dataset repository to read instead of the variant's"
    )
    fineweb.set_defaults(func=run_fineweb_command)


def main(argv: list[str] | None = None) -> int:
    """``python -m golf.corpus data {demo,fineweb} ...``: the same commands as ``golf data``."""
    parser = argparse.ArgumentParser(prog="python -m golf.corpus", description="golf data commands")
    add_data_commands(parser.add_subparsers(dest="command", metavar="data", required=True))
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
