package cudakernels

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/kernels"
	"llmir/kernels/ref"
	"llmir/schedule"
	"llmir/search"
	"llmir/target/cuda"
)

var llama3Rope = ref.RopeConfig{Theta: 500000, Style: ref.Neox, Scaling: &ref.RopeScaling{
	Type: "llama3", Factor: 8, OriginalMaxPositions: 8192, LowFreqFactor: 1, HighFreqFactor: 4}}

var gptjRope = ref.RopeConfig{Theta: 10000, Style: ref.GPTJ, RotaryDim: 32}

// TestRopeGolden pins the default sources of the rope and append_kv
// kernels (go test -update rewrites them).
func TestRopeGolden(t *testing.T) {
	for _, g := range []struct {
		file string
		k    Kernel
	}{
		{"rope_llama3_decode.cu", Rope{Tokens: 1, Heads: 32, HeadDim: 128, Config: llama3Rope}},
		{"rope_gptj_rotary.cu", Rope{Tokens: 5, Heads: 3, HeadDim: 64, Config: gptjRope}},
		{"append_kv_decode.cu", AppendKV{Tokens: 32, KVHeads: 8, HeadDim: 128, BlockSize: 16}},
		{"append_kv_prefill.cu", AppendKV{Tokens: 512, KVHeads: 8, HeadDim: 128, BlockSize: 16}},
	} {
		t.Run(g.file, func(t *testing.T) {
			src, err := g.k.EmitCUDA(mustDefault(t, g.k), cuda.H100, Entry)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, g.file, src)
			if !strings.Contains(src, "int "+Entry+"(void *const *bufs, const int64_t *dims)") {
				t.Errorf("no entry %s", Entry)
			}
		})
	}
}

// TestRopeFrequencies: the source carries ref.InvFreq's frequencies
// exactly (llama3 scaling changes the low ones) and the yarn attention
// factor.
func TestRopeFrequencies(t *testing.T) {
	yarn := ref.RopeConfig{Theta: 10000, Style: ref.Neox, Scaling: &ref.RopeScaling{Type: "yarn", Factor: 4, OriginalMaxPositions: 4096}}
	for _, c := range []ref.RopeConfig{llama3Rope, gptjRope, yarn} {
		r := Rope{Tokens: 3, Heads: 4, HeadDim: 64, Config: c}
		src, err := r.EmitCUDA(mustDefault(t, r), cuda.H100, Entry)
		if err != nil {
			t.Fatal(err)
		}
		freq, att, err := ref.InvFreq(c, int(r.rotary()), 1)
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range freq {
			if !strings.Contains(src, "  "+cDouble(f)) {
				t.Fatalf("%s: frequency %d (%x) missing", r.Name(), i, f)
			}
		}
		if !strings.Contains(src, "ATT = "+cF32(att)+";") {
			t.Errorf("%s: attention factor %g missing", r.Name(), att)
		}
		if c.Scaling != nil && c.Scaling.Type == "yarn" && att == 1 {
			t.Errorf("yarn without an attention factor: the test shape does not exercise it")
		}
	}
}

// TestRopeSpaces: on odd shapes every sampled point and every default is
// one the generator accepts (no refused point ever reaches nvcc), the
// predicate does refuse somewhere, and the sampling is deterministic.
func TestRopeSpaces(t *testing.T) {
	hw := Hardware(cuda.H100)
	for _, k := range []Kernel{
		Rope{Tokens: 1, Heads: 32, HeadDim: 128, Config: llama3Rope},
		Rope{Tokens: 7, Heads: 5, HeadDim: 64, Config: ref.RopeConfig{Theta: 10000}},
		Rope{Tokens: 3, Heads: 3, HeadDim: 64, Config: gptjRope},
		Rope{Tokens: 2, Heads: 1, HeadDim: 12, Config: ref.RopeConfig{Theta: 10000, RotaryDim: 4}},
		AppendKV{Tokens: 1, KVHeads: 8, HeadDim: 128, BlockSize: 16},
		AppendKV{Tokens: 13, KVHeads: 3, HeadDim: 64, BlockSize: 7},
		AppendKV{Tokens: 5, KVHeads: 1, HeadDim: 6, BlockSize: 4},
	} {
		t.Run(k.Name(), func(t *testing.T) {
			valid, total, err := SpaceSize(k, hw)
			if err != nil || valid < 1 || valid >= total {
				t.Fatalf("space %d of %d valid (%v): want some but not all", valid, total, err)
			}
			if _, err := k.EmitCUDA(mustDefault(t, k), cuda.H100, Entry); err != nil {
				t.Fatalf("default: %v", err)
			}
			seen := map[string]bool{}
			for seed := range uint64(30) {
				s, err := search.SampleSchedule(k, hw, seed)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := k.EmitCUDA(s, cuda.H100, Entry); err != nil {
					t.Fatalf("seed %d: sampled a refused point: %v", seed, err)
				}
				again, _ := search.SampleSchedule(k, hw, seed)
				a, _ := search.TraceKey(s)
				b, _ := search.TraceKey(again)
				if string(a) != string(b) {
					t.Fatalf("seed %d: two draws differ", seed)
				}
				seen[string(a)] = true
			}
			if len(seen) < min(valid, 5) {
				t.Errorf("30 seeds gave %d distinct points of %d", len(seen), valid)
			}
		})
	}
}

