package kernels

import "testing"

// TestPagedPlanItems checks the static layout the generated steps rely on:
// every (slot, KV head, stream, query head) of a step is exactly one item,
// the chunks cover them, and where the softmax takes its butterfly path
// each chunk holds one KV head's lanes as s·G + g.
func TestPagedPlanItems(t *testing.T) {
	cases := []struct {
		kvHeads, qHeads, headDim int64
		knobs                    map[string]int64
		fast                     bool
	}{
		{8, 32, 128, map[string]int64{"vec": 16, "heads": 8, "streams": 4, "tile": 4}, true},
		{8, 32, 128, map[string]int64{"vec": 16, "heads": 8, "streams": 8, "tile": 8}, true},
		{2, 16, 128, map[string]int64{"vec": 16, "heads": 2, "streams": 2, "tile": 16}, true},
		{4, 4, 64, map[string]int64{"vec": 16, "heads": 1, "streams": 2, "tile": 16}, false}, // G = 1: 8 slots a step
		{2, 8, 80, map[string]int64{"vec": 4, "heads": 1, "streams": 8, "tile": 2}, true},
		{2, 6, 64, map[string]int64{"vec": 16, "heads": 2, "streams": 1, "tile": 2}, false}, // G = 3: padded chunk
	}
	for _, c := range cases {
		k := PagedAttention{KVHeads: c.kvHeads, QHeads: c.qHeads, HeadDim: c.headDim}
		c.knobs["unroll"] = 1
		pl := k.plan(c.knobs)
		if pl.u < 1 || pl.u > pl.ts || pl.nch*pl.vw < pl.p || (pl.nch-1)*pl.vw >= pl.p {
			t.Errorf("%v: u %d, %d items in %d chunks of %d", c.knobs, pl.u, pl.p, pl.nch, pl.vw)
			continue
		}
		seen := map[[4]int64]bool{}
		for i := int64(0); i < pl.nch*pl.vw; i++ {
			u, h, s, g, ok := pl.item(i)
			if ok != (i < pl.p) {
				t.Fatalf("%v: item %d ok=%v with %d items", c.knobs, i, ok, pl.p)
			}
			if !ok {
				continue
			}
			key := [4]int64{u, h, s, g}
			if seen[key] || u >= pl.u || h >= pl.ht || s >= pl.s || g >= pl.g {
				t.Fatalf("%v: item %d is %v (repeated or out of range)", c.knobs, i, key)
			}
			seen[key] = true
			if pl.fastSoftmax() {
				cph := pl.g * pl.s / pl.vw
				if lane := i % pl.vw; h != i/pl.vw/cph || lane != s%(pl.vw/pl.g)*pl.g+g {
					t.Fatalf("%v: item %d = %v sits in lane %d of chunk %d", c.knobs, i, key, lane, i/pl.vw)
				}
			}
		}
		if int64(len(seen)) != pl.u*pl.ht*pl.s*pl.g {
			t.Errorf("%v: %d distinct items, want %d", c.knobs, len(seen), pl.u*pl.ht*pl.s*pl.g)
		}
		if pl.fastSoftmax() != c.fast {
			t.Errorf("%v: fast softmax %v, want %v", c.knobs, pl.fastSoftmax(), c.fast)
		}
	}
}
