"""The demo corpus, the FineWeb fetch and the `golf data` commands (golf/corpus/)."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sentencepiece import sentencepiece_model_pb2

import golf.corpus.demo as corpus
import golf.corpus.fineweb as fineweb
from golf.corpus import DEMO_DATASET, DEMO_TOKENIZER, CorpusError, DemoData, FetchError, build_demo, demo_paths, fetch_fineweb
from golf.corpus.cli import add_data_commands
from golf.corpus.demo import collect_demo_documents
from golf.data import read_shard, shard_files, write_shard
from golf.tokenizer import load_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tokens(data_path: Path, split: str) -> np.ndarray:
    return np.concatenate([np.asarray(read_shard(p), dtype=np.int64) for p in shard_files(data_path, split)])


def _manifest(demo: DemoData) -> dict:
    return json.loads(demo.manifest_path.read_text(encoding="utf-8"))


def _snapshot(root: Path) -> dict[str, object]:
    """Every visible file under ``root``; manifests parsed, without the time of the build."""
    files: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.name == "manifest.json":
            manifest = json.loads(path.read_text(encoding="utf-8"))
            manifest.pop("built_at"), manifest.pop("build_seconds")
            files[path.relative_to(root).as_posix()] = manifest
        else:
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


# ---- the real demo corpus (this interpreter's standard library) --------------------------------------


@pytest.fixture(scope="module")
def real_demo(tmp_path_factory) -> DemoData:
    return build_demo(tmp_path_factory.mktemp("demo"), quiet=True)


@pytest.fixture(scope="module")
def real_documents() -> dict[str, str]:
    return {doc.name: doc.text for doc in collect_demo_documents()}


def test_demo_layout_and_manifest(real_demo):
    root = real_demo.data_path.parent.parent
    assert real_demo.data_path == root / "datasets" / DEMO_DATASET
    assert real_demo.tokenizer_path == root / "tokenizers" / DEMO_TOKENIZER
    assert demo_paths(root) == corpus.DataPaths(real_demo.data_path, real_demo.tokenizer_path)
    manifest = _manifest(real_demo)
    assert manifest["source"]["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert len(manifest["source"]["text_sha256"]) == 64 and len(manifest["source"]["files_sha256"]) == 64
    assert manifest["tokens"] == {"train": real_demo.train_tokens, "val": real_demo.val_tokens}
    # A few million tokens at most, and several training shards so the loader crosses shards.
    assert 100_000 < real_demo.train_tokens < 5_000_000 and real_demo.val_tokens > 10_000
    assert len(manifest["shards"]["train"]) >= 2
    for split in ("train", "val"):
        files = shard_files(real_demo.data_path, split)
        assert [p.name for p in files] == [entry["file"] for entry in manifest["shards"][split]]
        assert sum(len(read_shard(p)) for p in files) == manifest["tokens"][split]


def test_demo_shards_are_bos_plus_each_document(real_demo, real_documents):
    manifest = _manifest(real_demo)
    sp = load_tokenizer(real_demo.tokenizer_path)
    assert sp.vocab_size() == 1024 and sp.bos_id() == 1
    for split in ("train", "val"):
        names = manifest["split"][f"{split}_documents"]
        tokens = _tokens(real_demo.data_path, split)
        assert tokens.max() < 1024
        assert (tokens == sp.bos_id()).sum() == len(names)  # BOS starts every document and nothing else
        expected = np.concatenate([np.array([sp.bos_id()] + sp.encode(real_documents[name])) for name in names])
        assert np.array_equal(tokens, expected)


def test_demo_train_and_val_documents_are_disjoint(real_demo, real_documents):
    manifest = _manifest(real_demo)
    train, val = manifest["split"]["train_documents"], manifest["split"]["val_documents"]
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(real_documents)
    assert 0.05 <= len(val) / (len(train) + len(val)) <= 0.10
    assert not {real_documents[n] for n in train} & {real_documents[n] for n in val}
    # And in the shards themselves: no decoded validation document appears among the training ones.
    sp = load_tokenizer(real_demo.tokenizer_path)

    def decoded_documents(split: str) -> set[str]:
        tokens = _tokens(real_demo.data_path, split)
        starts = np.flatnonzero(tokens == sp.bos_id()).tolist() + [len(tokens)]
        return {sp.decode(tokens[a + 1 : b].tolist()) for a, b in zip(starts[:-1], starts[1:])}

    assert not decoded_documents("train") & decoded_documents("val")


def test_demo_build_is_deterministic(real_demo, tmp_path):
    again = build_demo(tmp_path, quiet=True)
    first_root = real_demo.data_path.parent.parent
    first, second = _snapshot(first_root), _snapshot(tmp_path)
    assert first.keys() == second.keys()
    for name in first:  # shards and tokenizer byte for byte; the manifest apart from the build time
        assert first[name] == second[name], f"{name} differs between two builds"
    assert again.train_tokens == real_demo.train_tokens and again.val_tokens == real_demo.val_tokens


def test_second_call_is_cached(real_demo, monkeypatch, capsys):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the cached demo corpus was rebuilt")

    monkeypatch.setattr(corpus, "_read_demo_source", must_not_run)
    monkeypatch.setattr(corpus, "train_demo_tokenizer", must_not_run)
    root = real_demo.data_path.parent.parent
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again = build_demo(root)
    assert again == real_demo
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    assert "already built" in capsys.readouterr().out


def test_demo_tokenizer_has_the_challenge_settings(real_demo):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(real_demo.tokenizer_path.read_bytes())
    t, n = proto.trainer_spec, proto.normalizer_spec
    assert t.model_type == sentencepiece_model_pb2.TrainerSpec.BPE and t.vocab_size == 1024
    assert (t.pad_id, t.bos_id, t.eos_id, t.unk_id) == (0, 1, 2, 3)
    assert t.byte_fallback is False and t.split_digits is True and t.hard_vocab_limit is False
    assert t.character_coverage == pytest.approx(0.999)
    assert n.name == "nmt_nfkc" and n.add_dummy_prefix is False and n.remove_extra_whitespaces is True
    assert t.model_prefix == ""  # no build path inside the model: identical bytes wherever it is built


def test_demo_tokenizer_matches_the_real_one(real_demo, real_tokenizer_path):
    demo, real = sentencepiece_model_pb2.ModelProto(), sentencepiece_model_pb2.ModelProto()
    demo.ParseFromString(real_demo.tokenizer_path.read_bytes())
    real.ParseFromString(real_tokenizer_path.read_bytes())
    for field in (
        "model_type", "vocab_size", "character_coverage", "byte_fallback", "split_digits", "pad_id", "bos_id",
        "eos_id", "unk_id", "hard_vocab_limit", "max_sentence_length", "split_by_whitespace", "unk_surface",
    ):
        assert getattr(demo.trainer_spec, field) == getattr(real.trainer_spec, field), field
    for field in ("name", "add_dummy_prefix", "remove_extra_whitespaces", "escape_whitespaces"):
        assert getattr(demo.normalizer_spec, field) == getattr(real.normalizer_spec, field), field
    assert [p.type for p in demo.pieces[:4]] == [p.type for p in real.pieces[:4]]


# ---- a small synthetic standard library, for the build mechanics ---------------------------------------

SYLLABLES = "ka lo mi ne ru ta shi po va de gri zu fle mon tar bel quo xi yen wor".split()


def _make_fake_stdlib(root: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(3000)]

    def paragraph() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(20, 50))).capitalize() + "."

    for i in range(90):
        module_doc = "\n\n".join(paragraph() for _ in range(7))
        source = f'"""{module_doc}"""\n\nclass Thing{i}:\n    """{paragraph()}"""\n\n    def run(self):\n        """{paragraph()}"""\n'
        (root / f"pkg{i % 4}").mkdir(parents=True, exist_ok=True)
        (root / f"pkg{i % 4}" / f"mod{i:03d}.py").write_text(source, encoding="utf-8")
    (root / "nested.py").write_text(
        textwrap.dedent(
            '''\
            """Nested module."""
            import sys

            if sys:
                class Hidden:
                    """Hidden class."""

                    def method(self):
                        """Hidden method."""
                        text = """not a docstring"""
                        return text
            try:
                pass
            except ImportError:
                def fallback():
                    """Fallback function."""
            '''
        ),
        encoding="utf-8",
    )
    (root / "dup_a.py").write_text('"""Same words twice."""\n', encoding="utf-8")
    (root / "dup_b.py").write_text('"""Same words twice."""\n', encoding="utf-8")
    (root / "py2.py").write_text('"""Old."""\nprint "hello"\n', encoding="utf-8")
    for skipped in ("test", "site-packages", "idlelib/idle_test"):
        (root / skipped).mkdir(parents=True, exist_ok=True)
        (root / skipped / "skipped.py").write_text('"""SKIPPED TEXT."""\n', encoding="utf-8")
    (root / "pydoc_data").mkdir(exist_ok=True)
    (root / "pydoc_data" / "topics.py").write_text(
        "# Autogenerated\ntopics = {'zeta': 'Zeta topic text.\\n',\n          'alpha': 'Alpha topic text.'}\n",
        encoding="utf-8",
    )
    return root


@pytest.fixture(scope="module")
def fake_stdlib_template(tmp_path_factory) -> Path:
    return _make_fake_stdlib(tmp_path_factory.mktemp("stdlib"))


@pytest.fixture
def fake_stdlib(fake_stdlib_template, tmp_path, monkeypatch) -> Path:
    """A private copy (tests edit it) that the builder reads instead of the real standard library."""
    root = tmp_path / "stdlib"
    for path in fake_stdlib_template.rglob("*"):
        if path.is_file():
            target = root / path.relative_to(fake_stdlib_template)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    monkeypatch.setattr(corpus, "_stdlib_root", lambda: root)
    return root


def test_documents_come_from_docstrings_in_source_order_and_topics(fake_stdlib):
    docs = collect_demo_documents()
    by_name = {doc.name: doc.text for doc in docs}
    assert by_name["stdlib:nested.py"] == "Nested module.\n\nHidden class.\n\nHidden method.\n\nFallback function."
    assert by_name["topic:alpha"] == "Alpha topic text." and by_name["topic:zeta"] == "Zeta topic text."
    assert "stdlib:dup_a.py" in by_name and "stdlib:dup_b.py" not in by_name  # identical text kept once
    assert "stdlib:py2.py" not in by_name  # unparsable for this interpreter: skipped
    assert not any("SKIPPED" in text for text in by_name.values())
    assert [d.name for d in docs][-2:] == ["topic:alpha", "topic:zeta"]
    assert len(docs) == 90 + 2 + 2  # modules, nested.py, dup_a.py, two topics
    manifest_skips = corpus._read_demo_source(fake_stdlib, corpus._stdlib_source_files(fake_stdlib)).skipped_files
    assert manifest_skips == ["py2.py"]


def test_changed_source_rebuilds(fake_stdlib, tmp_path, capsys):
    out = tmp_path / "data"
    first = build_demo(out, quiet=True)
    before = _manifest(first)
    (fake_stdlib / "pkg0" / "mod000.py").write_text('"""A rewritten module docstring, as in another Python."""\n', encoding="utf-8")
    second = build_demo(out)
    assert "rebuilding the demo corpus: the standard-library sources changed" in capsys.readouterr().out
    after = _manifest(second)
    assert after["source"]["files_sha256"] != before["source"]["files_sha256"]
    assert after["source"]["text_sha256"] != before["source"]["text_sha256"]
    assert build_demo(out, quiet=True) == second  # and now cached again


def test_crash_mid_build_keeps_the_previous_corpus(fake_stdlib, tmp_path, monkeypatch):
    out = tmp_path / "data"
    build_demo(out, quiet=True)
    good = _snapshot(out)
    (fake_stdlib / "pkg1" / "mod001.py").write_text('"""Changed."""\n', encoding="utf-8")
    real_write_split = corpus._write_split

    def crash_after_first_split(folder, split, tokens, shard_tokens):
        if split == "val":
            raise OSError(28, "No space left on device")
        return real_write_split(folder, split, tokens, shard_tokens)

    monkeypatch.setattr(corpus, "_write_split", crash_after_first_split)
    with pytest.raises(OSError, match="No space left"):
        build_demo(out, quiet=True)
    assert _snapshot(out) == good  # the previous build is untouched
    assert not [p for p in (out / "datasets").iterdir() if ".build-" in p.name]
    monkeypatch.setattr(corpus, "_write_split", real_write_split)
    rebuilt = build_demo(out, quiet=True)
    assert _manifest(rebuilt)["source"]["files_sha256"] != good[f"datasets/{DEMO_DATASET}/manifest.json"]["source"]["files_sha256"]


def test_damaged_or_extra_shards_and_leftovers_trigger_a_clean_rebuild(fake_stdlib, tmp_path):
    out = tmp_path / "data"
    demo = build_demo(out, quiet=True)
    good = _snapshot(out)
    shard = demo.data_path / "fineweb_val_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])  # truncated
    for leftover in (f".{DEMO_DATASET}.build-1-dead", f".{DEMO_DATASET}.old-1-dead"):
        (out / "datasets" / leftover).mkdir()
    assert build_demo(out, quiet=True) == demo
    assert _snapshot(out) == good  # deterministic rebuild: the same bytes again
    assert sorted(p.name for p in (out / "datasets").iterdir() if not p.name.endswith(".lock")) == [DEMO_DATASET]
    write_shard(demo.data_path / "fineweb_train_000099.bin", [1, 2, 3])  # a stray shard would join training
    build_demo(out, quiet=True)
    assert not (demo.data_path / "fineweb_train_000099.bin").exists()


def test_too_little_text_is_a_clear_error(tmp_path, monkeypatch):
    root = tmp_path / "stdlib"
    root.mkdir()
    (root / "tiny.py").write_text('"""Only a few words."""\n', encoding="utf-8")
    (root / "other.py").write_text('"""Some other words."""\n', encoding="utf-8")
    monkeypatch.setattr(corpus, "_stdlib_root", lambda: root)
    with pytest.raises(CorpusError, match="golf data fineweb"):
        build_demo(tmp_path / "data", quiet=True)
    (root / "tiny.py").unlink()
    (root / "other.py").unlink()
    with pytest.raises(CorpusError, match=r"no standard-library \.py sources"):
        build_demo(tmp_path / "data", quiet=True)


_CLI_WITH_FAKE_STDLIB = (
    "import sys; from pathlib import Path; import golf.corpus.demo as d; from golf.corpus.cli import main; "
    "d._stdlib_root = lambda: Path(sys.argv[1]); sys.exit(main(['data', 'demo', '--out', sys.argv[2]]))"
)


def test_two_processes_build_once(fake_stdlib, tmp_path):
    out = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLI_WITH_FAKE_STDLIB, str(fake_stdlib), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=300) + (proc.returncode,) for proc in procs]
    for stdout, stderr, code in results:
        assert code == 0, stderr
    outputs = [stdout for stdout, _, _ in results]
    assert sum("built the demo corpus" in text for text in outputs) == 1
    assert sum("already built" in text for text in outputs) == 1
    demo = build_demo(out, quiet=True)
    assert _manifest(demo)["tokens"]["train"] == demo.train_tokens > 0


# ---- the `golf data` commands ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="golf")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_demo_builds_and_reports(fake_stdlib, tmp_path, capsys):
    args = _parser().parse_args(["data", "demo", "--out", str(tmp_path / "data")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "built the demo corpus" in out and "train tokens" in out and "val tokens" in out
    assert (tmp_path / "data" / "datasets" / DEMO_DATASET / "fineweb_val_000000.bin").is_file()


def test_cli_help_names_the_source_and_the_variants(capsys):
    parser = _parser()
    for argv in (["data", "demo", "--help"], ["data", "fineweb", "--help"]):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 0
    text = capsys.readouterr().out
    assert "docstrings" in text and "pydoc_data/topics.py" in text and "never imported" in text
    assert "sp1024" in text and "willdepueoai/parameter-golf" in text and "--train-shards" in text


def test_cli_rejects_unknown_variant(capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["data", "fineweb", "--variant", "sp999"])
    assert info.value.code == 2
    assert "sp1024" in capsys.readouterr().err


def test_cli_demo_error_goes_to_stderr_with_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(corpus, "_stdlib_root", lambda: tmp_path / "empty")
    args = _parser().parse_args(["data", "demo", "--out", str(tmp_path / "data")])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("golf data demo: error:") and "golf data fineweb" in err


# ---- FineWeb fetch ------------------------------------------------------------------------------------


@pytest.fixture
def no_hub_download(monkeypatch):
    """Fail the test if anything reaches huggingface_hub's downloaders."""
    import huggingface_hub

    for name in ("snapshot_download", "hf_hub_download"):

        def forbidden(*args, _name=name, **kwargs):
            raise AssertionError(f"{_name} was called")

        monkeypatch.setattr(huggingface_hub, name, forbidden)


