#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// cuda_gemv/M=16,N=1024,K=4096/bf16: cp.async ring n_tiles=1 groups=1 ksplit=8 unroll=2 stages=4 k_per_block=4096 k_blocks=1
constexpr int M = 16, N = 1024, K = 4096;
constexpr int NT = 1, G = 1, S = 8, U = 2, PF = 4;
constexpr int KR = 4096, KB = 1, NB = 128;  // k per block, K blocks (grid y), n blocks (grid x)
constexpr int W = G * S;                  // warps per block
constexpr int ROWS = G * NT * 8;          // weight rows per block
constexpr int CPR = 4 * U;                // 16-byte pieces per row and stage (32U k)
constexpr int SWZ = CPR >= 8 ? 4 : 0;     // piece swizzle of odd rows (conflict-free reads)
constexpr int STAGE = (NT * 8 + 16) * CPR;  // 16-byte pieces per warp and stage: w rows, then x rows
constexpr int SMEM = W * PF * STAGE * 16;

__device__ __forceinline__ void mma(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// cp16 copies 16 bytes, or writes 16 zero bytes when !ok (nothing is read).
__device__ __forceinline__ void cp16(uint4 *smem, const void *gmem, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(smem)),
               "l"(gmem), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int P> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(P)); }

// at is piece c of row r in a stage: odd rows swap the halves of each
// 8-piece group, so that the fragment reads (rows g, g+1 of a quarter warp,
// pieces 4u…4u+3) hit distinct banks.
__device__ __forceinline__ int at(int r, int c) { return r * CPR + (c ^ ((r & 1) * SWZ)); }

// issue copies the stage at k0 (absolute): the warp's NT·8 rows of w and
// 16 rows of x (zeros past M), each row's 32U k as CPR 16-byte pieces.
// Consecutive lanes take consecutive pieces of a row, so each copy
// instruction reads whole 64U-byte row segments.
__device__ __forceinline__ void issue(uint4 *st, const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, int n0, int k0, int kend, int lane) {
#pragma unroll
  for (int i = 0; i < NT * U; i++) {
    const int p = i * 32 + lane, r = p / CPR, c = p % CPR, k = k0 + c * 8, n = n0 + r;
    const bool ok = k < kend && n < N;
    cp16(st + at(r, c), ok ? w + (size_t)n * K + k : w, ok);
  }
#pragma unroll
  for (int i = 0; i < 2 * U; i++) {
    const int p = i * 32 + lane, r = p / CPR, c = p % CPR, k = k0 + c * 8;
    const bool ok = k < kend && r < M;
    cp16(st + at(NT * 8 + r, c), ok ? x + (size_t)r * K + k : x, ok);
  }
}

