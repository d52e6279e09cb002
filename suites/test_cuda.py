"""CUDA backends (``numba-cuda``, ``cupy``) without and with a GPU.

(a) The numba-cuda kernels under Numba's CUDA simulator (enabled by ``conftest`` when the
    machine has no GPU), on tiny shapes, against the float64 reference: forward and every
    gradient, through the backend's own glue on CPU tensors (NumPy views) and directly on NumPy.
(b) Every ``impls/cuda/*.cu`` compiled with nvcc for sm_80 and sm_90, warnings as errors.
(c) On a GPU: both backends through the public API against the reference.
(d) The CUDA C kernels of the ``cupy`` backend compiled for the CPU (g++, with a small shim that
    emulates threads, barriers, warp shuffles and atomics), driven by ``impls.backends.cuda.cupy_prims``'s own
    launch code and glue with ``cupy`` replaced by that library: everything but DLPack and streams.
"""

import ctypes
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rfbench import reference
from rfbench.harness import cases, runner

CUDA_DIR = Path(__file__).resolve().parents[1] / "impls" / "backends" / "cuda"
N, S, F, K, H, W = 1, 2, 2, 2, 5, 4


def _sim():
    """``impls.backends.cuda.numba_prims`` with small launches when the CUDA simulator is on, else skip."""
    from numba import config

    if not config.ENABLE_CUDASIM:
        pytest.skip("numba CUDA simulator not enabled (NUMBA_ENABLE_CUDASIM=1; set by conftest without a GPU)")
    from rfbench.impls.backends.cuda import numba_prims as numba_cuda

    return numba_cuda


@pytest.fixture
def nc(monkeypatch):
    mod = _sim()
    monkeypatch.setattr(mod, "THREADS", 32)
    monkeypatch.setattr(mod.OPS["dau"].P, "per_lane", 4)  # several lanes even on tiny shapes
    return mod


def _case(layer, stride, seed=0, groups=1, sigma_units=False, order=2, mu_grad="exact", **more):
    """A tiny ``layer`` case (``harness.cases.Case``) of the module's current ``N, S, F, K, H, W``:
    displacements up to a few pixels beyond the image; ``more`` replaces any other field."""
    base = dict(n=N, s=S, f=F, k=K, h=H, w=W, stride=stride, seed=seed)
    if layer == "dau":
        case = cases.Case("tiny", "dau", sigma=0.8, spread=4.0, radius=2, mu_grad=mu_grad, **base)
    elif layer == "dau_gauss":
        case = cases.Case("tiny", "dau_gauss", sigma=0.9, spread=2.5, radius=2, per_unit_sigma=sigma_units, **base)
    elif layer == "acu":
        case = cases.Case("tiny", "acu", spread=3.0, groups=groups if groups > 1 else 0, bias=groups <= 1, **base)
    else:
        case = cases.Case("tiny", "njet", sigma=0.9, radius=2, order=order, **base)
    return replace(case, **more)


def _args(case, dtype=torch.float64):
    """``case``'s tensors (in the order of its layer's table) and hyper-parameters."""
    arrays = case.arrays(0)
    names = reference.LAYERS[case.layer].tensors
    return [None if arrays[n] is None else torch.from_numpy(arrays[n]).to(dtype) for n in names], case.hparams(True)


def _layer(mod, layer):
    """The backend module ``mod``'s op for ``layer`` as a function of the public call's arguments, run
    outside the registry (CPU tensors under the simulator or the emulation): ``impls._ops.apply``."""
    from rfbench.impls import _ops

    return lambda *ts, **hp: _ops.apply(mod.OPS[layer], layer, ts, hp)


def _judge(backend, mod, case, dtype, seed, device="cpu"):
    """``mod``'s op for ``case`` run outside the registry (or, ``mod`` None, the registered ``backend`` on
    ``device``), judged as the correctness matrix judges: ``harness.runner`` against the reference."""
    rows = runner.run_case(case, backend, dtype, device, seed, op=None if mod is None else mod.OPS[case.layer])
    if rows[0]["status"] == "skip":
        pytest.skip(f"{backend}: {rows[0]['reason']}")
    bad = [
        f"{r['output']}: {r['status']} err/bound={r['bound_ratio']} {r['reason']}"
        for r in rows
        if r["status"] != "pass"
    ]
    assert not bad, f"{backend} {case.fields()} {dtype} (seed {seed}):\n" + "\n".join(bad)


CASES = [
    ("dau", 1, {"mu_grad": "exact"}),
    ("dau", 2, {"mu_grad": "gauss"}),
    ("dau", 2, {"mu_grad": "exact"}),
    ("dau", 1, {"displace": "integer"}),
    ("dau_gauss", 1, {"sigma_units": True}),
    ("dau_gauss", 2, {}),
    ("acu", 1, {}),
    ("acu", 2, {"groups": 2}),
    ("acu", 1, {"offset": -6.0}),
    ("njet", 1, {}),
    ("njet", 2, {"order": 1}),
]
CASE_IDS = [f"{c[0]}-s{c[1]}-{'-'.join(map(str, c[2].values()))}" for c in CASES]


# ---------------------------------------------------------------- (a) simulator


