package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// tunedKernel is one kernel after its tune: the problem it was tuned on,
// the tune's result, its best trace replayed on the kernel, and the
// candidates of the rule-based default and of that best schedule, built
// for the same hardware.
type tunedKernel struct {
	p     *target.Problem
	tune  *search.Result
	hw    kernels.Hardware
	best  *schedule.Schedule
	def   target.Candidate // ID prefix+"default"
	tuned target.Candidate // ID prefix+"tuned"
	// same is true when the tune's best trace is the default's: the
	// closing batch then measures that code once, as both (two copies of
	// one kernel would report noise as a "tuned" speedup or slowdown).
	same bool
}

// tuneKernel tunes k at threads within the tuner's budget and makes the
// default and tuned candidates, their IDs prefixed with prefix. One problem
// serves the tune and the closing batch, so that its float64 reference
// (tens of GFLOP at the suites' prefill shapes) is computed once.
func tuneKernel(ctx context.Context, tuner *search.Tuner, k kernels.Kernel, threads int, prefix string) (*tunedKernel, error) {
	p, err := search.NewProblem(k, max(tuner.Options.Seed, 1))
	if err != nil {
		return nil, err
	}
	tr, err := tuner.Tune(ctx, search.Task{Kernel: k, Threads: threads}, p)
	if err != nil {
		return nil, err
	}
	if tr.Best == nil {
		return nil, fmt.Errorf("%w after %d trials (%v)", search.ErrNoValidSchedule, len(tr.Measured)+tr.Resumed, tr.Counts)
	}
	hw := tuner.Hardware(threads)
	def, err := search.DefaultSchedule(k, hw)
	if err != nil {
		return nil, err
	}
	kd, err := k.Def()
	if err != nil {
		return nil, err
	}
	bt, err := schedule.ParseTrace(tr.Best.Trace)
	if err != nil {
		return nil, fmt.Errorf("best trace: %w", err)
	}
	best, err := schedule.Replay(kd, bt)
	if err != nil {
		return nil, fmt.Errorf("best trace: %w", err)
	}
	dc, err := search.NewCandidate(prefix+"default", k, def, hw)
	if err != nil {
		return nil, err
	}
	tc, err := search.NewCandidate(prefix+"tuned", k, best, hw)
	if err != nil {
		return nil, err
	}
	dk, err := search.TraceKey(def)
	if err != nil {
		return nil, err
	}
	bk, err := search.TraceKey(best)
	if err != nil {
		return nil, err
	}
	return &tunedKernel{p: p, tune: tr, hw: hw, best: best, def: dc, tuned: tc, same: bytes.Equal(dk, bk)}, nil
}

// TuneSummary is what a suite's result tells of one kernel's tune and of
// its closing batch.
type TuneSummary struct {
	// The tune: trials measured now, found in the database, failures by
	// status, its run, its workload key and its best trace.
	Measured  int                   `json:"measured"`
	Resumed   int                   `json:"resumed"`
	Counts    map[target.Status]int `json:"counts"`
	RunID     int64                 `json:"run_id"`
	Workload  string                `json:"workload"`
	BestTrace json.RawMessage       `json:"best_trace"`
	// The closing batch in full: both passes' samples pooled (a failed
	// candidate's measurement says why).
	Default target.Measurement `json:"default"`
	Tuned   target.Measurement `json:"tuned"`
}

// summarize is the tune's summary with the closing batch's default and
// tuned measurements.
func (t *tunedKernel) summarize(def, tuned target.Measurement) TuneSummary {
	tr := t.tune
	return TuneSummary{Measured: len(tr.Measured), Resumed: tr.Resumed, Counts: tr.Counts, RunID: tr.RunID,
		Workload: tr.Workload.Key, BestTrace: tr.Best.Trace, Default: def, Tuned: tuned}
}

// candidates are the default and, unless it is the same trace, the tuned
// candidate, for a closing batch.
func (t *tunedKernel) candidates() []target.Candidate {
	if t.same {
		return []target.Candidate{t.def}
	}
	return []target.Candidate{t.def, t.tuned}
}

// closing is the summary with the closing batch's measurements (both
// passes pooled); the default's stands for the tuned when they are the
// same trace.
func (t *tunedKernel) closing(ms map[string]target.Measurement) TuneSummary {
	def := merged(ms, t.def.ID)
	if t.same {
		return t.summarize(def, def)
	}
	return t.summarize(def, merged(ms, t.tuned.ID))
}

