// Blocked DAU kernels for bounded displacement spreads (reference/README.md section 2): the
// per-unit bilinear shift (forward; run on dy with the units transposed it is the stride-1 input
// gradient) and the tap sums of the weight and displacement gradients:
//   dau_fwd:    y[n,f,i,j] = sum_{s,k,m} a4[f,s,k,m] c[n,s, i STRIDE + fy + da, j STRIDE + fx + db]
//   dau_tapsum: t[f,s,k,m] = sum_{n,i,j} dy[n,f,i,j] c[n,s, i STRIDE + fy + da, j STRIDE + fx + db]
//
// Both: blocks of 256 threads; warp w owns output channel f = 8 fg + w of a group fg of kFwdFB =
// 8 (so every unit parameter a warp reads is a broadcast); lane (lx, ly) = (lane % 8, lane / 8)
// owns the 4 x 4 pixel strip at (4 ly, 4 lx) of a 32 x 16 output tile.  (One channel per warp
// rather than 2-4: blocks of 8 channels balance the paper case, 384 blocks on 132 SMs at 3 per
// SM, where 192 blocks of 16 leave 72 SMs half idle; at most 80 registers for float.)  The
// canvas window of the tile for CS input channels (rows x cols: displacement spreads up to
// SPREAD) is copied into shared memory by cp.async with zero fill (the zero extension costs
// nothing), double-buffered, so the next copy runs while this one is used.  For one unit a lane
// reads a (3 STRIDE + 2)^2 window of the tile and each value feeds up to four FMAs (STRIDE 1: 25
// loads, 64 FMAs, all loads with immediate offsets from two base addresses).
//   dau_fwd: a block owns (n, tile, fg) and walks the stages of input channels; the lane keeps
//     its strip of y in registers.
//   dau_tapsum: a block owns (fg, stage sc, chunk of KC units k) and walks the (n, tile) steps of
//     its share (grid.y splits them); the lane keeps its strip of dy in registers and the four
//     corner sums of its CS x KC units; one warp reduction per block at the end writes the
//     block's partials (the host sums them in a fixed order: deterministic, no atomics).
//
// Shared-memory layout: row r of a channel's tile starts at r * pitch + skew(r), pitch a multiple
// of 8 words and skew(r) = (r / (4 STRIDE)) % 4: the 32 lanes of a stride-1 load then hit 32
// different banks (4-byte words).
//
// A prepare pass on the host side (impls/backends/cuda/cupy_prims.py fwd_table, torch ops, no sync) builds, per
// group fg and stage sc, the window origin box[fg, sc] = (min fy, min fx) and fits[fg, sc]
// (spread at most 32), per unit rel[u] = (fy - min fy) << 16 | (fx - min fx), and per group the
// spread bucket (0: <= 8, 1: <= 16, 2: larger).  The host launches SPREAD = 8, 16, 32; a block
// whose group is in another bucket returns at once.  Stages that do not fit (spread > 32) read
// the canvas directly (exact for any displacement, slow).  dau.cu keeps the kernels
// for other strides.  MACs 4 P F S K each.
#include "common.cu"

