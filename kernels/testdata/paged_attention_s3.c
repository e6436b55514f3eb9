// llmir paged_attention template: paged_attention/B=8,HQ=32,HKV=8,D=128,BS=16,MB=64/f32
// knobs: split=0 parallel=1 vec=16 unroll=8 heads=8 prefetch=0 tile=4 streams=4
#define HQ 32
#define HKV 8
#define D 128
#define BS 16
#define WINDOW 0
#define VW 16
#define PF 0
#define TS 4
#define HT 8
#define NS 4
#define US 1
#define NIT 128
#define NCH 8
#define PART 0
#define PAR_ITEMS 1
#define ELEM_BF16 0
#define SCALE_LOG2E 0.127517431f
#define FAST_SM 1
#define CPH 1
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
static inline void step_qk(const elem_t *const *kr, const float *qs, float *sc) {
  {
    vf p0 = vsplat(0.0f), p1 = vsplat(0.0f), p2 = vsplat(0.0f), p3 = vsplat(0.0f), p4 = vsplat(0.0f), p5 = vsplat(0.0f), p6 = vsplat(0.0f), p7 = vsplat(0.0f), p8 = vsplat(0.0f), p9 = vsplat(0.0f), p10 = vsplat(0.0f), p11 = vsplat(0.0f), p12 = vsplat(0.0f), p13 = vsplat(0.0f), p14 = vsplat(0.0f), p15 = vsplat(0.0f);
    #pragma GCC unroll 8
    for (int c = 0; c < D / VW; c++) {
      vf k0 = kvload(kr[0] + 0 * D + c * VW); IN_REG(k0);
      vf k1 = kvload(kr[1] + 0 * D + c * VW); IN_REG(k1);
      vf k2 = kvload(kr[2] + 0 * D + c * VW); IN_REG(k2);
      vf k3 = kvload(kr[3] + 0 * D + c * VW); IN_REG(k3);
      vf q0 = vload(qs + 0 * D + c * VW); IN_REG(q0);
      vf q1 = vload(qs + 1 * D + c * VW); IN_REG(q1);
      vf q2 = vload(qs + 2 * D + c * VW); IN_REG(q2);
      vf q3 = vload(qs + 3 * D + c * VW); IN_REG(q3);
      p0 += q0 * k0; p1 += q1 * k0; p2 += q2 * k0; p3 += q3 * k0; p4 += q0 * k1; p5 += q1 * k1; p6 += q2 * k1; p7 += q3 * k1; p8 += q0 * k2; p9 += q1 * k2; p10 += q2 * k2; p11 += q3 * k2; p12 += q0 * k3; p13 += q1 * k3; p14 += q2 * k3; p15 += q3 * k3;
    }
    vf R[VW] = {p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15};
    vstore(sc + 0, reduce_tokens(R));
  }
  {
    vf p0 = vsplat(0.0f), p1 = vsplat(0.0f), p2 = vsplat(0.0f), p3 = vsplat(0.0f), p4 = vsplat(0.0f), p5 = vsplat(0.0f), p6 = vsplat(0.0f), p7 = vsplat(0.0f), p8 = vsplat(0.0f), p9 = vsplat(0.0f), p10 = vsplat(0.0f), p11 = vsplat(0.0f), p12 = vsplat(0.0f), p13 = vsplat(0.0f), p14 = vsplat(0.0f), p15 = vsplat(0.0f);
    #pragma GCC unroll 8
    for (int c = 0; c < D / VW; c++) {
      vf k0 = kvload(kr[0] + 1 * D + c * VW); IN_REG(k0);
      vf k1 = kvload(kr[1] + 1 * D + c * VW); IN_REG(k1);
      vf k2 = kvload(kr[2] + 1 * D + c * VW); IN_REG(k2);
      vf k3 = kvload(kr[3] + 1 * D + c * VW); IN_REG(k3);
      vf q0 = vload(qs + 4 * D + c * VW); IN_REG(q0);
      vf q1 = vload(qs + 5 * D + c * VW); IN_REG(q1);
      vf q2 = vload(qs + 6 * D + c * VW); IN_REG(q2);
      vf q3 = vload(qs + 7 * D + c * VW); IN_REG(q3);
      p0 += q0 * k0; p1 += q1 * k0; p2 += q2 * k0; p3 += q3 * k0; p4 += q0 * k1; p5 += q1 * k1; p6 += q2 * k1; p7 += q3 * k1; p8 += q0 * k2; p9 += q1 * k2; p10 += q2 * k2; p11 += q3 * k2; p12 += q0 * k3; p13 += q1 * k3; p14 += q2 * k3; p15 += q3 * k3;
    }
    vf R[VW] = {p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15};
    vstore(sc + 16, reduce_tokens(R));
  }
  {
    vf p0 = vsplat(0.0f), p1 = vsplat(0.0f), p2 = vsplat(0.0f), p3 = vsplat(0.0f), p4 = vsplat(0.0f), p5 = vsplat(0.0f), p6 = vsplat(0.0f), p7 = vsplat(0.0f), p8 = vsplat(0.0f), p9 = vsplat(0.0f), p10 = vsplat(0.0f), p11 = vsplat(0.0f), p12 = vsplat(0.0f), p13 = vsplat(0.0f), p14 = vsplat(0.0f), p15 = vsplat(0.0f);
    #pragma GCC unroll 8
    for (int c = 0; c < D / VW; c++) {
      vf k0 = kvload(kr[0] + 2 * D + c * VW); IN_REG(k0);
      vf k1 = kvload(kr[1] + 2 * D + c * VW); IN_REG(k1);
      vf k2 = kvload(kr[2] + 2 * D + c * VW); IN_REG(k2);
      vf k3 = kvload(kr[3] + 2 * D + c * VW); IN_REG(k3);
      vf q0 = vload(qs + 8 * D + c * VW); IN_REG(q0);
      vf q1 = vload(qs + 9 * D + c * VW); IN_REG(q1);
      vf q2 = vload(qs + 10 * D + c * VW); IN_REG(q2);
      vf q3 = vload(qs + 11 * D + c * VW); IN_REG(q3);
      p0 += q0 * k0; p1 += q1 * k0; p2 += q2 * k0; p3 += q3 * k0; p4 += q0 * k1; p5 += q1 * k1; p6 += q2 * k1; p7 += q3 * k1; p8 += q0 * k2; p9 += q1 * k2; p10 += q2 * k2; p11 += q3 * k2; p12 += q0 * k3; p13 += q1 * k3; p14 += q2 * k3; p15 += q3 * k3;
    }
    vf R[VW] = {p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15};
    vstore(sc + 32, reduce_tokens(R));
  }
  {
    vf p0 = vsplat(0.0f), p1 = vsplat(0.0f), p2 = vsplat(0.0f), p3 = vsplat(0.0f), p4 = vsplat(0.0f), p5 = vsplat(0.0f), p6 = vsplat(0.0f), p7 = vsplat(0.0f), p8 = vsplat(0.0f), p9 = vsplat(0.0f), p10 = vsplat(0.0f), p11 = vsplat(0.0f), p12 = vsplat(0.0f), p13 = vsplat(0.0f), p14 = vsplat(0.0f), p15 = vsplat(0.0f);
    #pragma GCC unroll 8
    for (int c = 0; c < D / VW; c++) {
      vf k0 = kvload(kr[0] + 3 * D + c * VW); IN_REG(k0);
      vf k1 = kvload(kr[1] + 3 * D + c * VW); IN_REG(k1);
      vf k2 = kvload(kr[2] + 3 * D + c * VW); IN_REG(k2);
      vf k3 = kvload(kr[3] + 3 * D + c * VW); IN_REG(k3);
      vf q0 = vload(qs + 12 * D + c * VW); IN_REG(q0);
      vf q1 = vload(qs + 13 * D + c * VW); IN_REG(q1);
      vf q2 = vload(qs + 14 * D + c * VW); IN_REG(q2);
      vf q3 = vload(qs + 15 * D + c * VW); IN_REG(q3);
      p0 += q0 * k0; p1 += q1 * k0; p2 += q2 * k0; p3 += q3 * k0; p4 += q0 * k1; p5 += q1 * k1; p6 += q2 * k1; p7 += q3 * k1; p8 += q0 * k2; p9 += q1 * k2; p10 += q2 * k2; p11 += q3 * k2; p12 += q0 * k3; p13 += q1 * k3; p14 += q2 * k3; p15 += q3 * k3;
    }
    vf R[VW] = {p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15};
    vstore(sc + 48, reduce_tokens(R));
  }
  {
    vf p0 = vsplat(0.0f), p1 = vsplat(0.0f), p2 = vsplat(0.0f), p3 = vsplat(0.0f), p4 = vsplat(0.0f), p5 = vsplat(0.0f), p6 = vsplat(0.0f), p7 = vsplat(0.0f), p8 = vsplat(0.0f), p9 = vsplat(0.0f), p10 = vsplat(0.0f), p11 = vsplat(0.0f), p12 = vsplat(0.0f), p13 = vsplat(0.0f), p14 = vsplat(0.0f), p15 = vsplat(0.0f);
    #pragma GCC unroll 8
    for (int c = 0; c < D / VW; c++) {
      vf k0 = kvload(kr[0] + 4 * D + c * VW); IN_REG(k0);
      vf k1 = kvload(kr[1] + 4 * D + c * VW); IN_REG(k1);
      vf k2 = kvload(kr[2] + 4 * D + c * VW); IN_REG(k2);
      vf k3 = kvload(kr[3] + 4 * D + c * VW); IN_REG(k3);
      vf q0 = vload(qs + 16 * D + c * VW); IN_REG(q0);
      vf q1 = vload(qs + 17 * D + c * VW); IN_REG(q1);
      vf q2 = vload(qs + 18 * D + c * VW); IN_REG(q2);
      vf q3 = vload(qs + 19 * D + c * VW); IN_REG(q3);
      p0 += q0 * k0; p1 += q1 * k0; p2 += q2 * k0; p3 += q3 * k0; p4 += q0 * k1; p5 += q1 * k1; p6 += q2 * k1; p7 += q3 * k1; p8 += q0 * k2; p9 += q1 * k2; p10 += q2 * k2; p11 += q3 * k2; p12 += q0 * k3; p13 += q1 * k3; p14 += q2 * k3; p15 += q3 * k3;
    }
    vf R[VW] = {p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15};
    vstore(sc + 64, reduce_tokens(R));
  }
  {
    vf p0 = vsplat(0.0f), p1 = vsplat(0.0f), p2 = vsplat(0.0f), p3 = vsplat(0.0f), p4 = vsplat(0.0f), p5 = vsplat(0.0f), p6 = vsplat(0.0f), p7 = vsplat(0.0f), p8 = vsplat(0.0f), p9 = vsplat(0.0f), p10 = vsplat(0.0f), p11 = vsplat(0.0f), p12 = vsplat(0.0f), p13 = vsplat(0.0f), p14 = vsplat(0.0f), p15 = vsplat(0.0f);
    #pragma GCC unroll 8
    for (int c = 0; c < D / VW; c++) {
      vf k0 = kvload(kr[0] + 5 * D + c * VW); IN_REG(k0);
      vf k1 = kvload(kr[1] + 5 * D + c * VW); IN_REG(k1);
      vf k2 = kvload(kr[2] + 5 * D + c * VW); IN_REG(k2);
      vf k3 = kvload(kr[3] + 5 * D + c * VW); IN_REG(k3);
      vf q0 = vload(qs + 20 * D + c * VW); IN_REG(q0);
      vf q1 = vload(qs + 21 * D + c * VW); IN_REG(q1);
      vf q2 = vload(qs + 22 * D + c * VW); IN_REG(q2);
      vf q3 = vload(qs + 23 * D + c * VW); IN_REG(q3);
      p0 += q0 * k0; p1 += q1 * k0; p2 += q2 * k0; p3 += q3 * k0; p4 += q0 * k1; p5 += q1 * k1; p6 += q2 * k1; p7 += q3 * k1; p8 += q0 * k2; p9 += q1 * k2; p10 += q2 * k2; p11 += q3 * k2; p12 += q0 * k3; p13 += q1 * k3; p14 += q2 * k3; p15 += q3 * k3;
    }
    vf R[VW] = {p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15};
    vstore(sc + 80, reduce_tokens(R));
  }
  {
    vf p0 = vsplat(0.0f), p1 = vsplat(0.0f), p2 = vsplat(0.0f), p3 = vsplat(0.0f), p4 = vsplat(0.0f), p5 = vsplat(0.0f), p6 = vsplat(0.0f), p7 = vsplat(0.0f), p8 = vsplat(0.0f), p9 = vsplat(0.0f), p10 = vsplat(0.0f), p11 = vsplat(0.0f), p12 = vsplat(0.0f), p13 = vsplat(0.0f), p14 = vsplat(0.0f), p15 = vsplat(0.0f);
    #pragma GCC unroll 8
    for (int c = 0; c < D / VW; c++) {
      vf k0 = kvload(kr[0] + 6 * D + c * VW); IN_REG(k0);
      vf k1 = kvload(kr[1] + 6 * D + c * VW); IN_REG(k1);
      vf k2 = kvload(kr[2] + 6 * D + c * VW); IN_REG(k2);
      vf k3 = kvload(kr[3] + 6 * D + c * VW); IN_REG(k3);
      vf q0 = vload(qs + 24 * D + c * VW); IN_REG(q0);
      vf q1 = vload(qs + 25 * D + c * VW); IN_REG(q1);
      vf q2 = vload(qs + 26 * D + c * VW); IN_REG(q2);
      vf q3 = vload(qs + 27 * D + c * VW); IN_REG(q3);
      p0 += q0 * k0; p1 += q1 * k0; p2 += q2 * k0; p3 += q3 * k0; p4 += q0 * k1; p5 += q1 * k1; p6 += q2 * k1; p7 += q3 * k1; p8 += q0 * k2; p9 += q1 * k2; p10 += q2 * k2; p11 += q3 * k2; p12 += q0 * k3; p13 += q1 * k3; p14 += q2 * k3; p15 += q3 * k3;
    }
    vf R[VW] = {p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15};
    vstore(sc + 96, reduce_tokens(R));
  }
  {
    vf p0 = vsplat(0.0f), p1 = vsplat(0.0f), p2 = vsplat(0.0f), p3 = vsplat(0.0f), p4 = vsplat(0.0f), p5 = vsplat(0.0f), p6 = vsplat(0.0f), p7 = vsplat(0.0f), p8 = vsplat(0.0f), p9 = vsplat(0.0f), p10 = vsplat(0.0f), p11 = vsplat(0.0f), p12 = vsplat(0.0f), p13 = vsplat(0.0f), p14 = vsplat(0.0f), p15 = vsplat(0.0f);
    #pragma GCC unroll 8
    for (int c = 0; c < D / VW; c++) {
      vf k0 = kvload(kr[0] + 7 * D + c * VW); IN_REG(k0);
      vf k1 = kvload(kr[1] + 7 * D + c * VW); IN_REG(k1);
      vf k2 = kvload(kr[2] + 7 * D + c * VW); IN_REG(k2);
      vf k3 = kvload(kr[3] + 7 * D + c * VW); IN_REG(k3);
      vf q0 = vload(qs + 28 * D + c * VW); IN_REG(q0);
      vf q1 = vload(qs + 29 * D + c * VW); IN_REG(q1);
      vf q2 = vload(qs + 30 * D + c * VW); IN_REG(q2);
      vf q3 = vload(qs + 31 * D + c * VW); IN_REG(q3);
      p0 += q0 * k0; p1 += q1 * k0; p2 += q2 * k0; p3 += q3 * k0; p4 += q0 * k1; p5 += q1 * k1; p6 += q2 * k1; p7 += q3 * k1; p8 += q0 * k2; p9 += q1 * k2; p10 += q2 * k2; p11 += q3 * k2; p12 += q0 * k3; p13 += q1 * k3; p14 += q2 * k3; p15 += q3 * k3;
    }
    vf R[VW] = {p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15};
    vstore(sc + 112, reduce_tokens(R));
  }
}

