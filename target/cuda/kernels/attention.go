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

// PagedAttention is decode attention in bf16 over a paged KV cache laid out
// by kvcache.Layout (one layer: pool [2 (K, V)][blocks][block_size]
// [kv_heads][head_dim]), one query per sequence at position
// context_lens[b]−1, query head h reading KV head h/(QHeads/KVHeads).
//
// The generated kernel gives one thread block a (sequence, KV head, group
// of query heads, KV partition): a group of D/vec lanes holds one token's
// key (16-byte loads), so one warp covers 32·vec/D tokens per step; each
// lane group keeps an online softmax (max, sum, accumulator in f32) per
// query head, merged across lanes by shuffles and across warps through
// shared memory. With split-KV (partition > 0, or balance > 0: a grid of
// a few blocks per SM cutting the token space evenly) each block stores a
// partial and the last block of a (sequence, head group) to finish merges
// them, so short batches still fill the SMs without a second launch.
type PagedAttention struct {
	Batch, QHeads, KVHeads, HeadDim int64
	BlockSize                       int64
	// Context is the longest context; MaxBlocks = ⌈Context/BlockSize⌉.
	Context int64
	// Ragged draws each sequence's length in [0, Context] (tests); false
	// gives every sequence Context tokens (the benchmark shapes).
	Ragged bool
}

func (a PagedAttention) maxBlocks() int64 { return (a.Context + a.BlockSize - 1) / a.BlockSize }
func (a PagedAttention) numBlocks() int64 { return a.Batch * a.maxBlocks() }
func (a PagedAttention) group() int64     { return a.QHeads / a.KVHeads }

func (a PagedAttention) check() error {
	if a.Batch < 1 || a.KVHeads < 1 || a.QHeads < a.KVHeads || a.QHeads%a.KVHeads != 0 ||
		a.BlockSize < 1 || a.Context < 1 || a.HeadDim < 8 || a.HeadDim%8 != 0 || a.HeadDim > 256 || a.Batch > 65535 {
		return fmt.Errorf("paged attention: shape %+v (want q heads a multiple of kv heads, head_dim a multiple of 8 up to 256, batch up to 65535: the grid's y)", a)
	}
	return nil
}

func (a PagedAttention) knobs() kernels.Knobs {
	var hpb []int64
	for h := int64(1); h <= a.group(); h++ {
		if a.group()%h == 0 {
			hpb = append(hpb, h)
		}
	}
	return kernels.Knobs{
		{Name: "warps", Values: []int64{4, 8}},
		{Name: "partition", Values: []int64{0, 256, 512, 1024, 2048}},
		{Name: "heads_per_block", Values: hpb},
		{Name: "vec", Values: []int64{8, 16, 4}},
		{Name: "unroll", Values: []int64{1, 2, 4, 8}},
		{Name: "prefetch", Values: []int64{0, 1, 2, 3, 4}},
		// balance k > 0: a grid of k blocks per SM splitting the tokens
		// evenly (see evenSplit); partition is then pinned to 0. One block
		// per SM (at most two fit) and four lost everywhere measured.
		{Name: "balance", Values: []int64{0, 2}},
		// mma 1: tensor-core q·k and p·v (see mmaSegment); warps, the
		// partition, heads_per_block, prefetch (ring stages, ≥ 2) and
		// balance keep their meaning, unroll is the tokens per warp step
		// in 8s (1 or 2), vec is pinned to 8 (the copies are whole rows).
		{Name: "mma", Values: []int64{0, 1}},
	}
}

// Name is "cuda_paged_attention/B=…,QH=…,KVH=…,D=…,BS=…,ctx=…/bf16".
func (a PagedAttention) Name() string {
	r := ""
	if a.Ragged {
		r = ",ragged"
	}
	return fmt.Sprintf("cuda_paged_attention/B=%d,QH=%d,KVH=%d,D=%d,BS=%d,ctx=%d%s/bf16",
		a.Batch, a.QHeads, a.KVHeads, a.HeadDim, a.BlockSize, a.Context, r)
}

// Def declares q, the pool, the block tables and lengths, and out.
func (a PagedAttention) Def() (*schedule.Def, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	return schedule.NewTemplateDef("cuda_paged_attention",
		"out[b, h] = softmax_j(q[b, h] · K[b, j, h/group] / sqrt(D)) · V[b, j, h/group] over the first context_lens[b] tokens of the paged cache",
		[]*schedule.Tensor{
			bf16Buf("q", a.Batch, a.QHeads, a.HeadDim),
			bf16Buf("kv_pool", 2, a.numBlocks(), a.BlockSize, a.KVHeads, a.HeadDim),
			i32Buf("block_tables", a.Batch, a.maxBlocks()),
			i32Buf("context_lens", a.Batch),
		}, bf16Buf("out", a.Batch, a.QHeads, a.HeadDim))
}

// Workload is llmir.paged_attention with the block size as an attribute
// (it changes the generated code).
func (a PagedAttention) Workload() ir.Workload {
	return ir.Workload{
		Group: []string{"llmir.paged_attention"},
		Inputs: []ir.TensorSig{
			{Shape: []int64{a.Batch, a.QHeads, a.HeadDim}, DType: "bf16"},
			{KV: fmt.Sprintf("!llmir.paged_kv<layers=1, blocks=%d, block_size=%d, kv_heads=%d, head_dim=%d, bf16>", a.numBlocks(), a.BlockSize, a.KVHeads, a.HeadDim), DType: "bf16"},
			{Shape: []int64{a.Batch, a.maxBlocks()}, DType: "i32"},
			{Shape: []int64{a.Batch}, DType: "i32"},
		},
		Output: []ir.TensorSig{{Shape: []int64{a.Batch, a.QHeads, a.HeadDim}, DType: "bf16"}},
		Attrs:  map[string]string{"block_size": fmt.Sprint(a.BlockSize), "context": fmt.Sprint(a.Context), "ragged": fmt.Sprint(a.Ragged)},
	}
}

func (a PagedAttention) Dims() []int64 { return nil }

// Fill gives the block tables a random permutation of the pool's blocks
// (so a kernel that ignores the table reads the wrong keys) and the lengths
// their policy.
func (a PagedAttention) Fill(input string) func(rng *rand.Rand, v []float64) {
	switch input {
	case "block_tables":
		return func(rng *rand.Rand, v []float64) {
			for i, p := range rng.Perm(len(v)) {
				v[i] = float64(p)
			}
		}
	case "context_lens":
		return func(rng *rand.Rand, v []float64) {
			for i := range v {
				v[i] = float64(a.Context)
				if a.Ragged {
					// Zero, one, and full lengths are the edge cases.
					switch i % 4 {
					case 0:
						v[i] = float64(rng.IntN(int(a.Context) + 1))
					case 1:
						v[i] = float64((i / 4) % 2)
					case 2:
						v[i] = float64(1 + rng.IntN(int(a.Context)))
					}
				}
			}
		}
	}
	return nil
}

