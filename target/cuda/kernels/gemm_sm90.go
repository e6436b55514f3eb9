package cudakernels

import (
	"fmt"
	"strings"

	"llmir/target/cuda"
)

// The Hopper path of GEMM (knob mma=2): warpgroup MMA reading both
// operands from shared memory. A block of 128·(consumers+1) threads has one
// producer warpgroup, whose first thread issues TMA copies
// (cp.async.bulk.tensor) of 64-wide k slices of x and w into a ring of
// STAGES stages, and one or two consumer warpgroups that each multiply a
// WG_ROWS×BN slab of the block tile with wgmma.mma_async m64nBNk16. TMA
// writes the slices in the 128-byte swizzle the wgmma descriptors name
// (one 128-byte row of bf16 per k slice, so a slice is exactly one swizzle
// row), and zero-fills what lies outside the matrices: tails in M, N and K
// need no code. Full and empty mbarriers per stage hand the ring between
// the producer and the consumers.
//
// The tensor maps (CUtensorMap) are encoded on the host through
// cuTensorMapEncodeTiled, reached with cudaGetDriverEntryPointByVersion so
// that candidates need no -lcuda, and cached per buffer address like the
// shared-memory attribute.

// wgmmaMaxSmem is the shared memory a block may opt into on sm_90
// (227 KiB); the wgmma path runs only there, so it need not stay portable.
const wgmmaMaxSmem = 227 << 10

// hasWGMMA tells whether gpu runs wgmma and TMA: the sm_90 class (H100,
// H200), which the builder compiles for sm_90a.
func hasWGMMA(gpu cuda.GPU) bool { return gpu.Arch == "sm_90" || gpu.Arch == "sm_90a" }

// gemmFallback is the mma.sync tile an mma=2 point prints on a GPU without
// wgmma (the former default): the rule-based default cannot see the arch
// (kernels.Hardware has none), so it must still run everywhere.
var gemmFallback = map[string]int64{"wm": 64, "wn": 32, "warps_m": 2, "warps_n": 4, "bk": 32, "stages": 3}

// pinned is the value each mma.sync knob must keep at mma=2 and each wgmma
// knob at mma=1: a knob that does not change the kernel is fixed, so
// distinct valid points are distinct kernels and the tuner never measures
// one twice.
func (g GEMM) pinned(k map[string]int64) error {
	fixed := map[string]int64{"wg_m": 64, "wg_n": 64, "persist": 0, "store": 1}
	if k["mma"] == 2 {
		fixed = map[string]int64{"wm": 32, "wn": 32, "warps_m": 1, "warps_n": 1, "bk": 64}
	}
	for _, kn := range g.knobs() {
		if v, ok := fixed[kn.Name]; ok && k[kn.Name] != v {
			return fmt.Errorf("gemm: mma=%d ignores %s (pinned to %d, got %d)", k["mma"], kn.Name, v, k[kn.Name])
		}
	}
	return nil
}

