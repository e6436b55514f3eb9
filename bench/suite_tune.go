package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"llmir/bench/results"
	"llmir/kernels"
	"llmir/search"
	"llmir/tuningdb"
)

// TaskTune is one workload of the nightly's model tune.
type TaskTune struct {
	Benchmark string  `json:"benchmark"` // "TuneModel/<preset>/<kernel>/threads=N"
	Kernel    string  `json:"kernel"`
	Workload  string  `json:"workload"`
	Trials    int     `json:"trials"`
	OK        int     `json:"ok"`
	DefaultS  float64 `json:"default_s"`
	BestS     float64 `json:"best_s"`
	Speedup   float64 `json:"best_over_default"`
	// TrialsToBest is the 1-based position of the best trial among the
	// distinct traces measured, the default first (0: the best was the
	// default).
	TrialsToBest int    `json:"trials_to_best"`
	Error        string `json:"error,omitempty"`
	// The samples of the default's and the best's last records, so that
	// the regression rule judges these rows by their own noise.
	defaultSamples, bestSamples []float64
}

// ModelTune is the nightly's short tune of one model.
type ModelTune struct {
	Preset  string     `json:"preset"`
	Threads int        `json:"threads"`
	Budget  int        `json:"trials_per_task"`
	RunID   int64      `json:"run_id"` // the tuning run in the results database
	Tasks   []TaskTune `json:"tasks"`
	Skipped []Skip     `json:"skipped"`
	// Geomean is the geometric mean over tasks of default / best.
	Geomean  float64 `json:"geomean_speedup"`
	ElapsedS float64 `json:"elapsed_s"`
}

// runModelTune tunes the preset from scratch with a small budget per task
// and stores the tune as one tuning run of the results database, whose
// trials the dashboard draws as best-latency-vs-trials curves.
func runModelTune(ctx context.Context, env *Env) (EntryResult, error) {
	res := EntryResult{Suite: SuiteTune}
	mt, err := tuneModel(ctx, env)
	if mt != nil {
		res.Detail = mt
		res.Table = func(w io.Writer) error { return WriteModelTune(w, mt) }
		res.Rows = mt.rows()
	}
	return res, err
}

