package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"llmir/bench/results"
	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cpu/cgen"
	"llmir/tuningdb"
)

// ModelShapes names the model functions whose workloads the kernels suite
// measures: a preset and its phases ("prefill", "decode"; none: all).
type ModelShapes struct {
	Preset string   `json:"preset"`
	Phases []string `json:"phases,omitempty"`
}

func (m ModelShapes) String() string {
	if len(m.Phases) == 0 {
		return m.Preset
	}
	return m.Preset + ":" + strings.Join(m.Phases, "+")
}

// DefaultModels are llama-tiny (prefill and decode) and llama-3-8b's
// decode. Llama-3-8B prefill (M = 512 against 4096…14336-wide weights,
// tens of GFLOP per kernel, each reference computed in float64 in Go) takes
// longer on a 2-core machine than a nightly has, so it is left out; name it
// with --models llama-3-8b to run it.
func DefaultModels() []ModelShapes {
	return []ModelShapes{{Preset: "llama-tiny"}, {Preset: "llama-3-8b", Phases: []string{"decode"}}}
}

// ParseModels reads "preset[:phase[+phase]]" items, e.g.
// "llama-tiny,llama-3-8b:decode".
func ParseModels(items []string) ([]ModelShapes, error) {
	var out []ModelShapes
	known := hf.Presets()
	for i, it := range items {
		it = strings.TrimSpace(it)
		if it == "" {
			continue
		}
		name, phases, _ := strings.Cut(it, ":")
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("model %d %q: unknown preset %q (known: %s)", i+1, it, name, strings.Join(known, ", "))
		}
		m := ModelShapes{Preset: name}
		if phases != "" {
			for _, p := range strings.Split(phases, "+") {
				if p != "prefill" && p != "decode" {
					return nil, fmt.Errorf("model %d %q: phase %q: want prefill or decode", i+1, it, p)
				}
				m.Phases = append(m.Phases, p)
			}
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, errors.New("no models given")
	}
	return out, nil
}

// importF32 imports a preset with f32 tensors: the CPU kernels compute in
// f32 (bf16 checkpoints are measured at the same shapes in f32; weight-only
// quantized layers are kernels of their own).
func importF32(preset string) (*ir.Module, error) {
	m, err := hf.ImportPreset(preset, hf.Options{DType: "f32"})
	if err != nil {
		return nil, fmt.Errorf("import preset %s: %w", preset, err)
	}
	return m, nil
}

// suiteWorkload is one distinct workload of the suite's models.
type suiteWorkload struct {
	W     ir.Workload
	Where []string // "llama-tiny/decode", …
}

// modelWorkloads lists the distinct workloads of the models' selected
// phases, in first-occurrence order.
func modelWorkloads(models []ModelShapes) ([]suiteWorkload, error) {
	var out []suiteWorkload
	index := map[string]int{}
	for _, ms := range models {
		m, err := importF32(ms.Preset)
		if err != nil {
			return nil, err
		}
		tasks, err := ir.Tasks(m, nil)
		if err != nil {
			return nil, fmt.Errorf("tasks of %s: %w", ms.Preset, err)
		}
		for _, t := range tasks {
			for _, fn := range t.Funcs {
				if len(ms.Phases) > 0 && !slices.Contains(ms.Phases, fn) {
					continue
				}
				key := t.Workload.Key()
				i, seen := index[key]
				if !seen {
					i = len(out)
					index[key] = i
					out = append(out, suiteWorkload{W: t.Workload})
				}
				out[i].Where = append(out[i].Where, ms.Preset+"/"+fn)
			}
		}
	}
	return out, nil
}

// Skip is a workload the suite did not measure, and why.
type Skip struct {
	Workload string   `json:"workload"`
	Where    []string `json:"where"`
	Reason   string   `json:"reason"`
}

