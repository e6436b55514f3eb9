package cudakernels

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/target"
	"llmir/target/cuda"
)

// GEMM is the prefill linear layer in bf16, out[M, N] = x[M, K] · w[N, K]ᵀ
// for many tokens: compute-bound, on tensor cores, in one of two kernels
// (knob mma). mma=1 (any sm_80+ GPU): a block computes a BM×BN tile of out
// from a pipeline of BK-wide slices of x and w that cp.async copies from
// global to shared memory STAGES−1 slices ahead of the math; each warp owns
// a WM×WN sub-tile, reads its fragments with ldmatrix and multiplies them
// with mma.sync m16n8k16 (bf16 in, f32 accumulate); tails in M, N and K
// are zero-filled by cp.async's source size. mma=2 (sm_90: H100, H200):
// warpgroup MMA fed by TMA through an mbarrier ring (gemm_sm90.go), tails
// zero-filled by TMA. Any shape with K a multiple of 8 is valid.
type GEMM struct {
	M, N, K int64
}

// knobs is the design space. mma picks the instruction: 1 is mma.sync
// (any sm_80+ GPU), 2 warpgroup MMA with TMA (sm_90, gemm_sm90.go). For
// mma=1: the warp tile (wm × wn), the warp grid of a block (warps_m ×
// warps_n, so BM = wm·warps_m and BN = wn·warps_n) and the k slice bk. For
// mma=2: the block tile wg_m × wg_n (one consumer warpgroup for 64 rows,
// two above), k slice 64, and persist: 0 launches a block a tile, 1 a
// persistent block an SM that walks the tiles (the ring fills once a
// block), 2 the same with the last partial wave's tiles split along K
// (gemm_sm90.go); store: 1 writes the accumulators as bf16 pairs, 2 as
// 16-byte row chunks gathered across each quad of lanes (gemm_sm90.go).
// Both: the pipeline depth and the raster group
// (group_m tile rows sweep the n tiles together, for L2 reuse of w). The
// knobs one instruction ignores are pinned (see GEMM.pinned), and
// combinations that need more registers or shared memory than an SM has
// are refused by EmitCUDA: FromWorkload's kernels never sample them.
func (g GEMM) knobs() kernels.Knobs {
	return kernels.Knobs{
		{Name: "wm", Values: []int64{32, 64}},
		{Name: "wn", Values: []int64{32, 64}},
		{Name: "warps_m", Values: []int64{1, 2, 4}},
		{Name: "warps_n", Values: []int64{1, 2, 4}},
		{Name: "bk", Values: []int64{32, 64}},
		{Name: "stages", Values: []int64{2, 3, 4, 5, 6}},
		{Name: "group_m", Values: []int64{1, 8, 16}},
		{Name: "mma", Values: []int64{1, 2}},
		{Name: "wg_m", Values: []int64{64, 128, 256}},
		{Name: "wg_n", Values: []int64{64, 128, 256}},
		{Name: "persist", Values: []int64{0, 1, 2}},
		{Name: "store", Values: []int64{1, 2}},
	}
}

// Name is "cuda_gemm/M=…,N=…,K=…/bf16".
func (g GEMM) Name() string { return fmt.Sprintf("cuda_gemm/M=%d,N=%d,K=%d/bf16", g.M, g.N, g.K) }

func (g GEMM) check() error {
	if g.M < 1 || g.N < 1 || g.K < 8 || g.K%8 != 0 {
		return fmt.Errorf("gemm: shape M=%d N=%d K=%d (want K a multiple of 8)", g.M, g.N, g.K)
	}
	return nil
}

// Def declares x, w and out.
func (g GEMM) Def() (*schedule.Def, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	return schedule.NewTemplateDef("cuda_gemm", "out[m, n] = sum(k, x[m, k] * w[n, k]) in f32, stored as bf16",
		[]*schedule.Tensor{bf16Buf("x", g.M, g.K), bf16Buf("w", g.N, g.K)}, bf16Buf("out", g.M, g.N))
}

