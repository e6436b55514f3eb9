#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// cuda_paged_attention/B=2,QH=32,KVH=8,D=128,BS=64,ctx=4096/bf16: warps=4 partition=256 heads_per_block=4 vec=8 unroll=1 prefetch=2 balance=0 mma=1
constexpr int B = 2, QH = 32, KVH = 8, D = 128, BS = 64, MAXB = 64;
constexpr int GROUP = QH / KVH, HPB = 4, WARPS = 4, V = 8, U = 1;
constexpr bool PREFETCH = false;
constexpr int LPT = D / V;            // lanes per token
constexpr int CH = V == 16 ? 8 : V;   // elements per 16-byte load
constexpr int VEC16_STRIDE = D / 2;   // a lane's second half, with V = 16
constexpr int TPW = 32 / LPT;         // tokens per warp step
constexpr int NG = KVH * (GROUP / HPB);  // head groups (blocks) per sequence
constexpr int PART = 256, NPART = 16;  // tokens per partition, partitions
// Balanced split (EVEN): the padded token space [B][NG][UPP units of
// WARPS·TPW·U tokens] cut into GRID chunks of CHUNK units, one per block.
constexpr bool EVEN = false;
constexpr int UPP = 1, CHUNK = 1, GRID = 1;
constexpr int UNIT = 32;              // tokens per block step
constexpr int NSLOT = 16;             // partial slots per (sequence, head)
constexpr size_t HALF = (size_t)128 * BS * KVH * D;  // V's offset in the pool
constexpr float SCALE_LOG2 = 1.275174308e-01f;  // log2(e) / sqrt(D)
constexpr int PF = 2, TW = 8;        // ring stages, tokens per warp step

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
constexpr int TILE = TW * D * 2;      // bytes of one K (or V) tile
constexpr int WSTAGE = 2 * TILE;      // a warp's stage: K then V
static_assert(HPB <= 16 && D % 32 == 0 && 32 % CPR == 0 && (TW == 8 || TW == 16), "mma shape");
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

// issue_rows copies the K and V rows of tokens base … base + TW − 1 into
// the warp's stage at shared address st (zero-filled from tend on). base
// is a multiple of TW (segments start at multiples of the block step), so
// with BS % TW == 0 the step's rows lie in one page: one table read.
__device__ __forceinline__ void issue_rows(uint32_t st, const __nv_bfloat16 *__restrict__ pool,
    const int *__restrict__ bt, int base, int tend, int kvh, int lane) {
  const int c = lane % CPR, r0 = lane / CPR;
  size_t row0 = 0;
  if (BS % TW == 0 && base < tend) row0 = ((size_t)__ldg(bt + base / BS) * BS + base % BS) * KVH + kvh;
#pragma unroll
  for (int i = 0; i < TW / RPI; i++) {
    const int r = r0 + i * RPI, t = base + r;
    const bool ok = t < tend;
    size_t off = 0;
    if (ok) {
      off = BS % TW == 0 ? (row0 + (size_t)r * KVH) * D + c * 8
                         : (((size_t)__ldg(bt + t / BS) * BS + t % BS) * KVH + kvh) * D + c * 8;
    }
    const uint32_t dst = st + swz(r, c);
    cp_async16(dst, pool + off, ok ? 16 : 0);
    cp_async16(dst + TILE, pool + HALF + off, ok ? 16 : 0);
  }
}

