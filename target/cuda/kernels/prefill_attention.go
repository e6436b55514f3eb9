package cudakernels

import (
	"fmt"
	"math"
	"strings"

	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/target/cuda"
)

// PrefillAttention is causal self-attention of a prompt in bf16,
// llmir.attention with causal set, no window, scale 1/sqrt(D) and k, v
// over the query's own positions: q [B, S, HQ, D], k and v [B, S, HKV, D],
// out [B, S, HQ, D], query head h reading KV head h/(HQ/HKV), query i
// seeing keys 0 … i, f32 accumulation. The reference is the CPU kernel's
// (kernels.Attention, kernels/ref.Attention in float64).
//
// The generated kernel is FlashAttention-2 on mma.sync: a block of W warps
// takes 16·W query rows of one query head of one sequence (grid: heads
// fastest, so the blocks of a KV head's query heads run together and share
// its K and V tiles in L2; heaviest causal tiles first). Each warp keeps
// its 16 rows of Q as A fragments in registers. The block streams tiles of
// BK keys of K and V through a cp.async ring of `stages` stages in shared
// memory (rows XOR-swizzled by chunk as paged attention's, zero-filled past
// the prompt), stopping at the tile holding its last query's key: tiles
// past the diagonal are never loaded. Per tile each warp computes S = Q·Kᵀ
// (K by ldmatrix as the B columns), masks the keys past each row's
// position on the tiles that cross its diagonal, runs the online softmax
// in f32 on the C fragments, and adds P·V with P's A fragments taken from
// S's C fragments as they stand and V by ldmatrix.trans (paged attention's
// mma=1 helpers). A warp whose rows all precede a tile skips its math.
//
// The prompt length is compiled in (dims are not read), as for the other
// CUDA kernels: a compiled module runs the kernel of the smallest bucket
// holding the prompt. The causal mask makes that exact for the real rows
// of a prompt padded to the bucket: query i reads keys 0 … i only, so the
// padding rows after it change nothing before them.
type PrefillAttention struct {
	Batch, Seq, QHeads, KVHeads, HeadDim int64
}

func (a PrefillAttention) group() int64 { return a.QHeads / a.KVHeads }

func (a PrefillAttention) check() error {
	if a.Batch < 1 || a.Seq < 1 || a.KVHeads < 1 || a.QHeads < a.KVHeads || a.QHeads%a.KVHeads != 0 ||
		a.Batch > 65535 || a.QHeads > math.MaxInt32 || a.Seq > math.MaxInt32/8 {
		return fmt.Errorf("prefill attention: shape %+v (want q heads a multiple of kv heads, batch up to 65535: the grid's z)", a)
	}
	switch a.HeadDim {
	case 32, 64, 128:
	default:
		return fmt.Errorf("prefill attention: head_dim %d (want 32, 64 or 128: whole ldmatrix chunk rows, and Q and O fragments in registers)", a.HeadDim)
	}
	return nil
}

func (a PrefillAttention) knobs() kernels.Knobs {
	return kernels.Knobs{
		// Warps per block, each 16 query rows (the rows of m16n8k16).
		{Name: "warps", Values: []int64{4, 8}},
		// Keys per tile (a ring stage holds BK rows of K and of V).
		{Name: "keys", Values: []int64{32, 64, 128}},
		// cp.async ring stages (stages − 1 tiles in flight during the math).
		{Name: "stages", Values: []int64{2, 3}},
		// Query rows per warp: 16 (Q fragments in registers) or 32 (two
		// m-tiles, Q in shared memory, each K and V fragment used twice).
		{Name: "rows_per_warp", Values: []int64{16, 32}},
	}
}

// Name is "cuda_attention/B=…,S=…,HQ=…,HKV=…,D=…/causal/bf16".
func (a PrefillAttention) Name() string {
	return fmt.Sprintf("cuda_attention/B=%d,S=%d,HQ=%d,HKV=%d,D=%d/causal/bf16", a.Batch, a.Seq, a.QHeads, a.KVHeads, a.HeadDim)
}

