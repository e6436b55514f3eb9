package kernels_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kernels"
	"llmir/kernels/kerneltest"
	"llmir/kernels/ref"
	"llmir/schedule"
	"llmir/search"
)

// The helpers here are shared by the tests of the element-wise, norm,
// rope, embedding, softmax and argmax kernels.

// runConformance runs every kernel through kerneltest with the default and
// draws random schedules, alternating one and two threads (parallel code
// paths differ).
func runConformance(t *testing.T, draws int, ks ...kernels.Kernel) {
	t.Helper()
	tg := kerneltest.CPU(t)
	for i, k := range ks {
		threads := 1 + i%2
		t.Run(k.Name(), func(t *testing.T) {
			cases := kerneltest.Run(t, tg, search.CPUHardware(tg.CPU(), threads), k, kerneltest.Options{Draws: draws, Seed: uint64(i + 1)})
			if len(cases) != draws+1 {
				t.Fatalf("%d cases, want default + %d draws", len(cases), draws)
			}
		})
	}
}

var (
	presetMu    sync.Mutex
	presetCache = map[string][]ir.Task{}
)

// presetTasks are the workloads of a built-in model.
func presetTasks(t *testing.T, name string) []ir.Task {
	t.Helper()
	presetMu.Lock()
	defer presetMu.Unlock()
	if ts, ok := presetCache[name]; ok {
		return ts
	}
	m, err := hf.ImportPreset(name, hf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts, err := ir.Tasks(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	presetCache[name] = ts
	return ts
}

// fromPresets builds a kernel from every workload of group in llama-tiny
// and llama-3-8b, checks that it keeps the workload's key, and returns
// the kernels.
func fromPresets(t *testing.T, group string) []kernels.Kernel {
	t.Helper()
	var out []kernels.Kernel
	for _, p := range []string{"llama-tiny", "llama-3-8b"} {
		n := 0
		for _, task := range presetTasks(t, p) {
			if strings.Join(task.Workload.Group, "+") != group {
				continue
			}
			k, err := kernels.FromWorkload(task.Workload)
			if err != nil {
				t.Fatalf("%s: %s: %v", p, task.Workload.Name(), err)
			}
			if k.Workload().Key() != task.Workload.Key() {
				t.Errorf("%s: %s: kernel reports another workload", p, task.Workload.Name())
			}
			if _, err := k.Def(); err != nil {
				t.Errorf("%s: %s: %v", p, task.Workload.Name(), err)
			}
			out = append(out, k)
			n++
		}
		if n == 0 {
			t.Fatalf("%s has no %s workload", p, group)
		}
	}
	return out
}

// firstWorkload is the first workload of group in llama-tiny.
func firstWorkload(t *testing.T, group string) ir.Workload {
	t.Helper()
	for _, task := range presetTasks(t, "llama-tiny") {
		if strings.Join(task.Workload.Group, "+") == group {
			return task.Workload
		}
	}
	t.Fatalf("llama-tiny has no %s workload", group)
	return ir.Workload{}
}

// badWorkloads checks that every mutation of w is refused with an error
// containing the given text.
func badWorkloads(t *testing.T, w ir.Workload, cases map[string]func(w *ir.Workload) string) {
	t.Helper()
	for name, mutate := range cases {
		c := cloneWorkload(w)
		want := mutate(&c)
		_, err := kernels.FromWorkload(c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, want)
		}
	}
}

func cloneWorkload(w ir.Workload) ir.Workload {
	c := w
	clone := func(ss []ir.TensorSig) []ir.TensorSig {
		out := make([]ir.TensorSig, len(ss))
		for i, s := range ss {
			s.Shape = append([]int64(nil), s.Shape...)
			out[i] = s
		}
		return out
	}
	c.Inputs, c.Output = clone(w.Inputs), clone(w.Output)
	c.Attrs = map[string]string{}
	for k, v := range w.Attrs {
		c.Attrs[k] = v
	}
	return c
}

// randF32 draws n f32-representable values in [-1, 1].
func randF32(rng *rand.Rand, n int) ([]float32, []float64) {
	f := make([]float32, n)
	d := make([]float64, n)
	for i := range f {
		f[i] = float32(rng.Float64()*2 - 1)
		d[i] = float64(f[i])
	}
	return f, d
}

// relErr is ‖got − want‖/‖want‖.
func relErr(got []float64, want []float32) float64 {
	var num, den float64
	for i, w := range want {
		d := got[i] - float64(w)
		num += d * d
		den += float64(w) * float64(w)
	}
	return math.Sqrt(num / den)
}

func TestNormReferencesMatchRef(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	const rows, h = 3, 37
	x32, x := randF32(rng, rows*h)
	w32, w := randF32(rng, h)
	b32, b := randF32(rng, h)
	want, err := ref.RMSNorm(x32, rows, h, w32, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	got := kernels.RMSNorm{Rows: rows, H: h, Eps: 1e-5}.Reference([][]float64{x, w})[0]
	if e := relErr(got, want); e > 1e-6 {
		t.Errorf("rms_norm reference differs from ref.RMSNorm by %g", e)
	}
	want, err = ref.LayerNorm(x32, rows, h, w32, b32, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	got = kernels.LayerNorm{Rows: rows, H: h, Eps: 1e-5}.Reference([][]float64{x, w, b})[0]
	if e := relErr(got, want); e > 1e-6 {
		t.Errorf("layer_norm reference differs from ref.LayerNorm by %g", e)
	}
}

func TestNormConformance(t *testing.T) {
	runConformance(t, 4,
		kernels.RMSNorm{Rows: 1, H: 17, Eps: 1e-5},
		kernels.RMSNorm{Rows: 5, RowsBucket: 8, H: 33, Eps: 1e-6},
		kernels.RMSNorm{Rows: 37, RowsBucket: 64, H: 256, Eps: 1e-5, DType: schedule.BF16},
		kernels.LayerNorm{Rows: 3, H: 17, Eps: 1e-5},
		kernels.LayerNorm{Rows: 19, RowsBucket: 32, H: 256, Eps: 1e-5, DType: schedule.F16},
	)
}

// TestNormLlamaTiny runs the first llama-tiny rms_norm workload (512 rows
// of 256) as imported.
func TestNormLlamaTiny(t *testing.T) {
	k, err := kernels.FromWorkload(firstWorkload(t, "llmir.rms_norm"))
	if err != nil {
		t.Fatal(err)
	}
	runConformance(t, 2, k)
}

func TestNormFromWorkload(t *testing.T) {
	for _, k := range fromPresets(t, "llmir.rms_norm") {
		n := k.(kernels.RMSNorm)
		in := n.Workload().Inputs[0]
		if n.H != in.Shape[len(in.Shape)-1] || n.Eps != float64(float32(1e-5)) {
			t.Errorf("%s: H %d, eps %g", k.Name(), n.H, n.Eps)
		}
	}
	w := firstWorkload(t, "llmir.rms_norm")
	badWorkloads(t, w, map[string]func(w *ir.Workload) string{
		"arity":     func(w *ir.Workload) string { w.Inputs = w.Inputs[:1]; return "1 operands" },
		"weight":    func(w *ir.Workload) string { w.Inputs[1].Shape = []int64{5}; return "want [256]" },
		"result":    func(w *ir.Workload) string { w.Output[0].Shape[0] = 3; return "result shape" },
		"dtype":     func(w *ir.Workload) string { w.Inputs[1].DType = "bf16"; return "is bf16" },
		"int":       func(w *ir.Workload) string { setDType(w, "i32"); return "want f32, bf16 or f16" },
		"no eps":    func(w *ir.Workload) string { delete(w.Attrs, "eps"); return "eps" },
		"bad eps":   func(w *ir.Workload) string { w.Attrs["eps"] = "-1.0 : f32"; return "eps" },
		"bad attrs": func(w *ir.Workload) string { w.Attrs["eps"] = "{"; return "attributes" },
	})
}

func setDType(w *ir.Workload, dt string) {
	for i := range w.Inputs {
		w.Inputs[i].DType = dt
	}
	for i := range w.Output {
		w.Output[i].DType = dt
	}
}

// TestLayerNormFromWorkload: no preset uses layer_norm, so the workload a
// kernel reports is read back, and broken copies of it are refused.
func TestLayerNormFromWorkload(t *testing.T) {
	k := kernels.LayerNorm{Rows: 4, H: 48, Eps: 1e-6, DType: schedule.BF16}
	back, err := kernels.FromWorkload(k.Workload())
	if err != nil {
		t.Fatal(err)
	}
	if b := back.(kernels.LayerNorm); b.Name() != k.Name() || b.Eps != float64(float32(1e-6)) {
		t.Errorf("round trip: %s eps %g, want %s", b.Name(), b.Eps, k.Name())
	}
	badWorkloads(t, k.Workload(), map[string]func(w *ir.Workload) string{
		"arity": func(w *ir.Workload) string { w.Inputs = w.Inputs[:2]; return "2 operands" },
		"bias":  func(w *ir.Workload) string { w.Inputs[2].Shape = []int64{47}; return "want [48]" },
	})
}

func TestRowGroupsRegistered(t *testing.T) {
	have := map[string]bool{}
	for _, g := range kernels.Groups() {
		have[g] = true
	}
	for _, g := range []string{"llmir.rms_norm", "llmir.layer_norm", "llmir.rope", "llmir.silu", "llmir.mul", "llmir.add",
		"llmir.silu+llmir.mul", "llmir.softmax", "llmir.embedding", "llmir.argmax"} {
		if !have[g] {
			t.Errorf("group %s has no kernel", g)
		}
	}
}
