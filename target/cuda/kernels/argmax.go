package cudakernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/target/cuda"
)

// Argmax is llmir.argmax over the last axis of bf16 x [M, N] on the GPU:
// out[m] is the index of the largest element of row m, the first one on
// ties, NaN larger than every number and the first NaN winning, as
// ref.Argmax and the CPU kernel. The index is written as i32 although the
// IR's result is i64, as the CPU kernel does (kernels/softmax.go: the
// harnesses poison and check 2- and 4-byte elements, and no vocabulary
// reaches 2^31); the kernel's Workload is the IR's.
//
// A row is split over blocks_per_row blocks (a decode row of 128256 logits
// would leave one block alone on the GPU), each sweeping its contiguous
// range of vec-wide vectors with threads threads, unroll vectors loaded
// per step. A step takes the maximum of its vectors in bf16 pairs (NaN
// passes through) and only when that beats the thread's best looks for
// its first position, so the sweep is a packed max per pair. Threads and
// warps merge (value, index) pairs with the order above, which is total,
// so the result does not depend on the split or the merge order. Split
// rows leave one partial per block in a workspace; the last block of a
// row to arrive merges them and resets its counter, as the GEMV's split-K.
// Rows whose start is not vector-aligned (N not a multiple of vec) read
// their first and last elements one by one.
type Argmax struct {
	M, N int64
	// Special plants NaNs, infinities, signed zeros and ties in the rows
	// (Fill), for the conformance check of the comparison rules.
	Special bool
}

func (a Argmax) knobs() kernels.Knobs {
	return kernels.Knobs{
		{Name: "threads", Values: []int64{64, 128, 256, 512, 1024}},
		{Name: "vec", Values: []int64{8, 4, 2}},
		{Name: "unroll", Values: []int64{1, 2, 4}},
		{Name: "blocks_per_row", Values: []int64{1, 2, 4, 8, 16, 32, 64, 128}},
	}
}

// Name is "cuda_argmax/M=…,N=…/bf16" (",special" for planted values).
func (a Argmax) Name() string {
	sp := ""
	if a.Special {
		sp = ",special"
	}
	return fmt.Sprintf("cuda_argmax/M=%d,N=%d%s/bf16", a.M, a.N, sp)
}

func (a Argmax) check() error {
	if a.M < 1 || a.N < 1 || a.M > 65535 || a.N > math.MaxInt32/2 {
		return fmt.Errorf("argmax: shape M=%d N=%d (want 1 ≤ M ≤ 65535 rows, N < 2^30)", a.M, a.N)
	}
	return nil
}

func (a Argmax) Def() (*schedule.Def, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	return schedule.NewTemplateDef("cuda_argmax", "out[m] = first j with x[m, j] = max_j x[m, j] (NaN largest)",
		[]*schedule.Tensor{bf16Buf("x", a.M, a.N)}, i32Buf("out", a.M))
}

// Workload is llmir.argmax of [M, N] → [M] i64.
func (a Argmax) Workload() ir.Workload {
	return ir.Workload{
		Group:  []string{"llmir.argmax"},
		Inputs: []ir.TensorSig{{Shape: []int64{a.M, a.N}, DType: "bf16"}},
		Output: []ir.TensorSig{{Shape: []int64{a.M}, DType: "i64"}},
	}
}

func (a Argmax) cpu() kernels.Argmax {
	return kernels.Argmax{Rows: a.M, N: a.N, DType: schedule.BF16}
}

func (a Argmax) Dims() []int64 { return nil }

// Reference is the CPU kernel's (ref.Argmax over the last axis).
func (a Argmax) Reference(in [][]float64) [][]float64 { return a.cpu().Reference(in) }

func (a Argmax) FLOPs() float64 { return float64(a.M * a.N) }
func (a Argmax) Bytes() float64 { return a.cpu().Bytes() }

