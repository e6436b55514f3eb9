package ref

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"llmir/kvcache"
)

func TestAttentionHand(t *testing.T) {
	// Scores 0 and ln 3 (scale 1) weigh the values 1/4 and 3/4.
	q := []float32{1, 0}
	k := []float32{0, 5, float32(math.Log(3)), 7}
	v := []float32{4, 8, 0, -4}
	d := AttnDims{Batch: 1, Seq: 1, KVLen: 2, QHeads: 1, KVHeads: 1, HeadDim: 2}
	got, err := Attention(q, k, v, d, AttnOptions{Scale: 1})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "two keys", got, []float32{1, -1}, 1e-6)

	// A single key returns its value, whatever q.
	rng := rand.New(rand.NewPCG(8, 8))
	d1 := AttnDims{Batch: 2, Seq: 3, KVLen: 1, QHeads: 4, KVHeads: 2, HeadDim: 5}
	q1, k1, v1 := randF(rng, 2*3*4*5), randF(rng, 2*2*5), randF(rng, 2*2*5)
	got, _ = Attention(q1, k1, v1, d1, AttnOptions{})
	for b := range 2 {
		for i := range 3 {
			for h := range 4 {
				near(t, "single key", got[((b*3+i)*4+h)*5:][:5], v1[(b*2+h/2)*5:][:5], 1e-7)
			}
		}
	}
}

func TestAttentionMasks(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	const s, hd = 5, 3
	d := AttnDims{Batch: 1, Seq: s, KVLen: s, QHeads: 1, KVHeads: 1, HeadDim: hd}
	q, k, v := randF(rng, s*hd), randF(rng, s*hd), randF(rng, s*hd)
	causal, _ := Attention(q, k, v, d, AttnOptions{Causal: true})
	near(t, "first query sees only the first key", causal[:hd], v[:hd], 1e-7)
	// A window of 1 leaves each query its own key.
	own, _ := Attention(q, k, v, d, AttnOptions{Causal: true, SlidingWindow: 1})
	near(t, "window 1", own, v, 1e-7)
	// A window of 2: query 3 sees keys 2 and 3 only, the same as attention
	// over just those keys.
	w2, _ := Attention(q, k, v, d, AttnOptions{Causal: true, SlidingWindow: 2})
	sub, _ := Attention(q[3*hd:4*hd], k[2*hd:4*hd], v[2*hd:4*hd], AttnDims{Batch: 1, Seq: 1, KVLen: 2, QHeads: 1, KVHeads: 1, HeadDim: hd}, AttnOptions{})
	near(t, "window 2", w2[3*hd:4*hd], sub, 1e-7)
	// Changing a key the window excludes changes nothing.
	k2 := append([]float32(nil), k...)
	k2[0] += 10
	w2b, _ := Attention(q, k2, v, d, AttnOptions{Causal: true, SlidingWindow: 2})
	near(t, "window ignores old keys", w2b[2*hd:], w2[2*hd:], 0)

	// Chunked prefill: the last 2 queries over all 5 keys equal the last 2
	// rows of the full causal attention.
	chunk, _ := Attention(q[3*hd:], k, v, AttnDims{Batch: 1, Seq: 2, KVLen: s, QHeads: 1, KVHeads: 1, HeadDim: hd}, AttnOptions{Causal: true})
	near(t, "chunked prefill", chunk, causal[3*hd:], 0)

	// More queries than keys under the causal mask: the first sees nothing.
	none, _ := Attention(q[:2*hd], k[:hd], v[:hd], AttnDims{Batch: 1, Seq: 2, KVLen: 1, QHeads: 1, KVHeads: 1, HeadDim: hd}, AttnOptions{Causal: true})
	near(t, "no visible key", none, append([]float32{0, 0, 0}, v[:hd]...), 0)
}

