"""Float64 reference of the N-Jet layer (SPEC section 5)."""

import math

import numpy as np

from . import _ops


def n_basis(order):
    """``J = (order+1)(order+2)/2``."""
    return (order + 1) * (order + 2) // 2


def default_radius(sigma, extent=2.0):
    """``ceil(k sigma)`` (N-Jet section III-C)."""
    return int(math.ceil(extent * _ops.scalar(sigma)))


def basis(sigma, radius, order, absolute=False):
    """Basis filters ``B_j(t, u) = d_b(t) d_a(u)`` -> ``[J, 2r+1, 2r+1]``."""
    d = _ops.gauss_derivs1d(_ops.scalar(sigma), radius, order, absolute)
    return np.stack([np.outer(d[b], d[a]) for a, b in _ops.njet_pairs(order)])


def basis_dsigma(sigma, radius, order, absolute=False):
    """``d B_j / d sigma``, radius fixed -> ``[J, 2r+1, 2r+1]``."""
    d = _ops.gauss_derivs1d(_ops.scalar(sigma), radius, order, absolute)
    dd = _ops.gauss_derivs1d_dsigma(_ops.scalar(sigma), radius, order, absolute)
    return np.stack([np.outer(dd[b], d[a]) + np.outer(d[b], dd[a]) for a, b in _ops.njet_pairs(order)])


def _radius(sigma, radius, extent):
    return default_radius(sigma, extent) if radius is None else int(radius)


def forward(x, alpha, sigma, bias=None, *, order, extent=2.0, radius=None, stride=1, absolute=False):
    """``y = bias + correlate(x, sum_j alpha_j B_j)``.

    ``x [N,S,H,W]``, ``alpha [F,S,J]``, scalar ``sigma``, ``bias [F]`` -> ``[N,F,Ho,Wo]``.
    """
    if absolute:
        x, alpha, bias = (None if a is None else np.abs(a) for a in (x, alpha, bias))
    r = _radius(sigma, radius, extent)
    dense = np.einsum("fsj,jtu->fstu", alpha, basis(sigma, r, order, absolute))
    y = _ops.correlate(x, dense, stride)
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def backward(x, alpha, sigma, bias, dy, *, order, extent=2.0, radius=None, stride=1, absolute=False):
    """Gradients of ``sum(dy * forward(...))`` for every argument -> dict."""
    if absolute:
        x, alpha, bias, dy = (None if a is None else np.abs(a) for a in (x, alpha, bias, dy))
    r = _radius(sigma, radius, extent)
    b = basis(sigma, r, order, absolute)
    dk = _ops.correlate_dkern(x, dy, r, stride)
    return {
        "x": _ops.correlate_dx(dy, np.einsum("fsj,jtu->fstu", alpha, b), stride, x.shape[2:]),
        "alpha": np.einsum("fstu,jtu->fsj", dk, b),
        "sigma": np.asarray(np.einsum("fsj,fstu,jtu->", alpha, dk, basis_dsigma(sigma, r, order, absolute))),
        "bias": None if bias is None else dy.sum(axis=(0, 2, 3)),
    }
