package kernels

// Fused kernels: the fused alternatives of ir.Partition's kernel groups.
//
// linear+add and rms_norm+linear are written in the schedule language on
// top of the linear layer's own templates: their definitions name the GEMM
// stage "out" and its weight "w", so Linear.Space and Linear.Default
// schedule them unchanged (same knobs, same traces), and the epilogue or
// prologue stage is then moved into the GEMV/GEMM nest with
// reverse_compute_at/compute_at. gate_up+silu_mul is a template kernel
// (its own C generator): two reductions sharing x cannot share one loop
// nest in the schedule language (a reduction is never computed at another
// block's loop), and one GEMM over interleaved [gate; up] rows would need
// the weights re-laid out outside the kernel, which the workload's operands
// (two separate checkpoint weights) do not allow. linear+rope+append_kv is
// a template kernel too: its output is the paged cache, written only at
// the tokens' slots, which no compute definition can express.
//
// The generated C calls nothing from libm (the harness process has none):
// exp, 1/sqrt, sin and cos are inline polynomials or Newton steps.
//
// Every fused kernel's Reference is composed from the unfused references
// (Linear.Reference and kernels/ref), so validating a fused schedule checks
// it against exactly what the unfused kernels compute.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"llmir/ir"
	"llmir/kernels/ref"
	"llmir/kvcache"
	"llmir/schedule"
	"llmir/target"
)

func init() {
	register("llmir.linear+llmir.add", linearAddFromWorkload)
	register("llmir.rms_norm+llmir.linear", normLinearFromWorkload)
	register("llmir.linear+llmir.linear+llmir.silu+llmir.mul", gateUpFromWorkload)
	register("llmir.linear+llmir.rope+llmir.append_kv", ropeAppendFromWorkload)
}

// fusedLinearShape reads x [..., K] and w [N, K] of a fused workload: the
// activation's leading dims flatten into M, as for the plain linear.
func fusedLinearShape(w ir.Workload, x, wt ir.TensorSig) (m, n, k int64, err error) {
	if len(wt.Shape) != 2 || x.Shape[len(x.Shape)-1] != wt.Shape[1] {
		return 0, 0, 0, fmt.Errorf("activation %v and weight %v do not match", x.Shape, wt.Shape)
	}
	for _, s := range append(append([]ir.TensorSig{}, w.Inputs...), w.Output...) {
		if s.DType != "f32" {
			return 0, 0, 0, unsupported("dtype %s (the fused kernels are f32)", s.DType)
		}
	}
	if err := CheckWeightLayout(w.Attrs); err != nil {
		return 0, 0, 0, err
	}
	return rows(x), wt.Shape[0], wt.Shape[1], nil
}

// sameRows checks that s is an [M, n] activation like the group's output.
func sameRows(what string, s ir.TensorSig, m, n int64) error {
	if rows(s) != m || s.Shape[len(s.Shape)-1] != n {
		return fmt.Errorf("%s %v is not %d rows of %d", what, s.Shape, m, n)
	}
	return nil
}

// fusedTokenWorkload is the workload of a fused kernel built directly
// (not from IR): token-major activations with M bucketed as "tokens".
func fusedTokenWorkload(group []string, bucket int64, in, out [][]int64) ir.Workload {
	b := ir.Bucket(bucket)
	sig := func(shape []int64) ir.TensorSig {
		if len(shape) == 2 && shape[0] < 0 {
			return ir.TensorSig{Shape: []int64{b, shape[1]}, Sym: []string{"tokens", ""}, DType: "f32"}
		}
		return ir.TensorSig{Shape: shape, DType: "f32"}
	}
	w := ir.Workload{Group: group, Dynamic: map[string]int64{"tokens": b}}
	for _, s := range in {
		w.Inputs = append(w.Inputs, sig(s))
	}
	for _, s := range out {
		w.Output = append(w.Output, sig(s))
	}
	return w
}

// toF32 and toF64 convert between the harness's float64 buffers and the
// float32 slices of kernels/ref.
func toF32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

func toF64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// LinearAdd is y = a·wᵀ + r: the linear layer with the residual add as its
// epilogue (o_proj and down_proj of a Llama block), so the GEMM's result is
// never written out and read back.
type LinearAdd struct {
	Linear // M, N, K, MBucket; IR is the fused workload when made from one
}

func linearAddFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkArity(w, 3, 1); err != nil {
		return nil, err
	}
	m, n, k, err := fusedLinearShape(w, w.Inputs[0], w.Inputs[1])
	if err != nil {
		return nil, err
	}
	if err := sameRows("residual", w.Inputs[2], m, n); err != nil {
		return nil, err
	}
	if err := sameRows("output", w.Output[0], m, n); err != nil {
		return nil, err
	}
	return LinearAdd{Linear{M: m, N: n, K: k, IR: &w}}, nil
}

// Name is "linear+add/M=…,N=…,K=…/f32".
func (l LinearAdd) Name() string {
	return fmt.Sprintf("linear+add/M=%d,N=%d,K=%d/f32", l.M, l.N, l.K)
}

// Def is out = sum(k, a[i, k] * w[j, k]) (the linear's stage, a temporary)
// and y[i, j] = out[i, j] + r[i, j].
func (l LinearAdd) Def() (*schedule.Def, error) {
	g, err := l.gemm("linear+add", schedule.F32)
	if err != nil {
		return nil, err
	}
	r := schedule.Input("r", schedule.F32, g.i.Dim, g.j.Dim)
	y := schedule.Compute("y", schedule.F32, []schedule.Axis{g.i, g.j}, schedule.Add(g.out.At(g.i, g.j), r.At(g.i, g.j)))
	return schedule.NewDef("linear_add", []*schedule.Tensor{g.a, g.w, r}, y)
}

// Workload is llmir.linear+llmir.add on x [M, K], w [N, K], residual [M, N].
func (l LinearAdd) Workload() ir.Workload {
	if l.IR != nil {
		return *l.IR
	}
	return fusedTokenWorkload([]string{"llmir.linear", "llmir.add"}, l.bucket(),
		[][]int64{{-1, l.K}, {l.N, l.K}, {-1, l.N}}, [][]int64{{-1, l.N}})
}

// FLOPs is the GEMM's plus one add per output.
func (l LinearAdd) FLOPs() float64 { return l.Linear.FLOPs() + float64(l.M*l.N) }

// Bytes adds one read of the residual to the linear's traffic.
func (l LinearAdd) Bytes() float64 { return l.Linear.Bytes() + 4*float64(l.M*l.N) }

// Reference is the unfused pair: the linear's reference, stored as f32 as
// its output buffer would be, then ref.Add.
func (l LinearAdd) Reference(in [][]float64) [][]float64 {
	out := toF32(l.Linear.Reference(in[:2])[0])
	shape := []int{int(l.M), int(l.N)}
	y, _, err := ref.Add(out, shape, toF32(in[2]), shape)
	if err != nil {
		panic(err) // shapes come from the kernel itself
	}
	return [][]float64{toF64(y)}
}

