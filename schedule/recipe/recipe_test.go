package recipe_test

import (
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
