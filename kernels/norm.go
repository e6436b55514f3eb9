package kernels

// RMSNorm and LayerNorm are template kernels (kernels/template.go), not
// schedule-language definitions, and the reason is fusion: a norm is a row
// reduction followed by a pass that scales the same row by the reduced
// value. In the loop-nest IR the reduction is one block and the scaling
// another; reverse_compute_at cannot move the scaling block (2-D) under
// the reduction's row loop because it reads the reduced buffer (1-D) with
// fewer axes than it has, so the schedule language could only express two
// separate sweeps over the whole activation, reading x from memory twice.
// The template walks each row while it is in L1: reduce, then scale. The
// same row skeleton (rowPrelude, rowLoop, rowSweep) serves softmax and argmax
// (softmax.go).
//
// The knobs of every row template are the vector width (vec, in f32
// lanes; 1 is scalar code through one-lane vectors), the number of
// independent vectors per step (unroll: separate accumulators hide the
// add latency of the reduction) and the rows per parallel task (chunk:
// the OpenMP static chunk; a batch of at most chunk rows runs on the
// calling thread without forking).

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"llmir/ir"
	"llmir/schedule"
)

func init() {
	register("llmir.rms_norm", func(w ir.Workload) (Kernel, error) { return normFromWorkload(w, false) })
	register("llmir.layer_norm", func(w ir.Workload) (Kernel, error) { return normFromWorkload(w, true) })
}

// RMSNorm is Llama's x / sqrt(mean(x²) + eps) · w over the last axis of x
// [Rows, H]. Rows is dynamic: the kernel is compiled for RowsBucket and
// measured at Rows.
type RMSNorm struct {
	Rows, H    int64
	RowsBucket int64 // 0: Rows itself
	Eps        float64
	DType      schedule.DType // storage of x, w and out: F32 (zero value), BF16 or F16
	IR         *ir.Workload   // the module workload it was made from, if any
}

// LayerNorm is (x − mean)/sqrt(var + eps)·w + b over the last axis of x
// [Rows, H], with the biased variance (torch.nn.LayerNorm).
type LayerNorm struct {
	Rows, H    int64
	RowsBucket int64
	Eps        float64
	DType      schedule.DType
	IR         *ir.Workload
}

// normFromWorkload reads llmir.rms_norm(x, w) or llmir.layer_norm(x, w, b)
// with eps from the attributes; x's leading dims flatten into rows.
func normFromWorkload(w ir.Workload, layer bool) (Kernel, error) {
	nIn := 2
	if layer {
		nIn = 3
	}
	if err := checkArity(w, nIn, 1); err != nil {
		return nil, err
	}
	x := w.Inputs[0]
	h := x.Shape[len(x.Shape)-1]
	for i, p := range w.Inputs[1:] {
		if len(p.Shape) != 1 || p.Shape[0] != h {
			return nil, fmt.Errorf("operand %d has shape %v, want [%d] (x's last dim)", i+1, p.Shape, h)
		}
	}
	dt, err := sameFloat(w)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(w.Output[0].Shape, x.Shape) {
		return nil, fmt.Errorf("result shape %v differs from x's %v", w.Output[0].Shape, x.Shape)
	}
	as, err := w.ParseAttrs()
	if err != nil {
		return nil, err
	}
	eps := as.Float("eps", 0)
	if !(eps > 0) || math.IsInf(eps, 0) {
		return nil, fmt.Errorf("attribute eps = %g, want a positive number", eps)
	}
	if layer {
		return LayerNorm{Rows: rows(x), H: h, Eps: eps, DType: dt, IR: &w}, nil
	}
	return RMSNorm{Rows: rows(x), H: h, Eps: eps, DType: dt, IR: &w}, nil
}

// sameFloat checks that every operand and result of w has one float
// rowStorage type (f32, bf16 or f16) and returns it.
func sameFloat(w ir.Workload) (schedule.DType, error) {
	all := append(append([]ir.TensorSig{}, w.Inputs...), w.Output...)
	return floatType(all...)
}

