package kernels

// Softmax and Argmax are row templates (the skeleton in norm.go): both
// reduce a row with max, which the loop-nest IR has no reduction for (its
// reductions are sums), and argmax also carries an index with each
// maximum. Softmax evaluates exp with the vector polynomial of the
// rowPrelude (a scalar expf call would keep the sweep from vectorizing).
//
// Argmax writes i32 indices although llmir.argmax's result is i64: the
// harness poisons and checks 2- and 4-byte elements only (target/cpu
// csrc/harness.c), and a vocabulary never reaches 2^31 entries. The
// kernel's Workload is still the IR's (i64), so its records are found by
// compiles of the module; the caller widens the index.

import (
	"fmt"
	"math"
	"slices"

	"llmir/ir"
	"llmir/schedule"
)

func init() {
	register("llmir.softmax", softmaxFromWorkload)
	register("llmir.argmax", argmaxFromWorkload)
}

// Softmax is exp(x − max)/Σ exp(x − max) over the last axis of x [Rows, N].
type Softmax struct {
	Rows, N    int64
	RowsBucket int64 // 0: Rows itself
	DType      schedule.DType
	IR         *ir.Workload
}

// Argmax is the index of the largest element of each row of x [Rows, N]
// (the first on ties; NaN is larger than every number and the first NaN
// wins, as ref.Argmax), written as i32.
type Argmax struct {
	Rows, N    int64
	RowsBucket int64
	DType      schedule.DType // of x
	IR         *ir.Workload
}

// lastAxis checks that a softmax/argmax workload reduces the last axis.
func lastAxis(w ir.Workload) error {
	as, err := w.ParseAttrs()
	if err != nil {
		return err
	}
	rank := int64(len(w.Inputs[0].Shape))
	if ax := as.Int("axis", -1); ax != -1 && ax != rank-1 {
		return fmt.Errorf("axis %d: the kernel reduces the last axis only", ax)
	}
	return nil
}

func softmaxFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkArity(w, 1, 1); err != nil {
		return nil, err
	}
	dt, err := sameFloat(w)
	if err != nil {
		return nil, err
	}
	x := w.Inputs[0]
	if !slices.Equal(w.Output[0].Shape, x.Shape) {
		return nil, fmt.Errorf("result shape %v differs from x's %v", w.Output[0].Shape, x.Shape)
	}
	if err := lastAxis(w); err != nil {
		return nil, err
	}
	return Softmax{Rows: rows(x), N: x.Shape[len(x.Shape)-1], DType: dt, IR: &w}, nil
}

func argmaxFromWorkload(w ir.Workload) (Kernel, error) {
	if len(w.Inputs) == 1 && len(w.Inputs[0].Shape) < 2 {
		return nil, fmt.Errorf("x %v: the kernel wants at least one row dim (its result is a tensor of indices)", w.Inputs[0].Shape)
	}
	if err := checkArity(w, 1, 1); err != nil {
		return nil, err
	}
	x, out := w.Inputs[0], w.Output[0]
	dt, err := floatType(x)
	if err != nil {
		return nil, err
	}
	if out.DType != "i64" && out.DType != "i32" {
		return nil, fmt.Errorf("result is %s, want i64 (or i32)", out.DType)
	}
	if !slices.Equal(out.Shape, x.Shape[:len(x.Shape)-1]) {
		return nil, fmt.Errorf("result shape %v, want x's leading dims %v", out.Shape, x.Shape[:len(x.Shape)-1])
	}
	if err := lastAxis(w); err != nil {
		return nil, err
	}
	return Argmax{Rows: rows(x), N: x.Shape[len(x.Shape)-1], DType: dt, IR: &w}, nil
}

// --- Softmax ---

func (k Softmax) bucket() int64 { return rowBucketOr(k.Rows, k.RowsBucket) }

// Name is "softmax/rows=…,N=…/<dtype>".
func (k Softmax) Name() string { return fmt.Sprintf("softmax/rows=%d,N=%d/%s", k.Rows, k.N, k.DType) }

// Def is the template x [rows, N] → out [rows, N].
func (k Softmax) Def() (*schedule.Def, error) {
	return rowDef("softmax", "out[r, j] = exp(x[r, j] - max_j x[r, j]) / sum_j exp(x[r, j] - max_j x[r, j])", k.Rows, k.RowsBucket, k.N, k.DType, nil, k.DType, k.N)
}

// Workload is the IR workload, or llmir.softmax on [tokens, N].
func (k Softmax) Workload() ir.Workload {
	if k.IR != nil {
		return *k.IR
	}
	dt := k.DType.String()
	return rowsWorkload("llmir.softmax", k.bucket(), []ir.TensorSig{tokSig(k.N, dt)}, []ir.TensorSig{tokSig(k.N, dt)}, nil)
}

// Dims is [Rows].
func (k Softmax) Dims() []int64 { return []int64{k.Rows} }

// FLOPs: max, subtract-exp (counted 1), sum, scale.
func (k Softmax) FLOPs() float64 { return 4 * float64(k.Rows*k.N) }

