package kernels

import (
	"strings"
	"testing"

	"llmir/schedule"
)

func templateDef(t *testing.T) *schedule.Def {
	t.Helper()
	n := schedule.Dynamic("n", 64)
	x := schedule.Input("x", schedule.F32, n)
	idx := schedule.Input("idx", schedule.I32, n)
	out := schedule.Declare("out", schedule.F32, n)
	def, err := schedule.NewTemplateDef("gather", "out[i] = x[idx[i]]", []*schedule.Tensor{x, idx}, out)
	if err != nil {
		t.Fatal(err)
	}
	return def
}

func TestKnobsSampleChooseRead(t *testing.T) {
	def := templateDef(t)
	ks := Knobs{{"vec", []int64{1, 4, 8, 16}}, {"unroll", []int64{1, 2}}}
	for seed := uint64(1); seed < 20; seed++ {
		s, err := schedule.New(def, seed)
		if err != nil {
			t.Fatal(err)
		}
		if err := ks.Sample(s); err != nil {
			t.Fatal(err)
		}
		got, err := ks.Read(s)
		if err != nil {
			t.Fatal(err)
		}
		// The trace replays to the same knob values.
		r, err := schedule.Replay(def, s.Trace())
		if err != nil {
			t.Fatal(err)
		}
		again, err := ks.Read(r)
		if err != nil || again["vec"] != got["vec"] || again["unroll"] != got["unroll"] {
			t.Fatalf("seed %d: replay read %v (%v), sampled %v", seed, again, err, got)
		}
	}
	s, _ := schedule.New(def, 3)
	if err := ks.Choose(s, map[string]int64{"vec": 8}); err != nil {
		t.Fatal(err)
	}
	got, err := ks.Read(s)
	if err != nil || got["vec"] != 8 || got["unroll"] != 1 {
		t.Fatalf("chosen %v, %v", got, err)
	}
	// A mutated decision replays to a neighbour.
	tr, err := s.Trace().WithDecision(0, []int64{1})
	if err != nil {
		t.Fatal(err)
	}
	r, err := schedule.Replay(def, tr)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := ks.Read(r); got["vec"] != 4 {
		t.Errorf("mutated vec = %d, want 4", got["vec"])
	}
	if err := ks.Choose(s, map[string]int64{"vec": 3}); err == nil || !strings.Contains(err.Error(), "not in its domain") {
		t.Errorf("value outside the domain: %v", err)
	}
	// A trace of another design space is refused.
	other := Knobs{{"vec", []int64{1, 4, 8, 16}}}
	if _, err := other.Read(s); err == nil {
		t.Error("read a trace with more steps than knobs")
	}
	if _, err := (Knobs{{"vec", []int64{2, 4, 8, 16}}, {"unroll", []int64{1, 2}}}).Read(r); err == nil {
		t.Error("read a trace whose candidates differ")
	}
}

func TestTemplateDefRejectsComputedAndDuplicates(t *testing.T) {
	n := schedule.Static(8)
	x := schedule.Input("x", schedule.F32, n)
	if _, err := schedule.NewTemplateDef("t", "", []*schedule.Tensor{x}); err == nil {
		t.Error("template without outputs accepted")
	}
	if _, err := schedule.NewTemplateDef("t", "", []*schedule.Tensor{x}, schedule.Declare("x", schedule.F32, n)); err == nil {
		t.Error("duplicate names accepted")
	}
	i := schedule.NewAxis("i", n)
	y := schedule.Compute("y", schedule.F32, []schedule.Axis{i}, x.At(i))
	if _, err := schedule.NewTemplateDef("t", "", []*schedule.Tensor{x}, y); err == nil {
		t.Error("computed output accepted")
	}
}