// comparison is a tuned kernel measured in its closing batch.
type comparison struct {
	*tunedKernel
	// summary has the default and tuned measurements, both passes
	// pooled; ms holds every candidate of the batch (each pass apart), for
	// the extra ones.
	summary TuneSummary
	ms      map[string]target.Measurement
	// readGBs is the read bandwidth measured around the batch
	// (tuneCompareRead; 0 otherwise).
	readGBs float64
}

// tuneAndCompare tunes k (tuneKernel), then measures its default and tuned
// schedules and the extra candidates (baselines) in one mirrored batch on
// the tuner's target with the final protocol.
func tuneAndCompare(ctx context.Context, tuner *search.Tuner, k kernels.Kernel, threads int, final target.RunOptions, extra ...target.Candidate) (*comparison, error) {
	return tuneCompare(ctx, tuner, k, threads, final, false, 1, extra...)
}

// tuneCompareRead is tuneAndCompare with the read-bandwidth baseline
// (cpu.ReadCandidate over as many bytes as the problem moves) measured just
// before and just after the closing batch, samples pooled, into
// comparison.readGBs: the bandwidth of a shared machine drifts by tens of
// percent over a day, so a kernel's share of it is taken against the
// bandwidth of the same minutes, never the probe cached at another time.
//
// runs > 1 repeats that sequence (read, mirrored batch, read) runs times,
// each in fresh harness processes, and pools every candidate's samples and
// the read baseline's across the runs: one process's buffers can land on
// memory that reads tens of percent faster or slower than another's (one
// quiet run saw 26–40 GB/s across its shapes), so a share of bandwidth
// judged on one pair of processes is partly luck.
func tuneCompareRead(ctx context.Context, tuner *search.Tuner, k kernels.Kernel, threads int, final target.RunOptions, runs int, extra ...target.Candidate) (*comparison, error) {
	return tuneCompare(ctx, tuner, k, threads, final, true, runs, extra...)
}

func tuneCompare(ctx context.Context, tuner *search.Tuner, k kernels.Kernel, threads int, final target.RunOptions, read bool, runs int, extra ...target.Candidate) (*comparison, error) {
	t, err := tuneKernel(ctx, tuner, k, threads, "")
	if err != nil {
		return nil, err
	}
	var rp *target.Problem
	if read {
		rp = cpu.ReadProblem(int64(t.p.Bytes), t.p.Seed)
	}
	var ms map[string]target.Measurement
	var reads target.Measurement
	for range max(runs, 1) {
		if read {
			before, err := measureRead(ctx, tuner.Target, rp, threads, final)
			if err != nil {
				return nil, err
			}
			reads = pooled(reads, before)
		}
		run, err := measureMirrored(ctx, tuner.Target, t.p, append(t.candidates(), extra...), final)
		if err != nil {
			return nil, err
		}
		ms = poolRuns(ms, run)
		if read {
			after, err := measureRead(ctx, tuner.Target, rp, threads, final)
			if err != nil {
				return nil, err
			}
			reads = pooled(reads, after)
		}
	}
	c := &comparison{tunedKernel: t, summary: t.closing(ms), ms: ms}
	if read {
		_, c.readGBs = rp.Rates(reads.Median)
	}
	return c, nil
}

// pooled is a with b's samples added; a failed measurement stands for
// both (its status says why), and a zero a is b.
func pooled(a, b target.Measurement) target.Measurement {
	if a.Status == "" {
		return b
	}
	if !a.OK() {
		return a
	}
	if !b.OK() {
		return b
	}
	a.SetSamples(append(append([]float64(nil), a.Samples...), b.Samples...))
	return a
}

// poolRuns adds one closing run's measurements to those of the runs
// before it (acc, nil for the first), candidate by candidate.
func poolRuns(acc, run map[string]target.Measurement) map[string]target.Measurement {
	if acc == nil {
		acc = make(map[string]target.Measurement, len(run))
	}
	for id, m := range run {
		acc[id] = pooled(acc[id], m)
	}
	return acc
}

// measureMirrored measures the candidates in one batch, twice in mirrored
// order (A B C C' B' A', the second copies' IDs ending in "/2"): a machine
// whose speed drifts during the batch (other work, clocks) favours no
// candidate. The second copies hit the build cache; merged pools the two
// passes of an ID.
func measureMirrored(ctx context.Context, tg target.Target, p *target.Problem, first []target.Candidate, run target.RunOptions) (map[string]target.Measurement, error) {
	batch := slices.Clone(first)
	for i := len(first) - 1; i >= 0; i-- {
		c := first[i]
		c.ID += "/2"
		batch = append(batch, c)
	}
	return target.Measure(ctx, tg, p, batch, run)
}

// scheduleFor is a schedule and the hardware its candidate is built for.
type scheduleFor struct {
	s  *schedule.Schedule
	hw kernels.Hardware
}

