package recipe

import (
	"fmt"

	"llmir/schedule"
)

// GPU recipes: the CUDA shapes of the linear layer and of element-wise ops,
// written with Bind, cache_read into shared memory, rfactor onto threads
// and Tensorize; target/cuda/cgen prints the resulting nests.

// GPUGEMVTiles are the knobs of the decode GEMV recipe.
type GPUGEMVTiles struct {
	Rows    schedule.Ref // warps per thread block (threadIdx.y)
	PerWarp schedule.Ref // rows of w per warp: each load of a serves them all
	Lanes   int64        // threads splitting K (threadIdx.x): 32 is one warp and a shuffle-only reduction
	Vec     int64        // consecutive k per thread and step: 8 bf16 = one 16-byte load
	Unroll  bool         // unroll the M rows and the Vec products
}

// GPUGEMVDefault is the rule-based GEMV for an [m, k] × [n, k] product on
// a GPU of sms SMs: 16-byte loads; at m = 1 one row of w per warp and four
// warps per block; at m > 1 two rows per warp (each load of a then serves
// two rows: the H200 tune's winner at M = 16) and the most warps per block
// (up to 16) that still give every SM a block.
func GPUGEMVDefault(m, n int64, sms int) GPUGEMVTiles {
	if m <= 1 {
		return GPUGEMVTiles{Rows: schedule.Lit(4), PerWarp: schedule.Lit(1), Lanes: 32, Vec: 8, Unroll: true}
	}
	rows := int64(1)
	for _, r := range []int64{16, 8, 4, 2} {
		if (n+2*r-1)/(2*r) >= int64(max(sms, 1)) {
			rows = r
			break
		}
	}
	return GPUGEMVTiles{Rows: schedule.Lit(rows), PerWarp: schedule.Lit(2), Lanes: 32, Vec: 8, Unroll: true}
}

// GPUGEMVSpace samples the threads splitting K (32, 64 or 128 whose
// 8-wide steps divide k: beyond a warp the reduction goes through shared
// memory and its barrier, so then the rows per block must divide n: a
// tail's thread guard would hold the barrier), the warps per block and the
// rows per warp.
func GPUGEMVSpace(s *schedule.Schedule, n, k int64) (GPUGEMVTiles, error) {
	var lanes []int64
	for _, l := range []int64{32, 64, 128} {
		if k%(l*8) == 0 {
			lanes = append(lanes, l)
		}
	}
	if len(lanes) == 0 {
		return GPUGEMVTiles{}, fmt.Errorf("gpu gemv: k=%d is not a multiple of 256", k)
	}
	lr, err := s.SampleCategorical(lanes, nil)
	if err != nil {
		return GPUGEMVTiles{}, err
	}
	l, _ := s.Value(lr.Name)
	var rows []int64
	for _, r := range []int64{1, 2, 4, 8, 16} {
		if r*l <= 1024 && (l == 32 || n%r == 0) {
			rows = append(rows, r)
		}
	}
	r, err := s.SampleCategorical(rows, nil)
	if err != nil {
		return GPUGEMVTiles{}, err
	}
	rv, _ := s.Value(r.Name)
	var pers []int64
	for _, p := range []int64{1, 2, 4} {
		if l == 32 || n%(rv*p) == 0 {
			pers = append(pers, p)
		}
	}
	p, err := s.SampleCategorical(pers, nil)
	if err != nil {
		return GPUGEMVTiles{}, err
	}
	t := GPUGEMVDefault(1, 1, 1)
	t.Rows, t.PerWarp, t.Lanes = r, p, l
	return t, nil
}

