"""Backend ``cupy``: the efficient algorithms as CUDA C kernels (``impls/cuda/*.cu``) loaded with
``cupy.RawModule``; the layers are the shared glue of ``impls._cuda_ops`` (MAC counts there and
next to each kernel).

Tensors go to CuPy through DLPack (zero-copy) and every kernel runs on torch's current stream.
Kernels are templates on the dtype (``float``, ``double``), instantiated through NVRTC name
expressions.  Kernel design (see the ``.cu`` files):

- ``passes.cu``: separable 1-D filters (blur, N-Jet derivatives).  A 32 x 8 output tile loads its
  input window once into shared memory and computes every output channel that reads it;
  adjoints are gathers (one thread per input element, no atomics); tap gradients are
  block reductions (warp shuffles, then one atomic per block).
- ``dau.cu``: the per-unit bilinear shift.  A block computes a 32 x 8 tile of 4 output channels;
  per input channel it stages the canvas window that all their units read (bounding box of
  the floors) in shared memory, or reads the canvas directly when the displacement spread
  is too large for it (any displacement works).  Scatter is a gather; tap sums are block
  reductions with four atomics per block.
- ``acu.cu``: per-synapse bilinear samples shared by a position group; the 1x1 mixing is a
  batched GEMM (``torch.matmul``, cuBLAS); adjoints as above.
"""

import functools
import math
from pathlib import Path

import numpy as np
import torch

from . import _cuda_ops

_DIR = Path(__file__).parent / "cuda"
_T = ("float", "double")
_NAMES = {
    "passes": [f"rf::{k}<{t}, {b}>" for k in ("cpass", "tpass", "dtaps") for t in _T for b in ("true", "false")],
    "dau": [f"rf::{k}<{t}>" for k in ("shift", "tapsum", "scatter") for t in _T],
    "acu": [f"rf::{k}<{t}>" for k in ("sample", "sample_t", "sample_sums") for t in _T],
}
THREADS = 256  # 1-D blocks
SMEM = 48 * 1024  # bytes of shared memory a tile may use
_PASS_W, _PASS_H, _TILE_W, _TILE_H, _FB = 32, 8, 32, 8, 4  # as in passes.cu / dau.cu


@functools.cache
def _module(name):
    import cupy

    src = (_DIR / f"{name}.cu").read_text()
    return cupy.RawModule(code=src, options=("-std=c++17", f"-I{_DIR}"), name_expressions=_NAMES[name])


def _kernel(file, name, dtype, *flags):
    t = "float" if dtype == torch.float32 else "double"
    return _module(file).get_function(f"rf::{name}<{', '.join((t, *flags))}>")


def _i(*vals):
    return [np.int32(v) for v in vals]


