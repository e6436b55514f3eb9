package kernels_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/kernels"
	"llmir/kernels/kerneltest"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
)

// TestQuantLinearConformance runs the quantized linear layer through the
// conformance suite (one target, so the harness is built once): int8
// per-channel and grouped, int4 with groups 32, 64 and 128, decode (M 1,
// 3, runtime M below its bucket) and prefill (M 17, 19 of 32), N odd,
// groups that do not fill a vector block (scalar tails) and an int4 group
// that starts mid-byte, threads alternating 1 and 2; then a Llama-3-8B
// shape, every int4 unpack variant, and a wrong reference that must fail.
func TestQuantLinearConformance(t *testing.T) {
	tg := kerneltest.CPU(t)
	t.Run("llama-3-8b", func(t *testing.T) { testQuantLinearLlamaDecode(t, tg) })
	t.Run("unpack-variants", func(t *testing.T) { testQuantLinearUnpackVariants(t, tg) })
	t.Run("wrong-reference", func(t *testing.T) { testQuantLinearCheckFailsWrongReference(t, tg) })
	for i, q := range []kernels.QuantLinear{
		{M: 1, N: 7, K: 29, Bits: 8, Group: 29},
		{M: 3, N: 33, K: 96, Bits: 8, Group: 32},
		{M: 1, N: 33, K: 64, Bits: 4, Group: 32},
		{M: 3, N: 17, K: 192, Bits: 4, Group: 64},
		{M: 5, N: 9, K: 256, MBucket: 8, Bits: 4, Group: 128},
		{M: 17, N: 37, K: 256, Bits: 4, Group: 128},
		{M: 19, N: 65, K: 80, MBucket: 32, Bits: 8, Group: 80},
		{M: 2, N: 5, K: 6, Bits: 4, Group: 3},
		{M: 3, N: 11, K: 96, Bits: 4, Group: 48},
	} {
		threads := 1 + i%2
		t.Run(fmt.Sprintf("%s/threads=%d", q.Name(), threads), func(t *testing.T) {
			cases := kerneltest.Run(t, tg, search.CPUHardware(tg.CPU(), threads), q, kerneltest.Options{Draws: 1, Seed: uint64(i + 1)})
			if len(cases) != 2 {
				t.Fatalf("%d cases, want default + 1 draw", len(cases))
			}
		})
	}
}

// testQuantLinearLlamaDecode checks a llama-3-8b decode shape at full
// size (q/o projection, int4 group 128) with two threads.
func testQuantLinearLlamaDecode(t *testing.T, tg *cpu.Target) {
	q := kernels.QuantLinear{M: 1, N: 4096, K: 4096, Bits: 4, Group: 128}
	kerneltest.Run(t, tg, search.CPUHardware(tg.CPU(), 2), q, kerneltest.Options{Draws: 1, Seed: 3})
}

// testQuantLinearUnpackVariants validates every int4 unpack strategy with
// every lane packing (nibbles per 32-bit lane), which random draws may
// miss: the default's trace with its last two steps set to each pair.
func testQuantLinearUnpackVariants(t *testing.T, tg *cpu.Target) {
	hw := search.CPUHardware(tg.CPU(), 1)
	if hw.VectorBits != 512 {
		t.Skip("the unpack knob exists with 16-lane vectors only")
	}
	q := kernels.QuantLinear{M: 3, N: 11, K: 384, Bits: 4, Group: 128}
	d, err := search.DefaultSchedule(q, hw)
	if err != nil {
		t.Fatal(err)
	}
	tr := d.Trace()
	n := len(tr.Insts)
	if n < 2 || len(tr.Insts[n-2].Ints) != 2 || len(tr.Insts[n-1].Ints) != 3 {
		t.Fatalf("want unpack (2 values) and pack (3 values) as the last steps, trace %v", tr.Insts)
	}
	var traces []*schedule.Trace
	for u := range int64(2) {
		for p := range int64(3) {
			v, err := tr.WithDecision(n-2, []int64{u})
			if err == nil {
				v, err = v.WithDecision(n-1, []int64{p})
			}
			if err != nil {
				t.Fatal(err)
			}
			traces = append(traces, v)
		}
	}
	cases := kerneltest.Run(t, tg, hw, q, kerneltest.Options{Draws: 1, Traces: traces})
	if len(cases) != 8 {
		t.Fatalf("%d cases, want default, a draw and 6 traces", len(cases))
	}
}

