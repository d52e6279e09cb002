"""Float64 building blocks of the reference: Gaussians, Hermite polynomials, bilinear
sampling on the zero-extended plane, dense correlation and their adjoints.

Every function that builds signed coefficients takes ``absolute``: when true it returns
the coefficients of the same computation with every term made non-negative (differences
become sums).  Run on absolute inputs, the layers then return ``sum |terms|`` per output,
the magnitude that the rounding-error bound of ``harness.metrics`` is scaled by.
"""

import math

import numpy as np


def scalar(v):
    """A scalar given as a float, a 0-d or a one-element array -> float."""
    return float(np.asarray(v, dtype=np.float64).reshape(()))


def out_size(n, stride):
    """Output length ``ceil(n / stride)`` of reference/README.md section 1."""
    return -(-n // stride)


def taps1d(r):
    """Integer offsets ``-r..r`` as float64 ``[2r+1]``."""
    return np.arange(-r, r + 1, dtype=np.float64)


# Smallest scale a Gaussian is evaluated at: float64's smallest normal to the quarter power
# (1.2e-77).  Below it the discrete Gaussian is already the delta kernel (every tap but the
# nearest underflows), and sigma^2..sigma^4 stay normal, so no formula divides by zero.
SIGMA_FLOOR = np.finfo(np.float64).tiny ** 0.25
# exp(-a) is exactly 0 in float64 for every a above this: -log of half the smallest subnormal.
UNDERFLOW_ARG = math.log(2.0) - math.log(np.finfo(np.float64).smallest_subnormal)


def gauss_exp(q, sigma):
    """``exp(-q / (2 sigma^2))`` for ``q >= 0`` (may be ``inf``); 0 exactly where it underflows.

    ``sigma`` is clamped to ``SIGMA_FLOOR``: the small-sigma limit is the delta kernel.
    """
    s = np.maximum(sigma, SIGMA_FLOOR)
    with np.errstate(over="ignore", invalid="ignore"):
        a = q / (2.0 * s**2)
        keep = (a <= UNDERFLOW_ARG) | (q == 0)
        return np.where(keep, np.exp(-np.where(keep, a, 0.0)), 0.0)


def gauss1d(sigma, r):
    """Discretely normalised Gaussian ``g(t)``, ``|t| <= r`` (DAU IJCV Eq. 3-4). -> ``[2r+1]``"""
    e = gauss_exp(taps1d(r) ** 2, sigma)
    return e / e.sum()


def gauss1d_dsigma(sigma, r, absolute=False):
    """``d g(t) / d sigma`` by the quotient rule, radius fixed. -> ``[2r+1]``"""
    t = taps1d(r)
    e = gauss_exp(t**2, sigma)
    de = e * t**2 / max(sigma, SIGMA_FLOOR) ** 3
    z, dz = e.sum(), de.sum()
    if absolute:
        return de / z + e * dz / z**2
    return de / z - e * dz / z**2


def gauss_axis(mu, sigma, r, absolute=False):
    """Per-axis unit Gaussians of ``dau_gauss`` and their derivatives (reference/README.md section 3).

    ``mu, sigma [...]`` -> ``(g, dg/dmu, dg/dsigma)``, each ``[..., 2r+1]``: ``exp(-(t - mu)^2 /
    (2 sigma^2))`` normalised over the taps ``-r..r``.  The exponent is taken relative to the
    nearest tap ``c = clamp(round(mu), -r, r)``: ``(t-mu)^2 - (c-mu)^2 = d^2 + 2 d e`` with
    ``d = t - c``, ``e = c - mu``; the dropped constant cancels in the normalisation and in
    both derivatives, so a unit far outside the window is its one-hot edge tap with exactly
    zero derivatives instead of a difference of two numbers of size ``mu^2``.
    """
    t = taps1d(r)
    mu = np.asarray(mu, dtype=np.float64)[..., None]
    sig = np.maximum(np.asarray(sigma, dtype=np.float64)[..., None], SIGMA_FLOOR)
    c = np.clip(np.round(mu), -r, r)
    d, e = t - c, c - mu
    with np.errstate(over="ignore", invalid="ignore"):
        q = d * d + 2.0 * d * e
        ex = gauss_exp(q, sig)
        z = ex.sum(-1, keepdims=True)
        # d(exponent)/dmu = (t-mu)/sigma^2 ~ d/sigma^2, d/dsigma = (t-mu)^2/sigma^3 ~ q/sigma^3 (constants dropped)
        dmu = np.where(ex > 0, ex * d / sig**2, 0.0)
        dsig = np.where(ex > 0, ex * q / sig**3, 0.0)

    def quotient(de):
        # d(ex / z) = de / z - ex * sum(de) / z^2
        if absolute:
            return np.abs(de) / z + ex * np.abs(de).sum(-1, keepdims=True) / z**2
        return de / z - ex * de.sum(-1, keepdims=True) / z**2

    return ex / z, quotient(dmu), quotient(dsig)


def hermite(m, z, absolute=False):
    """Physicists' Hermite ``H_0..H_m`` at ``z`` -> list of arrays (reference/README.md section 5)."""
    z = np.asarray(z, dtype=np.float64)
    h = [np.ones_like(z), 2.0 * (np.abs(z) if absolute else z)]
    for k in range(2, m + 1):
        if absolute:
            h.append(2.0 * np.abs(z) * h[k - 1] + 2.0 * (k - 1) * h[k - 2])
        else:
            h.append(2.0 * z * h[k - 1] - 2.0 * (k - 1) * h[k - 2])
    return h[: m + 1]


def _hermite_arg(sigma, r, g):
    """``z = t / (sigma sqrt 2)`` where ``g(t) > 0``, else 0 (the Hermite factor of a tap whose
    Gaussian underflowed is not evaluated: it may overflow, and the tap is 0 anyway)."""
    t = np.where(g > 0, taps1d(r), 0.0)
    return t / (max(sigma, SIGMA_FLOOR) * math.sqrt(2.0))


def gauss_derivs1d(sigma, r, order, absolute=False, herm=None):
    """Scale-normalised derivatives ``d_m(t)``, ``m = 0..order`` (reference/README.md section 5). -> ``[order+1, 2r+1]``

    ``d_m = sigma^m (-1/(sigma sqrt2))^m H_m(t/(sigma sqrt2)) g(t) = (-1/sqrt2)^m H_m(z) g(t)``.
    ``herm(m, z)``: another evaluator of the signed ``H_0..H_m`` (``reference._scipy.hermite``).
    """
    g = gauss1d(sigma, r)
    z = _hermite_arg(sigma, r, g)
    h = herm(order, z) if herm is not None and not absolute else hermite(order, z, absolute)
    c = [(-1.0 / math.sqrt(2.0)) ** m for m in range(order + 1)]
    if absolute:
        c = [abs(v) for v in c]
    return np.stack([c[m] * h[m] * g for m in range(order + 1)])


def gauss_derivs1d_dsigma(sigma, r, order, absolute=False):
    """``d d_m(t) / d sigma``, radius fixed. -> ``[order+1, 2r+1]``

    ``d/dsigma [c_m H_m(z) g] = c_m [H_m'(z) dz/dsigma g + H_m(z) dg/dsigma]`` with
    ``H_m' = 2 m H_{m-1}`` and ``dz/dsigma = -z / sigma``.
    """
    g = gauss1d(sigma, r)
    z = _hermite_arg(sigma, r, g)
    sig = max(sigma, SIGMA_FLOOR)
    dg = gauss1d_dsigma(sigma, r, absolute)
    h = hermite(order, z, absolute)
    out = []
    for m in range(order + 1):
        c = (-1.0 / math.sqrt(2.0)) ** m
        dh = 2.0 * m * h[m - 1] if m > 0 else np.zeros_like(z)
        if absolute:
            out.append(abs(c) * (dh * np.abs(z) / sig * g + h[m] * dg))
        else:
            out.append(c * (dh * (-z / sig) * g + h[m] * dg))
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
    """Floors and weights of the sample points ``(i*s + dy, j*s + dx)`` on a canvas whose
    index is coordinate + ``origin`` (one int, or ``(rows, cols)``).  The weights come from the
    floor and the displacement directly (``weights1d``)."""
    ho, wo = shape
    oy, ox = origin if isinstance(origin, tuple) else (origin, origin)
    fy, wy = weights1d(dy)
    fx, wx = weights1d(dx)
    rows = (np.arange(ho) * stride + fy + oy)[:, None] + np.zeros((1, wo), dtype=np.int64)
    cols = (np.arange(wo) * stride + fx + ox)[None, :] + np.zeros((ho, 1), dtype=np.int64)
    return rows, cols, wy, wx


# Floors are clamped to +-2^40 before becoming integers: such a stencil lies outside every
# image (a float64 |mu| >= 9.2e18 would not even convert to int64).
FLOOR_LIMIT = 2.0**40


def weights1d(mu):
    """Floor (a Python int, clamped to ``+-FLOOR_LIMIT``) and 1-D bilinear weights
    ``(floor + 1 - mu, mu - floor)`` of one displacement (reference/README.md section 1).

    The near weight is ``(floor + 1) - mu``, not ``1 - (mu - floor)``, which cancels just
    below an integer; the weights use the unclamped floor.
    """
    fl = math.floor(mu) if abs(mu) < FLOOR_LIMIT else float(np.floor(mu))
    return int(min(max(fl, -FLOOR_LIMIT), FLOOR_LIMIT)), ((fl + 1.0) - mu, mu - fl)


def corners(a, dy, dx, stride, shape, origin=0):
    """Corner values ``v[da][db]`` and 1-D weights ``wy, wx`` of the bilinear samples
    ``a<i*s + dy, j*s + dx>`` for all ``(i, j)`` of an output of ``shape``."""
    rows, cols, wy, wx = _grid(dy, dx, stride, shape, origin)
    v = [[_read(a, rows + da, cols + db) for db in (0, 1)] for da in (0, 1)]
    return v, wy, wx


def sample(a, dy, dx, stride, shape, origin=0):
    """Bilinear samples ``a<i*s + dy, j*s + dx>`` -> ``shape`` (reference/README.md section 1)."""
    v, wy, wx = corners(a, dy, dx, stride, shape, origin)
    return sum(wy[da] * wx[db] * v[da][db] for da in (0, 1) for db in (0, 1))


def sample_ddx(a, dy, dx, stride, shape, origin=0, absolute=False):
    """Derivative of ``sample`` with respect to ``dx``, floor held fixed (reference/README.md section 1)."""
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
    rows, cols, wy, wx = _grid(dy, dx, stride, vals.shape, origin)
    for da in (0, 1):
        for db in (0, 1):
            r, c = rows + da, cols + db
            ok = (r >= 0) & (r < canvas[0]) & (c >= 0) & (c < canvas[1])
            np.add.at(out, (r[ok], c[ok]), (wy[da] * wx[db] * vals)[ok])
    return out


# ---------------------------------------------------------------- blur on the zero-extended plane


def sample_window(floors, stride, n_out, size, r):
    """Canvas coordinates ``(lo, hi)`` (inclusive) that samples at ``i*s + floor + {0, 1}`` can read
    and where ``a * G`` (radius ``r``) can be non-zero, ``[-r, size - 1 + r]``; one coordinate
    inside that range if no sample reaches it.  Every other read is a zero."""
    fl = [weights1d(float(v))[0] for v in np.ravel(floors)] or [0]
    lo, hi = max(min(fl), -r), min((n_out - 1) * stride + max(fl) + 1, size - 1 + r)
    return (lo, hi) if lo <= hi else (-r, -r)


def _blur_axis(a, g, span, axis):
    """``out[p] = sum_t g(t) a[p + t]`` along ``axis`` for coordinates ``p`` in ``span`` (inclusive),
    ``a`` zero outside its extent.  One term per input line ``i`` and canvas line with ``|i - p| <= r``."""
    r = len(g) // 2
    a = np.moveaxis(a, axis, 0)
    p = np.arange(span[0], span[1] + 1)
    out = np.zeros((len(p),) + a.shape[1:])
    for i in range(a.shape[0]):
        ok = np.abs(i - p) <= r
        out[ok] += g[i - p[ok] + r].reshape((-1,) + (1,) * (a.ndim - 1)) * a[i]
    return np.moveaxis(out, 0, axis)


def _blur_axis_adjoint(c, g, span, axis, n):
    """Adjoint of ``_blur_axis``: ``c`` on ``span`` along ``axis`` -> length ``n``."""
    r = len(g) // 2
    c = np.moveaxis(c, axis, 0)
    p = np.arange(span[0], span[1] + 1)
    out = np.zeros((n,) + c.shape[1:])
    for i in range(n):
        ok = np.abs(i - p) <= r
        out[i] = np.tensordot(g[i - p[ok] + r], c[ok], axes=(0, 0))
    return np.moveaxis(out, 0, axis)


def blur_window(a, gr, gc, rows, cols):
    """``a * outer(gr, gc)`` on the zero-extended plane at coordinates ``rows = (p0, p1)``,
    ``cols = (q0, q1)`` (inclusive): ``a [H, W]`` -> ``[p1-p0+1, q1-q0+1]``, canvas index =
    coordinate - ``(p0, q0)``.  Its size is set by the window, never by the radius."""
    return _blur_axis(_blur_axis(a, gr, rows, 0), gc, cols, 1)


def blur_window_adjoint(c, gr, gc, rows, cols, shape):
    """Adjoint of ``blur_window``: ``c`` on the window -> ``shape = (H, W)``."""
    return _blur_axis_adjoint(_blur_axis_adjoint(c, gc, cols, 1, shape[1]), gr, rows, 0, shape[0])


# ---------------------------------------------------------------- dense strided correlation


def kernel_window(r, hw, stride):
    """Offsets of a radius-``r`` kernel that read a pixel of an ``hw`` image for some output:
    ``((t0, t1), (u0, u1))``, inclusive, always holding 0.  The other taps multiply only the
    zero extension (reference/README.md section 7: they are not terms of any output)."""
    h, w = hw
    rows = (max(-r, -(out_size(h, stride) - 1) * stride), min(r, h - 1))
    cols = (max(-r, -(out_size(w, stride) - 1) * stride), min(r, w - 1))
    return rows, cols


def crop(v, r, span):
    """Taps ``span = (t0, t1)`` of a 1-D kernel ``v [..., 2r+1]`` centred at ``r``."""
    return v[..., span[0] + r : span[1] + r + 1]


def _pad(x, win, stride, ho, wo):
    """``x`` zero-padded so that output ``(i, j)`` reads tap ``(a, b)`` at ``[i*s + a, j*s + b]``."""
    (t0, t1), (u0, u1) = win
    h, w = x.shape[2:]
    bottom, right = max(0, (ho - 1) * stride + t1 - (h - 1)), max(0, (wo - 1) * stride + u1 - (w - 1))
    return np.pad(x, ((0, 0), (0, 0), (-t0, bottom), (-u0, right)))


def _taps(kh, kw, ho, wo, stride):
    """``(a, b, index)``: tap ``(a, b)`` of the kernel and the strided slice of the padded input it reads."""
    for a in range(kh):
        for b in range(kw):
            yield (
                a,
                b,
                (
                    slice(None),
                    slice(None),
                    slice(a, a + (ho - 1) * stride + 1, stride),
                    slice(b, b + (wo - 1) * stride + 1, stride),
                ),
            )


def correlate(x, kern, stride, win):
    """``y[n,f,i,j] = sum_{s,t,u} kern[f,s,t,u] x[n,s,i*s+t0+t,j*s+u0+u]`` on the zero-extended plane.

    ``x [N,S,H,W]``, ``kern [F,S,kh,kw]`` covering offsets ``win = ((t0, t1), (u0, u1))``
    (``kernel_window``) -> ``[N,F,Ho,Wo]``.
    """
    n, _, h, w = x.shape
    f, _, kh, kw = kern.shape
    ho, wo = out_size(h, stride), out_size(w, stride)
    xp = _pad(x, win, stride, ho, wo)
    y = np.zeros((n, f, ho, wo))
    for a, b, idx in _taps(kh, kw, ho, wo, stride):
        y += np.einsum("fs,nsij->nfij", kern[:, :, a, b], xp[idx])
    return y


def correlate_dx(dy, kern, stride, hw, win):
    """Adjoint of ``correlate`` in ``x``: ``dy [N,F,Ho,Wo]`` -> ``[N,S,H,W]``."""
    n, _, ho, wo = dy.shape
    _, s, kh, kw = kern.shape
    dxp = _pad(np.zeros((n, s) + tuple(hw)), win, stride, ho, wo)
    for a, b, idx in _taps(kh, kw, ho, wo, stride):
        dxp[idx] += np.einsum("fs,nfij->nsij", kern[:, :, a, b], dy)
    (t0, _), (u0, _) = win
    return dxp[:, :, -t0 : -t0 + hw[0], -u0 : -u0 + hw[1]]


def correlate_dkern(x, dy, win, stride):
    """Gradient of ``correlate`` in its kernel: -> ``[F,S,kh,kw]`` over the offsets ``win``."""
    _, _, ho, wo = dy.shape
    (t0, t1), (u0, u1) = win
    xp = _pad(x, win, stride, ho, wo)
    dk = np.zeros((dy.shape[1], x.shape[1], t1 - t0 + 1, u1 - u0 + 1))
    for a, b, idx in _taps(dk.shape[2], dk.shape[3], ho, wo, stride):
        dk[:, :, a, b] = np.einsum("nfij,nsij->fs", dy, xp[idx])
    return dk


# ---------------------------------------------------------------- channel groups (reference/README.md section 6)


def _group_slice(name, a, g, groups):
    """Group ``g``'s part of argument ``name``: ``x``, ``dy`` by channel (axis 1), a scalar ``sigma`` whole,
    every other ``[F, ...]`` array (weights, displacements, ``bias``, per-unit ``sigma``) by output channel."""
    if a is None or (name == "sigma" and np.ndim(a) < 3):
        return a
    axis = 1 if name in ("x", "dy") else 0
    n = a.shape[axis] // groups
    return np.take(a, range(g * n, (g + 1) * n), axis=axis)


def _join(name, parts):
    if parts[0] is None:
        return None
    if name == "sigma" and np.ndim(parts[0]) < 3:  # one shared scale: the groups' gradients add up
        return np.asarray(sum(parts))
    return np.concatenate(parts, axis=1 if name in ("x", "dy") else 0)


def by_group(fn, groups, args, **hp):
    """A grouped layer as what it is: ``groups`` independent layers, group ``g`` on the input channels
    ``g S/G .. (g+1) S/G - 1`` and the output channels ``g F/G ..`` (reference/README.md section 6).

    ``fn``: a layer's forward (-> ``[N, F/G, Ho, Wo]``) or backward (-> gradients by name) with
    ``groups=1``; ``args``: its array arguments by name (``x``, the weights, ``sigma``, ``bias``, ``dy``).
    -> the forward's outputs concatenated by channel, or the gradients joined (a scalar ``sigma``'s summed).
    """
    got = [fn(**{k: _group_slice(k, v, g, groups) for k, v in args.items()}, **hp) for g in range(groups)]
    if isinstance(got[0], dict):
        return {k: _join(k, [d[k] for d in got]) for k in got[0]}
    return np.concatenate(got, axis=1)