__global__ void __launch_bounds__(W * 32) gemv_ring(const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out, float *__restrict__ ws,
    unsigned *__restrict__ count) {
  extern __shared__ uint4 smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;  // fragment row, column pair
  const int group = warp / S, part = warp % S;
  const int kbeg = blockIdx.y * KR, kend = min(K, kbeg + KR);
  const int n0 = blockIdx.x * ROWS + group * NT * 8;
  // Stage i of this warp starts at k = kbeg + (part + i·S)·32U.
  const int nst = (kend - kbeg + 32 * U - 1) / (32 * U);
  const int mine = nst > part ? (nst - part + S - 1) / S : 0;
  uint4 *ring = smem + warp * PF * STAGE;
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    if (p < mine) issue(ring + p * STAGE, x, w, n0, kbeg + (part + p * S) * 32 * U, kend, lane);
    cp_commit();
  }
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  int slot = 0;
  for (int i = 0; i < mine; i++) {
    // Refill the slot read last step; always commit a group (empty past
    // the end), so that all but the newest PF − 1 groups are this step's.
    // Lanes read each other's copies: the slot refilled here was read by
    // all lanes last step, and this step's copies land for all before use.
    const int nxt = i + PF - 1;
    __syncwarp();
    if (nxt < mine) issue(ring + (slot == 0 ? PF - 1 : slot - 1) * STAGE, x, w, n0, kbeg + (part + nxt * S) * 32 * U, kend, lane);
    cp_commit();
    cp_wait<PF - 1>();
    __syncwarp();
    const uint4 *st = ring + slot * STAGE;
    // Chunk u of lane (g, t) is piece 4u + t: k = 32u + 8t … +7 of its rows.
#pragma unroll
    for (int u = 0; u < U; u++) {
      const uint4 xa = st[at(NT * 8 + g, 4 * u + t)], xb = st[at(NT * 8 + g + 8, 4 * u + t)];
#pragma unroll
      for (int j = 0; j < NT; j++) {
        const uint4 wv = st[at(j * 8 + g, 4 * u + t)];
        mma(acc[j], xa.x, xb.x, xa.y, xb.y, wv.x, wv.y);
        mma(acc[j], xa.z, xb.z, xa.w, xb.w, wv.z, wv.w);
      }
    }
    slot = slot + 1 == PF ? 0 : slot + 1;
  }
  if (S > 1) {
    // The group's warps, summed in order through the (drained) ring.
    cp_wait<0>();
    __syncthreads();
    float *red = reinterpret_cast<float *>(smem);
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int i = 0; i < 4; i++) red[((warp * NT + j) * 4 + i) * 32 + lane] = acc[j][i];
    __syncthreads();
    if (part == 0) {
#pragma unroll
      for (int j = 0; j < NT; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
          float s = 0.f;
#pragma unroll
          for (int p = 0; p < S; p++) s += red[(((warp + p) * NT + j) * 4 + i) * 32 + lane];
          acc[j][i] = s;
        }
    }
  }
  // acc[j]: rows g and g+8, columns 2t and 2t+1 of tile j.
  if (part == 0) {
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int m = g + (i >> 1) * 8, n = n0 + j * 8 + 2 * t + (i & 1);
        if (m < M && n < N) {
          if (KB == 1) out[(size_t)m * N + n] = __float2bfloat16(acc[j][i]);
          else ws[((size_t)blockIdx.y * M + m) * N + n] = acc[j][i];
        }
      }
  }
  if (KB == 1) return;
  // The last K block of this n-range sums the partials.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(&count[blockIdx.x], 1u) == KB - 1;
    if (last) count[blockIdx.x] = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int i = threadIdx.x; i < M * ROWS; i += W * 32) {
    const int m = i / ROWS, n = blockIdx.x * ROWS + i % ROWS;
    if (n >= N) continue;
    float v = 0.f;
#pragma unroll 4
    for (int q = 0; q < KB; q++) v += __ldcg(ws + ((size_t)q * M + m) * N + n);
    out[(size_t)m * N + n] = __float2bfloat16(v);
  }
}

#include <mutex>
static cudaError_t workspace(size_t data, size_t zeroed, void **out) {
  static void *per_device[64];
  static std::mutex mu;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  if (dev < 0 || dev >= 64) return cudaErrorInvalidDevice;
  std::lock_guard<std::mutex> lock(mu);
  if (!per_device[dev]) {
    void *p = nullptr;
    if ((e = cudaMalloc(&p, data + zeroed)) != cudaSuccess) return e;
    if (zeroed && (e = cudaMemset((char *)p + data, 0, zeroed)) != cudaSuccess) return e;
    per_device[dev] = p;
  }
  *out = per_device[dev];
  return cudaSuccess;
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  (void)dims;
  static cudaError_t opt = cudaFuncSetAttribute(gemv_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM);
  if (opt != cudaSuccess) return (int)opt;
  const size_t nws = KB > 1 ? (size_t)KB * M * N : 0;
  float *scratch = nullptr;
  if (KB > 1) {
    cudaError_t e = workspace(sizeof(float) * nws, sizeof(unsigned) * NB, (void **)&scratch);
    if (e != cudaSuccess) return (int)e;
  }
  gemv_ring<<<dim3(NB, KB), W * 32, SMEM, cudaStreamLegacy>>>((const __nv_bfloat16 *)bufs[0],
      (const __nv_bfloat16 *)bufs[1], (__nv_bfloat16 *)bufs[2], scratch, scratch ? (unsigned *)(scratch + nws) : nullptr);
  return (int)cudaGetLastError();
}
