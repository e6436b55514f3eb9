package kerneltest_test

import (
	"testing"

	"llmir/kernels"
	"llmir/kernels/kerneltest"
	"llmir/search"
	"llmir/target"
)

// TestLinear runs the linear layer through the suite at every conformance
// shape, single-threaded and with two threads (parallel loops change the
// generated code), with the default schedule and random draws.
func TestLinear(t *testing.T) {
	tg := kerneltest.CPU(t)
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
	tg := kerneltest.CPU(t)
	l := kernels.Linear{M: 3, N: 33, K: 13}
	hw := search.CPUHardware(tg.CPU(), 1)
	kerneltest.Expect(t, tg, hw, offByOne{l}, target.StatusWrongResult)
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
