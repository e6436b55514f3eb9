package costmodel_test

import (
	"context"
	"encoding/json"
	"fmt"
	"llmir/target/cpu/cputest"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"llmir/costmodel"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
)

// genShapes are small linear layers, two decode (GEMV template) and three
// prefill (GEMM template) shapes: each measures in milliseconds, so the
// dataset regenerates in a few minutes on a busy 2-core machine.
var genShapes = []kernels.Linear{
	{M: 1, N: 512, K: 512},
	{M: 4, N: 384, K: 768},
	{M: 16, N: 256, K: 1024},
	{M: 32, N: 256, K: 512},
	{M: 64, N: 512, K: 256},
	{M: 96, N: 384, K: 384},
}

// linearOf parses a kernels.Linear name.
func linearOf(name string) (kernels.Linear, error) {
	var l kernels.Linear
	if _, err := fmt.Sscanf(name, "linear/M=%d,N=%d,K=%d/f32", &l.M, &l.N, &l.K); err != nil {
		return l, fmt.Errorf("workload %q is not a linear layer: %w", name, err)
	}
	return l, nil
}

// exampleFeatures replays an example's trace on its kernel and extracts
// the features at the current FeatureVersion on the device it ran on.
func exampleFeatures(e costmodel.Example) ([]float64, error) {
	l, err := linearOf(e.Workload)
	if err != nil {
		return nil, err
	}
	def, err := l.Def()
	if err != nil {
		return nil, err
	}
	tr, err := schedule.ParseTrace(e.Trace)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Workload, err)
	}
	s, err := schedule.Replay(def, tr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Workload, err)
	}
	return costmodel.ScheduleFeatures(s, costmodel.Work{FLOPs: l.FLOPs(), Bytes: l.Bytes()}, e.Device, l.Dims())
}

// TestGenerateDataset measures the evaluation dataset: $LLMIR_COSTMODEL_GEN
// names the output file (make costmodel-data sets it to testdata/linear.jsonl);
// unset, the test is skipped. Per shape: the rule-based default and up to
// $LLMIR_COSTMODEL_N (default 30) distinct random draws of kernels.Linear's
// space, one thread, tiny time budgets. $LLMIR_COSTMODEL_SHAPES
// ("1x512x512,32x256x512") replaces the default shapes.
func TestGenerateDataset(t *testing.T) {
	out := os.Getenv("LLMIR_COSTMODEL_GEN")
	if out == "" {
		t.Skip("set LLMIR_COSTMODEL_GEN=FILE to measure the dataset")
	}
	cputest.Need(t, "gcc")
	per := 30
	if v := os.Getenv("LLMIR_COSTMODEL_N"); v != "" {
		if _, err := fmt.Sscan(v, &per); err != nil {
			t.Fatalf("LLMIR_COSTMODEL_N=%q: %v", v, err)
		}
	}
	shapes := genShapes
	if v := os.Getenv("LLMIR_COSTMODEL_SHAPES"); v != "" {
		shapes = nil
		for _, f := range strings.Split(v, ",") {
			var l kernels.Linear
			if _, err := fmt.Sscanf(f, "%dx%dx%d", &l.M, &l.N, &l.K); err != nil {
				t.Fatalf("LLMIR_COSTMODEL_SHAPES entry %q: want MxNxK: %v", f, err)
			}
			shapes = append(shapes, l)
		}
	}
	ctx := context.Background()
	tg, err := cpu.New(ctx, cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const threads = 1
	hw := search.CPUHardware(tg.CPU(), threads)
	dev := costmodel.Device{VectorBits: hw.VectorBits, Threads: threads, L1: hw.L1, L2: hw.L2, LLC: hw.LLC}
	if _, err := os.Stat(tg.RooflinePath()); err == nil {
		if roof, err := tg.Roofline(ctx); err == nil {
			if p, ok := roof.At(threads); ok {
				dev.PeakGFLOPs, dev.ReadGBs = p.PeakGFLOPs, p.ReadGBs
			}
		}
	}
	opts := target.RunOptions{Warmup: 5 * time.Millisecond, Budget: 20 * time.Millisecond, MinSamples: 5, Timeout: 20 * time.Second}
	var all []costmodel.Example
	for _, l := range shapes {
		p, err := search.NewProblem(l, 1)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		var scheds []*schedule.Schedule
		var cands []target.Candidate
		add := func(s *schedule.Schedule) {
			key, err := search.TraceKey(s)
			if err != nil || seen[string(key)] {
				return
			}
			c, err := search.NewCandidate(fmt.Sprintf("c%d", len(cands)), l, s, hw)
			if err != nil {
				return
			}
			seen[string(key)] = true
			scheds = append(scheds, s)
			cands = append(cands, c)
		}
		if s, err := search.DefaultSchedule(l, hw); err == nil {
			add(s)
		}
		for seed := uint64(1); len(cands) < per+1 && seed < uint64(20*per); seed++ {
			if s, err := search.SampleSchedule(l, hw, seed); err == nil {
				add(s)
			}
		}
		ms, err := target.Measure(ctx, tg, p, cands, opts)
		if err != nil {
			t.Fatal(err)
		}
		ok := 0
		for i, c := range cands {
			m := ms[c.ID]
			if m.Status != target.StatusOK {
				t.Logf("%s %s: %s %s", l.Name(), c.ID, m.Status, m.Error)
				continue
			}
			tr, err := search.TraceKey(scheds[i])
			if err != nil {
				t.Fatal(err)
			}
			f, err := costmodel.Features(scheds[i].Nest(), dev, l.Dims())
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, costmodel.Example{Workload: l.Name(), Key: search.WorkloadOf(l, threads).Key, Threads: threads,
				Device: dev, Trace: json.RawMessage(tr), Features: f, Median: m.Median})
			ok++
		}
		t.Logf("%s: %d of %d candidates ok", l.Name(), ok, len(cands))
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := costmodel.WriteDataset(f, all); err != nil {
		t.Fatal(err)
	}
}

// datasets lists the committed datasets (testdata/*.jsonl).
func datasets(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob("testdata/*.jsonl")
	if err != nil || len(files) == 0 {
		tb.Skipf("no datasets in testdata (%v)", err)
	}
	return files
}

// loadDataset reads a dataset and recomputes its features.
func loadDataset(tb testing.TB, path string) []costmodel.Example {
	tb.Helper()
	ex, err := costmodel.ReadDatasetFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range ex {
		f, err := exampleFeatures(ex[i])
		if err != nil {
			tb.Fatalf("%s line %d: %v", path, i+1, err)
		}
		ex[i].Features = f
	}
	return ex
}

// TestDatasetReplays checks that every committed example still replays
// and yields finite features (a codegen or schedule change that breaks the
// traces shows up here, not as a silently smaller benchmark).
func TestDatasetReplays(t *testing.T) {
	for _, path := range datasets(t) {
		t.Run(filepath.Base(path), func(t *testing.T) { checkDataset(t, path) })
	}
}

func checkDataset(t *testing.T, path string) {
	ex := loadDataset(t, path)
	tasks := map[string]int{}
	for i, e := range ex {
		for j, v := range e.Features {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("example %d (%s): feature %s = %v", i, e.Workload, costmodel.FeatureNames()[j], v)
			}
		}
		tasks[e.Task()]++
	}
	if len(tasks) < 2 {
		t.Fatalf("dataset has %d tasks, want ≥ 2", len(tasks))
	}
}

