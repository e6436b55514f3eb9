package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"llmir/kernels"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// Suite is the name of the linear suite in the bench_results table.
const Suite = "linear"

// Shape is a linear layer out[M,N] = a[M,K]·w[N,K]ᵀ.
type Shape struct{ M, N, K int64 }

func (s Shape) String() string { return fmt.Sprintf("%dx%dx%d", s.M, s.N, s.K) }

// DefaultLinearShapes are the shapes: 1024³; Llama-3-8B prefill at
// M=512 with N×K = 4096×4096 (q/o), 14336×4096 (gate/up), 4096×14336
// (down) and 6144×4096 (fused qkv); decode at M ∈ {1, 4, 16} on the same
// N×K.
func DefaultLinearShapes() []Shape {
	nk := [][2]int64{{4096, 4096}, {14336, 4096}, {4096, 14336}, {6144, 4096}}
	out := []Shape{{1024, 1024, 1024}}
	for _, m := range []int64{512, 1, 4, 16} {
		for _, x := range nk {
			out = append(out, Shape{m, x[0], x[1]})
		}
	}
	return out
}

// ParseShapes reads a comma-separated list of MxNxK; an empty list or an
// empty item is an error.
func ParseShapes(s string) ([]Shape, error) {
	var out []Shape
	for i, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			// A stray comma ("8x64x96,") or an empty value is a typo, not
			// a request for fewer shapes: refuse it rather than guess.
			return nil, fmt.Errorf("shape %d is empty in %q: want MxNxK items separated by commas", i+1, s)
		}
		parts := strings.Split(f, "x")
		if len(parts) != 3 {
			return nil, fmt.Errorf("shape %d %q: want MxNxK, e.g. 512x4096x4096", i+1, f)
		}
		var v [3]int64
		for j, p := range parts {
			n, err := strconv.ParseInt(p, 10, 64)
			if err != nil || n < 1 || n > 1<<20 {
				return nil, fmt.Errorf("shape %d %q: %s=%q is not an integer in 1..%d", i+1, f, "MNK"[j:j+1], p, 1<<20)
			}
			v[j] = n
		}
		out = append(out, Shape{v[0], v[1], v[2]})
	}
	return out, nil
}

// Class is a shape's goal class.
type Class string

const (
	Prefill Class = "prefill" // M > 16: GEMM
	GEMV    Class = "gemv"    // M = 1
	Skinny  Class = "skinny"  // 2 ≤ M ≤ 16
)

// ClassOf classifies a shape by M.
func ClassOf(s Shape) Class {
	switch {
	case s.M == 1:
		return GEMV
	case s.M <= 16:
		return Skinny
	}
	return Prefill
}

// Goal is the goal for a class.
type Goal struct {
	Class Class `json:"class"`
	// MinSpeedup is the required OpenBLAS time / tuned time.
	MinSpeedup float64 `json:"min_speedup"`
	// MinReadBW is the required fraction of measured read bandwidth (GEMV).
	MinReadBW float64 `json:"min_read_bw,omitempty"`
	// MinRoofline is the required fraction of the roofline bound (skinny).
	MinRoofline float64 `json:"min_roofline,omitempty"`
}

// GoalOf is the goal of a class: prefill ≥ 1.0× sgemm; GEMV ≥ 1.0× sgemv
// and ≥ 85% of read bandwidth; skinny ≥ 2× sgemm and ≥ 80% of the roofline.
func GoalOf(c Class) Goal {
	switch c {
	case GEMV:
		return Goal{Class: c, MinSpeedup: 1, MinReadBW: 0.85}
	case Skinny:
		return Goal{Class: c, MinSpeedup: 2, MinRoofline: 0.80}
	}
	return Goal{Class: c, MinSpeedup: 1}
}

func (g Goal) String() string {
	s := fmt.Sprintf("≥%.1f×", g.MinSpeedup)
	if g.MinReadBW > 0 {
		s += fmt.Sprintf(", ≥%.0f%% BW", 100*g.MinReadBW)
	}
	if g.MinRoofline > 0 {
		s += fmt.Sprintf(", ≥%.0f%% roof", 100*g.MinRoofline)
	}
	return s
}

// Met reports whether r meets the goal.
func (g Goal) Met(r *LinearResult) bool {
	if r.Speedup < g.MinSpeedup || r.TunedS <= 0 {
		return false
	}
	if g.MinReadBW > 0 && r.ReadBWFraction < g.MinReadBW {
		return false
	}
	if g.MinRoofline > 0 && r.RooflineFraction < g.MinRoofline {
		return false
	}
	return true
}

