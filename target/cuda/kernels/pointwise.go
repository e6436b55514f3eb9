package cudakernels

import (
	"fmt"
	"strings"

	"llmir/ir"
	"llmir/kernels"
	"llmir/kernels/ref"
	"llmir/schedule"
	"llmir/target/cuda"
)

// PointwiseOp is the operation of a Pointwise kernel.
type PointwiseOp string

// The element-wise ops of the unfused MLP and residual: silu(gate),
// silu·up, and the residual add.
const (
	OpSiLU PointwiseOp = "silu"
	OpMul  PointwiseOp = "mul"
	OpAdd  PointwiseOp = "add"
)

func (op PointwiseOp) arity() int {
	if op == OpSiLU {
		return 1
	}
	return 2
}

// Pointwise is a bf16 element-wise op over M×H elements with f32
// arithmetic: a grid-stride loop with vector loads and several vectors per
// thread in flight, like SiluMul. It serves the unfused alternatives of
// the IR's fused groups (gate_up+silu_mul: silu then mul; linear+add: the
// add), so that a model without fused CUDA kernels is still tunable end
// to end.
type Pointwise struct {
	Op   PointwiseOp
	M, H int64
}

func (p Pointwise) knobs() kernels.Knobs {
	return kernels.Knobs{
		{Name: "threads", Values: []int64{128, 256, 512}},
		{Name: "vec", Values: []int64{8, 4, 2}},
		{Name: "per_thread", Values: []int64{1, 2, 4}},
	}
}

// Name is "cuda_<op>/M=…,H=…/bf16".
func (p Pointwise) Name() string { return fmt.Sprintf("cuda_%s/M=%d,H=%d/bf16", p.Op, p.M, p.H) }

func (p Pointwise) check() error {
	switch p.Op {
	case OpSiLU, OpMul, OpAdd:
	default:
		return fmt.Errorf("pointwise: op %q (want silu, mul or add)", p.Op)
	}
	if p.M < 1 || p.H < 2 || p.H%2 != 0 {
		return fmt.Errorf("pointwise %s: shape M=%d H=%d (want H even)", p.Op, p.M, p.H)
	}
	return nil
}

func (p Pointwise) Def() (*schedule.Def, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	ins := []*schedule.Tensor{bf16Buf("a", p.M, p.H)}
	formula := "out[m, i] = silu(a[m, i])"
	if p.Op != OpSiLU {
		ins = append(ins, bf16Buf("b", p.M, p.H))
		formula = fmt.Sprintf("out[m, i] = a[m, i] %s b[m, i]", map[PointwiseOp]string{OpMul: "*", OpAdd: "+"}[p.Op])
	}
	return schedule.NewTemplateDef("cuda_"+string(p.Op), formula, ins, bf16Buf("out", p.M, p.H))
}

// Workload is the op on bf16 [M, H] (FromWorkload's kernels answer with
// the IR workload instead).
func (p Pointwise) Workload() ir.Workload {
	sig := ir.TensorSig{Shape: []int64{p.M, p.H}, DType: "bf16"}
	ins := []ir.TensorSig{sig}
	if p.Op != OpSiLU {
		ins = append(ins, sig)
	}
	return ir.Workload{Group: []string{"llmir." + string(p.Op)}, Inputs: ins, Output: []ir.TensorSig{sig}}
}

func (p Pointwise) Dims() []int64 { return nil }

// Reference computes silu through kernels/ref.SiLU (on the f32 values the
// kernel reads) and mul/add in float64.
func (p Pointwise) Reference(in [][]float64) [][]float64 {
	a := in[0]
	switch p.Op {
	case OpSiLU:
		return [][]float64{f64s(ref.SiLU(f32s(a)))}
	case OpMul:
		out := make([]float64, len(a))
		for i := range a {
			out[i] = a[i] * in[1][i]
		}
		return [][]float64{out}
	}
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] + in[1][i]
	}
	return [][]float64{out}
}

func (p Pointwise) FLOPs() float64 {
	if p.Op == OpSiLU {
		return 4 * float64(p.M*p.H)
	}
	return float64(p.M * p.H)
}

