package costmodel_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"llmir/costmodel"
	"llmir/internal/buildinfo"
	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kernels"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cpu/cputest"
	"llmir/tuningdb"
)

// genShapes are small linear layers (LLMIR_COSTMODEL_SHAPES=default):
// two decode (GEMV template) and four prefill (GEMM template) shapes. M is
// a shape bucket: the tuning database keys a workload by its bucket, and
// the export rebuilds the kernel at the bucket's size (the committed
// local2core-linear2.jsonl was measured with M=96, whose lines carry the
// M=128 workload; search.ExampleKernel rebuilds them at M=96).
var genShapes = []kernels.Linear{
	{M: 1, N: 512, K: 512},
	{M: 4, N: 384, K: 768},
	{M: 16, N: 256, K: 1024},
	{M: 32, N: 256, K: 512},
	{M: 64, N: 512, K: 256},
	{M: 128, N: 384, K: 384},
}

// exampleFeatures is the features search scores the example by.
func exampleFeatures(e costmodel.Example) ([]float64, error) { return search.ExampleFeatures(e) }

// transferFeatures are the features of a transferred trace replayed on
// e's kernel (costmodel.EvolveSim.Features).
func transferFeatures(e costmodel.Example, trace json.RawMessage) ([]float64, error) {
	e.Trace = trace
	return exampleFeatures(e)
}

// genEnv reads the generator's settings (see TestGenerateDataset).
type genEnv struct {
	out      string
	db       string
	per      int
	threads  int
	shapes   string
	preset   string
	dims     map[string]int64
	maxBytes int64
	perGroup int
	budget   time.Duration
}

func readGenEnv(t *testing.T) genEnv {
	g := genEnv{out: os.Getenv("LLMIR_COSTMODEL_GEN"), db: os.Getenv("LLMIR_COSTMODEL_DB"), per: 40, threads: 2, preset: "llama-3-8b",
		dims: map[string]int64{"batch": 1, "seq": 16}, maxBytes: 600 << 20, perGroup: 1, budget: 15 * time.Minute,
		shapes: os.Getenv("LLMIR_COSTMODEL_SHAPES")}
	ints := []struct {
		env string
		dst *int
	}{{"LLMIR_COSTMODEL_N", &g.per}, {"LLMIR_COSTMODEL_THREADS", &g.threads}, {"LLMIR_COSTMODEL_PER_GROUP", &g.perGroup}}
	for _, v := range ints {
		if s := os.Getenv(v.env); s != "" {
			if _, err := fmt.Sscan(s, v.dst); err != nil || *v.dst < 1 {
				t.Fatalf("%s=%q: want a positive integer", v.env, s)
			}
		}
	}
	if s := os.Getenv("LLMIR_COSTMODEL_PRESET"); s != "" {
		g.preset = s
	}
	if s := os.Getenv("LLMIR_COSTMODEL_DIMS"); s != "" {
		g.dims = map[string]int64{}
		for _, kv := range strings.Split(s, ",") {
			k, v, ok := strings.Cut(kv, "=")
			var n int64
			if _, err := fmt.Sscan(v, &n); !ok || err != nil || n < 1 {
				t.Fatalf("LLMIR_COSTMODEL_DIMS entry %q: want NAME=N", kv)
			}
			g.dims[k] = n
		}
	}
	if s := os.Getenv("LLMIR_COSTMODEL_BUDGET"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("LLMIR_COSTMODEL_BUDGET=%q: want a duration", s)
		}
		g.budget = d
	}
	return g
}

