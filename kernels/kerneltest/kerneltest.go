// Package kerneltest is the conformance suite every kernel × schedule ×
// target goes through, in the spirit of gonum's blas/testblas: a kernel
// package's test calls Run with its kernels at odd shapes, and every
// schedule — the rule-based default, random draws of the design space and
// any extra traces — is lowered, built and run by the target's harness,
// which validates it (seeded non-zero inputs, NaN-poisoned outputs, guard
// bands around every buffer, inputs unchanged, relative L2 error against
// the Go reference). Every one must come back ok.
//
// Lowering goes through search.NewProblem and search.NewCandidate, the
// helpers the tuner and the benchmarks use, so the suite checks exactly
// what gets tuned. Only correctness matters here, so Options shrink the
// timing protocol to a single timed call.
//
// CPU (the gcc-built target every kernel test runs on, with a private
// build cache) and Expect (the negative tests: a wrong reference or bad
// inputs must come back with a given failure status) are what the kernel
// packages' tests share, so that each does not grow its own copy.
package kerneltest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
)

// Options configures Run.
type Options struct {
	// Draws is the number of random schedules of the design space per
	// kernel (default 4), on top of the default schedule.
	Draws int
	// Seed seeds the inputs and the draws (default 1).
	Seed uint64
	// Traces are extra schedules to check, replayed on the kernel's
	// definition.
	Traces []*schedule.Trace
	// Run is the timing protocol (default: 1 ms warm-up and budget, one
	// sample, 20 s timeout).
	Run target.RunOptions
}

func (o Options) withDefaults() Options {
	if o.Draws == 0 {
		o.Draws = 4
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Run == (target.RunOptions{}) {
		o.Run = target.RunOptions{Warmup: time.Millisecond, Budget: time.Millisecond, MinSamples: 1, MaxSamples: 1, Timeout: 20 * time.Second}
	}
	return o
}

// Case is one schedule of one kernel and what the harness made of it.
type Case struct {
	Name        string
	Trace       *schedule.Trace
	Measurement target.Measurement
}

// Run checks kernel k on tg with hw (from the device's fingerprint; its
// Threads is the thread count the candidates run with) and fails t for
// every schedule that is not ok. It returns the cases for further checks.
func Run(t testing.TB, tg target.Target, hw kernels.Hardware, k kernels.Kernel, opts Options) []Case {
	t.Helper()
	o := opts.withDefaults()
	cases, err := Check(context.Background(), tg, hw, k, o)
	if err != nil {
		t.Fatalf("%s: %v", k.Name(), err)
	}
	for _, c := range cases {
		m := c.Measurement
		// The runner already held the outputs to their dtype's tolerance.
		if m.Status != target.StatusOK {
			t.Errorf("%s, %s (threads %d): %s: %s", k.Name(), c.Name, hw.Threads, m.Status, m.Error)
		}
	}
	return cases
}

// Expect checks k like Run with Options{Draws: 1} (the default schedule
// and one draw) and fails t for every schedule whose status is not want:
// the negative tests that show the suite can fail, with a reference that
// must disagree (StatusWrongResult) or inputs the kernel must refuse
// (StatusRuntimeError). It returns the cases.
func Expect(t testing.TB, tg target.Target, hw kernels.Hardware, k kernels.Kernel, want target.Status) []Case {
	t.Helper()
	cases, err := Check(context.Background(), tg, hw, k, Options{Draws: 1})
	if err != nil {
		t.Fatalf("%s: %v", k.Name(), err)
	}
	for _, c := range cases {
		if m := c.Measurement; m.Status != want {
			t.Errorf("%s, %s: %s (%s), want %s", k.Name(), c.Name, m.Status, m.Error, want)
		}
	}
	return cases
}

// Check is Run without a testing.TB: it builds every schedule of k in one
// batch, measures the batch, and returns one Case per schedule (default
// first, then the draws, then Options.Traces). A schedule that fails to
// sample, replay or lower is an error.
func Check(ctx context.Context, tg target.Target, hw kernels.Hardware, k kernels.Kernel, opts Options) ([]Case, error) {
	o := opts.withDefaults()
	var scheds []*schedule.Schedule
	var names []string
	def, err := search.DefaultSchedule(k, hw)
	if err != nil {
		return nil, err
	}
	scheds, names = append(scheds, def), append(names, "default")
	for d := range o.Draws {
		seed := o.Seed*1000 + uint64(d)
		s, err := search.SampleSchedule(k, hw, seed)
		if err != nil {
			return nil, err
		}
		scheds, names = append(scheds, s), append(names, fmt.Sprintf("draw seed %d", seed))
	}
	if len(o.Traces) > 0 {
		kd, err := k.Def()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.Name(), err)
		}
		for i, tr := range o.Traces {
			s, err := schedule.Replay(kd, tr)
			if err != nil {
				return nil, fmt.Errorf("%s: trace %d: %w", k.Name(), i, err)
			}
			scheds, names = append(scheds, s), append(names, fmt.Sprintf("trace %d", i))
		}
	}
	p, err := search.NewProblem(k, o.Seed)
	if err != nil {
		return nil, err
	}
	cands := make([]target.Candidate, len(scheds))
	for i, s := range scheds {
		if cands[i], err = search.NewCandidate(fmt.Sprintf("c%d", i), k, s, hw); err != nil {
			return nil, fmt.Errorf("%s, %s: %w", k.Name(), names[i], err)
		}
	}
	ms, err := target.Measure(ctx, tg, p, cands, o.Run)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.Name(), err)
	}
	cases := make([]Case, len(scheds))
	for i, s := range scheds {
		cases[i] = Case{Name: names[i], Trace: s.Trace(), Measurement: ms[cands[i].ID]}
	}
	return cases, nil
}

// LinearShapes are the linear layer's conformance shapes: M = 1, primes,
// one past a register tile and a vector, runtime M below its bucket (for
// both the decode and the prefill templates), and N, K not multiples of
// the vector width.
func LinearShapes() []kernels.Linear {
	return []kernels.Linear{
		{M: 1, N: 7, K: 16},
		{M: 3, N: 33, K: 13},
		{M: 5, N: 17, K: 48, MBucket: 8},
		{M: 17, N: 37, K: 29},
		{M: 19, N: 65, K: 33, MBucket: 32},
		{M: 64, N: 97, K: 131},
	}
}
