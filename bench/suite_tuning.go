package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"llmir/costmodel"
	"llmir/search"
	"llmir/tuningdb"
)

// CostModelScore is one model's held-out evaluation on one dataset.
type CostModelScore struct {
	Dataset string `json:"dataset"`
	Model   string `json:"model"`
	Tasks   int    `json:"tasks"`
	// Pairwise is the mean over held-out tasks of the pairwise rank
	// accuracy; TopK the mean top-5 recall.
	Pairwise float64 `json:"pairwise_accuracy"`
	TopK     float64 `json:"top5_recall"`
}

// SearchScore is the trials a search order needs to measure a candidate
// within 95% of the best of a task's measured pool (median over held-out
// tasks), simulated on a dataset's pools.
type SearchScore struct {
	Dataset  string `json:"dataset"`
	Strategy string `json:"strategy"` // "random", "<model>-guided", "evolutionary-gbt"
	// First is what the evolution rows measure first: "pool" (nothing
	// special: the default is one pool point among others, for random
	// order and evolution alike) or "default" (the rule-based default is
	// both strategies' first trial, as search.Tuner measures it).
	First  string  `json:"first,omitempty"`
	Tasks  int     `json:"tasks"`
	Trials float64 `json:"trials_to_95pct"`
	// OfRandom is Trials / the random order's median trials on the same
	// tasks (evolution only; the goal is ≤ 1/3).
	OfRandom float64 `json:"trials_vs_random,omitempty"`
	// Big* are the same over the tasks whose pool is larger than one batch
	// (SearchBatch): a smaller pool is measured whole by the first batch,
	// whatever the order.
	BigTasks    int     `json:"big_pool_tasks,omitempty"`
	BigTrials   float64 `json:"big_pool_trials_to_95pct,omitempty"`
	BigOfRandom float64 `json:"big_pool_trials_vs_random,omitempty"`
}

// SearchTask is one held-out task of the simulated evolution: the
// per-task view behind the medians.
type SearchTask struct {
	Dataset     string  `json:"dataset"`
	First       string  `json:"first"`
	Task        string  `json:"task"`
	Pool        int     `json:"pool"`
	Good        int     `json:"good"`
	DefaultGood bool    `json:"default_good,omitempty"`
	Random      float64 `json:"random_trials"`
	Evolution   float64 `json:"evolution_trials"`
}

// TuningDetail is the tuning suite's JSON detail.
type TuningDetail struct {
	CostModel []CostModelScore `json:"costmodel"`
	Search    []SearchScore    `json:"search"`
	Tasks     []SearchTask     `json:"search_tasks,omitempty"`
	// Skipped counts dataset examples that could not be used (a trace
	// that no longer replays, a workload without a kernel).
	Skipped map[string]int `json:"skipped,omitempty"`
}

// SearchBatch is the simulated search's batch size: the evolutionary
// strategy's own (the tuner measures its candidates in batches of that
// size and the model learns after each); costmodel's BenchmarkSearchTrials
// and BenchmarkEvolutionTrials use the same.
const SearchBatch = search.DefaultEvolveBatch