// Space is the linear's design space with the epilogue placed by
// fusedEpilogue.
func (l LinearAdd) Space(s *schedule.Schedule, hw Hardware) error {
	return withEpilogue(s, hw, l.Linear, Linear.Space)
}

// Default is the linear's rule-based schedule with the epilogue placed by
// fusedEpilogue.
func (l LinearAdd) Default(s *schedule.Schedule, hw Hardware) error {
	return withEpilogue(s, hw, l.Linear, Linear.Default)
}

// withEpilogue applies the linear's space or default (base) to a
// definition whose element-wise stage "y" reads the GEMM's "out", then
// places that stage with fusedEpilogue.
func withEpilogue(s *schedule.Schedule, hw Hardware, l Linear, base func(Linear, *schedule.Schedule, Hardware) error) error {
	if err := base(l, s, hw); err != nil {
		return err
	}
	return fusedEpilogue(s, l, "y", hw.Threads > 1)
}

// LinearBias is y = a·wᵀ + b, the linear layer with a bias [N] (the IR's
// llmir.linear with its optional third operand; Qwen2's q, k and v
// projections). The bias is an epilogue on the linear's own templates, as
// LinearAdd's residual is, so a biased projection is tuned in the linear's
// design space.
type LinearBias struct {
	Linear // M, N, K, MBucket; IR is the workload when made from one
}

// Name is "linear+bias/M=…,N=…,K=…/f32" (or /bf16, /f16).
func (l LinearBias) Name() string {
	return fmt.Sprintf("linear+bias/M=%d,N=%d,K=%d/%s", l.M, l.N, l.K, l.DType)
}

// Def is out = sum(k, a[i, k] * w[j, k]) (a temporary) and y[i, j] =
// out[i, j] + b[j].
func (l LinearBias) Def() (*schedule.Def, error) {
	g, err := l.gemm("linear+bias", schedule.F32)
	if err != nil {
		return nil, err
	}
	b := schedule.Input("b", l.DType, g.j.Dim)
	y := schedule.Compute("y", l.DType, []schedule.Axis{g.i, g.j}, schedule.Add(g.out.At(g.i, g.j), b.At(g.j)))
	return schedule.NewDef("linear_bias", []*schedule.Tensor{g.a, g.w, b}, y)
}

// Workload is llmir.linear on x [M, K], w [N, K] and bias [N].
func (l LinearBias) Workload() ir.Workload {
	if l.IR != nil {
		return *l.IR
	}
	w := fusedTokenWorkload([]string{"llmir.linear"}, l.bucket(),
		[][]int64{{-1, l.K}, {l.N, l.K}, {l.N}}, [][]int64{{-1, l.N}})
	for _, sigs := range [][]ir.TensorSig{w.Inputs, w.Output} {
		for i := range sigs {
			sigs[i].DType = l.DType.String()
		}
	}
	return w
}

// FLOPs is the GEMM's plus one add per output.
func (l LinearBias) FLOPs() float64 { return l.Linear.FLOPs() + float64(l.M*l.N) }

// Bytes adds one read of the bias to the linear's traffic.
func (l LinearBias) Bytes() float64 { return l.Linear.Bytes() + float64(l.DType.Size()*l.N) }

// Reference adds the bias to the linear's float64 sums before any
// rounding, as ref.Linear (the IR evaluator's) does.
func (l LinearBias) Reference(in [][]float64) [][]float64 {
	out := l.Linear.Reference(in[:2])[0]
	b := in[2]
	for i := range out {
		out[i] += b[int64(i)%l.N]
	}
	return [][]float64{out}
}

// Space is the linear's design space with the bias epilogue placed by
// fusedEpilogue.
func (l LinearBias) Space(s *schedule.Schedule, hw Hardware) error {
	return withEpilogue(s, hw, l.Linear, Linear.Space)
}

// Default is the linear's rule-based schedule with the bias epilogue
// placed by fusedEpilogue.
func (l LinearBias) Default(s *schedule.Schedule, hw Hardware) error {
	return withEpilogue(s, hw, l.Linear, Linear.Default)
}

// fusedEpilogue moves the element-wise stage block (reading the GEMM's
// temporary "out") into the linear's nest. Decode (GEMV template): out's
// write-back sits in loop j1 (loops j0, i0, j1), one MR×JU tile of
// finished sums per iteration, so the epilogue consumes the tile there
// while it is in registers. Prefill (GEMM template): out is only complete
// after the k0 loop, and the tile under the panel loop j0 (M rows walked
// by i0 and the write-back's row loop) is not one dense region that
// reverse_compute_at can rebuild, so the epilogue stays a second nest over
// the whole output, parallel over rows and vectorized along them: one
// kernel, the same traffic as the unfused pair. Measurement then prefers
// the unfused pair's tuned GEMM for prefill whenever it is faster.
func fusedEpilogue(s *schedule.Schedule, l Linear, block string, par bool) error {
	ls, err := s.Loops("out")
	if err != nil {
		return err
	}
	if l.skinny() {
		if len(ls) < 3 {
			return fmt.Errorf("epilogue: out under %v, want j0, i0, j1 of the GEMV template", ls)
		}
		if err := s.ReverseComputeAt(block, ls[2]); err != nil {
			return fmt.Errorf("epilogue: %w", err)
		}
		if err := s.SetScope("out", schedule.Register); err != nil {
			return fmt.Errorf("epilogue: %w", err)
		}
		bl, err := s.Loops(block)
		if err != nil {
			return err
		}
		for _, lp := range bl[len(bl)-2:] {
			if err := s.Unroll(lp); err != nil {
				return fmt.Errorf("epilogue: %w", err)
			}
		}
		return nil
	}
	bl, err := s.Loops(block)
	if err != nil {
		return err
	}
	if len(bl) != 2 {
		return fmt.Errorf("epilogue: %s under %v, want its own i, j loops", block, bl)
	}
	if par {
		if err := s.Parallel(bl[0]); err != nil {
			return fmt.Errorf("epilogue: %w", err)
		}
	}
	if err := s.Vectorize(bl[1]); err != nil {
		return fmt.Errorf("epilogue: %w", err)
	}
	return nil
}

// NormLinear is out = rms_norm(x, g)·wᵀ: the norm as the GEMM's prologue.
// The sum of squares and 1/rms of each row are computed once (root
// stages); the normalized rows are computed per row tile into a local
// buffer (compute_at) right before the GEMV/GEMM consumes them, so they are
// never written to memory. Several linears reading one norm (q, k, v) each
// recompute it; measurement decides whether that beats one norm kernel.
type NormLinear struct {
	Linear         // M, N, K, MBucket; IR is the fused workload when made from one
	Eps    float64 // the norm's epsilon
}

func normLinearFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkArity(w, 3, 1); err != nil {
		return nil, err
	}
	m, n, k, err := fusedLinearShape(w, w.Inputs[0], w.Inputs[2])
	if err != nil {
		return nil, err
	}
	if g := w.Inputs[1].Shape; len(g) != 1 || g[0] != k {
		return nil, fmt.Errorf("norm weight %v, want [%d]", g, k)
	}
	if err := sameRows("output", w.Output[0], m, n); err != nil {
		return nil, err
	}
	eps, err := fusedFloatAttr(w.Attrs, "eps")
	if err != nil {
		return nil, err
	}
	return NormLinear{Linear: Linear{M: m, N: n, K: k, IR: &w}, Eps: eps}, nil
}

// fusedFloatAttr reads a float attribute as the IR prints it ("1.0e-05 : f32").
func fusedFloatAttr(attrs map[string]string, name string) (float64, error) {
	v, ok := attrs[name]
	if !ok {
		return 0, fmt.Errorf("attribute %s missing", name)
	}
	num, _, _ := strings.Cut(v, " : ")
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil {
		return 0, fmt.Errorf("attribute %s = %q is not a float", name, v)
	}
	return f, nil
}

// Name is "rms_norm+linear/M=…,N=…,K=…/f32".
func (l NormLinear) Name() string {
	return fmt.Sprintf("rms_norm+linear/M=%d,N=%d,K=%d/f32", l.M, l.N, l.K)
}

// Def is ss[i] = sum(x²), rs[i] = 1/sqrt(ss[i]/K + eps), xn = x·g·rs, and
// the linear's out = sum(k, xn[i, k] * w[j, k]).
func (l NormLinear) Def() (*schedule.Def, error) {
	if l.M < 1 || l.N < 1 || l.K < 1 || l.M > l.bucket() || !(l.Eps >= 0) {
		return nil, fmt.Errorf("rms_norm+linear: bad shape M=%d (bucket %d), N=%d, K=%d, eps %g", l.M, l.bucket(), l.N, l.K, l.Eps)
	}
	M, N, K := schedule.Dynamic("M", l.bucket()), schedule.Static(l.N), schedule.Static(l.K)
	i, j, k, kn := schedule.NewAxis("i", M), schedule.NewAxis("j", N), schedule.NewAxis("k", K), schedule.NewAxis("kn", K)
	x := schedule.Input("x", schedule.F32, M, K)
	g := schedule.Input("g", schedule.F32, K)
	w := schedule.Input("w", schedule.F32, N, K)
	ss := schedule.Compute("ss", schedule.F32, []schedule.Axis{i}, schedule.Sum(kn, schedule.Mul(x.At(i, kn), x.At(i, kn))))
	rs := schedule.Compute("rs", schedule.F32, []schedule.Axis{i},
		schedule.Fn("rsqrt", schedule.Add(schedule.Mul(ss.At(i), schedule.F(1/float64(l.K))), schedule.F(l.Eps))))
	xn := schedule.Compute("xn", schedule.F32, []schedule.Axis{i, k}, schedule.Mul(schedule.Mul(x.At(i, k), g.At(k)), rs.At(i)))
	out := schedule.Compute("out", schedule.F32, []schedule.Axis{i, j}, schedule.Sum(k, schedule.Mul(xn.At(i, k), w.At(j, k))))
	return schedule.NewDef("rms_norm_linear", []*schedule.Tensor{x, g, w}, out)
}

// Workload is llmir.rms_norm+llmir.linear on x [M, K], g [K], w [N, K].
func (l NormLinear) Workload() ir.Workload {
	if l.IR != nil {
		return *l.IR
	}
	w := fusedTokenWorkload([]string{"llmir.rms_norm", "llmir.linear"}, l.bucket(),
		[][]int64{{-1, l.K}, {l.K}, {l.N, l.K}}, [][]int64{{-1, l.N}})
	w.Attrs = map[string]string{"eps": ir.F32Attr(l.Eps).String()}
	return w
}

// FLOPs is the GEMM's plus about four per normalized element.
func (l NormLinear) FLOPs() float64 { return l.Linear.FLOPs() + 4*float64(l.M*l.K) }

// Bytes adds the norm weight to the linear's traffic (x is read once
// either way, the normalized rows never reach memory).
func (l NormLinear) Bytes() float64 { return l.Linear.Bytes() + 4*float64(l.K) }

// Reference is the unfused pair: ref.RMSNorm, its f32 result fed to the
// linear's reference. When x is periodic (Fill) only its PeriodRows
// period rows are normalized and multiplied: row m is 2^s times its period
// row p, so its normalized row, and with it its output row, is p's times
// c = 2^s·r_m/r_p (r = 1/rms, which eps keeps from cancelling to 1). A
// kernel that normalized row m by another row's rms is off by that ratio.
func (l NormLinear) Reference(in [][]float64) [][]float64 {
	m, n, k := int(l.M), int(l.N), int(l.K)
	rows := PeriodicRows(in[0], m, k)
	xn, err := ref.RMSNorm(toF32(in[0][:rows*k]), rows, k, toF32(in[1]), l.Eps)
	if err != nil {
		panic(err) // shapes come from the kernel itself
	}
	lin := l.Linear
	lin.M = int64(rows)
	out := lin.Reference([][]float64{toF64(xn), in[2]})[0]
	if rows == m {
		return [][]float64{out}
	}
	invRMS := func(r int) float64 {
		var ss float64
		for _, v := range in[0][r*k : (r+1)*k] {
			ss += v * v
		}
		return 1 / math.Sqrt(ss/float64(k)+l.Eps)
	}
	period := make([]float64, rows)
	for p := range period {
		period[p] = invRMS(p)
	}
	full := make([]float64, m*n)
	copy(full, out)
	for r := rows; r < m; r++ {
		p := r % PeriodRows
		c := PeriodScale(r) * invRMS(r) / period[p]
		for j, v := range out[p*n : (p+1)*n] {
			full[r*n+j] = v * c
		}
	}
	return [][]float64{full}
}

// Fill makes x periodic (FillPeriodic), as the linear's activation, so
// that Reference works on PeriodRows rows: the prefill lm_head's full
// reference (512×128256×4096) took 70 s of two cores, and a whole-model
// tune makes it again whenever it has evicted the problem.
func (l NormLinear) Fill(input string) func(rng *rand.Rand, v []float64) {
	if input != "x" {
		return nil
	}
	return FillPeriodic(int(l.K), target.NonZeroUniform)
}

// Space is the linear's design space with the prologue placed by
// fusedPrologue.
func (l NormLinear) Space(s *schedule.Schedule, hw Hardware) error {
	if err := l.Linear.Space(s, hw); err != nil {
		return err
	}
	return fusedPrologue(s, l.Linear)
}

// Default is the linear's rule-based schedule with the prologue placed by
// fusedPrologue.
func (l NormLinear) Default(s *schedule.Schedule, hw Hardware) error {
	if err := l.Linear.Default(s, hw); err != nil {
		return err
	}
	return fusedPrologue(s, l.Linear)
}

