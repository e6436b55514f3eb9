package bench

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cpu/cputest"
	"llmir/tuningdb"
)

// SuiteTestSetup is where each suite's end-to-end test starts (skipped
// without gcc): a CPU target with a build cache of its own and a roofline
// probed small at probeThreads, a fresh tuning database closed when the
// test ends, and the quickest timing protocol (3 samples, 1 ms budgets).
// It is exported, in a test file, for the external bench_test package.
func SuiteTestSetup(t *testing.T, probeThreads ...int) (context.Context, *cpu.Target, *cpu.Roofline, *tuningdb.DB, target.RunOptions) {
	t.Helper()
	cputest.Need(t, "gcc")
	ctx := context.Background()
	tg, err := cpu.New(ctx, cpu.Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	tg.Probe = cpu.RooflineOptions{Threads: probeThreads, ReadBytes: 8 << 20, FMAIters: 200_000}
	roof, err := tg.Roofline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := tuningdb.Open(ctx, filepath.Join(t.TempDir(), "tuning.db"), tuningdb.Options{LLMIRVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	quick := target.RunOptions{Warmup: time.Millisecond, Budget: time.Millisecond, MinSamples: 3, MaxSamples: 3}
	return ctx, tg, roof, db, quick
}
