"""Result files of schema 2 (the environment once per file, ``schema`` and ``env_id`` on every
row), files of schema 1 still loading, machine information that explains speed differences, and
``verdict.json`` for CI (issue 29, item 5)."""

import json
import os
import subprocess
import sys

from rfbench.harness import bench, env, fdcheck, results, runner
from rfbench.harness import cases as casegrid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lines(path):
    return [json.loads(x) for x in open(path).read().splitlines() if x.strip()]


def test_the_environment_is_written_once_per_file_and_every_row_points_to_it(tmp_path):
    path = str(tmp_path / "rows.jsonl")
    results.append(path, [{"kind": "speed", "backend": "a"}, {"kind": "speed", "backend": "b"}])
    results.append(path, [{"kind": "speed", "backend": "c"}])
    lines = _lines(path)
    assert [r["kind"] for r in lines] == ["env", "speed", "speed", "speed"]  # one env line, first
    eid = lines[0]["env_id"]
    assert lines[0]["schema"] == results.SCHEMA == 2 and lines[0]["env"]["cpu"]
    assert all(r["schema"] == 2 and r["env_id"] == eid and "env" not in r for r in lines[1:])
    rows = results.load([path])
    assert [r["backend"] for r in rows] == ["a", "b", "c"]  # the env line is not a row
    assert all(r["env"] == lines[0]["env"] and r["schema"] == 2 for r in rows)


def test_a_schema_1_file_with_the_environment_on_every_row_still_loads(tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"kind": "speed", "backend": "a", "env": {"machine": "box", "cpu": "X"}}) + "\n")
    (row,) = results.load([str(old)])
    assert row["schema"] == 1 and row["env"]["cpu"] == "X" and row["machine"] == "box"


def test_a_row_naming_an_environment_the_file_lacks_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"kind": "speed", "schema": 2, "env_id": "abc"}) + "\n")
    res = subprocess.run(
        [sys.executable, "-m", "rfbench", "report", str(bad), "--out", str(tmp_path / "rep")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "bad.jsonl:1: row names environment 'abc'" in res.stderr
    assert not (tmp_path / "rep").exists()


def test_superseded_rows_keep_the_environment_they_name(tmp_path):
    path = str(tmp_path / bench.RESULTS)
    row = {"kind": "speed", "layer": "acu", "case": "t", "pass": "forward", "device": "cpu", "dtype": "float32"}
    results.append(path, [{**row, "group": "old", "backend": "a"}])
    results.append(path, [{**row, "group": "new", "backend": "a"}])
    bench._retire(path, bench._row_slot(row), "new")
    (old,) = results.load([str(tmp_path / bench.SUPERSEDED)])
    assert old["group"] == "old" and old["env"]["cpu"]
    (new,) = results.load([path])
    assert new["group"] == "new" and new["env"]["cpu"]


def test_the_environment_names_what_explains_a_speed_difference():
    e = env.environment()
    for key in ("cpu", "cpu_isa", "torch_cpu_capability", "cpu_count", "memory_bytes", "cpu_mhz"):
        assert key in e, key
    assert e["memory_bytes"] is None or e["memory_bytes"] > 2**20
    assert set(e["cpu_mhz"]) == {"max", "now"}
    assert isinstance(e["numba_threading_layer"], str) and e["numba_threading_layer"]
    assert {"numba_vector_bits", "numba_slp", "ftz", "daz"} <= set(e["vector"])


def _report(tmp_path, rows_path):
    out = tmp_path / "rep"
    res = subprocess.run(
        [sys.executable, "-m", "rfbench", "report", str(rows_path), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    return json.loads((out / "verdict.json").read_text())


def test_verdict_json_says_pass_fail_or_not_measured_with_the_figures(tmp_path, seed):
    grid = [c for c in casegrid.grid("smoke") if c.name == "odd" and c.layer == "njet"]
    rows = runner.matrix(grid, ["torch-naive"], ["float64"], ["cpu"], seed=seed)
    good = tmp_path / "good.jsonl"
    results.append(str(good), rows)
    results.append(str(good), fdcheck.rows(seed, grid=[c for c in fdcheck.CASES if c.id == "njet-fd-stride2"]))
    doc = _report(tmp_path, good)
    q = doc["questions"]
    assert doc["schema"] == 2 and doc["machines"] and doc["files"] == [str(good)]
    assert q["agreement"]["outcome"] == "pass" and q["agreement"]["combinations"][0]["failed"] == 0
    assert q["gradients"]["outcome"] == "pass" and q["gradients"]["worst_backend"]["err_over_bound"] <= 1
    assert q["speed"]["outcome"] == "not measured" and q["speed"]["judged"] == 0
    assert doc["outcome"] == "not measured"  # nothing failed, speed was not measured
    bad_rows = [dict(r) for r in rows]
    bad_rows[0].update(status="fail", rel_err=1.0, bound_ratio=9.0)
    bad = tmp_path / "bad.jsonl"
    results.append(str(bad), bad_rows)
    doc = _report(tmp_path, bad)
    assert doc["questions"]["agreement"]["outcome"] == "fail" and doc["outcome"] == "fail"
    assert doc["questions"]["gradients"]["outcome"] in ("pass", "fail")
