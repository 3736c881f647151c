"""`sweeps report DIR`: the HTML page, its figures, its notes, its errors, and a real browser.

The experiments are the real small experiment of tests/data (2 configs x 3 seeds of golf at smoke
scale, one trial errored), grown by a third config cloned from real trials, and cut down where a
test needs a single seed, no baseline or no logs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from sweeps.cli import main
from sweeps.curves import curves_from_text
from sweeps.htmlreport import FIGURE_KEYS

from conftest import TEST_DATA

LEADERBOARD = TEST_DATA / "leaderboard" / "canonical.csv"
BASE = "QAT_ENABLED=0"
QAT = "QAT_ENABLED=1"
# A label with every character HTML gives a meaning to, and a mathtext string matplotlib would
# fail to parse if it tried.
HOSTILE = 'QAT_ENABLED=1,NOTE=<b>bold</b> & "quoted" \'x\' $\\notacommand$'
BROWSER_NAMES = ("chromium", "chromium-browser")

pytestmark = pytest.mark.usefixtures("restore_value_sources")


def _trials(experiment: Path, label: str) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if p.is_dir()
                  and json.loads((p / "trial.json").read_text())["label"] == label)


def _add_config(experiment: Path, label: str, params: dict[str, str],
                shifts: dict[int, float]) -> None:
    """Clone the baseline's real trials into a new config whose val_bpb is lower by ``shifts``."""
    for number, source in enumerate(_trials(experiment, BASE)):
        record = json.loads((source / "trial.json").read_text())
        trial_id = f"e3d9e_{10 + number:05d}"
        target = experiment / f"{trial_id}_new_seed{record['seed']}"
        shutil.copytree(source, target)
        record.update(trial_id=trial_id, label=label, params=params)
        (target / "trial.json").write_text(json.dumps(record))
        result = json.loads((target / "run" / "result.json").read_text())
        result["metrics"]["val_bpb"] -= shifts[record["seed"]]
        (target / "run" / "result.json").write_text(json.dumps(result))


@pytest.fixture
def three_configs(experiment: Path) -> Path:
    """The real experiment plus a clearly better third config with a hostile label."""
    _add_config(experiment, HOSTILE, {"QAT_ENABLED": "1", "NOTE": HOSTILE.split("NOTE=", 1)[1]},
                {1337: 0.050, 42: 0.052, 2024: 0.047})
    return experiment


