package kernels

// Embedding is a template kernel: out[t] = table[ids[t]] is an indirect
// load through an i32 input, which the loop-nest IR (affine indices of
// loop variables) cannot express. It is a copy of rows, so its knobs are
// the copy's vector width and unroll and the tokens per parallel task.
// Ids outside the vocabulary make the kernel return 1 (a runtime error)
// and leave that row unwritten, instead of reading outside the table.

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"llmir/ir"
	"llmir/schedule"
)

func init() { register("llmir.embedding", embeddingFromWorkload) }

// Embedding gathers rows of table [Vocab, Hidden] for ids [Tokens] (i32).
type Embedding struct {
	Tokens, Vocab, Hidden int64
	TokensBucket          int64          // 0: Tokens itself
	DType                 schedule.DType // of table and out
	IR                    *ir.Workload
}

func embeddingFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkArity(w, 2, 1); err != nil {
		return nil, err
	}
	ids, table, out := w.Inputs[0], w.Inputs[1], w.Output[0]
	if ids.DType != "i32" {
		return nil, fmt.Errorf("ids are %s, the kernel reads i32", ids.DType)
	}
	if len(table.Shape) != 2 {
		return nil, fmt.Errorf("table %v must be [vocab, hidden]", table.Shape)
	}
	dt, err := floatType(table, out)
	if err != nil {
		return nil, err
	}
	if want := append(slices.Clone(ids.Shape), table.Shape[1]); !slices.Equal(out.Shape, want) {
		return nil, fmt.Errorf("result shape %v, want %v", out.Shape, want)
	}
	tokens := int64(1)
	for _, d := range ids.Shape {
		tokens *= d
	}
	return Embedding{Tokens: tokens, Vocab: table.Shape[0], Hidden: table.Shape[1], DType: dt, IR: &w}, nil
}

func (k Embedding) bucket() int64 { return rowBucketOr(k.Tokens, k.TokensBucket) }

// Name is "embedding/tokens=…,vocab=…,hidden=…/<dtype>".
func (k Embedding) Name() string {
	return fmt.Sprintf("embedding/tokens=%d,vocab=%d,hidden=%d/%s", k.Tokens, k.Vocab, k.Hidden, k.DType)
}

// Def is the template ids [tokens], table [vocab, hidden] → out [tokens, hidden].
func (k Embedding) Def() (*schedule.Def, error) {
	if err := rowCheck("embedding", k.Tokens, k.TokensBucket, k.Hidden); err != nil {
		return nil, err
	}
	if k.Vocab < 1 || k.Vocab > 1<<31-1 {
		return nil, fmt.Errorf("embedding: vocabulary %d outside 1..2^31-1 (i32 ids)", k.Vocab)
	}
	if !k.DType.Float() {
		return nil, fmt.Errorf("embedding: dtype %s is not a float type", k.DType)
	}
	T := schedule.Dynamic("tokens", k.bucket())
	ids := schedule.Input("ids", schedule.I32, T)
	table := schedule.Input("table", k.DType, schedule.Static(k.Vocab), schedule.Static(k.Hidden))
	out := schedule.Declare("out", k.DType, T, schedule.Static(k.Hidden))
	return schedule.NewTemplateDef("embedding", "out[t, j] = table[ids[t], j]", []*schedule.Tensor{ids, table}, out)
}

// Workload is the IR workload, or llmir.embedding of [tokens] ids.
func (k Embedding) Workload() ir.Workload {
	if k.IR != nil {
		return *k.IR
	}
	dt := k.DType.String()
	return rowsWorkload("llmir.embedding", k.bucket(),
		[]ir.TensorSig{{Shape: []int64{0}, Sym: []string{"tokens"}, DType: "i32"}, {Shape: []int64{k.Vocab, k.Hidden}, DType: dt}},
		[]ir.TensorSig{tokSig(k.Hidden, dt)}, nil)
}

// Dims is [Tokens].
func (k Embedding) Dims() []int64 { return []int64{k.Tokens} }

// FLOPs is zero: a gather.
func (k Embedding) FLOPs() float64 { return 0 }

// Bytes: the gathered rows read and written, and the ids.
func (k Embedding) Bytes() float64 {
	return float64(2*k.Tokens*k.Hidden*k.DType.Size() + 4*k.Tokens)
}

// Fill draws token ids in [0, vocab).
func (k Embedding) Fill(input string) func(rng *rand.Rand, v []float64) {
	if input != "ids" {
		return nil
	}
	return func(rng *rand.Rand, v []float64) {
		for i := range v {
			v[i] = float64(rng.Int64N(k.Vocab))
		}
	}
}

// Reference is ref.Embedding.
func (k Embedding) Reference(in [][]float64) [][]float64 {
	ids, table := in[0], in[1]
	h := k.Hidden
	out := make([]float64, k.Tokens*h)
	for t := range k.Tokens {
		id := int64(ids[t])
		if id < 0 || id >= k.Vocab {
			panic(fmt.Sprintf("embedding reference: id %d outside the vocabulary of %d (Fill draws in range)", id, k.Vocab))
		}
		copy(out[t*h:(t+1)*h], table[id*h:(id+1)*h])
	}
	return [][]float64{out}
}

// Space samples the row knobs.
func (k Embedding) Space(s *schedule.Schedule, hw Hardware) error { return rowKnobs(hw).Sample(s) }

// Default chooses the row knobs by rule (rowDefaults).
func (k Embedding) Default(s *schedule.Schedule, hw Hardware) error {
	d := rowDefaults(hw, k.bucket(), k.Hidden)
	d["unroll"] = min(d["unroll"], 2)
	return rowKnobs(hw).Choose(s, d)
}

// EmitC copies each row in vectors of the storage type (bits, no
// conversion).
func (k Embedding) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	kv, err := rowKnobs(hw).Read(s)
	if err != nil {
		return "", fmt.Errorf("embedding: %w", err)
	}
	vec, un, h := kv["vec"], kv["unroll"], k.Hidden
	var w cSrc
	rowPrelude(&w, vec, k.DType)
	w.line("typedef struct { llmir_t e[V]; } llmir_row_v;")
	w.line("")
	w.open("int %s(void *const *bufs, const int64_t *dims)", entry)
	w.line("const int32_t *restrict ids = (const int32_t *)bufs[0];")
	w.line("const llmir_t *restrict table = (const llmir_t *)bufs[1];")
	w.line("llmir_t *restrict out = (llmir_t *)bufs[2];")
	w.line("int bad = 0;")
	rowLoop(&w, kv["chunk"])
	w.line("const int32_t id = ids[r];")
	w.open("if (id < 0 || id >= %d)", k.Vocab)
	w.line("#pragma omp atomic write")
	w.line("bad = 1;")
	w.line("continue;")
	w.close()
	w.line("const llmir_t *restrict src = table + (int64_t)id * %d;", h)
	w.line("llmir_t *restrict o = out + r * %d;", h)
	rowSweep(&w, h, vec, un,
		func(_ int64, j string) string {
			return fmt.Sprintf("{ llmir_row_v v; memcpy(&v, src + %[1]s, sizeof v); memcpy(o + %[1]s, &v, sizeof v); }", j)
		},
		func(j string) string { return fmt.Sprintf("o[%[1]s] = src[%[1]s];", j) })
	w.close()
	w.line("return bad;")
	w.close()
	return w.b.String(), nil
}