// floatType is the one float storage type of sigs.
func floatType(sigs ...ir.TensorSig) (schedule.DType, error) {
	dt, err := schedule.ParseDType(sigs[0].DType)
	if err != nil || !dt.Float() {
		return 0, fmt.Errorf("tensor 0 is %s, want f32, bf16 or f16", sigs[0].DType)
	}
	for i, s := range sigs[1:] {
		if s.DType != sigs[0].DType {
			return 0, fmt.Errorf("tensor %d is %s, tensor 0 is %s", i+1, s.DType, sigs[0].DType)
		}
	}
	return dt, nil
}

// rowsWorkload is the synthesized workload of a row kernel made without an
// IR workload: operands [bucket, H] (dynamic "tokens") or static shapes.
func rowsWorkload(group string, bucket int64, ins []ir.TensorSig, outs []ir.TensorSig, attrs map[string]string) ir.Workload {
	b := ir.Bucket(bucket)
	fix := func(ss []ir.TensorSig) []ir.TensorSig {
		out := make([]ir.TensorSig, len(ss))
		for i, s := range ss {
			s.Shape = slices.Clone(s.Shape)
			for d, sym := range s.Sym {
				if sym != "" {
					s.Shape[d] = b
				}
			}
			out[i] = s
		}
		return out
	}
	return ir.Workload{Group: []string{group}, Inputs: fix(ins), Output: fix(outs), Attrs: attrs, Dynamic: map[string]int64{"tokens": b}}
}

// tokSig is the signature of a [tokens, n] activation.
func tokSig(n int64, dt string) ir.TensorSig {
	return ir.TensorSig{Shape: []int64{0, n}, Sym: []string{"tokens", ""}, DType: dt}
}

func rowBucketOr(rows, bucket int64) int64 {
	if bucket > 0 {
		return bucket
	}
	return rows
}

func rowCheck(what string, rows, bucket, n int64) error {
	if rows < 1 || n < 1 || rows > rowBucketOr(rows, bucket) {
		return fmt.Errorf("%s: bad shape rows=%d (bucket %d), n=%d", what, rows, rowBucketOr(rows, bucket), n)
	}
	return nil
}

// rowDef is the template definition of a row kernel: x [rows, n] plus
// per-column vectors, to out [rows, n] of outDT.
func rowDef(name, meaning string, rows, bucket, n int64, dt schedule.DType, vectors []string, outDT schedule.DType, outCols int64) (*schedule.Def, error) {
	if err := rowCheck(name, rows, bucket, n); err != nil {
		return nil, err
	}
	if !dt.Float() {
		return nil, fmt.Errorf("%s: dtype %s is not a float type", name, dt)
	}
	R := schedule.Dynamic("rows", rowBucketOr(rows, bucket))
	ins := []*schedule.Tensor{schedule.Input("x", dt, R, schedule.Static(n))}
	for _, v := range vectors {
		ins = append(ins, schedule.Input(v, dt, schedule.Static(n)))
	}
	var out *schedule.Tensor
	if outCols > 0 {
		out = schedule.Declare("out", outDT, R, schedule.Static(outCols))
	} else {
		out = schedule.Declare("out", outDT, R)
	}
	return schedule.NewTemplateDef(name, meaning, ins, out)
}

// rowVecDomain is the vector widths a template may use: scalar (1), then 4
// lanes up to the device's widest vector.
func rowVecDomain(hw Hardware) []int64 {
	out := []int64{1}
	for v := int64(4); v <= hw.lanes(); v *= 2 {
		out = append(out, v)
	}
	return out
}

var (
	rowUnrollDomain = []int64{1, 2, 4}
	rowChunkDomain  = []int64{1, 4, 16, 64}
)

// rowKnobs is the design space of the row templates.
func rowKnobs(hw Hardware) Knobs {
	return Knobs{{"vec", rowVecDomain(hw)}, {"unroll", rowUnrollDomain}, {"chunk", rowChunkDomain}}
}

// rowDefaults picks the row knobs by rule: the widest vector; as many
// independent vectors as fit in a row (up to 4, the add latency of a
// reduction over two ports); and the largest chunk that still gives every
// thread four tasks, so that uneven rows balance.
func rowDefaults(hw Hardware, bucket, n int64) map[string]int64 {
	v := hw.lanes()
	u := int64(1)
	for _, c := range rowUnrollDomain {
		if c*v <= n {
			u = c
		}
	}
	return map[string]int64{"vec": v, "unroll": u, "chunk": rowChunk(bucket, hw)}
}

