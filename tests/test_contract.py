"""The trial contract's names are spelled once, in golf/contract.py (issue 6, item 8).

golf writes result.json, train_state.json and the `artifact_saved:` line; sweeps reads them. A
literal copy of one of these names anywhere else in golf/ or sweeps/ is a second definition that
a rename would silently break, so this test lists every such literal with its file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

from golf import contract

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMES = {
    value: name for name, value in vars(contract).items()
    if name.isupper() and isinstance(value, (str, int)) and not isinstance(value, bool)
}


def _copies(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """Every literal in ``path`` that spells a contract name, as ``file:line: literal (use ...)``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
            continue
        value = node.value
        if isinstance(value, str) and value.startswith(contract.ARTIFACT_SAVED_PREFIX):
            value = contract.ARTIFACT_SAVED_PREFIX  # f"artifact_saved: {run_dir}"
        if isinstance(value, (str, int)) and value in NAMES:
            found.append((node.lineno, f"{path.relative_to(root)}:{node.lineno}: {node.value!r} (use "
                                       f"golf.contract.{NAMES[value]})"))
    return [text for _, text in sorted(found)]


def test_contract_names_are_defined_once():
    copies = []
    for package in ("golf", "sweeps"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if path != REPO_ROOT / "golf" / "contract.py":
                copies += _copies(path)
    assert not copies, "\n".join(copies)


def test_the_guard_sees_a_copy(tmp_path):
    copy = tmp_path / "module.py"
    copy.write_text('LIMIT = 16_000_000\nprint(f"artifact_saved: {1}")\nNAME = "result.json"\n')
    found = _copies(copy, tmp_path)
    assert [line.split(" (use ")[1] for line in found] == [
        "golf.contract.SIZE_LIMIT_BYTES)", "golf.contract.ARTIFACT_SAVED_PREFIX)", "golf.contract.RESULT_FILE)"]
