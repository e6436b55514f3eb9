package ref

import (
	"fmt"
	"math"

	"llmir/kvcache"
)

// AttnDims are the extents of a prefill attention: q [Batch, Seq, QHeads,
// HeadDim], k [Batch, KVLen, KVHeads, HeadDim], v [Batch, KVLen, KVHeads,
// VDim] (VDim 0 means HeadDim); the output is [Batch, Seq, QHeads, VDim].
type AttnDims struct {
	Batch, Seq, KVLen, QHeads, KVHeads, HeadDim, VDim int
}

// AttnOptions are attention's attributes.
type AttnOptions struct {
	Causal bool
	// SlidingWindow w > 0 keeps only the w most recent keys up to the
	// query's position: key j is seen by a query at position p iff
	// p − w < j (and j ≤ p when causal). 0 means no window.
	SlidingWindow int
	// Scale multiplies q·k; 0 means 1/√HeadDim.
	Scale float64
}

func (o AttnOptions) scale(d int) float64 {
	if o.Scale != 0 {
		return o.Scale
	}
	return 1 / math.Sqrt(float64(d))
}

// sees reports whether a query at position p attends key j.
func (o AttnOptions) sees(p, j int) bool {
	if o.Causal && j > p {
		return false
	}
	return o.SlidingWindow <= 0 || j > p-o.SlidingWindow
}

// Attention is prefill attention. Query head h reads KV head
// h / (QHeads/KVHeads) (GQA; MQA is KVHeads 1). Query i sits at position
// i + (KVLen − Seq), so that a chunk of Seq new queries at the end of KVLen
// keys (chunked prefill) attends the whole prefix; with Causal it sees keys
// j ≤ i + KVLen − Seq. A query that sees no key at all (more queries than
// keys under the causal mask, say) outputs zeros rather than NaN.
func Attention(q, k, v []float32, d AttnDims, o AttnOptions) ([]float32, error) {
	if d.VDim == 0 {
		d.VDim = d.HeadDim
	}
	if d.KVHeads <= 0 || d.QHeads%d.KVHeads != 0 {
		return nil, shapeErr("query heads %d are not a multiple of KV heads %d", d.QHeads, d.KVHeads)
	}
	if err := needLen("attention q", len(q), d.Batch*d.Seq*d.QHeads*d.HeadDim); err != nil {
		return nil, err
	}
	if err := needLen("attention k", len(k), d.Batch*d.KVLen*d.KVHeads*d.HeadDim); err != nil {
		return nil, err
	}
	if err := needLen("attention v", len(v), d.Batch*d.KVLen*d.KVHeads*d.VDim); err != nil {
		return nil, err
	}
	group := d.QHeads / d.KVHeads
	scale := o.scale(d.HeadDim)
	out := make([]float32, d.Batch*d.Seq*d.QHeads*d.VDim)
	for b := range d.Batch {
		for i := range d.Seq {
			p := i + d.KVLen - d.Seq
			for h := range d.QHeads {
				kh := h / group
				qv := q[((b*d.Seq+i)*d.QHeads+h)*d.HeadDim:][:d.HeadDim]
				keys := func(yield func(k, v []float32) bool) {
					for j := range d.KVLen {
						if !o.sees(p, j) {
							continue
						}
						row := (b*d.KVLen+j)*d.KVHeads + kh
						if !yield(k[row*d.HeadDim:][:d.HeadDim], v[row*d.VDim:][:d.VDim]) {
							return
						}
					}
				}
				attend(out[((b*d.Seq+i)*d.QHeads+h)*d.VDim:][:d.VDim], qv, scale, keys)
			}
		}
	}
	return out, nil
}