func rowChunk(rows int64, hw Hardware) int64 {
	c := int64(1)
	for _, x := range rowChunkDomain {
		if rows >= x*4*int64(max(hw.Threads, 1)) {
			c = x
		}
	}
	return c
}

// cSrc writes C source.
type cSrc struct {
	b      strings.Builder
	indent int
	vec    int64 // lanes of llmir_v, set by rowPrelude
}

func (w *cSrc) line(format string, a ...any) {
	w.b.WriteString(strings.Repeat("  ", w.indent))
	fmt.Fprintf(&w.b, format, a...)
	w.b.WriteByte('\n')
}

func (w *cSrc) open(format string, a ...any) { w.line(format+" {", a...); w.indent++ }
func (w *cSrc) close()                       { w.indent--; w.line("}") }

// cF32 prints v rounded to f32 as an exact C hex-float constant.
func cF32(v float64) string {
	return strconv.FormatFloat(float64(float32(v)), 'x', -1, 32) + "f"
}

// rowPrelude writes the includes and the vector helpers for vec lanes: a
// vector type (one lane when vec is 1, so that scalar code is the same
// code), loads and stores through memcpy (no alignment assumed), splat,
// horizontal sum and max, a lane-wise max and select.
func rowPrelude(w *cSrc, vec int64, dt schedule.DType) {
	w.line("// Generated by llmir kernels (template). Do not edit.")
	w.line("#include <stdint.h>")
	w.line("#include <string.h>")
	w.line("")
	w.line("#define V %d", vec)
	w.vec = vec
	w.line("typedef float llmir_v __attribute__((vector_size(%d)));", vec*4)
	w.line("typedef int32_t llmir_vi __attribute__((vector_size(%d)));", vec*4)
	w.line("static inline llmir_v llmir_vload(const float *p) { llmir_v v; memcpy(&v, p, sizeof v); return v; }")
	w.line("static inline void llmir_vstore(float *p, llmir_v v) { memcpy(p, &v, sizeof v); }")
	w.line("static inline llmir_v llmir_splat(float x) { llmir_v v = {0}; return v + x; }")
	w.line("static inline float llmir_vsum(llmir_v v) { float s = 0.0f; for (int l = 0; l < V; l++) s += v[l]; return s; }")
	w.line("static inline llmir_v llmir_vsel(llmir_vi m, llmir_v a, llmir_v b) { return (llmir_v)(((llmir_vi)a & m) | ((llmir_vi)b & ~m)); }")
	w.line("static inline llmir_v llmir_vmax(llmir_v a, llmir_v b) { return llmir_vsel(a > b, a, b); }")
	w.line("static inline float llmir_vhmax(llmir_v v) { float m = v[0]; for (int l = 1; l < V; l++) m = v[l] > m ? v[l] : m; return m; }")
	// Once per row: the sqrt instruction (no header needed for the builtin).
	w.line("static inline float llmir_rsqrt(float y) { return 1.0f / __builtin_sqrtf(y); }")
	// exp is a Cody–Waite range reduction x = n·ln2 + r, |r| ≤ ln2/2, a
	// degree-6 Taylor polynomial (relative error 1.2e-7) and 2^n built in
	// the exponent bits; inputs are clamped to [-87, 88] where 2^n is a
	// normal float. llmir_exp is the one-lane version for tails.
	w.line("static inline llmir_v llmir_vexp(llmir_v x) {")
	w.line("  x = llmir_vsel(x < llmir_splat(-87.0f), llmir_splat(-87.0f), x);")
	w.line("  x = llmir_vsel(x > llmir_splat(88.0f), llmir_splat(88.0f), x);")
	w.line("  llmir_v t = x * 1.44269504088896341f + 0.5f;")
	w.line("  llmir_vi n = __builtin_convertvector(t, llmir_vi);")
	w.line("  n += (llmir_vi)(__builtin_convertvector(n, llmir_v) > t);")
	w.line("  llmir_v nf = __builtin_convertvector(n, llmir_v);")
	w.line("  llmir_v r = x - nf * 0.693145751953125f - nf * 1.428606765330187045e-06f;")
	w.line("  llmir_v p = 1.0f + r * (1.0f + r * (0.5f + r * (0.16666666666666666f + r * (0.041666666666666664f + r * (0.008333333333333333f + r * 0.001388888888888889f)))));")
	w.line("  return p * (llmir_v)((n + 127) << 23);")
	w.line("}")
	w.line("static inline float llmir_exp(float x) {")
	w.line("  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);")
	w.line("  float t = x * 1.44269504088896341f + 0.5f;")
	w.line("  int32_t n = (int32_t)t; if ((float)n > t) n--;")
	w.line("  float r = x - (float)n * 0.693145751953125f - (float)n * 1.428606765330187045e-06f;")
	w.line("  float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.16666666666666666f + r * (0.041666666666666664f + r * (0.008333333333333333f + r * 0.001388888888888889f)))));")
	w.line("  int32_t b = (n + 127) << 23; float s; memcpy(&s, &b, 4); return p * s;")
	w.line("}")
	rowStorage(w, dt)
	w.line("")
}

