"""Float64 building blocks of the reference: Gaussians, Hermite polynomials, bilinear
sampling on the zero-extended plane, dense correlation and their adjoints.

Every function that builds signed coefficients takes ``absolute``: when true it returns
the coefficients of the same computation with every term made non-negative (differences
become sums).  Run on absolute inputs, the layers then return ``sum |terms|`` per output,
the magnitude that the rounding-error bound of ``harness.metrics`` is scaled by.
"""

import math

import numpy as np
from scipy import signal


def scalar(v):
    """A scalar given as a float, a 0-d or a one-element array -> float."""
    return float(np.asarray(v, dtype=np.float64).reshape(()))


def out_size(n, stride):
    """Output length ``ceil(n / stride)`` of SPEC section 1."""
    return -(-n // stride)


def taps1d(r):
    """Integer offsets ``-r..r`` as float64 ``[2r+1]``."""
    return np.arange(-r, r + 1, dtype=np.float64)


def gauss1d(sigma, r):
    """Discretely normalised Gaussian ``g(t)``, ``|t| <= r`` (DAU IJCV Eq. 3-4). -> ``[2r+1]``"""
    e = np.exp(-(taps1d(r) ** 2) / (2.0 * sigma**2))
    return e / e.sum()


def gauss1d_dsigma(sigma, r, absolute=False):
    """``d g(t) / d sigma`` by the quotient rule, radius fixed. -> ``[2r+1]``"""
    t = taps1d(r)
    e = np.exp(-(t**2) / (2.0 * sigma**2))
    de = e * t**2 / sigma**3
    z, dz = e.sum(), de.sum()
    if absolute:
        return de / z + e * dz / z**2
    return de / z - e * dz / z**2


def hermite(m, z, absolute=False):
    """Physicists' Hermite ``H_0..H_m`` at ``z`` -> list of arrays (SPEC section 5)."""
    z = np.asarray(z, dtype=np.float64)
    h = [np.ones_like(z), 2.0 * (np.abs(z) if absolute else z)]
    for k in range(2, m + 1):
        if absolute:
            h.append(2.0 * np.abs(z) * h[k - 1] + 2.0 * (k - 1) * h[k - 2])
        else:
            h.append(2.0 * z * h[k - 1] - 2.0 * (k - 1) * h[k - 2])
    return h[: m + 1]


def gauss_derivs1d(sigma, r, order, absolute=False):
    """Scale-normalised derivatives ``d_m(t)``, ``m = 0..order`` (SPEC section 5). -> ``[order+1, 2r+1]``

    ``d_m = sigma^m (-1/(sigma sqrt2))^m H_m(t/(sigma sqrt2)) g(t) = (-1/sqrt2)^m H_m(z) g(t)``.
    """
    t = taps1d(r)
    z = t / (sigma * math.sqrt(2.0))
    g = gauss1d(sigma, r)
    h = hermite(order, z, absolute)
    c = [(-1.0 / math.sqrt(2.0)) ** m for m in range(order + 1)]
    if absolute:
        c = [abs(v) for v in c]
    return np.stack([c[m] * h[m] * g for m in range(order + 1)])


def gauss_derivs1d_dsigma(sigma, r, order, absolute=False):
    """``d d_m(t) / d sigma``, radius fixed. -> ``[order+1, 2r+1]``

    ``d/dsigma [c_m H_m(z) g] = c_m [H_m'(z) dz/dsigma g + H_m(z) dg/dsigma]`` with
    ``H_m' = 2 m H_{m-1}`` and ``dz/dsigma = -z / sigma``.
    """
    t = taps1d(r)
    z = t / (sigma * math.sqrt(2.0))
    g = gauss1d(sigma, r)
    dg = gauss1d_dsigma(sigma, r, absolute)
    h = hermite(order, z, absolute)
    out = []
    for m in range(order + 1):
        c = (-1.0 / math.sqrt(2.0)) ** m
        dh = 2.0 * m * h[m - 1] if m > 0 else np.zeros_like(z)
        if absolute:
            out.append(abs(c) * (dh * np.abs(z) / sigma * g + h[m] * dg))
        else:
            out.append(c * (dh * (-z / sigma) * g + h[m] * dg))
    return np.stack(out)


def njet_pairs(order):
    """Basis index -> ``(a, b)`` (a-th derivative along x, b-th along y), by total order then decreasing ``a``."""
    return [(n - b, b) for n in range(order + 1) for b in range(n + 1)]


# ---------------------------------------------------------------- bilinear sampling


def _read(a, rows, cols):
    """``a[rows, cols]`` on the zero-extended plane (indices may lie anywhere)."""
    ok = (rows >= 0) & (rows < a.shape[0]) & (cols >= 0) & (cols < a.shape[1])
    out = np.zeros(rows.shape, dtype=np.float64)
    out[ok] = a[rows[ok], cols[ok]]
    return out


def _grid(dy, dx, stride, shape, origin):
    """Floors and fractions of the sample points ``(i*s + dy, j*s + dx)`` on a canvas whose
    index is coordinate + ``origin``.  The integer part of the displacement is split off first
    so that the fraction is exact."""
    ho, wo = shape
    fy, fx = math.floor(dy), math.floor(dx)
    rows = (np.arange(ho) * stride + fy + origin)[:, None] + np.zeros((1, wo), dtype=np.int64)
    cols = (np.arange(wo) * stride + fx + origin)[None, :] + np.zeros((ho, 1), dtype=np.int64)
    return rows, cols, dy - fy, dx - fx


def corners(a, dy, dx, stride, shape, origin=0):
    """Corner values ``v[da][db]`` and 1-D weights ``wy, wx`` of the bilinear samples
    ``a<i*s + dy, j*s + dx>`` for all ``(i, j)`` of an output of ``shape``."""
    rows, cols, ay, ax = _grid(dy, dx, stride, shape, origin)
    v = [[_read(a, rows + da, cols + db) for db in (0, 1)] for da in (0, 1)]
    return v, (1.0 - ay, ay), (1.0 - ax, ax)


def sample(a, dy, dx, stride, shape, origin=0):
    """Bilinear samples ``a<i*s + dy, j*s + dx>`` -> ``shape`` (SPEC section 1)."""
    v, wy, wx = corners(a, dy, dx, stride, shape, origin)
    return sum(wy[da] * wx[db] * v[da][db] for da in (0, 1) for db in (0, 1))


def sample_ddx(a, dy, dx, stride, shape, origin=0, absolute=False):
    """Derivative of ``sample`` with respect to ``dx``, floor held fixed (SPEC section 1)."""
    v, wy, _ = corners(a, dy, dx, stride, shape, origin)
    sgn = 1.0 if absolute else -1.0
    return sum(wy[da] * (v[da][1] + sgn * v[da][0]) for da in (0, 1))


def sample_ddy(a, dy, dx, stride, shape, origin=0, absolute=False):
    """Derivative of ``sample`` with respect to ``dy``, floor held fixed."""
    v, _, wx = corners(a, dy, dx, stride, shape, origin)
    sgn = 1.0 if absolute else -1.0
    return sum(wx[db] * (v[1][db] + sgn * v[0][db]) for db in (0, 1))


def sample_adjoint(vals, dy, dx, stride, canvas, origin=0):
    """Adjoint of ``sample``: scatter ``vals [Ho, Wo]`` onto a zero canvas of shape ``canvas``."""
    out = np.zeros(canvas, dtype=np.float64)
    rows, cols, ay, ax = _grid(dy, dx, stride, vals.shape, origin)
    wy, wx = (1.0 - ay, ay), (1.0 - ax, ax)
    for da in (0, 1):
        for db in (0, 1):
            r, c = rows + da, cols + db
            ok = (r >= 0) & (r < canvas[0]) & (c >= 0) & (c < canvas[1])
            np.add.at(out, (r[ok], c[ok]), (wy[da] * wx[db] * vals)[ok])
    return out


# ---------------------------------------------------------------- blur on the zero-extended plane


def blur_full(a, kern):
    """``a * kern`` on the zero-extended plane, everywhere it can be non-zero.

    ``a [H, W]``, ``kern [2r+1, 2r+1]`` -> ``[H+2r, W+2r]``, canvas index = coordinate + r.
    """
    return signal.correlate2d(a, kern, mode="full")


def blur_full_adjoint(c, kern):
    """Adjoint of ``blur_full``: ``c [H+2r, W+2r]`` -> ``[H, W]``."""
    return signal.convolve2d(c, kern, mode="valid")


# ---------------------------------------------------------------- dense strided correlation


def correlate(x, kern, stride):
    """``y[n,f,i,j] = sum_{s,t,u} kern[f,s,t,u] x[n,s,i*s+t,j*s+u]`` on the zero-extended plane.

    ``x [N,S,H,W]``, ``kern [F,S,2R+1,2R+1]`` (centre at ``R``) -> ``[N,F,Ho,Wo]``.
    """
    n, _, h, w = x.shape
    f, _, kh, _ = kern.shape
    r = kh // 2
    ho, wo = out_size(h, stride), out_size(w, stride)
    xp = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
    y = np.zeros((n, f, ho, wo))
    for t in range(kh):
        for u in range(kh):
            win = xp[:, :, t : t + (ho - 1) * stride + 1 : stride, u : u + (wo - 1) * stride + 1 : stride]
            y += np.einsum("fs,nsij->nfij", kern[:, :, t, u], win)
    return y


def correlate_dx(dy, kern, stride, hw):
    """Adjoint of ``correlate`` in ``x``: ``dy [N,F,Ho,Wo]`` -> ``[N,S,H,W]``."""
    n, _, ho, wo = dy.shape
    _, s, kh, _ = kern.shape
    r = kh // 2
    h, w = hw
    dxp = np.zeros((n, s, h + 2 * r + stride, w + 2 * r + stride))
    for t in range(kh):
        for u in range(kh):
            dxp[:, :, t : t + (ho - 1) * stride + 1 : stride, u : u + (wo - 1) * stride + 1 : stride] += np.einsum(
                "fs,nfij->nsij", kern[:, :, t, u], dy
            )
    return dxp[:, :, r : r + h, r : r + w]


def correlate_dkern(x, dy, r, stride):
    """Gradient of ``correlate`` in its kernel: -> ``[F,S,2r+1,2r+1]``."""
    _, _, ho, wo = dy.shape
    kh = 2 * r + 1
    xp = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
    dk = np.zeros((dy.shape[1], x.shape[1], kh, kh))
    for t in range(kh):
        for u in range(kh):
            win = xp[:, :, t : t + (ho - 1) * stride + 1 : stride, u : u + (wo - 1) * stride + 1 : stride]
            dk[:, :, t, u] = np.einsum("nfij,nsij->fs", dy, win)
    return dk