// Reference is attention in float64 straight from the layout formula
// (tested against kernels/ref.PagedAttention on small shapes).
func (a PagedAttention) Reference(in [][]float64) [][]float64 {
	q, pool, bt, lens := in[0], in[1], in[2], in[3]
	B, QH, KVH, D, BS, MB := int(a.Batch), int(a.QHeads), int(a.KVHeads), int(a.HeadDim), int(a.BlockSize), int(a.maxBlocks())
	half := int(a.numBlocks()) * BS * KVH * D
	out := make([]float64, B*QH*D)
	scale := 1 / math.Sqrt(float64(D))
	group := QH / KVH
	parallelRows(B*QH, func(bh int) {
		b, h := bh/QH, bh%QH
		kvh := h / group
		n := int(lens[b])
		if n <= 0 {
			return
		}
		qv := q[bh*D : (bh+1)*D]
		scores := make([]float64, n)
		mx := math.Inf(-1)
		for j := range n {
			off := ((int(bt[b*MB+j/BS])*BS+j%BS)*KVH + kvh) * D
			var s float64
			for e, x := range qv {
				s += x * pool[off+e]
			}
			scores[j] = s * scale
			mx = max(mx, scores[j])
		}
		var sum float64
		o := out[bh*D : (bh+1)*D]
		for j := range n {
			p := math.Exp(scores[j] - mx)
			sum += p
			off := half + ((int(bt[b*MB+j/BS])*BS+j%BS)*KVH+kvh)*D
			for e := range o {
				o[e] += p * pool[off+e]
			}
		}
		for e := range o {
			o[e] /= sum
		}
	})
	return [][]float64{out}
}

// FLOPs counts q·k and p·v.
func (a PagedAttention) FLOPs() float64 {
	return 4 * float64(a.Batch*a.QHeads*a.HeadDim) * float64(a.Context)
}

// Bytes is the keys and values read once per KV head (the benchmark shapes
// have every sequence at full context), plus q and out.
func (a PagedAttention) Bytes() float64 {
	kv := 2 * float64(a.Batch*a.KVHeads*a.HeadDim) * float64(a.Context) * 2
	return kv + 4*float64(a.Batch*a.QHeads*a.HeadDim) + 4*float64(a.Batch*a.maxBlocks()+a.Batch)
}

// Space samples only points with partition pinned to 0 where balance
// splits the tokens (Checked narrows it to all the generator accepts).
func (a PagedAttention) Space(s *schedule.Schedule, _ kernels.Hardware) error {
	return a.knobs().SampleWhere(s, a.valid)
}

// valid pins the partition to 0 where balance splits the tokens, and
// refuses tensor-core points the shape or the other knobs cannot carry.
func (a PagedAttention) valid(k map[string]int64) error {
	if k["balance"] > 0 && k["partition"] != 0 {
		return fmt.Errorf("paged attention: balance %d splits the tokens itself (partition pinned to 0, not %d)", k["balance"], k["partition"])
	}
	if k["mma"] == 0 {
		return nil
	}
	switch {
	case !a.mmaShape():
		return fmt.Errorf("paged attention: mma wants head_dim 32, 64, 128 or 256 and at most 16 query heads per KV head, not %d and %d", a.HeadDim, a.group())
	case k["heads_per_block"] > 16:
		return fmt.Errorf("paged attention: mma takes at most 16 query heads per block (the rows of m16n8k16), not %d", k["heads_per_block"])
	case k["vec"] != 8:
		return fmt.Errorf("paged attention: mma copies whole rows (vec pinned to 8, not %d)", k["vec"])
	case k["unroll"] > 2:
		return fmt.Errorf("paged attention: mma takes 8 or 16 tokens per warp step (unroll 1 or 2, not %d)", k["unroll"])
	case k["prefetch"] < 2:
		return fmt.Errorf("paged attention: mma stages its rows in a cp.async ring (prefetch ≥ 2, not %d)", k["prefetch"])
	}
	return nil
}

// mmaShape: a head row is 2, 4, 8 or 16 ldmatrix chunk pairs and a warp's
// copy instruction covers whole rows (head_dim/8 divides 32), and the
// query heads of a KV head fit the 16 rows of the mma.
func (a PagedAttention) mmaShape() bool {
	return a.HeadDim%32 == 0 && 32%(a.HeadDim/8) == 0 && a.group() <= 16
}