// GPUGEMV schedules out[i, j] += a[i, k] * w[j, k] for few rows i (decode):
//
//	for j_0 bound(blockIdx.x)               // Rows·PerWarp rows of w per block
//	  for j_1 bound(threadIdx.y)            // one warp per PerWarp rows
//	    alloc out_rf[M, PerWarp, Lanes] register // partial sums per thread
//	    for k_1 bound(threadIdx.x)          // Lanes threads split K
//	      out_rf = 0
//	      for k_0                            // steps of Lanes·Vec
//	        w_register[PerWarp, Vec] = w[…]  // vectorized: 16-byte loads
//	        a_register[M, Vec] = a[…]
//	        for j_2, i, k_2: out_rf[i, j_2, k_1] += a_register · w_register
//	    for out_ax0 (M), out_ax1 (PerWarp)
//	      for out_ax2 bound(threadIdx.x)     // cross-thread reduction: warp shuffles
//	        out[i, j] += out_rf[i, j_2, out_ax2]
//
// K must be a multiple of Lanes·Vec (rfactor needs a constant extent).
func GPUGEMV(s *schedule.Schedule, block string, t GPUGEMVTiles) (map[string]string, error) {
	ls, step, err := matmulLoops(s, block, "gpu gemv")
	if err != nil {
		return nil, err
	}
	per := t.PerWarp
	if per == (schedule.Ref{}) {
		per = schedule.Lit(1)
	}
	js, err := s.SplitBy(ls[1], schedule.Lit(-1), t.Rows, per)
	if err := step(err, "split j"); err != nil {
		return nil, err
	}
	ks, err := s.Split(ls[2], -1, t.Lanes, t.Vec)
	if err := step(err, "split k"); err != nil {
		return nil, err
	}
	if err := step(s.Reorder(js[0], js[1], ks[1], ks[0], js[2], ls[0], ks[2]), "reorder"); err != nil {
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
	names := map[string]string{"block_rows": js[0], "warp_rows": js[1], "lanes": ks[1], "k_steps": ks[0], "rf": rf, "init": init}
	act, wt, err := operands(s, rf)
	if err != nil {
		return nil, err
	}
	for _, in := range []string{wt, act} {
		c, err := s.CacheRead(rf, in, schedule.Register, nil)
		if err := step(err, "cache_read "+in); err != nil {
			return nil, err
		}
		if err := step(s.ComputeAt(c, ks[0]), "compute_at "+c); err != nil {
			return nil, err
		}
		cl, err := s.Loops(c)
		if err != nil {
			return nil, err
		}
		if err := step(s.Vectorize(cl[len(cl)-1]), "vectorize "+c); err != nil {
			return nil, err
		}
		if t.Unroll {
			if err := step(s.Unroll(cl[len(cl)-2]), "unroll "+c); err != nil {
				return nil, err
			}
		}
	}
	if t.Unroll {
		for _, l := range []string{js[2], ls[0], ks[2]} {
			if err := step(s.Unroll(l), "unroll"); err != nil {
				return nil, err
			}
		}
		il, _ := s.Loops(init)
		for _, l := range il[len(il)-2:] {
			if err := step(s.Unroll(l), "unroll init"); err != nil {
				return nil, err
			}
		}
	}
	wl, err := s.Loops(block)
	if err != nil {
		return nil, err
	}
	if err := step(s.Bind(wl[len(wl)-1], "threadIdx.x"), "bind reduction"); err != nil {
		return nil, err
	}
	if t.Unroll {
		for _, l := range wl[len(wl)-3 : len(wl)-1] {
			if err := step(s.Unroll(l), "unroll write-back"); err != nil {
				return nil, err
			}
		}
	}
	for _, b := range []struct{ loop, axis string }{{ks[1], "threadIdx.x"}, {js[1], "threadIdx.y"}, {js[0], "blockIdx.x"}} {
		if err := step(s.Bind(b.loop, b.axis), "bind "+b.axis); err != nil {
			return nil, err
		}
	}
	names["reduce"] = wl[len(wl)-1]
	return names, nil
}

// operands returns the buffers a linear block multiplies: the activation
// a[i, k] and the weight w[j, k] (in the order the product names them).
func operands(s *schedule.Schedule, block string) (string, string, error) {
	var out []string
	var walk func([]schedule.Stmt)
	walk = func(ss []schedule.Stmt) {
		for _, st := range ss {
			switch st := st.(type) {
			case *schedule.Loop:
				walk(st.Body)
			case *schedule.Block:
				if st.Name != block {
					continue
				}
				if m, ok := st.Value.(schedule.Bin); ok && m.Op == schedule.OpMul {
					a, okA := m.A.(schedule.Load)
					b, okB := m.B.(schedule.Load)
					if okA && okB {
						out = []string{a.Buf, b.Buf}
					}
				}
			}
		}
	}
	walk(s.Nest().Body)
	if out == nil {
		return "", "", fmt.Errorf("block %s is not a product of two loads (a[i, k] * w[j, k])", block)
	}
	return out[0], out[1], nil
}

// GPUGEMMTiles are the knobs of the tensor-core GEMM recipe: a block tile
// of (WM·MI·16) × (WN·NI·8) outputs computed by WM×WN warps, each owning
// MI×NI mma tiles of 16×8, with a K step of KI·16 staged in shared memory.
type GPUGEMMTiles struct {
	WM, WN, MI, NI, KI int64
}

// BM, BN and BK are the block tile.
func (t GPUGEMMTiles) BM() int64 { return t.WM * t.MI * 16 }
func (t GPUGEMMTiles) BN() int64 { return t.WN * t.NI * 8 }
func (t GPUGEMMTiles) BK() int64 { return t.KI * 16 }

// Fits reports whether the tile divides the problem (the recipe has no
// tails: mma tiles are whole).
func (t GPUGEMMTiles) Fits(m, n, k int64) bool {
	return t.WM > 0 && t.WN > 0 && t.MI > 0 && t.NI > 0 && t.KI > 0 &&
		m%t.BM() == 0 && n%t.BN() == 0 && k%t.BK() == 0 && t.WM*t.WN <= 16
}

// GPUGEMMDefault is the largest of a few standard tiles that divides the
// shape: 128×128×64 with 2×4 warps of 64×32 (the H200 tune's winner at
// M = 512; the K step of 64 halves the barriers per FLOP against 32), down
// to one warp of 16×8.
func GPUGEMMDefault(m, n, k int64) (GPUGEMMTiles, error) {
	for _, t := range []GPUGEMMTiles{
		{WM: 2, WN: 4, MI: 4, NI: 4, KI: 4},
		{WM: 2, WN: 4, MI: 4, NI: 4, KI: 2},
		{WM: 2, WN: 2, MI: 2, NI: 4, KI: 2},
		{WM: 2, WN: 2, MI: 1, NI: 2, KI: 1},
		{WM: 1, WN: 1, MI: 1, NI: 1, KI: 1},
	} {
		if t.Fits(m, n, k) {
			return t, nil
		}
	}
	return GPUGEMMTiles{}, fmt.Errorf("gpu gemm: shape %d×%d×%d is not a multiple of 16×8×16", m, n, k)
}

// GPUGEMMSpace samples the tile among those that divide the shape.
func GPUGEMMSpace(s *schedule.Schedule, m, n, k int64) (GPUGEMMTiles, error) {
	pick := func(cands []int64, ok func(int64) bool) (int64, error) {
		var c []int64
		for _, v := range cands {
			if ok(v) {
				c = append(c, v)
			}
		}
		if len(c) == 0 {
			return 0, fmt.Errorf("gpu gemm: no tile divides %d×%d×%d", m, n, k)
		}
		r, err := s.SampleCategorical(c, nil)
		if err != nil {
			return 0, err
		}
		v, _ := s.Value(r.Name)
		return v, nil
	}
	var t GPUGEMMTiles
	var err error
	if t.MI, err = pick([]int64{1, 2, 4}, func(v int64) bool { return m%(v*16) == 0 }); err != nil {
		return t, err
	}
	if t.WM, err = pick([]int64{1, 2, 4}, func(v int64) bool { return m%(v*t.MI*16) == 0 }); err != nil {
		return t, err
	}
	if t.NI, err = pick([]int64{1, 2, 4, 8}, func(v int64) bool { return n%(v*8) == 0 }); err != nil {
		return t, err
	}
	if t.WN, err = pick([]int64{1, 2, 4}, func(v int64) bool { return n%(v*t.NI*8) == 0 && v*t.WM <= 16 }); err != nil {
		return t, err
	}
	// The K step is bounded by static shared memory (48 KiB): the a and w
	// tiles hold BM + BN rows of BK bf16, each padded by 16 bytes (the CUDA
	// printer's bank-conflict padding).
	bm, bn := t.WM*t.MI*16, t.WN*t.NI*8
	if t.KI, err = pick([]int64{1, 2, 4}, func(v int64) bool {
		return k%(v*16) == 0 && (bm+bn)*(v*16*2+16) <= gpuStaticSharedBytes
	}); err != nil {
		return t, err
	}
	return t, nil
}

// gpuStaticSharedBytes is the static shared memory a CUDA block may declare.
const gpuStaticSharedBytes = 48 << 10

// GPUGEMM schedules out[i, j] += a[i, k] * w[j, k] (bf16 operands, f32
// accumulation) onto tensor cores:
//
//	for i_0 bound(blockIdx.y), j_0 bound(blockIdx.x)   // BM×BN block tile
//	  alloc out_register[BM, BN] register             // per warp: its MI×NI mma accumulators
//	  for warp bound(threadIdx.y): out_register = 0
//	  for k_0                                           // K steps of BK
//	    alloc a_shared[BM, BK], w_shared[BN, BK] shared
//	    cooperative copies (fused, bound to threadIdx.y/x, 8-wide vectors)
//	    for warp bound(threadIdx.y)
//	      for k_1, mi, ni (unrolled)
//	        for i_3 (16) tensorized(mma_m16n8k16_bf16), j_3 (8), k_2 (16)
//	  for warp bound(threadIdx.y): out[…] = out_register[…]
//
// The printer inserts the barriers around the shared tiles. The shape must
// be a multiple of the block tile (Fits).
func GPUGEMM(s *schedule.Schedule, block string, t GPUGEMMTiles) (map[string]string, error) {
	ls, step, err := matmulLoops(s, block, "gpu gemm")
	if err != nil {
		return nil, err
	}
	wb, err := s.CacheWrite(block, schedule.Register)
	if err := step(err, "cache_write"); err != nil {
		return nil, err
	}
	is, err := s.Split(ls[0], -1, t.BM())
	if err := step(err, "split i"); err != nil {
		return nil, err
	}
	js, err := s.Split(ls[1], -1, t.BN())
	if err := step(err, "split j"); err != nil {
		return nil, err
	}
	if err := step(s.Reorder(is[0], js[0], is[1], js[1]), "reorder blocks"); err != nil {
		return nil, err
	}
	if err := step(s.ReverseComputeAt(wb, js[0]), "reverse_compute_at"); err != nil {
		return nil, err
	}
	ii, err := s.Split(is[1], t.WM, t.MI, 16)
	if err := step(err, "split warp rows"); err != nil {
		return nil, err
	}
	jj, err := s.Split(js[1], t.WN, t.NI, 8)
	if err := step(err, "split warp columns"); err != nil {
		return nil, err
	}
	ks, err := s.Split(ls[2], -1, t.KI, 16)
	if err := step(err, "split k"); err != nil {
		return nil, err
	}
	if err := step(s.Reorder(ks[0], ii[0], jj[0], ks[1], ii[1], jj[1], ii[2], jj[2], ks[2]), "reorder warps"); err != nil {
		return nil, err
	}
	init, err := s.DecomposeReduction(block, ks[0])
	if err := step(err, "decompose_reduction"); err != nil {
		return nil, err
	}
	// Shared tiles of a and w per K step, copied by the whole block.
	act, wt, err := operands(s, block)
	if err != nil {
		return nil, err
	}
	for _, in := range []string{act, wt} {
		c, err := s.CacheRead(block, in, schedule.Shared, nil)
		if err := step(err, "cache_read "+in); err != nil {
			return nil, err
		}
		if err := step(s.ComputeAt(c, ks[0]), "compute_at "+c); err != nil {
			return nil, err
		}
		cl, err := s.Loops(c)
		if err != nil {
			return nil, err
		}
		f, err := s.Fuse(cl[len(cl)-2], cl[len(cl)-1])
		if err := step(err, "fuse "+c); err != nil {
			return nil, err
		}
		fs, err := s.Split(f, -1, t.WM*t.WN, 32, 8)
		if err := step(err, "split "+c); err != nil {
			return nil, err
		}
		if err := step(s.Vectorize(fs[3]), "vectorize "+c); err != nil {
			return nil, err
		}
		if err := step(s.Bind(fs[2], "threadIdx.x"), "bind "+c); err != nil {
			return nil, err
		}
		if err := step(s.Bind(fs[1], "threadIdx.y"), "bind "+c); err != nil {
			return nil, err
		}
	}
	// Warps: the compute, the init and the write-back each bind their
	// (warp row, warp column) pair to threadIdx.y.
	warp, err := s.Fuse(ii[0], jj[0])
	if err := step(err, "fuse warps"); err != nil {
		return nil, err
	}
	if err := step(s.Bind(warp, "threadIdx.y"), "bind warps"); err != nil {
		return nil, err
	}
	il, err := s.Loops(init)
	if err != nil {
		return nil, err
	}
	n := len(il)
	// init loops: …, i_0_init, j_0_init, i_1_init, j_1_init, i_2_init, j_2_init
	iw, err := s.Fuse(il[n-6], il[n-5])
	if err := step(err, "fuse init warps"); err != nil {
		return nil, err
	}
	if err := step(s.Bind(iw, "threadIdx.y"), "bind init warps"); err != nil {
		return nil, err
	}
	wl, err := s.Loops(wb)
	if err != nil {
		return nil, err
	}
	n = len(wl)
	wi, err := s.Split(wl[n-2], t.WM, t.MI, 16)
	if err := step(err, "split write-back rows"); err != nil {
		return nil, err
	}
	wj, err := s.Split(wl[n-1], t.WN, t.NI, 8)
	if err := step(err, "split write-back columns"); err != nil {
		return nil, err
	}
	if err := step(s.Reorder(wi[0], wj[0], wi[1], wj[1], wi[2], wj[2]), "reorder write-back"); err != nil {
		return nil, err
	}
	ww, err := s.Fuse(wi[0], wj[0])
	if err := step(err, "fuse write-back warps"); err != nil {
		return nil, err
	}
	if err := step(s.Bind(ww, "threadIdx.y"), "bind write-back warps"); err != nil {
		return nil, err
	}
	for _, l := range []string{ks[1], ii[1], jj[1], wi[1], wj[1], il[len(il)-4], il[len(il)-3]} {
		if err := step(s.Unroll(l), "unroll "+l); err != nil {
			return nil, err
		}
	}
	if err := step(s.Tensorize(ii[2], "mma_m16n8k16_bf16"), "tensorize"); err != nil {
		return nil, err
	}
	if err := step(s.Bind(is[0], "blockIdx.y"), "bind block rows"); err != nil {
		return nil, err
	}
	if err := step(s.Bind(js[0], "blockIdx.x"), "bind block columns"); err != nil {
		return nil, err
	}
	return map[string]string{"warp": warp, "k_steps": ks[0], "init": init, "write_back": wb}, nil
}

// GPUElementwiseTiles are the knobs of the element-wise recipe.
type GPUElementwiseTiles struct {
	Threads schedule.Ref // threads per block along a row (threadIdx.x)
	Vec     int64        // elements per thread and step: 16 bytes of the dtype
	Blocks  schedule.Ref // blocks of the grid; rows are grid-strided over them
}

// GPUElementwiseDefault is 16-byte vectors, 256 threads, a grid of 4
// blocks per SM.
func GPUElementwiseDefault(dt schedule.DType, sms int) GPUElementwiseTiles {
	return GPUElementwiseTiles{Threads: schedule.Lit(256), Vec: 16 / dt.Size(), Blocks: schedule.Lit(int64(4 * max(sms, 1)))}
}

// GPUElementwiseSpace samples the threads per block and the grid size.
func GPUElementwiseSpace(s *schedule.Schedule, dt schedule.DType, sms int) (GPUElementwiseTiles, error) {
	th, err := s.SampleCategorical([]int64{64, 128, 256, 512}, nil)
	if err != nil {
		return GPUElementwiseTiles{}, err
	}
	sm := int64(max(sms, 1))
	bl, err := s.SampleCategorical([]int64{sm, 2 * sm, 4 * sm, 8 * sm}, nil)
	if err != nil {
		return GPUElementwiseTiles{}, err
	}
	return GPUElementwiseTiles{Threads: th, Vec: 16 / dt.Size(), Blocks: bl}, nil
}

// GPUElementwise schedules a 2-D element-wise block out[i, j] = f(…):
//
//	for i_0                      // grid stride over rows
//	  for i_1 bound(blockIdx.x)  // one row per block…
//	    for j_0 bound(blockIdx.y) // …and Threads·Vec columns: few rows still fill the GPU
//	      for j_1 bound(threadIdx.x)
//	        for j_2 vectorized   // 16-byte loads and stores
func GPUElementwise(s *schedule.Schedule, block string, t GPUElementwiseTiles) (map[string]string, error) {
	ls, err := s.Loops(block)
	if err != nil {
		return nil, err
	}
	if len(ls) != 2 {
		return nil, fmt.Errorf("gpu elementwise: block %s has %d loops, want 2 (rows, columns)", block, len(ls))
	}
	is, err := s.SplitBy(ls[0], schedule.Lit(-1), t.Blocks)
	if err != nil {
		return nil, fmt.Errorf("gpu elementwise split rows: %w", err)
	}
	js, err := s.SplitBy(ls[1], schedule.Lit(-1), t.Threads, schedule.Lit(t.Vec))
	if err != nil {
		return nil, fmt.Errorf("gpu elementwise split columns: %w", err)
	}
	if err := s.Vectorize(js[2]); err != nil {
		return nil, fmt.Errorf("gpu elementwise: %w", err)
	}
	for _, b := range []struct{ loop, axis string }{{js[1], "threadIdx.x"}, {js[0], "blockIdx.y"}, {is[1], "blockIdx.x"}} {
		if err := s.Bind(b.loop, b.axis); err != nil {
			return nil, fmt.Errorf("gpu elementwise bind %s: %w", b.axis, err)
		}
	}
	return map[string]string{"grid_stride": is[0], "block": is[1], "thread": js[1], "vector": js[2]}, nil
}
