package kernels

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"llmir/ir"
	"llmir/kernels/ref"
	"llmir/schedule"
)

// QuantLinear is the weight-only quantized linear layer out[M, N] =
// Σ_k x[M, k] · q[N, k] · scales[N, k/Group]: symmetric int8 or int4
// weights (no zero point) with one f32 scale per Group consecutive inputs
// of a row (per-channel int8 is Group = K). int4 weights are packed two to
// a byte along k, low nibble first (ref.PackInt4), so w is u8 [N, K/2];
// int8 weights are i8 [N, K]. M (tokens) is dynamic, compiled for MBucket.
//
// It is a template kernel: the loop-nest IR has no nibble unpacking, so
// EmitC writes the C from the knob values. Decode shapes (bucket ≤ 16)
// stream w once: JU rows of w per tile are unpacked to f32 vectors and
// multiplied against MR rows of x held in registers, each group's dot
// product is accumulated on its own and scaled once. Prefill shapes
// dequantize a panel of w into a packed f32 buffer and run a register-tiled
// GEMM over it, so the unpacking is amortised over all M rows.
type QuantLinear struct {
	M, N, K int64
	MBucket int64 // 0: M itself
	Bits    int64 // 8 or 4
	Group   int64 // inputs per scale; K for per-channel
	// IR is the module workload the kernel was made from (FromWorkload);
	// when set it is the kernel's Workload.
	IR *ir.Workload
}

func init() { register("llmir.quantized_linear", quantLinearFromWorkload) }

// quantLinearFromWorkload reads bits and group_size from the workload's
// attributes (MLIR text such as "4 : i64") and flattens x's leading dims
// into M, as linearFromWorkload does. The IR's int4 weight is the logical
// [N, K] i4 tensor; the kernel's buffer is its packed u8 [N, K/2] form.
func quantLinearFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkArity(w, 3, 1); err != nil {
		return nil, err
	}
	bits, err := requiredIntAttr(w.Attrs, "bits")
	if err != nil {
		return nil, err
	}
	group, err := requiredIntAttr(w.Attrs, "group_size")
	if err != nil {
		return nil, err
	}
	x, wt, sc := w.Inputs[0], w.Inputs[1], w.Inputs[2]
	want := map[int64]string{8: "i8", 4: "i4"}[bits]
	if want == "" {
		return nil, fmt.Errorf("attribute bits = %d, want 4 or 8", bits)
	}
	if len(wt.Shape) != 2 || wt.DType != want {
		return nil, fmt.Errorf("weight %s, want [N, K] of %s for bits = %d", wt, want, bits)
	}
	n, k := wt.Shape[0], wt.Shape[1]
	if x.DType != "f32" || sc.DType != "f32" {
		return nil, unsupported("activation %s and scales %s must be f32 (the quantized kernels read f32)", x.DType, sc.DType)
	}
	if x.Shape[len(x.Shape)-1] != k {
		return nil, fmt.Errorf("activation %v and weight %v do not match", x.Shape, wt.Shape)
	}
	if group < 1 || k%group != 0 {
		return nil, fmt.Errorf("attribute group_size = %d does not divide the input dim %d", group, k)
	}
	if len(sc.Shape) != 2 || sc.Shape[0] != n || sc.Shape[1] != k/group {
		return nil, fmt.Errorf("scales %v, want [%d, %d] (one per row and group of %d)", sc.Shape, n, k/group, group)
	}
	q := QuantLinear{M: rows(x), N: n, K: k, Bits: bits, Group: group, IR: &w}
	if err := q.check(); err != nil {
		return nil, err
	}
	return q, nil
}

// requiredIntAttr parses an integer attribute printed as MLIR text ("4 : i64", or
// a bare "4").
func requiredIntAttr(attrs map[string]string, name string) (int64, error) {
	s, ok := attrs[name]
	if !ok {
		return 0, fmt.Errorf("attribute %s is missing", name)
	}
	num, typ, _ := strings.Cut(s, ":")
	v, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || (typ != "" && !strings.HasPrefix(strings.TrimSpace(typ), "i")) {
		return 0, fmt.Errorf("attribute %s = %q is not an integer", name, s)
	}
	return v, nil
}

func (q QuantLinear) bucket() int64 {
	if q.MBucket > 0 {
		return q.MBucket
	}
	return q.M
}