// Default (the H200 tune's winner at block size 16, then the microbenchmarks
// of the cp.async ring): all query heads of a KV head in one block (each
// key is loaded once), 16 dims per lane with two tokens per lane group
// per step and a two-stage cp.async ring (the next step's copies in flight
// during this step's math, registers left free; on the H100 two tokens
// beat four by 1.2% at block size 16 and 1.8% at 128, and three stages
// were no better), else 8 dims per lane with
// two tokens per step prefetched into registers, and split-KV partitions
// when sequences × KV heads alone give fewer than one block per SM (ring)
// or four (registers). At batch 32 (256 blocks, two per SM resident at
// 202 registers) nothing split was faster on the H100, whatever the grid's
// evenness: 184.5 µs unsplit at block size 16 against 205.7 in 2048-token
// partitions, 209.5 in 1024 (merged in-kernel), 208.7 balanced over two
// blocks per SM (balance=2) and 249 over one; eight warps 187.1, three
// stages 185.9. Time grows with the bytes from batch 31 to 33 (179.4,
// 184.5, 189.3 µs: the DRAM, not the 8 SMs holding one block, sets the
// pace); the blocks of a sequence reading the same pages at the same time
// is worth more than an even grid. At batch 16 (128 blocks) the default's
// 2048-token partitions took 106.7 µs, 1024 110.5, balance=2 114.6,
// unsplit 118.1 and balance=1 132.3.
//
// Later H100 probes at batch 32 (variants of this kernel side by side in
// one process, five rounds, L2 flushed; block sizes 16 / 128; this default
// 184.4 / 184.3 µs, SDPA 181.1, the read kernel over the same bytes 176.9)
// found nothing faster beyond noise: cp.async L2::128B / 256B prefetch
// hints and an L2 evict-first policy ±0.1%; issuing the first copies
// before loading q 0.1% slower; a cluster of the 8 KV heads of a sequence
// (co-scheduled, to read each 2 KB token row together) 277 / 268 µs, and
// of 4 heads 278 / 271 (clusters do not all fit in one wave), of 2 heads
// ±0.3%; one block per (sequence, 1024 tokens) whose 8 warps are the 8 KV
// heads (whole token rows per step, partials merged by the last block,
// 128 blocks) 214 / 214, with a bulk L2 prefetch of the rows 2 or 4 steps
// ahead 215–218. Eight warps with 8 dims per lane (warps=8, vec=8; 16 warps per SM)
// were faster at every block size but by 0.05–0.7% in the harness (183.5,
// 182.5, 184.5, 182.2 µs against 184.7, 183.0, 184.8, 182.3 at 16, 32,
// 64, 128; SDPA 180.7), a tie by the 2% rule. The same copies with no
// math at all took 179.2 / 178.1 µs: the access pattern leaves about 1.5%
// over SDPA, and the math, not the layout, takes the rest.
//
// Hence mma=1 (mmaSegment), the default wherever the shape allows: q·k and
// p·v on tensor cores take the CUDA-core dot products, shuffle trees and
// bf16 converts out of the loop. In the harness (llmir cuda bench --match
// attention --knobs 'mma=0,vec=16,unroll=2;…', H100, one call) it took
// 180.2 / 179.2 / 179.9 / 178.4 µs at block sizes 16 / 32 / 64 / 128
// against 184.7 / 183.2 / 184.5 / 181.9 for the CUDA-core default
// (2.5 / 2.2 / 2.6 / 2.0% faster; another call 2.3 / 1.9 / 2.6 / 1.9%),
// SDPA 179.8–182.0 in those calls. Probe variants (side by side, five
// rounds, block size 16 unless said): 8 tokens per warp step beat 16 (the
// stages of 16 hold twice the bytes; 182.3 against 180.5 µs on one
// machine, 174.7 against 176.6 on another), 32 was slower again; three
// stages +0.5–0.9%, and three with the copies issued after the wait (two
// stages in flight throughout) equal to two; 8 warps +1.2–2.6%, 5 or 6
// +0.3–0.5%, 3 +1.5%, 2 +7%; the S chains split in two, no token mask on
// whole steps, ex2.approx and issuing the first copies before q each
// 0.03–0.1% faster (the first three are in); L2::128B / 256B hints ±0.05%;
// a cluster of 2 KV heads +0.1%, and a cluster barrier per step to keep
// a sequence's heads reading the same pages together +3.5% (2 and 4 heads).
// The same copies with no math took 178.9 µs where this kernel took 180.1
// (SDPA 179.7–179.9): the math still costs about 0.7%, and not in
// proportion to its work: without the p·v products 180.4, without q·k
// 179.8; keeping two stages in flight through the math (above) and reading
// the block-table entry a step ahead (180.0) changed nothing either, nor
// did two adjacent KV heads per block of 8 warps (128 blocks, their rows
// 512 contiguous bytes: 180.1 / 179.6 / 178.6 against 180.4 / 179.9 /
// 178.7 at block sizes 16 / 64 / 128, SDPA 180.3).
func (a PagedAttention) Default(s *schedule.Schedule, hw kernels.Hardware) error {
	v := map[string]int64{"warps": 4, "partition": 0, "heads_per_block": a.group(), "vec": 8, "unroll": 2, "prefetch": 1}
	// Tensor cores where the shape allows, 8 tokens per warp step and two
	// stages (see mmaSegment); else 16 dims per lane when the head allows:
	// half the shuffles per score of 8, for twice the registers.
	switch {
	case a.mmaShape():
		v["mma"], v["unroll"], v["prefetch"] = 1, 1, 2
	case a.HeadDim%16 == 0 && 32%(a.HeadDim/16) == 0:
		v["vec"], v["unroll"], v["prefetch"] = 16, 2, 2
	case a.HeadDim%8 != 0 || 32%(a.HeadDim/8) != 0:
		v["vec"] = 4
	}
	blocks := a.Batch * a.KVHeads
	sms := int64(max(hw.Threads, 1))
	// With the ring one block per SM already streams (batch 32: 256 blocks
	// unsplit, 139 µs against 145 µs in 2048-token partitions on an H200);
	// register prefetch wants four.
	enough := 4 * sms
	if v["prefetch"] >= 2 {
		enough = sms
	}
	for _, p := range []int64{2048, 1024, 512, 256} {
		if blocks >= enough {
			break
		}
		if a.Context > p {
			v["partition"] = p
			blocks = a.Batch * a.KVHeads * ((a.Context + p - 1) / p)
		}
	}
	return a.knobs().ChooseWhere(s, v, a.valid)
}

// EmitCUDA writes the kernels for the knobs in s.
func (a PagedAttention) EmitCUDA(s *schedule.Schedule, gpu cuda.GPU, entry string) (string, error) {
	if err := a.check(); err != nil {
		return "", err
	}
	k, err := knobsOf(a.knobs(), s)
	if err != nil {
		return "", err
	}
	return a.emit(k, gpu.SMs, entry)
}

