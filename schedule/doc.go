// Package schedule is llmir's schedule language: a kernel's computation is
// written once as a compute definition, lowered to a loop nest, and
// transformed by schedule primitives whose applications (with the decisions
// of sampling steps) form a replayable trace. A Go interpreter of loop nests
// is the oracle every primitive is tested against; backends
// (target/cpu/cgen) print the nest as code.
//
// # Main types
//
//   - Def: a compute definition built with Input, NewAxis, Compute, Sum and
//     the expression helpers (Mul, Add, Fn("silu", …)); Def.String prints
//     `out[i, j] = sum(k, a[i, k] * w[j, k])`. Tensors have a DType (f32; bf16
//     and f16 are storage types, arithmetic is f32) and Dims, static or
//     Dynamic with a bucket (the kernel is correct for every runtime extent
//     up to the bucket, read from dims[j]).
//   - Nest: the loop-nest IR. Buffers (parameters in ABI order, then
//     intermediates and caches) with a Scope (global, local, register,
//     shared) and an optional packed Layout; Loops with a Kind (serial,
//     parallel, vectorized, unrolled, bound to a GPU axis) and an Extent
//     that may depend on outer loops (tails) and on dynamic dims; Blocks, the
//     leaves: one store each, with iteration axes bound to loop expressions.
//     Nest.String is the readable, deterministic printer (golden files in
//     testdata/*.nest).
//   - Schedule: a nest plus the Trace being recorded. Primitives: Split,
//     Tile, Reorder, Fuse, Vectorize, Unroll, Parallel, Bind, CacheRead,
//     CacheWrite, SetScope, SetLayout (a packed layout for an intermediate
//     buffer, e.g. a register tile with its vector dim last), ComputeAt,
//     ReverseComputeAt, ComputeInline,
//     DecomposeReduction, RFactor, Prefetch (an annotation: each iteration
//     of a loop requests what iteration +d reads of a global buffer; a
//     backend may ignore it, results never change), and for GPUs Tensorize (a 16×8×16 loop
//     nest onto mma.sync); Bind of an rfactor write-back's reduction loop
//     to threadIdx.x is a cross-thread reduction (CrossThreadReduction);
//     sampling steps SamplePerfectTile and
//     SampleCategorical (seeded RNG). Every primitive checks legality and
//     returns an error wrapping ErrIllegal, leaving the schedule unchanged.
//   - Trace: the instruction list as JSON; Replay(def, trace) rebuilds the
//     same nest on a fresh lowering; Trace.WithDecision mutates a sampling
//     decision, and replaying gives a neighbouring schedule. Failures wrap
//     ErrReplay.
//   - Interpret: runs a nest in float64 (stores round to the buffer's
//     dtype), with bounds checks and NaN-poisoned scratch buffers.
//
// # Design choices a newcomer asks about
//
// Blocks with bindings (as in TVM's TensorIR). A block's body is written in
// its own axes (vi, vj, vk) and never changes; primitives rewrite loops and
// the binding of each axis (vi = i_0 * 6 + i_1). Loop variables and axes
// never share a name, so substituting a loop variable is always safe.
//
// Tails are bounded extents, not guards or peeled copies: splitting an
// extent E by f gives an inner loop of min(f, E - o*f) iterations, so every
// iteration is in bounds and nests stay perfectly nested (reorder and fuse
// keep working). The simplifier removes the min when the ranges prove f
// divides E. The C backend then unrolls such loops with a guard per copy
// and vectorizes them as a vector main part plus a scalar remainder.
//
// Reduction init without an order constraint. A reduction block stores its
// Init whenever every loop variable that feeds only reduction axes is zero
// — the first visit of that output element in any loop order — so reorder
// is always legal; DecomposeReduction hoists the init into its own block.
//
// compute_at is region-based. ComputeAt/ReverseComputeAt compute, from the
// affine accesses under the target loop, the tile one iteration touches
// (lower corner in outer loop variables, constant size bound, clamped to
// the buffer) and rebuild the moved block's loops over it; a scratch
// buffer whose every access is then under the loop shrinks to the tile and
// is allocated there (Buffer.AllocAt). cache_write + reverse_compute_at of a
// register buffer is how accumulators become a register tile.
//
// K-blocked accumulation is RFactor. A register tile must hold complete
// values when written back; with the reduction split into cache blocks
// (k_0 outside the tile), RFactor(k_0) makes the partial sums explicit and
// the write-back out = (k_0 == 0 ? 0 : out) + acc a reduction over k_0.
//
// # Worked example: a GEMM in microkernel shape
//
// The linear layer out[i, j] = sum(k, a[i, k] * w[j, k]) scheduled as a
// hand-written kernel would be (schedtest.GEMM is this recipe as a
// function):
//
//	M, N, K := schedule.Dynamic("M", 512), schedule.Static(4096), schedule.Static(4096)
//	i, j, k := schedule.NewAxis("i", M), schedule.NewAxis("j", N), schedule.NewAxis("k", K)
//	a := schedule.Input("a", schedule.F32, M, K)
//	w := schedule.Input("w", schedule.F32, N, K)
//	out := schedule.Compute("out", schedule.F32, []schedule.Axis{i, j},
//		schedule.Sum(k, schedule.Mul(a.At(i, k), w.At(j, k))))
//	def, _ := schedule.NewDef("linear", []*schedule.Tensor{a, w}, out)
//
//	s, _ := schedule.New(def, seed)
//	is, _ := s.Split("i", -1, 6)          // i_0, i_1: 6 rows of the register tile
//	js, _ := s.Split("j", -1, 8, 32)      // j_0 (cache block of 256), j_1, j_2: 32 columns
//	ks, _ := s.Split("k", -1, 256)        // k_0 (cache block of depth), k_1
//	s.Reorder(js[0], ks[0], is[0], js[1], ks[1], is[1], js[2])
//	rf, _ := s.RFactor("out", ks[0], 0)   // partial sums per k block
//	pack, _ := s.CacheRead(rf, "w", schedule.Local,
//		&schedule.Layout{Tile: []int64{32, 0}, Order: []int{0, 2, 1}}) // w[n/32][k][32]
//	s.ComputeAt(pack, ks[0])              // pack one 256×256 panel per (j_0, k_0)
//	s.ReverseComputeAt("out", js[1])      // write back after each 6×32 tile
//	s.SetScope("out_rf", schedule.Register)
//	init, _ := s.DecomposeReduction(rf, ks[1])
//	for _, b := range []string{init, rf, "out"} {
//		ls, _ := s.Loops(b)
//		s.Unroll(ls[len(ls)-2])           // the 6 rows
//		s.Vectorize(ls[len(ls)-1])        // the 32 columns: 2 × 16 lanes
//	}
//	s.Parallel(js[0])
//
// The nest's inner loop is then (testdata/gemm_microkernel.nest prints the
// whole nest at a small shape):
//
//	for k_1 in 0..256:
//	  for i_1 in 0..6 unrolled:
//	    for j_2 in 0..32 vectorized:
//	      block out_rf(...): out_rf[..] += a[vi, vk] * w_local[vj - j_0 * 256, vk - k_0 * 256]
//
// which target/cpu/cgen prints as 12 vector accumulators, 6 broadcasts of
// a and 2 vector loads of the packed panel per k step, and gcc -O3 turns
// into 12 register-to-register vfmadd231ps on zmm. For decode shapes
// (M ≤ 16) schedtest.GEMV vectorizes the reduction instead (rfactor over 16
// k lanes, one accumulator per row of a, one w load shared by all rows).
package schedule