func TestAttentionGQAEqualsRepeatedMHA(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	const b, s, hq, hkv, hd = 2, 4, 6, 2, 3
	q, k, v := randF(rng, b*s*hq*hd), randF(rng, b*s*hkv*hd), randF(rng, b*s*hkv*hd)
	rep := func(x []float32) []float32 {
		out := make([]float32, 0, b*s*hq*hd)
		for row := range b * s {
			for h := range hq {
				out = append(out, x[(row*hkv+h/(hq/hkv))*hd:][:hd]...)
			}
		}
		return out
	}
	o := AttnOptions{Causal: true, Scale: 0.3}
	gqa, err := Attention(q, k, v, AttnDims{Batch: b, Seq: s, KVLen: s, QHeads: hq, KVHeads: hkv, HeadDim: hd}, o)
	if err != nil {
		t.Fatal(err)
	}
	mha, _ := Attention(q, rep(k), rep(v), AttnDims{Batch: b, Seq: s, KVLen: s, QHeads: hq, KVHeads: hq, HeadDim: hd}, o)
	near(t, "gqa", gqa, mha, 0)
	if _, err := Attention(q, k, v, AttnDims{Batch: b, Seq: s, KVLen: s, QHeads: hq, KVHeads: 4, HeadDim: hd}, o); !errors.Is(err, ErrShape) {
		t.Errorf("6 query heads over 4 KV heads: err %v, want ErrShape", err)
	}
}

// writeSeqs appends each sequence's keys and values through AppendKV into
// blocks taken from a shuffled free list, and returns the padded block
// tables.
func writeSeqs(t *testing.T, p *Pool, rng *rand.Rand, layer int, k, v [][]float32) ([]int32, int) {
	t.Helper()
	l := p.Layout
	free := rng.Perm(l.NumBlocks)
	maxBlocks := 0
	for _, kk := range k {
		maxBlocks = max(maxBlocks, (len(kk)/(l.NumKVHeads*l.HeadDim)+l.BlockSize-1)/l.BlockSize)
	}
	tables := make([]int32, len(k)*maxBlocks)
	for i := range tables {
		tables[i] = kvcache.PadBlock
	}
	for sq := range k {
		n := len(k[sq]) / (l.NumKVHeads * l.HeadDim)
		slots := make([]int64, n)
		for j := range n {
			if j%l.BlockSize == 0 {
				tables[sq*maxBlocks+j/l.BlockSize] = int32(free[0])
				free = free[1:]
			}
			slots[j] = int64(tables[sq*maxBlocks+j/l.BlockSize])*int64(l.BlockSize) + int64(j%l.BlockSize)
		}
		if err := AppendKV(p, layer, k[sq], v[sq], n, slots); err != nil {
			t.Fatal(err)
		}
	}
	return tables, maxBlocks
}

// storedAs rounds x the way a pool of dtype dt stores it.
func storedAs(dt kvcache.DType, x []float32) []float32 {
	out := make([]float32, len(x))
	b := make([]byte, 4)
	for i, v := range x {
		encodeElem(dt, b, float64(v))
		out[i] = float32(decodeElem(dt, b))
	}
	return out
}

