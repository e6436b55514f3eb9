package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"llmir/kernels"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// QuantSuite is the name of the quantized-linear suite in bench_results.
const QuantSuite = "quant"

// QuantGoal is issue #6's goal: int4 decode GEMV at least this many times
// faster than the f32 GEMV of the same N×K, same threads, same run.
const QuantGoal = 3.0

// QuantShape is a decode linear layer N×K (M = 1).
type QuantShape struct{ N, K int64 }

func (s QuantShape) String() string { return fmt.Sprintf("%dx%d", s.N, s.K) }

// DefaultQuantShapes are Llama-3-8B's decode layers: q/o (4096×4096),
// gate/up (14336×4096) and down (4096×14336).
func DefaultQuantShapes() []QuantShape {
	return []QuantShape{{4096, 4096}, {14336, 4096}, {4096, 14336}}
}

// QuantOptions configures the suite.
type QuantOptions struct {
	Threads int
	// Shapes are the N×K to measure (nil: DefaultQuantShapes).
	Shapes []QuantShape
	// Group is the int4 group size (0: 128). int8 is per-channel.
	Group int64
	// Tune is the tuner's configuration for each of the three kernels.
	Tune search.Options
	// Final is the protocol of the closing batch (zero: the defaults).
	Final target.RunOptions
	// MaxBufferBytes refuses the suite, before anything is tuned, when a
	// shape's buffers exceed it (default 1 GiB): the f32 weight of a large
	// N×K alone passes any machine's memory.
	MaxBufferBytes int64
	// Log gets one line per shape as it finishes (nil: none).
	Log io.Writer
}

// QuantKernel is one kernel of a shape: its default and tuned schedules
// measured in the closing batch.
type QuantKernel struct {
	Kernel string `json:"kernel"` // kernels' Name
	// Median times in seconds (0: that candidate failed; its measurement
	// says why).
	DefaultS float64 `json:"default_s"`
	TunedS   float64 `json:"tuned_s"`
	// GBs is the tuned time's effective bandwidth over the kernel's
	// minimum traffic (packed weights, scales, x, out); ReadBWFraction is
	// GBs over the measured read bandwidth at the thread count.
	Bytes          float64 `json:"bytes"`
	GBs            float64 `json:"gbs"`
	ReadBWFraction float64 `json:"read_bw_fraction"`
	// The tune, and the default and tuned schedules of the closing batch.
	TuneSummary
}

// QuantResult is one N×K at one thread count: int4 (Group), int8
// (per-channel) and the f32 Linear, all at M = 1.
type QuantResult struct {
	Shape   string      `json:"shape"`
	N       int64       `json:"n"`
	K       int64       `json:"k"`
	Threads int         `json:"threads"`
	Group   int64       `json:"group"`
	Int4    QuantKernel `json:"int4"`
	Int8    QuantKernel `json:"int8"`
	F32     QuantKernel `json:"f32"`
	// Int4Speedup is the f32 tuned time / the int4 tuned time (> 1: int4
	// faster); Int8Speedup the same for int8; DefaultInt4Speedup compares
	// the two defaults.
	Int4Speedup        float64 `json:"int4_speedup_vs_f32"`
	Int8Speedup        float64 `json:"int8_speedup_vs_f32"`
	DefaultInt4Speedup float64 `json:"default_int4_speedup_vs_f32"`
	Goal               float64 `json:"goal"`
	GoalMet            bool    `json:"goal_met"`
}

// Name is the benchmark's name in bench_results, e.g.
// "Quant/M=1,N=4096,K=4096/int4,g=128/threads=1".
func (r *QuantResult) Name(kind string) string {
	return fmt.Sprintf("Quant/M=1,N=%d,K=%d/%s/threads=%d", r.N, r.K, kind, r.Threads)
}

