"""Properties that tie the layers to each other and to textbook operations, on every
backend that runs float64 on the CPU."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as tnf
from scipy import ndimage

from rfbench import impls

# Our backends (every layer); a peer runs only the layers its mapping expresses and is judged by the matrix.
CPU64 = [
    b
    for b, rec in impls.BACKENDS.items()
    if rec.origin == "ours" and rec.refusal("acu", torch.device("cpu"), torch.float64) is None
]


def _t(a, grad=False):
    return torch.from_numpy(np.asarray(a, dtype=np.float64).copy()).requires_grad_(grad)


@pytest.mark.parametrize("backend", CPU64)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [1, 2])
def test_acu_on_the_integer_grid_is_a_3x3_convolution(backend, stride, dilation, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((5, 3, 3, 3))
    grid = [(t, u) for t in (-1, 0, 1) for u in (-1, 0, 1)]  # row-major, as weight.reshape
    py = _t([dilation * t for t, _ in grid])
    px = _t([dilation * u for _, u in grid])
    y = impls.acu_conv2d(_t(x), _t(w.reshape(5, 3, 9)), px, py, stride=stride, backend=backend)
    want = tnf.conv2d(_t(x), _t(w), stride=stride, padding=dilation, dilation=dilation)
    assert y.shape == want.shape
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU64)
def test_dau_with_integer_mu_and_large_blur_is_dau_gauss(backend, seed):
    """With integer displacements the bilinear shift is exact; with windows that hold the whole
    Gaussian (8 sigma) both normalisations are 1 to rounding, so the forward and every gradient
    of ``dau`` (``mu_grad="gauss"``, DAU IJCV Eq. 16) equal those of ``dau_gauss``."""
    rng = np.random.default_rng(seed)
    sig = 0.9
    rb = math.ceil(8 * sig)
    args = [
        _t(rng.standard_normal((2, 3, 8, 7)), True),
        _t(rng.standard_normal((4, 3, 2)), True),
        _t(rng.integers(-3, 4, (4, 3, 2)), True),
        _t(rng.integers(-3, 4, (4, 3, 2)), True),
        _t(sig, True),
    ]
    y = impls.dau_conv2d(*args, blur_radius=rb, mu_grad="gauss", backend=backend)
    gauss = impls.dau_gauss_conv2d(*args, radius=rb + 3, backend=backend)
    torch.testing.assert_close(y, gauss, rtol=1e-12, atol=1e-12)
    dy = torch.from_numpy(rng.standard_normal(tuple(y.shape)))
    for a, b in zip(torch.autograd.grad(y, args, dy), torch.autograd.grad(gauss, args, dy)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", CPU64)
@pytest.mark.parametrize("stride", [1, 2])
def test_njet_order0_is_a_gaussian_blur(backend, stride, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 11, 9))
    sig, r = 1.3, 3
    alpha = np.eye(3)[:, :, None]  # output channel f = blurred input channel f
    y = impls.njet_conv2d(_t(x), _t(alpha), sig, order=0, radius=r, stride=stride, backend=backend)
    e = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sig**2))
    g = e / e.sum()
    want = ndimage.correlate1d(ndimage.correlate1d(x, g, axis=2, mode="constant"), g, axis=3, mode="constant")
    torch.testing.assert_close(y, _t(want[:, :, ::stride, ::stride]), rtol=1e-12, atol=1e-12)
