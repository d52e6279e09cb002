"""The speed cases as pytest-benchmark tests, grouped by case and pass:

    pytest suites/benchmarks --benchmark-json=out.json [--grid paper] [-k dau]

Each timed call synchronises the device inside the timed function, so CUDA times are
device times.  ``rfbench bench`` is the harness's own (interleaved, resumable) timer; this
suite is for people who live in pytest-benchmark.  Not part of the default test run.
"""

import pytest
import torch

from rfbench import impls
from rfbench.harness import bench, cases, costmodel, runner

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = [b for b in impls.BACKENDS if b != "reference"]


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        grid = metafunc.config.getoption("--grid")
        grid = "paper" if grid == "smoke" else grid
        cs = cases.grid(grid)
        metafunc.parametrize("case", cs, ids=[c.id for c in cs])
        metafunc.parametrize("pass_", costmodel.PASSES)
        metafunc.parametrize("backend", BACKENDS)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def test_speed(benchmark, case, pass_, backend):
    why = impls.BACKENDS[backend].refusal(case.layer, torch.device(DEVICE), torch.float32)
    if why:
        pytest.skip(f"{backend}: {why}")
    arrays = case.arrays(0)
    t = runner.tensors(case, arrays, "float32", DEVICE)
    dy = torch.randn(case.out_shape(), device=DEVICE)
    fn, setup = bench._callables(case, backend, t, dy, pass_)

    def timed(state=None):
        fn(state)
        _sync()

    benchmark.group = f"{case.id} {pass_}"
    benchmark.extra_info.update(costmodel.model(case, arrays, pass_), backend=backend, device=DEVICE)
    if setup:
        benchmark.pedantic(timed, setup=lambda: ((setup(),), {}), rounds=5, warmup_rounds=1)
    else:
        benchmark.pedantic(timed, rounds=5, warmup_rounds=1)