// segment attends head group x (a KV head and HPB of its query heads) of
// sequence b over tokens [tbeg, tend), and stores the result in out
// (whole) or as partial pslot of (sequence, head): max, sum and the
// unnormalised accumulator. Scores are kept in log2 units (exp2f). Lane
// 4g + t holds query heads h0 + g (C elements 0, 1) and h0 + g + 8 (2, 3).
__device__ __forceinline__ void segment(const __nv_bfloat16 *__restrict__ q,
    const __nv_bfloat16 *__restrict__ pool, const int *__restrict__ block_tables, __nv_bfloat16 *__restrict__ out,
    float *__restrict__ part_ml, float *__restrict__ part_acc, int b, int x, int tbeg, int tend, int pslot, bool whole) {
  const int kvh = x / (GROUP / HPB);
  const int h0 = kvh * GROUP + (x % (GROUP / HPB)) * HPB;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int *bt = block_tables + (size_t)b * MAXB;
  extern __shared__ uint4 ring[];
  const uint32_t wbase = (uint32_t)__cvta_generic_to_shared(ring) + warp * WSTAGE;
  constexpr uint32_t SLOT = WARPS * WSTAGE;  // bytes between a warp's stages
  // Q as the A operand (rows past HPB are zero).
  uint32_t qa[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    const __nv_bfloat16 *r0 = q + ((size_t)b * QH + h0 + g) * D + kk * 16 + 2 * t4;
    const __nv_bfloat16 *r1 = r0 + 8 * D;
    qa[kk][0] = g < HPB ? *reinterpret_cast<const uint32_t *>(r0) : 0u;
    qa[kk][1] = g + 8 < HPB ? *reinterpret_cast<const uint32_t *>(r1) : 0u;
    qa[kk][2] = g < HPB ? *reinterpret_cast<const uint32_t *>(r0 + 8) : 0u;
    qa[kk][3] = g + 8 < HPB ? *reinterpret_cast<const uint32_t *>(r1 + 8) : 0u;
  }
  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  const int base0 = tbeg + warp * TW;
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    issue_rows(wbase + p * SLOT, pool, bt, base0 + p * UNIT, tend, kvh, lane);
    cp_async_commit();
  }
  int slot = 0;
  for (int base = base0; base < tend; base += UNIT) {
    // Every lane is done reading the stage refilled next; always commit a
    // group (empty past the end), so that waiting for all but the newest
    // PF − 1 means this step's rows have landed; then the other lanes'
    // copies are made visible.
    __syncwarp();
    issue_rows(wbase + (slot == 0 ? PF - 1 : slot - 1) * SLOT, pool, bt, base + (PF - 1) * UNIT, tend, kvh, lane);
    cp_async_commit();
    cp_async_wait<PF - 1>();
    __syncwarp();
    const uint32_t kb = wbase + slot * SLOT, vb = kb + TILE;
    slot = slot + 1 == PF ? 0 : slot + 1;
    // S = Q·Kᵀ: n-tile j is tokens 8j … 8j + 7; one ldmatrix.x4 gives the
    // B fragments of two k-steps (rows 8j + lane%8, chunks 4kk + lane/8),
    // summed in two chains (even and odd k-steps) to halve the latency.
    float s[TW / 8][4];
#pragma unroll
    for (int j = 0; j < TW / 8; j++) {
      float s2[4] = {0.f, 0.f, 0.f, 0.f};
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 32; kk++) {
        uint32_t r[4];
        ldmatrix_x4(r, kb + swz(j * 8 + lane % 8, 4 * kk + lane / 8));
        mma(s[j], qa[2 * kk], r);
        mma(s2, qa[2 * kk + 1], r + 2);
      }
#pragma unroll
      for (int e = 0; e < 4; e++) s[j][e] += s2[e];
    }
    // Online softmax of rows g (elements 0, 1) and g + 8 (2, 3): a row's
    // tokens are spread over the 4 lanes of a quad. Only the last step of
    // a segment can hold tokens past its end.
    float mx0 = m0, mx1 = m1;
    const bool whole_step = base + TW <= tend;
