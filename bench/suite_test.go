package bench

import (
	"context"
	"errors"
	"fmt"
	"html"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"llmir/bench/dashboard"
	"llmir/bench/results"
	"llmir/bench/results/resultstest"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cpu/cputest"
	"llmir/tuningdb"
)

func TestParseModels(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string // ModelShapes joined by " ", or the error's text
	}{
		{[]string{"llama-tiny"}, "llama-tiny"},
		{[]string{"llama-tiny", " llama-3-8b:decode"}, "llama-tiny llama-3-8b:decode"},
		{[]string{"llama-3-8b:prefill+decode"}, "llama-3-8b:prefill+decode"},
		{[]string{"gpt-9"}, `model 1 "gpt-9": unknown preset "gpt-9"`},
		{[]string{"llama-tiny", "llama-tiny:train"}, `model 2 "llama-tiny:train": phase "train"`},
		{[]string{""}, "no models given"},
	} {
		ms, err := ParseModels(c.in)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			var parts []string
			for _, m := range ms {
				parts = append(parts, m.String())
			}
			got = strings.Join(parts, " ")
		}
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("ParseModels(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestSuiteNames(t *testing.T) {
	if got := SuiteNames(); !slices.Equal(got, []string{SuiteKernels, SuiteLayer, SuiteNightly, SuitePaged, SuitePrefill, SuiteQuant, SuiteTuning}) {
		t.Errorf("suites %v", got)
	}
	// The nightly runs the kernels and tuning entries and the tune.
	var names []string
	for _, e := range Suites()[SuiteNightly] {
		names = append(names, e.Name)
	}
	for _, e := range slices.Concat(Suites()[SuiteKernels], Suites()[SuiteTuning]) {
		if !slices.Contains(names, e.Name) {
			t.Errorf("nightly lacks %s", e.Name)
		}
	}
	if !slices.Contains(names, "tune") {
		t.Errorf("nightly lacks the model tune: %v", names)
	}
	db, err := tuningdb.OpenMemory(context.Background(), tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := RunSuite(context.Background(), "kernel", &Env{Results: db}); !errors.Is(err, ErrUnknownSuite) || !strings.Contains(err.Error(), "kernels, layer, nightly, paged_attention, prefill_attention, quant, tuning") {
		t.Errorf("unknown suite: %v", err)
	}
}

func TestModelWorkloadsDecodeOnly(t *testing.T) {
	all, err := modelWorkloads([]ModelShapes{{Preset: "llama-tiny"}})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := modelWorkloads([]ModelShapes{{Preset: "llama-tiny", Phases: []string{"decode"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(dec) == 0 || len(dec) >= len(all) {
		t.Fatalf("%d decode workloads of %d", len(dec), len(all))
	}
	for _, w := range dec {
		for _, where := range w.Where {
			if where != "llama-tiny/decode" {
				t.Errorf("%s from %s", w.W.Name(), where)
			}
		}
		for _, in := range w.W.Inputs {
			if in.KV == "" && in.DType != "f32" && in.DType != "i32" && in.DType != "i64" {
				t.Errorf("%s: dtype %s, want the f32 import", w.W.Name(), in.DType)
			}
		}
	}
	// llama-3-8b is bf16 on the hub; the suite measures its f32 shapes.
	big, err := modelWorkloads([]ModelShapes{{Preset: "llama-3-8b", Phases: []string{"decode"}}})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, w := range big {
		if w.W.Group[0] == "llmir.linear" && w.W.Inputs[1].DType == "f32" && w.W.Inputs[1].Shape[0] == 14336 {
			found = true
		}
	}
	if !found {
		t.Errorf("no f32 14336×4096 decode linear in llama-3-8b")
	}
}

// suiteEnv is a CPU target with a shrunken cached roofline (no full
// probes), a results database in a temporary folder, the minimal timing
// protocol, and two small llama-tiny decode linear layers.
func suiteEnv(t *testing.T) *Env {
	t.Helper()
	cputest.Need(t, "gcc")
	ctx := context.Background()
	dir := t.TempDir()
	tg, err := cpu.New(ctx, cpu.Options{CacheDir: filepath.Join(dir, "cpu")})
	if err != nil {
		t.Fatal(err)
	}
	tg.Probe = cpu.RooflineOptions{ReadBytes: 8 << 20, FMAIters: 200_000}
	db, err := tuningdb.Open(ctx, filepath.Join(dir, "results.db"), tuningdb.Options{LLMIRVersion: "test-version"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	env, err := NewEnv(ctx, tg, db, nil, SuiteOptions{
		Models:  []ModelShapes{{Preset: "llama-tiny", Phases: []string{"decode"}}},
		Match:   regexp.MustCompile(`^linear/M=1,N=(64|256),K=256/`),
		Run:     target.RunOptions{Warmup: time.Millisecond, Budget: 2 * time.Millisecond},
		Version: "test-version",
		// Two runs seconds apart while other test packages build and
		// measure: a sub-microsecond OpenBLAS call was seen to double. The
		// slowed kernel (the naive schedule of the 256×256 GEMV) is about
		// 20× slower, so only a change beyond 300% (or the runs' own noise)
		// counts.
		Policy: results.Policy{Window: 5, Floor: 3, K: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestKernelsSuiteFlagsSlowedKernel is the "done when" in small:
// two runs of the kernels suite into one results database, the second
// with one kernel measured at its naive schedule (--slow), must flag that
// benchmark and no other, and the dashboard must show it regressed.
func TestKernelsSuiteFlagsSlowedKernel(t *testing.T) {
	env := suiteEnv(t)
	t.Setenv("LLMIR_GIT_COMMIT", "c0ffee1")
	ctx := context.Background()
	first, err := RunSuite(ctx, SuiteKernels, env)
	if err != nil {
		t.Fatal(err)
	}
	det := first.Entries[0].Detail.(*KernelsDetail)
	if len(det.Results) != 2 {
		t.Fatalf("%d kernel results, want the 2 matched linear layers", len(det.Results))
	}
	if first.Report.New != first.Rows || first.Report.Regressed != 0 {
		t.Errorf("first run: %s over %d rows", first.Report.Summary(), first.Rows)
	}
	// Every row carries what the issue lists.
	rows, err := env.Results.QueryBenchResults(ctx, tuningdb.BenchFilter{Suite: SuiteKernels})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != first.Rows {
		t.Fatalf("%d rows stored, run says %d", len(rows), first.Rows)
	}
	metrics := map[string]int{}
	for _, r := range rows {
		metrics[r.Metric]++
		if r.DeviceHash != env.Device.Hash || r.GitCommit != "c0ffee1" || r.LLMIRVersion != "test-version" || r.CreatedAt.IsZero() ||
			r.Unit == "" || r.Value <= 0 || len(r.Samples) == 0 || r.Median <= 0 || r.Better == tuningdb.BetterAuto {
			t.Errorf("row %s:%s incomplete: %+v", r.Name, r.Metric, r)
		}
		if r.Metric == "best_median_s" && (r.Baseline != "openblas" || r.BaselineRatio <= 0 || r.RooflineFraction <= 0 || len(r.Extra) < 10) {
			t.Errorf("best row of %s lacks baseline ratio, roofline fraction or extra: %+v", r.Name, r)
		}
	}
	for _, m := range []string{"best_median_s", "default_median_s", "openblas_median_s", "speedup_vs_openblas", "best_over_default", "GB/s", "GFLOP/s", "roofline_fraction"} {
		if metrics[m] != 2 {
			t.Errorf("metric %s: %d rows, want 2", m, metrics[m])
		}
	}

	slowed := det.Results[0].Benchmark
	if !strings.Contains(slowed, "N=256,") {
		t.Fatalf("slowing %s: the policy's floor assumes the 256×256 GEMV", slowed)
	}
	env.Opts.Slow = regexp.MustCompile("^" + regexp.QuoteMeta(slowed) + "$")
	second, err := RunSuite(ctx, SuiteKernels, env)
	if err != nil {
		t.Fatal(err)
	}
	det2 := second.Entries[0].Detail.(*KernelsDetail)
	for _, r := range det2.Results {
		if r.Slowed != (r.Benchmark == slowed) {
			t.Errorf("%s: slowed %v", r.Benchmark, r.Slowed)
		}
	}
	var regressed []string
	for _, f := range second.Report.Findings {
		if f.Verdict == results.Regressed {
			regressed = append(regressed, f.Name+":"+f.Metric)
			if f.Name != slowed {
				t.Errorf("%s:%s regressed (%+.1f%%, threshold %.1f%%) but was not slowed", f.Name, f.Metric, 100*f.Change, 100*f.Threshold)
			}
		}
	}
	if !slices.Contains(regressed, slowed+":best_median_s") {
		t.Errorf("slowed %s not flagged: regressed %v\n%s", slowed, regressed, fmtFindings(second.Report))
	}
	var text strings.Builder
	if err := second.WriteText(&text, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "REGRESSED  kernels/"+slowed+":best_median_s") || !strings.Contains(text.String(), "TESTING AID") {
		t.Errorf("report text:\n%s", text.String())
	}

	// The dashboard shows both runs and the slowed benchmark as regressed.
	site, err := dashboard.Generate(ctx, env.Results, dashboard.Options{Policy: env.Opts.Policy})
	if err != nil {
		t.Fatal(err)
	}
	page := string(site.Files["index.html"])
	want := fmt.Sprintf(`data-name="%s" data-verdict="regressed"`, html.EscapeString(slowed))
	if !strings.Contains(page, want) {
		t.Errorf("dashboard does not show %s regressed", slowed)
	}
	if site.Points != first.Rows+second.Rows {
		t.Errorf("dashboard holds %d points, want both runs' %d", site.Points, first.Rows+second.Rows)
	}
}

func fmtFindings(r results.Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "%s %s:%s ref %g latest %g change %+.2f thr %.2f\n", f.Verdict, f.Name, f.Metric, f.Reference, f.Latest, f.Change, f.Threshold)
	}
	return b.String()
}

func TestTuningSuiteRows(t *testing.T) {
	db, err := tuningdb.OpenMemory(context.Background(), tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	env := &Env{Results: db, Device: resultstest.Device(),
		Opts: SuiteOptions{CostModelData: []string{"../costmodel/testdata/local2core-linear2.jsonl"}, SearchSeeds: 1}}
	run, err := RunSuite(context.Background(), SuiteTuning, env)
	if err != nil {
		t.Fatal(err)
	}
	det := run.Entries[0].Detail.(*TuningDetail)
	// Search: random, roofline-guided, gbt-guided, evolution first=pool,
	// then random and evolution with the default first.
	if len(det.CostModel) != 2 || len(det.Search) != 6 || det.Search[3].OfRandom <= 0 || det.Search[5].OfRandom <= 0 || det.Search[5].First != "default" {
		t.Fatalf("cost model %v, search %v", det.CostModel, det.Search)
	}
	units := map[string]string{}
	for _, s := range det.CostModel {
		if !(s.Pairwise > 0.3 && s.Pairwise <= 1) || s.Tasks != 6 {
			t.Errorf("%+v", s)
		}
	}
	for _, s := range det.Search {
		if !(s.Trials >= 1) {
			t.Errorf("%+v", s)
		}
	}
	rows, err := db.QueryBenchResults(context.Background(), tuningdb.BenchFilter{Suite: SuiteTuning})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		units[r.Metric] = r.Unit
	}
	if units["pairwise_accuracy"] != "accuracy" || units["trials_to_95pct"] != "trials" || len(rows) != 12 {
		t.Errorf("%d rows, units %v", len(rows), units)
	}
	// The datasets are fixed: the same numbers again are unchanged.
	if again, err := reportWritten(context.Background(), env, writtenOf(run, rows)); err != nil || again.Unchanged != 0 || again.New != 12 {
		t.Errorf("report after one run: %s, %v", again.Summary(), err)
	}
	env.Opts.CostModelData = nil
	if _, err := RunSuite(context.Background(), SuiteTuning, env); err == nil || !strings.Contains(err.Error(), "--costmodel-data") {
		t.Errorf("no datasets: %v", err)
	}
}

// writtenOf is the series set RunSuite passes to reportWritten.
func writtenOf(_ *SuiteRun, rows []tuningdb.BenchResult) map[string]bool {
	w := map[string]bool{}
	for _, r := range rows {
		w[seriesKey(r.Suite, r.Name, r.Metric)] = true
	}
	return w
}
