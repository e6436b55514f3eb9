package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"llmir/ir"
	"llmir/kernels/ref"
	"llmir/kvcache"
	"llmir/schedule"
)

// PagedAttention is decode attention over the paged KV cache
// (llmir.paged_attention): one query token per sequence, q [batch, QHeads,
// HeadDim], against the first context_lens[b] tokens of sequence b, found
// through its row of block_tables [batch, max_blocks]. The cache buffer is
// one layer of the kvcache layout, [2 (K, V)][num_blocks][BlockSize]
// [KVHeads][HeadDim]: the IR's layer attribute only offsets into the pool
// (it is not part of the workload), so the caller passes the layer's base.
//
// Batch, the pool's block count and the block-table width are dynamic dims
// (in that order); the block size is static, part of the cache's type. So
// the block size is a knob of the deployment, not of the kernel: the
// kernel's design space (Knobs) is per block size, and comparing block
// sizes 8…256 is a benchmark sweep over workloads with different cache
// types (bench.PagedAttention).
//
// The kernel returns an error (runtime_error) for a context length past
// the block table or a block id outside the pool, before reading anything.
type PagedAttention struct {
	Batch       int64 // sequences at run time
	BatchBucket int64 // 0: Batch
	QHeads      int64
	KVHeads     int64
	HeadDim     int64
	BlockSize   int64
	MaxBlocks   int64 // block-table width
	// NumBlocks is the pool's size; 0 means Batch·MaxBlocks, enough for
	// every sequence to hold MaxBlocks distinct blocks.
	NumBlocks int64
	// Lengths are the context lengths; nil draws them by rule (Uniform:
	// every sequence at MaxBlocks·BlockSize tokens; otherwise ragged from
	// 1 to that, with 1, BlockSize−1, BlockSize, BlockSize+1 among them).
	Lengths []int64
	Uniform bool
	// Elem is the storage type of q, the cache and out: F32 or BF16
	// (arithmetic is f32 either way).
	Elem schedule.DType
	// Scale multiplies q·k (0: 1/√HeadDim); Window > 0 keeps the Window
	// most recent keys.
	Scale  float64
	Window int64
	// IR is the module workload the kernel was made from (FromWorkload).
	IR *ir.Workload
}

func init() {
	register("llmir.paged_attention", pagedAttentionFromWorkload)
}

// pagedAttentionFromWorkload reads q [b, hq, d], the cache type, block
// tables [b, max_blocks] and the scale and window attributes. The pool's
// size is not in the workload (it is the deployment's choice): the kernel
// is measured on Batch·MaxBlocks blocks, one per table entry.
func pagedAttentionFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkArity(w, 4, 1); err != nil {
		return nil, err
	}
	q, cache, bt, cl := w.Inputs[0], w.Inputs[1], w.Inputs[2], w.Inputs[3]
	kv, err := parsePagedKV(cache.KV)
	if err != nil {
		return nil, fmt.Errorf("operand #1 (cache): %w", err)
	}
	if len(q.Shape) != 3 || len(bt.Shape) != 2 || len(cl.Shape) != 1 {
		return nil, fmt.Errorf("q %v, block_tables %v, context_lens %v: want ranks 3, 2, 1", q.Shape, bt.Shape, cl.Shape)
	}
	if bt.DType != "i32" || cl.DType != "i32" {
		return nil, fmt.Errorf("block_tables %s and context_lens %s must be i32", bt.DType, cl.DType)
	}
	if q.Shape[0] != bt.Shape[0] || q.Shape[0] != cl.Shape[0] {
		return nil, fmt.Errorf("batch of q %d, block_tables %d and context_lens %d differ", q.Shape[0], bt.Shape[0], cl.Shape[0])
	}
	if q.Shape[2] != kv.HeadDim {
		return nil, fmt.Errorf("q head_dim %d, cache head_dim %d", q.Shape[2], kv.HeadDim)
	}
	elem, err := kvElem(q.DType, cache.DType, w.Output[0].DType)
	if err != nil {
		return nil, err
	}
	scale, err := attrFloat(w.Attrs, "scale")
	if err != nil {
		return nil, err
	}
	window, err := attrFloat(w.Attrs, "sliding_window")
	if err != nil {
		return nil, err
	}
	k := PagedAttention{
		Batch: q.Shape[0], QHeads: q.Shape[1], KVHeads: kv.KVHeads, HeadDim: kv.HeadDim,
		BlockSize: kv.BlockSize, MaxBlocks: bt.Shape[1], Elem: elem, Scale: scale, Window: int64(window), IR: &w,
	}
	if _, err := k.Def(); err != nil {
		return nil, err
	}
	return k, nil
}

// pagedKV is the part of a !llmir.paged_kv type a kernel is specialised on.
type pagedKV struct{ BlockSize, KVHeads, HeadDim int64 }