// emit writes the kernels for knob values k on a GPU of sms SMs.
func (a PagedAttention) emit(k map[string]int64, sms int, entry string) (string, error) {
	W, P, HPB, V, U, PF, BAL, MMA := k["warps"], k["partition"], k["heads_per_block"], k["vec"], k["unroll"], k["prefetch"], k["balance"], k["mma"]
	lpt := a.HeadDim / V
	if a.HeadDim%V != 0 || lpt > 32 || 32%lpt != 0 {
		return "", fmt.Errorf("paged attention: head_dim %d / vec %d = %d lanes per token, want a divisor of 32", a.HeadDim, V, lpt)
	}
	if a.group()%HPB != 0 {
		return "", fmt.Errorf("paged attention: heads_per_block %d does not divide the group %d", HPB, a.group())
	}
	if smem := 4 * W * HPB * (a.HeadDim + 2); smem > 48<<10 {
		return "", fmt.Errorf("paged attention: %d bytes of shared memory for warps %d × heads %d (max 48 KiB)", smem, W, HPB)
	}
	if err := a.valid(k); err != nil {
		return "", err
	}
	if PF >= 2 && V == 4 {
		return "", fmt.Errorf("paged attention: a cp.async ring (prefetch %d) copies 16 bytes per lane, vec %d is 8", PF, V)
	}
	ring := ringBytes(W, U, V, PF)
	// Tokens per step of the block (a warp step of each warp).
	unit := W * (32 / (a.HeadDim / V)) * U
	if MMA == 1 {
		ring, unit = mmaRingBytes(W, U, PF, a.HeadDim), W*8*U
	}
	if ring+4*W*HPB*(a.HeadDim+2) > maxSmemPerBlock {
		return "", fmt.Errorf("paged attention: %d bytes of shared memory for a %d-stage ring of warps %d × unroll %d (max %d)", ring, PF, W, U, maxSmemPerBlock)
	}
	span := a.maxBlocks() * a.BlockSize
	if P == 0 || P >= span {
		P = 0
	}
	parts := int64(1)
	part := span
	if P > 0 {
		parts, part = (span+P-1)/P, P
	}
	ev, err := a.evenSplit(unit, HPB, BAL, sms)
	if err != nil {
		return "", err
	}
	slots := parts
	if BAL > 0 {
		slots = ev.slots
	}
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: warps=%d partition=%d heads_per_block=%d vec=%d unroll=%d prefetch=%d balance=%d mma=%d
constexpr int B = %d, QH = %d, KVH = %d, D = %d, BS = %d, MAXB = %d;
constexpr int GROUP = QH / KVH, HPB = %d, WARPS = %d, V = %d, U = %d;
constexpr bool PREFETCH = %t;
constexpr int LPT = D / V;            // lanes per token
constexpr int CH = V == 16 ? 8 : V;   // elements per 16-byte load
constexpr int VEC16_STRIDE = D / 2;   // a lane's second half, with V = 16
constexpr int TPW = 32 / LPT;         // tokens per warp step
constexpr int NG = KVH * (GROUP / HPB);  // head groups (blocks) per sequence
constexpr int PART = %d, NPART = %d;  // tokens per partition, partitions
// Balanced split (EVEN): the padded token space [B][NG][UPP units of
// WARPS·TPW·U tokens] cut into GRID chunks of CHUNK units, one per block.
constexpr bool EVEN = %t;
constexpr int UPP = %d, CHUNK = %d, GRID = %d;
constexpr int UNIT = %d;              // tokens per block step
constexpr int NSLOT = %d;             // partial slots per (sequence, head)
constexpr size_t HALF = (size_t)%d * BS * KVH * D;  // V's offset in the pool
constexpr float SCALE_LOG2 = %.9ef;  // log2(e) / sqrt(D)
`, a.Name(), W, P, HPB, V, U, PF, BAL, MMA, a.Batch, a.QHeads, a.KVHeads, a.HeadDim, a.BlockSize, a.maxBlocks(),
		HPB, W, V, U, PF == 1, part, parts, BAL > 0, ev.upp, ev.chunk, ev.grid, unit, slots, a.numBlocks(), math.Log2E/math.Sqrt(float64(a.HeadDim)))
	if MMA == 1 {
		fmt.Fprintf(&b, "constexpr int PF = %d, TW = %d;        // ring stages, tokens per warp step\n", PF, 8*U)
		b.WriteString(tensorCoreHelpers)
		b.WriteString(mmaSegment)
	} else {
		b.WriteString(unpackLoad(V))
		if PF >= 2 {
			b.WriteString(ringHelpers(V, PF))
		}
		b.WriteString(vecSegment(PF))
	}
	b.WriteString(mergeTail)
	b.WriteString(kernelTail)
	launchRing, ringArg := "", "0"
	if ring > 0 {
		// Opted into whatever the size: with the static merge buffers a
		// ring of 48 KiB or less can still pass the default limit.
		ringArg = fmt.Sprint(ring)
		launchRing = fmt.Sprintf("  static cudaError_t opt = cudaFuncSetAttribute(attn, cudaFuncAttributeMaxDynamicSharedMemorySize, %d);\n  if (opt != cudaSuccess) return (int)opt;\n", ring)
	}
	fmt.Fprintf(&b, entryTemplate, workspaceHelper, entry, launchRing, ringArg, launchCheck)
	return b.String(), nil
}

// vecSegment is the CUDA-core body (mma 0): the lane groups' dot products,
// online softmax and accumulation, the warp merge by shuffles, and the
// warps' partials into shared memory (mergeTail goes on from there).
func vecSegment(prefetch int64) string {
	var b strings.Builder
	b.WriteString(`
// load_kv loads the keys and values of tokens t0 + u·WARPS·TPW (u < U)
// of this lane's dims; ok[u] says whether token u exists.
__device__ __forceinline__ void load_kv(const __nv_bfloat16 *__restrict__ pool, const int *__restrict__ bt, int t0,
    int tend, int kvh, int d0, vec_t (&kv)[U], vec_t (&vv)[U], bool (&ok)[U]) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int t = t0 + u * WARPS * TPW;
    ok[u] = t < tend;
    if (ok[u]) {
      const size_t off = (((size_t)bt[t / BS] * BS + t % BS) * KVH + kvh) * D + d0;
      kv[u] = ldv(pool + off);
      vv[u] = ldv(pool + HALF + off);
    }
  }
}

