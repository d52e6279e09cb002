"""Backend ``numba``: its parallel Numba CPU kernels (the layers that call them: ``layers``).

Kernels are ``@njit(parallel=True, cache=True)``, compiled once per process and dtype
(float32 or float64, computed in the input dtype); ``fastmath=False`` except the functions
that say otherwise (``contract`` in the register-blocked DAU kernels, the window blurs and
their adjoint and ``_sigma_dots``: fused multiply-adds, fixed at compile time).  Before numba
starts, ``target`` turns on LLVM's SLP vectorizer and, on AVX-512 CPUs, the 512-bit vector width
(or records why it could not).  Each ``prange`` task
owns the output elements it writes, and reductions run in a fixed order, so every result is
bit-identical from run to run whatever the thread count.  They take and return NumPy arrays;
``layers`` is their only caller.

``dau`` at stride 1 uses the register-blocked kernels (section "register-blocked kernels"
below): the blurred input lives on a window padded so that every read of every unit is in
bounds, and a block of outputs (forward, input gradient) or of tap sums (weight and mu
gradients) stays in vector registers while the units stream through it.  Stride > 1, or
displacement spreads that would waste more than ``layers._WASTE`` columns per row, use the
per-row kernels on a canvas with one zero border pixel beyond everything that can be non-zero
(index = coordinate + ``pad``): a bilinear sample whose 2x2 stencil is not fully inside the
canvas reads only zeros and is skipped; the valid row and column ranges of each unit are
computed once (``_rows``, ``_lo``, ``_hi``).
"""

import os

import numpy as np

from ... import _math
from . import target

_VEC = target.configure()  # before numba's CPU target starts: SLP and the full vector width

import numba  # noqa: E402
from numba import njit, prange, types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

_JIT = {"parallel": True, "fastmath": False, "cache": True}
_CJIT = {"parallel": True, "fastmath": {"contract"}, "cache": True}  # fused multiply-adds


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


# ---------------------------------------------------------------- windows (dau, stride 1)
#
# A map ``a`` of rows ``[y0, y0 + hp)`` and columns ``[x0, x0 + pw)`` (coordinates) is stored
# row-major with pitch ``pw``; a correlation output ``[Ho, Wo]`` is computed at the same pitch,
# ``o = i pw + j``.  A unit whose floor tap is at coordinate ``(fy, fx)`` then reads
# ``a[o + off + {0, 1, pw, pw + 1}]`` with ``off = (fy - y0) pw + fx - x0``.  The window is chosen so
# that every read of the kernels below is inside it; a unit with ``off < 0`` reads only zeros and is skipped.


@njit(cache=True, inline="always")
def _hpass(tmp, x1, xb, gc, x0, pw, h, w):
    """The blur along columns of one plane (flat ``x1`` from ``xb``, ``[H, W]``) onto the window's
    columns ``[x0, x0 + pw)``: ``tmp[p pw + q] += sum_u gc[u + r] x[p, x0 + q + u]``, taps in order."""
    r = (gc.shape[0] - 1) // 2
    for p in range(h):
        for iu in range(2 * r + 1):
            u, gu = iu - r, gc[iu]
            qlo, qhi = max(x0, -u), min(x0 + pw, w - u)  # Q + u inside [0, W)
            if qhi <= qlo:
                continue
            dst = np.uint64(p * pw + qlo - x0)
            src = xb + np.uint64(p * w + qlo + u)
            for j in range(np.uint64(qhi - qlo)):
                tmp[dst + j] = tmp[dst + j] + gu * x1[src + j]


@njit(**_CJIT)
def _blur_win(x, gr, gc, y0, x0, hp, pw):
    """``x * outer(gr, gc)`` (``gr`` along rows) on the window rows ``[y0, y0+hp)``, columns ``[x0, x0+pw)``.

    ``x [N,S,H,W]`` -> ``[N,S,hp,pw]`` (zero where the blur does not reach).  Flat unsigned
    indices (no slices: a slice per row and tap cost more than its few dozen MACs); each output
    a fixed-order sum over the taps, FMA-contracted (reference/README.md section 9).
    MACs ``N S (H pw + hp pw) (2 rb + 1)`` at most.
    """
    n_, s_, h, w = x.shape
    r = (gr.shape[0] - 1) // 2
    out = np.zeros((n_, s_, hp, pw), x.dtype)
    x1, o1 = x.reshape(-1), out.reshape(-1)
    for ns in prange(n_ * s_):
        tmp = np.zeros(h * pw, x.dtype)
        xb, ob = np.uint64(ns * h * w), np.uint64(ns * hp * pw)
        _hpass(tmp, x1, xb, gc, x0, pw, h, w)
        for pc in range(hp):
            dst = ob + np.uint64(pc * pw)
            for it in range(2 * r + 1):
                src_p = pc + y0 + it - r
                if src_p < 0 or src_p >= h:
                    continue
                gt, src = gr[it], np.uint64(src_p * pw)
                for j in range(np.uint64(pw)):
                    o1[dst + j] = o1[dst + j] + gt * tmp[src + j]
    return out


@njit(**_CJIT)
def _blur_win_t(b, gr, gc, y0, x0, h, w):
    """Adjoint of ``_blur_win``: ``b [N,S,hp,pw]`` -> ``[N,S,H,W]``; flat unsigned indices and
    FMA-contracted fixed-order tap sums, as ``_blur_win``."""
    n_, s_, hp, pw = b.shape
    r = (gr.shape[0] - 1) // 2
    out = np.zeros((n_, s_, h, w), b.dtype)
    b1, o1 = b.reshape(-1), out.reshape(-1)
    for ns in prange(n_ * s_):
        tmp = np.zeros(h * pw, b.dtype)
        bb, ob = np.uint64(ns * hp * pw), np.uint64(ns * h * w)
        for p in range(h):
            dst = np.uint64(p * pw)
            for it in range(2 * r + 1):
                pc = p - (it - r) - y0
                if pc < 0 or pc >= hp:
                    continue
                gt, src = gr[it], bb + np.uint64(pc * pw)
                for j in range(np.uint64(pw)):
                    tmp[dst + j] = tmp[dst + j] + gt * b1[src + j]
        for p in range(h):
            for iu in range(2 * r + 1):
                u, gu = iu - r, gc[iu]
                qlo, qhi = max(0, x0 + u), min(w, x0 + pw + u)  # q - u inside the window
                if qhi <= qlo:
                    continue
                dst = ob + np.uint64(p * w + qlo)
                src = np.uint64(p * pw + qlo - u - x0)
                for j in range(np.uint64(qhi - qlo)):
                    o1[dst + j] = o1[dst + j] + gu * tmp[src + j]
    return out


