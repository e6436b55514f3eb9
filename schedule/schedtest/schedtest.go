package schedtest

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"llmir/schedule"
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

// GEMMTiles are the knobs of the packed GEMM recipe.
type GEMMTiles struct {
	MR, NR   int64 // register block: MR rows × NR columns of accumulators
	NC, KC   int64 // cache block: a packed w panel of NC columns × KC depth
	Parallel bool  // run the NC blocks on threads
}

// GEMM schedules the reduction block (out[i, j] += a[i, k] * w[j, k]) into
// the shape of a hand-written microkernel:
//
//	for j0 (N/NC, parallel)             // cache block of w columns
//	  for k0 (K/KC)                     // cache block of depth
//	    pack w[j0*NC.., k0*KC..] as [NC/NR][KC][NR]
//	    for i0 (M/MR)
//	      for j1 (NC/NR)
//	        acc[MR][NR] = 0             // register tile (vector locals)
//	        for k1 (KC)
//	          for i1 (MR, unrolled)
//	            for j2 (NR, vectorized)
//	              acc[i1][j2] += a[i, k] * wpack[j1][k1][j2]
//	        out[i, j] = (k0 == 0 ? 0 : out[i, j]) + acc
//
// It returns the names of the loops it made, keyed by role.
func GEMM(s *schedule.Schedule, block string, t GEMMTiles) (map[string]string, error) {
	ls, err := s.Loops(block)
	if err != nil {
		return nil, err
	}
	if len(ls) != 3 {
		return nil, fmt.Errorf("gemm: block %s has %d loops, want 3 (i, j, k)", block, len(ls))
	}
	if t.NC%t.NR != 0 {
		return nil, fmt.Errorf("gemm: NC %d is not a multiple of NR %d", t.NC, t.NR)
	}
	step := func(err error, what string) error {
		if err != nil {
			return fmt.Errorf("gemm %s: %w", what, err)
		}
		return nil
	}
	is, err := s.Split(ls[0], -1, t.MR)
	if err := step(err, "split i"); err != nil {
		return nil, err
	}
	js, err := s.Split(ls[1], -1, t.NC/t.NR, t.NR)
	if err := step(err, "split j"); err != nil {
		return nil, err
	}
	ks, err := s.Split(ls[2], -1, t.KC)
	if err := step(err, "split k"); err != nil {
		return nil, err
	}
	if err := step(s.Reorder(js[0], ks[0], is[0], js[1], ks[1], is[1], js[2]), "reorder"); err != nil {
		return nil, err
	}
	rf, err := s.RFactor(block, ks[0], 0)
	if err := step(err, "rfactor"); err != nil {
		return nil, err
	}
	pack, err := s.CacheRead(rf, "w", schedule.Local, &schedule.Layout{Tile: []int64{t.NR, 0}, Order: []int{0, 2, 1}})
	if err := step(err, "cache_read"); err != nil {
		return nil, err
	}
	if err := step(s.ComputeAt(pack, ks[0]), "compute_at"); err != nil {
		return nil, err
	}
	if err := step(s.ReverseComputeAt(block, js[1]), "reverse_compute_at"); err != nil {
		return nil, err
	}
	if err := step(s.SetScope(block+"_rf", schedule.Register), "set_scope"); err != nil {
		return nil, err
	}
	init, err := s.DecomposeReduction(rf, ks[1])
	if err := step(err, "decompose_reduction"); err != nil {
		return nil, err
	}
	for _, b := range []string{init, rf, block} {
		bl, err := s.Loops(b)
		if err != nil {
			return nil, err
		}
		n := len(bl)
		if err := step(s.Unroll(bl[n-2]), "unroll "+b); err != nil {
			return nil, err
		}
		if err := step(s.Vectorize(bl[n-1]), "vectorize "+b); err != nil {
			return nil, err
		}
	}
	if t.Parallel {
		if err := step(s.Parallel(js[0]), "parallel"); err != nil {
			return nil, err
		}
	}
	return map[string]string{"j0": js[0], "k0": ks[0], "i0": is[0], "j1": js[1], "k1": ks[1], "i1": is[1], "j2": js[2], "rf": rf, "pack": pack, "init": init}, nil
}