// attend writes softmax(scale·q·Kᵀ)·V over the keys the iterator yields:
// two passes (max, then weighted sum), all in float64. No keys: zeros.
func attend(out, q []float32, scale float64, keys func(yield func(k, v []float32) bool)) {
	mx := math.Inf(-1)
	n := 0
	for k := range keys {
		mx = math.Max(mx, scale*dot(q, k))
		n++
	}
	acc := make([]float64, len(out))
	var sum float64
	if n > 0 {
		for k, v := range keys {
			w := math.Exp(scale*dot(q, k) - mx)
			sum += w
			for e, x := range v {
				acc[e] += w * float64(x)
			}
		}
	}
	for e := range out {
		if n == 0 {
			out[e] = 0
		} else {
			out[e] = float32(acc[e] / sum)
		}
	}
}

func dot(a, b []float32) float64 {
	var s float64
	for i, x := range a {
		s += float64(x) * float64(b[i])
	}
	return s
}

// Pool is the bytes of a paged KV pool laid out by a kvcache.Layout — the
// same bytes a generated kernel reads. Every access goes through
// Layout.Offset, so the references check the layout contract rather than
// restate it.
type Pool struct {
	Layout kvcache.Layout
	Bytes  []byte
}

// NewPool allocates a zeroed pool for layout l.
func NewPool(l kvcache.Layout) (*Pool, error) {
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("new pool: %w", err)
	}
	if l.PoolBytes() > math.MaxInt32*8 {
		return nil, fmt.Errorf("new pool: %d bytes is too large for a reference pool", l.PoolBytes())
	}
	return &Pool{Layout: l, Bytes: make([]byte, l.PoolBytes())}, nil
}

// Clone returns an independent copy of the pool.
func (p *Pool) Clone() *Pool {
	return &Pool{Layout: p.Layout, Bytes: append([]byte(nil), p.Bytes...)}
}

// check reports a pool whose bytes do not match its layout, which would
// otherwise surface as an index panic deep inside a reference.
func (p *Pool) check() error {
	if err := p.Layout.Validate(); err != nil {
		return err
	}
	if int64(len(p.Bytes)) != p.Layout.PoolBytes() {
		return shapeErr("pool holds %d bytes, its layout needs %d", len(p.Bytes), p.Layout.PoolBytes())
	}
	return nil
}

// At reads element (head, dim) of the token in slot of block, in layer's K or V.
func (p *Pool) At(layer int, kv kvcache.KV, block, slot, head, dim int) float64 {
	off := p.Layout.Offset(layer, kv, block, slot, head, dim)
	return decodeElem(p.Layout.DType, p.Bytes[off:])
}

// Set stores v there, rounded to the pool's element type.
func (p *Pool) Set(layer int, kv kvcache.KV, block, slot, head, dim int, v float64) {
	off := p.Layout.Offset(layer, kv, block, slot, head, dim)
	encodeElem(p.Layout.DType, p.Bytes[off:], v)
}

// AppendKV writes k and v [tokens, KVHeads, HeadDim] of one layer into the
// pool at slots[t] = block·BlockSize + offset. A negative slot is padding and
// is skipped, as vLLM's reshape_and_cache does; a slot past the pool is an
// error, reported before anything is written.
func AppendKV(p *Pool, layer int, k, v []float32, tokens int, slots []int64) error {
	if err := p.check(); err != nil {
		return fmt.Errorf("append_kv: %w", err)
	}
	l := p.Layout
	row := l.NumKVHeads * l.HeadDim
	if layer < 0 || layer >= l.NumLayers {
		return fmt.Errorf("append_kv: layer %d of %d: %w", layer, l.NumLayers, ErrIndex)
	}
	if err := needLen("append_kv k", len(k), tokens*row); err != nil {
		return err
	}
	if err := needLen("append_kv v", len(v), tokens*row); err != nil {
		return err
	}
	if err := needLen("append_kv slot_mapping", len(slots), tokens); err != nil {
		return err
	}
	limit := int64(l.NumBlocks) * int64(l.BlockSize)
	for t, s := range slots {
		if s >= limit {
			return fmt.Errorf("append_kv: token %d slot %d past the pool's %d slots: %w", t, s, limit, ErrIndex)
		}
	}
	for t, s := range slots {
		if s < 0 {
			continue
		}
		block, slot := int(s/int64(l.BlockSize)), int(s%int64(l.BlockSize))
		for h := range l.NumKVHeads {
			for e := range l.HeadDim {
				p.Set(layer, kvcache.Key, block, slot, h, e, float64(k[t*row+h*l.HeadDim+e]))
				p.Set(layer, kvcache.Value, block, slot, h, e, float64(v[t*row+h*l.HeadDim+e]))
			}
		}
	}
	return nil
}

