package cudakernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
)

// builders maps an op group to the CUDA kernel of its IR workloads, as
// kernels.FromWorkload does for the CPU. Groups missing here have no CUDA
// kernel: the fused groups (rms_norm+linear, linear+add, gate_up+silu_mul,
// linear+rope+append_kv) are tuned through their unfused alternatives,
// which are all here (rope and append_kv in rope.go).
var builders = map[string]func(ir.Workload) (Kernel, error){
	"llmir.linear":          linearFromWorkload,
	"llmir.rms_norm":        rmsNormFromWorkload,
	"llmir.paged_attention": pagedAttentionFromWorkload,
	"llmir.attention":       prefillAttentionFromWorkload,
	"llmir.silu":            func(w ir.Workload) (Kernel, error) { return pointwiseFromWorkload(w, OpSiLU) },
	"llmir.mul":             func(w ir.Workload) (Kernel, error) { return pointwiseFromWorkload(w, OpMul) },
	"llmir.add":             func(w ir.Workload) (Kernel, error) { return pointwiseFromWorkload(w, OpAdd) },
	"llmir.rope":            ropeFromWorkload,
	"llmir.append_kv":       appendKVFromWorkload,
	"llmir.embedding":       embeddingFromWorkload,
	"llmir.argmax":          argmaxFromWorkload,
}

// GEMVMaxM is the largest M (tokens) served by the GEMV/skinny-GEMM
// kernel; above it the tensor-core GEMM is faster (and GEMV refuses).
const GEMVMaxM = 16

// FromWorkload returns the CUDA kernel of an IR workload (bf16 only): a
// linear with M ≤ GEMVMaxM rows is the decode GEMV/skinny GEMM, a larger one
// the prefill GEMM; rms_norm, paged_attention, causal attention (prefill),
// silu, mul, add, rope and append_kv have their own kernels. Template
// kernels come wrapped so that their design space holds only the knob
// points their generator accepts (valid.go). The kernel's Workload is w
// itself, so the records it is tuned under are those a compile of the same
// module looks up. Groups and
// variants without a CUDA kernel (another dtype, broadcasting, a custom
// attention scale) are errors wrapping kernels.ErrNoKernel; a malformed
// workload is another error, naming what is wrong.
func FromWorkload(w ir.Workload) (Kernel, error) {
	g := strings.Join(w.Group, "+")
	f, ok := builders[g]
	if !ok {
		return nil, fmt.Errorf("%w: %s (no CUDA kernel)", kernels.ErrNoKernel, g)
	}
	k, err := f(w)
	if err != nil {
		return nil, fmt.Errorf("cuda kernel for %s: %w", w.Name(), err)
	}
	return irKernel{Kernel: k, ir: w}, nil
}

