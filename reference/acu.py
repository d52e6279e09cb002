"""Float64 reference of the ACU layer (reference/README.md section 4, ACU Eq. 3-5 and 10-14).

``forward`` samples with SciPy (``reference._scipy.sample``); ``forward_numpy`` is the same sum
in NumPy alone, the cross-check of ``suites/test_reference.py``; the gradients are analytic.
"""

import numpy as np

from . import _ops, _scipy


def _groups(pos_x, pos_y, f_):
    """Positions as ``[P, K]`` and the group of each output channel."""
    px, py = np.atleast_2d(pos_x), np.atleast_2d(pos_y)
    p_ = px.shape[0]
    return px, py, np.arange(f_) // (f_ // p_)


def forward(x, weight, pos_x, pos_y, bias=None, *, stride=1, absolute=False):
    """``y = bias + sum_{s,k} weight x<i*s + pos_y, j*s + pos_x>`` (the samples by ``scipy.ndimage``).

    ``x [N,S,H,W]``, ``weight [F,S,K]``, ``pos_x, pos_y [K]`` or ``[P,K]``, ``bias [F]`` -> ``[N,F,Ho,Wo]``.
    ``absolute``: the same sums over ``|x|``, ``|weight|``, ``|bias|`` (``sum |terms|`` per output).
    """
    if absolute:
        x, weight, bias = (None if a is None else np.abs(a) for a in (x, weight, bias))
    n, s_, h, w = x.shape
    f_, _, k_ = weight.shape
    px, py, grp = _groups(pos_x, pos_y, f_)
    shape = (_ops.out_size(h, stride), _ops.out_size(w, stride))
    y = np.zeros((n, f_) + shape)
    for ni in range(n):
        for si in range(s_):
            canvas, origin = _scipy.plane(x[ni, si])
            for gi in range(px.shape[0]):
                for ki in range(k_):
                    v = _scipy.sample(canvas, origin, py[gi, ki], px[gi, ki], stride, shape)
                    for fi in np.flatnonzero(grp == gi):
                        y[ni, fi] += weight[fi, si, ki] * v
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def forward_numpy(x, weight, pos_x, pos_y, bias=None, *, stride=1, absolute=False):
    """``forward`` in NumPy alone (the four corners read and weighed, ``_ops.sample``)."""
    if absolute:
        x, weight, bias = (None if a is None else np.abs(a) for a in (x, weight, bias))
    n, s_, h, w = x.shape
    f_, _, k_ = weight.shape
    px, py, grp = _groups(pos_x, pos_y, f_)
    shape = (_ops.out_size(h, stride), _ops.out_size(w, stride))
    y = np.zeros((n, f_) + shape)
    for ni in range(n):
        for si in range(s_):
            for fi in range(f_):
                for ki in range(k_):
                    p, q = py[grp[fi], ki], px[grp[fi], ki]
                    y[ni, fi] += weight[fi, si, ki] * _ops.sample(x[ni, si], p, q, stride, shape)
    if bias is not None:
        y += bias[None, :, None, None]
    return y


def backward(x, weight, pos_x, pos_y, bias, dy, *, stride=1, absolute=False):
    """Gradients of ``sum(dy * forward(...))`` for every argument -> dict (positions in their own shape)."""
    if absolute:
        x, weight, bias, dy = (None if a is None else np.abs(a) for a in (x, weight, bias, dy))
    n, s_, h, w = x.shape
    f_, _, k_ = weight.shape
    px, py, grp = _groups(pos_x, pos_y, f_)
    shape = dy.shape[2:]
    gx, gw = np.zeros_like(x), np.zeros_like(weight)
    gpx, gpy = np.zeros_like(px), np.zeros_like(py)
    for ni in range(n):
        for si in range(s_):
            a = x[ni, si]
            for fi in range(f_):
                d = dy[ni, fi]
                for ki in range(k_):
                    gi = grp[fi]
                    pt = (py[gi, ki], px[gi, ki], stride, shape)
                    wk = weight[fi, si, ki]
                    gw[fi, si, ki] += np.sum(d * _ops.sample(a, *pt))
                    gpx[gi, ki] += wk * np.sum(d * _ops.sample_ddx(a, *pt, absolute=absolute))
                    gpy[gi, ki] += wk * np.sum(d * _ops.sample_ddy(a, *pt, absolute=absolute))
                    gx[ni, si] += wk * _ops.sample_adjoint(d, *pt[:3], (h, w))
    return {
        "x": gx,
        "weight": gw,
        "pos_x": gpx.reshape(np.shape(pos_x)),
        "pos_y": gpy.reshape(np.shape(pos_y)),
        "bias": None if bias is None else dy.sum(axis=(0, 2, 3)),
    }