func (q QuantLinear) check() error {
	switch {
	case q.M < 1 || q.N < 1 || q.K < 1 || q.M > q.bucket():
		return fmt.Errorf("quantized_linear: bad shape M=%d (bucket %d), N=%d, K=%d", q.M, q.bucket(), q.N, q.K)
	case q.Bits != 4 && q.Bits != 8:
		return fmt.Errorf("quantized_linear: bits %d, want 4 or 8", q.Bits)
	case q.Group < 1 || q.K%q.Group != 0:
		return fmt.Errorf("quantized_linear: group size %d does not divide K=%d", q.Group, q.K)
	case q.Bits == 4 && q.K%2 != 0:
		return fmt.Errorf("quantized_linear: int4 with odd K=%d (rows would not start on a byte)", q.K)
	}
	return nil
}

// Name is "quantized_linear/M=…,N=…,K=…/int4,g=128".
func (q QuantLinear) Name() string {
	return fmt.Sprintf("quantized_linear/M=%d,N=%d,K=%d/int%d,g=%d", q.M, q.N, q.K, q.Bits, q.Group)
}

// rowBytes is the storage of one row of w.
func (q QuantLinear) rowBytes() int64 { return q.K * q.Bits / 8 }

// groups is the number of scales per row.
func (q QuantLinear) groups() int64 { return q.K / q.Group }

// Def declares x f32 [M, K], w (i8 [N, K] or u8 [N, K/2]), scales f32
// [N, K/Group] and out f32 [M, N].
func (q QuantLinear) Def() (*schedule.Def, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	M, N, K := schedule.Dynamic("M", q.bucket()), schedule.Static(q.N), schedule.Static(q.K)
	x := schedule.Input("x", schedule.F32, M, K)
	w := schedule.Input("w", schedule.I8, N, K)
	if q.Bits == 4 {
		w = schedule.Input("w", schedule.U8, N, schedule.Static(q.K/2))
	}
	sc := schedule.Input("scales", schedule.F32, N, schedule.Static(q.groups()))
	out := schedule.Declare("out", schedule.F32, M, N)
	meaning := fmt.Sprintf("out[i, j] = sum(k, x[i, k] * int%d(w)[j, k] * scales[j, k / %d])", q.Bits, q.Group)
	return schedule.NewTemplateDef("quantized_linear", meaning, []*schedule.Tensor{x, w, sc}, out)
}

// Workload is llmir.quantized_linear with the IR's operand types (the
// int4 weight as its logical [N, K] i4 tensor) and attributes.
func (q QuantLinear) Workload() ir.Workload {
	if q.IR != nil {
		return *q.IR
	}
	b := ir.Bucket(q.bucket())
	tok := []string{"tokens", ""}
	return ir.Workload{
		Group: []string{"llmir.quantized_linear"},
		Inputs: []ir.TensorSig{
			{Shape: []int64{b, q.K}, Sym: tok, DType: "f32"},
			{Shape: []int64{q.N, q.K}, DType: fmt.Sprintf("i%d", q.Bits)},
			{Shape: []int64{q.N, q.groups()}, DType: "f32"},
		},
		Output:  []ir.TensorSig{{Shape: []int64{b, q.N}, Sym: tok, DType: "f32"}},
		Attrs:   map[string]string{"bits": fmt.Sprintf("%d : i64", q.Bits), "group_size": fmt.Sprintf("%d : i64", q.Group)},
		Dynamic: map[string]int64{"tokens": b},
	}
}

// Dims is [M].
func (q QuantLinear) Dims() []int64 { return []int64{q.M} }

// FLOPs is 2·M·N·K (the dequantisation is not counted).
func (q QuantLinear) FLOPs() float64 { return 2 * float64(q.M*q.N*q.K) }

// Bytes is one read of x, w and the scales and one write of out.
func (q QuantLinear) Bytes() float64 {
	return float64(4*q.M*q.K + q.N*q.rowBytes() + 4*q.N*q.groups() + 4*q.M*q.N)
}

// Fill gives w its integer range (int8 −127…127, or any byte: two int4
// values) and the scales positive magnitudes that keep dequantised weights
// in about ±1, as real checkpoints have.
func (q QuantLinear) Fill(input string) func(rng *rand.Rand, v []float64) {
	qmax := float64(int64(1)<<(q.Bits-1) - 1)
	switch input {
	case "w":
		return func(rng *rand.Rand, v []float64) {
			for i := range v {
				if q.Bits == 4 {
					v[i] = float64(rng.IntN(256))
				} else {
					v[i] = float64(rng.IntN(255) - 127)
				}
			}
		}
	case "scales":
		return func(rng *rand.Rand, v []float64) {
			for i := range v {
				v[i] = (0.5 + rng.Float64()) / qmax
			}
		}
	}
	return nil
}