// Fill: with Special, row m gets by m mod 5 two NaNs (the first wins), its
// maximum planted three times (the first wins), only −inf (index 0), +inf
// twice, or −0 and +0 as the maximum of negatives (the first zero wins);
// otherwise nil (uniform values, whose bf16 rounding already ties a long
// row's maximum many times over).
func (a Argmax) Fill(input string) func(rng *rand.Rand, v []float64) {
	if !a.Special || input != "x" {
		return nil
	}
	n := int(a.N)
	return func(rng *rand.Rand, v []float64) {
		for i := range v {
			v[i] = rng.Float64()*2 - 1
		}
		for m := range int(a.M) {
			row := v[m*n : (m+1)*n]
			i, j := rng.IntN(n), rng.IntN(n)
			switch m % 5 {
			case 0: // two NaNs: the first wins
				row[i], row[j] = math.NaN(), math.NaN()
			case 1: // the maximum three times
				for range 3 {
					row[rng.IntN(n)] = 2
				}
			case 2: // all −inf: index 0
				for k := range row {
					row[k] = math.Inf(-1)
				}
			case 3: // +inf twice, NaN-free
				row[i], row[j] = math.Inf(1), math.Inf(1)
			case 4: // negatives with −0 and +0 as the maximum: the first zero wins
				for k := range row {
					row[k] = -1 - rng.Float64()
				}
				row[i], row[j] = math.Copysign(0, -1), 0
			}
		}
	}
}

func (a Argmax) Space(s *schedule.Schedule, _ kernels.Hardware) error {
	return a.knobs().SampleWhere(s, a.valid)
}

// Valid: the point recorded in s is one the generator accepts.
func (a Argmax) Valid(s *schedule.Schedule, _ kernels.Hardware) error {
	return a.knobs().Check(s, a.valid)
}

// Knobs is the design space and its predicate (for SpaceSize).
func (a Argmax) Knobs(kernels.Hardware) (kernels.Knobs, kernels.Validity) {
	return a.knobs(), a.valid
}

// perBlock is about the vectors one block of a row sweeps.
func (a Argmax) perBlock(v, split int64) int64 { return (a.N/v + split - 1) / split }

// valid: a split only where every thread of every block has a vector, an
// unroll only where every thread has that many, and no more threads than
// a block's vectors rounded up to a warp (64 at least).
func (a Argmax) valid(p map[string]int64) error {
	T, V, U, S := p["threads"], p["vec"], p["unroll"], p["blocks_per_row"]
	per := a.perBlock(V, S)
	if S > 1 && per < T {
		return fmt.Errorf("%d blocks a row of %d vectors of %d for %d threads", S, a.N/V, V, T)
	}
	if U > 1 && per < T*U {
		return fmt.Errorf("unroll %d of %d threads over %d vectors a block", U, T, per)
	}
	if T > max(64, (per+31)/32*32) {
		return fmt.Errorf("%d threads for %d vectors a block", T, per)
	}
	return nil
}

// Default: 16-byte vectors, 256 threads (fewer for short rows) with two
// vectors in flight each where the row allows, and rows split until the
// grid has about two blocks per SM or the blocks would hold less than one
// step of vectors each.
func (a Argmax) Default(s *schedule.Schedule, hw kernels.Hardware) error {
	p := map[string]int64{"threads": 64, "vec": 8, "unroll": 1, "blocks_per_row": 1}
	for _, t := range []int64{128, 256} {
		if q := map[string]int64{"threads": t, "vec": 8, "unroll": 1, "blocks_per_row": 1}; a.valid(q) == nil {
			p["threads"] = t
		}
	}
	if q := map[string]int64{"threads": p["threads"], "vec": 8, "unroll": 2, "blocks_per_row": 1}; a.valid(q) == nil {
		p["unroll"] = 2
	}
	sms := int64(max(hw.Threads, 1))
	for _, sp := range []int64{2, 4, 8, 16, 32, 64, 128} {
		q := map[string]int64{"threads": p["threads"], "vec": 8, "unroll": p["unroll"], "blocks_per_row": sp}
		if a.M*sp > 2*sms || a.valid(q) != nil {
			break
		}
		p["blocks_per_row"] = sp
	}
	return a.knobs().ChooseWhere(s, p, a.valid)
}