// Bytes: x read and out written once.
func (k Softmax) Bytes() float64 { return float64(2 * k.Rows * k.N * k.DType.Size()) }

// Reference is ref.Softmax over the last axis in float64.
func (k Softmax) Reference(in [][]float64) [][]float64 {
	x, n := in[0], int(k.N)
	out := make([]float64, len(x))
	for r := range int(k.Rows) {
		row := x[r*n : (r+1)*n]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, v)
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(v - mx)
		}
		for i, v := range row {
			out[r*n+i] = math.Exp(v-mx) / sum
		}
	}
	return [][]float64{out}
}

// Space samples the row knobs.
func (k Softmax) Space(s *schedule.Schedule, hw Hardware) error { return rowKnobs(hw).Sample(s) }

// Default chooses the row knobs by rule (rowDefaults).
func (k Softmax) Default(s *schedule.Schedule, hw Hardware) error {
	return rowKnobs(hw).Choose(s, rowDefaults(hw, k.bucket(), k.N))
}

// EmitC writes three sweeps per row: max, exp and sum (storing the
// exponentials in out), scale by the reciprocal of the sum.
func (k Softmax) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	kv, err := rowKnobs(hw).Read(s)
	if err != nil {
		return "", fmt.Errorf("softmax: %w", err)
	}
	vec, un, n := kv["vec"], kv["unroll"], k.N
	var w cSrc
	rowPrelude(&w, vec, k.DType)
	w.open("int %s(void *const *bufs, const int64_t *dims)", entry)
	w.line("const llmir_t *restrict x = (const llmir_t *)bufs[0];")
	w.line("llmir_t *restrict out = (llmir_t *)bufs[1];")
	rowLoop(&w, kv["chunk"])
	w.line("const llmir_t *restrict xr = x + r * %d;", n)
	w.line("llmir_t *restrict o = out + r * %d;", n)
	rowAccs(&w, "mx", un, "-__builtin_inff()")
	w.line("float m = -__builtin_inff();")
	rowSweep(&w, n, vec, un,
		func(i int64, j string) string {
			return fmt.Sprintf("mx%d = llmir_vmax(mx%d, llmir_vld(xr + %s));", i, i, j)
		},
		func(j string) string { return fmt.Sprintf("{ float v = llmir_ld(xr[%s]); m = v > m ? v : m; }", j) })
	w.line("{ float v = llmir_vhmax(%s); m = v > m ? v : m; }", rowCombine("mx", un, func(a, b string) string { return "llmir_vmax(" + a + ", " + b + ")" }))
	w.line("const llmir_v vm = llmir_splat(m);")
	rowAccs(&w, "sum", un, "0.0f")
	w.line("float s = 0.0f;")
	rowSweep(&w, n, vec, un,
		func(i int64, j string) string {
			return fmt.Sprintf("{ llmir_v e = llmir_vexp(llmir_vld(xr + %[1]s) - vm); sum%[2]d += e; llmir_vst(o + %[1]s, e); }", j, i)
		},
		func(j string) string {
			return fmt.Sprintf("{ float e = llmir_exp(llmir_ld(xr[%[1]s]) - m); s += e; o[%[1]s] = llmir_st(e); }", j)
		})
	w.line("const float inv = 1.0f / (s + llmir_vsum(%s));", rowCombine("sum", un, cPlus))
	w.line("const llmir_v vinv = llmir_splat(inv);")
	rowSweep(&w, n, vec, un,
		func(_ int64, j string) string {
			return fmt.Sprintf("llmir_vst(o + %[1]s, llmir_vld(o + %[1]s) * vinv);", j)
		},
		func(j string) string { return fmt.Sprintf("o[%[1]s] = llmir_st(llmir_ld(o[%[1]s]) * inv);", j) })
	w.close()
	w.line("return 0;")
	w.close()
	return w.b.String(), nil
}

// --- Argmax ---

func (k Argmax) bucket() int64 { return rowBucketOr(k.Rows, k.RowsBucket) }

// Name is "argmax/rows=…,N=…/<dtype>".
func (k Argmax) Name() string { return fmt.Sprintf("argmax/rows=%d,N=%d/%s", k.Rows, k.N, k.DType) }

// Def is the template x [rows, N] → out [rows] (i32).
func (k Argmax) Def() (*schedule.Def, error) {
	if k.N > math.MaxInt32 {
		return nil, fmt.Errorf("argmax: %d columns do not fit i32 indices", k.N)
	}
	return rowDef("argmax", "out[r] = first j with x[r, j] = max_j x[r, j] (NaN largest)", k.Rows, k.RowsBucket, k.N, k.DType, nil, schedule.I32, 0)
}

// Workload is the IR workload, or llmir.argmax on [tokens, N] → i64.
func (k Argmax) Workload() ir.Workload {
	if k.IR != nil {
		return *k.IR
	}
	return rowsWorkload("llmir.argmax", k.bucket(), []ir.TensorSig{tokSig(k.N, k.DType.String())},
		[]ir.TensorSig{{Shape: []int64{0}, Sym: []string{"tokens"}, DType: "i64"}}, nil)
}

