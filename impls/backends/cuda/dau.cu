// DAU (reference/README.md section 2) on the blurred canvas, and dau_gauss's dense kernel as integer units:
// per-unit bilinear shift (forward), its adjoint (scatter, as a gather) and tap sums (reduction).
//
// Unit u = (f, s, k) has canvas floors fy[u], fx[u] and corner weights a4[u, m], m = 2 da + db;
// output (i, j) reads c[n, s, i st + fy + da, j st + fx + db].
#include "common.cu"

namespace rf {

constexpr int kTileW = 32;  // output tile 32 x 8, one thread per output pixel
constexpr int kTileH = 8;
constexpr int kFB = 4;      // output channels per block, all from the same input tiles

// y [N,F,Ho,Wo] from c [N,S,Hc,Wc].  Grid: x = column tiles * ceil(F / kFB) * N (N on x, which
// allows 2^31 - 1 blocks), y = row tiles.  For each input channel s, the block loads the canvas
// window that all units of its kFB channels read (box[fg, s] = min/max floors over the group) into
// shared memory when it has at most cap elements; otherwise (large displacement spread) it reads
// the canvas directly.  Any displacement, stride and channel count: the unbounded fallback of
// dau_fwd (dau_fwd.cu).  MACs 4 P F S K.
template <typename T>
__global__ void shift(const T* __restrict__ c, const T* __restrict__ a4, const int* __restrict__ fy,
                      const int* __restrict__ fx, const int* __restrict__ box, int s_, int hc, int wc, int f_, int k_,
                      int st, int ho, int wo, int cap, T* __restrict__ y) {
    const int tiles_w = (wo + kTileW - 1) / kTileW, groups = (f_ + kFB - 1) / kFB;
    const int n = blockIdx.x / (tiles_w * groups);
    const int fg = blockIdx.x / tiles_w % groups;
    const int i0 = blockIdx.y * kTileH, j0 = (blockIdx.x % tiles_w) * kTileW;
    const int i = i0 + threadIdx.y, j = j0 + threadIdx.x;
    T* tile = smem<T>();
    T acc[kFB];
    for (int b = 0; b < kFB; ++b) acc[b] = T(0);
    for (int s = 0; s < s_; ++s) {
        const int* bx = box + (fg * s_ + s) * 4;  // min fy, max fy, min fx, max fx
        const int r0 = i0 * st + __ldg(bx), c0 = j0 * st + __ldg(bx + 2);
        const int th = (kTileH - 1) * st + __ldg(bx + 1) - __ldg(bx) + 2;
        const int tw = (kTileW - 1) * st + __ldg(bx + 3) - __ldg(bx + 2) + 2;
        const bool tiled = static_cast<long long>(th) * tw <= cap;
        const long long plane = (static_cast<long long>(n) * s_ + s) * hc * wc;
        if (tiled) {
            __syncthreads();  // the previous channel's tile is no longer read
            for (int e = threadIdx.y * kTileW + threadIdx.x; e < th * tw; e += kTileW * kTileH)
                tile[e] = at(c, plane, hc, wc, r0 + e / tw, c0 + e % tw);
            __syncthreads();
        }
        for (int b = 0; b < kFB; ++b) {
            const int f = fg * kFB + b;
            if (f >= f_) break;
            for (int k = 0; k < k_; ++k) {
                const long long u = (static_cast<long long>(f) * s_ + s) * k_ + k;
                const int p = i * st + __ldg(fy + u), q = j * st + __ldg(fx + u);
                T v00, v01, v10, v11;
                if (tiled) {
                    const T* t0 = tile + (p - r0) * tw + (q - c0);
                    v00 = t0[0], v01 = t0[1], v10 = t0[tw], v11 = t0[tw + 1];
                } else {
                    v00 = at(c, plane, hc, wc, p, q), v01 = at(c, plane, hc, wc, p, q + 1);
                    v10 = at(c, plane, hc, wc, p + 1, q), v11 = at(c, plane, hc, wc, p + 1, q + 1);
                }
                const T* w = a4 + 4 * u;
                acc[b] += (__ldg(w) * v00 + __ldg(w + 1) * v01) + (__ldg(w + 2) * v10 + __ldg(w + 3) * v11);
            }
        }
    }
    if (i >= ho || j >= wo) return;
    for (int b = 0; b < kFB && fg * kFB + b < f_; ++b)
        y[((static_cast<long long>(n) * f_ + fg * kFB + b) * ho + i) * wo + j] = acc[b];
}

// part[u, m, chunk] = sum over one chunk of the n, i, j of dy[n,f,i,j] c[n,s, tap m of unit u]:
// partials of the four corner sums every unit gradient is made of (the host sums the chunks).
// Grid: x = units F S K, y = chunks of the N Ho Wo elements; block kRed threads, block
// reduction (warp shuffles).  MACs 4 P F S K.
template <typename T>
__global__ void __launch_bounds__(kRed) tapsum(const T* __restrict__ c, const T* __restrict__ dy, const int* __restrict__ fy,
                       const int* __restrict__ fx, int n_, int s_, int f_, int k_, int hc, int wc, int ho, int wo,
                       int st, T* __restrict__ out) {
    const long long u = blockIdx.x;
    const int s = static_cast<int>((u / k_) % s_), f = static_cast<int>(u / (static_cast<long long>(k_) * s_));
    const int r0 = __ldg(fy + u), q0 = __ldg(fx + u);
    T t0 = T(0), t1 = T(0), t2 = T(0), t3 = T(0);
    if (ho > 0 && wo > 0)
        for (Walk e(static_cast<long long>(blockIdx.y) * blockDim.x + threadIdx.x,
                    static_cast<long long>(gridDim.y) * blockDim.x, ho, wo);
             e.plane < n_; e.next()) {
            const int n = static_cast<int>(e.plane), i = e.i, j = e.j;
            const T d = __ldg(dy + ((static_cast<long long>(n) * f_ + f) * ho + i) * wo + j);
            const long long plane = (static_cast<long long>(n) * s_ + s) * hc * wc;
            const int p = i * st + r0, q = j * st + q0;
            t0 += d * at(c, plane, hc, wc, p, q);
            t1 += d * at(c, plane, hc, wc, p, q + 1);
            t2 += d * at(c, plane, hc, wc, p + 1, q);
            t3 += d * at(c, plane, hc, wc, p + 1, q + 1);
        }
    block_sums4<kRed>(out + 4 * u * gridDim.y + blockIdx.y, gridDim.y, t0, t1, t2, t3);
}

// Adjoint of shift in c: back [N,S,Hc,Wc], one thread per canvas pixel gathering every
// (f, k, corner) whose sample reads it (stride divisibility), so no atomics.  MACs 4 P F S K.
template <typename T>
__global__ void scatter(const T* __restrict__ dy, const T* __restrict__ a4, const int* __restrict__ fy,
                        const int* __restrict__ fx, int n_, int s_, int f_, int k_, int hc, int wc, int ho, int wo,
                        int st, T* __restrict__ back) {
    const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<long long>(n_) * s_ * hc * wc) return;
    const int q = static_cast<int>(idx % wc);
    const int p = static_cast<int>((idx / wc) % hc);
    const int s = static_cast<int>((idx / (static_cast<long long>(wc) * hc)) % s_);
    const int n = static_cast<int>(idx / (static_cast<long long>(wc) * hc * s_));
    T acc = T(0);
    for (int f = 0; f < f_; ++f) {
        const long long plane = (static_cast<long long>(n) * f_ + f) * ho * wo;
        for (int k = 0; k < k_; ++k) {
            const long long u = (static_cast<long long>(f) * s_ + s) * k_ + k;
            const int r0 = __ldg(fy + u), q0 = __ldg(fx + u);
            for (int m = 0; m < 4; ++m) {
                const int i = src_index(p, m >> 1, st, r0, ho), j = src_index(q, m & 1, st, q0, wo);
                if (i >= 0 && j >= 0) acc += __ldg(a4 + 4 * u + m) * __ldg(dy + plane + static_cast<long long>(i) * wo + j);
            }
        }
    }
    back[idx] = acc;
}

}  // namespace rf

#ifndef __CUDACC_RTC__
// Offline compilation (nvcc checks) instantiates every kernel here; NVRTC instantiates them
// through the name expressions of impls/backends/cuda/cupy_prims.py.
void* rf_dau_kernels[] = {
    reinterpret_cast<void*>(&rf::shift<float>),
    reinterpret_cast<void*>(&rf::shift<double>),
    reinterpret_cast<void*>(&rf::tapsum<float>),
    reinterpret_cast<void*>(&rf::tapsum<double>),
    reinterpret_cast<void*>(&rf::scatter<float>),
    reinterpret_cast<void*>(&rf::scatter<double>),
};
#endif
