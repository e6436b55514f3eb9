package kernels

// mul and add (the residual add) are written in the schedule language: one
// spatial stage out[i, j] = a[i, j] op b[i, j] over [rows, H], which the
// loop-nest IR expresses directly, so their design space is made of
// ordinary primitives (split, vectorize, unroll, parallel) and cgen prints
// them.
//
// silu and the fused silu·mul of a SwiGLU MLP are template kernels
// instead, although the IR expresses them (Fn("silu")): cgen prints a call
// as a scalar libm expf per element, which keeps the loop from
// vectorizing. The template evaluates exp with a vector
// polynomial (llmir_vexp, in the row templates' rowPrelude). The fused
// silu·mul reads gate and up once and writes once, where silu then mul
// would write and re-read the intermediate.

import (
	"fmt"
	"math"
	"slices"

	"llmir/ir"
	"llmir/schedule"
)

// ElementwiseOp names what an Elementwise kernel computes.
type ElementwiseOp string

// The element-wise ops.
const (
	OpMul ElementwiseOp = "mul" // out = a · b
	OpAdd ElementwiseOp = "add" // out = a + b (the residual add)
)

func init() {
	register("llmir.mul", func(w ir.Workload) (Kernel, error) { return elementwiseFromWorkload(w, OpMul) })
	register("llmir.add", func(w ir.Workload) (Kernel, error) { return elementwiseFromWorkload(w, OpAdd) })
	register("llmir.silu", func(w ir.Workload) (Kernel, error) { return siluFromWorkload(w, false) })
	register("llmir.silu+llmir.mul", func(w ir.Workload) (Kernel, error) { return siluFromWorkload(w, true) })
}

// Elementwise is a binary element-wise op over [Rows, H] (leading dims of
// the IR tensor flattened into rows). Rows is dynamic: compiled for RowsBucket,
// measured at Rows. With BroadcastB the second operand is one row [H]
// shared by every row (llmir.mul and llmir.add broadcast trailing dims).
type Elementwise struct {
	Op         ElementwiseOp
	Rows, H    int64
	RowsBucket int64 // 0: Rows itself
	BroadcastB bool
	DType      schedule.DType // F32 (zero value), BF16 or F16
	IR         *ir.Workload
}

// elementwiseFromWorkload reads mul's or add's operands a and b.
func elementwiseFromWorkload(w ir.Workload, op ElementwiseOp) (Kernel, error) {
	if err := checkArity(w, 2, 1); err != nil {
		return nil, err
	}
	dt, err := sameFloat(w)
	if err != nil {
		return nil, err
	}
	x := w.Inputs[0]
	if !slices.Equal(w.Output[0].Shape, x.Shape) {
		return nil, fmt.Errorf("result shape %v differs from operand 0's %v", w.Output[0].Shape, x.Shape)
	}
	k := Elementwise{Op: op, Rows: rows(x), H: x.Shape[len(x.Shape)-1], DType: dt, IR: &w}
	b := w.Inputs[1].Shape
	switch {
	case slices.Equal(b, x.Shape):
	case k.H == b[len(b)-1] && rowsOfShape(b) == 1:
		k.BroadcastB = true
	default:
		return nil, fmt.Errorf("operand shapes %v and %v: want equal shapes, or a second operand of one row [%d]", x.Shape, b, k.H)
	}
	return k, nil
}

func rowsOfShape(s []int64) int64 {
	return rows(ir.TensorSig{Shape: s})
}

func (e Elementwise) bucket() int64 { return rowBucketOr(e.Rows, e.RowsBucket) }

// Name is "<op>/rows=…,H=…/<dtype>".
func (e Elementwise) Name() string {
	b := ""
	if e.BroadcastB {
		b = ",broadcast"
	}
	return fmt.Sprintf("%s/rows=%d,H=%d%s/%s", e.Op, e.Rows, e.H, b, e.DType)
}

