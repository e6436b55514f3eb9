package schedule_test

import (
	"errors"
	"strings"
	"testing"

	"llmir/schedule"
)

// TestPrefetchLegality: the prefetch annotation rejects what no backend
// could honour and leaves the schedule unchanged.
func TestPrefetchLegality(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(s *schedule.Schedule) error
		bad   func(s *schedule.Schedule) error
		want  string
	}{
		{"unknown loop", nil, func(s *schedule.Schedule) error { return s.Prefetch("z", "w", schedule.Lit(4)) }, `no loop "z"`},
		{"unknown buffer", nil, func(s *schedule.Schedule) error { return s.Prefetch("k", "zz", schedule.Lit(4)) }, `no buffer "zz"`},
		{"written buffer", nil, func(s *schedule.Schedule) error { return s.Prefetch("k", "out", schedule.Lit(4)) }, "written under loop k"},
		{"negative distance", nil, func(s *schedule.Schedule) error { return s.Prefetch("k", "w", schedule.Lit(-1)) }, "outside 0..4096"},
		{"far distance", nil, func(s *schedule.Schedule) error { return s.Prefetch("k", "w", schedule.Lit(5000)) }, "outside 0..4096"},
		{"vectorized loop", func(s *schedule.Schedule) error {
			if err := s.Reorder("k", "j"); err != nil {
				return err
			}
			return s.Vectorize("j")
		}, func(s *schedule.Schedule) error { return s.Prefetch("j", "w", schedule.Lit(4)) }, "is vectorized"},
		{"not read there", func(s *schedule.Schedule) error {
			_, err := s.CacheRead("out", "w", schedule.Local, nil)
			return err
		}, func(s *schedule.Schedule) error { return s.Prefetch("k", "w_local", schedule.Lit(2)) }, "only global buffers"},
		{"twice", func(s *schedule.Schedule) error { return s.Prefetch("k", "w", schedule.Lit(4)) },
			func(s *schedule.Schedule) error { return s.Prefetch("k", "w", schedule.Lit(8)) }, "already prefetches w"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := must1[*schedule.Schedule](t)(schedule.New(linearDef(t, 10, 24, 12, false), 1))
			if c.setup != nil {
				must(t, c.setup(s))
			}
			before := s.Nest().String()
			ninst := len(s.Trace().Insts)
			err := c.bad(s)
			if err == nil || !errors.Is(err, schedule.ErrIllegal) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrIllegal containing %q", err, c.want)
			}
			if s.Nest().String() != before || len(s.Trace().Insts) != ninst {
				t.Fatal("a failed primitive changed the schedule")
			}
		})
	}
}

// TestPrefetchTrace: the annotation prints on its loop, survives a copy of
// the nest, replays from JSON, and a sampled distance of 0 records the step
// without annotating, so mutating it to another distance replays to a
// neighbour that prefetches (and back).
func TestPrefetchTrace(t *testing.T) {
	def := linearDef(t, 10, 24, 12, false)
	s := must1[*schedule.Schedule](t)(schedule.New(def, 1))
	must(t, s.Prefetch("k", "w", schedule.Lit(8)))
	n := s.Nest()
	if got := n.String(); !strings.Contains(got, "for k in 0..12 prefetch(w, +8):") {
		t.Fatalf("annotation not printed:\n%s", got)
	}
	n.Body[0].(*schedule.Loop).Body[0].(*schedule.Loop).Body[0].(*schedule.Loop).Prefetch[0].Dist = 99
	if strings.Contains(s.Nest().String(), "+99") {
		t.Fatal("editing a copy of the nest changed the schedule")
	}
	js := must1[[]byte](t)(s.Trace().JSON())
	tr := must1[*schedule.Trace](t)(schedule.ParseTrace(js))
	r := must1[*schedule.Schedule](t)(schedule.Replay(def, tr))
	if r.Nest().String() != s.Nest().String() {
		t.Fatalf("replay differs:\n%s\nvs\n%s", r.Nest(), s.Nest())
	}

	s = must1[*schedule.Schedule](t)(schedule.New(def, 1))
	d := must1[schedule.Ref](t)(s.SampleCategorical([]int64{0, 16}, []float64{1, 0}))
	must(t, s.Prefetch("k", "w", d))
	if strings.Contains(s.Nest().String(), "prefetch") {
		t.Fatalf("distance 0 annotated the loop:\n%s", s.Nest())
	}
	on := must1[*schedule.Trace](t)(s.Trace().WithDecision(0, []int64{1}))
	r = must1[*schedule.Schedule](t)(schedule.Replay(def, on))
	if !strings.Contains(r.Nest().String(), "prefetch(w, +16)") {
		t.Fatalf("mutated distance not applied:\n%s", r.Nest())
	}
	off := must1[*schedule.Trace](t)(r.Trace().WithDecision(0, []int64{0}))
	r = must1[*schedule.Schedule](t)(schedule.Replay(def, off))
	if strings.Contains(r.Nest().String(), "prefetch") {
		t.Fatalf("mutated back to 0 still prefetches:\n%s", r.Nest())
	}
}
