#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// cuda_gemv/M=16,N=28672,K=4096/bf16: mma n_tiles_per_warp=1 warps=32 ksplit=8 unroll=4
constexpr int M = 16, N = 28672, K = 4096;
constexpr int NT = 1, WARPS = 32, KSPLIT = 8;
constexpr int GROUPS = WARPS / KSPLIT;
constexpr int NCHUNK = (K + 31) / 32;                 // 32-wide k chunks
constexpr int CPS = (NCHUNK + KSPLIT - 1) / KSPLIT;   // chunks per split

__device__ __forceinline__ void mma(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__global__ void __launch_bounds__(WARPS * 32) gemv_mma(const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;  // fragment row, column pair
  const int group = warp / KSPLIT, part = warp % KSPLIT;
  const int nbase = (blockIdx.x * GROUPS + group) * NT * 8;
  const int cbeg = part * CPS, cend = min(NCHUNK, cbeg + CPS);
  float c[NT][4];
#pragma unroll
  for (int j = 0; j < NT; j++) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.f;
#pragma unroll 4
  for (int ch = cbeg; ch < cend; ch++) {
    const int k = ch * 32 + t * 8;
    uint4 xa = make_uint4(0, 0, 0, 0), xb = make_uint4(0, 0, 0, 0);
    if (k < K) {
      if (g < M) xa = __ldg(reinterpret_cast<const uint4 *>(x + (size_t)g * K + k));
      if (g + 8 < M) xb = __ldg(reinterpret_cast<const uint4 *>(x + (size_t)(g + 8) * K + k));
    }
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const int n = nbase + j * 8 + g;
      uint4 wv = make_uint4(0, 0, 0, 0);
      if (k < K && n < N) wv = __ldcs(reinterpret_cast<const uint4 *>(w + (size_t)n * K + k));
      mma(c[j], xa.x, xb.x, xa.y, xb.y, wv.x, wv.y);
      mma(c[j], xa.z, xb.z, xa.w, xb.w, wv.z, wv.w);
    }
  }
  __shared__ float red[WARPS][NT][4][32];
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) red[warp][j][i][lane] = c[j][i];
  __syncthreads();
  if (part != 0) return;
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float s = 0.f;
#pragma unroll
      for (int p = 0; p < KSPLIT; p++) s += red[group * KSPLIT + p][j][i][lane];
      c[j][i] = s;
    }
  // c[j]: rows g and g+8, columns 2t and 2t+1 of n-tile j.
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int m = g + (i >> 1) * 8, n = nbase + j * 8 + 2 * t + (i & 1);
      if (m < M && n < N) out[(size_t)m * N + n] = __float2bfloat16(c[j][i]);
    }
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  (void)dims;
  gemv_mma<<<896, WARPS * 32>>>((const __nv_bfloat16 *)bufs[0], (const __nv_bfloat16 *)bufs[1], (__nv_bfloat16 *)bufs[2]);
  return (int)cudaGetLastError();
}