// emitWGMMA writes the Hopper kernel for knob values k.
func (g GEMM) emitWGMMA(k map[string]int64, entry string) (string, error) {
	BM, BN, ST, GM := k["wg_m"], k["wg_n"], k["stages"], k["group_m"]
	consumers := int64(2)
	if BM == 64 {
		consumers = 1
	}
	rows := BM / consumers // a consumer's slab: 64 or 128 rows (one or two m64 wgmmas)
	// A block of 384 threads at one block an SM may use 168 registers a
	// thread; 128 accumulators (the 128×256 tile) compiled to 154 with no
	// spills on nvcc 13, so 160 accumulators is the cap.
	if regs := rows / 64 * BN / 2; regs > 160 {
		return "", fmt.Errorf("gemm: a consumer's %d×%d slab needs %d accumulator registers a thread (max 160)", rows, BN, regs)
	}
	stage := (BM + BN) * 64 * 2
	smem := ST*stage + 1024 + 2*ST*8
	if smem > wgmmaMaxSmem {
		return "", fmt.Errorf("gemm: %d stages of %d×64 and %d×64 slices need %d bytes of shared memory (max %d)", ST, BM, BN, smem, wgmmaMaxSmem)
	}
	var b strings.Builder
	b.WriteString(prelude)
	b.WriteString("#include <cuda.h>\n")
	fmt.Fprintf(&b, `
// %s: wgmma block %dx%dx64 (%d consumer warpgroups of %d rows, TMA producer), %d stages, %d B shared, group_m %d
constexpr int M = %d, N = %d, K = %d;
constexpr int BM = %d, BN = %d, BK = 64, STAGES = %d, GROUP_M = %d, CONSUMERS = %d;
constexpr int WG_ROWS = BM / CONSUMERS, MW = WG_ROWS / 64; // m64 wgmmas per consumer and k step
constexpr int THREADS = 128 * (CONSUMERS + 1);
constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
constexpr int KT = (K + BK - 1) / BK;
constexpr int SMEM = %d; // stages, 1024 B of alignment slack, full and empty barriers
`, g.Name(), BM, BN, consumers, rows, ST, smem, GM, g.M, g.N, g.K, BM, BN, ST, GM, consumers, smem)
	b.WriteString(wgmmaDevice)
	b.WriteString(wgmmaInstr(BN))
	b.WriteString(wgmmaTile)
	if k["store"] == 2 {
		b.WriteString(wgmmaStoreChunks)
	} else {
		b.WriteString(wgmmaStorePairs)
	}
	launch := "  gemm<<<TILES, THREADS, SMEM>>>(ta, tb, (__nv_bfloat16 *)bufs[2]);\n"
	if p := k["persist"]; p > 0 {
		fmt.Fprintf(&b, "constexpr bool SPLIT = %v; // the last partial wave's tiles split along K\n", p == 2)
		b.WriteString(workspaceHelper)
		b.WriteString(wgmmaPersistKernel)
		launch = wgmmaPersistLaunch
	} else {
		b.WriteString(wgmmaKernel)
	}
	fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  static bool configured = false;
  static CUtensorMap ta, tb;
  static const void *pa = nullptr, *pb = nullptr;
  if (!configured) {
    cudaError_t e = cudaFuncSetAttribute(gemm, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM);
    if (e != cudaSuccess) return (int)e;
    configured = true;
  }
  // A tensor map holds its buffer's address: encode again for new buffers.
  if (bufs[0] != pa) {
    if (int e = make_map(&ta, bufs[0], M, BM)) return e;
    pa = bufs[0];
  }
  if (bufs[1] != pb) {
    if (int e = make_map(&tb, bufs[1], N, BN)) return e;
    pb = bufs[1];
  }
%s%s}
`, entry, launch, launchCheck)
	return b.String(), nil
}

// wgmmaInstr is the wgmma of one m64nBNk16 step: BN/2 f32 accumulators a
// thread, both operands from shared memory through descriptors, scale-d 1
// (the accumulators start at zero), no transposes (x and w are K-major).
func wgmmaInstr(bn int64) string {
	n := int(bn / 2)
	var regs, outs []string
	for i := range n {
		regs = append(regs, fmt.Sprintf("%%%d", i))
		outs = append(outs, fmt.Sprintf(`"+f"(d[%d])`, i))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `
// One m64n%dk16 step: d (%d floats a thread) += A(desc a) · B(desc b)ᵀ.
__device__ __forceinline__ void wgmma(float *d, uint64_t a, uint64_t b) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n%dk16.f32.bf16.bf16 {%s}, %%%d, %%%d, p, 1, 1, 0, 0;\n}\n"
               : %s
               : "l"(a), "l"(b));
}

// The same step with d scaled by scale (0 or 1) first: scale 0 starts a
// tile's sum with no instruction but wgmmas defining the accumulators
// (zeroing them with moves serialized the persistent kernel's wgmmas).
__device__ __forceinline__ void wgmma_scaled(float *d, uint64_t a, uint64_t b, int scale) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %%%d, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n%dk16.f32.bf16.bf16 {%s}, %%%d, %%%d, p, 1, 1, 0, 0;\n}\n"
               : %s
               : "l"(a), "l"(b), "r"(scale));
}
`, bn, n, bn, strings.Join(regs, ","), n, n+1, strings.Join(outs, ", "),
		n+2, bn, strings.Join(regs, ","), n, n+1, strings.Join(outs, ", "))
	return b.String()
}

// wgmmaDevice holds the host-side tensor-map encoder and the device
// helpers (mbarriers, TMA, wgmma fences and descriptors).
const wgmmaDevice = `
// cuTensorMapEncodeTiled's signature (cuda.h declares the types; the
// function comes from the driver at run time, so no -lcuda).
typedef CUresult (*encode_tiled_t)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
    const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
    CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// make_map describes a [rows, K] bf16 matrix to TMA as boxes of box_rows
