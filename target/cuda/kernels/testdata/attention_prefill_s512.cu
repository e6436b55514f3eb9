#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// cuda_attention/B=1,S=512,HQ=32,HKV=8,D=128/causal/bf16: warps=4 keys=64 stages=2 rows_per_warp=16
constexpr int B = 1, S = 512, QH = 32, KVH = 8, D = 128;
constexpr int GROUP = QH / KVH;
constexpr int WARPS = 4, MT = 1, BQ = 64, BK = 64, PF = 2;  // warps, m-tiles per warp, query rows, keys per tile, ring stages
constexpr int QTILES = 8;            // query tiles per (sequence, head)
constexpr float SCALE_LOG2 = 1.275174308e-01f;  // log2(e) / sqrt(D)

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


constexpr int CPR = D / 8;            // 16-byte chunks per token row
constexpr int RPI = 32 / CPR;         // rows a warp copies per instruction
constexpr int SWZ = CPR % 8 == 0 ? 7 : CPR % 4 == 0 ? 3 : 1;
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void mma1688(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(b0));
}
// ex2 is 2^x (x ≤ 0 here: a result below 2^-126 is 0 either way).
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
// pack_bf16 rounds two floats to a bf16 pair (lo in the low half).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// swz is the byte offset of (row r, chunk c) in a tile.
__device__ __forceinline__ uint32_t swz(int r, int c) { return (uint32_t)(r * CPR + (c ^ (r & SWZ))) * 16; }
constexpr int TILE = BK * D * 2;      // bytes of one K (or V) tile
constexpr int STAGE = 2 * TILE;       // a ring stage: K then V
constexpr int NT = WARPS * 32;
constexpr bool QREG = MT == 1;        // Q fragments in registers (else in shared memory after the ring)
static_assert(D % 32 == 0 && BK % 16 == 0 && (MT == 1 || MT == 2), "mma shape");

// issue_tile copies keys kbase … kbase + BK − 1 of K and V (KV head kvh of
// sequence b) into the stage at shared address st, 16 bytes per copy,
// zero-filled past the prompt.
__device__ __forceinline__ void issue_tile(uint32_t st, const __nv_bfloat16 *__restrict__ k,
    const __nv_bfloat16 *__restrict__ v, int b, int kvh, int kbase) {
#pragma unroll
  for (int i = 0; i < (BK * CPR + NT - 1) / NT; i++) {
    const int idx = threadIdx.x + i * NT;
    if (BK * CPR % NT == 0 || idx < BK * CPR) {
      const int r = idx / CPR, c = idx % CPR, t = kbase + r;
      const bool ok = t < S;
      const size_t off = ok ? (((size_t)b * S + t) * KVH + kvh) * D + c * 8 : 0;
      const uint32_t dst = st + swz(r, c);
      cp_async16(dst, k + off, ok ? 16 : 0);
      cp_async16(dst + TILE, v + off, ok ? 16 : 0);
    }
  }
}