// segment attends head group x (a KV head and HPB of its query heads) of
// sequence b over tokens [tbeg, tend), and stores the result in out
// (whole) or as partial pslot of (sequence, head): max, sum and the
// unnormalised accumulator. Scores are kept in log2 units (exp2f).
__device__ __forceinline__ void segment(const __nv_bfloat16 *__restrict__ q,
    const __nv_bfloat16 *__restrict__ pool, const int *__restrict__ block_tables, __nv_bfloat16 *__restrict__ out,
    float *__restrict__ part_ml, float *__restrict__ part_acc, int b, int x, int tbeg, int tend, int pslot, bool whole) {
  const int kvh = x / (GROUP / HPB);
  const int h0 = kvh * GROUP + (x % (GROUP / HPB)) * HPB;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Lane dims: d0 + v for v < CH, and d0 + D/2 + v − CH above (V = 16).
  const int sub = lane / LPT, d0 = (lane % LPT) * CH;
  const int *bt = block_tables + (size_t)b * MAXB;

  float qf[HPB][V], m[HPB], l[HPB], acc[HPB][V];
#pragma unroll
  for (int h = 0; h < HPB; h++) {
    unpack(ldv(q + ((size_t)b * QH + h0 + h) * D + d0), qf[h]);
#pragma unroll
    for (int v = 0; v < V; v++) {
      qf[h][v] *= SCALE_LOG2;
      acc[h][v] = 0.f;
    }
    m[h] = -INFINITY;
    l[h] = 0.f;
  }
  // base is uniform across the warp, so every lane reaches every shuffle.
  // The U tokens of a step are loaded first (U loads in flight per lane),
  // scored, and folded into the online softmax with one rescale per step;
  // with PREFETCH the next step's loads are issued before this step's math.
`)
	b.WriteString(loopHead(prefetch))
	b.WriteString(`    float s[U][HPB];
#pragma unroll
    for (int u = 0; u < U; u++) {
      float kf[V];
      if (ok[u]) {
        unpack(kv[u], kf);
      } else {
#pragma unroll
        for (int v = 0; v < V; v++) kf[v] = 0.f;
      }
#pragma unroll
      for (int h = 0; h < HPB; h++) {
        float d = 0.f;
#pragma unroll
        for (int v = 0; v < V; v++) d = fmaf(qf[h][v], kf[v], d);
#pragma unroll
        for (int o = LPT / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        s[u][h] = ok[u] ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < HPB; h++) {
      float mn = m[h];
#pragma unroll
      for (int u = 0; u < U; u++) mn = fmaxf(mn, s[u][h]);
      // Rescale only when the running max grows, which after the first
      // tokens is rare: the multiply of every accumulator is skipped.
      if (mn > m[h]) {
        const float c = exp2f(m[h] - mn);  // 0 while m is still -inf
        l[h] *= c;
#pragma unroll
        for (int v = 0; v < V; v++) acc[h][v] *= c;
        m[h] = mn;
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      if (!ok[u]) continue;
      float vf[V];
      unpack(vv[u], vf);
#pragma unroll
      for (int h = 0; h < HPB; h++) {
        const float p = exp2f(s[u][h] - m[h]);
        l[h] += p;
#pragma unroll
        for (int v = 0; v < V; v++) acc[h][v] = fmaf(p, vf[v], acc[h][v]);
      }
    }
`)
	b.WriteString(loopTail(prefetch))
	b.WriteString(`  // Merge the warp's token slots (lanes LPT apart hold the same dims).
#pragma unroll
  for (int o = LPT; o < 32; o <<= 1) {
#pragma unroll
    for (int h = 0; h < HPB; h++) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m[h], o);
      const float l2 = __shfl_xor_sync(0xffffffffu, l[h], o);
      const float mn = fmaxf(m[h], m2);
      const float c1 = mn == -INFINITY ? 0.f : exp2f(m[h] - mn);
      const float c2 = mn == -INFINITY ? 0.f : exp2f(m2 - mn);
      l[h] = l[h] * c1 + l2 * c2;
#pragma unroll
      for (int v = 0; v < V; v++) {
        const float a2 = __shfl_xor_sync(0xffffffffu, acc[h][v], o);
        acc[h][v] = acc[h][v] * c1 + a2 * c2;
      }
      m[h] = mn;
    }
  }
  // Merge the warps through shared memory.
  __shared__ float sm_m[WARPS][HPB], sm_l[WARPS][HPB], sm_acc[WARPS][HPB][D];
  if (sub == 0) {
#pragma unroll
    for (int h = 0; h < HPB; h++) {
#pragma unroll
      for (int v = 0; v < V; v++) sm_acc[warp][h][d0 + v % CH + (v / CH) * (D / 2)] = acc[h][v];
      if (lane == 0) {
        sm_m[warp][h] = m[h];
        sm_l[warp][h] = l[h];
      }
    }
  }
`)
	return b.String()
}

// mergeTail ends a segment: the warps' partials in sm_m, sm_l and sm_acc
// merged into out (whole) or into partial slot pslot.
const mergeTail = `  __syncthreads();
  for (int i = threadIdx.x; i < HPB * D; i += WARPS * 32) {
    const int h = i / D, d = i % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; w++) mx = fmaxf(mx, sm_m[w][h]);
    float sum = 0.f, a = 0.f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < WARPS; w++) {
        const float c = exp2f(sm_m[w][h] - mx);
        sum += sm_l[w][h] * c;
        a += sm_acc[w][h][d] * c;
      }
    }
    const size_t row = (size_t)b * QH + h0 + h;
    if (whole) {
      out[row * D + d] = __float2bfloat16(sum > 0.f ? a / sum : 0.f);
    } else {
      const size_t pr = row * NSLOT + pslot;
      part_acc[pr * D + d] = a;
      if (d == 0) {
        part_ml[2 * pr] = mx;
        part_ml[2 * pr + 1] = sum;
      }
    }
  }
}
`

// kernelTail is finish and the kernel around the segments.
const kernelTail = `
// finish is called by each of the n blocks holding a partial of head
// group x of sequence b once it is stored: the last to arrive merges
// slots 0 … n−1 in order (the result does not depend on which block is
// last) and resets the counter for the next launch, so no second kernel
// (and no launch gap) merges them.
__device__ __forceinline__ void finish(const float *__restrict__ part_ml, const float *__restrict__ part_acc,
    unsigned *__restrict__ count, __nv_bfloat16 *__restrict__ out, int b, int x, int n) {
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned *c = count + (size_t)b * NG + x;
    last = atomicAdd(c, 1u) == (unsigned)n - 1;
    if (last) *c = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int h0 = (x / (GROUP / HPB)) * GROUP + (x % (GROUP / HPB)) * HPB;
  for (int i = threadIdx.x; i < HPB * D; i += WARPS * 32) {
    const int h = i / D, d = i % D;
    const size_t row = (size_t)b * QH + h0 + h;
    float mx = -INFINITY;
    for (int p = 0; p < n; p++) mx = fmaxf(mx, __ldcg(part_ml + 2 * (row * NSLOT + p)));
    float sum = 0.f, a = 0.f;
    if (mx != -INFINITY) {
      for (int p = 0; p < n; p++) {
        const size_t pr = row * NSLOT + p;
        const float c = exp2f(__ldcg(part_ml + 2 * pr) - mx);
        sum += __ldcg(part_ml + 2 * pr + 1) * c;
        a += __ldcg(part_acc + pr * D + d) * c;
      }
    }
    out[row * D + d] = __float2bfloat16(sum > 0.f ? a / sum : 0.f);
  }
}

