"""``rfbench gpu-run --rehearse``: the GPU driver run on the CPU, in full, with its budget cut
short, and with a step killed mid-way; what it writes parses and ``rfbench report`` reads it.
Also the TF32 rule (the matrix runs with TF32 off and restores the settings), the conv2d-std
variants, and the cupy source that CuPy's cache keys on."""

import json
import time
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rfbench.harness import gpurun

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _jsonl(path):
    """Result rows of a file, without its environment lines (schema 2: ``{"kind": "env"}``)."""
    with open(path) as fh:
        return [r for r in (json.loads(line) for line in fh if line.strip()) if r.get("kind") != "env"]


def _check_files(out):
    names = set(os.listdir(out))
    assert names <= set(gpurun.FILES.values()), names - set(gpurun.FILES.values())
    assert len(names) <= 8
    for n in names:
        assert (out / n).stat().st_size < 16 * 2**20
        if n.endswith(".jsonl"):
            _jsonl(out / n)  # every line parses
    return {r["step"]: r for r in _jsonl(out / gpurun.FILES["steps"])}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpurun")
    res = _cli("gpu-run", "--rehearse", "--out", str(out), "--budget-s", "400")
    return out, res


def test_rehearsal_runs_every_step(rehearsal):
    out, res = rehearsal
    assert res.returncode == 0, res.stdout + res.stderr
    steps = _check_files(out)
    assert list(steps) == list(gpurun.NAMES)
    assert all(s["status"] == "ok" for s in steps.values()), steps
    extra = _jsonl(out / "extra.jsonl")
    # every part that needs a GPU says so, with its reason
    skipped = {r["part"]: r["reason"] for r in extra if r.get("kind") == "gpurun"}
    assert "no CUDA device" in skipped["numba-cuda, cupy"] and "no CUDA device" in skipped["Nsight Compute"]
    assert {r["backend"] for r in extra if r.get("kind") == "warmup"} == set(gpurun.REHEARSAL_BACKENDS)
    det = [r for r in extra if r.get("kind") == "determinism"]
    assert det and all(r["identical"] for r in det)
    env = json.loads((out / "env.json").read_text())
    assert env["rehearse"] is True and "numba-cuda" in env["checks"]
    matrix = _jsonl(out / "matrix.jsonl")
    assert matrix and all(r["status"] == "pass" for r in matrix)
    assert all(r["precision"]["tf32_conv"] is False and r["precision"]["tf32_matmul"] is False for r in matrix)
    speed = [r for r in _jsonl(out / "bench.jsonl") if r["status"] == "ok"]
    assert {r["case"] for r in speed} >= {"paper"} and all("precision" in r for r in speed)
    summary = (out / "summary.md").read_text()
    assert "## Steps" in summary and "bench-sweep" in summary and "Paper-case speed" in summary


def test_rehearsal_makes_a_report(rehearsal, tmp_path):
    out, _ = rehearsal
    res = _cli("report", str(out), "--out", str(tmp_path / "rep"))
    assert res.returncode == 0, res.stderr
    assert "Agreement:" in res.stdout and (tmp_path / "rep" / "report.html").exists()


def test_short_budget_skips_steps_and_says_why(tmp_path):
    res = _cli("gpu-run", "--rehearse", "--out", str(tmp_path), "--budget-s", "30")
    assert res.returncode == 1  # steps left out for time: not a complete run
    steps = _check_files(tmp_path)
    assert steps["probe"]["status"] == "ok"
    skipped = [s for s in steps.values() if s["status"] == "skipped"]
    assert skipped and all(s["reason"].startswith("estimate") and "left" in s["reason"] for s in skipped)
    assert "skipped" in (tmp_path / "summary.md").read_text()