// Groups lists the op groups that have a CUDA kernel, sorted.
func Groups() []string {
	out := make([]string, 0, len(builders))
	for g := range builders {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// Unwrap is the template kernel behind a kernel of FromWorkload (k itself
// for others): the suites pair it with its cuBLAS baseline.
func Unwrap(k Kernel) Kernel {
	if w, ok := k.(irKernel); ok {
		return w.Kernel
	}
	return k
}

// irKernel is a template kernel that answers to its IR workload. Optional
// interfaces of the template (Filler) are forwarded: GEMM's periodic
// activations keep large references cheap.
type irKernel struct {
	Kernel
	ir ir.Workload
}

func (k irKernel) Workload() ir.Workload { return k.ir }

func (k irKernel) Fill(input string) func(rng *rand.Rand, v []float64) {
	if f, ok := k.Kernel.(kernels.Filler); ok {
		return f.Fill(input)
	}
	return nil
}

// cpuKernelOf reads w as the CPU registry does (the same shape checks and
// attribute parsing), as the CPU kernel T of its op; the CUDA kernels of
// rope, append_kv, embedding, argmax and prefill attention start from it.
func cpuKernelOf[T kernels.Kernel](w ir.Workload) (T, error) {
	var zero T
	k, err := kernels.FromWorkload(w)
	if err != nil {
		return zero, err
	}
	c, ok := k.(T)
	if !ok {
		return zero, fmt.Errorf("%s read as %T", strings.Join(w.Group, "+"), k)
	}
	return c, nil
}

// bf16Only refuses a CPU kernel's element type other than bf16.
func bf16Only(dt schedule.DType) error {
	if dt != schedule.BF16 {
		return unsupported("dtype %s (the CUDA kernels are bf16)", dt)
	}
	return nil
}

// unsupported marks a well-formed workload that no CUDA kernel serves.
var unsupported = kernels.Unsupported

// checkSigs checks operand and result counts, that every tensor has a
// positive shape and that all are bf16 (the CUDA kernels' only type).
func checkSigs(w ir.Workload, inputs, outputs int) error {
	if len(w.Inputs) != inputs || len(w.Output) != outputs {
		return fmt.Errorf("%d operands and %d results, want %d and %d", len(w.Inputs), len(w.Output), inputs, outputs)
	}
	for i, s := range append(slices.Clone(w.Inputs), w.Output...) {
		if s.KV != "" {
			continue
		}
		if len(s.Shape) == 0 || slices.ContainsFunc(s.Shape, func(d int64) bool { return d < 1 }) {
			return fmt.Errorf("tensor %d has shape %v", i, s.Shape)
		}
	}
	return nil
}

func allBF16(sigs ...ir.TensorSig) error {
	for _, s := range sigs {
		if s.DType != "bf16" {
			return unsupported("dtype %s (the CUDA kernels are bf16)", s.DType)
		}
	}
	return nil
}

// linearFromWorkload flattens x's leading dims into M, as the CPU linear
// does, and picks GEMV or GEMM by M.
func linearFromWorkload(w ir.Workload) (Kernel, error) {
	if len(w.Inputs) == 3 {
		return nil, unsupported("bias (the CUDA linear kernels have no bias epilogue)")
	}
	if err := checkSigs(w, 2, 1); err != nil {
		return nil, err
	}
	if err := kernels.CheckWeightLayout(w.Attrs); err != nil {
		return nil, err
	}
	x, wt := w.Inputs[0], w.Inputs[1]
	if len(wt.Shape) != 2 || x.Shape[len(x.Shape)-1] != wt.Shape[1] {
		return nil, fmt.Errorf("activation %v and weight %v do not match", x.Shape, wt.Shape)
	}
	if err := allBF16(x, wt, w.Output[0]); err != nil {
		return nil, err
	}
	m, n, k := kernels.Rows(x), wt.Shape[0], wt.Shape[1]
	if k%8 != 0 {
		return nil, unsupported("K=%d is not a multiple of 8 (16-byte rows)", k)
	}
	if m <= GEMVMaxM {
		return GEMV{M: m, N: n, K: k}, nil
	}
	return GEMM{M: m, N: n, K: k}, nil
}

func rmsNormFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkSigs(w, 2, 1); err != nil {
		return nil, err
	}
	x, g := w.Inputs[0], w.Inputs[1]
	h := x.Shape[len(x.Shape)-1]
	if len(g.Shape) != 1 || g.Shape[0] != h || !slices.Equal(w.Output[0].Shape, x.Shape) {
		return nil, fmt.Errorf("x %v, weight %v, result %v: want [..., H], [H], [..., H]", x.Shape, g.Shape, w.Output[0].Shape)
	}
	if err := allBF16(x, g, w.Output[0]); err != nil {
		return nil, err
	}
	as, err := w.ParseAttrs()
	if err != nil {
		return nil, err
	}
	eps := as.Float("eps", 0)
	if !(eps > 0) || math.IsInf(eps, 0) {
		return nil, fmt.Errorf("attribute eps = %g, want a positive number", eps)
	}
	if h%2 != 0 {
		return nil, unsupported("H=%d is odd (bf16 pairs)", h)
	}
	return RMSNorm{M: kernels.Rows(x), H: h, Eps: eps}, nil
}

// pagedAttentionFromWorkload reads q [B, QH, D], the cache type, the block
// tables [B, MB] and lengths [B]; the kernel is measured with every
// sequence at the longest context the tables describe (MB·block size).
func pagedAttentionFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkSigs(w, 4, 1); err != nil {
		return nil, err
	}
	q, cache, bt, cl := w.Inputs[0], w.Inputs[1], w.Inputs[2], w.Inputs[3]
	kv, err := kernels.ParsePagedKV(cache.KV)
	if err != nil {
		return nil, fmt.Errorf("operand #1 (cache): %w", err)
	}
	if len(q.Shape) != 3 || len(bt.Shape) != 2 || len(cl.Shape) != 1 {
		return nil, fmt.Errorf("q %v, block_tables %v, context_lens %v: want ranks 3, 2, 1", q.Shape, bt.Shape, cl.Shape)
	}
	if bt.DType != "i32" || cl.DType != "i32" {
		return nil, fmt.Errorf("block_tables %s and context_lens %s must be i32", bt.DType, cl.DType)
	}
	if q.Shape[0] != bt.Shape[0] || q.Shape[0] != cl.Shape[0] || q.Shape[2] != kv.HeadDim {
		return nil, fmt.Errorf("q %v, block_tables %v, context_lens %v, cache head_dim %d do not match", q.Shape, bt.Shape, cl.Shape, kv.HeadDim)
	}
	if err := allBF16(q, cache, w.Output[0]); err != nil {
		return nil, err
	}
	as, err := w.ParseAttrs()
	if err != nil {
		return nil, err
	}
	// The generated kernel scales by 1/sqrt(D) and reads whole contexts.
	if s := as.Float("scale", 0); s != 0 && math.Abs(s*math.Sqrt(float64(kv.HeadDim))-1) > 1e-6 {
		return nil, unsupported("attention scale %g (the CUDA kernel uses 1/sqrt(head_dim))", s)
	}
	if win := as.Float("sliding_window", 0); win != 0 {
		return nil, unsupported("sliding window %g", win)
	}
	a := PagedAttention{Batch: q.Shape[0], QHeads: q.Shape[1], KVHeads: kv.KVHeads, HeadDim: kv.HeadDim,
		BlockSize: kv.BlockSize, Context: bt.Shape[1] * kv.BlockSize}
	if err := a.check(); err != nil {
		return nil, unsupported("%v", err)
	}
	return a, nil
}

