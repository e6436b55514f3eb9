// Paged decode attention probe (B=32, QH=32, KVH=8, D=128, ctx 4096):
// today's kernel (cudakernels.PagedAttention's default, restated with its
// merge simplified) plus structural variants, selected with -D knobs and
// compiled once per variant into a .so exporting llmir_kernel; probe_main.cu
// times them side by side (run.sh builds and runs the lot). Results of the
// H100 runs are in PagedAttention.Default's comment.
//   BSZ    KV block size
//   ROW    0: block per (KV head, sequence) (the generator's grid); 1: block
//          per (partition, sequence) whose warp w is KV head w (whole 2 KB
//          token rows per step), NP partitions merged by the last block
//   CL     cluster size over the KV heads of a sequence (ROW=0; 0: none)
//   HINT   cp.async L2 prefetch size (0, 64, 128, 256); EVF: L2 evict-first
//   BPF    ROW=1: bulk L2 prefetch of whole rows BPF steps ahead (0: off)
//   EARLY  issue the first copies before loading q
//   PFS    ring stages; UU unroll; MINB launch-bounds min blocks per SM
//   VV     dims per lane (16 or 8); WW warps (ROW=0)
//   STREAM the same copies with no math (diagnostic: the output is wrong)
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>
#ifndef BSZ
#define BSZ 16
#endif
#ifndef ROW
#define ROW 0
#endif
#ifndef NP
#define NP 1
#endif
#ifndef CL
#define CL 0
#endif
#ifndef HINT
#define HINT 0
#endif
#ifndef BPF
#define BPF 0
#endif
#ifndef EARLY
#define EARLY 0
#endif
#ifndef PFS
#define PFS 2
#endif
#ifndef UU
#define UU 2
#endif
#ifndef MINB
#define MINB 1
#endif
#ifndef VV
#define VV 16
#endif
#ifndef WW
#define WW 4
#endif
#ifndef STREAM
#define STREAM 0
#endif
#ifndef EVF
#define EVF 0
#endif
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }
constexpr int B = 32, QH = 32, KVH = 8, D = 128, BS = BSZ, CTX = 4096, MAXB = (CTX + BS - 1) / BS;
constexpr int GROUP = QH / KVH, HPB = GROUP, WARPS = ROW ? KVH : WW, V = VV, U = UU;
constexpr int LPT = D / V, CH = V == 16 ? 8 : V, VEC16_STRIDE = D / 2, TPW = 32 / LPT;
constexpr int PF = PFS, VW = V / 8;
constexpr size_t HALF = (size_t)B * MAXB * BS * KVH * D;
constexpr float SCALE_LOG2 = 1.275174308e-01f;
// Token u of a warp step: base + sub + u * USTRIDE; the step advances STEP.
constexpr int USTRIDE = ROW ? TPW : WARPS * TPW;
constexpr int STEP = USTRIDE * U;
constexpr int PART = ROW ? ((CTX + NP - 1) / NP + STEP - 1) / STEP * STEP : CTX;
#if VV == 16
struct vec_t { uint4 a, b; };
__device__ __forceinline__ void unpack(const vec_t &p, float *f) {
  const uint32_t w[8] = {p.a.x, p.a.y, p.a.z, p.a.w, p.b.x, p.b.y, p.b.z, p.b.w};
#pragma unroll
  for (int i = 0; i < 8; i++) { f[2 * i] = bf_lo(w[i]); f[2 * i + 1] = bf_hi(w[i]); }
}
__device__ __forceinline__ vec_t ldv(const __nv_bfloat16 *p) {
  const uint4 *q = reinterpret_cast<const uint4 *>(p);
  return vec_t{__ldcs(q), __ldcs(q + VEC16_STRIDE / 8)};
}
__device__ __forceinline__ uint32_t word0(const vec_t &p) { return p.a.x ^ p.b.y; }
#else
typedef uint4 vec_t;
__device__ __forceinline__ void unpack(const vec_t &p, float *f) {
  const uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
  for (int i = 0; i < 4; i++) { f[2 * i] = bf_lo(w[i]); f[2 * i + 1] = bf_hi(w[i]); }
}
__device__ __forceinline__ vec_t ldv(const __nv_bfloat16 *p) { return __ldcs(reinterpret_cast<const uint4 *>(p)); }
__device__ __forceinline__ uint32_t word0(const vec_t &p) { return p.x ^ p.y; }
#endif
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
#if EVF
  uint64_t pol;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(smem)), "l"(gmem), "l"(pol));