// parsePagedKV reads a workload's cache signature,
// "paged_kv<block_size=16,kv_heads=2,head_dim=32>" (spaces around '=' and
// ',' and extra fields such as elem or layers are accepted).
func parsePagedKV(s string) (pagedKV, error) {
	body, ok := strings.CutPrefix(strings.TrimSpace(s), "paged_kv<")
	if !ok {
		body, ok = strings.CutPrefix(strings.TrimSpace(s), "!llmir.paged_kv<")
	}
	body, closed := strings.CutSuffix(body, ">")
	if !ok || !closed {
		return pagedKV{}, fmt.Errorf("cache type %q: want paged_kv<block_size=…,kv_heads=…,head_dim=…>", s)
	}
	var kv pagedKV
	fields := map[string]*int64{"block_size": &kv.BlockSize, "kv_heads": &kv.KVHeads, "head_dim": &kv.HeadDim}
	for _, f := range strings.Split(body, ",") {
		name, val, ok := strings.Cut(f, "=")
		if !ok {
			return pagedKV{}, fmt.Errorf("cache type %q: field %q has no '='", s, strings.TrimSpace(f))
		}
		p, known := fields[strings.TrimSpace(name)]
		if !known {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
		if err != nil || n < 1 {
			return pagedKV{}, fmt.Errorf("cache type %q: %s = %q, want a positive integer", s, strings.TrimSpace(name), strings.TrimSpace(val))
		}
		*p = n
	}
	for name, p := range fields {
		if *p == 0 {
			return pagedKV{}, fmt.Errorf("cache type %q: no %s", s, name)
		}
	}
	return kv, nil
}

// kvElem is the one storage type the paged kernels are specialised on:
// every listed tensor must have it, and it must be f32 or bf16.
func kvElem(dtypes ...string) (schedule.DType, error) {
	for _, d := range dtypes[1:] {
		if d != dtypes[0] {
			return 0, fmt.Errorf("element types %v differ (the kernel stores q, k, v, the cache and out in one type)", dtypes)
		}
	}
	switch dtypes[0] {
	case "f32":
		return schedule.F32, nil
	case "bf16":
		return schedule.BF16, nil
	}
	return 0, fmt.Errorf("element type %s: the paged kernels take f32 or bf16", dtypes[0])
}

// attrFloat reads a numeric attribute printed as MLIR text ("0.125 : f32",
// "4096 : i64"); a missing one is 0.
func attrFloat(attrs map[string]string, name string) (float64, error) {
	s, ok := attrs[name]
	if !ok {
		return 0, nil
	}
	num, _, _ := strings.Cut(s, ":")
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, fmt.Errorf("attribute %s = %q: want a finite non-negative number", name, s)
	}
	return v, nil
}

func (k PagedAttention) bucket() int64 { return bucketOr(k.BatchBucket, k.Batch) }

func (k PagedAttention) numBlocks() int64 { return bucketOr(k.NumBlocks, k.Batch*k.MaxBlocks) }

func (k PagedAttention) group() int64 { return k.QHeads / max(k.KVHeads, 1) }

// maxContext is the longest context a block-table row can describe.
func (k PagedAttention) maxContext() int64 { return k.MaxBlocks * k.BlockSize }

// lengths are the context lengths the kernel is measured at. They are a
// function of the kernel (not of the input seed) so that Bytes, the
// traffic actually read, is known before the inputs are drawn.
func (k PagedAttention) lengths() []int64 {
	if k.Lengths != nil {
		return k.Lengths
	}
	ctx, bs := k.maxContext(), k.BlockSize
	out := make([]int64, k.Batch)
	// Longest first, so that a batch of one measures the full context.
	special := []int64{ctx, 1, bs - 1, bs, bs + 1, ctx - 1, 2*bs + 1}
	rng := rand.New(rand.NewPCG(uint64(k.Batch)*7919+uint64(ctx), uint64(bs)))
	for i := range out {
		x := ctx
		switch {
		case k.Uniform:
		case i < len(special):
			x = special[i]
		default:
			x = 1 + rng.Int64N(ctx)
		}
		out[i] = min(max(x, 1), ctx)
	}
	return out
}

// span is the token range [start, n) a sequence of n tokens attends.
func (k PagedAttention) span(n int64) (int64, int64) {
	if k.Window > 0 && n > k.Window {
		return n - k.Window, n
	}
	return 0, n
}

// Name is e.g. "paged_attention/B=4,HQ=32,HKV=8,D=128,BS=16,MB=128/f32".
func (k PagedAttention) Name() string {
	return fmt.Sprintf("paged_attention/B=%d,HQ=%d,HKV=%d,D=%d,BS=%d,MB=%d/%s",
		k.Batch, k.QHeads, k.KVHeads, k.HeadDim, k.BlockSize, k.MaxBlocks, k.Elem)
}

// Def declares q, the cache (one layer), block_tables, context_lens and
// out; dynamic dims batch, num_blocks, max_blocks.
func (k PagedAttention) Def() (*schedule.Def, error) {
	bad := func(format string, a ...any) (*schedule.Def, error) {
		return nil, fmt.Errorf("paged_attention %s: %s", k.Name(), fmt.Sprintf(format, a...))
	}
	switch {
	case k.Batch < 1 || k.Batch > k.bucket():
		return bad("batch %d outside 1…%d", k.Batch, k.bucket())
	case k.QHeads < 1 || k.KVHeads < 1 || k.QHeads%k.KVHeads != 0:
		return bad("query heads %d are not a multiple of KV heads %d", k.QHeads, k.KVHeads)
	case k.HeadDim < 1 || k.BlockSize < 1 || k.MaxBlocks < 1:
		return bad("head_dim, block size and max_blocks must be positive")
	case k.Elem != schedule.F32 && k.Elem != schedule.BF16:
		return bad("element type %s (want f32 or bf16)", k.Elem)
	case k.Window < 0 || k.Scale < 0 || math.IsNaN(k.Scale):
		return bad("negative window or scale")
	case k.numBlocks() > math.MaxInt32/k.BlockSize:
		return bad("%d blocks of %d tokens exceed int32 slot numbers", k.numBlocks(), k.BlockSize)
	}
	lens := k.lengths()
	if int64(len(lens)) != k.Batch {
		return bad("%d context lengths for batch %d", len(lens), k.Batch)
	}
	var blocks int64
	for b, n := range lens {
		if n < 0 || n > k.maxContext() {
			return bad("sequence %d context %d outside 0…%d", b, n, k.maxContext())
		}
		blocks += (n + k.BlockSize - 1) / k.BlockSize
	}
	if blocks > k.numBlocks() {
		return bad("the sequences need %d blocks, the pool has %d", blocks, k.numBlocks())
	}
	B := schedule.Dynamic("batch", k.bucket())
	NB := schedule.Dynamic("num_blocks", k.numBlocks())
	MB := schedule.Dynamic("max_blocks", k.MaxBlocks)
	hq, hkv, d := schedule.Static(k.QHeads), schedule.Static(k.KVHeads), schedule.Static(k.HeadDim)
	q := schedule.Input("q", k.Elem, B, hq, d)
	cache := schedule.Input("cache", k.Elem, schedule.Static(2), NB, schedule.Static(k.BlockSize), hkv, d)
	bt := schedule.Input("block_tables", schedule.I32, B, MB)
	cl := schedule.Input("context_lens", schedule.I32, B)
	out := schedule.Declare("out", k.Elem, B, hq, d)
	return schedule.NewTemplateDef("paged_attention",
		"out[b, h] = softmax(scale·q[b, h]·K[b, h/group]ᵀ)·V[b, h/group] over the first context_lens[b] tokens, token j in slot j mod block_size of block block_tables[b, j/block_size]",
		[]*schedule.Tensor{q, cache, bt, cl}, out)
}

