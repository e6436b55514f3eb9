#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// cuda_paged_attention/B=32,QH=32,KVH=8,D=128,BS=16,ctx=4096/bf16: warps=4 partition=0 heads_per_block=4 vec=16 unroll=2 prefetch=2 balance=0
constexpr int B = 32, QH = 32, KVH = 8, D = 128, BS = 16, MAXB = 256;
constexpr int GROUP = QH / KVH, HPB = 4, WARPS = 4, V = 16, U = 2;
constexpr bool PREFETCH = false;
constexpr int LPT = D / V;            // lanes per token
constexpr int CH = V == 16 ? 8 : V;   // elements per 16-byte load
constexpr int VEC16_STRIDE = D / 2;   // a lane's second half, with V = 16
constexpr int TPW = 32 / LPT;         // tokens per warp step
constexpr int NG = KVH * (GROUP / HPB);  // head groups (blocks) per sequence
constexpr int PART = 4096, NPART = 1;  // tokens per partition, partitions
// Balanced split (EVEN): the padded token space [B][NG][UPP units of
// WARPS·TPW·U tokens] cut into GRID chunks of CHUNK units, one per block.
constexpr bool EVEN = false;
constexpr int UPP = 1, CHUNK = 1, GRID = 1;
constexpr int NSLOT = 1;             // partial slots per (sequence, head)
constexpr size_t HALF = (size_t)8192 * BS * KVH * D;  // V's offset in the pool
constexpr float SCALE_LOG2 = 1.275174308e-01f;  // log2(e) / sqrt(D)
struct vec_t { uint4 a, b; }; // 16 bf16 = 32 bytes per load (two 16-byte loads)
__device__ __forceinline__ void unpack(const vec_t &p, float *f) {
  const uint32_t w[8] = {p.a.x, p.a.y, p.a.z, p.a.w, p.b.x, p.b.y, p.b.z, p.b.w};
#pragma unroll
  for (int i = 0; i < 8; i++) { f[2 * i] = bf_lo(w[i]); f[2 * i + 1] = bf_hi(w[i]); }
}
__device__ __forceinline__ vec_t ldv(const __nv_bfloat16 *p) {
  const uint4 *q = reinterpret_cast<const uint4 *>(p);
  return vec_t{__ldcs(q), __ldcs(q + VEC16_STRIDE / 8)};
}
constexpr int PF = 2;              // ring stages
constexpr int VW = V / 8;             // 16-byte pieces per lane and token
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"((unsigned)__cvta_generic_to_shared(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// issue_kv copies the keys and values of tokens t0 + u·WARPS·TPW (u < U)
// of this lane's dims into ring stage slot.
__device__ __forceinline__ void issue_kv(uint4 *ring, int slot, const __nv_bfloat16 *__restrict__ pool,
    const int *__restrict__ bt, int t0, int tend, int kvh, int d0) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int t = t0 + u * WARPS * TPW;
    if (t < tend) {
      const size_t off = (((size_t)bt[t / BS] * BS + t % BS) * KVH + kvh) * D + d0;
      uint4 *k = ring + (size_t)((slot * U + u) * 2) * VW * (WARPS * 32) + threadIdx.x;
#pragma unroll
      for (int p = 0; p < VW; p++) {
        cp_async16(k + p * (WARPS * 32), pool + off + p * VEC16_STRIDE);
        cp_async16(k + (VW + p) * (WARPS * 32), pool + HALF + off + p * VEC16_STRIDE);
      }
    }
  }
}

// lds_kv reads back this lane's keys (which = 0) or values (1) of token u.
__device__ __forceinline__ vec_t lds_kv(const uint4 *ring, int slot, int u, int which) {
  const uint4 *p = ring + (size_t)((slot * U + u) * 2 + which) * VW * (WARPS * 32) + threadIdx.x;
  return vec_t{p[0], p[WARPS * 32]};
}

// load_kv loads the keys and values of tokens t0 + u·WARPS·TPW (u < U)
// of this lane's dims; ok[u] says whether token u exists.
__device__ __forceinline__ void load_kv(const __nv_bfloat16 *__restrict__ pool, const int *__restrict__ bt, int t0,
    int tend, int kvh, int d0, vec_t (&kv)[U], vec_t (&vv)[U], bool (&ok)[U]) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int t = t0 + u * WARPS * TPW;
    ok[u] = t < tend;
    if (ok[u]) {
      const size_t off = (((size_t)bt[t / BS] * BS + t % BS) * KVH + kvh) * D + d0;
      kv[u] = ldv(pool + off);
      vv[u] = ldv(pool + HALF + off);
    }
  }
}

