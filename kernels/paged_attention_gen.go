package kernels

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"llmir/schedule"
)

// vecDomain are the vector widths (f32 lanes) that divide n, up to the
// hardware's, widest last; 1 when none does.
func vecDomain(hw Hardware, n int64) []int64 {
	var out []int64
	for _, v := range []int64{4, 8, 16} {
		if v <= hw.lanes() && n%v == 0 {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		out = []int64{1}
	}
	return out
}

// headsDomain are the KV heads per task: powers of two dividing kvHeads,
// and kvHeads itself.
func headsDomain(kvHeads int64) []int64 {
	var out []int64
	for h := int64(1); h < kvHeads; h *= 2 {
		if kvHeads%h == 0 {
			out = append(out, h)
		}
	}
	return append(out, kvHeads)
}

// Knobs is the design space:
//   - split: tokens per KV partition (flash-decoding); 0 is off. Each
//     partition's online softmax state (max, sum, unnormalised output) is
//     merged with the others' by log-sum-exp in a second pass.
//   - parallel: 0 runs (sequence, head group) tasks statically over
//     threads, each doing its partitions in turn; 1 runs every (sequence,
//     head group, partition) item under a dynamic schedule, which is what
//     balances a ragged batch or a batch smaller than the thread count.
//   - vec: f32 lanes of the dot products and of the p·V accumulation.
//   - unroll: unroll of the head_dim loops of q·k and p·V.
//   - heads: KV heads per task (HT, the head group); with all of them a
//     token's K (and V) row is one contiguous range, every byte of which
//     the task uses, instead of one head's slice of each row.
//   - prefetch: tiles ahead whose K and V rows are software-prefetched,
//     spread over the current tile's steps (0: the hardware prefetcher
//     alone).
//   - tile: tokens per stream per online-softmax step (scores of the tile,
//     one rescale, then p·V), at most a block.
//   - streams: independent token ranges of a task walked side by side, a
//     tile taking its tokens from each. One core reads a random sequence
//     of small blocks at half its streaming bandwidth (each jump restarts
//     the hardware prefetcher); a few concurrent streams overlap those
//     restarts and read at full bandwidth.
func (k PagedAttention) Knobs(hw Hardware) Knobs {
	return Knobs{
		{"split", []int64{0, 256, 512, 1024, 2048, 4096}},
		{"parallel", []int64{0, 1}},
		{"vec", vecDomain(hw, k.HeadDim)},
		{"unroll", []int64{1, 2, 4, 8}},
		{"heads", headsDomain(k.KVHeads)},
		{"prefetch", []int64{0, 1, 2}},
		{"tile", []int64{1, 2, 4, 8, 16}},
		{"streams", []int64{1, 2, 4, 8}},
	}
}

// Space samples every knob.
func (k PagedAttention) Space(s *schedule.Schedule, hw Hardware) error {
	return k.Knobs(hw).Sample(s)
}

// Default: the widest vector, every KV head in one task (each token's K
// and V rows one contiguous range), four streams of four-token tiles, the
// hardware prefetcher alone, dynamic items, and KV split only when the
// sequences are too few to give every thread four tasks: then the largest
// partition (at least 512 tokens) that does.
func (k PagedAttention) Default(s *schedule.Schedule, hw Hardware) error {
	ks := k.Knobs(hw)
	vec := ks[2].Values[len(ks[2].Values)-1]
	split := int64(0)
	threads := int64(max(hw.Threads, 1))
	tasks := k.Batch
	if tasks < 4*threads {
		longest := int64(0)
		for _, n := range k.lengths() {
			b, e := k.span(n)
			longest = max(longest, e-b)
		}
		for _, p := range []int64{4096, 2048, 1024, 512} {
			if longest > p && tasks*((longest+p-1)/p) >= 4*threads {
				split = p
				break
			}
		}
		if split == 0 && longest > 512 {
			split = 512
		}
	}
	return ks.Choose(s, map[string]int64{"split": split, "parallel": 1, "vec": vec, "unroll": 8, "heads": k.KVHeads,
		"prefetch": 0, "tile": 4, "streams": 4})
}

// pagedPlan is the static shape of one instantiation: a step is U slots
// of every stream; its P items (u, h, s, g) — slot, KV head, stream,
// query head of the group, in that order — are the step's dot products,
// reduced VW at a time (NCH chunks, the last padded).
type pagedPlan struct {
	vw, nv, g, ht, s, u, ts, p, nch, cb, unroll int64
}

func (k PagedAttention) plan(kn map[string]int64) pagedPlan {
	pl := pagedPlan{vw: kn["vec"], g: k.group(), ht: kn["heads"], s: kn["streams"], ts: kn["tile"], unroll: kn["unroll"]}
	pl.nv = k.HeadDim / pl.vw
	per := pl.ht * pl.s * pl.g
	pl.u = min(pl.vw/gcd(pl.vw, per), pl.ts)
	pl.p = pl.u * per
	pl.nch = (pl.p + pl.vw - 1) / pl.vw
	// p·V keeps G × CB accumulators in registers: at most 16 of the 32,
	// CB dividing the head's vectors.
	pl.cb = 1
	for c := pl.nv; c >= 1; c-- {
		if pl.nv%c == 0 && c*pl.g <= 16 {
			pl.cb = c
			break
		}
	}
	return pl
}

// fastSoftmax reports whether a chunk is one KV head's (stream, query
// head) lanes, s·G + g, so that per-query-head reductions are butterflies
// over the stream bits of the lane index.
func (pl pagedPlan) fastSoftmax() bool {
	return pl.u == 1 && pl.vw%pl.g == 0 && (pl.g*pl.s)%pl.vw == 0
}

// butterfliesC defines bfly_max and bfly_add: after them every lane holds
// the max (sum) over the lanes that differ from it only in bits ≥ g.
func butterfliesC(vw, g int64) string {
	var b strings.Builder
	for _, op := range []struct{ name, comb string }{{"bfly_max", "x = vmax(x, y);"}, {"bfly_add", "x = x + y;"}} {
		fmt.Fprintf(&b, "static inline vf %s(vf x) {\n", op.name)
		for d := g; d < vw; d *= 2 {
			lanes := make([]string, vw)
			for j := range lanes {
				lanes[j] = strconv.FormatInt(int64(j)^d, 10)
			}
			fmt.Fprintf(&b, "  { vf y = __builtin_shuffle(x, (vi){%s}); %s }\n", strings.Join(lanes, ", "), op.comb)
		}
		b.WriteString("  return x;\n}\n")
	}
	return b.String()
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// item is the (u, h, s, g) of item i of a step, ok false for padding.
func (pl pagedPlan) item(i int64) (u, h, s, g int64, ok bool) {
	if i >= pl.p {
		return 0, 0, 0, 0, false
	}
	g = i % pl.g
	s = i / pl.g % pl.s
	h = i / (pl.g * pl.s) % pl.ht
	u = i / (pl.g * pl.s * pl.ht)
	return u, h, s, g, true
}

// EmitC instantiates the C template for the knobs in s.
func (k PagedAttention) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	kn, err := k.Knobs(hw).Read(s)
	if err != nil {
		return "", fmt.Errorf("paged_attention %s: %w", k.Name(), err)
	}
	scale := k.Scale
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(k.HeadDim))
	}
	pl := k.plan(kn)
	var b strings.Builder
	fmt.Fprintf(&b, "// llmir paged_attention template: %s\n", k.Name())
	fmt.Fprintf(&b, "// knobs: split=%d parallel=%d vec=%d unroll=%d heads=%d prefetch=%d tile=%d streams=%d\n",
		kn["split"], kn["parallel"], kn["vec"], kn["unroll"], kn["heads"], kn["prefetch"], kn["tile"], kn["streams"])
	defs := []struct {
		name string
		v    int64
	}{
		{"HQ", k.QHeads}, {"HKV", k.KVHeads}, {"D", k.HeadDim}, {"BS", k.BlockSize}, {"WINDOW", k.Window},
		{"VW", pl.vw}, {"PF", kn["prefetch"]}, {"TS", pl.ts}, {"HT", pl.ht}, {"NS", pl.s}, {"US", pl.u},
		{"NIT", pl.p}, {"NCH", pl.nch}, {"PART", kn["split"]}, {"PAR_ITEMS", kn["parallel"]}, {"ELEM_BF16", boolInt(k.Elem == schedule.BF16)},
	}
	for _, d := range defs {
		fmt.Fprintf(&b, "#define %s %d\n", d.name, d.v)
	}
	fmt.Fprintf(&b, "#define SCALE_LOG2E %.9gf\n", scale*math.Log2E)
	fast := pl.fastSoftmax()
	fmt.Fprintf(&b, "#define FAST_SM %d\n#define CPH %d\n", boolInt(fast), max(pl.g*pl.s/pl.vw, 1))
	b.WriteString(pagedCommonC(pl.vw))
	if fast {
		b.WriteString(butterfliesC(pl.vw, pl.g))
	}
	b.WriteString(pagedStepsC(pl))
	b.WriteString(strings.ReplaceAll(pagedAttentionC, "ENTRY", entry))
	return b.String(), nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// pagedStepsC writes step_qk and step_pv, unrolled over the plan's items.
