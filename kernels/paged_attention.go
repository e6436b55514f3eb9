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
	// In a fixed order, every missing field named: the error must not
	// depend on map iteration.
	var missing []string
	for _, name := range []string{"block_size", "kv_heads", "head_dim"} {
		if *fields[name] == 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return pagedKV{}, fmt.Errorf("cache type %q: no %s", s, strings.Join(missing, ", no "))
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
	return 0, unsupported("element type %s: the paged kernels take f32 or bf16", dtypes[0])
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