// fusedPrologue computes the normalized rows xn at the row-tile loop i0 of
// the linear's template (loops j0, i0 for the GEMV; j0, k0, i0 for the
// GEMM, where the tile is MR rows × KC of depth), vectorized along k: one
// MR-row tile per parallel chunk (GEMV) or per panel and depth block
// (GEMM), which the register tile then reads from L1.
func fusedPrologue(s *schedule.Schedule, l Linear) error {
	ls, err := s.Loops("out")
	if err != nil {
		return err
	}
	at := 2
	if l.skinny() {
		at = 1
	}
	if len(ls) <= at {
		return fmt.Errorf("prologue: out under %v, too few loops for the linear template", ls)
	}
	if err := s.ComputeAt("xn", ls[at]); err != nil {
		return fmt.Errorf("prologue: %w", err)
	}
	if err := s.SetScope("xn", schedule.Local); err != nil {
		return fmt.Errorf("prologue: %w", err)
	}
	bl, err := s.Loops("xn")
	if err != nil {
		return err
	}
	if err := s.Vectorize(bl[len(bl)-1]); err != nil {
		return fmt.Errorf("prologue: %w", err)
	}
	return nil
}

// GateUpSiLU is y = silu(x·w_gateᵀ) · (x·w_upᵀ), the SwiGLU of a Llama MLP,
// as one template kernel: each register tile holds MR rows × JU columns of
// both the gate and the up sums (k-lane vectors, as the GEMV template), so
// x is loaded once for both weights and the two results meet in registers.
type GateUpSiLU struct {
	M, N, K int64
	MBucket int64 // 0: M itself
	// IR is the module workload the kernel was made from, when it was.
	IR *ir.Workload
}

func gateUpFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkArity(w, 3, 1); err != nil {
		return nil, err
	}
	m, n, k, err := fusedLinearShape(w, w.Inputs[0], w.Inputs[1])
	if err != nil {
		return nil, err
	}
	if up := w.Inputs[2].Shape; len(up) != 2 || up[0] != n || up[1] != k {
		return nil, fmt.Errorf("up weight %v, want [%d %d] like the gate weight", up, n, k)
	}
	if err := sameRows("output", w.Output[0], m, n); err != nil {
		return nil, err
	}
	return GateUpSiLU{M: m, N: n, K: k, IR: &w}, nil
}

func (g GateUpSiLU) bucket() int64 {
	if g.MBucket > 0 {
		return g.MBucket
	}
	return g.M
}

func (g GateUpSiLU) check() error {
	if g.M < 1 || g.N < 1 || g.K < 1 || g.M > g.bucket() {
		return fmt.Errorf("gate_up+silu_mul: bad shape M=%d (bucket %d), N=%d, K=%d", g.M, g.bucket(), g.N, g.K)
	}
	return nil
}

// Name is "gate_up+silu_mul/M=…,N=…,K=…/f32".
func (g GateUpSiLU) Name() string {
	return fmt.Sprintf("gate_up+silu_mul/M=%d,N=%d,K=%d/f32", g.M, g.N, g.K)
}

// Def declares x [M, K], w_gate and w_up [N, K] and y [M, N].
func (g GateUpSiLU) Def() (*schedule.Def, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	M, N, K := schedule.Dynamic("M", g.bucket()), schedule.Static(g.N), schedule.Static(g.K)
	x := schedule.Input("x", schedule.F32, M, K)
	wg := schedule.Input("w_gate", schedule.F32, N, K)
	wu := schedule.Input("w_up", schedule.F32, N, K)
	y := schedule.Declare("y", schedule.F32, M, N)
	return schedule.NewTemplateDef("gate_up_silu_mul", "y[i, j] = silu(sum(k, x[i, k] * w_gate[j, k])) * sum(k, x[i, k] * w_up[j, k])",
		[]*schedule.Tensor{x, wg, wu}, y)
}

// Workload is the gate/up group on x [M, K], w_gate [N, K], w_up [N, K].
func (g GateUpSiLU) Workload() ir.Workload {
	if g.IR != nil {
		return *g.IR
	}
	return fusedTokenWorkload([]string{"llmir.linear", "llmir.linear", "llmir.silu", "llmir.mul"}, g.bucket(),
		[][]int64{{-1, g.K}, {g.N, g.K}, {g.N, g.K}}, [][]int64{{-1, g.N}})
}

// Dims is [M].
func (g GateUpSiLU) Dims() []int64 { return []int64{g.M} }

// Fill makes x periodic (FillPeriodic), so that the two linears of the
// reference compute at most PeriodRows rows of dot products each; the
// silu·mul after them makes rows a period apart differ by more than a
// scale.
func (g GateUpSiLU) Fill(input string) func(rng *rand.Rand, v []float64) {
	if input != "x" {
		return nil
	}
	return FillPeriodic(int(g.K), target.NonZeroUniform)
}

// FLOPs is two GEMMs plus the silu and product per output.
func (g GateUpSiLU) FLOPs() float64 { return 4*float64(g.M*g.N*g.K) + 4*float64(g.M*g.N) }

// Bytes is one read of x and both weights and one write of y.
func (g GateUpSiLU) Bytes() float64 { return 4 * float64(g.M*g.K+2*g.N*g.K+g.M*g.N) }

// Reference is the unfused group: the linear's reference for gate and up
// (each stored as f32), ref.SiLU, then ref.Mul.
func (g GateUpSiLU) Reference(in [][]float64) [][]float64 {
	lin := Linear{M: g.M, N: g.N, K: g.K}
	gate := toF32(lin.Reference([][]float64{in[0], in[1]})[0])
	up := toF32(lin.Reference([][]float64{in[0], in[2]})[0])
	shape := []int{int(g.M), int(g.N)}
	y, _, err := ref.Mul(ref.SiLU(gate), shape, up, shape)
	if err != nil {
		panic(err) // shapes come from the kernel itself
	}
	return [][]float64{toF64(y)}
}

// knobs: mr rows of x and ju rows of each weight per register tile
// (2·mr·ju vector accumulators; sampled independently, so spilling tiles
// are reachable and measure slow), nj tiles per parallel chunk.
func (g GateUpSiLU) knobs() Knobs {
	return Knobs{
		{"mr", upTo(g.bucket(), 1, 2, 4, 8)},
		{"ju", []int64{1, 2, 3, 4}},
		{"nj", []int64{1, 2, 4, 8, 16}},
	}
}

// Space samples every knob.
func (g GateUpSiLU) Space(s *schedule.Schedule, hw Hardware) error { return g.knobs().Sample(s) }

// Default: up to 4 rows × 2 columns (16 accumulators, 8 loads per 16
// FMAs), 4 columns for a single row, and 4 tiles per chunk, as the linear's
// decode default.
func (g GateUpSiLU) Default(s *schedule.Schedule, hw Hardware) error {
	mr, ju := decodeTile(g.bucket(), 2, 4)
	return g.knobs().Choose(s, map[string]int64{"mr": mr, "ju": ju, "nj": 4})
}

