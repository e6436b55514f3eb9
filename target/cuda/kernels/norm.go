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

// RMSNorm is out[m, :] = x[m, :] / sqrt(mean(x[m, :]²) + eps) · w in bf16
// with f32 arithmetic: one block per row, vector loads, a warp-shuffle then
// shared-memory reduction of the sum of squares, and a second pass over the
// row (from L1/L2) to scale it.
type RMSNorm struct {
	M, H int64
	Eps  float64 // 0: 1e-5
}

func (r RMSNorm) eps() float64 {
	if r.Eps > 0 {
		return r.Eps
	}
	return 1e-5
}

func (r RMSNorm) knobs() kernels.Knobs {
	return kernels.Knobs{
		{Name: "threads", Values: []int64{64, 128, 256, 512, 1024}},
		{Name: "vec", Values: []int64{8, 4, 2}},
	}
}

func (r RMSNorm) Name() string { return fmt.Sprintf("cuda_rms_norm/M=%d,H=%d/bf16", r.M, r.H) }

func (r RMSNorm) check() error {
	if r.M < 1 || r.H < 2 || r.H%2 != 0 {
		return fmt.Errorf("rms_norm: shape M=%d H=%d (want H even)", r.M, r.H)
	}
	return nil
}

func (r RMSNorm) Def() (*schedule.Def, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return schedule.NewTemplateDef("cuda_rms_norm", "out[m, i] = x[m, i] / sqrt(mean_i(x[m, i]^2) + eps) * w[i]",
		[]*schedule.Tensor{bf16Buf("x", r.M, r.H), bf16Buf("w", r.H)}, bf16Buf("out", r.M, r.H))
}

func (r RMSNorm) Workload() ir.Workload {
	return ir.Workload{
		Group:  []string{"llmir.rms_norm"},
		Inputs: []ir.TensorSig{{Shape: []int64{r.M, r.H}, DType: "bf16"}, {Shape: []int64{r.H}, DType: "bf16"}},
		Output: []ir.TensorSig{{Shape: []int64{r.M, r.H}, DType: "bf16"}},
		Attrs:  map[string]string{"eps": fmt.Sprint(r.eps())},
	}
}

func (r RMSNorm) Dims() []int64 { return nil }

// Reference is kernels/ref.RMSNorm (inputs are bf16 values, exact in f32).
func (r RMSNorm) Reference(in [][]float64) [][]float64 {
	out, err := ref.RMSNorm(f32s(in[0]), int(r.M), int(r.H), f32s(in[1]), r.eps())
	if err != nil {
		panic(fmt.Sprintf("rms_norm reference: %v", err)) // shapes are checked by Def
	}
	return [][]float64{f64s(out)}
}

func (r RMSNorm) FLOPs() float64 { return 4 * float64(r.M*r.H) }
func (r RMSNorm) Bytes() float64 { return 2 * float64(2*r.M*r.H+r.H) }

func (r RMSNorm) Space(s *schedule.Schedule, _ kernels.Hardware) error { return r.knobs().Sample(s) }

// Default: the widest load that divides H, and about four vectors per
// thread.
func (r RMSNorm) Default(s *schedule.Schedule, _ kernels.Hardware) error {
	v := int64(8)
	for r.H%v != 0 {
		v /= 2
	}
	t := int64(64)
	for t < 1024 && t*v*4 < r.H {
		t *= 2
	}
	return r.knobs().Choose(s, map[string]int64{"threads": t, "vec": v})
}

