package kvcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// FuzzManager runs a random sequence of operations, decoded from the input,
// on a small pool with storage, and after every step checks the manager's
// invariants (CheckInvariants), the exported tables, and that every
// sequence reads back exactly the keys and values its own history wrote:
// so no copy-on-write, prefix hit, eviction or truncation ever changes
// what another sequence reads.
func FuzzManager(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 7))
	for range 24 {
		in := make([]byte, 600)
		for i := range in {
			in[i] = byte(r.Uint32())
		}
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		h := fuzzHarness{t: t, data: data[3:], model: map[SeqID]*shadowSeq{}}
		var err error
		h.m, err = NewManager(Config{
			Layout: Layout{
				NumBlocks: 3 + int(data[0]%14), BlockSize: 1 + int(data[1]%5),
				NumLayers: 2, NumKVHeads: 1, HeadDim: 2, DType: F16,
			},
			Watermark:            []float64{0, 0, 0.1, 0.25}[data[2]%4],
			DisablePrefixCaching: data[2]&0x80 != 0,
			Storage:              true,
		})
		if err != nil {
			t.Fatal(err)
		}
		for step := 0; len(h.data) > 0 && step < 400; step++ {
			h.step(step)
			h.check(step)
		}
	})
}

// shadowSeq is what a sequence must read back: content at position p is a
// function of the salt and tokens[0..p], as real keys and values are, so a
// prefix taken from another sequence must read the same.
type shadowSeq struct {
	tokens []int32
	salt   []byte
	// writableFrom mirrors the manager's rule: positions before it came
	// from the cache or a fork, or were committed.
	writableFrom int
}

func (s *shadowSeq) content(layer int, kv KV) [][]byte {
	out := make([][]byte, len(s.tokens))
	h := uint64(len(s.salt))*0x9e3779b97f4a7c15 + 1
	for _, c := range s.salt {
		h = mix(h ^ uint64(c))
	}
	for p, tok := range s.tokens {
		h = mix(h ^ uint64(uint32(tok)))
		out[p] = binary.LittleEndian.AppendUint32(nil, uint32(mix(h^uint64(layer*2+int(kv)))))
	}
	return out
}

func mix(x uint64) uint64 {
	x ^= x >> 31
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 29
	return x
}

type fuzzHarness struct {
	t     *testing.T
	m     *Manager
	data  []byte
	model map[SeqID]*shadowSeq
}

func (h *fuzzHarness) next() int {
	if len(h.data) == 0 {
		return 0
	}
	b := h.data[0]
	h.data = h.data[1:]
	return int(b)
}

// tokens draws n tokens from a 3-letter alphabet, so prompts often share
// prefixes and hit the cache.
func (h *fuzzHarness) tokens(n int) []int32 {
	ts := make([]int32, n)
	for i := range ts {
		ts[i] = int32(h.next() % 3)
	}
	return ts
}

// write stores the content of positions [from, len) of sequence id, then
// mostly commits some or all of the sequence.
func (h *fuzzHarness) write(step int, id SeqID, from int) {
	defer h.commit(step, id)
	s := h.model[id]
	for layer := range h.m.layout.NumLayers {
		for kv := Key; kv <= Value; kv++ {
			c := s.content(layer, kv)
			for p := from; p < len(s.tokens); p++ {
				if err := h.m.WriteKV(id, p, layer, kv, c[p]); err != nil {
					h.t.Fatalf("step %d: write seq %d pos %d: %v", step, id, p, err)
				}
			}
		}
	}
}

// commit publishes all of sequence id (half the time), a prefix of it (a
// quarter), or nothing, so some blocks stay unfindable for a while.
func (h *fuzzHarness) commit(step int, id SeqID) {
	s := h.model[id]
	end := len(s.tokens)
	switch h.next() % 4 {
	case 0:
		return
	case 1:
		end = max(0, end-1-h.next()%(2*h.m.layout.BlockSize))
	}
	if err := h.m.Commit(id, end); err != nil {
		h.t.Fatalf("step %d: commit seq %d to %d: %v", step, id, end, err)
	}
	if h.m.prefixCaching {
		s.writableFrom = max(s.writableFrom, end/h.m.layout.BlockSize*h.m.layout.BlockSize)
	}
}

