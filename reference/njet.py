"""Float64 reference of the N-Jet layer (reference/README.md section 5).

``forward`` builds the basis on ``scipy.special.eval_hermite`` and correlates with
``scipy.signal.correlate``; ``forward_numpy`` is the same sum in NumPy alone (the Hermite
recursion and ``_ops.correlate``), the cross-check of ``suites/test_reference.py``; the
gradients are analytic, in NumPy.
"""

import numpy as np

from . import _ops, _scipy
from .layers import LAYERS


def n_basis(order):
    """``J = (order+1)(order+2)/2``."""
    return (order + 1) * (order + 2) // 2


def default_radius(sigma, extent=2.0):
    """``ceil(k sigma)`` (N-Jet section III-C; the rule of ``LAYERS["njet"]``)."""
    return LAYERS["njet"].param("radius").radius_from(_ops.scalar(sigma), {"extent": extent})


def _full(radius):
    return (-radius, radius), (-radius, radius)


def basis(sigma, radius, order, absolute=False, win=None, hermite=None):
    """Basis filters ``B_j(t, u) = d_b(t) d_a(u)`` at the offsets ``win`` (default all) -> ``[J, kh, kw]``.

    ``hermite``: ``H_0..H_m`` evaluator of the signed basis (default ``_ops.hermite``, the NumPy
    recursion); the absolute basis always takes ``_ops.hermite``'s ``sum |terms|``."""
    rows, cols = win or _full(radius)
    d = _ops.gauss_derivs1d(_ops.scalar(sigma), radius, order, absolute, None if absolute else hermite)
    dr, dc = _ops.crop(d, radius, rows), _ops.crop(d, radius, cols)
    return np.stack([np.outer(dr[b], dc[a]) for a, b in _ops.njet_pairs(order)])


def basis_dsigma(sigma, radius, order, absolute=False, win=None):
    """``d B_j / d sigma``, radius fixed, at the offsets ``win`` -> ``[J, kh, kw]``."""
    rows, cols = win or _full(radius)
    d = _ops.gauss_derivs1d(_ops.scalar(sigma), radius, order, absolute)
    dd = _ops.gauss_derivs1d_dsigma(_ops.scalar(sigma), radius, order, absolute)
    dr, dc = _ops.crop(d, radius, rows), _ops.crop(d, radius, cols)
    ddr, ddc = _ops.crop(dd, radius, rows), _ops.crop(dd, radius, cols)
    return np.stack([np.outer(ddr[b], dc[a]) + np.outer(dr[b], ddc[a]) for a, b in _ops.njet_pairs(order)])


def _radius(sigma, radius, extent):
    return default_radius(sigma, extent) if radius is None else int(radius)


def _forward(hermite, correlate, x, alpha, sigma, bias, order, extent, radius, stride, absolute):
    if absolute:
        x, alpha, bias = (None if a is None else np.abs(a) for a in (x, alpha, bias))
    r = _radius(sigma, radius, extent)
    win = _ops.kernel_window(r, x.shape[2:], stride)
    dense = np.einsum("fsj,jtu->fstu", alpha, basis(sigma, r, order, absolute, win, hermite))
    y = correlate(x, dense, stride, win)
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def forward(x, alpha, sigma, bias=None, *, order, extent=2.0, radius=None, stride=1, groups=1, absolute=False):
    """``y = bias + correlate(x, sum_j alpha_j B_j)``, the Hermite factors by ``scipy.special``, the
    correlation by ``scipy.signal``.

    ``x [N,S,H,W]``, ``alpha [F,S,J]``, scalar ``sigma``, ``bias [F]`` -> ``[N,F,Ho,Wo]``.
    ``absolute``: the same sums with every term non-negative (``sum |terms|`` per output).
    """
    if groups > 1:
        hp = dict(order=order, extent=extent, radius=radius, stride=stride, absolute=absolute)
        return _ops.by_group(forward, groups, {"x": x, "alpha": alpha, "sigma": sigma, "bias": bias}, **hp)
    return _forward(_scipy.hermite, _scipy.correlate, x, alpha, sigma, bias, order, extent, radius, stride, absolute)


def forward_numpy(x, alpha, sigma, bias=None, *, order, extent=2.0, radius=None, stride=1, groups=1, absolute=False):
    """``forward`` in NumPy alone (the Hermite recursion of ``_ops.hermite``, ``_ops.correlate``)."""
    if groups > 1:
        hp = dict(order=order, extent=extent, radius=radius, stride=stride, absolute=absolute)
        return _ops.by_group(forward_numpy, groups, {"x": x, "alpha": alpha, "sigma": sigma, "bias": bias}, **hp)
    return _forward(_ops.hermite, _ops.correlate, x, alpha, sigma, bias, order, extent, radius, stride, absolute)


def backward(x, alpha, sigma, bias, dy, *, order, extent=2.0, radius=None, stride=1, groups=1, absolute=False):
    """Gradients of ``sum(dy * forward(...))`` for every argument -> dict."""
    if groups > 1:
        hp = dict(order=order, extent=extent, radius=radius, stride=stride, absolute=absolute)
        return _ops.by_group(backward, groups, {"x": x, "alpha": alpha, "sigma": sigma, "bias": bias, "dy": dy}, **hp)
    if absolute:
        x, alpha, bias, dy = (None if a is None else np.abs(a) for a in (x, alpha, bias, dy))
    r = _radius(sigma, radius, extent)
    win = _ops.kernel_window(r, x.shape[2:], stride)
    b = basis(sigma, r, order, absolute, win)
    dk = _ops.correlate_dkern(x, dy, win, stride)
    return {
        "x": _ops.correlate_dx(dy, np.einsum("fsj,jtu->fstu", alpha, b), stride, x.shape[2:], win),
        "alpha": np.einsum("fstu,jtu->fsj", dk, b),
        "sigma": np.asarray(np.einsum("fsj,fstu,jtu->", alpha, dk, basis_dsigma(sigma, r, order, absolute, win))),
        "bias": None if bias is None else dy.sum(axis=(0, 2, 3)),
    }