// TestRopeRefusedMutation: a trace mutated to a refused point replays (the
// schedule language does not know the predicate) but Valid refuses it and
// the generator never prints it.
func TestRopeRefusedMutation(t *testing.T) {
	hw := Hardware(cuda.H100)
	a := AppendKV{Tokens: 1, KVHeads: 1, HeadDim: 6, BlockSize: 4} // rows of 6: vec 4 and 8 refused
	s := mustDefault(t, a)
	if err := a.Valid(s, hw); err != nil {
		t.Fatal(err)
	}
	tr, err := s.Trace().WithDecision(2, []int64{0}) // vec 8
	if err != nil {
		t.Fatal(err)
	}
	def, _ := a.Def()
	m, err := schedule.Replay(def, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Valid(m, hw); !errors.Is(err, kernels.ErrInvalidKnobs) {
		t.Errorf("Valid of vec 8 on rows of 6: %v", err)
	}
	if _, err := a.EmitCUDA(m, cuda.H100, Entry); err == nil {
		t.Error("the generator printed a refused point")
	}
}

// TestCheckedSpaces: wrapped kernels whose generators refuse points by
// their own rules (a vector that does not divide H, shared memory past 48
// KiB) sample only accepted points, and Valid reports refused ones.
func TestCheckedSpaces(t *testing.T) {
	hw := Hardware(cuda.H100)
	for _, k := range []Kernel{
		Pointwise{Op: OpMul, M: 1, H: 6},
		RMSNorm{M: 1, H: 130},
		PagedAttention{Batch: 3, QHeads: 4, KVHeads: 4, HeadDim: 64, BlockSize: 7, Context: 100, Ragged: true},
		GEMV{M: 3, N: 257, K: 4104},
	} {
		t.Run(k.Name(), func(t *testing.T) {
			c := Checked(k)
			if Unwrap(c).Name() != k.Name() || c.Workload().Key() != k.Workload().Key() {
				t.Fatal("Checked changed the kernel's identity")
			}
			valid, total, err := SpaceSize(c, hw)
			if err != nil || valid < 1 || valid > total {
				t.Fatalf("space %d of %d (%v)", valid, total, err)
			}
			refusedRaw := 0
			for seed := range uint64(40) {
				s, err := search.SampleSchedule(c, hw, seed)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := k.EmitCUDA(s, cuda.H100, Entry); err != nil {
					t.Fatalf("seed %d: checked space sampled a refused point: %v", seed, err)
				}
				if err := c.(kernels.Validator).Valid(s, hw); err != nil {
					t.Fatalf("seed %d: Valid refuses a sampled point: %v", seed, err)
				}
				raw, err := search.SampleSchedule(k, hw, seed)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := k.EmitCUDA(raw, cuda.H100, Entry); err != nil {
					refusedRaw++
					if err := c.(kernels.Validator).Valid(raw, hw); !errors.Is(err, kernels.ErrInvalidKnobs) {
						t.Errorf("seed %d: Valid of a refused point: %v", seed, err)
					}
				}
			}
			if valid < total && refusedRaw == 0 {
				t.Logf("%d of %d points refused, none drawn by 40 raw samples", total-valid, total)
			}
		})
	}
}

// TestRopeAppendFromWorkload: llama-3-8b's rope (q and k) and append_kv
// map to these kernels with the model's theta (Llama 3 has no scaling;
// the llama3 scaling is pinned by the golden and frequency tests); other
// dtypes and dynamic scaling have no CUDA kernel.
func TestRopeAppendFromWorkload(t *testing.T) {
	var ropes, appends int
	for _, task := range llamaTasks(t, map[string]int64{"batch": 4}) {
		k, err := FromWorkload(task.Workload)
		switch strings.Join(task.Workload.Group, "+") {
		case "llmir.rope":
			if err != nil {
				t.Fatal(err)
			}
			r := Unwrap(k).(Rope)
			if r.HeadDim != 128 || (r.Heads != 32 && r.Heads != 8) || r.Config.Theta != 500000 || r.gptj() || r.rotary() != 128 {
				t.Errorf("%s: %+v", task.Workload.Name(), r)
			}
			ropes++
		case "llmir.append_kv":
			if err != nil {
				t.Fatal(err)
			}
			a := Unwrap(k).(AppendKV)
			if a.KVHeads != 8 || a.HeadDim != 128 || a.BlockSize != 16 {
				t.Errorf("%s: %+v", task.Workload.Name(), a)
			}
			appends++
		default:
			continue
		}
		if k.Workload().Key() != task.Workload.Key() {
			t.Errorf("%s answers with another workload", k.Name())
		}
		if _, ok := k.(kernels.Validator); !ok {
			t.Errorf("%s: no Validator through the wrapper", k.Name())
		}
	}
	if ropes < 2 || appends < 1 {
		t.Errorf("%d rope and %d append_kv workloads, want q and k ropes and an append", ropes, appends)
	}
	rope := func(dt string, attrs map[string]string) ir.Workload {
		return ir.Workload{Group: []string{"llmir.rope"}, Inputs: []ir.TensorSig{sig(dt, 2, 4, 64), sig("i32", 2)},
			Output: []ir.TensorSig{sig(dt, 2, 4, 64)}, Attrs: attrs}
	}
	kv := ir.TensorSig{KV: "paged_kv<block_size=16,kv_heads=4,head_dim=64>", DType: "f32"}
	for _, tc := range []struct {
		name     string
		w        ir.Workload
		noKernel bool
		want     string
	}{
		{"f32 rope", rope("f32", map[string]string{"theta": "10000.0 : f32"}), true, "dtype f32"},
		{"dynamic", rope("bf16", map[string]string{"theta": "10000.0 : f32",
			"scaling": `{type = "dynamic", factor = 2.0 : f32, original_max_position_embeddings = 2048 : i64}`}), true, "dynamic"},
		{"no theta", rope("bf16", nil), false, "theta"},
		{"f32 append", ir.Workload{Group: []string{"llmir.append_kv"}, Inputs: []ir.TensorSig{kv, sig("f32", 3, 4, 64), sig("f32", 3, 4, 64), sig("i64", 3)},
			Output: []ir.TensorSig{kv}}, true, "dtype f32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromWorkload(tc.w)
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, kernels.ErrNoKernel) != tc.noKernel {
				t.Errorf("err = %v, want one containing %q (ErrNoKernel: %v)", err, tc.want, tc.noKernel)
			}
		})
	}
}

