package kernels_test

import (
	"context"
	"flag"
	"fmt"
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
	"llmir/target/cpu"
)

// TestFusedConformance runs every fused kernel through the conformance
// suite at odd shapes (runtime M below its bucket, N and K not multiples of
// the vector width, K below it), with the decode (GEMV) and prefill (GEMM)
// templates of the schedule-language kernels, alternating one and two
// threads: the default schedule and one random draw each, so the whole test
// stays at 16 builds.
func TestFusedConformance(t *testing.T) {
	tg := kerneltest.CPU(t)
	ks := []kernels.Kernel{
		kernels.LinearAdd{Linear: kernels.Linear{M: 5, N: 17, K: 48, MBucket: 8}},
		kernels.LinearAdd{Linear: kernels.Linear{M: 19, N: 37, K: 29, MBucket: 32}},
		kernels.LinearBias{Linear: kernels.Linear{M: 3, N: 19, K: 40, MBucket: 4}},
		kernels.LinearBias{Linear: kernels.Linear{M: 23, N: 35, K: 27, MBucket: 32}},
		kernels.NormLinear{Linear: kernels.Linear{M: 3, N: 33, K: 13}, Eps: 1e-5},
		kernels.NormLinear{Linear: kernels.Linear{M: 17, N: 37, K: 29}, Eps: 1e-6},
		kernels.GateUpSiLU{M: 3, N: 33, K: 13},
		kernels.GateUpSiLU{M: 19, N: 37, K: 29, MBucket: 32},
		kernels.RopeAppendKV{Tokens: 3, TokensBucket: 4, K: 13, KVHeads: 3, HeadDim: 6, BlockSize: 5, Config: ref.RopeConfig{Theta: 500000, Style: ref.GPTJ, RotaryDim: 4}},
		kernels.RopeAppendKV{Tokens: 5, K: 21, KVHeads: 2, HeadDim: 10, BlockSize: 2, Config: ref.RopeConfig{Theta: 500000, Style: ref.Neox,
			Scaling: &ref.RopeScaling{Type: "llama3", Factor: 8, OriginalMaxPositions: 8192, LowFreqFactor: 1, HighFreqFactor: 4}}},
	}
	for i, k := range ks {
		t.Run(k.Name(), func(t *testing.T) {
			kerneltest.Run(t, tg, search.CPUHardware(tg.CPU(), 1+i%2), k, kerneltest.Options{Draws: 1, Seed: uint64(i + 1)})
		})
	}
}

