package kvcache

import (
	"errors"
	"slices"
	"testing"
)

// seq returns the tokens [from, to).
func seq(from, to int32) []int32 {
	var t []int32
	for i := from; i < to; i++ {
		t = append(t, i)
	}
	return t
}

func cat(parts ...[]int32) []int32 { return slices.Concat(parts...) }

func newTestManager(t testing.TB, blocks, blockSize int, watermark float64) *Manager {
	t.Helper()
	m, err := NewManager(Config{
		Layout:    Layout{NumBlocks: blocks, BlockSize: blockSize, NumLayers: 1, NumKVHeads: 1, HeadDim: 1, DType: F32},
		Watermark: watermark,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// op is one step of a scenario: the operation, what it must return, and
// the block tables and counters it must leave. A successful add or append
// is followed by Commit of the whole sequence, as an engine commits after
// computing, unless noCommit.
type op struct {
	do       string // add, append, fork, truncate, free, commit
	noCommit bool
	id, src  SeqID
	tokens   []int32
	salt     string
	end      int
	wantErr  error
	// wantCached is Add's CachedTokens.
	wantCached int
	// tables, when set, are the exact block tables of these sequences.
	tables map[SeqID][]int32
	// used, free, cached, evicted, copies are checked when not nil.
	used, free, cached *int
	evicted, copies    *int64
}

func n(v int) *int       { return &v }
func n64(v int64) *int64 { return &v }

func runOps(t *testing.T, m *Manager, ops []op) {
	t.Helper()
	for i, o := range ops {
		var err error
		switch o.do {
		case "add":
			var r AddResult
			r, err = m.Add(o.id, o.tokens, []byte(o.salt))
			if err == nil && r.CachedTokens != o.wantCached {
				t.Errorf("step %d add %d: cached %d tokens, want %d", i, o.id, r.CachedTokens, o.wantCached)
			}
		case "append":
			err = m.Append(o.id, o.tokens...)
		case "commit":
			err = m.Commit(o.id, o.end)
		case "fork":
			err = m.Fork(o.src, o.id)
		case "truncate":
			err = m.Truncate(o.id, o.end)
		case "free":
			err = m.Free(o.id)
		default:
			t.Fatalf("step %d: unknown op %q", i, o.do)
		}
		if !errors.Is(err, o.wantErr) || (o.wantErr == nil) != (err == nil) {
			t.Fatalf("step %d %s %d: error %v, want %v", i, o.do, o.id, err, o.wantErr)
		}
		if err == nil && !o.noCommit && (o.do == "add" || o.do == "append") {
			n, _ := m.Len(o.id)
			if err := m.Commit(o.id, n); err != nil {
				t.Fatalf("step %d: commit: %v", i, err)
			}
		}
		if err := m.CheckInvariants(); err != nil {
			t.Fatalf("step %d %s %d: invariants: %v", i, o.do, o.id, err)
		}
		for id, want := range o.tables {
			got, err := m.BlockTable(id)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("step %d %s %d: seq %d table %v, want %v", i, o.do, o.id, id, got, want)
			}
		}
		st := m.Stats()
		checkInt := func(name string, got int, want *int) {
			if want != nil && got != *want {
				t.Errorf("step %d %s %d: %s = %d, want %d", i, o.do, o.id, name, got, *want)
			}
		}
		checkInt("used blocks", st.UsedBlocks, o.used)
		checkInt("free blocks", st.FreeBlocks, o.free)
		checkInt("cached blocks", st.CachedBlocks, o.cached)
		if o.evicted != nil && st.Evictions != *o.evicted {
			t.Errorf("step %d: %d evictions, want %d", i, st.Evictions, *o.evicted)
		}
		if o.copies != nil && st.CoWCopies != *o.copies {
			t.Errorf("step %d: %d copies on write, want %d", i, st.CoWCopies, *o.copies)
		}
	}
}

func TestManagerScenarios(t *testing.T) {
	type tables = map[SeqID][]int32
	tests := []struct {
		name      string
		blocks    int
		blockSize int
		watermark float64
		ops       []op
	}{
		{"add allocates ceil(len/B) blocks", 8, 4, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 5), tables: tables{1: {0, 1}}, used: n(2), free: n(6)},
			{do: "add", id: 2, tokens: seq(100, 104), tables: tables{2: {2}}, used: n(3)},
			{do: "add", id: 3, tokens: nil, tables: tables{3: {}}, used: n(3)},
		}},
		{"append fills the last block before allocating", 8, 4, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 3), tables: tables{1: {0}}},
			{do: "append", id: 1, tokens: seq(3, 4), tables: tables{1: {0}}, used: n(1)},
			{do: "append", id: 1, tokens: seq(4, 5), tables: tables{1: {0, 1}}, used: n(2)},
			{do: "append", id: 1, tokens: seq(5, 14), tables: tables{1: {0, 1, 2, 3}}, used: n(4)},
			{do: "append", id: 3, tokens: seq(0, 1), wantErr: ErrUnknownSequence},
		}},
		{"fork shares; the first write copies the partial block", 8, 4, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 6), tables: tables{1: {0, 1}}},
			{do: "fork", src: 1, id: 2, tables: tables{1: {0, 1}, 2: {0, 1}}, used: n(2)},
			{do: "append", id: 2, tokens: seq(50, 51), tables: tables{1: {0, 1}, 2: {0, 2}}, used: n(3), copies: n64(1)},
			// The original now owns its block alone: no second copy.
			{do: "append", id: 1, tokens: seq(6, 7), tables: tables{1: {0, 1}}, copies: n64(1)},
			{do: "free", id: 1, tables: tables{2: {0, 2}}, used: n(2)},
		}},
		{"fork at a block boundary copies nothing", 8, 4, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 8)},
			{do: "fork", src: 1, id: 2},
			{do: "append", id: 2, tokens: seq(8, 9), tables: tables{1: {0, 1}, 2: {0, 1, 2}}, copies: n64(0)},
			{do: "fork", src: 9, id: 3, wantErr: ErrUnknownSequence},
			{do: "fork", src: 1, id: 2, wantErr: ErrSequenceExists},
		}},
		{"a freed prefix is reused", 8, 4, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 9), tables: tables{1: {0, 1, 2}}},
			{do: "free", id: 1, used: n(0), free: n(8), cached: n(2)},
			{do: "add", id: 2, tokens: cat(seq(0, 8), seq(70, 73)), wantCached: 8, tables: tables{2: {0, 1, 2}}, cached: n(0)},
		}},
		{"a live sequence's prefix is shared", 8, 4, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 10), tables: tables{1: {0, 1, 2}}},
			{do: "add", id: 2, tokens: cat(seq(0, 4), seq(40, 42)), wantCached: 4, tables: tables{2: {0, 3}}, used: n(4)},
			{do: "free", id: 1, used: n(2), cached: n(1)},
		}},
		{"a fully cached prompt still leaves its last token to compute", 8, 4, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 8)},
			{do: "free", id: 1},
			{do: "add", id: 2, tokens: seq(0, 8), wantCached: 4},
			{do: "add", id: 3, tokens: seq(0, 9), wantCached: 8},
		}},
		{"the salt separates prefixes", 12, 4, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 9), salt: "tenant-a"},
			{do: "add", id: 2, tokens: seq(0, 9), salt: "tenant-b", wantCached: 0},
			{do: "add", id: 3, tokens: seq(0, 9), salt: "tenant-a", wantCached: 8},
			{do: "add", id: 4, tokens: seq(0, 9), wantCached: 0},
		}},
		{"eviction takes the least recently released block, tail first", 4, 2, 0, []op{
			{do: "add", id: 1, tokens: seq(1, 5), tables: tables{1: {0, 1}}},
			{do: "add", id: 2, tokens: seq(5, 9), tables: tables{2: {2, 3}}},
			{do: "free", id: 1, cached: n(2)},
			{do: "free", id: 2, cached: n(4)},
			// Seq 1 went first, its tail block 1 before its head block 0.
			{do: "add", id: 3, tokens: seq(20, 24), tables: tables{3: {1, 0}}, evicted: n64(2), cached: n(2)},
			{do: "free", id: 3, cached: n(4)},
			// Seq 2's prefix survived; the new block evicts seq 3's tail
			// block 0, released before its head.
			{do: "add", id: 4, tokens: cat(seq(5, 9), seq(30, 31)), wantCached: 4, tables: tables{4: {2, 3, 0}}, evicted: n64(3)},
			{do: "free", id: 4},
			// Seq 1's prefix is gone.
			{do: "add", id: 5, tokens: seq(1, 4), wantCached: 0},
		}},
		{"cache full: nothing changes, the caller preempts", 2, 2, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 3), tables: tables{1: {0, 1}}},
			{do: "add", id: 2, tokens: seq(10, 11), wantErr: ErrCacheFull},
			{do: "append", id: 1, tokens: seq(3, 4)},
			{do: "append", id: 1, tokens: seq(4, 6), wantErr: ErrCacheFull, tables: tables{1: {0, 1}}},
			{do: "free", id: 1, used: n(0)},
			{do: "add", id: 2, tokens: seq(10, 11), tables: tables{2: {1}}},
		}},
		{"watermark: Add keeps it free, Append may use it", 10, 4, 0.2, []op{
			{do: "add", id: 1, tokens: seq(0, 28), used: n(7)},
			{do: "add", id: 2, tokens: seq(100, 108), wantErr: ErrCacheFull},
			{do: "add", id: 2, tokens: seq(100, 104), used: n(8)},
			{do: "append", id: 1, tokens: seq(28, 36), used: n(10)},
		}},
		{"a prompt larger than pool minus watermark never fits", 4, 4, 0.25, []op{
			{do: "add", id: 1, tokens: seq(0, 13), wantErr: ErrExceedsCapacity},
			{do: "add", id: 1, tokens: seq(0, 12), used: n(3)},
			{do: "add", id: 1, tokens: seq(0, 1), wantErr: ErrSequenceExists},
		}},
		{"truncate releases blocks and copies a cached block before rewriting it", 8, 4, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 12), tables: tables{1: {0, 1, 2}}},
			{do: "truncate", id: 1, end: 6, tables: tables{1: {0, 1}}, used: n(2), cached: n(1)},
			{do: "append", id: 1, tokens: seq(90, 91), tables: tables{1: {0, 3}}, copies: n64(1), cached: n(2)},
			// Block 1 still holds tokens 4..8 for the next prompt.
			{do: "add", id: 2, tokens: seq(0, 9), wantCached: 8, tables: tables{2: {0, 1, 4}}},
			{do: "truncate", id: 1, end: 4, tables: tables{1: {0}}},
			{do: "truncate", id: 1, end: 0, tables: tables{1: {}}},
			{do: "truncate", id: 1, end: 1, wantErr: ErrOutOfRange},
			{do: "truncate", id: 7, end: 0, wantErr: ErrUnknownSequence},
		}},
		{"truncating a fork copies before the shared block changes", 8, 4, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 7)},
			{do: "fork", src: 1, id: 2},
			{do: "truncate", id: 2, end: 5, tables: tables{1: {0, 1}, 2: {0, 1}}},
			{do: "append", id: 2, tokens: seq(60, 62), tables: tables{1: {0, 1}, 2: {0, 2}}, copies: n64(1)},
		}},
		{"free of an unknown sequence", 2, 2, 0, []op{
			{do: "free", id: 3, wantErr: ErrUnknownSequence},
		}},
		{"only committed blocks are found", 12, 4, 0, []op{
			{do: "add", id: 1, tokens: seq(0, 13), noCommit: true},
			{do: "add", id: 2, tokens: seq(0, 13), noCommit: true, wantCached: 0},
			{do: "commit", id: 1, end: 7}, // publishes block 0 only
			{do: "add", id: 3, tokens: seq(0, 13), noCommit: true, wantCached: 4, tables: tables{1: {0, 1, 2, 3}, 3: {0, 8, 9, 10}}},
			{do: "commit", id: 1, end: 13},
			{do: "commit", id: 1, end: 4}, // less than before: no-op
			{do: "free", id: 1, cached: n(2)},
			{do: "add", id: 4, tokens: seq(0, 13), wantCached: 12},
			{do: "commit", id: 4, end: 14, wantErr: ErrOutOfRange},
			{do: "commit", id: 9, end: 0, wantErr: ErrUnknownSequence},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runOps(t, newTestManager(t, tc.blocks, tc.blockSize, tc.watermark), tc.ops)
		})
	}
}