// Def is out[i, j] = f(…) with i over the dynamic rows.
func (e Elementwise) Def() (*schedule.Def, error) {
	if err := rowCheck(string(e.Op), e.Rows, e.RowsBucket, e.H); err != nil {
		return nil, err
	}
	if !e.DType.Float() {
		return nil, fmt.Errorf("%s: dtype %s is not a float type", e.Op, e.DType)
	}
	R, H := schedule.Dynamic("rows", e.bucket()), schedule.Static(e.H)
	i, j := schedule.NewAxis("i", R), schedule.NewAxis("j", H)
	a := schedule.Input("a", e.DType, R, H)
	var b *schedule.Tensor
	var bij schedule.Expr
	if e.BroadcastB {
		b = schedule.Input("b", e.DType, H)
		bij = b.At(j)
	} else {
		b = schedule.Input("b", e.DType, R, H)
		bij = b.At(i, j)
	}
	var body schedule.Expr
	switch e.Op {
	case OpMul:
		body = schedule.Mul(a.At(i, j), bij)
	case OpAdd:
		body = schedule.Add(a.At(i, j), bij)
	default:
		return nil, fmt.Errorf("elementwise: unknown op %q", e.Op)
	}
	out := schedule.Compute("out", e.DType, []schedule.Axis{i, j}, body)
	return schedule.NewDef(string(e.Op), []*schedule.Tensor{a, b}, out)
}

// Workload is the IR workload, or the op (group) on [tokens, H].
func (e Elementwise) Workload() ir.Workload {
	if e.IR != nil {
		return *e.IR
	}
	dt := e.DType.String()
	b := tokSig(e.H, dt)
	if e.BroadcastB {
		b = ir.TensorSig{Shape: []int64{e.H}, DType: dt}
	}
	return rowsWorkload("llmir."+string(e.Op), e.bucket(), []ir.TensorSig{tokSig(e.H, dt), b}, []ir.TensorSig{tokSig(e.H, dt)}, nil)
}

// Dims is [Rows].
func (e Elementwise) Dims() []int64 { return []int64{e.Rows} }

// FLOPs is one per element.
func (e Elementwise) FLOPs() float64 { return float64(e.Rows * e.H) }

// Bytes: every operand read once, out written once.
func (e Elementwise) Bytes() float64 {
	n := e.Rows * e.H
	elems := 3 * n
	if e.BroadcastB {
		elems = 2*n + e.H
	}
	return float64(elems * e.DType.Size())
}

// Reference computes the op in float64 (ref.Mul, ref.Add).
func (e Elementwise) Reference(in [][]float64) [][]float64 {
	n := e.Rows * e.H
	out := make([]float64, n)
	for p := range n {
		b := in[1][p%int64(len(in[1]))]
		if e.Op == OpAdd {
			out[p] = in[0][p] + b
		} else {
			out[p] = in[0][p] * b
		}
	}
	return [][]float64{out}
}

// Space splits the rows into parallel tasks of chunk rows and the columns
// into unroll × vec, vectorized and unrolled; all three sampled.
func (e Elementwise) Space(s *schedule.Schedule, hw Hardware) error {
	vec, err := s.SampleCategorical(rowVecDomain(hw), nil)
	if err != nil {
		return err
	}
	un, err := s.SampleCategorical(rowUnrollDomain, nil)
	if err != nil {
		return err
	}
	chunk, err := s.SampleCategorical(rowChunkDomain, nil)
	if err != nil {
		return err
	}
	return e.apply(s, hw, vec, un, chunk)
}

// Default is the widest vector, two vectors per step when the row holds
// them, and chunks that give every thread four tasks (rowDefaults).
func (e Elementwise) Default(s *schedule.Schedule, hw Hardware) error {
	d := rowDefaults(hw, e.bucket(), e.H)
	return e.apply(s, hw, schedule.Lit(d["vec"]), schedule.Lit(min(d["unroll"], 2)), schedule.Lit(d["chunk"]))
}

