package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"llmir/search"
	"llmir/target/cpu/cputest"
)

type tuneJSON struct {
	Model string
	Tasks []struct {
		Name        string
		Occurrences int
		Default     *float64
		Best        *float64
		Trials      int
		Measured    int
	}
	Decode, Prefill  struct{ Default, Tuned float64 }
	Trials, Measured int
	Skipped          []struct{ Group string }
}

// TestTuneAndCompile tunes llama-tiny's linear layers (short prompt, tiny
// budget, no confirmation) through the CLI, checks the JSON result, checks
// that a rerun resumes without measuring, then compiles the model from
// that database and checks the fallback order the table and manifest
// report: tuned linears from the user database, everything else by rule,
// and with no database at all, everything by rule.
func TestTuneAndCompile(t *testing.T) {
	cputest.Need(t, "gcc")
	dir := isolate(t)
	args := []string{"tune", "--preset", "llama-tiny", "--only", "linear", "--dims", "seq=4", "--trials", "10",
		"--batch", "2", "--min-time", "1ms", "--confirm", "0", "--db", "tune.db", "--json"}
	out, _, err := runCLI(t, dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	var r tuneJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("tune --json: %v\n%s", err, out)
	}
	if r.Model != "llama-tiny" || len(r.Tasks) == 0 || len(r.Skipped) == 0 {
		t.Fatalf("model %q, %d tasks, %d skipped", r.Model, len(r.Tasks), len(r.Skipped))
	}
	for _, tk := range r.Tasks {
		if !strings.HasPrefix(tk.Name, "linear/") || tk.Trials < 1 || tk.Occurrences < 1 {
			t.Errorf("task %+v", tk)
		}
		if tk.Best == nil || tk.Default == nil || *tk.Best > *tk.Default*1.0001 {
			t.Errorf("task %s: default %v best %v", tk.Name, tk.Default, tk.Best)
		}
	}
	if r.Trials < 10 || r.Measured != r.Trials {
		t.Errorf("first run: %d trials, %d measured", r.Trials, r.Measured)
	}
	// Fusion puts most linears into groups with other ops, which --only
	// leaves untimed, so the estimates cover part of the model.
	if !(r.Decode.Tuned > 0) || r.Decode.Tuned > r.Decode.Default*1.0001 || r.Prefill.Tuned < 0 {
		t.Errorf("estimates: decode %+v prefill %+v", r.Decode, r.Prefill)
	}
	out, _, err = runCLI(t, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	var again tuneJSON
	if err := json.Unmarshal([]byte(out), &again); err != nil {
		t.Fatal(err)
	}
	if again.Measured != 0 || again.Trials != r.Trials {
		t.Errorf("rerun measured %d (want 0), trials %d (want %d)", again.Measured, again.Trials, r.Trials)
	}

	// The table names where each schedule came from.
	out, _, err = runCLI(t, "", "compile", "--preset", "llama-tiny", "--dims", "seq=4", "--db", "tune.db", "--no-precompiled", "-o", "build", "--buckets", "seq=16")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "from the user database") || !strings.Contains(out, " user ") || !strings.Contains(out, " default ") {
		t.Errorf("compile table:\n%s", out)
	}
	var man struct {
		Kernels []struct {
			Name, Symbol, File, From, Level string
			Bucket                          int64
		}
		Dispatch map[string][]struct {
			Bucket int64
			Symbol string
		}
		Groups []struct{ Chosen, Reason string }
	}
	data, err := os.ReadFile(filepath.Join("build", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &man); err != nil {
		t.Fatal(err)
	}
	tuned := map[string]bool{}
	for _, tk := range r.Tasks {
		tuned[tk.Name] = true
	}
	levels := map[string]int{}
	for _, k := range man.Kernels {
		levels[k.From+"/"+k.Level]++
		switch {
		case tuned[k.Name] && (k.From != "user" || k.Level != "exact"):
			t.Errorf("tuned kernel %s from %s/%s, want user/exact", k.Name, k.From, k.Level)
		case !tuned[k.Name] && k.From == "user" && k.Level != "nearest-bucket":
			// Untuned linears at seq=16 take the seq=4 record of their
			// family (the nearest bucket); other ops have no record.
			t.Errorf("untuned kernel %s from %s/%s, want nearest-bucket or default", k.Name, k.From, k.Level)
		case !tuned[k.Name] && k.From != "user" && k.From != "default":
			t.Errorf("kernel %s from %q", k.Name, k.From)
		}
		src, err := os.ReadFile(filepath.Join("build", k.File))
		if err != nil || !strings.Contains(string(src), k.Symbol+"(") {
			t.Errorf("kernel %s: source %s lacks its symbol (%v)", k.Name, k.File, err)
		}
	}
	if levels["user/exact"] == 0 || levels["user/nearest-bucket"] == 0 || levels["default/rule"] == 0 {
		t.Errorf("fallback levels %v: want exact, nearest-bucket and rule-based kernels", levels)
	}
	// Prefill workloads at seq=4 and, from --buckets, seq=16: one family,
	// two buckets, smallest first.
	twoBuckets := false
	for _, es := range man.Dispatch {
		if len(es) == 2 && es[0].Bucket == 4 && es[1].Bucket == 16 {
			twoBuckets = true
		}
	}
	if !twoBuckets {
		t.Errorf("no family dispatched over buckets 1 and 4: %v", man.Dispatch)
	}
	hdr, err := os.ReadFile(filepath.Join("build", "llmir_kernels.h"))
	if err != nil || !strings.Contains(string(hdr), "llmir_dispatch") {
		t.Errorf("header: %v", err)
	}
	if len(man.Groups) == 0 || man.Groups[0].Chosen == "" {
		t.Errorf("groups: %+v", man.Groups)
	}

	// Without a user database, everything is a rule-based default.
	out, stderr, err := runCLI(t, "", "compile", "--preset", "llama-tiny", "--dims", "seq=4", "--db", "missing.db", "--no-precompiled", "-o", "build2", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "does not exist") {
		t.Errorf("no note about the missing database: %q", stderr)
	}
	if strings.Contains(out, `"from": "user"`) || !strings.Contains(out, `"from": "default"`) {
		t.Errorf("compile without a database:\n%s", out)
	}
}

// cancelAtStep collects stderr and cancels the run at the tuner's first
// step line, as a SIGINT part-way through a tune does.
type cancelAtStep struct {
	bytes.Buffer
	cancel context.CancelFunc
	once   sync.Once
}

func (c *cancelAtStep) Write(p []byte) (int, error) {
	n, err := c.Buffer.Write(p)
	if bytes.HasPrefix(p, []byte("step ")) {
		c.once.Do(c.cancel)
	}
	return n, err
}

// TestTuneInterruptedErrorOnce: an interrupted tune prints what it
// measured and returns the interruption once, saying where the
// measurements are (main prints it); it used to print the same error to
// stderr as well, so the user saw it twice.
func TestTuneInterruptedErrorOnce(t *testing.T) {
	cputest.Need(t, "gcc")
	t.Chdir(isolate(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := newRootCmd()
	var out bytes.Buffer
	stderr := &cancelAtStep{cancel: cancel}
	cmd.SetArgs([]string{"tune", "--preset", "llama-tiny", "--only", "linear", "--dims", "seq=4", "--trials", "100",
		"--batch", "2", "--min-time", "1ms", "--confirm", "0", "--db", "tune.db"})
	cmd.SetOut(&out)
	cmd.SetErr(stderr)
	cmd.SetIn(strings.NewReader(""))
	err := cmd.ExecuteContext(ctx)
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "tune stopped: ") ||
		!strings.Contains(err.Error(), "tune.db; rerun to resume)") {
		t.Fatalf("error %v, want the interruption with where the measurements are\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "step 1: ") || strings.Contains(stderr.String(), "canceled") || strings.Contains(stderr.String(), "tune stopped") {
		t.Errorf("stderr repeats the error or lacks the step log:\n%s", stderr.String())
	}
	if !strings.Contains(out.String(), "model llama-tiny: ") {
		t.Errorf("the table of what was measured is missing:\n%s", out.String())
	}
}

// TestTuneCompileErrors: bad arguments, a module that does not parse and
// a --db file that is not a tuning database are errors naming the problem,
// before anything is measured.
func TestTuneCompileErrors(t *testing.T) {
	dir := isolate(t)
	if err := os.WriteFile(filepath.Join(dir, "bad.mlir"), []byte("garbage {\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.db"), []byte("not a database, some notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"tune"}, "give MODEL.mlir or --preset"},
		{[]string{"tune", "a.mlir", "--preset", "llama-tiny"}, "not both"},
		{[]string{"tune", "--preset", "llama-tiny", "--trials", "-1"}, "--trials -1"},
		{[]string{"tune", "--preset", "llama-tiny", "--target", "tpu"}, "want cpu or cuda"},
		{[]string{"tune", "--preset", "llama-tiny", "--target", "cuda", "--threads", "2"}, "tuned at threads 1"},
		{[]string{"compile", "--preset", "llama-tiny", "-o", "x", "--target", "tpu"}, "want cpu or cuda"},
		{[]string{"compile", "--preset", "llama-tiny", "-o", "x", "--gpu", "sm_90"}, "--gpu needs --target cuda"},
		{[]string{"tune", "--preset", "llama-tiny", "--strategy", "annealing"}, "--strategy"},
		{[]string{"tune", "--preset", "llama-tiny", "--replay", "-1", "--db", "notes.db"}, "--replay -1: want ≥ 0"},
		{[]string{"tune", "--preset", "llama-tiny", "--dims", "seq"}, "NAME=N"},
		// A name the module lacks is an error listing its names (notes.db
		// stops a regression before it tunes or compiles).
		{[]string{"tune", "--preset", "llama-tiny", "--dims", "nosuch=4", "--db", "notes.db"}, "--dims: llama-tiny: no dynamic dim named nosuch in the module (its dynamic dims: batch, max_blocks, seq)"},
		{[]string{"compile", "--preset", "llama-tiny", "--dims", "seq=4,nosuch=4", "--db", "notes.db", "-o", "x"}, "--dims: llama-tiny: no dynamic dim named nosuch"},
		{[]string{"compile", "--preset", "llama-tiny", "--buckets", "sequence=16", "--db", "notes.db", "-o", "x"}, "--buckets: llama-tiny: no dynamic dim named sequence"},
		{[]string{"tune", "--preset", "nope"}, "unknown preset"},
		{[]string{"tune", "missing.mlir"}, "missing.mlir"},
		{[]string{"compile", "--preset", "llama-tiny"}, "-o DIR"},
		{[]string{"compile", "-o", "x"}, "give MODEL.mlir or --preset"},
		{[]string{"compile", "--preset", "llama-tiny", "-o", "x", "--threads", "0"}, "--threads 0"},
		{[]string{"tune", "--preset", "llama-tiny", "--time", "ten"}, `invalid duration "ten"`},
		{[]string{"tune", "--preset", "llama-tiny", "--time", "-5s"}, "--time -5s"},
		{[]string{"tune", "bad.mlir"}, "bad.mlir:1:1"},
		{[]string{"compile", "bad.mlir", "-o", "x"}, "bad.mlir:1:1"},
		{[]string{"tune", "--preset", "llama-tiny", "--trials", "1", "--db", "notes.db"}, "not an SQLite database"},
		{[]string{"compile", "--preset", "llama-tiny", "--db", "notes.db", "-o", "x"}, "not an SQLite database"},
	}
	for _, c := range cases {
		_, _, err := runCLI(t, dir, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want it to mention %q", c.args, err, c.want)
		}
	}
}

// printTune counts only workloads with trials as tuned and says how many the
// budget did not reach.
func TestPrintTuneUnreached(t *testing.T) {
	res := &search.ModelResult{Strategy: "evolutionary", Threads: 1, Trials: 6, Measured: 6, Tasks: []search.TaskReport{
		{Name: "linear/M=1,N=8,K=8/f32", Occurrences: 2, Default: 2e-6, Best: 1e-6, Speedup: 2, Trials: 6, Stopped: "budget"},
		{Name: "linear/M=512,N=8,K=8/f32", Occurrences: 2, Default: math.NaN(), Best: math.NaN(), Speedup: math.NaN(), Stopped: "budget"},
	}}
	var b strings.Builder
	printTune(&b, "m", res)
	out := b.String()
	for _, want := range []string{"model m: 1 of 2 workloads tuned", "1 workloads not reached within the budget"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	res.Tasks = res.Tasks[:1]
	b.Reset()
	printTune(&b, "m", res)
	if out := b.String(); !strings.Contains(out, "model m: 1 of 1 workloads tuned") || strings.Contains(out, "not reached") {
		t.Errorf("every workload reached:\n%s", out)
	}
}

// TestCompilePresetsWithoutSomeKernels: a checkpoint-dtype (bf16) preset
// compiles on the CPU with its linears listed as having no kernel (it used
// to stop at the first bf16 rms_norm+linear), and qwen2-7b in f32 compiles
// every workload, its biased q/k/v projections as linear+bias kernels.
func TestCompilePresetsWithoutSomeKernels(t *testing.T) {
	dir := isolate(t)
	manifest := func(out string, args ...string) search.CompiledModel {
		t.Helper()
		if _, _, err := runCLI(t, dir, append([]string{"compile", "-o", out, "--db", "c.db"}, args...)...); err != nil {
			t.Fatalf("compile %v: %v", args, err)
		}
		b, err := os.ReadFile(filepath.Join(dir, out, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		var m search.CompiledModel
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := manifest("llama", "--preset", "llama-3-8b")
	if len(m.Kernels) == 0 || len(m.NoKernel) == 0 {
		t.Fatalf("llama-3-8b bf16: %d kernels, %d without one", len(m.Kernels), len(m.NoKernel))
	}
	for _, nk := range m.NoKernel {
		if !strings.Contains(nk.Group, "linear") {
			t.Errorf("llama-3-8b bf16: %s (%s) has no kernel: %s", nk.Name, nk.Group, nk.Reason)
		}
	}
	m = manifest("qwen", "--preset", "qwen2-7b", "--dtype", "f32")
	var biased int
	for _, k := range m.Kernels {
		if strings.HasPrefix(k.Name, "linear+bias/") {
			biased++
		}
	}
	if len(m.NoKernel) != 0 || biased != 4 {
		t.Errorf("qwen2-7b f32: %d without a kernel (%v), %d linear+bias kernels, want 0 and 4 (q and k/v projections, prefill and decode)", len(m.NoKernel), m.NoKernel, biased)
	}
}
