package schedule_test

import (
	"errors"
	"strings"
	"testing"

	"llmir/schedule"
)

// TestLegality: every primitive rejects illegal uses with ErrIllegal and a
// message naming the problem, and leaves the schedule unchanged.
func TestLegality(t *testing.T) {
	type step func(s *schedule.Schedule) error
	ok := func(err error) error { return err }
	cases := []struct {
		name     string
		epilogue bool
		setup    step
		bad      step
		want     string
	}{
		{"split unknown loop", false, nil, func(s *schedule.Schedule) error { _, err := s.Split("x", -1, 2); return err }, `no loop "x"`},
		{"split one factor", false, nil, func(s *schedule.Schedule) error { _, err := s.Split("i", 4); return err }, "at least 2 factors"},
		{"split zero factor", false, nil, func(s *schedule.Schedule) error { _, err := s.Split("i", -1, 0); return err }, "must be ≥ 1"},
		{"split too small", false, nil, func(s *schedule.Schedule) error { _, err := s.Split("i", 2, 2); return err }, "cover 4 < extent 10"},
		{"tile count", false, nil, func(s *schedule.Schedule) error { _, err := s.Tile([]string{"i", "j"}, []int64{2}); return err }, "2 loops but 1 factors"},
		{"reorder twice", false, nil, func(s *schedule.Schedule) error { return s.Reorder("i", "i") }, "given twice"},
		{"reorder other nest", true, nil, func(s *schedule.Schedule) error { return s.Reorder("i", "j_1") }, "not on the same nest path"},
		{"reorder imperfect", true, func(s *schedule.Schedule) error {
			return s.ReverseComputeAt("biased", "j")
		}, func(s *schedule.Schedule) error { return s.Reorder("k", "i") }, "perfectly nested"},
		{"reorder tail above outer", false, func(s *schedule.Schedule) error { _, err := s.Split("i", -1, 3); return err },
			func(s *schedule.Schedule) error { return s.Reorder("i_1", "i_0") }, "depends on loop i_0"},
		{"fuse not adjacent", false, nil, func(s *schedule.Schedule) error { _, err := s.Fuse("i", "k"); return err }, "not directly nested"},
		{"fuse spatial and reduction", false, nil, func(s *schedule.Schedule) error { _, err := s.Fuse("j", "k"); return err }, "mix spatial and reduction"},
		{"fuse one", false, nil, func(s *schedule.Schedule) error { _, err := s.Fuse("i"); return err }, "at least 2 loops"},
		{"vectorize outer", false, nil, func(s *schedule.Schedule) error { return s.Vectorize("i") }, "not innermost"},
		{"vectorize reduction", false, nil, func(s *schedule.Schedule) error { return s.Vectorize("k") }, "reduction axis"},
		{"unroll parallel", false, func(s *schedule.Schedule) error { return s.Parallel("i") },
			func(s *schedule.Schedule) error { return s.Unroll("i") }, "already parallel"},
		{"vectorize parallel", false, func(s *schedule.Schedule) error {
			if err := s.Reorder("i", "k", "j"); err != nil {
				return err
			}
			return s.Parallel("j")
		}, func(s *schedule.Schedule) error { return s.Vectorize("j") }, "already parallel"},
		{"unroll unknown", false, nil, func(s *schedule.Schedule) error { return s.Unroll("z") }, `no loop "z"`},
		{"parallel reduction", false, func(s *schedule.Schedule) error { return s.Reorder("k", "i") },
			func(s *schedule.Schedule) error { return s.Parallel("k") }, "reduction axis"},
		{"parallel nested", false, func(s *schedule.Schedule) error { return s.Parallel("i") },
			func(s *schedule.Schedule) error { return s.Parallel("j") }, "inside parallel loop i"},
		{"parallel twice", false, func(s *schedule.Schedule) error { return s.Parallel("i") },
			func(s *schedule.Schedule) error { return s.Parallel("i") }, "already parallel"},
		{"write-back into parallel loop races", false, func(s *schedule.Schedule) error {
			if _, err := s.Split("k", 4, -1); err != nil {
				return err
			}
			if err := s.Reorder("k_0", "i", "j", "k_1"); err != nil {
				return err
			}
			if _, err := s.RFactor("out", "k_0", 0); err != nil {
				return err
			}
			return s.Parallel("k_0")
		}, func(s *schedule.Schedule) error { return s.ReverseComputeAt("out", "k_0") }, "would race"},
		{"bind unknown axis", false, nil, func(s *schedule.Schedule) error { return s.Bind("i", "warp.x") }, "unknown GPU axis"},
		{"bind same axis twice", false, func(s *schedule.Schedule) error { return s.Bind("i", "blockIdx.x") },
			func(s *schedule.Schedule) error { return s.Bind("j", "blockIdx.x") }, "already bound"},
		{"cache_read not read", false, nil, func(s *schedule.Schedule) error { _, err := s.CacheRead("out", "out", schedule.Local, nil); return err }, "does not read"},
		{"cache_read unknown buffer", false, nil, func(s *schedule.Schedule) error { _, err := s.CacheRead("out", "zz", schedule.Local, nil); return err }, `no buffer "zz"`},
		{"cache_write unknown block", false, nil, func(s *schedule.Schedule) error { _, err := s.CacheWrite("zz", schedule.Local); return err }, `no block "zz"`},
		{"cache_read bad scope", false, nil, func(s *schedule.Schedule) error { _, err := s.CacheRead("out", "w", "l2", nil); return err }, "unknown scope"},
		{"cache_read bad layout", false, nil, func(s *schedule.Schedule) error {
			_, err := s.CacheRead("out", "w", schedule.Local, &schedule.Layout{Tile: []int64{4, 0}, Order: []int{0, 1}})
			return err
		}, "layout order"},
		{"cache_write shrunk buffer", true, func(s *schedule.Schedule) error {
			return s.ReverseComputeAt("biased", "j")
		}, func(s *schedule.Schedule) error { _, err := s.CacheWrite("acc", schedule.Local); return err }, "allocated inside loop j"},
		{"cache_write reader in nest", true, func(s *schedule.Schedule) error {
			if err := s.ComputeInline("biased"); err != nil {
				return err
			}
			return s.ReverseComputeAt("y", "i")
		}, func(s *schedule.Schedule) error { _, err := s.CacheWrite("acc", schedule.Local); return err }, "allocated inside loop i"},
		{"compute_at reduction", true, nil, func(s *schedule.Schedule) error { return s.ComputeAt("acc", "i_1") }, "is a reduction"},
		{"compute_at reader outside", false, func(s *schedule.Schedule) error {
			_, err := s.CacheRead("out", "w", schedule.Local, nil)
			return err
		}, func(s *schedule.Schedule) error { return s.ComputeAt("w_local", "w_local_ax0") }, "outside loop"},
		{"reverse_compute_at unfinished reduction", true, func(s *schedule.Schedule) error { return s.Reorder("k", "i") },
			func(s *schedule.Schedule) error { return s.ReverseComputeAt("biased", "i") }, "not finished inside i"},
		{"reverse_compute_at nothing written", true, nil, func(s *schedule.Schedule) error { return s.ReverseComputeAt("y", "i") }, "reads nothing written"},
		{"compute_at non-affine", false, func(s *schedule.Schedule) error {
			if _, err := s.Split("k", -1, 4); err != nil {
				return err
			}
			if err := s.Reorder("k_0", "i", "j"); err != nil {
				return err
			}
			if _, err := s.Fuse("i", "j"); err != nil {
				return err
			}
			_, err := s.CacheRead("out", "w", schedule.Local, nil)
			return err
		}, func(s *schedule.Schedule) error { return s.ComputeAt("w_local", "k_0") }, "not affine"},
		{"compute_at outside alloc", false, func(s *schedule.Schedule) error {
			c, err := s.CacheRead("out", "w", schedule.Local, nil)
			if err != nil {
				return err
			}
			return s.ComputeAt(c, "j")
		}, func(s *schedule.Schedule) error { return s.ComputeAt("w_local", "i") }, "allocated inside loop j"},
		{"compute_inline output", false, nil, func(s *schedule.Schedule) error { return s.ComputeInline("out") }, "must stay in memory"},
		{"compute_inline reduction", true, nil, func(s *schedule.Schedule) error { return s.ComputeInline("acc") }, "reduction"},
		{"decompose not reduction", true, nil, func(s *schedule.Schedule) error { _, err := s.DecomposeReduction("y", "i_2"); return err }, "not a reduction"},
		{"decompose loop outside reduction", false, func(s *schedule.Schedule) error { return s.Reorder("k", "i") },
			func(s *schedule.Schedule) error { _, err := s.DecomposeReduction("out", "i"); return err }, "outside i"},
		{"decompose twice", false, func(s *schedule.Schedule) error { _, err := s.DecomposeReduction("out", "i"); return err },
			func(s *schedule.Schedule) error { _, err := s.DecomposeReduction("out", "i"); return err }, "not a reduction with an init"},
		{"decompose loop not enclosing", true, nil, func(s *schedule.Schedule) error { _, err := s.DecomposeReduction("acc", "i_1"); return err }, "does not enclose"},
		{"rfactor spatial", false, nil, func(s *schedule.Schedule) error { _, err := s.RFactor("out", "i", 0); return err }, "feeds spatial axis"},
		{"rfactor not reduction", true, nil, func(s *schedule.Schedule) error { _, err := s.RFactor("y", "i", 0); return err }, "not a reduction"},
		{"rfactor loop outside block", false, func(s *schedule.Schedule) error { _, err := s.CacheRead("out", "w", schedule.Local, nil); return err },
			func(s *schedule.Schedule) error { _, err := s.RFactor("out", "w_local_ax0", 0); return err }, "does not enclose"},
		{"rfactor factor axis", false, func(s *schedule.Schedule) error { _, err := s.Split("k", -1, 4); return err },
			func(s *schedule.Schedule) error { _, err := s.RFactor("out", "k_0", 3); return err }, "factor axis 3 outside 0..2"},
		{"rfactor tail", false, func(s *schedule.Schedule) error { _, err := s.Split("k", -1, 5); return err },
			func(s *schedule.Schedule) error { _, err := s.RFactor("out", "k_1", 0); return err }, "variable extent"},
		{"set_scope unknown", false, nil, func(s *schedule.Schedule) error { return s.SetScope("zz", schedule.Local) }, `no buffer "zz"`},
		{"compute_inline unknown", false, nil, func(s *schedule.Schedule) error { return s.ComputeInline("zz") }, `no block "zz"`},
		{"set_scope param", false, nil, func(s *schedule.Schedule) error { return s.SetScope("out", schedule.Register) }, "kernel parameter"},
		{"set_layout unknown", false, nil, func(s *schedule.Schedule) error {
			return s.SetLayout("zz", &schedule.Layout{Tile: []int64{0, 0}, Order: []int{1, 0}})
		}, `no buffer "zz"`},
		{"set_layout param", false, nil, func(s *schedule.Schedule) error {
			return s.SetLayout("out", &schedule.Layout{Tile: []int64{0, 0}, Order: []int{1, 0}})
		}, "kernel parameter"},
		{"set_layout nil", false, func(s *schedule.Schedule) error { _, err := s.CacheWrite("out", schedule.Register); return err },
			func(s *schedule.Schedule) error { return s.SetLayout("out_register", nil) }, "no layout"},
		{"set_layout rank", false, func(s *schedule.Schedule) error { _, err := s.CacheWrite("out", schedule.Register); return err },
			func(s *schedule.Schedule) error {
				return s.SetLayout("out_register", &schedule.Layout{Tile: []int64{0}, Order: []int{0}})
			}, "1 entries for a rank-2 buffer"},
		{"set_layout merge one dim", false, func(s *schedule.Schedule) error { _, err := s.CacheWrite("out", schedule.Register); return err },
			func(s *schedule.Schedule) error {
				return s.SetLayout("out_register", &schedule.Layout{Tile: []int64{0, 0}, Order: []int{1, 0}, Merge: 1})
			}, "layout merge 1 outside 2..2"},
		{"cache_read merge too many", false, nil, func(s *schedule.Schedule) error {
			_, err := s.CacheRead("out", "w", schedule.Local, &schedule.Layout{Tile: []int64{0, 4}, Order: []int{1, 0, 2}, Merge: 4})
			return err
		}, "layout merge 4 outside 2..3"},
		{"fuse reduction with rfactor axis", false, func(s *schedule.Schedule) error {
			if _, err := s.Split("k", -1, 4); err != nil {
				return err
			}
			if err := s.Reorder("i", "j", "k_1", "k_0"); err != nil {
				return err
			}
			_, err := s.RFactor("out", "k_1", 2)
			return err
		}, func(s *schedule.Schedule) error { _, err := s.Fuse("k_1", "k_0"); return err }, "mix spatial and reduction"},
		{"sample tile n", false, nil, func(s *schedule.Schedule) error { _, err := s.SamplePerfectTile("i", 0, 0); return err }, "outside 1..8"},
		{"sample categorical empty", false, nil, func(s *schedule.Schedule) error { _, err := s.SampleCategorical(nil, nil); return err }, "no candidates"},
		{"sample categorical probs", false, nil, func(s *schedule.Schedule) error {
			_, err := s.SampleCategorical([]int64{1, 2}, []float64{1})
			return err
		}, "1 probabilities"},
	}
	// Unroll's limit needs a loop longer than the shared 10×24×12 def has.
	t.Run("unroll too long", func(t *testing.T) {
		s := must1[*schedule.Schedule](t)(schedule.New(linearDef(t, 40, 32, 12, false), 1))
		f := must1[string](t)(s.Fuse("i", "j"))
		before := s.Nest().String()
		err := s.Unroll(f)
		if err == nil || !errors.Is(err, schedule.ErrIllegal) || !strings.Contains(err.Error(), "1280 iterations (at most 1024 unroll)") {
			t.Fatalf("got %v, want ErrIllegal about the 1024-iteration limit", err)
		}
		if s.Nest().String() != before {
			t.Fatal("a failed unroll changed the schedule")
		}
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var def *schedule.Def
			if c.epilogue {
				def = epilogueDef(t, 10, 24, 12, schedule.F32)
			} else {
				def = linearDef(t, 10, 24, 12, false)
			}
			s := must1[*schedule.Schedule](t)(schedule.New(def, 1))
			if c.setup != nil {
				must(t, ok(c.setup(s)))
			}
			before := s.Nest().String()
			ninst := len(s.Trace().Insts)
			err := c.bad(s)
			if err == nil || !errors.Is(err, schedule.ErrIllegal) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrIllegal containing %q\n%s", err, c.want, before)
			}
			if s.Nest().String() != before || len(s.Trace().Insts) != ninst {
				t.Fatal("a failed primitive changed the schedule")
			}
		})
	}
}
