"""``rfbench compare``: like with like only (machine kind, ISA, threads), a percentage change, a
fail threshold, a statistical test on the raw samples, contended rows left out, JSON output.
Run as a user would, through the CLI in a subprocess, on the committed CPU run and copies of it
with known changes."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "reports" / "cpu" / "bench.jsonl"


def _rows():
    rows = [json.loads(x) for x in BASE.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r["status"] == "ok" and r["case"] == "paper"]
    for r in rows:
        r["env"].setdefault("cpu_isa", "avx2")
        r["flags"] = []
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _slower(rows, factor, backend="numba", n=None):
    out = copy.deepcopy(rows)
    for r in out:
        if r["backend"] == backend:
            r["samples_s"] = [s * factor for s in r["samples_s"]][: n or None]
            r["median_s"] *= factor
    return out


def _compare(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "harness.cli", "compare", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_real_slowdown_is_a_regression_and_noise_is_not(tmp_path):
    rows = _rows()
    a = _write(tmp_path / "a.jsonl", rows)
    res = _compare(a, _write(tmp_path / "b.jsonl", _slower(rows, 1.3)))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "REGRESSION" in res.stdout and "+30.0%" in res.stdout
    res = _compare(a, _write(tmp_path / "c.jsonl", _slower(rows, 1.03)))  # below --fail-above 5%
    assert res.returncode == 0 and "0 regression(s)" in res.stdout, res.stdout
    res = _compare(a, _write(tmp_path / "c.jsonl", _slower(rows, 1.03)), "--fail-above", "2%")
    assert res.returncode == 1, res.stdout
    res = _compare(a, _write(tmp_path / "d.jsonl", _slower(rows, 1.3, n=2)))  # two samples prove nothing
    assert res.returncode == 0 and "too few samples" in res.stdout, res.stdout


def test_runs_of_other_machines_or_thread_counts_are_refused(tmp_path):
    rows = _rows()
    a = _write(tmp_path / "a.jsonl", rows)
    other = copy.deepcopy(rows)
    for r in other:
        r["env"]["cpu"], r["env"]["cpu_isa"] = "Intel(R) Xeon(R) Processor", "avx512"
    res = _compare(a, _write(tmp_path / "b.jsonl", other))
    assert res.returncode == 2 and "not comparable" in res.stderr and "CPU model" in res.stderr, res.stderr
    assert "vector ISA: avx2 vs avx512" in res.stderr
    threads = copy.deepcopy(rows)
    for r in threads:
        r["threads"] = 2
    res = _compare(a, _write(tmp_path / "c.jsonl", threads))
    assert res.returncode == 2 and "thread count: 1 vs 2" in res.stderr, res.stderr
    res = _compare(a, str(tmp_path / "c.jsonl"), "--force")
    assert res.returncode in (0, 1) and "WARNING: compared although thread count" in res.stdout


def test_contended_rows_are_left_out_and_json_is_written(tmp_path):
    rows = _rows()
    a = _write(tmp_path / "a.jsonl", rows)
    b_rows = _slower(rows, 1.5)
    for r in b_rows:
        if r["backend"] == "numba":
            r["flags"] = ["contended"]
    res = _compare(a, _write(tmp_path / "b.jsonl", b_rows), "--json", "-")
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(res.stdout)
    assert data["regressions"] == 0 and data["excluded"] > 0
    assert {"layer", "case", "pass", "backend", "change_pct", "p_value", "verdict"} <= set(data["rows"][0])
    assert all(r["backend"] != "numba" for r in data["rows"])