namespace rf {

constexpr int kFwdThreads = 256;
constexpr int kFwdTW = 32, kFwdTH = 16;  // output tile
constexpr int kFwdFB = kFwdThreads / kWarp;  // output channels per block, one per warp
constexpr int kStageBytes = 56 * 1024;  // one stage of the SPREAD 32 geometry at most (two are resident)

// Tile geometry of dau_fwd<T, STRIDE, SPREAD>: rows, cols, pitch and plane in elements, CS
// channels per stage (the same for every SPREAD of a (T, STRIDE), so one prepared table serves
// all three), and the dynamic shared memory of the two stages in bytes.  impls/backends/cuda/cupy_prims.py
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
    static constexpr int kc = cs >= 4 ? 1 : 4 / cs;  // dau_tapsum: units k per block (CS KC <= 4 corner-sum sets)
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

// Visits the (3 STRIDE + 2)^2 window of one unit: use(a, bb, v) for window row a, column bb.
// Window row a starts at b0 + a PITCH for a < SPLIT and at b1 + a PITCH after (b0, b1 carry the
// row skews of the two bands a stride-1 window spans), so every load has an immediate offset.
template <int STRIDE, int PITCH, int SPLIT, typename T, typename F>
__device__ __forceinline__ void window(const T* b0, const T* b1, F&& use) {
#pragma unroll
    for (int a = 0; a < 3 * STRIDE + 2; ++a) {
        const T* rp = (a < SPLIT ? b0 : b1) + a * PITCH;
#pragma unroll
        for (int bb = 0; bb < 3 * STRIDE + 2; ++bb) use(a, bb, rp[bb]);
    }
}

// window<.., SPLIT = 4 - t> for the unit's t = dy % 4 (uniform over the warp: no divergence).
template <int PITCH, int T0 = 0, typename T, typename F>
__device__ __forceinline__ void window_at(int t, const T* b0, const T* b1, F&& use) {
    if constexpr (T0 < 4) {
        if (t == T0)
            window<1, PITCH, 4 - T0>(b0, b1, use);
        else
            window_at<PITCH, T0 + 1>(t, b0, b1, use);
    }
}

// The window of the unit with relative floors ru (rel) for the lane whose strip starts at
// lane_tile (row ly * 4 STRIDE of its tile): stride 1 through window_at, else with a skew per row.
template <int STRIDE, int PITCH, typename T, typename F>
__device__ __forceinline__ void unit_window(const T* lane_tile, int ly, int ru, F&& use) {
    const int dy = ru >> 16;
    const T* b0 = lane_tile + dy * PITCH + (ru & 0xffff);
    if constexpr (STRIDE == 1) {
        // skew(4 ly + dy + a) = (lb + (t + a) / 4) % 4 with t = dy % 4, (t + a) / 4 in {0, 1}
        const int lb = ly + (dy >> 2);
        window_at<PITCH>(dy & 3, b0 + (lb & 3), b0 + ((lb + 1) & 3), use);
    } else {
        const int r0 = ly * 4 * STRIDE + dy;
#pragma unroll
        for (int a = 0; a < 3 * STRIDE + 2; ++a) {
            const T* rp = b0 + a * PITCH + skew(r0 + a, 4 * STRIDE);
#pragma unroll
            for (int bb = 0; bb < 3 * STRIDE + 2; ++bb) use(a, bb, rp[bb]);
        }
    }
}

// Copies the canvas window of CS channels from s = s0 (rows x cols from (r0, c0) of image n)
// into dst, zero outside the canvas and for s >= s_ (cp.async; the caller commits).
template <typename G, int STRIDE, typename T>
__device__ __forceinline__ void stage_copy(T* dst, const T* __restrict__ c, int n, int s0, int s_, int hc, int wc,
                                           int r0, int c0) {
    for (int e = threadIdx.x; e < G::rows * G::cols; e += kFwdThreads) {
        const int rr = e / G::cols, cc = e - rr * G::cols;
        const int p = r0 + rr, q = c0 + cc;
        const bool in = p >= 0 && q >= 0 && p < hc && q < wc;
        T* d = dst + rr * G::pitch + skew(rr, 4 * STRIDE) + cc;
#pragma unroll
        for (int j = 0; j < G::cs; ++j) {
            const bool ok = in && s0 + j < s_;
            const T* src = ok ? c + ((static_cast<long long>(n) * s_ + s0 + j) * hc + p) * wc + q : c;
            cp_async_zfill(d + j * G::plane, src, ok);
        }
    }
}

// y [N,F,Ho,Wo] from c [N,S,Hc,Wc].  Grid: x = column tiles * groups * N, y = row tiles;
// block kFwdThreads; dynamic shared memory FwdGeom::smem (opt-in above 48 KB).
template <typename T, int STRIDE, int SPREAD>
__global__ void __launch_bounds__(kFwdThreads, sizeof(T) == 4 ? (STRIDE == 1 ? 3 : 2) : 1)  // float stride 1: <= 80 regs
    dau_fwd(const T* __restrict__ c, const T* __restrict__ a4, const int* __restrict__ fy, const int* __restrict__ fx,
            const int* __restrict__ rel, const int* __restrict__ box, const int* __restrict__ fits,
            const int* __restrict__ bucket, int s_, int hc, int wc, int f_, int k_, int ho, int wo, int bucket_id,
            T* __restrict__ y) {
    using G = FwdGeom<T, STRIDE, SPREAD>;
    const int tiles_w = (wo + kFwdTW - 1) / kFwdTW, groups = (f_ + kFwdFB - 1) / kFwdFB;
    const int tx = blockIdx.x % tiles_w, fg = blockIdx.x / tiles_w % groups, n = blockIdx.x / tiles_w / groups;
    if (__ldg(bucket + fg) != bucket_id) return;  // uniform over the block
    const int i0 = blockIdx.y * kFwdTH, j0 = tx * kFwdTW;
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, lx = lane % 8, ly = lane / 8;
    const int stages = (s_ + G::cs - 1) / G::cs;
    T* buf = smem<T>();
    const int f = fg * kFwdFB + warp;  // uniform over the warp
    T acc[4][4];
#pragma unroll
    for (int ii = 0; ii < 4; ++ii)
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) acc[ii][jj] = T(0);

