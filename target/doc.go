// Package target is what every backend (target/cpu now, target/cuda later)
// shares: the Target interface that builds and measures candidates, and the
// types that cross it.
//
// Main types:
//
//   - Problem: one concrete kernel instance — buffers (BufferSpec, in ABI
//     order: inputs, then outputs), runtime dims, a seeded input generator
//     (uniform in [-1,1], never zero, rounded to the storage dtype), the Go
//     reference (float64), a relative-L2 tolerance per dtype, and FLOPs and
//     bytes for GFLOP/s and GB/s. The reference runs once per Problem.
//   - Candidate: one translation unit following the target's ABI (source,
//     entry symbol, extra flags, thread count, variables to unset).
//   - Built: a candidate after Build — an artifact or a build failure.
//   - Measurement: Status (ok, build_error, runtime_error, timeout,
//     wrong_result), the error text, the relative error, every timed sample
//     in seconds, and median, min and IQR.
//   - Tied / Faster: the protocol's tie rule (within 2% or overlapping IQRs).
//
// Design choices a newcomer asks about:
//
// Failures are values, not errors. Build and Run return a Measurement for
// every candidate — a candidate that does not compile, crashes, hangs or
// computes garbage is a data point for the tuner, and the batch goes on.
// The error results of Build and Run are for the infrastructure only
// (no compiler, cancelled context).
//
// Results are keyed by candidate ID, never by arrival order: builds finish
// in any order, and a restarted harness must not shift results.
//
// Measure builds the whole batch before it measures any of it: on the CPU
// a compiler running beside a timed kernel steals its cores and caches.
//
// Validation compares against a float64 Go reference with a relative L2
// norm, not element-wise: summation order legitimately differs between
// schedules, and ‖out−ref‖/‖ref‖ bounds that uniformly; a NaN anywhere (the
// outputs are NaN-poisoned before the run) makes it +Inf.
package target
