package kvcache

import (
	"errors"
	"slices"
	"testing"
)

// TestLayoutOffsetOrder walks the documented order
// [layer][K,V][block][slot][head][dim] and checks that Offset visits every
// element once, densely, ending at PoolBytes.
func TestLayoutOffsetOrder(t *testing.T) {
	for _, l := range []Layout{
		{NumBlocks: 3, BlockSize: 5, NumLayers: 2, NumKVHeads: 3, HeadDim: 7, DType: F32},
		{NumBlocks: 1, BlockSize: 1, NumLayers: 1, NumKVHeads: 1, HeadDim: 1, DType: FP8E4M3},
		{NumBlocks: 4, BlockSize: 16, NumLayers: 3, NumKVHeads: 2, HeadDim: 8, DType: BF16},
	} {
		if err := l.Validate(); err != nil {
			t.Fatal(err)
		}
		want := int64(0)
		for layer := range l.NumLayers {
			for kv := Key; kv <= Value; kv++ {
				for b := range l.NumBlocks {
					if got := l.Offset(layer, kv, b, 0, 0, 0); got != want {
						t.Fatalf("%+v: block (%d,%v,%d) starts at %d, want %d", l, layer, kv, b, got, want)
					}
					for s := range l.BlockSize {
						if got := l.Offset(layer, kv, b, s, 0, 0); got != want {
							t.Fatalf("%+v: token (%d,%v,%d,%d) at %d, want %d", l, layer, kv, b, s, got, want)
						}
						for h := range l.NumKVHeads {
							for d := range l.HeadDim {
								if got := l.Offset(layer, kv, b, s, h, d); got != want {
									t.Fatalf("%+v: element (%d,%v,%d,%d,%d,%d) at %d, want %d", l, layer, kv, b, s, h, d, got, want)
								}
								want += int64(l.DType.Size())
							}
						}
					}
				}
			}
		}
		if want != l.PoolBytes() {
			t.Fatalf("%+v: %d bytes walked, PoolBytes %d", l, want, l.PoolBytes())
		}
		if l.BlockBytes() != int64(l.BlockSize)*l.TokenBytes() ||
			l.TokenBytes() != int64(l.NumKVHeads*l.HeadDim*l.DType.Size()) {
			t.Fatalf("%+v: block %d bytes, token %d bytes", l, l.BlockBytes(), l.TokenBytes())
		}
	}
}

func TestDType(t *testing.T) {
	for _, c := range []struct {
		d    DType
		size int
	}{{F32, 4}, {F16, 2}, {BF16, 2}, {FP8E4M3, 1}} {
		if c.d.Size() != c.size {
			t.Errorf("%v: size %d, want %d", c.d, c.d.Size(), c.size)
		}
		got, err := ParseDType(c.d.String())
		if err != nil || got != c.d {
			t.Errorf("ParseDType(%q) = %v, %v", c.d.String(), got, err)
		}
	}
	if _, err := ParseDType("int4"); err == nil {
		t.Error("ParseDType(int4) accepted")
	}
	if DType(0).Size() != 0 || DType(9).String() != "DType(9)" {
		t.Error("unknown dtype has a size or a name")
	}
}

func TestLayoutValidate(t *testing.T) {
	base := Layout{NumBlocks: 8, BlockSize: 16, NumLayers: 2, NumKVHeads: 4, HeadDim: 64, DType: F16}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Layout){
		"num_blocks":   func(l *Layout) { l.NumBlocks = 0 },
		"block_size":   func(l *Layout) { l.BlockSize = -1 },
		"num_layers":   func(l *Layout) { l.NumLayers = 0 },
		"num_kv_heads": func(l *Layout) { l.NumKVHeads = 0 },
		"head_dim":     func(l *Layout) { l.HeadDim = 0 },
		"dtype":        func(l *Layout) { l.DType = 0 },
		"int32":        func(l *Layout) { l.NumBlocks = 1 << 28 },
	} {
		l := base
		mut(&l)
		if err := l.Validate(); !errors.Is(err, ErrInvalidLayout) {
			t.Errorf("%s: Validate = %v", name, err)
		}
	}
}