#elif HINT == 256
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;\n" ::"r"((unsigned)__cvta_generic_to_shared(smem)), "l"(gmem));
#elif HINT == 128
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16;\n" ::"r"((unsigned)__cvta_generic_to_shared(smem)), "l"(gmem));
#elif HINT == 64
  asm volatile("cp.async.cg.shared.global.L2::64B [%0], [%1], 16;\n" ::"r"((unsigned)__cvta_generic_to_shared(smem)), "l"(gmem));
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"((unsigned)__cvta_generic_to_shared(smem)), "l"(gmem));
#endif
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
__device__ __forceinline__ void bulk_prefetch(const void *p, unsigned bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
}

__device__ __forceinline__ void issue_kv(uint4 *ring, int slot, const __nv_bfloat16 *__restrict__ pool,
    const int *__restrict__ bt, int t0, int tend, int kvh, int d0) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int t = t0 + u * USTRIDE;
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
__device__ __forceinline__ vec_t lds_kv(const uint4 *ring, int slot, int u, int which) {
  const uint4 *p = ring + (size_t)((slot * U + u) * 2 + which) * VW * (WARPS * 32) + threadIdx.x;
#if VV == 16
  return vec_t{p[0], p[WARPS * 32]};
#else
  return p[0];
#endif
}

// attend runs one warp over its tokens of [tbeg, tend) for KV head kvh and
// its GROUP query heads, leaving lanes sub == 0 with the warp's (m, l, acc).
__device__ __forceinline__ void attend(const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ pool,
    const int *__restrict__ bt, int b, int kvh, int base0, int tend, float (&m)[HPB], float (&l)[HPB],
    float (&acc)[HPB][V]) {
  const int lane = threadIdx.x % 32;
  const int sub = lane / LPT, d0 = (lane % LPT) * CH;
  const int h0 = kvh * GROUP;
  extern __shared__ uint4 ring[];
  float qf[HPB][V];
#if EARLY
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    issue_kv(ring, p, pool, bt, base0 + sub + p * STEP, tend, kvh, d0);
    cp_async_commit();
  }
#endif
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
#if !EARLY
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    issue_kv(ring, p, pool, bt, base0 + sub + p * STEP, tend, kvh, d0);
    cp_async_commit();
  }
