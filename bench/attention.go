package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// AttentionSuite is the name of the paged decode attention suite in the
// bench_results table.
const AttentionSuite = "paged_attention"

// PagedGoal is the goal for CPU paged decode attention: at least
// this fraction of the measured read bandwidth at every block size.
const PagedGoal = 0.80

// PagedOptions configures the paged decode attention suite. Zero fields
// take Llama-3-8B's attention (32 query heads, 8 KV heads, head_dim 128,
// f32 cache) at block sizes 8…256 and contexts 128…16384.
type PagedOptions struct {
	Threads    int
	BlockSizes []int64 // default 8, 16, 32, 64, 128, 256
	Contexts   []int64 // default 128, 1024, 4096, 16384
	QHeads     int64   // default 32
	KVHeads    int64   // default 8
	HeadDim    int64   // default 128
	Elem       schedule.DType
	// KVBytes is the least K+V one call reads; the batch is the smallest
	// that reaches it. Default: twice the LLC, within 64…128 MiB (this
	// VM's CPUID reports a 508 MiB LLC for a cache that stops helping past
	// 32 MiB; the runner rotates copies of the inputs on top, see
	// cpu.Runner.Copies).
	KVBytes int64
	// Tune is the tuner's configuration (budget, batch size, protocol).
	Tune search.Options
	// Final is the protocol of the closing default/tuned batch.
	Final target.RunOptions
	// ClosingRuns repeats the closing batch and its read baseline in that
	// many fresh harness runs, samples pooled (0 or 1: once; see
	// tuneCompareRead).
	ClosingRuns int
	// MaxBufferBytes refuses the sweep, before anything is tuned, when a
	// workload's buffers exceed it (default 1 GiB): a context long
	// enough makes one sequence's cache larger than any machine holds.
	MaxBufferBytes int64
	// Log gets one line per workload as it finishes (nil: none).
	Log io.Writer
}

