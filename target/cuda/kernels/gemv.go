package cudakernels

import (
	"fmt"
	"strings"

	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/target/cuda"
)

// GEMV is the decode linear layer in bf16, out[M, N] = x[M, K] · w[N, K]ᵀ
// for few tokens (M ≤ 16): memory-bound on the weights, so each warp
// streams R rows of w with 16-byte loads and multiplies them with all M
// rows of x (which stay in L1), accumulating in f32 registers and reducing
// with warp shuffles; KSPLIT warps of a block may share rows and split K,
// reducing through shared memory.
type GEMV struct {
	M, N, K int64
}

// knobs is the design space. A block has groups × ksplit warps: groups
// of rows, each split over ksplit warps along K. Only points the
// generator accepts are sampled (see valid). With mma=1
// the tensor-core path is used: rows_per_warp counts 8-row n-tiles, unroll
// counts 32-wide k chunks, and vec is not used (loads are 16 bytes).
// mma=2 is the split-K tensor-core path (emitSplitK): rows_per_warp counts
// a warp's 8-row n-tiles, a block has groups × ksplit warps on distinct
// tiles (K is split across blocks), unroll counts the 32-wide k chunks a
// lane has in flight; vec is not used. mma=3 is the cp.async ring
// (emitRing): rows_per_warp counts a warp's 8-row n-tiles (up to 8, the
// tiles live in shared memory), a block has groups row groups of ksplit
// warps that share the group's rows and take its stages round-robin,
// unroll counts the 32-wide k chunks per stage and stages the ring's depth.
// Knobs a path does not read are pinned (see valid).
func (g GEMV) knobs() kernels.Knobs {
	return kernels.Knobs{
		{Name: "mma", Values: []int64{0, 1, 2, 3}},
		{Name: "rows_per_warp", Values: []int64{1, 2, 4, 8}},
		{Name: "groups", Values: []int64{1, 2, 4}},
		{Name: "ksplit", Values: []int64{1, 2, 4, 8}},
		{Name: "vec", Values: []int64{8, 4}},
		{Name: "unroll", Values: []int64{1, 2, 4, 8}},
		{Name: "stages", Values: []int64{2, 3, 4, 6}},
	}
}

// Name is "cuda_gemv/M=…,N=…,K=…/bf16".
func (g GEMV) Name() string { return fmt.Sprintf("cuda_gemv/M=%d,N=%d,K=%d/bf16", g.M, g.N, g.K) }

func (g GEMV) check() error {
	if g.M < 1 || g.M > 16 || g.N < 1 || g.K < 8 || g.K%8 != 0 {
		return fmt.Errorf("gemv: shape M=%d N=%d K=%d (want 1 ≤ M ≤ 16, K a multiple of 8)", g.M, g.N, g.K)
	}
	return nil
}

// Def declares x, w and out.
func (g GEMV) Def() (*schedule.Def, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	return schedule.NewTemplateDef("cuda_gemv", "out[m, n] = sum(k, x[m, k] * w[n, k]) in f32, stored as bf16",
		[]*schedule.Tensor{bf16Buf("x", g.M, g.K), bf16Buf("w", g.N, g.K)}, bf16Buf("out", g.M, g.N))
}

// Workload is llmir.linear on bf16 [M, K] × [N, K].
func (g GEMV) Workload() ir.Workload {
	return ir.Workload{
		Group:  []string{"llmir.linear"},
		Inputs: []ir.TensorSig{{Shape: []int64{g.M, g.K}, DType: "bf16"}, {Shape: []int64{g.N, g.K}, DType: "bf16"}},
		Output: []ir.TensorSig{{Shape: []int64{g.M, g.N}, DType: "bf16"}},
	}
}

func (g GEMV) Dims() []int64 { return nil }

// Reference accumulates in float64.
func (g GEMV) Reference(in [][]float64) [][]float64 {
	x, w := in[0], in[1]
	M, N, K := int(g.M), int(g.N), int(g.K)
	out := make([]float64, M*N)
	parallelRows(N, func(n int) {
		wr := w[n*K : (n+1)*K]
		for m := range M {
			xr := x[m*K : (m+1)*K]
			var s float64
			for k, v := range wr {
				s += v * xr[k]
			}
			out[m*N+n] = s
		}
	})
	return [][]float64{out}
}

func (g GEMV) FLOPs() float64 { return 2 * float64(g.M*g.N*g.K) }

// Bytes is the weights, activations and outputs, each once.
func (g GEMV) Bytes() float64 { return 2 * float64(g.N*g.K+g.M*g.K+g.M*g.N) }

// Space samples only points the generator accepts (see valid).
func (g GEMV) Space(s *schedule.Schedule, hw kernels.Hardware) error {
	return g.knobs().SampleWhere(s, g.valid(hw.Threads))
}

// Valid: the point recorded in s is one the generator accepts on hw.
func (g GEMV) Valid(s *schedule.Schedule, hw kernels.Hardware) error {
	return g.knobs().Check(s, g.valid(hw.Threads))
}

// Knobs is the design space and its predicate (for SpaceSize).
func (g GEMV) Knobs(hw kernels.Hardware) (kernels.Knobs, kernels.Validity) {
	return g.knobs(), g.valid(hw.Threads)
}

