// DAU per-unit bilinear shift (reference/README.md section 2), blocked for bounded displacement
// spreads: y[n,f,i,j] = sum_{s,k,m} a4[f,s,k,m] c[n,s, i STRIDE + fy + da, j STRIDE + fx + db].
//
// Block: 256 threads own a 32 x 16 output tile of image n and kFwdFB = 8 output channels (a group
// fg); warp w owns kFPW = 1 of them, so every unit parameter a warp reads is a broadcast; lane
// (lx, ly) = (lane % 8, lane / 8) accumulates a 4 x 4 pixel strip at (4 ly, 4 lx) of the tile in
// registers.  (One channel per warp rather than 2-4: twice the blocks of 16 channels, which
// balances the paper case, 384 blocks on 132 SMs at 3 per SM, where 192 blocks leave 72 SMs
// half idle; at most 80 registers for float.)  Input channels come in stages of CS channels:
// the canvas window of the tile (rows x cols, enough for displacement spreads up to SPREAD) is
// copied into shared memory by cp.async with zero fill (the zero extension costs nothing),
// double-buffered, so the next stage loads while this one computes.  For one unit a lane reads
// a (3 STRIDE + 2)^2 window of the tile and each value feeds up to four FMAs (STRIDE 1: 25
// loads, 64 FMAs, all loads with immediate offsets from two base addresses).
//
// Shared-memory layout: row r of a channel's tile starts at r * pitch + skew(r), pitch a multiple
// of 8 words and skew(r) = (r / (4 STRIDE)) % 4: the 32 lanes of a stride-1 load then hit 32
// different banks (4-byte words).
//
// A prepare pass on the host side (impls/cupy_cuda.py, torch ops, no sync) builds, per group fg
// and stage sc, the window origin box[fg, sc] = (min fy, min fx) and fits[fg, sc] (spread at
// most 32), per unit rel[u] = (fy - min fy) << 16 | (fx - min fx), and per group the spread
// bucket (0: <= 8, 1: <= 16, 2: larger).  The host launches dau_fwd<., ., 8>, <16>, <32>; a
// block whose group is in another bucket returns at once.  Stages that do not fit (spread > 32)
// read the canvas directly (exact for any displacement, slow).  impls/cuda/dau.cu's shift
// remains the kernel for other strides.  MACs 4 P F S K.
#include "common.cu"

namespace rf {

constexpr int kFwdThreads = 256;
constexpr int kFwdTW = 32, kFwdTH = 16;  // output tile
constexpr int kFPW = 1;                  // output channels per warp (see the note on the grid above)
constexpr int kFwdFB = kFPW * kFwdThreads / kWarp;
constexpr int kStageBytes = 56 * 1024;  // one stage of the SPREAD 32 geometry at most (two are resident)

// Tile geometry of dau_fwd<T, STRIDE, SPREAD>: rows, cols, pitch and plane in elements, CS
// channels per stage (the same for every SPREAD of a (T, STRIDE), so one prepared table serves
// all three), and the dynamic shared memory of the two stages in bytes.  impls/cupy_cuda.py
// mirrors it (fwd_geom).
template <typename T, int STRIDE, int SPREAD>
struct FwdGeom {
    static constexpr int rows = (kFwdTH - 1) * STRIDE + SPREAD + 2;
    static constexpr int cols = (kFwdTW - 1) * STRIDE + SPREAD + 2;
    static constexpr int pitch = (cols + 3 + 7) / 8 * 8;  // + 3: the row skew
    static constexpr int plane = rows * pitch;
    static constexpr int plane32 = ((kFwdTH - 1) * STRIDE + 34) * (((kFwdTW - 1) * STRIDE + 34 + 3 + 7) / 8 * 8);
    static constexpr int cs_raw = kStageBytes / (plane32 * static_cast<int>(sizeof(T)));
    static constexpr int cs = cs_raw < 1 ? 1 : (cs_raw > 8 ? 8 : cs_raw);
    static constexpr int smem = 2 * cs * plane * static_cast<int>(sizeof(T));
    static constexpr int win = 3 * STRIDE + 2;  // rows and columns a lane reads per unit
};

__device__ __forceinline__ int skew(int r, int band) { return (r / band) & 3; }

// The four corner weights of a unit (one 16-byte load for float: a4 rows are 16-byte aligned).
__device__ __forceinline__ void weights4(const float* p, float& w0, float& w1, float& w2, float& w3) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(p));
    w0 = v.x, w1 = v.y, w2 = v.z, w3 = v.w;
}
__device__ __forceinline__ void weights4(const double* p, double& w0, double& w1, double& w2, double& w3) {
    const double2 a = __ldg(reinterpret_cast<const double2*>(p)), b = __ldg(reinterpret_cast<const double2*>(p) + 1);
    w0 = a.x, w1 = a.y, w2 = b.x, w3 = b.y;
}

