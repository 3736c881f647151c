"""Artifact byte accounting (techniques.md 3.8): the code bytes are the modules a run imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from golf.quant.artifact import SIZE_LIMIT_BYTES, ArtifactSize, code_bytes, loaded_source_files

REPO_ROOT = Path(__file__).resolve().parents[1]

# A package of our own, so the expected file list does not depend on how golf grows.
TOY_FILES = {
    "toypkg/__init__.py": "",
    "toypkg/used.py": "VALUE = 'héllo'  # a non-ASCII character: bytes, not characters, count\n",
    "toypkg/unused.py": "raise RuntimeError('never imported')\n",
    "toypkg/sub/__init__.py": "from toypkg.sub import leaf\n",
    "toypkg/sub/leaf.py": "X = 1\n",
    "toypkg/main.py": (
        "import json\n"
        "import toypkg.used\n"
        "from golf.quant.artifact import loaded_source_files\n"
        "print(json.dumps([str(p) for p in loaded_source_files('toypkg')]))\n"
    ),
    # Shares the prefix "toypkg" but is another package: must never be counted.
    "toypkg_extra/__init__.py": "Y = 2\n",
}


@pytest.fixture
def toy_root(tmp_path: Path) -> Path:
    for rel, text in TOY_FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def _run(args: list[str], pythonpath: Path) -> list[Path]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pythonpath), str(REPO_ROOT)]))
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=str(pythonpath), check=True
    )
    return [Path(p) for p in json.loads(result.stdout.strip().splitlines()[-1])]


LIST_LOADED = (
    "import json; from golf.quant.artifact import loaded_source_files; "
    "print(json.dumps([str(p) for p in loaded_source_files({package!r})]))"
)


def test_lists_exactly_the_imported_modules(toy_root: Path) -> None:
    imports = "import toypkg.used, toypkg.sub, toypkg_extra; "
    files = _run(["-c", imports + LIST_LOADED.format(package="toypkg")], toy_root)
    expected = ["toypkg/__init__.py", "toypkg/sub/__init__.py", "toypkg/sub/leaf.py", "toypkg/used.py"]
    assert files == sorted((toy_root / rel).resolve() for rel in expected)


def test_counts_the_entry_module_of_python_dash_m(toy_root: Path) -> None:
    files = _run(["-m", "toypkg.main"], toy_root)
    expected = ["toypkg/__init__.py", "toypkg/main.py", "toypkg/used.py"]
    assert files == sorted((toy_root / rel).resolve() for rel in expected)


def test_golf_files_in_a_fresh_process(tmp_path: Path) -> None:
    files = _run(["-c", "import golf.quant.compress; " + LIST_LOADED.format(package="golf")], tmp_path)
    golf_dir = (REPO_ROOT / "golf").resolve()
    assert files == sorted(set(files)), "sorted, each file once"
    assert all(f.is_relative_to(golf_dir) and f.suffix == ".py" for f in files)
    # Importing one submodule runs golf/__init__.py and golf/quant/__init__.py, which pulls in
    # the whole quant package.
    quant = sorted(p.resolve() for p in (golf_dir / "quant").glob("*.py"))
    assert set(quant) <= set(files)
    assert golf_dir / "__init__.py" in files


def test_code_bytes_is_the_sum_of_utf8_file_sizes(toy_root: Path) -> None:
    files = [toy_root / rel for rel in TOY_FILES]
    assert code_bytes(files) == sum(len(text.encode("utf-8")) for text in TOY_FILES.values())
    assert code_bytes(files) == sum(f.stat().st_size for f in files)
    assert code_bytes([]) == 0


def test_code_bytes_rejects_non_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.py"
    bad.write_bytes("x = 'é'\n".encode("latin-1"))
    with pytest.raises(ValueError, match="UTF-8"):
        code_bytes([bad])


def test_loaded_source_files_of_this_process_are_real_golf_files() -> None:
    files = loaded_source_files("golf")
    assert (REPO_ROOT / "golf" / "quant" / "artifact.py").resolve() in files
    assert code_bytes(files) == sum(f.stat().st_size for f in files)


def test_artifact_size_against_the_decimal_limit() -> None:
    assert SIZE_LIMIT_BYTES == 16_000_000
    at_limit = ArtifactSize(model=15_952_358, code=47_642)
    assert at_limit.total == 16_000_000 and at_limit.under_limit
    over = ArtifactSize(model=15_952_359, code=47_642)
    assert over.total == 16_000_001 and not over.under_limit
    assert over.as_dict() == {
        "model": 15_952_359, "code": 47_642, "total": 16_000_001, "limit": 16_000_000,
        "under_limit": False,
    }
