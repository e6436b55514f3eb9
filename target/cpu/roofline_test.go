package cpu

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func TestProbeSource(t *testing.T) {
	for _, c := range []struct{ bits, chains int }{{512, 16}, {256, 12}, {128, 12}} {
		src := probeSource(c.bits, c.chains)
		if got := strings.Count(src, " * x + y;"); got != c.chains {
			t.Errorf("%d bits: %d FMA chains in the source, want %d", c.bits, got, c.chains)
		}
		if fmaChains(c.bits) != c.chains {
			t.Errorf("fmaChains(%d) = %d, want %d", c.bits, fmaChains(c.bits), c.chains)
		}
	}
	for _, c := range []struct{ llc, want int64 }{
		{1 << 20, 256 << 20}, {40 << 20, 320 << 20}, {508 << 20, 512 << 20},
	} {
		if got := probeReadBytes(c.llc); got != c.want {
			t.Errorf("probeReadBytes(%d) = %d, want %d", c.llc, got, c.want)
		}
	}
}

// TestRooflineCached runs shrunken probes (well under a second; the real
// ones are BenchmarkRoofline) and checks that the cache answers the next
// call.
func TestRooflineCached(t *testing.T) {
	tg := newTestTarget(t)
	tg.Probe = RooflineOptions{ReadBytes: 32 << 20, FMAIters: 1_000_000}
	ctx := context.Background()
	r, err := tg.Roofline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Points) != tg.CPU().Cores {
		t.Fatalf("%d points for %d cores", len(r.Points), tg.CPU().Cores)
	}
	p, ok := r.At(1)
	// Loose sanity bounds: any machine that runs the tests is above them,
	// and a probe that the compiler optimised away would be far beyond.
	if !ok || p.PeakGFLOPs < 1 || p.PeakGFLOPs > 10000 || p.ReadGBs < 0.5 || p.ReadGBs > 2000 {
		t.Errorf("implausible probe %+v", p)
	}
	start := time.Now()
	again, err := tg.Roofline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 100*time.Millisecond || again.Points[0] != r.Points[0] {
		t.Errorf("second call not served from the cache (%v): %+v vs %+v", time.Since(start), again.Points[0], r.Points[0])
	}
	// A cache of older probes is measured again.
	old := *r
	old.ProbeVersion = RooflineProbeVersion - 1
	data, _ := json.Marshal(old)
	if err := os.WriteFile(tg.RooflinePath(), data, 0o644); err != nil {
		t.Fatal(err)
	}
	fresh, err := tg.Roofline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.ProbeVersion != RooflineProbeVersion || !fresh.Measured.After(r.Measured) {
		t.Errorf("a version %d cache was served: version %d measured %v (cache %v)", old.ProbeVersion, fresh.ProbeVersion, fresh.Measured, r.Measured)
	}
	// A cache measured on a busy machine is measured again once the load
	// is lower, keeping the higher of the two at each point; one measured
	// quietly is served as it is, however low.
	for _, c := range []struct {
		load    float64
		measure bool
	}{{1000, true}, {0, false}} {
		low := *fresh
		low.LoadAvg = c.load
		low.Points = append([]RooflinePoint(nil), fresh.Points...)
		low.Points[0].PeakGFLOPs, low.Points[0].ReadGBs = 0.25, 1e6
		data, _ := json.Marshal(low)
		if err := os.WriteFile(tg.RooflinePath(), data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := tg.Roofline(ctx)
		if err != nil {
			t.Fatal(err)
		}
		g := got.Points[0]
		if remeasured := got.Measured.After(fresh.Measured); remeasured != c.measure ||
			(c.measure && (g.PeakGFLOPs < 1 || g.ReadGBs != 1e6)) || (!c.measure && g.PeakGFLOPs != 0.25) {
			t.Errorf("cache at load %g: measured again %v (want %v), point %+v", c.load, remeasured, c.measure, g)
		}
	}
	b, err := r.Bound(1, p.PeakGFLOPs*1e9, 0)
	if err != nil || b < 990*time.Millisecond || b > 1010*time.Millisecond {
		t.Errorf("bound of one second of FLOPs = %v, %v", b, err)
	}
	if _, err := r.Bound(99, 1, 1); err == nil {
		t.Error("bound at an unprobed thread count succeeded")
	}
}
