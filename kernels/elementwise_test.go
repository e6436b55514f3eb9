package kernels_test

import (
	"testing"

	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
)

func TestElementwiseConformance(t *testing.T) {
	runConformance(t, 4,
		kernels.SiLU{Rows: 1, H: 17},
		kernels.Elementwise{Op: kernels.OpMul, Rows: 5, RowsBucket: 8, H: 33},
		kernels.Elementwise{Op: kernels.OpAdd, Rows: 3, H: 19, BroadcastB: true},
		kernels.SiLU{Gated: true, Rows: 7, RowsBucket: 8, H: 41, DType: schedule.BF16},
	)
}

func TestElementwiseLlamaTiny(t *testing.T) {
	var ks []kernels.Kernel
	for _, g := range []string{"llmir.add", "llmir.silu"} {
		k, err := kernels.FromWorkload(firstWorkload(t, g))
		if err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k)
	}
	ks = append(ks, kernels.SiLU{Gated: true, Rows: 512, H: 688})
	runConformance(t, 2, ks...)
}

// siluMulGroup is the fused group's workload made from a module's silu
// and mul workloads: gate then up, one result.
func siluMulGroup(silu, mul ir.Workload) ir.Workload {
	return ir.Workload{Group: []string{"llmir.silu", "llmir.mul"}, Inputs: []ir.TensorSig{silu.Inputs[0], mul.Inputs[1]}, Output: mul.Output, Dynamic: mul.Dynamic}
}

func TestElementwiseFromWorkload(t *testing.T) {
	for _, g := range []string{"llmir.silu", "llmir.mul", "llmir.add"} {
		for _, k := range fromPresets(t, g) {
			in := k.Workload().Inputs[0]
			var h int64
			switch e := k.(type) {
			case kernels.SiLU:
				h = e.H
			case kernels.Elementwise:
				h = e.H
			}
			if h != in.Shape[len(in.Shape)-1] {
				t.Errorf("%s: H %d", k.Name(), h)
			}
		}
	}
	for _, p := range []string{"llama-tiny", "llama-3-8b"} {
		var silu, mul []ir.Workload
		for _, task := range presetTasks(t, p) {
			switch task.Workload.Group[0] {
			case "llmir.silu":
				silu = append(silu, task.Workload)
			case "llmir.mul":
				mul = append(mul, task.Workload)
			}
		}
		if len(silu) == 0 || len(silu) != len(mul) {
			t.Fatalf("%s: %d silu and %d mul workloads", p, len(silu), len(mul))
		}
		for i := range silu {
			w := siluMulGroup(silu[i], mul[i])
			k, err := kernels.FromWorkload(w)
			if err != nil {
				t.Fatalf("%s: %s: %v", p, w.Name(), err)
			}
			if s, ok := k.(kernels.SiLU); !ok || !s.Gated || k.Workload().Key() != w.Key() {
				t.Errorf("%s: %s gave %s", p, w.Name(), k.Name())
			}
		}
	}
	// A broadcast second operand: one row of H.
	add := firstWorkload(t, "llmir.add")
	b := cloneWorkload(add)
	b.Inputs[1].Shape = []int64{256}
	if k, err := kernels.FromWorkload(b); err != nil || !k.(kernels.Elementwise).BroadcastB {
		t.Errorf("broadcast add: %v, %v", k, err)
	}
	badWorkloads(t, add, map[string]func(w *ir.Workload) string{
		"arity":  func(w *ir.Workload) string { w.Inputs = w.Inputs[:1]; return "1 operands" },
		"shapes": func(w *ir.Workload) string { w.Inputs[1].Shape = []int64{1, 3, 256}; return "operand shapes" },
		"result": func(w *ir.Workload) string { w.Output[0].Shape = []int64{1, 512, 3}; return "result shape" },
		"dtypes": func(w *ir.Workload) string { w.Inputs[1].DType = "f16"; return "is f16" },
	})
	silu := firstWorkload(t, "llmir.silu")
	badWorkloads(t, silu, map[string]func(w *ir.Workload) string{
		"arity":  func(w *ir.Workload) string { w.Inputs = append(w.Inputs, w.Inputs[0]); return "2 operands" },
		"result": func(w *ir.Workload) string { w.Output[0].Shape = []int64{1, 512, 3}; return "shape" },
		"int":    func(w *ir.Workload) string { setDType(w, "i8"); return "want f32, bf16 or f16" },
	})
	mul := firstWorkload(t, "llmir.mul")
	group := siluMulGroup(silu, mul)
	badWorkloads(t, group, map[string]func(w *ir.Workload) string{
		"up shape": func(w *ir.Workload) string { w.Inputs[1].Shape = []int64{688}; return "shape" },
		"arity":    func(w *ir.Workload) string { w.Inputs = w.Inputs[:1]; return "1 operands" },
	})
}
