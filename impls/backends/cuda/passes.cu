// 1-D correlation passes of the separable filters (DAU blur, N-Jet Gaussian derivatives):
// forward, adjoint in the input, adjoint in the taps.  ROWS selects the axis.
//
// Channel map: output channel c reads input channel cin[c] with taps row fil[c];
// output index o reads input index o * st + it + off, tap it = 0..nt-1.
#include "common.cu"

namespace rf {

constexpr int kPassW = 32;  // tile: 32 outputs along columns x 8 along rows (one thread each)
constexpr int kPassH = 8;

// out [B,Co,Ho,Wo] from inp [B,Ci,Hi,Wi].  Grid: x = column tiles * B * Ci, y = row tiles; block 32 x 8.
// A block loads the input window of its tile once into shared memory (when it fits: cap > 0)
// and writes every output channel that reads this input channel.  MACs B Co Ho Wo nt.
template <typename T, bool ROWS>
__global__ void cpass(const T* __restrict__ inp, const T* __restrict__ taps, const int* __restrict__ cin,
                      const int* __restrict__ fil, int nci, int co, int hi, int wi, int nt, int st, int off,
                      int ho, int wo, int cap, T* __restrict__ out) {
    const int tiles_w = (wo + kPassW - 1) / kPassW;
    const int bc = blockIdx.x / tiles_w;  // b * Ci + ci
    const int b = bc / nci, ci = bc % nci;
    const int q0 = (blockIdx.x % tiles_w) * kPassW, p0 = blockIdx.y * kPassH;
    const int q = q0 + threadIdx.x, p = p0 + threadIdx.y;
    const long long plane = static_cast<long long>(bc) * hi * wi;
    const int r0 = ROWS ? p0 * st + off : p0;  // input window of the tile
    const int c0 = ROWS ? q0 : q0 * st + off;
    const int th = ROWS ? (kPassH - 1) * st + nt : kPassH;
    const int tw = ROWS ? kPassW : (kPassW - 1) * st + nt;
    const bool tiled = th * tw <= cap;
    T* tile = smem<T>();
    if (tiled) {
        for (int e = threadIdx.y * kPassW + threadIdx.x; e < th * tw; e += kPassW * kPassH)
            tile[e] = at(inp, plane, hi, wi, r0 + e / tw, c0 + e % tw);
        __syncthreads();
    }
    if (p >= ho || q >= wo) return;
    for (int c = 0; c < co; ++c) {
        if (__ldg(cin + c) != ci) continue;
        const T* tp = taps + static_cast<long long>(__ldg(fil + c)) * nt;
        T acc = T(0);
        for (int it = 0; it < nt; ++it) {
            const int r = ROWS ? p * st + it + off : p;
            const int cc = ROWS ? q : q * st + it + off;
            const T v = tiled ? tile[(r - r0) * tw + (cc - c0)] : at(inp, plane, hi, wi, r, cc);
            acc += __ldg(tp + it) * v;
        }
        out[((static_cast<long long>(b) * co + c) * ho + p) * wo + q] = acc;
    }
}

// Adjoint of cpass in its input: out [B,Ci,H,W] from dout [B,Co,Ho,Wo], one thread per input
// element gathering the outputs that read it (no atomics).  MACs B Co Ho Wo nt.
template <typename T, bool ROWS>
__global__ void tpass(const T* __restrict__ dout, const T* __restrict__ taps, const int* __restrict__ cin,
                      const int* __restrict__ fil, int nb, int co, int ho, int wo, int nt, int st, int off,
                      int nci, int h, int w, T* __restrict__ out) {
    const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<long long>(nb) * nci * h * w) return;
    const int q = static_cast<int>(idx % w);
    const int p = static_cast<int>((idx / w) % h);
    const int c = static_cast<int>((idx / (static_cast<long long>(w) * h)) % nci);
    const int b = static_cast<int>(idx / (static_cast<long long>(w) * h * nci));
    T acc = T(0);
    for (int oc = 0; oc < co; ++oc) {
        if (__ldg(cin + oc) != c) continue;
        const T* tp = taps + static_cast<long long>(__ldg(fil + oc)) * nt;
        const long long plane = (static_cast<long long>(b) * co + oc) * ho * wo;
        for (int it = 0; it < nt; ++it) {
            if (ROWS) {
                const int o = src_index(p, it, st, off, ho);
                if (o >= 0) acc += __ldg(tp + it) * __ldg(dout + plane + static_cast<long long>(o) * wo + q);
            } else {
                const int o = src_index(q, it, st, off, wo);
                if (o >= 0) acc += __ldg(tp + it) * __ldg(dout + plane + static_cast<long long>(p) * wo + o);
            }
        }
    }
    out[idx] = acc;
}

// Adjoint of cpass in its taps, per output channel, as partials over chunks:
// part[c, it, chunk] = sum over the chunk of dout[b,c,o,..] inp[b,cin[c], o st + it + off, ..].
// Grid: x = chunks of the B Ho Wo elements, y = taps, z = output channels; block kRed threads.
// Each thread sums a strided part of the chunk, the block reduces (warp shuffles); the host
// sums the chunks in a fixed order.  MACs B Co Ho Wo nt.
template <typename T, bool ROWS>
__global__ void __launch_bounds__(kRed) dtaps(const T* __restrict__ dout, const T* __restrict__ inp, const int* __restrict__ cin, int nb,
                      int co, int ho, int wo, int nci, int hi, int wi, int nt, int st, int off, T* __restrict__ out) {
    const int it = blockIdx.y, c = blockIdx.z;
    const int ci = __ldg(cin + c);
    T acc = T(0);
    if (ho > 0 && wo > 0)
        for (Walk e(static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x,
                    static_cast<long long>(gridDim.x) * blockDim.x, ho, wo);
             e.plane < nb; e.next()) {
            const int p = e.i, q = e.j, b = static_cast<int>(e.plane);
            const T d = __ldg(dout + ((static_cast<long long>(b) * co + c) * ho + p) * wo + q);
            const long long plane = (static_cast<long long>(b) * nci + ci) * hi * wi;
            acc += d * (ROWS ? at(inp, plane, hi, wi, p * st + it + off, q) : at(inp, plane, hi, wi, p, q * st + it + off));
        }
    acc = block_sum<kRed>(acc);
    if (threadIdx.x == 0) out[(static_cast<long long>(c) * nt + it) * gridDim.x + blockIdx.x] = acc;
}

}  // namespace rf

#ifndef __CUDACC_RTC__
// Offline compilation (nvcc checks) instantiates every kernel here; NVRTC instantiates them
// through the name expressions of impls/backends/cuda/cupy_prims.py.
void* rf_passes_kernels[] = {
    reinterpret_cast<void*>(&rf::cpass<float, true>),
    reinterpret_cast<void*>(&rf::cpass<float, false>),
    reinterpret_cast<void*>(&rf::cpass<double, true>),
    reinterpret_cast<void*>(&rf::cpass<double, false>),
    reinterpret_cast<void*>(&rf::tpass<float, true>),
    reinterpret_cast<void*>(&rf::tpass<float, false>),
    reinterpret_cast<void*>(&rf::tpass<double, true>),
    reinterpret_cast<void*>(&rf::tpass<double, false>),
    reinterpret_cast<void*>(&rf::dtaps<float, true>),
    reinterpret_cast<void*>(&rf::dtaps<float, false>),
    reinterpret_cast<void*>(&rf::dtaps<double, true>),
    reinterpret_cast<void*>(&rf::dtaps<double, false>),
};
#endif