// tuneModel runs search.TuneModel (the scheduler over the preset's kernel
// groups, fused and unfused alternatives, evolutionary search with the
// shared cost model) with a per-task cap of TuneTrials, in a fresh scratch
// database: a nightly measures a search from nothing (in a database that
// remembers last night's trials the tune would resume and measure nothing,
// and its cost model would start trained). Then it copies every trial into
// the results database under one tuning run, whose best-latency-vs-trials
// curves the dashboard draws.
func tuneModel(ctx context.Context, env *Env) (*ModelTune, error) {
	o := env.Opts
	threads := o.Threads[0]
	mt := &ModelTune{Preset: o.TunePreset, Threads: threads, Budget: o.TuneTrials}
	m, err := importF32(o.TunePreset)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "llmir-nightly-tune-")
	if err != nil {
		return nil, fmt.Errorf("tune scratch folder: %w", err)
	}
	defer os.RemoveAll(dir)
	scratch, err := tuningdb.Open(ctx, filepath.Join(dir, "tune.db"), tuningdb.Options{LLMIRVersion: o.Version})
	if err != nil {
		return nil, err
	}
	defer scratch.Close()
	runID, err := env.Results.StartRun(ctx, tuningdb.TuningRun{DeviceHash: env.Device.Hash, BudgetTrials: o.TuneTrials,
		Command: fmt.Sprintf("%s (tune %s, %d trials per task, %d threads)", o.Command, o.TunePreset, o.TuneTrials, threads), LLMIRVersion: o.Version})
	if err != nil {
		return nil, err
	}
	mt.RunID = runID
	name := func(kernel string) string {
		return fmt.Sprintf("TuneModel/%s/%s/threads=%d", o.TunePreset, kernel, threads)
	}
	start := time.Now()
	res, tuneErr := search.TuneModel(ctx, m, search.ModelOptions{
		Target: env.Target, Roofline: env.Roofline, DB: scratch, Threads: threads,
		// PerTask caps every task; the total is never the binding limit.
		Budget: search.ModelBudget{PerTask: o.TuneTrials, Trials: math.MaxInt32},
		Step:   min(o.TuneTrials, 8), Run: o.Run, Seed: o.Seed,
		Command: o.Command, LLMIRVersion: o.Version, Log: o.Log,
		Exclude: func(k kernels.Kernel) string {
			if o.Match != nil && !o.Match.MatchString(name(k.Name())) {
				return "not matched by --match"
			}
			if b := int64(k.Bytes()); b > o.MaxBufferBytes {
				return fmt.Sprintf("moves %d MiB, over the %d MiB cap", b>>20, o.MaxBufferBytes>>20)
			}
			return ""
		},
	})
	if errors.Is(tuneErr, search.ErrNoTasks) && ctx.Err() == nil {
		tuneErr = nil // everything filtered out: an empty tune, not a failure
	}
	trials, cerr := copyRuns(ctx, scratch, env.Results, runID)
	if cerr != nil && tuneErr == nil {
		tuneErr = cerr
	}
	if res != nil {
		for _, nk := range slices.Concat(res.NoKernel, res.Skipped, res.TooLarge) {
			mt.Skipped = append(mt.Skipped, Skip{Workload: nk.Name, Where: nk.Funcs, Reason: nk.Reason})
		}
		logSum, n := 0.0, 0
		for _, tr := range res.Tasks {
			tt := taskTune(tr, name(tr.Name), trials[tr.Workload])
			if tt.Speedup > 0 {
				logSum += math.Log(tt.Speedup)
				n++
			}
			mt.Tasks = append(mt.Tasks, tt)
			env.logf("%s: %d trials, default %s, best %s", tt.Benchmark, tt.Trials, results.FormatSeconds(tt.DefaultS), results.FormatSeconds(tt.BestS))
		}
		if n > 0 {
			mt.Geomean = math.Exp(logSum / float64(n))
		}
	}
	mt.ElapsedS = time.Since(start).Seconds()
	summary, _ := json.Marshal(map[string]any{"preset": mt.Preset, "tasks": len(mt.Tasks), "geomean_speedup": mt.Geomean})
	if err := env.Results.FinishRun(context.WithoutCancel(ctx), runID, summary); err != nil && tuneErr == nil {
		tuneErr = err
	}
	return mt, tuneErr
}

