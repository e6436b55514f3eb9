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
//     Random draws from the design space (the Tuner's default);
//     Evolutionary (NewEvolutionary) breeds children of the fastest measured
//     trials by mutating or crossing their sampling decisions, scores them
//     with a cost model and proposes the best, with an ε share at random.
//   - OnlineModel: the cost model one tune shares across its tasks and
//     strategies; it learns every ok measurement once, and is saved per
//     device in the tuning database (LoadOnlineModel, Save) so that the next
//     tune starts trained.
//   - Scheduler: splits a model's trial budget (ModelBudget: total trials,
//     time, PerTask cap) over its tasks, one step at a time, to the task
//     with the largest expected gain in seconds per token per trial;
//     tasks stop early when they stop improving (Patience).
//   - TuneModel: a whole model's tune — ir.Partition into kernel groups
//     (fused and unfused alternatives), a kernel per distinct workload, the
//     Scheduler over them with a Tuner per step and a shared OnlineModel,
//     then a per-token time estimate default vs tuned (ModelResult).
//   - CompileModel: the compile side — per workload the best record by a
//     tuningdb.Layered lookup (else the rule-based default), its C source
//     (Source), the dispatch table over shape buckets, and per group the
//     faster alternative.
//   - NewProblem, NewCandidate (Source under the symbol Entry),
//     CPUHardware, DeviceOf, WorkloadOf: the one place where a Kernel, a
//     schedule and a device become a target.Problem, a target.Candidate and
//     tuningdb identities. The conformance suite (kernels/kerneltest), the
//     tuner, compile and the benchmarks (bench) all go through them.
//
// Records carry cgen.CodegenVersion (target/cpu/cgen): lowering and C
// generation define what a stored trace means, so the version lives there.
//
// # Design choices a newcomer asks about
//
// Resuming. The database is the tuner's memory: on start it reads every
// record of the workload on the device at cgen.CodegenVersion, counts them
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
