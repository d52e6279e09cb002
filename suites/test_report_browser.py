"""The HTML report in a real headless browser: it loads from a file with nothing fetched from
the network, the verdict block is there with its three answers, and every figure decodes."""

import os
import re
import shutil
import subprocess

import pytest

from rfbench.harness import fdcheck, report, results, runner
from rfbench.harness import cases as casegrid

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no headless browser: install Debian's `chromium` (apt-get install -y chromium)"
)


def dump_dom(path, profile):
    """The DOM after the page's load event, as Chromium serialises it."""
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", f"file://{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_html_report_loads_in_chromium_with_verdict_and_every_figure(tmp_path, seed):
    res = tmp_path / "rows.jsonl"
    grid = [c for c in casegrid.grid("smoke") if c.name == "odd" and c.layer == "acu"]
    results.append(str(res), runner.matrix(grid, ["torch-naive", "reference"], ["float64"], ["cpu"], seed=seed))
    results.append(str(res), fdcheck.rows(seed, grid=[c for c in fdcheck.CASES if c.id == "acu-fd"]))
    out = tmp_path / "report"
    report.write([str(res)], str(out))
    pngs = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert pngs, "the rows give at least the heatmap and the gradient figure"
    dom = dump_dom(out / "report.html", tmp_path / "profile")
    verdict = re.search(r"<section id=\"verdict\">(.*?)</section>", dom, re.S)
    assert verdict, dom[:2000]
    for answer in ("Agreement:", "Gradients:", "Speed vs gamma:"):
        assert answer in verdict.group(1)
    # each answer marked by its own outcome: no speed rows here, so the speed answer is not green
    marks = re.findall(r"<p class=\"answer ([a-z-]+)\"><span class=\"mark\">([A-Z ]+)</span>", verdict.group(1))
    assert marks == [("pass", "PASS"), ("pass", "PASS"), ("not-measured", "NOT MEASURED")], marks
    figures = re.findall(r"<figure id=\"fig-([a-z_]+)\">", dom)
    assert sorted(f + ".png" for f in figures) == pngs
    decoded = re.search(r"data-images-decoded=\"(\d+)\"", dom)
    assert decoded and int(decoded.group(1)) == len(pngs), "every embedded figure decodes in the browser"
    assert dom.index('id="verdict"') < dom.index("<figure")
