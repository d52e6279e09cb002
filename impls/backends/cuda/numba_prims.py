"""Backend ``numba-cuda``: the efficient algorithms as ``numba.cuda`` kernels.

Two layers:

1. Kernel-launch functions (``cpass``, ``tpass``, ``dtaps``, ``shift``, ``tapsum``, ``scatter``,
   ``sample``, ``sample_t``, ``sample_sums``, ``mix``, ``mix_t``, ``mix_dw``) on NumPy arrays or
   Numba device arrays: output arrays are passed in and fully written.  They run under Numba's
   CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) with NumPy inputs.
2. ``Prims``: the same operations on torch tensors (zero-copy through
   ``__cuda_array_interface__``, launched on torch's current stream), and ``OPS``, the layer ops
   built on them by ``layers`` (the backend interface of ``impls.backends``; ``layers`` also lists
   the MAC counts of every pass).

Design: one thread per output element, written once (``=``), no atomics.  Every gather
reads the zero-extended plane through ``_at``.  Adjoint (scatter) passes are written as
gathers: the thread of an input element finds the outputs that read it (stride divisibility),
so they are deterministic.  Reductions (tap sums, tap gradients, mixing weights) give each
unit ``lanes`` threads (``Prims.lanes``) that stride over its elements; the ``[..., lanes]`` partials are summed
by torch / NumPy in a fixed order, so every result is bit-reproducible.
"""

import math

import numpy as np
import torch

# numba-cuda 0.30 (in maintenance mode; NVIDIA/numba-cuda#907 will not be fixed) registers an
# overload of ``np.row_stack`` when its CUDA target first compiles a kernel, and numpy 2.5 removed
# that alias of ``np.vstack``: every kernel compile then fails with AttributeError.  Restore the
# alias as numpy < 2.5 defined it (the same function object), only where it is missing.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from numba import config, cuda  # noqa: E402 (after the alias above)

from . import layers

THREADS = 128  # threads per block
PER_LANE = 64  # elements a reduction thread sums at least (when there are enough units)
MAX_THREADS = 2**20  # reduction threads per launch, at most (unless there are more units)


def _blocks(total):
    return max(1, math.ceil(total / THREADS))


def _zero(a):
    """Zero scalar in ``a``'s dtype: keeps the kernels' accumulators in the data's precision."""
    return np.dtype(a.dtype).type(0)


@cuda.jit(device=True)
def _at(a, n, c, p, q, zero):
    """``a[n, c, p, q]`` on the zero-extended plane."""
    if p < 0 or q < 0 or p >= a.shape[2] or q >= a.shape[3]:
        return zero
    return a[n, c, p, q]


@cuda.jit(device=True)
def _src(o, it, st, off, n):
    """The output index ``i < n`` with ``i st + it + off == o`` (the one that reads input ``o``
    through tap ``it``), or -1: adjoints are written as gathers."""
    num = o - it - off
    if num < 0 or num % st != 0:
        return -1
    i = num // st
    return i if i < n else -1


# ---------------------------------------------------------------- 1-D passes (blur, N-Jet filters)