// LinearOptions configures the suite.
type LinearOptions struct {
	Threads int
	// Tune is the tuner's configuration (budget, batch size, protocol,
	// seed, progress bar, command).
	Tune search.Options
	// Final is the protocol of the closing default/tuned/OpenBLAS batch
	// (zero: the protocol's defaults).
	Final target.RunOptions
	// ClosingRuns repeats each shape's closing batch (a decode shape's
	// with its read baseline) in that many fresh harness runs, samples
	// pooled (0 or 1: once; see tuneCompareRead): a compute-bound GEMM
	// moves between processes too (1024³, one thread: the same tuned
	// kernel at 15.6 ms in one run, 11.5 ms pooled over three).
	ClosingRuns int
	// Log gets one line per shape as it finishes (nil: none).
	Log io.Writer
}

// LinearResult is one shape at one thread count.
type LinearResult struct {
	Shape   string `json:"shape"`
	M       int64  `json:"m"`
	N       int64  `json:"n"`
	K       int64  `json:"k"`
	Threads int    `json:"threads"`
	Class   Class  `json:"class"`
	// Median times in seconds from the closing batch (0 when that
	// candidate failed; its measurement says why).
	DefaultS  float64 `json:"default_s"`
	TunedS    float64 `json:"tuned_s"`
	OpenBLASS float64 `json:"openblas_s"`
	// Speedup is OpenBLAS time / tuned time (> 1: faster than OpenBLAS);
	// DefaultSpeedup the same for the default schedule; TunedOverDefault
	// the default's time / tuned time.
	Speedup          float64 `json:"speedup_vs_openblas"`
	DefaultSpeedup   float64 `json:"default_speedup_vs_openblas"`
	TunedOverDefault float64 `json:"tuned_over_default"`
	GFLOPs           float64 `json:"gflops"`
	GBs              float64 `json:"gbs"`
	OpenBLASGFLOPs   float64 `json:"openblas_gflops"`
	// ReadGBs is the read bandwidth measured around the closing batch
	// (decode shapes, whose goals are shares of it; 0 for prefill).
	// BoundS is the roofline bound at Threads, max(FLOPs / the probe's peak,
	// bytes / ReadGBs, or the probe's cached read bandwidth for prefill);
	// RooflineFraction BoundS / TunedS; ReadBWFraction GBs / the same read
	// bandwidth. The Probe fractions take both rates from the cached probe,
	// for comparison with results of earlier sessions.
	ReadGBs               float64 `json:"read_gbs,omitempty"`
	BoundS                float64 `json:"bound_s"`
	RooflineFraction      float64 `json:"roofline_fraction"`
	ReadBWFraction        float64 `json:"read_bw_fraction"`
	ProbeRooflineFraction float64 `json:"probe_roofline_fraction"`
	ProbeReadBWFraction   float64 `json:"probe_read_bw_fraction"`
	Goal                  Goal    `json:"goal"`
	GoalMet               bool    `json:"goal_met"`
	// The tune, and the default and tuned schedules of the closing batch.
	TuneSummary
	// OpenBLAS in the same closing batch (all samples).
	OpenBLAS target.Measurement `json:"openblas"`
}

// Name is the benchmark's name in bench_results, e.g.
// "Linear/M=512,N=4096,K=4096/f32/threads=1".
func (r *LinearResult) Name() string {
	return fmt.Sprintf("Linear/M=%d,N=%d,K=%d/f32/threads=%d", r.M, r.N, r.K, r.Threads)
}

// Linear runs the suite: per shape, tune within the budget, then measure
// default, tuned and OpenBLAS in one batch, relate them to the roofline,
// and store the numbers in db. Results of the shapes done so far come back
// with an error.
func Linear(ctx context.Context, tg *cpu.Target, roof *cpu.Roofline, db *tuningdb.DB, shapes []Shape, o LinearOptions) ([]LinearResult, error) {
	threads := max(o.Threads, 1)
	tuner := search.NewCPUTuner(tg, roof, db, o.Tune)
	var out []LinearResult
	for _, sh := range shapes {
		r, err := linearShape(ctx, roof, tuner, sh, threads, o)
		if err != nil {
			return out, fmt.Errorf("bench linear %s (threads %d): %w", sh, threads, err)
		}
		if err := db.AddBenchResults(ctx, r.benchResults(tuner.Device.Hash)); err != nil {
			return out, fmt.Errorf("bench linear %s: %w", sh, err)
		}
		out = append(out, *r)
		if o.Log != nil {
			fmt.Fprintf(o.Log, "%s threads=%d: default %.3f ms, tuned %.3f ms, openblas %.3f ms, %.2f× openblas, goal %s: %v\n",
				sh, threads, 1e3*r.DefaultS, 1e3*r.TunedS, 1e3*r.OpenBLASS, r.Speedup, r.Goal, r.GoalMet)
		}
	}
	return out, nil
}