// rows × 64 k (128 bytes: one 128-byte swizzle row); boxes reaching past
// the matrix are zero-filled. Returns 0 or a non-zero error code.
static int make_map(CUtensorMap *map, const void *ptr, uint64_t rows, uint32_t box_rows) {
  static encode_tiled_t encode = nullptr;
  if (!encode) {
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult q;
    cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q);
    if (e != cudaSuccess) return (int)e;
    if (q != cudaDriverEntryPointSuccess || fn == nullptr) return 1000;
    encode = (encode_tiled_t)fn;
  }
  const cuuint64_t dims[2] = {(cuuint64_t)K, rows};
  const cuuint64_t strides[1] = {(cuuint64_t)K * 2};
  const cuuint32_t box[2] = {64, box_rows};
  const cuuint32_t step[2] = {1, 1};
  CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void *>(ptr), dims, strides, box, step,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? 0 : 1000 + (int)r;
}

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, int parity) {
  asm volatile("{\n.reg .pred p;\nWAIT_%=:\n"
               "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
               "@!p bra WAIT_%=;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}

// One box of a tensor map into shared memory at dst; completion counts
// its bytes on bar. c0 is the k coordinate, c1 the row.
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap *map, uint32_t bar, int c0, int c1) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n"
               ::"r"(dst), "l"(map), "r"(bar), "r"(c0), "r"(c1) : "memory");
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N_> __device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N_) : "memory"); }

// Shared-memory matrix descriptor of a K-major tile in the 128-byte
// swizzle: start address >> 4, leading offset 16 B (unused when swizzled),
// stride 1024 B between groups of 8 rows, swizzle mode 1 (128 B).
__device__ __forceinline__ uint64_t desc(uint32_t addr) {
  return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}
`

// wgmmaTile is what both wgmma kernels (one tile a block, and the
// persistent one) share after the constexprs: the stage ring's layout and
// barriers, where a tile lies and how a consumer stores it.
const wgmmaTile = `
// Ring is the stage ring in dynamic shared memory: STAGES stages of a's
// boxes (sA) and of w's (sB) from a 1024-byte boundary — the swizzle
// pattern repeats every 8 rows of 128 bytes and the descriptors assume it
// starts there — then a full and an empty barrier per stage.
struct Ring {
  uint32_t sA, sB, full, empty;
};

// ring_setup lays the ring out and initialises its barriers before any
// thread of the block uses them: a stage is full on the producer's
// arrival with its bytes, empty once every consumer released it.
__device__ __forceinline__ Ring ring_setup(unsigned char *smem) {
  const uint32_t base = (smem_addr(smem) + 1023) & ~1023u;
  const Ring r = {base, base + STAGES * A_BYTES, base + STAGES * STAGE_BYTES, base + STAGES * STAGE_BYTES + STAGES * 8};
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; s++) {
      mbar_init(r.full + 8 * s, 1);
      mbar_init(r.empty + 8 * s, CONSUMERS);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  return r;
}

// Grouped raster, as in the mma.sync kernel: GROUP_M tile rows sweep the
// n tiles together, so a tile of w is read from HBM once per group.
constexpr int TILES_M = (M + BM - 1) / BM, TILES_N = (N + BN - 1) / BN, TILES = TILES_M * TILES_N;
__device__ __forceinline__ void tile_origin(int t, int &m0, int &n0) {
  const int per_group = GROUP_M * TILES_N, first = (t / per_group) * GROUP_M;
  const int rows = min(TILES_M - first, GROUP_M), in_group = t % per_group;
  m0 = (first + in_group % rows) * BM;
  n0 = (in_group / rows) * BN;
}

// store_pair writes out[m, n] and out[m, n + 1] as bf16, what lies inside.
__device__ __forceinline__ void store_pair(__nv_bfloat16 *__restrict__ out, int m, int n, float v0, float v1) {
  if (m >= M) return;
  if ((N % 2) == 0 && n + 1 < N) {
    *reinterpret_cast<__nv_bfloat162 *>(out + (size_t)m * N + n) = __floats2bfloat162_rn(v0, v1);
  } else {
    if (n < N) out[(size_t)m * N + n] = __float2bfloat16(v0);
    if (n + 1 < N) out[(size_t)m * N + n + 1] = __float2bfloat16(v1);
  }
}