// KernelResult is one kernel at one thread count: the rule-based default,
// the best-known schedule and the baseline measured in one batch.
type KernelResult struct {
	// Benchmark is the name in bench_results:
	// "<kernel name>/threads=N".
	Benchmark string   `json:"benchmark"`
	Kernel    string   `json:"kernel"`
	Group     string   `json:"group"`
	Workload  string   `json:"workload"` // key of the kernel's workload at this thread count
	Where     []string `json:"where"`
	Threads   int      `json:"threads"`
	// BestFrom says where the best-known schedule came from: "default"
	// (nothing recorded), or the lookup's layer and level, e.g.
	// "user/exact"; BestNote says why a found record was not used.
	BestFrom string `json:"best_from"`
	BestNote string `json:"best_note,omitempty"`
	// Slowed: the --slow testing aid replaced both schedules with the
	// naive one.
	Slowed bool `json:"slowed,omitempty"`
	// Median times in seconds (0: that candidate failed; see its
	// measurement) and the baseline's name ("" when none applies).
	DefaultS  float64 `json:"default_s"`
	BestS     float64 `json:"best_s"`
	Baseline  string  `json:"baseline,omitempty"`
	BaselineS float64 `json:"baseline_s,omitempty"`
	// BaselineRatio is baseline time / best time (> 1: llmir faster);
	// BestOverDefault default time / best time.
	BaselineRatio   float64 `json:"baseline_ratio,omitempty"`
	BestOverDefault float64 `json:"best_over_default"`
	FLOPs           float64 `json:"flops"`
	Bytes           float64 `json:"bytes"`
	GFLOPs          float64 `json:"gflops"`
	GBs             float64 `json:"gbs"`
	// Bound is "memory" or "compute": which roof limits the kernel at
	// this thread count; BoundS the roofline's lower bound on its time and
	// RooflineFraction BoundS / BestS (0 without a probe at Threads).
	Bound            string  `json:"bound,omitempty"`
	BoundS           float64 `json:"bound_s,omitempty"`
	RooflineFraction float64 `json:"roofline_fraction,omitempty"`
	// The closing batch in full (all samples of both passes).
	Default      target.Measurement  `json:"default"`
	Best         target.Measurement  `json:"best"`
	BaselineMeas *target.Measurement `json:"baseline_measurement,omitempty"`
	BestTrace    json.RawMessage     `json:"best_trace,omitempty"`
}

// KernelsDetail is the registry entry's JSON detail.
type KernelsDetail struct {
	Groups  []string       `json:"groups"` // the registry's op groups
	Models  []ModelShapes  `json:"models"`
	Results []KernelResult `json:"results"`
	Skipped []Skip         `json:"skipped"`
}

// baselineFunc returns the baseline candidate of a kernel (ok false when
// none applies) and its name.
type baselineFunc func(k kernels.Kernel, threads int) (name string, c target.Candidate, ok bool)

// baselines are the library baselines of op groups, measured by the same
// harness in the same batch. OpenBLAS runs with OPENBLAS_CORETYPE and
// OPENBLAS_L2_SIZE unset, as the protocol asks of benchmarks.
var baselines = map[string]baselineFunc{
	"llmir.linear": func(k kernels.Kernel, threads int) (string, target.Candidate, bool) {
		l, ok := k.(kernels.Linear)
		if !ok {
			return "", target.Candidate{}, false
		}
		c := cpu.OpenBLASCandidate("openblas", cpu.Linear{M: int(l.M), N: int(l.N), K: int(l.K)}, threads)
		c.UnsetEnv = cpu.OpenBLASUnsetEnv
		return "openblas", c, true
	},
}

