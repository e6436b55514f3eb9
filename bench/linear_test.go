package bench_test

import (
	"bytes"
	"strings"
	"testing"

	"llmir/bench"
	"llmir/search"
	"llmir/target"
	"llmir/tuningdb"
)

func TestParseShapes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []bench.Shape
		err  string
	}{
		{in: "512x4096x4096", want: []bench.Shape{{512, 4096, 4096}}},
		{in: " 1x7x16 , 3x33x13", want: []bench.Shape{{1, 7, 16}, {3, 33, 13}}},
		{in: "1x7x16,", err: `shape 2 is empty in "1x7x16,"`},
		{in: "1x7x16,,3x33x13", err: "shape 2 is empty"},
		{in: "", err: `shape 1 is empty in ""`},
		{in: "512x4096", err: `shape 1 "512x4096": want MxNxK`},
		{in: "1x7x16,0x4x4", err: `shape 2 "0x4x4": M="0"`},
		{in: "1x7xk", err: `K="k"`},
		{in: " , ", err: "shape 1 is empty"},
	} {
		got, err := bench.ParseShapes(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseShapes(%q) error %v, want one containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || len(got) != len(c.want) {
			t.Errorf("ParseShapes(%q) = %v, %v", c.in, got, err)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("ParseShapes(%q)[%d] = %v, want %v", c.in, i, got[i], c.want[i])
			}
		}
	}
	if n := len(bench.DefaultLinearShapes()); n != 17 {
		t.Errorf("%d default shapes, want 17 (1024³, 4 prefill, 12 decode)", n)
	}
}

func TestGoals(t *testing.T) {
	for _, c := range []struct {
		r    bench.LinearResult
		want bool
	}{
		{bench.LinearResult{Class: bench.Prefill, TunedS: 1, Speedup: 1.01}, true},
		{bench.LinearResult{Class: bench.Prefill, TunedS: 1, Speedup: 0.99}, false},
		{bench.LinearResult{Class: bench.GEMV, TunedS: 1, Speedup: 1.1, ReadBWFraction: 0.9}, true},
		{bench.LinearResult{Class: bench.GEMV, TunedS: 1, Speedup: 1.1, ReadBWFraction: 0.8}, false},
		{bench.LinearResult{Class: bench.Skinny, TunedS: 1, Speedup: 2.5, RooflineFraction: 0.85}, true},
		{bench.LinearResult{Class: bench.Skinny, TunedS: 1, Speedup: 1.9, RooflineFraction: 0.85}, false},
		{bench.LinearResult{Class: bench.Skinny, TunedS: 0, Speedup: 3, RooflineFraction: 0.9}, false},
	} {
		if got := bench.GoalOf(c.r.Class).Met(&c.r); got != c.want {
			t.Errorf("%s %+v: met %v, want %v", c.r.Class, c.r, got, c.want)
		}
	}
	for m, want := range map[int64]bench.Class{1: bench.GEMV, 4: bench.Skinny, 16: bench.Skinny, 17: bench.Prefill, 512: bench.Prefill} {
		if got := bench.ClassOf(bench.Shape{M: m, N: 8, K: 8}); got != want {
			t.Errorf("class of M=%d: %s, want %s", m, got, want)
		}
	}
}

// TestLinearSuite runs the suite end to end on tiny shapes, one per class,
// with a tiny budget: the structure of the results and what reaches the
// database are checked, never the timings.
func TestLinearSuite(t *testing.T) {
	ctx, tg, roof, db, quick := bench.SuiteTestSetup(t, 1)
	shapes := []bench.Shape{{1, 17, 32}, {3, 33, 16}, {20, 37, 29}}
	var log bytes.Buffer
	rs, err := bench.Linear(ctx, tg, roof, db, shapes, bench.LinearOptions{
		Threads: 1, Final: quick, ClosingRuns: 2, Log: &log,
		Tune: search.Options{Budget: search.Budget{Trials: 2}, Run: quick, LLMIRVersion: "test"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(shapes) {
		t.Fatalf("%d results for %d shapes", len(rs), len(shapes))
	}
	for i, r := range rs {
		if r.Shape != shapes[i].String() || r.Class != bench.ClassOf(shapes[i]) || r.Goal != bench.GoalOf(r.Class) {
			t.Errorf("result %d: shape %s class %s goal %+v", i, r.Shape, r.Class, r.Goal)
		}
		// Every shape repeats the closing batch (ClosingRuns 2): two
		// passes of 3 samples a run.
		want := 12
		for name, m := range map[string]target.Measurement{"default": r.Default, "tuned": r.Tuned, "openblas": r.OpenBLAS} {
			if !m.OK() || len(m.Samples) != want {
				t.Errorf("%s: %s %s %q with %d samples, want %d", r.Shape, name, m.Status, m.Error, len(m.Samples), want)
			}
		}
		if r.Speedup <= 0 || r.GFLOPs <= 0 || r.GBs <= 0 || r.BoundS <= 0 || r.RooflineFraction <= 0 || r.ReadBWFraction <= 0 {
			t.Errorf("%s: missing derived numbers %+v", r.Shape, r)
		}
		// Decode shapes relate to the read bandwidth measured around their
		// batch; prefill to the cached probe alone.
		if decode := r.Class != bench.Prefill; (r.ReadGBs > 0) != decode || r.ProbeRooflineFraction <= 0 || r.ProbeReadBWFraction <= 0 ||
			(decode && r.ReadBWFraction != r.GBs/r.ReadGBs) || (!decode && r.RooflineFraction != r.ProbeRooflineFraction) {
			t.Errorf("%s: read baseline %.1f GB/s, fractions %g (probe %g) of roofline, %g (probe %g) of read bandwidth",
				r.Shape, r.ReadGBs, r.RooflineFraction, r.ProbeRooflineFraction, r.ReadBWFraction, r.ProbeReadBWFraction)
		}
		if r.Measured != 2 || len(r.BestTrace) == 0 || r.RunID == 0 {
			t.Errorf("%s: measured %d, run %d, best trace %d bytes", r.Shape, r.Measured, r.RunID, len(r.BestTrace))
		}
		got, err := db.BenchResults(ctx, bench.Suite, r.Name())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 7 || got[0].DeviceHash != tg.CPU().Hash() {
			t.Fatalf("%s: %d bench results stored, want 7 for this device", r.Name(), len(got))
		}
		for _, b := range got {
			if b.Metric == "tuned_median_s" && (len(b.Samples) != want || b.Better != tuningdb.BetterLower || b.Baseline != "openblas" || b.BaselineRatio != r.Speedup) {
				t.Errorf("%s: tuned row %+v", r.Name(), b)
			}
		}
	}
	if strings.Count(log.String(), "\n") != len(shapes) {
		t.Errorf("log has not one line per shape:\n%s", log.String())
	}
	var table bytes.Buffer
	if err := bench.WriteLinearTable(&table, rs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table.String()), "\n")
	if len(lines) != 1+len(shapes) || !strings.Contains(lines[0], "goal") || !strings.Contains(lines[1], "1x17x32") || !strings.Contains(lines[1], "BW") {
		t.Errorf("table:\n%s", table.String())
	}
}