func (r RMSNorm) EmitCUDA(s *schedule.Schedule, _ cuda.GPU, entry string) (string, error) {
	if err := r.check(); err != nil {
		return "", err
	}
	k, err := knobsOf(r.knobs(), s)
	if err != nil {
		return "", err
	}
	T, V := k["threads"], k["vec"]
	if r.H%V != 0 {
		return "", fmt.Errorf("rms_norm: H=%d not a multiple of vec %d", r.H, V)
	}
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: threads=%d vec=%d
constexpr int M = %d, H = %d, T = %d, V = %d;
constexpr float EPS = %.9ef;
`, r.Name(), T, V, r.M, r.H, T, V, r.eps())
	b.WriteString(unpack(V))
	b.WriteString(`
__global__ void __launch_bounds__(T) rms_norm(const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out) {
  const __nv_bfloat16 *xr = x + (size_t)blockIdx.x * H;
  __nv_bfloat16 *orow = out + (size_t)blockIdx.x * H;
  float ss = 0.f;
  for (int i = threadIdx.x * V; i < H; i += T * V) {
    float f[V];
    unpack(*reinterpret_cast<const vec_t *>(xr + i), f);
#pragma unroll
    for (int v = 0; v < V; v++) ss = fmaf(f[v], f[v], ss);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  __shared__ float part[(T + 31) / 32];
  __shared__ float inv;
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.f;
    for (int i = 0; i < (T + 31) / 32; i++) t += part[i];
    inv = rsqrtf(t / H + EPS);
  }
  __syncthreads();
  const float s = inv;
  for (int i = threadIdx.x * V; i < H; i += T * V) {
    float f[V], g[V];
    unpack(*reinterpret_cast<const vec_t *>(xr + i), f);
    unpack(*reinterpret_cast<const vec_t *>(w + i), g);
#pragma unroll
    for (int v = 0; v < V; v += 2) {
      __nv_bfloat162 o2 = __floats2bfloat162_rn(f[v] * s * g[v], f[v + 1] * s * g[v + 1]);
      *reinterpret_cast<__nv_bfloat162 *>(orow + i + v) = o2;
    }
  }
}
`)
	fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  rms_norm<<<M, T>>>((const __nv_bfloat16 *)bufs[0], (const __nv_bfloat16 *)bufs[1], (__nv_bfloat16 *)bufs[2]);
%s}
`, entry, launchCheck)
	return b.String(), nil
}

// SiluMul is the gated MLP's activation, out[m, i] = silu(gu[m, i]) ·
// gu[m, I + i] with gate and up halves concatenated as vLLM's
// silu_and_mul takes them: a grid-stride elementwise kernel with vector
// loads and several vectors per thread.
type SiluMul struct {
	M, I int64
}

func (sm SiluMul) knobs() kernels.Knobs {
	return kernels.Knobs{
		{Name: "threads", Values: []int64{128, 256, 512}},
		{Name: "vec", Values: []int64{8, 4, 2}},
		{Name: "per_thread", Values: []int64{1, 2, 4}},
	}
}

func (sm SiluMul) Name() string { return fmt.Sprintf("cuda_silu_mul/M=%d,I=%d/bf16", sm.M, sm.I) }

func (sm SiluMul) check() error {
	if sm.M < 1 || sm.I < 2 || sm.I%2 != 0 {
		return fmt.Errorf("silu_mul: shape M=%d I=%d (want I even)", sm.M, sm.I)
	}
	return nil
}

func (sm SiluMul) Def() (*schedule.Def, error) {
	if err := sm.check(); err != nil {
		return nil, err
	}
	return schedule.NewTemplateDef("cuda_silu_mul", "out[m, i] = silu(gate_up[m, i]) * gate_up[m, I + i]",
		[]*schedule.Tensor{bf16Buf("gate_up", sm.M, 2*sm.I)}, bf16Buf("out", sm.M, sm.I))
}

func (sm SiluMul) Workload() ir.Workload {
	return ir.Workload{
		Group:  []string{"llmir.silu", "llmir.mul"},
		Inputs: []ir.TensorSig{{Shape: []int64{sm.M, 2 * sm.I}, DType: "bf16"}},
		Output: []ir.TensorSig{{Shape: []int64{sm.M, sm.I}, DType: "bf16"}},
	}
}

func (sm SiluMul) Dims() []int64 { return nil }