// valid is the generator's refusals for a GPU of sms SMs. Knobs a path does
// not read are pinned (vec to 8 on the tensor-core paths, which load 16
// bytes; stages to 2 off the ring), so each kernel is one point of the
// space; the register paths have no room for eight tiles or rows per warp.
func (g GEMV) valid(sms int) kernels.Validity {
	return func(k map[string]int64) error {
		R, S, V, U, PF := k["rows_per_warp"], k["ksplit"], k["vec"], k["unroll"], k["stages"]
		W := k["groups"] * S
		mma := k["mma"]
		if mma != 0 && V != 8 {
			return fmt.Errorf("gemv: vec %d with mma=%d (the tensor-core paths load 16 bytes; pinned to 8)", V, mma)
		}
		if mma != 3 {
			if PF != 2 {
				return fmt.Errorf("gemv: stages %d without the cp.async ring (mma=3; pinned to 2)", PF)
			}
			if R > 4 {
				return fmt.Errorf("gemv: rows_per_warp %d needs the registers of the cp.async ring (mma=3)", R)
			}
		}
		switch mma {
		case 0:
			if g.K%V != 0 {
				return fmt.Errorf("gemv: K=%d not a multiple of vec %d", g.K, V)
			}
		case 1:
			if smem := W * R * 4 * 32 * 4; S > 1 && smem > 48<<10 {
				return fmt.Errorf("gemv: %d bytes of shared memory for the split-K reduction of %d warps × %d tiles (max 48 KiB)", smem, W, R)
			}
		case 2:
			kr, _ := g.splitKRange(W*R*8, W, U, sms)
			if smem := g.M * (kr + 32) * 2; smem > 48<<10 {
				return fmt.Errorf("gemv: %d bytes of shared memory for x's slice of %d k (max 48 KiB)", smem, kr)
			}
		case 3:
			if smem := ringSmem(R, W, U, PF); smem > maxSmemPerBlock {
				return fmt.Errorf("gemv: %d bytes of shared memory for a %d-stage ring of %d warps × %d chunks × %d tiles (max %d)", smem, PF, W, U, R, maxSmemPerBlock)
			}
		}
		return nil
	}
}

// ringSmem is the ring path's dynamic shared memory: per warp, stages ×
// chunks × (NT + 2) 16-byte pieces per lane.
func ringSmem(NT, W, U, PF int64) int64 { return W * PF * U * (NT + 2) * 32 * 16 }

// Default: at M = 1 two rows per warp with 16-byte loads, two row groups
// of two K-split warps per block, no unrolling (the H200 tune's winner;
// the rows already give independent loads, and it beat the tensor-core
// paths at M = 1 in the microbenchmarks, the ring by 1–6% on the H100);
// at M ≥ 2 the cp.async ring (mma=3) with two 8-row tiles per warp, four
// warps splitting a block's K range, two 32-wide chunks per stage and three
// stages (the K blocks follow from the SM count, see ringKBlocks): of 340
// ring points measured on llama-3-8b's shapes at M = 16 on an H100 the
// best geomean, 0.99–1.14× cuBLAS where the split-K path (mma=2) reached
// 0.85–0.92×. When those 16-row blocks are fewer than the SMs (N = 1024,
// 64 blocks) a block takes 8 rows with eight warps splitting its K range
// (128 blocks, K unsplit): on the H100 at M = 16, N = 1024, K = 4096 that
// took 7.26 µs against 9.18 for the 16-row blocks unsplit (see
// ringWarpsPerSM; 11.36 with K split in three, the earlier rule), 7.58
// for 8 rows of four warps and four chunks per stage, 7.90 for 16 rows
// of eight warps, and cuBLAS 9.66 (1.33×); at N = 4096 the same blocks
// took 17.76 µs against 15.39 for the default (256 blocks). At M = 1 a
// grid short of 16 warps per SM splits K eight ways in the block (N =
// 1024: 256 blocks of four warps were 7.8 per SM): the H100 tune of
// llama-3-8b's decode found 6.75 µs there with ksplit 8 and unroll 8
// against 8.7 for the default, and its next best points had ksplit 8 too.
//
// At M = 1 every grid now splits K eight ways, four chunks unrolled (eight
// where the grid is short of warps, as before): side by side with the
// former ksplit 2, unroll 1 on the H100 (`llmir cuda bench --match
// 'cuda_gemv/M=(1|16),' --samples 0 --knobs …`, three calls) the new point
// took 14.66–14.72 µs at 4096×4096 against 15.14–15.23 (3.3–3.5% faster
// in each call), 2.4–2.7% faster at 14336×4096, 1.7% at 128256×4096, and
// 0.2% slower at 4096×14336 (noise). At M ≥ 2 the 8-row blocks of the
// small-N rule take a ring of four stages instead of three: 6.98 µs
// against 7.26–7.36 at 1024×4096, M = 16 (4.0–4.1% in each of three
// calls; six stages 6.94–7.04, unroll 4 7.04). At 4096×4096 no point of
// these sweeps gained 2% at M = 16. Neither shape can reach 85% of the
// copy bandwidth measured on 1 GiB: a pure read of the same bytes after the
// same L2 flush (a 16-byte-load kernel, 2–16 blocks of 512 threads an SM,
// median of 50) took 14.40 µs for 32 MiB (78% of copy) and 6.46 µs for
// 8 MiB (44%): at M = 1 these GEMVs reach 98% and 95% of the speed of a
// plain read of their weights (M = 16: 94% and 93%); the rest of the gap
// to the copy bandwidth is the launch and the first loads' latency.
// `llmir cuda bench` now times that read beside every row (% read). With
// it, side by side on the H100, no M = 16 point beat these defaults by 2%
// on the rows under 95% of the read (4096×4096 93.8%, 1024×4096 91.0%,
// 14336×4096 93.8%): stages 4 was +1.1% at 4096×4096, 8-row blocks of
// eight warps +1.7% at 14336×4096 (0.86× at 4096×4096); staging x through
// L1 (cp.async.ca) and an L2 prefetch size on the ring's copies
// (.L2::128B, .L2::256B) gained nothing (within ±1%). At 128256×4096
// (96.4% of the read) 8-row blocks of eight warps with four stages were
// +2.3%. Session 12 looked for the rest of the M = 16 gap at 4096×4096
// (93–94% of the read) with a scratch microbenchmark on the H100 (same
// flush, interleaved rounds): the ring without x's copies (wrong
// results, timing only) was 0.6% faster, so x's traffic is not it; at
// N = 4224 (264 blocks, exactly two per SM) the ring reached 91% of its
// read, so the 256 blocks' uneven spread is not it either; one ring per
// block whose warps share x, K split over a cluster of 2–8 blocks summed
// through distributed shared memory, was 9–36% slower (a block barrier
// per stage); the register tensor-core path (mma=1, seven points)
// reached 40–73% of the read; and a bulk L2 prefetch of each block's
// whole rows at its start (cp.async.bulk.prefetch.L2) made the ring 14–39%
// slower on every shape (17.9 against 15.5 µs at 4096×4096).
func (g GEMV) Default(s *schedule.Schedule, hw kernels.Hardware) error {
	v := map[string]int64{"mma": 0, "rows_per_warp": 2, "groups": 2, "ksplit": 8, "vec": 8, "unroll": 4, "stages": 2}
	if blocks := (g.N + 3) / 4; g.M < 2 && blocks*2*2 < 16*int64(max(hw.Threads, 1)) {
		// Rows per block = groups × rows_per_warp = 4; warps = blocks ×
		// groups × ksplit.
		v["unroll"] = 8
	}
	if g.M >= 2 {
		v = map[string]int64{"mma": 3, "rows_per_warp": 2, "groups": 1, "ksplit": 4, "vec": 8, "unroll": 2, "stages": 3}
		if (g.N+15)/16 < int64(max(hw.Threads, 1)) {
			// Fewer 16-row blocks than SMs: 8-row blocks of eight warps,
			// with a ring one stage deeper.
			v["rows_per_warp"], v["ksplit"], v["stages"] = 1, 8, 4
		}
	}
	return g.knobs().Choose(s, v)
}