// TestRopeOracle: the reference the GPU is validated against is
// ref.Rope's rotation (checked here on one element by hand) and untouched
// cache slots stay NaN in append_kv's.
func TestRopeOracle(t *testing.T) {
	r := Rope{Tokens: 2, Heads: 3, HeadDim: 8, Config: ref.RopeConfig{Theta: 10000}}
	p, err := search.NewProblem(r, 5)
	if err != nil {
		t.Fatal(err)
	}
	in := p.Inputs()
	want, err := p.Expected()
	if err != nil {
		t.Fatal(err)
	}
	// token 1, head 2, pair 1 (dims 1 and 5): angle pos·10000^(−2/8).
	pos := in[1][1]
	th := pos * math.Pow(10000, -2.0/8)
	x := in[0][(1*3+2)*8:]
	got := want[0][(1*3+2)*8+1]
	if exp := x[1]*math.Cos(th) - x[5]*math.Sin(th); math.Abs(got-exp) > 1e-9 {
		t.Errorf("rotated element %g, want %g", got, exp)
	}
	a := AppendKV{Tokens: 3, KVHeads: 2, HeadDim: 4, BlockSize: 2}
	p, err = search.NewProblem(a, 5)
	if err != nil {
		t.Fatal(err)
	}
	want, err = p.Expected()
	if err != nil {
		t.Fatal(err)
	}
	written := 0
	for _, v := range want[0] {
		if !math.IsNaN(v) {
			written++
		}
	}
	// Two tokens written (the third is padding), K and V rows of 8.
	if written != 2*2*8 {
		t.Errorf("%d cache elements written, want %d", written, 2*2*8)
	}
	if got := fmt.Sprint(len(want[0])); got != fmt.Sprint(2*a.numBlocks()*a.BlockSize*a.row()) {
		t.Errorf("cache of %s elements", got)
	}
}

// TestRopeFromWorkloadGolden pins what llama-3-8b's rope and append_kv
// workloads (decode and 512-token prefill at batch 1 and 16) become: the
// kernel, its key and its rule-based default's knobs
// (testdata/fromworkload_rope_llama3.golden, -update rewrites it).
func TestRopeFromWorkloadGolden(t *testing.T) {
	var b strings.Builder
	seen := map[string]bool{}
	for _, dims := range []map[string]int64{{"batch": 1}, {"batch": 16}} {
		for _, task := range llamaTasks(t, dims) {
			g := strings.Join(task.Workload.Group, "+")
			key := task.Workload.Key()
			if (g != "llmir.rope" && g != "llmir.append_kv") || seen[key] {
				continue
			}
			seen[key] = true
			k, err := FromWorkload(task.Workload)
			if err != nil {
				t.Fatalf("%s: %v", task.Workload.Name(), err)
			}
			s := mustDefault(t, k)
			var knobs map[string]int64
			var ks kernels.Knobs
			switch u := Unwrap(k).(type) {
			case Rope:
				ks = u.knobs()
			case AppendKV:
				ks = u.knobs()
			}
			if knobs, err = ks.Read(s); err != nil {
				t.Fatal(err)
			}
			var kv []string
			for _, kn := range ks {
				kv = append(kv, fmt.Sprintf("%s=%d", kn.Name, knobs[kn.Name]))
			}
			fmt.Fprintf(&b, "%v %s %s\n  -> %s [%s]\n", task.Funcs, key[:12], task.Workload.Name(), k.Name(), strings.Join(kv, " "))
		}
	}
	got := b.String()
	golden(t, "fromworkload_rope_llama3.golden", got)
}
