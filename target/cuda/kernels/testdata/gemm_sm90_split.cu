#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }
#include <cuda.h>

// cuda_gemm/M=1024,N=14336,K=4096/bf16: wgmma block 128x256x64 (2 consumer warpgroups of 64 rows, TMA producer), 4 stages, 197696 B shared, group_m 8
constexpr int M = 1024, N = 14336, K = 4096;
constexpr int BM = 128, BN = 256, BK = 64, STAGES = 4, GROUP_M = 8, CONSUMERS = 2;
constexpr int WG_ROWS = BM / CONSUMERS, MW = WG_ROWS / 64; // m64 wgmmas per consumer and k step
constexpr int THREADS = 128 * (CONSUMERS + 1);
constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
constexpr int KT = (K + BK - 1) / BK;
constexpr int SMEM = 197696; // stages, 1024 B of alignment slack, full and empty barriers

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

// One m64n256k16 step: d (128 floats a thread) += A(desc a) · B(desc b)ᵀ.
__device__ __forceinline__ void wgmma(float *d, uint64_t a, uint64_t b) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
               : "l"(a), "l"(b));
}

// The same step with d scaled by scale (0 or 1) first: scale 0 starts a
// tile's sum with no instruction but wgmmas defining the accumulators
// (zeroing them with moves serialized the persistent kernel's wgmmas).
__device__ __forceinline__ void wgmma_scaled(float *d, uint64_t a, uint64_t b, int scale) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
               : "l"(a), "l"(b), "r"(scale));
}

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

__device__ __forceinline__ uint32_t bf16x2_bits(float lo, float hi) {
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
constexpr bool SPLIT = true; // the last partial wave's tiles split along K

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

int llmir_kernel(void *const *bufs, const int64_t *dims) {
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
  int dev = 0, sms = 0;
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
  return (int)cudaGetLastError();
}