// rowStorage writes llmir_t, the storage type of the kernel's activations and
// weights, with its vector and scalar conversions to and from f32:
// llmir_vld/llmir_vst (V elements) and llmir_ld/llmir_st (one). bf16
// rounds to nearest even as target.Round does; f16 converts through
// _Float16.
func rowStorage(w *cSrc, dt schedule.DType) {
	switch dt {
	case schedule.BF16:
		w.line("typedef uint16_t llmir_t;")
		w.line("typedef uint16_t llmir_vh __attribute__((vector_size(%d)));", 2*w.vec)
		w.line("typedef uint32_t llmir_vu __attribute__((vector_size(%d)));", 4*w.vec)
		w.line("static inline llmir_v llmir_vld(const llmir_t *p) { llmir_vh h; memcpy(&h, p, sizeof h); return (llmir_v)(__builtin_convertvector(h, llmir_vu) << 16); }")
		w.line("static inline void llmir_vst(llmir_t *p, llmir_v v) { llmir_vu u = (llmir_vu)v; u += 0x7fffu + ((u >> 16) & 1u); llmir_vh h = __builtin_convertvector(u >> 16, llmir_vh); memcpy(p, &h, sizeof h); }")
		w.line("static inline float llmir_ld(llmir_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }")
		w.line("static inline llmir_t llmir_st(float f) { uint32_t u; memcpy(&u, &f, 4); if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); u += 0x7fffu + ((u >> 16) & 1u); return (uint16_t)(u >> 16); }")
	case schedule.F16:
		w.line("typedef uint16_t llmir_t;")
		w.line("typedef _Float16 llmir_vh __attribute__((vector_size(%d)));", 2*w.vec)
		w.line("static inline llmir_v llmir_vld(const llmir_t *p) { llmir_vh h; memcpy(&h, p, sizeof h); return __builtin_convertvector(h, llmir_v); }")
		w.line("static inline void llmir_vst(llmir_t *p, llmir_v v) { llmir_vh h = __builtin_convertvector(v, llmir_vh); memcpy(p, &h, sizeof h); }")
		w.line("static inline float llmir_ld(llmir_t b) { _Float16 x; memcpy(&x, &b, 2); return (float)x; }")
		w.line("static inline llmir_t llmir_st(float f) { _Float16 h = (_Float16)f; llmir_t u; memcpy(&u, &h, 2); return u; }")
	default:
		w.line("typedef float llmir_t;")
		w.line("static inline llmir_v llmir_vld(const llmir_t *p) { return llmir_vload(p); }")
		w.line("static inline void llmir_vst(llmir_t *p, llmir_v v) { llmir_vstore(p, v); }")
		w.line("static inline float llmir_ld(llmir_t x) { return x; }")
		w.line("static inline llmir_t llmir_st(float x) { return x; }")
	}
}

// rowLoop opens the parallel loop over rows (closed by the caller with
// w.close()): r is the row, the chunk knob the OpenMP static chunk.
func rowLoop(w *cSrc, chunk int64) {
	w.line("const int64_t rows = dims[0];")
	w.line("#pragma omp parallel for schedule(static, %d) if(rows > %d)", chunk, chunk)
	w.open("for (int64_t r = 0; r < rows; r++)")
}