func TestHashChain(t *testing.T) {
	toks := seq(0, 10)
	hs := PrefixHashes(toks, 4, nil)
	if len(hs) != 2 {
		t.Fatalf("%d hashes for 2 full blocks", len(hs))
	}
	if hs[0] != HashBlock(nil, toks[:4], nil) || hs[1] != HashBlock(&hs[0], toks[4:8], nil) {
		t.Fatal("PrefixHashes is not the chain of HashBlock")
	}
	// Same second block after a different first block: different hash.
	other := PrefixHashes(cat([]int32{9, 9, 9, 9}, toks[4:8]), 4, nil)
	if other[1] == hs[1] {
		t.Fatal("a block's hash ignores its parent")
	}
	// The salt reaches every block through the chain.
	salted := PrefixHashes(toks, 4, []byte("s"))
	if salted[0] == hs[0] || salted[1] == hs[1] {
		t.Fatal("salt does not change the chain")
	}
	// Salt bytes cannot be traded for token bytes.
	if HashBlock(nil, []int32{1}, []byte{0, 0, 0, 0}) == HashBlock(nil, []int32{0, 1}, nil) {
		t.Fatal("salt and tokens collide")
	}
	if !slices.Equal(PrefixHashes(toks, 4, nil), hs) {
		t.Fatal("hashing is not deterministic")
	}
}

func TestExportTables(t *testing.T) {
	m := newTestManager(t, 16, 4, 0)
	mustAdd(t, m, 10, seq(0, 9), 0)     // blocks 0 1 2, last page 1
	mustAdd(t, m, 11, seq(100, 104), 0) // block 3, last page 4
	mustAdd(t, m, 12, nil, 0)           // empty
	if err := m.Fork(10, 13); err != nil {
		t.Fatal(err)
	}
	if err := m.Append(13, 7); err != nil { // copies block 2 into 4
		t.Fatal(err)
	}
	tabs, err := m.Export([]SeqID{13, 11, 12, 10})
	if err != nil {
		t.Fatal(err)
	}
	want := BlockTables{
		BlockSize:   4,
		SeqLens:     []int32{10, 4, 0, 9},
		Indptr:      []int32{0, 3, 4, 4, 7},
		Indices:     []int32{0, 1, 4, 3, 0, 1, 2},
		LastPageLen: []int32{2, 4, 0, 1},
	}
	if !slices.Equal(tabs.SeqLens, want.SeqLens) || !slices.Equal(tabs.Indptr, want.Indptr) ||
		!slices.Equal(tabs.Indices, want.Indices) || !slices.Equal(tabs.LastPageLen, want.LastPageLen) || tabs.BlockSize != 4 {
		t.Fatalf("export\n got %+v\nwant %+v", tabs, want)
	}
	p := tabs.Padded()
	wantPad := []int32{0, 1, 4, 3, -1, -1, -1, -1, -1, 0, 1, 2}
	if p.NumSeqs != 4 || p.MaxBlocks != 3 || !slices.Equal(p.Table, wantPad) {
		t.Fatalf("padded %+v, want table %v", p, wantPad)
	}
	slots, err := m.Slots(nil, 13, 7, 10)
	if err != nil || !slices.Equal(slots, []int32{1*4 + 3, 4*4 + 0, 4*4 + 1}) {
		t.Fatalf("slots %v, %v", slots, err)
	}
	if _, err := m.Slots(nil, 13, 8, 11); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("slots past the end: %v", err)
	}
	if _, err := m.Export([]SeqID{10, 99}); !errors.Is(err, ErrUnknownSequence) {
		t.Fatalf("export of a missing sequence: %v", err)
	}
}