static inline void step_pv(const elem_t *const *vr, const float *sc, float *acc) {
  #pragma GCC unroll 8
  for (int c0 = 0; c0 < D / VW; c0 += 4) {
    vf a0_0 = vload(acc + 0 * D + (c0 + 0) * VW);
    vf a0_1 = vload(acc + 0 * D + (c0 + 1) * VW);
    vf a0_2 = vload(acc + 0 * D + (c0 + 2) * VW);
    vf a0_3 = vload(acc + 0 * D + (c0 + 3) * VW);
    vf a1_0 = vload(acc + 1 * D + (c0 + 0) * VW);
    vf a1_1 = vload(acc + 1 * D + (c0 + 1) * VW);
    vf a1_2 = vload(acc + 1 * D + (c0 + 2) * VW);
    vf a1_3 = vload(acc + 1 * D + (c0 + 3) * VW);
    vf a2_0 = vload(acc + 2 * D + (c0 + 0) * VW);
    vf a2_1 = vload(acc + 2 * D + (c0 + 1) * VW);
    vf a2_2 = vload(acc + 2 * D + (c0 + 2) * VW);
    vf a2_3 = vload(acc + 2 * D + (c0 + 3) * VW);
    vf a3_0 = vload(acc + 3 * D + (c0 + 0) * VW);
    vf a3_1 = vload(acc + 3 * D + (c0 + 1) * VW);
    vf a3_2 = vload(acc + 3 * D + (c0 + 2) * VW);
    vf a3_3 = vload(acc + 3 * D + (c0 + 3) * VW);
    {
      const vf v0 = kvload(vr[0] + 0 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[0] + 0 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[0] + 0 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[0] + 0 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[0]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[1]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[2]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[3]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[1] + 0 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[1] + 0 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[1] + 0 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[1] + 0 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[4]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[5]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[6]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[7]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[2] + 0 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[2] + 0 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[2] + 0 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[2] + 0 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[8]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[9]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[10]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[11]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[3] + 0 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[3] + 0 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[3] + 0 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[3] + 0 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[12]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[13]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[14]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[15]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    vstore(acc + 0 * D + (c0 + 0) * VW, a0_0);
    vstore(acc + 0 * D + (c0 + 1) * VW, a0_1);
    vstore(acc + 0 * D + (c0 + 2) * VW, a0_2);
    vstore(acc + 0 * D + (c0 + 3) * VW, a0_3);
    vstore(acc + 1 * D + (c0 + 0) * VW, a1_0);
    vstore(acc + 1 * D + (c0 + 1) * VW, a1_1);
    vstore(acc + 1 * D + (c0 + 2) * VW, a1_2);
    vstore(acc + 1 * D + (c0 + 3) * VW, a1_3);
    vstore(acc + 2 * D + (c0 + 0) * VW, a2_0);
    vstore(acc + 2 * D + (c0 + 1) * VW, a2_1);
    vstore(acc + 2 * D + (c0 + 2) * VW, a2_2);
    vstore(acc + 2 * D + (c0 + 3) * VW, a2_3);
    vstore(acc + 3 * D + (c0 + 0) * VW, a3_0);
    vstore(acc + 3 * D + (c0 + 1) * VW, a3_1);
    vstore(acc + 3 * D + (c0 + 2) * VW, a3_2);
    vstore(acc + 3 * D + (c0 + 3) * VW, a3_3);
  }
  #pragma GCC unroll 8
  for (int c0 = 0; c0 < D / VW; c0 += 4) {
    vf a0_0 = vload(acc + 4 * D + (c0 + 0) * VW);
    vf a0_1 = vload(acc + 4 * D + (c0 + 1) * VW);
    vf a0_2 = vload(acc + 4 * D + (c0 + 2) * VW);
    vf a0_3 = vload(acc + 4 * D + (c0 + 3) * VW);
    vf a1_0 = vload(acc + 5 * D + (c0 + 0) * VW);
    vf a1_1 = vload(acc + 5 * D + (c0 + 1) * VW);
    vf a1_2 = vload(acc + 5 * D + (c0 + 2) * VW);
    vf a1_3 = vload(acc + 5 * D + (c0 + 3) * VW);
    vf a2_0 = vload(acc + 6 * D + (c0 + 0) * VW);
    vf a2_1 = vload(acc + 6 * D + (c0 + 1) * VW);
    vf a2_2 = vload(acc + 6 * D + (c0 + 2) * VW);
    vf a2_3 = vload(acc + 6 * D + (c0 + 3) * VW);
    vf a3_0 = vload(acc + 7 * D + (c0 + 0) * VW);
    vf a3_1 = vload(acc + 7 * D + (c0 + 1) * VW);
    vf a3_2 = vload(acc + 7 * D + (c0 + 2) * VW);
    vf a3_3 = vload(acc + 7 * D + (c0 + 3) * VW);
    {
      const vf v0 = kvload(vr[0] + 1 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[0] + 1 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[0] + 1 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[0] + 1 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[16]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[17]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[18]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[19]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[1] + 1 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[1] + 1 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[1] + 1 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[1] + 1 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[20]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[21]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[22]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[23]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[2] + 1 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[2] + 1 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[2] + 1 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[2] + 1 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[24]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[25]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[26]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[27]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[3] + 1 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[3] + 1 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[3] + 1 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[3] + 1 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[28]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[29]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[30]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[31]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    vstore(acc + 4 * D + (c0 + 0) * VW, a0_0);
    vstore(acc + 4 * D + (c0 + 1) * VW, a0_1);
    vstore(acc + 4 * D + (c0 + 2) * VW, a0_2);
    vstore(acc + 4 * D + (c0 + 3) * VW, a0_3);
    vstore(acc + 5 * D + (c0 + 0) * VW, a1_0);
    vstore(acc + 5 * D + (c0 + 1) * VW, a1_1);
    vstore(acc + 5 * D + (c0 + 2) * VW, a1_2);
    vstore(acc + 5 * D + (c0 + 3) * VW, a1_3);
    vstore(acc + 6 * D + (c0 + 0) * VW, a2_0);
    vstore(acc + 6 * D + (c0 + 1) * VW, a2_1);
    vstore(acc + 6 * D + (c0 + 2) * VW, a2_2);
    vstore(acc + 6 * D + (c0 + 3) * VW, a2_3);
    vstore(acc + 7 * D + (c0 + 0) * VW, a3_0);
    vstore(acc + 7 * D + (c0 + 1) * VW, a3_1);
    vstore(acc + 7 * D + (c0 + 2) * VW, a3_2);
    vstore(acc + 7 * D + (c0 + 3) * VW, a3_3);
  }
  #pragma GCC unroll 8
  for (int c0 = 0; c0 < D / VW; c0 += 4) {
    vf a0_0 = vload(acc + 8 * D + (c0 + 0) * VW);
    vf a0_1 = vload(acc + 8 * D + (c0 + 1) * VW);
    vf a0_2 = vload(acc + 8 * D + (c0 + 2) * VW);
    vf a0_3 = vload(acc + 8 * D + (c0 + 3) * VW);
    vf a1_0 = vload(acc + 9 * D + (c0 + 0) * VW);
    vf a1_1 = vload(acc + 9 * D + (c0 + 1) * VW);
    vf a1_2 = vload(acc + 9 * D + (c0 + 2) * VW);
    vf a1_3 = vload(acc + 9 * D + (c0 + 3) * VW);
    vf a2_0 = vload(acc + 10 * D + (c0 + 0) * VW);
    vf a2_1 = vload(acc + 10 * D + (c0 + 1) * VW);
    vf a2_2 = vload(acc + 10 * D + (c0 + 2) * VW);
    vf a2_3 = vload(acc + 10 * D + (c0 + 3) * VW);
    vf a3_0 = vload(acc + 11 * D + (c0 + 0) * VW);
    vf a3_1 = vload(acc + 11 * D + (c0 + 1) * VW);
    vf a3_2 = vload(acc + 11 * D + (c0 + 2) * VW);
    vf a3_3 = vload(acc + 11 * D + (c0 + 3) * VW);
    {
      const vf v0 = kvload(vr[0] + 2 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[0] + 2 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[0] + 2 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[0] + 2 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[32]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[33]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[34]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[35]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[1] + 2 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[1] + 2 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[1] + 2 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[1] + 2 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[36]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[37]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[38]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[39]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[2] + 2 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[2] + 2 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[2] + 2 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[2] + 2 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[40]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[41]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[42]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[43]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[3] + 2 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[3] + 2 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[3] + 2 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[3] + 2 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[44]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[45]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[46]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[47]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    vstore(acc + 8 * D + (c0 + 0) * VW, a0_0);
    vstore(acc + 8 * D + (c0 + 1) * VW, a0_1);
    vstore(acc + 8 * D + (c0 + 2) * VW, a0_2);
    vstore(acc + 8 * D + (c0 + 3) * VW, a0_3);
    vstore(acc + 9 * D + (c0 + 0) * VW, a1_0);
    vstore(acc + 9 * D + (c0 + 1) * VW, a1_1);
    vstore(acc + 9 * D + (c0 + 2) * VW, a1_2);
    vstore(acc + 9 * D + (c0 + 3) * VW, a1_3);
    vstore(acc + 10 * D + (c0 + 0) * VW, a2_0);
    vstore(acc + 10 * D + (c0 + 1) * VW, a2_1);
    vstore(acc + 10 * D + (c0 + 2) * VW, a2_2);
    vstore(acc + 10 * D + (c0 + 3) * VW, a2_3);
    vstore(acc + 11 * D + (c0 + 0) * VW, a3_0);
    vstore(acc + 11 * D + (c0 + 1) * VW, a3_1);
    vstore(acc + 11 * D + (c0 + 2) * VW, a3_2);
    vstore(acc + 11 * D + (c0 + 3) * VW, a3_3);
  }
  #pragma GCC unroll 8
  for (int c0 = 0; c0 < D / VW; c0 += 4) {
    vf a0_0 = vload(acc + 12 * D + (c0 + 0) * VW);
    vf a0_1 = vload(acc + 12 * D + (c0 + 1) * VW);
    vf a0_2 = vload(acc + 12 * D + (c0 + 2) * VW);
    vf a0_3 = vload(acc + 12 * D + (c0 + 3) * VW);
    vf a1_0 = vload(acc + 13 * D + (c0 + 0) * VW);
    vf a1_1 = vload(acc + 13 * D + (c0 + 1) * VW);
    vf a1_2 = vload(acc + 13 * D + (c0 + 2) * VW);
    vf a1_3 = vload(acc + 13 * D + (c0 + 3) * VW);
    vf a2_0 = vload(acc + 14 * D + (c0 + 0) * VW);
    vf a2_1 = vload(acc + 14 * D + (c0 + 1) * VW);
    vf a2_2 = vload(acc + 14 * D + (c0 + 2) * VW);
    vf a2_3 = vload(acc + 14 * D + (c0 + 3) * VW);
    vf a3_0 = vload(acc + 15 * D + (c0 + 0) * VW);
    vf a3_1 = vload(acc + 15 * D + (c0 + 1) * VW);
    vf a3_2 = vload(acc + 15 * D + (c0 + 2) * VW);
    vf a3_3 = vload(acc + 15 * D + (c0 + 3) * VW);
    {
      const vf v0 = kvload(vr[0] + 3 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[0] + 3 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[0] + 3 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[0] + 3 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[48]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[49]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[50]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[51]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[1] + 3 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[1] + 3 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[1] + 3 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[1] + 3 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[52]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[53]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[54]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[55]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[2] + 3 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[2] + 3 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[2] + 3 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[2] + 3 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[56]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[57]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[58]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[59]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[3] + 3 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[3] + 3 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[3] + 3 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[3] + 3 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[60]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[61]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[62]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[63]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    vstore(acc + 12 * D + (c0 + 0) * VW, a0_0);
    vstore(acc + 12 * D + (c0 + 1) * VW, a0_1);
    vstore(acc + 12 * D + (c0 + 2) * VW, a0_2);
    vstore(acc + 12 * D + (c0 + 3) * VW, a0_3);
    vstore(acc + 13 * D + (c0 + 0) * VW, a1_0);
    vstore(acc + 13 * D + (c0 + 1) * VW, a1_1);
    vstore(acc + 13 * D + (c0 + 2) * VW, a1_2);
    vstore(acc + 13 * D + (c0 + 3) * VW, a1_3);
    vstore(acc + 14 * D + (c0 + 0) * VW, a2_0);
    vstore(acc + 14 * D + (c0 + 1) * VW, a2_1);
    vstore(acc + 14 * D + (c0 + 2) * VW, a2_2);
    vstore(acc + 14 * D + (c0 + 3) * VW, a2_3);
    vstore(acc + 15 * D + (c0 + 0) * VW, a3_0);
    vstore(acc + 15 * D + (c0 + 1) * VW, a3_1);
    vstore(acc + 15 * D + (c0 + 2) * VW, a3_2);
    vstore(acc + 15 * D + (c0 + 3) * VW, a3_3);
  }
  #pragma GCC unroll 8
  for (int c0 = 0; c0 < D / VW; c0 += 4) {
    vf a0_0 = vload(acc + 16 * D + (c0 + 0) * VW);
    vf a0_1 = vload(acc + 16 * D + (c0 + 1) * VW);
    vf a0_2 = vload(acc + 16 * D + (c0 + 2) * VW);
    vf a0_3 = vload(acc + 16 * D + (c0 + 3) * VW);
    vf a1_0 = vload(acc + 17 * D + (c0 + 0) * VW);
    vf a1_1 = vload(acc + 17 * D + (c0 + 1) * VW);
    vf a1_2 = vload(acc + 17 * D + (c0 + 2) * VW);
    vf a1_3 = vload(acc + 17 * D + (c0 + 3) * VW);
    vf a2_0 = vload(acc + 18 * D + (c0 + 0) * VW);
    vf a2_1 = vload(acc + 18 * D + (c0 + 1) * VW);
    vf a2_2 = vload(acc + 18 * D + (c0 + 2) * VW);
    vf a2_3 = vload(acc + 18 * D + (c0 + 3) * VW);
    vf a3_0 = vload(acc + 19 * D + (c0 + 0) * VW);
    vf a3_1 = vload(acc + 19 * D + (c0 + 1) * VW);
    vf a3_2 = vload(acc + 19 * D + (c0 + 2) * VW);
    vf a3_3 = vload(acc + 19 * D + (c0 + 3) * VW);
    {
      const vf v0 = kvload(vr[0] + 4 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[0] + 4 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[0] + 4 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[0] + 4 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[64]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[65]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[66]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[67]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[1] + 4 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[1] + 4 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[1] + 4 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[1] + 4 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[68]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[69]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[70]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[71]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[2] + 4 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[2] + 4 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[2] + 4 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[2] + 4 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[72]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[73]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[74]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[75]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[3] + 4 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[3] + 4 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[3] + 4 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[3] + 4 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[76]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[77]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[78]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[79]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    vstore(acc + 16 * D + (c0 + 0) * VW, a0_0);
    vstore(acc + 16 * D + (c0 + 1) * VW, a0_1);
    vstore(acc + 16 * D + (c0 + 2) * VW, a0_2);
    vstore(acc + 16 * D + (c0 + 3) * VW, a0_3);
    vstore(acc + 17 * D + (c0 + 0) * VW, a1_0);
    vstore(acc + 17 * D + (c0 + 1) * VW, a1_1);
    vstore(acc + 17 * D + (c0 + 2) * VW, a1_2);
    vstore(acc + 17 * D + (c0 + 3) * VW, a1_3);
    vstore(acc + 18 * D + (c0 + 0) * VW, a2_0);
    vstore(acc + 18 * D + (c0 + 1) * VW, a2_1);
    vstore(acc + 18 * D + (c0 + 2) * VW, a2_2);
    vstore(acc + 18 * D + (c0 + 3) * VW, a2_3);
    vstore(acc + 19 * D + (c0 + 0) * VW, a3_0);
    vstore(acc + 19 * D + (c0 + 1) * VW, a3_1);
    vstore(acc + 19 * D + (c0 + 2) * VW, a3_2);
    vstore(acc + 19 * D + (c0 + 3) * VW, a3_3);
  }
  #pragma GCC unroll 8
  for (int c0 = 0; c0 < D / VW; c0 += 4) {
    vf a0_0 = vload(acc + 20 * D + (c0 + 0) * VW);
    vf a0_1 = vload(acc + 20 * D + (c0 + 1) * VW);
    vf a0_2 = vload(acc + 20 * D + (c0 + 2) * VW);
    vf a0_3 = vload(acc + 20 * D + (c0 + 3) * VW);
    vf a1_0 = vload(acc + 21 * D + (c0 + 0) * VW);
    vf a1_1 = vload(acc + 21 * D + (c0 + 1) * VW);
    vf a1_2 = vload(acc + 21 * D + (c0 + 2) * VW);
    vf a1_3 = vload(acc + 21 * D + (c0 + 3) * VW);
    vf a2_0 = vload(acc + 22 * D + (c0 + 0) * VW);
    vf a2_1 = vload(acc + 22 * D + (c0 + 1) * VW);
    vf a2_2 = vload(acc + 22 * D + (c0 + 2) * VW);
    vf a2_3 = vload(acc + 22 * D + (c0 + 3) * VW);
    vf a3_0 = vload(acc + 23 * D + (c0 + 0) * VW);
    vf a3_1 = vload(acc + 23 * D + (c0 + 1) * VW);
    vf a3_2 = vload(acc + 23 * D + (c0 + 2) * VW);
    vf a3_3 = vload(acc + 23 * D + (c0 + 3) * VW);
    {
      const vf v0 = kvload(vr[0] + 5 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[0] + 5 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[0] + 5 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[0] + 5 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[80]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[81]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[82]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[83]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[1] + 5 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[1] + 5 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[1] + 5 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[1] + 5 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[84]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[85]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[86]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[87]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[2] + 5 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[2] + 5 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[2] + 5 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[2] + 5 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[88]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[89]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[90]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[91]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[3] + 5 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[3] + 5 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[3] + 5 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[3] + 5 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[92]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[93]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[94]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[95]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    vstore(acc + 20 * D + (c0 + 0) * VW, a0_0);
    vstore(acc + 20 * D + (c0 + 1) * VW, a0_1);
    vstore(acc + 20 * D + (c0 + 2) * VW, a0_2);
    vstore(acc + 20 * D + (c0 + 3) * VW, a0_3);
    vstore(acc + 21 * D + (c0 + 0) * VW, a1_0);
    vstore(acc + 21 * D + (c0 + 1) * VW, a1_1);
    vstore(acc + 21 * D + (c0 + 2) * VW, a1_2);
    vstore(acc + 21 * D + (c0 + 3) * VW, a1_3);
    vstore(acc + 22 * D + (c0 + 0) * VW, a2_0);
    vstore(acc + 22 * D + (c0 + 1) * VW, a2_1);
    vstore(acc + 22 * D + (c0 + 2) * VW, a2_2);
    vstore(acc + 22 * D + (c0 + 3) * VW, a2_3);
    vstore(acc + 23 * D + (c0 + 0) * VW, a3_0);
    vstore(acc + 23 * D + (c0 + 1) * VW, a3_1);
    vstore(acc + 23 * D + (c0 + 2) * VW, a3_2);
    vstore(acc + 23 * D + (c0 + 3) * VW, a3_3);
  }
  #pragma GCC unroll 8
  for (int c0 = 0; c0 < D / VW; c0 += 4) {
    vf a0_0 = vload(acc + 24 * D + (c0 + 0) * VW);
    vf a0_1 = vload(acc + 24 * D + (c0 + 1) * VW);
    vf a0_2 = vload(acc + 24 * D + (c0 + 2) * VW);
    vf a0_3 = vload(acc + 24 * D + (c0 + 3) * VW);
    vf a1_0 = vload(acc + 25 * D + (c0 + 0) * VW);
    vf a1_1 = vload(acc + 25 * D + (c0 + 1) * VW);
    vf a1_2 = vload(acc + 25 * D + (c0 + 2) * VW);
    vf a1_3 = vload(acc + 25 * D + (c0 + 3) * VW);
    vf a2_0 = vload(acc + 26 * D + (c0 + 0) * VW);
    vf a2_1 = vload(acc + 26 * D + (c0 + 1) * VW);
    vf a2_2 = vload(acc + 26 * D + (c0 + 2) * VW);
    vf a2_3 = vload(acc + 26 * D + (c0 + 3) * VW);
    vf a3_0 = vload(acc + 27 * D + (c0 + 0) * VW);
    vf a3_1 = vload(acc + 27 * D + (c0 + 1) * VW);
    vf a3_2 = vload(acc + 27 * D + (c0 + 2) * VW);
    vf a3_3 = vload(acc + 27 * D + (c0 + 3) * VW);
    {
      const vf v0 = kvload(vr[0] + 6 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[0] + 6 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[0] + 6 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[0] + 6 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[96]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[97]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[98]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[99]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[1] + 6 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[1] + 6 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[1] + 6 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[1] + 6 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[100]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[101]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[102]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[103]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[2] + 6 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[2] + 6 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[2] + 6 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[2] + 6 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[104]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[105]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[106]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[107]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[3] + 6 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[3] + 6 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[3] + 6 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[3] + 6 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[108]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[109]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[110]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[111]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    vstore(acc + 24 * D + (c0 + 0) * VW, a0_0);
    vstore(acc + 24 * D + (c0 + 1) * VW, a0_1);
    vstore(acc + 24 * D + (c0 + 2) * VW, a0_2);
    vstore(acc + 24 * D + (c0 + 3) * VW, a0_3);
    vstore(acc + 25 * D + (c0 + 0) * VW, a1_0);
    vstore(acc + 25 * D + (c0 + 1) * VW, a1_1);
    vstore(acc + 25 * D + (c0 + 2) * VW, a1_2);
    vstore(acc + 25 * D + (c0 + 3) * VW, a1_3);
    vstore(acc + 26 * D + (c0 + 0) * VW, a2_0);
    vstore(acc + 26 * D + (c0 + 1) * VW, a2_1);
    vstore(acc + 26 * D + (c0 + 2) * VW, a2_2);
    vstore(acc + 26 * D + (c0 + 3) * VW, a2_3);
    vstore(acc + 27 * D + (c0 + 0) * VW, a3_0);
    vstore(acc + 27 * D + (c0 + 1) * VW, a3_1);
    vstore(acc + 27 * D + (c0 + 2) * VW, a3_2);
    vstore(acc + 27 * D + (c0 + 3) * VW, a3_3);
  }
  #pragma GCC unroll 8
  for (int c0 = 0; c0 < D / VW; c0 += 4) {
    vf a0_0 = vload(acc + 28 * D + (c0 + 0) * VW);
    vf a0_1 = vload(acc + 28 * D + (c0 + 1) * VW);
    vf a0_2 = vload(acc + 28 * D + (c0 + 2) * VW);
    vf a0_3 = vload(acc + 28 * D + (c0 + 3) * VW);
    vf a1_0 = vload(acc + 29 * D + (c0 + 0) * VW);
    vf a1_1 = vload(acc + 29 * D + (c0 + 1) * VW);
    vf a1_2 = vload(acc + 29 * D + (c0 + 2) * VW);
    vf a1_3 = vload(acc + 29 * D + (c0 + 3) * VW);
    vf a2_0 = vload(acc + 30 * D + (c0 + 0) * VW);
    vf a2_1 = vload(acc + 30 * D + (c0 + 1) * VW);
    vf a2_2 = vload(acc + 30 * D + (c0 + 2) * VW);
    vf a2_3 = vload(acc + 30 * D + (c0 + 3) * VW);
    vf a3_0 = vload(acc + 31 * D + (c0 + 0) * VW);
    vf a3_1 = vload(acc + 31 * D + (c0 + 1) * VW);
    vf a3_2 = vload(acc + 31 * D + (c0 + 2) * VW);
    vf a3_3 = vload(acc + 31 * D + (c0 + 3) * VW);
    {
      const vf v0 = kvload(vr[0] + 7 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[0] + 7 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[0] + 7 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[0] + 7 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[112]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[113]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[114]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[115]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[1] + 7 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[1] + 7 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[1] + 7 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[1] + 7 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[116]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[117]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[118]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[119]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[2] + 7 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[2] + 7 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[2] + 7 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[2] + 7 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[120]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[121]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[122]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[123]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    {
      const vf v0 = kvload(vr[3] + 7 * D + (c0 + 0) * VW);
      const vf v1 = kvload(vr[3] + 7 * D + (c0 + 1) * VW);
      const vf v2 = kvload(vr[3] + 7 * D + (c0 + 2) * VW);
      const vf v3 = kvload(vr[3] + 7 * D + (c0 + 3) * VW);
      { const vf w = vsplat(sc[124]); a0_0 += w * v0; a0_1 += w * v1; a0_2 += w * v2; a0_3 += w * v3; }
      { const vf w = vsplat(sc[125]); a1_0 += w * v0; a1_1 += w * v1; a1_2 += w * v2; a1_3 += w * v3; }
      { const vf w = vsplat(sc[126]); a2_0 += w * v0; a2_1 += w * v1; a2_2 += w * v2; a2_3 += w * v3; }
      { const vf w = vsplat(sc[127]); a3_0 += w * v0; a3_1 += w * v1; a3_2 += w * v2; a3_3 += w * v3; }
    }
    vstore(acc + 28 * D + (c0 + 0) * VW, a0_0);
    vstore(acc + 28 * D + (c0 + 1) * VW, a0_1);
    vstore(acc + 28 * D + (c0 + 2) * VW, a0_2);
    vstore(acc + 28 * D + (c0 + 3) * VW, a0_3);
    vstore(acc + 29 * D + (c0 + 0) * VW, a1_0);
    vstore(acc + 29 * D + (c0 + 1) * VW, a1_1);
    vstore(acc + 29 * D + (c0 + 2) * VW, a1_2);
    vstore(acc + 29 * D + (c0 + 3) * VW, a1_3);
    vstore(acc + 30 * D + (c0 + 0) * VW, a2_0);
    vstore(acc + 30 * D + (c0 + 1) * VW, a2_1);
    vstore(acc + 30 * D + (c0 + 2) * VW, a2_2);
    vstore(acc + 30 * D + (c0 + 3) * VW, a2_3);
    vstore(acc + 31 * D + (c0 + 0) * VW, a3_0);
    vstore(acc + 31 * D + (c0 + 1) * VW, a3_1);
    vstore(acc + 31 * D + (c0 + 2) * VW, a3_2);
    vstore(acc + 31 * D + (c0 + 3) * VW, a3_3);
  }
}

#define GROUP (HQ / HKV)
#define QT (HT * GROUP)
#define ROW (HKV * D)
#define STEPS ((TS + US - 1) / US)
#define NCHP (NCH * VW)

// span_start is where a sequence of n tokens starts attending (window).
static inline int64_t span_start(int64_t n) { return WINDOW > 0 && n > WINDOW ? n - WINDOW : 0; }

// run_at is the run of at most TS tokens starting at token t of [t, e):
// its length (never past the end of t's block) and its rows' offset.
static inline int run_at(const int32_t *table, int64_t t, int64_t e, int64_t *off) {
  if (t >= e) { *off = 0; return 0; }
  int64_t in = t % BS;
  int64_t n = BS - in;
  if (n > TS) n = TS;
  if (n > e - t) n = e - t;
  *off = ((int64_t)table[t / BS] * BS + in) * ROW;
  return (int)n;
}

#ifndef PF_HINT
#define PF_HINT 3
#endif
#if PF > 0
// prefetch_rows brings n rows of HT heads at p into the caches.
static inline void prefetch_rows(const elem_t *p, int n) {
  for (int i = 0; i < n; i++) {
    const char *a = (const char *)(p + (int64_t)i * ROW);
    for (int64_t o = 0; o < HT * D * (int64_t)sizeof(elem_t); o += 64) __builtin_prefetch(a + o, 0, PF_HINT);
  }
}
#endif

// item computes partition p of sequence b for KV heads [h0, h0 + HT): into
// out when the sequence has one partition, else into the partial (acc, m,
// l) slots of its heads, GROUP·(D + 2) floats each. zrow is a zero row.
static void item(const elem_t *q, const elem_t *kc, const elem_t *vc, const int32_t *table, int64_t n, int64_t b, int64_t h0,
                 int64_t p, int64_t parts, float *partial, elem_t *out, const elem_t *zrow) {
  float qs[QT * D] __attribute__((aligned(64)));
  float acc[QT * D] __attribute__((aligned(64)));
  float m[QT], l[QT];
  for (int i = 0; i < QT; i++) {
    m[i] = -__builtin_inff();
    l[i] = 0;
    for (int e = 0; e < D; e++) {
      qs[i * D + e] = to_f32(q[(b * HQ + h0 * GROUP + i) * D + e]) * SCALE_LOG2E;
      acc[i * D + e] = 0;
    }
  }
  int64_t t0 = span_start(n), t1 = n;
#if PART > 0
  if (parts > 1) {
    t0 += p * PART;
    t1 = t0 + PART < n ? t0 + PART : n;
  }
#endif
  // Streams: NS ranges of a whole number of tiles each.
  int64_t pos[NS], end[NS];
  {
    int64_t per = (t1 - t0 + NS - 1) / NS;
    per = (per + TS - 1) / TS * TS;
    for (int s = 0; s < NS; s++) {
      pos[s] = t0 + s * per < t1 ? t0 + s * per : t1;
      end[s] = pos[s] + per < t1 ? pos[s] + per : t1;
    }
  }
  // Software pipeline: the q·k steps of tile j run beside the p·V steps
  // of tile j − 1, so that K and V stream together and neither phase
  // leaves the memory system idle. vr and sc alternate between two tiles.
  const elem_t *kr[STEPS * US * NS], *vr[2][STEPS * US * NS];
  float sc[2][STEPS][NCHP] __attribute__((aligned(64)));
  int prev_steps = 0;
#if FAST_SM
  vf mh[HT], lh[HT];
  for (int h = 0; h < HT; h++) { mh[h] = vsplat(-__builtin_inff()); lh[h] = vsplat(0.0f); }
#endif
  for (int cur = 0;; cur ^= 1) {
    int ns[NS], slots = 0;
    const elem_t *kb[NS], *vb[NS];
    for (int s = 0; s < NS; s++) {
      int64_t off;
      ns[s] = run_at(table, pos[s], end[s], &off);
      kb[s] = kc + off + h0 * D;
      vb[s] = vc + off + h0 * D;
      slots = ns[s] > slots ? ns[s] : slots;
    }
    if (slots == 0 && prev_steps == 0) break;
    const int steps = (slots + US - 1) / US;
    int full = 1;
    for (int i = 0; i < steps * US; i++)
      for (int s = 0; s < NS; s++) {
        int ok = i < ns[s];
        full &= ok;
        kr[i * NS + s] = ok ? kb[s] + (int64_t)i * ROW : zrow;
        vr[cur][i * NS + s] = ok ? vb[s] + (int64_t)i * ROW : zrow;
      }
#if PF > 0
    // The rows PF tiles ahead in every stream, prefetched a step at a time.
    const elem_t *pk[NS], *pv[NS];
    int pn[NS];
    for (int s = 0; s < NS; s++) {
      int64_t t = pos[s] + ns[s], off = 0;
      int nn = 0;
      for (int a = 0; a < PF; a++) {
        nn = run_at(table, t, end[s], &off);
        if (a + 1 < PF) t += nn;
      }
      pk[s] = kc + off + h0 * D;
      pv[s] = vc + off + h0 * D;
      pn[s] = nn;
    }
    const int pper = (TS + STEPS - 1) / STEPS;
#endif
    for (int st = 0; st < steps || st < prev_steps; st++) {
#if PF > 0
      for (int s = 0; s < NS; s++) {
        int lo = st * pper, hi = lo + pper < pn[s] ? lo + pper : pn[s];
        if (hi > lo) { prefetch_rows(pk[s] + (int64_t)lo * ROW, hi - lo); prefetch_rows(pv[s] + (int64_t)lo * ROW, hi - lo); }
      }
#endif
      if (st < steps) step_qk(kr + st * US * NS, qs, sc[cur][st]);
      if (st < prev_steps) step_pv(vr[cur ^ 1] + st * US * NS, sc[cur ^ 1][st], acc);
    }
    prev_steps = steps;
    if (steps == 0) continue;
    if (!full) {
      // Slots past a stream's run weigh nothing: −inf.
      int lim[NCHP];
      for (int it = 0; it < NCHP; it++) {
        int s = it / GROUP % NS, u = it / (GROUP * NS * HT);
        lim[it] = it < NIT ? ns[s] - u : 0;
      }
      for (int st = 0; st < steps; st++)
        for (int c = 0; c < NCH; c++) {
          vi keep;
          memcpy(&keep, lim + c * VW, sizeof keep);
          keep = keep > st * US;
          vf x = vload(&sc[cur][st][c * VW]);
          vstore(&sc[cur][st][c * VW], (vf)(((vi)x & keep) | ((vi)vsplat(-__builtin_inff()) & ~keep)));
        }
    }
    // One rescale per tile and query head (acc holds every earlier tile
    // now), then the weights 2^(s − max).
#if FAST_SM
    // The CPH chunks of KV head h hold lanes (stream, query head),
    // s·GROUP + g: the tile's max and sum of query head g are butterflies
    // over the stream bits, which leave them in every lane of g, the
    // layout mh and lh keep.
    for (int h = 0; h < HT; h++) {
      vf mx = vload(&sc[cur][0][h * CPH * VW]);
      for (int st = 0; st < steps; st++)
        for (int c = h * CPH; c < (h + 1) * CPH; c++) mx = vmax(mx, vload(&sc[cur][st][c * VW]));
      mx = bfly_max(mx);
      vi up = mx > mh[h];
      int any = 0;
      for (int g = 0; g < GROUP; g++) any |= up[g];
      if (any) {
        vf mnew = vmax(mh[h], mx);
        vf alpha = vexp2(mh[h] - mnew);
        lh[h] *= alpha;
        mh[h] = mnew;
        for (int g = 0; g < GROUP; g++) {
          if (!up[g]) continue;
          float *a = acc + (h * GROUP + g) * D;
          vf va = vsplat(alpha[g]);
          for (int c = 0; c < D / VW; c++) vstore(a + c * VW, vload(a + c * VW) * va);
        }
      }
      vf sum = vsplat(0.0f);
      for (int st = 0; st < steps; st++)
        for (int c = h * CPH; c < (h + 1) * CPH; c++) {
          vf w = vexp2(vload(&sc[cur][st][c * VW]) - mh[h]);
          vstore(&sc[cur][st][c * VW], w);
          sum += w;
        }
      lh[h] += bfly_add(sum);
    }
#else
    float mt[QT], red[NCHP] __attribute__((aligned(64)));
    for (int c = 0; c < NCH; c++) {
      vf mv = vload(&sc[cur][0][c * VW]);
      for (int st = 1; st < steps; st++) {
        vf x = vload(&sc[cur][st][c * VW]);
        vi gt = x > mv;
        mv = (vf)(((vi)x & gt) | ((vi)mv & ~gt));
      }
      vstore(red + c * VW, mv);
    }
    for (int i = 0; i < QT; i++) mt[i] = -__builtin_inff();
    for (int it = 0; it < NIT; it++) {
      int qh = it / (GROUP * NS) % HT * GROUP + it % GROUP;
      mt[qh] = red[it] > mt[qh] ? red[it] : mt[qh];
    }
    for (int i = 0; i < QT; i++) {
      if (mt[i] > m[i]) {
        float alpha = m[i] == -__builtin_inff() ? 0.0f : sexp2(m[i] - mt[i]);
        m[i] = mt[i];
        l[i] *= alpha;
        vf va = vsplat(alpha);
        for (int c = 0; c < D / VW; c++) vstore(acc + i * D + c * VW, vload(acc + i * D + c * VW) * va);
      }
    }
    for (int it = 0; it < NCHP; it++) red[it] = it < NIT ? m[it / (GROUP * NS) % HT * GROUP + it % GROUP] : 0.0f;
    for (int c = 0; c < NCH; c++) {
      vf M = vload(red + c * VW), sum = vsplat(0.0f);
      for (int st = 0; st < steps; st++) {
        vf w = vexp2(vload(&sc[cur][st][c * VW]) - M);
        vstore(&sc[cur][st][c * VW], w);
        sum += w;
      }
      vstore(red + c * VW, sum);
    }
    for (int it = 0; it < NIT; it++) l[it / (GROUP * NS) % HT * GROUP + it % GROUP] += red[it];
#endif
    for (int s = 0; s < NS; s++) pos[s] += ns[s];
  }
#if FAST_SM
  for (int h = 0; h < HT; h++)
    for (int g = 0; g < GROUP; g++) { m[h * GROUP + g] = mh[h][g]; l[h * GROUP + g] = lh[h][g]; }
#endif
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