// EmitCUDA writes the kernel for the knobs in s.
func (g GEMV) EmitCUDA(s *schedule.Schedule, gpu cuda.GPU, entry string) (string, error) {
	if err := g.check(); err != nil {
		return "", err
	}
	k, err := knobsOf(g.knobs(), s)
	if err != nil {
		return "", err
	}
	if err := g.valid(gpu.SMs)(k); err != nil {
		return "", err
	}
	R, S, V, U := k["rows_per_warp"], k["ksplit"], k["vec"], k["unroll"]
	W := k["groups"] * S
	switch k["mma"] {
	case 3:
		return g.emitRing(R, k["groups"], S, U, k["stages"], gpu.SMs, entry), nil
	case 2:
		return g.emitSplitK(R, W, U, gpu, entry), nil
	case 1:
		return g.emitMMA(R, W, S, U, entry), nil
	}
	rowsPerBlock := W / S * R
	blocks := (g.N + rowsPerBlock - 1) / rowsPerBlock
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: rows_per_warp=%d warps=%d ksplit=%d vec=%d unroll=%d
constexpr int M = %d, N = %d, K = %d;
constexpr int R = %d, WARPS = %d, KSPLIT = %d, V = %d;
constexpr int GROUPS = WARPS / KSPLIT;          // row groups per block
constexpr int KCHUNK = ((K / V + KSPLIT - 1) / KSPLIT) * V;
`, g.Name(), R, W, S, V, U, g.M, g.N, g.K, R, W, S, V)
	b.WriteString(unpack(V))
	fmt.Fprintf(&b, `
__global__ void __launch_bounds__(WARPS * 32) gemv(const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x %% 32;
  const int group = warp / KSPLIT, part = warp %% KSPLIT;
  const int row0 = (blockIdx.x * GROUPS + group) * R;
  const int kbeg = part * KCHUNK, kend = min(K, kbeg + KCHUNK);
  float acc[M][R];
#pragma unroll
  for (int m = 0; m < M; m++)
#pragma unroll
    for (int r = 0; r < R; r++) acc[m][r] = 0.f;
#pragma unroll %d
  for (int k = kbeg + lane * V; k < kend; k += 32 * V) {
    float wf[R][V];
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (row0 + r < N) {
        vec_t p = __ldcs(reinterpret_cast<const vec_t *>(w + (size_t)(row0 + r) * K + k));
        unpack(p, wf[r]);
      } else {
#pragma unroll
        for (int v = 0; v < V; v++) wf[r][v] = 0.f;
      }
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
      float xf[V];
      vec_t p = __ldg(reinterpret_cast<const vec_t *>(x + (size_t)m * K + k));
      unpack(p, xf);
#pragma unroll
      for (int r = 0; r < R; r++)
#pragma unroll
        for (int v = 0; v < V; v++) acc[m][r] = fmaf(xf[v], wf[r][v], acc[m][r]);
    }
  }
#pragma unroll
  for (int m = 0; m < M; m++)
#pragma unroll
    for (int r = 0; r < R; r++) {
      float t = acc[m][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
      acc[m][r] = t;
    }
`, U)
	if S == 1 {
		b.WriteString(`  // Lane i writes output i of the warp's M×R results.
#pragma unroll
  for (int m = 0; m < M; m++)
#pragma unroll
    for (int r = 0; r < R; r++)
      if (lane == (m * R + r) % 32 && row0 + r < N) out[(size_t)m * N + row0 + r] = __float2bfloat16(acc[m][r]);
}
`)
	} else {
		b.WriteString(`  __shared__ float red[WARPS][M * R];
  if (lane == 0) {
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
      for (int r = 0; r < R; r++) red[warp][m * R + r] = acc[m][r];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < GROUPS * M * R; i += WARPS * 32) {
    const int g = i / (M * R), j = i % (M * R), m = j / R, r = j % R;
    float t = 0.f;
#pragma unroll
    for (int p = 0; p < KSPLIT; p++) t += red[g * KSPLIT + p][j];
    const int row = (blockIdx.x * GROUPS + g) * R + r;
    if (row < N) out[(size_t)m * N + row] = __float2bfloat16(t);
  }
}
`)
	}
	fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  gemv<<<%d, WARPS * 32>>>((const __nv_bfloat16 *)bufs[0], (const __nv_bfloat16 *)bufs[1], (__nv_bfloat16 *)bufs[2]);
%s}
`, entry, blocks, launchCheck)
	return b.String(), nil
}

