"""`golf toggles`: the catalogue of technique toggles, generated from the registry and the config."""

from __future__ import annotations

from pathlib import Path

from golf.cli import main as golf_main
from golf.config import field_spec
from golf.techniques import TECHNIQUES

REPO = Path(__file__).resolve().parents[1]


def test_every_knob_of_every_registered_technique_is_listed(capsys):
    assert golf_main(["toggles"]) == 0
    text = capsys.readouterr().out
    for technique in TECHNIQUES:
        assert f"{technique.name}: {technique.title} (techniques.md {technique.spec})" in text
        for name in technique.knob_names():
            assert field_spec(name).env in text, name
    assert " * QAT_ENABLED (alias ENABLE_QAT, USE_LATE_QAT, LATE_QAT)" in text  # the switch is marked


def test_the_committed_markdown_page_is_current(capsys):
    assert golf_main(["toggles", "--markdown"]) == 0
    generated = capsys.readouterr().out
    committed = (REPO / "docs" / "TOGGLES.md").read_text()
    assert committed == generated, "docs/TOGGLES.md is stale: run `golf toggles --markdown > docs/TOGGLES.md`"
