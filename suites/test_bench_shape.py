"""``rfbench bench --layer L --shape N,S,F,H,W``: a user's own shape timed with the same backends,
baselines and cost model (gamma) as the paper case, its mistakes refused before torch loads with
the argument named (issue 29, item 6)."""

import os
import subprocess
import sys

import pytest

from rfbench.harness import bench, results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*argv, code=None):
    cmd = [sys.executable, "-m", "rfbench", "bench", *argv] if code is None else [sys.executable, "-c", code, *argv]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--shape", "2,8,16,16,16"], "--shape: needs --layer"),
        (["--layer", "dau", "--shape", "2,8,16,16"], "argument --shape: expected N,S,F,H,W: five integers >= 1"),
        (["--layer", "dau", "--shape", "2,8,x,16,16"], "argument --shape: expected N,S,F,H,W"),
        (["--layer", "acu", "--shape", "2,8,0,16,16"], "argument --shape: expected N,S,F,H,W"),
        (["--layer", "njet", "--shape", "1,2,3,4,5", "--units", "3"], "--units: njet has no such parameter"),
        (["--layer", "acu", "--shape", "1,2,3,4,5", "--order", "3"], "--order: acu has no such parameter"),
        (["--layer", "dau", "--units", "2"], "--layer: only with --shape N,S,F,H,W"),
        (["--units", "2"], "--units: only with --shape N,S,F,H,W"),
        (["--layer", "dau", "--shape", "1,2,3,4,5", "--units", "0"], "argument --units: expected an integer >= 1"),
        (["--layer", "dau", "--shape", "1,2,3,4,5", "--sigma", "0"], "argument --sigma: expected a finite number > 0"),
        (["--layer", "dau", "--shape", "1,2,3,4,5", "--spread", "nan"], "argument --spread: expected a finite"),
        (["--layer", "dau", "--shape", "1,2,3,4,5", "--cases", "paper"], "--shape: times one case of its own"),
        (
            ["--layer", "dau", "--shape", "1,4,6,4,5", "--groups", "4"],
            "--groups: expected a divisor of both S = 4 and F = 6",
        ),
        (["--layer", "acu", "--shape", "1,4,4,4,5", "--groups", "2"], "--groups: acu has no such parameter"),
    ],
)
def test_mistakes_are_one_line_usage_errors_before_torch(argv, says, tmp_path):
    code = (
        "import sys; from rfbench.harness import cli; rc = 0\n"
        "try:\n    rc = cli.main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
        "print('torch' in sys.modules); sys.exit(rc)"
    )
    res = _cli("bench", *argv, "--out", str(tmp_path / "o"), code=code)
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False"  # refused before torch was imported
    assert not (tmp_path / "o").exists()


def test_a_users_shape_is_timed_with_the_paper_baselines_and_gamma(tmp_path):
    argv = ["--layer", "dau", "--shape", "1,4,8,12,12", "--units", "2", "--spread", "4"]
    argv += ["--backends", "torch-naive", "torch-fast", "--threads", "1", "--reps", "3", "--budget", "1"]
    res = _cli(*argv, "--out", str(tmp_path))
    assert res.returncode == 0 or "NO SPEED RESULT" in res.stdout, res.stderr  # 1 only: all contended
    assert "speed sweep: your shape, dau-shape-1x4x8x12x12-spread4-units2 (1 cases x 3 passes)" in res.stdout
    rows = [r for r in results.load([str(tmp_path / bench.RESULTS)]) if r["status"] == "ok"]
    assert {r["pass"] for r in rows} == {"forward", "backward", "forward+backward"}
    assert {"torch-naive", "torch-fast", "conv2d-std"} <= {r["backend"] for r in rows}
    r = next(r for r in rows if r["backend"] == "torch-fast" and r["pass"] == "forward")
    assert (r["case_fields"]["n"], r["case_fields"]["s"], r["case_fields"]["f"]) == (1, 4, 8)
    assert r["case_fields"]["k"] == 2 and r["case_fields"]["spread"] == 4
    assert r["standard_side"] == 9 and r["paper_gamma"] == 81 / 8  # DAU IJCV Eq. 17 at K = 2, side 9
    assert r["model_gamma"] > 1 and r["speedups"]["torch-naive"] > 0 and r["speedups"]["conv2d-std"] > 0


def test_a_depthwise_shape_is_timed_against_a_depthwise_conv2d(tmp_path):
    argv = ["--layer", "dau", "--shape", "1,6,6,10,10", "--units", "2", "--spread", "2", "--groups", "6"]
    argv += ["--backends", "numba", "--threads", "1", "--reps", "3", "--budget", "1"]
    res = _cli(*argv, "--out", str(tmp_path))
    assert res.returncode == 0 or "NO SPEED RESULT" in res.stdout, res.stderr  # 1 only: all contended
    rows = [r for r in results.load([str(tmp_path / bench.RESULTS)]) if r["status"] == "ok"]
    assert {"numba", "torch-naive", "conv2d-std"} <= {r["backend"] for r in rows}
    assert all(r["case_fields"]["channel_groups"] == 6 for r in rows)
