package search

import (
	"cmp"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"llmir/ir"
	"llmir/kernels"
	"llmir/target"
)

// A whole-model tune mixes kernels whose calls take microseconds (a decode
// rms_norm) with kernels whose calls take seconds (a prefill lm_head GEMM
// at 512 tokens). Spending the same protocol and the same batch on both
// lets the slow ones eat a time budget before the fast, frequent ones are
// reached. The functions here size each task's measurements to its cost:
// the timing protocol's repeats and timeout to the duration of one call
// (RunFor), the Scheduler's step to the seconds a trial takes (TrialCost
// a priori, then as observed), and the tune to the functions asked for
// (FuncsExcluded).

// slowFactor is how much slower than its roofline bound a candidate of a
// task is assumed to run before its default has been measured: rule-based
// defaults reach a third to a half of the bound, random draws less.
const slowFactor = 3

// buildSeconds is the a-priori cost of building one candidate: gcc -O3 on
// one core of two, for the generated units llmir emits.
const buildSeconds = 0.5

// slowCall is the call duration from which the protocol's MinSamples is
// lowered: three such calls already exceed the protocol's 100 ms budget.
const slowCall = 50 * time.Millisecond

// RunFor is the timing protocol for candidates of a kernel whose call
// takes about call (0: unknown, base unchanged). Fields the caller set in
// base are kept. For slow kernels the protocol's time rules still hold —
// warm-up ≥ 25 ms, timed runs until ≥ Budget, all samples kept — but
// MinSamples drops from 5 to 3 (three calls of ≥ 50 ms are already above
// the 100 ms budget; five calls of a 2 s GEMM are 10 s per candidate), and
// the Timeout follows the call and the inputs: 20 calls, plus 20 s and
// 20 s per GB of the problem's buffers (bufBytes) for the harness to load
// them on a busy machine, at most the protocol's 60 s, so that a random
// draw fifty times slower than the default costs a timeout record after
// seconds instead of a minute.
func RunFor(base target.RunOptions, call time.Duration, bufBytes int64) target.RunOptions {
	if call <= 0 {
		return base
	}
	def := target.RunOptions{}.WithDefaults()
	if base.MinSamples <= 0 && call >= slowCall {
		base.MinSamples = 3
	}
	if base.Timeout <= 0 {
		load := 20*time.Second + time.Duration(float64(bufBytes)/1e9*20*float64(time.Second))
		base.Timeout = min(20*call+load, def.Timeout)
	}
	return base
}

// BufferBytes is the bytes of a kernel's buffers in their storage types:
// what the harness loads before the first call (0 when the kernel makes
// no problem).
func BufferBytes(k kernels.Kernel) int64 {
	p, err := NewProblem(k, 0) // declares the buffers; computes nothing
	if err != nil {
		return 0
	}
	var n int64
	for _, b := range p.Buffers {
		n += b.Bytes()
	}
	return n
}

// CallEstimate is the expected duration of one call of a task's
// candidates: the default's measured median when there is one (random
// draws around it are as often slower as faster, so it is a fair centre),
// else slowFactor × the roofline bound (seconds; 0: unknown).
func CallEstimate(r *Result, bound float64) time.Duration {
	if r != nil && r.Default != nil && r.Default.Measurement.OK() && r.Default.Measurement.Median > 0 {
		return seconds(r.Default.Measurement.Median)
	}
	if bound > 0 {
		return seconds(slowFactor * bound)
	}
	return 0
}

// TrialCost is the a-priori wall time of one trial of a task whose
// roofline bound is bound seconds (0 when unknown): a build, then the
// validation call, the warm-up and the timed calls of RunFor's protocol,
// each call slowFactor × the bound. The Scheduler sizes first steps with
// it and replaces it by the observed seconds per trial afterwards.
func TrialCost(bound float64, base target.RunOptions) float64 {
	if bound <= 0 {
		return 0
	}
	call := slowFactor * bound
	o := RunFor(base, seconds(call), 0).WithDefaults()
	warm := math.Max(math.Ceil(o.Warmup.Seconds()/call), 1)
	timed := math.Max(math.Ceil(o.Budget.Seconds()/call), float64(o.MinSamples))
	return buildSeconds + call*(1+warm+timed)
}

