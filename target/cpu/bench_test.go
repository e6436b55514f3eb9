package cpu

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"llmir/target"
)

func newBenchTarget(b *testing.B) *Target {
	b.Helper()
	// Benchmarks use the real cache dir: the roofline is measured once per
	// machine and kept, as in production.
	tg, err := New(context.Background(), Options{})
	if err != nil {
		b.Fatalf("new cpu target: %v", err)
	}
	return tg
}

// BenchmarkBaseline measures the OpenBLAS and naive baselines through the
// harness, with the OpenBLAS_* overrides unset for OpenBLAS only (the
// protocol's rule for benchmarks), and reports GFLOP/s, GB/s and the
// fraction of the roofline at the same thread count.
//
//	go test -run '^$' -bench Baseline -benchtime 1x ./target/cpu/
//	LLMIR_BASELINE_SHAPES=4x14336x4096 go test -run '^$' -bench Baseline -benchtime 1x ./target/cpu/
func BenchmarkBaseline(b *testing.B) {
	tg := newBenchTarget(b)
	ctx := context.Background()
	roof, err := tg.Roofline(ctx)
	if err != nil {
		b.Fatal(err)
	}
	shapes := []struct {
		l     Linear
		naive bool
	}{
		{Linear{M: 256, N: 1024, K: 1024}, true},
		{Linear{M: 1, N: 4096, K: 4096}, true},
		{Linear{M: 16, N: 4096, K: 4096}, false},
	}
	// LLMIR_BASELINE_SHAPES=MxNxK,… measures other shapes (OpenBLAS only).
	if env := os.Getenv("LLMIR_BASELINE_SHAPES"); env != "" {
		shapes = shapes[:0]
		for _, f := range strings.Split(env, ",") {
			var l Linear
			if _, err := fmt.Sscanf(f, "%dx%dx%d", &l.M, &l.N, &l.K); err != nil || l.M < 1 || l.N < 1 || l.K < 1 {
				b.Fatalf("LLMIR_BASELINE_SHAPES: %q: want MxNxK", f)
			}
			shapes = append(shapes, struct {
				l     Linear
				naive bool
			}{l, false})
		}
	}
	for _, s := range shapes {
		p := LinearProblem(s.l, 1)
		if _, err := p.Expected(); err != nil {
			b.Fatal(err)
		}
		for _, threads := range []int{1, 2} {
			cands := []target.Candidate{OpenBLASCandidate("openblas", s.l, threads)}
			cands[0].UnsetEnv = OpenBLASUnsetEnv
			if s.naive {
				cands = append(cands, NaiveCandidate("naive", s.l, threads))
			}
			for _, c := range cands {
				b.Run(fmt.Sprintf("%s/%s/f32/threads=%d", c.ID, s.l, threads), func(b *testing.B) {
					var m target.Measurement
					for b.Loop() {
						res, err := target.Measure(ctx, tg, p, []target.Candidate{c}, target.RunOptions{})
						if err != nil {
							b.Fatal(err)
						}
						if m = res[c.ID]; !m.OK() {
							b.Fatalf("%s: %s: %s", c.ID, m.Status, m.Error)
						}
					}
					gflops, gbs := p.Rates(m.Median)
					b.ReportMetric(gflops, "GFLOP/s")
					b.ReportMetric(gbs, "GB/s")
					b.ReportMetric(m.Median*1e3, "ms/median")
					b.ReportMetric(100*m.IQR()/m.Median, "%IQR")
					if bound, err := roof.Bound(threads, p.FLOPs, p.Bytes); err == nil {
						b.ReportMetric(100*bound.Seconds()/m.Median, "%roofline")
					}
				})
			}
		}
	}
}

// BenchmarkRoofline runs the probes uncached and reports them per thread
// count.
//
//	go test -run '^$' -bench Roofline -benchtime 1x ./target/cpu/
func BenchmarkRoofline(b *testing.B) {
	tg := newBenchTarget(b)
	for n := 1; n <= tg.CPU().Cores; n++ {
		b.Run(fmt.Sprintf("threads=%d", n), func(b *testing.B) {
			var r *Roofline
			for b.Loop() {
				var err error
				if r, err = tg.MeasureRoofline(context.Background(), RooflineOptions{Threads: []int{n}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(r.Points[0].PeakGFLOPs, "GFLOP/s")
			b.ReportMetric(r.Points[0].ReadGBs, "GB/s")
		})
	}
}