// PagedOptions are paged_attention's attributes.
type PagedOptions struct {
	// SlidingWindow w > 0: the query (at position ctx−1) sees keys j > ctx−1−w.
	SlidingWindow int
	Scale         float64 // 0: 1/√HeadDim
}

// PagedAttention is decode attention: q [batch, qHeads, HeadDim], one query
// per sequence at position contextLens[b]−1, over the first contextLens[b]
// tokens of its paged K/V in layer. Token j lives in slot j mod BlockSize
// of block blockTables[b·maxBlocks + j/BlockSize] (dense rows padded with
// kvcache.PadBlock). Query head h reads KV head h/(qHeads/KVHeads). A
// sequence of length 0 outputs zeros. Block ids a sequence reads must name
// real blocks; padding past its length is never read.
func PagedAttention(q []float32, batch, qHeads int, p *Pool, layer int, blockTables []int32, maxBlocks int, contextLens []int32, o PagedOptions) ([]float32, error) {
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("paged_attention: %w", err)
	}
	l := p.Layout
	d := l.HeadDim
	if qHeads%l.NumKVHeads != 0 {
		return nil, shapeErr("query heads %d are not a multiple of KV heads %d", qHeads, l.NumKVHeads)
	}
	if layer < 0 || layer >= l.NumLayers {
		return nil, fmt.Errorf("paged_attention: layer %d of %d: %w", layer, l.NumLayers, ErrIndex)
	}
	if err := needLen("paged_attention q", len(q), batch*qHeads*d); err != nil {
		return nil, err
	}
	if err := needLen("paged_attention block_tables", len(blockTables), batch*maxBlocks); err != nil {
		return nil, err
	}
	if err := needLen("paged_attention context_lens", len(contextLens), batch); err != nil {
		return nil, err
	}
	for b, n := range contextLens {
		if n < 0 || int(n) > maxBlocks*l.BlockSize {
			return nil, fmt.Errorf("paged_attention: sequence %d context %d outside 0…%d (max_blocks %d × block size %d): %w",
				b, n, maxBlocks*l.BlockSize, maxBlocks, l.BlockSize, ErrIndex)
		}
		for j := 0; j < int(n); j += l.BlockSize {
			if blk := blockTables[b*maxBlocks+j/l.BlockSize]; blk < 0 || int(blk) >= l.NumBlocks {
				return nil, fmt.Errorf("paged_attention: sequence %d block %d is %d, pool has %d blocks: %w",
					b, j/l.BlockSize, blk, l.NumBlocks, ErrIndex)
			}
		}
	}
	group := qHeads / l.NumKVHeads
	scale := AttnOptions{Scale: o.Scale}.scale(d)
	win := AttnOptions{Causal: true, SlidingWindow: o.SlidingWindow}
	out := make([]float32, batch*qHeads*d)
	kbuf, vbuf := make([]float32, d), make([]float32, d)
	for b := range batch {
		n := int(contextLens[b])
		for h := range qHeads {
			kh := h / group
			keys := func(yield func(k, v []float32) bool) {
				for j := range n {
					if !win.sees(n-1, j) {
						continue
					}
					blk := int(blockTables[b*maxBlocks+j/l.BlockSize])
					for e := range d {
						kbuf[e] = float32(p.At(layer, kvcache.Key, blk, j%l.BlockSize, kh, e))
						vbuf[e] = float32(p.At(layer, kvcache.Value, blk, j%l.BlockSize, kh, e))
					}
					if !yield(kbuf, vbuf) {
						return
					}
				}
			}
			attend(out[(b*qHeads+h)*d:][:d], q[(b*qHeads+h)*d:][:d], scale, keys)
		}
	}
	return out, nil
}