// Without EVEN one block is head group blockIdx.x of sequence blockIdx.y,
// partition blockIdx.z: the heads vary fastest, so that the blocks of one
// sequence run together and read its pages (all heads of a token are
// contiguous) together. With EVEN block i takes units [i·CHUNK, (i+1)·CHUNK)
// of the padded token space in order: every block streams the same number
// of tokens in at most a few segments, whatever the number of (sequence,
// head) pairs per SM, but the blocks of one sequence no longer read the
// same tokens at the same time.
__global__ void __launch_bounds__(WARPS * 32) attn(const __nv_bfloat16 *__restrict__ q,
    const __nv_bfloat16 *__restrict__ pool, const int *__restrict__ block_tables,
    const int *__restrict__ context_lens, __nv_bfloat16 *__restrict__ out,
    float *__restrict__ part_ml, float *__restrict__ part_acc, unsigned *__restrict__ count) {
  if (!EVEN) {
    const int b = blockIdx.y, tbeg = blockIdx.z * PART;
    segment(q, pool, block_tables, out, part_ml, part_acc, b, blockIdx.x, tbeg, min(context_lens[b], tbeg + PART),
        blockIdx.z, NPART == 1);
    if (NPART > 1) finish(part_ml, part_acc, count, out, b, blockIdx.x, NPART);
    return;
  }
  const int u1 = min(B * NG * UPP, (int)(blockIdx.x + 1) * CHUNK);
  for (int u = blockIdx.x * CHUNK; u < u1;) {
    const int pair = u / UPP, b = pair / NG, x = pair % NG;
    const int ue = min(u1, (pair + 1) * UPP);
    // The blocks sharing this pair: first … first + n − 1.
    const int first = pair * UPP / CHUNK, n = ((pair + 1) * UPP - 1) / CHUNK - first + 1;
    const int ctx = context_lens[b];
    segment(q, pool, block_tables, out, part_ml, part_acc, b, x, (u - pair * UPP) * UNIT,
        min(ctx, (ue - pair * UPP) * UNIT), blockIdx.x - first, n == 1);
    if (n > 1) finish(part_ml, part_acc, count, out, b, x, n);
    __syncthreads();  // the next segment reuses the merge buffers
    u = ue;
  }
}
`

// entryTemplate is the host entry: workspace helper, entry name, the ring's
// opt-in, its dynamic shared memory and the launch check.
const entryTemplate = `
%s
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  // Partition results: (max, sum) pairs, then accumulators, then a zeroed
  // counter per (sequence, head group).
  const size_t nws = NSLOT > 1 ? (size_t)B * QH * NSLOT * (D + 2) : 0;
  float *scratch = nullptr;
  if (NSLOT > 1) {
    cudaError_t e = workspace(sizeof(float) * nws, sizeof(unsigned) * B * NG, (void **)&scratch);
    if (e != cudaSuccess) return (int)e;
  }
  float *ml = scratch, *pacc = scratch ? scratch + (size_t)2 * B * QH * NSLOT : nullptr;
  const dim3 grid = EVEN ? dim3(GRID) : dim3(NG, B, NPART);
%s  attn<<<grid, WARPS * 32, %s, cudaStreamLegacy>>>((const __nv_bfloat16 *)bufs[0],
      (const __nv_bfloat16 *)bufs[1], (const int *)bufs[2], (const int *)bufs[3], (__nv_bfloat16 *)bufs[4], ml, pacc,
      scratch ? (unsigned *)(scratch + nws) : nullptr);
%s}
`

// evenSplit is the grid of balance > 0: the padded token space of every
// (sequence, head group) pair, in units of one block step (warps · tokens
// per warp step · unroll), cut into chunks for balance × SMs blocks; slots
// bounds the blocks that share one pair.
type evenSplit struct{ upp, chunk, grid, slots int64 }

func (a PagedAttention) evenSplit(unit, HPB, balance int64, sms int) (evenSplit, error) {
	if balance <= 0 {
		// Unused, but a valid divisor in the dead branch.
		return evenSplit{upp: 1, chunk: 1, grid: 1, slots: 1}, nil
	}
	upp := (a.maxBlocks()*a.BlockSize + unit - 1) / unit
	units := a.Batch * a.KVHeads * (a.group() / HPB) * upp
	if units >= math.MaxInt32/2 {
		return evenSplit{}, fmt.Errorf("paged attention: %d units of %d tokens overflow the balanced split's int indices", units, unit)
	}
	want := balance * int64(max(sms, 1))
	chunk := (units + want - 1) / want
	grid := (units + chunk - 1) / chunk
	// A pair of upp units meets at most ⌈upp/chunk⌉ + 1 chunks.
	return evenSplit{upp: upp, chunk: chunk, grid: grid, slots: (upp+chunk-1)/chunk + 1}, nil
}

// maxSmemPerBlock is the shared memory a block may opt into on sm_90.
const maxSmemPerBlock = 227 << 10

// ringBytes is the dynamic shared memory of the cp.async ring: prefetch
// stages of U tokens' keys and values (vec/8 16-byte pieces each) per lane.
func ringBytes(warps, unroll, vec, prefetch int64) int64 {
	if prefetch < 2 {
		return 0
	}
	return 16 * prefetch * unroll * 2 * (vec / 8) * warps * 32
}

// loopHead opens the token loop: kv, vv and ok hold the step's keys,
// values and flags when the body starts. prefetch 0 loads them at the end
// of the previous step, 1 issues the next step's loads into registers
// before this step's math, p ≥ 2 keeps p − 1 steps in flight with cp.async
// into a ring in shared memory (deeper than registers allow, and the
// registers stay free for more warps per SM).
func loopHead(prefetch int64) string {
	if prefetch < 2 {
		return `  constexpr int STEP = WARPS * TPW * U;
  vec_t kv[U], vv[U];
  bool ok[U];
  load_kv(pool, bt, tbeg + warp * TPW + sub, tend, kvh, d0, kv, vv, ok);
  for (int base = tbeg + warp * TPW; base < tend; base += STEP) {
    vec_t kn[U], vn[U];
    bool okn[U];
    if (PREFETCH) load_kv(pool, bt, base + STEP + sub, tend, kvh, d0, kn, vn, okn);
`
	}
	return `  constexpr int STEP = WARPS * TPW * U;
  vec_t kv[U], vv[U];
  bool ok[U];
  extern __shared__ uint4 ring[];
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    issue_kv(ring, p, pool, bt, tbeg + warp * TPW + sub + p * STEP, tend, kvh, d0);
    cp_async_commit();
  }
  int slot = 0;
  for (int base = tbeg + warp * TPW; base < tend; base += STEP) {
    // Always commit a group (empty past the end), so that waiting for all
    // but the newest PF − 1 groups means this step's copies have landed;
    // each lane reads back only its own copies, so no barrier is needed.
    issue_kv(ring, slot == 0 ? PF - 1 : slot - 1, pool, bt, base + (PF - 1) * STEP + sub, tend, kvh, d0);
    cp_async_commit();
    cp_async_wait<PF - 1>();
#pragma unroll
    for (int u = 0; u < U; u++) {
      ok[u] = base + sub + u * WARPS * TPW < tend;
      kv[u] = lds_kv(ring, slot, u, 0);
      vv[u] = lds_kv(ring, slot, u, 1);
    }
    slot = slot + 1 == PF ? 0 : slot + 1;
`
}

// loopTail closes the token loop of loopHead.
func loopTail(prefetch int64) string {
	if prefetch < 2 {
		return `    if (PREFETCH) {
#pragma unroll
      for (int u = 0; u < U; u++) {
        kv[u] = kn[u];
        vv[u] = vn[u];
        ok[u] = okn[u];
      }
    } else {
      load_kv(pool, bt, base + STEP + sub, tend, kvh, d0, kv, vv, ok);
    }
  }