#pragma unroll
    for (int j = 0; j < TW / 8; j++) {
#pragma unroll
      for (int e = 0; e < 4; e++)
        s[j][e] = whole_step || base + j * 8 + 2 * t4 + (e & 1) < tend ? s[j][e] * SCALE_LOG2 : -INFINITY;
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    if (HPB > 8) {
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    }
    // Token base exists, so the maxima are finite from the first step;
    // the accumulators are rescaled only when a maximum grows.
    if (mx0 > m0) {
      const float c = ex2(m0 - mx0);
      l0 *= c;
#pragma unroll
      for (int n = 0; n < D / 8; n++) acc[n][0] *= c, acc[n][1] *= c;
      m0 = mx0;
    }
    if (HPB > 8 && mx1 > m1) {
      const float c = ex2(m1 - mx1);
      l1 *= c;
#pragma unroll
      for (int n = 0; n < D / 8; n++) acc[n][2] *= c, acc[n][3] *= c;
      m1 = mx1;
    }
    // P as the A operand: n-tiles 2kt and 2kt + 1 of S are k-tile kt.
    uint32_t pa[(TW + 15) / 16][4];
#pragma unroll
    for (int j = 0; j < TW / 8; j++) {
      const uint32_t lo = pack_bf16(ex2(s[j][0] - m0), ex2(s[j][1] - m0));
      const uint32_t hi = HPB > 8 ? pack_bf16(ex2(s[j][2] - m1), ex2(s[j][3] - m1)) : 0u;
      l0 += bf_lo(lo) + bf_hi(lo);
      if (HPB > 8) l1 += bf_lo(hi) + bf_hi(hi);
      pa[j / 2][(j & 1) * 2] = lo;
      pa[j / 2][(j & 1) * 2 + 1] = hi;
    }
    // O += P·V: V rows are k, dims are n (ldmatrix.trans).
    if (TW == 8) {
#pragma unroll
      for (int nq = 0; nq < D / 32; nq++) {
        uint32_t r[4];
        ldsm_x4_t(r, vb + swz(lane % 8, 4 * nq + lane / 8));
#pragma unroll
        for (int i = 0; i < 4; i++) mma1688(acc[4 * nq + i], pa[0][0], pa[0][1], r[i]);
      }
    } else {
#pragma unroll
      for (int nd = 0; nd < D / 16; nd++) {
        uint32_t r[4];
        ldsm_x4_t(r, vb + swz(lane % 16, 2 * nd + lane / 16));
        mma(acc[2 * nd], pa[0], r);
        mma(acc[2 * nd + 1], pa[0], r + 2);
      }
    }
  }
  // The empty groups past the end are drained before the ring is reused.
  cp_async_wait<0>();
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  // The warps' partials through shared memory.
  __shared__ float sm_m[WARPS][HPB], sm_l[WARPS][HPB], sm_acc[WARPS][HPB][D];
#pragma unroll
  for (int half = 0; half < 2; half++) {
    const int h = g + 8 * half;
    if (h < HPB) {
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        sm_acc[warp][h][n * 8 + 2 * t4] = acc[n][2 * half];
        sm_acc[warp][h][n * 8 + 2 * t4 + 1] = acc[n][2 * half + 1];
      }
      if (t4 == 0) {
        sm_m[warp][h] = half ? m1 : m0;
        sm_l[warp][h] = half ? l1 : l0;
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < HPB * D; i += WARPS * 32) {
    const int h = i / D, d = i % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; w++) mx = fmaxf(mx, sm_m[w][h]);
    float sum = 0.f, a = 0.f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < WARPS; w++) {
        const float c = exp2f(sm_m[w][h] - mx);
        sum += sm_l[w][h] * c;
        a += sm_acc[w][h][d] * c;
      }
    }
    const size_t row = (size_t)b * QH + h0 + h;
    if (whole) {
      out[row * D + d] = __float2bfloat16(sum > 0.f ? a / sum : 0.f);
    } else {
      const size_t pr = row * NSLOT + pslot;
      part_acc[pr * D + d] = a;
      if (d == 0) {
        part_ml[2 * pr] = mx;
        part_ml[2 * pr + 1] = sum;
      }
    }
  }
}

// finish is called by each of the n blocks holding a partial of head
// group x of sequence b once it is stored: the last to arrive merges
// slots 0 … n−1 in order (the result does not depend on which block is
// last) and resets the counter for the next launch, so no second kernel
// (and no launch gap) merges them.
__device__ __forceinline__ void finish(const float *__restrict__ part_ml, const float *__restrict__ part_acc,
    unsigned *__restrict__ count, __nv_bfloat16 *__restrict__ out, int b, int x, int n) {
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned *c = count + (size_t)b * NG + x;
    last = atomicAdd(c, 1u) == (unsigned)n - 1;
    if (last) *c = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int h0 = (x / (GROUP / HPB)) * GROUP + (x % (GROUP / HPB)) * HPB;
  for (int i = threadIdx.x; i < HPB * D; i += WARPS * 32) {
    const int h = i / D, d = i % D;
    const size_t row = (size_t)b * QH + h0 + h;
    float mx = -INFINITY;
    for (int p = 0; p < n; p++) mx = fmaxf(mx, __ldcg(part_ml + 2 * (row * NSLOT + p)));
    float sum = 0.f, a = 0.f;
    if (mx != -INFINITY) {
      for (int p = 0; p < n; p++) {
        const size_t pr = row * NSLOT + p;
        const float c = exp2f(__ldcg(part_ml + 2 * pr) - mx);
        sum += __ldcg(part_ml + 2 * pr + 1) * c;
        a += __ldcg(part_acc + pr * D + d) * c;
      }
    }
    out[row * D + d] = __float2bfloat16(sum > 0.f ? a / sum : 0.f);
  }
}