// Workload is llmir.linear on bf16 [M, K] × [N, K].
func (g GEMM) Workload() ir.Workload {
	return ir.Workload{
		Group:  []string{"llmir.linear"},
		Inputs: []ir.TensorSig{{Shape: []int64{g.M, g.K}, DType: "bf16"}, {Shape: []int64{g.N, g.K}, DType: "bf16"}},
		Output: []ir.TensorSig{{Shape: []int64{g.M, g.N}, DType: "bf16"}},
	}
}

func (g GEMM) Dims() []int64 { return nil }

// Fill makes x periodic (kernels.FillPeriodic), so that Reference computes
// kernels.PeriodRows rows of dot products (a 4096×28672×4096 reference
// would take minutes in Go); w stays random.
func (g GEMM) Fill(input string) func(rng *rand.Rand, v []float64) {
	if input != "x" {
		return nil
	}
	return kernels.FillPeriodic(int(g.K), func(rng *rand.Rand) float64 { return rng.Float64()*2 - 1 })
}

// Reference accumulates in float64; with periodic activations it computes
// the first kernels.PeriodRows rows and scales them (exact: powers of two).
func (g GEMM) Reference(in [][]float64) [][]float64 {
	x, w := in[0], in[1]
	M, N, K := int(g.M), int(g.N), int(g.K)
	rows := kernels.PeriodicRows(x, M, K)
	out := make([]float64, M*N)
	parallelRows(N, func(n int) {
		wr := w[n*K : (n+1)*K]
		for m := range rows {
			out[m*N+n] = target.Dot(x[m*K:(m+1)*K], wr)
		}
	})
	kernels.ExtendPeriodic(out, rows, M, N)
	return [][]float64{out}
}

func (g GEMM) FLOPs() float64 { return 2 * float64(g.M*g.N*g.K) }

// Bytes is the weights, activations and outputs, each once.
func (g GEMM) Bytes() float64 { return 2 * float64(g.N*g.K+g.M*g.K+g.M*g.N) }

func (g GEMM) Space(s *schedule.Schedule, _ kernels.Hardware) error { return g.knobs().Sample(s) }

// Default: from M = 128 on, the wgmma kernel with the largest block tile
// that still fills the SMs (GEMM.wgmmaDefault); below,
// the common mma.sync block of 128×128×32 with 8 warps (64×32 warp tiles)
// and a 3-stage pipeline in groups of 8 tile rows, the most frequent winner
// of the first H100 tune. A GPU without wgmma prints mma=2 points as that
// mma.sync block (kernels.Hardware does not carry the arch).
func (g GEMM) Default(s *schedule.Schedule, hw kernels.Hardware) error {
	if g.M >= 128 {
		return g.knobs().Choose(s, g.wgmmaDefault(hw.Threads))
	}
	return g.knobs().Choose(s, map[string]int64{"wm": 64, "wn": 32, "warps_m": 2, "warps_n": 4, "bk": 32, "stages": 3, "group_m": 8,
		"mma": 1, "wg_m": 64, "wg_n": 64, "store": 1})
}

// gemmMaxSmem is the shared memory a block may opt into on sm_80/sm_90
// (227 KiB on H100, 163 KiB on A100: the smaller keeps a schedule portable).
const gemmMaxSmem = 163 << 10