// rowSweep writes a loop over the n columns of a row in steps of unroll
// vectors, then single vectors, then scalars: vecStmt(k, j) is the
// statement for the k-th vector at column expression j, scalarStmt(j) the
// one for a single column. n is a compile-time constant, so gcc drops the
// loops that never run.
func rowSweep(w *cSrc, n, vec, unroll int64, vecStmt func(k int64, j string) string, scalarStmt func(j string) string) {
	w.open("")
	w.line("int64_t j = 0;")
	if unroll > 1 {
		w.open("for (; j + %d <= %d; j += %d)", unroll*vec, n, unroll*vec)
		for k := range unroll {
			w.line("%s", vecStmt(k, fmt.Sprintf("j + %d", k*vec)))
		}
		w.close()
	}
	w.open("for (; j + %d <= %d; j += %d)", vec, n, vec)
	w.line("%s", vecStmt(0, "j"))
	w.close()
	if vec > 1 {
		w.open("for (; j < %d; j++)", n)
		w.line("%s", scalarStmt("j"))
		w.close()
	}
	w.close()
}

// rowAccs declares unroll vector accumulators acc0… set to init.
func rowAccs(w *cSrc, name string, unroll int64, init string) {
	for k := range unroll {
		w.line("llmir_v %s%d = llmir_splat(%s);", name, k, init)
	}
}

// rowCombine is the expression folding accumulators acc0… with op.
func rowCombine(name string, unroll int64, op func(a, b string) string) string {
	e := name + "0"
	for k := int64(1); k < unroll; k++ {
		e = op(e, fmt.Sprintf("%s%d", name, k))
	}
	return e
}

func cPlus(a, b string) string { return "(" + a + " + " + b + ")" }

// normEmitC writes the kernel RMSNorm and LayerNorm share around their row
// body: the prelude for the vec knob, the entry, x (bufs[0]), the
// per-column vectors (bufs[1…], const, named as given), out, the parallel
// row loop and the row's xr and o; row writes the body of one row.
func normEmitC(s *schedule.Schedule, hw Hardware, name string, dt schedule.DType, entry string, n int64, vectors []string, row func(w *cSrc, vec, un, n int64)) (string, error) {
	kv, err := rowKnobs(hw).Read(s)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	var w cSrc
	rowPrelude(&w, kv["vec"], dt)
	w.open("int %s(void *const *bufs, const int64_t *dims)", entry)
	w.line("const llmir_t *restrict x = (const llmir_t *)bufs[0];")
	for i, v := range vectors {
		w.line("const llmir_t *restrict %s = (const llmir_t *)bufs[%d];", v, i+1)
	}
	w.line("llmir_t *restrict out = (llmir_t *)bufs[%d];", len(vectors)+1)
	rowLoop(&w, kv["chunk"])
	w.line("const llmir_t *restrict xr = x + r * %d;", n)
	w.line("llmir_t *restrict o = out + r * %d;", n)
	row(&w, kv["vec"], kv["unroll"], n)
	w.close()
	w.line("return 0;")
	w.close()
	return w.b.String(), nil
}

// --- RMSNorm ---

func (k RMSNorm) bucket() int64 { return rowBucketOr(k.Rows, k.RowsBucket) }

// Name is "rms_norm/rows=…,H=…/<dtype>".
func (k RMSNorm) Name() string { return fmt.Sprintf("rms_norm/rows=%d,H=%d/%s", k.Rows, k.H, k.DType) }

// Def is the template x [rows, H], w [H] → out [rows, H].
func (k RMSNorm) Def() (*schedule.Def, error) {
	if !(k.Eps > 0) {
		return nil, fmt.Errorf("rms_norm: eps %g must be positive", k.Eps)
	}
	return rowDef("rms_norm", "out[r, j] = x[r, j] * w[j] / sqrt(sum_j(x[r, j]^2) / H + eps)", k.Rows, k.RowsBucket, k.H, k.DType, []string{"w"}, k.DType, k.H)
}

// Workload is the IR workload, or llmir.rms_norm on [tokens, H].
func (k RMSNorm) Workload() ir.Workload {
	if k.IR != nil {
		return *k.IR
	}
	dt := k.DType.String()
	return rowsWorkload("llmir.rms_norm", k.bucket(),
		[]ir.TensorSig{tokSig(k.H, dt), {Shape: []int64{k.H}, DType: dt}},
		[]ir.TensorSig{tokSig(k.H, dt)}, map[string]string{"eps": ir.F32Attr(k.Eps).String()})
}

