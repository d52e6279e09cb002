"""The SciPy primitives the reference's forward passes are built on (reference/README.md section 1).

- ``blur``: ``a * outer(g, g)`` on the zero-extended plane, ``scipy.ndimage.correlate1d`` along
  each axis of the image padded with zeros, on the window that the samples read.
- ``sample``: bilinear samples ``a<i*s + dy, j*s + dx>`` on the zero-extended plane: the 2-tap
  correlation with the bilinear weights along each axis (``scipy.ndimage.correlate1d``), then
  the zero-extended read at the integer floors (``scipy.ndimage.map_coordinates``, ``order=0``).
- ``correlate``: the dense strided correlation, ``scipy.signal.correlate`` with
  ``method="direct"``.
- ``hermite``: the physicists' Hermite polynomials, ``scipy.special.eval_hermite``.

Three SciPy calls that look like the obvious tool are not used, because they do not compute
the contract's sums to float64 rounding (each measured on SciPy 1.17):

- ``scipy.ndimage.map_coordinates(order=1)`` at the point ``i*s + mu`` forms that coordinate in
  float64 before it splits off the fraction: with ``mu`` an integer +- 1e-6 the bilinear weight
  ``1e-6`` carries an error of ``ulp(i*s + mu)``, and one sample was off by 4.8e6 ``u64`` of its
  ``sum|terms|``, far beyond the bound of section 9.  The contract's weights come from ``mu``
  and its floor directly (``_ops.weights1d``), so the sample is weighted here with those exact
  weights.  (Its ``mode="constant"`` is also not the zero-extended plane: it does not
  interpolate between the edge and the extension, ``mode="grid-constant"`` does.
  ``suites/test_reference.py`` checks ``sample`` against it where the coordinate is exact.)
- ``scipy.ndimage.correlate`` drops every weight with ``|w| <= 2.2e-16`` from its footprint: the
  far taps of a Gaussian would be left out of the sums.  ``correlate1d`` keeps them.
- ``scipy.signal.correlate`` with its default ``method="auto"`` may use an FFT, whose error is
  bounded normwise, not per output element as section 9 needs.
"""

import numpy as np
from scipy import ndimage, signal, special

from . import _ops


def hermite(m, z):
    """Physicists' Hermite ``H_0..H_m`` at ``z`` -> list of arrays (``scipy.special.eval_hermite``).

    SciPy evaluates ``2^(k/2) He_k(sqrt(2) z)`` by the three-term recurrence: ``3k`` roundings,
    ``2k`` more from the rounded argument ``sqrt(2) z``, and two for the power of two and the
    product (``harness.metrics.coef_depth`` counts them)."""
    z = np.asarray(z, dtype=np.float64)
    return [special.eval_hermite(k, z) for k in range(m + 1)]


def window(mu, stride, n_out, size, r):
    """Coordinates ``(lo, hi)`` (inclusive) of one axis of the blurred plane that the samples at
    ``i*s + mu`` (``mu`` any array of displacements, ``i < n_out``) read, ``i*s + P + {0, 1}`` with
    ``P`` the floor, and where the blur of an image of ``size`` with radius ``r`` can be non-zero,
    ``[-r, size - 1 + r]``; None where they read none of it."""
    floors = [_ops.weights1d(float(m))[0] for m in np.ravel(mu)]
    if not floors:
        return None
    lo = max(min(floors), -r)
    hi = min((n_out - 1) * stride + max(floors) + 1, size - 1 + r)
    return (lo, hi) if lo <= hi else None


def _blur_axis(a, g, span, axis):
    """``out[p] = sum_t g(t) a[p + t]`` along ``axis`` for the coordinates ``p`` in ``span``, ``a``
    zero beyond its extent: ``scipy.ndimage.correlate1d`` on ``a`` placed in zeros that cover both
    the image and ``span`` (a radius of thousands of pixels costs no canvas of that size)."""
    n = a.shape[axis]
    lo, hi = min(span[0], 0), max(span[1], n - 1)
    pad = [(0, 0)] * a.ndim
    pad[axis] = (-lo, hi - (n - 1))
    out = ndimage.correlate1d(np.pad(a, pad), g, axis=axis, mode="constant", cval=0.0)
    return np.take(out, np.arange(span[0] - lo, span[1] - lo + 1), axis=axis)