`
	}
	return "  }\n"
}

// ringHelpers are the cp.async ring's copies and reads. The ring is
// [PF][U][K, V][vec/8 pieces][WARPS·32 lanes] of 16-byte pieces: a piece
// of all lanes is contiguous, so both the copies and the reads are free of
// bank conflicts.
func ringHelpers(vec, prefetch int64) string {
	read := "return p[0];"
	if vec == 16 {
		read = "return vec_t{p[0], p[WARPS * 32]};"
	}
	return fmt.Sprintf(`constexpr int PF = %d;              // ring stages
constexpr int VW = V / 8;             // 16-byte pieces per lane and token
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
  asm volatile("cp.async.cg.shared.global [%%0], [%%1], 16;\n" ::"r"((unsigned)__cvta_generic_to_shared(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %%0;\n" ::"n"(N)); }

// issue_kv copies the keys and values of tokens t0 + u·WARPS·TPW (u < U)
// of this lane's dims into ring stage slot.
__device__ __forceinline__ void issue_kv(uint4 *ring, int slot, const __nv_bfloat16 *__restrict__ pool,
    const int *__restrict__ bt, int t0, int tend, int kvh, int d0) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int t = t0 + u * WARPS * TPW;
    if (t < tend) {
      const size_t off = (((size_t)bt[t / BS] * BS + t %% BS) * KVH + kvh) * D + d0;
      uint4 *k = ring + (size_t)((slot * U + u) * 2) * VW * (WARPS * 32) + threadIdx.x;
#pragma unroll
      for (int p = 0; p < VW; p++) {
        cp_async16(k + p * (WARPS * 32), pool + off + p * VEC16_STRIDE);
        cp_async16(k + (VW + p) * (WARPS * 32), pool + HALF + off + p * VEC16_STRIDE);
      }
    }
  }
}

// lds_kv reads back this lane's keys (which = 0) or values (1) of token u.
__device__ __forceinline__ vec_t lds_kv(const uint4 *ring, int slot, int u, int which) {
  const uint4 *p = ring + (size_t)((slot * U + u) * 2 + which) * VW * (WARPS * 32) + threadIdx.x;
  %s
}
`, prefetch, read)
}

// mmaRingBytes is the dynamic shared memory of the tensor-core ring:
// prefetch stages of each warp's K and V tiles (8·unroll token rows each).
func mmaRingBytes(warps, unroll, prefetch, headDim int64) int64 {
	return prefetch * warps * 2 * 8 * unroll * headDim * 2
}

// mmaSegment is the tensor-core body (mma 1). Each warp stages TW whole
// token rows of K and V per step in its own slots of a cp.async ring
// (16-byte chunks XOR-swizzled by row, zero-filled past the end, so that
// the 8 rows one ldmatrix reads hit distinct banks and a missing token
// multiplies as 0), then computes S = Q·Kᵀ with mma.sync m16n8k16: the
// HPB query heads are the rows of A (padded to 16 with zero rows), K
// (ldmatrix) the B columns, f32 accumulation. The online softmax runs on
// the C fragments, whose layout is P's A fragment as it stands (the
// FlashAttention-2 arrangement: no shuffles between the two products), and
// O += P·V takes V by ldmatrix.trans (m16n8k8 for 8 tokens, m16n8k16 for
// 16). P is rounded to bf16 for the product and l sums the rounded values.
const mmaSegment = mmaRowConsts + `constexpr int TILE = TW * D * 2;      // bytes of one K (or V) tile
constexpr int WSTAGE = 2 * TILE;      // a warp's stage: K then V
static_assert(HPB <= 16 && D % 32 == 0 && 32 % CPR == 0 && (TW == 8 || TW == 16), "mma shape");
` + mmaFragHelpers + mmaSegmentBody

// mmaRowConsts are the chunk geometry of a head row in a swizzled tile
// (D, the head dim, is a constexpr of the including source).
const mmaRowConsts = `
constexpr int CPR = D / 8;            // 16-byte chunks per token row
constexpr int RPI = 32 / CPR;         // rows a warp copies per instruction
constexpr int SWZ = CPR % 8 == 0 ? 7 : CPR % 4 == 0 ? 3 : 1;
`

// mmaFragHelpers are the attention kernels' fragment helpers beside
// tensorCoreHelpers: ldmatrix.trans (V as the B operand), m16n8k8, exp2,
// the bf16 pair rounding of P, and the swizzled offset of a tile chunk.
const mmaFragHelpers = `__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void mma1688(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(b0));
}
// ex2 is 2^x (x ≤ 0 here: a result below 2^-126 is 0 either way).
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
// pack_bf16 rounds two floats to a bf16 pair (lo in the low half).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// swz is the byte offset of (row r, chunk c) in a tile.
__device__ __forceinline__ uint32_t swz(int r, int c) { return (uint32_t)(r * CPR + (c ^ (r & SWZ))) * 16; }
`

// mmaSegmentBody is paged attention's copies and segment (mma 1).
const mmaSegmentBody = `
// issue_rows copies the K and V rows of tokens base … base + TW − 1 into
// the warp's stage at shared address st (zero-filled from tend on). base
// is a multiple of TW (segments start at multiples of the block step), so
// with BS % TW == 0 the step's rows lie in one page: one table read.
__device__ __forceinline__ void issue_rows(uint32_t st, const __nv_bfloat16 *__restrict__ pool,
    const int *__restrict__ bt, int base, int tend, int kvh, int lane) {
  const int c = lane % CPR, r0 = lane / CPR;
  size_t row0 = 0;
  if (BS % TW == 0 && base < tend) row0 = ((size_t)__ldg(bt + base / BS) * BS + base % BS) * KVH + kvh;
#pragma unroll
  for (int i = 0; i < TW / RPI; i++) {
    const int r = r0 + i * RPI, t = base + r;
    const bool ok = t < tend;
    size_t off = 0;
    if (ok) {
      off = BS % TW == 0 ? (row0 + (size_t)r * KVH) * D + c * 8
                         : (((size_t)__ldg(bt + t / BS) * BS + t % BS) * KVH + kvh) * D + c * 8;
    }
    const uint32_t dst = st + swz(r, c);
    cp_async16(dst, pool + off, ok ? 16 : 0);
    cp_async16(dst + TILE, pool + HALF + off, ok ? 16 : 0);
  }
}

