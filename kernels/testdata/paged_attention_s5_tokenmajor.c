// Session-5 experiment, frozen (the generator does not emit it): the
// paged decode attention of Llama-3-8B (f32, 32 query heads, 8 KV heads,
// head_dim 128) written token-major. Per tile of 16 tokens (4 streams of
// 4), each token's K slice of a KV head is loaded into registers once and
// dotted with its 4 query heads (q as FMA memory operands from L1); the 16
// partial-sum vectors of 4 tokens fold into one vector of scores, lane
// token*4 + head. qk and pv are out of line and row pointers opaque (gcc
// otherwise hoists K loads across query heads into an 8 KiB stack copy).
// Compute alone (L2-resident block): ~14.5 ns per (token, KV head) against
// the session-3 kernel's ~12.5; from memory it ran 0.6-0.95x the
// session-3 kernel on a loaded machine. Kept so that
// BenchmarkPagedAttentionVariants -paged.c can measure it beside the
// generator's kernel. BS, PART, PF and NS are set per run.
// llmir paged_attention template: paged_attention/B=8,HQ=32,HKV=8,D=128,BS=16,MB=64/f32
// knobs: split=0 parallel=1 vec=16 heads=8 prefetch=0
#define HQ 32
#define HKV 8
#define D 128
#define BS 16
#define WINDOW 0
#define VW 16
#define PF 0
#define HT 8
#define CB 4
#define GP 4
#define LT 4
#define NSG 1
#define TV 4
#define PVT 8
#define NS 4
#define PART 0
#define PAR_ITEMS 1
#define ELEM_BF16 0
#define SCALE_LOG2E 0.127517431f
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf vsplat(float x) { return x - (vf){}; }
static inline float bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t f32_to_bf16(float f) { uint32_t u; memcpy(&u, &f, 4); if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); u += 0x7fffu + ((u >> 16) & 1u); return (uint16_t)(u >> 16); }
#if ELEM_BF16
typedef uint16_t elem_t;
typedef uint16_t vh __attribute__((vector_size(VW * 2)));
typedef uint32_t vu __attribute__((vector_size(VW * 4)));
#if defined(__AVX512F__) && VW == 16
// One vpmovzxwd from memory and a shift: gcc's generic conversion goes
// through extracts and inserts of 128-bit halves.
#include <immintrin.h>
static inline vf kvload(const elem_t *p) { return (vf)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16); }
#elif defined(__AVX2__) && VW == 8
#include <immintrin.h>
static inline vf kvload(const elem_t *p) { return (vf)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16); }
#else
static inline vf kvload(const elem_t *p) { vh h; memcpy(&h, p, sizeof h); vu u = __builtin_convertvector(h, vu) << 16; vf f; memcpy(&f, &u, sizeof f); return f; }
#endif
static inline float to_f32(elem_t x) { return bf16_to_f32(x); }
static inline elem_t from_f32(float x) { return f32_to_bf16(x); }
#else
typedef float elem_t;
static inline vf kvload(const elem_t *p) { return vload(p); }
static inline float to_f32(elem_t x) { return x; }
static inline elem_t from_f32(float x) { return x; }
#endif

// vexp2 is 2^x for x ≤ 0 to f32 accuracy (about 2 ulp): x rounded to the
// nearest integer n by the 1.5·2^23 trick, 2^(x−n) by Cephes' exp2f
// polynomial on [−½, ½], and n added to the exponent. Below −126 it
// returns 2^−126, far under anything a softmax sum can notice.
static inline vf vexp2(vf x) {
  vi lo = x < -126.0f;
  x = (vf)(((vi)x & ~lo) | ((vi)vsplat(-126.0f) & lo));
  vf r = (x + 12582912.0f) - 12582912.0f;
  vf f = x - r;
  vf p = 1.535336188319500e-4f * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  vi n = __builtin_convertvector(r, vi);
  return (vf)((vi)p + (n << 23));
}
static inline float sexp2(float x) { return vexp2(vsplat(x))[0]; }
static inline vf vmax(vf a, vf b) { vi gt = a > b; return (vf)(((vi)a & gt) | ((vi)b & ~gt)); }

