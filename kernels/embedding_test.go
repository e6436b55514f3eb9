package kernels_test

import (
	"math/rand/v2"
	"testing"

	"llmir/ir"
	"llmir/kernels"
	"llmir/kernels/kerneltest"
	"llmir/kernels/ref"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
)

func TestEmbeddingReferenceMatchesRef(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	const vocab, hidden, tokens = 11, 7, 5
	t32, table := randF32(rng, vocab*hidden)
	ids := make([]int64, tokens)
	idsF := make([]float64, tokens)
	for i := range ids {
		ids[i] = rng.Int64N(vocab)
		idsF[i] = float64(ids[i])
	}
	want, err := ref.Embedding(ids, t32, vocab, hidden)
	if err != nil {
		t.Fatal(err)
	}
	got := kernels.Embedding{Tokens: tokens, Vocab: vocab, Hidden: hidden}.Reference([][]float64{idsF, table})[0]
	if e := relErr(got, want); e != 0 {
		t.Errorf("reference differs from ref.Embedding by %g", e)
	}
}

func TestEmbeddingConformance(t *testing.T) {
	runConformance(t, 4,
		kernels.Embedding{Tokens: 1, Vocab: 13, Hidden: 17},
		kernels.Embedding{Tokens: 5, TokensBucket: 8, Vocab: 1000, Hidden: 33, DType: schedule.BF16},
	)
}

func TestEmbeddingLlamaTiny(t *testing.T) {
	k, err := kernels.FromWorkload(firstWorkload(t, "llmir.embedding"))
	if err != nil {
		t.Fatal(err)
	}
	runConformance(t, 2, k)
}

// outOfVocab draws ids past the vocabulary: the kernel must refuse them
// (runtime_error), not read outside the table.
type outOfVocab struct{ kernels.Embedding }

func (o outOfVocab) Fill(input string) func(rng *rand.Rand, v []float64) {
	if input != "ids" {
		return nil
	}
	return func(rng *rand.Rand, v []float64) {
		for i := range v {
			v[i] = float64(o.Vocab + rng.Int64N(3))
		}
	}
}

func (o outOfVocab) Reference(in [][]float64) [][]float64 {
	return [][]float64{make([]float64, o.Tokens*o.Hidden)}
}

func TestEmbeddingRejectsOutOfVocabIDs(t *testing.T) {
	tg := kerneltest.CPU(t)
	k := outOfVocab{kernels.Embedding{Tokens: 3, Vocab: 5, Hidden: 8}}
	kerneltest.Expect(t, tg, search.CPUHardware(tg.CPU(), 1), k, target.StatusRuntimeError)
}

func TestEmbeddingFromWorkload(t *testing.T) {
	for _, k := range fromPresets(t, "llmir.embedding") {
		e := k.(kernels.Embedding)
		if e.Vocab != 1000 && e.Vocab != 128256 {
			t.Errorf("%s: vocab %d", k.Name(), e.Vocab)
		}
	}
	w := firstWorkload(t, "llmir.embedding")
	badWorkloads(t, w, map[string]func(w *ir.Workload) string{
		"arity":    func(w *ir.Workload) string { w.Inputs = w.Inputs[:1]; return "1 operands" },
		"ids":      func(w *ir.Workload) string { w.Inputs[0].DType = "i64"; return "i32" },
		"table":    func(w *ir.Workload) string { w.Inputs[1].Shape = []int64{1000, 256, 1}; return "[vocab, hidden]" },
		"result":   func(w *ir.Workload) string { w.Output[0].Shape = []int64{1, 512, 255}; return "result shape" },
		"int data": func(w *ir.Workload) string { w.Inputs[1].DType = "i8"; return "want f32, bf16 or f16" },
	})
}
