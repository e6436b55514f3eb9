#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// cuda_argmax/M=512,N=128256/bf16: threads=256 vec=8 unroll=2 blocks_per_row=1
constexpr int M = 512, N = 128256;
constexpr int T = 256, V = 8, U = 2, S = 1, W = 4;  // W: 32-bit words a vector
constexpr int WARPS = T / 32;
typedef uint4 vec_t;  // 8 bf16 = 16 bytes per load
__device__ __forceinline__ uint32_t word(const vec_t &p, int i) { return i == 0 ? p.x : i == 1 ? p.y : i == 2 ? p.z : p.w; }
__device__ __forceinline__ vec_t neg_inf_vec() { const uint32_t n = 0xff80ff80u; return vec_t{n, n, n, n}; }

// better: (v, i) comes before (bv, bi) in the argmax order: NaN above
// every number (the first NaN wins), then the larger value, then the
// smaller index. Total on distinct indices, so merges in any order agree.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  if (v != v) return bv == bv || i < bi;
  if (bv != bv) return false;
  return v > bv || (v == bv && i < bi);
}

__device__ __forceinline__ __nv_bfloat162 pair(uint32_t w) { return *reinterpret_cast<const __nv_bfloat162 *>(&w); }

// elem is element e of a vector as a float.
__device__ __forceinline__ float elem(const vec_t &p, int e) {
  const uint32_t w = word(p, e / 2);
  return (e & 1) ? bf_hi(w) : bf_lo(w);
}

__device__ __forceinline__ void warp_best(float &bv, int &bi) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
  }
}

__global__ void __launch_bounds__(T) argmax(const __nv_bfloat16 *__restrict__ x, int32_t *__restrict__ out,
    float *__restrict__ part_v, int *__restrict__ part_i, unsigned *__restrict__ count) {
  const int r = blockIdx.y, p = blockIdx.x;
  const __nv_bfloat16 *xr = x + (size_t)r * N;
  // The row's vector-aligned middle: head elements before it, tail after.
  const int head = min(N, (int)((V - (int)(((size_t)r * N) % V)) % V));
  const int nv = (N - head) / V, tail0 = head + nv * V;
  const int per = (nv + S - 1) / S, vb = p * per, ve = min(nv, vb + per);
  float bv = -INFINITY;
  int bi = N;  // nothing seen: loses to every element
  if (p == 0 && (int)threadIdx.x < head) {
    const float f = __bfloat162float(xr[threadIdx.x]);
    if (better(f, threadIdx.x, bv, bi)) { bv = f; bi = threadIdx.x; }
  }
  // A thread's steps visit increasing indices, and its best so far has a
  // smaller index than the step's: a step replaces it only when strictly
  // larger, or NaN, or when nothing is held yet.
  const vec_t *xv = reinterpret_cast<const vec_t *>(xr + head);
  for (int j0 = vb + threadIdx.x; j0 < ve; j0 += T * U) {
    vec_t d[U];
#pragma unroll
    for (int u = 0; u < U; u++) d[u] = j0 + u * T < ve ? __ldcs(xv + j0 + u * T) : neg_inf_vec();
    __nv_bfloat162 m2 = pair(word(d[0], 0));
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int w = 0; w < W; w++) m2 = __hmax2_nan(m2, pair(word(d[u], w)));
    const float m = __bfloat162float(__hmax_nan(__low2bfloat16(m2), __high2bfloat16(m2)));
    const bool mnan = m != m;
    if (bv == bv && (mnan || m > bv || (m == bv && bi == N))) {
      bool found = false;
#pragma unroll
      for (int u = 0; u < U; u++)
#pragma unroll
        for (int e = 0; e < V; e++) {
          const float f = elem(d[u], e);
          if (!found && j0 + u * T < ve && (mnan ? f != f : f == m)) {
            found = true;
            bv = f;
            bi = head + (j0 + u * T) * V + e;
          }
        }
    }
  }
  if (p == S - 1 && (int)threadIdx.x < N - tail0) {
    const int i = tail0 + threadIdx.x;
    const float f = __bfloat162float(xr[i]);
    if (better(f, i, bv, bi)) { bv = f; bi = i; }
  }
  warp_best(bv, bi);
  __shared__ float sv[WARPS];
  __shared__ int si[WARPS];
  if (threadIdx.x % 32 == 0) { sv[threadIdx.x / 32] = bv; si[threadIdx.x / 32] = bi; }
  __syncthreads();
  if (threadIdx.x < 32) {
    bv = threadIdx.x < WARPS ? sv[threadIdx.x] : -INFINITY;
    bi = threadIdx.x < WARPS ? si[threadIdx.x] : N;
    warp_best(bv, bi);
  }
  if (S == 1) {
    if (threadIdx.x == 0) out[r] = bi;
    return;
  }
  // The last of the row's S blocks to arrive merges their partials and
  // resets the row's counter for the next launch.
  __shared__ bool last;
  if (threadIdx.x == 0) {
    part_v[(size_t)r * S + p] = bv;
    part_i[(size_t)r * S + p] = bi;
    __threadfence();
    last = atomicAdd(count + r, 1u) == (unsigned)S - 1;
    if (last) count[r] = 0;
  }
  __syncthreads();
  if (!last || threadIdx.x >= 32) return;
  __threadfence();
  bv = -INFINITY;
  bi = N;
  for (int q = threadIdx.x; q < S; q += 32) {
    const float v = __ldcg(part_v + (size_t)r * S + q);
    const int i = __ldcg(part_i + (size_t)r * S + q);
    if (better(v, i, bv, bi)) { bv = v; bi = i; }
  }
  warp_best(bv, bi);
  if (threadIdx.x == 0) out[r] = bi;
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  (void)dims;
  argmax<<<dim3(S, M), T>>>((const __nv_bfloat16 *)bufs[0], (int32_t *)bufs[1], nullptr, nullptr, nullptr);
  return (int)cudaGetLastError();
}
