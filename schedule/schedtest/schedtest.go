package schedtest

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"llmir/schedule"
	"llmir/schedule/recipe"
)

// Linear returns out[i, j] = sum(k, a[i, k] * w[j, k]) with a: [M, K],
// w: [N, K], out: [M, N]; M is dynamic (bucket m) when dynM is set.
func Linear(m, n, k int64, dynM bool) (*schedule.Def, error) {
	M := schedule.Static(m)
	if dynM {
		M = schedule.Dynamic("M", m)
	}
	i, j, kk := schedule.NewAxis("i", M), schedule.NewAxis("j", schedule.Static(n)), schedule.NewAxis("k", schedule.Static(k))
	a := schedule.Input("a", schedule.F32, M, schedule.Static(k))
	w := schedule.Input("w", schedule.F32, schedule.Static(n), schedule.Static(k))
	out := schedule.Compute("out", schedule.F32, []schedule.Axis{i, j}, schedule.Sum(kk, schedule.Mul(a.At(i, kk), w.At(j, kk))))
	return schedule.NewDef("linear", []*schedule.Tensor{a, w}, out)
}

// LinearKN is Linear with the weight stored [K, N] (out = a · w), the
// layout in which the j loop reads w contiguously; random schedules of it
// exercise vector code without packing.
func LinearKN(m, n, k int64) (*schedule.Def, error) {
	S := schedule.Static
	i, j, kk := schedule.NewAxis("i", S(m)), schedule.NewAxis("j", S(n)), schedule.NewAxis("k", S(k))
	a := schedule.Input("a", schedule.F32, S(m), S(k))
	w := schedule.Input("w", schedule.F32, S(k), S(n))
	out := schedule.Compute("out", schedule.F32, []schedule.Axis{i, j}, schedule.Sum(kk, schedule.Mul(a.At(i, kk), w.At(kk, j))))
	return schedule.NewDef("linear_kn", []*schedule.Tensor{a, w}, out)
}

// GEMMTiles are literal knobs of recipe.GEMM, in the units tests think in.
type GEMMTiles struct {
	MR, NR   int64 // register block: MR rows × NR columns of accumulators
	NC, KC   int64 // cache block: a packed w panel of NC columns × KC depth
	Parallel bool  // run the NC blocks on threads
}

// GEMM applies recipe.GEMM with literal tiles.
func GEMM(s *schedule.Schedule, block string, t GEMMTiles) (map[string]string, error) {
	if t.NR <= 0 || t.NC%t.NR != 0 {
		return nil, fmt.Errorf("gemm: NC %d is not a multiple of NR %d", t.NC, t.NR)
	}
	return recipe.GEMM(s, block, recipe.GEMMTiles{MR: schedule.Lit(t.MR), NR: t.NR, NB: schedule.Lit(t.NC / t.NR), KC: schedule.Lit(t.KC), Parallel: t.Parallel})
}

// GEMVTiles are literal knobs of recipe.GEMV.
type GEMVTiles struct {
	JB       int64 // rows of w per parallel chunk
	KV       int64 // k lanes accumulated in vectors; must divide K
	MR       int64 // rows of a per register tile; 0 = all of M
	JU       int64 // rows of w per register tile; 0 = 1
	Parallel bool
}

// GEMV applies recipe.GEMV with literal tiles.
func GEMV(s *schedule.Schedule, block string, t GEMVTiles) (map[string]string, error) {
	ju := max(t.JU, 1)
	if t.JB%ju != 0 {
		return nil, fmt.Errorf("gemv: JB %d is not a multiple of JU %d", t.JB, ju)
	}
	return recipe.GEMV(s, block, recipe.GEMVTiles{NJ: schedule.Lit(t.JB / ju), KV: t.KV, MR: schedule.Lit(t.MR), JU: schedule.Lit(ju), Parallel: t.Parallel})
}