// pointwiseFromWorkload reads silu(x) or mul/add(a, b) of equal shapes.
func pointwiseFromWorkload(w ir.Workload, op PointwiseOp) (Kernel, error) {
	if err := checkSigs(w, op.arity(), 1); err != nil {
		return nil, err
	}
	x := w.Inputs[0]
	for i, s := range append(slices.Clone(w.Inputs[1:]), w.Output...) {
		if !slices.Equal(s.Shape, x.Shape) {
			return nil, unsupported("tensor %d has shape %v, operand 0 %v (no broadcasting on CUDA)", i+1, s.Shape, x.Shape)
		}
	}
	if err := allBF16(append(slices.Clone(w.Inputs), w.Output...)...); err != nil {
		return nil, err
	}
	p := Pointwise{Op: op, M: kernels.Rows(x), H: x.Shape[len(x.Shape)-1]}
	if err := p.check(); err != nil {
		return nil, unsupported("%v", err)
	}
	return p, nil
}

// NamedKnobs is the design space of a template kernel with its knobs'
// names (ok false for kernels without one): what a knob override (`llmir
// cuda bench --knobs`) is checked against. A loop-nest kernel that embeds
// a template (LoopNestGEMM) answers with the template's knobs, which its
// schedules do not have: Knobs.Read of one of its schedules tells.
func NamedKnobs(k Kernel) (ks kernels.Knobs, ok bool) {
	t, ok := Unwrap(k).(interface{ knobs() kernels.Knobs })
	if !ok {
		return nil, false
	}
	return t.knobs(), true
}