// emitMMA is the tensor-core path: each warp computes NT n-tiles of 8
// weight rows against all M ≤ 16 token rows with mma.sync m16n8k16 (bf16 in,
// f32 accumulate). Since a dot product does not care about the order of k,
// the 16-byte chunk a lane loads (8 consecutive k of one weight row) is
// split over two MMAs in the fragment order, and x is loaded with the same
// permutation: every global load stays 16 bytes wide.
func (g GEMV) emitMMA(NT, W, S, U int64, entry string) string {
	rowsPerBlock := W / S * NT * 8
	blocks := (g.N + rowsPerBlock - 1) / rowsPerBlock
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: mma n_tiles_per_warp=%d warps=%d ksplit=%d unroll=%d
constexpr int M = %d, N = %d, K = %d;
constexpr int NT = %d, WARPS = %d, KSPLIT = %d;
constexpr int GROUPS = WARPS / KSPLIT;
constexpr int NCHUNK = (K + 31) / 32;                 // 32-wide k chunks
constexpr int CPS = (NCHUNK + KSPLIT - 1) / KSPLIT;   // chunks per split

__device__ __forceinline__ void mma(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%%0,%%1,%%2,%%3}, {%%4,%%5,%%6,%%7}, {%%8,%%9}, {%%0,%%1,%%2,%%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__global__ void __launch_bounds__(WARPS * 32) gemv_mma(const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x %% 32;
  const int g = lane >> 2, t = lane & 3;  // fragment row, column pair
  const int group = warp / KSPLIT, part = warp %% KSPLIT;
  const int nbase = (blockIdx.x * GROUPS + group) * NT * 8;
  const int cbeg = part * CPS, cend = min(NCHUNK, cbeg + CPS);
  float c[NT][4];
#pragma unroll
  for (int j = 0; j < NT; j++) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.f;
#pragma unroll %d
  for (int ch = cbeg; ch < cend; ch++) {
    const int k = ch * 32 + t * 8;
    uint4 xa = make_uint4(0, 0, 0, 0), xb = make_uint4(0, 0, 0, 0);
    if (k < K) {
      if (g < M) xa = __ldg(reinterpret_cast<const uint4 *>(x + (size_t)g * K + k));
      if (g + 8 < M) xb = __ldg(reinterpret_cast<const uint4 *>(x + (size_t)(g + 8) * K + k));
    }
#pragma unroll
    for (int j = 0; j < NT; j++) {
      const int n = nbase + j * 8 + g;
      uint4 wv = make_uint4(0, 0, 0, 0);
      if (k < K && n < N) wv = __ldcs(reinterpret_cast<const uint4 *>(w + (size_t)n * K + k));
      mma(c[j], xa.x, xb.x, xa.y, xb.y, wv.x, wv.y);
      mma(c[j], xa.z, xb.z, xa.w, xb.w, wv.z, wv.w);
    }
  }
`, g.Name(), NT, W, S, U, g.M, g.N, g.K, NT, W, S, U)
	if S > 1 {
		b.WriteString(`  __shared__ float red[WARPS][NT][4][32];
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) red[warp][j][i][lane] = c[j][i];
  __syncthreads();
  if (part != 0) return;
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float s = 0.f;
#pragma unroll
      for (int p = 0; p < KSPLIT; p++) s += red[group * KSPLIT + p][j][i][lane];
      c[j][i] = s;
    }
`)
	}
	b.WriteString(`  // c[j]: rows g and g+8, columns 2t and 2t+1 of n-tile j.
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int m = g + (i >> 1) * 8, n = nbase + j * 8 + 2 * t + (i & 1);
      if (m < M && n < N) out[(size_t)m * N + n] = __float2bfloat16(c[j][i]);
    }
}
`)
	fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  gemv_mma<<<%d, WARPS * 32>>>((const __nv_bfloat16 *)bufs[0], (const __nv_bfloat16 *)bufs[1], (__nv_bfloat16 *)bufs[2]);
%s}
`, entry, blocks, launchCheck)
	return b.String()
}

