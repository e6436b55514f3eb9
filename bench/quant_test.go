package bench_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"llmir/bench"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cpu/cputest"
	"llmir/tuningdb"
)

// TestQuantSuite runs the quantized suite end to end on a small shape with
// a tiny budget: the structure of the results, the table and what reaches
// the database are checked, never the timings.
func TestQuantSuite(t *testing.T) {
	ctx, tg, roof, db, quick := bench.SuiteTestSetup(t, 1)
	var log bytes.Buffer
	shapes := []bench.QuantShape{{33, 128}}
	rs, err := bench.Quant(ctx, tg, roof, db, bench.QuantOptions{
		Threads: 1, Shapes: shapes, Group: 64, Final: quick, Log: &log,
		Tune: search.Options{Budget: search.Budget{Trials: 2}, Run: quick, LLMIRVersion: "test", Confirm: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("%d results for 1 shape", len(rs))
	}
	r := rs[0]
	if r.Shape != "33x128" || r.N != 33 || r.K != 128 || r.Group != 64 || r.Threads != 1 || r.Goal != bench.QuantGoal {
		t.Errorf("result header %+v", r)
	}
	for name, k := range map[string]bench.QuantKernel{"int4": r.Int4, "int8": r.Int8, "f32": r.F32} {
		for which, m := range map[string]target.Measurement{"default": k.Default, "tuned": k.Tuned} {
			if !m.OK() || len(m.Samples) != 6 {
				t.Errorf("%s %s: %s %q with %d samples", name, which, m.Status, m.Error, len(m.Samples))
			}
		}
		if k.GBs <= 0 || k.ReadBWFraction <= 0 || k.Measured != 2 || len(k.BestTrace) == 0 || k.RunID == 0 {
			t.Errorf("%s: missing numbers %+v", name, k)
		}
	}
	// int4 moves about an eighth of f32's bytes, int8 a quarter.
	if !(r.Int4.Bytes < r.Int8.Bytes && r.Int8.Bytes < r.F32.Bytes) {
		t.Errorf("bytes int4 %g, int8 %g, f32 %g", r.Int4.Bytes, r.Int8.Bytes, r.F32.Bytes)
	}
	if r.Int4Speedup <= 0 || r.Int8Speedup <= 0 || r.DefaultInt4Speedup <= 0 || r.GoalMet != (r.Int4Speedup >= 3) {
		t.Errorf("speedups int4 %g, int8 %g, default int4 %g, met %v", r.Int4Speedup, r.Int8Speedup, r.DefaultInt4Speedup, r.GoalMet)
	}
	for _, kind := range []string{"int4,g=64", "int8", "f32"} {
		got, err := db.BenchResults(ctx, bench.QuantSuite, r.Name(kind))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 4 || got[0].DeviceHash != tg.CPU().Hash() {
			t.Fatalf("%s: %d bench results stored, want 4 for this device", r.Name(kind), len(got))
		}
		for _, b := range got {
			if b.Metric == "tuned_median_s" && (len(b.Samples) != 6 || (kind != "f32") != (b.Baseline == "f32")) {
				t.Errorf("%s: tuned row %+v", r.Name(kind), b)
			}
		}
	}
	if strings.Count(log.String(), "\n") != 1 || !strings.Contains(log.String(), "33x128 threads=1") {
		t.Errorf("log:\n%s", log.String())
	}
	var table bytes.Buffer
	if err := bench.WriteQuantTable(&table, rs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "goal") || !strings.Contains(lines[1], "int4 g=64") ||
		!strings.Contains(lines[1], "≥3×") || !strings.Contains(lines[2], "int8") || !strings.Contains(lines[3], "f32") {
		t.Errorf("table:\n%s", table.String())
	}

	// A shape the group does not divide is an error naming it.
	if _, err := bench.Quant(ctx, tg, roof, db, bench.QuantOptions{Shapes: []bench.QuantShape{{8, 100}}, Group: 64}); err == nil || !strings.Contains(err.Error(), "8x100") {
		t.Errorf("K not a multiple of the group: %v", err)
	}
}

var (
	quantLlama   = flag.Bool("quant.llama", false, "BenchmarkQuant: the Llama-3-8B decode shapes (minutes) instead of a small one")
	quantThreads = flag.Int("quant.threads", 1, "BenchmarkQuant: thread count")
	quantTrials  = flag.Int("quant.trials", 8, "BenchmarkQuant: tuning trials per kernel")
)

// BenchmarkQuant runs the suite once per iteration and prints its table;
// with -quant.llama it is the measurement:
//
//	go test ./bench -run '^$' -bench BenchmarkQuant -benchtime 1x -args -quant.llama -quant.threads 1
//
// The tuning database and build cache are temporary, so every run tunes
// afresh with the same seed.
func BenchmarkQuant(b *testing.B) {
	cputest.Need(b, "gcc")
	ctx := context.Background()
	tg, err := cpu.New(ctx, cpu.Options{CacheDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	threads := max(*quantThreads, 1)
	tg.Probe = cpu.RooflineOptions{Threads: []int{threads}}
	roof, err := tg.Roofline(ctx)
	if err != nil {
		b.Fatal(err)
	}
	db, err := tuningdb.Open(ctx, filepath.Join(b.TempDir(), "tuning.db"), tuningdb.Options{LLMIRVersion: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	shapes, name := []bench.QuantShape{{256, 1024}}, "N=256,K=1024"
	if *quantLlama {
		shapes, name = bench.DefaultQuantShapes(), "llama-3-8b"
	}
	b.Run(fmt.Sprintf("%s/threads=%d", name, threads), func(b *testing.B) {
		var rs []bench.QuantResult
		for b.Loop() {
			rs, err = bench.Quant(ctx, tg, roof, db, bench.QuantOptions{
				Threads: threads, Shapes: shapes, Log: os.Stderr,
				Tune: search.Options{Budget: search.Budget{Trials: *quantTrials}, LLMIRVersion: "bench"},
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		var geo float64 = 1
		for _, r := range rs {
			geo *= r.Int4Speedup
		}
		b.ReportMetric(math.Pow(geo, 1/float64(len(rs))), "int4×f32")
		var table bytes.Buffer
		if err := bench.WriteQuantTable(&table, rs); err != nil {
			b.Fatal(err)
		}
		fmt.Fprint(os.Stderr, table.String())
	})
}

// TestHeavySuitesRefuseHugeBuffers: the quant and prefill_attention
// suites refuse a workload whose buffers pass the cap, or an extent past
// MaxExtent, before anything is tuned. The context is cancelled, so a
// suite that started on its first workload instead fails with the
// context's error rather than allocating the huge one.
func TestHeavySuitesRefuseHugeBuffers(t *testing.T) {
	_, tg, roof, db, quick := bench.SuiteTestSetup(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tune := search.Options{Budget: search.Budget{Trials: 2}, Run: quick, LLMIRVersion: "test", Confirm: -1}
	for _, c := range []struct {
		shapes []bench.QuantShape
		max    int64
		want   string
	}{
		// 65536×65536 f32 weights: 16 GiB, over the default 1 GiB.
		{[]bench.QuantShape{{33, 128}, {65536, 65536}}, 0, "bench quant 65536x65536: quantized_linear/M=1,N=65536,K=65536/int4,g=64: buffers hold 2305 MiB, over the 1024 MiB cap"},
		{[]bench.QuantShape{{33, 128}, {4096, 4096}}, 32 << 20, "over the 32 MiB cap (--max-buffer-mib)"},
		{[]bench.QuantShape{{33, 128}, {1, 1 << 25}}, 0, "bench quant 1x33554432: N×K 33554432: want 1..16777216"},
	} {
		rs, err := bench.Quant(ctx, tg, roof, db, bench.QuantOptions{Threads: 1, Shapes: c.shapes, Group: 64, MaxBufferBytes: c.max, Tune: tune, Final: quick})
		if err == nil || len(rs) != 0 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("quant %v, cap %d: %d results, error %v, want %q", c.shapes, c.max, len(rs), err, c.want)
		}
	}
	for _, c := range []struct {
		seqs []int64
		max  int64
		want string
	}{
		// q, k, v and out of 2^22 tokens × 32 heads × 128: 64 GiB and more.
		{[]int64{17, 1 << 22}, 0, "bench prefill attention seq 4194304: attention"},
		{[]int64{17, 4096}, 16 << 20, "over the 16 MiB cap (--max-buffer-mib)"},
		{[]int64{17, 1 << 40}, 0, "sequence length 1099511627776: want 1..16777216"},
	} {
		rs, err := bench.PrefillAttention(ctx, tg, roof, db, bench.PrefillOptions{Threads: 1, Seqs: c.seqs, MaxBufferBytes: c.max, Tune: tune, Final: quick})
		if err == nil || len(rs) != 0 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("prefill %v, cap %d: %d results, error %v, want %q", c.seqs, c.max, len(rs), err, c.want)
		}
	}
}