// Quant runs the suite: per shape, tune the int4, int8 and f32 kernels
// within the budget, then build their default and tuned schedules in one
// batch and measure them back to back (mirrored order, samples merged),
// relate them to the read bandwidth, and store the numbers in db. Results
// of the shapes done so far come back with an error.
func Quant(ctx context.Context, tg *cpu.Target, roof *cpu.Roofline, db *tuningdb.DB, o QuantOptions) ([]QuantResult, error) {
	threads := max(o.Threads, 1)
	shapes := o.Shapes
	if shapes == nil {
		shapes = DefaultQuantShapes()
	}
	group := o.Group
	if group == 0 {
		group = 128
	}
	limit := o.MaxBufferBytes
	if limit <= 0 {
		limit = 1 << 30
	}
	for _, sh := range shapes {
		if err := checkExtents("N×K", sh.N, sh.K); err != nil {
			return nil, fmt.Errorf("bench quant %s: %w", sh, err)
		}
		for _, t := range quantTasks(sh, group) {
			if err := checkBuffers(t.kernel, limit); err != nil {
				return nil, fmt.Errorf("bench quant %s: %w", sh, err)
			}
		}
	}
	tuner := search.NewCPUTuner(tg, roof, db, o.Tune)
	var out []QuantResult
	for _, sh := range shapes {
		r, err := quantShape(ctx, tg, roof, tuner, sh, group, threads, o)
		if err != nil {
			return out, fmt.Errorf("bench quant %s (threads %d): %w", sh, threads, err)
		}
		if err := db.AddBenchResults(ctx, r.benchResults(tuner.Device.Hash)); err != nil {
			return out, fmt.Errorf("bench quant %s: %w", sh, err)
		}
		out = append(out, *r)
		if o.Log != nil {
			fmt.Fprintf(o.Log, "%s threads=%d: int4 %s ms, int8 %s ms, f32 %s ms (tuned), int4 %.2f× f32, goal ≥%.0f×: %v\n",
				sh, threads, ms(r.Int4.TunedS), ms(r.Int8.TunedS), ms(r.F32.TunedS), r.Int4Speedup, r.Goal, r.GoalMet)
		}
	}
	return out, nil
}

// quantTask is one kernel of a shape on its way through the suite.
type quantTask struct {
	kind   string // "int4", "int8", "f32"
	kernel kernels.Kernel
	*tunedKernel
}

// quantTasks are a shape's three kernels: int4 (group), int8
// (per-channel) and f32.
func quantTasks(sh QuantShape, group int64) []*quantTask {
	return []*quantTask{
		{kind: "int4", kernel: kernels.QuantLinear{M: 1, N: sh.N, K: sh.K, Bits: 4, Group: group}},
		{kind: "int8", kernel: kernels.QuantLinear{M: 1, N: sh.N, K: sh.K, Bits: 8, Group: sh.K}},
		{kind: "f32", kernel: kernels.Linear{M: 1, N: sh.N, K: sh.K}},
	}
}

func quantShape(ctx context.Context, tg *cpu.Target, roof *cpu.Roofline, tuner *search.Tuner, sh QuantShape, group int64, threads int, o QuantOptions) (*QuantResult, error) {
	if sh.N < 1 || sh.K < 1 || sh.K%group != 0 {
		return nil, fmt.Errorf("shape %s: want positive N, K with K a multiple of the group size %d", sh, group)
	}
	tasks := quantTasks(sh, group)
	var cands []target.Candidate
	for _, t := range tasks {
		var err error
		if t.tunedKernel, err = tuneKernel(ctx, tuner, t.kernel, threads, t.kind+"/"); err != nil {
			return nil, fmt.Errorf("tune %s: %w", t.kind, err)
		}
		cands = append(cands, t.candidates()...)
	}
	// The protocol never builds while measuring: build every candidate of
	// the shape first, then measure kernel after kernel in mirrored order
	// (f32, int8, int4, int4', int8', f32'), so that a machine whose speed
	// drifts during the batch favours no kernel. The second copies share
	// the first ones' artifacts.
	built, err := tg.Build(ctx, cands)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	again := func(b target.Built) target.Built { b.Candidate.ID += "/2"; return b }
	ms := map[string]target.Measurement{}
	order := []*quantTask{tasks[2], tasks[1], tasks[0], tasks[0], tasks[1], tasks[2]}
	for i, t := range order {
		var pair []target.Built
		for _, c := range t.candidates() {
			pair = append(pair, built[c.ID])
		}
		if i >= len(order)/2 {
			slices.Reverse(pair)
			for j := range pair {
				pair[j] = again(pair[j])
			}
		}
		got, err := tg.Run(ctx, t.p, pair, o.Final)
		if err != nil {
			return nil, fmt.Errorf("measure %s: %w", t.kind, err)
		}
		for id, m := range got {
			ms[id] = m
		}
	}
	r := &QuantResult{Shape: sh.String(), N: sh.N, K: sh.K, Threads: threads, Group: group, Goal: QuantGoal}
	for _, t := range tasks {
		qk := QuantKernel{
			Kernel: t.kernel.Name(), Bytes: t.p.Bytes,
			TuneSummary: t.closing(ms),
		}
		qk.DefaultS, qk.TunedS = okMedian(qk.Default), okMedian(qk.Tuned)
		if qk.TunedS > 0 {
			_, qk.GBs = t.p.Rates(qk.TunedS)
		}
		if roof != nil {
			if pt, ok := roof.At(threads); ok && pt.ReadGBs > 0 {
				qk.ReadBWFraction = qk.GBs / pt.ReadGBs
			}
		}
		switch t.kind {
		case "int4":
			r.Int4 = qk
		case "int8":
			r.Int8 = qk
		default:
			r.F32 = qk
		}
	}
	r.Int4Speedup = ratio(r.F32.TunedS, r.Int4.TunedS)
	r.Int8Speedup = ratio(r.F32.TunedS, r.Int8.TunedS)
	r.DefaultInt4Speedup = ratio(r.F32.DefaultS, r.Int4.DefaultS)
	r.GoalMet = r.Int4Speedup >= r.Goal
	return r, nil
}