// runCostModelEval evaluates the cost models on the fixed datasets: held-
// out pairwise rank accuracy of the learned model against the roofline
// baseline, and the trials a model-guided search needs to reach 95% of the
// best against random order (costmodel.SimulateSearch on the measured
// pools). The numbers are deterministic for a dataset and the code: a
// change means the model or the features changed.
func runCostModelEval(ctx context.Context, env *Env) (EntryResult, error) {
	res := EntryResult{Suite: SuiteTuning}
	det := &TuningDetail{Skipped: map[string]int{}}
	res.Detail = det
	res.Table = func(w io.Writer) error { return WriteTuningTable(w, det) }
	if len(env.Opts.CostModelData) == 0 {
		return res, fmt.Errorf("no cost-model datasets (give --costmodel-data, e.g. costmodel/testdata/*.jsonl)")
	}
	models := []struct {
		name string
		new  func() costmodel.Model
	}{
		{"roofline", func() costmodel.Model { return &costmodel.Roofline{} }},
		{"gbt", func() costmodel.Model { return costmodel.NewGBT(costmodel.DefaultGBTParams()) }},
	}
	for _, path := range env.Opts.CostModelData {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		data := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		ex, skipped, err := loadCostModelData(path)
		if err != nil {
			return res, err
		}
		if skipped > 0 {
			det.Skipped[data] = skipped
		}
		random := false
		for _, m := range models {
			rep, err := costmodel.LeaveOneTaskOut(ex, 5, m.new)
			if err != nil {
				return res, fmt.Errorf("dataset %s, model %s: %w", path, m.name, err)
			}
			det.CostModel = append(det.CostModel, CostModelScore{Dataset: data, Model: m.name, Tasks: len(rep.Tasks), Pairwise: rep.Pairwise, TopK: rep.TopK})
			name := fmt.Sprintf("CostModel/data=%s/model=%s", data, m.name)
			res.Rows = append(res.Rows,
				tuningdb.BenchResult{Name: name, Metric: "pairwise_accuracy", Value: rep.Pairwise, Unit: "accuracy", Better: tuningdb.BetterHigher},
				tuningdb.BenchResult{Name: name, Metric: "top5_recall", Value: rep.TopK, Unit: "accuracy", Better: tuningdb.BetterHigher})
			sims, err := costmodel.SimulateSearch(ex, SearchBatch, m.new)
			if err != nil {
				return res, fmt.Errorf("dataset %s, model %s: %w", path, m.name, err)
			}
			var rnd, guided []float64
			for _, s := range sims {
				rnd = append(rnd, s.Random)
				guided = append(guided, float64(s.Guided))
			}
			add := func(strategy string, trials float64) {
				det.Search = append(det.Search, SearchScore{Dataset: data, Strategy: strategy, Tasks: len(sims), Trials: trials})
				res.Rows = append(res.Rows, tuningdb.BenchResult{Name: fmt.Sprintf("Search/data=%s/strategy=%s/batch=%d", data, strategy, SearchBatch),
					Metric: "trials_to_95pct", Value: trials, Unit: "trials", Better: tuningdb.BetterLower})
			}
			if !random {
				add("random", costmodel.Median(rnd))
				random = true
			}
			add(m.name+"-guided", costmodel.Median(guided))
		}
		// Evolutionary search guided by the learned model, replayed on the
		// pools: the goal is 95% of the best in ≤ 1/3 of random's trials.
		// first=default is the tuner's own order (the rule-based default
		// measured first by every strategy); first=pool the earlier reading,
		// kept so the series continues.
		for _, first := range []string{"pool", "default"} {
			evo, err := costmodel.SimulateEvolution(ex, SearchBatch, env.Opts.SearchSeeds, models[1].new,
				costmodel.EvolveSim{DefaultFirst: first == "default", Features: transferFeatures})
			if err != nil {
				return res, fmt.Errorf("dataset %s, evolution (first=%s): %w", path, first, err)
			}
			sc := SearchScore{Dataset: data, Strategy: "evolutionary-gbt", First: first}
			var rnd, ev, bigRnd, bigEv []float64
			for _, s := range evo {
				rnd, ev = append(rnd, s.Random), append(ev, s.Evolution)
				if s.Pool > SearchBatch {
					bigRnd, bigEv = append(bigRnd, s.Random), append(bigEv, s.Evolution)
				}
				det.Tasks = append(det.Tasks, SearchTask{Dataset: data, First: first, Task: s.Task, Pool: s.Pool, Good: s.Good,
					DefaultGood: s.DefaultGood, Random: s.Random, Evolution: s.Evolution})
			}
			sc.Tasks, sc.Trials, sc.OfRandom = len(evo), costmodel.Median(ev), costmodel.Median(ev)/costmodel.Median(rnd)
			sc.BigTasks = len(bigEv)
			if len(bigEv) > 0 {
				sc.BigTrials, sc.BigOfRandom = costmodel.Median(bigEv), costmodel.Median(bigEv)/costmodel.Median(bigRnd)
			}
			rs := SearchScore{Dataset: data, Strategy: "random", First: first, Tasks: len(evo), Trials: costmodel.Median(rnd)}
			if first == "pool" {
				det.Search = append(det.Search, sc) // random's pool-order row is SimulateSearch's above
			} else {
				det.Search = append(det.Search, rs, sc)
			}
			for _, s := range []SearchScore{rs, sc} {
				name := fmt.Sprintf("Search/data=%s/strategy=%s/batch=%d", data, s.Strategy, SearchBatch)
				if first == "default" {
					name += "/first=default"
				} else if s.Strategy == "random" {
					continue // the pool-order random row is the one above
				}
				res.Rows = append(res.Rows, tuningdb.BenchResult{Name: name, Metric: "trials_to_95pct", Value: s.Trials, Unit: "trials", Better: tuningdb.BetterLower})
				if s.OfRandom > 0 {
					res.Rows = append(res.Rows, tuningdb.BenchResult{Name: name, Metric: "trials_vs_random", Value: s.OfRandom, Unit: "x", Better: tuningdb.BetterLower})
				}
			}
		}
		env.logf("cost model on %s: %d examples", data, len(ex))
	}
	return res, nil
}