// Random applies a random legal schedule to a reduction block over loops
// (i, j, k): sampled tiles (some with tails), a random loop order keeping
// each axis's outer-before-inner order, and optionally rfactor, a packed
// cache_read, a cache_write tile, decompose_reduction, vectorize, unroll and
// parallel. Optional steps that turn out illegal are skipped (a failed
// primitive leaves the schedule unchanged), so the result is always a
// legal, replayable trace.
func Random(s *schedule.Schedule, block string, rng *rand.Rand) error {
	ls, err := s.Loops(block)
	if err != nil {
		return err
	}
	var groups [][]string
	for _, l := range ls {
		n := 1 + rng.IntN(3)
		if n == 1 {
			groups = append(groups, []string{l})
			continue
		}
		var names []string
		if rng.IntN(3) == 0 {
			// An explicit factor that need not divide: exercises tails.
			f := []int64{-1, int64(1 + rng.IntN(9))}
			if names, err = s.Split(l, f...); err != nil {
				return err
			}
		} else {
			refs, err := s.SamplePerfectTile(l, n, 32)
			if err != nil {
				return err
			}
			if names, err = s.SplitBy(l, refs...); err != nil {
				return err
			}
		}
		groups = append(groups, names)
	}
	// Random interleaving that keeps each group's order.
	var order []string
	next := make([]int, len(groups))
	for {
		var live []int
		for g := range groups {
			if next[g] < len(groups[g]) {
				live = append(live, g)
			}
		}
		if len(live) == 0 {
			break
		}
		g := live[rng.IntN(len(live))]
		order = append(order, groups[g][next[g]])
		next[g]++
	}
	if len(groups) > 1 && rng.IntN(3) != 0 {
		// Usually make the last j loop innermost, the vectorizable case.
		jl := groups[1][len(groups[1])-1]
		for i, name := range order {
			if name == jl {
				order = append(append(order[:i:i], order[i+1:]...), jl)
				break
			}
		}
	}
	if err := s.Reorder(order...); err != nil {
		return err
	}
	// Optional steps may be illegal for this draw (ErrIllegal): skipped.
	// Any other error is a bug and is returned.
	var unexpected error
	optional := func(err error) {
		if err != nil && !errors.Is(err, schedule.ErrIllegal) && unexpected == nil {
			unexpected = err
		}
	}
	target := block
	kgroup := groups[len(groups)-1]
	if len(kgroup) > 1 && rng.IntN(3) == 0 {
		rf, err := s.RFactor(block, kgroup[0], 0)
		if err == nil {
			target = rf
		}
		optional(err)
	}
	loops, _ := s.Loops(target)
	if rng.IntN(2) == 0 {
		buf := []string{"a", "w"}[rng.IntN(2)]
		var layout *schedule.Layout
		if rng.IntN(2) == 0 {
			layout = &schedule.Layout{Tile: []int64{int64(1 + rng.IntN(8)), 0}, Order: []int{0, 2, 1}}
		}
		c, err := s.CacheRead(target, buf, schedule.Local, layout)
		optional(err)
		if err == nil {
			// May be illegal (non-affine); then the copy stays at the root.
			optional(s.ComputeAt(c, loops[rng.IntN(len(loops))]))
		}
	}
	if target == block && rng.IntN(2) == 0 {
		scope := []schedule.Scope{schedule.Local, schedule.Register}[rng.IntN(2)]
		wb, err := s.CacheWrite(block, scope)
		optional(err)
		if err == nil {
			loops, _ = s.Loops(target)
			optional(s.ReverseComputeAt(wb, loops[rng.IntN(len(loops))]))
		}
	}
	if target != block {
		bl, _ := s.Loops(block)
		if len(bl) > 0 {
			loops, _ = s.Loops(target)
			optional(s.ReverseComputeAt(block, loops[rng.IntN(len(loops))]))
		}
	}
	loops, _ = s.Loops(target)
	if rng.IntN(2) == 0 {
		_, err := s.DecomposeReduction(target, loops[rng.IntN(len(loops))])
		optional(err)
	}
	loops, _ = s.Loops(target)
	if len(loops) > 0 {
		optional(s.Vectorize(loops[len(loops)-1]))
		if rng.IntN(2) == 0 && len(loops) > 1 {
			optional(s.Unroll(loops[len(loops)-2]))
		}
		optional(s.Parallel(loops[0]))
	}
	return unexpected
}
