package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
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
	// measured ones (0: the best was the default).
	TrialsToBest int    `json:"trials_to_best"`
	Error        string `json:"error,omitempty"`
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

// tuneModel runs the tune in a fresh scratch database (a nightly measures
// a search from nothing: in a database that remembers last night's trials
// the tuner would resume and measure nothing), then copies every trial
// into the results database under one tuning run. It drives search.Tuner
// over the model's tasks; it is the one place to switch to
// search.TuneModel once that lands.
func tuneModel(ctx context.Context, env *Env) (*ModelTune, error) {
	o := env.Opts
	threads := o.Threads[0]
	mt := &ModelTune{Preset: o.TunePreset, Threads: threads, Budget: o.TuneTrials}
	wls, err := modelWorkloads([]ModelShapes{{Preset: o.TunePreset}})
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
	tuner := search.NewCPUTuner(env.Target, env.Roofline, scratch, search.Options{
		Budget: search.Budget{Trials: o.TuneTrials}, Run: o.Run, Seed: o.Seed,
		Command: o.Command, LLMIRVersion: o.Version,
	})
	runID, err := env.Results.StartRun(ctx, tuningdb.TuningRun{DeviceHash: env.Device.Hash, BudgetTrials: o.TuneTrials,
		Command: fmt.Sprintf("%s (tune %s, %d trials per task, %d threads)", o.Command, o.TunePreset, o.TuneTrials, threads), LLMIRVersion: o.Version})
	if err != nil {
		return nil, err
	}
	mt.RunID = runID
	start := time.Now()
	var tuneErr error
	logSum, n := 0.0, 0
	for _, sw := range wls {
		k, err := kernels.FromWorkload(sw.W)
		if err != nil {
			mt.Skipped = append(mt.Skipped, Skip{Workload: sw.W.Name(), Where: sw.Where, Reason: err.Error()})
			continue
		}
		name := fmt.Sprintf("TuneModel/%s/%s/threads=%d", o.TunePreset, k.Name(), threads)
		if o.Match != nil && !o.Match.MatchString(name) {
			continue
		}
		p, err := search.NewProblem(k, o.Seed)
		if err == nil && problemBytes(p) > o.MaxBufferBytes {
			err = fmt.Errorf("buffers hold %d MiB, over the %d MiB cap", problemBytes(p)>>20, o.MaxBufferBytes>>20)
		}
		if err != nil {
			mt.Skipped = append(mt.Skipped, Skip{Workload: sw.W.Name(), Where: sw.Where, Reason: err.Error()})
			continue
		}
		tt := TaskTune{Benchmark: name, Kernel: k.Name(), Workload: search.WorkloadOf(k, threads).Key}
		tr, err := tuner.Tune(ctx, search.Task{Kernel: k, Threads: threads}, p)
		if tr != nil {
			tt.fill(tr)
			if cerr := copyRun(ctx, scratch, env.Results, tr.RunID, runID); cerr != nil && err == nil {
				err = cerr
			}
		}
		if err != nil {
			// One task that cannot be tuned (no valid schedule, a kernel
			// that does not lower) is that task's result; only an ended
			// context stops the tune.
			if ctx.Err() != nil {
				tuneErr = fmt.Errorf("tune %s: %w", name, err)
				mt.Tasks = append(mt.Tasks, tt)
				break
			}
			tt.Error = err.Error()
		}
		if tt.Speedup > 0 {
			logSum += math.Log(tt.Speedup)
			n++
		}
		mt.Tasks = append(mt.Tasks, tt)
		env.logf("%s: %d trials, default %s, best %s", name, tt.Trials, results.FormatSeconds(tt.DefaultS), results.FormatSeconds(tt.BestS))
	}
	if n > 0 {
		mt.Geomean = math.Exp(logSum / float64(n))
	}
	mt.ElapsedS = time.Now().Sub(start).Seconds()
	summary, _ := json.Marshal(map[string]any{"preset": mt.Preset, "tasks": len(mt.Tasks), "geomean_speedup": mt.Geomean})
	if err := env.Results.FinishRun(context.WithoutCancel(ctx), runID, summary); err != nil && tuneErr == nil {
		tuneErr = err
	}
	return mt, tuneErr
}

// fill takes a task's numbers from the tuner's result.
func (t *TaskTune) fill(tr *search.Result) {
	t.Trials = len(tr.Measured)
	for _, m := range tr.Measured {
		if m.Measurement.OK() {
			t.OK++
		}
	}
	if tr.Default != nil {
		t.DefaultS = okMedian(tr.Default.Measurement)
	}
	// The best was picked from the confirmation batch, which measured the
	// default again beside it: compare within that batch.
	for _, c := range tr.Confirmed {
		if c.Default && c.Measurement.OK() {
			t.DefaultS = c.Measurement.Median
		}
	}
	if tr.Best != nil {
		t.BestS = okMedian(tr.Best.Measurement)
		if !tr.Best.Default {
			for i, m := range tr.Measured {
				if string(m.Trace) == string(tr.Best.Trace) {
					t.TrialsToBest = i + 1
					break
				}
			}
		}
	}
	if t.DefaultS > 0 && t.BestS > 0 {
		t.Speedup = t.DefaultS / t.BestS
	}
}

// copyRun copies the records of a scratch tuning run into dst under the
// run dstRun, with the devices and workloads they refer to.
func copyRun(ctx context.Context, src, dst *tuningdb.DB, srcRun, dstRun int64) error {
	trials, err := src.RunRecords(ctx, srcRun)
	if err != nil || len(trials) == 0 {
		return err
	}
	var b tuningdb.Batch
	seenDev, seenWl := map[string]bool{}, map[string]bool{}
	for _, t := range trials {
		if !seenDev[t.DeviceHash] {
			d, err := src.Device(ctx, t.DeviceHash)
			if err != nil {
				return err
			}
			b.Devices = append(b.Devices, d)
			seenDev[t.DeviceHash] = true
		}
		if !seenWl[t.WorkloadKey] {
			w, err := src.Workload(ctx, t.WorkloadKey)
			if err != nil {
				return err
			}
			b.Workloads = append(b.Workloads, w)
			seenWl[t.WorkloadKey] = true
		}
		r := t.Record
		r.RunID = dstRun
		b.Records = append(b.Records, r)
	}
	if _, err := dst.RecordBatch(context.WithoutCancel(ctx), b); err != nil {
		return fmt.Errorf("copy tuning run %d: %w", srcRun, err)
	}
	return nil
}

// rows are the tune's bench_results: per task the best and default times,
// their ratio and the trials it took; per model the geometric-mean
// speedup over the rule-based defaults.
func (mt *ModelTune) rows() []tuningdb.BenchResult {
	var out []tuningdb.BenchResult
	for _, t := range mt.Tasks {
		out = append(out,
			tuningdb.BenchResult{Name: t.Benchmark, Metric: "best_median_s", Value: t.BestS, Unit: "s", Better: tuningdb.BetterLower},
			tuningdb.BenchResult{Name: t.Benchmark, Metric: "default_median_s", Value: t.DefaultS, Unit: "s", Better: tuningdb.BetterLower},
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