// loadCostModelData reads a dataset and recomputes every example's
// features from its trace, as costmodel's benchmarks do, so that a dataset
// stays valid when features change. Examples that cannot be replayed are
// counted, not fatal: a dataset older than a design-space change loses
// those lines only.
func loadCostModelData(path string) ([]costmodel.Example, int, error) {
	raw, err := costmodel.ReadDatasetFile(path)
	if err != nil {
		return nil, 0, err
	}
	var out []costmodel.Example
	skipped := 0
	for _, e := range raw {
		f, err := search.ExampleFeatures(e)
		if err != nil {
			skipped++
			continue
		}
		e.Features = f
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, skipped, fmt.Errorf("dataset %s: none of its %d examples replays", path, len(raw))
	}
	return out, skipped, nil
}

// transferFeatures are the features of a transferred trace replayed on
// e's kernel, as search's transfer scores it (costmodel.EvolveSim.Features).
func transferFeatures(e costmodel.Example, trace json.RawMessage) ([]float64, error) {
	e.Trace = trace
	return search.ExampleFeatures(e)
}

// WriteTuningTable prints the cost-model and search rows.
func WriteTuningTable(w io.Writer, d *TuningDetail) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "dataset\tmodel\ttasks\tpairwise accuracy\ttop-5 recall\t")
	for _, s := range d.CostModel {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f\t%.3f\t\n", s.Dataset, s.Model, s.Tasks, s.Pairwise, s.TopK)
	}
	fmt.Fprintln(tw, "\t\t\t\t\t")
	fmt.Fprintf(tw, "dataset\tsearch (batch %d)\tfirst\ttasks\ttrials to 95%% of best\t\tpools > %d\t\n", SearchBatch, SearchBatch)
	for _, s := range d.Search {
		of, big := "", ""
		if s.OfRandom > 0 {
			of = fmt.Sprintf("%.2f× random's (goal ≤ 0.33)", s.OfRandom)
			big = fmt.Sprintf("%d tasks: %.1f, %.2f×", s.BigTasks, s.BigTrials, s.BigOfRandom)
		}
		first := s.First
		if first == "" {
			first = "pool"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.1f\t%s\t%s\t\n", s.Dataset, s.Strategy, first, s.Tasks, s.Trials, of, big)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for data, n := range d.Skipped {
		fmt.Fprintf(w, "%s: %d examples skipped (trace does not replay on the current design space)\n", data, n)
	}
	return nil
}