// Workload is the IR workload the kernel came from, or the one the IR
// would give for this shape.
func (k PagedAttention) Workload() ir.Workload {
	if k.IR != nil {
		return *k.IR
	}
	b, mb := ir.Bucket(k.bucket()), ir.Bucket(k.MaxBlocks)
	dt := k.Elem.String()
	kv := ir.TensorSig{DType: dt, KV: fmt.Sprintf("paged_kv<block_size=%d,kv_heads=%d,head_dim=%d>", k.BlockSize, k.KVHeads, k.HeadDim)}
	w := ir.Workload{
		Group: []string{"llmir.paged_attention"},
		Inputs: []ir.TensorSig{
			{Shape: []int64{b, k.QHeads, k.HeadDim}, Sym: []string{"batch", "", ""}, DType: dt},
			kv,
			{Shape: []int64{b, mb}, Sym: []string{"batch", "max_blocks"}, DType: "i32"},
			{Shape: []int64{b}, Sym: []string{"batch"}, DType: "i32"},
		},
		Output:  []ir.TensorSig{{Shape: []int64{b, k.QHeads, k.HeadDim}, Sym: []string{"batch", "", ""}, DType: dt}},
		Dynamic: map[string]int64{"batch": b, "max_blocks": mb},
	}
	if k.Scale != 0 || k.Window != 0 {
		w.Attrs = map[string]string{}
	}
	if k.Scale != 0 {
		w.Attrs["scale"] = ir.FloatAttr{V: float64(float32(k.Scale)), T: ir.F32}.String()
	}
	if k.Window != 0 {
		w.Attrs["sliding_window"] = ir.I64Attr(k.Window).String()
	}
	return w
}

// Dims are [batch, num_blocks, max_blocks].
func (k PagedAttention) Dims() []int64 { return []int64{k.Batch, k.numBlocks(), k.MaxBlocks} }

// tokensRead is the number of (token, KV head) rows of K (and of V) the
// kernel reads.
func (k PagedAttention) tokensRead() int64 {
	var n int64
	for _, l := range k.lengths() {
		s, e := k.span(l)
		n += e - s
	}
	return n
}

// FLOPs is 4·d per (token, query head): q·k and p·v.
func (k PagedAttention) FLOPs() float64 {
	return 4 * float64(k.tokensRead()*k.QHeads*k.HeadDim)
}

// Bytes is the K and V actually read (each read once per KV head, for all
// the query heads of its group) plus q and out.
func (k PagedAttention) Bytes() float64 {
	e := float64(k.Elem.Size())
	kv := 2 * float64(k.tokensRead()*k.KVHeads*k.HeadDim) * e
	return kv + 2*float64(k.Batch*k.QHeads*k.HeadDim)*e
}

// Fill gives block tables (each sequence's blocks drawn from a random
// permutation of the pool, so no two sequences share a block and table
// order is unrelated to pool order; entries past the sequence's length
// are kvcache.PadBlock) and the context lengths.
func (k PagedAttention) Fill(input string) func(rng *rand.Rand, v []float64) {
	switch input {
	case "block_tables":
		return func(rng *rand.Rand, v []float64) {
			perm := rng.Perm(int(k.numBlocks()))
			next := 0
			for b, n := range k.lengths() {
				need := (n + k.BlockSize - 1) / k.BlockSize
				row := v[int64(b)*k.MaxBlocks:][:k.MaxBlocks]
				for i := range row {
					row[i] = float64(kvcache.PadBlock)
					if int64(i) < need {
						row[i] = float64(perm[next%len(perm)])
						next++
					}
				}
			}
		}
	case "context_lens":
		return func(_ *rand.Rand, v []float64) {
			for i, n := range k.lengths() {
				v[i] = float64(n)
			}
		}
	}
	return nil
}

// kvDType is the kvcache element type of a storage type.
func kvDType(d schedule.DType) kvcache.DType {
	if d == schedule.BF16 {
		return kvcache.BF16
	}
	return kvcache.F32
}

// poolOf lays a cache buffer (one layer, as the kernels see it) out as a
// ref.Pool, through Pool.Set so that the reference reads it through the
// layout contract.
func poolOf(cache []float64, blocks, blockSize, kvHeads, headDim int64, elem schedule.DType) *ref.Pool {
	l := kvcache.Layout{NumBlocks: int(blocks), BlockSize: int(blockSize), NumLayers: 1,
		NumKVHeads: int(kvHeads), HeadDim: int(headDim), DType: kvDType(elem)}
	p, err := ref.NewPool(l)
	if err != nil {
		panic(fmt.Sprintf("paged kernel reference: %v", err)) // Def validated the layout
	}
	i := 0
	for kv := range 2 {
		for b := range l.NumBlocks {
			for s := range l.BlockSize {
				for h := range l.NumKVHeads {
					for e := range l.HeadDim {
						p.Set(0, kvcache.KV(kv), b, s, h, e, cache[i])
						i++
					}
				}
			}
		}
	}
	return p
}