`

// wgmmaStorePairs is store_slab for store=1: each thread writes its
// accumulators as they lie, two columns at a time.
const wgmmaStorePairs = `// store_slab writes a consumer's accumulators (the WG_ROWS×BN slab at
// row m0, column n0) as bf16. d[i][4j + 2h + e] is row 16·warp + lane/4 +
// 8h of the i-th m64 tile, column 8j + 2(lane%4) + e.
__device__ __forceinline__ void store_slab(const float (&d)[MW][BN / 2], __nv_bfloat16 *__restrict__ out, int m0, int n0, int tid) {
  const int warp = tid / 32, lane = tid % 32;
#pragma unroll
  for (int i = 0; i < MW; i++)
#pragma unroll
    for (int j = 0; j < BN / 8; j++)
#pragma unroll
      for (int h = 0; h < 2; h++)
        store_pair(out, m0 + i * 64 + warp * 16 + lane / 4 + h * 8, n0 + j * 8 + 2 * (lane % 4), d[i][4 * j + 2 * h], d[i][4 * j + 2 * h + 1]);
}
`

// wgmmaStoreChunks is store_slab for store=2. In the accumulator layout
// the four lanes of a quad hold the eight columns of a row's 16-byte
// chunk two each, so store=1's warp store writes 8 rows × 16 bytes: half
// sectors, two stores a sector. Here a 4×4 transpose over the quad (three
// xor shuffles) hands each lane a whole chunk of four such groups, and a
// warp store writes 8 rows × 64 contiguous bytes. On the H100, with the
// stores removed altogether (stores kept behind a branch never taken)
// 1024×4096×4096 at 128×256 ran 44.9 µs instead of 53.3 (cuBLAS 46.6, in
// a standalone driver with random data after a 128 MiB flush): store=1's
// epilogue took a sixth of the kernel.
const wgmmaStoreChunks = `__device__ __forceinline__ uint32_t bf16x2_bits(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t *>(&v);
}

// store_chunk writes out[m, n … n+7] from four bf16 pairs, what lies inside.
__device__ __forceinline__ void store_chunk(__nv_bfloat16 *__restrict__ out, int m, int n, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
  if (m >= M) return;
  if ((N % 8) == 0 && n + 8 <= N) {
    *reinterpret_cast<uint4 *>(out + (size_t)m * N + n) = make_uint4(c0, c1, c2, c3);
    return;
  }
  const uint32_t c[4] = {c0, c1, c2, c3};
#pragma unroll
  for (int e = 0; e < 8; e++)
    if (n + e < N) out[(size_t)m * N + n + e] = __ushort_as_bfloat16((unsigned short)(c[e / 2] >> (16 * (e % 2))));
}

