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

// Default: 4 warps (64 query rows: 256 blocks at llama-3-8b's 512 tokens
// and 32 heads, about two per SM), 64 keys per tile and two stages for
// head_dim 128 (32 f32 score registers beside Q's 32 and O's 64 per lane);
// 128 keys for smaller heads, whose fragments leave the room.
func (a PrefillAttention) Default(s *schedule.Schedule, hw kernels.Hardware) error {
	v := map[string]int64{"warps": 4, "keys": 64, "stages": 2}
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
	W, BK, PF := k["warps"], k["keys"], k["stages"]
	ring := prefillRingBytes(BK, PF, a.HeadDim)
	if ring > maxSmemPerBlock {
		return "", fmt.Errorf("prefill attention: a %d-stage ring of %d keys × head_dim %d is %d bytes of shared memory (max %d)", PF, BK, a.HeadDim, ring, maxSmemPerBlock)
	}
	// A lane's fragments: S (BK/2 floats), P (BK/8 words), O (D/2) and Q
	// (D/4 words); a rule keeps them well under the 255 registers a
	// thread has, leaving the addresses and the softmax their share.
	if regs := BK/2 + BK/8 + a.HeadDim/2 + a.HeadDim/4; regs > 160 {
		return "", fmt.Errorf("prefill attention: %d keys per tile at head_dim %d hold %d fragment registers per lane (max 160)", BK, a.HeadDim, regs)
	}
	bq := 16 * W
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: warps=%d keys=%d stages=%d
constexpr int B = %d, S = %d, QH = %d, KVH = %d, D = %d;
constexpr int GROUP = QH / KVH;
constexpr int WARPS = %d, BQ = %d, BK = %d, PF = %d;  // warps, query rows, keys per tile, ring stages
constexpr int QTILES = %d;            // query tiles per (sequence, head)
constexpr float SCALE_LOG2 = %.9ef;  // log2(e) / sqrt(D)
`, a.Name(), W, BK, PF, a.Batch, a.Seq, a.QHeads, a.KVHeads, a.HeadDim, W, bq, BK, PF, (a.Seq+bq-1)/bq,
		math.Log2E/math.Sqrt(float64(a.HeadDim)))
	b.WriteString(tensorCoreHelpers)
	b.WriteString(mmaRowConsts)
	b.WriteString(mmaFragHelpers)
	b.WriteString(prefillBody)
	fmt.Fprintf(&b, prefillEntry, entry, ring, ring, launchCheck)
	return b.String(), nil
}

// prefillBody is the kernel: the ring's copies and the FA2 loop.
const prefillBody = `constexpr int TILE = BK * D * 2;      // bytes of one K (or V) tile
constexpr int STAGE = 2 * TILE;       // a ring stage: K then V
constexpr int NT = WARPS * 32;
static_assert(D % 32 == 0 && BK % 16 == 0, "mma shape");

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
// warp w rows q0 + 16w … + 15. Lane 4g + t holds rows g (C elements 0, 1)
// and g + 8 (2, 3) of its warp's 16. Scores are in log2 units (exp2).
__global__ void __launch_bounds__(NT) attn(const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k,
    const __nv_bfloat16 *__restrict__ v, __nv_bfloat16 *__restrict__ out) {
  const int h = blockIdx.x, b = blockIdx.z, kvh = h / GROUP;
  const int q0 = (QTILES - 1 - (int)blockIdx.y) * BQ;  // heaviest tiles first
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;     // this lane's two rows
  extern __shared__ uint4 ring[];
  const uint32_t rbase = smem_addr(ring);
  // Keys 0 … last (the block's last query row in the prompt): ntiles tiles.
  const int last = min(q0 + BQ, S) - 1;
  const int ntiles = last / BK + 1;
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    if (p < ntiles) issue_tile(rbase + p * STAGE, k, v, b, kvh, p * BK);
    cp_async_commit();
  }
  // Q as the A operand (rows past the prompt are zero).
  uint32_t qa[D / 16][4];
  {
    const __nv_bfloat16 *p0 = q + (((size_t)b * S + min(r0, S - 1)) * QH + h) * D + 2 * t4;
    const __nv_bfloat16 *p1 = q + (((size_t)b * S + min(r1, S - 1)) * QH + h) * D + 2 * t4;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      qa[kk][0] = r0 < S ? *reinterpret_cast<const uint32_t *>(p0 + kk * 16) : 0u;
      qa[kk][1] = r1 < S ? *reinterpret_cast<const uint32_t *>(p1 + kk * 16) : 0u;
      qa[kk][2] = r0 < S ? *reinterpret_cast<const uint32_t *>(p0 + kk * 16 + 8) : 0u;
      qa[kk][3] = r1 < S ? *reinterpret_cast<const uint32_t *>(p1 + kk * 16 + 8) : 0u;
    }
  }
  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  const int wfirst = q0 + warp * 16;  // the warp's first row
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
    if (kbase > wfirst + 15) continue;
    const uint32_t kb = rbase + (it % PF) * STAGE, vb = kb + TILE;
    // S = Q·Kᵀ: n-tile j is keys 8j … 8j + 7; one ldmatrix.x4 gives the
    // B fragments of two k-steps, summed in two chains.
    float s[BK / 8][4];
