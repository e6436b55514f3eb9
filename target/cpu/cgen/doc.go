// Package cgen prints a schedule.Nest as one C translation unit following
// the CPU kernel ABI, for target/cpu to build with gcc and measure:
//
//	int <entry>(void *const *bufs, const int64_t *dims);
//
// bufs[i] is parameter i of the nest (inputs, then outputs; dense row-major,
// 64-byte aligned base pointers, declared restrict and
// __builtin_assume_aligned), dims[j] the runtime extent of dynamic dim j,
// checked against its bucket (return 2 when outside). The function returns
// 0, 1 when a scratch allocation fails.
//
// Entry point: Emit(nest, Options{Entry, VectorBits, StackLimit, MaxUnroll}).
// VectorBits comes from the device fingerprint (512 with avx512f, 256 with
// avx2+fma, else 128; 0 prints scalar code).
//
// # How loop kinds are printed
//
//   - Parallel: `#pragma omp parallel for schedule(static)`. OpenMP rather
//     than hand-rolled threads because gcc then owns the thread pool, the
//     work split and the barrier, the kernel stays one function, and a
//     kernel without parallel loops costs nothing; the runner sets
//     OMP_NUM_THREADS. Scratch buffers too large for the stack that are
//     allocated inside a parallel loop are allocated once per thread in an
//     enclosing `#pragma omp parallel` region, not once per iteration.
//   - Unrolled: expanded in full when the extent is a constant ≤ MaxUnroll;
//     a tail extent such as min(6, M - i_0*6) is expanded to its bound with
//     a guard per copy, so indices stay constant. One-iteration loops are
//     always expanded.
//   - Vectorized: the body is printed with GCC vector extensions
//     (typedef float llmir_vf __attribute__((vector_size(VectorBits/8))))
//     when every access is either independent of the loop (a broadcast,
//     llmir_splat) or walks the last physical dimension with stride 1 (an
//     unaligned vector load/store through __builtin_memcpy), the data is
//     f32, and the value uses only + - * /. Constant extents of up to 8
//     vectors are expanded chunk by chunk; other extents get a vector main
//     loop and a scalar remainder. Anything else falls back to a scalar loop
//     with `#pragma GCC ivdep`, so every legal nest still compiles.
//
// # Register tiles become locals
//
// A register-scope buffer whose accesses all have constant indices after
// unrolling is printed as separate variables, one llmir_vf per vector chunk
// of the last dimension (out_rf_0_3_v1) or one float per element; otherwise
// it falls back to a stack array. The decision is only known after printing
// every access, so Emit prints until the decisions settle (at most a few
// passes). Local buffers are 64-byte-aligned stack arrays up to StackLimit
// bytes (32 KiB by default) and aligned_alloc'd above it.
//
// # Edge tiles: loop versioning
//
// When N is not a multiple of the register tile's width, the tile's vector
// loop gets an extent min(NR, N - j*NR); indices under it are no longer
// constant and the tile would be an array for every tile, not just the
// last (llama-tiny's 512×688×256 MLP ran 3–5× slower per FLOP than
// 512×256×256). So, as Halide partitions loops and BLIS special-cases edge
// tiles, the body of the loop that allocates a register tile is printed
// twice when the extent of a vector loop under it contains a min(C, e)
// with e fixed for the body:
//
//	if (e >= C) { /* full register tile: min(C, e) pinned to C, locals */ }
//	else        { /* edge tile: the generic body, array fallback */ }
//
// The tails are found by printing the body once and discarding the text
// (unrolled inner loops have substituted their constants by then), and
// every loop extent of the full copy is rewritten with them, so a guarded
// unroll over the same tail is expanded without guards there too. Each copy
// keeps its own promotion decision (gen.ver), so the edge copy falling back
// to an array leaves the full copy in registers. Versioning is dropped
// again where it buys nothing — the full copy is an array as well (say, a
// strided vector loop printed as scalars), or both copies keep the tile in
// registers and no guard was dropped — so shapes without tails print the
// same code as before. Guarded unrolled tails (min(MR, M - i*MR)) keep
// constant indices already, but their guards cost: a guarded unrolled
// loop's extent (min(JU, N - j*JU), or d_M - i*4 once the bucket bounds
// it) is a tail too, pinned to its bound in the full copy. gcc does not
// unswitch a k loop with a guard before every FMA: in the decode tile of
// 4 rows of a × 6 rows of w (N = 4096 is no multiple of 6, M is dynamic)
// the k loop had ten compares and branches for 24 FMAs, and the 4×4096×4096
// default with prefetching measured 11 ms with them, 2.6 ms without.
// A vector loop's extent with no min left in it but bounded by a few
// vectors (4·d_M - 48 for the last rows of the grouped outer-product tile,
// once the bucket d_M ≤ 16 folded its min) is pinned whole to its bound.
// Options.NoVersioning turns versioning off (the baseline of
// BenchmarkTailVersioning).
//
// # Software prefetch
//
// A loop annotated by schedule.Prefetch(loop, buf, d) gets, at the top of
// its body, one __builtin_prefetch(&buf[…], 0, 3) per distinct address its
// body reads buf at, with the loop variable advanced by d. The body is
// printed first and the prefetches put in front of it, so unrolled inner
// loops have already substituted their constants (the decode tile's JU
// rows of w give JU prefetches). Addresses that mention an inner loop's
// variable are skipped (not in scope at the top); a prefetch past the end
// of a buffer never faults. Accesses that provably share a 64-byte line
// (every variable's coefficient a multiple of the elements per line, only
// the constant term differing) share one prefetch, at the line's start: the
// outer-product decode recipe reads w[j, k0·16 + k1] for 16 unrolled k1,
// one line per row of w and iteration, and gets one prefetch per row.
//
// # Broadcast operands
//
// In a vector loop over the rows of a (recipe.GEMVOuter), w[j, k] does not
// depend on the vector variable and is printed as llmir_splat(w[…]); gcc
// folds the splat of a memory scalar into the FMA as an embedded broadcast
// (vfmadd231ps mem{1to16}, TestGEMVOuterAssembly), so the broadcast costs
// no instruction. The register tile is laid out [rows of w][rows of a]
// (schedule.SetLayout), so each row of w is one llmir_vf local and the
// write-back reads single lanes (acc_3_v0[i]).
//
// A group broadcast is the same idea for G > 1 floats: when the vector
// loop is fused from (rows, k group) — recipe.GEMVOuter with KG = 4 puts 4
// rows × 4 k steps in one vector — w[j, k] reads base + f % 4, so lanes
// l and l + 4 read the same element, and the access is printed as
// llmir_bcast4(&w[base]): vbroadcastf32x4 from memory with AVX-512 (the
// header gets the helper, and <immintrin.h>, only when a kernel uses it;
// gcc 12 turns the portable vector forms into stack round trips). The
// copied a and the accumulators use a merged layout (schedule.Layout.Merge)
// so that the fused loop walks their last physical dim with stride 1; the
// simplifier reads (f / 4)·4 + f % 4 back as f.
//
// # Horizontal sums
//
// The decode recipe (recipe.GEMV) keeps KV k-lanes of partial sums per
// output in one vector and reduces them in the write-back, an unrolled loop
// over the lanes. When such a loop covers exactly one register vector and
// stores into one element, it is printed as llmir_hsum (halving vector adds,
// then a pairwise sum of four lanes) instead of one dependent scalar add per
// lane. llmir_hsum builds its halves from lane reads, not from memcpy of the
// vector's address: an address-taken accumulator makes gcc keep the whole
// register tile in memory inside the k loop (a load and a store per FMA).
//
// # What gcc makes of the GEMM microkernel
//
// For schedtest.GEMM with a 6×32 register tile at VectorBits 512, gcc 12
// -O3 -march=native compiles the k loop to 6 vbroadcastss of a and 12
// vfmadd231ps %zmm, %zmm, %zmm into 12 accumulator registers, with the two
// 16-float panel vectors loaded once per k step — the loop a hand-written
// microkernel has (TestMicrokernelAssembly checks it with objdump).
package cgen