// decodeTile is the default register tile of the fused GEMV-style
// kernels: mr is the largest of 1, 2, 4 rows within the bucket; a single
// row has no other rows to share its weight loads with, so it takes
// juOneRow weight rows per tile instead of ju.
func decodeTile(bucket, ju, juOneRow int64) (mr, juOut int64) {
	mr = 1
	for _, v := range []int64{2, 4} {
		if v <= bucket {
			mr = v
		}
	}
	if mr == 1 {
		return mr, juOneRow
	}
	return mr, ju
}

// EmitC writes the kernel for the knob values recorded in s: chunks of
// nj·ju columns run in parallel; in each, for every mr-row block of x and
// every ju-column tile, the k loop loads mr vectors of x and ju of each
// weight for 2·mr·ju FMAs, then horizontal sums, the scalar k tail and the
// silu·mul epilogue. Rows past M and columns past N alias the last one
// (computed, never stored), so one fully unrolled tile serves every edge.
func (g GateUpSiLU) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	if err := g.check(); err != nil {
		return "", err
	}
	kv, err := g.knobs().Read(s)
	if err != nil {
		return "", fmt.Errorf("%s: %w", g.Name(), err)
	}
	mr, ju, nj := kv["mr"], kv["ju"], kv["nj"]
	L := max(hw.lanes(), 4)
	jc := nj * ju
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("// Generated by llmir kernels.GateUpSiLU (%s, mr=%d ju=%d nj=%d). Do not edit.", g.Name(), mr, ju, nj)
	p("#include <stdint.h>\n#include <string.h>")
	p("typedef float gu_vf __attribute__((vector_size(%d)));", 4*L)
	p("static inline gu_vf gu_load(const float *p) { gu_vf v; memcpy(&v, p, sizeof v); return v; }")
	p("static inline float gu_hsum(gu_vf v) { return %s; }", fusedHsumTree(0, L))
	p("static inline int64_t gu_min(int64_t a, int64_t b) { return a < b ? a : b; }")
	// No libm in the harness process: exp(x) = 2^n·e^r with x = n·ln2 + r
	// (Cody–Waite, |r| ≤ ln2/2), a degree-6 Taylor polynomial (relative
	// error 1.2e-7) and 2^n built in the exponent bits, x clamped to
	// [-87, 88] where 2^n is a normal float.
	p("static inline float gu_exp(float x) {")
	p("  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);")
	p("  const int32_t n = (int32_t)(x * 1.44269504f + (x >= 0.0f ? 0.5f : -0.5f));")
	p("  const float r = (x - (float)n * 0.693359375f) + (float)n * 2.12194440e-4f;")
	p("  const float q = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));")
	p("  const int32_t bits = (n + 127) << 23; float s; memcpy(&s, &bits, 4);")
	p("  return q * s;")
	p("}")
	p("int %s(void *const *bufs, const int64_t *dims) {", entry)
	p("  const float *restrict x = (const float *)bufs[0];")
	p("  const float *restrict wg = (const float *)bufs[1];")
	p("  const float *restrict wu = (const float *)bufs[2];")
	p("  float *restrict y = (float *)bufs[3];")
	p("  const int64_t M = dims[0];")
	p("  if (M < 1 || M > %d) return 2;", g.bucket())
	p("  #pragma omp parallel for schedule(static)")
	p("  for (int64_t c = 0; c < %d; c++) {", (g.N+jc-1)/jc)
	p("    for (int64_t i0 = 0; i0 < M; i0 += %d) {", mr)
	for r := range mr {
		p("      const float *x%d = x + gu_min(i0 + %d, M - 1) * %d;", r, r, g.K)
	}
	p("      for (int64_t j = c * %d; j < gu_min((c + 1) * %d, %d); j += %d) {", jc, jc, g.N, ju)
	for c := range ju {
		p("        const int64_t j%d = gu_min(j + %d, %d);", c, c, g.N-1)
		p("        const float *g%d = wg + j%d * %d, *u%d = wu + j%d * %d;", c, c, g.K, c, c, g.K)
	}
	for r := range mr {
		for c := range ju {
			p("        gu_vf ag%d_%d = {}, au%d_%d = {};", r, c, r, c)
		}
	}
	kMain := g.K / L * L
	if kMain > 0 {
		p("        for (int64_t k = 0; k < %d; k += %d) {", kMain, L)
		for r := range mr {
			p("          const gu_vf xv%d = gu_load(x%d + k);", r, r)
		}
		for c := range ju {
			p("          const gu_vf gv%d = gu_load(g%d + k), uv%d = gu_load(u%d + k);", c, c, c, c)
			for r := range mr {
				p("          ag%d_%d += xv%d * gv%d; au%d_%d += xv%d * uv%d;", r, c, r, c, r, c, r, c)
			}
		}
		p("        }")
	}
	for r := range mr {
		for c := range ju {
			p("        float sg%d_%d = gu_hsum(ag%d_%d), su%d_%d = gu_hsum(au%d_%d);", r, c, r, c, r, c, r, c)
		}
	}
	if kMain < g.K {
		p("        for (int64_t k = %d; k < %d; k++) {", kMain, g.K)
		for r := range mr {
			for c := range ju {
				p("          sg%d_%d += x%d[k] * g%d[k]; su%d_%d += x%d[k] * u%d[k];", r, c, r, c, r, c, r, c)
			}
		}
		p("        }")
	}
	for r := range mr {
		for c := range ju {
			p("        if (i0 + %d < M && j + %d < %d) y[(i0 + %d) * %d + j + %d] = sg%d_%d / (1.0f + gu_exp(-sg%d_%d)) * su%d_%d;",
				r, c, g.N, r, g.N, c, r, c, r, c, r, c)
		}
	}
	p("      }\n    }\n  }\n  return 0;\n}")
	return b.String(), nil
}

// fusedHsumTree sums lanes [lo, lo+n) of v as a balanced tree: depth
// log2(n) instead of a chain of n dependent adds, which at short k loops
// costs as much as the dot products themselves.
func fusedHsumTree(lo, n int64) string {
	if n == 1 {
		return fmt.Sprintf("v[%d]", lo)
	}
	return "(" + fusedHsumTree(lo, n/2) + " + " + fusedHsumTree(lo+n/2, n-n/2) + ")"
}

