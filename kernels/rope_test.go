package kernels_test

import (
	"math/rand/v2"
	"testing"

	"llmir/ir"
	"llmir/kernels"
	"llmir/kernels/ref"
	"llmir/schedule"
)

var llama31 = &ref.RopeScaling{Type: "llama3", Factor: 8, OriginalMaxPositions: 8192, LowFreqFactor: 1, HighFreqFactor: 4}

func TestRopeReferenceMatchesRef(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, c := range []ref.RopeConfig{
		{Theta: 10000, Style: ref.Neox},
		{Theta: 500000, Style: ref.GPTJ, RotaryDim: 6},
		{Theta: 500000, Style: ref.Neox, Scaling: llama31},
		{Theta: 10000, Style: ref.Neox, Scaling: &ref.RopeScaling{Type: "dynamic", Factor: 2, OriginalMaxPositions: 64}},
	} {
		const tokens, heads, dim = 4, 3, 10
		x32, x := randF32(rng, tokens*heads*dim)
		pos := make([]int64, tokens)
		posF := make([]float64, tokens)
		for i := range pos {
			pos[i] = rng.Int64N(200)
			posF[i] = float64(pos[i])
		}
		want, err := ref.Rope(x32, tokens, heads, dim, pos, c)
		if err != nil {
			t.Fatal(err)
		}
		got := kernels.Rope{Tokens: tokens, Heads: heads, HeadDim: dim, Config: c}.Reference([][]float64{x, posF})[0]
		if e := relErr(got, want); e > 1e-6 {
			t.Errorf("%+v: reference differs from ref.Rope by %g", c, e)
		}
	}
}

func TestRopeConformance(t *testing.T) {
	runConformance(t, 4,
		kernels.Rope{Tokens: 3, Heads: 2, HeadDim: 10, Config: ref.RopeConfig{Theta: 10000, Style: ref.Neox}},
		kernels.Rope{Tokens: 5, TokensBucket: 8, Heads: 3, HeadDim: 12, DType: schedule.BF16,
			Config: ref.RopeConfig{Theta: 10000, Style: ref.GPTJ, RotaryDim: 8}},
		kernels.Rope{Tokens: 1, Heads: 1, HeadDim: 64, Config: ref.RopeConfig{Theta: 500000, Style: ref.Neox, Scaling: llama31}},
		kernels.Rope{Tokens: 7, TokensBucket: 8, Heads: 2, HeadDim: 34,
			Config: ref.RopeConfig{Theta: 10000, Style: ref.Neox, Scaling: &ref.RopeScaling{Type: "dynamic", Factor: 2, OriginalMaxPositions: 512}}},
	)
}

func TestRopeLlamaTiny(t *testing.T) {
	k, err := kernels.FromWorkload(firstWorkload(t, "llmir.rope"))
	if err != nil {
		t.Fatal(err)
	}
	runConformance(t, 2, k)
}

func TestRopeFromWorkload(t *testing.T) {
	for _, k := range fromPresets(t, "llmir.rope") {
		r := k.(kernels.Rope)
		if r.HeadDim != 32 && r.HeadDim != 128 || r.Config.Theta < 10000 || r.Config.Style != ref.Neox {
			t.Errorf("%s: %+v", k.Name(), r.Config)
		}
	}
	// A workload made from a kernel (with llama3 scaling) reads back to
	// the same kernel.
	k := kernels.Rope{Tokens: 4, Heads: 2, HeadDim: 16, Config: ref.RopeConfig{Theta: 500000, Style: ref.GPTJ, RotaryDim: 8, Scaling: llama31}}
	back, err := kernels.FromWorkload(k.Workload())
	if err != nil {
		t.Fatal(err)
	}
	if b := back.(kernels.Rope); b.Name() != k.Name() || *b.Config.Scaling != *llama31 {
		t.Errorf("round trip: %s %+v, want %s", b.Name(), b.Config.Scaling, k.Name())
	}
	w := firstWorkload(t, "llmir.rope")
	badWorkloads(t, w, map[string]func(w *ir.Workload) string{
		"arity":     func(w *ir.Workload) string { w.Inputs = w.Inputs[:1]; return "1 operands" },
		"positions": func(w *ir.Workload) string { w.Inputs[1].Shape = []int64{1, 3}; return "leading dims" },
		"pos dtype": func(w *ir.Workload) string { w.Inputs[1].DType = "i64"; return "i32" },
		"rank":      func(w *ir.Workload) string { w.Inputs[0].Shape = []int64{512, 32}; return "heads, head_dim" },
		"odd dim":   func(w *ir.Workload) string { w.Attrs["rotary_dim"] = "7 : i64"; return "rotary_dim" },
		"style":     func(w *ir.Workload) string { w.Attrs["style"] = `"half"`; return "style" },
		"no theta":  func(w *ir.Workload) string { delete(w.Attrs, "theta"); return "theta" },
		"no orig": func(w *ir.Workload) string {
			w.Attrs["scaling"] = `{type = "llama3", factor = 8.0 : f32}`
			return "original_max_position_embeddings"
		},
		"bad result": func(w *ir.Workload) string { w.Output[0].Shape[0] = 2; return "result shape" },
	})
}