// apply is the template: i → (i0 parallel, i1 < chunk), j → (j0, j1 < unroll
// unrolled, j2 < vec vectorized). Tails are bounded extents, so any H and
// any runtime row count are covered.
func (e Elementwise) apply(s *schedule.Schedule, hw Hardware, vec, un, chunk schedule.Ref) error {
	ls, err := s.Loops("out")
	if err != nil {
		return err
	}
	is, err := s.SplitBy(ls[0], schedule.Lit(-1), chunk)
	if err != nil {
		return fmt.Errorf("%s: split rows: %w", e.Op, err)
	}
	js, err := s.SplitBy(ls[1], schedule.Lit(-1), un, vec)
	if err != nil {
		return fmt.Errorf("%s: split columns: %w", e.Op, err)
	}
	if err := s.Vectorize(js[2]); err != nil {
		return fmt.Errorf("%s: %w", e.Op, err)
	}
	if err := s.Unroll(js[1]); err != nil {
		return fmt.Errorf("%s: %w", e.Op, err)
	}
	if hw.Threads > 1 {
		if err := s.Parallel(is[0]); err != nil {
			return fmt.Errorf("%s: %w", e.Op, err)
		}
	}
	return nil
}

// SiLU is x · sigmoid(x) over [Rows, H], or with Gated the fused
// silu(gate) · up of a SwiGLU MLP (the group llmir.silu+llmir.mul, whose
// operands are gate then up). A template kernel (see the file comment).
type SiLU struct {
	Gated      bool
	Rows, H    int64
	RowsBucket int64
	DType      schedule.DType
	IR         *ir.Workload
}

// siluFromWorkload reads llmir.silu(x) or the fused group (gate, up).
func siluFromWorkload(w ir.Workload, gated bool) (Kernel, error) {
	n := 1
	if gated {
		n = 2
	}
	if err := checkArity(w, n, 1); err != nil {
		return nil, err
	}
	dt, err := sameFloat(w)
	if err != nil {
		return nil, err
	}
	x := w.Inputs[0]
	for i, s := range append(append([]ir.TensorSig{}, w.Inputs[1:]...), w.Output...) {
		if !slices.Equal(s.Shape, x.Shape) {
			return nil, fmt.Errorf("tensor %d has shape %v, operand 0 has %v", i+1, s.Shape, x.Shape)
		}
	}
	return SiLU{Gated: gated, Rows: rows(x), H: x.Shape[len(x.Shape)-1], DType: dt, IR: &w}, nil
}

func (k SiLU) bucket() int64 { return rowBucketOr(k.Rows, k.RowsBucket) }

func (k SiLU) op() string {
	if k.Gated {
		return "silu_mul"
	}
	return "silu"
}

// Name is "silu/rows=…,H=…/<dtype>" or "silu_mul/…".
func (k SiLU) Name() string { return fmt.Sprintf("%s/rows=%d,H=%d/%s", k.op(), k.Rows, k.H, k.DType) }

// Def is the template x [rows, H] (or gate, up) → out [rows, H].
func (k SiLU) Def() (*schedule.Def, error) {
	if err := rowCheck(k.op(), k.Rows, k.RowsBucket, k.H); err != nil {
		return nil, err
	}
	if !k.DType.Float() {
		return nil, fmt.Errorf("%s: dtype %s is not a float type", k.op(), k.DType)
	}
	R, H := schedule.Dynamic("rows", k.bucket()), schedule.Static(k.H)
	out := schedule.Declare("out", k.DType, R, H)
	if k.Gated {
		return schedule.NewTemplateDef("silu_mul", "out[i, j] = gate[i, j] / (1 + exp(-gate[i, j])) * up[i, j]",
			[]*schedule.Tensor{schedule.Input("gate", k.DType, R, H), schedule.Input("up", k.DType, R, H)}, out)
	}
	return schedule.NewTemplateDef("silu", "out[i, j] = x[i, j] / (1 + exp(-x[i, j]))",
		[]*schedule.Tensor{schedule.Input("x", k.DType, R, H)}, out)
}