// RopeAppendKV is the k projection, its rotary embedding and the append of
// k and v to one layer of the paged cache (llmir.linear → llmir.rope →
// llmir.append_kv), as one template kernel: each KV head's rows of w are a
// GEMV over the tokens, rotated in registers and stored straight into the
// token's cache slot, so k is never written to memory unrotated.
//
// Operands follow the fused workload: x [T, K], w [KVHeads·HeadDim, K],
// positions [T] (i32), the cache, v [T, KVHeads, HeadDim], slot_mapping [T]
// (i64, declared as i32 [T, 2]: the same bytes, low word first, since the
// schedule language has no 64-bit integers), and the cache as the output.
// The cache buffers are one layer of the kvcache layout, [2 (K, V)]
// [num_blocks][BlockSize][KVHeads][HeadDim], as llmir.paged_attention reads
// it; the kernel writes only the slots of the tokens (a negative slot is
// padding), so in a model the input and output are the same pool, and the
// reference is NaN ("untouched") everywhere else.
type RopeAppendKV struct {
	Tokens       int64 // T at run time
	TokensBucket int64 // 0: Tokens
	K            int64 // hidden size (x's last dim)
	KVHeads      int64
	HeadDim      int64
	BlockSize    int64
	NumBlocks    int64 // pool size; 0: enough for every token's slot plus one block
	Config       ref.RopeConfig
	// IR is the module workload the kernel was made from, when it was.
	IR *ir.Workload
}

func ropeAppendFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkArity(w, 6, 1); err != nil {
		return nil, err
	}
	x, wt, pos, cache, v, slots := w.Inputs[0], w.Inputs[1], w.Inputs[2], w.Inputs[3], w.Inputs[4], w.Inputs[5]
	kv, err := parsePagedKV(cache.KV)
	if err != nil {
		return nil, fmt.Errorf("operand #3 (cache): %w", err)
	}
	if w.Output[0].KV != cache.KV || cache.DType != w.Output[0].DType {
		return nil, fmt.Errorf("cache %s %s → %s %s: want the same cache in and out", cache.KV, cache.DType, w.Output[0].KV, w.Output[0].DType)
	}
	if len(x.Shape) < 1 || len(wt.Shape) != 2 || x.Shape[len(x.Shape)-1] != wt.Shape[1] || wt.Shape[0] != kv.KVHeads*kv.HeadDim {
		return nil, fmt.Errorf("x %v and w %v: want w [kv_heads·head_dim = %d, %d]", x.Shape, wt.Shape, kv.KVHeads*kv.HeadDim, x.Shape[len(x.Shape)-1])
	}
	if pos.DType != "i32" || slots.DType != "i64" {
		return nil, fmt.Errorf("positions %s and slot_mapping %s: want i32 and i64", pos.DType, slots.DType)
	}
	if x.DType != "f32" || wt.DType != "f32" || v.DType != "f32" || cache.DType != "f32" {
		return nil, unsupported("dtypes x %s, w %s, v %s, cache %s (the fused kernel is f32)", x.DType, wt.DType, v.DType, cache.DType)
	}
	t := rows(x)
	if rows(pos)*pos.Shape[len(pos.Shape)-1] != t || rows(slots)*slots.Shape[len(slots.Shape)-1] != t {
		return nil, fmt.Errorf("positions %v and slot_mapping %v are not %d tokens", pos.Shape, slots.Shape, t)
	}
	if len(v.Shape) < 2 || v.Shape[len(v.Shape)-1] != kv.HeadDim || v.Shape[len(v.Shape)-2] != kv.KVHeads || rows(v)/kv.KVHeads != t {
		return nil, fmt.Errorf("v %v is not %d tokens of [%d, %d]", v.Shape, t, kv.KVHeads, kv.HeadDim)
	}
	if err := CheckWeightLayout(w.Attrs); err != nil {
		return nil, err
	}
	as, err := w.ParseAttrs()
	if err != nil {
		return nil, err
	}
	c, err := ref.RopeConfigFromAttrs(as)
	if err != nil {
		return nil, err
	}
	k := RopeAppendKV{Tokens: t, K: wt.Shape[1], KVHeads: kv.KVHeads, HeadDim: kv.HeadDim, BlockSize: kv.BlockSize, Config: c, IR: &w}
	if err := k.check(); err != nil {
		return nil, err
	}
	return k, nil
}

func (k RopeAppendKV) bucket() int64 { return bucketOr(k.TokensBucket, k.Tokens) }

// Not bucketOr: the default divides by BlockSize, so it is computed only
// when NumBlocks is unset (Dims may see a kernel Def would reject).
func (k RopeAppendKV) numBlocks() int64 {
	if k.NumBlocks > 0 {
		return k.NumBlocks
	}
	return (k.bucket()+k.BlockSize-1)/k.BlockSize + 1
}

func (k RopeAppendKV) rotary() int64 {
	if k.Config.RotaryDim > 0 {
		return int64(k.Config.RotaryDim)
	}
	return k.HeadDim
}

func (k RopeAppendKV) check() error {
	switch {
	case k.Tokens < 1 || k.Tokens > k.bucket() || k.K < 1 || k.KVHeads < 1 || k.HeadDim < 1 || k.BlockSize < 1:
		return fmt.Errorf("linear+rope+append_kv: bad shape T=%d (bucket %d), K=%d, kv_heads %d, head_dim %d, block %d", k.Tokens, k.bucket(), k.K, k.KVHeads, k.HeadDim, k.BlockSize)
	case k.numBlocks()*k.BlockSize < k.bucket():
		return fmt.Errorf("linear+rope+append_kv: %d blocks of %d cannot hold %d tokens", k.numBlocks(), k.BlockSize, k.bucket())
	case k.rotary() > k.HeadDim || k.rotary()%2 != 0:
		return fmt.Errorf("linear+rope+append_kv: rotary dim %d of head dim %d", k.rotary(), k.HeadDim)
	case k.Config.Style != ref.Neox && k.Config.Style != ref.GPTJ && k.Config.Style != "":
		return fmt.Errorf("linear+rope+append_kv: rope style %q", k.Config.Style)
	case k.Config.Scaling != nil && k.Config.Scaling.Type == "dynamic":
		// Dynamic NTK scaling depends on the batch's largest position, so
		// its frequencies cannot be constants of the kernel.
		return unsupported("linear+rope+append_kv: dynamic rope scaling (the fused kernel's frequencies are constants)")
	}
	_, _, err := ref.InvFreq(k.Config, int(k.rotary()), 1)
	return err
}

// Name is "linear+rope+append_kv/T=…,K=…,HKV=…,D=…,BS=…/f32".
func (k RopeAppendKV) Name() string {
	return fmt.Sprintf("linear+rope+append_kv/T=%d,K=%d,HKV=%d,D=%d,BS=%d/f32", k.Tokens, k.K, k.KVHeads, k.HeadDim, k.BlockSize)
}

// Def declares the operands; dynamic dims tokens and num_blocks.
func (k RopeAppendKV) Def() (*schedule.Def, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	T, NB := schedule.Dynamic("tokens", k.bucket()), schedule.Dynamic("num_blocks", k.numBlocks())
	S := schedule.Static
	cacheDims := []schedule.Dim{S(2), NB, S(k.BlockSize), S(k.KVHeads), S(k.HeadDim)}
	x := schedule.Input("x", schedule.F32, T, S(k.K))
	w := schedule.Input("w", schedule.F32, S(k.KVHeads*k.HeadDim), S(k.K))
	pos := schedule.Input("positions", schedule.I32, T)
	cache := schedule.Input("cache", schedule.F32, cacheDims...)
	v := schedule.Input("v", schedule.F32, T, S(k.KVHeads), S(k.HeadDim))
	slots := schedule.Input("slot_mapping", schedule.I32, T, S(2))
	out := schedule.Declare("cache_out", schedule.F32, cacheDims...)
	return schedule.NewTemplateDef("linear_rope_append_kv",
		"k = rope(x·wᵀ, positions); cache_out[0/1, slot/BS, slot%BS] = k/v for every token with slot_mapping ≥ 0; nothing else written",
		[]*schedule.Tensor{x, w, pos, cache, v, slots}, out)
}

