"""Backend ``torch-fast`` against the float64 reference: forward and every gradient, small cases."""

import pytest
import torch

from rfbench import impls
from rfbench import reference

FAST, REF = "torch-fast", "reference"


def _rel(a, b):
    """Relative norm error of ``a`` against the truth ``b``."""
    a, b = a.detach().double(), b.detach().double()
    den = b.norm()
    return float((a - b).norm() / den) if den > 0 else float(a.norm())


def _run(fn, args, kw, backend, dtype):
    """Output and gradients of ``sum(dy * fn(...))`` w.r.t. every tensor argument (seeded ``dy``)."""
    ts = {k: (None if v is None else v.to(dtype).requires_grad_()) for k, v in args.items()}
    y = fn(**ts, **kw, backend=backend)
    g = torch.Generator().manual_seed(7)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(dtype)
    names = [k for k, v in ts.items() if v is not None]
    grads = torch.autograd.grad(y, [ts[k] for k in names], dy, allow_unused=True)
    return y, dict(zip(names, grads))


def _compare(fn, args, kw, tol64=1e-12, tol32=2e-5, scale32=None):
    """Relative errors of torch-fast (float64, float32) against the reference; ``scale32`` maps a gradient
    name to the magnitude its float32 absolute error is measured against (for sums that cancel)."""
    y_ref, g_ref = _run(fn, args, kw, REF, torch.float64)
    errs = {}
    for dtype, tol in ((torch.float64, tol64), (torch.float32, tol32)):
        y, g = _run(fn, args, kw, FAST, dtype)
        assert y.dtype == dtype and y.shape == y_ref.shape
        errs[(dtype, "y")] = _rel(y, y_ref)
        for k, v in g_ref.items():
            assert g[k] is not None and g[k].shape == v.shape, k
            errs[(dtype, k)] = _rel(g[k], v)
            if dtype == torch.float32 and k in (scale32 or {}):
                errs[(dtype, k)] = float((g[k].double() - v).norm()) / scale32[k]
        bad = {k: e for k, e in errs.items() if k[0] == dtype and not e < tol}
        assert not bad, bad
    return errs


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _units(g, f, s, k, lim):
    shape = (f, s, k)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    mx = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * lim
    my = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * lim
    return w, mx, my


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mu_grad", ["exact", "gauss"])
@pytest.mark.parametrize("lim", [6.0, 20.0])
def test_dau(stride, mu_grad, lim):
    g = _gen(1)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    w, mx, my = _units(g, 4, 3, 3, lim)
    mx[0, 0, 0] = 2.0  # an integer displacement: right derivative
    args = {
        "x": x,
        "weight": w,
        "mu_x": mx,
        "mu_y": my,
        "sigma": torch.tensor(0.8, dtype=torch.float64),
        "bias": torch.randn(4, generator=g, dtype=torch.float64),
    }
    _compare(impls.dau_conv2d, args, {"stride": stride, "blur_radius": 2, "mu_grad": mu_grad})


def test_dau_far_and_tiny():
    g = _gen(2)
    x = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64)
    w, mx, my = _units(g, 3, 2, 2, 3.0)
    mx[0, 0, 0], my[1, 1, 1] = 40.3, -41.7  # far outside the 5x5 image
    mx[2, 0, 1] = 6.5  # partial read of the canvas
    args = {"x": x, "weight": w, "mu_x": mx, "mu_y": my, "sigma": torch.tensor(1.2, dtype=torch.float64), "bias": None}
    _compare(impls.dau_conv2d, args, {"stride": 3, "blur_radius": 3})
    x1 = torch.randn(2, 2, 1, 1, generator=g, dtype=torch.float64)
    args.update(x=x1)
    _compare(impls.dau_conv2d, args, {"stride": 1, "blur_radius": 0})


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("per_unit", [False, True])
def test_dau_gauss(stride, per_unit):
    g = _gen(3)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    w, mx, my = _units(g, 4, 3, 3, 2.5)
    sig = 0.5 + torch.rand(4, 3, 3, generator=g, dtype=torch.float64) if per_unit else torch.tensor(0.9)
    args = {
        "x": x,
        "weight": w,
        "mu_x": mx,
        "mu_y": my,
        "sigma": sig.double(),
        "bias": torch.randn(4, dtype=torch.float64),
    }
    _compare(impls.dau_gauss_conv2d, args, {"radius": 3, "stride": stride})


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("groups", [0, 1, 2])
def test_acu(stride, groups):
    g = _gen(4)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    shape = (5,) if groups == 0 else (groups, 5)
    px = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * 4
    py = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * 4
    px.view(-1)[0], py.view(-1)[1] = 1.0, -9.5  # an integer position; a far one
    args = {"x": x, "weight": w, "pos_x": px, "pos_y": py, "bias": torch.randn(4, generator=g, dtype=torch.float64)}
    _compare(impls.acu_conv2d, args, {"stride": stride})