def test_step_killed_keeps_going(tmp_path):
    """bench-paper capped at 0.3 s: killed while it starts (importing torch alone takes longer);
    the step is marked timeout, the steps after it still run, and the report reads the folder."""
    steps_ = ["probe", "bench-paper", "determinism"]
    res = _cli(
        "gpu-run",
        "--rehearse",
        "--out",
        str(tmp_path),
        "--budget-s",
        "200",
        "--steps",
        *steps_,
        "--limit",
        "bench-paper=0.3",
    )
    steps = _check_files(tmp_path)
    assert list(steps) == steps_
    assert steps["bench-paper"]["status"] == "timeout", steps["bench-paper"]
    assert steps["determinism"]["status"] == "ok"
    assert res.returncode == 1
    rep = _cli("report", str(tmp_path), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 0, rep.stderr


def test_step_deadline_stops_the_sweep(tmp_path, capsys):
    """The bench steps hand the child's deadline (time.time()) to the sweep (time.monotonic()):
    with 10 s left, the sweep's deadline (10 s kept back) is now, so it starts no group and says so
    (a deadline on the wrong clock never fires and every group would run)."""
    from rfbench.harness import gpurun

    ctx = gpurun.Ctx(str(tmp_path), "cpu", True, time.time() + 10.0, (), 0)
    gpurun.step_bench_paper(ctx)
    out = capsys.readouterr().out
    assert "0 measured" in out and "left unmeasured at the deadline" in out, out


def test_warmup_hang_leaves_the_backend_out(tmp_path):
    rows = [
        {"kind": "warmup", "backend": "cupy", "layer": "dau", "dtype": "float32", "status": "running"},
        {"kind": "warmup", "backend": "numba-cuda", "layer": "dau", "dtype": "float32", "status": "running"},
        {"kind": "warmup", "backend": "numba-cuda", "layer": "dau", "dtype": "float32", "status": "ok"},
        {"kind": "warmup", "backend": "torch-fast", "layer": "dau", "dtype": "float32", "status": "running"},
        {"kind": "warmup", "backend": "torch-fast", "layer": "dau", "dtype": "float32", "status": "error"},
    ]
    (tmp_path / "extra.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn')
    assert gpurun._broken(str(tmp_path)) == ["cupy", "torch-fast"]


def test_cli_refuses_bad_requests(tmp_path):
    res = _cli("gpu-run", "--out", str(tmp_path))
    assert res.returncode == 2 and "no CUDA device" in res.stderr  # without --rehearse on a CPU machine
    res = _cli("gpu-run", "--rehearse", "--out", str(tmp_path), "--limit", "nosuch=3")
    assert res.returncode == 2 and "step 'nosuch' unknown" in res.stderr


# ---------------------------------------------------------------- TF32, baselines, cupy sources


def test_matrix_runs_with_tf32_off_and_restores(monkeypatch):
    """The float32 bounds are FP32 rounding bounds: run_case turns TF32 off around the backend
    call and its backward, and restores what it found, also after an error."""
    import torch

    from rfbench import impls
    from rfbench.harness import cases, precision, runner

    seen = []
    real = runner.call

    def spy(case, backend, t, op=None):
        seen.append(precision.state())
        return real(case, backend, t, op)

    monkeypatch.setattr(runner, "call", spy)
    case = next(c for c in cases.grid("smoke") if c.layer == "acu")
    with precision.fp32(True):
        before = precision.state()
        assert before["tf32_conv"] and before["tf32_matmul"]
        rows = runner.run_case(case, "torch-naive", "float32")
        assert precision.state() == before
    assert seen and not seen[0]["tf32_conv"] and not seen[0]["tf32_matmul"]
    assert all(r["precision"]["tf32_conv"] is False for r in rows)

    def boom(case, backend, t):
        raise RuntimeError("backend failed")

    monkeypatch.setattr(runner, "call", boom)
    with precision.fp32(True):
        rows = runner.run_case(case, "torch-naive", "float32")
        assert rows[0]["status"] == "error" and precision.state()["tf32_conv"]
    assert impls is not None and torch is not None


def test_std_variants_only_on_cuda_float32():
    from rfbench.harness import baselines

    assert baselines.std_variants("cpu", "float32") == (baselines.STD,)
    assert baselines.std_variants("cuda", "float64") == (baselines.STD,)
    assert set(baselines.std_variants("cuda", "float32")) == set(baselines.STD_VARIANTS)
    assert baselines.precision_of(baselines.STD_TF32, "float32") == "tf32"
    assert baselines.precision_of(baselines.STD_BF16, "float32") == "bfloat16"
    assert baselines.precision_of("cupy", "float32") == "float32"


def test_cupy_source_pastes_includes(tmp_path):
    """CuPy's disk cache keys a module on its source text: an edit of an included file must change it."""
    from rfbench.impls.backends.cuda import cupy_prims as cupy_cuda

    for name in cupy_cuda.MODULES:
        text = cupy_cuda.source(name)
        assert '#include "' not in text and "RF_COMMON_CU" in text
    src = Path(cupy_cuda.__file__).parent
    for f in src.glob("*.cu"):
        (tmp_path / f.name).write_text(f.read_text())
    before = cupy_cuda.source("dau", tmp_path)
    (tmp_path / "common.cu").write_text((tmp_path / "common.cu").read_text() + "\n// edited\n")
    assert cupy_cuda.source("dau", tmp_path) != before


@pytest.mark.parametrize("name", ["passes", "dau", "acu", "dau_fwd"])
def test_cupy_modules_compile_with_nvrtc(name):
    """Each module compiles with NVRTC exactly as CuPy compiles it on a GPU (its -ftz=true and
    every name expression included), for sm_90, without a device."""
    pytest.importorskip("cupy", reason="cupy is not installed (the gpu extra)")
    from rfbench.impls.backends.cuda import cupy_prims as cupy_cuda

    try:
        cupy_cuda.nvrtc_compile(name)
    except OSError as exc:  # cupy installed without its NVRTC library
        pytest.skip(f"NVRTC not loadable: {exc}")


def test_ftz_floor_follows_the_backend():
    """CuPy compiles with -ftz=true (float32 subnormals flush to 0 on the GPU): the tolerance floor
    of such a backend uses the smallest normal 2^-126 instead of eta = 2^-150, and nothing else."""
    import math

    import torch

    from rfbench import impls
    from rfbench.harness import cases, metrics

    case = next(c for c in cases.grid("smoke") if c.layer == "dau")
    arrays = case.arrays(0)
    dy = arrays["x"][:, :1].repeat(case.f, 1)  # any array of the output's magnitude
    plain = metrics.floor(case, "forward", arrays, dy, "float32")
    flushed = metrics.floor(case, "forward", arrays, dy, "float32", ftz=True)
    assert flushed == math.ldexp(plain, -126 + 150)
    assert metrics.floor(case, "forward", arrays, dy, "float64", ftz=True) == metrics.floor(
        case, "forward", arrays, dy, "float64"
    )
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert impls.BACKENDS["cupy"].flushes_subnormals(cuda, torch.float32)
    assert not impls.BACKENDS["cupy"].flushes_subnormals(cuda, torch.float64)
    assert not impls.BACKENDS["cupy"].flushes_subnormals(cpu, torch.float32)
    assert not any(b.flushes_subnormals(cuda, torch.float32) for n, b in impls.BACKENDS.items() if n != "cupy")