// Reference uses kernels/ref.SiLU for the gate.
func (sm SiluMul) Reference(in [][]float64) [][]float64 {
	M, I := int(sm.M), int(sm.I)
	out := make([]float64, M*I)
	for m := range M {
		row := in[0][m*2*I : (m+1)*2*I]
		g := ref.SiLU(f32s(row[:I]))
		for i := range I {
			out[m*I+i] = float64(g[i]) * row[I+i]
		}
	}
	return [][]float64{out}
}

func (sm SiluMul) FLOPs() float64 { return 5 * float64(sm.M*sm.I) }
func (sm SiluMul) Bytes() float64 { return 2 * float64(3*sm.M*sm.I) }

func (sm SiluMul) Space(s *schedule.Schedule, _ kernels.Hardware) error { return sm.knobs().Sample(s) }

// Default: 16-byte loads when I allows, 256 threads, two vectors per
// thread (enough independent loads to cover DRAM latency).
func (sm SiluMul) Default(s *schedule.Schedule, _ kernels.Hardware) error {
	v := int64(8)
	for sm.I%v != 0 {
		v /= 2
	}
	return sm.knobs().Choose(s, map[string]int64{"threads": 256, "vec": v, "per_thread": 2})
}

func (sm SiluMul) EmitCUDA(s *schedule.Schedule, g cuda.GPU, entry string) (string, error) {
	if err := sm.check(); err != nil {
		return "", err
	}
	k, err := knobsOf(sm.knobs(), s)
	if err != nil {
		return "", err
	}
	T, V, PT := k["threads"], k["vec"], k["per_thread"]
	if sm.I%V != 0 {
		return "", fmt.Errorf("silu_mul: I=%d not a multiple of vec %d", sm.I, V)
	}
	vecs := sm.M * sm.I / V
	blocks := max(1, min((vecs+T*PT-1)/(T*PT), int64(max(g.SMs, 1))*32))
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: threads=%d vec=%d per_thread=%d
constexpr int M = %d, I = %d, T = %d, V = %d, PT = %d;
constexpr long long VECS = (long long)M * I / V;  // output vectors
`, sm.Name(), T, V, PT, sm.M, sm.I, T, V, PT)
	b.WriteString(unpack(V))
	b.WriteString(`
__device__ __forceinline__ float silu(float x) { return x / (1.f + __expf(-x)); }

__global__ void __launch_bounds__(T) silu_mul(const __nv_bfloat16 *__restrict__ gu, __nv_bfloat16 *__restrict__ out) {
  const long long stride = (long long)gridDim.x * T * PT;
  for (long long base = (long long)blockIdx.x * T * PT + threadIdx.x; base < VECS; base += stride) {
    vec_t gv[PT], uv[PT];
#pragma unroll
    for (int p = 0; p < PT; p++) {
      const long long j = base + (long long)p * T;
      if (j < VECS) {
        const long long e = j * V, m = e / I, i = e % I;
        gv[p] = __ldcs(reinterpret_cast<const vec_t *>(gu + m * 2 * I + i));
        uv[p] = __ldcs(reinterpret_cast<const vec_t *>(gu + m * 2 * I + I + i));
      }
    }
#pragma unroll
    for (int p = 0; p < PT; p++) {
      const long long j = base + (long long)p * T;
      if (j < VECS) {
        float gf[V], uf[V];
        unpack(gv[p], gf);
        unpack(uv[p], uf);
#pragma unroll
        for (int v = 0; v < V; v += 2)
          *reinterpret_cast<__nv_bfloat162 *>(out + j * V + v) =
              __floats2bfloat162_rn(silu(gf[v]) * uf[v], silu(gf[v + 1]) * uf[v + 1]);
      }
    }
  }
}
`)
	fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  silu_mul<<<%d, T>>>((const __nv_bfloat16 *)bufs[0], (__nv_bfloat16 *)bufs[1]);
%s}
`, entry, blocks, launchCheck)
	return b.String(), nil
}

func f32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