// splitKSmem bounds the shared memory of x's K slice in the split-K path
// (static shared memory stops at 48 KiB; the rest leaves room for several
// blocks per SM).
const splitKSmem = 40 << 10

// splitKRange is the split-K path's K range per block (a multiple of
// 32·unroll, so every step of the pipeline is whole) and the number of K
// blocks: the fewest K blocks that give the grid about 8 warps per SM
// (with NT·U loads in flight per lane that hides DRAM latency; 16 was
// 0–11% slower on llama-3-8b's shapes, more K blocks costing more than the
// occupancy gains), with x's slice of the range within splitKSmem.
func (g GEMV) splitKRange(rows, warps, unroll int64, sms int) (kr, kblocks int64) {
	step := 32 * unroll
	kmax := max(step, (splitKSmem/(2*g.M)-32)/step*step)
	nblocks := (g.N + rows - 1) / rows
	target := int64(max(sms, 1)) * max(1, 8/warps)
	kblocks = max(1, (target+nblocks-1)/nblocks)
	kr = ((g.K+kblocks-1)/kblocks + step - 1) / step * step
	kr = min(max(kr, step), kmax)
	return kr, (g.K + kr - 1) / kr
}

// emitSplitK is the split-K tensor-core path. M ≤ 16 rows of x are
// exactly one m16n8k16 A operand: a block stages x's slice of its K range
// in shared memory (rows padded by 64 bytes, so the fragments' 16-byte
// loads are free of bank conflicts), and each of its warps streams NT
// 8-row tiles of weights over that range as B operands straight from
// global memory: 16-byte loads, NT·U per lane in flight and the next step's
// issued before this step's MMAs (the first before x is staged). Blocks
// along y take the next K ranges, so that even N = 4096 gives every SM
// several blocks: each writes its f32 partial to a workspace and the last
// block of an n-range to arrive (a counter per n-range, reset by that
// block) sums the partials in a fixed order and stores bf16, so results
// are deterministic.
func (g GEMV) emitSplitK(NT, W, U int64, gpu cuda.GPU, entry string) string {
	rows := W * NT * 8
	kr, kblocks := g.splitKRange(rows, W, U, gpu.SMs)
	nblocks := (g.N + rows - 1) / rows
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: mma split-K n_tiles=%d warps=%d unroll=%d k_per_block=%d k_blocks=%d
constexpr int M = %d, N = %d, K = %d;
constexpr int NT = %d, W = %d, U = %d;
constexpr int KR = %d, KB = %d, NB = %d;  // k per block, K blocks (grid y), n blocks (grid x)
constexpr int ROWS = W * NT * 8;          // weight rows per block
constexpr int XS = KR + 32;               // x's row stride in shared memory
`, g.Name(), NT, W, U, kr, kblocks, g.M, g.N, g.K, NT, W, U, kr, kblocks, nblocks)
	b.WriteString(mmaHelper)
	b.WriteString(`
// load_w loads step c0 (k offset in the block's range) of the warp's tiles:
// lane (g, t) takes 8 consecutive k of row g of each tile per 32-wide chunk.
__device__ __forceinline__ void load_w(const __nv_bfloat16 *__restrict__ w, int n0, int kbeg, int c0, int g, int t,
    uint4 (&wv)[NT][U]) {
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int n = n0 + j * 8 + g, k = kbeg + c0 + u * 32 + t * 8;
      wv[j][u] = make_uint4(0, 0, 0, 0);
      if (k < K && k < kbeg + KR && n < N) wv[j][u] = __ldcs(reinterpret_cast<const uint4 *>(w + (size_t)n * K + k));
    }
}

__global__ void __launch_bounds__(W * 32) gemv_splitk(const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out, float *__restrict__ ws,
    unsigned *__restrict__ count) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;  // fragment row, column pair
  const int kbeg = blockIdx.y * KR, klen = min(K - kbeg, KR);
  const int n0 = blockIdx.x * ROWS + warp * NT * 8;
  uint4 wv[NT][U];
  load_w(w, n0, kbeg, 0, g, t, wv);
  __shared__ __align__(16) __nv_bfloat16 xs[M][XS];
  for (int i = threadIdx.x; i < M * (KR / 8); i += W * 32) {
    const int m = i / (KR / 8), k = (i % (KR / 8)) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (k < klen) v = __ldg(reinterpret_cast<const uint4 *>(x + (size_t)m * K + kbeg + k));
    *reinterpret_cast<uint4 *>(&xs[m][k]) = v;
  }
  __syncthreads();
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  for (int c0 = 0; c0 < klen; c0 += 32 * U) {
    uint4 wn[NT][U];
    load_w(w, n0, kbeg, c0 + 32 * U, g, t, wn);
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int k = c0 + u * 32 + t * 8;
      uint4 xa = make_uint4(0, 0, 0, 0), xb = make_uint4(0, 0, 0, 0);
      if (g < M) xa = *reinterpret_cast<const uint4 *>(&xs[g][k]);
      if (g + 8 < M) xb = *reinterpret_cast<const uint4 *>(&xs[g + 8][k]);
#pragma unroll
      for (int j = 0; j < NT; j++) {
        mma(acc[j], xa.x, xb.x, xa.y, xb.y, wv[j][u].x, wv[j][u].y);
        mma(acc[j], xa.z, xb.z, xa.w, xb.w, wv[j][u].z, wv[j][u].w);
      }
    }
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int u = 0; u < U; u++) wv[j][u] = wn[j][u];
  }
  // acc[j]: rows g and g+8, columns 2t and 2t+1 of tile j.