// runRegistryKernels measures every kernel of the registry on the suite's
// model workloads: whatever kernels.FromWorkload can build is measured, so
// a kernel added to the registry joins the suite without an edit here.
func runRegistryKernels(ctx context.Context, env *Env) (EntryResult, error) {
	o := env.Opts
	res := EntryResult{Suite: SuiteKernels}
	det := &KernelsDetail{Groups: kernels.Groups(), Models: o.Models}
	res.Detail = det
	res.Table = func(w io.Writer) error { return WriteKernelTable(w, det) }
	wls, err := modelWorkloads(o.Models)
	if err != nil {
		return res, err
	}
	names := map[string]string{} // benchmark name → workload key, to keep names unique
	for _, sw := range wls {
		k, err := kernels.FromWorkload(sw.W)
		if err != nil {
			reason := err.Error()
			if errors.Is(err, kernels.ErrNoKernel) {
				reason = "no kernel in the registry for " + strings.Join(sw.W.Group, "+")
			}
			det.Skipped = append(det.Skipped, Skip{Workload: sw.W.Name(), Where: sw.Where, Reason: reason})
			continue
		}
		p, err := search.NewProblem(k, o.Seed)
		if err != nil {
			det.Skipped = append(det.Skipped, Skip{Workload: sw.W.Name(), Where: sw.Where, Reason: err.Error()})
			continue
		}
		if bufBytes := problemBytes(p); bufBytes > o.MaxBufferBytes {
			det.Skipped = append(det.Skipped, Skip{Workload: sw.W.Name(), Where: sw.Where,
				Reason: fmt.Sprintf("buffers hold %d MiB, over the %d MiB cap (--max-buffer-mib)", bufBytes>>20, o.MaxBufferBytes>>20)})
			continue
		}
		for _, threads := range o.Threads {
			name := fmt.Sprintf("%s/threads=%d", k.Name(), threads)
			if key, dup := names[name]; dup && key != sw.W.Key() {
				name = fmt.Sprintf("%s/threads=%d/wl=%.8s", k.Name(), threads, sw.W.Key())
			}
			names[name] = sw.W.Key()
			if o.Match != nil && !o.Match.MatchString(name) {
				continue
			}
			r, err := measureKernel(ctx, env, k, p, name, sw.Where, threads)
			if err != nil {
				return res, fmt.Errorf("%s: %w", name, err)
			}
			det.Results = append(det.Results, *r)
			res.Rows = append(res.Rows, r.rows()...)
			env.logf("%s: default %s, best %s (%s)%s", name, results.FormatSeconds(r.DefaultS), results.FormatSeconds(r.BestS), r.BestFrom, slowMark(r.Slowed))
		}
	}
	return res, nil
}

// checkBuffers refuses kernel k when its buffers exceed limit bytes (the
// --max-buffer-mib cap), naming both: the heavy suites' flags (context,
// batch) can ask for inputs no machine holds, and the runner would die
// allocating them instead of failing.
func checkBuffers(k kernels.Kernel, limit int64) error {
	p, err := search.NewProblem(k, 1)
	if err != nil {
		return err
	}
	if n := problemBytes(p); n > limit {
		return fmt.Errorf("%s: buffers hold %d MiB, over the %d MiB cap (--max-buffer-mib)", k.Name(), (n+1<<20-1)>>20, limit>>20)
	}
	return nil
}

// problemBytes is the size of a problem's buffers.
func problemBytes(p *target.Problem) int64 {
	var n int64
	for _, b := range p.Buffers {
		n += b.Bytes()
	}
	return n
}

func slowMark(slowed bool) string {
	if slowed {
		return " [SLOWED: --slow testing aid]"
	}
	return ""
}

// naiveSchedule is the --slow testing aid's schedule: the untouched loop
// nest of the compute definition (no tiling, vectorisation or threads)
// for kernels printed through cgen; for template kernels, their rule-based
// knobs chosen for scalar, single-threaded hardware.
func naiveSchedule(k kernels.Kernel, hw kernels.Hardware) (*schedule.Schedule, kernels.Hardware, error) {
	scalar := hw
	scalar.VectorBits, scalar.Threads = 0, 1
	if _, ok := k.(kernels.Generator); ok {
		s, err := search.DefaultSchedule(k, scalar)
		return s, scalar, err
	}
	def, err := k.Def()
	if err != nil {
		return nil, scalar, err
	}
	s, err := schedule.New(def, 0)
	return s, scalar, err
}