func TestStatsFragmentationAndHitRate(t *testing.T) {
	m := newTestManager(t, 16, 4, 0)
	mustAdd(t, m, 1, seq(0, 9), 0) // 3 blocks, 9 of 12 slots
	mustAdd(t, m, 2, seq(0, 5), 4) // shares block 0, 2 blocks of its own… 1 new: 5 slots, 1 in a new block
	if err := m.Fork(1, 3); err != nil {
		t.Fatal(err)
	}
	if err := m.Truncate(3, 6); err != nil { // shares block 1 (full in seq 1), drops block 2
		t.Fatal(err)
	}
	st := m.Stats()
	// Blocks: 0 (shared ×3, full), 1 (full in seq 1, partial in seq 3),
	// 2 (seq 1, 1 token), 3 (seq 2, 1 token).
	want := Stats{TotalBlocks: 16, UsedBlocks: 4, FreeBlocks: 12, Sequences: 3,
		SlotsUsed: 4 + 4 + 1 + 1, SlotsAllocated: 16, PrefixQueryTokens: 14, PrefixHitTokens: 4}
	if st != want {
		t.Fatalf("stats\n got %+v\nwant %+v", st, want)
	}
	if got := st.Fragmentation(); got != 6.0/16 {
		t.Errorf("fragmentation %v, want %v", got, 6.0/16)
	}
	if got := st.PrefixHitRate(); got != 4.0/14 {
		t.Errorf("hit rate %v, want %v", got, 4.0/14)
	}
	if got := st.Utilization(); got != 4.0/16 {
		t.Errorf("utilization %v, want %v", got, 4.0/16)
	}
}