@pytest.mark.parametrize("layer,stride,extra", CASES, ids=CASE_IDS)
def test_sim_float64(nc, layer, stride, extra, seed):
    _judge("numba-cuda", nc, _case(layer, stride, **extra), "float64", seed)


@pytest.mark.parametrize("layer", ["dau", "dau_gauss", "acu", "njet"])
def test_sim_float32(nc, layer, seed):
    _judge("numba-cuda", nc, _case(layer, 2 if layer == "acu" else 1, seed=3), "float32", seed)


def test_sim_empty_batch(nc):
    args, hp = _args(_case("dau", 1))
    args[0] = args[0][:0]
    ts = [a.clone().requires_grad_() for a in args]
    y = _layer(nc, "dau")(*ts, **hp)
    assert y.shape == (0, F, H, W)
    y.sum().backward()
    assert ts[0].grad.shape == ts[0].shape and float(ts[1].grad.abs().sum()) == 0.0


def test_sim_kernels_numpy(nc):
    """Layer (1) on plain NumPy arrays: ``shift`` equals the reference's bilinear samples."""
    rng = np.random.default_rng(0)
    c = rng.standard_normal((N, S, H, W))
    mu = rng.uniform(-3, 3, (2, F, S, K))
    fl = np.floor(mu)
    a = mu - fl
    a4 = np.stack([(1 - a[0]) * (1 - a[1]), (1 - a[0]) * a[1], a[0] * (1 - a[1]), a[0] * a[1]], -1)  # m = 2 da + db
    w = rng.standard_normal((F, S, K))
    y = np.full((N, F, 3, 2), np.nan)
    nc.shift(c, np.ascontiguousarray(w[..., None] * a4), fl[0].astype(np.int32), fl[1].astype(np.int32), 2, y)
    ref = np.zeros_like(y)
    for f in range(F):
        for s in range(S):
            for k in range(K):
                ref[0, f] += w[f, s, k] * reference._ops.sample(c[0, s], mu[0, f, s, k], mu[1, f, s, k], 2, (3, 2))
    assert np.abs(y - ref).max() < 1e-13


# ---------------------------------------------------------------- (b) nvcc


ARCHS = ("sm_80", "sm_90")
_BUILDS = {}


def nvcc_build(src, arch, out_dir):
    """``src`` compiled for every arch of ``ARCHS`` in one nvcc run (``--threads 0``: the archs in
    parallel; warnings as errors, ``-Xptxas -v``), once per session -> for ``arch``:
    ``(returncode, stderr, resources)``; ``resources`` maps each kernel (demangled) to its
    registers, static shared memory, stack frame and spill bytes."""
    import re

    if src not in _BUILDS:
        nvcc = shutil.which("nvcc")
        if nvcc is None:
            pytest.skip("nvcc not found")
        cmd = [nvcc, "-std=c++17", "-fatbin", "--threads", "0", "-o", str(Path(out_dir) / f"{src}.fatbin")]
        for a in ARCHS:
            cmd += ["-gencode", f"arch=compute_{a[3:]},code={a}"]
        cmd += ["--Werror", "all-warnings", "-Xcompiler", "-Wall,-Werror", "-Xptxas", "-v", str(CUDA_DIR / src)]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
        tables, cur = {a: {} for a in ARCHS}, None
        for line in res.stderr.splitlines():
            if m := re.search(r"Compiling entry function '(\w+)' for '(sm_\d+)'", line):
                cur = tables[m.group(2)].setdefault(
                    m.group(1), {"regs": 0, "smem": 0, "stack": 0, "spill_st": 0, "spill_ld": 0}
                )
            elif cur is not None and (
                m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
            ):
                cur.update(stack=int(m[1]), spill_st=int(m[2]), spill_ld=int(m[3]))
            elif cur is not None and (m := re.search(r"Used (\d+) registers", line)):
                cur["regs"] = int(m[1])
                cur["smem"] = int(m[1]) if (m := re.search(r"(\d+) bytes smem", line)) else 0
        filt = shutil.which("cu++filt") or shutil.which("c++filt")
        for a, table in tables.items():
            if filt and table:
                out = subprocess.run([filt], input="\n".join(table), capture_output=True, text=True, check=True)
                tables[a] = {n.split("(")[0]: v for n, v in zip(out.stdout.split("\n"), table.values())}
        _BUILDS[src] = (res.returncode, res.stderr, tables)
    rc, err, tables = _BUILDS[src]
    return rc, err, tables[arch]


SOURCES = sorted(p.name for p in CUDA_DIR.glob("*.cu"))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", SOURCES)
def test_nvcc_compiles(src, arch, tmp_path_factory):
    rc, err, _ = nvcc_build(src, arch, tmp_path_factory.getbasetemp())
    assert rc == 0, err


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", SOURCES)
def test_nvcc_no_spills(src, arch, tmp_path_factory):
    """Every kernel fits its registers: no spills and no stack frame (local memory), recorded per kernel."""
    rc, err, table = nvcc_build(src, arch, tmp_path_factory.getbasetemp())
    assert rc == 0, err
    if src != "common.cu":
        assert table, f"no kernel found in the ptxas report of {src}"
    spills = {k: v for k, v in table.items() if v["spill_st"] or v["spill_ld"] or v["stack"]}
    assert not spills, spills