def blur(a, g, rows, cols):
    """``a * outer(g, g)`` on the zero-extended plane at the coordinates ``rows``, ``cols`` (``window``;
    None: no sample reads the blurred plane) -> ``(canvas, origin)``, index = coordinate + ``origin``,
    with one zero row and column around the window: every read outside it is a zero of the plane or
    is never made (``window``), and a bilinear sample at the window's edge reads the rim."""
    if rows is None or cols is None:
        return np.zeros((1, 1)), (0, 0)
    c = _blur_axis(np.asarray(a, dtype=np.float64), g, rows, 0)
    c = _blur_axis(c, g, cols, 1)
    return np.pad(c, 1), (1 - rows[0], 1 - cols[0])


def plane(a):
    """``a [H, W]`` as a canvas with one zero row and column around it -> ``(canvas, (1, 1))``."""
    return np.pad(np.asarray(a, dtype=np.float64), 1), (1, 1)


def sample(canvas, origin, dy, dx, stride, shape):
    """Bilinear samples ``a<i*s + dy, j*s + dx>`` -> ``shape = (Ho, Wo)``.

    ``canvas`` holds the zero-extended plane ``a`` at indices coordinate + ``origin`` (a pair; every
    read beyond the canvas is a zero of the plane).  The 2-tap correlations with the weights
    ``(P + 1 - d, d - P)`` of each axis give ``sum wy wx a[p + da, q + db]`` at every ``(p, q)`` of
    the canvas; the output reads it at the floors ``p = i*s + P``, ``q = j*s + Q``, zero outside."""
    py, wy = _ops.weights1d(float(dy))
    px, wx = _ops.weights1d(float(dx))
    c = ndimage.correlate1d(canvas, np.asarray(wy), axis=0, origin=-1, mode="constant", cval=0.0)
    c = ndimage.correlate1d(c, np.asarray(wx), axis=1, origin=-1, mode="constant", cval=0.0)
    rows = np.arange(shape[0], dtype=np.float64) * stride + (py + origin[0])
    cols = np.arange(shape[1], dtype=np.float64) * stride + (px + origin[1])
    at = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(c, at, order=0, mode="constant", cval=0.0)


def correlate(x, kern, stride, win):
    """``y[n,f,i,j] = sum_{s,t,u} kern[f,s,t,u] x[n,s,i*s+t0+t,j*s+u0+u]`` on the zero-extended plane.

    ``x [N,S,H,W]``, ``kern [F,S,kh,kw]`` covering the offsets ``win = ((t0, t1), (u0, u1))``
    (``_ops.kernel_window``: the taps that read the image for some output) -> ``[N,F,Ho,Wo]``.
    ``x`` is padded with zeros so that every output's window lies inside it; then one
    ``scipy.signal.correlate(..., "valid", method="direct")`` per ``(n, f)`` sums over ``s, t, u``."""
    n_, _, h, w = x.shape
    f_ = kern.shape[0]
    ho, wo = _ops.out_size(h, stride), _ops.out_size(w, stride)
    (t0, t1), (u0, u1) = win
    bottom, right = max(0, (ho - 1) * stride + t1 - (h - 1)), max(0, (wo - 1) * stride + u1 - (w - 1))
    xp = np.pad(x, ((0, 0), (0, 0), (-t0, bottom), (-u0, right)))
    y = np.zeros((n_, f_, ho, wo))
    for ni in range(n_):
        for fi in range(f_):
            full = signal.correlate(xp[ni], kern[fi], mode="valid", method="direct")
            y[ni, fi] = full[0, : (ho - 1) * stride + 1 : stride, : (wo - 1) * stride + 1 : stride]
    return y