// mustAdd adds and commits the prompt, as an engine does after prefill.
func mustAdd(t testing.TB, m *Manager, id SeqID, prompt []int32, wantCached int) {
	t.Helper()
	r, err := m.Add(id, prompt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.CachedTokens != wantCached {
		t.Fatalf("add %d: %d cached tokens, want %d", id, r.CachedTokens, wantCached)
	}
	if err := m.Commit(id, len(prompt)); err != nil {
		t.Fatal(err)
	}
}

func TestCanAddMatchesAdd(t *testing.T) {
	m := newTestManager(t, 6, 4, 0.2)
	cases := []struct {
		prompt []int32
		want   Admission
		err    error
	}{
		{seq(0, 25), AdmitNever, ErrExceedsCapacity},
		{seq(0, 12), AdmitOK, nil},              // 3 blocks, 3 left, watermark 1
		{seq(50, 60), AdmitLater, ErrCacheFull}, // 3 more would leave 0
		{seq(0, 9), AdmitOK, nil},               // 2 cached blocks + 1 new
	}
	for i, c := range cases {
		if got := m.CanAdd(c.prompt, nil); got != c.want {
			t.Errorf("case %d: CanAdd = %v, want %v", i, got, c.want)
		}
		_, err := m.Add(SeqID(i), c.prompt, nil)
		if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("case %d: Add error %v, want %v", i, err, c.err)
		}
		if err == nil {
			if err := m.Commit(SeqID(i), len(c.prompt)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestPrefixCachingDisabled(t *testing.T) {
	m, err := NewManager(Config{
		Layout:               Layout{NumBlocks: 8, BlockSize: 2, NumLayers: 1, NumKVHeads: 1, HeadDim: 1, DType: F16},
		DisablePrefixCaching: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	mustAdd(t, m, 1, seq(0, 5), 0)
	if err := m.Free(1); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, m, 2, seq(0, 5), 0)
	if st := m.Stats(); st.CachedBlocks != 0 || st.PrefixQueryTokens != 0 {
		t.Errorf("prefix caching off, yet stats %+v", st)
	}
	if err := m.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

func TestNewManagerRejectsBadConfig(t *testing.T) {
	good := Layout{NumBlocks: 4, BlockSize: 16, NumLayers: 2, NumKVHeads: 2, HeadDim: 8, DType: BF16}
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"zero blocks", Config{Layout: Layout{BlockSize: 16, NumLayers: 1, NumKVHeads: 1, HeadDim: 1, DType: F32}}, ErrInvalidLayout},
		{"zero block size", Config{Layout: Layout{NumBlocks: 1, NumLayers: 1, NumKVHeads: 1, HeadDim: 1, DType: F32}}, ErrInvalidLayout},
		{"no dtype", Config{Layout: Layout{NumBlocks: 1, BlockSize: 1, NumLayers: 1, NumKVHeads: 1, HeadDim: 1}}, ErrInvalidLayout},
		{"slots beyond int32", Config{Layout: Layout{NumBlocks: 1 << 24, BlockSize: 256, NumLayers: 1, NumKVHeads: 1, HeadDim: 1, DType: F32}}, ErrInvalidLayout},
		{"watermark 1", Config{Layout: good, Watermark: 1}, nil},
		{"negative watermark", Config{Layout: good, Watermark: -0.1}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewManager(tc.cfg)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func TestStorageCopyOnWrite(t *testing.T) {
	m, err := NewManager(Config{
		Layout:  Layout{NumBlocks: 8, BlockSize: 4, NumLayers: 2, NumKVHeads: 1, HeadDim: 1, DType: F16},
		Storage: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	put := func(id SeqID, pos int, v byte) error {
		for layer := range 2 {
			for kv := Key; kv <= Value; kv++ {
				if err := m.WriteKV(id, pos, layer, kv, []byte{v, byte(layer)<<4 | byte(kv)}); err != nil {
					return err
				}
			}
		}
		return nil
	}
	get := func(id SeqID, pos int) []byte {
		var got []byte
		buf := make([]byte, 2)
		for layer := range 2 {
			for kv := Key; kv <= Value; kv++ {
				if err := m.ReadKV(buf, id, pos, layer, kv); err != nil {
					t.Fatal(err)
				}
				got = append(got, buf...)
			}
		}
		return got
	}
	want := func(v byte) []byte { return []byte{v, 0x00, v, 0x01, v, 0x10, v, 0x11} }

	if _, err := m.Add(1, seq(0, 6), nil); err != nil {
		t.Fatal(err)
	}
	for p := range 6 {
		if err := put(1, p, byte(10+p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Commit(1, 6); err != nil { // publishes block 0
		t.Fatal(err)
	}
	if err := put(1, 3, 1); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write to a committed block: %v", err)
	}
	if err := m.Fork(1, 2); err != nil {
		t.Fatal(err)
	}
	// Both read the shared blocks; neither may write them.
	if err := put(1, 5, 99); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write to a shared block: %v", err)
	}
	if err := m.Append(2, 6); err != nil { // copies block 1 (positions 4, 5) for seq 2
		t.Fatal(err)
	}
	if err := put(2, 6, 77); err != nil {
		t.Fatal(err)
	}
	if err := put(2, 5, 55); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("fork rewrote inherited position: %v", err)
	}
	if err := put(1, 5, 66); err != nil { // seq 1 owns its block again
		t.Fatal(err)
	}
	for p, v := range map[int]byte{0: 10, 4: 14, 5: 66} {
		if got := get(1, p); !slices.Equal(got, want(v)) {
			t.Errorf("seq 1 pos %d reads %x, want %x", p, got, want(v))
		}
	}
	for p, v := range map[int]byte{0: 10, 4: 14, 5: 15, 6: 77} {
		if got := get(2, p); !slices.Equal(got, want(v)) {
			t.Errorf("seq 2 pos %d reads %x, want %x", p, got, want(v))
		}
	}

	// A prefix hit is read-only to the new sequence.
	if err := m.Free(2); err != nil {
		t.Fatal(err)
	}
	if r, err := m.Add(3, cat(seq(0, 4), seq(40, 42)), nil); err != nil || r.CachedTokens != 4 {
		t.Fatalf("add: %+v, %v", r, err)
	}
	if err := put(3, 3, 1); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write into a cached prefix: %v", err)
	}
	if err := put(3, 4, 1); err != nil {
		t.Fatal(err)
	}

	buf := make([]byte, 2)
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"past the end", m.ReadKV(buf, 3, 6, 0, Key), ErrOutOfRange},
		{"negative position", m.WriteKV(3, -1, 0, Key, buf), ErrOutOfRange},
		{"unknown sequence", m.ReadKV(buf, 9, 0, 0, Key), ErrUnknownSequence},
		{"layer out of range", m.ReadKV(buf, 3, 0, 2, Key), nil},
		{"bad half", m.ReadKV(buf, 3, 0, 0, KV(2)), nil},
		{"short buffer", m.WriteKV(3, 4, 0, Key, buf[:1]), nil},
	} {
		if c.err == nil || (c.want != nil && !errors.Is(c.err, c.want)) {
			t.Errorf("%s: error %v, want %v", c.name, c.err, c.want)
		}
	}
	noStorage := newTestManager(t, 2, 2, 0)
	mustAdd(t, noStorage, 1, seq(0, 1), 0)
	if err := noStorage.ReadKV(make([]byte, 4), 1, 0, 0, Key); !errors.Is(err, ErrNoStorage) {
		t.Errorf("read without storage: %v", err)
	}
	if err := m.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}
