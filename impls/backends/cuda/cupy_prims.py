"""Backend ``cupy``: the efficient algorithms as CUDA C kernels (``impls/backends/cuda/*.cu``) loaded with
``cupy.RawModule``; the layers are the shared glue of ``impls.backends.cuda.layers`` (MAC counts there and
next to each kernel).

Kernels are templates on the dtype (``float``, ``double``), instantiated through NVRTC name
expressions, compiled once per process and device and fetched once per (device, kernel) (the
cache of ``_function``).  A launch passes raw device pointers (no DLPack, no copies: every tensor
must be contiguous, outputs are allocated contiguous here) inside ``cupy.cuda.Device`` of the
data, on torch's current stream.  Nothing on the host waits for the device: no ``.item()``,
no boolean masks of device tensors (the forward path is free of host syncs, so graph-capturable
as far as this module goes).  Every result is bit-identical run to run: reductions write
per-block partials that torch sums in a fixed order (no float atomics).  Kernel design (see the
``.cu`` files):

- ``passes.cu``: separable 1-D filters (blur, N-Jet derivatives).  A 32 x 8 output tile loads its
  input window once into shared memory and computes every output channel that reads it;
  adjoints are gathers (one thread per input element, no atomics); tap gradients are
  block reductions into partials.
- ``dau_fwd.cu``: the DAU shift (forward), its transpose (the stride-1 input gradient) and the tap
  sums (weight and displacement gradients), blocked for displacement spreads of at most 8, 16, 32
  (three launches; a block of another bucket returns at once; wider stages read directly):
  256 threads, a 32 x 16 tile, a warp per output channel, 4 x 4 register strips, canvas stages
  zero-filled by ``cp.async``, double-buffered.  A prepare pass (``Prims.fwd_table``, torch ops)
  builds the unit table.  Strides 1 and 2.
- ``dau.cu``: the unbounded kernels for other strides: per-unit shift (its canvas window in
  shared memory when it fits, decided per block on the device), scatter as a gather, tap sums
  as block reductions.
- ``acu.cu``: per-synapse bilinear samples shared by a position group; the 1x1 mixing is a
  batched GEMM (``torch.matmul``, cuBLAS); adjoints as above.

Not done yet (issue 15): prepared unit tables are rebuilt on every call (not cached per
parameter version); ``dau_gauss`` always goes through the unit kernels (no cuDNN route).
"""

import functools
import math
import re
from pathlib import Path

import numpy as np
import torch

from . import layers

_DIR = Path(__file__).parent
_T = ("float", "double")
_NAMES = {
    "passes": [f"rf::{k}<{t}, {b}>" for k in ("cpass", "tpass", "dtaps") for t in _T for b in ("true", "false")],
    "dau": [f"rf::{k}<{t}>" for k in ("shift", "tapsum", "scatter") for t in _T],
    "acu": [f"rf::{k}<{t}>" for k in ("sample", "sample_t", "sample_sums") for t in _T],
    "dau_fwd": [
        f"rf::{k}<{t}, {st}, {sp}>"
        for k in ("dau_fwd", "dau_tapsum")
        for t in _T
        for st in (1, 2)
        for sp in ((8, 16, 32) if t == "float" else (32,))
    ],
}
THREADS = 256  # 1-D blocks of the element-wise kernels
RED_THREADS = 256  # blocks of the reduction kernels: kRed in common.cu (a compile-time constant there)
SMEM = 48 * 1024  # bytes of dynamic shared memory a kernel may use without the opt-in attribute
_PASS_W, _PASS_H, _TILE_W, _TILE_H, _FB = 32, 8, 32, 8, 4  # as in passes.cu / dau.cu
# dau_fwd.cu: 256 threads, a 32 x 16 output tile, 16 output channels per block, spread buckets
FWD_THREADS, FWD_TW, FWD_TH, FWD_FB, FWD_STAGE_BYTES = 256, 32, 16, 8, 56 * 1024
SPREADS = (8, 16, 32)  # displacement-spread buckets of dau_fwd / dau_tapsum