// Dims is [Rows].
func (k RMSNorm) Dims() []int64 { return []int64{k.Rows} }

// FLOPs: square-add, then scale and weight (4 per element).
func (k RMSNorm) FLOPs() float64 { return 4 * float64(k.Rows*k.H) }

// Bytes: x read and out written once, w once.
func (k RMSNorm) Bytes() float64 { return float64(k.DType.Size() * (2*k.Rows*k.H + k.H)) }

// Reference is ref.RMSNorm in float64.
func (k RMSNorm) Reference(in [][]float64) [][]float64 {
	x, wt := in[0], in[1]
	h := int(k.H)
	out := make([]float64, int(k.Rows)*h)
	for r := range int(k.Rows) {
		row := x[r*h : (r+1)*h]
		var ss float64
		for _, v := range row {
			ss += v * v
		}
		inv := 1 / math.Sqrt(ss/float64(h)+k.Eps)
		for i, v := range row {
			out[r*h+i] = v * inv * wt[i]
		}
	}
	return [][]float64{out}
}

// Space samples the row knobs.
func (k RMSNorm) Space(s *schedule.Schedule, hw Hardware) error { return rowKnobs(hw).Sample(s) }

// Default chooses the row knobs by rule (rowDefaults).
func (k RMSNorm) Default(s *schedule.Schedule, hw Hardware) error {
	return rowKnobs(hw).Choose(s, rowDefaults(hw, k.bucket(), k.H))
}

// EmitC writes one pass summing squares into unroll vector accumulators
// and one scaling pass, per row.
func (k RMSNorm) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	return normEmitC(s, hw, "rms_norm", k.DType, entry, k.H, []string{"wt"}, k.emitRow)
}

// emitRow writes one row: the sum of squares, then the scaled row.
func (k RMSNorm) emitRow(w *cSrc, vec, un, n int64) {
	rowAccs(w, "acc", un, "0.0f")
	w.line("float ss = 0.0f;")
	rowSweep(w, n, vec, un,
		func(i int64, j string) string {
			return fmt.Sprintf("{ llmir_v v = llmir_vld(xr + %s); acc%d += v * v; }", j, i)
		},
		func(j string) string { return fmt.Sprintf("{ float v = llmir_ld(xr[%s]); ss += v * v; }", j) })
	w.line("ss += llmir_vsum(%s);", rowCombine("acc", un, cPlus))
	w.line("const float inv = llmir_rsqrt(ss * %s + %s);", cF32(1/float64(n)), cF32(k.Eps))
	w.line("const llmir_v vinv = llmir_splat(inv);")
	rowSweep(w, n, vec, un,
		func(_ int64, j string) string {
			return fmt.Sprintf("llmir_vst(o + %s, llmir_vld(xr + %s) * vinv * llmir_vld(wt + %s));", j, j, j)
		},
		func(j string) string {
			return fmt.Sprintf("o[%s] = llmir_st(llmir_ld(xr[%s]) * inv * llmir_ld(wt[%s]));", j, j, j)
		})
}

// --- LayerNorm ---

func (k LayerNorm) bucket() int64 { return rowBucketOr(k.Rows, k.RowsBucket) }

// Name is "layer_norm/rows=…,H=…/<dtype>".
func (k LayerNorm) Name() string {
	return fmt.Sprintf("layer_norm/rows=%d,H=%d/%s", k.Rows, k.H, k.DType)
}

// Def is the template x [rows, H], w [H], b [H] → out [rows, H].
func (k LayerNorm) Def() (*schedule.Def, error) {
	if !(k.Eps > 0) {
		return nil, fmt.Errorf("layer_norm: eps %g must be positive", k.Eps)
	}
	return rowDef("layer_norm", "out[r, j] = (x[r, j] - mean_r) / sqrt(var_r + eps) * w[j] + b[j]", k.Rows, k.RowsBucket, k.H, k.DType, []string{"w", "b"}, k.DType, k.H)
}

// Workload is the IR workload, or llmir.layer_norm on [tokens, H].
func (k LayerNorm) Workload() ir.Workload {
	if k.IR != nil {
		return *k.IR
	}
	dt := k.DType.String()
	vec := ir.TensorSig{Shape: []int64{k.H}, DType: dt}
	return rowsWorkload("llmir.layer_norm", k.bucket(), []ir.TensorSig{tokSig(k.H, dt), vec, vec},
		[]ir.TensorSig{tokSig(k.H, dt)}, map[string]string{"eps": ir.F32Attr(k.Eps).String()})
}

