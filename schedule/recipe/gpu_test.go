package recipe

import (
	"math"
	"math/rand/v2"
	"testing"

	"llmir/schedule"
)

// linearBF16 is out[i, j] = sum(k, a[i, k] * w[j, k]) with bf16 inputs.
// The interpreter rounds every store, so an f32 out keeps the check tight
// where the cross-thread reduction accumulates into out (the CUDA printer
// sums in registers and rounds once).
func linearBF16(t *testing.T, m, n, k int64, outDT schedule.DType) *schedule.Def {
	t.Helper()
	M, N, K := schedule.Static(m), schedule.Static(n), schedule.Static(k)
	i, j, kk := schedule.NewAxis("i", M), schedule.NewAxis("j", N), schedule.NewAxis("k", K)
	a := schedule.Input("a", schedule.BF16, M, K)
	w := schedule.Input("w", schedule.BF16, N, K)
	out := schedule.Compute("out", outDT, []schedule.Axis{i, j}, schedule.Sum(kk, schedule.Mul(a.At(i, kk), w.At(j, kk))))
	d, err := schedule.NewDef("linear", []*schedule.Tensor{a, w}, out)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func bf16s(rng *rand.Rand, n int64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = schedule.RoundBF16(rng.Float64()*2 - 1)
	}
	return out
}

// checkLinear interprets the scheduled nest and compares with a float64
// reference (bf16 output rounding is the only difference allowed).
func checkLinear(t *testing.T, s *schedule.Schedule, m, n, k int64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	a, w := bf16s(rng, m*k), bf16s(rng, n*k)
	out := make([]float64, m*n)
	if err := schedule.Interpret(s.Nest(), [][]float64{a, w, out}, nil); err != nil {
		t.Fatalf("interpret: %v\n%s", err, s.Nest())
	}
	for i := range m {
		for j := range n {
			var ref float64
			for p := range k {
				ref += a[i*k+p] * w[j*k+p]
			}
			if got := out[i*n+j]; math.Abs(got-ref) > 1e-4*(1+math.Abs(ref)) || math.IsNaN(got) {
				t.Fatalf("out[%d, %d] = %g, want %g\n%s", i, j, got, ref, s.Nest())
			}
		}
	}
}

func TestGPUGEMVInterprets(t *testing.T) {
	for _, c := range []struct{ m, n, k, rows, lanes int64 }{{1, 12, 512, 4, 32}, {3, 10, 256, 4, 32}, {16, 8, 768, 2, 32}, {2, 9, 1024, 2, 128}} {
		s, err := schedule.New(linearBF16(t, c.m, c.n, c.k, schedule.F32), 1)
		if err != nil {
			t.Fatal(err)
		}
		tl := GPUGEMVDefault(c.m, c.n, 132)
		tl.Rows, tl.Lanes = schedule.Lit(c.rows), c.lanes
		if _, err := GPUGEMV(s, "out", tl); err != nil {
			t.Fatal(err)
		}
		checkLinear(t, s, c.m, c.n, c.k)
	}
}

func TestGPUGEMMInterprets(t *testing.T) {
	for _, c := range []struct {
		m, n, k int64
		tl      GPUGEMMTiles
	}{{32, 32, 64, GPUGEMMTiles{WM: 2, WN: 2, MI: 1, NI: 2, KI: 2}}, {64, 48, 32, GPUGEMMTiles{WM: 1, WN: 2, MI: 2, NI: 1, KI: 1}}} {
		s, err := schedule.New(linearBF16(t, c.m, c.n, c.k, schedule.F32), 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := GPUGEMM(s, "out", c.tl); err != nil {
			t.Fatalf("%v\n%s", err, s.Nest())
		}
		checkLinear(t, s, c.m, c.n, c.k)
	}
}