// Paged decode attention over shuffled blocks equals contiguous attention
// of one query at the last position on the same (stored) keys, for ragged
// lengths around the block size, GQA ratios 1, 4 and 8, head dims up to
// 128, every pool dtype, and with a sliding window.
func TestPagedEqualsContiguous(t *testing.T) {
	type heads struct{ hq, hkv, hd int }
	for _, bs := range []int{1, 3, 16} {
		for ci, c := range []struct {
			h   heads
			dt  kvcache.DType
			win int
		}{
			{heads{8, 2, 4}, kvcache.F32, 0},
			{heads{8, 2, 4}, kvcache.F32, 5},
			{heads{4, 4, 64}, kvcache.BF16, 0},
			{heads{8, 1, 80}, kvcache.F16, 3},
			{heads{16, 2, 128}, kvcache.FP8E4M3, 0},
		} {
			rng := rand.New(rand.NewPCG(uint64(bs), uint64(ci)))
			hq, hkv, hd := c.h.hq, c.h.hkv, c.h.hd
			const layers, layer = 2, 1
			lens := []int{1, bs - 1, bs, bs + 1, 2*bs + 3, 0}
			if bs == 1 {
				lens[1] = 7
			}
			l := kvcache.Layout{NumBlocks: 64, BlockSize: bs, NumLayers: layers, NumKVHeads: hkv, HeadDim: hd, DType: c.dt}
			p, err := NewPool(l)
			if err != nil {
				t.Fatal(err)
			}
			k, v := make([][]float32, len(lens)), make([][]float32, len(lens))
			for i, n := range lens {
				k[i], v[i] = randF(rng, n*hkv*hd), randF(rng, n*hkv*hd)
			}
			tables, maxBlocks := writeSeqs(t, p, rng, layer, k, v)
			q := randF(rng, len(lens)*hq*hd)
			ctx := make([]int32, len(lens))
			for i, n := range lens {
				ctx[i] = int32(n)
			}
			got, err := PagedAttention(q, len(lens), hq, p, layer, tables, maxBlocks, ctx, PagedOptions{SlidingWindow: c.win})
			if err != nil {
				t.Fatal(err)
			}
			for i, n := range lens {
				want, err := Attention(q[i*hq*hd:(i+1)*hq*hd], storedAs(c.dt, k[i]), storedAs(c.dt, v[i]),
					AttnDims{Batch: 1, Seq: 1, KVLen: n, QHeads: hq, KVHeads: hkv, HeadDim: hd},
					AttnOptions{Causal: true, SlidingWindow: c.win})
				if err != nil {
					t.Fatal(err)
				}
				near(t, "paged vs contiguous", got[i*hq*hd:(i+1)*hq*hd], want, 0)
			}
			// The other layer was never written: it reads zeros, and so
			// attends uniformly over zero values.
			zero, _ := PagedAttention(q, len(lens), hq, p, 0, tables, maxBlocks, ctx, PagedOptions{})
			near(t, "untouched layer", zero, make([]float32, len(zero)), 0)
		}
	}
}

