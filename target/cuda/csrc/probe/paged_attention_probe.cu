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
//   MMA    1: tensor-core math (ROW=0): each warp stages MT·16 whole token
//          rows of K and V per step in shared memory (cp.async, XOR-swizzled
//          16-byte chunks), S = Q·Kᵀ with the GROUP query heads as the rows
//          of mma.sync m16n8k16 A (padded to 16 with zeros) and ldmatrix'd
//          K as B, the online softmax on the C fragments, whose layout is
//          P's A fragment as is (FlashAttention-2), and O += P·V with V read
//          by ldmatrix.trans; f32 accumulation (PFS stages, WW warps).
//          TWT tokens per warp step (8: P·V by m16n8k8; default 16·MT);
//          BTF: one block-table read per step when BS % TWT == 0; SPLITK:
//          two accumulator chains for S; EARLYQ: first copies before
//          loading q; FAST: no token mask on whole steps, ex2.approx.ftz;
//          HINT applies to the copies too; LI: a step's copies are issued
//          after waiting for the current one (PFS − 1 stages in flight
//          throughout, where issuing first has PFS − 1 only during the math);
//          CL applies too, and CLSYNC = 1 keeps the cluster's blocks in step
//          (a split cluster barrier: arrive after a step's copies are issued,
//          wait before the next step's are); BTPF: the block-table entry of
//          a step's copies read one step earlier (BTF, not LI); NOS / NOPV
//          (diagnostics, wrong output): no q·k / no p·v products; HP: KV
//          heads per block (adjacent heads, WW / HP warps each; grid KVH / HP)
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
#ifndef MMA
#define MMA 0
#endif
#ifndef MT
#define MT 1
#endif
#ifndef TWT
#define TWT (16 * MT)
#endif
#ifndef BTF
#define BTF 1
#endif
#ifndef SPLITK
#define SPLITK 0
#endif
#ifndef EARLYQ
#define EARLYQ 0
#endif
#ifndef LI
#define LI 0
#endif
#ifndef CLSYNC
#define CLSYNC 0
#endif
#ifndef BTPF
#define BTPF 0
#endif
#ifndef HP
#define HP 1
#endif
#ifndef NOS
#define NOS 0
#endif
#ifndef NOPV
#define NOPV 0
#endif
#ifndef FAST
#define FAST 0
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

#if MMA
// ---- Tensor-core variant ----
constexpr int TW = TWT;               // tokens per warp step
constexpr int WPH = WARPS / HP;       // warps per KV head
constexpr int MSTEP = WPH * TW;       // tokens per step of a head's warps
constexpr int CPR = D / 8;            // 16-byte chunks per token row
constexpr int RPI = 32 / CPR;         // rows a warp copies per instruction
constexpr int SWZ = CPR % 8 == 0 ? 7 : CPR % 4 == 0 ? 3 : 1;
constexpr int TILE = TW * D * 2;      // bytes of one K (or V) tile
constexpr int WSTAGE = 2 * TILE;      // K then V
constexpr int MRING = PF * WARPS * WSTAGE;
static_assert(HPB <= 16, "query heads are the 16 rows of the mma");
__device__ __forceinline__ void cp_async16z(uint32_t dst, const void *src, int bytes) {
#if HINT == 256
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
#elif HINT == 128
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
#endif
}
__device__ __forceinline__ float ex2(float x) {
#if FAST
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma1688(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(b0));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// Byte offset of (row r, chunk c) in a tile: chunks XOR-swizzled by row so
// that the 8 rows an ldmatrix reads at one chunk hit distinct banks.
__device__ __forceinline__ uint32_t swz(int r, int c) { return (uint32_t)(r * CPR + (c ^ (r & SWZ))) * 16; }
// issue_rows copies the K and V rows of tokens base … base+TW−1 into the
// warp's stage at shared address st (zero-filled past tend).
__device__ __forceinline__ void issue_rows(uint32_t st, const __nv_bfloat16 *__restrict__ pool,
    const int *__restrict__ bt, int base, int tend, int kvh, int lane, int pg = -1) {
  const int c = lane % CPR, r0 = lane / CPR;
  // With BTF and BS % TW == 0 the step's rows are in one page.
  size_t row0 = 0;
  if (BTF && BS % TW == 0 && base < tend)
    row0 = ((size_t)(pg >= 0 ? pg : __ldg(bt + base / BS)) * BS + base % BS) * KVH + kvh;
#pragma unroll
  for (int i = 0; i < TW / RPI; i++) {
    const int r = r0 + i * RPI, t = base + r;
    const bool ok = t < tend;
    size_t off;
    if (BTF && BS % TW == 0)
      off = ok ? (row0 + (size_t)r * KVH) * D + c * 8 : 0;
    else
      off = ok ? (((size_t)__ldg(bt + t / BS) * BS + t % BS) * KVH + kvh) * D + c * 8 : 0;
    const uint32_t dst = st + swz(r, c);
    cp_async16z(dst, pool + off, ok ? 16 : 0);
    cp_async16z(dst + TILE, pool + HALF + off, ok ? 16 : 0);
  }
}
__global__ void __launch_bounds__(WARPS * 32, MINB)
#if CL > 0
__cluster_dims__(CL, 1, 1)
#endif
attn(const __nv_bfloat16 *__restrict__ q,
    const __nv_bfloat16 *__restrict__ pool, const int *__restrict__ block_tables,
    const int *__restrict__ context_lens, __nv_bfloat16 *__restrict__ out, float *, float *, unsigned *) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int b = blockIdx.y, kvh = blockIdx.x * HP + warp / WPH, h0 = kvh * GROUP;
  const int *bt = block_tables + (size_t)b * MAXB;
  const int tend = context_lens[b];
  extern __shared__ uint4 ring[];
  const uint32_t wbase = (uint32_t)__cvta_generic_to_shared(ring) + warp * WSTAGE;
  const int base0 = (warp % WPH) * TW;
#if EARLYQ
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    issue_rows(wbase + p * WARPS * WSTAGE, pool, bt, base0 + p * MSTEP, tend, kvh, lane);
    cp_async_commit();
  }