// EmitCUDA writes the kernel for the knobs in s.
func (g GEMM) EmitCUDA(s *schedule.Schedule, gpu cuda.GPU, entry string) (string, error) {
	if err := g.check(); err != nil {
		return "", err
	}
	k, err := knobsOf(g.knobs(), s)
	if err != nil {
		return "", err
	}
	if err := g.pinned(k); err != nil {
		return "", err
	}
	if k["mma"] == 2 {
		if hasWGMMA(gpu) {
			return g.emitWGMMA(k, entry)
		}
		for n, v := range gemmFallback {
			k[n] = v
		}
	}
	WM, WN, WGM, WGN, BK, ST, GM := k["wm"], k["wn"], k["warps_m"], k["warps_n"], k["bk"], k["stages"], k["group_m"]
	BM, BN, threads := WM*WGM, WN*WGN, 32*WGM*WGN
	// Accumulators plus fragments, addresses and loop state per thread.
	if regs := WM*WN/32 + 72; regs*threads > 65536 {
		return "", fmt.Errorf("gemm: %d warps of %d×%d tiles need ≈%d registers a thread, over the SM's 64 Ki for %d threads", WGM*WGN, WM, WN, regs, threads)
	}
	smem := ST * (BM + BN) * (BK + 8) * 2
	if smem > gemmMaxSmem {
		return "", fmt.Errorf("gemm: %d stages of %d×%d and %d×%d slices need %d bytes of shared memory (max %d)", ST, BM, BK, BN, BK, smem, gemmMaxSmem)
	}
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: block %dx%dx%d, warps %dx%d (warp tile %dx%d), %d stages, %d B shared, group_m %d
constexpr int M = %d, N = %d, K = %d;
constexpr int BM = %d, BN = %d, BK = %d, WM = %d, WN = %d, WARPS_M = %d, WARPS_N = %d, STAGES = %d, GROUP_M = %d;
constexpr int THREADS = 32 * WARPS_M * WARPS_N;
constexpr int LDS = BK + 8;              // padded row: ldmatrix rows hit distinct banks
constexpr int MT = WM / 16, NT = WN / 8; // mma tiles per warp
constexpr int KT = (K + BK - 1) / BK;    // k slices
constexpr int SMEM = STAGES * (BM + BN) * LDS * 2;
`, g.Name(), BM, BN, BK, WGM, WGN, WM, WN, ST, smem, GM, g.M, g.N, g.K, BM, BN, BK, WM, WN, WGM, WGN, ST, GM)
	b.WriteString(gemmDevice)
	fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  static bool configured = false;
  if (!configured) {
    cudaError_t e = cudaFuncSetAttribute(gemm, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM);
    if (e != cudaSuccess) return (int)e;
    configured = true;
  }
  gemm<<<((M + BM - 1) / BM) * ((N + BN - 1) / BN), THREADS, SMEM>>>((const __nv_bfloat16 *)bufs[0], (const __nv_bfloat16 *)bufs[1], (__nv_bfloat16 *)bufs[2]);
%s}
`, entry, launchCheck)
	return b.String(), nil
}