// testQuantLinearCheckFailsWrongReference shows the suite can fail for
// this kernel: a reference that reads the nibbles in the wrong order
// disagrees with every correct schedule.
func testQuantLinearCheckFailsWrongReference(t *testing.T, tg *cpu.Target) {
	q := kernels.QuantLinear{M: 1, N: 9, K: 64, Bits: 4, Group: 32}
	kerneltest.Expect(t, tg, search.CPUHardware(tg.CPU(), 1), nibbleSwapped{q}, target.StatusWrongResult)
}

// nibbleSwapped reads the packed bytes high nibble first: a kernel that
// honours ref.PackInt4's low-nibble-first layout disagrees with it.
type nibbleSwapped struct{ kernels.QuantLinear }

func (n nibbleSwapped) Reference(in [][]float64) [][]float64 {
	w := make([]float64, len(in[1]))
	for i, v := range in[1] {
		b := byte(v)
		w[i] = float64(b<<4 | b>>4)
	}
	return n.QuantLinear.Reference([][]float64{in[0], w, in[2]})
}

// TestQuantLinearKnobsChangeCode checks that every knob value gives
// different C, that the default is a point of the space, and that the
// decode template picks the requested vector paths.
func TestQuantLinearKnobsChangeCode(t *testing.T) {
	hw := kernels.Hardware{VectorBits: 512, Threads: 2}
	for _, q := range []kernels.QuantLinear{
		{M: 1, N: 4096, K: 4096, Bits: 4, Group: 128},
		{M: 4, N: 4096, K: 4096, Bits: 8, Group: 4096},
		{M: 100, N: 256, K: 512, MBucket: 128, Bits: 4, Group: 64},
	} {
		t.Run(q.Name(), func(t *testing.T) {
			def, err := q.Def()
			if err != nil {
				t.Fatal(err)
			}
			d, err := schedule.New(def, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := q.Default(d, hw); err != nil {
				t.Fatal(err)
			}
			base, err := q.EmitC(d, hw, "llmir_kernel")
			if err != nil {
				t.Fatal(err)
			}
			tr := d.Trace()
			for i, in := range tr.Insts {
				for c := range in.Ints {
					if int64(c) == in.Decision[0] {
						continue
					}
					mt, err := tr.WithDecision(i, []int64{int64(c)})
					if err != nil {
						t.Fatal(err)
					}
					s, err := schedule.Replay(def, mt)
					if err != nil {
						t.Fatalf("step %d value %d: %v", i, in.Ints[c].Lit, err)
					}
					src, err := q.EmitC(s, hw, "llmir_kernel")
					if err != nil {
						t.Fatal(err)
					}
					if src == base {
						t.Errorf("step %d: value %d gives the default's code", i, in.Ints[c].Lit)
					}
				}
			}
			if q.Bits == 4 && q.M == 1 && !strings.Contains(base, "__builtin_shuffle(qtab") {
				t.Error("int4 decode default does not unpack by table lookup")
			}
			if q.M > 16 && !strings.Contains(base, "qmicro") {
				t.Error("prefill default has no register tile")
			}
			// A trace of another design space is refused.
			other := kernels.QuantLinear{M: 1, N: 8, K: 64, Bits: 8, Group: 64}
			if _, err := other.EmitC(d, kernels.Hardware{VectorBits: 512, Threads: 1}, "f"); err == nil {
				t.Error("emitted a schedule of another design space")
			}
		})
	}
}

// TestQuantLinearFromWorkload reads the IR's workload of a parsed module
// and rejects malformed ones with errors naming what is wrong.
func TestQuantLinearFromWorkload(t *testing.T) {
	src := `module {
  func.func @f(%x: tensor<?x256xf32, #llmir.dims<["tokens"]>>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>> attributes {llmir.dims = {tokens = 3 : i64}} {
    %qw = "llmir.param"() {name = "qw"} : () -> tensor<48x256xi4>
    %qs = "llmir.param"() {name = "qs"} : () -> tensor<48x2xf32>
    %y = "llmir.quantized_linear"(%x, %qw, %qs) {bits = 4 : i64, group_size = 128 : i64} : (tensor<?x256xf32, #llmir.dims<["tokens"]>>, tensor<48x256xi4>, tensor<48x2xf32>) -> tensor<?x48xf32, #llmir.dims<["tokens"]>>
    return %y : tensor<?x48xf32, #llmir.dims<["tokens"]>>
  }
}
`
	m, err := ir.ParseString("q.mlir", src)
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := ir.Tasks(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	var w ir.Workload
	for _, task := range tasks {
		if task.Workload.Group[0] == "llmir.quantized_linear" {
			w = task.Workload
		}
	}
	if w.Group == nil {
		t.Fatalf("no quantized_linear task in %v", tasks)
	}
	k, err := kernels.FromWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	q := k.(kernels.QuantLinear)
	if q.M != 4 || q.N != 48 || q.K != 256 || q.Bits != 4 || q.Group != 128 {
		t.Errorf("kernel %s from %s", q.Name(), w.Name())
	}
	if k.Workload().Key() != w.Key() {
		t.Error("kernel reports another workload than the IR's")
	}
	// Without IR, the kernel builds the same key as the module's.
	plain := kernels.QuantLinear{M: 3, MBucket: 4, N: 48, K: 256, Bits: 4, Group: 128}
	if plain.Workload().Key() != w.Key() {
		t.Errorf("workload of %s:\n%s\nwant\n%s", plain.Name(), plain.Workload().CanonicalJSON(), w.CanonicalJSON())
	}

	mutate := func(f func(w *ir.Workload)) ir.Workload {
		c := w
		c.Attrs = map[string]string{}
		for a, v := range w.Attrs {
			c.Attrs[a] = v
		}
		c.Inputs = append([]ir.TensorSig(nil), w.Inputs...)
		f(&c)
		return c
	}
	for _, c := range []struct {
		name string
		w    ir.Workload
		want string
	}{
		{"no bits", mutate(func(w *ir.Workload) { delete(w.Attrs, "bits") }), "attribute bits is missing"},
		{"bits 3", mutate(func(w *ir.Workload) { w.Attrs["bits"] = "3 : i64" }), "bits = 3, want 4 or 8"},
		{"bits text", mutate(func(w *ir.Workload) { w.Attrs["bits"] = `"four"` }), `bits = "\"four\"" is not an integer`},
		{"bits float", mutate(func(w *ir.Workload) { w.Attrs["bits"] = "4.0 : f32" }), "is not an integer"},
		{"bits 8 on i4", mutate(func(w *ir.Workload) { w.Attrs["bits"] = "8 : i64" }), "want [N, K] of i8"},
		{"group 0", mutate(func(w *ir.Workload) { w.Attrs["group_size"] = "0 : i64" }), "group_size = 0 does not divide"},
		{"group 100", mutate(func(w *ir.Workload) { w.Attrs["group_size"] = "100 : i64" }), "group_size = 100 does not divide the input dim 256"},
		{"scales", mutate(func(w *ir.Workload) { w.Inputs[2] = ir.TensorSig{Shape: []int64{48, 4}, DType: "f32"} }), "scales [48 4], want [48, 2]"},
		{"x dtype", mutate(func(w *ir.Workload) { w.Inputs[0].DType = "bf16" }), "must be f32"},
		{"K mismatch", mutate(func(w *ir.Workload) { w.Inputs[1] = ir.TensorSig{Shape: []int64{48, 128}, DType: "i4"} }), "do not match"},
		{"arity", mutate(func(w *ir.Workload) { w.Inputs = w.Inputs[:2] }), "2 operands"},
	} {
		_, err := kernels.FromWorkload(c.w)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	if _, err := kernels.FromWorkload(mutate(func(w *ir.Workload) { w.Group = []string{"llmir.quantized_linear", "llmir.silu"} })); !errors.Is(err, kernels.ErrNoKernel) {
		t.Errorf("fused group: %v", err)
	}
}

func TestQuantLinearRejectsBadShapes(t *testing.T) {
	for _, q := range []kernels.QuantLinear{
		{M: 0, N: 1, K: 32, Bits: 4, Group: 32},
		{M: 9, MBucket: 8, N: 1, K: 32, Bits: 4, Group: 32},
		{M: 1, N: 1, K: 32, Bits: 2, Group: 32},
		{M: 1, N: 1, K: 32, Bits: 8, Group: 24},
		{M: 1, N: 1, K: 7, Bits: 4, Group: 7},
	} {
		if _, err := q.Def(); err == nil {
			t.Errorf("%+v: accepted", q)
		}
	}
}