// segment attends head group x (a KV head and HPB of its query heads) of
// sequence b over tokens [tbeg, tend), and stores the result in out
// (whole) or as partial pslot of (sequence, head): max, sum and the
// unnormalised accumulator. Scores are kept in log2 units (exp2f). Lane
// 4g + t holds query heads h0 + g (C elements 0, 1) and h0 + g + 8 (2, 3).
__device__ __forceinline__ void segment(const __nv_bfloat16 *__restrict__ q,
    const __nv_bfloat16 *__restrict__ pool, const int *__restrict__ block_tables, __nv_bfloat16 *__restrict__ out,
    float *__restrict__ part_ml, float *__restrict__ part_acc, int b, int x, int tbeg, int tend, int pslot, bool whole) {
  const int kvh = x / (GROUP / HPB);
  const int h0 = kvh * GROUP + (x % (GROUP / HPB)) * HPB;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int *bt = block_tables + (size_t)b * MAXB;
  extern __shared__ uint4 ring[];
  const uint32_t wbase = (uint32_t)__cvta_generic_to_shared(ring) + warp * WSTAGE;
  constexpr uint32_t SLOT = WARPS * WSTAGE;  // bytes between a warp's stages
  // Q as the A operand (rows past HPB are zero).
  uint32_t qa[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    const __nv_bfloat16 *r0 = q + ((size_t)b * QH + h0 + g) * D + kk * 16 + 2 * t4;
    const __nv_bfloat16 *r1 = r0 + 8 * D;
    qa[kk][0] = g < HPB ? *reinterpret_cast<const uint32_t *>(r0) : 0u;
    qa[kk][1] = g + 8 < HPB ? *reinterpret_cast<const uint32_t *>(r1) : 0u;
    qa[kk][2] = g < HPB ? *reinterpret_cast<const uint32_t *>(r0 + 8) : 0u;
    qa[kk][3] = g + 8 < HPB ? *reinterpret_cast<const uint32_t *>(r1 + 8) : 0u;
  }
  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  const int base0 = tbeg + warp * TW;
#pragma unroll
  for (int p = 0; p < PF - 1; p++) {
    issue_rows(wbase + p * SLOT, pool, bt, base0 + p * UNIT, tend, kvh, lane);
    cp_async_commit();
  }
  int slot = 0;
  for (int base = base0; base < tend; base += UNIT) {
    // Every lane is done reading the stage refilled next; always commit a
    // group (empty past the end), so that waiting for all but the newest
    // PF − 1 means this step's rows have landed; then the other lanes'
    // copies are made visible.
    __syncwarp();
    issue_rows(wbase + (slot == 0 ? PF - 1 : slot - 1) * SLOT, pool, bt, base + (PF - 1) * UNIT, tend, kvh, lane);
    cp_async_commit();
    cp_async_wait<PF - 1>();
    __syncwarp();
    const uint32_t kb = wbase + slot * SLOT, vb = kb + TILE;
    slot = slot + 1 == PF ? 0 : slot + 1;
    // S = Q·Kᵀ: n-tile j is tokens 8j … 8j + 7; one ldmatrix.x4 gives the
    // B fragments of two k-steps (rows 8j + lane%8, chunks 4kk + lane/8),
    // summed in two chains (even and odd k-steps) to halve the latency.
    float s[TW / 8][4];
#pragma unroll
    for (int j = 0; j < TW / 8; j++) {
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
    // Online softmax of rows g (elements 0, 1) and g + 8 (2, 3): a row's
    // tokens are spread over the 4 lanes of a quad. Only the last step of
    // a segment can hold tokens past its end.
    float mx0 = m0, mx1 = m1;
    const bool whole_step = base + TW <= tend;
#pragma unroll
    for (int j = 0; j < TW / 8; j++) {
#pragma unroll
      for (int e = 0; e < 4; e++)
        s[j][e] = whole_step || base + j * 8 + 2 * t4 + (e & 1) < tend ? s[j][e] * SCALE_LOG2 : -INFINITY;
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    if (HPB > 8) {
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    }
    // Token base exists, so the maxima are finite from the first step;
    // the accumulators are rescaled only when a maximum grows.
    if (mx0 > m0) {
      const float c = ex2(m0 - mx0);
      l0 *= c;
#pragma unroll
      for (int n = 0; n < D / 8; n++) acc[n][0] *= c, acc[n][1] *= c;
      m0 = mx0;
    }
    if (HPB > 8 && mx1 > m1) {
      const float c = ex2(m1 - mx1);
      l1 *= c;
#pragma unroll
      for (int n = 0; n < D / 8; n++) acc[n][2] *= c, acc[n][3] *= c;
      m1 = mx1;
    }
    // P as the A operand: n-tiles 2kt and 2kt + 1 of S are k-tile kt.
    uint32_t pa[(TW + 15) / 16][4];
#pragma unroll
    for (int j = 0; j < TW / 8; j++) {
      const uint32_t lo = pack_bf16(ex2(s[j][0] - m0), ex2(s[j][1] - m0));
      const uint32_t hi = HPB > 8 ? pack_bf16(ex2(s[j][2] - m1), ex2(s[j][3] - m1)) : 0u;
      l0 += bf_lo(lo) + bf_hi(lo);
      if (HPB > 8) l1 += bf_lo(hi) + bf_hi(hi);
      pa[j / 2][(j & 1) * 2] = lo;
      pa[j / 2][(j & 1) * 2 + 1] = hi;
    }
    // O += P·V: V rows are k, dims are n (ldmatrix.trans).
    if (TW == 8) {
#pragma unroll
      for (int nq = 0; nq < D / 32; nq++) {
        uint32_t r[4];
        ldsm_x4_t(r, vb + swz(lane % 8, 4 * nq + lane / 8));
#pragma unroll
        for (int i = 0; i < 4; i++) mma1688(acc[4 * nq + i], pa[0][0], pa[0][1], r[i]);
      }
    } else {
#pragma unroll
      for (int nd = 0; nd < D / 16; nd++) {
        uint32_t r[4];
        ldsm_x4_t(r, vb + swz(lane % 16, 2 * nd + lane / 16));
        mma(acc[2 * nd], pa[0], r);
        mma(acc[2 * nd + 1], pa[0], r + 2);
      }
    }
  }
  // The empty groups past the end are drained before the ring is reused.
  cp_async_wait<0>();
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  // The warps' partials through shared memory.
  __shared__ float sm_m[WARPS][HPB], sm_l[WARPS][HPB], sm_acc[WARPS][HPB][D];
#pragma unroll
  for (int half = 0; half < 2; half++) {
    const int h = g + 8 * half;
    if (h < HPB) {
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        sm_acc[warp][h][n * 8 + 2 * t4] = acc[n][2 * half];
        sm_acc[warp][h][n * 8 + 2 * t4 + 1] = acc[n][2 * half + 1];
      }
      if (t4 == 0) {
        sm_m[warp][h] = half ? m1 : m0;
        sm_l[warp][h] = half ? l1 : l0;
      }
    }
  }
`