def _chunks(n_el, units):
    """Blocks per reduced unit: enough to fill the GPU, no more than the elements need."""
    return max(1, min(math.ceil(n_el / THREADS), 4096 // max(1, units), 65535))


def _launch(kern, grid, block, args, like, smem=0):
    """Launch on torch's current stream; tensors go through DLPack (zero-copy)."""
    import cupy

    stream = torch.cuda.current_stream(like.device).cuda_stream
    with cupy.cuda.Device(like.device.index), cupy.cuda.ExternalStream(stream):
        # converted inside the stream context: DLPack exchanges on torch's own stream, no extra sync
        conv = [cupy.from_dlpack(a.detach().contiguous()) if isinstance(a, torch.Tensor) else a for a in args]
        kern(grid, block, tuple(conv), shared_mem=smem)


def _launch1d(kern, total, args, like):
    if total:
        _launch(kern, (math.ceil(total / THREADS), 1, 1), (THREADS, 1, 1), args, like)


def _fits(elems, dtype):
    """Elements of a shared-memory tile, or 0 when it does not fit in ``SMEM``."""
    return elems if elems * torch.empty((), dtype=dtype).element_size() <= SMEM else 0


class Prims:
    """The primitives of ``impls._cuda_ops`` as CUDA C kernels (mixing as cuBLAS GEMMs)."""

    @staticmethod
    def cpass(inp, taps, cin, fil, st, off, rows, n_out):
        b, ci, hi, wi = inp.shape
        co, nt = cin.shape[0], taps.shape[1]
        ho, wo = (n_out, wi) if rows else (hi, n_out)
        out = torch.empty(b, co, ho, wo, dtype=inp.dtype, device=inp.device)
        if out.numel():
            th, tw = ((_PASS_H - 1) * st + nt, _PASS_W) if rows else (_PASS_H, (_PASS_W - 1) * st + nt)
            cap = _fits(th * tw, inp.dtype)
            grid = (math.ceil(wo / _PASS_W) * b * ci, math.ceil(ho / _PASS_H), 1)
            args = (inp, taps, cin, fil, *_i(ci, co, hi, wi, nt, st, off, ho, wo, cap), out)
            _launch(
                _kernel("passes", "cpass", inp.dtype, "true" if rows else "false"),
                grid,
                (_PASS_W, _PASS_H, 1),
                args,
                inp,
                smem=cap * out.element_size(),
            )
        return out

    @staticmethod
    def tpass(dout, taps, cin, fil, st, off, rows, n_in, c_in):
        b, co, ho, wo = dout.shape
        h, w = (n_in, wo) if rows else (ho, n_in)
        out = torch.empty(b, c_in, h, w, dtype=dout.dtype, device=dout.device)
        args = (dout, taps, cin, fil, *_i(b, co, ho, wo, taps.shape[1], st, off, c_in, h, w), out)
        _launch1d(_kernel("passes", "tpass", dout.dtype, "true" if rows else "false"), out.numel(), args, dout)
        return out

    @staticmethod
    def dtaps(dout, inp, cin, nt, st, off, rows):
        b, co, ho, wo = dout.shape
        out = torch.zeros(co, nt, dtype=dout.dtype, device=dout.device)
        if dout.numel():
            grid = (_chunks(b * ho * wo, co * nt), nt, co)
            args = (dout, inp, cin, *_i(b, co, ho, wo, inp.shape[1], inp.shape[2], inp.shape[3], nt, st, off), out)
            _launch(
                _kernel("passes", "dtaps", dout.dtype, "true" if rows else "false"), grid, (THREADS, 1, 1), args, dout
            )
        return out

    @staticmethod
    def _box(fy, fx):
        """Floors' bounding box per group of ``_FB`` output channels and input channel -> ``[FG,S,4]`` int32."""
        f_ = fy.shape[0]
        pad = -f_ % _FB

        def grouped(a):
            a = torch.cat([a, a[-1:].expand(pad, -1, -1)]) if pad else a
            return a.view(-1, _FB, *a.shape[1:])

        gy, gx = grouped(fy), grouped(fx)
        return torch.stack([gy.amin((1, 3)), gy.amax((1, 3)), gx.amin((1, 3)), gx.amax((1, 3))], -1).to(torch.int32)

    @classmethod
    def shift(cls, c, a4, fy, fx, st, ho, wo):
        n, s, hc, wc = c.shape
        f_, _, k_ = fy.shape
        y = torch.empty(n, f_, ho, wo, dtype=c.dtype, device=c.device)
        if y.numel() == 0:
            return y
        if s * k_ == 0:
            return y.zero_()
        box = cls._box(fy, fx)
        need = ((_TILE_H - 1) * st + box[..., 1] - box[..., 0] + 2) * (
            (_TILE_W - 1) * st + box[..., 3] - box[..., 2] + 2
        )
        fits = need[need <= SMEM // c.element_size()]
        cap = int(fits.max()) if fits.numel() else 0  # blocks whose window is larger read the canvas directly
        grid = (math.ceil(wo / _TILE_W) * box.shape[0], math.ceil(ho / _TILE_H), n)
        args = (c, a4, fy, fx, box, *_i(s, hc, wc, f_, k_, st, ho, wo, cap), y)
        _launch(_kernel("dau", "shift", c.dtype), grid, (_TILE_W, _TILE_H, 1), args, c, smem=cap * c.element_size())
        return y

    @staticmethod
    def tapsum(c, dy, fy, fx, st):
        n, s, hc, wc = c.shape
        f_, _, k_ = fy.shape
        ho, wo = dy.shape[2:]
        out = torch.zeros(f_, s, k_, 4, dtype=c.dtype, device=c.device)
        if out.numel() and dy.numel():
            grid = (f_ * s * k_, _chunks(n * ho * wo, f_ * s * k_), 1)
            args = (c, dy, fy, fx, *_i(n, s, f_, k_, hc, wc, ho, wo, st), out)
            _launch(_kernel("dau", "tapsum", c.dtype), grid, (THREADS, 1, 1), args, c)
        return out

    @staticmethod
    def scatter(dy, a4, fy, fx, st, s, hc, wc):
        n, f_, ho, wo = dy.shape
        back = torch.empty(n, s, hc, wc, dtype=dy.dtype, device=dy.device)
        args = (dy, a4, fy, fx, *_i(n, s, f_, fy.shape[2], hc, wc, ho, wo, st), back)
        _launch1d(_kernel("dau", "scatter", dy.dtype), back.numel(), args, dy)
        return back

    @staticmethod
    def sample(x, a4, fy, fx, st, ho, wo):
        n, s, h, w = x.shape
        g_, k_ = fy.shape
        out = torch.empty(n, g_, s, k_, ho, wo, dtype=x.dtype, device=x.device)
        args = (x, a4, fy, fx, *_i(n, g_, s, k_, h, w, ho, wo, st), out)
        _launch1d(_kernel("acu", "sample", x.dtype), out.numel(), args, x)
        return out

    @staticmethod
    def sample_t(e, a4, fy, fx, st, h, w):
        n, g_, s, k_, ho, wo = e.shape
        gx = torch.empty(n, s, h, w, dtype=e.dtype, device=e.device)
        args = (e, a4, fy, fx, *_i(n, g_, s, k_, h, w, ho, wo, st), gx)
        _launch1d(_kernel("acu", "sample_t", e.dtype), gx.numel(), args, e)
        return gx

    @staticmethod
    def sample_sums(e, x, fy, fx, st):
        n, g_, s, k_, ho, wo = e.shape
        out = torch.zeros(g_, k_, 4, dtype=x.dtype, device=x.device)
        if out.numel() and e.numel():
            grid = (g_ * k_, _chunks(n * s * ho * wo, g_ * k_), 1)
            args = (e, x, fy, fx, *_i(n, g_, s, k_, x.shape[2], x.shape[3], ho, wo, st), out)
            _launch(_kernel("acu", "sample_sums", x.dtype), grid, (THREADS, 1, 1), args, x)
        return out

    # 1x1 mixing: output channels come in G contiguous groups (grp[f] = f // (F / G)), so every
    # product is a batched GEMM over the groups.

    @staticmethod
    def mix(bm, w, grp):
        n, g_, m, l_ = bm.shape
        return torch.matmul(w.view(g_, -1, m), bm).reshape(n, -1, l_)

    @staticmethod
    def mix_t(dy, w, grp, g_):
        n, f_, l_ = dy.shape
        return torch.matmul(w.view(g_, f_ // g_, -1).transpose(1, 2), dy.view(n, g_, f_ // g_, l_))

    @staticmethod
    def mix_dw(dy, bm, grp):
        n, g_, m, l_ = bm.shape
        return torch.einsum("ngfl,ngml->gfm", dy.view(n, g_, -1, l_), bm).reshape(-1, m)


_BACKEND = _cuda_ops.Backend(Prims())
dau = _BACKEND.dau
dau_gauss = _BACKEND.dau_gauss
acu = _BACKEND.acu
njet = _BACKEND.njet
