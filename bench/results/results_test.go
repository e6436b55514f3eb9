package results_test

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"llmir/bench/results"
	"llmir/bench/results/resultstest"
	"llmir/tuningdb"
)

var day0 = time.Date(2026, 11, 1, 2, 0, 0, 0, time.UTC)

// series builds a series from values (oldest first); each result gets
// samples with relative spread noise around its value.
func series(better tuningdb.Better, unit string, noise float64, values ...float64) results.Series {
	s := results.Series{Suite: "kernels", Name: "k", Metric: "m", Unit: unit, Better: better}
	for i, v := range values {
		r := tuningdb.BenchResult{Suite: "kernels", Name: "k", Metric: "m", Unit: unit, Value: v, ID: int64(i + 1),
			CreatedAt: day0.Add(time.Duration(i) * 24 * time.Hour), GitCommit: "c"}
		if noise > 0 && v > 0 {
			// Quartiles at v(1 ± noise/2): relative IQR = noise.
			r.Median, r.IQR, r.Samples = v, noise*v, []float64{v * (1 - noise/2), v, v * (1 + noise/2)}
		}
		s.Points = append(s.Points, r)
	}
	return s
}

func TestAssess(t *testing.T) {
	p := results.DefaultPolicy() // window 5, floor 3%, k 2
	for _, tc := range []struct {
		name    string
		s       results.Series
		policy  *results.Policy
		want    results.Verdict
		failed  bool
		history int
	}{
		{"quiet, 10% slower", series(tuningdb.BetterLower, "s", 0.005, 1, 1, 1, 1.1), nil, results.Regressed, false, 3},
		{"quiet, 2% slower: under the floor", series(tuningdb.BetterLower, "s", 0.005, 1, 1, 1, 1.02), nil, results.Unchanged, false, 3},
		{"quiet, 10% faster", series(tuningdb.BetterLower, "s", 0.005, 1, 1, 1, 0.9), nil, results.Improved, false, 3},
		{"two nights, 30% slower", series(tuningdb.BetterLower, "s", 0.01, 1, 1.3), nil, results.Regressed, false, 1},
		{"noisy runs (IQR 8%), 10% slower", series(tuningdb.BetterLower, "s", 0.08, 1, 1, 1, 1.1), nil, results.Unchanged, false, 3},
		{"noisy runs (IQR 8%), 25% slower", series(tuningdb.BetterLower, "s", 0.08, 1, 1, 1, 1.25), nil, results.Regressed, false, 3},
		{"nights wobble 6%, 8% slower", series(tuningdb.BetterLower, "s", 0, 1, 1.06, 0.94, 1.06, 0.94, 1.08), nil, results.Unchanged, false, 5},
		{"rate drops 10%", series(tuningdb.BetterHigher, "GB/s", 0.005, 20, 20, 18), nil, results.Regressed, false, 2},
		{"rate rises 10%", series(tuningdb.BetterHigher, "GB/s", 0.005, 20, 20, 22), nil, results.Improved, false, 2},
		{"latest failed (0)", series(tuningdb.BetterLower, "s", 0, 1, 1, 0), nil, results.Regressed, true, 2},
		{"failed night left out of the reference", series(tuningdb.BetterLower, "s", 0.005, 1, 0, 1, 1.01), nil, results.Unchanged, false, 2},
		{"first result", series(tuningdb.BetterLower, "s", 0.005, 1), nil, results.New, false, 0},
		{"slow past outside a window of 2", series(tuningdb.BetterLower, "s", 0.005, 2, 2, 2, 2, 2, 2, 1, 1, 1),
			&results.Policy{Window: 2, Floor: 0.03, K: 2}, results.Unchanged, false, 2},
		{"slow past inside a window of 8", series(tuningdb.BetterLower, "s", 0.005, 2, 2, 2, 2, 2, 2, 1, 1, 1),
			&results.Policy{Window: 8, Floor: 0.03, K: 2}, results.Improved, false, 8},
		{"level shift inside the window reads as noise", series(tuningdb.BetterLower, "s", 0.005, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1),
			&results.Policy{Window: 10, Floor: 0.03, K: 2}, results.Unchanged, false, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := p
			if tc.policy != nil {
				pol = *tc.policy
			}
			f := results.Assess(tc.s, pol)
			if f.Verdict != tc.want || f.Failed != tc.failed || f.History != tc.history {
				t.Errorf("verdict %s (failed %v, history %d, change %s, threshold %.1f%%, noise %.1f%%); want %s (failed %v, history %d)",
					f.Verdict, f.Failed, f.History, results.FormatChange(f.Change), 100*f.Threshold, 100*f.Noise, tc.want, tc.failed, tc.history)
			}
			if f.History > 0 && f.Threshold < pol.Floor {
				t.Errorf("threshold %v below the floor %v", f.Threshold, pol.Floor)
			}
		})
	}
}