// TestFusedSchedulesInterpret runs the schedule-language fused kernels'
// default and sampled schedules in the nest interpreter (no gcc needed)
// against their references, for the GEMV and the GEMM template.
func TestFusedSchedulesInterpret(t *testing.T) {
	hw := kernels.Hardware{VectorBits: 512, Threads: 2}
	ks := []kernels.Kernel{
		kernels.LinearAdd{Linear: kernels.Linear{M: 3, N: 33, K: 16}},
		kernels.LinearAdd{Linear: kernels.Linear{M: 19, N: 37, K: 29, MBucket: 32}},
		kernels.LinearBias{Linear: kernels.Linear{M: 3, N: 33, K: 16}},
		kernels.LinearBias{Linear: kernels.Linear{M: 19, N: 37, K: 29, MBucket: 32}},
		kernels.NormLinear{Linear: kernels.Linear{M: 3, N: 33, K: 16}, Eps: 1e-5},
		kernels.NormLinear{Linear: kernels.Linear{M: 19, N: 37, K: 29, MBucket: 32}, Eps: 1e-5},
	}
	for _, k := range ks {
		t.Run(k.Name(), func(t *testing.T) {
			def, err := k.Def()
			if err != nil {
				t.Fatal(err)
			}
			s, err := schedule.New(def, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := k.Default(s, hw); err != nil {
				t.Fatalf("default: %v", err)
			}
			if e := interpret(t, k, s, 7); e > 1e-5 {
				t.Errorf("default: relative error %g", e)
			}
			for seed := uint64(1); seed <= 4; seed++ {
				s, _ := schedule.New(def, seed)
				if err := k.Space(s, hw); err != nil {
					t.Fatalf("space %d: %v", seed, err)
				}
				if e := interpret(t, k, s, seed); e > 1e-5 {
					t.Errorf("seed %d: relative error %g", seed, e)
				}
				// The trace replays to the same nest: epilogue and prologue
				// placement are ordinary trace steps.
				r, err := schedule.Replay(def, s.Trace())
				if err != nil {
					t.Fatalf("replay seed %d: %v", seed, err)
				}
				if r.Nest().String() != s.Nest().String() {
					t.Errorf("replay of seed %d differs", seed)
				}
			}
		})
	}
}

// TestFusedFromPartition: every fused workload ir.Partition produces for
// the Llama presets (in f32) has a kernel, which keeps the workload's key
// and has a valid definition. (TestFusedConformance builds and validates
// the same kernels at odd shapes.)
func TestFusedFromPartition(t *testing.T) {
	patterns := map[string]bool{}
	for _, p := range []string{"llama-tiny", "llama-3-8b"} {
		cfg, err := hf.PresetConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		// The fused kernels are f32, as the plain linear is: the bf16
		// checkpoint of llama-3-8b is imported as f32 here.
		cfg.TorchDtype = "float32"
		m, err := hf.Import(cfg, p, hf.Options{})
		if err != nil {
			t.Fatal(err)
		}
		groups, err := ir.Partition(m, nil)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, g := range groups {
			if g.Pattern == "" {
				continue
			}
			patterns[g.Pattern] = true
			for _, w := range g.Alternatives[0].Workloads {
				if seen[w.Key()] {
					continue
				}
				seen[w.Key()] = true
				k, err := kernels.FromWorkload(w)
				if err != nil {
					t.Fatalf("%s %s: %v", p, w.Name(), err)
				}
				if k.Workload().Key() != w.Key() {
					t.Errorf("%s: kernel %s changed the workload key", w.Name(), k.Name())
				}
				if _, err := k.Def(); err != nil {
					t.Errorf("%s: %v", k.Name(), err)
				}
			}
		}
	}
	if len(patterns) != 4 {
		t.Errorf("patterns seen %v, want all four", patterns)
	}
}

// TestFusedRejectsBadWorkloads: malformed fused workloads are errors that
// say what is wrong, never panics.
func TestFusedRejectsBadWorkloads(t *testing.T) {
	f32 := func(s ...int64) ir.TensorSig { return ir.TensorSig{Shape: s, DType: "f32"} }
	kv := ir.TensorSig{DType: "f32", KV: "paged_kv<block_size=4,kv_heads=2,head_dim=8>"}
	for _, c := range []struct {
		name string
		w    ir.Workload
		want string
	}{
		{"linear+add residual", ir.Workload{Group: []string{"llmir.linear", "llmir.add"},
			Inputs: []ir.TensorSig{f32(2, 8), f32(4, 8), f32(2, 5)}, Output: []ir.TensorSig{f32(2, 4)}}, "residual"},
		{"linear+add kn", ir.Workload{Group: []string{"llmir.linear", "llmir.add"},
			Inputs: []ir.TensorSig{f32(2, 8), f32(4, 8), f32(2, 4)}, Output: []ir.TensorSig{f32(2, 4)}, Attrs: map[string]string{"weight_layout": `"kn"`}}, "weight_layout"},
		{"norm without eps", ir.Workload{Group: []string{"llmir.rms_norm", "llmir.linear"},
			Inputs: []ir.TensorSig{f32(2, 8), f32(8), f32(4, 8)}, Output: []ir.TensorSig{f32(2, 4)}}, "eps"},
		{"gate/up mismatch", ir.Workload{Group: []string{"llmir.linear", "llmir.linear", "llmir.silu", "llmir.mul"},
			Inputs: []ir.TensorSig{f32(2, 8), f32(4, 8), f32(5, 8)}, Output: []ir.TensorSig{f32(2, 4)}}, "up weight"},
		{"gate/up bf16", ir.Workload{Group: []string{"llmir.linear", "llmir.linear", "llmir.silu", "llmir.mul"},
			Inputs: []ir.TensorSig{f32(2, 8), {Shape: []int64{4, 8}, DType: "bf16"}, f32(4, 8)}, Output: []ir.TensorSig{f32(2, 4)}}, "dtype"},
		{"rope wrong w", ir.Workload{Group: []string{"llmir.linear", "llmir.rope", "llmir.append_kv"},
			Inputs: []ir.TensorSig{f32(2, 8), f32(15, 8), {Shape: []int64{2}, DType: "i32"}, kv, f32(2, 2, 8), {Shape: []int64{2}, DType: "i64"}},
			Output: []ir.TensorSig{kv}, Attrs: map[string]string{"theta": "1.0e+04 : f32"}}, "kv_heads·head_dim"},
		{"rope dynamic", ir.Workload{Group: []string{"llmir.linear", "llmir.rope", "llmir.append_kv"},
			Inputs: []ir.TensorSig{f32(2, 8), f32(16, 8), {Shape: []int64{2}, DType: "i32"}, kv, f32(2, 2, 8), {Shape: []int64{2}, DType: "i64"}},
			Output: []ir.TensorSig{kv}, Attrs: map[string]string{"theta": "1.0e+04 : f32", "scaling": `{factor = 2.0 : f32, type = "dynamic"}`}}, "dynamic"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := kernels.FromWorkload(c.w)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("FromWorkload = %v, want an error mentioning %q", err, c.want)
			}
		})
	}
}