// Dims is [Rows].
func (k LayerNorm) Dims() []int64 { return []int64{k.Rows} }

// FLOPs: sum, squared deviation, normalize and affine (7 per element).
func (k LayerNorm) FLOPs() float64 { return 7 * float64(k.Rows*k.H) }

// Bytes: x read and out written once, w and b once.
func (k LayerNorm) Bytes() float64 { return float64(k.DType.Size() * (2*k.Rows*k.H + 2*k.H)) }

// Reference is ref.LayerNorm in float64 (two-pass variance).
func (k LayerNorm) Reference(in [][]float64) [][]float64 {
	x, wt, b := in[0], in[1], in[2]
	h := int(k.H)
	out := make([]float64, int(k.Rows)*h)
	for r := range int(k.Rows) {
		row := x[r*h : (r+1)*h]
		var mean, vr float64
		for _, v := range row {
			mean += v
		}
		mean /= float64(h)
		for _, v := range row {
			vr += (v - mean) * (v - mean)
		}
		inv := 1 / math.Sqrt(vr/float64(h)+k.Eps)
		for i, v := range row {
			out[r*h+i] = (v-mean)*inv*wt[i] + b[i]
		}
	}
	return [][]float64{out}
}

// Space samples the row knobs.
func (k LayerNorm) Space(s *schedule.Schedule, hw Hardware) error { return rowKnobs(hw).Sample(s) }

// Default chooses the row knobs by rule (rowDefaults).
func (k LayerNorm) Default(s *schedule.Schedule, hw Hardware) error {
	return rowKnobs(hw).Choose(s, rowDefaults(hw, k.bucket(), k.H))
}

// EmitC writes, per row, a mean pass, a variance pass around the mean
// (two passes: E[x²] − E[x]² cancels catastrophically when |mean| ≫ std)
// and the affine pass; the row stays in L1 between them.
func (k LayerNorm) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	return normEmitC(s, hw, "layer_norm", k.DType, entry, k.H, []string{"wt", "bs"}, k.emitRow)
}

// emitRow writes one row: the mean, the variance around it and the affine
// pass.
func (k LayerNorm) emitRow(w *cSrc, vec, un, n int64) {
	rowAccs(w, "sum", un, "0.0f")
	w.line("float s = 0.0f;")
	rowSweep(w, n, vec, un,
		func(i int64, j string) string { return fmt.Sprintf("sum%d += llmir_vld(xr + %s);", i, j) },
		func(j string) string { return fmt.Sprintf("s += llmir_ld(xr[%s]);", j) })
	w.line("const float mean = (s + llmir_vsum(%s)) * %s;", rowCombine("sum", un, cPlus), cF32(1/float64(n)))
	w.line("const llmir_v vmean = llmir_splat(mean);")
	rowAccs(w, "dev", un, "0.0f")
	w.line("float d2 = 0.0f;")
	rowSweep(w, n, vec, un,
		func(i int64, j string) string {
			return fmt.Sprintf("{ llmir_v d = llmir_vld(xr + %s) - vmean; dev%d += d * d; }", j, i)
		},
		func(j string) string { return fmt.Sprintf("{ float d = llmir_ld(xr[%s]) - mean; d2 += d * d; }", j) })
	w.line("const float inv = llmir_rsqrt((d2 + llmir_vsum(%s)) * %s + %s);", rowCombine("dev", un, cPlus), cF32(1/float64(n)), cF32(k.Eps))
	w.line("const llmir_v vinv = llmir_splat(inv);")
	rowSweep(w, n, vec, un,
		func(_ int64, j string) string {
			return fmt.Sprintf("llmir_vst(o + %s, (llmir_vld(xr + %s) - vmean) * vinv * llmir_vld(wt + %s) + llmir_vld(bs + %s));", j, j, j, j)
		},
		func(j string) string {
			return fmt.Sprintf("o[%s] = llmir_st((llmir_ld(xr[%s]) - mean) * inv * llmir_ld(wt[%s]) + llmir_ld(bs[%s]));", j, j, j, j)
		})
}
