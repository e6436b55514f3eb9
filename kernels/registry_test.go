package kernels

import (
	"errors"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
)

// tinyTasks are the workloads of the llama-tiny preset.
func tinyTasks(t *testing.T) []ir.Task {
	t.Helper()
	m, err := hf.ImportPreset("llama-tiny", hf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := ir.Tasks(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tasks
}

func TestLinearFromWorkload(t *testing.T) {
	tasks := tinyTasks(t)
	var n int
	for _, task := range tasks {
		if task.Workload.Group[0] != "llmir.linear" {
			continue
		}
		k, err := FromWorkload(task.Workload)
		if err != nil {
			t.Fatal(err)
		}
		l := k.(Linear)
		in := task.Workload.Inputs
		if l.K != in[1].Shape[1] || l.N != in[1].Shape[0] || l.M != rows(in[0]) {
			t.Errorf("%s: kernel %s", task.Workload.Name(), l.Name())
		}
		if k.Workload().Key() != task.Workload.Key() {
			t.Errorf("%s: kernel reports another workload", task.Workload.Name())
		}
		n++
	}
	if n == 0 {
		t.Fatal("llama-tiny has no linear workloads")
	}
	bad := tasks[0].Workload
	bad.Group = []string{"llmir.no_such_op"}
	if _, err := FromWorkload(bad); !errors.Is(err, ErrNoKernel) {
		t.Errorf("unknown group: %v", err)
	}
}

// TestPresetWorkloadsHaveKernelsOrNone: every workload of the presets, at
// their checkpoint dtype and in f32, is a kernel or an error wrapping
// ErrNoKernel (a bf16 fused group, an f16 cache), never another error, which
// stops a whole-model tune or compile (llama-3-8b's bf16 rms_norm+linear and
// qwen2-7b's biased q/k/v projections did). Every plain linear has a kernel
// in every dtype. In f32, every linear of
// qwen2-7b has a kernel, the biased ones LinearBias.
func TestPresetWorkloadsHaveKernelsOrNone(t *testing.T) {
	for _, p := range []string{"llama-3-8b", "qwen2-7b", "mistral-7b"} {
		for _, dtype := range []string{"", "float32", "float16"} {
			cfg, err := hf.PresetConfig(p)
			if err != nil {
				t.Fatal(err)
			}
			if dtype != "" {
				cfg.TorchDtype = dtype
			}
			m, err := hf.Import(cfg, p, hf.Options{})
			if err != nil {
				t.Fatal(err)
			}
			tasks, err := ir.Tasks(m, nil)
			if err != nil {
				t.Fatal(err)
			}
			var biased int
			for _, task := range tasks {
				k, err := FromWorkload(task.Workload)
				if err != nil {
					if !errors.Is(err, ErrNoKernel) {
						t.Errorf("%s %s: %s: %v", p, cfg.TorchDtype, task.Workload.Name(), err)
					}
					if len(task.Workload.Group) == 1 && task.Workload.Group[0] == "llmir.linear" {
						t.Errorf("%s %s: %s has no kernel: %v", p, cfg.TorchDtype, task.Workload.Name(), err)
					}
					continue
				}
				if lb, ok := k.(LinearBias); ok {
					biased++
					if lb.N != task.Workload.Inputs[2].Shape[0] {
						t.Errorf("%s: kernel %s", task.Workload.Name(), lb.Name())
					}
				}
			}
			if p == "qwen2-7b" && dtype == "float32" && biased == 0 {
				t.Errorf("qwen2-7b f32: no biased linear read as LinearBias")
			}
		}
	}
}

// TestLinearVariants: a bias of the wrong length and a mismatched weight are
// malformed (errors naming them); weight_layout "kn" and mixed dtypes are
// variants without a kernel (ErrNoKernel); bf16 and f16 linears (with or
// without a bias) are kernels of that dtype.
func TestLinearVariants(t *testing.T) {
	sig := func(dt string, s ...int64) ir.TensorSig { return ir.TensorSig{Shape: s, DType: dt} }
	for _, c := range []struct {
		name     string
		w        ir.Workload
		noKernel bool
		want     string
	}{
		{"bias length", ir.Workload{Inputs: []ir.TensorSig{sig("f32", 2, 8), sig("f32", 4, 8), sig("f32", 5)}, Output: []ir.TensorSig{sig("f32", 2, 4)}}, false, "bias [5], want [4]"},
		{"mismatch", ir.Workload{Inputs: []ir.TensorSig{sig("f32", 2, 8), sig("f32", 4, 7)}, Output: []ir.TensorSig{sig("f32", 2, 4)}}, false, "do not match"},
		{"kn", ir.Workload{Inputs: []ir.TensorSig{sig("f32", 2, 8), sig("f32", 8, 8)}, Output: []ir.TensorSig{sig("f32", 2, 8)}, Attrs: map[string]string{"weight_layout": `"kn"`}}, true, "weight_layout"},
		{"mixed", ir.Workload{Inputs: []ir.TensorSig{sig("f32", 2, 8), sig("bf16", 4, 8)}, Output: []ir.TensorSig{sig("f32", 2, 4)}}, true, "bf16"},
		{"mixed bias", ir.Workload{Inputs: []ir.TensorSig{sig("f32", 2, 8), sig("f32", 4, 8), sig("bf16", 4)}, Output: []ir.TensorSig{sig("f32", 2, 4)}}, true, "f32"},
		{"i32", ir.Workload{Inputs: []ir.TensorSig{sig("i32", 2, 8), sig("i32", 4, 8)}, Output: []ir.TensorSig{sig("i32", 2, 4)}}, true, "i32"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.w.Group = []string{"llmir.linear"}
			_, err := FromWorkload(c.w)
			if err == nil || !strings.Contains(err.Error(), c.want) || errors.Is(err, ErrNoKernel) != c.noKernel {
				t.Errorf("FromWorkload = %v, want an error mentioning %q (ErrNoKernel: %v)", err, c.want, c.noKernel)
			}
		})
	}
	for _, c := range []struct {
		w    ir.Workload
		want string
	}{
		{ir.Workload{Inputs: []ir.TensorSig{sig("bf16", 2, 8), sig("bf16", 4, 8)}, Output: []ir.TensorSig{sig("bf16", 2, 4)}}, "linear/M=2,N=4,K=8/bf16"},
		{ir.Workload{Inputs: []ir.TensorSig{sig("f16", 2, 8), sig("f16", 4, 8), sig("f16", 4)}, Output: []ir.TensorSig{sig("f16", 2, 4)}}, "linear+bias/M=2,N=4,K=8/f16"},
	} {
		c.w.Group = []string{"llmir.linear"}
		k, err := FromWorkload(c.w)
		if err != nil || k.Name() != c.want {
			t.Errorf("FromWorkload = %v, %v; want kernel %s", k, err, c.want)
		} else if def, err := k.Def(); err != nil || def.Params()[1].DType.String() != c.w.Inputs[1].DType {
			t.Errorf("%s: definition %v, %v", c.want, def, err)
		}
	}
}

// TestFromWorkloadSizes: an operand or result whose element count passes
// MaxTensorElems, or overflows int64, is refused by name before any
// kernel sizes a table by it (a rope of head_dim 2^37 allocated 1 TiB of
// inverse frequencies and the tune died out of memory).
func TestFromWorkloadSizes(t *testing.T) {
	tasks := tinyTasks(t)
	var rope, linear ir.Workload
	for _, task := range tasks {
		switch task.Workload.Group[0] {
		case "llmir.rope":
			rope = task.Workload
		case "llmir.linear":
			linear = task.Workload
		}
	}
	if rope.Group == nil || linear.Group == nil {
		t.Fatal("llama-tiny lacks a rope or a linear workload")
	}
	huge := func(w ir.Workload, out bool, shape ...int64) ir.Workload {
		w.Inputs, w.Output = append([]ir.TensorSig(nil), w.Inputs...), append([]ir.TensorSig(nil), w.Output...)
		if out {
			w.Output[0].Shape = shape
		} else {
			w.Inputs[0].Shape = shape
		}
		return w
	}
	for _, c := range []struct {
		name string
		w    ir.Workload
		want string
	}{
		{"rope head_dim 2^37", huge(rope, false, 512, 8, 1<<37), "operand 0 has shape [512 8 137438953472]: more than 68719476736 elements"},
		{"overflowing product", huge(linear, false, 1<<40, 1<<40), "operand 0 has shape"},
		{"result", huge(linear, true, 1<<20, 1<<20), "result 0 has shape"},
		{"negative dim", huge(linear, false, -1, 4), "operand 0 has shape [-1 4]"},
	} {
		_, err := FromWorkload(c.w)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "kernel for ") {
			t.Errorf("%s: %v, want an error naming the workload and containing %q", c.name, err, c.want)
		}
	}
}

