"""Float64 reference of the DAU layers (reference/README.md sections 2 and 3): forward and analytic gradients.

The forward passes are built on SciPy (``reference._scipy``: the blur and the bilinear samples
by ``scipy.ndimage``, the dense correlation by ``scipy.signal``); ``forward_numpy`` and
``gauss_forward_numpy`` are the same sums written with NumPy alone, kept as an independent
cross-check (``suites/test_reference.py``).  The gradients are analytic, in NumPy.  Written to
be read, not to be fast: one loop iteration per (n, s, f, k).
"""

import numpy as np

from . import _ops, _scipy
from .layers import LAYERS


def _absolute(*arrays):
    return [None if a is None else np.abs(a) for a in arrays]


def default_blur_radius(sigma):
    """``ceil(3 sigma)`` (reference/README.md section 2; the rule of ``LAYERS["dau"]``)."""
    return LAYERS["dau"].param("blur_radius").radius_from(_ops.scalar(sigma), {})


def _window(mu_y, mu_x, stride, shape, hw, r):
    """The part of the blurred canvas the units ``mu_y, mu_x [F, K]`` of one input channel sample:
    ``(rows, cols, origin)``, inclusive coordinate ranges and the canvas index of coordinate 0."""
    rows = _ops.sample_window(np.floor(mu_y), stride, shape[0], hw[0], r)
    cols = _ops.sample_window(np.floor(mu_x), stride, shape[1], hw[1], r)
    return rows, cols, (-rows[0], -cols[0])


