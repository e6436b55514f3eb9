package search_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/search"
	"llmir/target/cpu/cgen"
)

// tinyModule has a prefill of 8 tokens and a decode of 1, each with two
// linear layers (one shared shape) and a silu (which may have no kernel).
const tinyModule = `module @tiny {
  func.func @prefill(%arg0: tensor<?x?x32xf32, #llmir.dims<["batch", "seq"]>>) -> (tensor<?x?x24xf32, #llmir.dims<["batch", "seq"]>>) attributes {llmir.dims = {batch = 1 : i64, seq = 8 : i64}} {
    %0 = "llmir.param"() {name = "w1"} : () -> tensor<32x32xf32>
    %1 = "llmir.linear"(%arg0, %0) : (tensor<?x?x32xf32, #llmir.dims<["batch", "seq"]>>, tensor<32x32xf32>) -> tensor<?x?x32xf32, #llmir.dims<["batch", "seq"]>>
    %2 = "llmir.silu"(%1) : (tensor<?x?x32xf32, #llmir.dims<["batch", "seq"]>>) -> tensor<?x?x32xf32, #llmir.dims<["batch", "seq"]>>
    %3 = "llmir.param"() {name = "w2"} : () -> tensor<24x32xf32>
    %4 = "llmir.linear"(%2, %3) : (tensor<?x?x32xf32, #llmir.dims<["batch", "seq"]>>, tensor<24x32xf32>) -> tensor<?x?x24xf32, #llmir.dims<["batch", "seq"]>>
    return %4 : tensor<?x?x24xf32, #llmir.dims<["batch", "seq"]>>
  }
  func.func @decode(%arg0: tensor<?x32xf32, #llmir.dims<["batch"]>>) -> (tensor<?x24xf32, #llmir.dims<["batch"]>>) attributes {llmir.dims = {batch = 1 : i64}} {
    %0 = "llmir.param"() {name = "w1"} : () -> tensor<32x32xf32>
    %1 = "llmir.linear"(%arg0, %0) : (tensor<?x32xf32, #llmir.dims<["batch"]>>, tensor<32x32xf32>) -> tensor<?x32xf32, #llmir.dims<["batch"]>>
    %2 = "llmir.param"() {name = "w2"} : () -> tensor<24x32xf32>
    %3 = "llmir.linear"(%1, %2) : (tensor<?x32xf32, #llmir.dims<["batch"]>>, tensor<24x32xf32>) -> tensor<?x24xf32, #llmir.dims<["batch"]>>
    return %3 : tensor<?x24xf32, #llmir.dims<["batch"]>>
  }
}
`