#pragma unroll
  for (int j = 0; j < NT; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int m = g + (i >> 1) * 8, n = n0 + j * 8 + 2 * t + (i & 1);
      if (m < M && n < N) {
        if (KB == 1) out[(size_t)m * N + n] = __float2bfloat16(acc[j][i]);
        else ws[((size_t)blockIdx.y * M + m) * N + n] = acc[j][i];
      }
    }
`)
	b.WriteString(splitKReduce)
	b.WriteString(workspaceHelper)
	fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  // K-block partials, then a zeroed counter per n block.
  const size_t nws = KB > 1 ? (size_t)KB * M * N : 0;
  float *scratch = nullptr;
  if (KB > 1) {
    cudaError_t e = workspace(sizeof(float) * nws, sizeof(unsigned) * NB, (void **)&scratch);
    if (e != cudaSuccess) return (int)e;
  }
  gemv_splitk<<<dim3(NB, KB), W * 32, 0, cudaStreamLegacy>>>((const __nv_bfloat16 *)bufs[0], (const __nv_bfloat16 *)bufs[1],
      (__nv_bfloat16 *)bufs[2], scratch, scratch ? (unsigned *)(scratch + nws) : nullptr);
%s}
`, entry, launchCheck)
	return b.String()
}

// ringKBlocks is the number of K blocks the ring path aims at: the fewest
// that give the grid ringWarpsPerSM warps per SM (ringSplit then cuts K
// into whole sweeps of a block, 32·unroll·ksplit, so that each warp of a
// row group takes the same number of stages). Each warp keeps
// (stages−1)·unroll·(NT+2) 16-byte copies per lane in flight, so few warps
// per SM already cover the DRAM latency; every extra K block costs an f32
// partial of out per block and a longer fix-up.
func (g GEMV) ringKBlocks(rows, warps int64, sms int) int64 {
	nblocks := (g.N + rows - 1) / rows
	target := int64(max(sms, 1)) * ringWarpsPerSM
	return max(1, (target+nblocks*warps-1)/(nblocks*warps))
}

// ringSplit cuts K into about kblocks ranges of whole sweeps: the range
// and the number of K blocks that result.
func (g GEMV) ringSplit(sweep, kblocks int64) (kr, kb int64) {
	kr = ((g.K+kblocks-1)/kblocks + sweep - 1) / sweep * sweep
	return kr, (g.K + kr - 1) / kr
}

// ringWarpsPerSM is the ring path's occupancy target (see ringKBlocks): K
// is split only when the grid has fewer warps than the GPU has SMs. The
// last-block fix-up costs about 2 µs, more than the parallelism it buys:
// on the H100 at M = 16, N = 1024, K = 4096 (the default's 64 blocks of
// four warps) one K block took 9.25 µs, two 11.04, three (the earlier
// target of four warps per SM) 11.49 and four 11.14, cuBLAS 9.79; at
// N = 4096 four warps per SM already gave one K block.
const ringWarpsPerSM = 1

// emitRing is the cp.async ring path (mma=3): as in the split-K path,
// M ≤ 16 rows of x are one m16n8k16 A operand and each warp's NT 8-row
// tiles of weights are B operands, but each warp streams its rows of w and
// the matching 16 rows of x through a warp-private ring of PF stages in
// shared memory with cp.async: PF−1 stages stay in flight without holding
// registers, the copies read whole row segments (consecutive lanes,
// consecutive 16-byte pieces), only warp barriers order the ring, and x
// needs no staging before the first weights arrive. Rows and x past the
// shape are zero-filled by the copy itself. A block has G row groups of S warps; a group's warps
// take its stages round-robin (together they read each row contiguously)
// and are summed in a fixed order through shared memory. K blocks along y
// are summed by the last block of a row range, as in emitSplitK.
func (g GEMV) emitRing(NT, G, S, U, PF int64, sms int, entry string) string {
	rows := G * NT * 8
	kr, kblocks := g.ringSplit(32*U*S, g.ringKBlocks(rows, G*S, sms))
	nblocks := (g.N + rows - 1) / rows
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: cp.async ring n_tiles=%d groups=%d ksplit=%d unroll=%d stages=%d k_per_block=%d k_blocks=%d
constexpr int M = %d, N = %d, K = %d;
constexpr int NT = %d, G = %d, S = %d, U = %d, PF = %d;
constexpr int KR = %d, KB = %d, NB = %d;  // k per block, K blocks (grid y), n blocks (grid x)
constexpr int W = G * S;                  // warps per block
constexpr int ROWS = G * NT * 8;          // weight rows per block
constexpr int CPR = 4 * U;                // 16-byte pieces per row and stage (32U k)
constexpr int SWZ = CPR >= 8 ? 4 : 0;     // piece swizzle of odd rows (conflict-free reads)
constexpr int STAGE = (NT * 8 + 16) * CPR;  // 16-byte pieces per warp and stage: w rows, then x rows
constexpr int SMEM = W * PF * STAGE * 16;
`, g.Name(), NT, G, S, U, PF, kr, kblocks, g.M, g.N, g.K, NT, G, S, U, PF, kr, kblocks, nblocks)
	b.WriteString(mmaHelper)
	b.WriteString(`
// cp16 copies 16 bytes, or writes 16 zero bytes when !ok (nothing is read).
__device__ __forceinline__ void cp16(uint4 *smem, const void *gmem, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(smem)),
               "l"(gmem), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int P> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(P)); }

