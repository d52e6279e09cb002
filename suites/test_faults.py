"""Faults around ``rfbench bench``, each reproduced with a real process: kill -9 at random
moments, SIGTERM, a torn last line, a group missing a row, a full disk and a read-only folder.
Nothing measured may be lost or counted twice, a group counts only when it is complete, and
every output fault ends with one line, a documented exit status and a file that resume accepts."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rfbench.harness import bench, results

ROOT = Path(__file__).resolve().parents[1]
# A tiny grid: the acu and njet cases of the smoke grid named "odd", two backends, quick groups.
ARGS = ["--grid", "smoke", "--layers", "acu", "njet", "--cases", "odd", "--backends", "torch-naive", "torch-fast"]
ARGS += ["--threads", "1", "--reps", "3", "--budget", "0.5"]
GROUPS = 6  # 2 cases x 3 passes


def _cmd(out, *extra):
    return [sys.executable, "-m", "harness.cli", "bench", *ARGS, "--out", str(out), *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _run(out, timeout=300):
    return subprocess.run(_cmd(out), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


def _done(res):
    """Finished: exit 0, or 1 with NO SPEED RESULT only (every group contended on a loaded test machine)."""
    return res.returncode == 0 or (res.returncode == 1 and "NO SPEED RESULT" in res.stdout)


def _groups(out):
    rows = results.load([str(Path(out) / bench.RESULTS)], say=lambda m: None)
    groups = {}
    for r in rows:
        groups.setdefault((r["layer"], r["case"], r["pass"]), {}).setdefault(r["group"], []).append(r["backend"])
    return groups


def _complete(out):
    """Every (case, pass) has exactly one group, and that group a row per promised backend."""
    groups = _groups(out)
    assert len(groups) == GROUPS, sorted(groups)
    for slot, by_group in groups.items():
        assert len(by_group) == 1, (slot, by_group)  # superseded rows moved out, none duplicated
        (backends,) = by_group.values()
        assert sorted(backends) == ["torch-fast", "torch-naive"], (slot, backends)


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random()
    for _ in range(3):
        proc = subprocess.Popen(_cmd(tmp_path), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(2.0, 8.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    res = _run(tmp_path)
    assert _done(res), res.stderr
    _complete(tmp_path)


def test_sigterm_ends_like_ctrl_c(tmp_path):
    proc = subprocess.Popen(
        _cmd(tmp_path), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for _ in range(600):  # until the first group is written: the process is past its imports
        time.sleep(0.1)
        if (tmp_path / bench.RESULTS).exists() or proc.poll() is not None:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "rerun the same command" in err
    res = _run(tmp_path)
    assert _done(res), res.stderr
    _complete(tmp_path)


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    assert _done(_run(tmp_path))
    path = tmp_path / bench.RESULTS
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # the last row torn in half
    rep = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(tmp_path), "--out", str(tmp_path / "rep")],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert rep.returncode == 0 and "torn last line skipped" in rep.stderr, rep.stderr
    res = _run(tmp_path)
    assert _done(res), res.stderr
    assert "dropped a torn last line" in res.stdout
    assert "1 measured" in res.stdout and "measured again: incomplete" in res.stdout
    _complete(tmp_path)


def test_a_group_missing_a_row_is_measured_again(tmp_path):
    assert _done(_run(tmp_path))
    path = tmp_path / bench.RESULTS
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    victim = next(r for r in rows if r.get("backend") == "torch-fast")  # not the env line
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r is not victim))
    res = _run(tmp_path)
    assert _done(res), res.stderr
    assert "5 group(s) reused, 1 measured (1 measured again: incomplete (no row for torch-fast))" in res.stdout
    _complete(tmp_path)


def _mount(where, *opts):
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(opts), "tmpfs", str(where)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or 'mount failed'}): needs root")


def _umount(where):
    subprocess.run(["umount", str(where)], capture_output=True)


def test_full_disk_ends_with_one_line_and_a_file_resume_accepts(tmp_path):
    disk = tmp_path / "disk"
    _mount(disk, "size=24k")
    try:
        res = _run(disk)
        assert res.returncode == 3, res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert "cannot write results to" in last and "No space left on device" in last, res.stderr
        assert "Traceback" not in res.stderr
        rows = results.load([str(disk / bench.RESULTS)])  # whole groups only: every line parses
        assert all(r["kind"] == "speed" for r in rows)
        kept = _groups(disk)
    finally:
        _umount(disk)
    assert all(len(b) == 1 for b in kept.values())


def test_read_only_output_is_refused_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    _mount(ro, "size=64k", "ro")
    try:
        t0 = time.monotonic()
        res = _run(ro / "results")
        assert res.returncode == 2 and "cannot write this folder (Read-only file system)" in res.stderr, res.stderr
        assert time.monotonic() - t0 < 30 and "speed sweep" not in res.stdout  # refused before measuring
    finally:
        _umount(ro)