@njit(**_CJIT)
def _sigma_dots(b, x, g, dg, y0, x0):
    """``sum_{p,q} b[n,s,p,q] (x * (outer(dg, g) + outer(g, dg)))[n,s, y0+p, x0+q]`` per ``(n, s)`` -> ``[N*S]``.

    The sigma gradient's terms: ``dG/dsigma`` of the separable blur ``G = outer(g, g)`` is
    ``outer(dg, g) + outer(g, dg)``.  Both horizontal passes (``g``, ``dg``) of one plane are kept
    on the stack of its task; each window row of the blurred derivative is formed once and met
    with ``b``'s row at once (no blurred map is stored).  Lane sums over the row, added in order at
    the end: a fixed order whatever the thread count.  ``b [N,S,hp,pw]``, ``x [N,S,H,W]``.
    """
    n_, s_, hp, pw = b.shape
    h, w = x.shape[2], x.shape[3]
    r = (g.shape[0] - 1) // 2
    out = np.zeros(n_ * s_, b.dtype)
    x1, b1 = x.reshape(-1), b.reshape(-1)
    for ns in prange(n_ * s_):
        hg, hd = np.zeros(h * pw, b.dtype), np.zeros(h * pw, b.dtype)
        row, lanes = np.empty(pw, b.dtype), np.zeros(pw, b.dtype)
        xb, bb = np.uint64(ns * h * w), np.uint64(ns * hp * pw)
        _hpass(hg, x1, xb, g, x0, pw, h, w)
        _hpass(hd, x1, xb, dg, x0, pw, h, w)
        for pc in range(hp):
            for j in range(pw):
                row[j] = 0
            for it in range(2 * r + 1):
                src_p = pc + y0 + it - r
                if src_p < 0 or src_p >= h:
                    continue
                gt, dt, src = g[it], dg[it], np.uint64(src_p * pw)
                for j in range(np.uint64(pw)):
                    row[j] = row[j] + dt * hg[src + j] + gt * hd[src + j]
            src = bb + np.uint64(pc * pw)
            for j in range(np.uint64(pw)):
                lanes[j] = lanes[j] + b1[src + j] * row[j]
        t = lanes[0]
        for j in range(1, pw):
            t += lanes[j]
        out[ns] = t
    return out


# ---------------------------------------------------------------- register-blocked kernels (dau, stride 1)
#
# A loop over each unit's whole window (the kernels these replaced) keeps every accumulator in
# memory: one load and one store of it per four input loads.  These kernels keep a block of
# accumulators in registers instead: small arrays on the stack (``_stack``) indexed only by
# constants after LLVM unrolls the short loops over them, which SROA turns into scalars and the
# SLP vectorizer into vectors (``target`` turns SLP on and, on AVX-512, the 512-bit width).
# ``fastmath={"contract"}`` lets LLVM fuse each ``acc + a * b`` into one FMA (one rounding instead
# of two: the error bound of reference/README.md section 9 holds for any association and for fused
# products; the code is fixed at compile time, so results stay bit-identical run to run).  Indices
# are unsigned (``np.uint64``): signed ones make numba emit wrap-around selects that stop LLVM
# from vectorising the loads.  The ``+1`` column is read through ``one``, a runtime argument equal
# to 1: with a constant LLVM merges the two loads into shuffles.  Block sizes follow the vector
# width: 8 rows x 16 columns of one output channel (8 zmm accumulators) on AVX-512, 4 rows on
# narrower vectors (16 ymm registers only); the tap sums keep 4 units x 4 taps x 16 columns (16
# zmm; spilled in part on AVX2).

_WIDE = target.verify()["numba_vector_bits"] >= 512  # the width numba's target really has
_RB = 8 if _WIDE else 4  # output rows per block (_rb_shift)
_CW = 16  # output columns per block: one vector of float32 at 512 bits
_ACC = _RB * _CW
_TACC = 4 * _CW  # sums of one unit (_rb_taps): four taps x one column block
_TF, _TS = 32, 8  # output x input channels per task of _rb_taps
# Numba's cache does not key on the SLP setting: without SLP these kernels compile to scalar code,
# so they are cached only when SLP is on (a cache written with it off would be loaded with it on).
_RBJIT = {"parallel": True, "fastmath": {"contract"}, "cache": bool(_VEC["numba_slp"])}


@intrinsic
def _stack(typingctx, n, dtype):
    """Pointer to ``n`` (a literal) elements of ``dtype`` on the stack of the calling function."""
    if not isinstance(n, types.IntegerLiteral):
        return None
    el = dtype.dtype if isinstance(dtype, types.DType) else dtype.instance_type
    size = n.literal_value

    def codegen(context, builder, sig, args):
        return cgutils.alloca_once(builder, context.get_value_type(el), size=context.get_constant(types.intp, size))

    return types.CPointer(el)(n, dtype), codegen


def _l1_bytes():
    """This CPU's level-1 data cache in bytes (Linux sysfs), 32 KiB where it cannot be read."""
    try:
        for d in sorted(os.listdir(_CACHES)):
            path = os.path.join(_CACHES, d)
            with open(os.path.join(path, "level")) as lv, open(os.path.join(path, "type")) as ty:
                if lv.read().strip() == "1" and ty.read().strip() == "Data":
                    with open(os.path.join(path, "size")) as sz:
                        return int(sz.read().strip().rstrip("K")) * 1024
    except (OSError, ValueError):
        pass
    return 32 * 1024


_CACHES = "/sys/devices/system/cpu/cpu0/cache"
L1 = _l1_bytes()


