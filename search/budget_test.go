package search_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"llmir/kernels"
	"llmir/search"
	"llmir/target"
)

// TestRunFor: slow kernels keep the protocol's time rules but fewer
// minimum samples and a timeout scaled to their call; fast ones keep the
// defaults but a hang is cut at 20 s plus 20 s per GB of inputs to load;
// what the caller set stays.
func TestRunFor(t *testing.T) {
	cases := []struct {
		name        string
		base        target.RunOptions
		call        time.Duration
		bytes       int64
		wantSamples int
		wantTimeout time.Duration
	}{
		{"unknown", target.RunOptions{}, 0, 0, 0, 0},
		{"microseconds", target.RunOptions{}, 30 * time.Microsecond, 0, 0, 20*time.Second + 600*time.Microsecond},
		{"table-lookup", target.RunOptions{}, 30 * time.Microsecond, 2e9, 0, time.Minute},
		{"gemv", target.RunOptions{}, time.Millisecond, 5e8, 0, 30*time.Second + 20*time.Millisecond},
		{"prefill-gemm", target.RunOptions{}, 400 * time.Millisecond, 0, 3, 28 * time.Second},
		{"lm-head", target.RunOptions{}, 2400 * time.Millisecond, 0, 3, time.Minute},
		{"caller-set", target.RunOptions{MinSamples: 7, Timeout: 5 * time.Second}, time.Second, 0, 7, 5 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := search.RunFor(c.base, c.call, c.bytes)
			if got.MinSamples != c.wantSamples || got.Timeout != c.wantTimeout {
				t.Errorf("RunFor(%+v, %v) = MinSamples %d, Timeout %v; want %d, %v", c.base, c.call, got.MinSamples, got.Timeout, c.wantSamples, c.wantTimeout)
			}
			if got.Warmup != c.base.Warmup || got.Budget != c.base.Budget {
				t.Errorf("RunFor changed the warm-up or the budget: %+v", got)
			}
		})
	}
}

// TestTrialCost: a trial costs at least a build and the protocol's
// warm-up and budget, grows with the kernel's bound, and a slow kernel's
// is a handful of calls (validation, warm-up, three timed).
func TestTrialCost(t *testing.T) {
	if got := search.TrialCost(0, target.RunOptions{}); got != 0 {
		t.Errorf("unknown bound: cost %v, want 0", got)
	}
	prev := 0.0
	for _, b := range []float64{1e-6, 1e-4, 1e-2, 0.1, 1} {
		c := search.TrialCost(b, target.RunOptions{})
		if c < 0.5+0.125 || c <= prev {
			t.Errorf("bound %v: cost %v, want above a build and the protocol's 125 ms, and above %v", b, c, prev)
		}
		prev = c
	}
	// 1 s bound: calls of 3 s, validation + 1 warm-up + 3 timed.
	if got, want := search.TrialCost(1, target.RunOptions{}), 0.5+3*5.0; got != want {
		t.Errorf("bound 1 s: cost %v, want %v", got, want)
	}
}

// TestFuncsExcluded: no selection keeps everything; a workload of either
// selected function is kept.
func TestFuncsExcluded(t *testing.T) {
	cases := []struct {
		want, in []string
		kept     bool
	}{
		{nil, []string{"prefill"}, true},
		{[]string{"decode"}, []string{"decode"}, true},
		{[]string{"decode"}, []string{"prefill"}, false},
		{[]string{"decode"}, []string{"prefill", "decode"}, true},
		{[]string{"prefill", "decode"}, []string{"decode"}, true},
	}
	for _, c := range cases {
		why := search.FuncsExcluded(c.want, c.in)
		if (why == "") != c.kept {
			t.Errorf("FuncsExcluded(%v, %v) = %q, want kept %v", c.want, c.in, why, c.kept)
		}
	}
}

// TestCallEstimate: the default's median when measured, else three times
// the roofline bound.
func TestCallEstimate(t *testing.T) {
	def := search.Trial{Default: true, Measurement: target.Measurement{Status: target.StatusOK}}
	def.Measurement.SetSamples([]float64{0.24, 0.25, 0.26})
	cases := []struct {
		name  string
		r     *search.Result
		bound float64
		want  time.Duration
	}{
		{"nothing", nil, 0, 0},
		{"bound", nil, 0.1, 300 * time.Millisecond},
		{"default", &search.Result{Default: &def}, 0.1, 250 * time.Millisecond},
		{"failed-default", &search.Result{Default: &search.Trial{Measurement: target.Measurement{Status: target.StatusTimeout}}}, 0.1, 300 * time.Millisecond},
	}
	for _, c := range cases {
		if got := search.CallEstimate(c.r, c.bound); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestBufferBytes: a linear layer's buffers are its input, weight and
// output in f32.
func TestBufferBytes(t *testing.T) {
	l := kernels.Linear{M: 2, N: 8, K: 16}
	if got, want := search.BufferBytes(l), int64(4*(2*16+8*16+2*8)); got != want {
		t.Errorf("BufferBytes = %d, want %d", got, want)
	}
}

// TestTuneModelFuncs: --function selects the workloads of the named
// functions (a shared one stays), lists the others as skipped with the
// reason, and an unknown name is an error before anything is measured.
func TestTuneModelFuncs(t *testing.T) {
	f := newFixture(t)
	m := parseTiny(t)
	opts := search.ModelOptions{
		Target: f.tg, DB: f.db, Threads: 1, Budget: search.ModelBudget{Trials: 4},
		Step: 1, Run: quick, Seed: 5, Confirm: -1, LLMIRVersion: "test", Funcs: []string{"decoder"},
	}
	if _, err := search.TuneModel(context.Background(), m, opts); err == nil || !strings.Contains(err.Error(), `"decoder"`) {
		t.Fatalf("unknown function: err %v, want one naming it", err)
	}
	opts.Funcs = []string{"decode"}
	res, err := search.TuneModel(context.Background(), m, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range res.Tasks {
		if !slices.Contains(tr.Funcs, "decode") {
			t.Errorf("task %s of %v tuned with --function decode", tr.Name, tr.Funcs)
		}
	}
	skipped := 0
	for _, s := range res.Skipped {
		if slices.Contains(s.Funcs, "decode") || !strings.Contains(s.Reason, "decode") {
			t.Errorf("skipped %s of %v: %q", s.Name, s.Funcs, s.Reason)
		}
		skipped++
	}
	if len(res.Tasks) != 2 || skipped == 0 {
		t.Errorf("%d tasks, %d skipped; want decode's 2 linear layers and prefill's left out", len(res.Tasks), skipped)
	}
}
