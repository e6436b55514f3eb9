package bench_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"llmir/bench"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cpu/cputest"
	"llmir/tuningdb"
)

func TestPrefillKernelDefaults(t *testing.T) {
	k := bench.PrefillKernel(bench.PrefillOptions{}, 512)
	if k.Batch != 1 || k.Seq != 512 || k.KVLen != 0 || k.QHeads != 32 || k.KVHeads != 8 || k.HeadDim != 128 || !k.Causal || k.DType != "f32" {
		t.Errorf("default kernel %+v, want Llama-3-8B causal f32", k)
	}
	if k := bench.PrefillKernel(bench.PrefillOptions{NotCausal: true, Window: 64, DType: "bf16", HeadDim: 64}, 7); k.Causal || k.Window != 64 || k.DType != "bf16" || k.HeadDim != 64 {
		t.Errorf("options not applied: %+v", k)
	}
	// Causal prefill does half the work of full attention, plus the diagonal.
	full := bench.PrefillKernel(bench.PrefillOptions{NotCausal: true}, 128).FLOPs()
	causal := bench.PrefillKernel(bench.PrefillOptions{}, 128).FLOPs()
	if want := full * (128 + 1) / (2 * 128); causal != want {
		t.Errorf("causal FLOPs %g, want %g", causal, want)
	}
}

// TestPrefillAttentionSuite runs the suite end to end on small heads and
// odd lengths with a tiny budget: the structure of the results and what
// reaches the database are checked, never the timings.
func TestPrefillAttentionSuite(t *testing.T) {
	ctx, tg, roof, db, quick := bench.SuiteTestSetup(t, 2)
	var log bytes.Buffer
	seqs := []int64{17, 40}
	rs, err := bench.PrefillAttention(ctx, tg, roof, db, bench.PrefillOptions{
		Threads: 2, Seqs: seqs, QHeads: 4, KVHeads: 2, HeadDim: 64, Final: quick, Log: &log,
		Tune: search.Options{Budget: search.Budget{Trials: 2}, Run: quick, LLMIRVersion: "test", Confirm: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(seqs) {
		t.Fatalf("%d results for %d lengths", len(rs), len(seqs))
	}
	for i, r := range rs {
		if r.Seq != seqs[i] || r.Threads != 2 || r.Batch != 1 || !strings.Contains(r.Name(), "HQ=4,HKV=2,D=64/causal") {
			t.Errorf("result %d: %s", i, r.Name())
		}
		for name, m := range map[string]target.Measurement{"default": r.Default, "tuned": r.Tuned} {
			if !m.OK() || len(m.Samples) != 6 {
				t.Errorf("%s: %s %s %q with %d samples", r.Name(), name, m.Status, m.Error, len(m.Samples))
			}
		}
		if r.GFLOPs <= 0 || r.DefaultGFLOPs <= 0 || r.PeakGFLOPs <= 0 || r.PeakFraction <= 0 || r.TunedOverDefault <= 0 || r.FLOPs <= 0 {
			t.Errorf("%s: missing derived numbers %+v", r.Name(), r)
		}
		if len(r.Knobs) != 5 || r.Measured != 2 || len(r.BestTrace) == 0 || r.RunID == 0 {
			t.Errorf("%s: knobs %v, measured %d, run %d, best trace %d bytes", r.Name(), r.Knobs, r.Measured, r.RunID, len(r.BestTrace))
		}
		got, err := db.BenchResults(ctx, bench.PrefillSuite, r.Name())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 4 || got[0].DeviceHash != tg.CPU().Hash() {
			t.Fatalf("%s: %d bench results stored, want 4 for this device", r.Name(), len(got))
		}
	}
	if strings.Count(log.String(), "\n") != len(seqs) {
		t.Errorf("log has not one line per length:\n%s", log.String())
	}
	var table bytes.Buffer
	if err := bench.WritePrefillTable(&table, rs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table.String()), "\n")
	if len(lines) != 1+len(seqs) || !strings.Contains(lines[0], "% FMA peak") || !strings.HasPrefix(strings.TrimSpace(lines[1]), "17") {
		t.Errorf("table:\n%s", table.String())
	}
}

// TestPrefillAttentionReport runs the full suite (Llama-3-8B heads, causal,
// seq 128…2048) and prints its table. It takes minutes, so it runs only
// when LLMIR_BENCH_PREFILL is set to the thread count, e.g.
//
//	LLMIR_BENCH_PREFILL=1 LLMIR_BENCH_TRIALS=16 go test ./bench -run TestPrefillAttentionReport -v -timeout 60m
//
// (LLMIR_BENCH_SEQS=128,512 picks lengths). The roofline comes from the
// user's cache; the tuning database is a fresh one in a temporary folder.
// TestPrefillAttentionSuite is the same path at small sizes, run always.
func TestPrefillAttentionReport(t *testing.T) {
	env := os.Getenv("LLMIR_BENCH_PREFILL")
	if env == "" {
		t.Skip("set LLMIR_BENCH_PREFILL=THREADS to run the prefill attention suite")
	}
	threads, err := strconv.Atoi(env)
	if err != nil || threads < 1 {
		t.Fatalf("LLMIR_BENCH_PREFILL=%q: want a thread count", env)
	}
	trials := 16
	if s := os.Getenv("LLMIR_BENCH_TRIALS"); s != "" {
		if trials, err = strconv.Atoi(s); err != nil || trials < 1 {
			t.Fatalf("LLMIR_BENCH_TRIALS=%q: want a positive count", s)
		}
	}
	var seqs []int64
	if s := os.Getenv("LLMIR_BENCH_SEQS"); s != "" {
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
			if err != nil || n < 1 {
				t.Fatalf("LLMIR_BENCH_SEQS=%q: %q is not a length", s, f)
			}
			seqs = append(seqs, n)
		}
	}
	cputest.Need(t, "gcc")
	ctx := context.Background()
	tg, err := cpu.New(ctx, cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	roof, err := tg.Roofline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := tuningdb.Open(ctx, filepath.Join(t.TempDir(), "tuning.db"), tuningdb.Options{LLMIRVersion: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rs, err := bench.PrefillAttention(ctx, tg, roof, db, bench.PrefillOptions{
		Threads: threads, Seqs: seqs, Log: os.Stderr,
		Tune: search.Options{Budget: search.Budget{Trials: trials}, LLMIRVersion: "bench"},
	})
	var table bytes.Buffer
	if werr := bench.WritePrefillTable(&table, rs); werr != nil {
		t.Fatal(werr)
	}
	t.Logf("prefill attention, threads %d, %d trials:\n%s", threads, trials, table.String())
	if err != nil {
		t.Fatal(err)
	}
}