def forward(x, weight, mu_x, mu_y, sigma, bias=None, *, stride=1, blur_radius=None, groups=1, absolute=False):
    """Efficient-form DAU (IJCV Eq. 13-14): blur with ``G`` then sample at ``(i*s + mu_y, j*s + mu_x)``.

    ``x [N,S,H,W]``, ``weight, mu_x, mu_y [F,S,K]``, scalar ``sigma``, ``bias [F]`` -> ``[N,F,Ho,Wo]``.
    ``absolute``: the same sums over ``|x|``, ``|weight|``, ``|bias|`` (every term non-negative:
    ``sum |terms|`` per output, the scale of the rounding bound, reference/README.md section 9).
    The blur and the samples are SciPy's (``reference._scipy``).
    """
    if groups > 1:
        return _ops.by_group(
            forward,
            groups,
            {"x": x, "weight": weight, "mu_x": mu_x, "mu_y": mu_y, "sigma": sigma, "bias": bias},
            stride=stride,
            blur_radius=blur_radius,
            absolute=absolute,
        )
    if absolute:
        x, weight, bias = _absolute(x, weight, bias)
    sigma = _ops.scalar(sigma)
    r = default_blur_radius(sigma) if blur_radius is None else int(blur_radius)
    n, s_, h, w = x.shape
    f_, _, k_ = weight.shape
    shape = (_ops.out_size(h, stride), _ops.out_size(w, stride))
    g = _ops.gauss1d(sigma, r)
    y = np.zeros((n, f_) + shape)
    for si in range(s_):
        rows = _scipy.window(mu_y[:, si], stride, shape[0], h, r)
        cols = _scipy.window(mu_x[:, si], stride, shape[1], w, r)
        for ni in range(n):
            canvas, origin = _scipy.blur(x[ni, si], g, rows, cols)
            for fi in range(f_):
                for ki in range(k_):
                    y[ni, fi] += weight[fi, si, ki] * _scipy.sample(
                        canvas, origin, mu_y[fi, si, ki], mu_x[fi, si, ki], stride, shape
                    )
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def forward_numpy(x, weight, mu_x, mu_y, sigma, bias=None, *, stride=1, blur_radius=None, groups=1, absolute=False):
    """``forward`` in NumPy alone (the blur on the sampled window, the four corners read and weighed)."""
    if groups > 1:
        hp = dict(stride=stride, blur_radius=blur_radius, absolute=absolute)
        return _ops.by_group(
            forward_numpy,
            groups,
            {"x": x, "weight": weight, "mu_x": mu_x, "mu_y": mu_y, "sigma": sigma, "bias": bias},
            **hp,
        )
    if absolute:
        x, weight, bias = _absolute(x, weight, bias)
    sigma = _ops.scalar(sigma)
    r = default_blur_radius(sigma) if blur_radius is None else int(blur_radius)
    n, s_, h, w = x.shape
    f_, _, k_ = weight.shape
    shape = (_ops.out_size(h, stride), _ops.out_size(w, stride))
    g = _ops.gauss1d(sigma, r)
    y = np.zeros((n, f_) + shape)
    for si in range(s_):
        rows, cols, origin = _window(mu_y[:, si], mu_x[:, si], stride, shape, (h, w), r)
        for ni in range(n):
            c = _ops.blur_window(x[ni, si], g, g, rows, cols)
            for fi in range(f_):
                for ki in range(k_):
                    y[ni, fi] += weight[fi, si, ki] * _ops.sample(
                        c, mu_y[fi, si, ki], mu_x[fi, si, ki], stride, shape, origin=origin
                    )
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def backward(
    x, weight, mu_x, mu_y, sigma, bias, dy, *, stride=1, blur_radius=None, mu_grad="exact", groups=1, absolute=False
):
    """Gradients of ``sum(dy * forward(...))`` for every argument -> dict.

    ``mu_grad="exact"`` differentiates the bilinear sampling (reference/README.md section 1);
    ``mu_grad="gauss"`` is DAU IJCV Eq. 16: sample ``x * Dx`` / ``x * Dy`` instead.
    ``sigma``'s gradient holds ``blur_radius`` fixed and differentiates the normalised ``G``.
    """
    if groups > 1:
        hp = dict(stride=stride, blur_radius=blur_radius, mu_grad=mu_grad, absolute=absolute)
        return _ops.by_group(
            backward,
            groups,
            {"x": x, "weight": weight, "mu_x": mu_x, "mu_y": mu_y, "sigma": sigma, "bias": bias, "dy": dy},
            **hp,
        )
    if absolute:
        x, weight, bias, dy = _absolute(x, weight, bias, dy)
    sigma = _ops.scalar(sigma)
    r = default_blur_radius(sigma) if blur_radius is None else int(blur_radius)
    n, s_, h, w = x.shape
    f_, _, k_ = weight.shape
    shape = dy.shape[2:]
    g = _ops.gauss1d(sigma, r)
    dg = _ops.gauss1d_dsigma(sigma, r, absolute)
    # Dx(t, u) = (u / sigma^2) g(t) g(u); Dy(t, u) = (t / sigma^2) g(t) g(u)  (reference/README.md section 2)
    gu = _ops.taps1d(r) / max(sigma, _ops.SIGMA_FLOOR) ** 2 * g
    if absolute:
        gu = np.abs(gu)

    gx = np.zeros_like(x)
    gw, gmx, gmy = np.zeros_like(weight), np.zeros_like(weight), np.zeros_like(weight)
    gsigma = 0.0
    for si in range(s_):
        rows, cols, origin = _window(mu_y[:, si], mu_x[:, si], stride, shape, (h, w), r)
        canvas = (rows[1] - rows[0] + 1, cols[1] - cols[0] + 1)
        for ni in range(n):
            a = x[ni, si]
            c = _ops.blur_window(a, g, g, rows, cols)
            # blur with dG/dsigma = outer(dg, g) + outer(g, dg)
            cs = _ops.blur_window(a, dg, g, rows, cols) + _ops.blur_window(a, g, dg, rows, cols)
            if mu_grad == "gauss":
                cx, cy = _ops.blur_window(a, g, gu, rows, cols), _ops.blur_window(a, gu, g, rows, cols)
            back = np.zeros(canvas)
            for fi in range(f_):
                d = dy[ni, fi]
                for ki in range(k_):
                    pt = (mu_y[fi, si, ki], mu_x[fi, si, ki], stride, shape)
                    wk = weight[fi, si, ki]
                    gw[fi, si, ki] += np.sum(d * _ops.sample(c, *pt, origin=origin))
                    gsigma += wk * np.sum(d * _ops.sample(cs, *pt, origin=origin))
                    if mu_grad == "gauss":
                        gmx[fi, si, ki] += wk * np.sum(d * _ops.sample(cx, *pt, origin=origin))
                        gmy[fi, si, ki] += wk * np.sum(d * _ops.sample(cy, *pt, origin=origin))
                    else:
                        gmx[fi, si, ki] += wk * np.sum(d * _ops.sample_ddx(c, *pt, origin=origin, absolute=absolute))
                        gmy[fi, si, ki] += wk * np.sum(d * _ops.sample_ddy(c, *pt, origin=origin, absolute=absolute))
                    back += wk * _ops.sample_adjoint(d, *pt[:3], canvas, origin=origin)
            gx[ni, si] = _ops.blur_window_adjoint(back, g, g, rows, cols, (h, w))
    return {
        "x": gx,
        "weight": gw,
        "mu_x": gmx,
        "mu_y": gmy,
        "sigma": np.asarray(gsigma),
        "bias": None if bias is None else dy.sum(axis=(0, 2, 3)),
    }


# ---------------------------------------------------------------- Gaussian-kernel form (reference/README.md section 3)