// Workload is the fused group on T tokens (bucketed as "tokens").
func (k RopeAppendKV) Workload() ir.Workload {
	if k.IR != nil {
		return *k.IR
	}
	b := ir.Bucket(k.bucket())
	tok := func(shape ...int64) ir.TensorSig {
		sym := make([]string, len(shape)+1)
		sym[0] = "tokens"
		return ir.TensorSig{Shape: append([]int64{b}, shape...), Sym: sym}
	}
	kv := ir.TensorSig{DType: "f32", KV: fmt.Sprintf("paged_kv<block_size=%d,kv_heads=%d,head_dim=%d>", k.BlockSize, k.KVHeads, k.HeadDim)}
	x, pos, v, slots := tok(k.K), tok(), tok(k.KVHeads, k.HeadDim), tok()
	x.DType, pos.DType, v.DType, slots.DType = "f32", "i32", "f32", "i64"
	w := ir.Workload{
		Group:   []string{"llmir.linear", "llmir.rope", "llmir.append_kv"},
		Inputs:  []ir.TensorSig{x, {Shape: []int64{k.KVHeads * k.HeadDim, k.K}, DType: "f32"}, pos, kv, v, slots},
		Output:  []ir.TensorSig{kv},
		Attrs:   map[string]string{"theta": ir.F32Attr(k.Config.Theta).String()},
		Dynamic: map[string]int64{"tokens": b},
	}
	if k.Config.Style != "" {
		w.Attrs["style"] = strconv.Quote(string(k.Config.Style))
	}
	if k.Config.RotaryDim > 0 {
		w.Attrs["rotary_dim"] = ir.I64Attr(int64(k.Config.RotaryDim)).String()
	}
	return w
}

// Dims are [tokens, num_blocks].
func (k RopeAppendKV) Dims() []int64 { return []int64{k.Tokens, k.numBlocks()} }

// FLOPs is the projection plus six per rotated pair.
func (k RopeAppendKV) FLOPs() float64 {
	return 2*float64(k.Tokens*k.KVHeads*k.HeadDim*k.K) + 6*float64(k.Tokens*k.KVHeads*k.rotary()/2)
}

// Bytes is one read of x, w, positions, v and the slots and one write of
// k and v per token.
func (k RopeAppendKV) Bytes() float64 {
	row := k.KVHeads * k.HeadDim
	return 4*float64(k.Tokens*k.K+row*k.K+2*k.Tokens*row+k.Tokens) + 8*float64(k.Tokens)
}

// Fill gives positions in [0, 8192) (large angles exercise the range
// reduction) and distinct slots of the pool, the last token padding (-1)
// when there are several.
func (k RopeAppendKV) Fill(input string) func(rng *rand.Rand, v []float64) {
	switch input {
	case "positions":
		return func(rng *rand.Rand, v []float64) {
			for i := range v {
				v[i] = float64(rng.IntN(8192))
			}
		}
	case "slot_mapping":
		return func(rng *rand.Rand, v []float64) {
			perm := rng.Perm(int(k.numBlocks() * k.BlockSize))
			t := len(v) / 2
			for i := range t {
				s := int64(perm[i])
				if t > 1 && i == t-1 {
					s = -1
				}
				v[2*i], v[2*i+1] = float64(int32(s)), float64(int32(s>>32))
			}
		}
	}
	return nil
}

// Reference is the unfused chain: the linear's reference (stored as f32),
// ref.Rope, then ref.AppendKV into a one-layer ref.Pool; every element no
// token wrote is NaN (must stay untouched).
func (k RopeAppendKV) Reference(in [][]float64) [][]float64 {
	t, row := int(k.Tokens), int(k.KVHeads*k.HeadDim)
	kp := toF32(Linear{M: k.Tokens, N: int64(row), K: k.K}.Reference(in[:2])[0])
	pos := make([]int64, t)
	slots := make([]int64, t)
	for i := range t {
		pos[i] = int64(in[2][i])
		slots[i] = int64(uint32(int32(in[5][2*i]))) | int64(int32(in[5][2*i+1]))<<32
	}
	kr, err := ref.Rope(kp, t, int(k.KVHeads), int(k.HeadDim), pos, k.Config)
	if err != nil {
		panic(err) // shapes and config were checked by Def
	}
	pool, err := ref.NewPool(kvcache.Layout{NumBlocks: int(k.numBlocks()), BlockSize: int(k.BlockSize), NumLayers: 1,
		NumKVHeads: int(k.KVHeads), HeadDim: int(k.HeadDim), DType: kvcache.F32})
	if err != nil {
		panic(err)
	}
	if err := ref.AppendKV(pool, 0, kr, toF32(in[4]), t, slots); err != nil {
		panic(err)
	}
	out := make([]float64, len(pool.Bytes)/4)
	for i := range out {
		out[i] = math.NaN()
	}
	bs := int(k.BlockSize)
	for _, s := range slots {
		if s < 0 {
			continue
		}
		for kv := range 2 {
			for h := range int(k.KVHeads) {
				for e := range int(k.HeadDim) {
					off := pool.Layout.Offset(0, kvcache.KV(kv), int(s)/bs, int(s)%bs, h, e)
					out[off/4] = pool.At(0, kvcache.KV(kv), int(s)/bs, int(s)%bs, h, e)
				}
			}
		}
	}
	return [][]float64{out}
}

// knobs: mr tokens and ju rows of w per register tile.
func (k RopeAppendKV) knobs() Knobs {
	return Knobs{{"mr", upTo(k.bucket(), 1, 2, 4, 8)}, {"ju", []int64{1, 2, 4, 8}}}
}

// Space samples every knob.
func (k RopeAppendKV) Space(s *schedule.Schedule, hw Hardware) error { return k.knobs().Sample(s) }

// Default: up to 4 tokens × 4 rows (16 accumulators), 8 rows for one token.
func (k RopeAppendKV) Default(s *schedule.Schedule, hw Hardware) error {
	mr, ju := decodeTile(k.bucket(), 4, 8)
	return k.knobs().Choose(s, map[string]int64{"mr": mr, "ju": ju})
}

