package cudakernels

import (
	"fmt"
	"maps"
	"strings"

	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/schedule/recipe"
	"llmir/target/cuda"
	"llmir/target/cuda/cgen"
)

// Kernels whose CUDA is printed from the loop-nest IR (target/cuda/cgen)
// rather than written by a template generator: the schedule is a real
// trace of primitives (split, rfactor, bind, cache_read into shared memory,
// tensorize), so the Go interpreter checks it without a GPU and the tuner
// mutates it like a CPU schedule. They wrap the template kernels of the
// same op to share the workload, the reference and the structured inputs.

// LoopNestGEMV is the decode linear layer (M ≤ 16, bf16) scheduled by
// recipe.GPUGEMV: K split over the 32 lanes of a warp with rfactor, 16-byte
// loads of w and x into registers, a warp-shuffle reduction.
type LoopNestGEMV struct{ GEMV }

// LoopNestGEMM is the prefill linear layer (bf16, f32 sums) scheduled by
// recipe.GPUGEMM: block and warp tiles, a and w staged in shared memory,
// mma.sync m16n8k16 on tensor cores. M, N and K must be multiples of 16, 8
// and 16.
type LoopNestGEMM struct{ GEMM }

// LoopNestElementwise is out = a op b (mul or add) over bf16 [M, H],
// scheduled by recipe.GPUElementwise: rows grid-strided over the blocks,
// 16-byte vectors along H.
type LoopNestElementwise struct{ Pointwise }

// loopNestWorkload marks a template kernel's workload as printed from the
// loop nest (attr codegen = loopnest): the tuning database keys records by
// workload, and a loop-nest trace must never be replayed by the template
// generator of the same op (nor the reverse).
func loopNestWorkload(w ir.Workload) ir.Workload {
	attrs := map[string]string{"codegen": "loopnest"}
	maps.Copy(attrs, w.Attrs)
	attrs["codegen"] = "loopnest"
	w.Attrs = attrs
	return w
}

// Workload is the GEMV's, marked as loop-nest code.
func (g LoopNestGEMV) Workload() ir.Workload { return loopNestWorkload(g.GEMV.Workload()) }

// Workload is the GEMM's, marked as loop-nest code.
func (g LoopNestGEMM) Workload() ir.Workload { return loopNestWorkload(g.GEMM.Workload()) }

// Workload is the op's, marked as loop-nest code.
func (e LoopNestElementwise) Workload() ir.Workload {
	return loopNestWorkload(e.Pointwise.Workload())
}

// linearNestDef is out[i, j] = sum(k, x[i, k] * w[j, k]) with bf16 storage
// (the template kernels' parameter names, so their Fill applies).
func linearNestDef(m, n, k int64) (*schedule.Def, error) {
	M, N, K := schedule.Static(m), schedule.Static(n), schedule.Static(k)
	i, j, kk := schedule.NewAxis("i", M), schedule.NewAxis("j", N), schedule.NewAxis("k", K)
	x := schedule.Input("x", schedule.BF16, M, K)
	w := schedule.Input("w", schedule.BF16, N, K)
	out := schedule.Compute("out", schedule.BF16, []schedule.Axis{i, j}, schedule.Sum(kk, schedule.Mul(x.At(i, kk), w.At(j, kk))))
	return schedule.NewDef("linear", []*schedule.Tensor{x, w}, out)
}

// emitNest prints the nest of s.
func emitNest(s *schedule.Schedule, entry string) (string, error) {
	return cgen.Emit(s.Nest(), cgen.Options{Entry: entry})
}

// Name is "loopnest_gemv/M=…,N=…,K=…/bf16".
func (g LoopNestGEMV) Name() string {
	return strings.Replace(g.GEMV.Name(), "cuda_gemv", "loopnest_gemv", 1)
}

func (g LoopNestGEMV) check() error {
	if err := g.GEMV.check(); err != nil {
		return err
	}
	if g.K%256 != 0 {
		return fmt.Errorf("loopnest gemv: K=%d is not a multiple of 256 (32 lanes × 8 bf16)", g.K)
	}
	return nil
}

// Def is the loop-nest definition.
func (g LoopNestGEMV) Def() (*schedule.Def, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	return linearNestDef(g.M, g.N, g.K)
}

// Space samples the warps per block.
func (g LoopNestGEMV) Space(s *schedule.Schedule, _ kernels.Hardware) error {
	t, err := recipe.GPUGEMVSpace(s, g.N, g.K)
	if err != nil {
		return err
	}
	_, err = recipe.GPUGEMV(s, "out", t)
	return err
}

// Default is recipe.GPUGEMVDefault (Hardware.Threads is the SM count).
func (g LoopNestGEMV) Default(s *schedule.Schedule, hw kernels.Hardware) error {
	_, err := recipe.GPUGEMV(s, "out", recipe.GPUGEMVDefault(g.M, g.N, hw.Threads))
	return err
}

// EmitCUDA prints the scheduled nest.
func (g LoopNestGEMV) EmitCUDA(s *schedule.Schedule, _ cuda.GPU, entry string) (string, error) {
	return emitNest(s, entry)
}