func (h *fuzzHarness) step(step int) {
	t := h.t
	opc, id := h.next()%7, SeqID(h.next()%6)
	s, exists := h.model[id]
	expect := func(op string, err error, allowed ...error) {
		t.Helper()
		if err == nil {
			return
		}
		for _, a := range allowed {
			if errors.Is(err, a) {
				return
			}
		}
		t.Fatalf("step %d %s seq %d: unexpected error %v", step, op, id, err)
	}
	switch opc {
	case 0, 1: // add (twice as likely, so the pool fills)
		ns := &shadowSeq{tokens: h.tokens(h.next() % 14)}
		if h.next()%2 == 1 {
			ns.salt = []byte("tenant")
		}
		res, err := h.m.Add(id, ns.tokens, ns.salt)
		if exists {
			if !errors.Is(err, ErrSequenceExists) {
				t.Fatalf("step %d: add existing seq %d: error %v", step, id, err)
			}
			return
		}
		expect("add", err, ErrCacheFull, ErrExceedsCapacity)
		if err == nil {
			if res.CachedTokens >= max(len(ns.tokens), 1) || res.CachedTokens%h.m.layout.BlockSize != 0 {
				t.Fatalf("step %d: add seq %d of %d tokens: %d cached", step, id, len(ns.tokens), res.CachedTokens)
			}
			ns.writableFrom = res.CachedTokens
			h.model[id] = ns
			h.write(step, id, res.CachedTokens)
		}
	case 2: // append
		ts := h.tokens(1 + h.next()%6)
		err := h.m.Append(id, ts...)
		if !exists {
			if !errors.Is(err, ErrUnknownSequence) {
				t.Fatalf("step %d: append to missing seq %d: error %v", step, id, err)
			}
			return
		}
		expect("append", err, ErrCacheFull)
		if err == nil {
			from := len(s.tokens)
			s.tokens = append(s.tokens, ts...)
			h.write(step, id, from)
		}
	case 3: // fork id into dst
		dst := SeqID(h.next() % 6)
		err := h.m.Fork(id, dst)
		_, dstExists := h.model[dst]
		switch {
		case !exists:
			expect("fork", err, ErrUnknownSequence)
		case dstExists:
			expect("fork", err, ErrSequenceExists)
		}
		if exists && !dstExists {
			if err != nil {
				t.Fatalf("step %d: fork %d into %d: %v", step, id, dst, err)
			}
			h.model[dst] = &shadowSeq{tokens: slices.Clone(s.tokens), salt: s.salt, writableFrom: len(s.tokens)}
		}
	case 4: // truncate, sometimes past the end
		if !exists {
			expect("truncate", h.m.Truncate(id, 0), ErrUnknownSequence)
			return
		}
		end := h.next() % (len(s.tokens) + 2)
		err := h.m.Truncate(id, end)
		if end > len(s.tokens) {
			if !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("step %d: truncate seq %d to %d of %d: error %v", step, id, end, len(s.tokens), err)
			}
			return
		}
		expect("truncate", err)
		s.tokens = s.tokens[:end]
		s.writableFrom = min(s.writableFrom, end)
	case 5:
		err := h.m.Free(id)
		if !exists {
			expect("free", err, ErrUnknownSequence)
			return
		}
		expect("free", err)
		delete(h.model, id)
	case 6: // rewrite a position with its own content: allowed only where the sequence owns it
		if !exists || len(s.tokens) == 0 {
			err := h.m.WriteKV(id, 0, 0, Key, make([]byte, h.m.layout.TokenBytes()))
			if !errors.Is(err, ErrUnknownSequence) && !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("step %d: write to seq %d with no tokens: %v", step, id, err)
			}
			return
		}
		pos := h.next() % len(s.tokens)
		table, err := h.m.BlockTable(id)
		if err != nil {
			t.Fatal(err)
		}
		b := table[pos/h.m.layout.BlockSize]
		shared := false
		for other := range h.model {
			if ot, _ := h.m.BlockTable(other); other != id && slices.Contains(ot, b) {
				shared = true
			}
		}
		err = h.m.WriteKV(id, pos, 0, Key, s.content(0, Key)[pos])
		if allowed := pos >= s.writableFrom && !shared; allowed != (err == nil) || (err != nil && !errors.Is(err, ErrReadOnly)) {
			t.Fatalf("step %d: rewrite seq %d pos %d (writable from %d, block %d shared %v): %v", step, id, pos, s.writableFrom, b, shared, err)
		}
	}
}