// EmitC writes the kernel: KV heads run in parallel; for each block of mr
// tokens, the head's rows of w are dot products vectorized over k (mr × ju
// vector accumulators, a horizontal sum each) into a local [mr][HeadDim]
// tile, which is rotated (angles in double, sin/cos by a polynomial: the
// harness has no libm) and stored, with v, into each token's slot.
func (k RopeAppendKV) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	if err := k.check(); err != nil {
		return "", err
	}
	kv, err := k.knobs().Read(s)
	if err != nil {
		return "", fmt.Errorf("%s: %w", k.Name(), err)
	}
	mr, ju := kv["mr"], kv["ju"]
	L := max(hw.lanes(), 4)
	D, H, K, r := k.HeadDim, k.KVHeads, k.K, k.rotary()
	freq, att, err := ref.InvFreq(k.Config, int(r), 1)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("// Generated by llmir kernels.RopeAppendKV (%s, mr=%d ju=%d). Do not edit.", k.Name(), mr, ju)
	p("#include <stdint.h>\n#include <string.h>")
	p("typedef float ra_vf __attribute__((vector_size(%d)));", 4*L)
	p("static inline ra_vf ra_load(const float *p) { ra_vf v; memcpy(&v, p, sizeof v); return v; }")
	p("static inline float ra_hsum(ra_vf v) { return %s; }", fusedHsumTree(0, L))
	p("static inline int64_t ra_min(int64_t a, int64_t b) { return a < b ? a : b; }")
	// sin and cos of a: a = n·π/2 + r with a two-part π/2 (the error
	// of n·π/2 stays below 1e-10 for the angles of 2^20 positions), Taylor
	// polynomials on |r| ≤ π/4 (errors below 1e-12), the quadrant from n.
	p("static inline void ra_sincos(double a, double *sn, double *cs) {")
	p("  const int64_t n = (int64_t)(a * 0.63661977236758134 + (a >= 0 ? 0.5 : -0.5));")
	p("  const double r = (a - (double)n * 1.5707963267948966) - (double)n * 6.123233995736766e-17;")
	p("  const double q = r * r;")
	p("  const double s = r * (1 + q * (-1.0 / 6 + q * (1.0 / 120 + q * (-1.0 / 5040 + q * (1.0 / 362880 + q * (-1.0 / 39916800 + q * (1.0 / 6227020800)))))));")
	p("  const double c = 1 + q * (-0.5 + q * (1.0 / 24 + q * (-1.0 / 720 + q * (1.0 / 40320 + q * (-1.0 / 3628800 + q * (1.0 / 479001600 + q * (-1.0 / 87178291200)))))));")
	p("  switch (n & 3) { case 0: *sn = s; *cs = c; break; case 1: *sn = c; *cs = -s; break; case 2: *sn = -s; *cs = -c; break; default: *sn = -c; *cs = s; }")
	p("}")
	p("static const double ra_freq[%d] = {", len(freq))
	for _, f := range freq {
		p("  %.17g,", f)
	}
	p("};")
	p("int %s(void *const *bufs, const int64_t *dims) {", entry)
	p("  const float *restrict x = (const float *)bufs[0];")
	p("  const float *restrict w = (const float *)bufs[1];")
	p("  const int32_t *restrict pos = (const int32_t *)bufs[2];")
	p("  const float *restrict v = (const float *)bufs[4];")
	p("  const int64_t *restrict slots = (const int64_t *)bufs[5];")
	p("  float *restrict cache = (float *)bufs[6];")
	p("  const int64_t T = dims[0], NB = dims[1];")
	p("  if (T < 1 || T > %d || NB < 1 || NB > %d) return 2;", k.bucket(), k.numBlocks())
	p("  for (int64_t t = 0; t < T; t++) if (slots[t] >= NB * %d) return 3;", k.BlockSize)
	p("  const int64_t vbase = NB * %d;", k.BlockSize*H*D)
	p("  #pragma omp parallel for schedule(static)")
	p("  for (int64_t h = 0; h < %d; h++) {", H)
	p("    for (int64_t t0 = 0; t0 < T; t0 += %d) {", mr)
	p("      float kt[%d][%d];", mr, D)
	for i := range mr {
		p("      const float *x%d = x + ra_min(t0 + %d, T - 1) * %d;", i, i, K)
	}
	p("      for (int64_t e = 0; e < %d; e += %d) {", D, ju)
	for c := range ju {
		p("        const float *w%d = w + (h * %d + ra_min(e + %d, %d)) * %d;", c, D, c, D-1, K)
	}
	for i := range mr {
		for c := range ju {
			p("        ra_vf a%d_%d = {};", i, c)
		}
	}
	kMain := K / L * L
	if kMain > 0 {
		p("        for (int64_t k = 0; k < %d; k += %d) {", kMain, L)
		for i := range mr {
			p("          const ra_vf xv%d = ra_load(x%d + k);", i, i)
		}
		for c := range ju {
			p("          const ra_vf wv%d = ra_load(w%d + k);", c, c)
			for i := range mr {
				p("          a%d_%d += xv%d * wv%d;", i, c, i, c)
			}
		}
		p("        }")
	}
	for i := range mr {
		for c := range ju {
			p("        float s%d_%d = ra_hsum(a%d_%d);", i, c, i, c)
		}
	}
	if kMain < K {
		p("        for (int64_t k = %d; k < %d; k++) {", kMain, K)
		for i := range mr {
			for c := range ju {
				p("          s%d_%d += x%d[k] * w%d[k];", i, c, i, c)
			}
		}
		p("        }")
	}
	for i := range mr {
		for c := range ju {
			p("        if (e + %d < %d) kt[%d][e + %d] = s%d_%d;", c, D, i, c, i, c)
		}
	}
	p("      }")
	p("      for (int64_t i = 0; i < %d && t0 + i < T; i++) {", mr)
	p("        const int64_t t = t0 + i, slot = slots[t];")
	p("        if (slot < 0) continue;")
	p("        float *kd = cache + ((slot / %d) * %d + slot %% %d) * %d + h * %d;", k.BlockSize, k.BlockSize, k.BlockSize, H*D, D)
	p("        float *vd = kd + vbase;")
	p("        const float *vs = v + (t * %d + h) * %d;", H, D)
	p("        for (int64_t e = 0; e < %d; e++) { kd[e] = kt[i][e]; vd[e] = vs[e]; }", D)
	p("        const double p = (double)pos[t];")
	p("        for (int64_t f = 0; f < %d; f++) {", len(freq))
	if k.Config.Style == ref.GPTJ {
		p("          const int64_t a = 2 * f, c = 2 * f + 1;")
	} else {
		p("          const int64_t a = f, c = f + %d;", r/2)
	}
	p("          double sn, cs;")
	p("          ra_sincos(p * ra_freq[f], &sn, &cs);")
	p("          const double u = kt[i][a], z = kt[i][c];")
	p("          kd[a] = (float)(%.17g * (u * cs - z * sn));", att)
	p("          kd[c] = (float)(%.17g * (z * cs + u * sn));", att)
	p("        }")
	p("      }")
	p("    }\n  }\n  return 0;\n}")
	return b.String(), nil
}