    // Issue the copies of stage sc into dst (nothing when it does not fit: read directly).
    auto load = [&](int sc, T* dst) {
        const int g = fg * stages + sc;
        if (__ldg(fits + g))
            stage_copy<G, STRIDE>(dst, c, n, sc * G::cs, s_, hc, wc, i0 * STRIDE + __ldg(box + 2 * g),
                                  j0 * STRIDE + __ldg(box + 2 * g + 1));
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
        if (f < f_ && __ldg(fits + fg * stages + sc)) {
            const T* lane_tile = cur + ly * 4 * STRIDE * G::pitch + lx * 4 * STRIDE;
            for (int j = 0; j < nj; ++j) {
                const int u0 = (f * s_ + sc * G::cs + j) * k_;  // < 2^31 (checked by the host)
                const T* wp = a4 + 4 * u0;
                const int* rp = rel + u0;
                for (int k = 0; k < k_; ++k, wp += 4, ++rp) {
                    T w0, w1, w2, w3;
                    weights4(wp, w0, w1, w2, w3);
                    unit_window<STRIDE, G::pitch>(lane_tile + j * G::plane, ly, __ldg(rp), [&](int a, int bb, T v) {
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
                    });
                }
            }
        } else if (f < f_) {  // spread beyond SPREAD: direct reads
            for (int j = 0; j < nj; ++j) {
                const int s = sc * G::cs + j;
                const long long cplane = (static_cast<long long>(n) * s_ + s) * hc * wc;
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
                            acc[ii][jj] += w0 * at(c, cplane, hc, wc, p, q);
                            acc[ii][jj] += w1 * at(c, cplane, hc, wc, p, q + 1);
                            acc[ii][jj] += w2 * at(c, cplane, hc, wc, p + 1, q);
                            acc[ii][jj] += w3 * at(c, cplane, hc, wc, p + 1, q + 1);
                        }
                    }
                }
            }
        }
        __syncthreads();  // this stage's buffer is refilled by the load two stages on
    }
    if (f >= f_) return;
#pragma unroll
    for (int ii = 0; ii < 4; ++ii) {
        const int i = i0 + ly * 4 + ii;
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
            const int j = j0 + lx * 4 + jj;
            if (i < ho && j < wo) y[((static_cast<long long>(n) * f_ + f) * ho + i) * wo + j] = acc[ii][jj];
        }
    }
}