def test_unknown_variant_and_bad_shard_counts(tmp_path):
    with pytest.raises(ValueError) as info:
        fetch_fineweb("sp999", 1, tmp_path)
    assert "sp999" in str(info.value) and "sp1024" in str(info.value) and "sp4096" in str(info.value)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=">= 0"):
            fetch_fineweb("sp1024", bad, tmp_path)


def test_offline_mode_fails_at_once_with_the_fix(tmp_path, monkeypatch, no_hub_download):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FetchError) as info:
        fetch_fineweb("sp1024", 2, tmp_path / "data")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "willdepueoai/parameter-golf" in message
    data_dir = str(tmp_path / "data" / "datasets" / "fineweb10B_sp1024")
    assert data_dir in message and "fineweb_train_000001.bin" in message and "fineweb_1024_bpe.model" in message


def test_unreachable_hub_fails_fast_naming_the_endpoint(tmp_path, monkeypatch, no_hub_download):
    # Port 9 (discard) on localhost refuses the connection at once; the probe does not retry, so
    # huggingface_hub's retrying downloader is never reached.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(FetchError) as info:
        fetch_fineweb("sp1024", 1, tmp_path / "data")
    message = str(info.value)
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:9" in message
    assert f"within {fineweb.HUB_CONNECT_TIMEOUT_S:g} s" in message and "datasets/manifest.json" in message
    assert "copy" in message and "fineweb_val_000000.bin" in message


