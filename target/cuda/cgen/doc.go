// Package cgen prints a scheduled schedule.Nest as CUDA C++: one __global__
// kernel and the host entry of the CUDA kernel ABI,
//
//	int <entry>(void *const *bufs, const int64_t *dims);
//
// which checks each dynamic dim against its bucket (return 2 when outside),
// derives the launch from the bound loops, launches on the default stream
// and returns cudaGetLastError(). bufs[i] is parameter i of the nest
// (device pointers, ABI order); the dynamic dims are passed to the kernel
// as ints (indices are 32-bit: Emit refuses parameters of 2^31 elements).
//
// Entry point: Emit(nest, Options{Entry, Kernel}). The kernels in
// target/cuda/kernels (loopnest.go) call it on the schedules of
// schedule/recipe's GPU recipes.
//
// # How the nest maps to CUDA
//
//   - Bound loops become `const int v = blockIdx.x;` (or threadIdx.*). The
//     grid and block dims are the largest bound of the loops on each axis;
//     a loop whose extent is smaller (a tail) is guarded. A grid axis whose
//     loops all have one extent in dynamic dims only is launched at the
//     runtime extent and needs no guard.
//   - Serial and unrolled loops are C loops (`#pragma unroll` for the
//     latter; nvcc unrolls constant trip counts). Parallel loops (CPU) are
//     refused.
//   - Shared buffers are static `__shared__` arrays (rows of 32·k bytes
//     padded by 16 bytes against bank conflicts); they must be allocated
//     under the blockIdx loops and outside every threadIdx loop, and all
//     together fit 48 KiB.
//   - Register (and local) buffers are per-thread arrays declared at their
//     allocating loop. An index term in a threadIdx-bound loop below the
//     allocation selects the thread's slice, so it is dropped: an rfactor
//     buffer out_rf[M, 1, 32] indexed by the lane becomes float out_rf[M]
//     in every lane. All accesses must give threads the same slices.
//   - Vectorized loops print 16-byte (or 8-, 4-byte) loads and stores when
//     the store and a load are contiguous in the lane and aligned to the
//     width (proved on the index, floordiv/mod by a multiple of the width
//     included, which keeps fused-then-split copies vectorized); other
//     loads are per lane, and tails or unprovable stores fall back to a
//     scalar loop.
//   - A reduction loop bound to threadIdx.x (the write-back of an rfactor,
//     see schedule.CrossThreadReduction) is a warp-shuffle tree
//     (__shfl_xor_sync), plus shared memory across warps when it has more
//     than 32 threads; thread 0 stores.
//   - A Tensorized loop (mma_m16n8k16_bf16) is one mma.sync per warp with
//     its fragment loads (a 32-bit load where two bf16 are adjacent and
//     aligned, else two loads packed). Its accumulator lives in the mma
//     fragment layout (4 floats per lane and 16×8 tile); other loops over
//     the accumulator (its init and write-back) must end in a 16×8 loop
//     pair, which is printed as the lane's four elements.
//
// # Barriers are derived, not scheduled
//
// Outside threadIdx-bound loops every thread of a block runs the same
// statements, so the printer tracks, per statement list, the shared
// buffers read and written since the last barrier and inserts
// __syncthreads() before a statement that reads what another wrote (or
// writes what another read), and at the end of a loop body whose next
// iteration would overwrite what this one read. A barrier under a thread
// guard (a tail) would deadlock, so such a nest is refused.
//
// Why a separate printer from target/cpu/cgen: the two share the nest and
// the expression language, but nothing of their output — the CPU printer's
// work is vector types, register tiles and OpenMP, this one's is thread
// mapping, memory scopes and warp-level instructions.
package cgen
