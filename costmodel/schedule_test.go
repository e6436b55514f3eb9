package costmodel_test

import (
	"context"
	"math"
	"slices"
	"testing"

	"llmir/costmodel"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
)

func feat(t *testing.T, v []float64, name string) float64 {
	t.Helper()
	i := slices.Index(costmodel.FeatureNames(), name)
	if i < 0 {
		t.Fatalf("no feature %s", name)
	}
	return v[i]
}

// TestScheduleFeaturesTemplate: a template kernel's candidates share the
// work and roofline features and differ by their knob features, which
// hold the chosen values in trace order.
func TestScheduleFeaturesTemplate(t *testing.T) {
	n := schedule.Dynamic("n", 64)
	x := schedule.Input("x", schedule.F32, n)
	out := schedule.Declare("out", schedule.F32, n)
	def, err := schedule.NewTemplateDef("scale", "out[i] = 2·x[i]", []*schedule.Tensor{x}, out)
	if err != nil {
		t.Fatal(err)
	}
	ks := kernels.Knobs{{Name: "vec", Values: []int64{1, 4, 8, 16}}, {Name: "unroll", Values: []int64{1, 2}}}
	work := costmodel.Work{FLOPs: 64, Bytes: 512}
	var ss []*schedule.Schedule
	for _, vals := range []map[string]int64{{"vec": 1, "unroll": 1}, {"vec": 16, "unroll": 2}} {
		s, err := schedule.New(def, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := ks.Choose(s, vals); err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
	}
	fs, err := costmodel.ScheduleFeaturesBatch(context.Background(), ss, work, costmodel.Device{}, []int64{64})
	if err != nil {
		t.Fatal(err)
	}
	a, b := fs[0], fs[1]
	if len(a) != costmodel.NumFeatures {
		t.Fatalf("%d features, want %d", len(a), costmodel.NumFeatures)
	}
	for _, c := range []struct {
		name string
		a, b float64
	}{
		{"template", 1, 1},
		{"knobs", 2, 2},
		{"log_kernel_flops", math.Log2(65), math.Log2(65)},
		{"log_kernel_ai", math.Log2(1 + 64.0/512), math.Log2(1 + 64.0/512)},
		{"knob0.log_value", 1, math.Log2(17)},
		{"knob0.frac", 0, 1},
		{"knob1.log_value", 1, math.Log2(3)},
		{"knob2.log_value", 0, 0},
	} {
		if got, gotB := feat(t, a, c.name), feat(t, b, c.name); math.Abs(got-c.a) > 1e-12 || math.Abs(gotB-c.b) > 1e-12 {
			t.Errorf("%s = %v, %v; want %v, %v", c.name, got, gotB, c.a, c.b)
		}
	}
	if feat(t, a, "log_roofline_seconds") != feat(t, b, "log_roofline_seconds") {
		t.Error("template candidates have different roofline times")
	}
	if sc := (&costmodel.Roofline{}).Predict(fs); sc[0] != sc[1] {
		t.Errorf("roofline scores %v: want a tie", sc)
	}
}

// TestScheduleFeaturesNest: for a loop-nest kernel ScheduleFeatures is
// Features plus the work and the trace's knob values.
func TestScheduleFeaturesNest(t *testing.T) {
	l := kernels.Linear{M: 40, N: 96, K: 64}
	hw := kernels.Hardware{VectorBits: 512, Threads: 1, L1: 48 << 10, L2: 1 << 20, LLC: 32 << 20}
	s, err := search.SampleSchedule(l, hw, 3)
	if err != nil {
		t.Fatal(err)
	}
	dev := costmodel.Device{VectorBits: 512, Threads: 1}
	nest, err := costmodel.Features(s.Nest(), dev, l.Dims())
	if err != nil {
		t.Fatal(err)
	}
	full, err := costmodel.ScheduleFeatures(s, search.WorkOf(l), dev, l.Dims())
	if err != nil {
		t.Fatal(err)
	}
	names := costmodel.FeatureNames()
	knobs := 0
	for i, name := range names {
		switch {
		case name == "knobs":
			knobs = int(full[i])
		case name == "log_kernel_flops":
			if want := math.Log2(1 + l.FLOPs()); math.Abs(full[i]-want) > 1e-9 {
				t.Errorf("log_kernel_flops %v, want %v", full[i], want)
			}
		case len(name) > 4 && name[:4] == "knob":
		case name == "template" || name == "log_kernel_bytes" || name == "log_kernel_ai":
		case name == "kind":
			if want := costmodel.KindCode(s.Def.Name); full[i] != want || want <= 0 || want >= 1 || nest[i] != 0 {
				t.Errorf("kind %v (Features: %v), want KindCode(%q) = %v in (0, 1)", full[i], nest[i], s.Def.Name, want)
			}
		default:
			if full[i] != nest[i] {
				t.Errorf("%s: %v, Features says %v", name, full[i], nest[i])
			}
		}
	}
	if knobs != 3 || feat(t, full, "knob0.log_value") == 0 || feat(t, nest, "knob0.log_value") != 0 {
		t.Errorf("knobs %d, knob0 %v (Features: %v)", knobs, feat(t, full, "knob0.log_value"), feat(t, nest, "knob0.log_value"))
	}
}
