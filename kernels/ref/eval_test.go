package ref

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kvcache"
)

// importModel imports a built-in preset or a config under testdata.
func importModel(t *testing.T, name string, blockSize int64) *ir.Module {
	t.Helper()
	c, err := hf.PresetConfig(name)
	if err != nil {
		data, rerr := os.ReadFile(filepath.Join("testdata", name+".json"))
		if rerr != nil {
			t.Fatal(err, rerr)
		}
		if c, err = hf.ParseConfig(name, data); err != nil {
			t.Fatal(err)
		}
	}
	m, err := hf.Import(c, name, hf.Options{BlockSize: blockSize})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func importTiny(t *testing.T, blockSize int64) *ir.Module {
	return importModel(t, "llama-tiny", blockSize)
}

func cacheType(t *testing.T, m *ir.Module) ir.PagedKVType {
	t.Helper()
	for _, a := range m.Func("prefill").Args {
		if kv, ok := a.Type.(ir.PagedKVType); ok {
			return kv
		}
	}
	t.Fatal("no cache argument")
	return ir.PagedKVType{}
}

// logitsOf evaluates fn and returns its [rows, vocab] logits (the argmax
// operand), the next tokens and the cache.
func logitsOf(t *testing.T, m *ir.Module, fn string, args map[string]Value) (*Tensor, []int64, *Pool) {
	t.Helper()
	vals, err := BindArgs(m.Func(fn), args)
	if err != nil {
		t.Fatal(err)
	}
	var logits *Tensor
	obs := Options{Observe: func(op *ir.Op, in, _ []Value) {
		if op.Name == "llmir.argmax" {
			logits = in[0].(*Tensor)
		}
	}}
	out, err := EvalWithOptions(context.Background(), m, fn, vals, RandomParams{Seed: 7}, obs)
	if err != nil {
		t.Fatalf("eval @%s: %v", fn, err)
	}
	return logits, out[0].(*Tensor).I, out[1].(*Pool)
}

type seqSpec struct {
	id     kvcache.SeqID
	tokens []int32
}

// prefill adds each sequence to mgr and runs @prefill on its prompt
// (batch 1), writing its keys and values into pool.
func prefill(t *testing.T, m *ir.Module, mgr *kvcache.Manager, pool *Pool, s seqSpec) (*Tensor, *Pool) {
	t.Helper()
	if _, err := mgr.Add(s.id, s.tokens, nil); err != nil {
		t.Fatal(err)
	}
	n := len(s.tokens)
	slots, err := mgr.Slots(nil, s.id, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	ids, pos, sl := make([]int64, n), make([]int64, n), make([]int64, n)
	for i := range n {
		ids[i], pos[i], sl[i] = int64(s.tokens[i]), int64(i), int64(slots[i])
	}
	logits, _, pool := logitsOf(t, m, "prefill", map[string]Value{
		"input_ids":    Ints(ir.I32, []int{1, n}, ids),
		"positions":    Ints(ir.I32, []int{1, n}, pos),
		"kv_cache":     pool,
		"slot_mapping": Ints(ir.I64, []int{1, n}, sl),
	})
	return logits, pool
}

func relClose(a, b []float32, tol float64) (int, bool) {
	for i := range a {
		if d := math.Abs(float64(a[i]) - float64(b[i])); d > tol*math.Max(math.Abs(float64(b[i])), 1e-3) {
			return i, false
		}
	}
	return -1, true
}

// TestLlamaTinyDecodeMatchesPrefill is the whole-model self-consistency
// check: a prefill of n tokens, then one decode step through the paged
// cache (a ragged batch of two sequences with interleaved, non-contiguous
// blocks), gives the last-position logits of a prefill of n+1 tokens.
//
// The second model is bf16 (every activation and the pool rounded to
// bf16), has a sliding window of 4 keys shorter than the prompts, Llama 3.1
// rope scaling and 4 query heads per KV head: prefill and paged attention
// must agree on the window, the positions and the head mapping.
func TestLlamaTinyDecodeMatchesPrefill(t *testing.T) {
	for _, tc := range []struct {
		model string
		bs    int64
	}{{"llama-tiny", 1}, {"llama-tiny", 3}, {"llama-tiny", 16}, {"tiny-swa-bf16", 4}} {
		bs := tc.bs
		t.Run(tc.model+"/block_size="+strconv.Itoa(int(bs)), func(t *testing.T) {
			m := importModel(t, tc.model, bs)
			kvt := cacheType(t, m)
			seqs := []seqSpec{
				{id: 1, tokens: []int32{5, 201, 17, 17, 256}},
				{id: 2, tokens: []int32{42, 7, 299, 0, 3, 64, 128, 77, 8, 13, 250}},
			}
			next := []int32{211, 2}
			numBlocks := 40
			dt, err := dtypeOf(kvt.Elem)
			if err != nil {
				t.Fatal(err)
			}
			mgr, err := kvcache.NewManager(kvcache.Config{Layout: LayoutFor(kvt, numBlocks, dt), DisablePrefixCaching: true})
			if err != nil {
				t.Fatal(err)
			}
			pool, err := PoolFor(kvt, numBlocks)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range seqs {
				_, pool = prefill(t, m, mgr, pool, s)
			}
			// Decode one token for both sequences in one batch.
			b := len(seqs)
			ids, pos, sl, lens := make([]int64, b), make([]int64, b), make([]int64, b), make([]int64, b)
			for i, s := range seqs {
				if err := mgr.Append(s.id, next[i]); err != nil {
					t.Fatal(err)
				}
				n := len(s.tokens)
				slot, err := mgr.Slots(nil, s.id, n, n+1)
				if err != nil {
					t.Fatal(err)
				}
				ids[i], pos[i], sl[i], lens[i] = int64(next[i]), int64(n), int64(slot[0]), int64(n+1)
			}
			bt, err := mgr.Export([]kvcache.SeqID{1, 2})
			if err != nil {
				t.Fatal(err)
			}
			padded := bt.Padded()
			table := make([]int64, len(padded.Table))
			for i, x := range padded.Table {
				table[i] = int64(x)
			}
			decLogits, decNext, _ := logitsOf(t, m, "decode", map[string]Value{
				"input_ids":    Ints(ir.I32, []int{b}, ids),
				"positions":    Ints(ir.I32, []int{b}, pos),
				"kv_cache":     pool,
				"slot_mapping": Ints(ir.I64, []int{b}, sl),
				"block_tables": Ints(ir.I32, []int{b, padded.MaxBlocks}, table),
				"context_lens": Ints(ir.I32, []int{b}, lens),
			})
			vocab := decLogits.Shape[1]
			for i, s := range seqs {
				// Reference: prefill of n+1 tokens in a fresh cache.
				full := append(append([]int32(nil), s.tokens...), next[i])
				mgr2, _ := kvcache.NewManager(kvcache.Config{Layout: LayoutFor(kvt, numBlocks, dt), DisablePrefixCaching: true})
				pool2, _ := PoolFor(kvt, numBlocks)
				ref, _ := prefill(t, m, mgr2, pool2, seqSpec{id: 9, tokens: full})
				last := ref.F[len(full)*vocab-vocab:]
				got := decLogits.F[i*vocab : (i+1)*vocab]
				if j, ok := relClose(got, last, 1e-4); !ok {
					t.Fatalf("seq %d: decode logit %d = %g, prefill of %d tokens gives %g", s.id, j, got[j], len(full), last[j])
				}
				want, _ := Argmax(last, []int{vocab}, 0)
				if decNext[i] != want[0] {
					t.Errorf("seq %d: decode argmax %d, prefill %d", s.id, decNext[i], want[0])
				}
			}
		})
	}
}

const opsModule = `module {
  func.func @f(%arg0: tensor<?x8xf32, #llmir.dims<["n"]>>, %arg1: tensor<4x8xi8>, %arg2: tensor<4x2xf32>) -> (tensor<?x4xf32, #llmir.dims<["n"]>>, tensor<?xi64, #llmir.dims<["n"]>>) {
    %0 = "llmir.param"() {name = "ln.weight"} : () -> tensor<8xf32>
    %1 = "llmir.param"() {name = "ln.bias"} : () -> tensor<8xf32>
    %2 = "llmir.layer_norm"(%arg0, %0, %1) {eps = 1.0e-05 : f32} : (tensor<?x8xf32, #llmir.dims<["n"]>>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8xf32, #llmir.dims<["n"]>>
    %3 = "llmir.gelu"(%2) {approximate = "tanh"} : (tensor<?x8xf32, #llmir.dims<["n"]>>) -> tensor<?x8xf32, #llmir.dims<["n"]>>
    %4 = "llmir.quantized_linear"(%3, %arg1, %arg2) {bits = 8 : i64, group_size = 4 : i64} : (tensor<?x8xf32, #llmir.dims<["n"]>>, tensor<4x8xi8>, tensor<4x2xf32>) -> tensor<?x4xf32, #llmir.dims<["n"]>>
    %5 = "llmir.softmax"(%4) {axis = 1 : i64} : (tensor<?x4xf32, #llmir.dims<["n"]>>) -> tensor<?x4xf32, #llmir.dims<["n"]>>
    %6 = "llmir.argmax"(%5) : (tensor<?x4xf32, #llmir.dims<["n"]>>) -> tensor<?xi64, #llmir.dims<["n"]>>
    return %5, %6 : tensor<?x4xf32, #llmir.dims<["n"]>>, tensor<?xi64, #llmir.dims<["n"]>>
  }
}`

// TestEvalMatchesComposedReferences runs ops llama does not use through the
// evaluator and compares with the functions called directly.
func TestEvalMatchesComposedReferences(t *testing.T) {
	m, err := ir.ParseString("ops.mlir", opsModule)
	if err != nil {
		t.Fatal(err)
	}
	if err := ir.Verify(m); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(13, 13))
	const n = 3
	x := randF(rng, n*8)
	w := make([]int64, 32)
	w8 := make([]int8, 32)
	for i := range w {
		w8[i] = int8(rng.IntN(255) - 127)
		w[i] = int64(w8[i])
	}
	scales := []float32{0.1, 0.2, 0.3, 0.05, 0.02, 0.5, 0.25, 0.125}
	params := RandomParams{Seed: 3}
	out, err := Eval(context.Background(), m, "f", []Value{
		Floats(ir.F32, []int{n, 8}, x), Ints(ir.I8, []int{4, 8}, w), Floats(ir.F32, []int{4, 2}, scales),
	}, params)
	if err != nil {
		t.Fatal(err)
	}
	lw, _ := params.Param(context.Background(), "ln.weight", ir.Tensor(ir.F32, ir.S(8)))
	lb, _ := params.Param(context.Background(), "ln.bias", ir.Tensor(ir.F32, ir.S(8)))
	for _, v := range lw.F {
		if v < 0.9 || v > 1.1 {
			t.Fatalf("norm weight %g not near 1", v)
		}
	}
	h, _ := LayerNorm(x, n, 8, lw.F, lb.F, float64(float32(1e-5)))
	h = GELU(h, true)
	h, _ = QuantizedLinearInt8(h, n, 8, w8, scales, 4, 4)
	want, _ := Softmax(h, []int{n, 4}, 1)
	got := out[0].(*Tensor)
	if len(got.Shape) != 2 || got.Shape[0] != n || got.Shape[1] != 4 {
		t.Fatalf("shape %v", got.Shape)
	}
	near(t, "eval", got.F, want, 0)
	am, _ := Argmax(want, []int{n, 4}, 1)
	for i := range am {
		if out[1].(*Tensor).I[i] != am[i] {
			t.Errorf("argmax %v, want %v", out[1].(*Tensor).I, am)
		}
	}
}

func TestEvalErrors(t *testing.T) {
	m := importTiny(t, 4)
	kvt := cacheType(t, m)
	pool, err := PoolFor(kvt, 8)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ids := Ints(ir.I32, []int{1, 2}, []int64{1, 2})
	pos := Ints(ir.I32, []int{1, 2}, []int64{0, 1})
	slots := Ints(ir.I64, []int{1, 2}, []int64{0, 1})
	for _, tc := range []struct {
		name string
		args []Value
		want error
	}{
		{"seq disagrees", []Value{ids, Ints(ir.I32, []int{1, 3}, []int64{0, 1, 2}), pool, slots}, ErrShape},
		{"wrong element type", []Value{Ints(ir.I64, []int{1, 2}, []int64{1, 2}), pos, pool, slots}, ErrShape},
		{"short data", []Value{Ints(ir.I32, []int{1, 2}, []int64{1}), pos, pool, slots}, ErrShape},
		{"token past vocabulary", []Value{Ints(ir.I32, []int{1, 2}, []int64{1, 1000}), pos, pool, slots}, ErrIndex},
		{"slot past pool", []Value{ids, pos, pool, Ints(ir.I64, []int{1, 2}, []int64{0, 32})}, ErrIndex},
		{"pool of another layout", []Value{ids, pos, &Pool{Layout: LayoutFor(kvt, 8, kvcache.F16)}, slots}, ErrShape},
		{"too few arguments", []Value{ids, pos, pool}, ErrShape},
	} {
		_, err := Eval(ctx, m, "prefill", tc.args, RandomParams{Seed: 1})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}

	// An op the evaluator does not know, and a cache read after it was updated.
	bad := `module {
  func.func @g(%arg0: !llmir.paged_kv<block_size = 4, kv_heads = 1, head_dim = 2, elem = f32, layers = 1>, %arg1: tensor<1x1x2xf32>, %arg2: tensor<1xi64>, %arg3: tensor<1x1x2xf32>, %arg4: tensor<1x2xi32>, %arg5: tensor<1xi32>) -> tensor<1x1x2xf32> {
    %0 = "llmir.append_kv"(%arg0, %arg1, %arg1, %arg2) {layer = 0 : i64} : (!llmir.paged_kv<block_size = 4, kv_heads = 1, head_dim = 2, elem = f32, layers = 1>, tensor<1x1x2xf32>, tensor<1x1x2xf32>, tensor<1xi64>) -> !llmir.paged_kv<block_size = 4, kv_heads = 1, head_dim = 2, elem = f32, layers = 1>
    %1 = "llmir.reshape"(%arg3) : (tensor<1x1x2xf32>) -> tensor<1x1x2xf32>
    %2 = "llmir.paged_attention"(%1, %arg0, %arg4, %arg5) {layer = 0 : i64} : (tensor<1x1x2xf32>, !llmir.paged_kv<block_size = 4, kv_heads = 1, head_dim = 2, elem = f32, layers = 1>, tensor<1x2xi32>, tensor<1xi32>) -> tensor<1x1x2xf32>
    return %2 : tensor<1x1x2xf32>
  }
}`
	bm, err := ir.ParseString("bad.mlir", bad)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := NewPool(kvcache.Layout{NumBlocks: 2, BlockSize: 4, NumLayers: 1, NumKVHeads: 1, HeadDim: 2, DType: kvcache.F32})
	args := []Value{p, Floats(ir.F32, []int{1, 1, 2}, []float32{1, 2}), Ints(ir.I64, []int{1}, []int64{0}),
		Floats(ir.F32, []int{1, 1, 2}, []float32{1, 0}), Ints(ir.I32, []int{1, 2}, []int64{0, 1}), Ints(ir.I32, []int{1}, []int64{1})}
	if _, err := Eval(ctx, bm, "g", args, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("stale cache read: err %v, want ErrUnsupported", err)
	}
	bm.Funcs[0].Body[1].Name = "llmir.frobnicate"
	var irErr *ir.Error
	if _, err := Eval(ctx, bm, "g", args, nil); !errors.As(err, &irErr) {
		t.Errorf("unknown op: err %v, want the verifier's *ir.Error", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Eval(cctx, m, "prefill", []Value{ids, pos, pool, slots}, RandomParams{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err %v", err)
	}
}

// A bf16 function rounds what its ops produce, and never writes the
// caller's (unrounded) arguments, even through a reshape view.
func TestEvalRoundsBF16WithoutTouchingArgs(t *testing.T) {
	src := `module {
  func.func @h(%arg0: tensor<2x3xbf16>) -> (tensor<6xbf16>, tensor<2x3xbf16>) {
    %0 = "llmir.reshape"(%arg0) : (tensor<2x3xbf16>) -> tensor<6xbf16>
    %1 = "llmir.silu"(%arg0) : (tensor<2x3xbf16>) -> tensor<2x3xbf16>
    return %0, %1 : tensor<6xbf16>, tensor<2x3xbf16>
  }
}`
	m, err := ir.ParseString("h.mlir", src)
	if err != nil {
		t.Fatal(err)
	}
	x := []float32{1.001, -2.3, 0.1, 3.14159, 7, -0.5}
	orig := append([]float32(nil), x...)
	out, err := Eval(context.Background(), m, "h", []Value{Floats(ir.BF16, []int{2, 3}, x)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "argument", x, orig, 0)
	near(t, "reshape", out[0].(*Tensor).F, RoundBF16(append([]float32(nil), orig...)), 0)
	near(t, "silu", out[1].(*Tensor).F, RoundBF16(SiLU(orig)), 0)
	if got := out[1].(*Tensor).F[0]; got == SiLU(orig)[0] {
		t.Errorf("silu(1.001) = %g was not rounded to bf16", got)
	}
}

// Every op of the op table has a reference: a new op added to ir without
// one fails here, not in some kernel's conformance run.
func TestEveryOpHasReference(t *testing.T) {
	have := map[string]bool{}
	for _, name := range Ops() {
		have[name] = true
	}
	for _, d := range ir.Ops() {
		if !have[d.Name] {
			t.Errorf("op %s has no reference in kernels/ref", d.Name)
		}
	}
}
