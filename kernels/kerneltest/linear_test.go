package kerneltest_test

import (
	"context"
	"llmir/target/cpu/cputest"
	"testing"

	"llmir/kernels"
	"llmir/kernels/kerneltest"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
)

func newTarget(t *testing.T) *cpu.Target {
	t.Helper()
	cputest.Need(t, "gcc")
	tg, err := cpu.New(context.Background(), cpu.Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// TestLinear runs the linear layer through the suite at every conformance
// shape, single-threaded and with two threads (parallel loops change the
// generated code), with the default schedule and random draws.
func TestLinear(t *testing.T) {
	tg := newTarget(t)
	for i, l := range kerneltest.LinearShapes() {
		// Alternate the thread count so both code paths are covered
		// without doubling the builds.
		threads := 1 + i%2
		t.Run(l.Name(), func(t *testing.T) {
			cases := kerneltest.Run(t, tg, search.CPUHardware(tg.CPU(), threads), l, kerneltest.Options{Draws: 3, Seed: uint64(i + 1)})
			if len(cases) != 4 {
				t.Fatalf("%d cases, want default + 3 draws", len(cases))
			}
			for _, c := range cases {
				if len(c.Trace.Insts) == 0 {
					t.Errorf("%s: empty trace", c.Name)
				}
			}
		})
	}
}

// TestCheckReportsBrokenSchedules shows that the suite can fail: against a
// reference that is off by one everywhere, every (correct) schedule must
// come back wrong_result rather than ok.
func TestCheckReportsBrokenSchedules(t *testing.T) {
	tg := newTarget(t)
	l := kernels.Linear{M: 3, N: 33, K: 13}
	hw := search.CPUHardware(tg.CPU(), 1)
	cases, err := kerneltest.Check(context.Background(), tg, hw, offByOne{l}, kerneltest.Options{Draws: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if c.Measurement.Status != target.StatusWrongResult {
			t.Errorf("%s against a wrong reference: %s, want wrong_result", c.Name, c.Measurement.Status)
		}
	}
}

// offByOne is the linear layer with a reference that adds 1 to every
// output: any correct kernel disagrees with it.
type offByOne struct{ kernels.Linear }

func (o offByOne) Reference(in [][]float64) [][]float64 {
	out := o.Linear.Reference(in)
	for i := range out[0] {
		out[0][i]++
	}
	return out
}