// Reference is ref.QuantizedLinearInt8/Int4 (float64 accumulation) on the
// decoded inputs: the packed layout there is the contract.
func (q QuantLinear) Reference(in [][]float64) [][]float64 {
	m, n, k, g := int(q.M), int(q.N), int(q.K), int(q.Group)
	x := make([]float32, len(in[0]))
	for i, v := range in[0] {
		x[i] = float32(v)
	}
	sc := make([]float32, len(in[2]))
	for i, v := range in[2] {
		sc[i] = float32(v)
	}
	var out []float32
	var err error
	if q.Bits == 4 {
		packed := make([]byte, len(in[1]))
		for i, v := range in[1] {
			packed[i] = byte(v)
		}
		out, err = ref.QuantizedLinearInt4(x, m, k, packed, sc, n, g)
	} else {
		w := make([]int8, len(in[1]))
		for i, v := range in[1] {
			w[i] = int8(v)
		}
		out, err = ref.QuantizedLinearInt8(x, m, k, w, sc, n, g)
	}
	if err != nil {
		// Def checked the shapes the buffers were made from.
		panic(fmt.Sprintf("%s: reference: %v", q.Name(), err))
	}
	res := make([]float64, len(out))
	for i, v := range out {
		res[i] = float64(v)
	}
	return [][]float64{res}
}

// decode reports whether the GEMV template applies (as Linear.skinny).
func (q QuantLinear) decode() bool { return q.bucket() <= 16 }

// decodeMR are the decode template's row blocks: powers of two up to the
// first that covers the bucket (rows past M alias the last one, so M = 3
// runs as one block of 4 rather than blocks of 2 and 1 that unpack w twice).
func (q QuantLinear) decodeMR() []int64 {
	var out []int64
	for mr := int64(1); mr <= 8; mr *= 2 {
		out = append(out, mr)
		if mr >= q.bucket() {
			break
		}
	}
	return out
}

// Unpack strategies of the int4 decode template.
const (
	unpackShift   = 0 // sign-extend each nibble with two shifts, then convert
	unpackPermute = 1 // look the nibble's f32 value up in a 16-lane table (vpermps)
)

// quantLanes is the f32 lanes of the generated vectors: the fingerprint's
// width, at least 4 (GCC lowers 128-bit vector extensions on any target).
func quantLanes(hw Hardware) int64 { return max(hw.lanes(), 4) }

// nibblesPerLane are the int4 decode template's loads: each 32-bit lane of
// a loaded vector holds P nibbles (P = 2: L bytes widened by vpmovzxbd; 4:
// 2L bytes widened from 16 bits; 8: 4L bytes loaded as they are), and
// nibble j of every lane is one f32 vector after a shift. Larger P costs
// fewer shuffles per weight, but a block of L·P weights must fit a group.
func (q QuantLinear) nibblesPerLane(hw Hardware) []int64 {
	out := []int64{2}
	if q.Bits != 4 {
		return out
	}
	for _, p := range []int64{4, 8} {
		if q.Group%(quantLanes(hw)*p) == 0 {
			out = append(out, p)
		}
	}
	return out
}

// knobs is the design space. Decode: MR rows of x per register block, JU
// rows of w per tile, the OpenMP chunk in tiles (0: one static block per
// thread, else dynamic chunks; only with threads), and for int4 the unpack
// strategy (16-lane vectors) and nibbles per lane. Prefill: MR rows per
// register tile (NR = two vectors), NC columns per dequantised panel, KC
// depth.
func (q QuantLinear) knobs(hw Hardware) Knobs {
	if q.decode() {
		ks := Knobs{
			{"mr", q.decodeMR()},
			{"ju", []int64{1, 2, 4, 8}},
		}
		if hw.Threads > 1 {
			ks = append(ks, Knob{"chunk", []int64{0, 1, 4, 16, 64}})
		}
		if q.Bits == 4 && quantLanes(hw) == 16 {
			ks = append(ks, Knob{"unpack", []int64{unpackShift, unpackPermute}})
		}
		if packs := q.nibblesPerLane(hw); len(packs) > 1 {
			ks = append(ks, Knob{"pack", packs})
		}
		return ks
	}
	nr := 2 * quantLanes(hw)
	return Knobs{
		{"mr", upTo(q.bucket(), 4, 6, 8, 12)},
		{"nc", []int64{nr, 2 * nr, 4 * nr, 8 * nr, 16 * nr}},
		{"kc", []int64{64, 128, 256, 512}},
	}
}