//
// step_qk computes a step's P dot products VW at a time. Each chunk's VW
// products are left as vectors of partial sums over head_dim (one FMA
// chain each: every K vector loaded feeds the G query heads of its group,
// every q vector the S streams) and reduce_tokens folds the chunk into one
// vector of VW scores with log2 VW shuffle-and-add levels, instead of a
// horizontal sum per dot product, which would cost more than the product.
//
// step_pv adds the step's weighted V rows into acc, per KV head and CB
// vectors of head_dim at a time: the G query heads' accumulators stay in
// registers over the U × S rows of the step, so acc is loaded and stored
// once per step.
func pagedStepsC(pl pagedPlan) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("static inline void step_qk(const elem_t *const *kr, const float *qs, float *sc) {")
	for ch := int64(0); ch < pl.nch; ch++ {
		p("  {")
		type ref struct{ a, b int64 }
		kIdx, qIdx := map[ref]int{}, map[ref]int{}
		var kRefs, qRefs []ref
		var fma []string
		accs := make([]string, pl.vw)
		for j := int64(0); j < pl.vw; j++ {
			accs[j] = fmt.Sprintf("p%d", j)
			u, h, s, g, ok := pl.item(ch*pl.vw + j)
			if !ok {
				continue
			}
			kr, qr := ref{u*pl.s + s, h}, ref{h*pl.g + g, 0}
			if _, seen := kIdx[kr]; !seen {
				kIdx[kr] = len(kRefs)
				kRefs = append(kRefs, kr)
			}
			if _, seen := qIdx[qr]; !seen {
				qIdx[qr] = len(qRefs)
				qRefs = append(qRefs, qr)
			}
			fma = append(fma, fmt.Sprintf("p%d += q%d * k%d;", j, qIdx[qr], kIdx[kr]))
		}
		p("    vf %s;", strings.Join(func() []string {
			out := make([]string, len(accs))
			for i, a := range accs {
				out[i] = a + " = vsplat(0.0f)"
			}
			return out
		}(), ", "))
		p("    #pragma GCC unroll %d", pl.unroll)
		p("    for (int c = 0; c < D / VW; c++) {")
		for i, r := range kRefs {
			p("      vf k%d = kvload(kr[%d] + %d * D + c * VW); IN_REG(k%d);", i, r.a, r.b, i)
		}
		for i, r := range qRefs {
			p("      vf q%d = vload(qs + %d * D + c * VW); IN_REG(q%d);", i, r.a, i)
		}
		p("      %s", strings.Join(fma, " "))
		p("    }")
		p("    vf R[VW] = {%s};", strings.Join(accs, ", "))
		p("    vstore(sc + %d, reduce_tokens(R));", ch*pl.vw)
		p("  }")
	}
	p("}")
	p("")
	p("static inline void step_pv(const elem_t *const *vr, const float *sc, float *acc) {")
	for h := int64(0); h < pl.ht; h++ {
		p("  #pragma GCC unroll %d", pl.unroll)
		p("  for (int c0 = 0; c0 < D / VW; c0 += %d) {", pl.cb)
		for g := int64(0); g < pl.g; g++ {
			for c := int64(0); c < pl.cb; c++ {
				p("    vf a%d_%d = vload(acc + %d * D + (c0 + %d) * VW);", g, c, h*pl.g+g, c)
			}
		}
		for u := int64(0); u < pl.u; u++ {
			for s := int64(0); s < pl.s; s++ {
				p("    {")
				for c := int64(0); c < pl.cb; c++ {
					p("      const vf v%d = kvload(vr[%d] + %d * D + (c0 + %d) * VW);", c, u*pl.s+s, h, c)
				}
				for g := int64(0); g < pl.g; g++ {
					it := ((u*pl.ht+h)*pl.s+s)*pl.g + g
					var fs []string
					for c := int64(0); c < pl.cb; c++ {
						fs = append(fs, fmt.Sprintf("a%d_%d += w * v%d;", g, c, c))
					}
					p("      { const vf w = vsplat(sc[%d]); %s }", it, strings.Join(fs, " "))
				}
				p("    }")
			}
		}
		for g := int64(0); g < pl.g; g++ {
			for c := int64(0); c < pl.cb; c++ {
				p("    vstore(acc + %d * D + (c0 + %d) * VW, a%d_%d);", h*pl.g+g, c, g, c)
			}
		}
		p("  }")
	}
	p("}")
	return b.String()
}

