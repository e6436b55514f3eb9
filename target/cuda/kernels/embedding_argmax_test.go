package cudakernels

import (
	"errors"
	"math"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/kernels"
	"llmir/search"
	"llmir/target"
	"llmir/target/cuda"
)

// TestEmbeddingArgmaxFromWorkload: llama-3-8b's token embedding and greedy
// argmax (decode at batch 1 and 16, prefill of 512 tokens) map to these
// kernels at the model's shapes, answer with the IR key and emit at their
// defaults.
func TestEmbeddingArgmaxFromWorkload(t *testing.T) {
	for _, tc := range []struct {
		dims                 map[string]int64
		emb, arg, pemb, parg string // decode, prefill
	}{
		{map[string]int64{"batch": 1, "seq": 512}, "cuda_embedding/T=1,V=128256,H=4096/bf16", "cuda_argmax/M=1,N=128256/bf16",
			"cuda_embedding/T=512,V=128256,H=4096/bf16", "cuda_argmax/M=512,N=128256/bf16"},
		{map[string]int64{"batch": 16, "seq": 512}, "cuda_embedding/T=16,V=128256,H=4096/bf16", "cuda_argmax/M=16,N=128256/bf16",
			"cuda_embedding/T=8192,V=128256,H=4096/bf16", "cuda_argmax/M=8192,N=128256/bf16"},
	} {
		got := map[string]bool{}
		for _, task := range llamaTasks(t, tc.dims) {
			g := strings.Join(task.Workload.Group, "+")
			if g != "llmir.embedding" && g != "llmir.argmax" {
				continue
			}
			k, err := FromWorkload(task.Workload)
			if err != nil {
				t.Fatalf("%s: %v", task.Workload.Name(), err)
			}
			if k.Workload().Key() != task.Workload.Key() {
				t.Errorf("%s: key differs from the IR's", k.Name())
			}
			got[k.Name()] = true
			s := mustDefault(t, k)
			if _, err := k.EmitCUDA(s, cuda.H100, Entry); err != nil {
				t.Errorf("%s: default: %v", k.Name(), err)
			}
		}
		for _, n := range []string{tc.emb, tc.arg, tc.pemb, tc.parg} {
			if !got[n] {
				t.Errorf("dims %v: no kernel %s among %v", tc.dims, n, got)
			}
		}
	}
}

func TestEmbeddingArgmaxFromWorkloadErrors(t *testing.T) {
	for _, tc := range []struct {
		w      ir.Workload
		noKern bool
	}{
		{ir.Workload{Group: []string{"llmir.embedding"}, Inputs: []ir.TensorSig{sig("i32", 4), sig("f32", 100, 64)}, Output: []ir.TensorSig{sig("f32", 4, 64)}}, true},
		{ir.Workload{Group: []string{"llmir.embedding"}, Inputs: []ir.TensorSig{sig("i64", 4), sig("bf16", 100, 64)}, Output: []ir.TensorSig{sig("bf16", 4, 64)}}, false},
		{ir.Workload{Group: []string{"llmir.embedding"}, Inputs: []ir.TensorSig{sig("i32", 4), sig("bf16", 100, 64)}, Output: []ir.TensorSig{sig("bf16", 4, 65)}}, false},
		{ir.Workload{Group: []string{"llmir.argmax"}, Inputs: []ir.TensorSig{sig("f16", 2, 100)}, Output: []ir.TensorSig{sig("i64", 2)}}, true},
		{ir.Workload{Group: []string{"llmir.argmax"}, Inputs: []ir.TensorSig{sig("bf16", 2, 100)}, Output: []ir.TensorSig{sig("i64", 100)}}, false},
		{ir.Workload{Group: []string{"llmir.argmax"}, Inputs: []ir.TensorSig{sig("bf16", 2, 100)}, Output: []ir.TensorSig{sig("i64", 2)}, Attrs: map[string]string{"axis": "0"}}, false},
	} {
		_, err := FromWorkload(tc.w)
		if err == nil || errors.Is(err, kernels.ErrNoKernel) != tc.noKern {
			t.Errorf("%s: %v (want an error, no-kernel %v)", tc.w.Name(), err, tc.noKern)
		}
	}
	// i32 results are accepted as the CPU's are; an argmax of [2, 3, 100] is 6 rows.
	k, err := FromWorkload(ir.Workload{Group: []string{"llmir.argmax"}, Inputs: []ir.TensorSig{sig("bf16", 2, 3, 100)}, Output: []ir.TensorSig{sig("i32", 2, 3)}})
	if err != nil || Unwrap(k) != (Argmax{M: 6, N: 100}) {
		t.Errorf("argmax of [2, 3, 100]: %v %v", k, err)
	}
}

