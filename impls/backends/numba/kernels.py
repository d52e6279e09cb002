"""Backend ``numba``: its parallel Numba CPU kernels (the layers that call them: ``layers``).

Kernels are ``@njit(parallel=True, cache=True)``, compiled once per process and dtype
(float32 or float64, computed in the input dtype); ``fastmath=False`` except the reductions
that say otherwise (``reassoc``/``contract`` inside one function: a fixed-order reduction over
vector lanes).  Each ``prange`` task owns the output elements it writes, and reductions run in
a fixed order, so every result is bit-identical from run to run whatever the thread count.
They take and return NumPy arrays; ``layers`` is their only caller.

``dau`` at stride 1 uses the wide-row kernels (section "wide-row kernels" below): the blurred
input lives on a window padded so that every read of every unit is in bounds, and each unit is
one contiguous loop.  Stride > 1, or displacement spreads that would waste more than
``layers._WASTE`` columns per row, use the per-row kernels on a canvas with one zero border pixel
beyond everything that can be non-zero (index = coordinate + ``pad``): a bilinear sample whose
2x2 stencil is not fully inside the canvas reads only zeros and is skipped; the valid row and
column ranges of each unit are computed once (``_rows``, ``_lo``, ``_hi``).
"""

import numpy as np
from numba import njit, prange

_JIT = {"parallel": True, "fastmath": False, "cache": True}


# ---------------------------------------------------------------- small helpers