def channel_block(hp, ho, wo, pw, itemsize):
    """Input channels per pass of ``_rb_shift`` over a ``[hp, pw]`` window and ``[Ho, Wo]`` outputs: as
    many (a multiple of 4, from 4 to 12) as keep what one column block reads again for every ``f``
    (the ``_RB + hp - nrb _RB`` rows of one row block over ``_CW`` columns and the halo) within L1.
    Measured on an AMD EPYC (32 KiB L1, AVX-512, one thread), DAU paper case, kernel only: forward
    22.4 ms at 8 or 12 against 23.6 at 16 and 25.2 at 4; input gradient (two images side by side)
    35.3-35.8 ms at 8 or 12 against 36.5 at 16.  The sum over channels runs in blocks of this size
    (each block's sum added to ``y`` in turn): fixed for a machine and shape, so results are
    bit-identical run to run; another L1 size may group the sum differently."""
    nrb, ncb = -(-ho // _RB), -(-wo // _CW)
    per = (_RB + hp - nrb * _RB) * (pw - (ncb - 1) * _CW) * itemsize
    return max(4, min(12, L1 // max(1, per) // 4 * 4))


def blocked_window(ho, wo, y0, y1, x0, x1):
    """Rows and pitch of the window ``_rb_shift`` reads for an ``[Ho, Wo]`` output of units whose
    floors span rows ``[y0, y1)`` and columns ``[x0, x1)``: whole blocks of ``_RB`` rows and ``_CW``
    columns, each read in bounds (the outputs past ``Ho``, ``Wo`` are computed and dropped)."""
    nrb, ncb = -(-ho // _RB), -(-wo // _CW)
    return nrb * _RB + y1 - y0, ncb * _CW + x1 - x0


@njit(cache=True, inline="always")
def _rb_block(acc, c1, ua, uoff, y, bias, n, f, rb, cb, u0, u1, first, base0, upw, uone, rows, wo):
    """One ``_RB x _CW`` block of ``y[n, f]`` (row block ``rb``, column block ``cb``) over the units
    ``[u0, u1)`` of the list (``unit_lists``: coefficients ``ua``, flat offsets ``uoff`` from the block's
    corner ``base0``): accumulated in registers, then stored (``first``, with the bias) or added."""
    for r in range(_RB):
        for j in range(_CW):
            acc[r, j] = 0
    for u in range(u0, u1):
        a0, a1, a2, a3 = ua[u, 0], ua[u, 1], ua[u, 2], ua[u, 3]
        base = base0 + np.uint64(uoff[u])
        for r in range(_RB + 1):
            p = base + np.uint64(r) * upw
            q = p + uone
            if r < _RB:
                for j in range(_CW):
                    acc[r, j] = acc[r, j] + a0 * c1[p + np.uint64(j)]
                    acc[r, j] = acc[r, j] + a1 * c1[q + np.uint64(j)]
            if r > 0:
                for j in range(_CW):
                    acc[r - 1, j] = acc[r - 1, j] + a2 * c1[p + np.uint64(j)]
                    acc[r - 1, j] = acc[r - 1, j] + a3 * c1[q + np.uint64(j)]
    j0 = cb * _CW
    cols = min(_CW, wo - j0)
    for r in range(rows):
        yr = y[n, f, rb * _RB + r]
        if first:
            for j in range(cols):
                yr[j0 + j] = bias[f] + acc[r, j]
        else:
            for j in range(cols):
                yr[j0 + j] += acc[r, j]


@njit(**_RBJIT)
def _rb_shift(c, ua, uoff, start, ho, wo, one, bias):
    """``y[n,f,i,j] = bias[f] + sum_u ua[u,m] c[n, uoff[u] + i pw + j + (0, 1, pw, pw+1)[m]]`` over ``f``'s units.

    ``c [N,S,hp,pw]`` windows shaped by ``blocked_window``; the active units from ``unit_lists`` in
    blocks of ``channel_block`` input channels (``start [F, nb + 1]``; the offsets ``uoff`` include the
    unit's channel plane, of its group), their coefficients ``ua [U, 4]`` (``unit_coefs``), ``one`` =
    1 -> ``[N,F,Ho,Wo]``.  One task per ``(n, block of _RB rows)``; per channel block, column block and
    ``f``, a block of ``_RB x _CW`` outputs lives in registers while the units add their four taps
    (each input row loaded once serves two output rows), then is added to ``y``: the sum over units
    runs in a fixed order.  A flat list (no loop over ``(s, k)`` with a skip of inactive units) ran
    5.5% faster: 22.0 -> 20.8 ms at the paper case, AMD EPYC, one thread.  MACs ``4 P F S K / G``
    times the block waste (none when ``_RB | Ho`` and ``_CW | Wo``).
    """
    n_, s_, hp, pw = c.shape
    f_, nb = start.shape[0], start.shape[1] - 1
    c1 = c.reshape(-1)
    upw, uone = np.uint64(pw), np.uint64(one)
    nrb, ncb = (ho + _RB - 1) // _RB, (wo + _CW - 1) // _CW
    y = np.empty((n_, f_, ho, wo), c.dtype)
    for task in prange(n_ * nrb):
        n, rb = task // nrb, task % nrb
        acc = numba.carray(_stack(_ACC, c.dtype), (_RB, _CW))
        rows = min(_RB, ho - rb * _RB)
        for b in range(nb):
            for cb in range(ncb):  # the rows of one column block and its halo stay in L1 for every f
                base0 = np.uint64((n * s_ * hp + rb * _RB) * pw + cb * _CW)
                for f in range(f_):
                    u0, u1 = start[f, b], start[f, b + 1]
                    _rb_block(acc, c1, ua, uoff, y, bias, n, f, rb, cb, u0, u1, b == 0, base0, upw, uone, rows, wo)
    return y


@njit(cache=True)
def unit_lists(off, plane, groups=1, ts=_TS):
    """The active units (``off >= 0``) of ``off [F, S/G, K]``, ordered by ``(f, s, k)``: ``start [F, nsb + 1]``
    (where the units of ``f`` with ``s`` in block ``b`` of ``ts`` channels begin and end), the units'
    ``(s, k)``, their flat offsets ``c plane + off`` into one image's windows (``c = (f // (F/G)) S/G + s``,
    the input channel of a unit of ``groups`` channel groups) and ``S/G``.  One pass (0.66 ms in NumPy
    at the paper case's 24576 units).  ``_rb_taps`` takes blocks of ``_TS``, ``_rb_shift`` of
    ``channel_block``."""
    f_, s_, k_ = off.shape
    nsb = (s_ + ts - 1) // ts
    fg = f_ // groups
    total = 0
    for v in off.reshape(-1):
        total += v >= 0
    start = np.zeros((f_, nsb + 1), np.int64)
    sk, uoff = np.empty((total, 2), np.int64), np.empty(total, np.int64)
    u = 0
    for f in range(f_):
        start[f, 0] = u
        for b in range(nsb):
            for s in range(b * ts, min(s_, b * ts + ts)):
                for k in range(k_):
                    if off[f, s, k] >= 0:
                        sk[u, 0], sk[u, 1] = s, k
                        uoff[u] = (f // fg * s_ + s) * plane + off[f, s, k]
                        u += 1
            start[f, b + 1] = u
    return start, sk, uoff, s_


@njit(cache=True)
def unit_coefs(a, start, sk):
    """The coefficients ``a [F, S/G, K, 4]`` of ``unit_lists``' units, in its order -> ``[U, 4]``."""
    out = np.empty((sk.shape[0], 4), a.dtype)
    for f in range(start.shape[0]):
        for u in range(start[f, 0], start[f, start.shape[1] - 1]):
            for m in range(4):
                out[u, m] = a[f, sk[u, 0], sk[u, 1], m]
    return out


@njit(cache=True, inline="always")
def _taps_unit(acc, c1, p, q, d1, di, dj, rows):
    """One unit, one window row and one column block: ``acc [4, _CW]`` (tap ``m``, lane) += the row's
    two loads (columns ``p + j`` and ``q + j``, ``q = p + 1``) times ``d`` at flat ``di`` (the row
    below: taps 0, 1; when ``rows & 1``) and at ``dj`` (the row above: taps 2, 3; when ``rows & 2``).
    ``rows`` is a constant at every call, so each call is branch-free."""
    if rows & 1:
        for j in range(_CW):
            dv = d1[di + np.uint64(j)]
            acc[0, j] = acc[0, j] + dv * c1[p + np.uint64(j)]
            acc[1, j] = acc[1, j] + dv * c1[q + np.uint64(j)]
    if rows & 2:
        for j in range(_CW):
            dv = d1[dj + np.uint64(j)]
            acc[2, j] = acc[2, j] + dv * c1[p + np.uint64(j)]
            acc[3, j] = acc[3, j] + dv * c1[q + np.uint64(j)]


@njit(cache=True, inline="always")
def _taps_row(acc0, acc1, acc2, acc3, c1, ci, o0, o1, o2, o3, uone, d1, di, dj, nfull, rows):
    """Every whole column block of one window row for the four units of a group."""
    for jb in range(nfull):
        j0 = np.uint64(jb * _CW)
        p, e, f = ci + j0, di + j0, dj + j0
        _taps_unit(acc0, c1, p + o0, p + o0 + uone, d1, e, f, rows)
        _taps_unit(acc1, c1, p + o1, p + o1 + uone, d1, e, f, rows)
        _taps_unit(acc2, c1, p + o2, p + o2 + uone, d1, e, f, rows)
        _taps_unit(acc3, c1, p + o3, p + o3 + uone, d1, e, f, rows)


@njit(cache=True, inline="always")
def _acc_io(buf, u, acc, store):
    """Copy the sums of unit ``u`` between ``buf [U, 4, _CW]`` and the register block ``acc [4, _CW]``."""
    for m in range(4):
        for j in range(_CW):
            if store:
                buf[u, m, j] = acc[m, j]
            else:
                acc[m, j] = buf[u, m, j]


@njit(**_RBJIT)
def _rb_taps(c, d, start, sk, uoff, sg, k_, one):
    """``C[f,s,k,m] = sum_{n,i,j} d[n,f,i,j] c[n,s, o + i pw + j + (0, 1, pw, pw+1)[m]]`` -> ``[F,S/G,K,4]``
    (channel groups: ``c``'s channel is the one of ``unit_lists``, ``sg = S/G``).

    ``c [N,S,hp,pw]`` windows (every read in bounds for ``i < Ho``, ``j < Wo``), ``d [N,F,Ho,Wo]``,
    the active units from ``unit_lists`` (inactive ones stay 0), ``one`` = 1.  One task per block
    of ``_TF`` output x ``_TS`` input channels (their planes of one image stay in L2), over the
    images in order; per image and ``f``, the block's units of ``f`` in groups of four share each
    ``d`` vector, and every window row is loaded once per unit and serves two rows of ``d``.  A
    group's 4 x 4 sums are ``_CW``-lane vectors in registers (four stack arrays, one per unit,
    written out: a loop over units would index them by a variable and keep them in memory), saved
    between images in ``buf``; the columns past the last whole block go lane by lane into
    ``tail``; at the end the lanes are summed in order.  Every sum runs in a fixed order whatever
    the thread count.  Only columns ``j < Wo`` are read (no ``0 * inf``).  MACs ``4 P F S K``.
    """
    n_, s_, hp, pw = c.shape
    f_, ho, wo = d.shape[1], d.shape[2], d.shape[3]
    c1, d1 = c.reshape(-1), d.reshape(-1)
    upw, uone, uwo = np.uint64(pw), np.uint64(one), np.uint64(wo)
    nfull = wo // _CW
    nsb, nfb = start.shape[1] - 1, (f_ + _TF - 1) // _TF
    out = np.zeros((f_, sg, k_, 4), c.dtype)
    for task in prange(nfb * nsb):
        fb, sb = task // nsb, task % nsb
        f0, f1 = fb * _TF, min(f_, fb * _TF + _TF)
        bofs = np.zeros(f1 - f0 + 1, np.int64)  # where the units of each f begin in buf: whole groups of 4
        for f in range(f0, f1):
            bofs[f - f0 + 1] = bofs[f - f0] + (start[f, sb + 1] - start[f, sb] + 3) // 4 * 4
        buf = np.zeros((bofs[f1 - f0], 4, _CW), c.dtype)  # the block's units, in (f, s, k) order
        tail = np.zeros((bofs[f1 - f0], 4, _CW), c.dtype)  # indexed by a variable: kept apart from the registers
        acc0 = numba.carray(_stack(_TACC, c.dtype), (4, _CW))
        acc1 = numba.carray(_stack(_TACC, c.dtype), (4, _CW))
        acc2 = numba.carray(_stack(_TACC, c.dtype), (4, _CW))
        acc3 = numba.carray(_stack(_TACC, c.dtype), (4, _CW))
        maxg = 0
        for f in range(f0, f1):
            maxg = max(maxg, (start[f, sb + 1] - start[f, sb] + 3) // 4)
        for n in range(n_):
            cn = np.uint64(n * s_ * hp * pw)
            # group gi of every f in turn: units in (s, k) order, so the f's read the same few
            # channel planes one after the other (in L1), and the block's dy planes stay in L2
            for gi in range(maxg):
                for f in range(f0, f1):
                    u0, u1 = start[f, sb], start[f, sb + 1]
                    g = u0 + 4 * gi
                    if g >= u1:
                        continue
                    dn = np.uint64((n * f_ + f) * ho) * uwo
                    b = bofs[f - f0] + g - u0  # buf row of unit g
                    _acc_io(buf, b, acc0, False)
                    _acc_io(buf, b + 1, acc1, False)
                    _acc_io(buf, b + 2, acc2, False)
                    _acc_io(buf, b + 3, acc3, False)
                    last = u1 - 1  # a short last group repeats its last unit (its sums are dropped)
                    o0, o1 = cn + np.uint64(uoff[g]), cn + np.uint64(uoff[min(g + 1, last)])
                    o2, o3 = cn + np.uint64(uoff[min(g + 2, last)]), cn + np.uint64(uoff[min(g + 3, last)])
                    for i in range(ho + 1):
                        di = dn + np.uint64(i) * uwo  # d row i (read when i < Ho) and row i - 1 (when i > 0)
                        ci = np.uint64(i) * upw
                        dj = di - uwo
                        if 0 < i < ho:  # the constants 3, 1, 2 make three branch-free copies of the loop
                            _taps_row(acc0, acc1, acc2, acc3, c1, ci, o0, o1, o2, o3, uone, d1, di, dj, nfull, 3)
                        elif i == 0 and ho > 0:
                            _taps_row(acc0, acc1, acc2, acc3, c1, ci, o0, o1, o2, o3, uone, d1, di, dj, nfull, 1)
                        elif i == ho and ho > 0:
                            _taps_row(acc0, acc1, acc2, acc3, c1, ci, o0, o1, o2, o3, uone, d1, di, dj, nfull, 2)
                        j0 = np.uint64(nfull * _CW)
                        for j in range(wo - nfull * _CW):  # the columns past the last whole block, lane by lane
                            uj = j0 + np.uint64(j)
                            for u in range(min(4, u1 - g)):
                                p = ci + (o0, o1, o2, o3)[u] + uj
                                if i < ho:
                                    dv = d1[di + uj]
                                    tail[b + u, 0, j] += dv * c1[p]
                                    tail[b + u, 1, j] += dv * c1[p + uone]
                                if i > 0:
                                    dv = d1[dj + uj]
                                    tail[b + u, 2, j] += dv * c1[p]
                                    tail[b + u, 3, j] += dv * c1[p + uone]
                    _acc_io(buf, b, acc0, True)
                    _acc_io(buf, b + 1, acc1, True)
                    _acc_io(buf, b + 2, acc2, True)
                    _acc_io(buf, b + 3, acc3, True)
        for f in range(f0, f1):
            for g in range(start[f, sb], start[f, sb + 1]):
                b = bofs[f - f0] + g - start[f, sb]
                s, k = sk[g, 0], sk[g, 1]
                for m in range(4):
                    t = buf[b, m, 0]
                    for j in range(1, _CW):
                        t += buf[b, m, j]
                    for j in range(_CW):
                        t += tail[b, m, j]
                    out[f, s, k, m] = t
    return out


# ---------------------------------------------------------------- units' set-up (dau)


@njit(cache=True, inline="always")
def _tap4(y0, y1, x0, x1):
    """The four stencil weights ``wy[da] wx[db]``, index ``m = 2 da + db``."""
    return y0 * x0, y0 * x1, y1 * x0, y1 * x1


@njit(cache=True)
def units(mu_y, mu_x, w):
    """Floors, 1-D bilinear weights and stencil coefficients of ``U`` units in one pass, each rounded as
    ``_math.bilinear`` and ``layers._taps4`` round them (so bit for bit theirs): ``fl = floor(mu)``
    clamped to ``+-2^40``; ``w0 = (fl + 1) - mu``, ``w1 = mu - fl``; ``a[m] = w (wy[da] wx[db])``,
    ``m = 2 da + db``, the weights' product first.  ``mu_y, mu_x, w [U]`` of one dtype ->
    ``fy, fx`` int64 ``[U]``, ``wy, wx [U, 2]``, ``a [U, 4]``.  0.04 ms at the paper case's 24576
    units, against 0.6 ms for the torch ops it replaces."""
    u_ = w.shape[0]
    fy, fx = np.empty(u_, np.int64), np.empty(u_, np.int64)
    wy, wx = np.empty((u_, 2), w.dtype), np.empty((u_, 2), w.dtype)
    a = np.empty((u_, 4), w.dtype)
    one = w.dtype.type(1)
    for u in range(u_):
        ly, lx = np.floor(mu_y[u]), np.floor(mu_x[u])
        y0, y1 = (ly + one) - mu_y[u], mu_y[u] - ly
        x0, x1 = (lx + one) - mu_x[u], mu_x[u] - lx
        fy[u] = np.int64(min(max(ly, -_math.FLOOR_MAX), _math.FLOOR_MAX))
        fx[u] = np.int64(min(max(lx, -_math.FLOOR_MAX), _math.FLOOR_MAX))
        wy[u, 0], wy[u, 1], wx[u, 0], wx[u, 1] = y0, y1, x0, x1
        t0, t1, t2, t3 = _tap4(y0, y1, x0, x1)
        a[u, 0], a[u, 1], a[u, 2], a[u, 3] = w[u] * t0, w[u] * t1, w[u] * t2, w[u] * t3
    return fy, fx, wy, wx, a


@njit(cache=True)
def active_box(fy, fx, h, w, ho, wo, rb):
    """Units (floors ``fy, fx``, int64, any shape) whose stencils meet the blurred image's support
    ``[-rb, H-1+rb] x [-rb, W-1+rb]`` from some output of an ``[Ho, Wo]`` map at stride 1, and the
    box of their floors -> ``(active`` bool, same shape``, y0, y1, x0, x1, count)`` with ``y1`` =
    largest floor + 1 (``0, 1, 0, 1`` when none is active)."""
    act = np.empty(fy.shape, np.bool_)
    a1, y1d, x1d = act.reshape(-1), fy.reshape(-1), fx.reshape(-1)
    y0, y1, x0, x1 = np.int64(2**62), -np.int64(2**62), np.int64(2**62), -np.int64(2**62)
    count = 0
    for u in range(a1.shape[0]):
        fy_, fx_ = y1d[u], x1d[u]
        on = fy_ <= h - 1 + rb and fy_ + ho >= -rb and fx_ <= w - 1 + rb and fx_ + wo >= -rb
        a1[u] = on
        if on:
            y0, y1, x0, x1 = min(y0, fy_), max(y1, fy_ + 1), min(x0, fx_), max(x1, fx_ + 1)
            count += 1
    if count == 0:
        return act, 0, 1, 0, 1, 0
    return act, y0, y1, x0, x1, count


@njit(cache=True)
def sampled(c, wy, wx):
    """``sum_m taps[m] c[u, m]`` with ``taps = (wy0 wx0, wy0 wx1, wy1 wx0, wy1 wx1)``: a unit's sample
    of corner sums ``c [U, 4]`` at its 1-D weights ``wy, wx [U, 2]`` -> ``[U]``."""
    out = np.empty(c.shape[0], c.dtype)
    for u in range(c.shape[0]):
        t0, t1, t2, t3 = _tap4(wy[u, 0], wy[u, 1], wx[u, 0], wx[u, 1])
        out[u] = t0 * c[u, 0] + t1 * c[u, 1] + t2 * c[u, 2] + t3 * c[u, 3]
    return out


@njit(cache=True)
def exact_mu(c, wy, wx, w):
    """The bilinear derivative rule, floor fixed (reference/README.md section 1), from corner sums
    ``c [U, 4]``, weights ``wy, wx [U, 2]`` and the units' weights ``w [U]`` -> ``(d/dmu_x, d/dmu_y)``."""
    gx, gy = np.empty(c.shape[0], c.dtype), np.empty(c.shape[0], c.dtype)
    for u in range(c.shape[0]):
        gx[u] = w[u] * (wy[u, 0] * (c[u, 1] - c[u, 0]) + wy[u, 1] * (c[u, 3] - c[u, 2]))
        gy[u] = w[u] * (wx[u, 0] * (c[u, 2] - c[u, 0]) + wx[u, 1] * (c[u, 3] - c[u, 1]))
    return gx, gy


@njit(parallel=True, cache=True)
def grid_pack(dy, tops, lefts, hq, wq):
    """``dy [N,F,Ho,Wo]`` -> ``[N/m, F, hq, wq]``: zeros, and image ``n = m g + i`` of group ``g``
    (``m = len(tops)``) at rows ``tops[i] + a``, columns ``lefts[i] + b``, where that lies inside.
    The input gradient's zero-padded ``dy`` spans only what the rotated gather reads for the blurred
    image's support; entries of ``dy`` outside it are joined to canvas points beyond that support
    (zeros), so they are terms of nothing and are dropped.  One plane per task, zeroed and filled
    while in cache (NumPy's zeros and slice copies took two passes over the whole array)."""
    n_, f_, ho, wo = dy.shape
    m = tops.shape[0]
    out = np.empty((n_ // m, f_, hq, wq), dy.dtype)
    d1, o1 = dy.reshape(-1), out.reshape(-1)
    for gf in prange(n_ // m * f_):
        g, f = gf // f_, gf % f_
        ob = np.uint64(gf * hq * wq)
        for j in range(np.uint64(hq * wq)):
            o1[ob + j] = 0
        for i in range(m):
            t, u = tops[i], lefts[i]
            b0, b1 = max(0, -u), min(wo, wq - u)
            if b1 <= b0:
                continue
            db = np.uint64(((g * m + i) * f_ + f) * ho * wo + b0)
            for a in range(max(0, -t), min(ho, hq - t)):
                dst, src = ob + np.uint64((t + a) * wq + u + b0), db + np.uint64(a * wo)
                for j in range(np.uint64(b1 - b0)):
                    o1[dst + j] = d1[src + j]
    return out


# ---------------------------------------------------------------- bilinear shift, per unit (dau)


@njit(**_JIT)
def _shift(c, a, fy, fx, st, ho, wo):
    """``y[n,f,i,j] = sum_{s,k,m} a[f,s,k,m] c[n,s, i st + fy + da, j st + fx + db]`` (``m = 2 da + db``).

    ``c [N,S,Hc,Wc]`` canvases with a zero border, ``a [F,S/G,K,4]``, ``fy, fx [F,S/G,K]`` canvas
    indices of the floors -> ``[N,F,Ho,Wo]``; channel groups as ``_rb_shift``'s.  MACs ``4 P F S K / G``.
    """
    n_, s_, hc, wc = c.shape
    f_, sg, k_ = fy.shape
    fg = f_ // (s_ // sg)
    y = np.zeros((n_, f_, ho, wo), c.dtype)
    for nf in prange(n_ * f_):
        n, f = nf // f_, nf % f_
        gb = (f // fg) * sg
        for s in range(sg):
            for k in range(k_):
                r0, q0 = fy[f, s, k], fx[f, s, k]
                jlo, jhi = _lo(q0, st), _hi(q0, st, wc - 1, wo)
                if jhi <= jlo:
                    continue
                for i in _rows(r0, st, hc, ho):
                    p = i * st + r0
                    _row4(
                        y[n, f, i, jlo:jhi],
                        c[n, gb + s, p],
                        c[n, gb + s, p + 1],
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

    Every unit gradient is a combination of these four sums; channel groups as ``_shift``'s (``s`` local,
    ``-> [F,S/G,K,4]``).  MACs ``4 P F S K / G``.
    """
    n_, s_, hc, wc = c.shape
    f_, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    sg, k_ = fy.shape[1], fy.shape[2]
    fg = f_ // (s_ // sg)
    out = np.zeros((f_, sg, k_, 4), c.dtype)
    for f in prange(f_):
        gb = (f // fg) * sg
        acc = np.zeros((4, wo), c.dtype)  # per-column partial sums: vectorisable, fixed order
        for s in range(sg):
            for k in range(k_):
                acc[:] = 0
                r0, q0 = fy[f, s, k], fx[f, s, k]
                jlo, jhi = _lo(q0, st), _hi(q0, st, wc - 1, wo)
                if jhi <= jlo:
                    continue
                for n in range(n_):
                    for i in _rows(r0, st, hc, ho):
                        p = i * st + r0
                        _dot4(
                            acc,
                            dy[n, f, i, jlo:jhi],
                            c[n, gb + s, p],
                            c[n, gb + s, p + 1],
                            jlo * st + q0,
                            jhi - jlo,
                            st,
                        )
                for m in range(4):
                    for j in range(wo):
                        out[f, s, k, m] += acc[m, j]
    return out


@njit(**_JIT)
def _scatter(dy, a, fy, fx, st, s_, hc, wc):
    """Adjoint of ``_shift``: ``back[n,s] = sum_{f,k}`` stencil-weighted ``dy[n,f]``. -> ``[N,S,Hc,Wc]``

    Channel groups as ``_shift``'s: channel ``s`` gathers the outputs of its group.  MACs ``4 P F S K / G``.
    """
    n_, f_, ho, wo = dy.shape
    sg, k_ = fy.shape[1], fy.shape[2]
    fg = f_ // (s_ // sg)
    back = np.zeros((n_, s_, hc, wc), dy.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        sl, f0 = s % sg, (s // sg) * fg  # local channel, the group's first output
        for f in range(f0, f0 + fg):
            for k in range(k_):
                r0, q0 = fy[f, sl, k], fx[f, sl, k]
                jlo, jhi = _lo(q0, st), _hi(q0, st, wc - 1, wo)
                if jhi <= jlo:
                    continue
                for i in _rows(r0, st, hc, ho):
                    p, d = i * st + r0, dy[n, f, i, jlo:jhi]
                    for m in range(4):
                        _axpy(back[n, s, p + m // 2], jlo * st + q0 + m % 2, jhi - jlo, st, a[f, sl, k, m], d)
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


# The four basis passes: flat unsigned indices (slices per row and tap cost more than their few
# dozen MACs) and FMA-contracted, fixed-order tap sums, as the window blurs; arrays C-contiguous.


@njit(**_CJIT)
def _jet_h(x, d, st, wo):
    """Along columns (as ``_hblur``), strided: ``hx[n,s,a,p,j] = sum_u d[a,u] x[n,s,p, j st + u]``.

    -> ``[N,S,M,H,Wo]``: derivative ``a`` along columns of every row."""
    n_, s_, h, w = x.shape
    m_, nt = d.shape
    r = (nt - 1) // 2
    out = np.zeros((n_, s_, m_, h, wo), x.dtype)
    x1, o1 = x.reshape(-1), out.reshape(-1)
    ust = np.uint64(st)
    for ns in prange(n_ * s_):
        for a in range(m_):
            for p in range(h):
                dst = np.uint64(((ns * m_ + a) * h + p) * wo)
                for iu in range(nt):
                    u = iu - r
                    jlo, jhi = np.uint64(_lo(u, st)), np.uint64(_hi(u, st, w, wo))
                    src, da = np.uint64((ns * h + p) * w + u), d[a, iu]  # + j st: column j st + u
                    if st == 1:
                        for j in range(jlo, jhi):
                            o1[dst + j] = o1[dst + j] + da * x1[src + j]
                    else:
                        for j in range(jlo, jhi):
                            o1[dst + j] = o1[dst + j] + da * x1[src + j * ust]
    return out


@njit(**_CJIT)
def _jet_h_t(dh, d, st, w):
    """Adjoint of ``_jet_h``: ``[N,S,M,H,Wo]`` -> ``[N,S,H,W]``."""
    n_, s_, m_, h, wo = dh.shape
    nt = d.shape[1]
    r = (nt - 1) // 2
    out = np.zeros((n_, s_, h, w), dh.dtype)
    d1, o1 = dh.reshape(-1), out.reshape(-1)
    ust = np.uint64(st)
    for ns in prange(n_ * s_):
        for a in range(m_):
            for p in range(h):
                src = np.uint64(((ns * m_ + a) * h + p) * wo)
                for iu in range(nt):
                    u = iu - r
                    jlo, jhi = np.uint64(_lo(u, st)), np.uint64(_hi(u, st, w, wo))
                    dst, da = np.uint64((ns * h + p) * w + u), d[a, iu]
                    if st == 1:
                        for j in range(jlo, jhi):
                            o1[dst + j] = o1[dst + j] + da * d1[src + j]
                    else:
                        for j in range(jlo, jhi):
                            o1[dst + j * ust] = o1[dst + j * ust] + da * d1[src + j]
    return out


@njit(**_CJIT)
def _jet_v(hx, d, pairs, st, ho):
    """Along rows (as ``_vblur``), strided: ``B[n,s,jb,i] = sum_t d[b,t] hx[n,s,a, i st + t]``, ``(a,b) = pairs[jb]``.

    -> ``[N,S,J,Ho,Wo]``."""
    n_, s_, m_, h, wo = hx.shape
    nt = d.shape[1]
    r = (nt - 1) // 2
    j_ = pairs.shape[0]
    out = np.zeros((n_, s_, j_, ho, wo), hx.dtype)
    h1, o1 = hx.reshape(-1), out.reshape(-1)
    uwo = np.uint64(wo)
    for ns in prange(n_ * s_):
        for jb in range(j_):
            a, b = pairs[jb, 0], pairs[jb, 1]
            for i in range(ho):
                dst = np.uint64(((ns * j_ + jb) * ho + i) * wo)
                for it in range(nt):
                    p = i * st + it - r
                    if p < 0 or p >= h:
                        continue
                    dt, src = d[b, it], np.uint64(((ns * m_ + a) * h + p) * wo)
                    for j in range(uwo):
                        o1[dst + j] = o1[dst + j] + dt * h1[src + j]
    return out


@njit(**_CJIT)
def _jet_v_t(db, d, pairs, st, h, m_):
    """Adjoint of ``_jet_v``: ``[N,S,J,Ho,Wo]`` -> ``[N,S,M,H,Wo]``."""
    n_, s_, j_, ho, wo = db.shape
    nt = d.shape[1]
    r = (nt - 1) // 2
    out = np.zeros((n_, s_, m_, h, wo), db.dtype)
    d1, o1 = db.reshape(-1), out.reshape(-1)
    uwo = np.uint64(wo)
    for ns in prange(n_ * s_):
        for jb in range(j_):
            a, b = pairs[jb, 0], pairs[jb, 1]
            for i in range(ho):
                src = np.uint64(((ns * j_ + jb) * ho + i) * wo)
                for it in range(nt):
                    p = i * st + it - r
                    if p < 0 or p >= h:
                        continue
                    dt, dst = d[b, it], np.uint64(((ns * m_ + a) * h + p) * wo)
                    for j in range(uwo):
                        o1[dst + j] = o1[dst + j] + dt * d1[src + j]
    return out


@njit(**_CJIT)
def _jet_dd(x, hx, db, dh, pairs, st, nt):
    """``dL/dd[m, t]`` (the 1-D filter taps) per ``(n, s)``, from both passes. -> ``[N*S, M, nt]``

    ``db = dL/dB [N,S,J,Ho,Wo]``, ``dh = dL/dhx [N,S,M,H,Wo]`` (all C-contiguous).  Each tap's sum runs
    in lanes over the output columns (one per column, vectorised, FMA-contracted), the lanes then
    added in order: a fixed order whatever the thread count.  A single running sum (one dependent
    add per product) took 22.9 ms of the paper case's 94 ms forward+backward.  MACs ``P S J w + N S H Wo M w``.
    """
    n_, s_, m_, h, wo = hx.shape
    w = x.shape[3]
    j_, ho = db.shape[2], db.shape[3]
    r = (nt - 1) // 2
    part = np.zeros((n_ * s_, m_, nt), x.dtype)
    x1, hx1, db1, dh1 = x.reshape(-1), hx.reshape(-1), db.reshape(-1), dh.reshape(-1)
    uwo, ust = np.uint64(wo), np.uint64(st)
    for ns in prange(n_ * s_):
        lanes = np.zeros(wo, x.dtype)
        for jb in range(j_):
            a, b = pairs[jb, 0], pairs[jb, 1]
            dbb, hxb = np.uint64((ns * j_ + jb) * ho * wo), np.uint64((ns * m_ + a) * h * wo)
            for it in range(nt):
                lanes[:] = 0
                for i in range(ho):
                    p = i * st + it - r
                    if p < 0 or p >= h:
                        continue
                    d0, h0 = dbb + np.uint64(i) * uwo, hxb + np.uint64(p) * uwo
                    for j in range(uwo):
                        lanes[j] = lanes[j] + db1[d0 + j] * hx1[h0 + j]
                t = part[ns, b, it]
                for j in range(wo):
                    t += lanes[j]
                part[ns, b, it] = t
        for a in range(m_):
            for iu in range(nt):
                u = iu - r
                jlo, jhi = _lo(u, st), _hi(u, st, w, wo)
                if jhi <= jlo:
                    continue
                lanes[:] = 0
                for p in range(h):
                    d0 = np.uint64(((ns * m_ + a) * h + p) * wo)
                    x0 = np.uint64((ns * h + p) * w + u)  # column j st + u of row p
                    for j in range(np.uint64(jlo), np.uint64(jhi)):
                        lanes[j] = lanes[j] + dh1[d0 + j] * x1[x0 + j * ust]
                t = part[ns, a, iu]
                for j in range(wo):
                    t += lanes[j]
                part[ns, a, iu] = t
    return part


# ---------------------------------------------------------------- dense strided correlation (dau_gauss)


@njit(**_JIT)
def _corr(x, kern, st, ho, wo):
    """``y[n,f,i,j] = sum_{s,t,u} kern[f,s,t,u] x[n,s, i st + t, j st + u]`` (centred taps).

    ``x [N,S,H,W]``, ``kern [F,S/G,2R+1,2R+1]`` -> ``[N,F,Ho,Wo]``; channel groups as ``_shift``'s.
    MACs ``P F S R2 / G``.
    """
    n_, s_, h, w = x.shape
    f_, sg, nt, _ = kern.shape
    fg = f_ // (s_ // sg)
    r = (nt - 1) // 2
    y = np.zeros((n_, f_, ho, wo), x.dtype)
    for nf in prange(n_ * f_):
        n, f = nf // f_, nf % f_
        gb = (f // fg) * sg
        for s in range(sg):
            for it in range(nt):
                for i in range(ho):
                    p = i * st + it - r
                    if p < 0 or p >= h:
                        continue
                    for iu in range(nt):
                        u = iu - r
                        jlo, jhi = _lo(u, st), _hi(u, st, w, wo)
                        if jhi > jlo:
                            _gaxpy(
                                y[n, f, i, jlo:jhi], x[n, gb + s, p], jlo * st + u, jhi - jlo, st, kern[f, s, it, iu]
                            )
    return y


@njit(**_JIT)
def _corr_dx(dy, kern, st, h, w, groups):
    """Adjoint of ``_corr`` in ``x``: ``dy [N,F,Ho,Wo]`` -> ``[N,S,H,W]`` (``S = groups kern.shape[1]``).
    MACs ``P F S R2 / G``."""
    n_, f_, ho, wo = dy.shape
    sg, nt = kern.shape[1], kern.shape[2]
    s_, fg = groups * sg, f_ // groups
    r = (nt - 1) // 2
    out = np.zeros((n_, s_, h, w), dy.dtype)
    for ns in prange(n_ * s_):
        n, s = ns // s_, ns % s_
        sl, f0 = s % sg, (s // sg) * fg
        for f in range(f0, f0 + fg):
            for it in range(nt):
                for i in range(ho):
                    p = i * st + it - r
                    if p < 0 or p >= h:
                        continue
                    for iu in range(nt):
                        u = iu - r
                        jlo, jhi = _lo(u, st), _hi(u, st, w, wo)
                        if jhi > jlo:
                            _axpy(out[n, s, p], jlo * st + u, jhi - jlo, st, kern[f, sl, it, iu], dy[n, f, i, jlo:jhi])
    return out


@njit(**_JIT)
def _corr_dk(x, dy, r, st, groups):
    """Adjoint of ``_corr`` in the kernel: ``sum_{n,i,j} dy[n,f,i,j] x[n,c, i st + t, j st + u]``, ``c`` the
    channel ``s`` of ``f``'s group.

    -> ``[F,S/G,2r+1,2r+1]``.  MACs ``P F S R2 / G``.
    """
    n_, s_, h, w = x.shape
    f_, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    sg, fg = s_ // groups, f_ // groups
    nt = 2 * r + 1
    out = np.zeros((f_, sg, nt, nt), x.dtype)
    for fs in prange(f_ * sg):
        f, s = fs // sg, fs % sg
        c = (f // fg) * sg + s
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
                            _dot(acc[jlo:jhi], dy[n, f, i, jlo:jhi], x[n, c, p], jlo * st + u, jhi - jlo, st)
                for j in range(wo):
                    out[f, s, it, iu] += acc[j]
    return out