def _report(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["report", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _images(page: str) -> dict[str, bytes]:
    """Figure key -> the PNG bytes embedded in its <figure>."""
    found = re.findall(r'<figure id="figure-([a-z_]+)"[^>]*>.*?<img src="data:image/png;base64,'
                       r'([A-Za-z0-9+/=]+)"', page, flags=re.S)
    return {key: base64.b64decode(data, validate=True) for key, data in found}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _notes(page: str) -> list[str]:
    section = re.search(r'<ul class="notes">(.*?)</ul>', page, flags=re.S)
    return re.findall(r"<li>(.*?)</li>", section.group(1), flags=re.S) if section else []


# --------------------------------------------------------------------------------- the page
def test_page_has_every_figure_embedded_and_written_beside_it(three_configs, capsys):
    code, out, err = _report([str(three_configs), "--leaderboard", str(LEADERBOARD)], capsys)
    assert code == 0, err
    page_path = three_configs / "report.html"
    assert f"report: {page_path}" in out
    page = page_path.read_text()
    images = _images(page)
    assert sorted(images) == sorted(FIGURE_KEYS)
    for key, data in images.items():
        beside = three_configs / f"report_{key}.png"
        assert beside.read_bytes() == data  # the file beside the page is the embedded figure
        width, height = _png_size(data)
        assert width > 300 and height > 200
    # The summary table: one row per config, with the baseline marked and the better config's
    # test from compare_with_baseline (paired on its 3 seeds, significant).
    rows = re.findall(r"<tr><td class=\"text\">(.*?)</td>(.*?)</tr>", page.split("<tbody>")[1])
    assert [label for label, _ in rows] == [BASE, QAT, _html(HOSTILE)]
    assert "(baseline)" in rows[0][1]
    assert "paired, 2 pairs" in rows[1][1] and "not significant" in rows[1][1]
    assert "paired, 3 pairs" in rows[2][1] and ">significant at p &lt; 0.01<" in rows[2][1]
    delta = float(re.search(r"<td>([+-]\d\.\d{5})</td>", rows[2][1]).group(1))
    assert delta == pytest.approx(-(0.050 + 0.052 + 0.047) / 3, abs=1e-5)
    # The leaderboard's best (canonical.csv: 1.0950) as a column and a section.
    assert "Seed Stack + Late QAT" in page and "1.0950" in page
    assert "vs leaderboard best" in page
    # The errored trial is a note and a row of the unfinished table, not a crash.
    assert any("1 of 9 trials did not finish (1 ERROR)" in note for note in _notes(page))
    unfinished = page.split('<section id="unfinished">')[1]
    assert "golf.train exited with status 1" in unfinished and "2024" in unfinished


def _html(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_every_text_is_escaped(three_configs, tmp_path, capsys):
    board = tmp_path / "board.csv"
    board.write_text('run,score,author\n"<script>alert(1)</script> $\\frac$",1.0100,"<i>eve</i>"\n'
                     "Other,1.2000,bob\n")
    code, _, err = _report([str(three_configs), "--leaderboard", str(board)], capsys)
    assert code == 0, err
    page = (three_configs / "report.html").read_text()
    assert "<script" not in page and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; $\\frac$" in page
    assert "&lt;i&gt;eve&lt;/i&gt;" in page
    assert _html(HOSTILE) in page
    # Attribute values too: no quote from a label can end an attribute early.
    for attribute in re.findall(r'="([^"]*)"', page):
        assert "<" not in attribute


def test_baseline_option_takes_a_label_or_keys(three_configs, capsys):
    code, _, err = _report([str(three_configs), "--baseline", "QAT_ENABLED=1,NOTE="], capsys)
    assert code == 2 and "matches no config" in err  # a selector that names no config
    code, _, err = _report([str(three_configs), "--baseline", QAT], capsys)
    assert code == 0, err
    page = (three_configs / "report.html").read_text()
    assert "baseline: QAT_ENABLED=1" in page
    rows = re.findall(r"<tr><td class=\"text\">(.*?)</td>(.*?)</tr>", page.split("<tbody>")[1])
    assert "(baseline)" in dict(rows)[QAT]


def test_out_option_writes_the_page_and_pngs_there(three_configs, tmp_path, capsys):
    out = tmp_path / "pages" / "qat.html"
    code, out_text, err = _report([str(three_configs), "--out", str(out)], capsys)
    assert code == 0, err
    assert out.is_file() and f"report: {out}" in out_text
    assert sorted(p.name for p in out.parent.glob("*.png")) == sorted(
        f"qat_{key}.png" for key in FIGURE_KEYS)
    assert not (three_configs / "report.html").exists()


# ------------------------------------------------------------------------ notes, not crashes
def test_no_logs_is_a_note_and_no_curves(three_configs, capsys):
    for log in three_configs.glob("*/train.log"):
        log.unlink()
    code, out, err = _report([str(three_configs)], capsys)
    assert code == 0, err
    page = (three_configs / "report.html").read_text()
    assert sorted(_images(page)) == ["bytes", "val_bpb"]
    notes = _notes(page)
    assert any(note.startswith("no train.log in 9 trial folder(s)") for note in notes)
    assert "no learning curves: no trial has a train.log with step lines" in notes
    assert "note: no learning curves" in out


def test_one_missing_log_names_its_trial(three_configs, capsys):
    gone = _trials(three_configs, QAT)[0]
    (gone / "train.log").unlink()
    code, _, err = _report([str(three_configs)], capsys)
    assert code == 0, err
    page = (three_configs / "report.html").read_text()
    assert "curves" in _images(page)
    assert any(note.startswith("no train.log in 1 trial folder(s)") and _html(gone.name) in note
               for note in _notes(page))


def test_no_baseline_is_a_note_and_no_delta_panel(three_configs, capsys):
    record = json.loads((three_configs / "sweep.json").read_text())
    record["baseline_label"] = None
    (three_configs / "sweep.json").write_text(json.dumps(record))
    code, _, err = _report([str(three_configs)], capsys)
    assert code == 0, err
    page = (three_configs / "report.html").read_text()
    assert any(note.startswith("no baseline: the sweep names none") for note in _notes(page))
    assert "baseline: none" in page and "(baseline)" not in page
    # Without tests the val_bpb figure is one panel: shorter than the two-panel one.
    one_panel = _png_size(_images(page)["val_bpb"])[1]
    code, _, _ = _report([str(three_configs), "--baseline", BASE], capsys)
    two_panels = _png_size(_images((three_configs / "report.html").read_text())["val_bpb"])[1]
    assert code == 0 and one_panel < two_panels


def test_a_single_seed_is_not_tested_and_says_why(three_configs, capsys):
    for path in three_configs.iterdir():
        if path.is_dir() and "seed1337" not in path.name:
            shutil.rmtree(path)
    code, _, err = _report([str(three_configs)], capsys)
    assert code == 0, err
    page = (three_configs / "report.html").read_text()
    assert sorted(_images(page)) == sorted(FIGURE_KEYS)
    notes = _notes(page)
    assert f"{QAT} is not tested against the baseline: needs &gt;= 2 finished seeds on each side " \
           "(have 1 vs 1)" in notes


def test_every_trial_failed(three_configs, capsys):
    for record_path in three_configs.glob("*/trial.json"):
        record = json.loads(record_path.read_text())
        record.update(status="ERROR", error="killed by the test")
        record_path.write_text(json.dumps(record))
    code, _, err = _report([str(three_configs)], capsys)
    assert code == 0, err
    page = (three_configs / "report.html").read_text()
    assert list(_images(page)) == ["curves"]  # the logs still draw, dashed
    notes = _notes(page)
    assert "no trial finished with a val_bpb: no val_bpb figure and no bytes figure" in notes
    assert any("9 of 9 trials did not finish (9 ERROR)" in note for note in notes)


# --------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("case", ["missing dir", "empty dir", "unknown baseline", "no leaderboard",
                                  "out is a dir", "out under a file"])
def test_bad_input_is_one_line_and_exit_2_before_any_work(case, experiment, tmp_path, capsys):
    args = {
        "missing dir": [str(tmp_path / "nope")],
        "empty dir": [str(tmp_path)],
        "unknown baseline": [str(experiment), "--baseline", "LAWA_ENABLED=1"],
        "no leaderboard": [str(experiment), "--leaderboard", str(tmp_path / "board.csv")],
        "out is a dir": [str(experiment), "--out", str(tmp_path)],
        "out under a file": [str(experiment), "--out", str(LEADERBOARD / "report.html")],
    }[case]
    expected = {
        "missing dir": "no experiment directory at",
        "empty dir": "holds no trials yet",
        "unknown baseline": "LAWA_ENABLED is not a swept key",
        "no leaderboard": "leaderboard file not found",
        "out is a dir": "is a directory: give the page's file name",
        "out under a file": "is a file, not a folder",
    }[case]
    code, out, err = _report(args, capsys)
    assert code == 2
    assert err.startswith("error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err and out == ""
    assert not list(tmp_path.rglob("*.png")) and not list(experiment.rglob("*.png"))
    assert not (experiment / "report.html").exists()


def test_report_is_a_sweeps_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "  report" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["report", "--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0
    assert all(option in text for option in ("--out", "--leaderboard", "--baseline", "examples:"))


# --------------------------------------------------------------------------------- curves
def test_curves_are_the_last_run_of_a_log():
    log = (TEST_DATA / "logs" / "two_runs_seed7.log").read_text()
    curves = curves_from_text(log)
    steps = [int(m) for m in re.findall(r"^step:(\d+)/\d+ train_loss", log, flags=re.M)]
    restart = next(i for i in range(1, len(steps)) if steps[i] < steps[i - 1])
    assert curves.train_steps == steps[restart:]
    losses = [float(m) for m in re.findall(r"^step:\d+/\d+ train_loss:([\d.]+)", log, flags=re.M)]
    assert curves.train_loss == losses[restart:]
    assert curves.val_steps == [0, 300] and curves.val_bpb == [4.1083, 2.2993]
    assert curves_from_text("no step lines here\n").empty


# --------------------------------------------------------------------------------- a real browser
# Once the page has loaded, draw each image onto a canvas and count what was decoded: a PNG cut
# short still reports its header's size, but the rows it lacks stay transparent.
_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(img => {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    let opaque = 0, dark = 0, pixels = 0;
    if (img.naturalWidth > 0) {
      const context = canvas.getContext("2d");
      context.drawImage(img, 0, 0);
      const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
      pixels = data.length / 4;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] === 255) opaque++;
        if (data[i] + data[i + 1] + data[i + 2] < 200) dark++;
      }
    }
    return {figure: img.closest("figure") ? img.closest("figure").dataset.figure : null,
            complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
            pixels, opaque, dark};
  });
  const out = document.createElement("pre");
  out.id = "probe-result";
  out.textContent = JSON.stringify({images, title: document.title,
                                    tables: document.querySelectorAll("table").length});
  document.body.appendChild(out);
});
</script>"""


def _browser() -> str:
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    reason = ("no headless browser: Debian's chromium is not installed (apt-get install "
              "chromium); .ci/run installs it")
    if os.environ.get("GOLF_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and GOLF_REQUIRE_BROWSER=1 says this test must run")
    pytest.skip(reason)


def _render(browser: str, page: Path, tmp_path: Path) -> dict:
    """Load the page in headless chromium and return what the probe saw once it loaded."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', result.stdout, flags=re.S)
    assert found, (f"chromium did not run the page (exit {result.returncode}): "
                   f"{result.stderr[-2000:]}")
    import html

    return json.loads(html.unescape(found.group(1)))


def test_the_page_renders_every_figure_in_headless_chromium(three_configs, tmp_path, capsys):
    browser = _browser()
    code, _, err = _report([str(three_configs), "--leaderboard", str(LEADERBOARD),
                            "--out", str(tmp_path / "site" / "report.html")], capsys)
    assert code == 0, err
    seen = _render(browser, tmp_path / "site" / "report.html", tmp_path)
    assert seen["title"] == "sweeps report: qat_small"
    assert sorted(image["figure"] for image in seen["images"]) == sorted(FIGURE_KEYS)
    for image in seen["images"]:
        key = image["figure"]
        # Decoded whole: the size of the PNG written beside the page, every pixel painted (the
        # figures are opaque), and some of them dark (axes, text, markers).
        expected = _png_size((tmp_path / "site" / f"report_{key}.png").read_bytes())
        assert image["complete"] and image["width"] > 0, image
        assert (image["width"], image["height"]) == expected, image
        assert image["pixels"] == expected[0] * expected[1], image
        assert image["opaque"] == image["pixels"], f"{key}: part of the image did not decode"
        assert image["dark"] > image["pixels"] // 1000, f"{key}: the image is blank"
    assert seen["tables"] == 2  # the per-config summary and the unfinished trials