// TestFusedCheckFailsWrongRope shows the suite can fail for the fused rope
// kernel: against a reference with the other pairing style, the (correct)
// kernel must come back wrong_result.
func TestFusedCheckFailsWrongRope(t *testing.T) {
	tg := kerneltest.CPU(t)
	k := kernels.RopeAppendKV{Tokens: 2, K: 16, KVHeads: 1, HeadDim: 8, BlockSize: 4, Config: ref.RopeConfig{Theta: 10000, Style: ref.Neox}}
	kerneltest.Expect(t, tg, search.CPUHardware(tg.CPU(), 1), gptjReference{k}, target.StatusWrongResult)
}

// gptjReference is the neox kernel checked against the gptj reference.
type gptjReference struct{ kernels.RopeAppendKV }

func (g gptjReference) Reference(in [][]float64) [][]float64 {
	k := g.RopeAppendKV
	k.Config.Style = ref.GPTJ
	return k.Reference(in)
}

var (
	fusedLlama   = flag.Bool("fused.llama", false, "BenchmarkFused: Llama-3-8B decode shapes (f32) instead of llama-tiny's")
	fusedThreads = flag.Int("fused.threads", 1, "BenchmarkFused: thread count")
)

// BenchmarkFused measures, per pattern, the fused kernel's rule-based
// default against the default of the linear(s) it replaces, at decode
// shapes (M = 1), each a median of the harness's timing protocol. The
// unfused side counts only the linears (not the norm, rope, append, silu,
// mul or add kernels), so unfused/fused is a lower bound of what fusion
// saves; below 1 means the fused default is slower than the bare linear.
//
//	go test ./kernels -run '^$' -bench BenchmarkFused -benchtime 1x -args -fused.llama -fused.threads 1
func BenchmarkFused(b *testing.B) {
	tg := kerneltest.CPU(b)
	ctx := context.Background()
	threads := max(*fusedThreads, 1)
	hw := search.CPUHardware(tg.CPU(), threads)
	// llama-tiny: hidden 256, intermediate 688, 2 KV heads of 32;
	// llama-3-8b: 4096, 14336, 8 KV heads of 128.
	h, inter, kvh, d, model := int64(256), int64(688), int64(2), int64(32), "llama-tiny"
	if *fusedLlama {
		h, inter, kvh, d, model = 4096, 14336, 8, 128, "llama-3-8b"
	}
	rope := ref.RopeConfig{Theta: 500000, Style: ref.Neox}
	for _, c := range []struct {
		name    string
		fused   kernels.Kernel
		linear  kernels.Linear
		linears int
	}{
		{"linear+add", kernels.LinearAdd{Linear: kernels.Linear{M: 1, N: h, K: h}}, kernels.Linear{M: 1, N: h, K: h}, 1},
		{"rms_norm+linear", kernels.NormLinear{Linear: kernels.Linear{M: 1, N: h, K: h}, Eps: 1e-5}, kernels.Linear{M: 1, N: h, K: h}, 1},
		{"gate_up+silu_mul", kernels.GateUpSiLU{M: 1, N: inter, K: h}, kernels.Linear{M: 1, N: inter, K: h}, 2},
		{"linear+rope+append_kv", kernels.RopeAppendKV{Tokens: 1, K: h, KVHeads: kvh, HeadDim: d, BlockSize: 16, Config: rope}, kernels.Linear{M: 1, N: kvh * d, K: h}, 1},
	} {
		b.Run(fmt.Sprintf("%s/%s/threads=%d", c.name, model, threads), func(b *testing.B) {
			var fused, unfused float64
			for b.Loop() {
				fused = fusedMedian(ctx, b, tg, hw, c.fused)
				unfused = float64(c.linears) * fusedMedian(ctx, b, tg, hw, c.linear)
			}
			b.ReportMetric(fused*1e6, "fused-µs")
			b.ReportMetric(unfused*1e6, "linears-µs")
			b.ReportMetric(unfused/fused, "linears/fused")
		})
	}
}