func (a Argmax) EmitCUDA(s *schedule.Schedule, _ cuda.GPU, entry string) (string, error) {
	if err := a.check(); err != nil {
		return "", err
	}
	k, err := knobsOf(a.knobs(), s)
	if err != nil {
		return "", err
	}
	if err := a.valid(k); err != nil {
		return "", fmt.Errorf("argmax: %w", err)
	}
	T, V, U, S := k["threads"], k["vec"], k["unroll"], k["blocks_per_row"]
	typ, words, err := vecType(V)
	if err != nil {
		return "", fmt.Errorf("argmax: %w", err)
	}
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: threads=%d vec=%d unroll=%d blocks_per_row=%d
constexpr int M = %d, N = %d;
constexpr int T = %d, V = %d, U = %d, S = %d, W = %d;  // W: 32-bit words a vector
constexpr int WARPS = T / 32;
typedef %s vec_t;  // %d bf16 = %d bytes per load
`, a.Name(), T, V, U, S, a.M, a.N, T, V, U, S, words, typ, V, 2*V)
	if words == 1 {
		b.WriteString("__device__ __forceinline__ uint32_t word(const vec_t &p, int i) { (void)i; return p; }\n")
		b.WriteString("__device__ __forceinline__ vec_t neg_inf_vec() { return 0xff80ff80u; }\n")
	} else {
		fmt.Fprintf(&b, "__device__ __forceinline__ uint32_t word(const vec_t &p, int i) { return %s; }\n",
			map[int]string{2: "i == 0 ? p.x : p.y", 4: "i == 0 ? p.x : i == 1 ? p.y : i == 2 ? p.z : p.w"}[words])
		fmt.Fprintf(&b, "__device__ __forceinline__ vec_t neg_inf_vec() { const uint32_t n = 0xff80ff80u; return vec_t{%s}; }\n",
			strings.TrimSuffix(strings.Repeat("n, ", words), ", "))
	}
	b.WriteString(argmaxBody)
	if S > 1 {
		b.WriteString(workspaceHelper)
		fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  // One (value, index) partial per block, then a zeroed counter per row.
  float *ws = nullptr;
  cudaError_t e = workspace(sizeof(float) * 2 * M * S, sizeof(unsigned) * M, (void **)&ws);
  if (e != cudaSuccess) return (int)e;
  argmax<<<dim3(S, M), T>>>((const __nv_bfloat16 *)bufs[0], (int32_t *)bufs[1], ws, (int *)(ws + (size_t)M * S),
      (unsigned *)(ws + (size_t)2 * M * S));
%s}
`, entry, launchCheck)
	} else {
		fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  argmax<<<dim3(S, M), T>>>((const __nv_bfloat16 *)bufs[0], (int32_t *)bufs[1], nullptr, nullptr, nullptr);
%s}
`, entry, launchCheck)
	}
	return b.String(), nil
}

// argmaxBody is the kernel for the constants above.
const argmaxBody = `
// better: (v, i) comes before (bv, bi) in the argmax order: NaN above
// every number (the first NaN wins), then the larger value, then the
// smaller index. Total on distinct indices, so merges in any order agree.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  if (v != v) return bv == bv || i < bi;
  if (bv != bv) return false;
  return v > bv || (v == bv && i < bi);
}

__device__ __forceinline__ __nv_bfloat162 pair(uint32_t w) { return *reinterpret_cast<const __nv_bfloat162 *>(&w); }

// elem is element e of a vector as a float.
__device__ __forceinline__ float elem(const vec_t &p, int e) {
  const uint32_t w = word(p, e / 2);
  return (e & 1) ? bf_hi(w) : bf_lo(w);
}

__device__ __forceinline__ void warp_best(float &bv, int &bi) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
  }
}