// cpu is the CPU kernel of the same problem: its Workload and Reference.
func (a PrefillAttention) cpu() kernels.Attention {
	return kernels.Attention{Batch: a.Batch, Seq: a.Seq, QHeads: a.QHeads, KVHeads: a.KVHeads, HeadDim: a.HeadDim,
		Causal: true, DType: "bf16"}
}

// Def declares q, k, v and out at their static shapes.
func (a PrefillAttention) Def() (*schedule.Def, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	return schedule.NewTemplateDef("cuda_attention",
		"out[b,i,h,:] = softmax_{j ≤ i}(q[b,i,h,:]·k[b,j,h/G,:] / sqrt(D)) · v[b,j,h/G,:]",
		[]*schedule.Tensor{
			bf16Buf("q", a.Batch, a.Seq, a.QHeads, a.HeadDim),
			bf16Buf("k", a.Batch, a.Seq, a.KVHeads, a.HeadDim),
			bf16Buf("v", a.Batch, a.Seq, a.KVHeads, a.HeadDim),
		}, bf16Buf("out", a.Batch, a.Seq, a.QHeads, a.HeadDim))
}

// Workload is llmir.attention (causal) at this shape; FromWorkload's
// kernels answer with the IR workload they were made from instead.
func (a PrefillAttention) Workload() ir.Workload {
	sig := func(heads int64) ir.TensorSig {
		return ir.TensorSig{Shape: []int64{a.Batch, a.Seq, heads, a.HeadDim}, DType: "bf16"}
	}
	return ir.Workload{
		Group:  []string{"llmir.attention"},
		Inputs: []ir.TensorSig{sig(a.QHeads), sig(a.KVHeads), sig(a.KVHeads)},
		Output: []ir.TensorSig{sig(a.QHeads)},
		Attrs:  map[string]string{"causal": ir.BoolAttr(true).String()},
	}
}

func (a PrefillAttention) Dims() []int64 { return nil }

// Reference is the CPU kernel's (kernels/ref.Attention, float64
// accumulation, per KV head on all cores).
func (a PrefillAttention) Reference(in [][]float64) [][]float64 { return a.cpu().Reference(in) }

// FLOPs counts Q·Kᵀ and P·V over the pairs the causal mask keeps.
func (a PrefillAttention) FLOPs() float64 { return a.cpu().FLOPs() }

// Bytes is one read of q, k, v and one write of out.
func (a PrefillAttention) Bytes() float64 { return a.cpu().Bytes() }

// Space samples the knobs (Checked narrows them to the points the
// generator accepts).
func (a PrefillAttention) Space(s *schedule.Schedule, _ kernels.Hardware) error {
	return a.knobs().Sample(s)
}

// Default: 4 warps of 16 rows (64 query rows: 256 blocks at llama-3-8b's
// 512 tokens and 32 heads, about two per SM), 64 keys per tile and two
// stages for head_dim 128 (32 f32 score registers beside Q's 32 and O's 64
// per lane); 128 keys for smaller heads, whose fragments leave the room.
// On the H100 (llmir cuda bench --suite prefill --match cuda_attention
// --samples 0 --knobs …, one call; llama-3-8b's heads) 32 rows per warp
// (keys 32, the only size its registers allow at head_dim 128: ptxas
// reports 255 registers and a few bytes spilled) took 29.1 µs at 512
// tokens against the default's 20.9, and 535.6 against 542.3 µs at 4096
// (1.2%, a tie); with 8 warps 39.7 / 565.4; 8 warps of 16 rows 25.8 /
// 630.7.
func (a PrefillAttention) Default(s *schedule.Schedule, hw kernels.Hardware) error {
	v := map[string]int64{"warps": 4, "keys": 64, "stages": 2, "rows_per_warp": 16}
	if a.HeadDim <= 64 {
		v["keys"] = 128
	}
	return a.knobs().ChooseWhere(s, v, nil)
}

// prefillRingBytes is the dynamic shared memory of the ring: stages tiles
// of keys rows of K and of V.
func prefillRingBytes(keys, stages, headDim int64) int64 { return stages * 2 * keys * headDim * 2 }

