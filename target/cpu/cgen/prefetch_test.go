package cgen

import (
	"context"
	"strings"
	"testing"

	"llmir/schedule"
	"llmir/schedule/schedtest"
)

// TestPrefetchEmitted: a prefetch annotation on the decode recipe's k loop
// prints one __builtin_prefetch per row of w in the tile, at the top of
// the k loop's body and Dist vectors ahead, and the kernel still matches
// the interpreter (the last iterations prefetch past the end of w, which
// must be harmless). A prefetch of an address that uses an inner, rolled
// loop's variable is left out rather than printed out of scope.
func TestPrefetchEmitted(t *testing.T) {
	needGCC(t)
	s := newSched(t, linear(t, 4, 24, 96, false))
	loops, err := schedtest.GEMV(s, "out", schedtest.GEMVTiles{JB: 12, KV: 16, MR: 4, JU: 3, Parallel: true})
	must(t, err)
	must(t, s.Prefetch(loops["k0"], "w", schedule.Lit(2)))
	src, err := Emit(s.Nest(), Options{Entry: "k", VectorBits: 512})
	must(t, err)
	if got := strings.Count(src, "__builtin_prefetch(&w["); got != 3 {
		t.Fatalf("%d prefetches of w, want one per tile row (3):\n%s", got, src)
	}
	head := src[strings.Index(src, "for (int64_t k_0 = 0;"):]
	head = head[:strings.Index(head, "llmir_vload")]
	for _, off := range []string{"(k_0 * 16)) + 32)]", "(k_0 * 16)) + 128)]", "(k_0 * 16)) + 224)]"} {
		if !strings.Contains(head, off) {
			t.Errorf("no prefetch ending %q (row offset + 2 vectors ahead) before the first load of the k loop:\n%s", off, head)
		}
	}
	if strings.Contains(src, "__builtin_prefetch(&a[") {
		t.Error("a is prefetched but was not annotated")
	}
	checkAgainstInterpreter(context.Background(), t, s.Nest(), 2, nil, 1e-5, Options{VectorBits: 512})

	// Annotating the row loop instead: its body holds the whole k loop, so
	// only addresses without k_0 (none: every w access uses it) could be
	// prefetched there.
	s = newSched(t, linear(t, 4, 24, 96, false))
	loops, err = schedtest.GEMV(s, "out", schedtest.GEMVTiles{JB: 12, KV: 16, MR: 4, JU: 3})
	must(t, err)
	must(t, s.Prefetch(loops["j1"], "w", schedule.Lit(1)))
	src, err = Emit(s.Nest(), Options{Entry: "k", VectorBits: 512})
	must(t, err)
	if strings.Contains(src, "__builtin_prefetch") {
		t.Errorf("prefetch printed with an out-of-scope loop variable:\n%s", src)
	}
	checkAgainstInterpreter(context.Background(), t, s.Nest(), 2, nil, 1e-5, Options{VectorBits: 512})
}