// TestEmbeddingArgmaxSpaces: every point of the design spaces emits, the
// predicate refuses what the generator refuses, and the defaults are the
// rule's at llama-3-8b's shapes.
func TestEmbeddingArgmaxSpaces(t *testing.T) {
	hw := Hardware(cuda.H100)
	for _, tc := range []struct {
		k interface {
			Kernel
			knobs() kernels.Knobs
		}
		def map[string]int64
	}{
		{Embedding{Tokens: 1, Vocab: 128256, Hidden: 4096}, map[string]int64{"threads_per_row": 256, "rows_per_block": 1, "vec": 8, "unroll": 2}},
		{Embedding{Tokens: 512, Vocab: 128256, Hidden: 4096}, map[string]int64{"threads_per_row": 256, "rows_per_block": 1, "vec": 8, "unroll": 2}},
		{Embedding{Tokens: 7, Vocab: 1000, Hidden: 4104}, map[string]int64{"threads_per_row": 256, "rows_per_block": 1, "vec": 8, "unroll": 2}},
		{Embedding{Tokens: 5, Vocab: 50, Hidden: 1001}, map[string]int64{"threads_per_row": 256, "rows_per_block": 1, "vec": 1, "unroll": 2}},
		{Embedding{Tokens: 9, Vocab: 50, Hidden: 64}, map[string]int64{"threads_per_row": 32, "rows_per_block": 4, "vec": 8, "unroll": 1}},
		{Argmax{M: 1, N: 128256}, map[string]int64{"threads": 256, "vec": 8, "unroll": 2, "blocks_per_row": 16}},
		{Argmax{M: 16, N: 128256}, map[string]int64{"threads": 256, "vec": 8, "unroll": 2, "blocks_per_row": 16}},
		{Argmax{M: 512, N: 128256}, map[string]int64{"threads": 256, "vec": 8, "unroll": 2, "blocks_per_row": 1}},
		{Argmax{M: 3, N: 1001}, map[string]int64{"threads": 128, "vec": 8, "unroll": 1, "blocks_per_row": 1}},
		{Argmax{M: 5, N: 14}, map[string]int64{"threads": 64, "vec": 8, "unroll": 1, "blocks_per_row": 1}},
	} {
		t.Run(tc.k.Name(), func(t *testing.T) {
			c := Checked(tc.k)
			valid, total, err := SpaceSize(c, hw)
			if err != nil || valid < 1 || valid > total {
				t.Fatalf("space %d of %d (%v)", valid, total, err)
			}
			got, err := tc.k.knobs().Read(mustDefault(t, c))
			if err != nil || !mapsEqual(got, tc.def) {
				t.Errorf("default %v (%v), want %v", got, err, tc.def)
			}
			pts, err := tc.k.knobs().Points(nil)
			if err != nil {
				t.Fatal(err)
			}
			ok := 0
			for _, p := range pts {
				s := chosen(t, tc.k, p)
				_, emitErr := tc.k.EmitCUDA(s, cuda.H100, Entry)
				validErr := c.(kernels.Validator).Valid(s, hw)
				if (emitErr == nil) != (validErr == nil) {
					t.Errorf("point %v: emit %v, valid %v", p, emitErr, validErr)
				}
				if emitErr == nil {
					ok++
				}
			}
			if ok != valid {
				t.Errorf("%d points emit, SpaceSize says %d", ok, valid)
			}
			for seed := range uint64(20) {
				s, err := search.SampleSchedule(c, hw, seed)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tc.k.EmitCUDA(s, cuda.H100, Entry); err != nil {
					t.Fatalf("seed %d: sampled a refused point: %v", seed, err)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestArgmaxSpecialFill: the planted rows have the answers the comparison
// rules give (first NaN, first of tied maxima, 0 for a row of −inf, the
// first zero of −0/+0), after the inputs' rounding to bf16.
func TestArgmaxSpecialFill(t *testing.T) {
	a := Argmax{M: 10, N: 4099, Special: true}
	p, err := search.NewProblem(Checked(a), 7)
	if err != nil {
		t.Fatal(err)
	}
	want, err := p.Expected()
	if err != nil {
		t.Fatal(err)
	}
	x, n := p.Inputs()[0], int(a.N)
	for m := range int(a.M) {
		row, got := x[m*n:(m+1)*n], int(want[0][m])
		first := func(f func(v float64) bool) int {
			for i, v := range row {
				if f(v) {
					return i
				}
			}
			return -1
		}
		var exp int
		switch m % 5 {
		case 0:
			exp = first(math.IsNaN)
		case 1:
			exp = first(func(v float64) bool { return v == 2 })
		case 2:
			exp = 0
		case 3:
			exp = first(func(v float64) bool { return math.IsInf(v, 1) })
		case 4:
			exp = first(func(v float64) bool { return v == 0 })
			if math.Signbit(row[exp]) != (exp == first(func(v float64) bool { return v == 0 && math.Signbit(v) })) {
				t.Errorf("row %d: signed zeros not kept by the rounding", m)
			}
		}
		if exp < 0 || got != exp {
			t.Errorf("row %d (kind %d): reference %d, planted answer %d", m, m%5, got, exp)
		}
	}
	if a.Fill("y") != nil || (Argmax{M: 1, N: 10}).Fill("x") != nil {
		t.Error("Fill draws for other inputs or without Special")
	}
}

// TestEmbeddingFillAndReference: ids fall in the vocabulary and rows are
// copied bit for bit.
func TestEmbeddingFillAndReference(t *testing.T) {
	e := Embedding{Tokens: 9, Vocab: 5, Hidden: 6}
	p, err := search.NewProblem(Checked(e), 3)
	if err != nil {
		t.Fatal(err)
	}
	if p.Buffers[0].DType != target.I32 || p.Buffers[2].DType != target.BF16 || !p.Buffers[2].Output {
		t.Fatalf("buffers %+v", p.Buffers)
	}
	want, err := p.Expected()
	if err != nil {
		t.Fatal(err)
	}
	ids, table := p.Inputs()[0], p.Inputs()[1]
	for tok, id := range ids {
		if id < 0 || id >= 5 || id != math.Trunc(id) {
			t.Fatalf("id %g", id)
		}
		for j := range 6 {
			if want[0][tok*6+j] != table[int(id)*6+j] {
				t.Fatalf("token %d element %d", tok, j)
			}
		}
	}
}