func linearShape(ctx context.Context, roof *cpu.Roofline, tuner *search.Tuner, sh Shape, threads int, o LinearOptions) (*LinearResult, error) {
	k := kernels.Linear{M: sh.M, N: sh.N, K: sh.K}
	blas := cpu.OpenBLASCandidate("openblas", cpu.Linear{M: int(sh.M), N: int(sh.N), K: int(sh.K)}, threads)
	blas.UnsetEnv = cpu.OpenBLASUnsetEnv
	var c *comparison
	var err error
	if ClassOf(sh) == Prefill {
		c, err = tuneCompare(ctx, tuner, k, threads, o.Final, false, o.ClosingRuns, blas)
	} else {
		c, err = tuneCompareRead(ctx, tuner, k, threads, o.Final, o.ClosingRuns, blas)
	}
	if err != nil {
		return nil, err
	}
	p := c.p
	r := &LinearResult{
		Shape: sh.String(), M: sh.M, N: sh.N, K: sh.K, Threads: threads, Class: ClassOf(sh),
		TuneSummary: c.summary, OpenBLAS: merged(c.ms, "openblas"),
	}
	r.DefaultS, r.TunedS, r.OpenBLASS = okMedian(r.Default), okMedian(r.Tuned), okMedian(r.OpenBLAS)
	r.Speedup = ratio(r.OpenBLASS, r.TunedS)
	r.DefaultSpeedup = ratio(r.OpenBLASS, r.DefaultS)
	r.TunedOverDefault = ratio(r.DefaultS, r.TunedS)
	if r.TunedS > 0 {
		r.GFLOPs, r.GBs = p.Rates(r.TunedS)
	}
	if r.OpenBLASS > 0 {
		r.OpenBLASGFLOPs, _ = p.Rates(r.OpenBLASS)
	}
	if roof != nil {
		if pt, ok := roof.At(threads); ok && pt.PeakGFLOPs > 0 && pt.ReadGBs > 0 {
			r.ProbeRooflineFraction = ratio(pt.Seconds(p.FLOPs, p.Bytes), r.TunedS)
			r.ProbeReadBWFraction = ratio(r.GBs, pt.ReadGBs)
			if c.readGBs > 0 {
				r.ReadGBs, pt.ReadGBs = c.readGBs, c.readGBs
			}
			r.BoundS = pt.Seconds(p.FLOPs, p.Bytes)
			r.RooflineFraction = ratio(r.BoundS, r.TunedS)
			r.ReadBWFraction = ratio(r.GBs, pt.ReadGBs)
		}
	}
	r.Goal = GoalOf(r.Class)
	r.GoalMet = r.Goal.Met(r)
	return r, nil
}

// benchResults are the numbers a dashboard plots: the three times with
// all their samples (lower is better), the tuned time's ratio to OpenBLAS
// and fraction of roofline on its row, and the derived rates (higher is
// better). The whole result rides along as Extra on the tuned row. A failed
// candidate's time is 0, which the regression rule reads as a failure.
func (r *LinearResult) benchResults(device string) []tuningdb.BenchResult {
	extra, _ := json.Marshal(r)
	m := rowMaker{Suite, r.Name(), device}
	tuned := m.timed("tuned_median_s", r.Tuned)
	tuned.Baseline, tuned.BaselineRatio, tuned.RooflineFraction, tuned.Extra = "openblas", r.Speedup, r.RooflineFraction, extra
	return []tuningdb.BenchResult{
		tuned,
		m.timed("default_median_s", r.Default),
		m.timed("openblas_median_s", r.OpenBLAS),
		m.value("speedup_vs_openblas", r.Speedup, "x", tuningdb.BetterHigher),
		m.value("GFLOP/s", r.GFLOPs, "GFLOP/s", tuningdb.BetterHigher),
		m.value("GB/s", r.GBs, "GB/s", tuningdb.BetterHigher),
		m.value("roofline_fraction", r.RooflineFraction, "", tuningdb.BetterHigher),
	}
}

// WriteLinearTable prints results as an aligned table with a goal column.
func WriteLinearTable(w io.Writer, rs []LinearResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "shape (MxNxK)\tthreads\tdefault ms\ttuned ms\topenblas ms\ttuned×openblas\tGFLOP/s\tGB/s\tread GB/s\t% read BW\t% roofline\t% probe roof\ttrials\tgoal\tmet\t")
	for _, r := range rs {
		met := "no"
		if r.GoalMet {
			met = "yes"
		}
		read, readBW := "-", "-"
		if r.ReadGBs > 0 {
			read, readBW = fmt.Sprintf("%.1f", r.ReadGBs), fmt.Sprintf("%.0f%%", 100*r.ReadBWFraction)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%.2f\t%.1f\t%.1f\t%s\t%s\t%.0f%%\t%.0f%%\t%d+%d\t%s\t%s\t\n",
			r.Shape, r.Threads, ms(r.DefaultS), ms(r.TunedS), ms(r.OpenBLASS), r.Speedup, r.GFLOPs, r.GBs, read, readBW,
			100*r.RooflineFraction, 100*r.ProbeRooflineFraction, r.Resumed, r.Measured, r.Goal, met)
	}
	return tw.Flush()
}

func ms(s float64) string {
	if s <= 0 {
		return "failed"
	}
	return fmt.Sprintf("%.3f", 1e3*s)
}