// acc += one unit's bilinear samples over the lane's 4 x 4 strip from its (3 STRIDE + 2)^2 window
// of the tile: window row a starts at b0 + a PITCH for a < SPLIT and at b1 + a PITCH after (b0,
// b1 carry the row skews of the two bands the window spans), so every load has an immediate offset.
template <typename T, int STRIDE, int PITCH, int SPLIT>
__device__ __forceinline__ void window(T (&acc)[4][4], const T* b0, const T* b1, T w0, T w1, T w2, T w3) {
#pragma unroll
    for (int a = 0; a < 3 * STRIDE + 2; ++a) {
        const T* rp = (a < SPLIT ? b0 : b1) + a * PITCH;
#pragma unroll
        for (int bb = 0; bb < 3 * STRIDE + 2; ++bb) {
            const T v = rp[bb];
#pragma unroll
            for (int ii = 0; ii < 4; ++ii) {
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) {
                    const int da = a - ii * STRIDE, db = bb - jj * STRIDE;
                    if (da == 0 && db == 0) acc[ii][jj] += w0 * v;
                    if (da == 0 && db == 1) acc[ii][jj] += w1 * v;
                    if (da == 1 && db == 0) acc[ii][jj] += w2 * v;
                    if (da == 1 && db == 1) acc[ii][jj] += w3 * v;
                }
            }
        }
    }
}

// As window, for any STRIDE: each window row r0 + a of the tile carries its own skew.
template <typename T, int STRIDE, int PITCH>
__device__ __forceinline__ void window_rows(T (&acc)[4][4], const T* b0, int r0, T w0, T w1, T w2, T w3) {
#pragma unroll
    for (int a = 0; a < 3 * STRIDE + 2; ++a) {
        const T* rp = b0 + a * PITCH + skew(r0 + a, 4 * STRIDE);
#pragma unroll
        for (int bb = 0; bb < 3 * STRIDE + 2; ++bb) {
            const T v = rp[bb];
#pragma unroll
            for (int ii = 0; ii < 4; ++ii) {
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) {
                    const int da = a - ii * STRIDE, db = bb - jj * STRIDE;
                    if (da == 0 && db == 0) acc[ii][jj] += w0 * v;
                    if (da == 0 && db == 1) acc[ii][jj] += w1 * v;
                    if (da == 1 && db == 0) acc[ii][jj] += w2 * v;
                    if (da == 1 && db == 1) acc[ii][jj] += w3 * v;
                }
            }
        }
    }
}

// window<.., SPLIT = band - t> for the unit's t = dy % band (uniform over the warp: no divergence).
template <typename T, int STRIDE, int PITCH, int T0 = 0>
__device__ __forceinline__ void window_at(int t, T (&acc)[4][4], const T* b0, const T* b1, T w0, T w1, T w2, T w3) {
    if constexpr (T0 < 4 * STRIDE) {
        if (t == T0)
            window<T, STRIDE, PITCH, 4 * STRIDE - T0>(acc, b0, b1, w0, w1, w2, w3);
        else
            window_at<T, STRIDE, PITCH, T0 + 1>(t, acc, b0, b1, w0, w1, w2, w3);
    }
}

