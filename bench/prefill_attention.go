package bench

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"llmir/kernels"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// PrefillSuite is the name of the prefill attention suite in the
// bench_results table.
const PrefillSuite = "prefill_attention"

// PrefillOptions configures the prefill attention suite. Zero fields take
// Llama-3-8B's attention (32 query heads, 8 KV heads, head_dim 128, f32),
// causal, batch 1, at sequence lengths 128…2048.
type PrefillOptions struct {
	Threads int
	Seqs    []int64 // default 128, 256, 512, 1024, 2048
	Batch   int64   // default 1
	QHeads  int64   // default 32
	KVHeads int64   // default 8
	HeadDim int64   // default 128
	DType   string  // default "f32"; "bf16" stores q, k, v and out as bf16
	// Window is a sliding window (0: none); NotCausal turns the causal
	// mask off (the zero value is Llama's causal prefill).
	Window    int64
	NotCausal bool
	// Tune is the tuner's configuration (budget, batch size, protocol).
	Tune search.Options
	// Final is the protocol of the closing default/tuned batch.
	Final target.RunOptions
	// MaxBufferBytes refuses the suite, before anything is tuned, when a
	// sequence length's buffers (q, k, v, out) exceed it (default 1 GiB).
	MaxBufferBytes int64
	// Log gets one line per sequence length as it finishes (nil: none).
	Log io.Writer
}

func (o PrefillOptions) withDefaults() PrefillOptions {
	if o.Threads < 1 {
		o.Threads = 1
	}
	if len(o.Seqs) == 0 {
		o.Seqs = []int64{128, 256, 512, 1024, 2048}
	}
	if o.Batch < 1 {
		o.Batch = 1
	}
	if o.QHeads == 0 {
		o.QHeads = 32
	}
	if o.KVHeads == 0 {
		o.KVHeads = 8
	}
	if o.HeadDim == 0 {
		o.HeadDim = 128
	}
	if o.DType == "" {
		o.DType = "f32"
	}
	if o.MaxBufferBytes <= 0 {
		o.MaxBufferBytes = 1 << 30
	}
	return o
}

// PrefillKernel is the suite's kernel at one sequence length: self-
// attention over the prompt (k and v as long as q).
func PrefillKernel(o PrefillOptions, seq int64) kernels.Attention {
	o = o.withDefaults()
	return kernels.Attention{
		Batch: o.Batch, Seq: seq, QHeads: o.QHeads, KVHeads: o.KVHeads, HeadDim: o.HeadDim,
		Causal: !o.NotCausal, Window: o.Window, DType: o.DType,
	}
}

// PrefillResult is one sequence length at one thread count.
type PrefillResult struct {
	Seq     int64  `json:"seq"`
	Batch   int64  `json:"batch"`
	Threads int    `json:"threads"`
	Kernel  string `json:"kernel"`
	// FLOPs counts the multiply-adds of Q·Kᵀ and P·V over the (query,
	// key) pairs the mask keeps: causal attention is about half of full.
	FLOPs float64 `json:"flops"`
	// Median times in seconds from the closing batch (0: that candidate
	// failed; its measurement says why).
	DefaultS         float64 `json:"default_s"`
	TunedS           float64 `json:"tuned_s"`
	TunedOverDefault float64 `json:"tuned_over_default"`
	// GFLOP/s of the tuned and default schedules, the FMA peak probed at
	// Threads, and the tuned GFLOP/s as a fraction of it.
	GFLOPs        float64 `json:"gflops"`
	DefaultGFLOPs float64 `json:"default_gflops"`
	PeakGFLOPs    float64 `json:"peak_gflops"`
	PeakFraction  float64 `json:"peak_fraction"`
	// Knobs of the tuned schedule.
	Knobs map[string]int64 `json:"knobs"`
	TuneSummary
}

// Name is the benchmark's name in bench_results, e.g.
// "PrefillAttention/S=512,B=1,HQ=32,HKV=8,D=128/causal,window=0/f32/threads=1".
func (r *PrefillResult) Name() string {
	return fmt.Sprintf("PrefillAttention/S=%d,%s/threads=%d", r.Seq, r.Kernel, r.Threads)
}

