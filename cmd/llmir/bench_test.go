package main

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"llmir/target/cpu"
	"llmir/target/cpu/cputest"
	"llmir/tuningdb"
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
		// An explicitly empty list or item is an error, not the 17
		// full-size default shapes (hours) or a silently dropped item
		// (--threads 0 stops a regression before it measures anything).
		{[]string{"--shapes", "", "--threads", "0"}, `--shapes: shape 1 is empty in ""`},
		{[]string{"--shapes=", "--threads", "0"}, `--shapes: shape 1 is empty in ""`},
		{[]string{"--shapes", " ", "--threads", "0"}, `--shapes: shape 1 is empty`},
		{[]string{"--shapes", "8x64x96,", "--threads", "0"}, `--shapes: shape 2 is empty in "8x64x96,"`},
		{[]string{"--threads", "0"}, "--threads 0"},
		{[]string{"--trials", "0"}, "--trials 0 needs a --budget"},
		{[]string{"--trials", "-1"}, "--trials -1"},
		{[]string{"--batch", "0"}, "--batch 0"},
		{[]string{"--closing-runs", "0"}, "--closing-runs 0: want 1..100"},
		// 4 TiB of w: refused before any allocation (it used to die with a
		// fatal out-of-memory error in the Go reference).
		{[]string{"--shapes", "8x8x8,1x1048576x1048576"}, `shape 2 "1x1048576x1048576": buffers a, w and out hold 4194312 MiB, over the 4096 MiB cap`},
		{[]string{"--shapes", "64x64x64", "--max-buffer-mib", "0"}, "--max-buffer-mib 0: want ≥ 1"},
		{[]string{"--shapes", "1024x1024x1024", "--max-buffer-mib", "11"}, `"1024x1024x1024": buffers a, w and out hold 12 MiB, over the 11 MiB cap`},
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