// BenchmarkRankAccuracy is the evaluation harness: leave-one-task-out
// over the dataset's workloads, the learned model against the roofline
// baseline, reporting mean pairwise rank accuracy and top-5 recall on the
// held-out task. Run it with
//
//	go test ./costmodel -run '^$' -bench RankAccuracy -benchtime 1x -v
func BenchmarkRankAccuracy(b *testing.B) {
	for _, path := range datasets(b) {
		ex := loadDataset(b, path)
		name := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		b.Run(fmt.Sprintf("data=%s", name), func(b *testing.B) { rankAccuracy(b, ex) })
	}
}

func rankAccuracy(b *testing.B, ex []costmodel.Example) {
	for _, m := range evalModels {
		b.Run(fmt.Sprintf("model=%s/examples=%d", m.name, len(ex)), func(b *testing.B) {
			var rep costmodel.EvalReport
			for b.Loop() {
				var err error
				rep, err = costmodel.LeaveOneTaskOut(ex, 5, m.new)
				if err != nil {
					b.Fatal(err)
				}
			}
			for _, t := range rep.Tasks {
				b.Logf("%-36s n=%3d pairwise=%.3f top5=%.2f", t.Task, t.N, t.Pairwise, t.TopK)
			}
			b.ReportMetric(rep.Pairwise, "pairwise-acc")
			b.ReportMetric(rep.TopK, "top5-recall")
		})
	}
}