// bestKnown looks the kernel's best record up (user database, then the
// precompiled one; exact, compatible device, nearest bucket) and replays
// its trace on this kernel. Without an answer, or when the trace does not
// replay here (a neighbour bucket's tiles need not fit), it is the default.
func bestKnown(ctx context.Context, env *Env, k kernels.Kernel, threads int, def *schedule.Schedule) (s *schedule.Schedule, from, note string, err error) {
	if env.Lookup == nil {
		return def, "default", "", nil
	}
	wl := search.WorkloadOf(k, threads)
	q := tuningdb.Query{WorkloadKey: wl.Key, Family: wl.Family, Bucket: wl.Bucket, DeviceHash: env.Device.Hash,
		Kind: env.Device.Kind, Compat: env.Device.Compat, CodegenVersion: cgen.CodegenVersion}
	a, err := env.Lookup.Lookup(ctx, q)
	if errors.Is(err, tuningdb.ErrNotFound) {
		return def, "default", "", nil
	}
	if err != nil {
		return nil, "", "", fmt.Errorf("best-known schedule: %w", err)
	}
	from = a.Layer + "/" + a.Level.String()
	kd, err := k.Def()
	if err != nil {
		return nil, "", "", err
	}
	tr, err := schedule.ParseTrace(a.Record.Trace)
	if err == nil {
		s, err = schedule.Replay(kd, tr)
	}
	if err != nil {
		return def, "default", fmt.Sprintf("record from %s does not replay here: %v", from, err), nil
	}
	return s, from, "", nil
}

// measureKernel builds the default, the best-known schedule (when it
// differs) and the baseline, then measures them in one batch, twice in
// mirrored order with the samples of both passes pooled (as Linear does).
func measureKernel(ctx context.Context, env *Env, k kernels.Kernel, p *target.Problem, name string, where []string, threads int) (*KernelResult, error) {
	hw := search.CPUHardware(env.Target.CPU(), threads)
	r := &KernelResult{Benchmark: name, Kernel: k.Name(), Group: strings.Join(k.Workload().Group, "+"),
		Workload: search.WorkloadOf(k, threads).Key, Where: where, Threads: threads, FLOPs: p.FLOPs, Bytes: p.Bytes}
	def, err := search.DefaultSchedule(k, hw)
	if err != nil {
		return nil, err
	}
	best, from, note, err := bestKnown(ctx, env, k, threads, def)
	if err != nil {
		return nil, err
	}
	r.BestFrom, r.BestNote = from, note
	defHW, bestHW := hw, hw
	if env.Opts.Slow != nil && env.Opts.Slow.MatchString(name) {
		naive, scalar, err := naiveSchedule(k, hw)
		if err != nil {
			return nil, fmt.Errorf("--slow: naive schedule: %w", err)
		}
		def, best, defHW, bestHW, r.Slowed = naive, naive, scalar, scalar, true
		r.BestFrom = "naive (--slow)"
	}
	var extra []target.Candidate
	if bf, ok := baselines[r.Group]; ok {
		if bname, bc, ok := bf(k, threads); ok {
			bc.ID = "baseline"
			r.Baseline = bname
			extra = append(extra, bc)
		}
	}
	c, err := compareKnown(ctx, env.Target, p, k, scheduleFor{def, defHW}, scheduleFor{best, bestHW}, "best", env.Opts.Run, extra...)
	if err != nil {
		return nil, err
	}
	r.BestTrace = c.bestKey
	r.Default, r.Best = c.defaultM, c.bestM
	r.DefaultS, r.BestS = okMedian(r.Default), okMedian(r.Best)
	if r.Baseline != "" {
		m := merged(c.ms, "baseline")
		r.BaselineMeas = &m
		r.BaselineS = okMedian(m)
		r.BaselineRatio = ratio(r.BaselineS, r.BestS)
	}
	r.BestOverDefault = ratio(r.DefaultS, r.BestS)
	if r.BestS > 0 {
		r.GFLOPs, r.GBs = p.Rates(r.BestS)
	}
	if env.Roofline != nil {
		if pt, ok := env.Roofline.At(threads); ok && pt.PeakGFLOPs > 0 && pt.ReadGBs > 0 {
			r.Bound = "memory"
			if p.FLOPs/(pt.PeakGFLOPs*1e9) > p.Bytes/(pt.ReadGBs*1e9) {
				r.Bound = "compute"
			}
			if b, err := env.Roofline.Bound(threads, p.FLOPs, p.Bytes); err == nil {
				r.BoundS = b.Seconds()
				r.RooflineFraction = ratio(r.BoundS, r.BestS)
			}
		}
	}
	return r, nil
}

