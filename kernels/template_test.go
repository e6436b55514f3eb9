package kernels

import (
	"errors"
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

// TestKnobsWhere: sampling, choosing and enumerating under a validity
// predicate never yield a refused point, stay deterministic under the
// seed, and leave the traces of spaces without refusals as Sample writes
// them.
func TestKnobsWhere(t *testing.T) {
	def := templateDef(t)
	ks := Knobs{{"vec", []int64{1, 4, 8, 16}}, {"unroll", []int64{1, 2}}, {"split", []int64{1, 2, 4}}}
	valid := func(p map[string]int64) error {
		if p["vec"]*p["unroll"] > 16 {
			return errors.New("more than 16 lanes")
		}
		if 6%p["split"] != 0 {
			return errors.New("split does not divide 6")
		}
		return nil
	}
	pts, err := ks.Points(valid)
	if err != nil {
		t.Fatal(err)
	}
	all, err := ks.Points(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 24 || len(pts) != 14 {
		t.Fatalf("%d points, %d valid; want 24 and 14", len(all), len(pts))
	}
	if pts[0]["vec"] != 1 || pts[0]["unroll"] != 1 || pts[0]["split"] != 1 || pts[1]["split"] != 2 {
		t.Errorf("points not in domain order: %v, %v", pts[0], pts[1])
	}
	seen := map[string]bool{}
	for seed := uint64(1); seed <= 200; seed++ {
		var keys [2]string
		for i := range keys {
			s, err := schedule.New(def, seed)
			if err != nil {
				t.Fatal(err)
			}
			if err := ks.SampleWhere(s, valid); err != nil {
				t.Fatal(err)
			}
			p, err := ks.Read(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := valid(p); err != nil {
				t.Fatalf("seed %d: sampled %v: %v", seed, p, err)
			}
			if err := ks.Check(s, valid); err != nil {
				t.Fatalf("seed %d: Check: %v", seed, err)
			}
			r, err := schedule.Replay(def, s.Trace())
			if err != nil {
				t.Fatalf("seed %d: replay: %v", seed, err)
			}
			if q, _ := ks.Read(r); formatPoint(ks, q) != formatPoint(ks, p) {
				t.Fatalf("seed %d: replayed %v, sampled %v", seed, q, p)
			}
			keys[i] = formatPoint(ks, p)
		}
		if keys[0] != keys[1] {
			t.Fatalf("seed %d: two draws %s and %s", seed, keys[0], keys[1])
		}
		seen[keys[0]] = true
	}
	if len(seen) != len(pts) {
		t.Errorf("200 seeds reached %d of %d valid points", len(seen), len(pts))
	}
	// Without a predicate the trace is Sample's, bit for bit.
	a, _ := schedule.New(def, 7)
	b, _ := schedule.New(def, 7)
	if err := ks.Sample(a); err != nil {
		t.Fatal(err)
	}
	if err := ks.SampleWhere(b, func(map[string]int64) error { return nil }); err != nil {
		t.Fatal(err)
	}
	ja, _ := a.Trace().JSON()
	jb, _ := b.Trace().JSON()
	if string(ja) != string(jb) {
		t.Errorf("an all-valid predicate changed the trace:\n%s\n%s", ja, jb)
	}
	// A refused default, a mutated refused point, an empty space.
	s, _ := schedule.New(def, 1)
	if err := ks.ChooseWhere(s, map[string]int64{"vec": 16, "unroll": 2}, valid); !errors.Is(err, ErrInvalidKnobs) || !strings.Contains(err.Error(), "vec=16 unroll=2 split=1") {
		t.Errorf("refused default: %v", err)
	}
	s, _ = schedule.New(def, 1)
	if err := ks.ChooseWhere(s, map[string]int64{"vec": 8, "unroll": 2, "split": 2}, valid); err != nil {
		t.Fatal(err)
	}
	tr, err := s.Trace().WithDecision(2, []int64{2}) // split 4
	if err != nil {
		t.Fatal(err)
	}
	m, err := schedule.Replay(def, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Check(m, valid); !errors.Is(err, ErrInvalidKnobs) {
		t.Errorf("mutated to split=4: %v", err)
	}
	s, _ = schedule.New(def, 1)
	if err := ks.SampleWhere(s, func(map[string]int64) error { return errors.New("no") }); !errors.Is(err, ErrNoValidPoint) {
		t.Errorf("empty space: %v", err)
	}
}