// Reference is ref.PagedAttention on the inputs laid out as a pool.
func (k PagedAttention) Reference(in [][]float64) [][]float64 {
	q := make([]float32, len(in[0]))
	for i, x := range in[0] {
		q[i] = float32(x)
	}
	pool := poolOf(in[1], k.numBlocks(), k.BlockSize, k.KVHeads, k.HeadDim, k.Elem)
	tables := make([]int32, len(in[2]))
	for i, x := range in[2] {
		tables[i] = int32(x)
	}
	lens := make([]int32, len(in[3]))
	for i, x := range in[3] {
		lens[i] = int32(x)
	}
	out, err := ref.PagedAttention(q, int(k.Batch), int(k.QHeads), pool, 0, tables, int(k.MaxBlocks), lens,
		ref.PagedOptions{SlidingWindow: int(k.Window), Scale: k.Scale})
	if err != nil {
		panic(fmt.Sprintf("paged_attention reference of %s: %v", k.Name(), err)) // Fill keeps the inputs valid
	}
	o := make([]float64, len(out))
	for i, x := range out {
		o[i] = float64(x)
	}
	return [][]float64{o}
}

// vecDomain are the vector widths (f32 lanes) that divide n, up to the
// hardware's, widest last; 1 when none does.
func vecDomain(hw Hardware, n int64) []int64 {
	var out []int64
	for _, v := range []int64{4, 8, 16} {
		if v <= hw.lanes() && n%v == 0 {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		out = []int64{1}
	}
	return out
}

// headsDomain are the KV heads per task: powers of two dividing kvHeads,
// and kvHeads itself.
func headsDomain(kvHeads int64) []int64 {
	var out []int64
	for h := int64(1); h < kvHeads; h *= 2 {
		if kvHeads%h == 0 {
			out = append(out, h)
		}
	}
	return append(out, kvHeads)
}

// Knobs is the design space:
//   - split: tokens per KV partition (flash-decoding); 0 is off. Each
//     partition's online softmax state (max, sum, unnormalised output) is
//     merged with the others' by log-sum-exp in a second pass.
//   - parallel: 0 runs (sequence, head group) tasks statically over
//     threads, each doing its partitions in turn; 1 runs every (sequence,
//     head group, partition) item under a dynamic schedule, which is what
//     balances a ragged batch or a batch smaller than the thread count.
//   - vec: f32 lanes of the dot products and of the p·V accumulation.
//   - unroll: unroll of the p·V token loop (the q·k loop already takes
//     VW dot products at a time, see head_tile).
//   - heads: KV heads per task (HT, the head group); with all of them a
//     tile's K (and V) rows are one contiguous range, every byte of which
//     the task uses, instead of one head's slice of each row.
//   - prefetch: tiles ahead whose K and V rows are prefetched into L2; the
//     block table's indirection hides the next block from hardware
//     prefetchers.
//   - tile: tokens per online-softmax step (scores of a tile first, then
//     one rescale, then p·V), at most a block.
func (k PagedAttention) Knobs(hw Hardware) Knobs {
	return Knobs{
		{"split", []int64{0, 256, 512, 1024, 2048, 4096}},
		{"parallel", []int64{0, 1}},
		{"vec", vecDomain(hw, k.HeadDim)},
		{"unroll", []int64{1, 2, 4}},
		{"heads", headsDomain(k.KVHeads)},
		{"prefetch", []int64{0, 1, 2, 4}},
		{"tile", []int64{4, 8, 16, 32, 64}},
	}
}

// Space samples every knob.
func (k PagedAttention) Space(s *schedule.Schedule, hw Hardware) error {
	return k.Knobs(hw).Sample(s)
}

// Default: the widest vector, every KV head in one task (each tile one
// contiguous range of K and of V), tiles of 16 tokens prefetched one tile ahead, the p·V
// token loop unrolled twice, dynamic items, and KV split only when the
// sequences are too few to give every thread four tasks: then the largest
// partition (at least 512 tokens) that does.
func (k PagedAttention) Default(s *schedule.Schedule, hw Hardware) error {
	ks := k.Knobs(hw)
	vec := ks[2].Values[len(ks[2].Values)-1]
	split := int64(0)
	threads := int64(max(hw.Threads, 1))
	tasks := k.Batch
	if tasks < 4*threads {
		longest := int64(0)
		for _, n := range k.lengths() {
			b, e := k.span(n)
			longest = max(longest, e-b)
		}
		for _, p := range []int64{4096, 2048, 1024, 512} {
			if longest > p && tasks*((longest+p-1)/p) >= 4*threads {
				split = p
				break
			}
		}
		if split == 0 && longest > 512 {
			split = 512
		}
	}
	return ks.Choose(s, map[string]int64{"split": split, "parallel": 1, "vec": vec, "unroll": 2, "heads": k.KVHeads, "prefetch": 1, "tile": 16})
}

// EmitC instantiates the C template for the knobs in s.
func (k PagedAttention) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	kn, err := k.Knobs(hw).Read(s)
	if err != nil {
		return "", fmt.Errorf("paged_attention %s: %w", k.Name(), err)
	}
	scale := k.Scale
	if scale == 0 {
		scale = 1 / math.Sqrt(float64(k.HeadDim))
	}
	g := k.group()
	nv := k.HeadDim / kn["vec"]
	// p·V keeps group × cb accumulators in registers: at most 16 of the
	// 32, cb dividing the head's vectors.
	cb := int64(1)
	for c := nv; c >= 1; c-- {
		if nv%c == 0 && c*g <= 16 {
			cb = c
			break
		}
	}
	// A score chunk holds VW dot products: TPC tokens × GV query heads,
	// GV the largest divisor of both the group and VW.
	gv := int64(1)
	for c := min(g, kn["vec"]); c >= 1; c-- {
		if g%c == 0 && kn["vec"]%c == 0 {
			gv = c
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "// llmir paged_attention template: %s\n", k.Name())
	fmt.Fprintf(&b, "// knobs: split=%d parallel=%d vec=%d unroll=%d heads=%d prefetch=%d tile=%d\n",
		kn["split"], kn["parallel"], kn["vec"], kn["unroll"], kn["heads"], kn["prefetch"], kn["tile"])
	defs := []struct {
		name string
		v    int64
	}{
		{"HQ", k.QHeads}, {"HKV", k.KVHeads}, {"D", k.HeadDim}, {"BS", k.BlockSize}, {"WINDOW", k.Window},
		{"VW", kn["vec"]}, {"UNROLL", kn["unroll"]}, {"PF", kn["prefetch"]}, {"TILE", kn["tile"]}, {"HT", kn["heads"]}, {"GV", gv},
		{"PART", kn["split"]}, {"PAR_ITEMS", kn["parallel"]}, {"CB", cb}, {"ELEM_BF16", boolInt(k.Elem == schedule.BF16)},
	}
	for _, d := range defs {
		fmt.Fprintf(&b, "#define %s %d\n", d.name, d.v)
	}
	fmt.Fprintf(&b, "#define SCALE_LOG2E %.9gf\n", scale*math.Log2E)
	b.WriteString(pagedCommonC(kn["vec"]))
	// gcc does not expand macros in #pragma GCC unroll.
	body := strings.ReplaceAll(pagedAttentionC, "#pragma GCC unroll UNROLL", fmt.Sprintf("#pragma GCC unroll %d", kn["unroll"]))
	b.WriteString(strings.ReplaceAll(body, "ENTRY", entry))
	return b.String(), nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// pagedCommonC is the prelude shared by the paged kernels: the vector type
// of vw f32 lanes, loads and stores of the storage type (bf16 widened by a
// shift), the horizontal sum and a vector exp2.
func pagedCommonC(vw int64) string {
	var b strings.Builder
	b.WriteString(`#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf vsplat(float x) { vf v = {0}; return v + x; }
static inline float bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t f32_to_bf16(float f) { uint32_t u; memcpy(&u, &f, 4); if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); u += 0x7fffu + ((u >> 16) & 1u); return (uint16_t)(u >> 16); }
#if ELEM_BF16
typedef uint16_t elem_t;
typedef uint16_t vh __attribute__((vector_size(VW * 2)));
typedef uint32_t vu __attribute__((vector_size(VW * 4)));
static inline vf kvload(const elem_t *p) { vh h; memcpy(&h, p, sizeof h); vu u = __builtin_convertvector(h, vu) << 16; vf f; memcpy(&f, &u, sizeof f); return f; }
static inline float to_f32(elem_t x) { return bf16_to_f32(x); }
static inline elem_t from_f32(float x) { return f32_to_bf16(x); }
#else
typedef float elem_t;
static inline vf kvload(const elem_t *p) { return vload(p); }
static inline float to_f32(elem_t x) { return x; }
static inline elem_t from_f32(float x) { return x; }
#endif
`)
	// Horizontal sum: halve until four lanes, then pairwise (as cgen's
	// llmir_hsum), with lane constructors so accumulators stay in registers.
	for n := vw / 2; n >= 4; n /= 2 {
		fmt.Fprintf(&b, "typedef float vf%d __attribute__((vector_size(%d)));\n", n, n*4)
	}
	b.WriteString("static inline float hsum(vf v) {")
	cur, n := "v", vw
	lanes := func(x string, from, n int64) string {
		var el []string
		for i := from; i < from+n; i++ {
			el = append(el, fmt.Sprintf("%s[%d]", x, i))
		}
		return fmt.Sprintf("(vf%d){%s}", n, strings.Join(el, ", "))
	}
	for ; n > 4; n /= 2 {
		h := n / 2
		fmt.Fprintf(&b, " vf%d s%d = %s + %s;", h, h, lanes(cur, 0, h), lanes(cur, h, h))
		cur = fmt.Sprintf("s%d", h)
	}
	switch n {
	case 4:
		fmt.Fprintf(&b, " return (%s[0] + %s[2]) + (%s[1] + %s[3]); }\n", cur, cur, cur, cur)
	default:
		fmt.Fprintf(&b, " return %s[0]; }\n", cur)
	}
	b.WriteString(`
// vexp2 is 2^x for x ≤ 0 to f32 accuracy (about 2 ulp): x rounded to the
// nearest integer n by the 1.5·2^23 trick, 2^(x−n) by Cephes' exp2f
// polynomial on [−½, ½], and n added to the exponent. Below −126 it
// returns 2^−126, far under anything a softmax sum can notice.
static inline vf vexp2(vf x) {
  vi lo = x < -126.0f;
  x = (vf)(((vi)x & ~lo) | ((vi)vsplat(-126.0f) & lo));
  vf r = (x + 12582912.0f) - 12582912.0f;
  vf f = x - r;
  vf p = 1.535336188319500e-4f * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  vi n = __builtin_convertvector(r, vi);
  return (vf)((vi)p + (n << 23));
}
static inline float sexp2(float x) { return vexp2(vsplat(x))[0]; }
`)
	b.WriteString(reduceTokensC(vw))
	return b.String()
}

// reduceTokensC defines LANES (0, 1, …, vw−1) and reduce_tokens(P), whose
// lane t is the sum of P[t]'s lanes: at each level pairs of vectors are
// merged by two shuffles and an add, halving the partial sums per token
// and doubling the tokens per vector.
func reduceTokensC(vw int64) string {
	var b strings.Builder
	lanes := make([]string, vw)
	for i := range lanes {
		lanes[i] = strconv.Itoa(i)
	}
	fmt.Fprintf(&b, "#define LANES ((vi){%s})\n", strings.Join(lanes, ", "))
	b.WriteString("static inline vf reduce_tokens(const vf *P) {\n")
	cur := make([]string, vw)
	for i := range cur {
		cur[i] = fmt.Sprintf("P[%d]", i)
	}
	for lvl, k := 1, vw; k > 1; lvl, k = lvl+1, k/2 {
		// Inputs hold vw/k tokens of k partial sums each; outputs twice the
		// tokens with k/2 partials.
		lo, hi := make([]string, vw), make([]string, vw)
		for j := int64(0); j < vw; j++ {
			src, jj := int64(0), j
			if j >= vw/2 {
				src, jj = vw, j-vw/2
			}
			tok, r := jj/(k/2), jj%(k/2)
			lo[j] = strconv.FormatInt(src+tok*k+r, 10)
			hi[j] = strconv.FormatInt(src+tok*k+r+k/2, 10)
		}
		var next []string
		for i := 0; i < len(cur); i += 2 {
			name := fmt.Sprintf("r%d_%d", lvl, i/2)
			fmt.Fprintf(&b, "  vf %s = __builtin_shuffle(%s, %s, (vi){%s}) + __builtin_shuffle(%s, %s, (vi){%s});\n",
				name, cur[i], cur[i+1], strings.Join(lo, ", "), cur[i], cur[i+1], strings.Join(hi, ", "))
			next = append(next, name)
		}
		cur = next
	}
	fmt.Fprintf(&b, "  return %s;\n}\n", cur[0])
	return b.String()
}

// pagedAttentionC is the decode attention template; ENTRY is replaced by
// the entry point's name and the knobs arrive as macros.
//
// A task is (sequence, HT consecutive KV heads, partition). It walks its
// tokens a tile at a time, a tile never crossing a block, so the tile's K
// (and V) rows of the task's heads are one contiguous run of memory when
// HT = HKV: the next tile is prefetched as a plain range (PF tiles ahead),
// which is what keeps the memory system busy despite the block table's
// indirection. Per head and tile: the GROUP query heads' scores, one
// online-softmax rescale, then p·V with accumulators in registers.
const pagedAttentionC = `
#define GROUP (HQ / HKV)
#define NV (D / VW)
#define ROW (HKV * D)
#define TILEV ((TILE + VW - 1) / VW * VW)
#define HCH (GROUP / GV)
#define TPC (VW / GV)

// span_start is where a sequence of n tokens starts attending (window).
static inline int64_t span_start(int64_t n) { return WINDOW > 0 && n > WINDOW ? n - WINDOW : 0; }

// tile_at is the tile starting at token t of [t, t1): its row pointer in
// half (K or V, head h0) and its length, at most TILE and never past the
// end of t's block.
static inline int tile_at(const int32_t *table, int64_t t, int64_t t1, int64_t *off) {
  int64_t in = t % BS;
  int64_t n = BS - in;
  if (n > TILE) n = TILE;
  if (n > t1 - t) n = t1 - t;
  *off = ((int64_t)table[t / BS] * BS + in) * ROW;
  return (int)n;
}

#if PF > 0
// prefetch_tile brings the rows of HT heads of n tokens at off into L2.
static inline void prefetch_tile(const elem_t *kc, const elem_t *vc, int64_t off, int n) {
#if HT == HKV
  const char *a = (const char *)(kc + off), *b = (const char *)(vc + off);
  const int64_t bytes = (int64_t)n * ROW * (int64_t)sizeof(elem_t);
  for (int64_t o = 0; o < bytes; o += 64) { __builtin_prefetch(a + o, 0, 2); __builtin_prefetch(b + o, 0, 2); }
#else
  for (int i = 0; i < n; i++) {
    const char *a = (const char *)(kc + off + (int64_t)i * ROW), *b = (const char *)(vc + off + (int64_t)i * ROW);
    for (int64_t o = 0; o < HT * D * (int64_t)sizeof(elem_t); o += 64) { __builtin_prefetch(a + o, 0, 2); __builtin_prefetch(b + o, 0, 2); }
  }
#endif
}
#endif

// head_tile folds n tokens (rows kp, vp, ROW apart) into the online
// softmax state of one KV head's GROUP query heads: qs [GROUP][D] scaled
// by scale·log2 e, acc [GROUP][D] unnormalised, m (log2 domain), l.
//
// Scores come a chunk of VW dot products at a time, TPC tokens × GV query
// heads: each dot product is left as a vector of partial sums and
// reduce_tokens folds the chunk into one vector of VW scores (log2 VW
// shuffle-and-add levels) instead of a horizontal sum per token and query
// head, which costs more than the dot product. A chunk touches only TPC
// K rows: rows of one head are ROW·size (often 4 KiB) apart and alias in
// L1, so reusing more than a few of them would miss.
static inline void head_tile(const elem_t *kp, const elem_t *vp, int n, const float *qs, float *acc, float *m, float *l) {
  // s[hc][t·GV + gg] is the score of token t for query head hc·GV + gg.
  float s[HCH][TILEV * GV] __attribute__((aligned(64)));
  const vi tok_of_lane = LANES / GV;
  const int nch = (n + TPC - 1) / TPC;
  for (int hc = 0; hc < HCH; hc++) {
    for (int ch = 0; ch < nch; ch++) {
      const int jt = ch * TPC;
      vf P[VW];
      if (jt + TPC <= n) {
        for (int tt = 0; tt < TPC; tt++) {
          const elem_t *kr = kp + (int64_t)(jt + tt) * ROW;
          vf kv[NV];
          for (int c = 0; c < NV; c++) kv[c] = kvload(kr + c * VW);
          for (int gg = 0; gg < GV; gg++) {
            const float *qg = qs + (hc * GV + gg) * D;
            vf a0 = vload(qg) * kv[0], a1 = vsplat(0.0f);
            for (int c = 1; c < NV; c++) { if (c & 1) a1 += vload(qg + c * VW) * kv[c]; else a0 += vload(qg + c * VW) * kv[c]; }
            P[tt * GV + gg] = a0 + a1;
          }
        }
        vstore(&s[hc][jt * GV], reduce_tokens(P));
      } else {
        for (int tt = 0; tt < TPC; tt++) {
          for (int gg = 0; gg < GV; gg++) {
            P[tt * GV + gg] = vsplat(0.0f);
            if (jt + tt < n) {
              const elem_t *kr = kp + (int64_t)(jt + tt) * ROW;
              const float *qg = qs + (hc * GV + gg) * D;
              for (int c = 0; c < NV; c++) P[tt * GV + gg] += vload(qg + c * VW) * kvload(kr + c * VW);
            }
          }
        }
        // Lanes of tokens past the tile weigh nothing: −inf.
        vi keep = tok_of_lane < n - jt;
        vf r = reduce_tokens(P);
        vstore(&s[hc][jt * GV], (vf)(((vi)r & keep) | ((vi)vsplat(-__builtin_inff()) & ~keep)));
      }
    }
  }
  // One rescale per tile and query head, then the weights 2^(s − max).
  for (int hc = 0; hc < HCH; hc++) {
    vf mv = vload(&s[hc][0]);
    for (int ch = 1; ch < nch; ch++) {
      vf x = vload(&s[hc][ch * TPC * GV]);
      vi gt = x > mv;
      mv = (vf)(((vi)x & gt) | ((vi)mv & ~gt));
    }
    float mnew[GV], alpha[GV];
    float mlane[VW] __attribute__((aligned(64)));
    for (int gg = 0; gg < GV; gg++) {
      const int g = hc * GV + gg;
      float mx = m[g];
      for (int e = gg; e < VW; e += GV) mx = mv[e] > mx ? mv[e] : mx;
      alpha[gg] = m[g] == -__builtin_inff() ? 0.0f : sexp2(m[g] - mx);
      mnew[gg] = m[g] = mx;
      if (alpha[gg] != 1.0f) {
        vf va = vsplat(alpha[gg]);
        for (int c = 0; c < NV; c++) vstore(acc + g * D + c * VW, vload(acc + g * D + c * VW) * va);
      }
    }
    for (int e = 0; e < VW; e++) mlane[e] = mnew[e % GV];
    vf M = vload(mlane), sum = vsplat(0.0f);
    for (int ch = 0; ch < nch; ch++) {
      vf p = vexp2(vload(&s[hc][ch * TPC * GV]) - M);
      vstore(&s[hc][ch * TPC * GV], p);
      sum += p;
    }
    for (int gg = 0; gg < GV; gg++) {
      float t = 0;
      for (int e = gg; e < VW; e += GV) t += sum[e];
      l[hc * GV + gg] = l[hc * GV + gg] * alpha[gg] + t;
    }
  }
  // p·V with GROUP × CB accumulators in registers per CB-vector chunk.
  for (int c0 = 0; c0 < NV; c0 += CB) {
    vf a[GROUP][CB];
    for (int g = 0; g < GROUP; g++)
      for (int c = 0; c < CB; c++) a[g][c] = vload(acc + g * D + (c0 + c) * VW);
    #pragma GCC unroll UNROLL
    for (int j = 0; j < n; j++) {
      vf v[CB];
      for (int c = 0; c < CB; c++) v[c] = kvload(vp + (int64_t)j * ROW + (c0 + c) * VW);
      for (int g = 0; g < GROUP; g++) {
        vf p = vsplat(s[g / GV][j * GV + g % GV]);
        for (int c = 0; c < CB; c++) a[g][c] += p * v[c];
      }
    }
    for (int g = 0; g < GROUP; g++)
      for (int c = 0; c < CB; c++) vstore(acc + g * D + (c0 + c) * VW, a[g][c]);
  }
}

static inline int64_t parts_of(int64_t n) {
#if PART > 0
  int64_t len = n - span_start(n);
  if (len > PART) return (len + PART - 1) / PART;
#endif
  (void)n;
  return 1;
}

// item computes partition p of sequence b for KV heads [h0, h0 + HT): into
// out when the sequence has one partition, else into the partial (acc, m,
// l) slots of its heads, GROUP·(D + 2) floats each.
static void item(const elem_t *q, const elem_t *kc, const elem_t *vc, const int32_t *table, int64_t n, int64_t b, int64_t h0,
                 int64_t p, int64_t parts, float *partial, elem_t *out) {
  float qs[HT * GROUP * D] __attribute__((aligned(64)));
  float acc[HT * GROUP * D] __attribute__((aligned(64)));
  float m[HT * GROUP], l[HT * GROUP];
  for (int i = 0; i < HT * GROUP; i++) {
    m[i] = -__builtin_inff();
    l[i] = 0;
    for (int e = 0; e < D; e++) {
      qs[i * D + e] = to_f32(q[(b * HQ + h0 * GROUP + i) * D + e]) * SCALE_LOG2E;
      acc[i * D + e] = 0;
    }
  }
  int64_t t0 = span_start(n), t1 = n;
#if PART > 0
  if (parts > 1) {
    t0 += p * PART;
    t1 = t0 + PART < n ? t0 + PART : n;
  }
#endif
  int64_t off = 0;
  int len = 0;
#if PF > 0
  // Prefetch the first PF tiles; pft is where the tile PF ahead of the
  // current one starts.
  int64_t pft = t0;
  for (int k = 0; k < PF && pft < t1; k++) {
    int64_t o;
    int nl = tile_at(table, pft, t1, &o);
    prefetch_tile(kc, vc, o + h0 * D, nl);
    pft += nl;
  }
#endif
  for (int64_t t = t0; t < t1; t += len) {
    len = tile_at(table, t, t1, &off);
#if PF > 0
    if (pft < t1) {
      int64_t o;
      int nl = tile_at(table, pft, t1, &o);
      prefetch_tile(kc, vc, o + h0 * D, nl);
      pft += nl;
    }
#endif
    for (int hh = 0; hh < HT; hh++)
      head_tile(kc + off + (h0 + hh) * D, vc + off + (h0 + hh) * D, len, qs + hh * GROUP * D, acc + hh * GROUP * D, m + hh * GROUP, l + hh * GROUP);
  }
  if (parts > 1) {
    for (int hh = 0; hh < HT; hh++) {
      float *dst = partial + (h0 + hh) * GROUP * (D + 2);
      for (int g = 0; g < GROUP; g++) {
        int i = hh * GROUP + g;
        for (int e = 0; e < D; e++) dst[g * D + e] = acc[i * D + e];
        dst[GROUP * D + g] = m[i];
        dst[GROUP * D + GROUP + g] = l[i];
      }
    }
    return;
  }
  for (int i = 0; i < HT * GROUP; i++) {
    float inv = l[i] > 0 ? 1.0f / l[i] : 0.0f;
    elem_t *o = out + (b * HQ + h0 * GROUP + i) * D;
    for (int e = 0; e < D; e++) o[e] = from_f32(acc[i * D + e] * inv);
  }
}

// merge reduces a sequence's partitions for KV head h by log-sum-exp:
// weights 2^(m_p − M).
static void merge(const float *partial, int64_t parts, int64_t b, int64_t h, elem_t *out) {
  const int64_t stride = HKV * GROUP * (D + 2);
  partial += h * GROUP * (D + 2);
  for (int g = 0; g < GROUP; g++) {
    float M = -__builtin_inff();
    for (int64_t p = 0; p < parts; p++) {
      float mp = partial[p * stride + GROUP * D + g];
      M = mp > M ? mp : M;
    }
    float o[D], L = 0;
    for (int e = 0; e < D; e++) o[e] = 0;
    for (int64_t p = 0; p < parts; p++) {
      const float *pp = partial + p * stride;
      float mp = pp[GROUP * D + g];
      float w = mp == -__builtin_inff() ? 0.0f : sexp2(mp - M);
      L += w * pp[GROUP * D + GROUP + g];
      for (int e = 0; e < D; e++) o[e] += w * pp[g * D + e];
    }
    float inv = L > 0 ? 1.0f / L : 0.0f;
    elem_t *dst = out + (b * HQ + h * GROUP + g) * D;
    for (int e = 0; e < D; e++) dst[e] = from_f32(o[e] * inv);
  }
}

int ENTRY(void *const *bufs, const int64_t *dims) {
  const elem_t *q = (const elem_t *)bufs[0];
  const elem_t *cache = (const elem_t *)bufs[1];
  const int32_t *tables = (const int32_t *)bufs[2];
  const int32_t *lens = (const int32_t *)bufs[3];
  elem_t *out = (elem_t *)bufs[4];
  const int64_t B = dims[0], NB = dims[1], MB = dims[2];
  const elem_t *kc = cache, *vc = cache + NB * BS * ROW;
  const int64_t NHG = HKV / HT;
  // Bad tables are a runtime error, never a read outside the pool.
  for (int64_t b = 0; b < B; b++) {
    int64_t n = lens[b];
    if (n < 0 || n > MB * BS) return 1;
    for (int64_t j = span_start(n) / BS; j * BS < n; j++) {
      int32_t blk = tables[b * MB + j];
      if (blk < 0 || blk >= NB) return 2;
    }
  }
  int64_t *first = (int64_t *)malloc((size_t)(B + 1) * sizeof(int64_t));
  if (!first) return 3;
  first[0] = 0;
  for (int64_t b = 0; b < B; b++) first[b + 1] = first[b] + parts_of(lens[b]);
  const int64_t items = first[B];
  const int64_t stride = HKV * GROUP * (D + 2);
  float *partial = NULL;
  if (items > B) {
    partial = (float *)malloc((size_t)(items * stride) * sizeof(float));
    if (!partial) { free(first); return 3; }
  }
#if PAR_ITEMS
  #pragma omp parallel
  {
    #pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items * NHG; it++) {
      int64_t x = it / NHG, h0 = it % NHG * HT;
      int64_t lo = 0, hi = B - 1;
      while (lo < hi) { int64_t mid = (lo + hi + 1) / 2; if (first[mid] <= x) lo = mid; else hi = mid - 1; }
      int64_t b = lo, parts = first[b + 1] - first[b];
      item(q, kc, vc, tables + b * MB, lens[b], b, h0, x - first[b], parts, partial ? partial + x * stride : NULL, out);
    }
    #pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < B * HKV; bh++) {
      int64_t b = bh / HKV, h = bh % HKV, parts = first[b + 1] - first[b];
      if (parts > 1) merge(partial + first[b] * stride, parts, b, h, out);
    }
  }
#else
  #pragma omp parallel for schedule(static)
  for (int64_t bg = 0; bg < B * NHG; bg++) {
    int64_t b = bg / NHG, h0 = bg % NHG * HT, parts = first[b + 1] - first[b];
    for (int64_t p = 0; p < parts; p++)
      item(q, kc, vc, tables + b * MB, lens[b], b, h0, p, parts, partial ? partial + (first[b] + p) * stride : NULL, out);
    for (int64_t h = h0; parts > 1 && h < h0 + HT; h++) merge(partial + first[b] * stride, parts, b, h, out);
  }
#endif
  free(partial);
  free(first);
  return 0;
}
`