// TestRuleOnNoise: over many seeded series with realistic noise (1% inside
// a run, 0.5% between nights) the rule raises no false alarm, and it flags
// every one of them once slowed by 10%.
func TestRuleOnNoise(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	p := results.DefaultPolicy()
	const n = 300
	falseAlarms, caught := 0, 0
	for range n {
		base := math.Exp(rng.NormFloat64() * 3) // any magnitude
		mk := func(slow float64) results.Series {
			s := results.Series{Suite: "s", Name: "k", Metric: "median_s", Unit: "s", Better: tuningdb.BetterLower}
			for night := range 6 {
				m := base * (1 + 0.005*rng.NormFloat64())
				if night == 5 {
					m *= slow
				}
				samples := make([]float64, 30)
				for i := range samples {
					samples[i] = m * math.Exp(0.01*rng.NormFloat64())
				}
				sum, err := tuningdb.Summarize(samples)
				if err != nil {
					t.Fatal(err)
				}
				s.Points = append(s.Points, tuningdb.BenchResult{Value: sum.Median, Median: sum.Median, IQR: sum.IQR, Samples: samples,
					CreatedAt: day0.Add(time.Duration(night) * 24 * time.Hour)})
			}
			return s
		}
		if results.Assess(mk(1), p).Verdict == results.Regressed {
			falseAlarms++
		}
		if results.Assess(mk(1.10), p).Verdict == results.Regressed {
			caught++
		}
	}
	if falseAlarms > 0 || caught != n {
		t.Errorf("%d false alarms on unchanged series, %d of %d slowed series caught; want 0 and all", falseAlarms, caught, n)
	}
}

// TestDetectOnStoredNights: two nights in a database, one kernel slowed by
// 30% on the second; exactly its two series (time and bandwidth) regress.
func TestDetectOnStoredNights(t *testing.T) {
	ctx := context.Background()
	db, err := tuningdb.Open(ctx, filepath.Join(t.TempDir(), "results.db"), tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	slowed := resultstest.Kernels[1].Name
	w, err := resultstest.History(ctx, db, resultstest.Scenario{Seed: 3, Nights: 2, Slowed: slowed, SlowFactor: 1.3})
	if err != nil {
		t.Fatal(err)
	}
	series, err := results.Load(ctx, db, tuningdb.BenchFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != w.Series {
		t.Fatalf("%d series; want %d", len(series), w.Series)
	}
	rep, err := results.Detect(series, results.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Regressed != 2 || rep.Improved != 0 || rep.New != 0 || rep.Unchanged != w.Series-2 {
		t.Errorf("report: %s; want 2 regressed, the rest unchanged", rep.Summary())
	}
	for _, f := range rep.Findings[:2] {
		if f.Verdict != results.Regressed || f.Name != slowed || f.LatestCommit != w.Commits[1] {
			t.Errorf("finding %s: %s at commit %s", f.ID(), f.Verdict, f.LatestCommit)
		}
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "2 regressed, 0 improved") || strings.Count(out, "REGRESSED") != 2 ||
		!strings.Contains(out, slowed) || strings.Contains(out, "unchanged  ") {
		t.Errorf("text report:\n%s", out)
	}
	// Filtering by suite keeps only that suite's series.
	tuning, err := results.Load(ctx, db, tuningdb.BenchFilter{Suite: "tuning"})
	if err != nil || len(tuning) != 1 || len(tuning[0].Points) != 2 || tuning[0].Better != tuningdb.BetterLower {
		t.Errorf("tuning suite: %+v, %v", tuning, err)
	}
}

func TestGroupOrdersSeries(t *testing.T) {
	rows := []tuningdb.BenchResult{
		{Suite: "b", Name: "x", Metric: "GB/s", Unit: "GB/s", Value: 2, CreatedAt: day0.Add(time.Hour), ID: 4},
		{Suite: "a", Name: "y", Metric: "median_s", Value: 1, CreatedAt: day0, ID: 3},
		{Suite: "b", Name: "x", Metric: "GB/s", Unit: "GB/s", Value: 1, CreatedAt: day0, ID: 2},
		{Suite: "b", Name: "x", Metric: "GB/s", Unit: "GB/s", Value: 3, CreatedAt: day0.Add(time.Hour), ID: 1},
	}
	got := results.Group(rows)
	if len(got) != 2 || got[0].Suite != "a" || got[0].Better != tuningdb.BetterLower || got[1].Better != tuningdb.BetterHigher {
		t.Fatalf("groups = %+v", got)
	}
	var order []float64
	for _, p := range got[1].Points {
		order = append(order, p.Value)
	}
	if len(order) != 3 || order[0] != 1 || order[1] != 3 || order[2] != 2 { // same time: by id
		t.Errorf("points in order %v; want 1 3 2", order)
	}
}

func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{2.5e-3, "s", "2.500 ms"},
		{0.1184, "s", "118.400 ms"},
		{3.2e-5, "s", "32.00 µs"},
		{4e-8, "s", "40.0 ns"},
		{2.5, "s", "2.500 s"},
		{12, "ms", "12.000 ms"},
		{23.456, "GB/s", "23.46 GB/s"},
		{1.25, "x", "1.25×"},
		{0.853, "fraction", "85.3%"},
		{0.5, "", "0.5"},
		{42, "trials", "42 trials"},
	} {
		if got := results.FormatValue(tc.v, tc.unit); got != tc.want {
			t.Errorf("FormatValue(%v, %q) = %q; want %q", tc.v, tc.unit, got, tc.want)
		}
	}
}

func TestPolicyCheck(t *testing.T) {
	for _, tc := range []struct {
		p    results.Policy
		want string
	}{
		{results.DefaultPolicy(), ""},
		{results.Policy{Window: 0, Floor: 0.03, K: 2}, "window 0"},
		{results.Policy{Window: 3, Floor: -0.1, K: 2}, "floor"},
		{results.Policy{Window: 3, Floor: math.NaN(), K: 2}, "floor"},
		{results.Policy{Window: 3, Floor: 0.03, K: math.Inf(1)}, "k +Inf"},
		{results.Policy{Window: 3}, "both 0"},
	} {
		err := tc.p.Check()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Check(%+v) = %v; want %q", tc.p, err, tc.want)
		}
	}
	if _, err := results.Detect(nil, results.Policy{}); err == nil {
		t.Error("Detect with a zero policy: no error")
	}
}