// Bytes is every operand read once and the result written once.
func (p Pointwise) Bytes() float64 { return 2 * float64(int64(p.Op.arity()+1)*p.M*p.H) }

func (p Pointwise) Space(s *schedule.Schedule, _ kernels.Hardware) error { return p.knobs().Sample(s) }

// Default: the widest load that divides H, 256 threads, two vectors per
// thread (SiluMul's rule: enough loads in flight to cover DRAM latency).
func (p Pointwise) Default(s *schedule.Schedule, _ kernels.Hardware) error {
	v := int64(8)
	for p.H%v != 0 {
		v /= 2
	}
	return p.knobs().Choose(s, map[string]int64{"threads": 256, "vec": v, "per_thread": 2})
}

// EmitCUDA writes the kernel for the knobs in s; a vector width that does
// not divide H is refused (a build_error that costs no nvcc time).
func (p Pointwise) EmitCUDA(s *schedule.Schedule, g cuda.GPU, entry string) (string, error) {
	if err := p.check(); err != nil {
		return "", err
	}
	k, err := knobsOf(p.knobs(), s)
	if err != nil {
		return "", err
	}
	T, V, PT := k["threads"], k["vec"], k["per_thread"]
	if p.H%V != 0 {
		return "", fmt.Errorf("%s: H=%d not a multiple of vec %d", p.Op, p.H, V)
	}
	vecs := p.M * p.H / V
	blocks := max(1, min((vecs+T*PT-1)/(T*PT), int64(max(g.SMs, 1))*32))
	expr := map[PointwiseOp]string{OpSiLU: "silu(af[v])", OpMul: "af[v] * bf[v]", OpAdd: "af[v] + bf[v]"}[p.Op]
	expr1 := strings.ReplaceAll(expr, "[v]", "[v + 1]")
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: threads=%d vec=%d per_thread=%d
constexpr int T = %d, V = %d, PT = %d;
constexpr long long VECS = %dLL;  // vectors of V elements
`, p.Name(), T, V, PT, T, V, PT, vecs)
	b.WriteString(unpack(V))
	b.WriteString(`
__device__ __forceinline__ float silu(float x) { return x / (1.f + __expf(-x)); }

__global__ void __launch_bounds__(T) pointwise(const __nv_bfloat16 *__restrict__ a, const __nv_bfloat16 *__restrict__ b, __nv_bfloat16 *__restrict__ out) {
  const long long stride = (long long)gridDim.x * T * PT;
  for (long long base = (long long)blockIdx.x * T * PT + threadIdx.x; base < VECS; base += stride) {
    vec_t av[PT], bv[PT];
#pragma unroll
    for (int p = 0; p < PT; p++) {
      const long long j = base + (long long)p * T;
      if (j < VECS) {
        av[p] = __ldcs(reinterpret_cast<const vec_t *>(a) + j);
`)
	if p.Op != OpSiLU {
		b.WriteString("        bv[p] = __ldcs(reinterpret_cast<const vec_t *>(b) + j);\n")
	}
	b.WriteString(`      }
    }
#pragma unroll
    for (int p = 0; p < PT; p++) {
      const long long j = base + (long long)p * T;
      if (j < VECS) {
        float af[V], bf[V];
        unpack(av[p], af);
`)
	if p.Op != OpSiLU {
		b.WriteString("        unpack(bv[p], bf);\n")
	} else {
		b.WriteString("        (void)bv; (void)bf;\n")
	}
	fmt.Fprintf(&b, `#pragma unroll
        for (int v = 0; v < V; v += 2)
          *reinterpret_cast<__nv_bfloat162 *>(out + j * V + v) = __floats2bfloat162_rn(%s, %s);
      }
    }
  }
}
`, expr, expr1)
	bArg, outArg := "(const __nv_bfloat16 *)bufs[1]", "(__nv_bfloat16 *)bufs[2]"
	if p.Op == OpSiLU {
		bArg, outArg = "nullptr", "(__nv_bfloat16 *)bufs[1]"
	}
	fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  pointwise<<<%d, T>>>((const __nv_bfloat16 *)bufs[0], %s, %s);
%s}
`, entry, blocks, bArg, outArg, launchCheck)
	return b.String(), nil
}
