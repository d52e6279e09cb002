"""The reference's analytic gradients against float64 central differences, and the bilinear
derivative rule at integer positions."""

import numpy as np
import pytest

from rfbench import reference
from rfbench.harness import cases, fdcheck

FD_CASES = [
    cases.Case("fd", "dau", n=2, s=2, f=2, h=5, w=6, k=2, sigma=0.8, spread=4.0, stride=1),
    cases.Case("fd-stride2", "dau", n=1, s=2, f=2, h=6, w=5, k=2, sigma=1.1, spread=3.0, stride=2, radius=2),
    cases.Case("fd-gauss", "dau", n=1, s=2, f=2, h=5, w=5, k=2, sigma=0.9, spread=3.0, mu_grad="gauss"),
    cases.Case("fd", "dau_gauss", n=2, s=2, f=2, h=5, w=6, k=2, sigma=0.9, spread=2.0, radius=3),
    cases.Case(
        "fd-per-unit", "dau_gauss", n=1, s=2, f=2, h=5, w=5, k=2, sigma=0.9, radius=2, per_unit_sigma=True, stride=2
    ),
    cases.Case("fd", "acu", n=2, s=2, f=2, h=5, w=6, k=4, spread=2.5),
    cases.Case("fd-groups", "acu", n=1, s=2, f=4, h=5, w=5, k=3, groups=2, stride=2),
    cases.Case("fd", "njet", n=2, s=2, f=2, h=6, w=5, order=3, sigma=1.2),
    cases.Case("fd-stride2", "njet", n=1, s=2, f=2, h=6, w=7, order=2, sigma=0.7, stride=2, radius=3),
]


def _away_from_integers(arrays, rng):
    """Keep positions at least 1e-3 from integers (finite differences straddle no kink)."""
    for name in ("mu_x", "mu_y", "pos_x", "pos_y"):
        if name in arrays:
            v = arrays[name]
            frac = v - np.floor(v)
            arrays[name] = np.floor(v) + np.clip(frac, 2e-3, 1 - 2e-3)
    return arrays


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("case", FD_CASES, ids=[c.id for c in FD_CASES])
def test_analytic_gradients_match_central_differences(case, seed):
    """Every element within the derived bound of reference/README.md section 10 (truncation
    estimated by Richardson, rounding of the loss over the step, rounding of the step): a fixed
    relative tolerance failed for some seeds where a gradient is small by cancellation (the dau
    stride-2 sigma gradient at 5e-7 relative error, err/bound < 1)."""
    checked = fdcheck.check(case, seed)
    if case.mu_grad == "gauss":  # Eq. 16 is not the derivative of this forward: check the exact part only
        checked = {k: v for k, v in checked.items() if k not in ("mu_x", "mu_y")}
    worst, ratio = {}, {}
    for name, (grad, fd, bound) in checked.items():
        diff = np.abs(grad - fd)
        worst[name] = _rel(grad, fd)
        ratio[name] = float(np.max(np.where(diff == 0, 0.0, diff / bound), initial=0.0))
    print(f"{case.id}: relative error vs central differences: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    assert max(ratio.values()) <= 1.0, {"err/bound": ratio, "relative": worst}
    assert max(worst.values()) < 1e-5, worst  # and the derivative is really measured, not just bounded


@pytest.mark.parametrize("layer", ["dau", "acu"])
def test_integer_positions_take_the_right_derivative(layer, seed):
    """At integer positions the gradient is the right derivative (floor held fixed, reference/README.md section 1):
    the forward is linear on [mu, mu+1), so a forward difference of step 0.5 is exact."""
    case = cases.Case("int", layer, n=1, s=2, f=2, h=6, w=6, k=3, spread=3.0, displace="integer", sigma=0.8)
    lay = reference.LAYERS[layer]
    arrays = case.arrays(seed)
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal(case.out_shape())
    grads = lay.backward(**arrays, dy=dy, **case.backward_hparams())
    loss = lambda a: np.sum(dy * lay.forward(**a, **case.hparams()))  # noqa: E731
    names = ("mu_x", "mu_y") if layer == "dau" else ("pos_x", "pos_y")
    for name in names:
        base = arrays[name]
        for idx in np.ndindex(base.shape):
            up, down = base.copy(), base.copy()
            up[idx] += 0.5
            down[idx] -= 0.5
            right = (loss({**arrays, name: up}) - loss(arrays)) / 0.5
            left = (loss(arrays) - loss({**arrays, name: down})) / 0.5
            assert grads[name][idx] == pytest.approx(right, rel=1e-9, abs=1e-9), (name, idx, left)


def test_magnitudes_bound_values():
    """Absolute mode returns sum|terms| >= |value| elementwise, for every output."""
    for case in FD_CASES:
        lay = reference.LAYERS[case.layer]
        arrays = case.arrays(3)
        dy = np.random.default_rng(3).standard_normal(case.out_shape())
        exact = {
            "forward": lay.forward(**arrays, **case.hparams()),
            **lay.backward(**arrays, dy=dy, **case.backward_hparams()),
        }
        mag = {
            "forward": lay.forward(**arrays, **case.hparams(), absolute=True),
            **lay.backward(**arrays, dy=dy, **case.backward_hparams(), absolute=True),
        }
        for k, v in exact.items():
            if v is not None:
                assert np.all(np.abs(v) <= mag[k] * (1 + 1e-12) + 1e-300), (case.id, k)
