package recipe_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"llmir/schedule"
	"llmir/schedule/recipe"
	"llmir/schedule/schedtest"
)

// TestGEMVRowsInnerAndPrefetch: with RowsInner the row blocks of a run
// inside each tile of w (j1 encloses i0, and the register tile is written
// back per row block), Prefetch annotates the k loop (a distance 0 leaves
// it bare), and both orders compute the product for shapes with tails in
// M, N and K's vector count.
func TestGEMVRowsInnerAndPrefetch(t *testing.T) {
	for _, c := range []struct {
		name      string
		m, n, k   int64
		rowsInner bool
		prefetch  int64
	}{
		{"rows inner, prefetch 4", 7, 21, 48, true, 4},
		{"rows inner, no prefetch", 16, 24, 32, true, 0},
		{"rows outer, prefetch 2", 5, 13, 16, false, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			def, err := schedtest.Linear(c.m, c.n, c.k, false)
			if err != nil {
				t.Fatal(err)
			}
			s, err := schedule.New(def, 1)
			if err != nil {
				t.Fatal(err)
			}
			loops, err := recipe.GEMV(s, "out", recipe.GEMVTiles{NJ: schedule.Lit(2), KV: 16, MR: schedule.Lit(4), JU: schedule.Lit(3),
				RowsInner: c.rowsInner, Prefetch: schedule.Lit(c.prefetch), Stream: "w"})
			if err != nil {
				t.Fatal(err)
			}
			text := s.Nest().String()
			ij, ii := strings.Index(text, "for "+loops["j1"]+" "), strings.Index(text, "for "+loops["i0"]+" ")
			if ij < 0 || ii < 0 || (ij < ii) != c.rowsInner {
				t.Errorf("rows inner = %v, but j1 at %d and i0 at %d:\n%s", c.rowsInner, ij, ii, text)
			}
			pf := strings.Contains(text, "prefetch(w, +")
			if pf != (c.prefetch > 0) {
				t.Errorf("prefetch %d, annotated = %v:\n%s", c.prefetch, pf, text)
			}
			if c.prefetch > 0 && !strings.Contains(text, "for "+loops["k0"]+" in 0..") {
				t.Errorf("no k loop %s:\n%s", loops["k0"], text)
			}
			checkProduct(t, s.Nest(), c.m, c.n, c.k)
		})
	}
	// Prefetching needs a buffer to prefetch.
	def, _ := schedtest.Linear(4, 8, 16, false)
	s, _ := schedule.New(def, 1)
	if _, err := recipe.GEMV(s, "out", recipe.GEMVTiles{NJ: schedule.Lit(1), KV: 16, Prefetch: schedule.Lit(2)}); err == nil {
		t.Error("prefetch without a Stream buffer accepted")
	}
}

