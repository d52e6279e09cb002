// DAU per-unit bilinear shift (reference/README.md section 2), blocked for bounded displacement
// spreads: y[n,f,i,j] = sum_{s,k,m} a4[f,s,k,m] c[n,s, i STRIDE + fy + da, j STRIDE + fx + db].
//
// Block: 256 threads own a 32 x 16 output tile of image n and kFB = 16 output channels (a group
// fg); warp w owns kFPW = 2 of them, so every unit parameter a warp reads is a broadcast; lane
// (lx, ly) = (lane % 8, lane / 8) accumulates a 4 x 4 pixel strip at (4 ly, 4 lx) of the tile in
// registers.  Input channels come in stages of CS channels: the canvas window of the tile
// (rows x cols, enough for displacement spreads up to SPREAD) is copied into shared memory by
// cp.async with zero fill (the zero extension costs nothing), double-buffered, so the next
// stage loads while this one computes.  For one unit a lane reads a (3 STRIDE + 2)^2 window of
// the tile and each value feeds up to four FMAs (STRIDE 1: 25 loads, 64 FMAs).
//
// Shared-memory layout: row r of a channel's tile starts at r * pitch + skew(r), pitch a multiple
// of 8 words and skew(r) = (r / (4 STRIDE)) % 4: the 32 lanes of a stride-1 load then hit 32
// different banks (4-byte words).
//
// A prepare pass on the host side (impls/cupy_cuda.py, torch ops, no sync) builds, per group fg
// and stage sc, the window origin box[fg, sc] = (min fy, min fx) and fits[fg, sc] (spread at
// most SPREAD), per unit rel[u] = (fy - min fy) << 16 | (fx - min fx), and per group the spread
// bucket (0: <= 8, 1: <= 16, 2: larger).  The host launches dau_fwd<., ., 8>, <16>, <32>; a
// block whose group is in another bucket returns at once.  Stages that do not fit (spread > 32)
// read the canvas directly (exact for any displacement, slow).  impls/cuda/dau.cu's shift
// remains the kernel for other strides.  MACs 4 P F S K.
#include "common.cu"

namespace rf {

constexpr int kFwdThreads = 256;
constexpr int kFwdTW = 32, kFwdTH = 16;  // output tile
constexpr int kFPW = 2;                  // output channels per warp
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

// y [N,F,Ho,Wo] from c [N,S,Hc,Wc].  Grid: x = column tiles * groups * N, y = row tiles;
// block kFwdThreads; dynamic shared memory FwdGeom::smem (opt-in above 48 KB).
template <typename T, int STRIDE, int SPREAD>
__global__ void __launch_bounds__(kFwdThreads, sizeof(T) == 4 ? 0 : 1)  // float: ptxas picks <= 128 regs (2 blocks per SM)
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
        const bool tiled = __ldg(fits + fg * stages + sc);
        for (int j = 0; j < G::cs; ++j) {
            const int s = sc * G::cs + j;
            if (s >= s_) break;
            const T* tl = cur + j * G::plane;
            const long long cplane = (static_cast<long long>(n) * s_ + s) * hc * wc;
#pragma unroll
            for (int b = 0; b < kFPW; ++b) {
                const int f = fg * kFwdFB + warp * kFPW + b;
                if (f >= f_) continue;  // uniform over the warp
                for (int k = 0; k < k_; ++k) {
                    const long long u = (static_cast<long long>(f) * s_ + s) * k_ + k;
                    const T w0 = __ldg(a4 + 4 * u), w1 = __ldg(a4 + 4 * u + 1);
                    const T w2 = __ldg(a4 + 4 * u + 2), w3 = __ldg(a4 + 4 * u + 3);
                    if (tiled) {
                        const int ru = __ldg(rel + u);
                        const int r = ly * band + (ru >> 16), cb = lx * 4 * STRIDE + (ru & 0xffff);
#pragma unroll
                        for (int a = 0; a < G::win; ++a) {
                            const T* rp = tl + (r + a) * G::pitch + skew(r + a, band) + cb;
#pragma unroll
                            for (int bb = 0; bb < G::win; ++bb) {
                                const T v = rp[bb];
#pragma unroll
                                for (int ii = 0; ii < 4; ++ii) {
#pragma unroll
                                    for (int jj = 0; jj < 4; ++jj) {
                                        const int da = a - ii * STRIDE, db = bb - jj * STRIDE;
                                        if (da == 0 && db == 0) acc[b][ii][jj] += w0 * v;
                                        if (da == 0 && db == 1) acc[b][ii][jj] += w1 * v;
                                        if (da == 1 && db == 0) acc[b][ii][jj] += w2 * v;
                                        if (da == 1 && db == 1) acc[b][ii][jj] += w3 * v;
                                    }
                                }
                            }
                        }
                    } else {  // spread beyond SPREAD: direct reads, the same order of FMAs
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
