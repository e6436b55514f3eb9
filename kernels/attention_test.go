package kernels_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kernels"
	"llmir/kernels/kerneltest"
	"llmir/kernels/ref"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
)

// attnShapes are the conformance shapes: one query (s = 1) at the end of
// 17 keys, odd s and t one past a tile, chunked prefill (t > s), more
// queries than keys under the causal mask (the first queries see nothing),
// head dims 64, 80 and 128, GQA 1, 4 and 8, causal and not, windows, runtime
// extents below their buckets, a peaked softmax (scale 1) and bf16.
func attnShapes() []kernels.Attention {
	return []kernels.Attention{
		{Batch: 1, Seq: 1, KVLen: 17, QHeads: 4, KVHeads: 1, HeadDim: 64, Causal: true},
		{Batch: 2, Seq: 17, QHeads: 8, KVHeads: 2, HeadDim: 64, Causal: true},
		{Batch: 1, Seq: 100, QHeads: 8, KVHeads: 1, HeadDim: 80, Causal: true, Window: 33},
		{Batch: 1, Seq: 17, KVLen: 45, QHeads: 2, KVHeads: 2, HeadDim: 128},
		{Batch: 1, Seq: 23, KVLen: 9, QHeads: 4, KVHeads: 1, HeadDim: 64, Causal: true},
		{Batch: 2, Seq: 29, QHeads: 4, KVHeads: 1, HeadDim: 80, VDim: 40, Window: 7, Scale: 1, SeqBucket: 32, BatchBucket: 4},
		{Batch: 1, Seq: 65, QHeads: 4, KVHeads: 1, HeadDim: 128, Causal: true, DType: "bf16"},
	}
}

// TestAttentionConformance builds the default and sampled schedules of
// every shape and validates them against the reference, alternating one
// and two threads.
func TestAttentionConformance(t *testing.T) {
	tg := kerneltest.CPU(t)
	for i, a := range attnShapes() {
		threads := 1 + i%2
		t.Run(a.Name(), func(t *testing.T) {
			cases := kerneltest.Run(t, tg, search.CPUHardware(tg.CPU(), threads), a, kerneltest.Options{Draws: 1, Seed: uint64(i + 1)})
			if len(cases) != 2 {
				t.Fatalf("%d cases, want default + 1 draw", len(cases))
			}
		})
	}
}

// TestAttentionEveryKnobValue checks schedules that, between them, give
// every knob each of its values (trace i sets every knob to its value i mod
// its domain's size), so that no value, such as the key tail when BK is
// not a multiple of VW·NR, is left to chance draws.
func TestAttentionEveryKnobValue(t *testing.T) {
	tg := kerneltest.CPU(t)
	a := kernels.Attention{Batch: 1, Seq: 37, KVLen: 41, QHeads: 4, KVHeads: 2, HeadDim: 80, Causal: true, Window: 19}
	hw := search.CPUHardware(tg.CPU(), 2)
	def, err := a.Def()
	if err != nil {
		t.Fatal(err)
	}
	ks := a.Knobs(hw)
	widest := 0
	for _, k := range ks {
		widest = max(widest, len(k.Values))
	}
	var traces []*schedule.Trace
	for i := range widest {
		s, err := schedule.New(def, 0)
		if err != nil {
			t.Fatal(err)
		}
		pick := map[string]int64{}
		for _, k := range ks {
			pick[k.Name] = k.Values[i%len(k.Values)]
		}
		if err := ks.Choose(s, pick); err != nil {
			t.Fatal(err)
		}
		traces = append(traces, s.Trace())
	}
	cases := kerneltest.Run(t, tg, hw, a, kerneltest.Options{Draws: 1, Traces: traces})
	if len(cases) != 2+len(traces) {
		t.Errorf("%d cases for %d traces", len(cases), len(traces))
	}
}

// TestAttentionCheckFailsWrongMask shows the suite can fail here: against
// the reference of the other mask, the kernel must be wrong_result.
func TestAttentionCheckFailsWrongMask(t *testing.T) {
	tg := kerneltest.CPU(t)
	a := kernels.Attention{Batch: 1, Seq: 17, QHeads: 4, KVHeads: 2, HeadDim: 64, Causal: true}
	kerneltest.Expect(t, tg, search.CPUHardware(tg.CPU(), 1), otherMask{a}, target.StatusWrongResult)
}

type otherMask struct{ kernels.Attention }

func (o otherMask) Reference(in [][]float64) [][]float64 {
	a := o.Attention
	a.Causal = !a.Causal
	return a.Reference(in)
}

