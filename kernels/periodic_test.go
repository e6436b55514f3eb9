package kernels

import (
	"math/rand/v2"
	"testing"

	"llmir/kernels/ref"
	"llmir/target"
)

// naiveLinear is the full product, with no use of the periodic structure
// (the same dot product, so the comparison can be exact).
func naiveLinear(a, w []float64, m, n, k int) []float64 {
	out := make([]float64, m*n)
	for i := range m {
		for j := range n {
			out[i*n+j] = target.Dot(a[i*k:(i+1)*k], w[j*k:(j+1)*k])
		}
	}
	return out
}

func TestLinearReferencePeriodic(t *testing.T) {
	const m, n, k = 3*PeriodRows + 7, 5, 13
	l := Linear{M: m, N: n, K: k}
	rng := rand.New(rand.NewPCG(7, 7))
	a := make([]float64, m*k)
	l.Fill("a")(rng, a)
	for i := range a {
		a[i] = target.Round(target.F32, a[i])
	}
	w := make([]float64, n*k)
	for i := range w {
		w[i] = target.Round(target.F32, target.NonZeroUniform(rng))
	}
	if !IsPeriodic(a, k) {
		t.Fatal("Fill's activation is not periodic after rounding to f32")
	}
	if l.Fill("w") != nil {
		t.Error("Linear fills w: only the activation may be structured")
	}

	// Rows a period apart are scaled copies, never equal within 305 rows.
	if a[PeriodRows*k] != 2*a[0] || a[2*PeriodRows*k] != 4*a[0] {
		t.Errorf("row scales: %v, %v for base %v", a[PeriodRows*k], a[2*PeriodRows*k], a[0])
	}

	for _, tc := range []struct {
		name    string
		perturb bool
	}{{"periodic", false}, {"one element off the period", true}} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]float64(nil), a...)
			if tc.perturb {
				in[(2*PeriodRows+3)*k+4] += 0.5
				if IsPeriodic(in, k) {
					t.Fatal("a perturbed activation still counts as periodic")
				}
			}
			got := l.Reference([][]float64{in, w})[0]
			want := naiveLinear(in, w, m, n, k)
			for i := range want {
				// Exact: scaling by a power of two commutes with every
				// product and partial sum.
				if got[i] != want[i] {
					t.Fatalf("out[%d, %d] = %v, want %v", i/n, i%n, got[i], want[i])
				}
			}
		})
	}
}

// TestNormLinearReferencePeriodic: with a periodic x the fused norm+linear
// reference normalizes and multiplies only the period rows and scales the
// rest; it must agree with the full computation (every row normalized,
// the full product), and must tell a kernel that normalized a row by its
// period row's rms from a correct one.
func TestNormLinearReferencePeriodic(t *testing.T) {
	const m, n, k = 3*PeriodRows + 7, 6, 24
	l := NormLinear{Linear: Linear{M: m, N: n, K: k}, Eps: 1e-5}
	rng := rand.New(rand.NewPCG(9, 9))
	x := make([]float64, m*k)
	l.Fill("x")(rng, x)
	g, w := make([]float64, k), make([]float64, n*k)
	for _, v := range [][]float64{g, w} {
		for i := range v {
			v[i] = target.NonZeroUniform(rng)
		}
	}
	for _, v := range [][]float64{x, g, w} {
		for i := range v {
			v[i] = target.Round(target.F32, v[i])
		}
	}
	if !IsPeriodic(x, k) || l.Fill("w") != nil || l.Fill("g") != nil {
		t.Fatal("NormLinear fills x periodic, and only x")
	}
	got := l.Reference([][]float64{x, g, w})[0]
	xn, err := ref.RMSNorm(toF32(x), m, k, toF32(g), l.Eps)
	if err != nil {
		t.Fatal(err)
	}
	want := naiveLinear(toF64(xn), w, m, n, k)
	if rel := target.RelL2(got, want); !(rel < 1e-6) {
		t.Errorf("rel L2 against the full computation %g", rel)
	}
	// The mistake the shortcut must still catch: row m normalized by its
	// period row's rms, which a 2^s scale then leaves 2^s too large.
	wrong := append([]float64(nil), want...)
	for r := PeriodRows; r < m; r++ {
		for j := range n {
			wrong[r*n+j] = want[(r%PeriodRows)*n+j] * PeriodScale(r)
		}
	}
	if rel := target.RelL2(wrong, got); !(rel > 0.1) {
		t.Errorf("a per-period-row rms passes: rel L2 %g", rel)
	}
}
