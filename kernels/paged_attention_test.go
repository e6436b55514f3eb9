package kernels_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/target"

	"llmir/kernels"
	"llmir/kernels/kerneltest"
	"llmir/schedule"
	"llmir/search"
)

// pagedTrace is a schedule of k with the given knob values (the rest at
// their first value), to pin split-KV on or off whatever the draws give.
func pagedTrace(t *testing.T, k kernels.PagedAttention, hw kernels.Hardware, knobs map[string]int64) *schedule.Trace {
	t.Helper()
	def, err := k.Def()
	if err != nil {
		t.Fatal(err)
	}
	s, err := schedule.New(def, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Knobs(hw).Choose(s, knobs); err != nil {
		t.Fatal(err)
	}
	return s.Trace()
}

// TestPagedAttentionConformance runs decode attention through the suite at
// head_dim 32/64/80/128, GQA 1/3/4/8, block sizes 8/16/256 and ragged batches
// (lengths 1, bs−1, bs, bs+1, the longest and random ones), with split-KV
// forced off and on in both parallel schedules on top of the default and
// random draws, at one and two threads. The pinned schedules also take
// streams whose ranges end mid-block and mid-tile (4 streams of 16-token
// tiles; 8 streams of 2-token tiles, many of them empty for short
// sequences), so the masked slots of partial tiles are exercised.
func TestPagedAttentionConformance(t *testing.T) {
	tg := kerneltest.CPU(t)
	cases := []kernels.PagedAttention{
		{Batch: 5, QHeads: 4, KVHeads: 4, HeadDim: 64, BlockSize: 8, MaxBlocks: 9},
		{Batch: 7, BatchBucket: 8, QHeads: 8, KVHeads: 2, HeadDim: 80, BlockSize: 16, MaxBlocks: 40},
		{Batch: 3, QHeads: 16, KVHeads: 2, HeadDim: 128, BlockSize: 256, MaxBlocks: 3, Window: 300},
		{Batch: 6, QHeads: 8, KVHeads: 2, HeadDim: 64, BlockSize: 16, MaxBlocks: 24, Elem: schedule.BF16},
		// A group of 3 query heads: chunks padded, the general softmax path.
		{Batch: 4, QHeads: 6, KVHeads: 2, HeadDim: 32, BlockSize: 8, MaxBlocks: 5},
	}
	for i, k := range cases {
		threads := 1 + i%2
		t.Run(k.Name(), func(t *testing.T) {
			hw := search.CPUHardware(tg.CPU(), threads)
			opts := kerneltest.Options{Draws: 1, Seed: uint64(i + 1), Traces: []*schedule.Trace{
				pagedTrace(t, k, hw, map[string]int64{"split": 256, "parallel": 1, "unroll": 4, "heads": k.KVHeads, "prefetch": 2, "tile": 16, "streams": 4}),
				pagedTrace(t, k, hw, map[string]int64{"split": 0, "parallel": 0, "vec": 4, "unroll": 1, "heads": 1, "prefetch": 1, "tile": 2, "streams": 8}),
			}}
			kerneltest.Run(t, tg, hw, k, opts)
		})
	}
}

// badTable is decode attention whose first sequence names a block past
// the pool: the kernel must refuse it (runtime_error), not read outside.
type badTable struct{ kernels.PagedAttention }

func (b badTable) Fill(input string) func(rng *rand.Rand, v []float64) {
	f := b.PagedAttention.Fill(input)
	if input != "block_tables" {
		return f
	}
	return func(rng *rand.Rand, v []float64) {
		f(rng, v)
		v[0] = float64(b.Dims()[1])
	}
}

func (b badTable) Reference(in [][]float64) [][]float64 {
	return [][]float64{make([]float64, b.Batch*b.QHeads*b.HeadDim)}
}

func TestPagedAttentionRefusesBadTable(t *testing.T) {
	tg := kerneltest.CPU(t)
	k := badTable{kernels.PagedAttention{Batch: 2, QHeads: 2, KVHeads: 1, HeadDim: 16, BlockSize: 4, MaxBlocks: 3}}
	kerneltest.Expect(t, tg, search.CPUHardware(tg.CPU(), 1), k, target.StatusRuntimeError)
}

// TestPagedFromWorkload makes both paged kernels from the decode (and
// prefill) workloads of llama-tiny (f32) and llama-3-8b (bf16): the kernel
// keeps the module's workload key, reads the cache type, scale and
// batch/table shapes, and its default schedule emits C.
func TestPagedFromWorkload(t *testing.T) {
	for _, preset := range []string{"llama-tiny", "llama-3-8b"} {
		m, err := hf.ImportPreset(preset, hf.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tasks, err := ir.Tasks(m, nil)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, task := range tasks {
			w := task.Workload
			g := w.Group[0]
			if g != "llmir.paged_attention" && g != "llmir.append_kv" {
				continue
			}
			k, err := kernels.FromWorkload(w)
			if err != nil {
				t.Fatalf("%s %s: %v", preset, w.Name(), err)
			}
			if k.Workload().Key() != w.Key() {
				t.Errorf("%s %s: kernel reports another workload", preset, w.Name())
			}
			seen[g]++
			hw := kernels.Hardware{VectorBits: 512, Threads: 2}
			s, err := search.DefaultSchedule(k, hw)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := search.NewCandidate("c", k, s, hw); err != nil {
				t.Errorf("%s %s: %v", preset, k.Name(), err)
			}
			switch k := k.(type) {
			case kernels.PagedAttention:
				q, bt := w.Inputs[0], w.Inputs[2]
				if k.Batch != q.Shape[0] || k.QHeads != q.Shape[1] || k.HeadDim != q.Shape[2] || k.MaxBlocks != bt.Shape[1] || k.BlockSize != 16 || k.Scale == 0 {
					t.Errorf("%s: %s from %s", preset, k.Name(), w.Name())
				}
				if want := map[string]schedule.DType{"llama-tiny": schedule.F32, "llama-3-8b": schedule.BF16}[preset]; k.Elem != want {
					t.Errorf("%s: element type %s, want %s", preset, k.Elem, want)
				}
			case kernels.AppendKV:
				if k.Tokens != w.Inputs[3].Shape[0]*max(1, product(w.Inputs[3].Shape[1:])) || k.HeadDim != w.Inputs[1].Shape[len(w.Inputs[1].Shape)-1] {
					t.Errorf("%s: %s from %s", preset, k.Name(), w.Name())
				}
			default:
				t.Errorf("%s: %T for %s", preset, k, g)
			}
		}
		if seen["llmir.paged_attention"] == 0 || seen["llmir.append_kv"] < 2 {
			t.Errorf("%s: kernels made %v, want paged_attention and append_kv for prefill and decode", preset, seen)
		}
	}
}

func product(s []int64) int64 {
	n := int64(1)
	for _, d := range s {
		n *= d
	}
	return n
}

// TestPagedFromWorkloadRejects names what is wrong with malformed
// workloads instead of panicking.
func TestPagedFromWorkloadRejects(t *testing.T) {
	m, err := hf.ImportPreset("llama-tiny", hf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := ir.Tasks(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	var attn ir.Workload
	for _, task := range tasks {
		if task.Workload.Group[0] == "llmir.paged_attention" {
			attn = task.Workload
		}
	}
	clone := func(edit func(w *ir.Workload)) ir.Workload {
		w := attn
		w.Inputs = append([]ir.TensorSig(nil), attn.Inputs...)
		w.Attrs = map[string]string{}
		for k, v := range attn.Attrs {
			w.Attrs[k] = v
		}
		edit(&w)
		return w
	}
	for _, c := range []struct {
		name string
		w    ir.Workload
		want string
	}{
		{"cache text", clone(func(w *ir.Workload) { w.Inputs[1].KV = "paged_kv<block_size=16,kv_heads=2>" }), "no head_dim"},
		{"cache number", clone(func(w *ir.Workload) { w.Inputs[1].KV = "paged_kv<block_size=x,kv_heads=2,head_dim=32>" }), "block_size"},
		{"not paged", clone(func(w *ir.Workload) { w.Inputs[1].KV = "tensor<4xf32>" }), "want paged_kv"},
		{"scale", clone(func(w *ir.Workload) { w.Attrs["scale"] = "nan : f32" }), "attribute scale"},
		{"dtype", clone(func(w *ir.Workload) { w.Inputs[0].DType = "f16" }), "element types"},
		{"gqa", clone(func(w *ir.Workload) {
			q := w.Inputs[0]
			q.Shape = []int64{q.Shape[0], 3, q.Shape[2]}
			w.Inputs[0] = q
		}), "multiple of KV heads"},
		{"arity", clone(func(w *ir.Workload) { w.Inputs = w.Inputs[:3] }), "operands"},
	} {
		_, err := kernels.FromWorkload(c.w)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
	}
}
