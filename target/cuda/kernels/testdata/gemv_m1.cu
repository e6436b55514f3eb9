#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// cuda_gemv/M=1,N=4096,K=4096/bf16: rows_per_warp=2 warps=16 ksplit=8 vec=8 unroll=4
constexpr int M = 1, N = 4096, K = 4096;
constexpr int R = 2, WARPS = 16, KSPLIT = 8, V = 8;
constexpr int GROUPS = WARPS / KSPLIT;          // row groups per block
constexpr int KCHUNK = ((K / V + KSPLIT - 1) / KSPLIT) * V;
typedef uint4 vec_t; // 8 bf16 = 16 bytes per load
__device__ __forceinline__ void unpack(const vec_t &p, float *f) {
  f[0] = bf_lo(p.x); f[1] = bf_hi(p.x);
  f[2] = bf_lo(p.y); f[3] = bf_hi(p.y);
  f[4] = bf_lo(p.z); f[5] = bf_hi(p.z);
  f[6] = bf_lo(p.w); f[7] = bf_hi(p.w);
}

__global__ void __launch_bounds__(WARPS * 32) gemv(const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = warp / KSPLIT, part = warp % KSPLIT;
  const int row0 = (blockIdx.x * GROUPS + group) * R;
  const int kbeg = part * KCHUNK, kend = min(K, kbeg + KCHUNK);
  float acc[M][R];
#pragma unroll
  for (int m = 0; m < M; m++)
#pragma unroll
    for (int r = 0; r < R; r++) acc[m][r] = 0.f;
#pragma unroll 4
  for (int k = kbeg + lane * V; k < kend; k += 32 * V) {
    float wf[R][V];
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (row0 + r < N) {
        vec_t p = __ldcs(reinterpret_cast<const vec_t *>(w + (size_t)(row0 + r) * K + k));
        unpack(p, wf[r]);
      } else {
#pragma unroll
        for (int v = 0; v < V; v++) wf[r][v] = 0.f;
      }
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
      float xf[V];
      vec_t p = __ldg(reinterpret_cast<const vec_t *>(x + (size_t)m * K + k));
      unpack(p, xf);
#pragma unroll
      for (int r = 0; r < R; r++)
#pragma unroll
        for (int v = 0; v < V; v++) acc[m][r] = fmaf(xf[v], wf[r][v], acc[m][r]);
    }
  }
#pragma unroll
  for (int m = 0; m < M; m++)
#pragma unroll
    for (int r = 0; r < R; r++) {
      float t = acc[m][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
      acc[m][r] = t;
    }
  __shared__ float red[WARPS][M * R];
  if (lane == 0) {
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
      for (int r = 0; r < R; r++) red[warp][m * R + r] = acc[m][r];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < GROUPS * M * R; i += WARPS * 32) {
    const int g = i / (M * R), j = i % (M * R), m = j / R, r = j % R;
    float t = 0.f;
#pragma unroll
    for (int p = 0; p < KSPLIT; p++) t += red[g * KSPLIT + p][j];
    const int row = (blockIdx.x * GROUPS + g) * R + r;
    if (row < N) out[(size_t)m * N + row] = __float2bfloat16(t);
  }
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  (void)dims;
  gemv<<<1024, WARPS * 32>>>((const __nv_bfloat16 *)bufs[0], (const __nv_bfloat16 *)bufs[1], (__nv_bfloat16 *)bufs[2]);
  return (int)cudaGetLastError();
}