@pytest.mark.parametrize("order", [0, 1, 2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_njet(order, stride):
    g = _gen(5)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    j = (order + 1) * (order + 2) // 2
    args = {
        "x": x,
        "alpha": torch.randn(4, 3, j, generator=g, dtype=torch.float64),
        "sigma": torch.tensor(1.3, dtype=torch.float64),
        "bias": torch.randn(4, generator=g, dtype=torch.float64),
    }
    kw = {"order": order, "radius": 3, "stride": stride}
    # sigma's gradient cancels (order 3: |grad| ~ 0.2 of sum |terms|); float32 is judged against sum |terms|.
    y = impls.njet_conv2d(**args, **kw, backend=REF)
    dy = torch.randn(y.shape, generator=_gen(7), dtype=torch.float64).numpy()
    npa = {k: None if v is None else v.numpy() for k, v in args.items()}
    terms = reference.njet.backward(**npa, dy=dy, **kw, absolute=True)["sigma"]
    _compare(impls.njet_conv2d, args, kw, scale32={"sigma": float(terms)})


def test_njet_large_radius():
    g = _gen(6)
    x = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64)
    args = {
        "x": x,
        "alpha": torch.randn(2, 2, 6, generator=g, dtype=torch.float64),
        "sigma": torch.tensor(2.0, dtype=torch.float64),
        "bias": None,
    }
    _compare(impls.njet_conv2d, args, {"order": 2, "radius": 5, "stride": 3})


def _empty_cases():
    x = torch.zeros(0, 3, 5, 4, dtype=torch.float64)
    w = torch.randn(2, 3, 2, dtype=torch.float64)
    mu = torch.full((2, 3, 2), 0.5, dtype=torch.float64)
    sig = torch.tensor(0.7, dtype=torch.float64)
    b = torch.zeros(2, dtype=torch.float64)
    return [
        (impls.dau_conv2d, {"x": x, "weight": w, "mu_x": mu, "mu_y": -mu, "sigma": sig, "bias": b}, {"blur_radius": 2}),
        (
            impls.dau_gauss_conv2d,
            {"x": x, "weight": w, "mu_x": mu, "mu_y": -mu, "sigma": sig, "bias": b},
            {"radius": 2},
        ),
        (impls.acu_conv2d, {"x": x, "weight": w, "pos_x": mu[0, 0], "pos_y": -mu[0, 0], "bias": b}, {}),
        (
            impls.njet_conv2d,
            {"x": x, "alpha": torch.randn(2, 3, 3, dtype=torch.float64), "sigma": sig, "bias": b},
            {"order": 1},
        ),
    ]


@pytest.mark.parametrize("case", range(4))
def test_empty_batch(case):
    fn, args, kw = _empty_cases()[case]
    y, g = _run(fn, args, kw, FAST, torch.float64)
    assert y.shape[0] == 0
    for k, v in g.items():
        assert v.shape == args[k].shape, k
        assert not v.abs().sum() if v.numel() else True


def test_non_contiguous_x():
    g = _gen(8)
    x = torch.randn(2, 6, 7, 3, generator=g, dtype=torch.float64).transpose(1, 3)  # [2, 3, 7, 6]
    w, mx, my = _units(g, 2, 3, 2, 3.0)
    args = {"x": x, "weight": w, "mu_x": mx, "mu_y": my, "sigma": torch.tensor(0.6, dtype=torch.float64), "bias": None}
    _compare(impls.dau_conv2d, args, {"stride": 2})
    args = {"x": x, "weight": w, "pos_x": mx[0, 0], "pos_y": my[0, 0], "bias": None}
    _compare(impls.acu_conv2d, args, {"stride": 1})
    xl = x.contiguous(memory_format=torch.channels_last)  # issue 19 item 3: N, S > 1
    args = {
        "x": xl,
        "alpha": torch.randn(4, 3, 6, generator=g, dtype=torch.float64),
        "sigma": torch.tensor(1.1, dtype=torch.float64),
    }
    _compare(impls.njet_conv2d, {**args, "bias": None}, {"order": 2, "stride": 1})


def test_one_element_sigma():
    """A ``[1]`` sigma gets a ``[1]`` gradient equal to that of the 0-d case."""
    g = _gen(9)
    x = torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64)
    w, mx, my = _units(g, 2, 2, 2, 3.0)
    cases = [
        (impls.dau_conv2d, {"x": x, "weight": w, "mu_x": mx, "mu_y": my, "bias": None}, {"blur_radius": 2}),
        (impls.dau_gauss_conv2d, {"x": x, "weight": w, "mu_x": mx, "mu_y": my, "bias": None}, {"radius": 2}),
        (
            impls.njet_conv2d,
            {"x": x, "alpha": torch.randn(2, 2, 3, generator=g, dtype=torch.float64), "bias": None},
            {"order": 1},
        ),
    ]
    for fn, args, kw in cases:
        y0, g0 = _run(fn, dict(args, sigma=torch.tensor(0.9, dtype=torch.float64)), kw, FAST, torch.float64)
        y1, g1 = _run(fn, dict(args, sigma=torch.tensor([0.9], dtype=torch.float64)), kw, FAST, torch.float64)
        assert torch.equal(y0, y1)
        assert g1["sigma"].shape == (1,) and torch.allclose(g1["sigma"], g0["sigma"].reshape(1), rtol=1e-14)


@pytest.mark.parametrize("budget", [1, 2000])
def test_chunks(monkeypatch, budget):
    """Tiny buffer budgets: chunks over groups and units (dau), over synapses (acu)."""
    import rfbench.impls.backends.torch_fast as tf

    monkeypatch.setattr(tf, "_BUDGET", budget)
    g = _gen(10)
    x = torch.randn(2, 3, 6, 5, generator=g, dtype=torch.float64)
    w, mx, my = _units(g, 4, 3, 2, 4.0)
    args = {"x": x, "weight": w, "mu_x": mx, "mu_y": my, "sigma": torch.tensor(0.7, dtype=torch.float64), "bias": None}
    for stride in (1, 2):
        for mu_grad in ("exact", "gauss"):
            _compare(impls.dau_conv2d, args, {"stride": stride, "blur_radius": 2, "mu_grad": mu_grad})
    args = {"x": x, "weight": w, "pos_x": mx[:2, 0], "pos_y": my[:2, 0], "bias": None}
    _compare(impls.acu_conv2d, args, {"stride": 1})
