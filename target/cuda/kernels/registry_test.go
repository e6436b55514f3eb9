package cudakernels

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target/cuda"
)

// llamaTasks are the distinct workloads (fused and unfused alternatives)
// of llama-3-8b bf16 at the given dims.
func llamaTasks(t *testing.T, dims map[string]int64) []ir.Task {
	t.Helper()
	m, err := hf.ImportPreset("llama-3-8b", hf.Options{DType: "bf16"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ir.InferShapes(m); err != nil {
		t.Fatal(err)
	}
	groups, err := ir.Partition(m, dims)
	if err != nil {
		t.Fatal(err)
	}
	return ir.GroupTasks(groups)
}

// TestFromWorkloadLlama3 maps every decode and prefill workload of
// llama-3-8b: each group either has its kernel (of the expected type,
// GEMV or GEMM by M, answering with the IR workload's key, emitting CUDA
// at its default) or is listed as having none.
func TestFromWorkloadLlama3(t *testing.T) {
	for _, tc := range []struct {
		dims   map[string]int64
		linear map[string]string // func → kernel type of its linears
	}{
		{map[string]int64{"batch": 1}, map[string]string{"decode": "GEMV", "prefill": "GEMM"}},
		{map[string]int64{"batch": 16, "seq": 16}, map[string]string{"decode": "GEMV", "prefill": "GEMM"}},
		{map[string]int64{"batch": 4, "seq": 4}, map[string]string{"decode": "GEMV", "prefill": "GEMV"}},
	} {
		t.Run(fmt.Sprint(tc.dims), func(t *testing.T) {
			hw := Hardware(cuda.H100)
			with, without := map[string]bool{}, map[string]bool{}
			for _, task := range llamaTasks(t, tc.dims) {
				group := strings.Join(task.Workload.Group, "+")
				k, err := FromWorkload(task.Workload)
				if errors.Is(err, kernels.ErrNoKernel) {
					without[group] = true
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", task.Workload.Name(), err)
				}
				with[group] = true
				if got, want := k.Workload().Key(), task.Workload.Key(); got != want {
					t.Errorf("%s: kernel key %s, IR key %s", k.Name(), got, want)
				}
				typ := fmt.Sprintf("%T", Unwrap(k))
				if group == "llmir.linear" {
					if want := "cudakernels." + tc.linear[task.Funcs[0]]; typ != want {
						t.Errorf("%s in %v: %s, want %s", task.Workload.Name(), task.Funcs, typ, want)
					}
				}
				s, err := search.DefaultSchedule(k, hw)
				if err != nil {
					t.Fatalf("%s: %v", k.Name(), err)
				}
				src, err := k.EmitCUDA(s, cuda.H100, Entry)
				if err != nil || !strings.Contains(src, "int "+Entry+"(void *const *bufs, const int64_t *dims)") {
					t.Errorf("%s: default does not emit an entry: %v", k.Name(), err)
				}
			}
			wantWith := []string{"llmir.add", "llmir.append_kv", "llmir.argmax", "llmir.attention", "llmir.embedding", "llmir.linear", "llmir.mul", "llmir.paged_attention", "llmir.rms_norm", "llmir.rope", "llmir.silu"}
			if got := slices.Sorted(mapKeys(with)); !slices.Equal(got, wantWith) {
				t.Errorf("groups with a CUDA kernel %v, want %v", got, wantWith)
			}
			for _, g := range []string{"llmir.rms_norm+llmir.linear", "llmir.linear+llmir.add", "llmir.linear+llmir.linear+llmir.silu+llmir.mul",
				"llmir.linear+llmir.rope+llmir.append_kv"} {
				if !without[g] {
					t.Errorf("group %s not listed as without a CUDA kernel", g)
				}
			}
		})
	}
}

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func sig(dt string, shape ...int64) ir.TensorSig { return ir.TensorSig{Shape: shape, DType: dt} }

func TestFromWorkloadErrors(t *testing.T) {
	kv := ir.TensorSig{KV: "paged_kv<block_size=16,kv_heads=8,head_dim=128>", DType: "bf16"}
	attn := func(attrs map[string]string) ir.Workload {
		return ir.Workload{Group: []string{"llmir.paged_attention"},
			Inputs: []ir.TensorSig{sig("bf16", 2, 32, 128), kv, sig("i32", 2, 8), sig("i32", 2)},
			Output: []ir.TensorSig{sig("bf16", 2, 32, 128)}, Attrs: attrs}
	}
	for _, tc := range []struct {
		name     string
		w        ir.Workload
		noKernel bool   // wraps ErrNoKernel
		want     string // in the error; "" with !noKernel: no error
		kernel   string // Name of the kernel when there is no error
	}{
		{"gemv", ir.Workload{Group: []string{"llmir.linear"}, Inputs: []ir.TensorSig{sig("bf16", 1, 3, 64), sig("bf16", 40, 64)}, Output: []ir.TensorSig{sig("bf16", 1, 3, 40)}},
			false, "", "cuda_gemv/M=3,N=40,K=64/bf16"},
		{"gemm", ir.Workload{Group: []string{"llmir.linear"}, Inputs: []ir.TensorSig{sig("bf16", 17, 64), sig("bf16", 40, 64)}, Output: []ir.TensorSig{sig("bf16", 17, 40)}},
			false, "", "cuda_gemm/M=17,N=40,K=64/bf16"},
		{"attention", attn(map[string]string{"scale": fmt.Sprintf("%.17g : f32", 1/math.Sqrt(128))}),
			false, "", "cuda_paged_attention/B=2,QH=32,KVH=8,D=128,BS=16,ctx=128/bf16"},
		{"rms_norm", ir.Workload{Group: []string{"llmir.rms_norm"}, Inputs: []ir.TensorSig{sig("bf16", 5, 64), sig("bf16", 64)}, Output: []ir.TensorSig{sig("bf16", 5, 64)}, Attrs: map[string]string{"eps": "1.0e-06 : f32"}},
			false, "", "cuda_rms_norm/M=5,H=64/bf16"},
		{"silu", ir.Workload{Group: []string{"llmir.silu"}, Inputs: []ir.TensorSig{sig("bf16", 2, 3, 10)}, Output: []ir.TensorSig{sig("bf16", 2, 3, 10)}},
			false, "", "cuda_silu/M=6,H=10/bf16"},
		{"f32 linear", ir.Workload{Group: []string{"llmir.linear"}, Inputs: []ir.TensorSig{sig("f32", 1, 64), sig("f32", 40, 64)}, Output: []ir.TensorSig{sig("f32", 1, 40)}},
			true, "dtype f32", ""},
		{"K not 16-byte rows", ir.Workload{Group: []string{"llmir.linear"}, Inputs: []ir.TensorSig{sig("bf16", 1, 60), sig("bf16", 40, 60)}, Output: []ir.TensorSig{sig("bf16", 1, 40)}},
			true, "K=60", ""},
		{"biased linear", ir.Workload{Group: []string{"llmir.linear"}, Inputs: []ir.TensorSig{sig("bf16", 1, 64), sig("bf16", 40, 64), sig("bf16", 40)}, Output: []ir.TensorSig{sig("bf16", 1, 40)}},
			true, "bias", ""},
		{"kn linear", ir.Workload{Group: []string{"llmir.linear"}, Inputs: []ir.TensorSig{sig("bf16", 1, 64), sig("bf16", 64, 64)}, Output: []ir.TensorSig{sig("bf16", 1, 64)}, Attrs: map[string]string{"weight_layout": `"kn"`}},
			true, "weight_layout", ""},
		{"mismatched linear", ir.Workload{Group: []string{"llmir.linear"}, Inputs: []ir.TensorSig{sig("bf16", 1, 64), sig("bf16", 40, 32)}, Output: []ir.TensorSig{sig("bf16", 1, 40)}},
			false, "do not match", ""},
		{"broadcast add", ir.Workload{Group: []string{"llmir.add"}, Inputs: []ir.TensorSig{sig("bf16", 4, 64), sig("bf16", 64)}, Output: []ir.TensorSig{sig("bf16", 4, 64)}},
			true, "no broadcasting", ""},
		{"odd silu", ir.Workload{Group: []string{"llmir.silu"}, Inputs: []ir.TensorSig{sig("bf16", 3)}, Output: []ir.TensorSig{sig("bf16", 3)}},
			true, "H even", ""},
		{"sliding window", attn(map[string]string{"sliding_window": "4096 : i64"}), true, "sliding window", ""},
		{"custom scale", attn(map[string]string{"scale": "0.5 : f32"}), true, "scale", ""},
		{"bad cache", func() ir.Workload { w := attn(nil); w.Inputs[1].KV = "paged_kv<block_size=16>"; return w }(), false, "no kv_heads", ""},
		{"rms_norm without eps", ir.Workload{Group: []string{"llmir.rms_norm"}, Inputs: []ir.TensorSig{sig("bf16", 5, 64), sig("bf16", 64)}, Output: []ir.TensorSig{sig("bf16", 5, 64)}},
			false, "eps", ""},
		{"arity", ir.Workload{Group: []string{"llmir.mul"}, Inputs: []ir.TensorSig{sig("bf16", 4, 64)}, Output: []ir.TensorSig{sig("bf16", 4, 64)}},
			false, "1 operands", ""},
		{"no group", ir.Workload{Group: []string{"llmir.softmax"}}, true, "llmir.softmax (no CUDA kernel)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := FromWorkload(tc.w)
			if tc.want == "" && !tc.noKernel {
				if err != nil {
					t.Fatal(err)
				}
				if k.Name() != tc.kernel {
					t.Errorf("kernel %s, want %s", k.Name(), tc.kernel)
				}
				if k.Workload().Key() != tc.w.Key() {
					t.Errorf("kernel answers with another workload")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, kernels.ErrNoKernel) != tc.noKernel {
				t.Errorf("err = %v, want one containing %q (ErrNoKernel: %v)", err, tc.want, tc.noKernel)
			}
		})
	}
}

// TestIRKernelForwardsFill: GEMM's periodic activations (which keep the
// references of prefill shapes cheap) survive the IR wrapper.
func TestIRKernelForwardsFill(t *testing.T) {
	w := ir.Workload{Group: []string{"llmir.linear"}, Inputs: []ir.TensorSig{sig("bf16", 512, 64), sig("bf16", 40, 64)}, Output: []ir.TensorSig{sig("bf16", 512, 40)}}
	k, err := FromWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := k.(kernels.Filler)
	if !ok || f.Fill("x") == nil {
		t.Fatalf("%s: no Fill for x through the wrapper", k.Name())
	}
	if got := (Unwrap(k).(GEMM)).Fill("x"); got == nil {
		t.Fatal("GEMM itself has no Fill for x")
	}
	if f.Fill("w") != nil {
		t.Error("Fill for w, which stays random")
	}
}

// TestPointwiseReference checks the oracle of each op on a problem's
// inputs element by element.
func TestPointwiseReference(t *testing.T) {
	for _, op := range []PointwiseOp{OpSiLU, OpMul, OpAdd} {
		p := Pointwise{Op: op, M: 3, H: 10}
		prob, err := search.NewProblem(p, 3)
		if err != nil {
			t.Fatal(err)
		}
		in := prob.Inputs()
		want, err := prob.Expected()
		if err != nil {
			t.Fatal(err)
		}
		for i := range want[0] {
			var exp float64
			switch op {
			case OpSiLU:
				x := float64(float32(in[0][i]))
				exp = x / (1 + math.Exp(-x))
			case OpMul:
				exp = in[0][i] * in[1][i]
			case OpAdd:
				exp = in[0][i] + in[1][i]
			}
			if math.Abs(want[0][i]-exp) > 1e-6*math.Max(1, math.Abs(exp)) {
				t.Fatalf("%s: element %d = %g, want %g", op, i, want[0][i], exp)
			}
		}
		if got, want := len(prob.Buffers), op.arity()+1; got != want {
			t.Errorf("%s: %d buffers, want %d", op, got, want)
		}
	}
}

// TestPointwiseEmit pins the default sources (golden, -update) and checks
// that every sampled schedule either emits or is refused for a vector
// width that does not divide H.
func TestPointwiseEmit(t *testing.T) {
	for _, g := range []struct {
		file string
		p    Pointwise
	}{
		{"pointwise_silu.cu", Pointwise{Op: OpSiLU, M: 16, H: 14336}},
		{"pointwise_add.cu", Pointwise{Op: OpAdd, M: 1, H: 4096}},
	} {
		t.Run(g.file, func(t *testing.T) {
			s, err := search.DefaultSchedule(g.p, Hardware(cuda.H100))
			if err != nil {
				t.Fatal(err)
			}
			src, err := g.p.EmitCUDA(s, cuda.H100, Entry)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, g.file, src)
		})
	}
	p := Pointwise{Op: OpMul, M: 1, H: 6} // vec 4 and 8 do not divide 6
	emitted, refused := 0, 0
	for seed := range uint64(40) {
		s, err := search.SampleSchedule(p, Hardware(cuda.H100), seed)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.EmitCUDA(s, cuda.H100, Entry); err != nil {
			if !strings.Contains(err.Error(), "not a multiple of vec") {
				t.Errorf("seed %d: %v", seed, err)
			}
			refused++
		} else {
			emitted++
		}
	}
	if emitted == 0 || refused == 0 {
		t.Errorf("%d emitted, %d refused: want both", emitted, refused)
	}
	if c, err := NewCandidate("c", p, mustDefault(t, p), cuda.H100); err != nil || c.Entry != Entry || c.Threads != 1 {
		t.Errorf("candidate %+v, %v", c, err)
	}
}

func mustDefault(t *testing.T, k Kernel) *schedule.Schedule {
	t.Helper()
	s, err := search.DefaultSchedule(k, Hardware(cuda.H100))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
