"""report.html in a real headless browser (Debian's Chromium): the page loads without console errors, its DOM
holds the tables and embedded figures, and its screenshot shows them (the plots' coloured pixels, the score
card's marked best cell), which a page whose images do not decode does not."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecgforge.app.report import make_report
from tests.app.test_scorecard import three_runs  # noqa: F401  (fixture: three fabricated runs)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium; .ci/run does)")

#: The score card's best cell background (report_html._CSS ``td.best``).
BEST_CELL_RGB = (0xE8, 0xF4, 0xE8)


def _chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(CHROMIUM), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def _screenshot(page: Path, tmp: Path, name: str) -> np.ndarray:
    shot = tmp / f"{name}.png"
    done = _chromium(page, tmp, f"--screenshot={shot}", "--window-size=1280,6000")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    return np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)


def _saturated(px: np.ndarray) -> np.ndarray:
    """Pixels of a clear colour (channel spread > 80): the plots' bars and lines; the page's own styles are
    black, greys and a pale green."""
    return (px.max(axis=2) - px.min(axis=2)) > 80


def test_report_html_loads_and_shows_tables_and_plots(three_runs: list[Path], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "rep"
    make_report(three_runs, out)
    page = out / "report.html"

    dom = _chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line or "ERR_" in line]
    assert not console, console  # no script errors, no resource that failed to load
    assert dom.stdout.count("<table>") == 4 and "Score card" in dom.stdout
    n_images = len(re.findall(r'<img src="data:image/png;base64,', dom.stdout))
    assert n_images == len(list(out.glob("*.png"))) >= 3

    px = _screenshot(page, tmp_path, "page")
    coloured = _saturated(px)
    assert coloured.sum() > 20_000, f"only {coloured.sum()} coloured pixels: the plots did not render"
    rows = np.flatnonzero(coloured.any(axis=1))
    band = px[rows.min():rows.max() + 1]
    assert band.std() > 30, "the plot region is flat"  # not one block of colour: bars, text, axes
    best = (np.abs(px - np.array(BEST_CELL_RGB)).max(axis=2) <= 2).sum()
    assert best > 500, "the score card's best cells are not visible"
    dark_text = (px.max(axis=2) < 90).sum()
    assert dark_text > 5_000, "no table text in the screenshot"

    # The same page with images that do not decode: the checks above would see it.
    broken = out / "broken.html"
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,AAAA", page.read_text()))
    assert _saturated(_screenshot(broken, tmp_path, "broken")).sum() < 1_000