// Space samples every knob.
func (q QuantLinear) Space(s *schedule.Schedule, hw Hardware) error {
	return q.knobs(hw).Sample(s)
}

// Default: for decode MR = min(M bucket, 4) rows of x by 8/MR rows of w:
// 8 independent accumulator chains hide the FMA latency (per-channel int8
// with JU 4 measured 1.4–1.6× slower than JU 8 at 4096×4096, one thread),
// and the 2·MR·JU vector accumulators leave registers for the unpacked
// weights; static chunks; for int4 the table lookup (1.5–1.9× faster than
// the shifts) on lanes of as many nibbles as the group allows (8 nibbles
// per lane measured 1.25× faster than 2 at group 128: one shuffle per 16
// weights instead of 1.5). For prefill a 12×2-vector tile (as Linear's
// GEMM), panels of 8 tiles halved until every thread has two, depth 256 (a
// 128 KiB panel that stays in L2).
func (q QuantLinear) Default(s *schedule.Schedule, hw Hardware) error {
	ks := q.knobs(hw)
	if q.decode() {
		mrs := q.decodeMR()
		mr := min(mrs[len(mrs)-1], 4)
		ju := 8 / mr
		packs := q.nibblesPerLane(hw)
		return ks.Choose(s, map[string]int64{"mr": mr, "ju": ju, "chunk": 0, "unpack": unpackPermute, "pack": packs[len(packs)-1]})
	}
	nr := 2 * quantLanes(hw)
	nc := 8 * nr
	for nc > nr && q.N/nc < 2*int64(max(hw.Threads, 1)) {
		nc /= 2
	}
	return ks.Choose(s, map[string]int64{"mr": min(12, q.bucket()), "nc": nc, "kc": 256})
}

// EmitC writes the C of the schedule's knob values.
func (q QuantLinear) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	if err := q.check(); err != nil {
		return "", err
	}
	kv, err := q.knobs(hw).Read(s)
	if err != nil {
		return "", fmt.Errorf("%s: %w", q.Name(), err)
	}
	var b strings.Builder
	q.emitPrelude(&b, hw)
	if q.decode() {
		q.emitDecode(&b, hw, kv, entry)
	} else {
		q.emitPrefill(&b, hw, kv, entry)
	}
	return b.String(), nil
}

// emitPrelude writes the vector types (GCC vector extensions at the
// fingerprint's width, so one generator serves AVX-512, AVX2 and NEON) and
// the scalar dequantisation of one weight.
func (q QuantLinear) emitPrelude(b *strings.Builder, hw Hardware) {
	L := quantLanes(hw)
	fmt.Fprintf(b, `// Generated by llmir kernels.QuantLinear (%s). Do not edit.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define L %d
typedef float qf __attribute__((vector_size(%d)));
typedef int32_t qi __attribute__((vector_size(%d)));
typedef uint32_t qu __attribute__((vector_size(%d)));
typedef uint8_t qb __attribute__((vector_size(%d)));
typedef int8_t qc __attribute__((vector_size(%d)));
static inline qf qload(const float *p) { qf v; memcpy(&v, p, sizeof v); return v; }
static inline void qstore(float *p, qf v) { memcpy(p, &v, sizeof v); }
static inline qf qsplat(float x) { return (qf){} + x; }
static inline float qhsum(qf v) { float s = 0; for (int i = 0; i < L; i++) s += v[i]; return s; }
static inline int64_t qmin(int64_t a, int64_t b) { return a < b ? a : b; }
`, q.Name(), L, 4*L, 4*L, 4*L, L, L)
	// Widening L bytes to L int32 lanes: GCC 12 lowers
	// __builtin_convertvector from a byte vector to byte extracts and
	// inserts (3× slower than the whole kernel should be), so the
	// fingerprint's ISA picks the one-instruction vpmovzxbd/vpmovsxbd.
	b.WriteString("static inline qi qwiden_u(const uint8_t *p) { qb v; memcpy(&v, p, sizeof v); return __builtin_convertvector(v, qi); }\n")
	b.WriteString("static inline qi qwiden_s(const int8_t *p) { qc v; memcpy(&v, p, sizeof v); return __builtin_convertvector(v, qi); }\n")
	fmt.Fprintf(b, "typedef uint16_t qh __attribute__((vector_size(%d)));\n", 2*L)
	b.WriteString("static inline qi qwiden_u16(const uint8_t *p) { qh v; memcpy(&v, p, sizeof v); return __builtin_convertvector(v, qi); }\n")
	b.WriteString("static inline qi qload_i(const uint8_t *p) { qi v; memcpy(&v, p, sizeof v); return v; }\n")
	switch L {
	case 16:
		b.WriteString(`#if defined(__AVX512F__)
#include <immintrin.h>
#define qwiden_u(p) ((qi)_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p))))
#define qwiden_s(p) ((qi)_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p))))
#define qwiden_u16(p) ((qi)_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))))
#endif
`)
	case 8:
		b.WriteString(`#if defined(__AVX2__)
#include <immintrin.h>
#define qwiden_u(p) ((qi)_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
#define qwiden_s(p) ((qi)_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
#define qwiden_u16(p) ((qi)_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))))
#endif
`)
	}
	if q.Bits == 4 {
		// Element k of a row is nibble k%%2 of byte k/2 (ref.PackInt4).
		b.WriteString(`static inline float qweight(const uint8_t *row, int64_t k) { uint8_t v = row[k >> 1]; return (float)((k & 1) ? (int8_t)v >> 4 : (int8_t)(uint8_t)(v << 4) >> 4); }
`)
	} else {
		b.WriteString(`static inline float qweight(const int8_t *row, int64_t k) { return (float)row[k]; }
`)
	}
}