// pagedCommonC is the prelude shared by the paged kernels: the vector type
// of vw f32 lanes, loads and stores of the storage type (bf16 widened by a
// shift), a vector exp2 and the token reduction.
func pagedCommonC(vw int64) string {
	var b strings.Builder
	b.WriteString(`#include <stdint.h>
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
`)
	b.WriteString(reduceTokensC(vw))
	return b.String()
}

// reduceTokensC defines LANES (0, 1, …, vw−1) and reduce_tokens(P), whose
// lane t is the sum of P[t]'s lanes (reduceLanesC).
func reduceTokensC(vw int64) string {
	lanes := make([]string, vw)
	for i := range lanes {
		lanes[i] = strconv.Itoa(i)
	}
	return fmt.Sprintf("#define LANES ((vi){%s})\n", strings.Join(lanes, ", ")) +
		reduceLanesC(vw, "reduce_tokens", func(a, b string) string { return a + " + " + b })
}

// reduceLanesC defines name(P) over vw vectors, whose lane t combines
// P[t]'s lanes: at each level pairs of vectors are merged by two shuffles
// and combine (an add, a max), halving the partials per vector and
// doubling the vectors reduced into one — vw−1 merges for vw horizontal
// reductions, instead of log2(vw) dependent steps each.
func reduceLanesC(vw int64, name string, combine func(a, b string) string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "static inline vf %s(const vf *P) {\n", name)
	cur := make([]string, vw)
	for i := range cur {
		cur[i] = fmt.Sprintf("P[%d]", i)
	}
	for lvl, k := 1, vw; k > 1; lvl, k = lvl+1, k/2 {
		// Inputs hold vw/k tokens of k partials each; outputs twice the
		// tokens with k/2 partials.
		lo, hi := make([]string, vw), make([]string, vw)
		for j := int64(0); j < vw; j++ {
			src, jj := int64(0), j
			if j >= vw/2 {
				src, jj = vw, j-vw/2
			}
			tok, r := jj/(k/2), jj%(k/2)
			lo[j] = strconv.FormatInt(src+tok*k+r, 10)
			hi[j] = strconv.FormatInt(src+tok*k+r+k/2, 10)
		}
		var next []string
		for i := 0; i < len(cur); i += 2 {
			v := fmt.Sprintf("r%d_%d", lvl, i/2)
			fmt.Fprintf(&b, "  vf %s = %s;\n", v, combine(
				fmt.Sprintf("__builtin_shuffle(%s, %s, (vi){%s})", cur[i], cur[i+1], strings.Join(lo, ", ")),
				fmt.Sprintf("__builtin_shuffle(%s, %s, (vi){%s})", cur[i], cur[i+1], strings.Join(hi, ", "))))
			next = append(next, v)
		}
		cur = next
	}
	fmt.Fprintf(&b, "  return %s;\n}\n", cur[0])
	return b.String()
}

// pagedAttentionC is the decode attention template; ENTRY is replaced by
// the entry point's name and the knobs arrive as macros.
//
// A task is (sequence, HT consecutive KV heads, partition). Its tokens are
// cut into S equal ranges (streams) walked side by side: a tile takes up
// to TS tokens from each stream, never crossing a block, so each stream's
// part of a tile is one contiguous run of K rows (and of V rows), read in
// address order. Per tile: the scores of all its tokens and query heads
// (step_qk, U slots of every stream a step), one online-softmax rescale
// per query head, the weights 2^(s − max) (vexp2), then p·V (step_pv).
// Slots past a stream's run read a zero row and weigh nothing.
const pagedAttentionC = `
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

int ENTRY(void *const *bufs, const int64_t *dims) {
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
`