// FuncsExcluded is why a workload occurring in the functions in is left
// out of a tune restricted to the functions want ("" when it is kept: want
// is empty, or the workload occurs in one of them). A workload shared by
// decode and prefill is kept by either.
func FuncsExcluded(want, in []string) string {
	if len(want) == 0 {
		return ""
	}
	for _, f := range in {
		if slices.Contains(want, f) {
			return ""
		}
	}
	return "not in function " + strings.Join(want, ",")
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// checkFuncs rejects names in want that are not functions of m, so that a
// misspelt --function tunes nothing by mistake.
func checkFuncs(m *ir.Module, want []string) error {
	var have []string
	for _, f := range m.Funcs {
		have = append(have, f.Name)
	}
	for _, w := range want {
		if !slices.Contains(have, w) {
			return fmt.Errorf("function %q: the module has %s", w, strings.Join(have, ", "))
		}
	}
	return nil
}

// maxProblemBytes bounds the memory TuneModel keeps in problems between
// steps. A problem holds its inputs and reference outputs in float64:
// llama-3-8b's lm_head or embedding table alone is 4.2 GB of it, and a
// tune that kept every task's problem would hold tens of gigabytes.
const maxProblemBytes = 6 << 30

// problemBytes is the memory a problem holds once computed: every buffer
// in float64 (inputs as generated, outputs as the reference's).
func problemBytes(p *target.Problem) int64 {
	var n int64
	for _, b := range p.Buffers {
		n += 8 * b.Elems
	}
	return n
}

// tooLarge is why k's problem cannot be held within maxBytes
// (ModelOptions.MaxProblemBytes), "" when it can: a module may declare
// shapes no machine measures, and making their problem would end the
// tune out of memory instead of skipping one task.
func tooLarge(k kernels.Kernel, maxBytes int64) string {
	if maxBytes == 0 {
		if lim := debug.SetMemoryLimit(-1); lim < math.MaxInt64 {
			maxBytes = lim / 2
		}
	}
	if maxBytes <= 0 {
		return ""
	}
	p, err := NewProblem(k, 0)
	if err != nil {
		return "" // the task's first step reports it
	}
	if b := problemBytes(p); b > maxBytes {
		return fmt.Sprintf("its problem holds %s of float64 inputs and reference, over the %s this machine allows", gib(b), gib(maxBytes))
	}
	return ""
}

// gib prints a byte count in GiB, MiB or KiB, whichever is at least one.
func gib(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
}

// retainProblems drops the problems of tasks other than cur, largest
// first, until those kept fit maxBytes: a dropped task's next step (or its
// confirmation) makes its problem again, inputs and reference. That costs
// seconds for the large ones — the linears' periodic activations
// (kernels.FillPeriodic) keep even the prefill lm_head's reference to 61
// rows — and is rare, since the scheduler revisits light-weight prefill
// tasks seldom.
func retainProblems(runs []*taskRun, cur int, maxBytes int64) {
	var total int64
	var held []int
	for i, r := range runs {
		if r.problem == nil {
			continue
		}
		total += problemBytes(r.problem)
		if i != cur {
			held = append(held, i)
		}
	}
	slices.SortStableFunc(held, func(a, b int) int {
		return cmp.Compare(problemBytes(runs[b].problem), problemBytes(runs[a].problem))
	})
	for _, i := range held {
		if total <= maxBytes {
			return
		}
		total -= problemBytes(runs[i].problem)
		runs[i].problem = nil
	}
}

// computeOutside computes a problem's inputs and reference outputs now,
// before any measurement: target/cpu computes them lazily inside its
// measurement lock, where the Go reference of a prefill lm_head (269
// GMAC in float64, minutes) would hold every other measurement on the
// machine back. An error is left for the measurement to report.
func computeOutside(p *target.Problem) {
	_, _ = p.Expected()
}