#endif
  vec_t kv[U], vv[U];
  bool ok[U];
  int slot = 0;
  for (int base = base0; base < tend; base += STEP) {
#if ROW && BPF > 0
    // One thread per block prefetches whole rows (all KV heads) BPF steps ahead.
    if (threadIdx.x == 0) {
      const int t = base + BPF * STEP;
      if (t < tend) {
        const size_t off = ((size_t)bt[t / BS] * BS + t % BS) * KVH * D;
        const unsigned n = (unsigned)(min(STEP, tend - t) * KVH * D * 2);
        bulk_prefetch(pool + off, n);
        bulk_prefetch(pool + HALF + off, n);
      }
    }
#endif
    issue_kv(ring, slot == 0 ? PF - 1 : slot - 1, pool, bt, base + (PF - 1) * STEP + sub, tend, kvh, d0);
    cp_async_commit();
    cp_async_wait<PF - 1>();
#pragma unroll
    for (int u = 0; u < U; u++) {
      ok[u] = base + sub + u * USTRIDE < tend;
      kv[u] = lds_kv(ring, slot, u, 0);
      vv[u] = lds_kv(ring, slot, u, 1);
    }
    slot = slot + 1 == PF ? 0 : slot + 1;
#if STREAM
    // Diagnostic: the same copies with no math (the result is garbage).
#pragma unroll
    for (int u = 0; u < U; u++)
      if (ok[u]) acc[0][0] += __uint_as_float((word0(kv[u]) ^ word0(vv[u])) & 0x3f7fffffu);
    continue;
#endif
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
      if (mn > m[h]) {
        const float c = exp2f(m[h] - mn);
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
}

#if ROW == 0
__global__ void __launch_bounds__(WARPS * 32, MINB)
#if CL > 0
__cluster_dims__(CL, 1, 1)
#endif
attn(const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ pool, const int *__restrict__ block_tables,
    const int *__restrict__ context_lens, __nv_bfloat16 *__restrict__ out, float *, float *, unsigned *) {
  const int b = blockIdx.y, kvh = blockIdx.x, h0 = kvh * GROUP;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, sub = lane / LPT, d0 = (lane % LPT) * CH;
  float m[HPB], l[HPB], acc[HPB][V];
  attend(q, pool, block_tables + (size_t)b * MAXB, b, kvh, warp * TPW, context_lens[b], m, l, acc);
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
    out[((size_t)b * QH + h0 + h) * D + d] = __float2bfloat16(sum > 0.f ? a / sum : 0.f);
  }
}
constexpr int NSLOTS = 1;
static dim3 grid_dim() { return dim3(KVH, B); }
#else
// Block (p, b): tokens [p·PART, (p+1)·PART) of sequence b, warp w = KV head w.
__global__ void __launch_bounds__(WARPS * 32, MINB) attn(const __nv_bfloat16 *__restrict__ q,
    const __nv_bfloat16 *__restrict__ pool, const int *__restrict__ block_tables, const int *__restrict__ context_lens,
    __nv_bfloat16 *__restrict__ out, float *__restrict__ part_ml, float *__restrict__ part_acc,
    unsigned *__restrict__ count) {
  const int p = blockIdx.x, b = blockIdx.y;
  const int kvh = threadIdx.x / 32, lane = threadIdx.x % 32, sub = lane / LPT, d0 = (lane % LPT) * CH;
  const int h0 = kvh * GROUP;
  const int tbeg = p * PART, tend = min(context_lens[b], tbeg + PART);
  float m[HPB], l[HPB], acc[HPB][V];
  attend(q, pool, block_tables + (size_t)b * MAXB, b, kvh, tbeg, tend, m, l, acc);
  if (NP == 1) {
    if (sub == 0) {
#pragma unroll
      for (int h = 0; h < HPB; h++) {
        const float inv = l[h] > 0.f ? 1.f / l[h] : 0.f;
#pragma unroll
        for (int v = 0; v < V; v++)
          out[((size_t)b * QH + h0 + h) * D + d0 + v % CH + (v / CH) * (D / 2)] = __float2bfloat16(acc[h][v] * inv);
      }
    }
    return;
  }
  if (sub == 0) {
#pragma unroll
    for (int h = 0; h < HPB; h++) {
      const size_t pr = ((size_t)b * QH + h0 + h) * NP + p;
#pragma unroll
      for (int v = 0; v < V; v++) part_acc[pr * D + d0 + v % CH + (v / CH) * (D / 2)] = acc[h][v];
      if (lane == 0) {
        part_ml[2 * pr] = m[h];
        part_ml[2 * pr + 1] = l[h];
      }
    }
  }
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(count + b, 1u) == (unsigned)NP - 1;
    if (last) count[b] = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int i = threadIdx.x; i < QH * D; i += WARPS * 32) {
    const int h = i / D, d = i % D;
    const size_t row = (size_t)b * QH + h;
    float mx = -INFINITY;
    for (int s = 0; s < NP; s++) mx = fmaxf(mx, __ldcg(part_ml + 2 * (row * NP + s)));
    float sum = 0.f, a = 0.f;
    if (mx != -INFINITY) {
      for (int s = 0; s < NP; s++) {
        const size_t pr = row * NP + s;
        const float c = exp2f(__ldcg(part_ml + 2 * pr) - mx);
        sum += __ldcg(part_ml + 2 * pr + 1) * c;
        a += __ldcg(part_acc + pr * D + d) * c;
      }
    }
    out[row * D + d] = __float2bfloat16(sum > 0.f ? a / sum : 0.f);
  }
}
constexpr int NSLOTS = NP;
static dim3 grid_dim() { return dim3(NP, B); }
#endif

extern "C" int llmir_kernel(void *const *bufs, const int64_t *dims) {
  (void)dims;
  static float *scratch = nullptr;
  const size_t nws = (size_t)B * QH * NSLOTS * (D + 2);
  if (NSLOTS > 1 && !scratch) {
    if (cudaMalloc(&scratch, sizeof(float) * nws + sizeof(unsigned) * B) != cudaSuccess) return 1;
    if (cudaMemset(scratch + nws, 0, sizeof(unsigned) * B) != cudaSuccess) return 1;
  }
  float *ml = scratch, *pacc = scratch ? scratch + (size_t)2 * B * QH * NSLOTS : nullptr;
  constexpr int ring = 16 * PF * U * 2 * VW * WARPS * 32;
  static cudaError_t opt = cudaFuncSetAttribute(attn, cudaFuncAttributeMaxDynamicSharedMemorySize, ring);
  if (opt != cudaSuccess) return (int)opt;
  attn<<<grid_dim(), WARPS * 32, ring, cudaStreamLegacy>>>((const __nv_bfloat16 *)bufs[0],
      (const __nv_bfloat16 *)bufs[1], (const int *)bufs[2], (const int *)bufs[3], (__nv_bfloat16 *)bufs[4], ml, pacc,
      scratch ? (unsigned *)(scratch + nws) : nullptr);
  return (int)cudaGetLastError();
}
