package bench

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"llmir/bench/results/resultstest"
	"llmir/tuningdb"
)

// TestHeavySuitesNotNightly: the heavy suites run only by name.
func TestHeavySuitesNotNightly(t *testing.T) {
	var nightly []string
	for _, e := range Suites()[SuiteNightly] {
		nightly = append(nightly, e.Name)
	}
	for name, es := range heavyEntries() {
		if len(es) == 0 || !slices.Contains(SuiteNames(), name) {
			t.Errorf("suite %s: %d entries, listed %v", name, len(es), SuiteNames())
		}
		for _, e := range es {
			if slices.Contains(nightly, e.Name) {
				t.Errorf("nightly runs heavy entry %s", e.Name)
			}
		}
	}
}

// TestHeavySuitesTiny runs each heavy suite at one tiny workload with a
// 1-trial tune and the minimal timing protocol: rows land once in the
// results database under the suite's name, and the run counts and
// assesses exactly those.
func TestHeavySuitesTiny(t *testing.T) {
	cases := []struct {
		suite string
		set   func(o *SuiteOptions)
		rows  int // stored rows per run
	}{
		{SuiteQuant, func(o *SuiteOptions) { o.QuantShapes = []QuantShape{{N: 256, K: 256}} }, 0},
		{SuitePaged, func(o *SuiteOptions) { o.BlockSizes, o.Contexts, o.KVBytes = []int64{16}, []int64{128}, 1<<20 }, 4},
		{SuitePrefill, func(o *SuiteOptions) { o.PrefillSeqs = []int64{32} }, 0},
	}
	for _, c := range cases {
		t.Run(c.suite, func(t *testing.T) {
			env := suiteEnv(t)
			env.Opts.Match = nil
			env.Opts.Trials = 1
			c.set(&env.Opts)
			ctx := context.Background()
			run, err := RunSuite(ctx, c.suite, env)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := env.Results.QueryBenchResults(ctx, tuningdb.BenchFilter{Suite: c.suite})
			if err != nil {
				t.Fatal(err)
			}
			if len(stored) == 0 || run.Rows != len(stored) || (c.rows > 0 && len(stored) != c.rows) {
				t.Fatalf("run counts %d rows, database holds %d (want %d when known)", run.Rows, len(stored), c.rows)
			}
			if len(run.Report.Findings) == 0 || run.Report.New != len(run.Report.Findings) {
				t.Errorf("report: %s", run.Report.Summary())
			}
			for _, r := range stored {
				if r.DeviceHash != env.Device.Hash || r.Value <= 0 {
					t.Errorf("row %s %s = %g on device %.12s", r.Name, r.Metric, r.Value, r.DeviceHash)
				}
			}
		})
	}
}

// TestLayerSuite: the layer entry hands DecodeLayer the suite's preset
// (measuring a whole layer takes minutes on a busy machine; bench's own
// layer tests measure it), and its totals become rows — fused, unfused,
// best, and fused over unfused — with incomplete totals left out.
func TestLayerSuite(t *testing.T) {
	db, err := tuningdb.OpenMemory(context.Background(), tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	env := &Env{Results: db, Device: resultstest.Device(), Opts: SuiteOptions{LayerPreset: "gpt-9"}}
	if _, err := RunSuite(context.Background(), SuiteLayer, env); err == nil || !strings.Contains(err.Error(), "suite layer, layer: decode layer") ||
		!strings.Contains(err.Error(), "gpt-9") {
		t.Errorf("unknown preset: %v", err)
	}
	full := LayerTotal{DefaultS: 2e-3, TunedS: 1e-3, Groups: 5}
	cases := []struct {
		name             string
		fused, unfused   LayerTotal
		want             []string // name suffix + ":" + metric
		fusedOverUnfused float64
	}{
		{"both complete", full, LayerTotal{DefaultS: 3e-3, TunedS: 1.5e-3, Groups: 7}, []string{
			"/fused:default_s", "/fused:tuned_s", "/unfused:default_s", "/unfused:tuned_s", "/best:default_s", "/best:tuned_s", ":fused_over_unfused"}, 1.5},
		{"unfused incomplete", full, LayerTotal{DefaultS: 1e-3, TunedS: 1e-3, Groups: 6, Missing: 1}, []string{
			"/fused:default_s", "/fused:tuned_s", "/best:default_s", "/best:tuned_s"}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &LayerResult{Preset: "llama-tiny", Layer: 0, Batch: 1, Context: 64, Threads: 1, Fused: c.fused, Unfused: c.unfused, Best: full}
			rows := layerRows(r)
			var got []string
			base := "DecodeLayer/llama-tiny/layer=0,B=1,ctx=64/threads=1"
			for _, row := range rows {
				if !strings.HasPrefix(row.Name, base) {
					t.Errorf("row name %q", row.Name)
				}
				got = append(got, strings.TrimPrefix(row.Name, base)+":"+row.Metric)
				if row.Metric == "fused_over_unfused" && math.Abs(row.Value-c.fusedOverUnfused) > 1e-9 {
					t.Errorf("fused over unfused %g, want %g", row.Value, c.fusedOverUnfused)
				}
			}
			if !slices.Equal(got, c.want) || len(rows[0].Extra) == 0 {
				t.Errorf("rows %v, want %v (extra %d bytes)", got, c.want, len(rows[0].Extra))
			}
		})
	}
}