// benchResults are, per kernel, the tuned and default times with their
// samples and the tuned bandwidth; the int4 and int8 tuned rows carry
// their speedup over f32 as BaselineRatio, and the whole result rides on
// the int4 row as Extra.
func (r *QuantResult) benchResults(device string) []tuningdb.BenchResult {
	extra, _ := json.Marshal(r)
	var out []tuningdb.BenchResult
	for _, v := range []struct {
		kind    string
		k       QuantKernel
		speedup float64
	}{
		{fmt.Sprintf("int4,g=%d", r.Group), r.Int4, r.Int4Speedup},
		{"int8", r.Int8, r.Int8Speedup},
		{"f32", r.F32, 0},
	} {
		m := rowMaker{QuantSuite, r.Name(v.kind), device}
		tuned := m.timed("tuned_median_s", v.k.Tuned)
		if v.speedup > 0 {
			tuned.Baseline, tuned.BaselineRatio = "f32", v.speedup
		}
		if v.kind != "f32" && v.kind != "int8" {
			tuned.Extra = extra
		}
		out = append(out, tuned,
			m.timed("default_median_s", v.k.Default),
			m.value("GB/s", v.k.GBs, "GB/s", tuningdb.BetterHigher),
			m.value("read_bw_fraction", v.k.ReadBWFraction, "", tuningdb.BetterHigher))
	}
	return out
}

// WriteQuantTable prints one row per shape and kernel: times, bandwidth,
// share of the read bandwidth and the speedup over f32, with the goal on
// the int4 rows.
func WriteQuantTable(w io.Writer, rs []QuantResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "N×K (M=1)\tthreads\tweights\tdefault ms\ttuned ms\tGB/s\t% read BW\t×f32 (tuned)\t×f32 (default)\tgoal\tmet\t")
	for _, r := range rs {
		met := "no"
		if r.GoalMet {
			met = "yes"
		}
		row := func(kind string, k QuantKernel, speedup, defSpeedup, goal string) {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%.1f\t%.0f%%\t%s\t%s\t%s\t\n",
				r.Shape, r.Threads, kind, ms(k.DefaultS), ms(k.TunedS), k.GBs, 100*k.ReadBWFraction, speedup, defSpeedup, goal)
		}
		defInt8 := 0.0
		if r.Int8.DefaultS > 0 {
			defInt8 = r.F32.DefaultS / r.Int8.DefaultS
		}
		row(fmt.Sprintf("int4 g=%d", r.Group), r.Int4, fmt.Sprintf("%.2f", r.Int4Speedup), fmt.Sprintf("%.2f", r.DefaultInt4Speedup), fmt.Sprintf("≥%.0f×\t%s", r.Goal, met))
		row("int8", r.Int8, fmt.Sprintf("%.2f", r.Int8Speedup), fmt.Sprintf("%.2f", defInt8), "\t")
		row("f32", r.F32, "1.00", "1.00", "\t")
	}
	return tw.Flush()
}