// genKernels are the workloads to measure: the linear shapes of
// LLMIR_COSTMODEL_SHAPES ("default": genShapes), else the preset model's
// workloads at the dims — per op group and function, the first
// perGroup workloads with a kernel whose buffers fit maxBytes — decode
// and prefill interleaved, so that a budget cut still leaves every op
// kind.
func genKernels(t *testing.T, g genEnv) []kernels.Kernel {
	if g.shapes != "" {
		shapes := genShapes
		if g.shapes != "default" {
			shapes = nil
			for _, f := range strings.Split(g.shapes, ",") {
				var l kernels.Linear
				if _, err := fmt.Sscanf(f, "%dx%dx%d", &l.M, &l.N, &l.K); err != nil || l.M < 1 || l.N < 1 || l.K < 1 {
					t.Fatalf("LLMIR_COSTMODEL_SHAPES entry %q: want MxNxK, each at least 1 (%v)", f, err)
				}
				if b := ir.Bucket(l.M); b != l.M {
					t.Fatalf("LLMIR_COSTMODEL_SHAPES entry %q: M=%d is not a shape bucket; the database records it as M=%d, and the exported kernel would be that size: give M=%d", f, l.M, b, b)
				}
				shapes = append(shapes, l)
			}
		}
		out := make([]kernels.Kernel, len(shapes))
		for i, l := range shapes {
			out[i] = l
		}
		return out
	}
	m, err := hf.ImportPreset(g.preset, hf.Options{DType: "f32"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ir.InferShapes(m); err != nil {
		t.Fatal(err)
	}
	groups, err := ir.Partition(m, g.dims)
	if err != nil {
		t.Fatal(err)
	}
	byFunc := map[string][]kernels.Kernel{}
	taken := map[string]int{}
	for _, task := range ir.GroupTasks(groups) {
		k, err := kernels.FromWorkload(task.Workload)
		if err != nil {
			continue // no kernel for this op group
		}
		p, err := search.NewProblem(k, 1)
		if err != nil {
			t.Fatal(err)
		}
		var bytes int64
		for _, b := range p.Buffers {
			bytes += b.Bytes()
		}
		fn := task.Funcs[0]
		id := fn + "/" + strings.Join(task.Workload.Group, "+")
		if bytes > g.maxBytes || taken[id] >= g.perGroup {
			continue
		}
		taken[id]++
		byFunc[fn] = append(byFunc[fn], k)
	}
	var out []kernels.Kernel
	d, p := byFunc["decode"], byFunc["prefill"]
	for i := range max(len(d), len(p)) {
		if i < len(d) {
			out = append(out, d[i])
		}
		if i < len(p) {
			out = append(out, p[i])
		}
	}
	return out
}

// TestGenerateDataset measures the evaluation dataset into a tuning
// database and exports it (search.ExportDataset, as `llmir db dataset`
// does) to $LLMIR_COSTMODEL_GEN (make costmodel-data sets it); unset, the
// test is skipped. The database is $LLMIR_COSTMODEL_DB, kept (a rerun
// resumes: trials already recorded count against the budget, and the
// export can be repeated with `llmir --db … db dataset`), else a temporary
// one. By default the workloads are llama-3-8b's (f32) that the tuner
// tunes, at batch=1, seq=16 (decode GEMVs at full size, prefill as skinny
// GEMMs), one per op group and function, buffers up to 600 MB (the
// embedding and lm_head tables are left out): linear at M=1 and 16,
// rms_norm(+linear), rope, append_kv, attention, paged attention, the
// fused gate/up+silu·mul, linear+add, elementwise ops, argmax. Per
// workload the tuner (search.Tuner, recording every measurement) measures
// the rule-based default and up to $LLMIR_COSTMODEL_N (40) distinct random
// draws (the Random strategy; no confirmation), at
// $LLMIR_COSTMODEL_THREADS (2) threads, with short time budgets (5 ms
// warm-up, 20 ms timed); workloads are measured until
// $LLMIR_COSTMODEL_BUDGET (15m) has passed. Other settings:
// $LLMIR_COSTMODEL_PRESET, $LLMIR_COSTMODEL_DIMS ("batch=1,seq=16"),
// $LLMIR_COSTMODEL_PER_GROUP (1), and $LLMIR_COSTMODEL_SHAPES
// ("1x512x512,32x256x512", or "default" for genShapes) for linear layers
// only, as the committed linear files were made.
func TestGenerateDataset(t *testing.T) {
	g := readGenEnv(t)
	if g.out == "" {
		t.Skip("set LLMIR_COSTMODEL_GEN=FILE to measure the dataset")
	}
	cputest.Need(t, "gcc")
	ctx := context.Background()
	tg, err := cpu.New(ctx, cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The roofline only when already probed: probing takes a minute.
	var roof *cpu.Roofline
	if _, err := os.Stat(tg.RooflinePath()); err == nil {
		if roof, err = tg.Roofline(ctx); err != nil {
			roof = nil
		}
	}
	dbPath := g.db
	if dbPath == "" {
		dbPath = filepath.Join(t.TempDir(), "tuning.db")
	}
	db, err := tuningdb.Open(ctx, dbPath, tuningdb.Options{LLMIRVersion: buildinfo.Version()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tu := search.NewCPUTuner(tg, roof, db, search.Options{
		Budget: search.Budget{Trials: g.per + 1}, Seed: 1, Confirm: -1,
		Run:     target.RunOptions{Warmup: 5 * time.Millisecond, Budget: 20 * time.Millisecond, MinSamples: 5, Timeout: 20 * time.Second},
		Command: "go test ./costmodel -run TestGenerateDataset", LLMIRVersion: buildinfo.Version(),
	})
	start := time.Now()
	var keys []string
	for _, k := range genKernels(t, g) {
		if time.Since(start) > g.budget {
			t.Logf("budget %v spent: %s and later workloads left out", g.budget, k.Name())
			break
		}
		res, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: g.threads}, nil)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, res.Workload.Key)
		for _, tr := range res.Measured {
			if m := tr.Measurement; !m.OK() {
				t.Logf("%s trial %d: %s %s", k.Name(), tr.Index, m.Status, m.Error)
			}
		}
		t.Logf("%s: %d measured now (%d ok), %d recorded before (%v)", k.Name(), len(res.Measured), res.Counts[target.StatusOK], res.Resumed, res.Elapsed.Round(time.Second))
	}
	var buf bytes.Buffer
	rep, err := search.ExportDataset(ctx, db, &buf, search.DatasetOptions{Device: tu.Device.Hash, Workloads: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("exported %d candidates of %d workloads (%d defaults) from %s; left out %d failed, %d stale %q",
		rep.Examples, rep.Workloads, rep.Defaults, dbPath, rep.Failed, rep.Stale, rep.StaleReasons)
	if err := os.MkdirAll(filepath.Dir(g.out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.out, buf.Bytes(), 0o644); err != nil {
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
			sims, err = costmodel.SimulateSearch(ex, 4, newModel)
			if err != nil {
				b.Fatal(err)
			}
		}
		var rnd, gd []float64
		for _, s := range sims {
			b.Logf("%-36s pool=%3d good=%2d random=%5.1f guided=%3d", s.Task, s.Pool, s.Good, s.Random, s.Guided)
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
// 4, the first batch led by the best of the same op's other tasks): the
// median over held-out tasks of the trials to measure a candidate within
// 95% of the pool's best, random order (its exact expectation) vs
// evolution guided by each model (means over 10 seeds per task); first=pool as the tuning suite reports
// it, first=default with the rule-based default as both strategies' first
// trial, as the tuner measures it.
//
//	go test ./costmodel -run '^$' -bench EvolutionTrials -benchtime 1x -v
func BenchmarkEvolutionTrials(b *testing.B) {
	benchDatasetModels(b, func(b *testing.B, ex []costmodel.Example, newModel func() costmodel.Model) {
		for _, first := range []string{"pool", "default"} {
			b.Run("first="+first, func(b *testing.B) {
				var sims []costmodel.EvolutionSim
				for b.Loop() {
					var err error
					sims, err = costmodel.SimulateEvolution(ex, 4, 10, newModel, costmodel.EvolveSim{DefaultFirst: first == "default", Features: transferFeatures})
					if err != nil {
						b.Fatal(err)
					}
				}
				var rnd, ev []float64
				for _, s := range sims {
					b.Logf("%-36s pool=%3d good=%2d default-good=%-5v random=%5.1f evolution=%5.1f", s.Task, s.Pool, s.Good, s.DefaultGood, s.Random, s.Evolution)
					rnd = append(rnd, s.Random)
					ev = append(ev, s.Evolution)
				}
				b.ReportMetric(costmodel.Median(rnd), "random-trials")
				b.ReportMetric(costmodel.Median(ev), "evolution-trials")
				b.ReportMetric(costmodel.Median(ev)/costmodel.Median(rnd), "evolution/random")
			})
		}
	})
}

// TestGenKernels: the generator's default selection covers the op kinds
// the tuner tunes (decode and prefill), each with a design space of more
// than one schedule, and leaves out the gigabyte tables.
func TestGenKernels(t *testing.T) {
	t.Setenv("LLMIR_COSTMODEL_GEN", "")
	g := readGenEnv(t)
	g.shapes = ""
	ks := genKernels(t, g)
	hw := kernels.Hardware{VectorBits: 512, Threads: 2, L1: 48 << 10, L2: 1 << 20, LLC: 32 << 20}
	groups := map[string]bool{}
	for _, k := range ks {
		w := k.Workload()
		groups[strings.Join(w.Group, "+")] = true
		if strings.Contains(k.Name(), "vocab") || strings.Contains(k.Name(), "N=128256,K=") {
			t.Errorf("%s: a vocabulary-sized workload was selected", k.Name())
		}
		seen := map[string]bool{}
		for seed := range uint64(24) {
			s, err := search.SampleSchedule(k, hw, seed)
			if err != nil {
				t.Fatalf("%s seed %d: %v", k.Name(), seed, err)
			}
			key, err := search.TraceKey(s)
			if err != nil {
				t.Fatal(err)
			}
			seen[string(key)] = true
		}
		t.Logf("%-60s %d distinct of 24 draws", k.Name(), len(seen))
		if len(seen) < 2 {
			t.Errorf("%s: one schedule in 24 draws", k.Name())
		}
	}
	for _, want := range []string{"llmir.linear", "llmir.rms_norm", "llmir.rope", "llmir.paged_attention", "llmir.attention"} {
		if !groups[want] {
			t.Errorf("op group %s not selected (have %v)", want, groups)
		}
	}
}