#pragma unroll
    for (int j = 0; j < BK / 8; j++) {
      float s2[4] = {0.f, 0.f, 0.f, 0.f};
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 32; kk++) {
        uint32_t r[4];
        ldmatrix_x4(r, kb + swz(j * 8 + lane % 8, 4 * kk + lane / 8));
        mma(s[j], qa[2 * kk], r);
        mma(s2, qa[2 * kk + 1], r + 2);
      }
#pragma unroll
      for (int e = 0; e < 4; e++) s[j][e] += s2[e];
    }
    // The causal mask, on tiles whose last key follows the warp's first
    // row (keys past the prompt follow every row that is stored).
    const bool diag = kbase + BK - 1 > wfirst;
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int j = 0; j < BK / 8; j++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = kbase + j * 8 + 2 * t4 + (e & 1);
        s[j][e] = !diag || key <= (e < 2 ? r0 : r1) ? s[j][e] * SCALE_LOG2 : -INFINITY;
      }
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    // Rescale only when a maximum grows (0 · acc while it is still -inf).
    if (mx0 > m0) {
      const float c = ex2(m0 - mx0);
      l0 *= c;
#pragma unroll
      for (int n = 0; n < D / 8; n++) acc[n][0] *= c, acc[n][1] *= c;
      m0 = mx0;
    }
    if (mx1 > m1) {
      const float c = ex2(m1 - mx1);
      l1 *= c;
#pragma unroll
      for (int n = 0; n < D / 8; n++) acc[n][2] *= c, acc[n][3] *= c;
      m1 = mx1;
    }
    // P as the A operand: n-tiles 2kt and 2kt + 1 of S are k-tile kt; l
    // sums the bf16-rounded values the product uses.
    uint32_t pa[BK / 16][4];
#pragma unroll
    for (int j = 0; j < BK / 8; j++) {
      const uint32_t lo = pack_bf16(ex2(s[j][0] - m0), ex2(s[j][1] - m0));
      const uint32_t hi = pack_bf16(ex2(s[j][2] - m1), ex2(s[j][3] - m1));
      l0 += bf_lo(lo) + bf_hi(lo);
      l1 += bf_lo(hi) + bf_hi(hi);
      pa[j / 2][(j & 1) * 2] = lo;
      pa[j / 2][(j & 1) * 2 + 1] = hi;
    }
    // O += P·V: V rows are k, dims are n (ldmatrix.trans).
#pragma unroll
    for (int kt = 0; kt < BK / 16; kt++) {
#pragma unroll
      for (int nd = 0; nd < D / 16; nd++) {
        uint32_t r[4];
        ldsm_x4_t(r, vb + swz(16 * kt + lane % 16, 2 * nd + lane / 16));
        mma(acc[2 * nd], pa[kt], r);
        mma(acc[2 * nd + 1], pa[kt], r + 2);
      }
    }
  }
  cp_async_wait<0>();
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float i0 = 1.f / l0, i1 = 1.f / l1;
#pragma unroll
  for (int n = 0; n < D / 8; n++) {
    if (r0 < S)
      *reinterpret_cast<uint32_t *>(out + (((size_t)b * S + r0) * QH + h) * D + n * 8 + 2 * t4) =
          pack_bf16(acc[n][0] * i0, acc[n][1] * i0);
    if (r1 < S)
      *reinterpret_cast<uint32_t *>(out + (((size_t)b * S + r1) * QH + h) * D + n * 8 + 2 * t4) =
          pack_bf16(acc[n][2] * i1, acc[n][3] * i1);
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
	ck, err := kernels.FromWorkload(w)
	if err != nil {
		return nil, err
	}
	c, ok := ck.(kernels.Attention)
	if !ok {
		return nil, fmt.Errorf("llmir.attention made a %T", ck)
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
