package bench

import (
	"slices"
	"testing"

	"llmir/search"
	"llmir/target"
)

// TestClosingSameTrace: when the tune's best is the default's trace the
// closing batch measures it once and reports that measurement as both;
// otherwise each candidate stands for itself.
func TestClosingSameTrace(t *testing.T) {
	ms := map[string]target.Measurement{
		"default": okSamples(1, 2), "default/2": okSamples(3), "tuned": okSamples(5), "tuned/2": okSamples(6, 7),
	}
	for _, same := range []bool{true, false} {
		tk := &tunedKernel{tune: &search.Result{Best: &search.Trial{}}, def: target.Candidate{ID: "default"},
			tuned: target.Candidate{ID: "tuned"}, same: same}
		var ids []string
		for _, c := range tk.candidates() {
			ids = append(ids, c.ID)
		}
		s := tk.closing(ms)
		wantIDs, wantTuned := []string{"default", "tuned"}, []float64{5, 6, 7}
		if same {
			wantIDs, wantTuned = []string{"default"}, []float64{1, 2, 3}
		}
		if !slices.Equal(ids, wantIDs) || !slices.Equal(s.Default.Samples, []float64{1, 2, 3}) || !slices.Equal(s.Tuned.Samples, wantTuned) {
			t.Errorf("same %v: candidates %v, default %v, tuned %v", same, ids, s.Default.Samples, s.Tuned.Samples)
		}
	}
}

// TestPoolRuns: repeated closing runs pool each candidate's samples and a
// failure in any run stands for the candidate (its status says why).
func TestPoolRuns(t *testing.T) {
	crash := target.Measurement{Status: target.StatusRuntimeError, Error: "signal 11"}
	var acc map[string]target.Measurement
	acc = poolRuns(acc, map[string]target.Measurement{"a": okSamples(1, 2), "b": okSamples(5), "c": crash})
	acc = poolRuns(acc, map[string]target.Measurement{"a": okSamples(3), "b": crash, "c": okSamples(7)})
	if got := acc["a"]; !got.OK() || !slices.Equal(got.Samples, []float64{1, 2, 3}) || got.Median != 2 {
		t.Errorf("a: %+v", got)
	}
	for _, id := range []string{"b", "c"} {
		if got := acc[id]; got.Status != target.StatusRuntimeError || got.Error != "signal 11" {
			t.Errorf("%s: %s %q, want the crash", id, got.Status, got.Error)
		}
	}
	if got := merged(map[string]target.Measurement{"x": okSamples(4), "x/2": okSamples(6, 8)}, "x"); !slices.Equal(got.Samples, []float64{4, 6, 8}) {
		t.Errorf("merged passes: %v", got.Samples)
	}
}

// okSamples is an ok measurement of these samples.
func okSamples(xs ...float64) target.Measurement {
	var r target.Measurement
	r.Status = target.StatusOK
	r.SetSamples(xs)
	return r
}
