// Package search turns a kernel into a tuned schedule by measuring: it draws
// schedules from the kernel's design space, lowers them to candidates,
// builds and measures them on a target in batches, and records every
// measurement in the tuning database.
//
// # Main types
//
//   - Tuner: drives one Task (kernel + thread count) on one target within a
//     Budget (trials and/or wall time). Candidate 0 is the kernel's
//     rule-based Default; the rest come from a Strategy. Each batch is
//     built in parallel and then measured (target.Measure never builds
//     while measuring), and recorded in one tuningdb transaction inside a
//     tuning run (StartRun … FinishRun).
//   - Strategy: proposes schedules not yet seen and observes the results.
//     Random is the only one now; evolutionary search with a cost model
//     plugs in behind the same interface.
//   - NewProblem, NewCandidate, CPUHardware, DeviceOf, WorkloadOf: the one
//     place where a Kernel, a schedule and a device become a
//     target.Problem, a target.Candidate and tuningdb identities. The
//     conformance suite (kernels/kerneltest), the tuner and the benchmarks
//     (bench) all go through them.
//   - CodegenVersion: the version stamped on every record. It belongs with
//     target/cpu/cgen; it lives here until that package exports one.
//
// # Design choices a newcomer asks about
//
// Resuming. The database is the tuner's memory: on start it reads every
// record of the workload on the device at CodegenVersion, counts them
// against the trial budget, never re-measures their traces (deduplication
// is by compacted trace JSON), and lets their ok records compete for best.
// An interrupted tune therefore continues where it stopped, and a second
// tune with the same budget measures nothing.
//
// Thread count is part of the workload. The same trace measured at one and
// at two threads are different measurements, and the generated code differs
// (parallel loops), so WorkloadOf adds the attribute threads=N to the
// kernel's workload before hashing it.
//
// Ties. The best is the lowest median among ok records, but a candidate
// replaces the incumbent only when target.Faster says so (not within 2% and
// IQRs not overlapping): ties go to the earlier candidate, and the rule-based
// default, candidate 0, is the simplest.
//
// Confirmation. Trials are measured minutes apart on a machine whose speed
// drifts, so the pick is not made from them directly: after the budget, the
// Options.Confirm (3) fastest ok trials and the default are measured again
// in one batch, default first, and the best is picked from that batch under
// the same tie rule. The re-measurements are recorded (more samples of the
// same traces) but are not budget trials; a resumed tune confirms again.
//
// Cancellation. When the context ends, whatever the current batch measured
// is still recorded (with a context that ignores the cancellation), the run
// is finished, and Tune returns the partial result with the context's error.
package search