#endif
  // Q as the A operand: rows g and g + 8 are query heads h0 + g, h0 + g + 8.
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
#if !EARLYQ
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    issue_rows(wbase + p * WARPS * WSTAGE, pool, bt, base0 + p * MSTEP, tend, kvh, lane);
    cp_async_commit();
  }
#endif
  // ldmatrix row addresses: K (non-trans) rows j·8 + lane%8 at chunk
  // 4·kk2 + lane/8; V (trans) rows kt·16 + lane%16 at chunk 2·nd + lane/16.
  int slot = 0;
#if BTPF
  int npg = base0 + (PF - 1) * MSTEP < tend ? __ldg(bt + (base0 + (PF - 1) * MSTEP) / BS) : 0;
#else
  constexpr int npg = -1;
#endif
  for (int base = base0; base < tend; base += MSTEP) {
#if LI
    static_assert(PF >= 3, "LI keeps PF - 1 stages in flight");
    cp_async_wait<PF - 2>();
    __syncwarp();  // the other lanes' copies are visible; the refilled stage is read
    issue_rows(wbase + (slot == 0 ? PF - 1 : slot - 1) * WARPS * WSTAGE, pool, bt, base + (PF - 1) * MSTEP, tend,
        kvh, lane);
    cp_async_commit();
#else
    __syncwarp();  // every lane is done reading the stage refilled next
#if CL > 0 && CLSYNC
    if (base != base0) asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
#endif
    issue_rows(wbase + (slot == 0 ? PF - 1 : slot - 1) * WARPS * WSTAGE, pool, bt, base + (PF - 1) * MSTEP, tend,
        kvh, lane, npg);
    cp_async_commit();
#if BTPF
    if (base + PF * MSTEP < tend) npg = __ldg(bt + (base + PF * MSTEP) / BS);
#endif
#if CL > 0 && CLSYNC
    // Every warp of the probe's shape runs the same number of steps.
    if (base + MSTEP < tend) asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
#endif
    cp_async_wait<PF - 1>();
    __syncwarp();  // the other lanes' copies are visible
#endif
    const uint32_t kb = wbase + slot * WARPS * WSTAGE, vb = kb + TILE;
    slot = slot + 1 == PF ? 0 : slot + 1;
#if STREAM
    continue;
#endif
    float s[TW / 8][4];
#pragma unroll
    for (int j = 0; j < TW / 8; j++) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#if SPLITK
      float s2[4] = {0.f, 0.f, 0.f, 0.f};
#endif
#pragma unroll
      for (int kk2 = 0; kk2 < D / 32; kk2++) {
        uint32_t r[4];
        ldsm_x4(r, kb + swz(j * 8 + lane % 8, 4 * kk2 + lane / 8));
        if (NOS) continue;
        mma16816(s[j], qa[2 * kk2], r[0], r[1]);
#if SPLITK
        mma16816(s2, qa[2 * kk2 + 1], r[2], r[3]);
#else
        mma16816(s[j], qa[2 * kk2 + 1], r[2], r[3]);
#endif
      }
#if SPLITK
#pragma unroll
      for (int e = 0; e < 4; e++) s[j][e] += s2[e];
#endif
    }
    // Online softmax on rows g (e 0, 1) and g + 8 (e 2, 3).
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int j = 0; j < TW / 8; j++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const bool ok = (FAST && base + TW <= tend) || base + j * 8 + 2 * t4 + (e & 1) < tend;
        s[j][e] = ok ? s[j][e] * SCALE_LOG2 : -INFINITY;
      }
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    if (HPB > 8) {
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    }
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
    uint32_t pa[(TW + 15) / 16][4];