// part[f,s,k,m,chunk] = the tap sums t[f,s,k,m] over the (n, tile) steps chunk, chunk + C,
// chunk + 2 C, ... (C = gridDim.y chunks; the host sums the chunks).  Grid: x = groups * stages
// * k-chunks (KC units each), y = C; block kFwdThreads; dynamic shared memory FwdGeom::smem.
template <typename T, int STRIDE, int SPREAD>
__global__ void __launch_bounds__(kFwdThreads, sizeof(T) == 4 && STRIDE == 1 ? 0 : 1)  // 0: ptxas chooses (80 regs, no spill)
    dau_tapsum(const T* __restrict__ c, const T* __restrict__ dy, const int* __restrict__ fy,
               const int* __restrict__ fx, const int* __restrict__ rel, const int* __restrict__ box,
               const int* __restrict__ fits, const int* __restrict__ bucket, int n_, int s_, int hc, int wc, int f_,
               int k_, int ho, int wo, int bucket_id, T* __restrict__ part) {
    using G = FwdGeom<T, STRIDE, SPREAD>;
    constexpr int CS = G::cs, KC = G::kc;
    const int stages = (s_ + CS - 1) / CS, kchunks = (k_ + KC - 1) / KC;
    const int kq = blockIdx.x % kchunks, sc = blockIdx.x / kchunks % stages, fg = blockIdx.x / kchunks / stages;
    if (__ldg(bucket + fg) != bucket_id) return;  // uniform over the block
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, lx = lane % 8, ly = lane / 8;
    const int f = fg * kFwdFB + warp;  // uniform over the warp
    const int tiles_w = (wo + kFwdTW - 1) / kFwdTW, tiles = tiles_w * ((ho + kFwdTH - 1) / kFwdTH);
    const int steps = n_ * tiles, g = fg * stages + sc;
    const bool tiled = __ldg(fits + g);
    T* buf = smem<T>();
    T acc[CS][KC][4];
#pragma unroll
    for (int j = 0; j < CS; ++j)
#pragma unroll
        for (int kk = 0; kk < KC; ++kk)
#pragma unroll
            for (int m = 0; m < 4; ++m) acc[j][kk][m] = T(0);

    auto load = [&](int step, T* dst) {
        const int n = step / tiles, i0 = step % tiles / tiles_w * kFwdTH, j0 = step % tiles_w * kFwdTW;
        if (tiled)
            stage_copy<G, STRIDE>(dst, c, n, sc * CS, s_, hc, wc, i0 * STRIDE + __ldg(box + 2 * g),
                                  j0 * STRIDE + __ldg(box + 2 * g + 1));
    };

    if (static_cast<int>(blockIdx.y) < steps) load(blockIdx.y, buf);
    cp_async_commit();
    for (int step = blockIdx.y, it = 0; step < steps; step += gridDim.y, ++it) {
        const T* cur = buf + (it & 1) * CS * G::plane;
        if (step + static_cast<int>(gridDim.y) < steps) load(step + gridDim.y, buf + ((it + 1) & 1) * CS * G::plane);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const int n = step / tiles, i0 = step % tiles / tiles_w * kFwdTH, j0 = step % tiles_w * kFwdTW;
        if (f < f_) {
            T d[4][4];  // the lane's strip of dy, zero beyond the output
            const int pi = i0 + ly * 4, pj = j0 + lx * 4;
            const T* drow = dy + ((static_cast<long long>(n) * f_ + f) * ho + pi) * wo + pj;
#pragma unroll
            for (int ii = 0; ii < 4; ++ii, drow += wo)
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) d[ii][jj] = pi + ii < ho && pj + jj < wo ? __ldg(drow + jj) : T(0);
            const T* lane_tile = cur + ly * 4 * STRIDE * G::pitch + lx * 4 * STRIDE;
#pragma unroll
            for (int j = 0; j < CS; ++j) {
                const int s = sc * CS + j;
#pragma unroll
                for (int kk = 0; kk < KC; ++kk) {
                    const int k = kq * KC + kk;
                    if (s >= s_ || k >= k_) continue;  // uniform over the warp
                    const int u = (f * s_ + s) * k_ + k;
                    T* t4 = acc[j][kk];
                    if (tiled) {
                        unit_window<STRIDE, G::pitch>(lane_tile + j * G::plane, ly, __ldg(rel + u), [&](int a, int bb, T v) {
#pragma unroll
                            for (int ii = 0; ii < 4; ++ii) {
#pragma unroll
                                for (int jj = 0; jj < 4; ++jj) {
                                    const int da = a - ii * STRIDE, db = bb - jj * STRIDE;
                                    if ((da == 0 || da == 1) && (db == 0 || db == 1)) t4[2 * da + db] += d[ii][jj] * v;
                                }
                            }
                        });
                    } else {  // spread beyond SPREAD: direct reads
                        const long long cplane = (static_cast<long long>(n) * s_ + s) * hc * wc;
                        const int fyu = __ldg(fy + u), fxu = __ldg(fx + u);
#pragma unroll
                        for (int ii = 0; ii < 4; ++ii) {
#pragma unroll
                            for (int jj = 0; jj < 4; ++jj) {
                                const int p = (i0 + ly * 4 + ii) * STRIDE + fyu, q = (j0 + lx * 4 + jj) * STRIDE + fxu;
                                t4[0] += d[ii][jj] * at(c, cplane, hc, wc, p, q);
                                t4[1] += d[ii][jj] * at(c, cplane, hc, wc, p, q + 1);
                                t4[2] += d[ii][jj] * at(c, cplane, hc, wc, p + 1, q);
                                t4[3] += d[ii][jj] * at(c, cplane, hc, wc, p + 1, q + 1);
                            }
                        }
                    }
                }
            }
        }
        __syncthreads();  // this buffer is refilled by the copy issued next iteration
    }
    // Warp reduction through shared memory (the stage buffers are free after the last barrier):
    // lane l stores its NV sums in column l of the warp's [NV][33] slab, then lane v < NV adds
    // row v in lane order (fixed order: deterministic).
    if (f >= f_) return;
    constexpr int NV = CS * KC * 4;
    static_assert(NV <= kWarp && kFwdThreads / kWarp * NV * (kWarp + 1) <= 2 * CS * G::plane, "reduction slab");
    T* red = buf + warp * NV * (kWarp + 1);