// Block (h, tile, b): query rows q0 … q0 + BQ − 1 of head h of sequence b,
// warp w rows q0 + 16·MT·w …, m-tile mt its 16 rows from 16·mt. Lane 4g + t
// holds rows g (C elements 0, 1) and g + 8 (2, 3) of each m-tile. Scores
// are in log2 units (exp2).
__global__ void __launch_bounds__(NT) attn(const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k,
    const __nv_bfloat16 *__restrict__ v, __nv_bfloat16 *__restrict__ out) {
  const int h = blockIdx.x, b = blockIdx.z, kvh = h / GROUP;
  const int q0 = (QTILES - 1 - (int)blockIdx.y) * BQ;  // heaviest tiles first
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int wfirst = q0 + warp * 16 * MT;             // the warp's first row
  extern __shared__ uint4 ring[];
  const uint32_t rbase = smem_addr(ring), qs = rbase + PF * STAGE;
  // Keys 0 … last (the block's last query row in the prompt): ntiles tiles.
  const int last = min(q0 + BQ, S) - 1;
  const int ntiles = last / BK + 1;
  if (!QREG) {
    // The block's Q rows into shared memory, with tile 0's group.
#pragma unroll
    for (int i = 0; i < (BQ * CPR + NT - 1) / NT; i++) {
      const int idx = threadIdx.x + i * NT;
      if (BQ * CPR % NT == 0 || idx < BQ * CPR) {
        const int r = idx / CPR, c = idx % CPR, row = q0 + r;
        const bool ok = row < S;
        cp_async16(qs + swz(r, c), q + (ok ? (((size_t)b * S + row) * QH + h) * D + c * 8 : 0), ok ? 16 : 0);
      }
    }
  }
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    if (p < ntiles) issue_tile(rbase + p * STAGE, k, v, b, kvh, p * BK);
    cp_async_commit();
  }
  // With QREG, Q as the A operand in registers (rows past the prompt zero).
  uint32_t qa[QREG ? D / 16 : 1][4];
  if (QREG) {
    const int r0 = wfirst + g, r1 = r0 + 8;
    const __nv_bfloat16 *p0 = q + (((size_t)b * S + min(r0, S - 1)) * QH + h) * D + 2 * t4;
    const __nv_bfloat16 *p1 = q + (((size_t)b * S + min(r1, S - 1)) * QH + h) * D + 2 * t4;
#pragma unroll
    for (int kk = 0; kk < (QREG ? D / 16 : 0); kk++) {
      qa[kk][0] = r0 < S ? *reinterpret_cast<const uint32_t *>(p0 + kk * 16) : 0u;
      qa[kk][1] = r1 < S ? *reinterpret_cast<const uint32_t *>(p1 + kk * 16) : 0u;
      qa[kk][2] = r0 < S ? *reinterpret_cast<const uint32_t *>(p0 + kk * 16 + 8) : 0u;
      qa[kk][3] = r1 < S ? *reinterpret_cast<const uint32_t *>(p1 + kk * 16 + 8) : 0u;
    }
  }
  float acc[MT][D / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int n = 0; n < D / 8; n++) acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.f;
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;
  for (int it = 0; it < ntiles; it++) {
    // Tile it has landed (the groups after it may still be in flight) for
    // every thread, and every warp is done with the stage refilled next
    // (tile it − 1's); always commit a group, empty past the end.
    cp_async_wait<PF - 2>();
    __syncthreads();
    if (it + PF - 1 < ntiles) issue_tile(rbase + ((it + PF - 1) % PF) * STAGE, k, v, b, kvh, (it + PF - 1) * BK);
    cp_async_commit();
    const int kbase = it * BK;
    // Keys after all of the warp's rows: nothing to add (key 0, in tile
    // 0, is seen by every row, so the maxima are finite from there on).
    if (kbase > wfirst + 16 * MT - 1) continue;
    const uint32_t kb = rbase + (it % PF) * STAGE, vb = kb + TILE;
    // S = Q·Kᵀ: n-tile j is keys 8j … 8j + 7; one ldmatrix.x4 gives the
    // B fragments of two k-steps, summed in two chains.
    float s[MT][BK / 8][4];
#pragma unroll
    for (int j = 0; j < BK / 8; j++) {
      float s2[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[mt][j][e] = s2[mt][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 32; kk++) {
        uint32_t r[4];
        ldmatrix_x4(r, kb + swz(j * 8 + lane % 8, 4 * kk + lane / 8));
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          if (QREG) {
            mma(s[mt][j], qa[(2 * kk) % (QREG ? D / 16 : 1)], r);
            mma(s2[mt], qa[(2 * kk + 1) % (QREG ? D / 16 : 1)], r + 2);
          } else {
            const int row = warp * 16 * MT + mt * 16 + lane % 16;
            uint32_t a0[4], a1[4];
            ldmatrix_x4(a0, qs + swz(row, 4 * kk + lane / 16));
            ldmatrix_x4(a1, qs + swz(row, 4 * kk + 2 + lane / 16));
            mma(s[mt][j], a0, r);
            mma(s2[mt], a1, r + 2);
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[mt][j][e] += s2[mt][e];
    }
    // The causal mask, on tiles whose last key follows the warp's first
    // row (keys past the prompt follow every row that is stored).
    const bool diag = kbase + BK - 1 > wfirst;
    uint32_t pa[MT][BK / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      const int r0 = wfirst + 16 * mt + g, r1 = r0 + 8;
      float mx0 = m[mt][0], mx1 = m[mt][1];
#pragma unroll
      for (int j = 0; j < BK / 8; j++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int key = kbase + j * 8 + 2 * t4 + (e & 1);
          s[mt][j][e] = !diag || key <= (e < 2 ? r0 : r1) ? s[mt][j][e] * SCALE_LOG2 : -INFINITY;
        }
        mx0 = fmaxf(mx0, fmaxf(s[mt][j][0], s[mt][j][1]));
        mx1 = fmaxf(mx1, fmaxf(s[mt][j][2], s[mt][j][3]));
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      // Rescale only when a maximum grows (0 · acc while it is still -inf).
      if (mx0 > m[mt][0]) {
        const float c = ex2(m[mt][0] - mx0);
        l[mt][0] *= c;
#pragma unroll
        for (int n = 0; n < D / 8; n++) acc[mt][n][0] *= c, acc[mt][n][1] *= c;
        m[mt][0] = mx0;
      }
      if (mx1 > m[mt][1]) {
        const float c = ex2(m[mt][1] - mx1);
        l[mt][1] *= c;
#pragma unroll
        for (int n = 0; n < D / 8; n++) acc[mt][n][2] *= c, acc[mt][n][3] *= c;
        m[mt][1] = mx1;
      }
      // P as the A operand: n-tiles 2kt and 2kt + 1 of S are k-tile kt; l
      // sums the bf16-rounded values the product uses.
#pragma unroll
      for (int j = 0; j < BK / 8; j++) {
        const uint32_t lo = pack_bf16(ex2(s[mt][j][0] - m[mt][0]), ex2(s[mt][j][1] - m[mt][0]));
        const uint32_t hi = pack_bf16(ex2(s[mt][j][2] - m[mt][1]), ex2(s[mt][j][3] - m[mt][1]));
        l[mt][0] += bf_lo(lo) + bf_hi(lo);
        l[mt][1] += bf_lo(hi) + bf_hi(hi);
        pa[mt][j / 2][(j & 1) * 2] = lo;
        pa[mt][j / 2][(j & 1) * 2 + 1] = hi;
      }
    }
    // O += P·V: V rows are k, dims are n (ldmatrix.trans).
#pragma unroll
    for (int kt = 0; kt < BK / 16; kt++) {
#pragma unroll
      for (int nd = 0; nd < D / 16; nd++) {
        uint32_t r[4];
        ldsm_x4_t(r, vb + swz(16 * kt + lane % 16, 2 * nd + lane / 16));
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma(acc[mt][2 * nd], pa[mt][kt], r);
          mma(acc[mt][2 * nd + 1], pa[mt][kt], r + 2);
        }
      }
    }
  }
  cp_async_wait<0>();
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    float l0 = l[mt][0], l1 = l[mt][1];
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.f / l0, i1 = 1.f / l1;
    const int r0 = wfirst + 16 * mt + g, r1 = r0 + 8;
#pragma unroll
    for (int n = 0; n < D / 8; n++) {
      if (r0 < S)
        *reinterpret_cast<uint32_t *>(out + (((size_t)b * S + r0) * QH + h) * D + n * 8 + 2 * t4) =
            pack_bf16(acc[mt][n][0] * i0, acc[mt][n][1] * i0);
      if (r1 < S)
        *reinterpret_cast<uint32_t *>(out + (((size_t)b * S + r1) * QH + h) * D + n * 8 + 2 * t4) =
            pack_bf16(acc[mt][n][2] * i1, acc[mt][n][3] * i1);
    }
  }
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  (void)dims;
  static cudaError_t opt = cudaFuncSetAttribute(attn, cudaFuncAttributeMaxDynamicSharedMemorySize, 65536);
  if (opt != cudaSuccess) return (int)opt;
  attn<<<dim3(QH, QTILES, B), NT, 65536, cudaStreamLegacy>>>((const __nv_bfloat16 *)bufs[0],
      (const __nv_bfloat16 *)bufs[1], (const __nv_bfloat16 *)bufs[2], (__nv_bfloat16 *)bufs[3]);
  return (int)cudaGetLastError();
}