// taskTune is a task's outcome: TuneModel's default and best (the best
// confirmed next to the default), and from its records the trials and
// where the best came (records in the order measured, confirmation
// re-measurements of a trace not counted again).
func taskTune(tr search.TaskReport, benchmark string, recs []tuningdb.Record) TaskTune {
	t := TaskTune{Benchmark: benchmark, Kernel: tr.Name, Workload: tr.Workload, Trials: tr.Trials}
	if !math.IsNaN(tr.Default) {
		t.DefaultS = tr.Default
	}
	if !math.IsNaN(tr.Best) {
		t.BestS = tr.Best
	}
	if t.DefaultS > 0 && t.BestS > 0 {
		t.Speedup = t.DefaultS / t.BestS
	}
	seen := map[string]bool{}
	for _, r := range recs {
		key := string(r.Trace)
		if r.Status == tuningdb.StatusOK {
			if key == string(recs[0].Trace) {
				t.defaultSamples = r.Samples
			}
			if key == tr.BestTrace {
				t.bestSamples = r.Samples
			}
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		if r.Status == tuningdb.StatusOK {
			t.OK++
		}
		// The rule-based default is each task's first trial.
		if key == tr.BestTrace && len(seen) > 1 {
			t.TrialsToBest = len(seen)
		}
	}
	return t
}

// copyRuns copies every tuning run of the scratch database into dst under
// the run dstRun, and returns the copied records by workload key.
func copyRuns(ctx context.Context, src, dst *tuningdb.DB, dstRun int64) (map[string][]tuningdb.Record, error) {
	runs, err := src.RecentRuns(ctx, math.MaxInt32)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(runs, func(a, b tuningdb.TuningRun) int { return cmp.Compare(a.ID, b.ID) })
	out := map[string][]tuningdb.Record{}
	for _, r := range runs {
		recs, err := copyRun(ctx, src, dst, r.ID, dstRun)
		for _, t := range recs {
			out[t.WorkloadKey] = append(out[t.WorkloadKey], t.Record)
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// copyRun copies the records of a scratch tuning run into dst under the
// run dstRun, with the devices and workloads they refer to.
func copyRun(ctx context.Context, src, dst *tuningdb.DB, srcRun, dstRun int64) ([]tuningdb.RunTrial, error) {
	trials, err := src.RunRecords(ctx, srcRun)
	if err != nil || len(trials) == 0 {
		return nil, err
	}
	var b tuningdb.Batch
	seenDev, seenWl := map[string]bool{}, map[string]bool{}
	for _, t := range trials {
		if !seenDev[t.DeviceHash] {
			d, err := src.Device(ctx, t.DeviceHash)
			if err != nil {
				return nil, err
			}
			b.Devices = append(b.Devices, d)
			seenDev[t.DeviceHash] = true
		}
		if !seenWl[t.WorkloadKey] {
			w, err := src.Workload(ctx, t.WorkloadKey)
			if err != nil {
				return nil, err
			}
			b.Workloads = append(b.Workloads, w)
			seenWl[t.WorkloadKey] = true
		}
		r := t.Record
		r.RunID = dstRun
		b.Records = append(b.Records, r)
	}
	if _, err := dst.RecordBatch(context.WithoutCancel(ctx), b); err != nil {
		return nil, fmt.Errorf("copy tuning run %d: %w", srcRun, err)
	}
	return trials, nil
}

// rows are the tune's bench_results: per task the best and default times,
// their ratio and the trials it took; per model the geometric-mean
// speedup over the rule-based defaults.
func (mt *ModelTune) rows() []tuningdb.BenchResult {
	var out []tuningdb.BenchResult
	for _, t := range mt.Tasks {
		out = append(out,
			tuningdb.BenchResult{Name: t.Benchmark, Metric: "best_median_s", Value: t.BestS, Unit: "s", Better: tuningdb.BetterLower, Samples: t.bestSamples},
			tuningdb.BenchResult{Name: t.Benchmark, Metric: "default_median_s", Value: t.DefaultS, Unit: "s", Better: tuningdb.BetterLower, Samples: t.defaultSamples},
			tuningdb.BenchResult{Name: t.Benchmark, Metric: "best_over_default", Value: t.Speedup, Unit: "x", Better: tuningdb.BetterHigher})
	}
	if len(mt.Tasks) > 0 {
		extra, _ := json.Marshal(mt)
		name := fmt.Sprintf("TuneModel/%s/threads=%d", mt.Preset, mt.Threads)
		out = append(out,
			tuningdb.BenchResult{Name: name, Metric: "geomean_best_over_default", Value: mt.Geomean, Unit: "x", Better: tuningdb.BetterHigher, Extra: extra},
			tuningdb.BenchResult{Name: name, Metric: "elapsed_s", Value: mt.ElapsedS, Unit: "s", Better: tuningdb.BetterLower})
	}
	return out
}

// WriteModelTune prints the tune's tasks.
func WriteModelTune(w io.Writer, mt *ModelTune) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "task\ttrials (ok)\tdefault\tbest\tbest×default\ttrial of best\t")
	for _, t := range mt.Tasks {
		note := ""
		if t.Error != "" {
			note = "  " + t.Error
		}
		fmt.Fprintf(tw, "%s\t%d (%d)\t%s\t%s\t%.2f\t%d\t%s\n", t.Benchmark, t.Trials, t.OK, fmtS(t.DefaultS), fmtS(t.BestS), t.Speedup, t.TrialsToBest, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: geometric-mean speedup over the defaults %.3f× (%d tasks, %d skipped, tuning run %d, %.0fs)\n",
		mt.Preset, mt.Geomean, len(mt.Tasks), len(mt.Skipped), mt.RunID, mt.ElapsedS)
	return nil
}
