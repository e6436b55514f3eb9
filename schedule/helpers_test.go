package schedule_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"llmir/schedule"
	"llmir/schedule/schedtest"
)

func linearDef(t testing.TB, m, n, k int64, dynM bool) *schedule.Def {
	t.Helper()
	d, err := schedtest.Linear(m, n, k, dynM)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// epilogueDef is y[i, j] = silu(sum(k, a[i, k] * w[j, k]) + b[j]) in three
// stages (acc, biased, y); w is stored as wdt.
func epilogueDef(t testing.TB, m, n, k int64, wdt schedule.DType) *schedule.Def {
	t.Helper()
	S := schedule.Static
	i, j, kk := schedule.NewAxis("i", S(m)), schedule.NewAxis("j", S(n)), schedule.NewAxis("k", S(k))
	a := schedule.Input("a", schedule.F32, S(m), S(k))
	w := schedule.Input("w", wdt, S(n), S(k))
	b := schedule.Input("b", schedule.F32, S(n))
	acc := schedule.Compute("acc", schedule.F32, []schedule.Axis{i, j}, schedule.Sum(kk, schedule.Mul(a.At(i, kk), w.At(j, kk))))
	biased := schedule.Compute("biased", schedule.F32, []schedule.Axis{i, j}, schedule.Add(acc.At(i, j), b.At(j)))
	y := schedule.Compute("y", schedule.F32, []schedule.Axis{i, j}, schedule.Fn("silu", biased.At(i, j)))
	d, err := schedule.NewDef("linear_silu", []*schedule.Tensor{a, w, b}, y)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// params returns seeded random inputs (rounded to their dtype) and NaN
// outputs, at runtime extents dims.
func params(n *schedule.Nest, nin int, dims []int64, seed uint64) [][]float64 {
	rng := rand.New(rand.NewPCG(seed, seed))
	var out [][]float64
	for idx, p := range n.Params() {
		sz := int64(1)
		for _, e := range p.Shape {
			switch e := e.(type) {
			case schedule.Int:
				sz *= e.V
			case schedule.Dyn:
				sz *= dims[e.Index]
			}
		}
		buf := make([]float64, sz)
		for i := range buf {
			if idx >= nin {
				buf[i] = math.NaN()
				continue
			}
			v := rng.Float64()*2 - 1
			switch p.DType {
			case schedule.BF16:
				v = schedule.RoundBF16(v)
			case schedule.F16:
				v = schedule.RoundF16(v)
			default:
				v = float64(float32(v))
			}
			buf[i] = v
		}
		out = append(out, buf)
	}
	return out
}

// run interprets n and returns every parameter after the run.
func run(t testing.TB, n *schedule.Nest, nin int, dims []int64, seed uint64) [][]float64 {
	t.Helper()
	ps := params(n, nin, dims, seed)
	if err := schedule.Interpret(n, ps, dims); err != nil {
		t.Fatalf("interpret: %v\n%s", err, n)
	}
	return ps
}

func relErr(got, want []float64) float64 {
	var num, den float64
	for i := range want {
		if math.IsNaN(got[i]) != math.IsNaN(want[i]) {
			return math.Inf(1)
		}
		d := got[i] - want[i]
		num += d * d
		den += want[i] * want[i]
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// sameResult checks that n computes what the unscheduled nest of def does.
func sameResult(t testing.TB, def *schedule.Def, n *schedule.Nest, dims []int64) {
	t.Helper()
	ref, err := schedule.Lower(def)
	if err != nil {
		t.Fatal(err)
	}
	nin := len(def.Inputs)
	want := run(t, ref, nin, dims, 9)
	got := run(t, n, nin, dims, 9)
	for i := range want {
		if e := relErr(got[i], want[i]); e > 1e-5 {
			t.Fatalf("buffer %s: relative error %.3g vs the unscheduled nest\n%s", n.Params()[i].Name, e, n)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func must1[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}