// TestLinearSpaceFeatures extracts features from draws of the linear
// layer's design space (the candidates search will score) without
// measuring: every draw yields finite features, counts at least the
// layer's 2·M·N·K FLOPs (rfactor write-backs add a few), and its trace
// round-trips through the dataset's replay path to the same vector.
func TestLinearSpaceFeatures(t *testing.T) {
	hw := kernels.Hardware{VectorBits: 512, Threads: 2, L1: 48 << 10, L2: 1 << 20, LLC: 32 << 20}
	dev := costmodel.Device{VectorBits: 512, Threads: 2, L1: hw.L1, L2: hw.L2, LLC: hw.LLC}
	for _, l := range genShapes {
		t.Run(l.Name(), func(t *testing.T) {
			for seed := range uint64(8) {
				s, err := search.SampleSchedule(l, hw, seed)
				if err != nil {
					t.Fatal(err)
				}
				a, err := costmodel.Analyze(s.Nest(), dev, l.Dims())
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				if want := l.FLOPs(); a.FLOPs < want || a.FLOPs > 1.5*want {
					t.Errorf("seed %d: FLOPs %v, want within [%v, 1.5×]", seed, a.FLOPs, want)
				}
				f, err := costmodel.ScheduleFeatures(s, costmodel.Work{FLOPs: l.FLOPs(), Bytes: l.Bytes()}, dev, l.Dims())
				if err != nil {
					t.Fatal(err)
				}
				tr, err := search.TraceKey(s)
				if err != nil {
					t.Fatal(err)
				}
				g, err := exampleFeatures(costmodel.Example{Workload: l.Name(), Threads: 2, Device: dev, Trace: json.RawMessage(tr), Median: 1})
				if err != nil {
					t.Fatal(err)
				}
				for i := range f {
					if math.IsNaN(f[i]) || math.IsInf(f[i], 0) || f[i] != g[i] {
						t.Fatalf("seed %d: feature %s = %v, after replay %v", seed, costmodel.FeatureNames()[i], f[i], g[i])
					}
				}
			}
		})
	}
}

// evalModels are the models the evaluation benchmarks compare: the
// roofline baseline and the learned GBT.
var evalModels = []struct {
	name string
	new  func() costmodel.Model
}{
	{"roofline", func() costmodel.Model { return &costmodel.Roofline{} }},
	{"gbt", func() costmodel.Model { return costmodel.NewGBT(costmodel.DefaultGBTParams()) }},
}

// benchDatasetModels runs f as the sub-benchmark
// data=<dataset>/model=<model>/batch=4 for every committed dataset and
// every model of evalModels (the search simulations measure in batches of
// 4).
func benchDatasetModels(b *testing.B, f func(b *testing.B, ex []costmodel.Example, newModel func() costmodel.Model)) {
	for _, path := range datasets(b) {
		ex := loadDataset(b, path)
		name := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		for _, m := range evalModels {
			b.Run(fmt.Sprintf("data=%s/model=%s/batch=4", name, m.name), func(b *testing.B) { f(b, ex, m.new) })
		}
	}
}

// BenchmarkSearchTrials is the search side of the evaluation, simulated on
// the dataset's measured pools (SimulateSearch): the median over held-out
// tasks of the trials needed to measure a candidate within 95% of the
// pool's best, random order vs guided by each model in batches of 4.
//
//	go test ./costmodel -run '^$' -bench SearchTrials -benchtime 1x -v
func BenchmarkSearchTrials(b *testing.B) {
	benchDatasetModels(b, func(b *testing.B, ex []costmodel.Example, newModel func() costmodel.Model) {
		var sims []costmodel.SearchSim
		for b.Loop() {
			var err error
			sims, err = costmodel.SimulateSearch(ex, 4, 50, newModel)
			if err != nil {
				b.Fatal(err)
			}
		}
		var rnd, gd []float64
		for _, s := range sims {
			b.Logf("%-36s pool=%3d random=%5.1f guided=%3d", s.Task, s.Pool, s.Random, s.Guided)
			rnd = append(rnd, s.Random)
			gd = append(gd, float64(s.Guided))
		}
		b.ReportMetric(costmodel.Median(rnd), "random-trials")
		b.ReportMetric(costmodel.Median(gd), "guided-trials")
	})
}

// BenchmarkEvolutionTrials is the evaluation of evolutionary search,
// replayed on the dataset's measured pools (SimulateEvolution: the
// population each round is the pool's part of the parents' mutation
// neighbourhood plus random draws, ranked by the model, ε-greedy, batch
// 4): the median over held-out tasks of the trials to measure a candidate
// within 95% of the pool's best, random order vs evolution guided by each
// model (means over 10 seeds per task).
//
//	go test ./costmodel -run '^$' -bench EvolutionTrials -benchtime 1x -v
func BenchmarkEvolutionTrials(b *testing.B) {
	benchDatasetModels(b, func(b *testing.B, ex []costmodel.Example, newModel func() costmodel.Model) {
		var sims []costmodel.EvolutionSim
		for b.Loop() {
			var err error
			sims, err = costmodel.SimulateEvolution(ex, 4, 10, newModel, costmodel.EvolveSim{})
			if err != nil {
				b.Fatal(err)
			}
		}
		var rnd, ev []float64
		for _, s := range sims {
			b.Logf("%-36s pool=%3d random=%5.1f evolution=%5.1f", s.Task, s.Pool, s.Random, s.Evolution)
			rnd = append(rnd, s.Random)
			ev = append(ev, s.Evolution)
		}
		b.ReportMetric(costmodel.Median(rnd), "random-trials")
		b.ReportMetric(costmodel.Median(ev), "evolution-trials")
		b.ReportMetric(costmodel.Median(ev)/costmodel.Median(rnd), "evolution/random")
	})
}