__global__ void __launch_bounds__(T) argmax(const __nv_bfloat16 *__restrict__ x, int32_t *__restrict__ out,
    float *__restrict__ part_v, int *__restrict__ part_i, unsigned *__restrict__ count) {
  const int r = blockIdx.y, p = blockIdx.x;
  const __nv_bfloat16 *xr = x + (size_t)r * N;
  // The row's vector-aligned middle: head elements before it, tail after.
  const int head = min(N, (int)((V - (int)(((size_t)r * N) % V)) % V));
  const int nv = (N - head) / V, tail0 = head + nv * V;
  const int per = (nv + S - 1) / S, vb = p * per, ve = min(nv, vb + per);
  float bv = -INFINITY;
  int bi = N;  // nothing seen: loses to every element
  if (p == 0 && (int)threadIdx.x < head) {
    const float f = __bfloat162float(xr[threadIdx.x]);
    if (better(f, threadIdx.x, bv, bi)) { bv = f; bi = threadIdx.x; }
  }
  // A thread's steps visit increasing indices, and its best so far has a
  // smaller index than the step's: a step replaces it only when strictly
  // larger, or NaN, or when nothing is held yet.
  const vec_t *xv = reinterpret_cast<const vec_t *>(xr + head);
  for (int j0 = vb + threadIdx.x; j0 < ve; j0 += T * U) {
    vec_t d[U];
#pragma unroll
    for (int u = 0; u < U; u++) d[u] = j0 + u * T < ve ? __ldcs(xv + j0 + u * T) : neg_inf_vec();
    __nv_bfloat162 m2 = pair(word(d[0], 0));
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int w = 0; w < W; w++) m2 = __hmax2_nan(m2, pair(word(d[u], w)));
    const float m = __bfloat162float(__hmax_nan(__low2bfloat16(m2), __high2bfloat16(m2)));
    const bool mnan = m != m;
    if (bv == bv && (mnan || m > bv || (m == bv && bi == N))) {
      bool found = false;
#pragma unroll
      for (int u = 0; u < U; u++)
#pragma unroll
        for (int e = 0; e < V; e++) {
          const float f = elem(d[u], e);
          if (!found && j0 + u * T < ve && (mnan ? f != f : f == m)) {
            found = true;
            bv = f;
            bi = head + (j0 + u * T) * V + e;
          }
        }
    }
  }
  if (p == S - 1 && (int)threadIdx.x < N - tail0) {
    const int i = tail0 + threadIdx.x;
    const float f = __bfloat162float(xr[i]);
    if (better(f, i, bv, bi)) { bv = f; bi = i; }
  }
  warp_best(bv, bi);
  __shared__ float sv[WARPS];
  __shared__ int si[WARPS];
  if (threadIdx.x % 32 == 0) { sv[threadIdx.x / 32] = bv; si[threadIdx.x / 32] = bi; }
  __syncthreads();
  if (threadIdx.x < 32) {
    bv = threadIdx.x < WARPS ? sv[threadIdx.x] : -INFINITY;
    bi = threadIdx.x < WARPS ? si[threadIdx.x] : N;
    warp_best(bv, bi);
  }
  if (S == 1) {
    if (threadIdx.x == 0) out[r] = bi;
    return;
  }
  // The last of the row's S blocks to arrive merges their partials and
  // resets the row's counter for the next launch.
  __shared__ bool last;
  if (threadIdx.x == 0) {
    part_v[(size_t)r * S + p] = bv;
    part_i[(size_t)r * S + p] = bi;
    __threadfence();
    last = atomicAdd(count + r, 1u) == (unsigned)S - 1;
    if (last) count[r] = 0;
  }
  __syncthreads();
  if (!last || threadIdx.x >= 32) return;
  __threadfence();
  bv = -INFINITY;
  bi = N;
  for (int q = threadIdx.x; q < S; q += 32) {
    const float v = __ldcg(part_v + (size_t)r * S + q);
    const int i = __ldcg(part_i + (size_t)r * S + q);
    if (better(v, i, bv, bi)) { bv = v; bi = i; }
  }
  warp_best(bv, bi);
  if (threadIdx.x == 0) out[r] = bi;
}
`

// argmaxFromWorkload reads llmir.argmax as the CPU registry does (the last
// axis, i64 or i32 indices of x's leading dims) and keeps bf16 logits.
func argmaxFromWorkload(w ir.Workload) (Kernel, error) {
	c, err := cpuKernelOf[kernels.Argmax](w)
	if err != nil {
		return nil, err
	}
	if err := bf16Only(c.DType); err != nil {
		return nil, err
	}
	a := Argmax{M: c.Rows, N: c.N}
	if err := a.check(); err != nil {
		return nil, unsupported("%v", err)
	}
	return a, nil
}
