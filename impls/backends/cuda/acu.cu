// ACU (reference/README.md section 4): bilinear samples per position group g and synapse k, shared by all
// output channels of the group (the 1x1 mixing is a batched GEMM in the caller), and adjoints.
//
// Synapse (g, k) has floors fy, fx [G,K] and corner weights a4 [G,K,4], m = 2 da + db.
#include "common.cu"

namespace rf {

// out [N,G,S,K,Ho,Wo] = sum_m a4[g,k,m] x[n,s, i st + fy + da, j st + fx + db].  MACs 4 P S K G.
template <typename T>
__global__ void sample(const T* __restrict__ x, const T* __restrict__ a4, const int* __restrict__ fy,
                       const int* __restrict__ fx, int n_, int g_, int s_, int k_, int h, int w, int ho, int wo, int st,
                       T* __restrict__ out) {
    const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<long long>(n_) * g_ * s_ * k_ * ho * wo) return;
    const int j = static_cast<int>(idx % wo);
    long long t = idx / wo;
    const int i = static_cast<int>(t % ho);
    t /= ho;
    const int k = static_cast<int>(t % k_);
    t /= k_;
    const int s = static_cast<int>(t % s_);
    t /= s_;
    const int g = static_cast<int>(t % g_);
    const int n = static_cast<int>(t / g_);
    const int u = g * k_ + k;
    const int p = i * st + __ldg(fy + u), q = j * st + __ldg(fx + u);
    const long long plane = (static_cast<long long>(n) * s_ + s) * h * w;
    const T* a = a4 + 4 * u;
    out[idx] = (__ldg(a) * at(x, plane, h, w, p, q) + __ldg(a + 1) * at(x, plane, h, w, p, q + 1)) +
               (__ldg(a + 2) * at(x, plane, h, w, p + 1, q) + __ldg(a + 3) * at(x, plane, h, w, p + 1, q + 1));
}

// Adjoint of sample in x: gx [N,S,H,W], one thread per input pixel gathering the samples that
// read it (no atomics).  MACs 4 P S K G.
template <typename T>
__global__ void sample_t(const T* __restrict__ e, const T* __restrict__ a4, const int* __restrict__ fy,
                         const int* __restrict__ fx, int n_, int g_, int s_, int k_, int h, int w, int ho, int wo,
                         int st, T* __restrict__ gx) {
    const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<long long>(n_) * s_ * h * w) return;
    const int q = static_cast<int>(idx % w);
    const int p = static_cast<int>((idx / w) % h);
    const int s = static_cast<int>((idx / (static_cast<long long>(w) * h)) % s_);
    const int n = static_cast<int>(idx / (static_cast<long long>(w) * h * s_));
    T acc = T(0);
    for (int g = 0; g < g_; ++g) {
        for (int k = 0; k < k_; ++k) {
            const int u = g * k_ + k;
            const long long plane = (((static_cast<long long>(n) * g_ + g) * s_ + s) * k_ + k) * ho * wo;
            const int r0 = __ldg(fy + u), q0 = __ldg(fx + u);
            for (int m = 0; m < 4; ++m) {
                const int i = src_index(p, m >> 1, st, r0, ho), j = src_index(q, m & 1, st, q0, wo);
                if (i >= 0 && j >= 0) acc += __ldg(a4 + 4 * u + m) * __ldg(e + plane + static_cast<long long>(i) * wo + j);
            }
        }
    }
    gx[idx] = acc;
}

// part[g,k,m,chunk] = sum over one chunk of the n, s, i, j of e[n,g,s,k,i,j] x[n,s, tap m]:
// partials of the corner sums of the position gradients (the host sums the chunks).
// Grid: x = G K synapses, y = chunks; block kRed threads, block reduction.  MACs 4 P S K G.
template <typename T>
__global__ void __launch_bounds__(kRed) sample_sums(const T* __restrict__ e, const T* __restrict__ x, const int* __restrict__ fy,
                            const int* __restrict__ fx, int n_, int g_, int s_, int k_, int h, int w, int ho, int wo,
                            int st, T* __restrict__ out) {
    const int u = blockIdx.x;
    const int g = u / k_, k = u % k_;
    const int r0 = __ldg(fy + u), q0 = __ldg(fx + u);
    T t0 = T(0), t1 = T(0), t2 = T(0), t3 = T(0);
    if (ho > 0 && wo > 0)
        for (Walk el(static_cast<long long>(blockIdx.y) * blockDim.x + threadIdx.x,
                     static_cast<long long>(gridDim.y) * blockDim.x, ho, wo);
             el.plane < static_cast<long long>(n_) * s_; el.next()) {
            const int pl = static_cast<int>(el.plane);  // n S + s < 2^31 (32-bit division)
            const int i = el.i, j = el.j, s = pl % s_, n = pl / s_;
            const T d = __ldg(e + ((((static_cast<long long>(n) * g_ + g) * s_ + s) * k_ + k) * ho + i) * wo + j);
            const long long plane = el.plane * h * w;
            const int p = i * st + r0, q = j * st + q0;
            t0 += d * at(x, plane, h, w, p, q);
            t1 += d * at(x, plane, h, w, p, q + 1);
            t2 += d * at(x, plane, h, w, p + 1, q);
            t3 += d * at(x, plane, h, w, p + 1, q + 1);
        }
    block_sums4<kRed>(out + 4LL * u * gridDim.y + blockIdx.y, gridDim.y, t0, t1, t2, t3);
}

}  // namespace rf

#ifndef __CUDACC_RTC__
// Offline compilation (nvcc checks) instantiates every kernel here; NVRTC instantiates them
// through the name expressions of impls/backends/cuda/cupy_prims.py.
void* rf_acu_kernels[] = {
    reinterpret_cast<void*>(&rf::sample<float>),
    reinterpret_cast<void*>(&rf::sample<double>),
    reinterpret_cast<void*>(&rf::sample_t<float>),
    reinterpret_cast<void*>(&rf::sample_t<double>),
    reinterpret_cast<void*>(&rf::sample_sums<float>),
    reinterpret_cast<void*>(&rf::sample_sums<double>),
};
#endif
