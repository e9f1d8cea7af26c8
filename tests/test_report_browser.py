"""The HTML report in a real browser (slow): headless Chromium renders plots and tables."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from csp.campaign.store import CampaignStore
from csp.report import collect, write_report
from csp.report.plots import STAGE_COLORS

sys.path.insert(0, str(Path(__file__).parent))
from report_store import make_store, with_audit  # noqa: E402
from test_report import synthetic  # noqa: E402

pytestmark = pytest.mark.browser

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    assert exe is not None, "headless Chromium is needed: apt-get install -y chromium"
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args], capture_output=True,
                          text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    """Messages the page itself logged (console output, uncaught exceptions)."""
    return [l for l in stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]


def _has_color(img: np.ndarray, hex_color: str, tol: float = 0.03) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(img[..., :3] - rgb).max(axis=-1) < tol).sum())


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    write_report(synthetic(), tmp_path / "report")
    url = (tmp_path / "report" / "report.html").resolve().as_uri()

    shot = tmp_path / "shot.png"
    proc = chromium(tmp_path, "--window-size=1200,3200", "--hide-scrollbars", f"--screenshot={shot}", url)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    assert console_errors(proc.stderr) == []
    img = imread(shot)
    assert img.shape[:2] == (3200, 1200)
    assert (img[..., :3].min(axis=-1) < 0.9).mean() > 0.05  # not a blank page
    # the plots were decoded and drawn: their marker colours appear on screen
    for stage in ("stage1", "stage2", "reference"):
        assert _has_color(img, STAGE_COLORS[stage]) > 50, stage
    assert _has_color(img, "#4c72b0") > 5000  # funnel bars

    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0 and console_errors(dom.stderr) == []
    html = dom.stdout
    assert '<table id="hull-phases">' in html and "<td>Cu3Au</td>" in html and "<td>P4/mmm (123)</td>" in html
    images = re.findall(r'<img id="fig-(\w+)" alt="[^"]*" src="data:image/png;base64,', html)
    assert images == ["hull", "funnel", "parity", "learning"]


def _cells(html: str, table_id: str, column: int) -> list[str]:
    """Text of one column of a table in a DOM dump (tags stripped)."""
    table = re.search(f'<table id="{table_id}"[^>]*>(.*?)</table>', html, re.S).group(1)
    body = table.split("<tbody>", 1)[1]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [re.sub(r"<[^>]+>", "", re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)[column]) for r in rows]


@pytest.mark.slow
def test_campaign_report_sections_in_headless_chromium(tmp_path):
    """A report collected from a (synthetic) store: the table of structures near the hull sorts
    by clicking its headers, links existing files; σ / error model per stage, audit plot,
    skipped survivors, readable settings, the #12 note; only the stages that ran."""
    ids = make_store(tmp_path / "run")
    with with_audit(CampaignStore(tmp_path / "run"), ids) as store:
        write_report(collect(store, within=0.05), tmp_path / "report")
    page = tmp_path / "report" / "report.html"
    shot = tmp_path / "shot.png"
    proc = chromium(tmp_path, "--window-size=1200,5600", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri())
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    assert console_errors(proc.stderr) == []
    img = imread(shot)
    assert (img[..., :3].min(axis=-1) < 0.9).mean() > 0.05
    for stage in ("stage1", "stage2"):   # the audit plot's points, one colour per stage
        assert _has_color(img, STAGE_COLORS[stage]) > 50, stage

    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0 and console_errors(dom.stderr) == []
    html = dom.stdout
    images = re.findall(r'<img id="fig-(\w+)"', html)
    assert images == ["hull", "funnel", "audit", "parity", "learning"]
    assert '<table id="structures" class="sortable">' in html
    formulas = _cells(html, "structures", 0)
    assert sorted(formulas) == ["Au", "Cu", "Cu", "Cu3Au", "CuAu", "CuAu3"]      # 7 structures, one merged copy
    copies = dict(zip(formulas, _cells(html, "structures", 5)))
    assert copies["Cu3Au"] == "2" and copies["CuAu"] == "1"
    above = [float(x) for x in _cells(html, "structures", 2)]
    assert above == sorted(above) and max(above) < 50
    for href in re.findall(r'<a href="(structures/[^"]+)"', html):
        assert (tmp_path / "report" / href).is_file(), href
    stage_head = re.search(r'<table id="stages"><thead><tr>(.*?)</tr>', html).group(1)
    assert re.findall(r"<th>(.*?)</th>", stage_head) == ["quantity", "stage 1", "stage 2"]
    assert "stage 3" not in html
    labels = _cells(html, "stages", 0)
    assert "σ (meV/atom)" in labels and "error bound (meV/atom)" in labels and "audited: above the bound" in labels
    assert _cells(html, "stages", 2)[labels.index("audited: above the bound")] == "1"
    assert _cells(html, "stages", 1)[labels.index("σ (meV/atom)")] == "11.0"
    assert "a relaxed duplicate (L12) is lower" in html and _cells(html, "skipped", 1) == ["41.0"]
    assert "the hull may be missing this structure" in html
    assert "1 of 4 audited structures have an MTP error above the bound 12.0 meV/atom" in html
    settings = dict(zip(_cells(html, "settings", 0), _cells(html, "settings", 1)))
    assert settings["screening.stages[1].window"] == "3.0" and settings["reference.relax.fmax"] == "0.01"
    text = re.sub(r"<[^>]+>", " ", html.split("<body>", 1)[1])
    assert "eV/atom" not in text.replace("meV/atom", "")         # one unit everywhere

    # the sorting script, run by the browser: click "formula" once (ascending), "atoms" twice (descending)
    clicked = tmp_path / "report" / "clicked.html"
    clicked.write_text(page.read_text().replace("</body>", """<script>
var th = document.querySelectorAll("#structures th");
th[0].click(); var f = Array.from(document.querySelectorAll("#structures tbody tr td:first-child")).map(function(c){return c.textContent});
th[4].click(); th[4].click();
document.body.setAttribute("data-formulas", f.join(","));
</script></body>"""))
    dom = chromium(tmp_path, "--dump-dom", clicked.as_uri())
    assert console_errors(dom.stderr) == []
    assert re.search(r'data-formulas="([^"]*)"', dom.stdout).group(1) == ",".join(sorted(formulas))
    atoms = [int(x) for x in _cells(dom.stdout, "structures", 4)]
    assert atoms == sorted(atoms, reverse=True) and atoms[-1] == 2
    assert 'data-dir="desc"' in dom.stdout


@pytest.mark.slow
def test_console_error_detection_works(tmp_path):
    """Control: a page that logs an error is caught by the same check."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("boom"); nope();</script></body></html>')
    proc = chromium(tmp_path, "--dump-dom", bad.as_uri())
    errors = console_errors(proc.stderr)
    assert len(errors) == 2 and '"boom"' in errors[0] and "ReferenceError" in errors[1]