// Without EVEN one block is head group blockIdx.x of sequence blockIdx.y,
// partition blockIdx.z: the heads vary fastest, so that the blocks of one
// sequence run together and read its pages (all heads of a token are
// contiguous) together. With EVEN block i takes units [i·CHUNK, (i+1)·CHUNK)
// of the padded token space in order: every block streams the same number
// of tokens in at most a few segments, whatever the number of (sequence,
// head) pairs per SM, but the blocks of one sequence no longer read the
// same tokens at the same time.
__global__ void __launch_bounds__(WARPS * 32) attn(const __nv_bfloat16 *__restrict__ q,
    const __nv_bfloat16 *__restrict__ pool, const int *__restrict__ block_tables,
    const int *__restrict__ context_lens, __nv_bfloat16 *__restrict__ out,
    float *__restrict__ part_ml, float *__restrict__ part_acc, unsigned *__restrict__ count) {
  if (!EVEN) {
    const int b = blockIdx.y, tbeg = blockIdx.z * PART;
    segment(q, pool, block_tables, out, part_ml, part_acc, b, blockIdx.x, tbeg, min(context_lens[b], tbeg + PART),
        blockIdx.z, NPART == 1);
    if (NPART > 1) finish(part_ml, part_acc, count, out, b, blockIdx.x, NPART);
    return;
  }
  const int u1 = min(B * NG * UPP, (int)(blockIdx.x + 1) * CHUNK);
  for (int u = blockIdx.x * CHUNK; u < u1;) {
    const int pair = u / UPP, b = pair / NG, x = pair % NG;
    const int ue = min(u1, (pair + 1) * UPP);
    // The blocks sharing this pair: first … first + n − 1.
    const int first = pair * UPP / CHUNK, n = ((pair + 1) * UPP - 1) / CHUNK - first + 1;
    const int ctx = context_lens[b];
    segment(q, pool, block_tables, out, part_ml, part_acc, b, x, (u - pair * UPP) * UNIT,
        min(ctx, (ue - pair * UPP) * UNIT), blockIdx.x - first, n == 1);
    if (n > 1) finish(part_ml, part_acc, count, out, b, x, n);
    __syncthreads();  // the next segment reuses the merge buffers
    u = ue;
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
  // Partition results: (max, sum) pairs, then accumulators, then a zeroed
  // counter per (sequence, head group).
  const size_t nws = NSLOT > 1 ? (size_t)B * QH * NSLOT * (D + 2) : 0;
  float *scratch = nullptr;
  if (NSLOT > 1) {
    cudaError_t e = workspace(sizeof(float) * nws, sizeof(unsigned) * B * NG, (void **)&scratch);
    if (e != cudaSuccess) return (int)e;
  }
  float *ml = scratch, *pacc = scratch ? scratch + (size_t)2 * B * QH * NSLOT : nullptr;
  const dim3 grid = EVEN ? dim3(GRID) : dim3(NG, B, NPART);
  static cudaError_t opt = cudaFuncSetAttribute(attn, cudaFuncAttributeMaxDynamicSharedMemorySize, 32768);
  if (opt != cudaSuccess) return (int)opt;
  attn<<<grid, WARPS * 32, 32768, cudaStreamLegacy>>>((const __nv_bfloat16 *)bufs[0],
      (const __nv_bfloat16 *)bufs[1], (const int *)bufs[2], (const int *)bufs[3], (__nv_bfloat16 *)bufs[4], ml, pacc,
      scratch ? (unsigned *)(scratch + nws) : nullptr);
  return (int)cudaGetLastError();
}