#pragma unroll
    for (int j = 0; j < CS; ++j)
#pragma unroll
        for (int kk = 0; kk < KC; ++kk)
#pragma unroll
            for (int m = 0; m < 4; ++m) red[((j * KC + kk) * 4 + m) * (kWarp + 1) + lane] = acc[j][kk][m];
    __syncwarp();
    if (lane < NV) {
        const int j = lane / (4 * KC), kk = lane / 4 % KC, m = lane % 4;
        const int s = sc * CS + j, k = kq * KC + kk;
        T v = T(0);
        for (int l = 0; l < kWarp; ++l) v += red[lane * (kWarp + 1) + l];
        if (s < s_ && k < k_) part[((static_cast<long long>((f * s_ + s) * k_ + k)) * 4 + m) * gridDim.y + blockIdx.y] = v;
    }
}

}  // namespace rf

#ifndef __CUDACC_RTC__
// Offline compilation (nvcc checks) instantiates every kernel here; NVRTC instantiates them
// through the name expressions of impls/backends/cuda/cupy_prims.py.
// float: the three spread buckets; double (correctness more than speed): SPREAD 32 serves all.
#define RF_K(K, T, ST, SP) reinterpret_cast<void*>(&rf::K<T, ST, SP>)
void* rf_dau_fwd_kernels[] = {
    RF_K(dau_fwd, float, 1, 8),     RF_K(dau_fwd, float, 1, 16),    RF_K(dau_fwd, float, 1, 32),
    RF_K(dau_fwd, float, 2, 8),     RF_K(dau_fwd, float, 2, 16),    RF_K(dau_fwd, float, 2, 32),
    RF_K(dau_fwd, double, 1, 32),   RF_K(dau_fwd, double, 2, 32),   RF_K(dau_tapsum, float, 1, 8),
    RF_K(dau_tapsum, float, 1, 16), RF_K(dau_tapsum, float, 1, 32), RF_K(dau_tapsum, float, 2, 8),
    RF_K(dau_tapsum, float, 2, 16), RF_K(dau_tapsum, float, 2, 32), RF_K(dau_tapsum, double, 1, 32),
    RF_K(dau_tapsum, double, 2, 32)};
#undef RF_K
#endif