def test_cli_fineweb_offline_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    proc = subprocess.run(
        [sys.executable, "-m", "golf.corpus", "data", "fineweb", "--variant", "sp1024", "--train-shards", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("golf data fineweb: error:") and "HF_HUB_OFFLINE" in proc.stderr
    assert "Traceback" not in proc.stderr


def _fineweb_files(root: Path, tokenizer_source: Path, train: int, val: int, dataset: str = "fineweb10B_sp1024") -> None:
    folder = root / "datasets" / dataset
    for i in range(train):
        write_shard(folder / f"fineweb_train_{i:06d}.bin", np.arange(100 + i) % 1024)
    for i in range(val):
        write_shard(folder / f"fineweb_val_{i:06d}.bin", np.arange(50) % 1024)
    (root / "tokenizers").mkdir(parents=True, exist_ok=True)
    (root / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(tokenizer_source.read_bytes())


def test_files_copied_by_hand_need_no_network(real_demo, tmp_path, monkeypatch, no_hub_download):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fineweb_files(tmp_path, real_demo.tokenizer_path, train=3, val=1)
    data_path, tokenizer_path = fetch_fineweb("sp1024", 2, tmp_path, quiet=True)
    assert data_path == tmp_path.resolve() / "datasets" / "fineweb10B_sp1024"
    assert tokenizer_path == tmp_path.resolve() / "tokenizers" / "fineweb_1024_bpe.model"
    with pytest.raises(FetchError):  # a fourth train shard is not there
        fetch_fineweb("sp1024", 4, tmp_path, quiet=True)


def _hub_manifest(files_train: int, files_val: int) -> dict:
    # The shape of the challenge's datasets/manifest.json, as its download script reads it.
    return {
        "datasets": [
            {"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024", "stats": {"files_train": files_train, "files_val": files_val}}
        ],
        "tokenizers": [
            {"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model", "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"}
        ],
    }


def test_shard_count_out_of_range_lists_the_valid_range(tmp_path, monkeypatch, no_hub_download):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "datasets" / "fineweb10B_sp1024"
    folder.mkdir(parents=True)
    (folder / fineweb.HUB_MANIFEST).write_text(json.dumps(_hub_manifest(195, 1)))
    with pytest.raises(ValueError) as info:
        fetch_fineweb("sp1024", 196, tmp_path)
    assert "valid values are 0..195" in str(info.value)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch, real_demo):
    """A local stand-in for the Hugging Face repo: files laid out as in the challenge's dataset repo."""
    import huggingface_hub

    remote = tmp_path / "remote"
    _fineweb_files(remote / "datasets", real_demo.tokenizer_path, train=3, val=2)
    (remote / "datasets" / "manifest.json").write_text(json.dumps(_hub_manifest(3, 2)))
    calls: list[str] = []

    def fake_snapshot(repo_id, *, repo_type=None, allow_patterns=None, local_dir=None, endpoint=None, **kwargs):
        # What snapshot_download does with allow_patterns: every repo file matching one of them
        # lands under local_dir in the repo's layout; a pattern matching nothing is no error.
        assert repo_id == "willdepueoai/parameter-golf" and repo_type == "dataset"
        for path in sorted(remote.rglob("*")):
            relative = path.relative_to(remote).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(relative, pattern) for pattern in allow_patterns):
                calls.append(relative)
                target = Path(local_dir) / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(fineweb, "_require_hub", lambda *args: None)
    return remote, calls


def test_fetch_downloads_validates_and_resumes(fake_hub, tmp_path):
    remote, calls = fake_hub
    out = tmp_path / "data"
    data_path, tokenizer_path = fetch_fineweb("sp1024", 2, out, quiet=True)
    assert calls == [
        "datasets/manifest.json",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_val_000001.bin",
        "datasets/tokenizers/fineweb_1024_bpe.model",
    ]
    assert [p.name for p in shard_files(data_path, "train")] == ["fineweb_train_000000.bin", "fineweb_train_000001.bin"]
    assert len(shard_files(data_path, "val")) == 2
    assert tokenizer_path == out.resolve() / "tokenizers" / "fineweb_1024_bpe.model"
    assert (data_path / fineweb.HUB_MANIFEST).is_file()
    assert not (out / fineweb._HUB_STAGING).exists()

    calls.clear()
    assert fetch_fineweb("sp1024", 2, out, quiet=True) == (data_path, tokenizer_path)
    assert calls == []  # complete: nothing downloaded again
    (data_path / "fineweb_train_000001.bin").write_bytes(b"\x00" * 10)  # damaged
    fetch_fineweb("sp1024", 3, out, quiet=True)
    assert calls == [
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
        "datasets/datasets/fineweb10B_sp1024/fineweb_train_000002.bin",
    ]
    assert len(read_shard(data_path / "fineweb_train_000001.bin")) == 101


def test_fetch_rejects_a_corrupt_download(fake_hub, tmp_path):
    remote, _ = fake_hub
    bad = remote / "datasets" / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000001.bin"
    bad.write_bytes(bad.read_bytes()[:-4])
    with pytest.raises(FetchError) as info:
        fetch_fineweb("sp1024", 1, tmp_path / "data", quiet=True)
    assert "fineweb_val_000001.bin" in str(info.value) and "truncated" in str(info.value)
    assert not (tmp_path / "data" / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000001.bin").exists()


def test_fetch_reports_a_changed_repository_layout(fake_hub, tmp_path):
    remote, _ = fake_hub
    (remote / "datasets" / "tokenizers" / "fineweb_1024_bpe.model").unlink()
    with pytest.raises(FetchError, match="has no file datasets/tokenizers/fineweb_1024_bpe.model"):
        fetch_fineweb("sp1024", 1, tmp_path / "data", quiet=True)