// fusedMedian builds, validates and times k's default schedule.
func fusedMedian(ctx context.Context, b *testing.B, tg *cpu.Target, hw kernels.Hardware, k kernels.Kernel) float64 {
	b.Helper()
	s, err := search.DefaultSchedule(k, hw)
	if err != nil {
		b.Fatal(err)
	}
	p, err := search.NewProblem(k, 1)
	if err != nil {
		b.Fatal(err)
	}
	c, err := search.NewCandidate("default", k, s, hw)
	if err != nil {
		b.Fatal(err)
	}
	ms, err := target.Measure(ctx, tg, p, []target.Candidate{c}, target.RunOptions{})
	if err != nil {
		b.Fatal(err)
	}
	m := ms["default"]
	if m.Status != target.StatusOK {
		b.Fatalf("%s: %s: %s", k.Name(), m.Status, m.Error)
	}
	return m.Median
}

// TestFusedReferencesMatchIREval checks each fused kernel's reference
// against kernels/ref's evaluator running the unfused ops of the same group
// written as IR, on the same seeded inputs.
func TestFusedReferencesMatchIREval(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	rnd := func(n int) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(rng.Float64()*2 - 1)
		}
		return out
	}
	f64 := func(x []float32) []float64 {
		out := make([]float64, len(x))
		for i, v := range x {
			out[i] = float64(v)
		}
		return out
	}
	const head = "func.func @f("
	x, r, g, w, wu := rnd(3*8), rnd(3*5), rnd(8), rnd(5*8), rnd(5*8)
	tensor := func(shape []int, data []float32) *ref.Tensor { return ref.Floats(ir.F32, shape, data) }
	for _, c := range []struct {
		name   string
		src    string
		args   []ref.Value
		params ref.MapParams
		k      kernels.Kernel
		in     [][]float64
	}{
		{"linear+add", `%x: tensor<3x8xf32>, %r: tensor<3x5xf32>) -> tensor<3x5xf32> {
  %w = "llmir.param"() {name = "w"} : () -> tensor<5x8xf32>
  %0 = "llmir.linear"(%x, %w) : (tensor<3x8xf32>, tensor<5x8xf32>) -> tensor<3x5xf32>
  %1 = "llmir.add"(%r, %0) : (tensor<3x5xf32>, tensor<3x5xf32>) -> tensor<3x5xf32>
  return %1 : tensor<3x5xf32>
}`, []ref.Value{tensor([]int{3, 8}, x), tensor([]int{3, 5}, r)}, ref.MapParams{"w": tensor([]int{5, 8}, w)},
			kernels.LinearAdd{Linear: kernels.Linear{M: 3, N: 5, K: 8}}, [][]float64{f64(x), f64(w), f64(r)}},
		{"linear with bias", `%x: tensor<3x8xf32>, %b: tensor<5xf32>) -> tensor<3x5xf32> {
  %w = "llmir.param"() {name = "w"} : () -> tensor<5x8xf32>
  %0 = "llmir.linear"(%x, %w, %b) : (tensor<3x8xf32>, tensor<5x8xf32>, tensor<5xf32>) -> tensor<3x5xf32>
  return %0 : tensor<3x5xf32>
}`, []ref.Value{tensor([]int{3, 8}, x), tensor([]int{5}, g[:5])}, ref.MapParams{"w": tensor([]int{5, 8}, w)},
			kernels.LinearBias{Linear: kernels.Linear{M: 3, N: 5, K: 8}}, [][]float64{f64(x), f64(w), f64(g[:5])}},
		{"rms_norm+linear", `%x: tensor<3x8xf32>, %g: tensor<8xf32>) -> tensor<3x5xf32> {
  %w = "llmir.param"() {name = "w"} : () -> tensor<5x8xf32>
  %0 = "llmir.rms_norm"(%x, %g) {eps = 1.0e-05 : f32} : (tensor<3x8xf32>, tensor<8xf32>) -> tensor<3x8xf32>
  %1 = "llmir.linear"(%0, %w) : (tensor<3x8xf32>, tensor<5x8xf32>) -> tensor<3x5xf32>
  return %1 : tensor<3x5xf32>
}`, []ref.Value{tensor([]int{3, 8}, x), tensor([]int{8}, g)}, ref.MapParams{"w": tensor([]int{5, 8}, w)},
			kernels.NormLinear{Linear: kernels.Linear{M: 3, N: 5, K: 8}, Eps: float64(float32(1e-5))}, [][]float64{f64(x), f64(g), f64(w)}},
		{"gate_up+silu_mul", `%x: tensor<3x8xf32>) -> tensor<3x5xf32> {
  %wg = "llmir.param"() {name = "wg"} : () -> tensor<5x8xf32>
  %wu = "llmir.param"() {name = "wu"} : () -> tensor<5x8xf32>
  %0 = "llmir.linear"(%x, %wg) : (tensor<3x8xf32>, tensor<5x8xf32>) -> tensor<3x5xf32>
  %1 = "llmir.linear"(%x, %wu) : (tensor<3x8xf32>, tensor<5x8xf32>) -> tensor<3x5xf32>
  %2 = "llmir.silu"(%0) : (tensor<3x5xf32>) -> tensor<3x5xf32>
  %3 = "llmir.mul"(%2, %1) : (tensor<3x5xf32>, tensor<3x5xf32>) -> tensor<3x5xf32>
  return %3 : tensor<3x5xf32>
}`, []ref.Value{tensor([]int{3, 8}, x)}, ref.MapParams{"wg": tensor([]int{5, 8}, w), "wu": tensor([]int{5, 8}, wu)},
			kernels.GateUpSiLU{M: 3, N: 5, K: 8}, [][]float64{f64(x), f64(w), f64(wu)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := ir.ParseString(c.name, head+c.src)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ref.Eval(context.Background(), m, "f", c.args, c.params)
			if err != nil {
				t.Fatal(err)
			}
			want := c.k.Reference(c.in)[0]
			out := got[0].(*ref.Tensor).F
			if len(out) != len(want) {
				t.Fatalf("%d outputs, want %d", len(out), len(want))
			}
			for i := range out {
				if d := math.Abs(float64(out[i]) - want[i]); d > 1e-6*(1+math.Abs(want[i])) {
					t.Fatalf("element %d: IR evaluator %g, fused reference %g", i, out[i], want[i])
				}
			}
		})
	}
	// linear → rope → append_kv: the evaluator's pool after the append holds
	// exactly the fused reference's non-NaN elements.
	t.Run("linear+rope+append_kv", func(t *testing.T) {
		const kvt = "!llmir.paged_kv<block_size = 2, kv_heads = 1, head_dim = 4, elem = f32, layers = 1>"
		src := `%x: tensor<3x8xf32>, %pos: tensor<3xi32>, %cache: ` + kvt + `, %v: tensor<3x1x4xf32>, %slots: tensor<3xi64>) -> ` + kvt + ` {
  %w = "llmir.param"() {name = "w"} : () -> tensor<4x8xf32>
  %0 = "llmir.linear"(%x, %w) : (tensor<3x8xf32>, tensor<4x8xf32>) -> tensor<3x4xf32>
  %1 = "llmir.reshape"(%0) : (tensor<3x4xf32>) -> tensor<3x1x4xf32>
  %2 = "llmir.rope"(%1, %pos) {style = "gptj", theta = 1.0e+04 : f32} : (tensor<3x1x4xf32>, tensor<3xi32>) -> tensor<3x1x4xf32>
  %3 = "llmir.append_kv"(%cache, %2, %v, %slots) {layer = 0 : i64} : (` + kvt + `, tensor<3x1x4xf32>, tensor<3x1x4xf32>, tensor<3xi64>) -> ` + kvt + `
  return %3 : ` + kvt + `
}`
		m, err := ir.ParseString("rope", head+src)
		if err != nil {
			t.Fatal(err)
		}
		kt := m.Funcs[0].Args[2].Type.(ir.PagedKVType)
		pool, err := ref.PoolFor(kt, 3)
		if err != nil {
			t.Fatal(err)
		}
		w4, v := rnd(4*8), rnd(3*4)
		pos, slots := []int64{5, 700, 3}, []int64{4, 1, -1}
		args := []ref.Value{tensor([]int{3, 8}, x), ref.Ints(ir.I32, []int{3}, pos), pool, tensor([]int{3, 1, 4}, v), ref.Ints(ir.I64, []int{3}, slots)}
		got, err := ref.Eval(context.Background(), m, "f", args, ref.MapParams{"w": tensor([]int{4, 8}, w4)})
		if err != nil {
			t.Fatal(err)
		}
		p := got[0].(*ref.Pool)
		k := kernels.RopeAppendKV{Tokens: 3, K: 8, KVHeads: 1, HeadDim: 4, BlockSize: 2, NumBlocks: 3, Config: ref.RopeConfig{Theta: float64(float32(1e4)), Style: ref.GPTJ}}
		words := []float64{4, 0, 1, 0, -1, -1}
		want := k.Reference([][]float64{f64(x), f64(w4), {5, 700, 3}, nil, f64(v), words})[0]
		if len(want)*4 != len(p.Bytes) {
			t.Fatalf("reference covers %d floats, the pool %d bytes", len(want), len(p.Bytes))
		}
		written := 0
		for i, wv := range want {
			var bits uint32
			for b := range 4 {
				bits |= uint32(p.Bytes[4*i+b]) << (8 * b)
			}
			gv := float64(math.Float32frombits(bits))
			if math.IsNaN(wv) {
				if gv != 0 {
					t.Fatalf("element %d: the evaluator wrote %g where the reference says untouched", i, gv)
				}
				continue
			}
			written++
			if math.Abs(gv-wv) > 1e-6*(1+math.Abs(wv)) {
				t.Fatalf("element %d: IR evaluator %g, fused reference %g", i, gv, wv)
			}
		}
		if written != 2*2*4 {
			t.Errorf("%d elements written, want k and v of 2 tokens × 4", written)
		}
	})
}