// emitDecode writes the GEMV template. The int4 inner step loads P·L/2
// bytes of a row as L lanes of P nibbles each (see nibblesPerLane): nibble
// j of lane t is element P·t + j of the block, so x is permuted once per
// call into the same order (xp[k + j·L + t] = x[k + P·t + j]) and every
// unpacked vector multiplies a contiguous slice of xp without a shuffle of
// the weights. Rows past M or N alias the last row (computed, never
// stored), so one fully unrolled tile serves every edge.
func (q QuantLinear) emitDecode(b *strings.Builder, hw Hardware, kv map[string]int64, entry string) {
	L := quantLanes(hw)
	mr, ju := kv["mr"], kv["ju"]
	vb := L // weights per block
	pack := int64(2)
	if q.Bits == 4 {
		if v, ok := kv["pack"]; ok {
			pack = v
		}
		vb = pack * L
	}
	g := q.Group
	nblk := g / vb
	if q.Bits == 4 && g%2 != 0 {
		nblk = 0 // groups start mid-byte: scalar throughout
	}
	tail := g - nblk*vb
	wtype := "int8_t"
	if q.Bits == 4 {
		wtype = "uint8_t"
		if kv["unpack"] == unpackPermute {
			b.WriteString("static const qf qtab = {0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1};\n")
		}
	}
	fmt.Fprintf(b, "\n// One tile: %d rows of x by %d rows of w, every group's dot product\n// accumulated apart and scaled once.\n", mr, ju)
	fmt.Fprintf(b, "static inline __attribute__((always_inline)) void qtile(const float *const *xr, const float *const *xp, const %s *const *wr, const float *const *sr, float *res) {\n", wtype)
	for m := range mr {
		fmt.Fprintf(b, "  const float *x%d = xr[%d], *p%d = xp[%d];\n", m, m, m, m)
	}
	for r := range ju {
		fmt.Fprintf(b, "  const %s *w%d = wr[%d]; const float *s%d = sr[%d];\n", wtype, r, r, r, r)
	}
	b.WriteString("  (void)x0; (void)p0;\n")
	acc := func(pre string, m, r int64) string { return fmt.Sprintf("%s%d_%d", pre, m, r) }
	for m := range mr {
		for r := range ju {
			fmt.Fprintf(b, "  qf %s = {}; float %s = 0;\n", acc("t", m, r), acc("u", m, r))
		}
	}
	fmt.Fprintf(b, "  for (int64_t g = 0; g < %d; g++) {\n", q.groups())
	if nblk > 0 {
		for m := range mr {
			for r := range ju {
				fmt.Fprintf(b, "    qf %s = {};\n", acc("a", m, r))
			}
		}
		fmt.Fprintf(b, "    for (int64_t k = g * %d; k < g * %d + %d; k += %d) {\n", g, g, nblk*vb, vb)
		for r := range ju {
			if q.Bits == 4 {
				fmt.Fprintf(b, "      qi v%d = %s(w%d + (k >> 1));\n", r, map[int64]string{2: "qwiden_u", 4: "qwiden_u16", 8: "qload_i"}[pack], r)
				for j := range pack {
					if kv["unpack"] == unpackPermute {
						// vpermps reads the low 4 bits of each index lane.
						fmt.Fprintf(b, "      qf n%d_%d = __builtin_shuffle(qtab, (qi)((qu)v%d >> %d));\n", r, j, r, 4*j)
					} else {
						fmt.Fprintf(b, "      qf n%d_%d = __builtin_convertvector((qi)((qu)v%d << %d) >> 28, qf);\n", r, j, r, 28-4*j)
					}
				}
			} else {
				fmt.Fprintf(b, "      qf l%d = __builtin_convertvector(qwiden_s(w%d + k), qf);\n", r, r)
			}
		}
		for m := range mr {
			if q.Bits == 4 {
				b.WriteString("      {")
				for j := range pack {
					fmt.Fprintf(b, " qf y%d = qload(p%d + k + %d * L);", j, m, j)
				}
				for r := range ju {
					for j := range pack {
						fmt.Fprintf(b, " %s += y%d * n%d_%d;", acc("a", m, r), j, r, j)
					}
				}
			} else {
				fmt.Fprintf(b, "      { qf xl = qload(x%d + k);", m)
				for r := range ju {
					fmt.Fprintf(b, " %s += xl * l%d;", acc("a", m, r), r)
				}
			}
			b.WriteString(" }\n")
		}
		b.WriteString("    }\n")
	}
	if tail > 0 {
		for m := range mr {
			for r := range ju {
				fmt.Fprintf(b, "    float %s = 0;\n", acc("e", m, r))
			}
		}
		fmt.Fprintf(b, "    for (int64_t k = g * %d + %d; k < (g + 1) * %d; k++) {\n", g, nblk*vb, g)
		for r := range ju {
			fmt.Fprintf(b, "      float q%d = qweight(w%d, k);\n", r, r)
		}
		for m := range mr {
			for r := range ju {
				fmt.Fprintf(b, "      %s += x%d[k] * q%d;\n", acc("e", m, r), m, r)
			}
		}
		b.WriteString("    }\n")
	}
	for r := range ju {
		fmt.Fprintf(b, "    const float c%d = s%d[g];\n", r, r)
	}
	for m := range mr {
		for r := range ju {
			if nblk > 0 {
				fmt.Fprintf(b, "    %s += %s * c%d;\n", acc("t", m, r), acc("a", m, r), r)
			}
			if tail > 0 {
				fmt.Fprintf(b, "    %s += %s * c%d;\n", acc("u", m, r), acc("e", m, r), r)
			}
		}
	}
	b.WriteString("  }\n")
	for m := range mr {
		for r := range ju {
			fmt.Fprintf(b, "  res[%d] = qhsum(%s) + %s;\n", m*ju+r, acc("t", m, r), acc("u", m, r))
		}
	}
	b.WriteString("}\n\n")

	fmt.Fprintf(b, "int %s(void *const *bufs, const int64_t *dims) {\n", entry)
	fmt.Fprintf(b, "  const int64_t M = dims[0], N = %d, K = %d;\n", q.N, q.K)
	fmt.Fprintf(b, "  const float *x = (const float *)bufs[0];\n  const %s *w = (const %s *)bufs[1];\n  const float *sc = (const float *)bufs[2];\n  float *out = (float *)bufs[3];\n", wtype, wtype)
	b.WriteString("  if (M < 1) return 1;\n")
	if q.Bits == 4 && nblk > 0 {
		fmt.Fprintf(b, `  // x with every block of P·L inputs regrouped like the nibbles of the
  // loaded lanes: xp[k + j·L + t] = x[k + P·t + j].
  float *xp = (float *)malloc(sizeof(float) * M * K);
  if (!xp) return 2;
  for (int64_t i = 0; i < M; i++)
    for (int64_t g = 0; g < %d; g++)
      for (int64_t k = g * %d; k < g * %d + %d; k += %d)
        for (int64_t j = 0; j < %d; j++)
          for (int64_t t = 0; t < L; t++) xp[i * K + k + j * L + t] = x[i * K + k + %d * t + j];
`, q.groups(), g, g, nblk*vb, vb, pack, pack)
	} else {
		b.WriteString("  const float *xp = x;\n")
	}
	fmt.Fprintf(b, "  const int64_t tiles = (N + %d) / %d;\n", ju-1, ju)
	if hw.Threads > 1 {
		if ch := kv["chunk"]; ch == 0 {
			b.WriteString("  #pragma omp parallel for schedule(static)\n")
		} else {
			fmt.Fprintf(b, "  #pragma omp parallel for schedule(dynamic, %d)\n", ch)
		}
	}
	b.WriteString("  for (int64_t t = 0; t < tiles; t++) {\n")
	fmt.Fprintf(b, "    const int64_t j0 = t * %d;\n", ju)
	fmt.Fprintf(b, "    const %s *wr[%d]; const float *sr[%d];\n", wtype, ju, ju)
	fmt.Fprintf(b, "    for (int64_t r = 0; r < %d; r++) { int64_t j = qmin(j0 + r, N - 1); wr[r] = w + j * %d; sr[r] = sc + j * %d; }\n", ju, q.rowBytes(), q.groups())
	fmt.Fprintf(b, "    for (int64_t i0 = 0; i0 < M; i0 += %d) {\n", mr)
	fmt.Fprintf(b, "      const float *xr[%d], *xq[%d]; float res[%d];\n", mr, mr, mr*ju)
	fmt.Fprintf(b, "      for (int64_t m = 0; m < %d; m++) { int64_t i = qmin(i0 + m, M - 1); xr[m] = x + i * K; xq[m] = xp + i * K; }\n", mr)
	b.WriteString("      qtile(xr, xq, wr, sr, res);\n")
	fmt.Fprintf(b, "      for (int64_t m = 0; m < qmin(%d, M - i0); m++)\n", mr)
	fmt.Fprintf(b, "        for (int64_t r = 0; r < qmin(%d, N - j0); r++) out[(i0 + m) * N + j0 + r] = res[m * %d + r];\n", ju, ju)
	b.WriteString("    }\n  }\n")
	if q.Bits == 4 && nblk > 0 {
		b.WriteString("  free(xp);\n")
	}
	b.WriteString("  return 0;\n}\n")
}

