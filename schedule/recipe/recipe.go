package recipe

import (
	"fmt"

	"llmir/schedule"
)

// GEMMTiles are the knobs of the packed GEMM recipe.
//
// MR, NB and KC may be sampled values (schedule.Ref with a name), so that a
// trace mutated in those decisions replays to a neighbour. NR is a literal:
// it is also the packed panel's layout tile, which is not an operand.
type GEMMTiles struct {
	MR schedule.Ref // register block rows
	NR int64        // register block columns (a multiple of the vector width)
	NB schedule.Ref // register blocks per cache block: NC = NB·NR columns of packed w
	KC schedule.Ref // cache block depth
	// PackA copies the MR×KC block of a that a register tile row reads
	// into a local [KC][MR] buffer at i0, so that its broadcasts walk one
	// contiguous stream instead of MR rows K floats apart (at K a multiple
	// of 1024 the rows all map to the same L1 sets, where the packed w
	// stream evicts them).
	PackA    bool
	Parallel bool // run the NC blocks on threads
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
	ls, step, err := matmulLoops(s, block, "gemm")
	if err != nil {
		return nil, err
	}
	if t.NR <= 0 {
		return nil, fmt.Errorf("gemm: NR %d must be positive", t.NR)
	}
	is, err := s.SplitBy(ls[0], schedule.Lit(-1), t.MR)
	if err := step(err, "split i"); err != nil {
		return nil, err
	}
	js, err := s.SplitBy(ls[1], schedule.Lit(-1), t.NB, schedule.Lit(t.NR))
	if err := step(err, "split j"); err != nil {
		return nil, err
	}
	ks, err := s.SplitBy(ls[2], schedule.Lit(-1), t.KC)
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
	packA := ""
	if t.PackA {
		act, _, err := operands(s, rf)
		if err != nil {
			return nil, err
		}
		packA, err = s.CacheRead(rf, act, schedule.Local, &schedule.Layout{Tile: []int64{0, 0}, Order: []int{1, 0}})
		if err := step(err, "cache_read a"); err != nil {
			return nil, err
		}
		if err := step(s.ComputeAt(packA, is[0]), "compute_at a"); err != nil {
			return nil, err
		}
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
	loops := map[string]string{"j0": js[0], "k0": ks[0], "i0": is[0], "j1": js[1], "k1": ks[1], "i1": is[1], "j2": js[2], "rf": rf, "pack": pack, "init": init}
	if packA != "" {
		loops["packA"] = packA
	}
	return loops, nil
}

// GEMVTiles are the knobs of the decode (skinny GEMM / GEMV) recipe.
//
// NJ, MR and JU may be sampled values; KV is a literal (the vector lanes,
// which must divide K for rfactor).
type GEMVTiles struct {
	NJ schedule.Ref // register tiles per parallel chunk: a chunk holds NJ·JU rows of w
	KV int64        // k lanes accumulated in vectors (16 = one zmm of f32); must divide K
	MR schedule.Ref // rows of a per register tile; 0 = all of M
	JU schedule.Ref // rows of w per register tile; 0 = 1
	// RowsInner puts the MR-row blocks of a inside the JU-row tiles of w
	// (for j1, for i0) instead of outside them: the tile's JU rows of w are
	// read from memory by the first block and from L2 by the others, while
	// the whole chunk of NJ·JU rows would not stay in L2 across all blocks.
	RowsInner bool
	// Prefetch is how many k vectors ahead each row of the tile's weights
	// (buffer Stream) is prefetched: 0 none, else a prefetch annotation on
	// the k loop.
	Prefetch schedule.Ref
	Stream   string
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
//	  for i0 (M/MR)                        // inside j1 with RowsInner
//	    for j1 (JB/JU)
//	      acc[MR][JU][KV] = 0              // MR·JU vector registers
//	      for k0 (K/KV)                    // prefetch w[j, k + Prefetch·KV]
//	        for i1 (MR, unrolled)
//	          for j2 (JU, unrolled)
//	            for k1 (KV, vectorized)
//	              acc[i1][j2][k1] += a[i, k] * w[j, k]
//	      out[i, j] = sum(k1, acc[i1][j2][k1])
func GEMV(s *schedule.Schedule, block string, t GEMVTiles) (map[string]string, error) {
	ls, step, err := matmulLoops(s, block, "gemv")
	if err != nil {
		return nil, err
	}
	ju := t.JU
	if ju.Name == "" && ju.Value <= 0 {
		ju = schedule.Lit(1)
	}
	mr := t.MR
	if mr.Name == "" && mr.Value <= 0 {
		mr = schedule.Lit(s.Def.Stages[0].Axes[0].Dim.Extent)
	}
	is, err := s.SplitBy(ls[0], schedule.Lit(-1), mr)
	if err := step(err, "split i"); err != nil {
		return nil, err
	}
	js, err := s.SplitBy(ls[1], schedule.Lit(-1), t.NJ, ju)
	if err := step(err, "split j"); err != nil {
		return nil, err
	}
	ks, err := s.Split(ls[2], -1, t.KV)
	if err := step(err, "split k"); err != nil {
		return nil, err
	}
	order, tile := []string{js[0], is[0], js[1]}, js[1]
	if t.RowsInner {
		order, tile = []string{js[0], js[1], is[0]}, is[0]
	}
	if err := step(s.Reorder(append(order, ks[0], is[1], js[2], ks[1])...), "reorder"); err != nil {
		return nil, err
	}
	rf, err := s.RFactor(block, ks[1], 2)
	if err := step(err, "rfactor"); err != nil {
		return nil, err
	}
	if err := step(s.ReverseComputeAt(block, tile), "reverse_compute_at"); err != nil {
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
	// A sampled distance is applied even when it is 0 (a legal no-op), so
	// that a trace mutated to another distance replays to a neighbour.
	if t.Prefetch.Name != "" || t.Prefetch.Value > 0 {
		if err := step(s.Prefetch(ks[0], t.Stream, t.Prefetch), "prefetch"); err != nil {
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

// GEMVOuterTiles are the knobs of the decode outer-product recipe.
//
// NJ, JU, KU and Prefetch may be sampled values; MV is a literal (the vector
// lanes: rows of a held in one vector).
type GEMVOuterTiles struct {
	MV int64        // rows of a per vector (16 = one zmm of f32)
	NJ schedule.Ref // register tiles per parallel chunk: a chunk holds NJ·JU rows of w
	JU schedule.Ref // rows of w per register tile: JU vector accumulators
	KU schedule.Ref // k steps per iteration of the prefetched k loop (unrolled)
	// KB, when set, blocks k: KB iterations of KU k steps per block, the
	// block loop outside the tiles of a chunk, so that the block's slice of
	// a_local (KB·KU·MV floats) stays in L2 while every tile of the chunk
	// reads it; partial sums go through rfactor and out is updated once per
	// block. Unset: one pass over k per tile.
	KB schedule.Ref
	// KG, when > 1, puts KG k steps in the lanes next to MV/KG rows of a:
	// each vector holds MV/KG rows × KG k steps, a is copied as
	// [k/KG][i·KG + k%KG] (a merged layout), and the KG floats of a row of
	// w are broadcast to every group of lanes at once (llmir_bcast<KG>),
	// so a k group of KG steps loads KG vectors of a and JU groups of w
	// for KG·JU FMAs instead of KG + KG·JU loads. The KG partial sums of
	// each output are added at the write-back (a second rfactor, over the
	// k group). Needs KB; a literal dividing MV and KU.
	KG int64
	// Prefetch is how many iterations of the outer k loop (KU k steps
	// each) ahead each row of w (buffer Stream) is prefetched: 0 none.
	Prefetch schedule.Ref
	Stream   string
	Parallel bool
}

// GEMVOuter schedules out[i, j] += a[i, k] * w[j, k] for M ≤ MV as a sum of
// outer products, vectorized over the rows of a instead of over k:
//
//	a_local[k][i] = a[i, k]                  // a transposed, once (M×K floats)
//	for j0 (N/JB, parallel)
//	  for j1 (JB/JU)
//	    for i0 (M/MV)
//	      acc[JU][MV] = 0                    // JU vector registers, i last (set_layout)
//	      for k0 (K/KU)                      // prefetch w[j, k + Prefetch·KU]
//	        for k1 (KU, unrolled)
//	          for j2 (JU, unrolled)
//	            for i1 (MV, vectorized)
//	              acc[j2][i1] += a_local[k][i] * w[j, k]
//	      out[i, j] = acc                     // lane reads, once per tile
//
// Each k step loads one vector of a and broadcasts JU scalars of w (gcc
// folds the broadcast into the FMA's memory operand) for JU FMAs of MV
// useful lanes each, with no horizontal sums: at M = 16 the k-vectorized
// GEMV needed MR loads of a per MR·JU FMAs and a horizontal sum per output,
// and ran at 35–46% of the FMA peak.
func GEMVOuter(s *schedule.Schedule, block string, t GEMVOuterTiles) (map[string]string, error) {
	ls, step, err := matmulLoops(s, block, "gemv outer")
	if err != nil {
		return nil, err
	}
	if t.MV <= 0 {
		return nil, fmt.Errorf("gemv outer: MV %d must be positive", t.MV)
	}
	act, _, err := operands(s, block)
	if err != nil {
		return nil, err
	}
	blocked := t.KB.Name != "" || t.KB.Value > 0
	if t.KG > 1 {
		if !blocked {
			return nil, fmt.Errorf("gemv outer: k groups (KG %d) need k blocks (KB)", t.KG)
		}
		if t.MV%t.KG != 0 {
			return nil, fmt.Errorf("gemv outer: KG %d does not divide MV %d", t.KG, t.MV)
		}
		return gemvOuterGrouped(s, block, act, ls, step, t)
	}
	if blocked {
		return gemvOuterBlocked(s, block, act, ls, step, t)
	}
	wb, err := s.CacheWrite(block, schedule.Register)
	if err := step(err, "cache_write"); err != nil {
		return nil, err
	}
	is, err := s.Split(ls[0], -1, t.MV)
	if err := step(err, "split i"); err != nil {
		return nil, err
	}
	js, err := s.SplitBy(ls[1], schedule.Lit(-1), t.NJ, t.JU)
	if err := step(err, "split j"); err != nil {
		return nil, err
	}
	ks, err := s.SplitBy(ls[2], schedule.Lit(-1), t.KU)
	if err := step(err, "split k"); err != nil {
		return nil, err
	}
	if err := step(s.Reorder(js[0], js[1], is[0], ks[0], ks[1], js[2], is[1]), "reorder"); err != nil {
		return nil, err
	}
	if err := step(s.ReverseComputeAt(wb, is[0]), "reverse_compute_at"); err != nil {
		return nil, err
	}
	acc := writtenBuffer(s, block)
	if err := step(s.SetLayout(acc, &schedule.Layout{Tile: []int64{0, 0}, Order: []int{1, 0}}), "set_layout"); err != nil {
		return nil, err
	}
	pack, err := s.CacheRead(block, act, schedule.Local, &schedule.Layout{Tile: []int64{0, 0}, Order: []int{1, 0}})
	if err := step(err, "cache_read"); err != nil {
		return nil, err
	}
	init, err := s.DecomposeReduction(block, ks[0])
	if err := step(err, "decompose_reduction"); err != nil {
		return nil, err
	}
	// Compute: k1 and j2 unrolled, i1 vectorized; init: j2 unrolled, i1
	// vectorized; write-back: both unrolled (lane reads).
	if err := outerInner(s, t, []innerLoops{{block, 2, 1}, {init, 1, 1}, {wb, 2, 0}}, ks[0], js[0], step); err != nil {
		return nil, err
	}
	return map[string]string{"j0": js[0], "j1": js[1], "i0": is[0], "k0": ks[0], "k1": ks[1], "j2": js[2], "i1": is[1],
		"acc": acc, "pack": pack, "init": init, "wb": wb}, nil
}

// gemvOuterBlocked is GEMVOuter with k blocked (t.KB):
//
//	a_local[k][i] = a[i, k]
//	for j0 (parallel)
//	  for kb (K/(KB·KU))
//	    for j1, i0
//	      out_rf[JU][MV] = 0                 // register tile, i last
//	      for k0 (KB), k1 (KU), j2 (JU), i1 (MV, vectorized)
//	        out_rf[j2][i1] += a_local[k][i] * w[j, k]
//	      out[i, j] = (kb == 0 ? 0 : out[i, j]) + out_rf[…]
func gemvOuterBlocked(s *schedule.Schedule, block, act string, ls []string, step func(error, string) error, t GEMVOuterTiles) (map[string]string, error) {
	is, err := s.Split(ls[0], -1, t.MV)
	if err := step(err, "split i"); err != nil {
		return nil, err
	}
	js, err := s.SplitBy(ls[1], schedule.Lit(-1), t.NJ, t.JU)
	if err := step(err, "split j"); err != nil {
		return nil, err
	}
	ks, err := s.SplitBy(ls[2], schedule.Lit(-1), t.KB, t.KU)
	if err := step(err, "split k"); err != nil {
		return nil, err
	}
	if err := step(s.Reorder(js[0], ks[0], js[1], is[0], ks[1], ks[2], js[2], is[1]), "reorder"); err != nil {
		return nil, err
	}
	rf, err := s.RFactor(block, ks[0], 0)
	if err := step(err, "rfactor"); err != nil {
		return nil, err
	}
	if err := step(s.ReverseComputeAt(block, is[0]), "reverse_compute_at"); err != nil {
		return nil, err
	}
	acc := writtenBuffer(s, rf)
	if err := step(s.SetScope(acc, schedule.Register), "set_scope"); err != nil {
		return nil, err
	}
	if err := step(s.SetLayout(acc, &schedule.Layout{Tile: []int64{0, 0, 0}, Order: []int{0, 2, 1}}), "set_layout"); err != nil {
		return nil, err
	}
	pack, err := s.CacheRead(rf, act, schedule.Local, &schedule.Layout{Tile: []int64{0, 0}, Order: []int{1, 0}})
	if err := step(err, "cache_read"); err != nil {
		return nil, err
	}
	init, err := s.DecomposeReduction(rf, ks[1])
	if err := step(err, "decompose_reduction"); err != nil {
		return nil, err
	}
	if err := outerInner(s, t, []innerLoops{{rf, 2, 1}, {init, 1, 1}, {block, 2, 0}}, ks[1], js[0], step); err != nil {
		return nil, err
	}
	return map[string]string{"j0": js[0], "kb": ks[0], "j1": js[1], "i0": is[0], "k0": ks[1], "k1": ks[2], "j2": js[2], "i1": is[1],
		"acc": acc, "pack": pack, "init": init, "rf": rf}, nil
}

// gemvOuterGrouped is the k-blocked GEMVOuter with KG k steps in the
// lanes (t.KG > 1); the vector loop f is fused from the rows of a vector
// (i1, MV/KG) and the k group (kg, KG):
//
//	a_local[k/KG][i·KG + k%KG] = a[i, k]
//	for j0 (parallel)
//	  for kb (K/(KB·KU))
//	    for j1, i0
//	      acc[JU][KG][MV] = 0                 // JU·KG vector registers
//	      for k0 (KB), k1 (KU/KG, unrolled)  // prefetch w at k0
//	        for j2 (JU), iv (KG), unrolled
//	          for f (MV, vectorized)          // i1 = f / KG, kg = f % KG
//	            acc[j2][iv][f] += a_local[k/KG][i·KG + kg] * w[j, k]
//	      out_rf[i, j] = sum(kg, acc[…])      // lane reads
//	      out[i, j] = (kb == 0 ? 0 : out[i, j]) + out_rf[i, j]
//
// w[j, k] is base + f % KG in the vector loop: the printer's group
// broadcast.
func gemvOuterGrouped(s *schedule.Schedule, block, act string, ls []string, step func(error, string) error, t GEMVOuterTiles) (map[string]string, error) {
	rows := t.MV / t.KG
	is, err := s.Split(ls[0], -1, t.KG, rows)
	if err := step(err, "split i"); err != nil {
		return nil, err
	}
	js, err := s.SplitBy(ls[1], schedule.Lit(-1), t.NJ, t.JU)
	if err := step(err, "split j"); err != nil {
		return nil, err
	}
	ku := t.KU
	if ku.Name != "" {
		return nil, fmt.Errorf("gemv outer: KU must be a literal with k groups (it is divided by KG %d)", t.KG)
	}
	if ku.Value%t.KG != 0 {
		return nil, fmt.Errorf("gemv outer: KG %d does not divide KU %d", t.KG, ku.Value)
	}
	// k splits into groups first, so that the group loop has the constant
	// extent KG rfactor needs whenever KG divides K; tails of the k blocks
	// then fall on whole groups.
	kq, err := s.Split(ls[2], -1, t.KG)
	if err := step(err, "split k"); err != nil {
		return nil, err
	}
	ks, err := s.SplitBy(kq[0], schedule.Lit(-1), t.KB, schedule.Lit(ku.Value/t.KG))
	if err := step(err, "split k groups"); err != nil {
		return nil, err
	}
	ks = append(ks, kq[1])
	// i0, iv, i1 = is; kb, k0, k1, kg = ks
	if err := step(s.Reorder(js[0], ks[0], js[1], is[0], ks[1], ks[2], js[2], is[1], is[2], ks[3]), "reorder"); err != nil {
		return nil, err
	}
	rf, err := s.RFactor(block, ks[0], 0)
	if err := step(err, "rfactor kb"); err != nil {
		return nil, err
	}
	acc, err := s.RFactor(rf, ks[3], 3)
	if err := step(err, "rfactor kg"); err != nil {
		return nil, err
	}
	// The write-backs move to the tile before the fuse: region analysis
	// needs affine indices (i1·rows + i2, not f / KG).
	if err := step(s.ReverseComputeAt(rf, is[0]), "reverse_compute_at "+rf); err != nil {
		return nil, err
	}
	if err := step(s.ReverseComputeAt(block, is[0]), "reverse_compute_at "+block); err != nil {
		return nil, err
	}
	f, err := s.Fuse(is[2], ks[3])
	if err := step(err, "fuse"); err != nil {
		return nil, err
	}
	part := writtenBuffer(s, rf)
	for _, b := range []string{acc, part} {
		if err := step(s.SetScope(b, schedule.Register), "set_scope "+b); err != nil {
			return nil, err
		}
	}
	// acc[kb, i, j, kg] → [kb][j][i / rows][(i % rows)·KG + kg]: one vector
	// per (row of w, vector of rows of a).
	if err := step(s.SetLayout(acc, &schedule.Layout{Tile: []int64{0, rows, 0, 0}, Order: []int{0, 3, 1, 2, 4}, Merge: 2}), "set_layout"); err != nil {
		return nil, err
	}
	pack, err := s.CacheRead(acc, act, schedule.Local, &schedule.Layout{Tile: []int64{0, t.KG}, Order: []int{1, 0, 2}, Merge: 2})
	if err := step(err, "cache_read"); err != nil {
		return nil, err
	}
	init, err := s.DecomposeReduction(acc, ks[1])
	if err := step(err, "decompose_reduction"); err != nil {
		return nil, err
	}
	rfLoops, err := s.Loops(rf)
	if err != nil {
		return nil, err
	}
	wbLoops, err := s.Loops(block)
	if err != nil {
		return nil, err
	}
	inner := []innerLoops{{acc, 3, 1}, {init, 2, 1}, {rf, len(rfLoops) - 4, 0}, {block, len(wbLoops) - 4, 0}}
	if err := outerInner(s, t, inner, ks[1], js[0], step); err != nil {
		return nil, err
	}
	return map[string]string{"j0": js[0], "kb": ks[0], "j1": js[1], "i0": is[0], "k0": ks[1], "k1": ks[2], "j2": js[2], "iv": is[1], "f": f,
		"acc": acc, "part": part, "pack": pack, "init": init, "rf": rf}, nil
}

// writtenBuffer is the buffer block writes ("" when there is no such
// block).
func writtenBuffer(s *schedule.Schedule, block string) string {
	var buf string
	var walk func([]schedule.Stmt)
	walk = func(ss []schedule.Stmt) {
		for _, st := range ss {
			switch st := st.(type) {
			case *schedule.Loop:
				walk(st.Body)
			case *schedule.Block:
				if st.Name == block {
					buf = st.Buf
				}
			}
		}
	}
	walk(s.Nest().Body)
	return buf
}

// matmulLoops returns the (i, j, k) loops of a matmul block, and a step
// that wraps a primitive's error with the recipe's name and the step.
func matmulLoops(s *schedule.Schedule, block, recipe string) ([]string, func(error, string) error, error) {
	ls, err := s.Loops(block)
	if err != nil {
		return nil, nil, err
	}
	if len(ls) != 3 {
		return nil, nil, fmt.Errorf("%s: block %s has %d loops, want 3 (i, j, k)", recipe, block, len(ls))
	}
	step := func(err error, what string) error {
		if err != nil {
			return fmt.Errorf("%s %s: %w", recipe, what, err)
		}
		return nil
	}
	return ls, step, nil
}

// innerLoops says how many innermost loops of a block GEMVOuter unrolls,
// and whether it vectorizes the last one.
type innerLoops struct {
	block          string
	unroll, vector int
}

// outerInner finishes both forms of GEMVOuter (with and without k
// blocks): it unrolls and vectorizes the innermost loops of each block as
// inner says, prefetches the stream at the prefetched k loop kp and
// parallelizes the outer loop of w's rows j0.
func outerInner(s *schedule.Schedule, t GEMVOuterTiles, inner []innerLoops, kp, j0 string, step func(error, string) error) error {
	for _, b := range inner {
		bl, err := s.Loops(b.block)
		if err != nil {
			return err
		}
		n := len(bl)
		for _, l := range bl[n-b.unroll-b.vector : n-b.vector] {
			if err := step(s.Unroll(l), "unroll "+l); err != nil {
				return err
			}
		}
		if b.vector > 0 {
			if err := step(s.Vectorize(bl[n-1]), "vectorize "+b.block); err != nil {
				return err
			}
		}
	}
	if t.Prefetch.Name != "" || t.Prefetch.Value > 0 {
		if err := step(s.Prefetch(kp, t.Stream, t.Prefetch), "prefetch"); err != nil {
			return err
		}
	}
	if t.Parallel {
		return step(s.Parallel(j0), "parallel")
	}
	return nil
}
