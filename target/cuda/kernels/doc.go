// Package cudakernels holds the kernels that have a CUDA side: template
// kernels whose CUDA C++ is written by a generator from knob values (decode
// GEMV/skinny GEMM, prefill GEMM on tensor cores with a cp.async pipeline,
// paged decode attention, causal prefill attention, rms_norm, silu·mul, rope,
// append_kv), and the vendor baselines
// measured beside them (cuBLAS).
//
// Each type implements kernels.Kernel (definition, float64 reference,
// design space, rule-based default) and cuda.Generator (EmitCUDA), so the
// tuner, the traces and the database treat them like any other kernel: a
// schedule is the list of knob choices (kernels.Knobs), and the generator
// reads them back and prints the source.
//
// Two kinds of kernel live here. The linear and element-wise kernels of
// loopnest.go are schedules in the loop-nest IR (thread bindings, shared
// and register buffers, warp-shuffle reductions, mma.sync by Tensorize),
// printed by target/cuda/cgen. The others are templates: paged attention's
// indirect loads and online softmax, and the pipelined (cp.async) GEMM,
// need constructs the loop-nest IR does not express, so their generators
// are written per op (as FlashInfer's and vLLM's kernels are templates
// instantiated per configuration). The golden files under testdata/ are
// the generated sources of the default schedules; `go test -update`
// rewrites them.
//
// Why the design spaces hold only points a generator accepts (valid.go):
// a template generator may refuse a knob combination for a shape (a split
// that does not divide K, a ring larger than shared memory). Kernels made
// by FromWorkload or Checked sample through kernels.Knobs.SampleWhere with
// the generator itself as the predicate (each point emitted once per shape
// and cached), so the tuner and `llmir cuda check` never spend a trial or
// an nvcc run on a refused point.
//
// Why the decode GEMV at M ≥ 2 streams through a cp.async ring (mma=3): at
// M ≤ 16 the weights are read once, so the kernel is a stream whose speed
// is the bytes in flight per SM. Loads into registers (mma=2) hold a few
// KiB per warp; a warp-private ring in shared memory holds stages − 1
// whole stages of w and x per warp without registers, its copies reading
// whole row segments. When the grid is still short of warps, K is split
// across blocks: each writes an f32 partial to a workspace (one per device,
// allocated at the first call; the entries launch on the legacy default
// stream, so two launches never share it at once), and a counter per
// n-range (self-resetting, so a call needs no memset) elects the last
// block to sum the partials in a fixed order, keeping results
// deterministic, unlike f32 atomics.
//
// Why paged decode attention multiplies on tensor cores (mma=1) though it
// streams: at batch 32 the same copies with no math ran at PyTorch SDPA's
// time, and the CUDA-core math (q·k and p·v for the 4 query heads of a KV
// head, a shuffle tree per score, bf16 → f32 converts) made the kernel
// 2–3% slower. With mma.sync the query heads are the rows of A (padded to
// 16), K and V come from the warp's ring stage by ldmatrix, and S's C
// fragments are P's A fragments as they stand, so a step of 8 tokens is a
// few dozen instructions per lane: 1.9–2.6% faster at block sizes 16–128
// on the H100, at SDPA's time. The loss from padding 4 heads to 16 rows
// costs nothing here; the tensor cores are idle most of the time either way.
//
// Why GEMM's large-problem inputs are periodic (GEMM.Fill through
// kernels.FillPeriodic, shared with the CPU linears): the float64
// reference of a 4096×28672×4096 product takes minutes in Go; activations
// whose rows repeat with power-of-two scales (exact in bf16 and in every
// partial sum) need only 61 rows of dot products, while no two rows a
// power-of-two number of tiles apart are equal, so a misplaced tile still
// fails validation.
package cudakernels