// store_slab writes a consumer's accumulators (the WG_ROWS×BN slab at
// row m0, column n0) as bf16 in 16-byte chunks. d[i][4j + 2h + e] is row
// 16·warp + lane/4 + 8h of the i-th m64 tile, column 8j + 2q + e (q =
// lane%4): lane q holds pair q of the chunks j. For four chunks 4jj + s,
// round t sends pair q of chunk 4jj + (q^t) to lane q^t and receives
// pair q^t of chunk 4jj + q, so lane q ends with all of chunk 4jj + q.
__device__ __forceinline__ void store_slab(const float (&d)[MW][BN / 2], __nv_bfloat16 *__restrict__ out, int m0, int n0, int tid) {
  const int warp = tid / 32, lane = tid % 32, q = lane % 4;
#pragma unroll
  for (int i = 0; i < MW; i++)
#pragma unroll
    for (int jj = 0; jj < BN / 32; jj++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        uint32_t w[4];
#pragma unroll
        for (int s = 0; s < 4; s++) w[s] = bf16x2_bits(d[i][4 * (4 * jj + s) + 2 * h], d[i][4 * (4 * jj + s) + 2 * h + 1]);
        uint32_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
#pragma unroll
        for (int t = 0; t < 4; t++) {
          const int p = q ^ t;
          const uint32_t send = (p & 2) ? ((p & 1) ? w[3] : w[2]) : ((p & 1) ? w[1] : w[0]);
          const uint32_t r = t == 0 ? send : __shfl_xor_sync(0xffffffffu, send, t);
          c0 = p == 0 ? r : c0;
          c1 = p == 1 ? r : c1;
          c2 = p == 2 ? r : c2;
          c3 = p == 3 ? r : c3;
        }
        store_chunk(out, m0 + i * 64 + warp * 16 + lane / 4 + h * 8, n0 + (4 * jj + q) * 8, c0, c1, c2, c3);
      }
}
`

// wgmmaKernel is the kernel body, parameterised by the constexprs above it.
const wgmmaKernel = `
__global__ void __launch_bounds__(THREADS, 1) gemm(const __grid_constant__ CUtensorMap ta,
    const __grid_constant__ CUtensorMap tb, __nv_bfloat16 *__restrict__ out) {
  extern __shared__ unsigned char smem[];
  const Ring ring = ring_setup(smem);
  const uint32_t sA = ring.sA, sB = ring.sB, full = ring.full, empty = ring.empty;
  const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
  int m0, n0;
  tile_origin(blockIdx.x, m0, n0);

  if (wg == 0) {
    // Producer: one thread keeps the ring full. The n-th use of a stage
    // waits until the consumers released its (n-1)-th.
    if (tid == 0) {
      for (int kt = 0; kt < KT; kt++) {
        const int s = kt % STAGES;
        if (kt >= STAGES) mbar_wait(empty + 8 * s, ((kt / STAGES) + 1) & 1);
        mbar_expect_tx(full + 8 * s, STAGE_BYTES);
        tma_load(sA + s * A_BYTES, &ta, full + 8 * s, kt * BK, m0);
        tma_load(sB + s * B_BYTES, &tb, full + 8 * s, kt * BK, n0);
      }
    }
    return;
  }

  const int c = wg - 1;
  float d[MW][BN / 2];
#pragma unroll
  for (int i = 0; i < MW; i++)
#pragma unroll
    for (int j = 0; j < BN / 2; j++) d[i][j] = 0.f;
  for (int kt = 0; kt < KT; kt++) {
    const int s = kt % STAGES;
    mbar_wait(full + 8 * s, (kt / STAGES) & 1);
    const uint32_t a = sA + s * A_BYTES + c * WG_ROWS * 128, b = sB + s * B_BYTES;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++)
#pragma unroll
      for (int i = 0; i < MW; i++) wgmma(d[i], desc(a + i * 64 * 128 + kk * 32), desc(b + kk * 32));
    wgmma_commit();
    // One group stays in flight; the one before it is done, so its stage
    // goes back to the producer.
    wgmma_wait<1>();
    if (kt > 0 && tid == 0) mbar_arrive(empty + 8 * ((kt - 1) % STAGES));
  }
  wgmma_wait<0>();

  store_slab(d, out, m0 + c * WG_ROWS, n0, tid);
}
`

// wgmmaPersistKernel is the persistent wgmma kernel (persist=1, 2): a
// grid of at most one block an SM (SMS, the launch's argument) walks a
// list of units (a tile's k slices [kb, ke)) round-robin, so the producer
// fills the ring with the next unit's slices while the consumers still
// multiply or store the last one: the pipeline fills once a block, not
// once a tile. The units are the tiles whole, in raster order; with
// persist=2 the TILES % SMS tiles of the last partial wave are split along
// K into P = ⌊SMS / rem⌋ parts (at most KT, at least 2), so that wave
// takes 1/P of a tile's time instead of a whole one. All the parts of a
// tile run in the same round, and every block starts its part of the k
// range at the same slice as its neighbours' parts, so the w and x panels
// that neighbouring tiles share are read from L2 at about the same time.
//
// A part stores its f32 partial slab (one workspace slot per part and
// consumer, in fragment order: 512 contiguous bytes a warp and store) and
// counts itself in its tile's counter; the last to arrive sums the P
// partials in part order (its own from registers: the result does not
// depend on the order of arrival), stores the tile and resets the counter
// for the next launch. No block ever waits on another.
//
// The accumulators start at the unit's first wgmma (scale-d 0), not from
// zeroing moves: with the moves, ptxas (nvcc 13.0) reported "wgmma.mma_async
// instructions are serialized due to non wgmma instructions defining
// accumulator registers" for persist=2 and the kernel ran 5–8% slower than
// persist=1 where both split nothing; with scale-d 0 the warning is gone
// (168 registers) and they run alike.
//
// Tried first, and dropped: stream-K proper (a persistent grid sharing the
// k slices of all tiles but whole waves evenly, each block's range walked
// backwards so that a tile's owner only waits on lower blocks). On the
// H100 (`llmir cuda bench --suite prefill --samples 0 --knobs
// 'stream_k=1;…'`, side by side with the default in one call) it gained
// only at M=1024, N=14336, K=4096 (190.8 µs against 199.3, cuBLAS 154.3)
// and lost up to 45% elsewhere (M=512, N=14336: 146.3 against 101.5;
// M=4096, N=4096, K=14336: 904 against 626): blocks whose ranges start at
// unrelated k slices no longer share the panels they read through L2, so
// the split tiles ran from HBM.
const wgmmaPersistKernel = `
// Units: the whole tiles (DP of them), then the parts of the split ones.
struct Units {
  int dp, parts, count;
};
__device__ __forceinline__ Units units(int sms) {
  const int rem = SPLIT ? TILES % sms : 0;
  const int p = rem > 0 ? min(sms / max(rem, 1), KT) : 1;
  if (p < 2) return Units{TILES, 1, TILES};
  return Units{TILES - rem, p, TILES - rem + rem * p};
}

// for_each_unit calls f(tile, kb, ke, part) for this block's units in the
// order the ring carries them; part is the index of a split tile's part
// among all parts (-1 for a whole tile).
template <typename F>
__device__ __forceinline__ void for_each_unit(int sms, F &&f) {
  const Units u = units(sms);
  for (int i = blockIdx.x; i < u.count; i += gridDim.x) {
    if (i < u.dp) {
      f(i, 0, KT, -1);
    } else {
      const int v = i - u.dp, t = u.dp + v / u.parts, p = v % u.parts;
      f(t, p * KT / u.parts, (p + 1) * KT / u.parts, v);
    }
  }
}

// A consumer warpgroup's own barrier (id 1 + c; 0 is __syncthreads).
__device__ __forceinline__ void consumer_sync(int c) { asm volatile("bar.sync %0, 128;\n" ::"r"(1 + c) : "memory"); }

__global__ void __launch_bounds__(THREADS, 1) gemm(const __grid_constant__ CUtensorMap ta,
    const __grid_constant__ CUtensorMap tb, __nv_bfloat16 *__restrict__ out, int sms, float *__restrict__ ws,
    unsigned *__restrict__ count) {
  extern __shared__ unsigned char smem[];
  __shared__ int last[CONSUMERS];
  const Ring ring = ring_setup(smem);
  const uint32_t sA = ring.sA, sB = ring.sB, full = ring.full, empty = ring.empty;
  const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
  const CUtensorMap *pa = &ta, *pb = &tb;

  // The ring runs on through the units: slice it (counted over all of
  // this block's units) uses stage it % STAGES for the (it / STAGES)-th time.
  int it = 0;
  if (wg == 0) {
    if (tid == 0) {
      for_each_unit(sms, [&](int t, int kb, int ke, int) {
        int m0, n0;
        tile_origin(t, m0, n0);
        for (int kt = kb; kt < ke; kt++, it++) {
          const int s = it % STAGES;
          if (it >= STAGES) mbar_wait(empty + 8 * s, ((it / STAGES) + 1) & 1);
          mbar_expect_tx(full + 8 * s, STAGE_BYTES);
          tma_load(sA + s * A_BYTES, pa, full + 8 * s, kt * BK, m0);
          tma_load(sB + s * B_BYTES, pb, full + 8 * s, kt * BK, n0);
        }
      });
    }
    return;
  }

  const int c = wg - 1;
  constexpr int SLAB = WG_ROWS * BN / 4; // float4s of a consumer's partial
  for_each_unit(sms, [&](int t, int kb, int ke, int v) {
    int m0, n0;
    tile_origin(t, m0, n0);
    float d[MW][BN / 2]; // set by the unit's first wgmma (scale 0)
    for (int kt = kb; kt < ke; kt++, it++) {
      const int s = it % STAGES;
      mbar_wait(full + 8 * s, (it / STAGES) & 1);
      const uint32_t sa = sA + s * A_BYTES + c * WG_ROWS * 128, sb = sB + s * B_BYTES;
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BK / 16; kk++)
#pragma unroll
        for (int i = 0; i < MW; i++)
          wgmma_scaled(d[i], desc(sa + i * 64 * 128 + kk * 32), desc(sb + kk * 32), kk > 0 || kt > kb);
      wgmma_commit();
      wgmma_wait<1>();
      if (kt > kb && tid == 0) mbar_arrive(empty + 8 * ((it - 1) % STAGES));
    }
    wgmma_wait<0>();
    if (tid == 0) mbar_arrive(empty + 8 * ((it - 1) % STAGES));

    if (v >= 0) {
      const Units u = units(sms);
      const int p = v % u.parts;
      float4 *slots = reinterpret_cast<float4 *>(ws) + (size_t)(v - p) * CONSUMERS * SLAB + (size_t)c * SLAB;
      float4 *mine = slots + (size_t)p * CONSUMERS * SLAB;
#pragma unroll
      for (int i = 0; i < MW; i++)
#pragma unroll
        for (int j = 0; j < BN / 8; j++)
          __stcg(mine + (i * (BN / 8) + j) * 128 + tid, make_float4(d[i][4 * j], d[i][4 * j + 1], d[i][4 * j + 2], d[i][4 * j + 3]));
      consumer_sync(c);
      if (tid == 0) {
        __threadfence();
        unsigned *n = count + (t - u.dp) * CONSUMERS + c;
        const bool done = atomicAdd(n, 1u) == (unsigned)(u.parts - 1);
        if (done) {
          *n = 0u;
          __threadfence();
        }
        last[c] = done;
      }
      consumer_sync(c);
      if (!last[c]) return;
      // The sum in part order, all parts (this one's too) read back from
      // L2: the accumulators are dead once stored, which spares registers.
      const int warp = tid / 32, lane = tid % 32;
#pragma unroll 4
      for (int f = 0; f < MW * (BN / 8); f++) {
        float4 a = __ldcg(slots + f * 128 + tid);
        for (int q = 1; q < u.parts; q++) {
          const float4 b = __ldcg(slots + (size_t)q * CONSUMERS * SLAB + f * 128 + tid);
          a.x += b.x;
          a.y += b.y;
          a.z += b.z;
          a.w += b.w;
        }
        const int m = m0 + c * WG_ROWS + (f / (BN / 8)) * 64 + warp * 16 + lane / 4, n = n0 + (f % (BN / 8)) * 8 + 2 * (lane % 4);
        store_pair(out, m, n, a.x, a.y);
        store_pair(out, m + 8, n, a.z, a.w);
      }
      return;
    }
    store_slab(d, out, m0 + c * WG_ROWS, n0, tid);
  });
}
`