// Name is "loopnest_gemm/M=…,N=…,K=…/bf16".
func (g LoopNestGEMM) Name() string {
	return strings.Replace(g.GEMM.Name(), "cuda_gemm", "loopnest_gemm", 1)
}

func (g LoopNestGEMM) check() error {
	if g.M < 16 || g.N < 8 || g.K < 16 || g.M%16 != 0 || g.N%8 != 0 || g.K%16 != 0 {
		return fmt.Errorf("loopnest gemm: shape M=%d N=%d K=%d (want multiples of the mma tile 16×8×16)", g.M, g.N, g.K)
	}
	return nil
}

// Def is the loop-nest definition.
func (g LoopNestGEMM) Def() (*schedule.Def, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	return linearNestDef(g.M, g.N, g.K)
}

// Space samples warp counts, mma tiles per warp and the K step among those
// that divide the shape.
func (g LoopNestGEMM) Space(s *schedule.Schedule, _ kernels.Hardware) error {
	t, err := recipe.GPUGEMMSpace(s, g.M, g.N, g.K)
	if err != nil {
		return err
	}
	_, err = recipe.GPUGEMM(s, "out", t)
	return err
}

// Default is the largest standard tile that divides the shape.
func (g LoopNestGEMM) Default(s *schedule.Schedule, _ kernels.Hardware) error {
	t, err := recipe.GPUGEMMDefault(g.M, g.N, g.K)
	if err != nil {
		return err
	}
	_, err = recipe.GPUGEMM(s, "out", t)
	return err
}

// EmitCUDA prints the scheduled nest.
func (g LoopNestGEMM) EmitCUDA(s *schedule.Schedule, _ cuda.GPU, entry string) (string, error) {
	return emitNest(s, entry)
}

// Name is "loopnest_<op>/M=…,H=…/bf16".
func (e LoopNestElementwise) Name() string {
	return strings.Replace(e.Pointwise.Name(), "cuda_", "loopnest_", 1)
}

func (e LoopNestElementwise) check() error {
	if e.Op != OpMul && e.Op != OpAdd {
		return fmt.Errorf("loopnest elementwise: op %q (want mul or add)", e.Op)
	}
	if e.M < 1 || e.H < 1 {
		return fmt.Errorf("loopnest %s: shape M=%d H=%d", e.Op, e.M, e.H)
	}
	return nil
}

// Def is out[i, j] = a[i, j] op b[i, j] in bf16.
func (e LoopNestElementwise) Def() (*schedule.Def, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	M, H := schedule.Static(e.M), schedule.Static(e.H)
	i, j := schedule.NewAxis("i", M), schedule.NewAxis("j", H)
	a := schedule.Input("a", schedule.BF16, M, H)
	b := schedule.Input("b", schedule.BF16, M, H)
	body := schedule.Mul(a.At(i, j), b.At(i, j))
	if e.Op == OpAdd {
		body = schedule.Add(a.At(i, j), b.At(i, j))
	}
	out := schedule.Compute("out", schedule.BF16, []schedule.Axis{i, j}, body)
	return schedule.NewDef(string(e.Op), []*schedule.Tensor{a, b}, out)
}

// Space samples threads per block and the grid size.
func (e LoopNestElementwise) Space(s *schedule.Schedule, hw kernels.Hardware) error {
	t, err := recipe.GPUElementwiseSpace(s, schedule.BF16, hw.Threads)
	if err != nil {
		return err
	}
	_, err = recipe.GPUElementwise(s, "out", t)
	return err
}

// Default is 256 threads of 16-byte vectors, four blocks per SM
// (Hardware.Threads is the SM count).
func (e LoopNestElementwise) Default(s *schedule.Schedule, hw kernels.Hardware) error {
	_, err := recipe.GPUElementwise(s, "out", recipe.GPUElementwiseDefault(schedule.BF16, hw.Threads))
	return err
}

// EmitCUDA prints the scheduled nest.
func (e LoopNestElementwise) EmitCUDA(s *schedule.Schedule, _ cuda.GPU, entry string) (string, error) {
	return emitNest(s, entry)
}

// loopNestFromSpec builds the loop-nest kernels of ParseSpec's
// loopnest_* kinds.
func loopNestFromSpec(kind string, vals map[string]int64) (Kernel, error) {
	switch kind {
	case "loopnest_gemv":
		return LoopNestGEMV{GEMV{M: vals["M"], N: vals["N"], K: vals["K"]}}, nil
	case "loopnest_gemm":
		return LoopNestGEMM{GEMM{M: vals["M"], N: vals["N"], K: vals["K"]}}, nil
	case "loopnest_mul", "loopnest_add":
		return LoopNestElementwise{Pointwise{Op: PointwiseOp(strings.TrimPrefix(kind, "loopnest_")), M: vals["M"], H: vals["H"]}}, nil
	}
	return nil, fmt.Errorf("unknown kernel kind %q", kind)
}
