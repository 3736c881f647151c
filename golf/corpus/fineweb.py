"""The challenge's published FineWeb cache (``golf data fineweb``), fetched from Hugging Face.

The Hugging Face dataset repositories have the layout of the challenge's
``data/cached_challenge_fineweb.py``: inside the repo, ``datasets/manifest.json`` lists the
datasets (``stats.files_train``, ``stats.files_val``) and tokenizers (``model_path``), shards live
at ``datasets/datasets/<dataset>/fineweb_{train,val}_NNNNNN.bin`` (numbered from 0) and tokenizers
at ``datasets/tokenizers/<name>.model``. Locally they land at ``DIR/datasets/<dataset>/`` and
``DIR/tokenizers/``, the challenge's own local layout, with the manifest kept as
``DIR/datasets/<dataset>/hub_manifest.json``. Files already present and valid are never fetched
again, so files copied in by hand need no network; offline, the fetch fails at once and says which
files to copy where.
"""

from __future__ import annotations

import errno
import json
import numbers
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Union

from golf.atomic import write_atomic
from golf.corpus.lock import exclusive_lock
from golf.data import ShardError, read_shard_header
from golf.tokenizer import load_tokenizer

PathLike = Union[str, os.PathLike]


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
# Downloads land here first, in the repository's layout (huggingface_hub keeps its resume state
# beside them), then are validated and moved into the challenge's local layout.
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


def _snapshot(repo_id: str, remotes: list[str], staging: Path, endpoint: str, manual: str) -> dict[str, Path]:
    """Download ``remotes`` (paths inside the repo) into ``staging`` with one ``snapshot_download``.

    Returns each remote path's downloaded file. huggingface_hub keeps its resume state inside
    ``staging``, so an interrupted download continues where it stopped on the next call.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    what = ", ".join(remotes[:3]) + (f" and {len(remotes) - 3} more" if len(remotes) > 3 else "")
    try:
        snapshot_download(
            repo_id=repo_id,
            repo_type="dataset",
            allow_patterns=list(remotes),
            local_dir=staging,
            endpoint=endpoint,
        )
    except LocalEntryNotFoundError as exc:
        raise FetchError(
            f"lost the connection to {endpoint} while fetching {what} from {repo_id}; files fetched so far are "
            f"kept: re-run the same command to continue, or {manual}"
        ) from exc
    except (GatedRepoError, RepositoryNotFoundError) as exc:
        raise FetchError(
            f"the Hugging Face dataset {repo_id} is not accessible ({type(exc).__name__}): it may be gated or "
            "private, so log in with `hf auth login` (or set HF_TOKEN) and accept its terms on the website, or "
            f"pass --repo-id with a repository you can read; or {manual}"
        ) from exc
    except Exception as exc:  # network and HTTP errors differ across huggingface_hub versions
        raise FetchError(
            f"fetching {what} from {repo_id} failed ({type(exc).__name__}: {exc}); files fetched so far are kept: "
            f"re-run the same command to continue, or {manual}"
        ) from exc
    downloaded = {remote: staging / PurePosixPath(remote) for remote in remotes}
    # allow_patterns match nothing for a file the repository lacks: no error, just no file.
    absent = [remote for remote, path in downloaded.items() if not path.is_file()]
    if absent:
        raise FetchError(
            f"the Hugging Face dataset {repo_id} has no file {', '.join(absent)}: its layout differs from the "
            f"challenge's ({HUB_REMOTE_ROOT}/manifest.json, {HUB_REMOTE_ROOT}/datasets/<dataset>/, "
            f"{HUB_REMOTE_ROOT}/tokenizers/); check the repository, pass another --repo-id, or {manual}"
        )
    return downloaded


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
    with open(source.resolve(), "rb") as handle:
        write_atomic(target, lambda out: shutil.copyfileobj(handle, out, 1 << 20))
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
    with exclusive_lock(lock, f"another process is fetching {spec.dataset} into {root}; waiting for it", quiet):
        manifest_path = data_path / HUB_MANIFEST
        if not manifest_path.is_file():
            copied_by_hand = _complete_without_manifest(spec, data_path, tokenizer_dir, train_shards)
            if copied_by_hand is not None:
                if not quiet:
                    print(f"fineweb {spec.name}: using the shards and tokenizer already in {root}", flush=True)
                return copied_by_hand
            _require_hub(endpoint, repo, f"{HUB_REMOTE_ROOT}/manifest.json", manual)
            staging = root / _HUB_STAGING
            remote = f"{HUB_REMOTE_ROOT}/manifest.json"
            _move_into_place(_snapshot(repo, [remote], staging, endpoint, manual)[remote], manifest_path)
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
    if not quiet:
        print(f"fetching {len(todo)} file(s) from {repo}: {names}", flush=True)
    downloaded = _snapshot(repo, [item.remote for item in todo], root / _HUB_STAGING, endpoint, manual)
    unusable = []
    for item in todo:
        problem = _local_problem(_Wanted(item.remote, downloaded[item.remote], item.kind), spec.vocab_size)
        if problem is None:
            _move_into_place(downloaded[item.remote], item.local)
        else:
            downloaded[item.remote].unlink()
            unusable.append(f"{item.remote} ({problem})")
    if unusable:
        raise FetchError(
            f"unusable download(s) from {repo}: {'; '.join(unusable)}; the valid files were kept: re-run to "
            "download the rest again"
        )
