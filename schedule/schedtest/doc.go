// Package schedtest holds definitions and schedules shared by the tests and
// benchmarks of schedule, its code generators and the kernels:
//
//   - Linear and LinearKN: the linear layer's definition with w stored
//     [N, K] (as in checkpoints) or [K, N].
//   - GEMM: the prefill recipe — packed w panels at a cache block, an MR×NR
//     register tile of vector accumulators, k inner to the tile, parallel
//     over column blocks (the schedule a hand-written microkernel has).
//   - GEMV: the decode recipe — the reduction vectorized over k with an
//     MR×JU tile of vector accumulators and a horizontal sum.
//   - Random: random legal schedules drawn with the sampling steps, so that
//     every one is a replayable trace; the oracle tests run them through the
//     interpreter and the C backend.
//
// The recipes are test fixtures and starting points, not the tuned
// defaults: those belong to package kernels.
package schedtest