// gemmDevice is the kernel body, parameterised by the constexprs above it.
const gemmDevice = tensorCoreHelpers + `// load_tile issues the cp.async copies of one k slice of ROWS rows of a
// [rows, K] matrix into a stage at shared address s. THREADS is a multiple
// of the chunks per row, so a thread's chunk column is fixed and its rows
// are RS apart: the trip count is a compile-time constant.
template <int ROWS>
__device__ __forceinline__ void load_tile(uint32_t s, const __nv_bfloat16 *__restrict__ g, int row0, int rows_left, int k0) {
  constexpr int CH = BK / 8, RS = THREADS / CH, IT = (ROWS + RS - 1) / RS;
  const int r0 = threadIdx.x / CH, c = (threadIdx.x % CH) * 8;
  const bool kin = k0 + c < K;
#pragma unroll
  for (int it = 0; it < IT; it++) {
    const int r = r0 + it * RS;
    if (ROWS % RS == 0 || r < ROWS) {
      const bool in = kin && r < rows_left;
      cp_async16(s + (r * LDS + c) * 2, g + (in ? (size_t)(row0 + r) * K + k0 + c : 0), in ? 16 : 0);
    }
  }
}

__global__ void __launch_bounds__(THREADS) gemm(const __nv_bfloat16 *__restrict__ x,
    const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out) {
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t sA = smem_addr(smem), sB = sA + STAGES * BM * LDS * 2;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm0 = (warp / WARPS_N) * WM, wn0 = (warp % WARPS_N) * WN;
  // Grouped raster: GROUP_M consecutive tile rows sweep the n tiles
  // together, so a tile of w is read from HBM once per group, not once
  // per tile row (w is up to 235 MB, the L2 50 MB).
  constexpr int TILES_M = (M + BM - 1) / BM, TILES_N = (N + BN - 1) / BN;
  const int per_group = GROUP_M * TILES_N, first = (blockIdx.x / per_group) * GROUP_M;
  const int rows = min(TILES_M - first, GROUP_M), in_group = blockIdx.x % per_group;
  const int m0 = (first + in_group % rows) * BM, n0 = (in_group / rows) * BN;

  float c[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++) c[i][j][0] = c[i][j][1] = c[i][j][2] = c[i][j][3] = 0.f;

  // Prologue: STAGES-1 slices in flight; one commit group per slice, empty
  // past the end, so wait_group counts stay uniform.
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < KT) {
      load_tile<BM>(sA + s * BM * LDS * 2, x, m0, M - m0, s * BK);
      load_tile<BN>(sB + s * BN * LDS * 2, w, n0, N - n0, s * BK);
    }
    cp_async_commit();
  }
  // ldmatrix row addresses of this lane: A rows lane%16, k half lane/16;
  // B (x4: two n tiles) rows (lane/16)*8 + lane%8, k half (lane/8)%2.
  const uint32_t a_lane = sA + ((wm0 + lane % 16) * LDS + (lane / 16) * 8) * 2;
  const uint32_t b_lane = sB + ((wn0 + (lane / 16) * 8 + lane % 8) * LDS + ((lane / 8) % 2) * 8) * 2;
  int rd = 0, wr = STAGES - 1; // stage read now, stage written next
  for (int kt = 0; kt < KT; kt++) {
    cp_async_wait<STAGES - 2>();
    __syncthreads(); // slice kt landed for all; stage wr (read at kt-1) is free
    if (kt + STAGES - 1 < KT) {
      load_tile<BM>(sA + wr * BM * LDS * 2, x, m0, M - m0, (kt + STAGES - 1) * BK);
      load_tile<BN>(sB + wr * BN * LDS * 2, w, n0, N - n0, (kt + STAGES - 1) * BK);
    }
    cp_async_commit();
    const uint32_t sa = a_lane + rd * BM * LDS * 2, sb = b_lane + rd * BN * LDS * 2;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t a[MT][4], bf[NT][2];
#pragma unroll
      for (int i = 0; i < MT; i++) ldmatrix_x4(a[i], sa + (i * 16 * LDS + kk) * 2);
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        uint32_t r[4];
        ldmatrix_x4(r, sb + (j * 8 * LDS + kk) * 2);
        bf[j][0] = r[0]; bf[j][1] = r[1]; bf[j + 1][0] = r[2]; bf[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++) mma(c[i][j], a[i], bf[j]);
    }
    rd = rd + 1 == STAGES ? 0 : rd + 1;
    wr = wr + 1 == STAGES ? 0 : wr + 1;
  }
  cp_async_wait<0>();

  // c[i][j]: rows g and g+8, columns 2t and 2t+1 of the 16×8 tile (i, j).
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int m = m0 + wm0 + i * 16 + g + h * 8, n = n0 + wn0 + j * 8 + 2 * t;
        if (m >= M) continue;
        if ((N % 2) == 0 && n + 1 < N) {
          *reinterpret_cast<__nv_bfloat162 *>(out + (size_t)m * N + n) = __floats2bfloat162_rn(c[i][j][2 * h], c[i][j][2 * h + 1]);
        } else {
          if (n < N) out[(size_t)m * N + n] = __float2bfloat16(c[i][j][2 * h]);
          if (n + 1 < N) out[(size_t)m * N + n + 1] = __float2bfloat16(c[i][j][2 * h + 1]);
        }
      }
}
`

// GEMMCuBLAS is the cuBLAS baseline of GEMM on the same buffers.
type GEMMCuBLAS struct{ GEMM }

func (c GEMMCuBLAS) Name() string {
	return strings.Replace(c.GEMM.Name(), "cuda_gemm", "cublas_gemm", 1)
}

func (GEMMCuBLAS) Space(s *schedule.Schedule, _ kernels.Hardware) error   { return nil }
func (GEMMCuBLAS) Default(s *schedule.Schedule, _ kernels.Hardware) error { return nil }
func (GEMMCuBLAS) LDFlags() []string                                      { return []string{"-lcublas"} }

// EmitCUDA calls cublasGemmEx like GEMVCuBLAS.
func (c GEMMCuBLAS) EmitCUDA(s *schedule.Schedule, gpu cuda.GPU, entry string) (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	src, err := GEMVCuBLAS{GEMV{M: c.M, N: c.N, K: c.K}}.emit(entry)
	return strings.Replace(src, "// "+GEMVCuBLAS{GEMV{M: c.M, N: c.N, K: c.K}}.Name(), "// "+c.Name(), 1), err
}