@cuda.jit
def _cpass_k(inp, taps, cin, fil, st, off, rows, zero, out):
    idx = cuda.grid(1)
    nb, co, ho, wo = out.shape
    if idx >= nb * co * ho * wo:
        return
    q = idx % wo
    p = (idx // wo) % ho
    c = (idx // (wo * ho)) % co
    b = idx // (wo * ho * co)
    ci, fi = cin[c], fil[c]
    acc = zero
    for it in range(taps.shape[1]):
        if rows:
            acc += taps[fi, it] * _at(inp, b, ci, p * st + it + off, q, zero)
        else:
            acc += taps[fi, it] * _at(inp, b, ci, p, q * st + it + off, zero)
    out[b, c, p, q] = acc


def cpass(inp, taps, cin, fil, st, off, rows, out, stream=0):
    """``out[b,c,o,q] = sum_it taps[fil[c],it] inp[b,cin[c], o st + it + off, q]`` (rows; columns alike).

    ``inp [B,Ci,Hi,Wi]``, ``taps [nf,T]``, ``cin, fil [Co]``, ``out [B,Co,Ho,Wo]``.
    MACs ``B Co Ho Wo T``.
    """
    if out.size:
        _cpass_k[_blocks(out.size), THREADS, stream](inp, taps, cin, fil, st, off, rows, _zero(out), out)


@cuda.jit
def _tpass_k(dout, taps, cin, fil, st, off, rows, zero, out):
    idx = cuda.grid(1)
    nb, ci_, h, w = out.shape
    if idx >= nb * ci_ * h * w:
        return
    q = idx % w
    p = (idx // w) % h
    c = (idx // (w * h)) % ci_
    b = idx // (w * h * ci_)
    acc = zero
    for oc in range(cin.shape[0]):
        if cin[oc] != c:
            continue
        fi = fil[oc]
        for it in range(taps.shape[1]):
            if rows:
                o = _src(p, it, st, off, dout.shape[2])
                if o >= 0:
                    acc += taps[fi, it] * dout[b, oc, o, q]
            else:
                o = _src(q, it, st, off, dout.shape[3])
                if o >= 0:
                    acc += taps[fi, it] * dout[b, oc, p, o]
    out[b, c, p, q] = acc


def tpass(dout, taps, cin, fil, st, off, rows, out, stream=0):
    """Adjoint of ``cpass`` in ``inp``: ``dout [B,Co,..]`` -> ``out [B,Ci,H,W]`` (gather form).

    MACs ``B Co Ho Wo T``."""
    if out.size:
        _tpass_k[_blocks(out.size), THREADS, stream](dout, taps, cin, fil, st, off, rows, _zero(out), out)


@cuda.jit
def _dtaps_k(dout, inp, cin, st, off, rows, zero, part):
    idx = cuda.grid(1)
    co, nt, nl = part.shape
    if idx >= co * nt * nl:
        return
    lane = idx % nl
    it = (idx // nl) % nt
    c = idx // (nl * nt)
    nb, _, ho, wo = dout.shape
    ci = cin[c]
    acc = zero
    for e in range(lane, nb * ho * wo, nl):
        q = e % wo
        p = (e // wo) % ho
        b = e // (wo * ho)
        if rows:
            acc += dout[b, c, p, q] * _at(inp, b, ci, p * st + it + off, q, zero)
        else:
            acc += dout[b, c, p, q] * _at(inp, b, ci, p, q * st + it + off, zero)
    part[c, it, lane] = acc


def dtaps(dout, inp, cin, st, off, rows, part, stream=0):
    """Adjoint of ``cpass`` in its taps, per output channel: ``part [Co,T,lanes]`` partial sums of
    ``sum dout[b,c,o,q] inp[b,cin[c], o st + it + off, q]``. MACs ``B Co Ho Wo T``."""
    if part.size:
        _dtaps_k[_blocks(part.size), THREADS, stream](dout, inp, cin, st, off, rows, _zero(part), part)


# ---------------------------------------------------------------- per-unit bilinear shift (dau, dau_gauss)


@cuda.jit
def _shift_k(c, a4, fy, fx, st, zero, y):
    idx = cuda.grid(1)
    n_, f_, ho, wo = y.shape
    if idx >= n_ * f_ * ho * wo:
        return
    j = idx % wo
    i = (idx // wo) % ho
    f = (idx // (wo * ho)) % f_
    n = idx // (wo * ho * f_)
    acc = zero
    for s in range(fy.shape[1]):
        for k in range(fy.shape[2]):
            p = i * st + fy[f, s, k]
            q = j * st + fx[f, s, k]
            acc += (a4[f, s, k, 0] * _at(c, n, s, p, q, zero) + a4[f, s, k, 1] * _at(c, n, s, p, q + 1, zero)) + (
                a4[f, s, k, 2] * _at(c, n, s, p + 1, q, zero) + a4[f, s, k, 3] * _at(c, n, s, p + 1, q + 1, zero)
            )
    y[n, f, i, j] = acc


def shift(c, a4, fy, fx, st, y, stream=0):
    """``y[n,f,i,j] = sum_{s,k,m} a4[f,s,k,m] c[n,s, i st + fy + da, j st + fx + db]`` (``m = 2 da + db``).

    ``c [N,S,Hc,Wc]``, ``a4 [F,S,K,4]``, ``fy, fx [F,S,K]`` int (indices into ``c``), ``y [N,F,Ho,Wo]``.
    MACs ``4 P F S K``.
    """
    if y.size:
        _shift_k[_blocks(y.size), THREADS, stream](c, a4, fy, fx, st, _zero(y), y)


@cuda.jit
def _tapsum_k(c, dy, fy, fx, st, zero, part):
    idx = cuda.grid(1)
    f_, s_, k_ = fy.shape
    nl = part.shape[4]
    if idx >= f_ * s_ * k_ * nl:
        return
    lane = idx % nl
    k = (idx // nl) % k_
    s = (idx // (nl * k_)) % s_
    f = idx // (nl * k_ * s_)
    n_, _, ho, wo = dy.shape
    r0, q0 = fy[f, s, k], fx[f, s, k]
    t0 = t1 = t2 = t3 = zero
    for e in range(lane, n_ * ho * wo, nl):
        j = e % wo
        i = (e // wo) % ho
        n = e // (wo * ho)
        d = dy[n, f, i, j]
        p, q = i * st + r0, j * st + q0
        t0 += d * _at(c, n, s, p, q, zero)
        t1 += d * _at(c, n, s, p, q + 1, zero)
        t2 += d * _at(c, n, s, p + 1, q, zero)
        t3 += d * _at(c, n, s, p + 1, q + 1, zero)
    part[f, s, k, 0, lane] = t0
    part[f, s, k, 1, lane] = t1
    part[f, s, k, 2, lane] = t2
    part[f, s, k, 3, lane] = t3


def tapsum(c, dy, fy, fx, st, part, stream=0):
    """Partial tap sums ``part [F,S,K,4,lanes]`` of ``sum_{n,i,j} dy[n,f,i,j] c[n,s, tap m of unit (f,s,k)]``.

    MACs ``4 P F S K``.
    """
    if part.size:
        _tapsum_k[_blocks(part.size), THREADS, stream](c, dy, fy, fx, st, _zero(part), part)


@cuda.jit
def _scatter_k(dy, a4, fy, fx, st, zero, back):
    idx = cuda.grid(1)
    n_, s_, hc, wc = back.shape
    if idx >= n_ * s_ * hc * wc:
        return
    q = idx % wc
    p = (idx // wc) % hc
    s = (idx // (wc * hc)) % s_
    n = idx // (wc * hc * s_)
    ho, wo = dy.shape[2], dy.shape[3]
    acc = zero
    for f in range(fy.shape[0]):
        for k in range(fy.shape[2]):
            for m in range(4):
                i = _src(p, m // 2, st, fy[f, s, k], ho)
                j = _src(q, m % 2, st, fx[f, s, k], wo)
                if i >= 0 and j >= 0:
                    acc += a4[f, s, k, m] * dy[n, f, i, j]
    back[n, s, p, q] = acc


def scatter(dy, a4, fy, fx, st, back, stream=0):
    """Adjoint of ``shift`` in ``c``: ``dy [N,F,Ho,Wo]`` -> ``back [N,S,Hc,Wc]``. MACs ``4 P F S K``."""
    if back.size:
        _scatter_k[_blocks(back.size), THREADS, stream](dy, a4, fy, fx, st, _zero(back), back)


# ---------------------------------------------------------------- shared bilinear samples (acu)


@cuda.jit
def _sample_k(x, a4, fy, fx, st, zero, out):
    idx = cuda.grid(1)
    _, g_, s_, k_, ho, wo = out.shape
    if idx >= out.size:
        return
    j = idx % wo
    i = (idx // wo) % ho
    k = (idx // (wo * ho)) % k_
    s = (idx // (wo * ho * k_)) % s_
    g = (idx // (wo * ho * k_ * s_)) % g_
    n = idx // (wo * ho * k_ * s_ * g_)
    p, q = i * st + fy[g, k], j * st + fx[g, k]
    out[n, g, s, k, i, j] = (a4[g, k, 0] * _at(x, n, s, p, q, zero) + a4[g, k, 1] * _at(x, n, s, p, q + 1, zero)) + (
        a4[g, k, 2] * _at(x, n, s, p + 1, q, zero) + a4[g, k, 3] * _at(x, n, s, p + 1, q + 1, zero)
    )


def sample(x, a4, fy, fx, st, out, stream=0):
    """``out[n,g,s,k,i,j] = sum_m a4[g,k,m] x[n,s, i st + fy[g,k] + da, j st + fx[g,k] + db]``.

    ``x [N,S,H,W]``, ``a4 [G,K,4]``, ``fy, fx [G,K]``, ``out [N,G,S,K,Ho,Wo]``. MACs ``4 P S K G``.
    """
    if out.size:
        _sample_k[_blocks(out.size), THREADS, stream](x, a4, fy, fx, st, _zero(out), out)


@cuda.jit
def _sample_t_k(e, a4, fy, fx, st, zero, gx):
    idx = cuda.grid(1)
    _, s_, h, w = gx.shape
    if idx >= gx.size:
        return
    q = idx % w
    p = (idx // w) % h
    s = (idx // (w * h)) % s_
    n = idx // (w * h * s_)
    ho, wo = e.shape[4], e.shape[5]
    acc = zero
    for g in range(fy.shape[0]):
        for k in range(fy.shape[1]):
            for m in range(4):
                i = _src(p, m // 2, st, fy[g, k], ho)
                j = _src(q, m % 2, st, fx[g, k], wo)
                if i >= 0 and j >= 0:
                    acc += a4[g, k, m] * e[n, g, s, k, i, j]
    gx[n, s, p, q] = acc


def sample_t(e, a4, fy, fx, st, gx, stream=0):
    """Adjoint of ``sample`` in ``x``: ``e [N,G,S,K,Ho,Wo]`` -> ``gx [N,S,H,W]``. MACs ``4 P S K G``."""
    if gx.size:
        _sample_t_k[_blocks(gx.size), THREADS, stream](e, a4, fy, fx, st, _zero(gx), gx)


@cuda.jit
def _sample_sums_k(e, x, fy, fx, st, zero, part):
    idx = cuda.grid(1)
    g_, k_, _, nl = part.shape
    if idx >= g_ * k_ * nl:
        return
    lane = idx % nl
    k = (idx // nl) % k_
    g = idx // (nl * k_)
    n_, _, s_, _, ho, wo = e.shape
    r0, q0 = fy[g, k], fx[g, k]
    t0 = t1 = t2 = t3 = zero
    for el in range(lane, n_ * s_ * ho * wo, nl):
        j = el % wo
        i = (el // wo) % ho
        s = (el // (wo * ho)) % s_
        n = el // (wo * ho * s_)
        d = e[n, g, s, k, i, j]
        p, q = i * st + r0, j * st + q0
        t0 += d * _at(x, n, s, p, q, zero)
        t1 += d * _at(x, n, s, p, q + 1, zero)
        t2 += d * _at(x, n, s, p + 1, q, zero)
        t3 += d * _at(x, n, s, p + 1, q + 1, zero)
    part[g, k, 0, lane] = t0
    part[g, k, 1, lane] = t1
    part[g, k, 2, lane] = t2
    part[g, k, 3, lane] = t3


def sample_sums(e, x, fy, fx, st, part, stream=0):
    """Partial corner sums ``part [G,K,4,lanes]`` of ``sum_{n,s,i,j} e[n,g,s,k,i,j] x[n,s, tap m]``.

    MACs ``4 P S K G``."""
    if part.size:
        _sample_sums_k[_blocks(part.size), THREADS, stream](e, x, fy, fx, st, _zero(part), part)


# ---------------------------------------------------------------- 1x1 channel mixing (acu, njet)


@cuda.jit
def _mix_k(bm, w, grp, zero, y):
    idx = cuda.grid(1)
    _, f_, l_ = y.shape
    if idx >= y.size:
        return
    q = idx % l_
    f = (idx // l_) % f_
    n = idx // (l_ * f_)
    g = grp[f]
    acc = zero
    for m in range(w.shape[1]):
        acc += w[f, m] * bm[n, g, m, q]
    y[n, f, q] = acc


def mix(bm, w, grp, y, stream=0):
    """``y[n,f,l] = sum_m w[f,m] bm[n, grp[f], m, l]``: ``bm [N,G,M,L]``, ``w [F,M]``, ``y [N,F,L]``.

    MACs ``N F M L``."""
    if y.size:
        _mix_k[_blocks(y.size), THREADS, stream](bm, w, grp, _zero(y), y)


@cuda.jit
def _mix_t_k(dy, w, grp, zero, out):
    idx = cuda.grid(1)
    _, g_, m_, l_ = out.shape
    if idx >= out.size:
        return
    q = idx % l_
    m = (idx // l_) % m_
    g = (idx // (l_ * m_)) % g_
    n = idx // (l_ * m_ * g_)
    acc = zero
    for f in range(w.shape[0]):
        if grp[f] == g:
            acc += w[f, m] * dy[n, f, q]
    out[n, g, m, q] = acc


def mix_t(dy, w, grp, out, stream=0):
    """Adjoint of ``mix`` in ``bm``: ``dy [N,F,L]`` -> ``out [N,G,M,L]``. MACs ``N F M L``."""
    if out.size:
        _mix_t_k[_blocks(out.size), THREADS, stream](dy, w, grp, _zero(out), out)


@cuda.jit
def _mix_dw_k(dy, bm, grp, zero, part):
    idx = cuda.grid(1)
    _, m_, nl = part.shape
    if idx >= part.size:
        return
    lane = idx % nl
    m = (idx // nl) % m_
    f = idx // (nl * m_)
    n_, _, l_ = dy.shape
    g = grp[f]
    acc = zero
    for e in range(lane, n_ * l_, nl):
        n, q = e // l_, e % l_
        acc += dy[n, f, q] * bm[n, g, m, q]
    part[f, m, lane] = acc


def mix_dw(dy, bm, grp, part, stream=0):
    """Adjoint of ``mix`` in ``w``: partial sums ``part [F,M,lanes]``. MACs ``N F M L``."""
    if part.size:
        _mix_dw_k[_blocks(part.size), THREADS, stream](dy, bm, grp, _zero(part), part)


# ---------------------------------------------------------------- torch glue


_STREAMS = {}


def _stream(t):
    """Numba view of torch's current stream on ``t``'s device (0 for CPU tensors under the simulator)."""
    if not t.is_cuda:
        return 0
    h = torch.cuda.current_stream(t.device).cuda_stream
    if h not in _STREAMS:
        _STREAMS[h] = cuda.external_stream(h)
    return _STREAMS[h]


def _arr(t):
    """Zero-copy array view of a contiguous tensor: a Numba device array, or (simulator, CPU) NumPy."""
    if t.is_cuda:
        return cuda.as_cuda_array(t, sync=False)
    if not config.ENABLE_CUDASIM:
        raise ValueError(f"numba-cuda needs CUDA tensors, got device {t.device}")
    return t.numpy()


class Prims:
    """The primitives of ``impls.backends.cuda.layers`` on torch tensors (see there for the shapes)."""

    def __init__(self, per_lane=PER_LANE, max_threads=MAX_THREADS):
        self.per_lane, self.max_threads = per_lane, max_threads

    def lanes(self, n_el, units):
        """Threads per reduced unit: about ``per_lane`` elements each, ``max_threads`` in all."""
        return max(1, min(math.ceil(n_el / self.per_lane), self.max_threads // max(1, units)))

    @staticmethod
    def _run(fn, like, shape, *args):
        """Allocate the output, launch ``fn(*args, out)`` on torch's stream -> output tensor."""
        out = torch.empty(shape, dtype=like.dtype, device=like.device)
        ins = [_arr(a.detach().contiguous()) if isinstance(a, torch.Tensor) else a for a in args]
        if like.is_cuda:
            with cuda.gpus[like.device.index]:
                fn(*ins, _arr(out), stream=_stream(like))
        else:
            fn(*ins, _arr(out), stream=0)
        return out

    def cpass(self, inp, taps, cin, fil, st, off, rows, n_out):
        b, _, h, w = inp.shape
        shape = (b, cin.shape[0], n_out, w) if rows else (b, cin.shape[0], h, n_out)
        return self._run(cpass, inp, shape, inp, taps, cin, fil, st, off, rows)

    def tpass(self, dout, taps, cin, fil, st, off, rows, n_in, c_in):
        b, _, h, w = dout.shape
        shape = (b, c_in, n_in, w) if rows else (b, c_in, h, n_in)
        return self._run(tpass, dout, shape, dout, taps, cin, fil, st, off, rows)

    def dtaps(self, dout, inp, cin, nt, st, off, rows):
        shape = (cin.shape[0], nt, self.lanes(dout.numel() // max(1, dout.shape[1]), cin.shape[0] * nt))
        return self._run(dtaps, dout, shape, dout, inp, cin, st, off, rows).sum(-1)

    def shift(self, c, a4, fy, fx, st, ho, wo):
        return self._run(shift, c, (c.shape[0], a4.shape[0], ho, wo), c, a4, fy, fx, st)

    def tapsum(self, c, dy, fy, fx, st):
        lanes = self.lanes(dy.numel() // max(1, dy.shape[1]), fy.numel())
        return self._run(tapsum, c, tuple(fy.shape) + (4, lanes), c, dy, fy, fx, st).sum(-1)

    def scatter(self, dy, a4, fy, fx, st, s, hc, wc):
        return self._run(scatter, dy, (dy.shape[0], s, hc, wc), dy, a4, fy, fx, st)

    def sample(self, x, a4, fy, fx, st, ho, wo):
        n, s = x.shape[:2]
        return self._run(sample, x, (n, fy.shape[0], s, fy.shape[1], ho, wo), x, a4, fy, fx, st)

    def sample_t(self, e, a4, fy, fx, st, h, w):
        return self._run(sample_t, e, (e.shape[0], e.shape[2], h, w), e, a4, fy, fx, st)

    def sample_sums(self, e, x, fy, fx, st):
        lanes = self.lanes(e.numel() // max(1, fy.numel()), fy.numel())
        return self._run(sample_sums, x, tuple(fy.shape) + (4, lanes), e, x, fy, fx, st).sum(-1)

    def mix(self, bm, w, grp):
        return self._run(mix, bm, (bm.shape[0], w.shape[0], bm.shape[3]), bm, w, grp)

    def mix_t(self, dy, w, grp, g):
        return self._run(mix_t, dy, (dy.shape[0], g, w.shape[1], dy.shape[2]), dy, w, grp)

    def mix_dw(self, dy, bm, grp):
        lanes = self.lanes(dy.numel() // max(1, dy.shape[1]), dy.shape[1] * bm.shape[2])
        return self._run(mix_dw, dy, (dy.shape[1], bm.shape[2], lanes), dy, bm, grp).sum(-1)


OPS = layers.ops(Prims())
