// Helpers shared by the rfbench CUDA kernels (included by the other .cu files).
// Maps are NCHW, row-major, read on the zero-extended plane.
#ifndef RF_COMMON_CU
#define RF_COMMON_CU

namespace rf {

enum { kWarp = 32 };

// a[plane + p * w + q], or 0 outside [0, h) x [0, w).
template <typename T>
__device__ __forceinline__ T at(const T* __restrict__ a, long long plane, int h, int w, int p, int q) {
    return (p >= 0 && q >= 0 && p < h && q < w) ? __ldg(a + plane + static_cast<long long>(p) * w + q) : T(0);
}

// Output index o with o * st + it + off == x and 0 <= o < n, or -1 (adjoints written as gathers).
__device__ __forceinline__ int src_index(int x, int it, int st, int off, int n) {
    const int num = x - it - off;
    if (num < 0 || num % st != 0) return -1;
    const int o = num / st;
    return o < n ? o : -1;
}

// Grid-stride walk over the elements (plane, i, j) of planes of ho x wo: starts at flat index
// start and advances by step, carrying the mixed-radix digits (two divisions at set-up, none per
// element: no 64-bit div/mod in the loops).
struct Walk {
    long long plane, dp;
    int i, j, di, dj, ho, wo;
    __device__ Walk(long long start, long long step, int ho_, int wo_) : ho(ho_), wo(wo_) {
        const long long hw = static_cast<long long>(ho) * wo;
        plane = start / hw, dp = step / hw;
        const int r = static_cast<int>(start % hw), dr = static_cast<int>(step % hw);
        i = r / wo, j = r % wo, di = dr / wo, dj = dr % wo;
    }
    __device__ void next() {
        j += dj, i += di, plane += dp;
        if (j >= wo) j -= wo, ++i;
        if (i >= ho) i -= ho, ++plane;
    }
};

// Threads per block of every reduction kernel (tapsum, dtaps, sample_sums); the host's
// RED_THREADS (impls/backends/cuda/cupy_prims.py) launches exactly this many.
inline constexpr int kRed = 256;

// Sum of v over a block of NT threads: warp shuffles, then one value per warp through shared
// memory, in a fixed order (deterministic).  The result is valid in thread 0.
template <int NT, typename T>
__device__ T block_sum(T v) {
    static_assert(NT % kWarp == 0 && NT >= kWarp && NT <= 1024, "block_sum: NT must be a multiple of 32, at most 1024");
    __shared__ T part[NT / kWarp];
    const int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (tid % kWarp == 0) part[tid / kWarp] = v;
    __syncthreads();
    if (tid < kWarp) {
        v = tid < NT / kWarp ? part[tid] : T(0);
        for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    }
    __syncthreads();  // part may be reused by the next call
    return v;
}

// Four corner sums reduced over the block into this block's partials: out[m * stride] for
// m = 0..3 (thread 0).  The host sums the partials of all blocks in a fixed order, so results
// are bit-identical run to run (no float atomics).
template <int NT, typename T>
__device__ void block_sums4(T* out, long long stride, T t0, T t1, T t2, T t3) {
    t0 = block_sum<NT>(t0);
    t1 = block_sum<NT>(t1);
    t2 = block_sum<NT>(t2);
    t3 = block_sum<NT>(t3);
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        out[0] = t0;
        out[stride] = t1;
        out[2 * stride] = t2;
        out[3 * stride] = t3;
    }
}

// Asynchronous copy of one element global -> shared (cp.async, sm_80+), or zeros when !valid
// (src-size 0: nothing is read, the destination is zero-filled), so tiles come zero-extended
// for free.  Elsewhere (older GPUs, the CPU emulation) a plain copy.
template <typename T>
__device__ __forceinline__ void cp_async_zfill(T* dst, const T* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(d), "l"(src), "n"(sizeof(T)),
                 "r"(valid ? static_cast<int>(sizeof(T)) : 0)
                 : "memory");
#else
    *dst = valid ? *src : T(0);
#endif
}

// Closes the group of cp.async issued by this thread since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of this thread's committed cp.async groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Dynamic shared memory as an array of T.
template <typename T>
__device__ __forceinline__ T* smem() {
    extern __shared__ __align__(16) unsigned char raw[];
    return reinterpret_cast<T*>(raw);
}

}  // namespace rf

#endif  // RF_COMMON_CU