// Workload is the IR workload, or llmir.silu (llmir.silu+llmir.mul) on
// [tokens, H].
func (k SiLU) Workload() ir.Workload {
	if k.IR != nil {
		return *k.IR
	}
	dt := k.DType.String()
	ins := []ir.TensorSig{tokSig(k.H, dt)}
	if k.Gated {
		ins = append(ins, tokSig(k.H, dt))
	}
	w := rowsWorkload("llmir.silu", k.bucket(), ins, []ir.TensorSig{tokSig(k.H, dt)}, nil)
	if k.Gated {
		w.Group = []string{"llmir.silu", "llmir.mul"}
	}
	return w
}

// Dims is [Rows].
func (k SiLU) Dims() []int64 { return []int64{k.Rows} }

// FLOPs counts silu as 4 (exp, add, divide, multiply), plus the gating
// product.
func (k SiLU) FLOPs() float64 {
	per := 4.0
	if k.Gated {
		per = 5
	}
	return per * float64(k.Rows*k.H)
}

// Bytes: operands read once, out written once.
func (k SiLU) Bytes() float64 {
	n := 2
	if k.Gated {
		n = 3
	}
	return float64(int64(n) * k.Rows * k.H * k.DType.Size())
}

// Reference is ref.SiLU (times up) in float64.
func (k SiLU) Reference(in [][]float64) [][]float64 {
	out := make([]float64, k.Rows*k.H)
	for p := range out {
		x := in[0][p]
		out[p] = x / (1 + math.Exp(-x))
		if k.Gated {
			out[p] *= in[1][p]
		}
	}
	return [][]float64{out}
}

// Space samples the row knobs.
func (k SiLU) Space(s *schedule.Schedule, hw Hardware) error { return rowKnobs(hw).Sample(s) }

// Default chooses the row knobs by rule (rowDefaults), at most two vectors
// per step: there is no reduction whose latency more would hide.
func (k SiLU) Default(s *schedule.Schedule, hw Hardware) error {
	d := rowDefaults(hw, k.bucket(), k.H)
	d["unroll"] = min(d["unroll"], 2)
	return rowKnobs(hw).Choose(s, d)
}

// EmitC writes one sweep per row with the vector exp.
func (k SiLU) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	kv, err := rowKnobs(hw).Read(s)
	if err != nil {
		return "", fmt.Errorf("%s: %w", k.op(), err)
	}
	vec, un, n := kv["vec"], kv["unroll"], k.H
	var w cSrc
	rowPrelude(&w, vec, k.DType)
	w.open("int %s(void *const *bufs, const int64_t *dims)", entry)
	w.line("const llmir_t *restrict x = (const llmir_t *)bufs[0];")
	outBuf := 1
	if k.Gated {
		w.line("const llmir_t *restrict up = (const llmir_t *)bufs[1];")
		outBuf = 2
	}
	w.line("llmir_t *restrict out = (llmir_t *)bufs[%d];", outBuf)
	rowLoop(&w, kv["chunk"])
	w.line("const llmir_t *restrict xr = x + r * %d;", n)
	if k.Gated {
		w.line("const llmir_t *restrict ur = up + r * %d;", n)
	}
	w.line("llmir_t *restrict o = out + r * %d;", n)
	gate, sgate := "", ""
	if k.Gated {
		gate, sgate = " * llmir_vld(ur + %[1]s)", " * llmir_ld(ur[%[1]s])"
	}
	rowSweep(&w, n, vec, un,
		func(_ int64, j string) string {
			return fmt.Sprintf("{ llmir_v v = llmir_vld(xr + %[1]s); llmir_vst(o + %[1]s, v / (1.0f + llmir_vexp(-v))"+gate+"); }", j)
		},
		func(j string) string {
			return fmt.Sprintf("{ float v = llmir_ld(xr[%[1]s]); o[%[1]s] = llmir_st(v / (1.0f + llmir_exp(-v))"+sgate+"); }", j)
		})
	w.close()
	w.line("return 0;")
	w.close()
	return w.b.String(), nil
}
