"""Verdict lines worded and coloured by their outcome, a run with every group contended ending
with NO SPEED RESULT and what to do, contended groups never reused silently, and a default thread
count that leaves room for the rest of the machine (issue 29, item 4)."""

import os
import subprocess
import sys

from rfbench.harness import bench, cli, console, fdcheck, machine, report, results, runner
from rfbench.harness import cases as casegrid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _correctness(tmp_path, seed, fail=False):
    grid = [c for c in casegrid.grid("smoke") if c.name == "odd" and c.layer == "njet"]
    rows = runner.matrix(grid, ["torch-naive"], ["float64"], ["cpu"], seed=seed)
    if fail:
        rows[0].update(status="fail", rel_err=1.0, bound_ratio=9.0)
    path = str(tmp_path / ("bad.jsonl" if fail else "good.jsonl"))
    results.append(path, rows)
    results.append(path, fdcheck.rows(seed, grid=[c for c in fdcheck.CASES if c.id == "njet-fd-stride2"]))
    return path


def test_each_verdict_line_is_worded_and_coloured_by_its_own_outcome(tmp_path, seed):
    good, bad = _correctness(tmp_path, seed), _correctness(tmp_path, seed, fail=True)
    text = console.finish([good], "x/report.md", colour=False)
    assert "- PASS Agreement:" in text and "- PASS Gradients:" in text
    assert "- NOT MEASURED Speed vs gamma: no speed rows" in text  # not green: nothing was measured
    text = console.finish([bad], "x/report.md", colour=True)
    assert "\033[1;31mFAIL\033[0m Agreement:" in text and "\033[1;33mNOT MEASURED\033[0m Speed" in text
    report.write([bad], str(tmp_path / "rep"))
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<p class='answer fail'><span class='mark'>FAIL</span> <b>Agreement:</b>" in page
    assert "<p class='answer not-measured'><span class='mark'>NOT MEASURED</span> <b>Speed vs gamma:</b>" in page
    md = (tmp_path / "rep" / "verdict.md").read_text()
    assert "- **FAIL** Agreement:" in md and "- **NOT MEASURED** Speed vs gamma:" in md


def _bench_all_contended(out):
    """The user's `rfbench bench` in a subprocess, on a machine where every group reads contended."""
    code = (
        "import sys; from rfbench.harness import machine; machine.WAIT_SHARE = -1.0; machine.LOAD_MARGIN = -1e9\n"
        "from rfbench.harness.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = ["bench", "--grid", "smoke", "--layers", "acu", "--cases", "odd", "--backends", "torch-naive"]
    argv += ["--threads", "1", "--budget", "0.3", "--reps", "3", "--out", str(out)]
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_a_run_with_every_group_contended_says_no_speed_result_and_exits_1(tmp_path):
    res = _bench_all_contended(tmp_path)
    assert res.returncode == 1, res.stderr
    assert "NO SPEED RESULT: all 3 group(s) were contended" in res.stdout
    for step in ("--threads 1", "--retry-contended", "--require-quiet"):
        assert step in res.stdout
    again = _bench_all_contended(tmp_path)  # reused, but said: not silently
    assert "3 group(s) reused, 0 measured; 3 of the reused group(s) were contended (kept out" in again.stdout
    assert "--retry-contended measures them again" in again.stdout
    assert again.returncode == 1


def test_the_default_thread_count_is_half_the_cores_and_help_says_why(capsys):
    assert cli.default_threads() == max(1, machine.cores() // 2)
    args = cli.parser().parse_args(["bench"])
    assert args.threads == cli.default_threads()
    res = subprocess.run([sys.executable, "-m", "rfbench", "bench", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert "half the cores, at least 1" in " ".join(res.stdout.split())


def test_contended_groups_are_counted():
    rows = [
        {"kind": "speed", "status": "ok", "group": "a", "flags": ["contended"]},
        {"kind": "speed", "status": "ok", "group": "a", "flags": []},
        {"kind": "speed", "status": "ok", "group": "b", "flags": []},
        {"kind": "speed", "status": "skip", "group": "c"},
    ]
    assert bench.contended_groups(rows) == (1, 2)


def _speed_row(layer, up, gamma):
    return {
        "kind": "speed",
        "status": "ok",
        "machine": "m",
        "device": "cpu",
        "dtype": "float32",
        "layer": layer,
        "pass": "forward",
        "case": "paper",
        "backend": "numba",
        "group": layer,
        "speedups": {"torch-naive": up},
        "gammas": {"torch-naive": gamma},
        "paper_gamma": None,
        "flags": [],
    }


def test_the_speed_outcome_judges_only_layers_with_a_cheaper_algorithm():
    import pandas as pd

    from rfbench.harness import verdict

    def outcome(rows):
        return verdict.outcomes(verdict.compute(pd.DataFrame(rows)))["speed"]

    gauss = _speed_row("dau_gauss", 0.8, 1.0)  # no cheaper algorithm: gamma 1, slower is expected
    got = outcome([_speed_row("dau", 3.0, 21.0), gauss])
    assert (
        got["outcome"] == "pass" and got["judged"] == 1 and got["not_judged"] == ["dau_gauss forward (model gamma 1)"]
    )
    got = outcome([_speed_row("dau", 0.9, 21.0), gauss])
    assert got["outcome"] == "fail" and got["not_faster"] == ["dau forward numba"]
    assert outcome([gauss])["outcome"] == "not measured"