// emitPrefill writes the GEMM template: each thread owns panels of NC
// columns of out; per KC-deep slice it dequantises (q · scale) its panel
// into a buffer packed as [NC/NR][KC][NR] and runs an MR×NR register tile
// over it for every row block of x. Dequantising once per panel and slice
// costs O(N·K) whatever M is, against 2·M·N·K FLOPs of the tile.
func (q QuantLinear) emitPrefill(b *strings.Builder, hw Hardware, kv map[string]int64, entry string) {
	L := quantLanes(hw)
	nr := 2 * L
	mr, nc, kc := kv["mr"], kv["nc"], kv["kc"]
	wtype := "int8_t"
	if q.Bits == 4 {
		wtype = "uint8_t"
	}
	fmt.Fprintf(b, "\n// %d×%d register tile over a packed panel slice of depth kc.\n", mr, nr)
	b.WriteString("static inline __attribute__((always_inline)) void qmicro(const float *const *xr, const float *bp, int64_t kc, float *const *orow, int64_t ncols, int first) {\n")
	for m := range mr {
		fmt.Fprintf(b, "  qf a%d_0 = {}, a%d_1 = {}; const float *x%d = xr[%d];\n", m, m, m, m)
	}
	b.WriteString("  for (int64_t k = 0; k < kc; k++) {\n")
	fmt.Fprintf(b, "    qf b0 = qload(bp + k * %d), b1 = qload(bp + k * %d + L);\n", nr, nr)
	for m := range mr {
		fmt.Fprintf(b, "    { qf a = qsplat(x%d[k]); a%d_0 += a * b0; a%d_1 += a * b1; }\n", m, m, m)
	}
	b.WriteString("  }\n")
	for m := range mr {
		fmt.Fprintf(b, "  if (orow[%d]) {\n", m)
		fmt.Fprintf(b, "    if (ncols == %d) {\n", nr)
		fmt.Fprintf(b, "      if (first) { qstore(orow[%d], a%d_0); qstore(orow[%d] + L, a%d_1); }\n", m, m, m, m)
		fmt.Fprintf(b, "      else { qstore(orow[%d], qload(orow[%d]) + a%d_0); qstore(orow[%d] + L, qload(orow[%d] + L) + a%d_1); }\n", m, m, m, m, m, m)
		b.WriteString("    } else {\n")
		fmt.Fprintf(b, "      float t[%d]; qstore(t, a%d_0); qstore(t + L, a%d_1);\n", nr, m, m)
		fmt.Fprintf(b, "      for (int64_t c = 0; c < ncols; c++) orow[%d][c] = first ? t[c] : orow[%d][c] + t[c];\n", m, m)
		b.WriteString("    }\n  }\n")
	}
	b.WriteString("}\n\n")

	fmt.Fprintf(b, "int %s(void *const *bufs, const int64_t *dims) {\n", entry)
	fmt.Fprintf(b, "  const int64_t M = dims[0], N = %d, K = %d;\n", q.N, q.K)
	fmt.Fprintf(b, "  const float *x = (const float *)bufs[0];\n  const %s *w = (const %s *)bufs[1];\n  const float *sc = (const float *)bufs[2];\n  float *out = (float *)bufs[3];\n", wtype, wtype)
	b.WriteString("  if (M < 1) return 1;\n  int failed = 0;\n")
	fmt.Fprintf(b, "  const int64_t panels = (N + %d) / %d;\n", nc-1, nc)
	if hw.Threads > 1 {
		b.WriteString("  #pragma omp parallel\n")
	}
	b.WriteString("  {\n")
	fmt.Fprintf(b, "    float *bp = (float *)aligned_alloc(64, sizeof(float) * %d);\n", nc*kc)
	b.WriteString("    if (!bp) {\n      #pragma omp atomic write\n      failed = 1;\n    }\n")
	if hw.Threads > 1 {
		b.WriteString("    #pragma omp for schedule(dynamic, 1)\n")
	}
	b.WriteString("    for (int64_t pn = 0; pn < panels; pn++) {\n      if (!bp) continue;\n")
	fmt.Fprintf(b, "      const int64_t j0 = pn * %d, ncp = qmin(%d, N - j0);\n", nc, nc)
	fmt.Fprintf(b, "      for (int64_t k0 = 0; k0 < K; k0 += %d) {\n", kc)
	fmt.Fprintf(b, "        const int64_t kc = qmin(%d, K - k0);\n", kc)
	b.WriteString("        // Dequantise the panel slice, transposed into NR-wide column blocks.\n")
	fmt.Fprintf(b, "        for (int64_t jb = 0; jb * %d < ncp; jb++) {\n", nr)
	fmt.Fprintf(b, "          float *dst = bp + jb * %d * kc;\n", nr)
	fmt.Fprintf(b, "          for (int64_t c = 0; c < %d; c++) {\n", nr)
	fmt.Fprintf(b, "            const int64_t j = j0 + jb * %d + c;\n", nr)
	b.WriteString("            if (j >= N) { for (int64_t k = 0; k < kc; k++) dst[k * " + strconv.FormatInt(nr, 10) + " + c] = 0; continue; }\n")
	fmt.Fprintf(b, "            const %s *row = w + j * %d; const float *s = sc + j * %d;\n", wtype, q.rowBytes(), q.groups())
	if q.Bits == 4 {
		// A byte per pair of k (k0, kc and K are even): the per-element
		// nibble select measured 4× slower than int8's packing.
		fmt.Fprintf(b, `            for (int64_t k = 0; k < kc; k += 2) {
              const int64_t kk = k0 + k; const uint8_t v = row[kk >> 1];
              dst[k * %d + c] = (float)((int8_t)(uint8_t)(v << 4) >> 4) * s[kk / %d];
              dst[(k + 1) * %d + c] = (float)((int8_t)v >> 4) * s[(kk + 1) / %d];
            }
`, nr, q.Group, nr, q.Group)
	} else {
		fmt.Fprintf(b, "            for (int64_t k = 0; k < kc; k++) dst[k * %d + c] = qweight(row, k0 + k) * s[(k0 + k) / %d];\n", nr, q.Group)
	}
	b.WriteString("          }\n        }\n")
	fmt.Fprintf(b, "        for (int64_t i0 = 0; i0 < M; i0 += %d) {\n", mr)
	fmt.Fprintf(b, "          const float *xr[%d];\n", mr)
	fmt.Fprintf(b, "          for (int64_t m = 0; m < %d; m++) xr[m] = x + qmin(i0 + m, M - 1) * K + k0;\n", mr)
	fmt.Fprintf(b, "          for (int64_t jb = 0; jb * %d < ncp; jb++) {\n", nr)
	fmt.Fprintf(b, "            const int64_t j = j0 + jb * %d;\n", nr)
	fmt.Fprintf(b, "            float *orow[%d];\n", mr)
	fmt.Fprintf(b, "            for (int64_t m = 0; m < %d; m++) orow[m] = i0 + m < M ? out + (i0 + m) * N + j : 0;\n", mr)
	fmt.Fprintf(b, "            qmicro(xr, bp + jb * %d * kc, kc, orow, qmin(%d, N - j), k0 == 0);\n", nr, nr)
	b.WriteString("          }\n        }\n      }\n    }\n    free(bp);\n  }\n  return failed ? 2 : 0;\n}\n")
}