@njit(cache=True, inline="always")
def _lo(a, st):
    """Smallest ``j >= 0`` with ``j st + a >= 0``."""
    return max(0, -(a // st))


@njit(cache=True, inline="always")
def _hi(a, st, n, m):
    """One past the largest ``j < m`` with ``j st + a <= n - 1``."""
    b = n - 1 - a
    if b < 0:
        return 0
    return min(m, b // st + 1)


@njit(cache=True, inline="always")
def _rows(r0, st, hc, ho):
    """Output rows ``i < ho`` whose 2-row stencil ``i st + r0, + 1`` lies inside ``hc`` canvas rows -> range."""
    return range(_lo(r0, st), _hi(r0, st, hc - 1, ho))


# Row kernels, inlined into the parallel loops; unit stride gets contiguous slices (vectorised).


@njit(cache=True, inline="always")
def _row4(y, r0, r1, a0, a1, a2, a3, q, nj, st):
    """``y[j] += a0 r0[q + j st] + a1 r0[q + j st + 1] + a2 r1[q + j st] + a3 r1[q + j st + 1]``, ``j < nj``."""
    if st == 1:
        u0, u1 = r0[q : q + nj + 1], r1[q : q + nj + 1]
        for j in range(nj):
            y[j] += (a0 * u0[j] + a1 * u0[j + 1]) + (a2 * u1[j] + a3 * u1[j + 1])
    else:
        for j in range(nj):
            v = q + j * st
            y[j] += (a0 * r0[v] + a1 * r0[v + 1]) + (a2 * r1[v] + a3 * r1[v + 1])


@njit(cache=True, inline="always")
def _dot4(acc, d, r0, r1, q, nj, st):
    """``acc[2 da + db, j] += d[j] r_da[q + j st + db]``, ``j < nj``."""
    e0, e1, e2, e3 = acc[0], acc[1], acc[2], acc[3]
    if st == 1:
        u0, u1 = r0[q : q + nj + 1], r1[q : q + nj + 1]
        for j in range(nj):
            e0[j] += d[j] * u0[j]
            e1[j] += d[j] * u0[j + 1]
            e2[j] += d[j] * u1[j]
            e3[j] += d[j] * u1[j + 1]
    else:
        for j in range(nj):
            v = q + j * st
            e0[j] += d[j] * r0[v]
            e1[j] += d[j] * r0[v + 1]
            e2[j] += d[j] * r1[v]
            e3[j] += d[j] * r1[v + 1]


@njit(cache=True, inline="always")
def _axpy(b, q, nj, st, am, d):
    """``b[q + j st] += am d[j]``, ``j < nj``."""
    if st == 1:
        u = b[q : q + nj]
        for j in range(nj):
            u[j] += am * d[j]
    else:
        for j in range(nj):
            b[q + j * st] += am * d[j]


@njit(cache=True, inline="always")
def _gaxpy(y, b, q, nj, st, am):
    """``y[j] += am b[q + j st]``, ``j < nj``."""
    if st == 1:
        u = b[q : q + nj]
        for j in range(nj):
            y[j] += am * u[j]
    else:
        for j in range(nj):
            y[j] += am * b[q + j * st]


@njit(cache=True, inline="always")
def _dot(acc, d, b, q, nj, st):
    """``acc[j] += d[j] b[q + j st]``, ``j < nj``."""
    if st == 1:
        u = b[q : q + nj]
        for j in range(nj):
            acc[j] += d[j] * u[j]
    else:
        for j in range(nj):
            acc[j] += d[j] * b[q + j * st]


# ---------------------------------------------------------------- separable blur on a canvas


@njit(**_JIT)
def _hblur(x, g, pad):
    """Along columns: ``x [N,S,H,W]`` -> ``[N,S,H,W+2pad]``, ``out[.., q+pad] = sum_u g(u) x[.., q+u]``."""
    n_, s_, h, w = x.shape
    r = (g.shape[0] - 1) // 2
    out = np.zeros((n_, s_, h, w + 2 * pad), x.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for p in range(h):
            for iu in range(2 * r + 1):
                u, gu = iu - r, g[iu]
                for q in range(max(-u, -pad), min(w - u, w + pad)):
                    out[n, s, p, q + pad] += gu * x[n, s, p, q + u]
    return out


@njit(**_JIT)
def _hblur_t(b, g, pad, w):
    """Adjoint of ``_hblur``: ``[N,S,H,W+2pad]`` -> ``[N,S,H,W]``."""
    n_, s_, h, _ = b.shape
    r = (g.shape[0] - 1) // 2
    out = np.zeros((n_, s_, h, w), b.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for p in range(h):
            for iu in range(2 * r + 1):
                u, gu = iu - r, g[iu]
                for q in range(max(-u, -pad), min(w - u, w + pad)):
                    out[n, s, p, q + u] += gu * b[n, s, p, q + pad]
    return out


@njit(**_JIT)
def _vblur(a, g, pad):
    """Along rows: ``a [N,S,H,L]`` -> ``[N,S,H+2pad,L]``, ``out[p+pad] = sum_t g(t) a[p+t]``."""
    n_, s_, h, l_ = a.shape
    r = (g.shape[0] - 1) // 2
    out = np.zeros((n_, s_, h + 2 * pad, l_), a.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for pc in range(h + 2 * pad):
            for it in range(2 * r + 1):
                src = pc - pad + it - r
                if src < 0 or src >= h:
                    continue
                gt = g[it]
                for q in range(l_):
                    out[n, s, pc, q] += gt * a[n, s, src, q]
    return out


@njit(**_JIT)
def _vblur_t(b, g, pad, h):
    """Adjoint of ``_vblur``: ``[N,S,H+2pad,L]`` -> ``[N,S,H,L]``."""
    n_, s_, _, l_ = b.shape
    r = (g.shape[0] - 1) // 2
    out = np.zeros((n_, s_, h, l_), b.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for src in range(h):
            for it in range(2 * r + 1):
                pc, gt = src + pad - it + r, g[it]
                for q in range(l_):
                    out[n, s, src, q] += gt * b[n, s, pc, q]
    return out


@njit(**_JIT)
def _vblur_dg(b, a, r, pad):
    """``dL/dg`` of ``_vblur(a, g)`` given ``b = dL/dout``, per ``(n, s)``. -> ``[N*S, 2r+1]``"""
    n_, s_, h, l_ = a.shape
    part = np.zeros((n_ * s_, 2 * r + 1), a.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for it in range(2 * r + 1):
            acc = part[ns, it]
            for src in range(h):
                pc = src + pad - it + r
                for q in range(l_):
                    acc += b[n, s, pc, q] * a[n, s, src, q]
            part[ns, it] = acc
    return part


@njit(**_JIT)
def _hblur_dg(b, x, r, pad):
    """``dL/dg`` of ``_hblur(x, g)`` given ``b = dL/dout``, per ``(n, s)``. -> ``[N*S, 2r+1]``"""
    n_, s_, h, w = x.shape
    part = np.zeros((n_ * s_, 2 * r + 1), x.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for iu in range(2 * r + 1):
            u = iu - r
            acc = part[ns, iu]
            for p in range(h):
                for q in range(max(-u, -pad), min(w - u, w + pad)):
                    acc += b[n, s, p, q + pad] * x[n, s, p, q + u]
            part[ns, iu] = acc
    return part


def _canvas(x, g1, g2, pad):
    """``x * outer(g1, g2)`` (``g1`` along rows, ``g2`` along columns) on the full canvas."""
    return _vblur(_hblur(x, g2, pad), g1, pad)


# ---------------------------------------------------------------- wide-row kernels (dau, stride 1)
#
# A map ``a`` of rows ``[y0, y0 + hp)`` and columns ``[x0, x0 + pw)`` (coordinates) is stored
# row-major with pitch ``pw``; a correlation output ``[Ho, Wo]`` is computed at the same pitch,
# ``o = i pw + j``.  A unit whose floor tap is at coordinate ``(fy, fx)`` then reads
# ``a[o + off + {0, 1, pw, pw + 1}]`` with ``off = (fy - y0) pw + fx - x0`` for every ``o``: one
# contiguous loop over ``(Ho - 1) pw + Wo`` outputs per unit, the columns ``j >= Wo`` of each row
# computed and discarded (waste ``pw / Wo``).  The window is chosen so that every read is inside
# it; a unit with ``off < 0`` reads only zeros and is skipped.


@njit(**_JIT)
def _blur_win(x, gr, gc, y0, x0, hp, pw):
    """``x * outer(gr, gc)`` (``gr`` along rows) on the window rows ``[y0, y0+hp)``, columns ``[x0, x0+pw)``.

    ``x [N,S,H,W]`` -> ``[N,S,hp,pw]`` (zero where the blur does not reach).
    MACs ``N S (H pw + hp pw) (2 rb + 1)`` at most.
    """
    n_, s_, h, w = x.shape
    r = (gr.shape[0] - 1) // 2
    out = np.zeros((n_, s_, hp, pw), x.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        tmp = np.zeros((h, pw), x.dtype)
        for p in range(h):
            row = x[n, s, p]
            for iu in range(2 * r + 1):
                u, gu = iu - r, gc[iu]
                qlo, qhi = max(x0, -u), min(x0 + pw, w - u)  # Q + u inside [0, W)
                if qhi <= qlo:
                    continue
                t, src = tmp[p, qlo - x0 : qhi - x0], row[qlo + u : qhi + u]
                for j in range(qhi - qlo):
                    t[j] += gu * src[j]
        for pc in range(hp):
            o = out[n, s, pc]
            for it in range(2 * r + 1):
                src_p = pc + y0 + it - r
                if src_p < 0 or src_p >= h:
                    continue
                gt, src = gr[it], tmp[src_p]
                for j in range(pw):
                    o[j] += gt * src[j]
    return out


@njit(**_JIT)
def _blur_win_t(b, gr, gc, y0, x0, h, w):
    """Adjoint of ``_blur_win``: ``b [N,S,hp,pw]`` -> ``[N,S,H,W]``."""
    n_, s_, hp, pw = b.shape
    r = (gr.shape[0] - 1) // 2
    out = np.zeros((n_, s_, h, w), b.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        tmp = np.zeros((h, pw), b.dtype)
        for p in range(h):
            t = tmp[p]
            for it in range(2 * r + 1):
                pc = p - (it - r) - y0
                if pc < 0 or pc >= hp:
                    continue
                gt, src = gr[it], b[n, s, pc]
                for j in range(pw):
                    t[j] += gt * src[j]
        for p in range(h):
            o = out[n, s, p]
            for iu in range(2 * r + 1):
                u, gu = iu - r, gc[iu]
                qlo, qhi = max(0, x0 + u), min(w, x0 + pw + u)  # q - u inside the window
                if qhi <= qlo:
                    continue
                dst, src = o[qlo:qhi], tmp[p, qlo - u - x0 : qhi - u - x0]
                for j in range(qhi - qlo):
                    dst[j] += gu * src[j]
    return out


_TILE = 16  # channels per tile of the wide-row kernels: a tile's rows of every operand stay in L2


@njit(**_JIT)
def _wide_shift(c, a, off, ho, wo, bias):
    """``y[n,f,i,j] = bias[f] + sum_{s,k,m} a[f,s,k,m] c[n,s, o + off[f,s,k] + (0, 1, pw, pw+1)[m]]``.

    ``c [N,S,hp,pw]`` windows, ``a [F,S,K,4]``, ``off [F,S,K]`` (``< 0``: skipped) -> ``[N,F,Ho,Wo]``.
    One task per ``(n, tile of f)``: each window row read once serves the tile's outputs.
    MACs ``4 N F S K ((Ho - 1) pw + Wo)`` (``4 P F S K`` times the waste ``pw / Wo``).
    """
    n_, s_, hp, pw = c.shape
    f_, _, k_ = off.shape
    m = (ho - 1) * pw + wo
    nt = (f_ + _TILE - 1) // _TILE
    y = np.empty((n_, f_, ho, wo), c.dtype)
    for task in prange(n_ * nt):
        n, f0 = task // nt, (task % nt) * _TILE
        f1 = min(f_, f0 + _TILE)
        acc = np.zeros((f1 - f0, m), c.dtype)
        for s in range(s_):
            cs = c[n, s].reshape(hp * pw)
            for f in range(f0, f1):
                af = acc[f - f0]
                for k in range(k_):
                    o = off[f, s, k]
                    if o < 0:
                        continue
                    a0, a1, a2, a3 = a[f, s, k, 0], a[f, s, k, 1], a[f, s, k, 2], a[f, s, k, 3]
                    u0, u1 = cs[o : o + m], cs[o + 1 : o + 1 + m]
                    u2, u3 = cs[o + pw : o + pw + m], cs[o + pw + 1 : o + pw + 1 + m]
                    for j in range(m):
                        af[j] += (a0 * u0[j] + a1 * u1[j]) + (a2 * u2[j] + a3 * u3[j])
        for f in range(f0, f1):
            for i in range(ho):
                yi, ai = y[n, f, i], acc[f - f0, i * pw : i * pw + wo]
                for j in range(wo):
                    yi[j] = ai[j] + bias[f]
    return y


@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def _wide_taps(c, d, off, m):
    """``C[f,s,k,m] = sum_{n,o<m} d[n,f,o] c[n,s, o + off[f,s,k] + (0, 1, pw, pw+1)[m]]``. -> ``[F,S,K,4]``

    ``d [N,F,Ho pw]``: ``dy`` at the window pitch with zero columns ``j >= Wo``; ``m = (Ho-1) pw + Wo``.
    One task per tile of ``(f, s)``; each sum runs over ``n`` in order, and within a row as a
    fixed-order reduction over vector lanes (``reassoc`` in this function only).  MACs ``4 N F S K L``.
    """
    n_, s_, hp, pw = c.shape
    f_, _, k_ = off.shape
    nfb, nsb = (f_ + _TILE - 1) // _TILE, (s_ + _TILE - 1) // _TILE
    out = np.zeros((f_, s_, k_, 4), c.dtype)
    for task in prange(nfb * nsb):
        f0, s0 = (task // nsb) * _TILE, (task % nsb) * _TILE
        zero = np.zeros(1, c.dtype)[0]  # accumulators in the input's dtype
        for n in range(n_):
            for f in range(f0, min(f_, f0 + _TILE)):
                dn = d[n, f]
                for s in range(s0, min(s_, s0 + _TILE)):
                    cs = c[n, s].reshape(hp * pw)
                    for k in range(k_):
                        o = off[f, s, k]
                        if o < 0:
                            continue
                        u0, u1 = cs[o : o + m], cs[o + 1 : o + 1 + m]
                        u2, u3 = cs[o + pw : o + pw + m], cs[o + pw + 1 : o + pw + 1 + m]
                        e = out[f, s, k]
                        t0 = t1 = t2 = t3 = zero
                        for j in range(m):
                            t0 += dn[j] * u0[j]
                            t1 += dn[j] * u1[j]
                            t2 += dn[j] * u2[j]
                            t3 += dn[j] * u3[j]
                        e[0], e[1], e[2], e[3] = e[0] + t0, e[1] + t1, e[2] + t2, e[3] + t3
    return out


@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def _plane_dots(a, b):
    """``sum_{p,q} a[n,s,p,q] b[n,s,p,q]`` per ``(n, s)`` (fixed-order lane reduction). -> ``[N*S]``"""
    n_, s_, h, w = a.shape
    out = np.zeros(n_ * s_, a.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        u, v = a[n, s].reshape(h * w), b[n, s].reshape(h * w)
        acc = out[ns]
        for j in range(h * w):
            acc += u[j] * v[j]
        out[ns] = acc
    return out


# ---------------------------------------------------------------- bilinear shift, per unit (dau)


@njit(**_JIT)
def _shift(c, a, fy, fx, st, ho, wo):
    """``y[n,f,i,j] = sum_{s,k,m} a[f,s,k,m] c[n,s, i st + fy + da, j st + fx + db]`` (``m = 2 da + db``).

    ``c [N,S,Hc,Wc]`` canvases with a zero border, ``a [F,S,K,4]``, ``fy, fx [F,S,K]`` canvas
    indices of the floors -> ``[N,F,Ho,Wo]``.  MACs ``4 P F S K``.
    """
    n_, s_, hc, wc = c.shape
    f_, _, k_ = fy.shape
    y = np.zeros((n_, f_, ho, wo), c.dtype)
    for nf in prange(n_ * f_):
        n, f = nf // f_, nf % f_
        for s in range(s_):
            for k in range(k_):
                r0, q0 = fy[f, s, k], fx[f, s, k]
                jlo, jhi = _lo(q0, st), _hi(q0, st, wc - 1, wo)
                if jhi <= jlo:
                    continue
                for i in _rows(r0, st, hc, ho):
                    p = i * st + r0
                    _row4(
                        y[n, f, i, jlo:jhi],
                        c[n, s, p],
                        c[n, s, p + 1],
                        a[f, s, k, 0],
                        a[f, s, k, 1],
                        a[f, s, k, 2],
                        a[f, s, k, 3],
                        jlo * st + q0,
                        jhi - jlo,
                        st,
                    )
    return y


@njit(**_JIT)
def _tapsums(c, dy, fy, fx, st):
    """``C[f,s,k,m] = sum_{n,i,j} dy[n,f,i,j] c[n,s, i st + fy + da, j st + fx + db]``. -> ``[F,S,K,4]``

    Every unit gradient is a combination of these four sums.  MACs ``4 P F S K``.
    """
    n_, s_, hc, wc = c.shape
    f_, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    k_ = fy.shape[2]
    out = np.zeros((f_, s_, k_, 4), c.dtype)
    for f in prange(f_):
        acc = np.zeros((4, wo), c.dtype)  # per-column partial sums: vectorisable, fixed order
        for s in range(s_):
            for k in range(k_):
                acc[:] = 0
                r0, q0 = fy[f, s, k], fx[f, s, k]
                jlo, jhi = _lo(q0, st), _hi(q0, st, wc - 1, wo)
                if jhi <= jlo:
                    continue
                for n in range(n_):
                    for i in _rows(r0, st, hc, ho):
                        p = i * st + r0
                        _dot4(acc, dy[n, f, i, jlo:jhi], c[n, s, p], c[n, s, p + 1], jlo * st + q0, jhi - jlo, st)
                for m in range(4):
                    for j in range(wo):
                        out[f, s, k, m] += acc[m, j]
    return out


@njit(**_JIT)
def _scatter(dy, a, fy, fx, st, s_, hc, wc):
    """Adjoint of ``_shift``: ``back[n,s] = sum_{f,k}`` stencil-weighted ``dy[n,f]``. -> ``[N,S,Hc,Wc]``

    MACs ``4 P F S K``.
    """
    n_, f_, ho, wo = dy.shape
    k_ = fy.shape[2]
    back = np.zeros((n_, s_, hc, wc), dy.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for f in range(f_):
            for k in range(k_):
                r0, q0 = fy[f, s, k], fx[f, s, k]
                jlo, jhi = _lo(q0, st), _hi(q0, st, wc - 1, wo)
                if jhi <= jlo:
                    continue
                for i in _rows(r0, st, hc, ho):
                    p, d = i * st + r0, dy[n, f, i, jlo:jhi]
                    for m in range(4):
                        _axpy(back[n, s, p + m // 2], jlo * st + q0 + m % 2, jhi - jlo, st, a[f, s, k, m], d)
    return back


# ---------------------------------------------------------------- shared bilinear shift (acu)


@njit(**_JIT)
def _sample(xp, a, fy, fx, st, out):
    """``out[n,k,s,i,j] = sum_m a[k,m] xp[n,s, i st + fy[k] + da, j st + fx[k] + db]`` (``m = 2 da + db``).

    ``xp [N,S,H+2,W+2]`` (zero border), ``a [Kc,4]``, ``fy, fx [Kc]`` canvas indices, written
    into ``out [N,Kc,S,Ho,Wo]``.  MACs ``4 N Kc S Ho Wo``.
    """
    n_, s_, hc, wc = xp.shape
    k_, ho, wo = out.shape[1], out.shape[3], out.shape[4]
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for k in range(k_):
            out[n, k, s] = 0
            r0, q0 = fy[k], fx[k]
            jlo, jhi = _lo(q0, st), _hi(q0, st, wc - 1, wo)
            if jhi <= jlo:
                continue
            for i in _rows(r0, st, hc, ho):
                p = i * st + r0
                _row4(
                    out[n, k, s, i, jlo:jhi],
                    xp[n, s, p],
                    xp[n, s, p + 1],
                    a[k, 0],
                    a[k, 1],
                    a[k, 2],
                    a[k, 3],
                    jlo * st + q0,
                    jhi - jlo,
                    st,
                )


@njit(**_JIT)
def _sample_back(xp, e, a, fy, fx, st, gxp, want_x):
    """Adjoint of ``_sample`` applied to ``e [N,Kc,S,Ho,Wo]``, added into ``gxp [N,S,H+2,W+2]`` (if ``want_x``);
    and per-``(n,s)`` corner sums ``sum_{ij} e xp[tap m]`` -> ``[N*S, Kc, 4]``.  MACs ``8 N Kc S Ho Wo``."""
    n_, s_, hc, wc = xp.shape
    k_, ho, wo = e.shape[1], e.shape[3], e.shape[4]
    part = np.zeros((n_ * s_, k_, 4), xp.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        acc = np.zeros((4, wo), xp.dtype)
        for k in range(k_):
            acc[:] = 0
            r0, q0 = fy[k], fx[k]
            jlo, jhi = _lo(q0, st), _hi(q0, st, wc - 1, wo)
            if jhi <= jlo:
                continue
            q = jlo * st + q0
            for i in _rows(r0, st, hc, ho):
                p, d = i * st + r0, e[n, k, s, i, jlo:jhi]
                _dot4(acc, d, xp[n, s, p], xp[n, s, p + 1], q, jhi - jlo, st)
                if want_x:
                    for m in range(4):
                        _axpy(gxp[n, s, p + m // 2], q + m % 2, jhi - jlo, st, a[k, m], d)
            for m in range(4):
                for j in range(wo):
                    part[ns, k, m] += acc[m, j]
    return part


# ---------------------------------------------------------------- separable N-Jet basis


@njit(**_JIT)
def _jet_h(x, d, st, wo):
    """Along columns (as ``_hblur``), strided: ``hx[n,s,a,p,j] = sum_u d[a,u] x[n,s,p, j st + u]``.

    -> ``[N,S,M,H,Wo]``: derivative ``a`` along columns of every row."""
    n_, s_, h, w = x.shape
    m_, nt = d.shape
    r = (nt - 1) // 2
    out = np.zeros((n_, s_, m_, h, wo), x.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for a in range(m_):
            for p in range(h):
                for iu in range(nt):
                    u = iu - r
                    jlo, jhi = _lo(u, st), _hi(u, st, w, wo)
                    if jhi > jlo:
                        _gaxpy(out[n, s, a, p, jlo:jhi], x[n, s, p], jlo * st + u, jhi - jlo, st, d[a, iu])
    return out


@njit(**_JIT)
def _jet_h_t(dh, d, st, w):
    """Adjoint of ``_jet_h``: ``[N,S,M,H,Wo]`` -> ``[N,S,H,W]``."""
    n_, s_, m_, h, wo = dh.shape
    nt = d.shape[1]
    r = (nt - 1) // 2
    out = np.zeros((n_, s_, h, w), dh.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for a in range(m_):
            for p in range(h):
                for iu in range(nt):
                    u = iu - r
                    jlo, jhi = _lo(u, st), _hi(u, st, w, wo)
                    if jhi > jlo:
                        _axpy(out[n, s, p], jlo * st + u, jhi - jlo, st, d[a, iu], dh[n, s, a, p, jlo:jhi])
    return out


@njit(**_JIT)
def _jet_v(hx, d, pairs, st, ho):
    """Along rows (as ``_vblur``), strided: ``B[n,s,jb,i] = sum_t d[b,t] hx[n,s,a, i st + t]``, ``(a,b) = pairs[jb]``.

    -> ``[N,S,J,Ho,Wo]``."""
    n_, s_, _, h, wo = hx.shape
    nt = d.shape[1]
    r = (nt - 1) // 2
    j_ = pairs.shape[0]
    out = np.zeros((n_, s_, j_, ho, wo), hx.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for jb in range(j_):
            a, b = pairs[jb, 0], pairs[jb, 1]
            for i in range(ho):
                for it in range(nt):
                    p = i * st + it - r
                    if p < 0 or p >= h:
                        continue
                    dt = d[b, it]
                    for j in range(wo):
                        out[n, s, jb, i, j] += dt * hx[n, s, a, p, j]
    return out


@njit(**_JIT)
def _jet_v_t(db, d, pairs, st, h, m_):
    """Adjoint of ``_jet_v``: ``[N,S,J,Ho,Wo]`` -> ``[N,S,M,H,Wo]``."""
    n_, s_, j_, ho, wo = db.shape
    nt = d.shape[1]
    r = (nt - 1) // 2
    out = np.zeros((n_, s_, m_, h, wo), db.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for jb in range(j_):
            a, b = pairs[jb, 0], pairs[jb, 1]
            for i in range(ho):
                for it in range(nt):
                    p = i * st + it - r
                    if p < 0 or p >= h:
                        continue
                    dt = d[b, it]
                    for j in range(wo):
                        out[n, s, a, p, j] += dt * db[n, s, jb, i, j]
    return out


@njit(**_JIT)
def _jet_dd(x, hx, db, dh, pairs, st, nt):
    """``dL/dd[m, t]`` (the 1-D filter taps) per ``(n, s)``, from both passes. -> ``[N*S, M, nt]``

    ``db = dL/dB [N,S,J,Ho,Wo]``, ``dh = dL/dhx [N,S,M,H,Wo]``.  MACs ``P S J w + N S H Wo M w``.
    """
    n_, s_, m_, h, wo = hx.shape
    w = x.shape[3]
    j_, ho = db.shape[2], db.shape[3]
    r = (nt - 1) // 2
    part = np.zeros((n_ * s_, m_, nt), x.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for jb in range(j_):
            a, b = pairs[jb, 0], pairs[jb, 1]
            for it in range(nt):
                acc = part[ns, b, it]
                for i in range(ho):
                    p = i * st + it - r
                    if p < 0 or p >= h:
                        continue
                    for j in range(wo):
                        acc += db[n, s, jb, i, j] * hx[n, s, a, p, j]
                part[ns, b, it] = acc
        for a in range(m_):
            for iu in range(nt):
                u = iu - r
                acc = part[ns, a, iu]
                for p in range(h):
                    for j in range(_lo(u, st), _hi(u, st, w, wo)):
                        acc += dh[n, s, a, p, j] * x[n, s, p, j * st + u]
                part[ns, a, iu] = acc
    return part


# ---------------------------------------------------------------- dense strided correlation (dau_gauss)


@njit(**_JIT)
def _corr(x, kern, st, ho, wo):
    """``y[n,f,i,j] = sum_{s,t,u} kern[f,s,t,u] x[n,s, i st + t, j st + u]`` (centred taps).

    ``x [N,S,H,W]``, ``kern [F,S,2R+1,2R+1]`` -> ``[N,F,Ho,Wo]``.  MACs ``P F S R2``.
    """
    n_, s_, h, w = x.shape
    f_, _, nt, _ = kern.shape
    r = (nt - 1) // 2
    y = np.zeros((n_, f_, ho, wo), x.dtype)
    for nf in prange(n_ * f_):
        n, f = nf // f_, nf % f_
        for s in range(s_):
            for it in range(nt):
                for i in range(ho):
                    p = i * st + it - r
                    if p < 0 or p >= h:
                        continue
                    for iu in range(nt):
                        u = iu - r
                        jlo, jhi = _lo(u, st), _hi(u, st, w, wo)
                        if jhi > jlo:
                            _gaxpy(y[n, f, i, jlo:jhi], x[n, s, p], jlo * st + u, jhi - jlo, st, kern[f, s, it, iu])
    return y


@njit(**_JIT)
def _corr_dx(dy, kern, st, h, w):
    """Adjoint of ``_corr`` in ``x``: ``dy [N,F,Ho,Wo]`` -> ``[N,S,H,W]``.  MACs ``P F S R2``."""
    n_, f_, ho, wo = dy.shape
    s_, nt = kern.shape[1], kern.shape[2]
    r = (nt - 1) // 2
    out = np.zeros((n_, s_, h, w), dy.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        for f in range(f_):
            for it in range(nt):
                for i in range(ho):
                    p = i * st + it - r
                    if p < 0 or p >= h:
                        continue
                    for iu in range(nt):
                        u = iu - r
                        jlo, jhi = _lo(u, st), _hi(u, st, w, wo)
                        if jhi > jlo:
                            _axpy(out[n, s, p], jlo * st + u, jhi - jlo, st, kern[f, s, it, iu], dy[n, f, i, jlo:jhi])
    return out


@njit(**_JIT)
def _corr_dk(x, dy, r, st):
    """Adjoint of ``_corr`` in the kernel: ``sum_{n,i,j} dy[n,f,i,j] x[n,s, i st + t, j st + u]``.

    -> ``[F,S,2r+1,2r+1]``.  MACs ``P F S R2``.
    """
    n_, s_, h, w = x.shape
    f_, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    nt = 2 * r + 1
    out = np.zeros((f_, s_, nt, nt), x.dtype)
    for fs in prange(f_ * s_):
        f, s = fs // s_, fs % s_
        acc = np.zeros(wo, x.dtype)
        for it in range(nt):
            for iu in range(nt):
                u = iu - r
                jlo, jhi = _lo(u, st), _hi(u, st, w, wo)
                acc[:] = 0
                for n in range(n_):
                    for i in range(ho):
                        p = i * st + it - r
                        if p < 0 or p >= h:
                            continue
                        if jhi > jlo:
                            _dot(acc[jlo:jhi], dy[n, f, i, jlo:jhi], x[n, s, p], jlo * st + u, jhi - jlo, st)
                for j in range(wo):
                    out[f, s, it, iu] += acc[j]
    return out
