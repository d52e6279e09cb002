"""Float64 reference of the DAU layers (SPEC sections 2 and 3): forward and analytic gradients.

Written to be read, not to be fast: one loop iteration per (n, s, f, k).
"""

import math

import numpy as np

from . import _ops


def _absolute(*arrays):
    return [None if a is None else np.abs(a) for a in arrays]


def default_blur_radius(sigma):
    """``ceil(3 sigma)`` (SPEC section 2)."""
    return int(math.ceil(3.0 * _ops.scalar(sigma)))


def forward(x, weight, mu_x, mu_y, sigma, bias=None, *, stride=1, blur_radius=None, absolute=False):
    """Efficient-form DAU (IJCV Eq. 13-14): blur with ``G`` then sample at ``(i*s + mu_y, j*s + mu_x)``.

    ``x [N,S,H,W]``, ``weight, mu_x, mu_y [F,S,K]``, scalar ``sigma``, ``bias [F]`` -> ``[N,F,Ho,Wo]``.
    """
    if absolute:
        x, weight, bias = _absolute(x, weight, bias)
    sigma = _ops.scalar(sigma)
    r = default_blur_radius(sigma) if blur_radius is None else int(blur_radius)
    n, s_, h, w = x.shape
    f_, _, k_ = weight.shape
    shape = (_ops.out_size(h, stride), _ops.out_size(w, stride))
    g = _ops.gauss1d(sigma, r)
    blur = np.outer(g, g)
    y = np.zeros((n, f_) + shape)
    for ni in range(n):
        for si in range(s_):
            c = _ops.blur_full(x[ni, si], blur)
            for fi in range(f_):
                for ki in range(k_):
                    y[ni, fi] += weight[fi, si, ki] * _ops.sample(
                        c, mu_y[fi, si, ki], mu_x[fi, si, ki], stride, shape, origin=r
                    )
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def backward(x, weight, mu_x, mu_y, sigma, bias, dy, *, stride=1, blur_radius=None, mu_grad="exact", absolute=False):
    """Gradients of ``sum(dy * forward(...))`` for every argument -> dict.

    ``mu_grad="exact"`` differentiates the bilinear sampling (SPEC section 1);
    ``mu_grad="gauss"`` is DAU IJCV Eq. 16: sample ``x * Dx`` / ``x * Dy`` instead.
    ``sigma``'s gradient holds ``blur_radius`` fixed and differentiates the normalised ``G``.
    """
    if absolute:
        x, weight, bias, dy = _absolute(x, weight, bias, dy)
    sigma = _ops.scalar(sigma)
    r = default_blur_radius(sigma) if blur_radius is None else int(blur_radius)
    n, s_, h, w = x.shape
    f_, _, k_ = weight.shape
    shape = dy.shape[2:]
    g = _ops.gauss1d(sigma, r)
    dg = _ops.gauss1d_dsigma(sigma, r, absolute)
    blur = np.outer(g, g)
    blur_ds = np.outer(dg, g) + np.outer(g, dg)
    # Dx(t, u) = (u / sigma^2) g(t) g(u); Dy(t, u) = (t / sigma^2) g(t) g(u)  (SPEC section 2)
    gu = _ops.taps1d(r) / max(sigma, _ops.SIGMA_FLOOR) ** 2 * g
    if absolute:
        gu = np.abs(gu)
    blur_dx, blur_dy = np.outer(g, gu), np.outer(gu, g)
    canvas = (h + 2 * r, w + 2 * r)

    gx = np.zeros_like(x)
    gw, gmx, gmy = np.zeros_like(weight), np.zeros_like(weight), np.zeros_like(weight)
    gsigma = 0.0
    for ni in range(n):
        for si in range(s_):
            c = _ops.blur_full(x[ni, si], blur)
            cs = _ops.blur_full(x[ni, si], blur_ds)
            if mu_grad == "gauss":
                cx, cy = _ops.blur_full(x[ni, si], blur_dx), _ops.blur_full(x[ni, si], blur_dy)
            back = np.zeros(canvas)
            for fi in range(f_):
                d = dy[ni, fi]
                for ki in range(k_):
                    pt = (mu_y[fi, si, ki], mu_x[fi, si, ki], stride, shape)
                    wk = weight[fi, si, ki]
                    gw[fi, si, ki] += np.sum(d * _ops.sample(c, *pt, origin=r))
                    gsigma += wk * np.sum(d * _ops.sample(cs, *pt, origin=r))
                    if mu_grad == "gauss":
                        gmx[fi, si, ki] += wk * np.sum(d * _ops.sample(cx, *pt, origin=r))
                        gmy[fi, si, ki] += wk * np.sum(d * _ops.sample(cy, *pt, origin=r))
                    else:
                        gmx[fi, si, ki] += wk * np.sum(d * _ops.sample_ddx(c, *pt, origin=r, absolute=absolute))
                        gmy[fi, si, ki] += wk * np.sum(d * _ops.sample_ddy(c, *pt, origin=r, absolute=absolute))
                    back += wk * _ops.sample_adjoint(d, *pt[:3], canvas, origin=r)
            gx[ni, si] = _ops.blur_full_adjoint(back, blur)
    return {
        "x": gx,
        "weight": gw,
        "mu_x": gmx,
        "mu_y": gmy,
        "sigma": np.asarray(gsigma),
        "bias": None if bias is None else dy.sum(axis=(0, 2, 3)),
    }