// Dims is [Rows].
func (k Argmax) Dims() []int64 { return []int64{k.Rows} }

// FLOPs: one comparison per element.
func (k Argmax) FLOPs() float64 { return float64(k.Rows * k.N) }

// Bytes: x read once, the indices written.
func (k Argmax) Bytes() float64 { return float64(k.Rows*k.N*k.DType.Size() + 4*k.Rows) }

// Reference is ref.Argmax over the last axis.
func (k Argmax) Reference(in [][]float64) [][]float64 {
	x, n := in[0], int(k.N)
	out := make([]float64, k.Rows)
	for r := range int(k.Rows) {
		row := x[r*n : (r+1)*n]
		best, bv := 0, row[0]
		for i := 1; i < n && !math.IsNaN(bv); i++ {
			if v := row[i]; v > bv || math.IsNaN(v) {
				best, bv = i, v
			}
		}
		out[r] = float64(best)
	}
	return [][]float64{out}
}

// Space samples the row knobs.
func (k Argmax) Space(s *schedule.Schedule, hw Hardware) error { return rowKnobs(hw).Sample(s) }

// Default chooses the row knobs by rule (rowDefaults).
func (k Argmax) Default(s *schedule.Schedule, hw Hardware) error {
	return rowKnobs(hw).Choose(s, rowDefaults(hw, k.bucket(), k.N))
}

// EmitC keeps, per accumulator, a vector of the best values and one of
// their indices; a lane takes a new element when it is larger, or NaN
// while the lane holds a number, so each lane holds its first maximum.
// The lanes and accumulators are then merged preferring NaN, then the
// larger value, then the smaller index, which is the first maximum of
// the row.
func (k Argmax) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	kv, err := rowKnobs(hw).Read(s)
	if err != nil {
		return "", fmt.Errorf("argmax: %w", err)
	}
	vec, un, n := kv["vec"], kv["unroll"], k.N
	var w cSrc
	rowPrelude(&w, vec, k.DType)
	w.line("static inline int llmir_better(float v, int32_t i, float bv, int32_t bi) {")
	w.line("  if (v != v) return bv == bv || i < bi;")
	w.line("  if (bv != bv) return 0;")
	w.line("  return v > bv || (v == bv && i < bi);")
	w.line("}")
	w.line("")
	w.open("int %s(void *const *bufs, const int64_t *dims)", entry)
	w.line("const llmir_t *restrict x = (const llmir_t *)bufs[0];")
	w.line("int32_t *restrict out = (int32_t *)bufs[1];")
	w.line("llmir_vi iota;")
	w.line("for (int l = 0; l < V; l++) iota[l] = l;")
	rowLoop(&w, kv["chunk"])
	w.line("const llmir_t *restrict xr = x + r * %d;", n)
	for i := range un {
		w.line("llmir_v bv%d = llmir_splat(-__builtin_inff());", i)
		w.line("llmir_vi bi%d = iota + %d;", i, i*vec)
	}
	w.line("float sv = -__builtin_inff();")
	w.line("int32_t si = 0;")
	w.line("int tail = 0;")
	rowSweep(&w, n, vec, un,
		func(i int64, j string) string {
			return fmt.Sprintf("{ llmir_v v = llmir_vld(xr + %[1]s); llmir_vi m = (v > bv%[2]d) | ((v != v) & (bv%[2]d == bv%[2]d)); bv%[2]d = llmir_vsel(m, v, bv%[2]d); bi%[2]d = (m & (iota + (int32_t)(%[1]s))) | (~m & bi%[2]d); }", j, i)
		},
		func(j string) string {
			return fmt.Sprintf("{ float v = llmir_ld(xr[%[1]s]); if (!tail || llmir_better(v, (int32_t)(%[1]s), sv, si)) { sv = v; si = (int32_t)(%[1]s); tail = 1; } }", j)
		})
	w.line("float best = -__builtin_inff();")
	w.line("int32_t bi = 0;")
	w.line("int have = 0;")
	for i := range un {
		// A lane whose init was never replaced holds −inf at an index
		// ≥ its own start, which only wins when every element is −inf;
		// its index is then still a position of the row whenever the row
		// is at least one vector of accumulators long, and otherwise it is
		// skipped by the bound check.
		w.open("for (int l = 0; l < V; l++)")
		w.line("if (bi%[1]d[l] < %[2]d && (!have || llmir_better(bv%[1]d[l], bi%[1]d[l], best, bi))) { best = bv%[1]d[l]; bi = bi%[1]d[l]; have = 1; }", i, n)
		w.close()
	}
	w.line("if (tail && (!have || llmir_better(sv, si, best, bi))) { best = sv; bi = si; }")
	w.line("out[r] = bi;")
	w.close()
	w.line("return 0;")
	w.close()
	return w.b.String(), nil
}
