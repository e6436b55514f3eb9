#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// cuda_gemm/M=77,N=130,K=264/bf16: block 128x128x32, warps 2x4 (warp tile 64x32), 3 stages, 61440 B shared, group_m 8
constexpr int M = 77, N = 130, K = 264;
constexpr int BM = 128, BN = 128, BK = 32, WM = 64, WN = 32, WARPS_M = 2, WARPS_N = 4, STAGES = 3, GROUP_M = 8;
constexpr int THREADS = 32 * WARPS_M * WARPS_N;
constexpr int LDS = BK + 8;              // padded row: ldmatrix rows hit distinct banks
constexpr int MT = WM / 16, NT = WN / 8; // mma tiles per warp
constexpr int KT = (K + BK - 1) / BK;    // k slices
constexpr int SMEM = STAGES * (BM + BN) * LDS * 2;

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16 bytes global → shared, bypassing L1; bytes < 16 zero-fill the rest
// (0 for a chunk outside the matrix, whose address is then clamped).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N_> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N_)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t *r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// Not volatile: a pure register operation, so the compiler may interleave
// it with the (volatile, shared-memory-reading) ldmatrix of the next step.
__device__ __forceinline__ void mma(float *c, const uint32_t *a, const uint32_t *b) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// load_tile issues the cp.async copies of one k slice of ROWS rows of a
// [rows, K] matrix into a stage at shared address s. THREADS is a multiple
// of the chunks per row, so a thread's chunk column is fixed and its rows
// are RS apart: the trip count is a compile-time constant.
template <int ROWS>
__device__ __forceinline__ void load_tile(uint32_t s, const __nv_bfloat16 *__restrict__ g, int row0, int rows_left, int k0) {
  constexpr int CH = BK / 8, RS = THREADS / CH, IT = (ROWS + RS - 1) / RS;
  const int r0 = threadIdx.x / CH, c = (threadIdx.x % CH) * 8;
  const bool kin = k0 + c < K;
#pragma unroll
  for (int it = 0; it < IT; it++) {
    const int r = r0 + it * RS;
    if (ROWS % RS == 0 || r < ROWS) {
      const bool in = kin && r < rows_left;
      cp_async16(s + (r * LDS + c) * 2, g + (in ? (size_t)(row0 + r) * K + k0 + c : 0), in ? 16 : 0);
    }
  }
}

__global__ void __launch_bounds__(THREADS) gemm(const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out) {
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t sA = smem_addr(smem), sB = sA + STAGES * BM * LDS * 2;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm0 = (warp / WARPS_N) * WM, wn0 = (warp % WARPS_N) * WN;
  // Grouped raster: GROUP_M consecutive tile rows sweep the n tiles
  // together, so a tile of w is read from HBM once per group, not once
  // per tile row (w is up to 235 MB, the L2 50 MB).
  constexpr int TILES_M = (M + BM - 1) / BM, TILES_N = (N + BN - 1) / BN;
  const int per_group = GROUP_M * TILES_N, first = (blockIdx.x / per_group) * GROUP_M;
  const int rows = min(TILES_M - first, GROUP_M), in_group = blockIdx.x % per_group;
  const int m0 = (first + in_group % rows) * BM, n0 = (in_group / rows) * BN;

  float c[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++) c[i][j][0] = c[i][j][1] = c[i][j][2] = c[i][j][3] = 0.f;

  // Prologue: STAGES-1 slices in flight; one commit group per slice, empty
  // past the end, so wait_group counts stay uniform.
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < KT) {
      load_tile<BM>(sA + s * BM * LDS * 2, x, m0, M - m0, s * BK);
      load_tile<BN>(sB + s * BN * LDS * 2, w, n0, N - n0, s * BK);
    }
    cp_async_commit();
  }
  // ldmatrix row addresses of this lane: A rows lane%16, k half lane/16;
  // B (x4: two n tiles) rows (lane/16)*8 + lane%8, k half (lane/8)%2.
  const uint32_t a_lane = sA + ((wm0 + lane % 16) * LDS + (lane / 16) * 8) * 2;
  const uint32_t b_lane = sB + ((wn0 + (lane / 16) * 8 + lane % 8) * LDS + ((lane / 8) % 2) * 8) * 2;
  int rd = 0, wr = STAGES - 1; // stage read now, stage written next
  for (int kt = 0; kt < KT; kt++) {
    cp_async_wait<STAGES - 2>();
    __syncthreads(); // slice kt landed for all; stage wr (read at kt-1) is free
    if (kt + STAGES - 1 < KT) {
      load_tile<BM>(sA + wr * BM * LDS * 2, x, m0, M - m0, (kt + STAGES - 1) * BK);
      load_tile<BN>(sB + wr * BN * LDS * 2, w, n0, N - n0, (kt + STAGES - 1) * BK);
    }
    cp_async_commit();
    const uint32_t sa = a_lane + rd * BM * LDS * 2, sb = b_lane + rd * BN * LDS * 2;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t a[MT][4], bf[NT][2];
#pragma unroll
      for (int i = 0; i < MT; i++) ldmatrix_x4(a[i], sa + (i * 16 * LDS + kk) * 2);
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        uint32_t r[4];
        ldmatrix_x4(r, sb + (j * 8 * LDS + kk) * 2);
        bf[j][0] = r[0]; bf[j][1] = r[1]; bf[j + 1][0] = r[2]; bf[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++) mma(c[i][j], a[i], bf[j]);
    }
    rd = rd + 1 == STAGES ? 0 : rd + 1;
    wr = wr + 1 == STAGES ? 0 : wr + 1;
  }
  cp_async_wait<0>();

  // c[i][j]: rows g and g+8, columns 2t and 2t+1 of the 16×8 tile (i, j).
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int m = m0 + wm0 + i * 16 + g + h * 8, n = n0 + wn0 + j * 8 + 2 * t;
        if (m >= M) continue;
        if ((N % 2) == 0 && n + 1 < N) {
          *reinterpret_cast<__nv_bfloat162 *>(out + (size_t)m * N + n) = __floats2bfloat162_rn(c[i][j][2 * h], c[i][j][2 * h + 1]);
        } else {
          if (n < N) out[(size_t)m * N + n] = __float2bfloat16(c[i][j][2 * h]);
          if (n + 1 < N) out[(size_t)m * N + n + 1] = __float2bfloat16(c[i][j][2 * h + 1]);
        }
      }
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  (void)dims;
  static bool configured = false;
  if (!configured) {
    cudaError_t e = cudaFuncSetAttribute(gemm, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM);
    if (e != cudaSuccess) return (int)e;
    configured = true;
  }
  gemm<<<((M + BM - 1) / BM) * ((N + BN - 1) / BN), THREADS, SMEM>>>((const __nv_bfloat16 *)bufs[0], (const __nv_bfloat16 *)bufs[1], (__nv_bfloat16 *)bufs[2]);
  return (int)cudaGetLastError();
}