// segment attends head group x (a KV head and HPB of its query heads) of
// sequence b over tokens [tbeg, tend), and stores the result in out
// (whole) or as partial pslot of (sequence, head): max, sum and the
// unnormalised accumulator. Scores are kept in log2 units (exp2f).
__device__ __forceinline__ void segment(const __nv_bfloat16 *__restrict__ q,
    const __nv_bfloat16 *__restrict__ pool, const int *__restrict__ block_tables, __nv_bfloat16 *__restrict__ out,
    float *__restrict__ part_ml, float *__restrict__ part_acc, int b, int x, int tbeg, int tend, int pslot, bool whole) {
  const int kvh = x / (GROUP / HPB);
  const int h0 = kvh * GROUP + (x % (GROUP / HPB)) * HPB;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Lane dims: d0 + v for v < CH, and d0 + D/2 + v − CH above (V = 16).
  const int sub = lane / LPT, d0 = (lane % LPT) * CH;
  const int *bt = block_tables + (size_t)b * MAXB;

  float qf[HPB][V], m[HPB], l[HPB], acc[HPB][V];
#pragma unroll
  for (int h = 0; h < HPB; h++) {
    unpack(ldv(q + ((size_t)b * QH + h0 + h) * D + d0), qf[h]);
#pragma unroll
    for (int v = 0; v < V; v++) {
      qf[h][v] *= SCALE_LOG2;
      acc[h][v] = 0.f;
    }
    m[h] = -INFINITY;
    l[h] = 0.f;
  }
  // base is uniform across the warp, so every lane reaches every shuffle.
  // The U tokens of a step are loaded first (U loads in flight per lane),
  // scored, and folded into the online softmax with one rescale per step;
  // with PREFETCH the next step's loads are issued before this step's math.
  constexpr int STEP = WARPS * TPW * U;
  vec_t kv[U], vv[U];
  bool ok[U];
  extern __shared__ uint4 ring[];
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    issue_kv(ring, p, pool, bt, tbeg + warp * TPW + sub + p * STEP, tend, kvh, d0);
    cp_async_commit();
  }
  int slot = 0;
  for (int base = tbeg + warp * TPW; base < tend; base += STEP) {
    // Always commit a group (empty past the end), so that waiting for all
    // but the newest PF − 1 groups means this step's copies have landed;
    // each lane reads back only its own copies, so no barrier is needed.
    issue_kv(ring, slot == 0 ? PF - 1 : slot - 1, pool, bt, base + (PF - 1) * STEP + sub, tend, kvh, d0);
    cp_async_commit();
    cp_async_wait<PF - 1>();
#pragma unroll
    for (int u = 0; u < U; u++) {
      ok[u] = base + sub + u * WARPS * TPW < tend;
      kv[u] = lds_kv(ring, slot, u, 0);
      vv[u] = lds_kv(ring, slot, u, 1);
    }
    slot = slot + 1 == PF ? 0 : slot + 1;
    float s[U][HPB];
#pragma unroll
    for (int u = 0; u < U; u++) {
      float kf[V];
      if (ok[u]) {
        unpack(kv[u], kf);
      } else {
#pragma unroll
        for (int v = 0; v < V; v++) kf[v] = 0.f;
      }
#pragma unroll
      for (int h = 0; h < HPB; h++) {
        float d = 0.f;
#pragma unroll
        for (int v = 0; v < V; v++) d = fmaf(qf[h][v], kf[v], d);
#pragma unroll
        for (int o = LPT / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        s[u][h] = ok[u] ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < HPB; h++) {
      float mn = m[h];
#pragma unroll
      for (int u = 0; u < U; u++) mn = fmaxf(mn, s[u][h]);
      // Rescale only when the running max grows, which after the first
      // tokens is rare: the multiply of every accumulator is skipped.
      if (mn > m[h]) {
        const float c = exp2f(m[h] - mn);  // 0 while m is still -inf
        l[h] *= c;
#pragma unroll
        for (int v = 0; v < V; v++) acc[h][v] *= c;
        m[h] = mn;
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      if (!ok[u]) continue;
      float vf[V];
      unpack(vv[u], vf);
#pragma unroll
      for (int h = 0; h < HPB; h++) {
        const float p = exp2f(s[u][h] - m[h]);
        l[h] += p;
#pragma unroll
        for (int v = 0; v < V; v++) acc[h][v] = fmaf(p, vf[v], acc[h][v]);
      }
    }
  }
  // Merge the warp's token slots (lanes LPT apart hold the same dims).
#pragma unroll
  for (int o = LPT; o < 32; o <<= 1) {
#pragma unroll
    for (int h = 0; h < HPB; h++) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m[h], o);
      const float l2 = __shfl_xor_sync(0xffffffffu, l[h], o);
      const float mn = fmaxf(m[h], m2);
      const float c1 = mn == -INFINITY ? 0.f : exp2f(m[h] - mn);
      const float c2 = mn == -INFINITY ? 0.f : exp2f(m2 - mn);
      l[h] = l[h] * c1 + l2 * c2;
#pragma unroll
      for (int v = 0; v < V; v++) {
        const float a2 = __shfl_xor_sync(0xffffffffu, acc[h][v], o);
        acc[h][v] = acc[h][v] * c1 + a2 * c2;
      }
      m[h] = mn;
    }
  }
  // Merge the warps through shared memory.
  __shared__ float sm_m[WARPS][HPB], sm_l[WARPS][HPB], sm_acc[WARPS][HPB][D];
  if (sub == 0) {
#pragma unroll
    for (int h = 0; h < HPB; h++) {
#pragma unroll
      for (int v = 0; v < V; v++) sm_acc[warp][h][d0 + v % CH + (v / CH) * (D / 2)] = acc[h][v];
      if (lane == 0) {
        sm_m[warp][h] = m[h];
        sm_l[warp][h] = l[h];
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
  constexpr int UNIT = WARPS * TPW * U;  // tokens per unit (one step of the block)
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
