"""The reference's central-difference check as result rows: every argument of every layer
passes its derived bound on fresh data, and a wrong gradient does not."""

import numpy as np
import pytest

from rfbench.harness import fdcheck, runner


@pytest.mark.parametrize("case", fdcheck.CASES, ids=[c.id for c in fdcheck.CASES])
def test_reference_gradients_pass_their_central_difference_bound(case, seed):
    rows = fdcheck.case_rows(case, seed)
    assert {r["output"] for r in rows} >= {"x", "bias"} and all(set(r) == set(runner.ROW_FIELDS) for r in rows)
    bad = [(r["output"], r["bound_ratio"], r["rel_err"]) for r in rows if r["status"] != "pass"]
    assert not bad, bad


def test_a_wrong_gradient_fails_its_bound(seed):
    case = next(c for c in fdcheck.CASES if c.id == "dau-fd")
    checked = fdcheck.check(case, seed)
    for name, (a, fd, bound) in checked.items():
        assert np.all(np.abs(a - fd) <= bound), name
        wrong = np.array(a, dtype=np.float64)
        wrong.flat[0] += 1e-3 * np.abs(fd).max()  # a relative error of 1e-3 in one element
        assert np.max(np.abs(wrong - fd) / bound) > 1, f"{name}: the bound does not catch a 1e-3 error"