// knownComparison is a kernel's default and best-known schedules measured
// in one batch.
type knownComparison struct {
	// defaultM and bestM pool both passes; bestM is defaultM when the best
	// schedule's trace is the default's (it was measured once).
	defaultM, bestM target.Measurement
	bestKey         json.RawMessage // the best schedule's trace key
	ms              map[string]target.Measurement
}

// compareKnown measures k's default schedule and a best-known one (under
// the candidate ID bestID, left out when its trace is the default's) with
// the extra candidates in one mirrored batch. The suites that measure
// schedules from the database, not from a tune of their own, share it.
func compareKnown(ctx context.Context, tg target.Target, p *target.Problem, k kernels.Kernel, def, best scheduleFor, bestID string, run target.RunOptions, extra ...target.Candidate) (*knownComparison, error) {
	defKey, err := search.TraceKey(def.s)
	if err != nil {
		return nil, err
	}
	bestKey, err := search.TraceKey(best.s)
	if err != nil {
		return nil, err
	}
	dc, err := search.NewCandidate("default", k, def.s, def.hw)
	if err != nil {
		return nil, err
	}
	first := []target.Candidate{dc}
	same := string(defKey) == string(bestKey)
	if !same {
		bc, err := search.NewCandidate(bestID, k, best.s, best.hw)
		if err != nil {
			return nil, err
		}
		first = append(first, bc)
	}
	ms, err := measureMirrored(ctx, tg, p, append(first, extra...), run)
	if err != nil {
		return nil, err
	}
	c := &knownComparison{defaultM: merged(ms, "default"), bestKey: bestKey, ms: ms}
	c.bestM = c.defaultM
	if !same {
		c.bestM = merged(ms, bestID)
	}
	return c, nil
}

// merged is the measurement of id's two passes with their samples pooled
// (the first failure when either failed).
func merged(ms map[string]target.Measurement, id string) target.Measurement {
	return pooled(ms[id], ms[id+"/2"])
}

// measureRead measures the read-bandwidth baseline (cpu.ReadCandidate) on
// p, a cpu.ReadProblem, at threads. A failed baseline is an error: the
// suites that use it have nothing to relate their kernels to without it.
func measureRead(ctx context.Context, tg target.Target, p *target.Problem, threads int, run target.RunOptions) (target.Measurement, error) {
	ms, err := target.Measure(ctx, tg, p, []target.Candidate{cpu.ReadCandidate("read", threads)}, run)
	if err != nil {
		return target.Measurement{}, fmt.Errorf("read baseline: %w", err)
	}
	m := ms["read"]
	if !m.OK() {
		return m, fmt.Errorf("read baseline: %s: %s", m.Status, m.Error)
	}
	return m, nil
}

func okMedian(m target.Measurement) float64 {
	if !m.OK() {
		return 0
	}
	return m.Median
}

// ratio is a / b, 0 when either is not positive (a failed measurement).
func ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return a / b
}

// rowMaker makes the bench_results rows of one benchmark of a suite that
// stores them itself.
type rowMaker struct{ suite, name, device string }

func (m rowMaker) value(metric string, v float64, unit string, better tuningdb.Better) tuningdb.BenchResult {
	return tuningdb.BenchResult{Suite: m.suite, Name: m.name, DeviceHash: m.device, Metric: metric, Value: v, Unit: unit, Better: better}
}

// tunedRows are a tuned kernel's time rows — the tuned median (with the
// default as its baseline, the roofline fraction, and the whole result
// riding along as extra) and the default median — then the rate rows.
func (m rowMaker) tunedRows(result any, s TuneSummary, roofline float64, rates ...tuningdb.BenchResult) []tuningdb.BenchResult {
	extra, _ := json.Marshal(result)
	tuned := m.timed("tuned_median_s", s.Tuned)
	if d, t := okMedian(s.Default), okMedian(s.Tuned); d > 0 && t > 0 {
		tuned.Baseline, tuned.BaselineRatio = "default", d/t
	}
	tuned.RooflineFraction, tuned.Extra = roofline, extra
	return append([]tuningdb.BenchResult{tuned, m.timed("default_median_s", s.Default)}, rates...)
}

// timed is a time row: the median with all its samples (lower is better);
// a failed measurement's row is 0, which the regression rule reads as a
// failure.
func (m rowMaker) timed(metric string, meas target.Measurement) tuningdb.BenchResult {
	b := m.value(metric, okMedian(meas), "s", tuningdb.BetterLower)
	if meas.OK() {
		b.Samples = meas.Samples
	}
	return b
}