// Appending a decode token's K/V and then paged attention equals attention
// over the prompt's keys concatenated with the new one.
func TestAppendThenPagedEqualsConcatenated(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	const bs, hq, hkv, hd, n = 4, 4, 1, 6, 9
	l := kvcache.Layout{NumBlocks: 8, BlockSize: bs, NumLayers: 1, NumKVHeads: hkv, HeadDim: hd, DType: kvcache.F32}
	p, _ := NewPool(l)
	k, v := randF(rng, n*hkv*hd), randF(rng, n*hkv*hd)
	tables, _ := writeSeqs(t, p, rng, 0, [][]float32{k}, [][]float32{v})
	// The 10th token goes to a fresh block (slot 9 is in block 2 of the
	// table, already allocated since 9 tokens span 3 blocks).
	nk, nv := randF(rng, hkv*hd), randF(rng, hkv*hd)
	slot := int64(tables[n/bs])*bs + n%bs
	// Padding slots (−1) are skipped.
	if err := AppendKV(p, 0, append(nk, randF(rng, hkv*hd)...), append(nv, randF(rng, hkv*hd)...), 2, []int64{slot, -1}); err != nil {
		t.Fatal(err)
	}
	q := randF(rng, hq*hd)
	got, err := PagedAttention(q, 1, hq, p, 0, tables, len(tables), []int32{n + 1}, PagedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Attention(q, append(k, nk...), append(v, nv...), AttnDims{Batch: 1, Seq: 1, KVLen: n + 1, QHeads: hq, KVHeads: hkv, HeadDim: hd}, AttnOptions{})
	near(t, "append then paged", got, want, 0)

	if err := AppendKV(p, 0, nk, nv, 1, []int64{int64(l.NumBlocks * bs)}); !errors.Is(err, ErrIndex) {
		t.Errorf("slot past the pool: err %v, want ErrIndex", err)
	}
	if _, err := PagedAttention(q, 1, hq, p, 0, []int32{0, kvcache.PadBlock}, 2, []int32{bs + 1}, PagedOptions{}); !errors.Is(err, ErrIndex) {
		t.Errorf("context reading a pad block: err %v, want ErrIndex", err)
	}
	short := &Pool{Layout: l, Bytes: p.Bytes[:len(p.Bytes)-1]}
	if _, err := PagedAttention(q, 1, hq, short, 0, tables, len(tables), []int32{n}, PagedOptions{}); !errors.Is(err, ErrShape) {
		t.Errorf("pool one byte short: err %v, want ErrShape", err)
	}
	if _, err := PagedAttention(q, 1, 3, p, 0, tables, len(tables), []int32{n}, PagedOptions{}); !errors.Is(err, ErrShape) {
		t.Errorf("3 query heads: err %v, want ErrShape", err)
	}
}

func TestPoolStorageFormats(t *testing.T) {
	for _, tc := range []struct {
		dt   kvcache.DType
		v    float64
		bits uint32
		back float64
	}{
		{kvcache.F16, 1, 0x3c00, 1},
		{kvcache.F16, -2, 0xc000, -2},
		{kvcache.F16, 65504, 0x7bff, 65504},
		{kvcache.F16, 1e6, 0x7c00, math.Inf(1)},
		{kvcache.F16, 0x1p-24, 0x0001, 0x1p-24},
		{kvcache.F16, 1 + 0x1p-11, 0x3c00, 1}, // tie to even
		{kvcache.BF16, 1, 0x3f80, 1},
		{kvcache.BF16, 1 + 0x1p-8, 0x3f80, 1}, // tie to even
		{kvcache.BF16, -3.5, 0xc060, -3.5},
		{kvcache.FP8E4M3, 1, 0x38, 1},
		{kvcache.FP8E4M3, 448, 0x7e, 448},
		{kvcache.FP8E4M3, 1000, 0x7e, 448}, // saturates
		{kvcache.FP8E4M3, -0.0625, 0x98, -0.0625},
		{kvcache.FP8E4M3, 0x1p-9, 0x01, 0x1p-9}, // smallest subnormal
		{kvcache.FP8E4M3, 1.0625, 0x38, 1},      // tie between 1 and 1.125 → even code
	} {
		b := make([]byte, 4)
		encodeElem(tc.dt, b, tc.v)
		var bits uint32
		for i := tc.dt.Size() - 1; i >= 0; i-- {
			bits = bits<<8 | uint32(b[i])
		}
		if bits != tc.bits {
			t.Errorf("%s(%g): bits %#x, want %#x", tc.dt, tc.v, bits, tc.bits)
		}
		if got := decodeElem(tc.dt, b); got != tc.back {
			t.Errorf("%s(%g) decodes to %g, want %g", tc.dt, tc.v, got, tc.back)
		}
	}
	// Every f16 and bf16 value survives encode ∘ decode, and RoundF16 /
	// RoundBF16 agree with the pool's storage.
	rng := rand.New(rand.NewPCG(12, 12))
	x := randF(rng, 1000)
	for _, c := range []struct {
		dt    kvcache.DType
		round func([]float32) []float32
	}{{kvcache.F16, RoundF16}, {kvcache.BF16, RoundBF16}} {
		r := c.round(append([]float32(nil), x...))
		b := make([]byte, 2)
		for i, v := range x {
			encodeElem(c.dt, b, float64(v))
			if got := decodeElem(c.dt, b); float32(got) != r[i] {
				t.Fatalf("%s: %g stored as %g, rounded to %g", c.dt, v, got, r[i])
			}
		}
	}
}