// EmitCUDA writes the kernel for the knobs in s.
func (a PrefillAttention) EmitCUDA(s *schedule.Schedule, _ cuda.GPU, entry string) (string, error) {
	if err := a.check(); err != nil {
		return "", err
	}
	k, err := knobsOf(a.knobs(), s)
	if err != nil {
		return "", err
	}
	W, BK, PF, MT := k["warps"], k["keys"], k["stages"], k["rows_per_warp"]/16
	bq := 16 * W * MT
	ring := prefillRingBytes(BK, PF, a.HeadDim)
	if MT > 1 {
		ring += bq * a.HeadDim * 2 // Q's rows after the ring
	}
	if ring > maxSmemPerBlock {
		return "", fmt.Errorf("prefill attention: a %d-stage ring of %d keys × head_dim %d (and Q's rows) is %d bytes of shared memory (max %d)", PF, BK, a.HeadDim, ring, maxSmemPerBlock)
	}
	// A lane's fragments per m-tile: S (BK/2 floats), P (BK/8 words) and O
	// (D/2), and Q (D/4 words) when it stays in registers; a rule keeps
	// them under the 255 registers a thread has, leaving the addresses and
	// the softmax their share.
	regs := MT * (BK/2 + BK/8 + a.HeadDim/2)
	if MT == 1 {
		regs += a.HeadDim / 4
	}
	if regs > 168 {
		return "", fmt.Errorf("prefill attention: %d keys per tile at head_dim %d and %d rows per warp hold %d fragment registers per lane (max 168)", BK, a.HeadDim, 16*MT, regs)
	}
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: warps=%d keys=%d stages=%d rows_per_warp=%d
constexpr int B = %d, S = %d, QH = %d, KVH = %d, D = %d;
constexpr int GROUP = QH / KVH;
constexpr int WARPS = %d, MT = %d, BQ = %d, BK = %d, PF = %d;  // warps, m-tiles per warp, query rows, keys per tile, ring stages
constexpr int QTILES = %d;            // query tiles per (sequence, head)
constexpr float SCALE_LOG2 = %.9ef;  // log2(e) / sqrt(D)
`, a.Name(), W, BK, PF, 16*MT, a.Batch, a.Seq, a.QHeads, a.KVHeads, a.HeadDim, W, MT, bq, BK, PF, (a.Seq+bq-1)/bq,
		math.Log2E/math.Sqrt(float64(a.HeadDim)))
	b.WriteString(tensorCoreHelpers)
	b.WriteString(mmaRowConsts)
	b.WriteString(mmaFragHelpers)
	b.WriteString(prefillBody)
	fmt.Fprintf(&b, prefillEntry, entry, ring, ring, launchCheck)
	return b.String(), nil
}

// prefillBody is the kernel: the ring's copies and the FA2 loop, over MT
// m-tiles of 16 query rows per warp. With one, the warp's Q fragments stay
// in registers; with two, Q is staged in shared memory (swizzled like K)
// and read by ldmatrix per k-step, and every K and V fragment a warp loads
// feeds two products instead of one.
const prefillBody = `constexpr int TILE = BK * D * 2;      // bytes of one K (or V) tile
constexpr int STAGE = 2 * TILE;       // a ring stage: K then V
constexpr int NT = WARPS * 32;
constexpr bool QREG = MT == 1;        // Q fragments in registers (else in shared memory after the ring)
static_assert(D % 32 == 0 && BK % 16 == 0 && (MT == 1 || MT == 2), "mma shape");

// issue_tile copies keys kbase … kbase + BK − 1 of K and V (KV head kvh of
// sequence b) into the stage at shared address st, 16 bytes per copy,
// zero-filled past the prompt.
__device__ __forceinline__ void issue_tile(uint32_t st, const __nv_bfloat16 *__restrict__ k,
    const __nv_bfloat16 *__restrict__ v, int b, int kvh, int kbase) {
#pragma unroll
  for (int i = 0; i < (BK * CPR + NT - 1) / NT; i++) {
    const int idx = threadIdx.x + i * NT;
    if (BK * CPR % NT == 0 || idx < BK * CPR) {
      const int r = idx / CPR, c = idx % CPR, t = kbase + r;
      const bool ok = t < S;
      const size_t off = ok ? (((size_t)b * S + t) * KVH + kvh) * D + c * 8 : 0;
      const uint32_t dst = st + swz(r, c);
      cp_async16(dst, k + off, ok ? 16 : 0);
      cp_async16(dst + TILE, v + off, ok ? 16 : 0);
    }
  }
}

// Block (h, tile, b): query rows q0 … q0 + BQ − 1 of head h of sequence b,
// warp w rows q0 + 16·MT·w …, m-tile mt its 16 rows from 16·mt. Lane 4g + t
// holds rows g (C elements 0, 1) and g + 8 (2, 3) of each m-tile. Scores
// are in log2 units (exp2).
__global__ void __launch_bounds__(NT) attn(const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k,
    const __nv_bfloat16 *__restrict__ v, __nv_bfloat16 *__restrict__ out) {
  const int h = blockIdx.x, b = blockIdx.z, kvh = h / GROUP;
  const int q0 = (QTILES - 1 - (int)blockIdx.y) * BQ;  // heaviest tiles first
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int wfirst = q0 + warp * 16 * MT;             // the warp's first row
  extern __shared__ uint4 ring[];
  const uint32_t rbase = smem_addr(ring), qs = rbase + PF * STAGE;
  // Keys 0 … last (the block's last query row in the prompt): ntiles tiles.
  const int last = min(q0 + BQ, S) - 1;
  const int ntiles = last / BK + 1;
  if (!QREG) {
    // The block's Q rows into shared memory, with tile 0's group.
#pragma unroll
    for (int i = 0; i < (BQ * CPR + NT - 1) / NT; i++) {
      const int idx = threadIdx.x + i * NT;
      if (BQ * CPR % NT == 0 || idx < BQ * CPR) {
        const int r = idx / CPR, c = idx % CPR, row = q0 + r;
        const bool ok = row < S;
        cp_async16(qs + swz(r, c), q + (ok ? (((size_t)b * S + row) * QH + h) * D + c * 8 : 0), ok ? 16 : 0);
      }
    }
  }
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    if (p < ntiles) issue_tile(rbase + p * STAGE, k, v, b, kvh, p * BK);
    cp_async_commit();
  }
  // With QREG, Q as the A operand in registers (rows past the prompt zero).
  uint32_t qa[QREG ? D / 16 : 1][4];
  if (QREG) {
    const int r0 = wfirst + g, r1 = r0 + 8;
    const __nv_bfloat16 *p0 = q + (((size_t)b * S + min(r0, S - 1)) * QH + h) * D + 2 * t4;
    const __nv_bfloat16 *p1 = q + (((size_t)b * S + min(r1, S - 1)) * QH + h) * D + 2 * t4;
#pragma unroll
    for (int kk = 0; kk < (QREG ? D / 16 : 0); kk++) {
      qa[kk][0] = r0 < S ? *reinterpret_cast<const uint32_t *>(p0 + kk * 16) : 0u;
      qa[kk][1] = r1 < S ? *reinterpret_cast<const uint32_t *>(p1 + kk * 16) : 0u;
      qa[kk][2] = r0 < S ? *reinterpret_cast<const uint32_t *>(p0 + kk * 16 + 8) : 0u;
      qa[kk][3] = r1 < S ? *reinterpret_cast<const uint32_t *>(p1 + kk * 16 + 8) : 0u;
    }
  }
  float acc[MT][D / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int n = 0; n < D / 8; n++) acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.f;
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;
  for (int it = 0; it < ntiles; it++) {
    // Tile it has landed (the groups after it may still be in flight) for
    // every thread, and every warp is done with the stage refilled next
    // (tile it − 1's); always commit a group, empty past the end.
    cp_async_wait<PF - 2>();
    __syncthreads();
    if (it + PF - 1 < ntiles) issue_tile(rbase + ((it + PF - 1) % PF) * STAGE, k, v, b, kvh, (it + PF - 1) * BK);
    cp_async_commit();
    const int kbase = it * BK;
    // Keys after all of the warp's rows: nothing to add (key 0, in tile
    // 0, is seen by every row, so the maxima are finite from there on).
    if (kbase > wfirst + 16 * MT - 1) continue;
    const uint32_t kb = rbase + (it % PF) * STAGE, vb = kb + TILE;
    // S = Q·Kᵀ: n-tile j is keys 8j … 8j + 7; one ldmatrix.x4 gives the
    // B fragments of two k-steps, summed in two chains.
    float s[MT][BK / 8][4];
#pragma unroll
    for (int j = 0; j < BK / 8; j++) {
      float s2[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[mt][j][e] = s2[mt][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 32; kk++) {
        uint32_t r[4];
        ldmatrix_x4(r, kb + swz(j * 8 + lane % 8, 4 * kk + lane / 8));
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          if (QREG) {
            mma(s[mt][j], qa[(2 * kk) % (QREG ? D / 16 : 1)], r);
            mma(s2[mt], qa[(2 * kk + 1) % (QREG ? D / 16 : 1)], r + 2);
          } else {
            const int row = warp * 16 * MT + mt * 16 + lane % 16;
            uint32_t a0[4], a1[4];
            ldmatrix_x4(a0, qs + swz(row, 4 * kk + lane / 16));
            ldmatrix_x4(a1, qs + swz(row, 4 * kk + 2 + lane / 16));
            mma(s[mt][j], a0, r);
            mma(s2[mt], a1, r + 2);
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[mt][j][e] += s2[mt][e];
    }
    // The causal mask, on tiles whose last key follows the warp's first
    // row (keys past the prompt follow every row that is stored).
    const bool diag = kbase + BK - 1 > wfirst;
    uint32_t pa[MT][BK / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      const int r0 = wfirst + 16 * mt + g, r1 = r0 + 8;
      float mx0 = m[mt][0], mx1 = m[mt][1];
#pragma unroll
      for (int j = 0; j < BK / 8; j++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int key = kbase + j * 8 + 2 * t4 + (e & 1);
          s[mt][j][e] = !diag || key <= (e < 2 ? r0 : r1) ? s[mt][j][e] * SCALE_LOG2 : -INFINITY;
        }
        mx0 = fmaxf(mx0, fmaxf(s[mt][j][0], s[mt][j][1]));
        mx1 = fmaxf(mx1, fmaxf(s[mt][j][2], s[mt][j][3]));
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      // Rescale only when a maximum grows (0 · acc while it is still -inf).
      if (mx0 > m[mt][0]) {
        const float c = ex2(m[mt][0] - mx0);
        l[mt][0] *= c;
#pragma unroll
        for (int n = 0; n < D / 8; n++) acc[mt][n][0] *= c, acc[mt][n][1] *= c;
        m[mt][0] = mx0;
      }
      if (mx1 > m[mt][1]) {
        const float c = ex2(m[mt][1] - mx1);
        l[mt][1] *= c;
#pragma unroll
        for (int n = 0; n < D / 8; n++) acc[mt][n][2] *= c, acc[mt][n][3] *= c;
        m[mt][1] = mx1;
      }
      // P as the A operand: n-tiles 2kt and 2kt + 1 of S are k-tile kt; l
      // sums the bf16-rounded values the product uses.
#pragma unroll
      for (int j = 0; j < BK / 8; j++) {
        const uint32_t lo = pack_bf16(ex2(s[mt][j][0] - m[mt][0]), ex2(s[mt][j][1] - m[mt][0]));
        const uint32_t hi = pack_bf16(ex2(s[mt][j][2] - m[mt][1]), ex2(s[mt][j][3] - m[mt][1]));
        l[mt][0] += bf_lo(lo) + bf_hi(lo);
        l[mt][1] += bf_lo(hi) + bf_hi(hi);
        pa[mt][j / 2][(j & 1) * 2] = lo;
        pa[mt][j / 2][(j & 1) * 2 + 1] = hi;
      }
    }
    // O += P·V: V rows are k, dims are n (ldmatrix.trans).
#pragma unroll
    for (int kt = 0; kt < BK / 16; kt++) {
#pragma unroll
      for (int nd = 0; nd < D / 16; nd++) {
        uint32_t r[4];
        ldsm_x4_t(r, vb + swz(16 * kt + lane % 16, 2 * nd + lane / 16));
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma(acc[mt][2 * nd], pa[mt][kt], r);
          mma(acc[mt][2 * nd + 1], pa[mt][kt], r + 2);
        }
      }
    }
  }
  cp_async_wait<0>();
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    float l0 = l[mt][0], l1 = l[mt][1];
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.f / l0, i1 = 1.f / l1;
    const int r0 = wfirst + 16 * mt + g, r1 = r0 + 8;
#pragma unroll
    for (int n = 0; n < D / 8; n++) {
      if (r0 < S)
        *reinterpret_cast<uint32_t *>(out + (((size_t)b * S + r0) * QH + h) * D + n * 8 + 2 * t4) =
            pack_bf16(acc[mt][n][0] * i0, acc[mt][n][1] * i0);
      if (r1 < S)
        *reinterpret_cast<uint32_t *>(out + (((size_t)b * S + r1) * QH + h) * D + n * 8 + 2 * t4) =
            pack_bf16(acc[mt][n][2] * i1, acc[mt][n][3] * i1);
    }
  }
}
`

// prefillEntry is the host entry: its name, the ring's opt-in and size,
// and the launch check.
const prefillEntry = `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  static cudaError_t opt = cudaFuncSetAttribute(attn, cudaFuncAttributeMaxDynamicSharedMemorySize, %d);
  if (opt != cudaSuccess) return (int)opt;
  attn<<<dim3(QH, QTILES, B), NT, %d, cudaStreamLegacy>>>((const __nv_bfloat16 *)bufs[0],
      (const __nv_bfloat16 *)bufs[1], (const __nv_bfloat16 *)bufs[2], (__nv_bfloat16 *)bufs[3]);
%s}
`

// prefillAttentionFromWorkload reads an llmir.attention workload through
// the CPU kernel's parser and takes the variant this kernel computes:
// bf16, causal, no window, scale 1/sqrt(D) (or unset), k and v over the
// queries' own positions with v's head dim equal to q's.
func prefillAttentionFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkSigs(w, 3, 1); err != nil {
		return nil, err
	}
	if err := allBF16(append(w.Inputs[:3:3], w.Output[0])...); err != nil {
		return nil, err
	}
	c, err := cpuKernelOf[kernels.Attention](w)
	if err != nil {
		return nil, err
	}
	kv := c.KVLen
	if kv == 0 {
		kv = c.Seq
	}
	switch {
	case !c.Causal:
		return nil, unsupported("attention without the causal mask (the CUDA kernel is causal prefill)")
	case c.Window != 0:
		return nil, unsupported("sliding window %d", c.Window)
	case c.Scale != 0 && math.Abs(c.Scale*math.Sqrt(float64(c.HeadDim))-1) > 1e-6:
		return nil, unsupported("attention scale %g (the CUDA kernel uses 1/sqrt(head_dim))", c.Scale)
	case kv != c.Seq:
		return nil, unsupported("%d keys for %d queries (the CUDA kernel attends a prompt to itself)", kv, c.Seq)
	case c.VDim != 0 && c.VDim != c.HeadDim:
		return nil, unsupported("v head_dim %d differs from q's %d", c.VDim, c.HeadDim)
	}
	a := PrefillAttention{Batch: c.Batch, Seq: c.Seq, QHeads: c.QHeads, KVHeads: c.KVHeads, HeadDim: c.HeadDim}
	if err := a.check(); err != nil {
		return nil, unsupported("%v", err)
	}
	return a, nil
}