func (o PagedOptions) withDefaults(llc int64) PagedOptions {
	if o.Threads < 1 {
		o.Threads = 1
	}
	if len(o.BlockSizes) == 0 {
		o.BlockSizes = []int64{8, 16, 32, 64, 128, 256}
	}
	if len(o.Contexts) == 0 {
		o.Contexts = []int64{128, 1024, 4096, 16384}
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
	if o.KVBytes <= 0 {
		o.KVBytes = min(max(2*llc, 64<<20), 128<<20)
	}
	if o.MaxBufferBytes <= 0 {
		o.MaxBufferBytes = 1 << 30
	}
	return o
}

// PagedKernel is the suite's workload at one block size and context: every
// sequence at the full context (so block size is the only difference
// between rows of a context), the batch the smallest whose K+V reach
// kvBytes.
func PagedKernel(o PagedOptions, blockSize, context, kvBytes int64) kernels.PagedAttention {
	perSeq := 2 * context * o.KVHeads * o.HeadDim * o.Elem.Size()
	batch := max((kvBytes+perSeq-1)/perSeq, 1)
	return kernels.PagedAttention{
		Batch: batch, QHeads: o.QHeads, KVHeads: o.KVHeads, HeadDim: o.HeadDim,
		BlockSize: blockSize, MaxBlocks: (context + blockSize - 1) / blockSize,
		Lengths: uniform(batch, context), Elem: o.Elem,
	}
}

func uniform(n, v int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// PagedResult is one (block size, context) workload at one thread count.
type PagedResult struct {
	BlockSize int64  `json:"block_size"`
	Context   int64  `json:"context"`
	Batch     int64  `json:"batch"`
	Threads   int    `json:"threads"`
	Kernel    string `json:"kernel"`
	// Bytes is the K+V actually read plus q and out.
	Bytes float64 `json:"bytes"`
	// Median times in seconds from the closing batch (0: that candidate
	// failed; its measurement says why).
	DefaultS float64 `json:"default_s"`
	TunedS   float64 `json:"tuned_s"`
	// GB/s of the tuned and default schedules; the read bandwidth measured
	// in the same run (cpu.ReadCandidate over as many bytes as the kernel
	// reads, just before and just after the closing batch, samples pooled)
	// and the tuned GB/s as a fraction of it, which the goal is judged on;
	// and the roofline probe's cached read bandwidth at Threads with the
	// fraction of that, for comparison with earlier results.
	GBs             float64 `json:"gbs"`
	DefaultGBs      float64 `json:"default_gbs"`
	ReadGBs         float64 `json:"read_gbs"`
	ReadBWFraction  float64 `json:"read_bw_fraction"`
	ProbeReadGBs    float64 `json:"probe_read_gbs"`
	ProbeBWFraction float64 `json:"probe_bw_fraction"`
	GoalMet         bool    `json:"goal_met"`
	// Knobs of the tuned schedule.
	Knobs map[string]int64 `json:"knobs"`
	TuneSummary
}

// Name is the benchmark's name in bench_results, e.g.
// "PagedAttention/BS=16,ctx=4096,B=4,HQ=32,HKV=8,D=128/f32/threads=1".
func (r *PagedResult) Name() string {
	return fmt.Sprintf("PagedAttention/BS=%d,ctx=%d,B=%d,%s/threads=%d", r.BlockSize, r.Context, r.Batch, r.Kernel, r.Threads)
}

// PagedAttention runs the suite: per block size and context, tune within
// the budget, then measure the default and tuned schedules in one batch
// (twice, in mirrored order, samples pooled), relate the tuned GB/s to the
// read bandwidth probed at the same thread count, and store the numbers in
// db. The block size is part of the cache's type, so each is its own
// workload with its own tune. Results so far come back with an error.
func PagedAttention(ctx context.Context, tg *cpu.Target, roof *cpu.Roofline, db *tuningdb.DB, o PagedOptions) ([]PagedResult, error) {
	o = o.withDefaults(tg.CPU().LLCBytes())
	for _, c := range o.Contexts {
		for _, bs := range o.BlockSizes {
			if err := errors.Join(checkExtents("context", c), checkExtents("block size", bs)); err != nil {
				return nil, fmt.Errorf("bench paged attention: %w", err)
			}
			if err := checkBuffers(PagedKernel(o, bs, c, o.KVBytes), o.MaxBufferBytes); err != nil {
				return nil, fmt.Errorf("bench paged attention block size %d context %d: %w", bs, c, err)
			}
		}
	}
	tuner := search.NewCPUTuner(tg, roof, db, o.Tune)
	var out []PagedResult
	for _, c := range o.Contexts {
		for _, bs := range o.BlockSizes {
			r, err := pagedOne(ctx, roof, tuner, o, bs, c)
			if err != nil {
				return out, fmt.Errorf("bench paged attention block size %d context %d (threads %d): %w", bs, c, o.Threads, err)
			}
			if err := db.AddBenchResults(ctx, r.benchResults(tuner.Device.Hash)); err != nil {
				return out, fmt.Errorf("bench paged attention %s: %w", r.Name(), err)
			}
			out = append(out, *r)
			if o.Log != nil {
				fmt.Fprintf(o.Log, "block size %d context %d batch %d threads %d: default %.1f GB/s, tuned %.1f GB/s = %.0f%% of read bandwidth (%.1f GB/s now, probe %.1f) %v\n",
					bs, c, r.Batch, o.Threads, r.DefaultGBs, r.GBs, 100*r.ReadBWFraction, r.ReadGBs, r.ProbeReadGBs, r.Knobs)
			}
		}
	}
	return out, nil
}

func pagedOne(ctx context.Context, roof *cpu.Roofline, tuner *search.Tuner, o PagedOptions, bs, context int64) (*PagedResult, error) {
	k := PagedKernel(o, bs, context, o.KVBytes)
	c, err := tuneCompareRead(ctx, tuner, k, o.Threads, o.Final, o.ClosingRuns)
	if err != nil {
		return nil, err
	}
	knobs, err := k.Knobs(c.hw).Read(c.best)
	if err != nil {
		return nil, fmt.Errorf("best trace: %w", err)
	}
	p := c.p
	r := &PagedResult{
		BlockSize: bs, Context: context, Batch: k.Batch, Threads: o.Threads,
		Kernel: fmt.Sprintf("HQ=%d,HKV=%d,D=%d/%s", k.QHeads, k.KVHeads, k.HeadDim, k.Elem), Bytes: p.Bytes,
		Knobs: knobs, TuneSummary: c.summary,
	}
	r.DefaultS, r.TunedS = okMedian(r.Default), okMedian(r.Tuned)
	if r.TunedS > 0 {
		_, r.GBs = p.Rates(r.TunedS)
	}
	if r.DefaultS > 0 {
		_, r.DefaultGBs = p.Rates(r.DefaultS)
	}
	r.ReadGBs = c.readGBs
	r.ReadBWFraction = ratio(r.GBs, r.ReadGBs)
	if roof != nil {
		if pt, ok := roof.At(o.Threads); ok && pt.ReadGBs > 0 {
			r.ProbeReadGBs = pt.ReadGBs
			r.ProbeBWFraction = r.GBs / pt.ReadGBs
		}
	}
	r.GoalMet = r.ReadBWFraction >= PagedGoal
	return r, nil
}

// benchResults are the dashboard's numbers: both times with their samples,
// the tuned GB/s and its fraction of read bandwidth; the whole result
// rides along on the tuned row.
func (r *PagedResult) benchResults(device string) []tuningdb.BenchResult {
	m := rowMaker{AttentionSuite, r.Name(), device}
	return m.tunedRows(r, r.TuneSummary, r.ReadBWFraction,
		m.value("GB/s", r.GBs, "GB/s", tuningdb.BetterHigher),
		m.value("read_bw_fraction", r.ReadBWFraction, "", tuningdb.BetterHigher))
}

// WriteAttentionTable prints results as an aligned table with the goal.
func WriteAttentionTable(w io.Writer, rs []PagedResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "block\tcontext\tbatch\tthreads\tMiB read\tdefault ms\ttuned ms\tdefault GB/s\ttuned GB/s\tread GB/s\t% read BW\tprobe GB/s\t% probe\ttrials\tgoal\tmet\tknobs (split,par,vec,unroll,heads,pf,tile,streams)\t")
	for _, r := range rs {
		met := "no"
		if r.GoalMet {
			met = "yes"
		}
		kn := r.Knobs
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%.0f\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.0f%%\t%.1f\t%.0f%%\t%d+%d\t≥%.0f%%\t%s\t%d,%d,%d,%d,%d,%d,%d,%d\t\n",
			r.BlockSize, r.Context, r.Batch, r.Threads, r.Bytes/(1<<20), ms(r.DefaultS), ms(r.TunedS), r.DefaultGBs, r.GBs,
			r.ReadGBs, 100*r.ReadBWFraction, r.ProbeReadGBs, 100*r.ProbeBWFraction, r.Resumed, r.Measured, 100*PagedGoal, met,
			kn["split"], kn["parallel"], kn["vec"], kn["unroll"], kn["heads"], kn["prefetch"], kn["tile"], kn["streams"])
	}
	return tw.Flush()
}