// rows are the kernel's bench_results: the best-known time with all its
// samples, the baseline ratio and the roofline fraction (and the whole
// result as Extra), the default's and the baseline's times, the rates
// that apply (GB/s when bytes move, GFLOP/s when it computes), the
// roofline fraction and the ratios. Derived rows carry the best time's
// samples mapped through the same formula, so that the regression rule
// sees their noise too. A failed candidate's value is 0, which the
// regression rule reads as a failure.
func (r *KernelResult) rows() []tuningdb.BenchResult {
	extra, _ := json.Marshal(r)
	var bestSamples []float64
	if r.Best.OK() {
		bestSamples = r.Best.Samples
	}
	derived := func(metric string, v float64, unit string, f func(sec float64) float64) tuningdb.BenchResult {
		b := tuningdb.BenchResult{Suite: SuiteKernels, Name: r.Benchmark, Metric: metric, Value: v, Unit: unit, Better: tuningdb.BetterHigher}
		if v > 0 {
			for _, x := range bestSamples {
				b.Samples = append(b.Samples, f(x))
			}
		}
		return b
	}
	timed := func(metric string, m target.Measurement) tuningdb.BenchResult {
		b := tuningdb.BenchResult{Suite: SuiteKernels, Name: r.Benchmark, Metric: metric, Value: okMedian(m), Unit: "s", Better: tuningdb.BetterLower}
		if m.OK() {
			b.Samples = m.Samples
			b.Median, b.IQR = m.Median, m.IQR()
		}
		return b
	}
	best := timed("best_median_s", r.Best)
	best.Baseline, best.BaselineRatio, best.RooflineFraction, best.Extra = r.Baseline, r.BaselineRatio, r.RooflineFraction, extra
	out := []tuningdb.BenchResult{best, timed("default_median_s", r.Default)}
	if r.BaselineMeas != nil {
		out = append(out, timed(r.Baseline+"_median_s", *r.BaselineMeas),
			derived("speedup_vs_"+r.Baseline, r.BaselineRatio, "x", func(s float64) float64 { return r.BaselineS / s }))
	}
	out = append(out, derived("best_over_default", r.BestOverDefault, "x", func(s float64) float64 { return r.DefaultS / s }))
	if r.Bytes > 0 {
		out = append(out, derived("GB/s", r.GBs, "GB/s", func(s float64) float64 { return r.Bytes / s / 1e9 }))
	}
	if r.FLOPs > 0 {
		out = append(out, derived("GFLOP/s", r.GFLOPs, "GFLOP/s", func(s float64) float64 { return r.FLOPs / s / 1e9 }))
	}
	if r.Bound != "" {
		out = append(out, derived("roofline_fraction", r.RooflineFraction, "fraction", func(s float64) float64 { return r.BoundS / s }))
	}
	return out
}

// WriteKernelTable prints the kernels' results and the skipped workloads.
func WriteKernelTable(w io.Writer, d *KernelsDetail) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "benchmark\tdefault\tIQR\tbest\tIQR\tbest from\tbaseline\t×baseline\trate\t% roofline\t")
	for _, r := range d.Results {
		base, ratio := "—", "—"
		if r.Baseline != "" {
			base, ratio = r.Baseline+" "+fmtS(r.BaselineS), fmt.Sprintf("%.2f", r.BaselineRatio)
		}
		rate := fmt.Sprintf("%.1f GB/s", r.GBs)
		if r.Bound == "compute" {
			rate = fmt.Sprintf("%.1f GFLOP/s", r.GFLOPs)
		}
		roof := "—"
		if r.Bound != "" {
			roof = fmt.Sprintf("%.0f%% (%s)", 100*r.RooflineFraction, r.Bound)
		}
		from := r.BestFrom
		if r.Slowed {
			from += " SLOWED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Benchmark, fmtS(r.DefaultS), results.FormatSeconds(r.Default.IQR()),
			fmtS(r.BestS), results.FormatSeconds(r.Best.IQR()), from, base, ratio, rate, roof)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.Skipped) > 0 {
		fmt.Fprintf(w, "%d workloads not measured:\n", len(d.Skipped))
		for _, s := range d.Skipped {
			fmt.Fprintf(w, "  %s (%s): %s\n", s.Workload, strings.Join(s.Where, ", "), s.Reason)
		}
	}
	return nil
}

func fmtS(s float64) string {
	if s <= 0 {
		return "failed"
	}
	return results.FormatSeconds(s)
}
