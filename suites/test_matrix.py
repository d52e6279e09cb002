"""The correctness matrix: registry x layers x dtypes x devices x cases, forward and every
gradient compared with the float64 reference under the rounding-bound policy of
``harness.metrics``.  Backends that cannot run a request are skipped with their reason."""

import pytest

from rfbench import impls
from rfbench.harness import cases, runner

DTYPES = ("float32", "float64")


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        grid = cases.grid(metafunc.config.getoption("--grid"))
        metafunc.parametrize("case", grid, ids=[c.id for c in grid])
        metafunc.parametrize("backend", list(impls.BACKENDS))
        metafunc.parametrize("dtype", DTYPES)
        metafunc.parametrize("device", runner.devices())


def test_matrix(case, backend, dtype, device, seed):
    rows = runner.run_case(case, backend, dtype, device, seed)
    if rows[0]["status"] == "skip":
        pytest.skip(f"{backend}: {rows[0]['reason']}")
    bad = [r for r in rows if r["status"] != "pass"]
    detail = "\n".join(
        f"  {r['output']}: {r['status']} rel_err={r['rel_err']} err/bound={r['bound_ratio']} {r['reason']}" for r in bad
    )
    assert not bad, f"{case.id} on {backend} {dtype} {device} (seed {seed}, case {case.fields()}):\n{detail}"
