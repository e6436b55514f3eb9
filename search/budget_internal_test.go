package search

import (
	"math"
	"testing"

	"llmir/target"
)

// TestRetainProblems: problems beyond the cap are dropped largest first,
// never the current task's, and nothing is dropped under the cap.
func TestRetainProblems(t *testing.T) {
	prob := func(elems int64) *target.Problem {
		return &target.Problem{Buffers: []target.BufferSpec{{Name: "x", DType: target.F32, Elems: elems}}}
	}
	cases := []struct {
		name  string
		elems []int64 // 0: no problem held
		cur   int
		max   int64
		kept  []bool
	}{
		{"under-cap", []int64{10, 20, 30}, 0, 8 * 60, []bool{true, true, true}},
		{"largest-other-first", []int64{10, 40, 30}, 0, 8 * 45, []bool{true, false, true}},
		{"current-kept-over-cap", []int64{100, 40, 30}, 0, 8 * 50, []bool{true, false, false}},
		{"holes", []int64{0, 40, 30}, 2, 8 * 35, []bool{false, false, true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runs := make([]*taskRun, len(c.elems))
			for i, e := range c.elems {
				runs[i] = &taskRun{}
				if e > 0 {
					runs[i].problem = prob(e)
				}
			}
			retainProblems(runs, c.cur, c.max)
			for i, r := range runs {
				if (r.problem != nil) != c.kept[i] {
					t.Errorf("task %d: kept %v, want %v", i, r.problem != nil, c.kept[i])
				}
			}
		})
	}
}

// TestFmtSpeedup: a step that measured nothing (an interrupted tune) or
// whose default failed prints "×—", not "×NaN".
func TestFmtSpeedup(t *testing.T) {
	for _, c := range []struct {
		x    float64
		want string
	}{{1.234, "×1.23"}, {math.NaN(), "×—"}, {math.Inf(1), "×—"}} {
		if got := fmtSpeedup(c.x); got != c.want {
			t.Errorf("fmtSpeedup(%g) = %q, want %q", c.x, got, c.want)
		}
	}
	if got := fmtSpeedup(speedupOf(&Result{})); got != "×—" {
		t.Errorf("no trials: %q", got)
	}
}
