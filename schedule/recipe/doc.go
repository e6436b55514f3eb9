// Package recipe holds schedule templates: functions that apply a fixed
// sequence of primitives whose tile sizes are operands, so that a kernel's
// design space (package kernels) samples the sizes and the recorded trace
// replays, and mutates, like any other.
//
//   - GEMM: the prefill shape — packed w panels at a cache block, an MR×NR
//     register tile of vector accumulators, k inner to the tile, parallel
//     over column blocks (what a hand-written microkernel does).
//   - GEMV: the decode shape — the reduction vectorized over k with an
//     MR×JU tile of vector accumulators and a horizontal sum, w streamed
//     once, parallel over row chunks of w; optionally the MR-row blocks
//     inside each tile (RowsInner) and a software prefetch of w's rows
//     (Prefetch, the schedule.Prefetch annotation on the k loop).
//   - GEMVOuter: the decode shape with M up to one vector of rows — a sum
//     of outer products: a transposed once (k outer, rows inner), a
//     register tile of JU vectors (one per row of w, rows of a in the
//     lanes: cache_write + set_layout), w broadcast into the FMAs, no
//     horizontal sums; w streamed once with one prefetch per line of each
//     row, parallel over row chunks of w. With KG > 1 (and k blocks) each
//     vector holds MV/KG rows × KG k steps instead: a is copied as
//     [k/KG][i·KG + k%KG] (a merged layout), KG floats of w are broadcast
//     to every lane group (the printer's group broadcast), KG vectors of a
//     serve JU rows of w, and a second rfactor adds the KG partial sums of
//     each output at the write-back.
//   - GEMM with PackA also copies the MR×KC block of a per row block into a
//     [KC][MR] local, so its broadcasts read one contiguous stream.
//
// The recipes take schedule.Ref knobs; a literal is schedule.Lit(v).
package recipe