// wgmmaPersistLaunch starts the persistent kernel: at most one block an
// SM, and for persist=2 the workspace of one partial slab per part and
// consumer (at most one part an SM) followed by the zeroed counters (one
// per split tile and consumer).
const wgmmaPersistLaunch = `  int dev = 0, sms = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return (int)e;
  const int rem = SPLIT ? TILES % sms : 0, parts = rem > 0 ? min(sms / max(rem, 1), KT) : 1;
  const int count = parts < 2 ? TILES : TILES - rem + rem * parts;
  float *ws = nullptr;
  if (parts >= 2) {
    e = workspace(sizeof(float) * (size_t)sms * BM * BN, sizeof(unsigned) * (size_t)sms * CONSUMERS, (void **)&ws);
    if (e != cudaSuccess) return (int)e;
  }
  gemm<<<min(sms, count), THREADS, SMEM, cudaStreamLegacy>>>(ta, tb, (__nv_bfloat16 *)bufs[2], sms, ws,
      ws ? (unsigned *)(ws + (size_t)sms * BM * BN) : nullptr);
`

// wgmmaTiles are the block tiles of the rule-based wgmma default, largest
// first, with their pipeline depth (the most that fits 227 KiB for
// 128×256; six for the smaller ones, which the H100 sweep preferred at
// one wave of blocks).
var wgmmaTiles = []struct{ bm, bn, stages int64 }{{128, 256, 4}, {128, 128, 6}, {64, 128, 6}, {64, 64, 6}}