def _unit_kernels(mu_x, mu_y, sigma, radius, win, absolute=False):
    """Normalised unit Gaussians ``Gk [F,S,K,kh,kw]`` and their derivatives in mu_x, mu_y, sigma,
    at the offsets ``win = (rows, cols)`` (``_ops.kernel_window``).

    Separable with a square window, so ``Gk(t, u) = gy(t) gx(u)`` with each factor normalised
    over its axis (all ``2R+1`` taps; reference/README.md section 3), and the derivatives follow by the product rule.
    """
    gx, gx_mu, gx_s = (_ops.crop(v, radius, win[1]) for v in _ops.gauss_axis(mu_x, sigma, radius, absolute))
    gy, gy_mu, gy_s = (_ops.crop(v, radius, win[0]) for v in _ops.gauss_axis(mu_y, sigma, radius, absolute))

    def outer(a, b):
        return a[..., :, None] * b[..., None, :]

    return outer(gy, gx), outer(gy, gx_mu), outer(gy_mu, gx), outer(gy_s, gx) + outer(gy, gx_s)


def _dense(weight, gk):
    return np.einsum("fsk,fsktu->fstu", weight, gk)


def _gauss_forward(correlate, x, weight, mu_x, mu_y, sigma, bias, radius, stride, absolute):
    if absolute:
        x, weight, bias = _absolute(x, weight, bias)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), weight.shape)
    win = _ops.kernel_window(int(radius), x.shape[2:], stride)
    gk = _unit_kernels(mu_x, mu_y, sig, int(radius), win)[0]
    y = correlate(x, _dense(weight, gk), stride, win)
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def gauss_forward(x, weight, mu_x, mu_y, sigma, bias=None, *, radius, stride=1, groups=1, absolute=False):
    """``dau_gauss``: correlate with ``W = sum_k weight Gk`` of side ``2R+1`` (``scipy.signal.correlate``).
    Shapes as ``forward``; ``sigma`` is a scalar or ``[F,S,K]``."""
    if groups > 1:
        return _ops.by_group(
            gauss_forward,
            groups,
            {"x": x, "weight": weight, "mu_x": mu_x, "mu_y": mu_y, "sigma": sigma, "bias": bias},
            radius=radius,
            stride=stride,
            absolute=absolute,
        )
    return _gauss_forward(_scipy.correlate, x, weight, mu_x, mu_y, sigma, bias, radius, stride, absolute)


def gauss_forward_numpy(x, weight, mu_x, mu_y, sigma, bias=None, *, radius, stride=1, groups=1, absolute=False):
    """``gauss_forward`` with the correlation in NumPy alone (``_ops.correlate``)."""
    if groups > 1:
        hp = dict(radius=radius, stride=stride, absolute=absolute)
        return _ops.by_group(
            gauss_forward_numpy,
            groups,
            {"x": x, "weight": weight, "mu_x": mu_x, "mu_y": mu_y, "sigma": sigma, "bias": bias},
            **hp,
        )
    return _gauss_forward(_ops.correlate, x, weight, mu_x, mu_y, sigma, bias, radius, stride, absolute)


def gauss_backward(x, weight, mu_x, mu_y, sigma, bias, dy, *, radius, stride=1, groups=1, absolute=False):
    """Exact gradients of ``dau_gauss`` for every argument -> dict (``sigma``'s in its own shape)."""
    if groups > 1:
        hp = dict(radius=radius, stride=stride, absolute=absolute)
        return _ops.by_group(
            gauss_backward,
            groups,
            {"x": x, "weight": weight, "mu_x": mu_x, "mu_y": mu_y, "sigma": sigma, "bias": bias, "dy": dy},
            **hp,
        )
    if absolute:
        x, weight, bias, dy = _absolute(x, weight, bias, dy)
    sigma = np.asarray(sigma, dtype=np.float64)
    sig = np.broadcast_to(sigma, weight.shape)
    win = _ops.kernel_window(int(radius), x.shape[2:], stride)
    gk, gmx, gmy, gs = _unit_kernels(mu_x, mu_y, sig, int(radius), win, absolute)
    dense = _dense(weight, gk)
    dk = _ops.correlate_dkern(x, dy, win, stride)  # dL/dW [F,S,t,u]
    gsig = weight * np.einsum("fstu,fsktu->fsk", dk, gs)
    return {
        "x": _ops.correlate_dx(dy, dense, stride, x.shape[2:], win),
        "weight": np.einsum("fstu,fsktu->fsk", dk, gk),
        "mu_x": weight * np.einsum("fstu,fsktu->fsk", dk, gmx),
        "mu_y": weight * np.einsum("fstu,fsktu->fsk", dk, gmy),
        "sigma": gsig.sum().reshape(sigma.shape) if sigma.ndim < 3 else gsig,
        "bias": None if bias is None else dy.sum(axis=(0, 2, 3)),
    }