// at is piece c of row r in a stage: odd rows swap the halves of each
// 8-piece group, so that the fragment reads (rows g, g+1 of a quarter warp,
// pieces 4u…4u+3) hit distinct banks.
__device__ __forceinline__ int at(int r, int c) { return r * CPR + (c ^ ((r & 1) * SWZ)); }

// issue copies the stage at k0 (absolute): the warp's NT·8 rows of w and
// 16 rows of x (zeros past M), each row's 32U k as CPR 16-byte pieces.
// Consecutive lanes take consecutive pieces of a row, so each copy
// instruction reads whole 64U-byte row segments.
__device__ __forceinline__ void issue(uint4 *st, const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, int n0, int k0, int kend, int lane) {
#pragma unroll
  for (int i = 0; i < NT * U; i++) {
    const int p = i * 32 + lane, r = p / CPR, c = p % CPR, k = k0 + c * 8, n = n0 + r;
    const bool ok = k < kend && n < N;
    cp16(st + at(r, c), ok ? w + (size_t)n * K + k : w, ok);
  }
#pragma unroll
  for (int i = 0; i < 2 * U; i++) {
    const int p = i * 32 + lane, r = p / CPR, c = p % CPR, k = k0 + c * 8;
    const bool ok = k < kend && r < M;
    cp16(st + at(NT * 8 + r, c), ok ? x + (size_t)r * K + k : x, ok);
  }
}

__global__ void __launch_bounds__(W * 32) gemv_ring(const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out, float *__restrict__ ws,
    unsigned *__restrict__ count) {
  extern __shared__ uint4 smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;  // fragment row, column pair
  const int group = warp / S, part = warp % S;
  const int kbeg = blockIdx.y * KR, kend = min(K, kbeg + KR);
  const int n0 = blockIdx.x * ROWS + group * NT * 8;
  // Stage i of this warp starts at k = kbeg + (part + i·S)·32U.
  const int nst = (kend - kbeg + 32 * U - 1) / (32 * U);
  const int mine = nst > part ? (nst - part + S - 1) / S : 0;
  uint4 *ring = smem + warp * PF * STAGE;
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    if (p < mine) issue(ring + p * STAGE, x, w, n0, kbeg + (part + p * S) * 32 * U, kend, lane);
    cp_commit();
  }
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  int slot = 0;
  for (int i = 0; i < mine; i++) {
    // Refill the slot read last step; always commit a group (empty past
    // the end), so that all but the newest PF − 1 groups are this step's.
    // Lanes read each other's copies: the slot refilled here was read by
    // all lanes last step, and this step's copies land for all before use.
    const int nxt = i + PF - 1;
    __syncwarp();
    if (nxt < mine) issue(ring + (slot == 0 ? PF - 1 : slot - 1) * STAGE, x, w, n0, kbeg + (part + nxt * S) * 32 * U, kend, lane);
    cp_commit();
    cp_wait<PF - 1>();
    __syncwarp();
    const uint4 *st = ring + slot * STAGE;
    // Chunk u of lane (g, t) is piece 4u + t: k = 32u + 8t … +7 of its rows.
#pragma unroll
    for (int u = 0; u < U; u++) {
      const uint4 xa = st[at(NT * 8 + g, 4 * u + t)], xb = st[at(NT * 8 + g + 8, 4 * u + t)];
#pragma unroll
      for (int j = 0; j < NT; j++) {
        const uint4 wv = st[at(j * 8 + g, 4 * u + t)];
        mma(acc[j], xa.x, xb.x, xa.y, xb.y, wv.x, wv.y);
        mma(acc[j], xa.z, xb.z, xa.w, xb.w, wv.z, wv.w);
      }
    }
    slot = slot + 1 == PF ? 0 : slot + 1;
  }
  if (S > 1) {
    // The group's warps, summed in order through the (drained) ring.
    cp_wait<0>();
    __syncthreads();
    float *red = reinterpret_cast<float *>(smem);
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int i = 0; i < 4; i++) red[((warp * NT + j) * 4 + i) * 32 + lane] = acc[j][i];
    __syncthreads();
    if (part == 0) {
#pragma unroll
      for (int j = 0; j < NT; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
          float s = 0.f;
#pragma unroll
          for (int p = 0; p < S; p++) s += red[(((warp + p) * NT + j) * 4 + i) * 32 + lane];
          acc[j][i] = s;
        }
    }
  }
  // acc[j]: rows g and g+8, columns 2t and 2t+1 of tile j.
  if (part == 0) {
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int m = g + (i >> 1) * 8, n = n0 + j * 8 + 2 * t + (i & 1);
        if (m < M && n < N) {
          if (KB == 1) out[(size_t)m * N + n] = __float2bfloat16(acc[j][i]);
          else ws[((size_t)blockIdx.y * M + m) * N + n] = acc[j][i];
        }
      }
  }
