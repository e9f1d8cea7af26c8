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

from csp.plots import STAGE_COLORS
from csp.report import write_report

sys.path.insert(0, str(Path(__file__).parent))
from test_report import synthetic  # noqa: E402

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


@pytest.mark.slow
def test_console_error_detection_works(tmp_path):
    """Control: a page that logs an error is caught by the same check."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("boom"); nope();</script></body></html>')
    proc = chromium(tmp_path, "--dump-dom", bad.as_uri())
    errors = console_errors(proc.stderr)
    assert len(errors) == 2 and '"boom"' in errors[0] and "ReferenceError" in errors[1]