# ---------------------------------------------------------------- Gaussian-kernel form (SPEC section 3)


def _unit_kernels(mu_x, mu_y, sigma, radius, absolute=False):
    """Normalised unit Gaussians ``Gk [F,S,K,2R+1,2R+1]`` and their derivatives in mu_x, mu_y, sigma.

    Separable with a square window, so ``Gk(t, u) = gy(t) gx(u)`` with each factor normalised
    over its axis (SPEC section 3), and the derivatives follow by the product rule.
    """
    gx, gx_mu, gx_s = _ops.gauss_axis(mu_x, sigma, radius, absolute)
    gy, gy_mu, gy_s = _ops.gauss_axis(mu_y, sigma, radius, absolute)

    def outer(a, b):
        return a[..., :, None] * b[..., None, :]

    return outer(gy, gx), outer(gy, gx_mu), outer(gy_mu, gx), outer(gy_s, gx) + outer(gy, gx_s)


def _dense(weight, gk):
    return np.einsum("fsk,fsktu->fstu", weight, gk)


def gauss_forward(x, weight, mu_x, mu_y, sigma, bias=None, *, radius, stride=1, absolute=False):
    """``dau_gauss``: correlate with ``W = sum_k weight Gk`` of side ``2R+1``. Shapes as ``forward``;
    ``sigma`` is a scalar or ``[F,S,K]``."""
    if absolute:
        x, weight, bias = _absolute(x, weight, bias)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), weight.shape)
    gk = _unit_kernels(mu_x, mu_y, sig, int(radius))[0]
    y = _ops.correlate(x, _dense(weight, gk), stride)
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def gauss_backward(x, weight, mu_x, mu_y, sigma, bias, dy, *, radius, stride=1, absolute=False):
    """Exact gradients of ``dau_gauss`` for every argument -> dict (``sigma``'s in its own shape)."""
    if absolute:
        x, weight, bias, dy = _absolute(x, weight, bias, dy)
    sigma = np.asarray(sigma, dtype=np.float64)
    sig = np.broadcast_to(sigma, weight.shape)
    gk, gmx, gmy, gs = _unit_kernels(mu_x, mu_y, sig, int(radius), absolute)
    dense = _dense(weight, gk)
    dk = _ops.correlate_dkern(x, dy, int(radius), stride)  # dL/dW [F,S,t,u]
    gsig = weight * np.einsum("fstu,fsktu->fsk", dk, gs)
    return {
        "x": _ops.correlate_dx(dy, dense, stride, x.shape[2:]),
        "weight": np.einsum("fstu,fsktu->fsk", dk, gk),
        "mu_x": weight * np.einsum("fstu,fsktu->fsk", dk, gmx),
        "mu_y": weight * np.einsum("fstu,fsktu->fsk", dk, gmy),
        "sigma": gsig.sum().reshape(sigma.shape) if sigma.ndim < 3 else gsig,
        "bias": None if bias is None else dy.sum(axis=(0, 2, 3)),
    }
