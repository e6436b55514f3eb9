package recipe_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
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

// TestGEMVOuterGroups: with KG k steps in the lanes the recipe copies a
// as [k/KG][i·KG + k%KG] (a merged layout), keeps one vector accumulator
// per (row of w, vector of rows) in a merged register layout, vectorizes
// the loop fused from the rows of a vector and the k group, replays from
// its trace (through JSON), and computes the product with tails in M, N
// and the k blocks (K a multiple of KG); it refuses KG without k blocks, a
// KG that does not divide MV or KU, and a K that KG does not divide.
func TestGEMVOuterGroups(t *testing.T) {
	for _, c := range []struct {
		name         string
		m, n, k      int64
		kg, ju, kb   int64
		parallel     bool
		wantVecShape string
	}{
		{"full tiles", 16, 24, 64, 4, 4, 2, true, "f32[1, 16, 4, 4] register layout(tile=[0, 4, 0, 0], order=[0, 3, 1, 2, 4], merge=2)"},
		{"tails in M, N and the k blocks", 13, 21, 100, 4, 3, 2, false, "f32[1, 16, 3, 4] register layout(tile=[0, 4, 0, 0], order=[0, 3, 1, 2, 4], merge=2)"},
		{"pairs of k steps", 5, 7, 36, 2, 3, 1, true, "f32[1, 5, 3, 2] register layout(tile=[0, 8, 0, 0], order=[0, 3, 1, 2, 4], merge=2)"},
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
			loops, err := recipe.GEMVOuter(s, "out", recipe.GEMVOuterTiles{MV: 16, KG: c.kg, NJ: schedule.Lit(2), JU: schedule.Lit(c.ju), KU: schedule.Lit(16),
				KB: schedule.Lit(c.kb), Prefetch: schedule.Lit(2), Stream: "w", Parallel: c.parallel})
			if err != nil {
				t.Fatal(err)
			}
			text := s.Nest().String()
			for _, want := range []string{
				"alloc " + loops["acc"] + ": " + c.wantVecShape,
				fmt.Sprintf("local layout(tile=[0, %d], order=[1, 0, 2], merge=2)", c.kg),
				"for " + loops["f"] + " in 0..",
				"prefetch(w, +2)",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("no %q in\n%s", want, text)
				}
			}
			if !regexp.MustCompile("for " + loops["f"] + " in 0..[^\n]* vectorized").MatchString(text) {
				t.Errorf("the fused loop %s is not vectorized:\n%s", loops["f"], text)
			}
			// Through JSON: the merged layouts (merge=2) survive.
			js, err := s.Trace().JSON()
			if err != nil {
				t.Fatal(err)
			}
			tr, err := schedule.ParseTrace(js)
			if err != nil {
				t.Fatal(err)
			}
			r, err := schedule.Replay(def, tr)
			if err != nil {
				t.Fatalf("replay: %v", err)
			}
			if r.Nest().String() != text {
				t.Errorf("replay differs:\n%s\nwant\n%s", r.Nest().String(), text)
			}
			checkProduct(t, s.Nest(), c.m, c.n, c.k)
		})
	}
	for _, c := range []struct {
		name string
		k    int64
		t    recipe.GEMVOuterTiles
	}{
		{"no k blocks", 64, recipe.GEMVOuterTiles{MV: 16, KG: 4, NJ: schedule.Lit(1), JU: schedule.Lit(2), KU: schedule.Lit(16)}},
		{"KG does not divide MV", 64, recipe.GEMVOuterTiles{MV: 16, KG: 3, NJ: schedule.Lit(1), JU: schedule.Lit(2), KU: schedule.Lit(15), KB: schedule.Lit(1)}},
		{"KG does not divide KU", 64, recipe.GEMVOuterTiles{MV: 16, KG: 4, NJ: schedule.Lit(1), JU: schedule.Lit(2), KU: schedule.Lit(6), KB: schedule.Lit(1)}},
		{"KG does not divide K", 62, recipe.GEMVOuterTiles{MV: 16, KG: 4, NJ: schedule.Lit(1), JU: schedule.Lit(2), KU: schedule.Lit(16), KB: schedule.Lit(1)}},
	} {
		def, _ := schedtest.Linear(16, 8, c.k, false)
		s, _ := schedule.New(def, 1)
		if _, err := recipe.GEMVOuter(s, "out", c.t); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

// TestGEMMPackA: with PackA the GEMM recipe copies the MR×KC block of a
// into a local [KC][MR] buffer at the row-block loop (so the broadcasts
// read one contiguous stream) and still computes the product with tails.
func TestGEMMPackA(t *testing.T) {
	for _, c := range [][3]int64{{24, 64, 32}, {13, 70, 37}} {
		def, err := schedtest.Linear(c[0], c[1], c[2], false)
		if err != nil {
			t.Fatal(err)
		}
		s, err := schedule.New(def, 1)
		if err != nil {
			t.Fatal(err)
		}
		loops, err := recipe.GEMM(s, "out", recipe.GEMMTiles{MR: schedule.Lit(6), NR: 32, NB: schedule.Lit(2), KC: schedule.Lit(16), PackA: true, Parallel: true})
		if err != nil {
			t.Fatal(err)
		}
		text := s.Nest().String()
		want := fmt.Sprintf("for %s in 0..%d:\n      alloc %s: f32[6, 16] local layout(tile=[0, 0], order=[1, 0])", loops["i0"], (c[0]+5)/6, loops["packA"])
		if !strings.Contains(text, want) {
			t.Errorf("no %q in\n%s", want, text)
		}
		checkProduct(t, s.Nest(), c[0], c[1], c[2])
	}
}