func (h *fuzzHarness) check(step int) {
	t := h.t
	if err := h.m.CheckInvariants(); err != nil {
		t.Fatalf("step %d: %v", step, err)
	}
	ids := make([]SeqID, 0, len(h.model))
	for id := range h.model {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	tabs, err := h.m.Export(ids)
	if err != nil {
		t.Fatalf("step %d: export: %v", step, err)
	}
	pad := tabs.Padded()
	st := h.m.Stats()
	if st.UsedBlocks+st.FreeBlocks != st.TotalBlocks || st.Sequences != len(ids) {
		t.Fatalf("step %d: stats %+v with %d sequences", step, st, len(ids))
	}
	bs := h.m.layout.BlockSize
	// Slots used, the plain way: a block holds as many tokens as the
	// fullest table that names it.
	fill := map[int32]int{}
	for i, id := range ids {
		n := len(h.model[id].tokens)
		for j, b := range tabs.Indices[tabs.Indptr[i]:tabs.Indptr[i+1]] {
			fill[b] = max(fill[b], min(bs, n-j*bs))
		}
	}
	slotsUsed := 0
	for _, f := range fill {
		slotsUsed += f
	}
	if st.SlotsUsed != slotsUsed || st.SlotsAllocated != bs*len(fill) || st.UsedBlocks != len(fill) {
		t.Fatalf("step %d: stats say %d of %d slots in %d blocks, tables %d of %d in %d",
			step, st.SlotsUsed, st.SlotsAllocated, st.UsedBlocks, slotsUsed, bs*len(fill), len(fill))
	}
	buf := make([]byte, h.m.layout.TokenBytes())
	for i, id := range ids {
		s := h.model[id]
		table, err := h.m.BlockTable(id)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if got := tabs.Indices[tabs.Indptr[i]:tabs.Indptr[i+1]]; !slices.Equal(got, table) {
			t.Fatalf("step %d: seq %d CSR row %v, table %v", step, id, got, table)
		}
		if row := pad.Row(i); !slices.Equal(row[:len(table)], table) || slices.ContainsFunc(row[len(table):], func(b int32) bool { return b != PadBlock }) {
			t.Fatalf("step %d: seq %d padded row %v, table %v", step, id, row, table)
		}
		n := len(s.tokens)
		if int(tabs.SeqLens[i]) != n || (n > 0 && int(tabs.LastPageLen[i])+bs*(len(table)-1) != n) {
			t.Fatalf("step %d: seq %d of %d tokens exported as len %d, last page %d, %d blocks",
				step, id, n, tabs.SeqLens[i], tabs.LastPageLen[i], len(table))
		}
		for layer := range h.m.layout.NumLayers {
			for kv := Key; kv <= Value; kv++ {
				for p, want := range s.content(layer, kv) {
					if err := h.m.ReadKV(buf, id, p, layer, kv); err != nil {
						t.Fatalf("step %d: read seq %d pos %d: %v", step, id, p, err)
					}
					if !bytes.Equal(buf, want) {
						t.Fatalf("step %d: seq %d pos %d layer %d %v reads %x, wrote %x (table %v)", step, id, p, layer, kv, buf, want, table)
					}
				}
			}
		}
	}
}
