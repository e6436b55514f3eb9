package search_test

import (
	"context"
	"errors"
	"fmt"
	"llmir/target/cpu/cgen"
	"llmir/target/cpu/cputest"
	"path/filepath"
	"testing"
	"time"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/schedule/recipe"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// quick is the timing protocol for tests: correctness and plumbing only.
var quick = target.RunOptions{Warmup: time.Millisecond, Budget: time.Millisecond, MinSamples: 3, MaxSamples: 3, Timeout: 20 * time.Second}

type fixture struct {
	tg *cpu.Target
	db *tuningdb.DB
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	cputest.Need(t, "gcc")
	ctx := context.Background()
	tg, err := cpu.New(ctx, cpu.Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	db, err := tuningdb.Open(ctx, filepath.Join(t.TempDir(), "tuning.db"), tuningdb.Options{LLMIRVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return fixture{tg, db}
}

func (f fixture) tuner(opts search.Options) *search.Tuner {
	opts.Run = quick
	opts.LLMIRVersion = "test"
	return search.NewCPUTuner(f.tg, nil, f.db, opts)
}

// records is every record of the task's workload on the fixture's device.
func (f fixture) records(t *testing.T, tu *search.Tuner, k kernels.Kernel, threads int) []tuningdb.Record {
	t.Helper()
	key := search.WorkloadOf(k, threads).Key
	var out []tuningdb.Record
	for r, err := range f.db.DeviceRecords(context.Background(), tu.Device.Hash, cgen.CodegenVersion) {
		if err != nil {
			t.Fatal(err)
		}
		if r.WorkloadKey == key {
			out = append(out, r)
		}
	}
	return out
}

// TestTuneRecordsAndResumes tunes a small decode shape in two steps: the
// first run measures the default plus draws and records every one; the
// second, with a larger budget, resumes from the database, measures only the
// difference and never repeats a trace; a third with the same budget
// measures nothing.
func TestTuneRecordsAndResumes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	k := kernels.Linear{M: 3, N: 33, K: 13}
	// Confirmation re-measures traces; TestTuneConfirmsBest covers it.
	tu := f.tuner(search.Options{Budget: search.Budget{Trials: 5}, BatchSize: 3, Seed: 7, Confirm: -1})
	task := search.Task{Kernel: k, Threads: 1}

	r1, err := tu.Tune(ctx, task, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r1.Measured) != 5 || r1.Resumed != 0 || r1.Counts[target.StatusOK] != 5 {
		t.Fatalf("first tune: measured %d, resumed %d, counts %v; want 5 ok, none resumed", len(r1.Measured), r1.Resumed, r1.Counts)
	}
	if !r1.Measured[0].Default || r1.Default == nil || r1.Default.Index != 0 {
		t.Errorf("candidate 0 is not the default: %+v", r1.Measured[0])
	}
	if r1.Best == nil || !r1.Best.Measurement.OK() {
		t.Fatalf("no best: %+v", r1.Best)
	}
	for _, tr := range r1.Measured {
		if target.Faster(tr.Measurement, r1.Best.Measurement) {
			t.Errorf("trial %d (%.3g s) is strictly faster than the best (%.3g s)", tr.Index, tr.Measurement.Median, r1.Best.Measurement.Median)
		}
	}
	recs := f.records(t, tu, k, 1)
	if len(recs) != 5 {
		t.Fatalf("%d records after the first tune, want 5", len(recs))
	}
	for _, r := range recs {
		if r.RunID != r1.RunID || r.CodegenVersion != cgen.CodegenVersion || r.Status != tuningdb.StatusOK || len(r.Samples) != 3 {
			t.Errorf("record: run %d (want %d), codegen %d, status %s, %d samples", r.RunID, r1.RunID, r.CodegenVersion, r.Status, len(r.Samples))
		}
	}
	run, err := f.db.Run(ctx, r1.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if run.EndedAt.IsZero() || run.BudgetTrials != 5 {
		t.Errorf("tuning run not finished or wrong budget: %+v", run)
	}

	tu.Options.Budget.Trials = 8
	r2, err := tu.Tune(ctx, task, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Resumed != 5 || len(r2.Measured) != 3 {
		t.Errorf("second tune: resumed %d, measured %d; want 5 and 3", r2.Resumed, len(r2.Measured))
	}
	if r2.Default == nil || !r2.Default.Resumed {
		t.Errorf("second tune did not find the default among resumed records: %+v", r2.Default)
	}
	recs = f.records(t, tu, k, 1)
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[string(r.Trace)] {
			t.Errorf("trace measured twice: %s", r.Trace)
		}
		seen[string(r.Trace)] = true
	}
	if len(recs) != 8 {
		t.Errorf("%d records after the second tune, want 8", len(recs))
	}

	r3, err := tu.Tune(ctx, task, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r3.Measured) != 0 || r3.Resumed != 8 {
		t.Errorf("third tune: measured %d, resumed %d; want 0 and 8", len(r3.Measured), r3.Resumed)
	}
	if r3.Best == nil {
		t.Error("third tune lost the best")
	}

	// A kernel whose rule-based default changed since: its new default is
	// measured although the budget is spent.
	r5, err := tu.Tune(ctx, search.Task{Kernel: newDefault{k}, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r5.Measured) != 1 || !r5.Measured[0].Default || r5.Default == nil || r5.Default.Resumed {
		t.Errorf("changed default: measured %d, default %+v", len(r5.Measured), r5.Default)
	}

	// The same kernel at two threads is another workload: nothing resumes.
	tu.Options.Budget.Trials = 2
	r4, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r4.Resumed != 0 || len(r4.Measured) != 2 || r4.Workload.Key == r1.Workload.Key {
		t.Errorf("two threads: resumed %d, measured %d, same key %v", r4.Resumed, len(r4.Measured), r4.Workload.Key == r1.Workload.Key)
	}
}

// TestTuneConfirmsBest: the best is picked from one batch that measures the
// fastest trials again beside the default; those measurements are recorded
// but are not budget trials.
func TestTuneConfirmsBest(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	k := kernels.Linear{M: 3, N: 33, K: 13}
	tu := f.tuner(search.Options{Budget: search.Budget{Trials: 6}, BatchSize: 3, Seed: 3, Confirm: 2})
	r, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Measured) != 6 {
		t.Fatalf("measured %d budget trials, want 6", len(r.Measured))
	}
	// The two fastest, plus the default when it is not among them.
	if n := len(r.Confirmed); n < 2 || n > 3 {
		t.Fatalf("%d confirmation measurements, want 2 or 3", n)
	}
	if !r.Confirmed[0].Default {
		t.Errorf("the default is not measured first in the confirmation batch: %+v", r.Confirmed[0])
	}
	inConf := false
	for _, c := range r.Confirmed {
		if !c.Measurement.OK() {
			t.Errorf("confirmation of trial %d: %s", c.Index, c.Measurement.Status)
		}
		if c.Index < len(r.Measured) {
			t.Errorf("confirmation trial index %d overlaps the budget trials", c.Index)
		}
		if r.Best != nil && c.Index == r.Best.Index {
			inConf = true
		}
	}
	if !inConf {
		t.Errorf("best (trial %d) is not from the confirmation batch", r.Best.Index)
	}
	for _, c := range r.Confirmed {
		if target.Faster(c.Measurement, r.Best.Measurement) {
			t.Errorf("confirmed trial %d is strictly faster than the best", c.Index)
		}
	}
	if recs := f.records(t, tu, k, 1); len(recs) != 6+len(r.Confirmed) {
		t.Errorf("%d records, want %d budget trials + %d confirmations", len(recs), 6, len(r.Confirmed))
	}
	// A resumed tune counts distinct traces only, and confirms again.
	r2, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Resumed != 6 || len(r2.Measured) != 0 || len(r2.Confirmed) < 2 {
		t.Errorf("resumed %d, measured %d, confirmed %d; want 6, 0, ≥ 2", r2.Resumed, len(r2.Measured), len(r2.Confirmed))
	}
}

// newDefault is the linear layer with another rule-based default (literal
// GEMV tiles no other rule or draw produces).
type newDefault struct{ kernels.Linear }

func (n newDefault) Default(s *schedule.Schedule, hw kernels.Hardware) error {
	_, err := recipe.GEMV(s, "out", recipe.GEMVTiles{NJ: schedule.Lit(2), KV: 1, MR: schedule.Lit(1), JU: schedule.Lit(2)})
	return err
}

// wrongRef is the linear layer with a reference off by one everywhere: every
// candidate is wrong_result, which must be recorded and never become best.
type wrongRef struct{ kernels.Linear }

func (w wrongRef) Reference(in [][]float64) [][]float64 {
	out := w.Linear.Reference(in)
	for i := range out[0] {
		out[0][i]++
	}
	return out
}

func TestTuneRecordsFailures(t *testing.T) {
	f := newFixture(t)
	k := wrongRef{kernels.Linear{M: 2, N: 9, K: 16}}
	tu := f.tuner(search.Options{Budget: search.Budget{Trials: 3}, BatchSize: 3})
	r, err := tu.Tune(context.Background(), search.Task{Kernel: k, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Best != nil {
		t.Errorf("a wrong result became best: %+v", r.Best)
	}
	if r.Counts[target.StatusWrongResult] != 3 {
		t.Errorf("counts %v, want 3 wrong_result", r.Counts)
	}
	recs := f.records(t, tu, k, 1)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	for _, rec := range recs {
		if rec.Status != tuningdb.StatusWrongResult || rec.Error == "" {
			t.Errorf("record %s %q, want wrong_result with its error", rec.Status, rec.Error)
		}
	}
}

// cancelAfter wraps a strategy and cancels the tune once it has observed a
// batch, as a user's Ctrl-C between two batches would.
type cancelAfter struct {
	search.Strategy
	cancel context.CancelFunc
}

func (c cancelAfter) Observe(ts []search.Trial) {
	c.Strategy.Observe(ts)
	if len(ts) > 0 {
		c.cancel()
	}
}

func TestTuneCancelledKeepsRecords(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := kernels.Linear{M: 1, N: 17, K: 32}
	tu := f.tuner(search.Options{Budget: search.Budget{Trials: 20}, BatchSize: 2,
		NewStrategy: func(k kernels.Kernel, hw kernels.Hardware, seed uint64) search.Strategy {
			return cancelAfter{search.NewRandom(k, hw, seed), cancel}
		}})
	r, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: 1}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if r == nil || len(r.Measured) != 2 {
		t.Fatalf("partial result %+v, want the first batch of 2", r)
	}
	if got := len(f.records(t, tu, k, 1)); got != 2 {
		t.Errorf("%d records after cancellation, want 2", got)
	}
	run, err := f.db.Run(context.Background(), r.RunID)
	if err != nil || run.EndedAt.IsZero() {
		t.Errorf("run not finished after cancellation: %+v, %v", run, err)
	}
}

func TestRandomDeduplicatesAndExhausts(t *testing.T) {
	// M = 1 leaves only the decode template's few knobs: a small space
	// that a hundred draws exhaust.
	k := kernels.Linear{M: 1, N: 64, K: 64}
	hw := kernels.Hardware{VectorBits: 512, Threads: 1}
	r := search.NewRandom(k, hw, 3)
	seen := map[string]bool{}
	ps, err := r.Propose(context.Background(), 100, seen)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) < 2 || len(ps) >= 100 {
		t.Errorf("%d proposals from a small space, want several and fewer than 100", len(ps))
	}
	for _, p := range ps {
		if seen[p.Key] {
			t.Errorf("duplicate proposal %s", p.Key)
		}
		seen[p.Key] = true
	}
	more, err := r.Propose(context.Background(), 5, seen)
	if err != nil || len(more) != 0 {
		t.Errorf("exhausted space gave %d more (%v)", len(more), err)
	}
}

func TestNewProblemAtRuntimeExtent(t *testing.T) {
	k := kernels.Linear{M: 5, N: 17, K: 48, MBucket: 8}
	p, err := search.NewProblem(k, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := []target.BufferSpec{
		{Name: "a", DType: target.F32, Elems: 5 * 48},
		{Name: "w", DType: target.F32, Elems: 17 * 48},
		{Name: "out", DType: target.F32, Elems: 5 * 17, Output: true},
	}
	if len(p.Buffers) != len(want) {
		t.Fatalf("buffers %+v", p.Buffers)
	}
	for i := range want {
		// Only the activation has a Fill (Linear's periodic rows).
		if b := p.Buffers[i]; b.Name != want[i].Name || b.DType != want[i].DType || b.Elems != want[i].Elems || b.Output != want[i].Output || (b.Fill != nil) != (i == 0) {
			t.Errorf("buffer %d: %+v, want %+v", i, p.Buffers[i], want[i])
		}
	}
	if len(p.Dims) != 1 || p.Dims[0] != 5 || p.FLOPs != k.FLOPs() {
		t.Errorf("dims %v, flops %v", p.Dims, p.FLOPs)
	}
	if _, err := search.NewProblem(kernels.Linear{M: 9, N: 1, K: 1, MBucket: 8}, 1); err == nil {
		t.Error("M above its bucket accepted")
	}
}

func TestWorkloadOf(t *testing.T) {
	k := kernels.Linear{M: 5, N: 17, K: 48}
	w1, w2 := search.WorkloadOf(k, 1), search.WorkloadOf(k, 2)
	if w1.Key == w2.Key || w1.Key != search.WorkloadOf(k, 1).Key {
		t.Errorf("keys: 1 thread %s, 2 threads %s", w1.Key, w2.Key)
	}
	if w1.Key != tuningdb.HashJSON(w1.JSON) || w1.Bucket != 8 || w1.Group != "llmir.linear" {
		t.Errorf("workload %+v", w1)
	}
	// M=5 and M=7 share bucket 8, hence the workload.
	if search.WorkloadOf(kernels.Linear{M: 7, N: 17, K: 48}, 1).Key != w1.Key {
		t.Error("M=5 and M=7 differ although both are in bucket 8")
	}
}

// batchedRandom is random search that asks for batches of at most max and
// records what the tuner asked of it.
type batchedRandom struct {
	*search.Random
	max   int
	asked []int
}

func (b *batchedRandom) BatchSize() int { return b.max }

func (b *batchedRandom) Propose(ctx context.Context, n int, seen map[string]bool) ([]search.Proposal, error) {
	b.asked = append(b.asked, n)
	return b.Random.Propose(ctx, n, seen)
}

// TestTuneHonoursStrategyBatch: a strategy that learns between batches
// (Evolutionary.BatchSize) gets batches no larger than it asks for, even
// when Options.BatchSize is larger: the first is the default plus one.
func TestTuneHonoursStrategyBatch(t *testing.T) {
	f := newFixture(t)
	k := kernels.Linear{M: 3, N: 33, K: 13}
	var strat *batchedRandom
	tu := f.tuner(search.Options{Budget: search.Budget{Trials: 5}, BatchSize: 8, Seed: 3, Confirm: -1,
		NewStrategy: func(k kernels.Kernel, hw kernels.Hardware, seed uint64) search.Strategy {
			strat = &batchedRandom{Random: search.NewRandom(k, hw, seed), max: 2}
			return strat
		}})
	r, err := tu.Tune(context.Background(), search.Task{Kernel: k, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Measured) != 5 {
		t.Fatalf("measured %d, want 5", len(r.Measured))
	}
	if want := []int{1, 2, 1}; fmt.Sprint(strat.asked) != fmt.Sprint(want) {
		t.Errorf("proposals asked %v, want %v (default + 1, a batch of 2, the budget's last one)", strat.asked, want)
	}
}