func TestBenchSuiteErrors(t *testing.T) {
	dir := isolate(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--suite NAME is required"},
		{[]string{"--suite", "kernel"}, `--suite "kernel": unknown benchmark suite (known: kernels, layer, nightly, paged_attention, prefill_attention, quant, tuning)`},
		{[]string{"--suite", "kernels", "--target", "cuda"}, `--target "cuda"`},
		{[]string{"--suite", "kernels", "--threads", "0"}, "--threads 0"},
		{[]string{"--suite", "kernels", "--models", "gpt-9"}, `--models: model 1 "gpt-9": unknown preset`},
		{[]string{"--suite", "kernels", "--models", "llama-tiny:train"}, `phase "train"`},
		{[]string{"--suite", "kernels", "--match", "("}, `--match "("`},
		{[]string{"--suite", "kernels", "--slow", "[z-a]"}, `--slow "[z-a]"`},
		{[]string{"--suite", "kernels", "--min-time", "-1s"}, "--min-time -1s"},
		{[]string{"--suite", "kernels", "--max-buffer-mib", "0"}, "--max-buffer-mib 0"},
		{[]string{"--suite", "nightly", "--tune-trials", "0"}, "--tune-trials 0"},
		{[]string{"--suite", "tuning", "--search-seeds", "0"}, "--search-seeds 0"},
		{[]string{"--suite", "nightly", "--tune-preset", "gpt-9"}, `--tune-preset "gpt-9": want a preset name`},
		{[]string{"--suite", "kernels", "--floor", "0", "--k", "0"}, "--window/--floor/--k"},
		{[]string{"--suite", "tuning", "--costmodel-data", "nowhere/*.jsonl"}, `--costmodel-data "nowhere/*.jsonl": no such dataset`},
		{[]string{"--suite", "kernels", "extra"}, "unknown command"},
		{[]string{"--suite", "paged_attention", "--block-sizes", "16,0"}, "--block-sizes 0: want 1..16777216"},
		{[]string{"--suite", "paged_attention", "--contexts", "-4"}, "--contexts -4"},
		{[]string{"--suite", "paged_attention", "--kv-mib", "-1"}, "--kv-mib -1"},
		{[]string{"--suite", "paged_attention", "--closing-runs", "101"}, "--closing-runs 101: want 1..100"},
		{[]string{"--suite", "quant", "--quant-shapes", "4096by4096"}, `--quant-shapes: shape 1 "4096by4096": want NxK`},
		{[]string{"--suite", "quant", "--quant-shapes", "4096x4096,", "--trials", "0"}, `--quant-shapes: shape 2 is empty`},
		{[]string{"--suite", "quant", "--quant-shapes", "", "--trials", "0"}, `--quant-shapes: no shapes given`},
		{[]string{"--suite", "quant", "--trials", "0"}, "--trials 0"},
		{[]string{"--suite", "prefill_attention", "--prefill-seqs", "0"}, "--prefill-seqs 0"},
		// Past 2^24 a workload's buffer sizes could wrap an int64 and slip
		// under the --max-buffer-mib check (--floor 0 --k 0 stops a
		// regression before it measures).
		{[]string{"--suite", "prefill_attention", "--prefill-seqs", "16777217", "--floor", "0", "--k", "0"}, "--prefill-seqs 16777217: want 1..16777216"},
		{[]string{"--suite", "paged_attention", "--contexts", "4611686018427387904", "--floor", "0", "--k", "0"}, "--contexts 4611686018427387904: want 1..16777216"},
		{[]string{"--suite", "quant", "--quant-shapes", "1x16777217", "--floor", "0", "--k", "0"}, `--quant-shapes: shape 1 "1x16777217": want NxK with N and K in 1..16777216`},
		{[]string{"--suite", "layer", "--layer-preset", "gpt-9"}, `--layer-preset "gpt-9": want a preset name`},
		{[]string{"--suite", "layer", "--layer-context", "0"}, "--layer-context 0"},
	} {
		_, _, err := runCLI(t, dir, append([]string{"bench"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
	out, _, err := runCLI(t, dir, "bench", "-h")
	if err != nil || !strings.Contains(out, "Examples:") || !strings.Contains(out, "--suite") || !strings.Contains(out, "TESTING AID") ||
		!strings.Contains(out, "NOT part of nightly") || !strings.Contains(out, "--block-sizes") {
		t.Errorf("help: %v\n%s", err, out)
	}
}

// TestBenchSuiteNightly runs a small nightly (one linear layer, a 2-trial
// tune, the small cost-model dataset) as JSON, then the kernels suite again
// with that layer slowed: --fail-on-regression exits with status 3.
func TestBenchSuiteNightly(t *testing.T) {
	dir, db := benchEnv(t)
	t.Setenv("LLMIR_GIT_COMMIT", "abc123")
	data, err := filepath.Abs("../../costmodel/testdata/local2core-linear2.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	res := filepath.Join(dir, "nightly.db")
	common := []string{"--db", db, "bench", "--results", res, "--models", "llama-tiny:decode",
		"--match", `linear/M=1,N=64,K=256/`, "--min-time", "2ms", "--warmup", "1ms", "--floor", "0.5"}
	out, stderr, err := runCLI(t, dir, append(common, "--suite", "nightly", "--tune-trials", "2", "--search-seeds", "1", "--costmodel-data", data, "--json")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	var doc struct {
		Suite   string `json:"suite"`
		Commit  string `json:"git_commit"`
		Device  struct{ Hash string }
		Rows    int `json:"rows"`
		Entries []struct {
			Name   string          `json:"name"`
			Suite  string          `json:"suite"`
			Rows   int             `json:"rows"`
			Detail json.RawMessage `json:"detail"`
		} `json:"entries"`
		Report struct {
			New      int `json:"new"`
			Findings []struct {
				Name, Metric, Verdict string
			} `json:"findings"`
		} `json:"report"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("JSON output: %v\n%s", err, out)
	}
	if doc.Suite != "nightly" || doc.Commit != "abc123" || len(doc.Device.Hash) != 64 || len(doc.Entries) != 3 || doc.Report.New != doc.Rows {
		t.Fatalf("run: %+v", doc)
	}
	for i, want := range []string{"kernels", "tuning", "tune"} {
		if e := doc.Entries[i]; e.Suite != want || e.Rows == 0 || len(e.Detail) < 3 {
			t.Errorf("entry %d: %s (%s) %d rows", i, e.Name, e.Suite, e.Rows)
		}
	}
	var kd struct {
		Results []struct {
			Benchmark string  `json:"benchmark"`
			BestS     float64 `json:"best_s"`
			Baseline  string  `json:"baseline"`
			Best      struct {
				Samples []float64 `json:"samples"`
			} `json:"best"`
		} `json:"results"`
		Skipped []struct{ Reason string } `json:"skipped"`
	}
	if err := json.Unmarshal(doc.Entries[0].Detail, &kd); err != nil || len(kd.Results) != 1 {
		t.Fatalf("kernels detail: %v %s", err, doc.Entries[0].Detail)
	}
	bench := kd.Results[0].Benchmark
	if bench != "linear/M=1,N=64,K=256/f32/threads=1" || kd.Results[0].BestS <= 0 || kd.Results[0].Baseline != "openblas" || len(kd.Results[0].Best.Samples) == 0 {
		t.Errorf("kernel result %+v", kd.Results[0])
	}
	var tune struct {
		RunID int64 `json:"run_id"`
		Tasks []struct {
			Trials int     `json:"trials"`
			BestS  float64 `json:"best_s"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal(doc.Entries[2].Detail, &tune); err != nil || tune.RunID == 0 || len(tune.Tasks) != 1 || tune.Tasks[0].Trials != 2 || tune.Tasks[0].BestS <= 0 {
		t.Fatalf("tune detail: %v %s", err, doc.Entries[2].Detail)
	}
	// The tune's trials are in the results database under one run, for the
	// dashboard's progress curve.
	rdb, err := tuningdb.Open(context.Background(), res, tuningdb.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	trials, err := rdb.RunRecords(context.Background(), tune.RunID)
	rdb.Close()
	if err != nil || len(trials) < 2 {
		t.Errorf("tuning run %d in the results: %d trials, %v", tune.RunID, len(trials), err)
	}

	// Second night, the layer slowed on purpose: flagged, exit status 3.
	out, _, err = runCLI(t, dir, append(common, "--suite", "kernels", "--slow", "N=64,", "--fail-on-regression")...)
	var ec interface{ ExitCode() int }
	if !errors.As(err, &ec) || ec.ExitCode() != ExitRegression {
		t.Fatalf("slowed run: error %v, want exit status %d\n%s", err, ExitRegression, out)
	}
	if !strings.Contains(out, "REGRESSED  kernels/"+bench+":best_median_s") || !strings.Contains(out, "SLOWED") {
		t.Errorf("slowed run output:\n%s", out)
	}
	out, _, err = runCLI(t, dir, "dashboard", "--results", res, "-o", filepath.Join(dir, "site"))
	if err != nil || !strings.Contains(out, "1 tuning curves") {
		t.Errorf("dashboard: %v\n%s", err, out)
	}
}

// TestMakeNightly checks the Makefile's nightly target as make reads it
// (dry run): the suite into RESULTS, then the dashboard of RESULTS into SITE.
func TestMakeNightly(t *testing.T) {
	cputest.Need(t, "make")
	out, err := exec.Command("make", "-n", "-C", "../..", "nightly", "RESULTS=/r/n.db", "SITE=/r/site", "NIGHTLY_FLAGS=--fail-on-regression").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n nightly: %v\n%s", err, out)
	}
	for _, want := range []string{
		"go build -o bin/llmir ./cmd/llmir",
		"scripts/ensure-deps.sh openblas",
		"LLMIR_GIT_COMMIT=$c bin/llmir bench --suite nightly --results /r/n.db --fail-on-regression",
		"bin/llmir dashboard --results /r/n.db -o /r/site",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make -n nightly lacks %q:\n%s", want, out)
		}
	}
}

// TestMiBFlagsTooLarge: a MiB count whose bytes pass an int64 (2^43 MiB
// and up) is an error naming the flag. The shift used to wrap negative,
// which the suites read as "unset" and replaced by their default cap or
// K+V size. (--floor 0 --k 0 stops a regression before it measures.)
func TestMiBFlagsTooLarge(t *testing.T) {
	dir := isolate(t)
	const big = "8796093022208" // 2^43
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--suite", "paged_attention", "--kv-mib", big, "--floor", "0", "--k", "0"}, "--kv-mib 8796093022208: too large, at most 8796093022207 MiB"},
		{[]string{"bench", "--suite", "layer", "--max-buffer-mib", "9223372036854775807", "--floor", "0", "--k", "0"}, "--max-buffer-mib 9223372036854775807: too large"},
		{[]string{"bench", "linear", "--shapes", "8x8x8", "--max-buffer-mib", big}, "--max-buffer-mib 8796093022208: too large"},
		{[]string{"cuda", "probe", "--mib", big, "--nvcc", "/nonexistent/nvcc"}, "--mib 8796093022208: too large"},
		{[]string{"cuda", "bench", "--probe-mib", big, "--nvcc", "/nonexistent/nvcc"}, "--probe-mib 8796093022208: too large"},
	} {
		_, _, err := runCLI(t, dir, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
	// The largest count that fits is taken as given.
	if _, _, err := runCLI(t, dir, "bench", "--suite", "paged_attention", "--kv-mib", "8796093022207", "--floor", "0", "--k", "0"); err == nil || !strings.Contains(err.Error(), "--window/--floor/--k") {
		t.Errorf("--kv-mib 2^43-1: error %v, want it accepted (and --floor 0 refused)", err)
	}
}
