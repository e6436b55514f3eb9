// Package schedtest holds definitions and schedules shared by the tests and
// benchmarks of schedule, its code generators and the kernels:
//
//   - Linear and LinearKN: the linear layer's definition with w stored
//     [N, K] (as in checkpoints) or [K, N].
//   - GEMM and GEMV: package recipe's templates with literal tiles, in the
//     units tests think in (NC columns rather than NC/NR register blocks).
//   - Random: random legal schedules drawn with the sampling steps, so that
//     every one is a replayable trace; the oracle tests run them through the
//     interpreter and the C backend.
//
// The recipes are test fixtures and starting points, not the tuned
// defaults: those belong to package kernels.
package schedtest
