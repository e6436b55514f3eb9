package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"llmir/ir"
	"llmir/kernels"
	"llmir/kernels/ref"
	"llmir/schedule"
)

func TestSoftmaxArgmaxReferencesMatchRef(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	const rows, n = 4, 23
	x32, x := randF32(rng, rows*n)
	// A tie: the first maximum must win.
	x32[n+3], x[n+3] = 2, 2
	x32[n+9], x[n+9] = 2, 2
	// NaN wins over every number, the first NaN over later ones.
	x32[2*n+5], x[2*n+5] = float32(math.NaN()), math.NaN()
	x32[2*n+7], x[2*n+7] = float32(math.NaN()), math.NaN()
	want, err := ref.Argmax(x32, []int{rows, n}, -1)
	if err != nil {
		t.Fatal(err)
	}
	got := kernels.Argmax{Rows: rows, N: n}.Reference([][]float64{x})[0]
	for i := range want {
		if int64(got[i]) != want[i] {
			t.Errorf("argmax row %d: %g, ref %d", i, got[i], want[i])
		}
	}
	x32, x = randF32(rng, rows*n)
	sw, err := ref.Softmax(x32, []int{rows, n}, -1)
	if err != nil {
		t.Fatal(err)
	}
	if e := relErr(kernels.Softmax{Rows: rows, N: n}.Reference([][]float64{x})[0], sw); e > 1e-6 {
		t.Errorf("softmax reference differs from ref.Softmax by %g", e)
	}
}

func TestSoftmaxArgmaxConformance(t *testing.T) {
	runConformance(t, 4,
		kernels.Softmax{Rows: 1, N: 17},
		kernels.Softmax{Rows: 5, RowsBucket: 8, N: 131, DType: schedule.BF16},
		kernels.Argmax{Rows: 3, N: 19},
		kernels.Argmax{Rows: 6, RowsBucket: 8, N: 1000},
	)
}

func TestSoftmaxArgmaxLlamaTiny(t *testing.T) {
	k, err := kernels.FromWorkload(firstWorkload(t, "llmir.argmax"))
	if err != nil {
		t.Fatal(err)
	}
	runConformance(t, 2, k, kernels.Softmax{Rows: 8, N: 512})
}

func TestSoftmaxArgmaxFromWorkload(t *testing.T) {
	for _, k := range fromPresets(t, "llmir.argmax") {
		a := k.(kernels.Argmax)
		if a.N != 1000 && a.N != 128256 {
			t.Errorf("%s: N = %d", k.Name(), a.N)
		}
	}
	sm := kernels.Softmax{Rows: 4, N: 10}
	if k, err := kernels.FromWorkload(sm.Workload()); err != nil || k.Name() != sm.Name() {
		t.Errorf("softmax round trip: %v, %v", k, err)
	}
	w := firstWorkload(t, "llmir.argmax")
	badWorkloads(t, w, map[string]func(w *ir.Workload) string{
		"arity":  func(w *ir.Workload) string { w.Output = append(w.Output, w.Output[0]); return "2 results" },
		"axis":   func(w *ir.Workload) string { w.Attrs["axis"] = "0 : i64"; return "last axis" },
		"result": func(w *ir.Workload) string { w.Output[0].Shape = []int64{1, 512, 1}; return "leading dims" },
		"f32 out": func(w *ir.Workload) string {
			w.Output[0].DType = "f32"
			return "want i64"
		},
		"int x": func(w *ir.Workload) string { w.Inputs[0].DType = "i32"; return "want f32, bf16 or f16" },
		"rank 1": func(w *ir.Workload) string {
			w.Inputs[0].Shape = []int64{1000}
			return "row dim"
		},
	})
	badWorkloads(t, sm.Workload(), map[string]func(w *ir.Workload) string{
		"axis":   func(w *ir.Workload) string { w.Attrs["axis"] = "0 : i64"; return "last axis" },
		"result": func(w *ir.Workload) string { w.Output[0].Shape = []int64{4, 11}; return "result shape" },
		"dtype":  func(w *ir.Workload) string { w.Output[0].DType = "bf16"; return "is bf16" },
	})
}

// TestRowKernelsRejectBadShapes: a kernel value with an impossible shape
// or configuration fails in Def, before anything is generated.
func TestRowKernelsRejectBadShapes(t *testing.T) {
	for _, k := range []kernels.Kernel{
		kernels.RMSNorm{Rows: 9, RowsBucket: 8, H: 16, Eps: 1e-5},
		kernels.RMSNorm{Rows: 1, H: 16},
		kernels.LayerNorm{Rows: 1, H: 0, Eps: 1e-5},
		kernels.SiLU{Rows: 0, H: 16},
		kernels.SiLU{Rows: 1, H: 16, DType: schedule.I32},
		kernels.Elementwise{Op: "sub", Rows: 1, H: 16},
		kernels.Softmax{Rows: 2, N: 0},
		kernels.Argmax{Rows: 2, N: 4, DType: schedule.U8},
		kernels.Embedding{Tokens: 2, Vocab: 0, Hidden: 8},
		kernels.Rope{Tokens: 2, Heads: 1, HeadDim: 7, Config: ref.RopeConfig{Theta: 10000}},
		kernels.Rope{Tokens: 2, Heads: 1, HeadDim: 8, Config: ref.RopeConfig{Theta: 10000, RotaryDim: 10}},
		kernels.Rope{Tokens: 2, Heads: 1, HeadDim: 8, Config: ref.RopeConfig{Theta: 10000, Style: "half"}},
		kernels.Rope{Tokens: 2, Heads: 1, HeadDim: 8, Config: ref.RopeConfig{Theta: 10000, Scaling: &ref.RopeScaling{Type: "yarn", Factor: 4}}},
	} {
		if _, err := k.Def(); err == nil {
			t.Errorf("%s (%T %+v): Def accepted it", k.Name(), k, k)
		}
	}
}