# ---------------------------------------------------------------- (c) GPU


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["numba-cuda", "cupy"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layer,stride,extra", CASES, ids=CASE_IDS)
def test_gpu(backend, dtype, layer, stride, extra, seed):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _judge(backend, None, _case(layer, stride, **extra), dtype, seed, "cuda")


# ---------------------------------------------------------------- (d) CUDA C kernels on the CPU

EMU_SHIM = r"""
// Minimal CPU emulation of the CUDA built-ins used by impls/cuda/*.cu: one std::thread per CUDA
// thread of a block, std::barrier for __syncthreads and warp shuffles.  Blocks run one after
// another in a shuffled order (emu_seed), so results that depend on block order show up as
// differences.
// Launches are checked against the limits of compute capability 8.0 / 9.0.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* block_bar = nullptr;
inline std::vector<std::barrier<>*> warp_bar;
inline unsigned emu_seed = 0;
namespace rf { unsigned char raw[1 << 20]; }

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __align__(n)
#define __launch_bounds__(...)

inline int emu_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
inline void __syncthreads() { block_bar->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { warp_bar[emu_tid() / 32]->arrive_and_wait(); }
template <class T> T __ldg(const T* p) { return *p; }
// No atomicAdd: a kernel that used one would not build here (results must not depend on order).
template <class T> T __shfl_down_sync(unsigned, T v, int o) {
    static T buf[1024];
    const int t = emu_tid();
    buf[t] = v;
    warp_bar[t / 32]->arrive_and_wait();
    T r = (t % 32 + o < 32) ? buf[t + o] : v;
    warp_bar[t / 32]->arrive_and_wait();
    return r;
}

template <class P> P emu_arg(void* a) {
    if constexpr (std::is_pointer_v<P>) return (P)a; else return *(P*)a;
}
template <class... P, std::size_t... I> void emu_call(void (*k)(P...), void** a, std::index_sequence<I...>) {
    k(emu_arg<P>(a[I])...);
}
template <class... P> void emu_invoke(void (*k)(P...), void** a) { emu_call(k, a, std::index_sequence_for<P...>{}); }

// Launch limits (CUDA C Programming Guide, compute capability 8.0 and 9.0): grid.x < 2^31,
// grid.y, grid.z <= 65535; block x, y <= 1024, z <= 64, at most 1024 threads; dynamic shared
// memory at most 48 KB, or with the opt-in attribute 163 KB (sm_80's limit; sm_90 allows 227 KB).
// Returns 0, or the number of the violated limit.
inline int emu_limits(const unsigned* g, const unsigned* b, unsigned smem, int optin) {
    if (g[0] < 1 || g[1] < 1 || g[2] < 1 || g[0] > 2147483647u || g[1] > 65535 || g[2] > 65535) return 2;
    if (b[0] < 1 || b[1] < 1 || b[2] < 1 || b[0] > 1024 || b[1] > 1024 || b[2] > 64) return 3;
    if (b[0] * b[1] * b[2] > 1024) return 4;
    if (smem > (optin ? 163u * 1024 : 48u * 1024)) return 5;
    if (smem > sizeof(rf::raw)) return 6;
    return 0;
}

inline int emu_launch(const std::function<void()>& body, const unsigned* g, const unsigned* b, unsigned smem,
                      int optin) {
    if (int bad = emu_limits(g, b, smem, optin)) return bad;
    gridDim = {g[0], g[1], g[2]};
    blockDim = {b[0], b[1], b[2]};
    const int nt = b[0] * b[1] * b[2];
    std::vector<dim3> order;
    for (unsigned z = 0; z < g[2]; ++z) for (unsigned y = 0; y < g[1]; ++y) for (unsigned x = 0; x < g[0]; ++x)
        order.push_back({x, y, z});
    std::mt19937 rng(emu_seed);
    std::shuffle(order.begin(), order.end(), rng);
    std::barrier<> bar(nt);
    block_bar = &bar;
    std::vector<std::barrier<>*> wb;
    for (int w = 0; w < (nt + 31) / 32; ++w) wb.push_back(new std::barrier<>(std::min(32, nt - 32 * w)));
    warp_bar = wb;
    // One std::thread per CUDA thread of a block, running the blocks one after another.
    std::vector<std::thread> th;
    for (int t = 0; t < nt; ++t)
        th.emplace_back([&, t] {
            threadIdx = {unsigned(t % b[0]), unsigned(t / b[0] % b[1]), unsigned(t / (b[0] * b[1]))};
            for (const dim3& blk : order) {
                blockIdx = blk;
                if (t == 0) std::memset(rf::raw, 0xff, sizeof(rf::raw));  // garbage: tiles must be written first
                bar.arrive_and_wait();
                body();
                bar.arrive_and_wait();  // the block is done (threads that returned early arrive here too)
            }
        });
    for (auto& h : th) h.join();
    for (auto* p : wb) delete p;
    return 0;
}
"""

EMU_KERNELS = [
    *[
        f"rf::{k}<{t}, {b}>"
        for k in ("cpass", "tpass", "dtaps")
        for t in ("float", "double")
        for b in ("true", "false")
    ],
    *[
        f"rf::{k}<{t}>"
        for k in ("shift", "tapsum", "scatter", "sample", "sample_t", "sample_sums")
        for t in ("float", "double")
    ],
    *[
        f"rf::{k}<{t}, {st}, {sp}>"
        for k in ("dau_fwd", "dau_tapsum")
        for t in ("float", "double")
        for st in (1, 2)
        for sp in ((8, 16, 32) if t == "float" else (32,))
    ],
]

EMU_MAIN = (
    r"""
#include "passes.cu"
#include "dau.cu"
#include "acu.cu"
#include "dau_fwd.cu"

#define ENTRY(...) {#__VA_ARGS__, [](void** a) { emu_invoke(&__VA_ARGS__, a); }}
static const std::vector<std::pair<std::string, std::function<void(void**)>>> table = {
"""
    + "".join(f"    ENTRY({k}),\n" for k in EMU_KERNELS)
    + r"""};

extern "C" void emu_set_seed(unsigned s) { emu_seed = s; }

template <class G> void emu_geom(int* out) {
    out[0] = G::rows, out[1] = G::cols, out[2] = G::pitch, out[3] = G::cs, out[4] = G::smem, out[5] = G::kc;
}
template <class T, int ST> void emu_geom_sp(int sp, int* out) {
    if (sp == 8) emu_geom<rf::FwdGeom<T, ST, 8>>(out);
    if (sp == 16) emu_geom<rf::FwdGeom<T, ST, 16>>(out);
    if (sp == 32) emu_geom<rf::FwdGeom<T, ST, 32>>(out);
}
// rf::FwdGeom of dau_fwd.cu (for the host's mirror, impls.backends.cuda.cupy_prims.fwd_geom).
extern "C" void emu_fwd_geom(int esize, int st, int sp, int* out) {
    if (esize == 4) (st == 1 ? emu_geom_sp<float, 1>(sp, out) : emu_geom_sp<float, 2>(sp, out));
    else (st == 1 ? emu_geom_sp<double, 1>(sp, out) : emu_geom_sp<double, 2>(sp, out));
}

// 0: ran; 1: unknown kernel; 2-6: launch limit violated (emu_limits).
extern "C" int emu(const char* name, const unsigned* g, const unsigned* b, unsigned smem, int optin, void** args) {
    for (auto& [n, f] : table)
        if (n == name) return emu_launch([&] { f(args); }, g, b, smem, optin);
    return 1;
}
"""
)


@pytest.fixture(scope="session")
def emu_lib(tmp_path_factory):
    """The ``.cu`` kernels built as a CPU library (``__shared__`` -> ``static``: blocks run one at a time)."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found")
    d = tmp_path_factory.mktemp("emu")
    for src in CUDA_DIR.glob("*.cu"):
        text = src.read_text().replace(
            "extern __shared__ __align__(16) unsigned char raw[];", "extern unsigned char raw[];"
        )
        (d / src.name).write_text(text.replace("__shared__", "static"))
    (d / "shim.h").write_text(EMU_SHIM)
    (d / "emu.cpp").write_text('#include "shim.h"\n' + EMU_MAIN)
    cmd = [
        gxx,
        "-std=c++20",
        "-O1",
        "-fPIC",
        "-shared",
        "-D__CUDACC_RTC__",
        f"-I{d}",
        str(d / "emu.cpp"),
        "-o",
        str(d / "libemu.so"),
        "-lpthread",
    ]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    if res.returncode != 0 and "barrier" in res.stderr:
        pytest.skip("g++ without C++20 <barrier>")
    assert res.returncode == 0, res.stderr
    return ctypes.CDLL(str(d / "libemu.so"))


def _emu_launch(lib, cupy_cuda):
    """A stand-in for ``cupy_cuda._launch`` that runs the CPU build (arguments through ``_argv``)."""

    def launch(file, name, grid, block, args, like, smem=0):
        keep, argv = [], []
        for a in cupy_cuda._argv(args):
            if isinstance(a, np.uint64):
                argv.append(int(a))
            else:
                keep.append(ctypes.c_int32(int(a)))
                argv.append(ctypes.addressof(keep[-1]))
        assert all(
            isinstance(a, torch.Tensor) and a.device.type == "cpu" or not isinstance(a, torch.Tensor) for a in args
        )
        dims = [(ctypes.c_uint * 3)(*v) for v in (grid, block)]
        rc = lib.emu(name.encode(), *dims, smem, int(smem > cupy_cuda.SMEM), (ctypes.c_void_p * len(argv))(*argv))
        assert rc == 0, (
            f"{name}: {'unknown kernel' if rc == 1 else f'launch limit {rc} violated'} grid {grid} block {block} smem {smem}"
        )

    return launch


@pytest.fixture
def cc(emu_lib, monkeypatch, seed):
    """``impls.backends.cuda.cupy_prims`` launching into the CPU build of its kernels, blocks in the session
    seed's shuffled order; 64-thread element-wise blocks (fewer emulated threads)."""
    from rfbench.impls.backends.cuda import cupy_prims as cupy_cuda

    emu_lib.emu_set_seed(seed % 2**31)
    monkeypatch.setattr(cupy_cuda, "_launch", _emu_launch(emu_lib, cupy_cuda))
    monkeypatch.setattr(cupy_cuda, "THREADS", 64)
    return cupy_cuda


@pytest.mark.parametrize("layer,stride,extra", CASES, ids=CASE_IDS)
def test_emu_float64(cc, layer, stride, extra, seed):
    _judge("cupy", cc, _case(layer, stride, **extra), "float64", seed)


@pytest.mark.parametrize("layer", ["dau", "acu", "njet"])
def test_emu_float32(cc, layer, seed):
    _judge("cupy", cc, _case(layer, 2, seed=3), "float32", seed)


@pytest.mark.parametrize("layer", ["dau", "dau_gauss", "acu", "njet"])
@pytest.mark.parametrize("where", ["emu", "sim"])
def test_empty_batch_every_layer(request, where, layer):
    """N = 0 through every layer's glue, forward and backward: empty output, zero parameter
    gradients (the first GPU run found the cupy mixing's reshape(n, -1, ...) failing at n = 0)."""
    mod = request.getfixturevalue("cc" if where == "emu" else "nc")
    args, hp = _args(_case(layer, 1))
    args[0] = args[0][:0]
    ts = [None if a is None else a.clone().requires_grad_() for a in args]
    y = _layer(mod, layer)(*ts, **hp)
    assert y.shape == (0, F, H, W)
    y.sum().backward()
    assert ts[0].grad.shape == ts[0].shape
    assert all(float(t.grad.abs().sum()) == 0.0 for t in ts[1:] if t is not None and t.grad is not None)


@pytest.mark.parametrize("smem", [48 * 1024, 0], ids=["tiled", "direct"])
def test_emu_tiles(cc, monkeypatch, smem, seed):
    """Several tiles, a partial group of output channels, and the direct-read path (no shared
    memory); dau at stride 3 runs the unbounded kernels of dau.cu (strides 1, 2 run dau_fwd.cu)."""
    monkeypatch.setattr(cc, "SMEM", smem)
    for name, v in {"N": 1, "S": 1, "F": 5, "K": 2, "H": 10, "W": 34}.items():
        monkeypatch.setitem(globals(), name, v)
    for case in (_case("dau", 3), _case("dau", 1), _case("njet", 1, order=1)):
        _judge("cupy", cc, case, "float64", seed)


# ---------------------------------------------------------------- defects a GPU would hit (issue 15)


@pytest.mark.parametrize("layer", ["dau", "acu"])
@pytest.mark.parametrize("where", ["emu", "sim"])
def test_far_displacement_is_zero(request, where, layer, seed):
    """Every displacement near 2**32 (int32 would wrap to 0): the output is exactly 0.  Floors are clamped
    to the reachable range before the int32 cast (reference/README.md section 1)."""
    mod = request.getfixturevalue("cc" if where == "emu" else "nc")
    case = _case(layer, 1, offset=2.0**32, spread=0.5, bias=False)
    args, hp = _args(case)
    assert float(_layer(mod, layer)(*args, **hp).abs().max()) == 0.0
    _judge("cupy" if where == "emu" else "numba-cuda", mod, case, "float64", seed)


@pytest.mark.parametrize("layer", ["dau", "dau_gauss", "njet"])
@pytest.mark.parametrize("where", ["emu", "sim"])
def test_kernels_cropped_to_the_image(request, where, layer, seed):
    """A radius of thousands of pixels on a tiny image (issue 18 item 7): the CUDA glue keeps only
    the taps that reach the image (dau: the blur taps that join a sample to a pixel, found on the
    host for CPU tensors; dau_gauss, njet: the kernel's centre, from shapes only), and agrees
    with the reference on the output and every gradient."""
    mod = request.getfixturevalue("cc" if where == "emu" else "nc")
    case = _case(layer, 1, radius=20000) if layer == "dau" else _case(layer, 1, radius=9000, sigma=3000.0)
    _judge("cupy" if where == "emu" else "numba-cuda", mod, case, "float64", seed)


def test_floors_clamped():
    from rfbench.impls.backends.cuda import layers as _cuda_ops

    fl = torch.tensor([-(2**40), -9, -8, -7, 0, 9, 10, 11, 2**40])
    # n_in 10, n_out 4, stride 2: reachable floors -8 .. 10 (rows i st + p0 + {0, 1})
    assert _cuda_ops.floors(fl, 10, 4, 2).tolist() == [-8, -8, -8, -7, 0, 9, 10, 10, 10]


def _grads(mod, layer, args, hp):
    ts = [None if a is None else a.clone().requires_grad_() for a in args]
    y = _layer(mod, layer)(*ts, **hp)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    return [y] + list(torch.autograd.grad(y, [t for t in ts if t is not None], dy))


@pytest.mark.parametrize("layer", ["dau", "acu"])  # njet's reductions are dtaps, covered by dau's sigma
def test_emu_bit_identical_block_orders(cc, emu_lib, monkeypatch, layer):
    """Every output and gradient bit-identical whatever order the blocks run in: reductions over
    several blocks (3 chunks per unit here) use per-block partials summed in a fixed order."""
    for name, v in {"N": 2, "H": 17, "W": 17}.items():
        monkeypatch.setitem(globals(), name, v)
    args, hp = _args(_case(layer, 1))
    assert cc._chunks(N * H * W, 1) >= 3
    runs = []
    for order in (1, 2):
        emu_lib.emu_set_seed(order)
        runs.append(_grads(cc, layer, args, hp))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_emu_launch_limits(emu_lib):
    """The shim refuses launches a GPU would refuse (so the glue's grids are checked too)."""
    dims = lambda *v: (ctypes.c_uint * 3)(*v)  # noqa: E731
    run = lambda g, b, smem, optin: emu_lib.emu(b"rf::shift<float>", dims(*g), dims(*b), smem, optin, None)  # noqa: E731
    assert run((1, 65536, 1), (32, 8, 1), 0, 0) == 2
    assert run((1, 1, 1), (32, 64, 1), 0, 0) == 4
    assert run((1, 1, 1), (1, 1, 65), 0, 0) == 3
    assert run((1, 1, 1), (32, 8, 1), 49 * 1024, 0) == 5
    assert run((1, 1, 1), (32, 8, 1), 164 * 1024, 1) == 5


def test_emu_grid_large_batch(cc, emu_lib, monkeypatch):
    """N = 70000 images (more than grid.y/z allow) launch within the limits (checked, not run)."""
    seen = []

    def check(file, name, grid, block, args, like, smem=0):
        seen.append(name)
        assert all(0 < g for g in grid) and grid[0] < 2**31 and max(grid[1:]) <= 65535, (name, grid)

    monkeypatch.setattr(cc, "_launch", check)
    n = 70000
    c = torch.zeros(n, 1, 3, 3, dtype=torch.float32)
    fy = torch.zeros(1, 1, 1, dtype=torch.int32)
    cc.Prims.shift(c, torch.ones(1, 1, 1, 4), fy, fy, 1, 3, 3)
    cc.Prims.tapsum(c, torch.zeros(n, 1, 3, 3), fy, fy, 1)
    assert seen


def test_argv_needs_contiguous():
    from rfbench.impls.backends.cuda import cupy_prims as cupy_cuda

    t = torch.zeros(4, 6)
    (p, k) = cupy_cuda._argv([t, np.int32(3)])
    assert isinstance(p, np.uint64) and int(p) == t.data_ptr() and k == 3
    with pytest.raises(ValueError, match="argument 0: expected a contiguous tensor"):
        cupy_cuda._argv([t[:, ::2]])


def test_reduction_block_size_is_compile_time():
    """``block_sum`` takes its block size as a template argument and rejects one that is not a
    multiple of 32 when compiled; the host launches the reduction kernels with ``kRed``."""
    import re

    from rfbench.impls.backends.cuda import cupy_prims as cupy_cuda

    src = (CUDA_DIR / "common.cu").read_text()
    assert int(re.search(r"constexpr int kRed = (\d+);", src).group(1)) == cupy_cuda.RED_THREADS
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found")
    probe = EMU_SHIM.replace(
        "#define __launch_bounds__(...)", "#define __launch_bounds__(...)\n#define __shared__ static"
    )
    code = probe + f'#include "{CUDA_DIR / "common.cu"}"\nfloat f(float v) {{ return rf::block_sum<48>(v); }}\n'
    res = subprocess.run(
        [gxx, "-std=c++20", "-fsyntax-only", "-x", "c++", "-"], input=code, capture_output=True, text=True, check=False
    )
    assert res.returncode != 0 and "multiple of 32" in res.stderr, res.stderr[-2000:]


if __name__ == "__main__":  # resource table: python suites/test_cuda.py
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print("| kernel | arch | regs | static smem B | stack B | spill st/ld B |\n|---|---|---|---|---|---|")
        for src in SOURCES:
            for arch in ARCHS:
                for k, v in nvcc_build(src, arch, d)[2].items():
                    print(
                        f"| `{k}` | {arch} | {v['regs']} | {v['smem']} | {v['stack']} | {v['spill_st']}/{v['spill_ld']} |"
                    )


# ---------------------------------------------------------------- dau_fwd (redesigned forward and input gradient)


def _shift_ref(c, a4, fy, fx, st, ho, wo, dy):
    """Float64 ``(y, ymag, t, tmag)``: the bilinear shift and the tap sums against ``dy``
    (``impls._cuda_ops`` ``shift`` and ``tapsum``), and the sums of the magnitudes of their terms,
    for rounding bounds: a sum of ``n`` products in any order is within ``n u sum |terms|``
    (first order, ``u`` the unit roundoff)."""
    n, s_, hc, wc = c.shape
    f_, _, k_ = fy.shape
    c, a4, dy = c.double(), a4.double(), dy.double()
    i, j = torch.arange(ho)[:, None] * st, torch.arange(wo)[None, :] * st
    y = torch.zeros(n, f_, ho, wo, dtype=torch.float64)
    ymag = torch.zeros_like(y)
    t = torch.zeros(f_, s_, k_, 4, dtype=torch.float64)
    tmag = torch.zeros_like(t)
    for f in range(f_):
        for s in range(s_):
            for k in range(k_):
                for m in range(4):
                    p, q = i + int(fy[f, s, k]) + m // 2, j + int(fx[f, s, k]) + m % 2
                    ok = (p >= 0) & (p < hc) & (q >= 0) & (q < wc)
                    v = c[:, s, p.clamp(0, hc - 1), q.clamp(0, wc - 1)] * ok
                    y[:, f] += a4[f, s, k, m] * v
                    ymag[:, f] += (a4[f, s, k, m] * v).abs()
                    t[f, s, k, m] = (dy[:, f] * v).sum()
                    tmag[f, s, k, m] = (dy[:, f] * v).abs().sum()
    return y, ymag, t, tmag


def _fwd_units(g, f_, s_, k_, spreads):
    """Floors ``[F,S,K]`` whose groups of ``FWD_FB`` output channels have the displacement spreads
    ``spreads`` (one per group: 6, 14 fit the buckets 8, 16; 60 leaves stages that do not fit
    32), and random corner weights."""
    from rfbench.impls.backends.cuda.cupy_prims import FWD_FB

    fy = torch.zeros(f_, s_, k_, dtype=torch.int64)
    fx = torch.zeros_like(fy)
    for gi, sp in enumerate(spreads):
        sl = slice(FWD_FB * gi, FWD_FB * gi + FWD_FB)
        fy[sl] = torch.randint(-sp // 2, sp - sp // 2 + 1, fy[sl].shape, generator=g)
        fx[sl] = torch.randint(-sp // 2, sp - sp // 2 + 1, fx[sl].shape, generator=g)
        if sp > 32:  # only the last stage sees the large spread: earlier ones fit
            fy[sl][:, :-1] = fy[sl][:, :-1].clamp(-8, 8)
            fx[sl][:, :-1] = fx[sl][:, :-1].clamp(-8, 8)
    return fy.to(torch.int32), fx.to(torch.int32), torch.randn(f_, s_, k_, 4, generator=g, dtype=torch.float64)


def _fwd_check(cc, shape, st, dtype, spreads, seed):
    """dau_fwd, its transpose (stride 1) and dau_tapsum on ``shape = (N, S, F, K, Hc, Wc)`` within
    their rounding bounds of the float64 results."""
    n, s_, f_, k_, hc, wc = shape
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, s_, hc, wc, generator=g, dtype=torch.float64).to(dtype)
    fy, fx, a4 = _fwd_units(g, f_, s_, k_, spreads)
    fy, fx, a4 = fy + 1, fx - 2, a4.to(dtype)  # origin off the tile corner
    ho, wo = (hc - 1) // st + 1, (wc - 1) // st + 1
    dy = torch.randn(n, f_, ho, wo, generator=g, dtype=torch.float64).to(dtype)
    ref, ymag, tref, tmag = _shift_ref(c, a4, fy, fx, st, ho, wo, dy)
    u = torch.finfo(dtype).eps / 2
    y = cc.Prims.shift(c, a4, fy, fx, st, ho, wo)
    assert float(((y.double() - ref).abs() - 4 * s_ * k_ * u * ymag).max()) <= 0
    t = cc.Prims.tapsum(c, dy, fy, fx, st)
    assert float(((t.double() - tref).abs() - n * ho * wo * u * tmag).max()) <= 0
    if st == 1:  # the transposed kernel (input gradient) is the adjoint: <shift(c), d> = <c, scatter(d)>
        back = cc.Prims.scatter(dy, a4, fy, fx, 1, s_, hc, wc).double()
        lhs, rhs = float((ref * dy.double()).sum()), float((c.double() * back).sum())
        # back's terms are ymag's terms regrouped (4 F K per element), then one product with c and the sum
        assert abs(lhs - rhs) <= (4 * f_ * k_ + n * s_ * hc * wc) * u * float((ymag * dy.double().abs()).sum())


FWD_SPREADS = (6, 14, 60)  # buckets 8, 16, and 32 with a stage that does not fit


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("st", [1, 2])
def test_emu_fwd_buckets(cc, st, dtype, seed):
    """dau_fwd and dau_tapsum against float64: three groups of output channels (the last partial)
    in the three buckets, a partial last stage of input channels, two tiles along each axis, and
    (stride 1) the transposed forward, the input gradient, by the adjoint identity."""
    _fwd_check(cc, (2, 6, 3 * cc.FWD_FB - 3, 2, 20 * st, 36 * st), st, dtype, FWD_SPREADS, seed)


def test_emu_fwd_table():
    """The prepare pass: buckets by the largest spread of a group, stage-wise fit, relative floors."""
    from rfbench.impls.backends.cuda import cupy_prims as cupy_cuda

    g = torch.Generator().manual_seed(0)
    fb = cupy_cuda.FWD_FB
    fy, fx, _ = _fwd_units(g, 3 * fb - 3, 9, 2, (6, 14, 60))
    rel, box, fits, bucket = cupy_cuda.Prims.fwd_table(fy, fx, 4)
    assert bucket.tolist() == [0, 1, 2] and box.shape == (3, 3, 2) and fits.shape == (3, 3)
    assert fits[:2].all() and fits[2].tolist() == [1, 1, 0]
    f, s = fb + 3, 5  # group 1, stage 1
    assert int(rel[f, s, 0]) == (int(fy[f, s, 0]) - int(box[1, 1, 0])) * 65536 + int(fx[f, s, 0]) - int(box[1, 1, 1])


def test_fwd_geom(emu_lib):
    """The host's tile geometry is the kernel's (FwdGeom), and two stages of every dau_fwd /
    dau_tapsum instantiation fit the opt-in shared-memory limit of sm_80 (163 KB)."""
    from rfbench.impls.backends.cuda import cupy_prims as cupy_cuda

    for esize in (4, 8):
        for st in (1, 2):
            for sp in cupy_cuda.SPREADS:
                rows, cols, pitch, cs, smem = cupy_cuda.fwd_geom(esize, st, sp)
                out = (ctypes.c_int * 6)()
                emu_lib.emu_fwd_geom(esize, st, sp, out)
                assert list(out) == [rows, cols, pitch, cs, smem, cupy_cuda.tapsum_kc(cs)], (esize, st, sp)
                assert pitch % 8 == 0 and pitch >= cols + 3 and smem <= 163 * 1024


@pytest.mark.slow
def test_emu_fwd_paper(cc, seed):
    """The paper case (N8 S64 F192 K2, 32 x 32, mu in +-4 -> spread <= 8) under emulation (about a
    minute on a quiet 2-core machine)."""
    _fwd_check(cc, (8, 64, 192, 2, 32, 32), 1, torch.float32, (8,) * (192 // cc.FWD_FB), seed)


def test_emu_dau_prims_read_no_tensor_values(cc, monkeypatch):
    """The cupy DAU primitives never read a tensor's values on the host (on a GPU each read is a
    device sync): every host read of a tensor raises here while they run under emulation."""
    from rfbench.impls import _validate

    # Device tensors: no host-side blur reach (impls._ops.backend_hp reads the displacements only where free).
    monkeypatch.setattr(_validate, "free_to_read", lambda t: False)
    args, hp = _args(_case("dau", 1))
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):

        def read(self, *a, _name=name, **k):
            raise AssertionError(f"host read of a tensor value: Tensor.{_name}")

        monkeypatch.setattr(torch.Tensor, name, read)
    ts = [a.clone().requires_grad_() for a in args]
    y = _layer(cc, "dau")(*ts, **hp)
    torch.autograd.backward(y, torch.ones_like(y))


# ---------------------------------------------------------------- (e) numba-cuda kernels to PTX, no GPU

PTX_SCRIPT = r"""
import sys, types
import numpy as np
# as numpy 2.5 removed it (numpy < 2.5 still has the deprecated alias): impls.numba_cuda must restore it
if hasattr(np, "row_stack"):
    del np.row_stack
import numba
import numba.cuda.dispatcher as dispatcher
import torch
import rfbench.impls.backends.cuda.numba_prims as nc
from rfbench.impls import _ops

# Record every launch as the layers make it: (kernel, argument types), no device needed.
seen = {}

class Recorder:
    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, config):
        def launch(*args):
            sig = tuple(numba.typeof(a) for a in args)
            seen.setdefault((self.kernel.__name__, str(sig)), (self.kernel, sig))
        return launch

for name in list(vars(nc)):
    if name.startswith("_") and name.endswith("_k"):
        setattr(nc, name, Recorder(getattr(nc, name)))
nc._arr = lambda t: t.numpy()  # what cuda.as_cuda_array gives on a GPU types the same: array(dtype, nd, C)

def drive(dtype):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_(True)
    sc = lambda v: torch.tensor(v, dtype=dtype, requires_grad=True)
    n, s, f, k, h, w = 1, 2, 3, 2, 6, 5
    x = r(n, s, h, w)
    calls = [
        ("dau", (x, r(f, s, k), r(f, s, k), r(f, s, k), sc(0.6), r(f)), {"blur_radius": 2, "mu_grad": "exact"}),
        ("dau", (x, r(f, s, k), r(f, s, k), r(f, s, k), sc(0.6), r(f)), {"stride": 2, "blur_radius": 2, "mu_grad": "gauss"}),
        ("dau_gauss", (x, r(f, s, k), r(f, s, k), r(f, s, k), sc(0.8), r(f)), {"radius": 2}),
        ("acu", (x, r(f, s, 5), r(5), r(5), r(f)), {}),
        ("njet", (x, r(f, s, 6), sc(1.0), r(f)), {"order": 2, "radius": 2}),
    ]
    ys = [_ops.apply(nc.OPS[layer], layer, args, hp) for layer, args, hp in calls]
    for y in ys:
        y.sum().backward()

for dt in (torch.float32, torch.float64):
    drive(dt)
# Device functions ask the current device for its compute capability: say sm_90 (no driver here).
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
from numba import cuda
kernels = sorted({k for k, _ in seen})
for (name, _), (kernel, sig) in sorted(seen.items()):
    ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
    assert ".entry" in ptx, name
print("compiled", len(seen), "launches of", len(kernels), "kernels:", " ".join(kernels))
"""


def test_numba_cuda_kernels_compile_to_ptx():
    """Every numba-cuda kernel, with the argument types the layers launch it with (forward and
    backward, float32 and float64), compiles to PTX for sm_90 on this CPU with numba's real CUDA
    target (not the simulator), and does so with ``np.row_stack`` absent as in numpy 2.5, where
    numba-cuda 0.30 failed every compile (``impls.backends.cuda.numba_prims`` restores the alias)."""
    import os
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", PTX_SCRIPT], capture_output=True, text=True, env=env, cwd=root)
    text = out.stdout + out.stderr
    if out.returncode and ("NvvmSupportError" in text or "libNVVM cannot be found" in text):
        pytest.skip("numba finds no NVVM (libnvvm of the CUDA toolkit) on this machine: nothing to compile with")
    assert out.returncode == 0, text[-3000:]
    assert "compiled" in out.stdout and "of 12 kernels" in out.stdout, out.stdout