// PrefillAttention runs the suite: per sequence length, tune within the
// budget, then measure the default and tuned schedules in one batch (twice,
// in mirrored order, samples pooled), relate the tuned GFLOP/s to the FMA
// peak probed at the same thread count, and store the numbers in db. Each
// sequence length is its own workload (its own bucket). Results so far
// come back with an error.
func PrefillAttention(ctx context.Context, tg *cpu.Target, roof *cpu.Roofline, db *tuningdb.DB, o PrefillOptions) ([]PrefillResult, error) {
	o = o.withDefaults()
	for _, seq := range o.Seqs {
		if err := checkExtents("bench prefill attention: sequence length", seq); err != nil {
			return nil, err
		}
		if err := checkBuffers(PrefillKernel(o, seq), o.MaxBufferBytes); err != nil {
			return nil, fmt.Errorf("bench prefill attention seq %d: %w", seq, err)
		}
	}
	tuner := search.NewCPUTuner(tg, roof, db, o.Tune)
	var out []PrefillResult
	for _, seq := range o.Seqs {
		r, err := prefillOne(ctx, roof, tuner, o, seq)
		if err != nil {
			return out, fmt.Errorf("bench prefill attention seq %d (threads %d): %w", seq, o.Threads, err)
		}
		if err := db.AddBenchResults(ctx, r.benchResults(tuner.Device.Hash)); err != nil {
			return out, fmt.Errorf("bench prefill attention %s: %w", r.Name(), err)
		}
		out = append(out, *r)
		if o.Log != nil {
			fmt.Fprintf(o.Log, "seq %d threads %d: default %.1f GFLOP/s, tuned %.1f GFLOP/s = %.0f%% of the FMA peak %v\n",
				seq, o.Threads, r.DefaultGFLOPs, r.GFLOPs, 100*r.PeakFraction, r.Knobs)
		}
	}
	return out, nil
}

func prefillOne(ctx context.Context, roof *cpu.Roofline, tuner *search.Tuner, o PrefillOptions, seq int64) (*PrefillResult, error) {
	k := PrefillKernel(o, seq)
	c, err := tuneAndCompare(ctx, tuner, k, o.Threads, o.Final)
	if err != nil {
		return nil, err
	}
	knobs, err := k.Knobs(c.hw).Read(c.best)
	if err != nil {
		return nil, fmt.Errorf("best trace: %w", err)
	}
	mask := "causal"
	if o.NotCausal {
		mask = "full"
	}
	p := c.p
	r := &PrefillResult{
		Seq: seq, Batch: o.Batch, Threads: o.Threads,
		Kernel: fmt.Sprintf("B=%d,HQ=%d,HKV=%d,D=%d/%s,window=%d/%s", o.Batch, o.QHeads, o.KVHeads, o.HeadDim, mask, o.Window, o.DType),
		FLOPs:  p.FLOPs, Knobs: knobs, TuneSummary: c.summary,
	}
	r.DefaultS, r.TunedS = okMedian(r.Default), okMedian(r.Tuned)
	if r.TunedS > 0 {
		r.GFLOPs, _ = p.Rates(r.TunedS)
		if r.DefaultS > 0 {
			r.TunedOverDefault = r.DefaultS / r.TunedS
		}
	}
	if r.DefaultS > 0 {
		r.DefaultGFLOPs, _ = p.Rates(r.DefaultS)
	}
	if roof != nil {
		if pt, ok := roof.At(o.Threads); ok && pt.PeakGFLOPs > 0 {
			r.PeakGFLOPs = pt.PeakGFLOPs
			r.PeakFraction = r.GFLOPs / pt.PeakGFLOPs
		}
	}
	return r, nil
}

// benchResults are the dashboard's numbers: both times with their samples,
// the tuned GFLOP/s and its fraction of the FMA peak; the whole result
// rides along on the tuned row.
func (r *PrefillResult) benchResults(device string) []tuningdb.BenchResult {
	m := rowMaker{PrefillSuite, r.Name(), device}
	return m.tunedRows(r, r.TuneSummary, r.PeakFraction,
		m.value("GFLOP/s", r.GFLOPs, "GFLOP/s", tuningdb.BetterHigher),
		m.value("peak_fraction", r.PeakFraction, "", tuningdb.BetterHigher))
}

// WritePrefillTable prints results as an aligned table.
func WritePrefillTable(w io.Writer, rs []PrefillResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "seq\tbatch\tthreads\tGFLOP\tdefault ms\ttuned ms\ttuned×default\tdefault GFLOP/s\ttuned GFLOP/s\tpeak GFLOP/s\t% FMA peak\ttrials\tknobs (BQ,BK,VW,MR,NR)\t")
	for _, r := range rs {
		kn := r.Knobs
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.2f\t%s\t%s\t%.2f\t%.1f\t%.1f\t%.1f\t%.0f%%\t%d+%d\t%d,%d,%d,%d,%d\t\n",
			r.Seq, r.Batch, r.Threads, r.FLOPs/1e9, ms(r.DefaultS), ms(r.TunedS), r.TunedOverDefault, r.DefaultGFLOPs, r.GFLOPs,
			r.PeakGFLOPs, 100*r.PeakFraction, r.Resumed, r.Measured, kn["BQ"], kn["BK"], kn["VW"], kn["MR"], kn["NR"])
	}
	return tw.Flush()
}
