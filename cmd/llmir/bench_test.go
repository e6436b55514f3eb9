package main

import (
	"context"
	"encoding/json"
	"llmir/target/cpu/cputest"
	"path/filepath"
	"strings"
	"testing"

	"llmir/target/cpu"
)

// benchEnv isolates the command (config, cache, database) and caches a
// shrunken roofline for this machine, so that the command does not run the
// full probes.
func benchEnv(t *testing.T) (dir, db string) {
	t.Helper()
	cputest.Need(t, "gcc")
	dir = isolate(t)
	cache := filepath.Join(dir, "cpu")
	t.Setenv("LLMIR_CPU_CACHE", cache)
	tg, err := cpu.New(context.Background(), cpu.Options{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	tg.Probe = cpu.RooflineOptions{ReadBytes: 8 << 20, FMAIters: 200_000}
	if _, err := tg.Roofline(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dir, filepath.Join(dir, "tuning.db")
}

func TestBenchLinear(t *testing.T) {
	dir, db := benchEnv(t)
	args := []string{"--db", db, "bench", "linear", "--shapes", "1x17x32,20x37x29", "--trials", "2", "--min-time", "1ms"}
	out, stderr, err := runCLI(t, dir, append(args, "--json")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	var doc struct {
		Suite   string `json:"suite"`
		Threads int    `json:"threads"`
		Results []struct {
			Shape    string  `json:"shape"`
			Class    string  `json:"class"`
			TunedS   float64 `json:"tuned_s"`
			OpenBLAS struct {
				Status  string    `json:"status"`
				Samples []float64 `json:"samples"`
			} `json:"openblas"`
			Speedup  float64 `json:"speedup_vs_openblas"`
			GoalMet  *bool   `json:"goal_met"`
			Measured int     `json:"measured"`
			Resumed  int     `json:"resumed"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("JSON output: %v\n%s", err, out)
	}
	if doc.Suite != "linear" || doc.Threads != 1 || len(doc.Results) != 2 {
		t.Fatalf("suite %q, threads %d, %d results", doc.Suite, doc.Threads, len(doc.Results))
	}
	for i, want := range []struct{ shape, class string }{{"1x17x32", "gemv"}, {"20x37x29", "prefill"}} {
		r := doc.Results[i]
		if r.Shape != want.shape || r.Class != want.class || r.TunedS <= 0 || r.Speedup <= 0 || r.GoalMet == nil ||
			r.OpenBLAS.Status != "ok" || len(r.OpenBLAS.Samples) == 0 || r.Measured != 2 {
			t.Errorf("result %d: %+v", i, r)
		}
	}

	// The table, on the same database: the tune resumes (2 found, 1 more
	// measured for a budget of 3) and the goal column is there.
	out, _, err = runCLI(t, dir, "--db", db, "bench", "linear", "--shapes", "20x37x29", "--trials", "3", "--min-time", "1ms")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "tuned×openblas") || !strings.Contains(lines[0], "goal") ||
		!strings.Contains(lines[1], "20x37x29") || !strings.Contains(lines[1], "2+1") {
		t.Errorf("table:\n%s", out)
	}
}

func TestBenchLinearErrors(t *testing.T) {
	dir := isolate(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--shapes", "4x4"}, `--shapes: shape 1 "4x4": want MxNxK`},
		{[]string{"--shapes", "1x8x8,0x8x8"}, `shape 2 "0x8x8": M="0"`},
		{[]string{"--threads", "0"}, "--threads 0"},
		{[]string{"--trials", "0"}, "--trials 0 needs a --budget"},
		{[]string{"--trials", "-1"}, "--trials -1"},
		{[]string{"--batch", "0"}, "--batch 0"},
		{[]string{"extra"}, "unknown command"},
	} {
		_, _, err := runCLI(t, dir, append([]string{"bench", "linear"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
	out, _, err := runCLI(t, dir, "bench", "linear", "-h")
	if err != nil || !strings.Contains(out, "Examples:") || !strings.Contains(out, "--shapes") {
		t.Errorf("help: %v\n%s", err, out)
	}
}
