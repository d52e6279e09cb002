"""Backend ``torch-fast``: what is specific to its paths, judged like the matrix (``harness.runner``:
the float64 reference and the derived rounding bound of reference/README.md section 9).

Its window reads (``_Windows``) chunk units and groups to a buffer budget and pad the planes by
margins capped at a window's span: the dau and acu cases run again with budgets of one element
and of a few windows, and with units spread far beyond a small image.  Every other case is the
correctness matrix's (``suites/test_matrix.py``)."""

from dataclasses import replace

import pytest
import torch

from rfbench import impls
from rfbench.harness import cases, runner

FAST = "torch-fast"


def _judge(case, dtype, seed):
    rows = runner.run_case(case, FAST, dtype, "cpu", seed)
    bad = [
        f"{r['output']}: {r['status']} err/bound={r['bound_ratio']} {r['reason']}"
        for r in rows
        if r["status"] != "pass"
    ]
    assert not bad, f"{case.id} {dtype} (seed {seed}, case {case.fields()}):\n" + "\n".join(bad)


def _spread(layer, stride, mu_grad="exact", spread=20.0):
    """Units spread up to ``spread`` pixels around a 7 x 6 image: window origins far off the planes."""
    return cases.Case(
        f"spread{spread:g}-s{stride}-{mu_grad}",
        layer,
        k=3,
        spread=spread,
        stride=stride,
        radius=2 if layer == "dau" else None,
        mu_grad=mu_grad,
        seed=40 + stride,
    )


SPREAD = [_spread("dau", st, mg) for st in (1, 2) for mg in ("exact", "gauss")] + [_spread("acu", st) for st in (1, 2)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", SPREAD, ids=[c.id for c in SPREAD])
def test_units_far_around_the_image(case, dtype, seed):
    _judge(case, dtype, seed)


def _chunked():
    """The smoke grid's dau and acu cases with data (a batch), plus the gauss-gradient case at stride 2."""
    grid = [c for c in cases.grid("smoke") if c.layer in ("dau", "acu") and c.n and c.name != "pixel"]
    return grid + [replace(c, name=c.name + "-stride2", stride=2) for c in grid if c.name == "gauss-grad"]


@pytest.mark.parametrize("budget", [1, 2000])
def test_chunks(monkeypatch, budget, seed):
    """Tiny buffer budgets: chunks over groups and units (dau), over synapses (acu)."""
    from rfbench.impls.backends import torch_fast

    monkeypatch.setattr(torch_fast, "_BUDGET", budget)
    for case in _chunked():
        _judge(case, "float64", seed)


def test_channels_last_x_gives_the_same_result():
    """A channels-last ``x`` (issue 19 item 3: N, S > 1) gives the output and gradients of a contiguous one."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    alpha = torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
    sigma = torch.tensor(1.1, dtype=torch.float64)
    out = []
    for xi in (x, x.contiguous(memory_format=torch.channels_last)):
        ts = [t.clone().requires_grad_() for t in (xi, alpha, sigma)]
        y = impls.njet_conv2d(*ts, order=2, backend=FAST)
        out.append([y, *torch.autograd.grad(y, ts, torch.ones_like(y))])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def test_one_element_sigma():
    """A ``[1]`` sigma gets a ``[1]`` gradient equal to that of the 0-d case."""
    g = torch.Generator().manual_seed(9)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x, w, mx, my = r(1, 2, 5, 4), r(2, 2, 2), 3 * r(2, 2, 2), 3 * r(2, 2, 2)
    calls = [
        (impls.dau_conv2d, (x, w, mx, my), {"blur_radius": 2}),
        (impls.dau_gauss_conv2d, (x, w, mx, my), {"radius": 2}),
        (impls.njet_conv2d, (x, r(2, 2, 3)), {"order": 1}),
    ]
    for fn, args, kw in calls:
        grads = []
        for sigma in (torch.tensor(0.9, dtype=torch.float64), torch.tensor([0.9], dtype=torch.float64)):
            ts = [a.clone().requires_grad_() for a in (*args, sigma)]
            y = fn(*ts, **kw, backend=FAST)
            grads.append((y, torch.autograd.grad(y, ts[-1], torch.ones_like(y))[0]))
        (y0, g0), (y1, g1) = grads
        assert torch.equal(y0, y1)
        assert g1.shape == (1,) and torch.allclose(g1, g0.reshape(1), rtol=1e-14)
