"""The speed sweep is resumable: an interrupted run keeps its finished groups and a rerun
measures only the missing ones.  Also: the cost model reproduces the paper's gamma."""

import pytest

from harness import bench, cases, costmodel, results


def _tiny():
    return [
        cases.Case("tiny", "acu", n=1, s=2, f=2, h=6, w=6, k=3, seed=1),
        cases.Case("tiny", "njet", n=1, s=2, f=2, h=6, w=6, order=1, sigma=0.7, seed=2),
    ]


def test_interrupted_sweep_resumes_with_only_the_missing_groups(tmp_path):
    grid = _tiny()
    calls = []

    def stop_after_two(i, total):
        calls.append(i)
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bench.sweep(grid, ["torch-naive"], "cpu", "float32", str(tmp_path), reps=3, progress=stop_after_two, budget_s=1)
    path = tmp_path / bench.RESULTS
    first = results.load([str(path)])
    assert len(first) == 2  # two finished groups of one backend
    rows, done = bench.sweep(grid, ["torch-naive"], "cpu", "float32", str(tmp_path), reps=3, budget_s=1)
    assert done == 2 and len(rows) == 2 * 3 - 2
    every = results.load([str(path)])
    keys = [(r["layer"], r["case"], r["pass"], r["backend"]) for r in every]
    assert len(keys) == len(set(keys)) == 6
    assert all(r["env"]["torch"] and r["median_s"] > 0 and len(r["samples_s"]) >= 3 for r in every)
    again, done = bench.sweep(grid, ["torch-naive"], "cpu", "float32", str(tmp_path), reps=3, budget_s=1)
    assert again == [] and done == 6


def test_cost_model_reproduces_the_paper_gamma():
    """DAU IJCV Eq. 17: K = 2 units replacing a 9 x 9 kernel: gamma = 81 / 8 = 10.125."""
    assert costmodel.paper_gamma(9, 2) == 10.125
    case = cases.grid("paper", ["dau"])[0]
    model = costmodel.model(case, case.arrays(), "forward")
    assert model["standard_side"] == 9 and model["paper_gamma"] == 10.125


def test_model_gamma_is_the_ratio_of_the_cost_columns():
    case = cases.grid("paper", ["dau"])[0]
    arrays = case.arrays()
    for p in costmodel.PASSES:
        m = costmodel.model(case, arrays, p)
        kh, kw = m["kernel_naive"]
        n, f_, ho, wo = case.out_shape()
        if p == "forward":
            assert m["macs_naive"] == n * ho * wo * f_ * case.s * kh * kw
            blur = n * case.h * case.w * case.s * 2 * (2 * case.resolved_radius() + 1)
            assert m["macs_efficient"] == 4 * n * ho * wo * f_ * case.s * case.k + blur
        assert m["model_gamma"] == pytest.approx(m["macs_naive"] / m["macs_efficient"])