// TestAttentionReference checks the per-KV-head split of Reference against
// kernels/ref.Attention on whole tensors.
func TestAttentionReference(t *testing.T) {
	a := kernels.Attention{Batch: 2, Seq: 5, KVLen: 9, QHeads: 6, KVHeads: 3, HeadDim: 4, VDim: 3, Causal: true, Window: 4}
	rng := rand.New(rand.NewPCG(7, 7))
	sizes := []int{2 * 5 * 6 * 4, 2 * 9 * 3 * 4, 2 * 9 * 3 * 3}
	in := make([][]float64, 3)
	f32 := make([][]float32, 3)
	for i, n := range sizes {
		in[i], f32[i] = make([]float64, n), make([]float32, n)
		for j := range n {
			f32[i][j] = float32(2*rng.Float64() - 1)
			in[i][j] = float64(f32[i][j])
		}
	}
	want, err := ref.Attention(f32[0], f32[1], f32[2], ref.AttnDims{Batch: 2, Seq: 5, KVLen: 9, QHeads: 6, KVHeads: 3, HeadDim: 4, VDim: 3},
		ref.AttnOptions{Causal: true, SlidingWindow: 4})
	if err != nil {
		t.Fatal(err)
	}
	got := a.Reference(in)[0]
	if len(got) != len(want) {
		t.Fatalf("%d outputs, want %d", len(got), len(want))
	}
	for i := range got {
		if math.Abs(got[i]-float64(want[i])) > 1e-6 {
			t.Fatalf("out[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

// TestAttentionFLOPs checks the causal and window pair counts against a
// brute-force count.
func TestAttentionFLOPs(t *testing.T) {
	for _, a := range []kernels.Attention{
		{Batch: 2, Seq: 7, QHeads: 4, KVHeads: 2, HeadDim: 8},
		{Batch: 1, Seq: 7, QHeads: 4, KVHeads: 2, HeadDim: 8, Causal: true},
		{Batch: 1, Seq: 5, KVLen: 11, QHeads: 2, KVHeads: 1, HeadDim: 8, VDim: 4, Causal: true, Window: 3},
		{Batch: 1, Seq: 9, KVLen: 4, QHeads: 1, KVHeads: 1, HeadDim: 8, Causal: true},
		{Batch: 1, Seq: 6, KVLen: 6, QHeads: 1, KVHeads: 1, HeadDim: 8, Window: 2},
	} {
		kvl := a.KVLen
		if kvl == 0 {
			kvl = a.Seq
		}
		dv := a.VDim
		if dv == 0 {
			dv = a.HeadDim
		}
		var pairs int64
		for i := range a.Seq {
			p := i + kvl - a.Seq
			for j := range kvl {
				if (!a.Causal || j <= p) && (a.Window == 0 || j > p-a.Window) {
					pairs++
				}
			}
		}
		if want := float64(a.Batch*a.QHeads*pairs) * 2 * float64(a.HeadDim+dv); a.FLOPs() != want {
			t.Errorf("%s: FLOPs %g, want %g", a.Name(), a.FLOPs(), want)
		}
	}
}

// TestAttentionFromWorkload makes the kernels of the llama-tiny (f32) and
// llama-3-8b (bf16) prefill tasks, checks what they read from the
// workloads, and runs llama-tiny's default schedule at its bucketed
// extents.
func TestAttentionFromWorkload(t *testing.T) {
	for _, c := range []struct {
		preset            string
		hq, hkv, d, scale float64
		dtype             string
		run               bool
	}{
		{"llama-tiny", 8, 2, 32, 1 / math.Sqrt(32), "f32", true},
		{"llama-3-8b", 32, 8, 128, 1 / math.Sqrt(128), "bf16", false},
	} {
		m, err := hf.ImportPreset(c.preset, hf.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tasks, err := ir.Tasks(m, nil)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for _, task := range tasks {
			if task.Workload.Group[0] != "llmir.attention" {
				continue
			}
			n++
			k, err := kernels.FromWorkload(task.Workload)
			if err != nil {
				t.Fatalf("%s: %v", c.preset, err)
			}
			a := k.(kernels.Attention)
			q := task.Workload.Inputs[0]
			if float64(a.QHeads) != c.hq || float64(a.KVHeads) != c.hkv || float64(a.HeadDim) != c.d || a.DType != c.dtype ||
				!a.Causal || a.Window != 0 || math.Abs(a.Scale-c.scale) > 1e-7 || a.Batch != q.Shape[0] || a.Seq != q.Shape[1] || a.KVLen != 0 {
				t.Errorf("%s: kernel %s scale %v from %s", c.preset, a.Name(), a.Scale, task.Workload.Name())
			}
			if k.Workload().Key() != task.Workload.Key() {
				t.Errorf("%s: kernel reports another workload", c.preset)
			}
			def, err := k.Def()
			if err != nil {
				t.Fatal(err)
			}
			if len(def.Dims) != 2 || def.Dims[0].Name != "batch" || def.Dims[1].Name != "seq" || len(k.Dims()) != 2 {
				t.Errorf("%s: dynamic dims %v, runtime %v; want batch and seq", c.preset, def.Dims, k.Dims())
			}
			if c.run {
				tg := kerneltest.CPU(t)
				kerneltest.Run(t, tg, search.CPUHardware(tg.CPU(), 2), k, kerneltest.Options{Draws: 1})
			}
		}
		if n == 0 {
			t.Fatalf("%s has no attention workloads", c.preset)
		}
	}
}

// TestAttentionWorkloadAttrs reads attributes in every form the IR prints
// and rejects malformed workloads with the reason.
func TestAttentionWorkloadAttrs(t *testing.T) {
	sig := func(s, h, d int64, dt string) ir.TensorSig {
		return ir.TensorSig{Shape: []int64{1, s, h, d}, Sym: []string{"batch", "seq", "", ""}, DType: dt}
	}
	mk := func(attrs map[string]string, edit func(w *ir.Workload)) ir.Workload {
		w := ir.Workload{
			Group:   []string{"llmir.attention"},
			Inputs:  []ir.TensorSig{sig(64, 8, 64, "f32"), sig(64, 2, 64, "f32"), sig(64, 2, 64, "f32")},
			Output:  []ir.TensorSig{sig(64, 8, 64, "f32")},
			Attrs:   attrs,
			Dynamic: map[string]int64{"batch": 1, "seq": 64},
		}
		if edit != nil {
			edit(&w)
		}
		return w
	}
	for _, c := range []struct {
		name   string
		w      ir.Workload
		scale  float64
		window int64
		causal bool
		err    string
	}{
		{name: "none", w: mk(nil, nil)},
		{name: "decimal", w: mk(map[string]string{"causal": "true", "scale": "1.2500000e-01 : f32", "sliding_window": "16 : i64"}, nil), scale: 0.125, window: 16, causal: true},
		{name: "hex", w: mk(map[string]string{"causal": "false", "scale": "0x3E000000 : f32"}, nil), scale: 0.125},
		{name: "bad bool", w: mk(map[string]string{"causal": "yes"}, nil), err: "causal"},
		{name: "bad scale", w: mk(map[string]string{"scale": "x : f32"}, nil), err: "scale"},
		{name: "bad window", w: mk(map[string]string{"sliding_window": "-3 : i64"}, nil), err: "sliding_window"},
		{name: "gqa", w: mk(nil, func(w *ir.Workload) { w.Inputs[1], w.Inputs[2] = sig(64, 3, 64, "f32"), sig(64, 3, 64, "f32") }), err: "multiple of KV heads"},
		{name: "dtype", w: mk(nil, func(w *ir.Workload) { w.Inputs[1].DType = "bf16" }), err: "one element type"},
		{name: "f16", w: mk(nil, func(w *ir.Workload) {
			for _, s := range [][]ir.TensorSig{w.Inputs, w.Output} {
				for i := range s {
					s[i].DType = "f16"
				}
			}
		}), err: "f32 or bf16"},
		{name: "rank", w: mk(nil, func(w *ir.Workload) { w.Inputs[0].Shape = []int64{64, 8, 64} }), err: "q has shape"},
		{name: "out", w: mk(nil, func(w *ir.Workload) { w.Output[0] = sig(64, 8, 32, "f32") }), err: "out"},
		{name: "arity", w: mk(nil, func(w *ir.Workload) { w.Inputs = w.Inputs[:2] }), err: "operands"},
	} {
		k, err := kernels.FromWorkload(c.w)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one naming %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		a := k.(kernels.Attention)
		if a.Scale != c.scale || a.Window != c.window || a.Causal != c.causal {
			t.Errorf("%s: scale %v window %d causal %v", c.name, a.Scale, a.Window, a.Causal)
		}
	}
}

// TestAttentionKnobsChangeCode checks that every knob reaches the C code
// and that a trace of another design space is refused.
func TestAttentionKnobsChangeCode(t *testing.T) {
	a := kernels.Attention{Batch: 1, Seq: 33, QHeads: 4, KVHeads: 1, HeadDim: 64, Causal: true}
	hw := kernels.Hardware{VectorBits: 512, Threads: 2}
	def, err := a.Def()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := search.DefaultSchedule(a, hw)
	if err != nil {
		t.Fatal(err)
	}
	src, err := a.EmitC(ds, hw, "entry")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"int entry(void *const *bufs, const int64_t *dims)", "#define BQ 16L", "#define BK 64L", "#define VW 16L", "s7_1 += q * k1", "o7_1 += p * v1", "_Thread_local", "#pragma omp parallel"} {
		if !strings.Contains(src, want) {
			t.Errorf("default source lacks %q", want)
		}
	}
	seen := map[string]bool{src: true}
	for step, in := range ds.Trace().Insts {
		for v := range in.Ints {
			if int64(v) == in.Decision[0] {
				continue
			}
			tr, err := ds.Trace().WithDecision(step, []int64{int64(v)})
			if err != nil {
				t.Fatal(err)
			}
			s, err := schedule.Replay(def, tr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.EmitC(s, hw, "entry")
			if err != nil {
				t.Fatalf("step %d value %d: %v", step, v, err)
			}
			if seen[got] {
				t.Errorf("step %d value %d: same code as another schedule", step, v)
			}
			seen[got] = true
		}
	}
	other, _ := schedule.New(def, 1)
	if err := (kernels.Knobs{{"BQ", []int64{8, 16}}}).Sample(other); err != nil {
		t.Fatal(err)
	}
	if _, err := a.EmitC(other, hw, "entry"); err == nil {
		t.Error("EmitC accepted a trace of another design space")
	}
}
