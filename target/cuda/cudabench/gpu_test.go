//go:build gpu

package cudabench

import (
	"context"
	"testing"
	"time"

	"llmir/target"
	"llmir/target/cuda"
)

// TestConformanceOnGPU runs the check suite on the machine's GPU (go test
// -tags gpu ./target/cuda/...): every CUDA kernel's default and sampled
// schedules validated against the Go reference. CI has no GPU and builds
// without the tag; the GPU machine, which has no Go, runs the same suite
// through `llmir cuda check` (scripts/gpu-check.sh).
func TestConformanceOnGPU(t *testing.T) {
	ctx := context.Background()
	tg, err := cuda.New(ctx, cuda.Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, tg, Conformance(), Options{Samples: 6, Seed: 1,
		Run: target.RunOptions{Warmup: time.Millisecond, Budget: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Failed() {
		t.Error(f)
	}
	bw, err := tg.Runner.Probe(ctx, 256<<20)
	if err != nil || !(bw.CopyGBps > 0) {
		t.Fatalf("probe: %+v, %v", bw, err)
	}
	// The read bound of a 32 MiB weight: one of the grids asked, a median
	// within its samples, and no faster than the probe's read of 256 MiB
	// (launch and first-load latency weigh more on fewer bytes).
	rb, err := tg.Runner.ReadBound(ctx, 32<<20, cuda.ReadGrids, target.RunOptions{Warmup: time.Millisecond, Budget: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m := rb.Measurement
	if gbps := 32 << 20 / m.Median / 1e9; !m.OK() || m.Min > m.Median || len(rb.Grids) != len(cuda.ReadGrids) || gbps > 1.05*bw.ReadGBps {
		t.Errorf("read bound %+v: %.0f GB/s against the probe's read %.0f", rb, gbps, bw.ReadGBps)
	}
}