`)
	b.WriteString(splitKReduce)
	b.WriteString(workspaceHelper)
	fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  static cudaError_t opt = cudaFuncSetAttribute(gemv_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM);
  if (opt != cudaSuccess) return (int)opt;
  const size_t nws = KB > 1 ? (size_t)KB * M * N : 0;
  float *scratch = nullptr;
  if (KB > 1) {
    cudaError_t e = workspace(sizeof(float) * nws, sizeof(unsigned) * NB, (void **)&scratch);
    if (e != cudaSuccess) return (int)e;
  }
  gemv_ring<<<dim3(NB, KB), W * 32, SMEM, cudaStreamLegacy>>>((const __nv_bfloat16 *)bufs[0],
      (const __nv_bfloat16 *)bufs[1], (__nv_bfloat16 *)bufs[2], scratch, scratch ? (unsigned *)(scratch + nws) : nullptr);
%s}
`, entry, launchCheck)
	return b.String()
}

// splitKReduce ends the tensor-core GEMV kernels (mma=2 and mma=3) once
// each K block has stored its partials in ws: the last K block of an
// n-range (counted in count, which it resets) sums them in a fixed order,
// so results do not depend on which block finishes last.
const splitKReduce = `  if (KB == 1) return;
  // The last K block of this n-range sums the partials.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(&count[blockIdx.x], 1u) == KB - 1;
    if (last) count[blockIdx.x] = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int i = threadIdx.x; i < M * ROWS; i += W * 32) {
    const int m = i / ROWS, n = blockIdx.x * ROWS + i % ROWS;
    if (n >= N) continue;
    float v = 0.f;
#pragma unroll 4
    for (int q = 0; q < KB; q++) v += __ldcg(ws + ((size_t)q * M + m) * N + n);
    out[(size_t)m * N + n] = __float2bfloat16(v);
  }
}
`

// workspaceHelper is the scratch of kernels that pass partial results
// between blocks (or launches): one allocation per device, made at the
// first call, its zeroed tail (counters that the kernel resets itself)
// following the data. Two launches never share it at the same time: the
// entries launch on the legacy default stream, which runs one kernel after
// another and waits for every other blocking stream of the device, so a
// launch finds the counters back at zero whichever host thread calls it.
const workspaceHelper = `
#include <mutex>
static cudaError_t workspace(size_t data, size_t zeroed, void **out) {
  static void *per_device[64];
  static std::mutex mu;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  if (dev < 0 || dev >= 64) return cudaErrorInvalidDevice;
  std::lock_guard<std::mutex> lock(mu);
  if (!per_device[dev]) {
    void *p = nullptr;
    if ((e = cudaMalloc(&p, data + zeroed)) != cudaSuccess) return e;
    if (zeroed && (e = cudaMemset((char *)p + data, 0, zeroed)) != cudaSuccess) return e;
    per_device[dev] = p;
  }
  *out = per_device[dev];
  return cudaSuccess;
}
`

// mmaHelper is mma.sync m16n8k16 with bf16 operands and f32 accumulators
// (c += a·b).
const mmaHelper = `
__device__ __forceinline__ void mma(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
`

// GEMVCuBLAS is the cuBLAS baseline of GEMV on the same buffers:
// cublasGemmEx in bf16 with f32 accumulation, as PyTorch calls it.
type GEMVCuBLAS struct{ GEMV }

func (c GEMVCuBLAS) Name() string {
	return strings.Replace(c.GEMV.Name(), "cuda_gemv", "cublas_gemv", 1)
}

func (GEMVCuBLAS) Space(s *schedule.Schedule, _ kernels.Hardware) error   { return nil }
func (GEMVCuBLAS) Default(s *schedule.Schedule, _ kernels.Hardware) error { return nil }
func (GEMVCuBLAS) LDFlags() []string                                      { return []string{"-lcublas"} }

// EmitCUDA calls cuBLAS. Row-major out[M,N] = x·wᵀ is column-major
// outᵀ[N,M] = (w viewed as K×N)ᵀ · (x viewed as K×M).
func (c GEMVCuBLAS) EmitCUDA(_ *schedule.Schedule, _ cuda.GPU, entry string) (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	return c.emit(entry)
}

// emit is the cuBLAS call for any M (GEMMCuBLAS shares it).
func (c GEMVCuBLAS) emit(entry string) (string, error) {
	return fmt.Sprintf(`#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <stdint.h>

// %s
static cublasHandle_t handle;

int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  if (!handle && cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) return 1;
  const float alpha = 1.f, beta = 0.f;
  cublasStatus_t st = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, %d, %d, %d, &alpha,
      bufs[1], CUDA_R_16BF, %d, bufs[0], CUDA_R_16BF, %d, &beta, bufs[2], CUDA_R_16BF, %d,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  return st == CUBLAS_STATUS_SUCCESS ? 0 : 100 + (int)st;
}
`, c.Name(), entry, c.N, c.M, c.K, c.K, c.K, c.N), nil
}