// TestExportedWorkloadHelpers: other targets' registries read IR tensors
// through Rows and ParsePagedKV exactly as this library's kernels do.
func TestExportedWorkloadHelpers(t *testing.T) {
	for _, tc := range []struct {
		shape []int64
		rows  int64
	}{{[]int64{4096}, 1}, {[]int64{1, 4096}, 1}, {[]int64{2, 512, 4096}, 1024}, {[]int64{3, 5, 7, 11}, 105}} {
		if got := Rows(ir.TensorSig{Shape: tc.shape}); got != tc.rows {
			t.Errorf("Rows(%v) = %d, want %d", tc.shape, got, tc.rows)
		}
	}
	for _, tc := range []struct {
		in   string
		want PagedKV
		err  string
	}{
		{"paged_kv<block_size=16,kv_heads=8,head_dim=128>", PagedKV{16, 8, 128}, ""},
		{"!llmir.paged_kv<block_size = 32, kv_heads = 2, head_dim = 64, elem = bf16, layers = 32>", PagedKV{32, 2, 64}, ""},
		{"paged_kv<block_size=16,head_dim=128>", PagedKV{}, "no kv_heads"},
		{"tensor<4xbf16>", PagedKV{}, "want paged_kv<"},
		{"paged_kv<block_size=0,kv_heads=8,head_dim=128>", PagedKV{}, "positive integer"},
	} {
		got, err := ParsePagedKV(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePagedKV(%q) err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParsePagedKV(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}