#pragma unroll
    for (int j = 0; j < TW / 8; j++) {
      const uint32_t lo = pack_bf16(ex2(s[j][0] - m0), ex2(s[j][1] - m0));
      const uint32_t hi = HPB > 8 ? pack_bf16(ex2(s[j][2] - m1), ex2(s[j][3] - m1)) : 0u;
      // l sums the rounded p that the mma multiplies.
      l0 += bf_lo(lo) + bf_hi(lo);
      if (HPB > 8) l1 += bf_lo(hi) + bf_hi(hi);
      pa[j / 2][(j & 1) * 2] = lo;
      pa[j / 2][(j & 1) * 2 + 1] = hi;
    }
    if (NOPV) {
      acc[0][0] += __uint_as_float(pa[0][0]);
    } else if (TW == 8) {
      // k = 8 tokens: m16n8k8, four dims n-tiles per ldmatrix.x4.trans.
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
#pragma unroll
        for (int kt = 0; kt < TW / 16; kt++) {
          uint32_t r[4];
          ldsm_x4_t(r, vb + swz(kt * 16 + lane % 16, 2 * nd + lane / 16));
          mma16816(acc[2 * nd], pa[kt], r[0], r[1]);
          mma16816(acc[2 * nd + 1], pa[kt], r[2], r[3]);
        }
      }
    }
  }
  cp_async_wait<0>();
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  __shared__ float sm_m[WARPS][16], sm_l[WARPS][16], sm_acc[WARPS][HPB][D];
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
  for (int i = threadIdx.x; i < HP * HPB * D; i += WARPS * 32) {
    const int hh = i / (HPB * D), h = (i / D) % HPB, d = i % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = hh * WPH; w < (hh + 1) * WPH; w++) mx = fmaxf(mx, sm_m[w][h]);
    float sum = 0.f, a = 0.f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = hh * WPH; w < (hh + 1) * WPH; w++) {
        const float c = exp2f(sm_m[w][h] - mx);
        sum += sm_l[w][h] * c;
        a += sm_acc[w][h][d] * c;
      }
    }
    out[((size_t)b * QH + (blockIdx.x * HP + hh) * GROUP + h) * D + d] = __float2bfloat16(sum > 0.f ? a / sum : 0.f);
  }
}
constexpr int NSLOTS = 1;
static dim3 grid_dim() { return dim3(KVH / HP, B); }
#elif ROW == 0
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
#if MMA
  constexpr int ring = MRING;
#else
  constexpr int ring = 16 * PF * U * 2 * VW * WARPS * 32;
#endif
  static cudaError_t opt = cudaFuncSetAttribute(attn, cudaFuncAttributeMaxDynamicSharedMemorySize, ring);
  if (opt != cudaSuccess) return (int)opt;
  attn<<<grid_dim(), WARPS * 32, ring, cudaStreamLegacy>>>((const __nv_bfloat16 *)bufs[0],
      (const __nv_bfloat16 *)bufs[1], (const int *)bufs[2], (const int *)bufs[3], (__nv_bfloat16 *)bufs[4], ml, pacc,
      scratch ? (unsigned *)(scratch + nws) : nullptr);
  return (int)cudaGetLastError();
}