// wgmmaDefault is the wgmma point of the rule-based default: the largest
// tile that still gives nearly every SM a block (7/8 of sms), else the
// smallest. On the H100 (132 SMs), without an L2 flush: the 128×256 tile
// ran the large shapes at 0.86–0.96× cuBLAS, but at M=512, N=4096 it
// makes 64 blocks and ran at 0.53× where 128×128 (128 blocks) ran at
// 0.84×; at M=512, N=1024 only 64×64 makes 128 blocks (0.80×, 64×128
// 0.68×, 128×128 0.45×).
//
// Wave quantization is not what holds 1024×14336×4096 at 0.8× cuBLAS: a
// knob sweep on the H100 (`llmir cuda bench --suite prefill --samples 0
// --knobs …`, L2 flushed, ten shapes M = 512…4096) ran its 448 blocks of
// 128×256 (3.4 waves) in 200.1 µs, 896 blocks of 128×128 in 6 stages (6.8
// waves) in 225.2, 256×128 in 203.5, 64×256 in 221.8 and three stages of
// 128×256 in 208.5 (cuBLAS 159.2). On every shape the default tile was
// the fastest of the five tiles or within 1.5% of it (the bigger tile's
// data reuse outweighs the SMs a partial wave leaves idle); group_m=16
// ran 0.97–1.04× of the default's 8, no consistent gain.
//
// What does pay there is splitting the partial wave along K (persist=2,
// see wgmmaPersistKernel): the default takes it where at least one wave
// of tiles is full and the last one is at most half full, so that its
// tiles split into two or more parts (splitParts). Side by side with the
// one-block-a-tile kernel on the H100 (`llmir cuda bench --suite prefill
// --samples 0 --knobs 'persist=1;persist=2'`, one call), at 1024×14336×4096
// (448 tiles, 52 in the last wave, two parts each) it took 190.2 µs
// against 199.8 (1.050×; persist=1 1.023×), at 512×128256×4096 (2004
// tiles, 24 in the last wave, five parts) 799.4 against 820.1 (1.026×).
// Where it splits nothing it is the persistent kernel alone (persist=1),
// which is no steady gain: over three calls 0.95–1.05× on the shapes of
// several waves, 0.94–0.97× where N = 1024 or M = 512, N = 4096 (one wave
// of tiles), so those keep a block a tile.
//
// The per-tile gap to cuBLAS at K = 4096 (0.85–0.90×) was the epilogue:
// store=2 (16-byte chunks, wgmmaStoreChunks) is the default for the tiles
// of two consumer warpgroups. Side by side on the H100 (`llmir cuda bench
// --suite prefill --samples 0 --knobs 'store=1;store=2'`, one call) it ran
// the 15 prefill shapes with such tiles 1.025–1.159× faster than store=1
// (M=4096, N=K=4096: 185.2 µs against 209.8, cuBLAS 184.7; M=512,
// N=14336: 91.9 against 103.6, cuBLAS 92.0), except M=4096, N=4096,
// K=14336 (1.003×: at K = 14336 the epilogue is a small share). With one
// consumer warpgroup it did not pay (M=512, N=1024 on 64×64: 0.970×;
// M=1024, N=1024 on 64×128: 1.014×), so those keep store=1.
//
// Tried on the way, and dropped: 2-block clusters along M, each block
// loading half of the shared w slice and multicasting it to both (TMA
// .multicast::cluster, the empty barriers counting both blocks'
// consumers). Validated, but 0.94–0.98× the default on 12 of 13 shapes
// at K = 4096 (1.005× at M=512, N=128256): a standalone probe put the
// load side alone (consumers skipping the wgmmas) at 31.1 µs and the math
// alone (no loads after the first ring) at 29.0 µs for the 33.8 µs of
// 512×4096×4096 on 128×128, so halving the w traffic from L2 bought
// nothing while the cross-block handoff of every stage cost.
func (g GEMM) wgmmaDefault(sms int) map[string]int64 {
	t := wgmmaTiles[len(wgmmaTiles)-1]
	for _, c := range wgmmaTiles {
		if blocks := ceilDiv(g.M, c.bm) * ceilDiv(g.N, c.bn); 8*blocks >= 7*int64(max(sms, 1)) {
			t = c
			break
		}
	}
	store := int64(1)
	if t.bm >= 128 { // two consumer warpgroups
		store = 2
	}
	persist := int64(0)
	if tiles := ceilDiv(g.M, t.bm) * ceilDiv(g.N, t.bn); tiles >= int64(sms) && splitParts(tiles, int64(sms), ceilDiv(g.K, 64)) >= 2 {
		persist = 2
	}
	return map[string]int64{"wm": 32, "wn": 32, "warps_m": 1, "warps_n": 1, "bk": 64, "group_m": 8,
		"mma": 2, "wg_m": t.bm, "wg_n": t.bn, "stages": t.stages, "persist": persist, "store": store}
}

// splitParts is how many parts along K the persistent kernel with persist=2
// cuts each tile of the last partial wave into (the kernel's units(): ⌊sms
// / rem⌋, at most kt, the number of k slices); 1 when nothing is split.
func splitParts(tiles, sms, kt int64) int64 {
	rem := tiles % max(sms, 1)
	if rem == 0 {
		return 1
	}
	if p := min(sms/rem, kt); p >= 2 {
		return p
	}
	return 1
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