// GEMVTiles are the knobs of the decode (skinny GEMM / GEMV) recipe.
type GEMVTiles struct {
	JB       int64 // rows of w per parallel chunk (kept in cache while the row blocks of a pass)
	KV       int64 // k lanes accumulated in vectors (16 = one zmm of f32); must divide K
	MR       int64 // rows of a per register tile; 0 = all of M
	JU       int64 // rows of w per register tile; 0 = 1
	Parallel bool
}

// GEMV schedules out[i, j] += a[i, k] * w[j, k] for small M, where w
// (N×K, row-major) is streamed and vectorizing over j would be strided.
// The reduction is vectorized over k instead: rfactor keeps KV partial sums
// per output as vector accumulators, an MR × JU tile of them, so each k step
// loads MR vectors of a and JU of w for MR·JU FMAs; a horizontal sum
// finishes each output.
//
//	for j0 (N/JB, parallel)
//	  for i0 (M/MR)
//	    for j1 (JB/JU)
//	      acc[MR][JU][KV] = 0              // MR·JU vector registers
//	      for k0 (K/KV)
//	        for i1 (MR, unrolled)
//	          for j2 (JU, unrolled)
//	            for k1 (KV, vectorized)
//	              acc[i1][j2][k1] += a[i, k] * w[j, k]
//	      out[i, j] = sum(k1, acc[i1][j2][k1])
func GEMV(s *schedule.Schedule, block string, t GEMVTiles) (map[string]string, error) {
	ls, err := s.Loops(block)
	if err != nil {
		return nil, err
	}
	if len(ls) != 3 {
		return nil, fmt.Errorf("gemv: block %s has %d loops, want 3 (i, j, k)", block, len(ls))
	}
	step := func(err error, what string) error {
		if err != nil {
			return fmt.Errorf("gemv %s: %w", what, err)
		}
		return nil
	}
	ju := max(t.JU, 1)
	if t.JB%ju != 0 {
		return nil, fmt.Errorf("gemv: JB %d is not a multiple of JU %d", t.JB, ju)
	}
	mr := t.MR
	if mr <= 0 {
		mr = s.Def.Stages[0].Axes[0].Dim.Extent
	}
	is, err := s.Split(ls[0], -1, mr)
	if err := step(err, "split i"); err != nil {
		return nil, err
	}
	js, err := s.Split(ls[1], -1, t.JB/ju, ju)
	if err := step(err, "split j"); err != nil {
		return nil, err
	}
	ks, err := s.Split(ls[2], -1, t.KV)
	if err := step(err, "split k"); err != nil {
		return nil, err
	}
	if err := step(s.Reorder(js[0], is[0], js[1], ks[0], is[1], js[2], ks[1]), "reorder"); err != nil {
		return nil, err
	}
	rf, err := s.RFactor(block, ks[1], 2)
	if err := step(err, "rfactor"); err != nil {
		return nil, err
	}
	if err := step(s.ReverseComputeAt(block, js[1]), "reverse_compute_at"); err != nil {
		return nil, err
	}
	if err := step(s.SetScope(rf, schedule.Register), "set_scope"); err != nil {
		return nil, err
	}
	init, err := s.DecomposeReduction(rf, ks[0])
	if err := step(err, "decompose_reduction"); err != nil {
		return nil, err
	}
	for _, b := range []string{init, rf} {
		bl, err := s.Loops(b)
		if err != nil {
			return nil, err
		}
		n := len(bl)
		for _, l := range bl[n-3 : n-1] {
			if err := step(s.Unroll(l), "unroll "+l); err != nil {
				return nil, err
			}
		}
		if err := step(s.Vectorize(bl[n-1]), "vectorize "+b); err != nil {
			return nil, err
		}
	}
	wl, err := s.Loops(block)
	if err != nil {
		return nil, err
	}
	for _, l := range wl[len(wl)-3:] {
		if err := step(s.Unroll(l), "unroll "+l); err != nil {
			return nil, err
		}
	}
	if t.Parallel {
		if err := step(s.Parallel(js[0]), "parallel"); err != nil {
			return nil, err
		}
	}
	return map[string]string{"j0": js[0], "i0": is[0], "j1": js[1], "k0": ks[0], "i1": is[1], "j2": js[2], "k1": ks[1], "rf": rf, "init": init}, nil
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