func parseTiny(t *testing.T) *ir.Module {
	t.Helper()
	m, err := ir.ParseString("tiny.mlir", tinyModule)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// cancelAfterSteps is a Log writer that cancels the tune after n steps.
type cancelAfterSteps struct {
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfterSteps) Write(p []byte) (int, error) {
	if c.n--; c.n <= 0 {
		c.cancel()
	}
	return len(p), nil
}

// dupRecords counts (workload, trace) pairs recorded more than once.
func dupRecords(t *testing.T, f fixture, device string) (n, dups int) {
	t.Helper()
	seen := map[string]bool{}
	for r, err := range f.db.DeviceRecords(context.Background(), device, cgen.CodegenVersion) {
		if err != nil {
			t.Fatal(err)
		}
		k := r.WorkloadKey + string(r.Trace)
		if seen[k] {
			dups++
		}
		seen[k] = true
		n++
	}
	return n, dups
}

// TestTuneModelEndToEnd tunes the tiny module with real gcc: four linear
// workloads (two shapes × prefill and decode) get a default and tuned
// time, the silu is listed without a kernel if the library has none, the
// per-token estimates add up from the tasks, the cost model is saved for
// the device; a cancelled tune keeps what it measured, and rerunning it
// resumes without measuring any trace twice.
func TestTuneModelEndToEnd(t *testing.T) {
	f := newFixture(t)
	m := parseTiny(t)
	opts := search.ModelOptions{
		Target: f.tg, DB: f.db, Threads: 1, Budget: search.ModelBudget{Trials: 10},
		Step: 2, Run: quick, Seed: 3, Confirm: -1, LLMIRVersion: "test",
		Evolve: search.EvolveOptions{Population: 24},
	}
	ctx, cancel := context.WithCancel(context.Background())
	o1 := opts
	o1.Log = &cancelAfterSteps{n: 3, cancel: cancel}
	r1, err := search.TuneModel(ctx, m, o1)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled tune: err %v", err)
	}
	n1, dups := dupRecords(t, f, r1.Device)
	if n1 == 0 || dups != 0 {
		t.Fatalf("after cancel: %d records, %d duplicates", n1, dups)
	}

	var bars bytes.Buffer
	o2 := opts
	o2.Progress = &bars
	res, err := search.TuneModel(context.Background(), m, o2)
	if err != nil {
		t.Fatal(err)
	}
	// The overall bar ends its line, so that the table printed after it
	// starts on its own.
	if out := bars.String(); !strings.Contains(out, "model") || !strings.HasSuffix(out, "\n") {
		t.Errorf("overall progress bar missing or its line not ended:\n%q", out)
	}
	n2, dups := dupRecords(t, f, res.Device)
	if dups != 0 {
		t.Errorf("after resume: %d duplicate records", dups)
	}
	if res.Trials != 10 || n2 != 10 {
		t.Errorf("trials %d, records %d; want the budget 10 (resumed %d included)", res.Trials, n2, n1)
	}
	if res.Measured != 10-n1 {
		t.Errorf("resumed run measured %d, want %d (10 − %d from the cancelled run)", res.Measured, 10-n1, n1)
	}
	// Four linear workloads (two shapes × prefill and decode), and the
	// silu as a task or as "no kernel", whichever the library has.
	linears := 0
	for _, tr := range res.Tasks {
		if strings.HasPrefix(tr.Name, "linear/") {
			linears++
		} else if tr.Group != "llmir.silu" {
			t.Errorf("unexpected task %s", tr.Name)
		}
	}
	if linears != 4 || len(res.Tasks)+len(res.NoKernel) != 5 {
		t.Fatalf("%d linear tasks of %d, %d without kernel; want 4 linear of 5 workloads", linears, len(res.Tasks), len(res.NoKernel))
	}
	for _, nk := range res.NoKernel {
		if nk.Group != "llmir.silu" {
			t.Errorf("no kernel for %s", nk.Group)
		}
	}
	for _, tr := range res.Tasks {
		if math.IsNaN(tr.Best) || math.IsNaN(tr.Default) || tr.Best <= 0 || tr.Trials < 1 {
			t.Errorf("task %s: default %v best %v trials %d", tr.Name, tr.Default, tr.Best, tr.Trials)
		}
		if tr.Best > tr.Default*1.0001 {
			t.Errorf("task %s: best %v slower than default %v", tr.Name, tr.Best, tr.Default)
		}
		if tr.Occurrences != 1 {
			t.Errorf("task %s: %d occurrences, want 1", tr.Name, tr.Occurrences)
		}
	}
	// Each group here is one op, so a function's estimate is the sum of
	// its tasks' best times (a workload without a kernel is left out),
	// over its tokens: 1 for decode, batch 1 × seq 8 for prefill.
	var dec, pre float64
	for _, tr := range res.Tasks {
		switch tr.Funcs[0] {
		case "decode":
			dec += tr.Best
		case "prefill":
			pre += tr.Best
		}
	}
	if math.Abs(res.Decode.Tuned-dec) > 1e-12 {
		t.Errorf("decode per token %v, want the sum of its tasks %v", res.Decode.Tuned, dec)
	}
	if math.Abs(res.Prefill.Tuned-pre/8) > 1e-12 {
		t.Errorf("prefill per token %v, want %v / 8 tokens", res.Prefill.Tuned, pre)
	}
	if res.Decode.Tuned > res.Decode.Default*1.0001 {
		t.Errorf("decode tuned %v slower than default %v", res.Decode.Tuned, res.Decode.Default)
	}
	if _, err := f.db.Model(context.Background(), res.Device, search.ModelName, cgen.CodegenVersion); err != nil {
		t.Errorf("cost model not saved: %v", err)
	}
	if _, err := search.TuneModel(context.Background(), m, search.ModelOptions{Target: f.tg, DB: f.db, Strategy: "annealing"}); err == nil {
		t.Error("unknown strategy accepted")
	}
}

// TestTuneModelTooLarge: a task whose problem (float64 inputs and
// reference) passes MaxProblemBytes is listed in TooLarge with its size
// and never measured; the others are tuned. Here both prefill linears
// (12 and 9.5 KiB) pass a 9000-byte cap, the decode ones (8.5 and
// 6.4 KiB) do not.
func TestTuneModelTooLarge(t *testing.T) {
	f := newFixture(t)
	m := parseTiny(t)
	opts := search.ModelOptions{
		Target: f.tg, DB: f.db, Threads: 1, Budget: search.ModelBudget{Trials: 2},
		Step: 1, Run: quick, Seed: 3, Confirm: -1, LLMIRVersion: "test", Only: []string{"linear"},
		MaxProblemBytes: 9000,
	}
	res, err := search.TuneModel(context.Background(), m, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.TooLarge) != 2 {
		t.Fatalf("too large: %+v, want the two prefill linears", res.TooLarge)
	}
	for i, want := range []string{"12.0 KiB", "9.5 KiB"} {
		n := res.TooLarge[i]
		if !strings.HasPrefix(n.Name, "llmir.linear(1x8x32xf32,") || n.Reason != "its problem holds "+want+" of float64 inputs and reference, over the 8.8 KiB this machine allows" {
			t.Errorf("too large: %s: %s", n.Name, n.Reason)
		}
	}
	if len(res.Tasks) != 2 {
		t.Errorf("tuned %d tasks, want the two decode linears", len(res.Tasks))
	}
	for _, tr := range res.Tasks {
		if !strings.HasPrefix(tr.Name, "linear/M=1,") {
			t.Errorf("tuned %s, want only decode (M=1) linears", tr.Name)
		}
	}
	opts.Funcs = []string{"prefill"}
	if _, err := search.TuneModel(context.Background(), m, opts); !errors.Is(err, search.ErrNoTasks) || !strings.Contains(err.Error(), "2 too large for this machine") {
		t.Errorf("prefill only, both too large: %v", err)
	}
}