def _spreads(dtype):
    """The SPREAD instantiated per bucket: float has all three, double (correctness first) only 32."""
    return SPREADS if dtype == torch.float32 else (SPREADS[-1],) * len(SPREADS)


def fwd_geom(esize, stride, spread):
    """``dau_fwd``'s tile geometry (``FwdGeom`` in dau_fwd.cu) -> ``(rows, cols, pitch, cs, smem bytes)``."""

    def pitch(cols):
        return (cols + 3 + 7) // 8 * 8

    rows, cols = (FWD_TH - 1) * stride + spread + 2, (FWD_TW - 1) * stride + spread + 2
    plane32 = ((FWD_TH - 1) * stride + 34) * pitch((FWD_TW - 1) * stride + 34)
    cs = max(1, min(8, FWD_STAGE_BYTES // (plane32 * esize)))
    return rows, cols, pitch(cols), cs, 2 * cs * rows * pitch(cols) * esize


def tapsum_kc(cs):
    """Units k per ``dau_tapsum`` block (``FwdGeom::kc``)."""
    return 1 if cs >= 4 else 4 // cs


def _cuda_major_check():
    """CuPy and torch must use the same CUDA major version (extras ``gpu`` for CUDA 13, ``gpu-cuda12``)."""
    import cupy

    ours = cupy.cuda.runtime.runtimeGetVersion() // 1000
    theirs = torch.version.cuda
    if theirs is not None and int(theirs.split(".")[0]) != ours:
        raise RuntimeError(
            f"cupy backend: CuPy is built for CUDA {ours}.x but torch for CUDA {theirs}; install the "
            "matching extra (pip install -e .[gpu] for CUDA 13, .[gpu-cuda12] for CUDA 12)"
        )


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)


def source(name, where=None):
    """The text of ``impls/backends/cuda/<name>.cu`` with its local ``#include "..."`` files pasted in (each once).

    CuPy's disk cache keys a compiled module on the source text it is given: with the includes
    pasted in, an edit of ``common.cu`` changes the key (an ``-I`` include would not, and a machine
    with a cache would run stale kernels).  ``#line`` directives keep NVRTC's messages pointing at
    the right file and line."""
    where = Path(where or _DIR)
    seen = set()

    def expand(fname):
        if fname in seen:
            return ""
        seen.add(fname)
        text = (where / fname).read_text()
        out, last = [], 0
        for m in _INCLUDE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out += [text[last : m.start()], f'#line 1 "{m.group(1)}"\n', expand(m.group(1))]
            out.append(f'\n#line {line + 1} "{fname}"')
            last = m.end()
        return "".join(out + [text[last:]])

    return expand(f"{name}.cu")


MODULES = tuple(_NAMES)
OPTIONS = ("-std=c++17",)  # CuPy adds -ftz=true and the device's -arch


def nvrtc_compile(name, arch="sm_90"):
    """Compile module ``name`` (``MODULES``) with NVRTC as ``_module`` does, with CuPy's own
    additions (``-ftz=true``, ``-arch``), every name expression instantiated, without a device
    (for a CPU-side check before a GPU run) -> NVRTC's log.  Raises RuntimeError with the log, OSError
    when CuPy cannot load the NVRTC library (CuPy 14 raises a RuntimeError of its own for that)."""
    from cupy.cuda import nvrtc  # CuPy's own NVRTC bindings (cupy_backends.cuda.libs.nvrtc), no device needed

    try:
        nvrtc.getVersion()  # loads the library
    except (OSError, RuntimeError) as exc:
        raise OSError(f"NVRTC library not loadable by CuPy: {exc}") from None
    prog = nvrtc.createProgram(source(name), f"{name}.cu", [], [])
    try:
        for expr in _NAMES[name]:
            nvrtc.addNameExpression(prog, expr)
        try:
            nvrtc.compileProgram(prog, [*OPTIONS, "-ftz=true", f"-arch={arch}"])
        except Exception as exc:
            raise RuntimeError(f"NVRTC failed on {name}.cu for {arch}: {exc}\n{nvrtc.getProgramLog(prog)}") from None
        return nvrtc.getProgramLog(prog)
    finally:
        nvrtc.destroyProgram(prog)


@functools.cache
def _module(name, device):
    """The compiled ``.cu`` module on CUDA device ``device`` (one NVRTC compile per process and device)."""
    import cupy

    _cuda_major_check()
    with cupy.cuda.Device(device):
        return cupy.RawModule(code=source(name), options=OPTIONS, name_expressions=_NAMES[name])


@functools.cache
def _function(file, name, device):
    """Kernel ``name`` of module ``file`` on ``device``, fetched once (cached per device, kernel and dtype)."""
    import cupy

    with cupy.cuda.Device(device):
        return _module(file, device).get_function(name)


def _name(name, dtype, *flags):
    t = "float" if dtype == torch.float32 else "double"
    return f"rf::{name}<{', '.join((t, *flags))}>"


def _i(*vals):
    return [np.int32(v) for v in vals]


def _chunks(n_el, units):
    """Blocks per reduced unit: enough to fill the GPU, no more than the elements need."""
    return max(1, min(math.ceil(n_el / RED_THREADS), 4096 // max(1, units), 65535))


def _argv(args):
    """Kernel arguments: tensors as raw device pointers (``np.uint64``), the rest as given.

    Every tensor must be contiguous: inputs are made so by the callers, outputs are allocated
    contiguous by the primitives, so nothing is ever copied here (a copied output would be lost).
    """
    out = []
    for k, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            if not a.is_contiguous():
                raise ValueError(f"kernel argument {k}: expected a contiguous tensor, got strides {a.stride()}")
            out.append(np.uint64(a.data_ptr()))
        else:
            out.append(a)
    return out


def _launch(file, name, grid, block, args, like, smem=0):
    """Launch kernel ``name`` of ``file`` on ``like``'s device and torch's current stream (no sync)."""
    import cupy

    dev = like.device.index
    with cupy.cuda.Device(dev):
        kern = _function(file, name, dev)
        if smem > SMEM and kern.max_dynamic_shared_size_bytes < smem:
            kern.max_dynamic_shared_size_bytes = smem  # opt-in above 48 KB (once per kernel)
        with cupy.cuda.ExternalStream(torch.cuda.current_stream(like.device).cuda_stream):
            kern(grid, block, tuple(_argv(args)), shared_mem=smem)


def _launch1d(file, name, total, args, like):
    if total:
        _launch(file, name, (math.ceil(total / THREADS), 1, 1), (THREADS, 1, 1), args, like)


def _c(t):
    return t.detach().contiguous()


class Prims:
    """The primitives of ``impls.backends.cuda.layers`` as CUDA C kernels (mixing as cuBLAS GEMMs)."""

    @staticmethod
    def cpass(inp, taps, cin, fil, st, off, rows, n_out):
        b, ci, hi, wi = inp.shape
        co, nt = cin.shape[0], taps.shape[1]
        ho, wo = (n_out, wi) if rows else (hi, n_out)
        out = torch.empty(b, co, ho, wo, dtype=inp.dtype, device=inp.device)
        if out.numel():
            th, tw = ((_PASS_H - 1) * st + nt, _PASS_W) if rows else (_PASS_H, (_PASS_W - 1) * st + nt)
            cap = th * tw if th * tw * out.element_size() <= SMEM else 0  # host arithmetic: no sync
            grid = (math.ceil(wo / _PASS_W) * b * ci, math.ceil(ho / _PASS_H), 1)
            args = (_c(inp), _c(taps), _c(cin), _c(fil), *_i(ci, co, hi, wi, nt, st, off, ho, wo, cap), out)
            name = _name("cpass", inp.dtype, "true" if rows else "false")
            _launch("passes", name, grid, (_PASS_W, _PASS_H, 1), args, inp, smem=cap * out.element_size())
        return out

    @staticmethod
    def tpass(dout, taps, cin, fil, st, off, rows, n_in, c_in):
        b, co, ho, wo = dout.shape
        h, w = (n_in, wo) if rows else (ho, n_in)
        out = torch.empty(b, c_in, h, w, dtype=dout.dtype, device=dout.device)
        args = (_c(dout), _c(taps), _c(cin), _c(fil), *_i(b, co, ho, wo, taps.shape[1], st, off, c_in, h, w), out)
        _launch1d("passes", _name("tpass", dout.dtype, "true" if rows else "false"), out.numel(), args, dout)
        return out

    @staticmethod
    def dtaps(dout, inp, cin, nt, st, off, rows):
        b, co, ho, wo = dout.shape
        chunks = _chunks(b * ho * wo, co * nt)
        part = torch.zeros(co, nt, chunks, dtype=dout.dtype, device=dout.device)
        if dout.numel():
            args = (_c(dout), _c(inp), _c(cin), *_i(b, co, ho, wo, *inp.shape[1:], nt, st, off), part)
            name = _name("dtaps", dout.dtype, "true" if rows else "false")
            _launch("passes", name, (chunks, nt, co), (RED_THREADS, 1, 1), args, dout)
        return part.sum(-1)  # fixed order: bit-identical run to run

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
        """``dau_fwd`` for strides 1 and 2, else the unbounded ``shift`` kernel, in which each
        block decides on the device whether its canvas window fits the ``SMEM`` tile (no sync)."""
        n, s, hc, wc = c.shape
        f_, _, k_ = fy.shape
        y = torch.empty(n, f_, ho, wo, dtype=c.dtype, device=c.device)
        if y.numel() == 0:
            return y
        if s * k_ == 0:
            return y.zero_()
        if st in (1, 2):
            a4 = _c(a4)
            if a4.data_ptr() % (4 * a4.element_size()):  # the kernels read a unit's 4 weights as one vector
                a4 = a4.clone()
            cls._fwd(_c(c), a4, _c(fy), _c(fx), st, y)
            return y
        box = cls._box(fy, fx)
        cap = SMEM // c.element_size()
        grid = (math.ceil(wo / _TILE_W) * box.shape[0] * n, math.ceil(ho / _TILE_H), 1)
        args = (_c(c), _c(a4), _c(fy), _c(fx), box, *_i(s, hc, wc, f_, k_, st, ho, wo, cap), y)
        _launch("dau", _name("shift", c.dtype), grid, (_TILE_W, _TILE_H, 1), args, c, smem=SMEM)
        return y

    @staticmethod
    def fwd_table(fy, fx, cs):
        """The prepare pass of ``dau_fwd`` (torch ops on the device, no sync) for floors ``[F,S,K]``
        and stages of ``cs`` input channels -> ``(rel [F,S,K], box [FG,SC,2], fits [FG,SC], bucket [FG])``
        int32: per group of ``FWD_FB`` output channels and stage, the window origin (least floors)
        and whether the spread fits 32; per unit its floors relative to that origin
        (``dy << 16 | dx``); per group the spread bucket (index into ``SPREADS``)."""
        f_, s_, k_ = fy.shape
        pf, ps = -f_ % FWD_FB, -s_ % cs

        def grouped(a):
            a = a.long()
            a = torch.cat([a, a[-1:].expand(pf, -1, -1)]) if pf else a
            a = torch.cat([a, a[:, -1:].expand(-1, ps, -1)], 1) if ps else a
            return a.view(-1, FWD_FB, a.shape[1] // cs, cs, k_)

        gy, gx = grouped(fy), grouped(fx)
        y0, x0 = gy.amin((1, 3, 4)), gx.amin((1, 3, 4))
        spread = torch.maximum(gy.amax((1, 3, 4)) - y0, gx.amax((1, 3, 4)) - x0)
        fits = spread <= SPREADS[-1]
        most = spread.amax(1)
        bucket = (most > SPREADS[0]).to(torch.int32) + (most > SPREADS[1]).to(torch.int32)
        ry, rx = gy - y0[:, None, :, None, None], gx - x0[:, None, :, None, None]
        rel = torch.where(fits[:, None, :, None, None], ry * 65536 + rx, 0).reshape(-1, gy.shape[2] * cs, k_)
        return (
            layers._i32(rel[:f_, :s_]),
            layers._i32(torch.stack([y0, x0], -1)),
            layers._i32(fits),
            layers._i32(bucket),
        )

    @classmethod
    def _fwd(cls, c, a4, fy, fx, st, y):
        """``y`` from ``dau_fwd``: one launch per spread bucket; blocks of other buckets return at once."""
        n, s, hc, wc = c.shape
        f_, _, k_ = fy.shape
        ho, wo = y.shape[2:]
        esize = c.element_size()
        rel, box, fits, bucket = cls.fwd_table(fy, fx, fwd_geom(esize, st, SPREADS[-1])[3])
        if 4 * f_ * s * k_ >= 2**31:
            raise ValueError(f"cupy dau: F S K = {f_ * s * k_} units, expected fewer than 2**29 (32-bit unit indices)")
        grid = (math.ceil(wo / FWD_TW) * math.ceil(f_ / FWD_FB) * n, math.ceil(ho / FWD_TH), 1)
        t = "float" if c.dtype == torch.float32 else "double"
        for b, sp in enumerate(_spreads(c.dtype)):
            args = (c, a4, fy, fx, rel, box, fits, bucket, *_i(s, hc, wc, f_, k_, ho, wo, b), y)
            smem = fwd_geom(esize, st, sp)[4]
            _launch("dau_fwd", f"rf::dau_fwd<{t}, {st}, {sp}>", grid, (FWD_THREADS, 1, 1), args, c, smem=smem)

    @classmethod
    def tapsum(cls, c, dy, fy, fx, st):
        n, s, hc, wc = c.shape
        f_, _, k_ = fy.shape
        ho, wo = dy.shape[2:]
        if st in (1, 2) and f_ * s * k_ and dy.numel():
            return cls._tapsum(_c(c), _c(dy), _c(fy), _c(fx), st)
        chunks = _chunks(n * ho * wo, f_ * s * k_)
        part = torch.zeros(f_, s, k_, 4, chunks, dtype=c.dtype, device=c.device)
        if part.numel() and dy.numel():
            args = (_c(c), _c(dy), _c(fy), _c(fx), *_i(n, s, f_, k_, hc, wc, ho, wo, st), part)
            _launch("dau", _name("tapsum", c.dtype), (f_ * s * k_, chunks, 1), (RED_THREADS, 1, 1), args, c)
        return part.sum(-1)  # fixed order: bit-identical run to run

    @classmethod
    def _tapsum(cls, c, dy, fy, fx, st):
        """Tap sums from ``dau_tapsum``: blocks over (group, stage, k-chunk) x step chunks, one launch
        per spread bucket; per-block partials summed here in a fixed order."""
        n, s, hc, wc = c.shape
        f_, _, k_ = fy.shape
        ho, wo = dy.shape[2:]
        esize = c.element_size()
        if 4 * f_ * s * k_ >= 2**31:
            raise ValueError(f"cupy dau: F S K = {f_ * s * k_} units, expected fewer than 2**29 (32-bit unit indices)")
        cs = fwd_geom(esize, st, SPREADS[-1])[3]
        rel, box, fits, bucket = cls.fwd_table(fy, fx, cs)
        units = math.ceil(f_ / FWD_FB) * math.ceil(s / cs) * math.ceil(k_ / tapsum_kc(cs))
        steps = n * math.ceil(ho / FWD_TH) * math.ceil(wo / FWD_TW)
        chunks = max(1, min(steps, math.ceil(1024 / units), 65535))
        part = torch.empty(f_, s, k_, 4, chunks, dtype=c.dtype, device=c.device)
        t = "float" if c.dtype == torch.float32 else "double"
        for b, sp in enumerate(_spreads(c.dtype)):
            args = (c, dy, fy, fx, rel, box, fits, bucket, *_i(n, s, hc, wc, f_, k_, ho, wo, b), part)
            smem = fwd_geom(esize, st, sp)[4]
            _launch(
                "dau_fwd",
                f"rf::dau_tapsum<{t}, {st}, {sp}>",
                (units, chunks, 1),
                (FWD_THREADS, 1, 1),
                args,
                c,
                smem=smem,
            )
        return part.sum(-1)  # fixed order: bit-identical run to run

    @classmethod
    def scatter(cls, dy, a4, fy, fx, st, s, hc, wc):
        n, f_, ho, wo = dy.shape
        if st == 1:
            # back[n,s,p,q] = sum_{f,k,m} a4[f,s,k,m] dy[n,f, p - fy - da, q - fx - db]: the forward
            # shift of dy with units (s, f, k), floors -fy - 1 and the corners in reverse order.
            a4t = a4.permute(1, 0, 2, 3).flip(-1)
            fyt, fxt = (-1 - fy).permute(1, 0, 2), (-1 - fx).permute(1, 0, 2)
            return cls.shift(dy, a4t, fyt, fxt, 1, hc, wc)
        back = torch.empty(n, s, hc, wc, dtype=dy.dtype, device=dy.device)
        args = (_c(dy), _c(a4), _c(fy), _c(fx), *_i(n, s, f_, fy.shape[2], hc, wc, ho, wo, st), back)
        _launch1d("dau", _name("scatter", dy.dtype), back.numel(), args, dy)
        return back

    @staticmethod
    def sample(x, a4, fy, fx, st, ho, wo):
        n, s, h, w = x.shape
        g_, k_ = fy.shape
        out = torch.empty(n, g_, s, k_, ho, wo, dtype=x.dtype, device=x.device)
        args = (_c(x), _c(a4), _c(fy), _c(fx), *_i(n, g_, s, k_, h, w, ho, wo, st), out)
        _launch1d("acu", _name("sample", x.dtype), out.numel(), args, x)
        return out

    @staticmethod
    def sample_t(e, a4, fy, fx, st, h, w):
        n, g_, s, k_, ho, wo = e.shape
        gx = torch.empty(n, s, h, w, dtype=e.dtype, device=e.device)
        args = (_c(e), _c(a4), _c(fy), _c(fx), *_i(n, g_, s, k_, h, w, ho, wo, st), gx)
        _launch1d("acu", _name("sample_t", e.dtype), gx.numel(), args, e)
        return gx

    @staticmethod
    def sample_sums(e, x, fy, fx, st):
        n, g_, s, k_, ho, wo = e.shape
        chunks = _chunks(n * s * ho * wo, g_ * k_)
        part = torch.zeros(g_, k_, 4, chunks, dtype=x.dtype, device=x.device)
        if part.numel() and e.numel():
            args = (_c(e), _c(x), _c(fy), _c(fx), *_i(n, g_, s, k_, x.shape[2], x.shape[3], ho, wo, st), part)
            _launch("acu", _name("sample_sums", x.dtype), (g_ * k_, chunks, 1), (RED_THREADS, 1, 1), args, x)
        return part.sum(-1)  # fixed order: bit-identical run to run

    # 1x1 mixing: output channels come in G contiguous groups (grp[f] = f // (F / G)), so every
    # product is a batched GEMM over the groups.

    @staticmethod
    def mix(bm, w, grp):
        n, g_, m, l_ = bm.shape
        return torch.matmul(w.view(g_, -1, m), bm).reshape(n, w.shape[0], l_)  # n = 0 allowed: no -1

    @staticmethod
    def mix_t(dy, w, grp, g_):
        n, f_, l_ = dy.shape
        return torch.matmul(w.view(g_, f_ // g_, -1).transpose(1, 2), dy.view(n, g_, f_ // g_, l_))

    @staticmethod
    def mix_dw(dy, bm, grp):
        n, g_, m, l_ = bm.shape
        f_ = dy.shape[1]
        return torch.einsum("ngfl,ngml->gfm", dy.view(n, g_, f_ // g_, l_), bm).reshape(f_, m)


OPS = layers.ops(Prims())