// y [N,F,Ho,Wo] from c [N,S,Hc,Wc].  Grid: x = column tiles * groups * N, y = row tiles;
// block kFwdThreads; dynamic shared memory FwdGeom::smem (opt-in above 48 KB).
template <typename T, int STRIDE, int SPREAD>
__global__ void __launch_bounds__(kFwdThreads, sizeof(T) == 4 ? 3 : 1)  // float: <= 80 registers, 3 blocks per SM
    dau_fwd(const T* __restrict__ c, const T* __restrict__ a4, const int* __restrict__ fy, const int* __restrict__ fx,
            const int* __restrict__ rel, const int* __restrict__ box, const int* __restrict__ fits,
            const int* __restrict__ bucket, int s_, int hc, int wc, int f_, int k_, int ho, int wo, int bucket_id,
            T* __restrict__ y) {
    using G = FwdGeom<T, STRIDE, SPREAD>;
    constexpr int band = 4 * STRIDE;
    const int tiles_w = (wo + kFwdTW - 1) / kFwdTW, groups = (f_ + kFwdFB - 1) / kFwdFB;
    const int tx = blockIdx.x % tiles_w, fg = blockIdx.x / tiles_w % groups, n = blockIdx.x / tiles_w / groups;
    if (__ldg(bucket + fg) != bucket_id) return;  // uniform over the block
    const int i0 = blockIdx.y * kFwdTH, j0 = tx * kFwdTW;
    const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp, lx = lane % 8, ly = lane / 8;
    const int stages = (s_ + G::cs - 1) / G::cs;
    T* buf = smem<T>();
    T acc[kFPW][4][4];
#pragma unroll
    for (int b = 0; b < kFPW; ++b)
#pragma unroll
        for (int ii = 0; ii < 4; ++ii)
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) acc[b][ii][jj] = T(0);

    // Issue the copies of stage sc into dst (nothing when it does not fit: read directly).
    auto load = [&](int sc, T* dst) {
        if (!__ldg(fits + fg * stages + sc)) return;
        const int r0 = i0 * STRIDE + __ldg(box + 2 * (fg * stages + sc));
        const int c0 = j0 * STRIDE + __ldg(box + 2 * (fg * stages + sc) + 1);
        for (int e = tid; e < G::rows * G::cols; e += kFwdThreads) {
            const int rr = e / G::cols, cc = e - rr * G::cols;
            const int p = r0 + rr, q = c0 + cc;
            const bool in = p >= 0 && q >= 0 && p < hc && q < wc;
            T* d = dst + rr * G::pitch + skew(rr, band) + cc;
#pragma unroll
            for (int j = 0; j < G::cs; ++j) {
                const int s = sc * G::cs + j;
                const bool ok = in && s < s_;
                const T* src = ok ? c + ((static_cast<long long>(n) * s_ + s) * hc + p) * wc + q : c;
                cp_async_zfill(d + j * G::plane, src, ok);
            }
        }
    };

    load(0, buf);
    cp_async_commit();
    for (int sc = 0; sc < stages; ++sc) {
        T* cur = buf + (sc & 1) * G::cs * G::plane;
        if (sc + 1 < stages) load(sc + 1, buf + ((sc + 1) & 1) * G::cs * G::plane);
        cp_async_commit();
        cp_async_wait<1>();  // this stage's group has landed (this thread's copies) ...
        __syncthreads();     // ... and every other thread's
        const int nj = s_ - sc * G::cs < G::cs ? s_ - sc * G::cs : G::cs;
        if (__ldg(fits + fg * stages + sc)) {
            const T* lane_tile = cur + ly * band * G::pitch + lx * 4 * STRIDE;
            for (int j = 0; j < nj; ++j) {
#pragma unroll
                for (int b = 0; b < kFPW; ++b) {
                    const int f = fg * kFwdFB + warp * kFPW + b;
                    if (f >= f_) continue;  // uniform over the warp
                    const int u0 = (f * s_ + sc * G::cs + j) * k_;  // < 2^31 (checked by the host)
                    const T* wp = a4 + 4 * u0;
                    const int* rp = rel + u0;
                    for (int k = 0; k < k_; ++k, wp += 4, ++rp) {
                        T w0, w1, w2, w3;
                        weights4(wp, w0, w1, w2, w3);
                        const int ru = __ldg(rp), dy = ru >> 16;
                        const T* b0 = lane_tile + j * G::plane + dy * G::pitch + (ru & 0xffff);
                        if constexpr (STRIDE == 1) {
                            // skew(ly 4 + dy + a) = (lb + (t + a) / 4) % 4 with (t + a) / 4 in {0, 1}
                            const int t = dy & 3, lb = ly + (dy >> 2);
                            window_at<T, 1, G::pitch>(t, acc[b], b0 + (lb & 3), b0 + ((lb + 1) & 3), w0, w1, w2, w3);
                        } else {
                            window_rows<T, STRIDE, G::pitch>(acc[b], b0, ly * band + dy, w0, w1, w2, w3);
                        }
                    }
                }
            }
        } else {  // spread beyond SPREAD: direct reads
            for (int j = 0; j < nj; ++j) {
                const int s = sc * G::cs + j;
                const long long cplane = (static_cast<long long>(n) * s_ + s) * hc * wc;
#pragma unroll
                for (int b = 0; b < kFPW; ++b) {
                    const int f = fg * kFwdFB + warp * kFPW + b;
                    if (f >= f_) continue;
                    for (int k = 0; k < k_; ++k) {
                        const int u = (f * s_ + s) * k_ + k;
                        T w0, w1, w2, w3;
                        weights4(a4 + 4 * u, w0, w1, w2, w3);
                        const int fyu = __ldg(fy + u), fxu = __ldg(fx + u);
#pragma unroll
                        for (int ii = 0; ii < 4; ++ii) {
#pragma unroll
                            for (int jj = 0; jj < 4; ++jj) {
                                const int p = (i0 + ly * 4 + ii) * STRIDE + fyu, q = (j0 + lx * 4 + jj) * STRIDE + fxu;
                                acc[b][ii][jj] += w0 * at(c, cplane, hc, wc, p, q);
                                acc[b][ii][jj] += w1 * at(c, cplane, hc, wc, p, q + 1);
                                acc[b][ii][jj] += w2 * at(c, cplane, hc, wc, p + 1, q);
                                acc[b][ii][jj] += w3 * at(c, cplane, hc, wc, p + 1, q + 1);
                            }
                        }
                    }
                }
            }
        }
        __syncthreads();  // this stage's buffer is refilled by the load two stages on
    }
#pragma unroll
    for (int b = 0; b < kFPW; ++b) {
        const int f = fg * kFwdFB + warp * kFPW + b;
        if (f >= f_) continue;
#pragma unroll
        for (int ii = 0; ii < 4; ++ii) {
            const int i = i0 + ly * 4 + ii;
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
                const int j = j0 + lx * 4 + jj;
                if (i < ho && j < wo) y[((static_cast<long long>(n) * f_ + f) * ho + i) * wo + j] = acc[b][ii][jj];
            }
        }
    }
}

}  // namespace rf

#ifndef __CUDACC_RTC__
// Offline compilation (nvcc checks) instantiates every kernel here; NVRTC instantiates them
// through the name expressions of impls/cupy_cuda.py.
#define RF_FWD(T, ST)                                                                                  \
    reinterpret_cast<void*>(&rf::dau_fwd<T, ST, 8>), reinterpret_cast<void*>(&rf::dau_fwd<T, ST, 16>), \
        reinterpret_cast<void*>(&rf::dau_fwd<T, ST, 32>)
void* rf_dau_fwd_kernels[] = {RF_FWD(float, 1), RF_FWD(float, 2), RF_FWD(double, 1), RF_FWD(double, 2)};
#undef RF_FWD
#endif