// IN_REG keeps a loaded vector in a register: without it gcc folds the
// load into every FMA that uses the vector (a q vector feeds one FMA per
// stream, a K vector one per query head), doubling the loads per FMA.
#if defined(__x86_64__)
#define IN_REG(x) __asm__("" : "+v"(x))
#else
#define IN_REG(x) (void)0
#endif
// OPAQUE hides where a row pointer points, so that gcc neither hoists
// the GROUP query heads' loads of one K row out of their loop (it keeps
// a copy of the whole tile on the stack then) nor merges them: each
// query head reads its K slice again, from L1, as FMA memory operands.
#define OPAQUE(p) __asm__ volatile("" : "+r"(p))
#define LANES ((vi){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
static inline vf reduce_tokens(const vf *P) {
  vf r1_0 = __builtin_shuffle(P[0], P[1], (vi){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) + __builtin_shuffle(P[0], P[1], (vi){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
  vf r1_1 = __builtin_shuffle(P[2], P[3], (vi){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) + __builtin_shuffle(P[2], P[3], (vi){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
  vf r1_2 = __builtin_shuffle(P[4], P[5], (vi){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) + __builtin_shuffle(P[4], P[5], (vi){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
  vf r1_3 = __builtin_shuffle(P[6], P[7], (vi){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) + __builtin_shuffle(P[6], P[7], (vi){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
  vf r1_4 = __builtin_shuffle(P[8], P[9], (vi){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) + __builtin_shuffle(P[8], P[9], (vi){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
  vf r1_5 = __builtin_shuffle(P[10], P[11], (vi){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) + __builtin_shuffle(P[10], P[11], (vi){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
  vf r1_6 = __builtin_shuffle(P[12], P[13], (vi){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) + __builtin_shuffle(P[12], P[13], (vi){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
  vf r1_7 = __builtin_shuffle(P[14], P[15], (vi){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) + __builtin_shuffle(P[14], P[15], (vi){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
  vf r2_0 = __builtin_shuffle(r1_0, r1_1, (vi){0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27}) + __builtin_shuffle(r1_0, r1_1, (vi){4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31});
  vf r2_1 = __builtin_shuffle(r1_2, r1_3, (vi){0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27}) + __builtin_shuffle(r1_2, r1_3, (vi){4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31});
  vf r2_2 = __builtin_shuffle(r1_4, r1_5, (vi){0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27}) + __builtin_shuffle(r1_4, r1_5, (vi){4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31});
  vf r2_3 = __builtin_shuffle(r1_6, r1_7, (vi){0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27}) + __builtin_shuffle(r1_6, r1_7, (vi){4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31});
  vf r3_0 = __builtin_shuffle(r2_0, r2_1, (vi){0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29}) + __builtin_shuffle(r2_0, r2_1, (vi){2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31});
  vf r3_1 = __builtin_shuffle(r2_2, r2_3, (vi){0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29}) + __builtin_shuffle(r2_2, r2_3, (vi){2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31});
  vf r4_0 = __builtin_shuffle(r3_0, r3_1, (vi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}) + __builtin_shuffle(r3_0, r3_1, (vi){1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31});
  return r4_0;
}
static inline vf bfly_max(vf x) {
  { vf y = __builtin_shuffle(x, (vi){4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11}); x = vmax(x, y); }
  { vf y = __builtin_shuffle(x, (vi){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}); x = vmax(x, y); }
  return x;
}
static inline vf bfly_add(vf x) {
  { vf y = __builtin_shuffle(x, (vi){4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11}); x = x + y; }
  { vf y = __builtin_shuffle(x, (vi){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}); x = x + y; }
  return x;
}

#define GROUP (HQ / HKV)
#define QT (HT * GROUP)
#define ROW (HKV * D)
#define NV (D / VW)

// span_start is where a sequence of n tokens starts attending (window).
static inline int64_t span_start(int64_t n) { return WINDOW > 0 && n > WINDOW ? n - WINDOW : 0; }

// qk is the scores of LT query rows at qv (D apart) against TV K rows kr,
// lane t·LT + g. qk and pv stay out of line: inlined into item's loops,
// gcc hoists and merges loads across calls and spills hundreds of
// vectors.
static __attribute__((noinline)) vf qk(const float *qv, const elem_t *const *kr) {
  vf P[VW];
  #pragma GCC unroll 64
  for (int t = 0; t < TV; t++) {
    const elem_t *r = kr[t];
    // Opaque per token, or gcc keeps all of q in registers (and spills).
    const float *qq = qv;
    OPAQUE(qq);
    vf k[NV];
    #pragma GCC unroll 64
    for (int c = 0; c < NV; c++) { k[c] = kvload(r + c * VW); IN_REG(k[c]); }
    #pragma GCC unroll 64
    for (int g = 0; g < LT; g++) {
      vf a = k[0] * vload(qq + g * D);
      #pragma GCC unroll 64
      for (int c = 1; c < NV; c++) a += k[c] * vload(qq + g * D + c * VW);
      P[t * LT + g] = a;
    }
  }
  return reduce_tokens(P);
}

// pv adds the tile's weighted V rows into the GROUP accumulator rows at
// acc, CB vectors of head_dim per pass: GROUP·CB accumulators stay in
// registers over the tile, each V vector is loaded once and each weight
// broadcast once per pass, over PVT tokens. The weight of token j and
// query head g is pb[(g / LT)·VW·LT + j·LT + g % LT].
static __attribute__((noinline)) void pv(float *acc, const float *pb, const elem_t *const *vr) {
  #pragma GCC unroll 16
  for (int c0 = 0; c0 < NV; c0 += CB) {
    // Opaque per pass: gcc would hoist the weights' broadcasts out of
    // the passes and spill them.
    const float *w0 = pb;
    OPAQUE(w0);
    vf a[GROUP][CB];
    #pragma GCC unroll 64
    for (int g = 0; g < GROUP; g++)
      #pragma GCC unroll 64
      for (int c = 0; c < CB; c++) a[g][c] = vload(acc + g * D + (c0 + c) * VW);
    #pragma GCC unroll 64
    for (int j = 0; j < PVT; j++) {
      vf v[CB];
      #pragma GCC unroll 64
      for (int c = 0; c < CB; c++) v[c] = kvload(vr[j] + (c0 + c) * VW);
      #pragma GCC unroll 64
      for (int g = 0; g < GROUP; g++) {
        const vf w = vsplat(w0[g / LT * VW * LT + j * LT + g % LT]);
        #pragma GCC unroll 64
        for (int c = 0; c < CB; c++) a[g][c] += w * v[c];
      }
    }
    #pragma GCC unroll 64
    for (int g = 0; g < GROUP; g++)
      #pragma GCC unroll 64
      for (int c = 0; c < CB; c++) vstore(acc + g * D + (c0 + c) * VW, a[g][c]);
  }
}

#ifndef PF_HINT
#define PF_HINT 3
#endif

// rows points kr/vr at the K and V rows (KV head h0 on) of a tile: NS
// streams of VW/NS tokens each, stream s's from pos[s] up to end[s], the
// zero row past it; ok[j] says whether slot j is real. It returns the
// number of real slots.
#define SPT (VW / NS)
static inline int rows(const elem_t *kc, const elem_t *vc, const int32_t *table, const int64_t *pos, const int64_t *end, int64_t h0,
                       const elem_t *zrow, const elem_t **kr, const elem_t **vr, int *ok) {
  int n = 0;
  for (int j = 0; j < VW; j++) {
    int64_t x = pos[j / SPT] + j % SPT;
    ok[j] = x < end[j / SPT];
    if (ok[j]) {
      int64_t off = ((int64_t)table[x / BS] * BS + x % BS) * ROW + h0 * D;
      kr[j] = kc + off;
      vr[j] = vc + off;
      n++;
    } else {
      kr[j] = zrow;
      vr[j] = zrow;
    }
  }
  return n;
}

// item computes partition p of sequence b for KV heads [h0, h0 + HT): into
// out when the sequence has one partition, else into the partial (acc, m,
// l) slots of its heads, GROUP·(D + 2) floats each. zrow is a zero row.
static void item(const elem_t *q, const elem_t *kc, const elem_t *vc, const int32_t *table, int64_t n, int64_t b, int64_t h0,
                 int64_t p, int64_t parts, float *partial, elem_t *out, const elem_t *zrow) {
  // q rows padded to GP per KV head (zero rows past GROUP).
  float qs[HT * GP * D] __attribute__((aligned(64)));
  float acc[QT * D] __attribute__((aligned(64)));
  // Running max and sum per (KV head, sub-group): lane t·LT + g holds
  // query head g's (the max replicated over t, the sum partial over t).
  vf mh[HT * NSG], lh[HT * NSG];
  for (int i = 0; i < HT * GP; i++) {
    int hh = i / GP, g = i % GP;
    for (int e = 0; e < D; e++)
      qs[i * D + e] = g < GROUP ? to_f32(q[(b * HQ + (h0 + hh) * GROUP + g) * D + e]) * SCALE_LOG2E : 0.0f;
  }
  for (int i = 0; i < QT * D; i++) acc[i] = 0;
  for (int i = 0; i < HT * NSG; i++) { mh[i] = vsplat(-__builtin_inff()); lh[i] = vsplat(0.0f); }
  int64_t t0 = span_start(n), t1 = n;
#if PART > 0
  if (parts > 1) {
    t0 += p * PART;
    t1 = t0 + PART < n ? t0 + PART : n;
  }
#endif
  const elem_t *kr[VW], *vr[VW];
#if PF > 0
  // pk/pvr hold the rows PF tiles ahead, prefetched a head at a time.
  const elem_t *pk[VW], *pvr[VW];
#endif
  const vi head = LANES % LT;
  // S: the tile's scores, [KV head][sub-group][vector]; pb: the weights
  // of this tile and the one before, [2][KV head][sub-group][token][LT].
  vf S[HT * NSG * LT];
  float pb[2][HT * NSG * VW * LT] __attribute__((aligned(64)));
  const elem_t *vprev[VW];
  int have_prev = 0, cur = 0, ok[VW], pok[VW];
  // Streams: NS ranges of a whole number of SPT-token steps each.
  int64_t pos[NS], end[NS], ppos[NS];
  {
    int64_t per = (t1 - t0 + NS - 1) / NS;
    per = (per + SPT - 1) / SPT * SPT;
    for (int s = 0; s < NS; s++) {
      pos[s] = t0 + s * per < t1 ? t0 + s * per : t1;
      end[s] = pos[s] + per < t1 ? pos[s] + per : t1;
    }
  }
  // Software pipeline: the q·k steps of tile i alternate with the p·V
  // steps of tile i − 1, so that K and V stream side by side and neither
  // phase leaves the memory system idle; the softmax of tile i follows,
  // once acc holds every earlier tile.
  for (;; cur ^= 1) {
    int last = 1;
    for (int s = 0; s < NS; s++) last &= pos[s] >= end[s];
    if (last && !have_prev) break;
    const int nt = last ? 0 : rows(kc, vc, table, pos, end, h0, zrow, kr, vr, ok);
    (void)nt;
#if PF > 0
    for (int s = 0; s < NS; s++) ppos[s] = pos[s] + PF * SPT;
    const int np = last ? 0 : rows(kc, vc, table, ppos, end, h0, zrow, pk, pvr, pok);
    (void)np;
#endif
    for (int v = 0; v < LT || v * TV < VW; v++) {
      if (!last && v < LT) {
#if PF > 0
        for (int j = v * TV; j < (v + 1) * TV; j++) {
          if (!pok[j]) continue;
          for (int o = 0; o < HT * D * (int)sizeof(elem_t); o += 64) __builtin_prefetch((const char *)pk[j] + o, 0, PF_HINT);
          for (int o = 0; o < HT * D * (int)sizeof(elem_t); o += 64) __builtin_prefetch((const char *)pvr[j] + o, 0, PF_HINT);
        }
#endif
        for (int h = 0; h < HT; h++) {
          const elem_t *kh[TV];
          for (int j = 0; j < TV; j++) kh[j] = kr[v * TV + j] + h * D;
          for (int sg = 0; sg < NSG; sg++) S[(h * NSG + sg) * LT + v] = qk(qs + (h * GP + sg * LT) * D, kh);
        }
      }
      // p·V of the previous tile, PVT rows per q·k step of TV.
      if (have_prev)
        for (int j0 = v * TV; j0 < (v + 1) * TV && j0 < VW; j0++)
          if (j0 % PVT == 0)
            for (int h = 0; h < HT; h++) {
              const elem_t *vh[PVT];
              for (int j = 0; j < PVT; j++) vh[j] = vprev[j0 + j] + h * D;
              pv(acc + h * GROUP * D, pb[cur ^ 1] + h * NSG * VW * LT + j0 * LT, vh);
            }
    }
    if (last) break;
    // One online-softmax step per KV head and sub-group.
    for (int h = 0; h < HT; h++)
      for (int sg = 0; sg < NSG; sg++) {
        vf *Sv = S + (h * NSG + sg) * LT;
        vi keep[LT];
        vf mx = vsplat(-__builtin_inff());
        for (int v = 0; v < LT; v++) {
          int okl[VW];
          for (int l = 0; l < VW; l++) okl[l] = -ok[v * TV + l / LT];
          vi real;
          memcpy(&real, okl, sizeof real);
          keep[v] = real & (head + sg * LT < GROUP);
          Sv[v] = (vf)(((vi)Sv[v] & keep[v]) | ((vi)vsplat(-__builtin_inff()) & ~keep[v]));
          mx = vmax(mx, Sv[v]);
        }
        mx = bfly_max(mx);
        vf *m = &mh[h * NSG + sg], *l = &lh[h * NSG + sg];
        const vi up = mx > *m;
        int any = 0;
        for (int g = 0; g < LT; g++) any |= up[g];
        if (any) {
          // The running max moved: rescale what was summed under the old.
          const vf mnew = vmax(*m, mx), alpha = vexp2(*m - mnew);
          *l *= alpha;
          *m = mnew;
          for (int g = 0; g < LT && sg * LT + g < GROUP; g++) {
            if (!up[g]) continue;
            float *a = acc + (h * GROUP + sg * LT + g) * D;
            const vf va = vsplat(alpha[g]);
            for (int c = 0; c < NV; c++) vstore(a + c * VW, vload(a + c * VW) * va);
          }
        }
        for (int v = 0; v < LT; v++) {
          const vf w = (vf)((vi)vexp2(Sv[v] - *m) & keep[v]);
          *l += w;
          vstore(pb[cur] + ((h * NSG + sg) * LT + v) * VW, w);
        }
      }
    for (int j = 0; j < VW; j++) vprev[j] = vr[j];
    for (int s = 0; s < NS; s++) pos[s] = pos[s] + SPT < end[s] ? pos[s] + SPT : end[s];
    have_prev = 1;
  }
  float m[QT], l[QT];
  for (int hh = 0; hh < HT; hh++)
    for (int sg = 0; sg < NSG; sg++) {
      const vf ls = bfly_add(lh[hh * NSG + sg]);
      for (int g = 0; g < LT && sg * LT + g < GROUP; g++) {
        m[hh * GROUP + sg * LT + g] = mh[hh * NSG + sg][g];
        l[hh * GROUP + sg * LT + g] = ls[g];
      }
    }
  if (parts > 1) {
    float *dst = partial + h0 * GROUP * (D + 2);
    for (int hh = 0; hh < HT; hh++, dst += GROUP * (D + 2)) {
      for (int g = 0; g < GROUP; g++) {
        int i = hh * GROUP + g;
        for (int e = 0; e < D; e++) dst[g * D + e] = acc[i * D + e];
        dst[GROUP * D + g] = m[i];
        dst[GROUP * D + GROUP + g] = l[i];
      }
    }
    return;
  }
  for (int i = 0; i < QT; i++) {
    float inv = l[i] > 0 ? 1.0f / l[i] : 0.0f;
    elem_t *o = out + (b * HQ + h0 * GROUP + i) * D;
    for (int e = 0; e < D; e++) o[e] = from_f32(acc[i * D + e] * inv);
  }
}

// merge reduces a sequence's partitions for KV head h by log-sum-exp:
// weights 2^(m_p − M).
static void merge(const float *partial, int64_t parts, int64_t b, int64_t h, elem_t *out) {
  const int64_t stride = HKV * GROUP * (D + 2);
  partial += h * GROUP * (D + 2);
  for (int g = 0; g < GROUP; g++) {
    float M = -__builtin_inff();
    for (int64_t p = 0; p < parts; p++) {
      float mp = partial[p * stride + GROUP * D + g];
      M = mp > M ? mp : M;
    }
    float o[D], L = 0;
    for (int e = 0; e < D; e++) o[e] = 0;
    for (int64_t p = 0; p < parts; p++) {
      const float *pp = partial + p * stride;
      float mp = pp[GROUP * D + g];
      float w = mp == -__builtin_inff() ? 0.0f : sexp2(mp - M);
      L += w * pp[GROUP * D + GROUP + g];
      for (int e = 0; e < D; e++) o[e] += w * pp[g * D + e];
    }
    float inv = L > 0 ? 1.0f / L : 0.0f;
    elem_t *dst = out + (b * HQ + h * GROUP + g) * D;
    for (int e = 0; e < D; e++) dst[e] = from_f32(o[e] * inv);
  }
}

static inline int64_t parts_of(int64_t n) {
#if PART > 0
  int64_t len = n - span_start(n);
  if (len > PART) return (len + PART - 1) / PART;
#endif
  (void)n;
  return 1;
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  const elem_t *q = (const elem_t *)bufs[0];
  const elem_t *cache = (const elem_t *)bufs[1];
  const int32_t *tables = (const int32_t *)bufs[2];
  const int32_t *lens = (const int32_t *)bufs[3];
  elem_t *out = (elem_t *)bufs[4];
  const int64_t B = dims[0], NB = dims[1], MB = dims[2];
  const elem_t *kc = cache, *vc = cache + NB * BS * ROW;
  const int64_t NHG = HKV / HT;
  // Bad tables are a runtime error, never a read outside the pool.
  for (int64_t b = 0; b < B; b++) {
    int64_t n = lens[b];
    if (n < 0 || n > MB * BS) return 1;
    for (int64_t j = span_start(n) / BS; j * BS < n; j++) {
      int32_t blk = tables[b * MB + j];
      if (blk < 0 || blk >= NB) return 2;
    }
  }
  int64_t *first = (int64_t *)malloc((size_t)(B + 1) * sizeof(int64_t));
  elem_t *zrow = (elem_t *)calloc(ROW, sizeof(elem_t));
  if (!first || !zrow) { free(first); free(zrow); return 3; }
  first[0] = 0;
  for (int64_t b = 0; b < B; b++) first[b + 1] = first[b] + parts_of(lens[b]);
  const int64_t items = first[B];
  const int64_t stride = HKV * GROUP * (D + 2);
  float *partial = NULL;
  if (items > B) {
    partial = (float *)malloc((size_t)(items * stride) * sizeof(float));
    if (!partial) { free(first); free(zrow); return 3; }
  }
#if PAR_ITEMS
  #pragma omp parallel
  {
    #pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items * NHG; it++) {
      int64_t x = it / NHG, h0 = it % NHG * HT;
      int64_t lo = 0, hi = B - 1;
      while (lo < hi) { int64_t mid = (lo + hi + 1) / 2; if (first[mid] <= x) lo = mid; else hi = mid - 1; }
      int64_t b = lo, parts = first[b + 1] - first[b];
      item(q, kc, vc, tables + b * MB, lens[b], b, h0, x - first[b], parts, partial ? partial + x * stride : NULL, out, zrow);
    }
    #pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < B * HKV; bh++) {
      int64_t b = bh / HKV, h = bh % HKV, parts = first[b + 1] - first[b];
      if (parts > 1) merge(partial + first[b] * stride, parts, b, h, out);
    }
  }
#else
  #pragma omp parallel for schedule(static)
  for (int64_t bg = 0; bg < B * NHG; bg++) {
    int64_t b = bg / NHG, h0 = bg % NHG * HT, parts = first[b + 1] - first[b];
    for (int64_t p = 0; p < parts; p++)
      item(q, kc, vc, tables + b * MB, lens[b], b, h0, p, parts, partial ? partial + (first[b] + p) * stride : NULL, out, zrow);
    for (int64_t h = h0; parts > 1 && h < h0 + HT; h++) merge(partial + first[b] * stride, parts, b, h, out);
  }
#endif
  free(partial);
  free(zrow);
  free(first);
  return 0;
}