// checkProduct interprets the nest on seeded inputs and compares out with
// a float64 product.
func checkProduct(t *testing.T, n *schedule.Nest, m, nn, k int64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	a, w, out := make([]float64, m*k), make([]float64, nn*k), make([]float64, m*nn)
	for i := range a {
		a[i] = float64(float32(rng.Float64()*2 - 1))
	}
	for i := range w {
		w[i] = float64(float32(rng.Float64()*2 - 1))
	}
	for i := range out {
		out[i] = math.NaN()
	}
	if err := schedule.Interpret(n, [][]float64{a, w, out}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range m {
		for j := range nn {
			var want float64
			for p := range k {
				want += a[i*k+p] * w[j*k+p]
			}
			if got := out[i*nn+j]; math.Abs(got-want) > 1e-4*(1+math.Abs(want)) {
				t.Fatalf("out[%d, %d] = %v, want %v", i, j, got, want)
			}
		}
	}
}

// loops0 is the register tile's name: the cache_write buffer, or the
// rfactor buffer when k is blocked.
func loops0(kb int64) string {
	if kb > 0 {
		return "out_rf"
	}
	return "out_register"
}

// TestGEMVOuter: the outer-product decode recipe packs a transposed (k
// outer, rows of a inner), keeps a register tile whose layout puts the rows
// of a last (so i is the vector loop and each row of w one accumulator),
// broadcasts w, prefetches the k loop when asked, replays from its trace,
// and computes the product with tails in M (fewer rows than lanes, or more),
// N (not a multiple of NJ·JU) and K (not a multiple of KU), also with k
// blocked (KB: partial sums per block through rfactor, out updated once
// per block).
func TestGEMVOuter(t *testing.T) {
	for _, c := range []struct {
		name             string
		m, n, k          int64
		mv, nj, ju, ku   int64
		prefetch         int64
		parallel, stream bool
		kb               int64
	}{
		{"full tiles", 16, 24, 64, 16, 2, 4, 16, 2, true, true, 0},
		{"tails everywhere", 13, 21, 37, 16, 2, 3, 16, 1, false, true, 0},
		{"two row vectors", 17, 10, 20, 8, 1, 4, 4, 0, true, false, 0},
		{"k blocks", 16, 24, 64, 16, 2, 4, 16, 2, true, true, 2},
		{"k blocks with tails", 13, 21, 100, 16, 2, 3, 16, 1, true, true, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			def, err := schedtest.Linear(c.m, c.n, c.k, false)
			if err != nil {
				t.Fatal(err)
			}
			s, err := schedule.New(def, 1)
			if err != nil {
				t.Fatal(err)
			}
			tiles := recipe.GEMVOuterTiles{MV: c.mv, NJ: schedule.Lit(c.nj), JU: schedule.Lit(c.ju), KU: schedule.Lit(c.ku), Prefetch: schedule.Lit(c.prefetch), Parallel: c.parallel}
			layout := fmt.Sprintf("alloc %s: f32[%d, %d] register layout(tile=[0, 0], order=[1, 0])", loops0(c.kb), min(c.m, c.mv), c.ju)
			if c.kb > 0 {
				tiles.KB = schedule.Lit(c.kb)
				layout = fmt.Sprintf("alloc %s: f32[1, %d, %d] register layout(tile=[0, 0, 0], order=[0, 2, 1])", loops0(c.kb), min(c.m, c.mv), c.ju)
			}
			if c.stream {
				tiles.Stream = "w"
			}
			loops, err := recipe.GEMVOuter(s, "out", tiles)
			if err != nil {
				t.Fatal(err)
			}
			text := s.Nest().String()
			if k := loops["kb"]; (k != "") != (c.kb > 0) || (k != "" && !strings.Contains(text, fmt.Sprintf("for %s in 0..%d:", k, (c.k+c.kb*c.ku-1)/(c.kb*c.ku)))) {
				t.Errorf("k blocks of %d×%d: block loop %q in\n%s", c.kb, c.ku, k, text)
			}
			for _, want := range []string{
				layout,
				"local layout(tile=[0, 0], order=[1, 0])",
				"for " + loops["i1"] + " in 0..",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("no %q in\n%s", want, text)
				}
			}
			if !strings.Contains(text, loops["i1"]+" in 0..") || !strings.Contains(text, "vectorized") {
				t.Errorf("i1 not vectorized:\n%s", text)
			}
			if pf := strings.Contains(text, "prefetch(w, +"); pf != (c.prefetch > 0) {
				t.Errorf("prefetch %d, annotated = %v:\n%s", c.prefetch, pf, text)
			}
			if par := strings.Contains(text, "for "+loops["j0"]+" in 0..") && strings.Contains(text, "parallel"); par != c.parallel {
				t.Errorf("parallel = %v, printed = %v:\n%s", c.parallel, par, text)
			}
			r, err := schedule.Replay(def, s.Trace())
			if err != nil {
				t.Fatalf("replay: %v", err)
			}
			if r.Nest().String() != text {
				t.Errorf("replay differs:\n%s\nwant\n%s", r.Nest().String(), text)
			}
			checkProduct(t, s.Nest(), c.m, c.n, c.k)
		})
	}
	def, _ := schedtest.Linear(4, 8, 16, false)
	s, _ := schedule.New(def, 1)
	if _, err := recipe.GEMVOuter(s, "out", recipe.GEMVOuterTiles{NJ: schedule.Lit(1), JU: schedule.Lit(2), KU: schedule.Lit(4)}); err == nil {
		t.Error("MV 0 accepted")
	}
}
