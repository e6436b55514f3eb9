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
//     tuning run (StartRun … FinishRun). The first batch also carries the
//     replays of other machines' records (see Replay below).
//   - Strategy: proposes schedules not yet seen and observes the results.
//     Random draws from the design space (the Tuner's default);
//     Evolutionary (NewEvolutionary) breeds children of the fastest measured
//     trials by mutating or crossing their sampling decisions, scores them
//     with a cost model and proposes the best, with an ε share at random.
//     It asks the Tuner for batches of EvolveOptions.Batch (4), so that the
//     model learns between them, and at cold start leads its first batch
//     with the best trace of another workload of the same kernel group
//     (Evolutionary.Transfer; TuneModel hands over the tune's results,
//     fastest first): of those that align with the kernel's own draws, the
//     one the model scores highest on this shape, not the fastest
//     sibling's (that is the smallest shape's). costmodel.SimulateEvolution
//     mirrors this on measured pools. The
//     shared model scores a cold shape's candidates by what another shape
//     of the same kernel measured at the same knob values, weighted by how
//     well the other shapes' rankings agree with each other in the buffer
//     (costmodel.GBTParams.SiblingWeight and SiblingShare; Focus names the
//     task scored, which never informs its own weight). The transfer's
//     ranking and every batch read the same scores, here and in the
//     simulation.
//   - OnlineModel: the cost model one tune shares across its tasks and
//     strategies; it learns every ok measurement once, and is saved per
//     device in the tuning database (LoadOnlineModel, Save) so that the next
//     tune starts trained.
//   - Scheduler: splits a model's trial budget (ModelBudget: total trials,
//     time, PerTask cap) over its tasks, one step at a time, to the task
//     with the largest expected gain in seconds per token per trial;
//     tasks stop early when they stop improving (Patience). Its first,
//     round-robin pass goes by decreasing weight (decode's workloads, which
//     run once per token, before prefill's); under a time budget each
//     step is sized to StepTime by the task's seconds per trial and picks
//     weigh the gain per second.
//   - budget.go: what sizes a tune to kernels of very different cost —
//     RunFor (fewer minimum samples and a call-scaled timeout for slow
//     kernels), TrialCost and CallEstimate (a priori from the roofline,
//     then from the measured default), FuncsExcluded (ModelOptions.Funcs,
//     `llmir tune --function`), and the cap on problems kept in memory.
//   - TuneModel: a whole model's tune — ir.Partition into kernel groups
//     (fused and unfused alternatives), a kernel per distinct workload, the
//     Scheduler over them with a Tuner per step and a shared OnlineModel,
//     then a per-token time estimate default vs tuned (ModelResult).
//   - CompileModel: the compile side — per workload the best record by a
//     tuningdb.Layered lookup (else the rule-based default), its C source
//     (Source), the dispatch table over shape buckets, and per group the
//     faster alternative.
//   - Backend: a target kind as the tuner, TuneModel and CompileModel
//     see it — the kernel of an IR workload, the printer of a schedule,
//     the device and codegen version records carry. CPUBackend prints C
//     (cgen, template generators); cudabench.Backend prints CUDA C++
//     through the cudakernels generators. NewTuner makes a Tuner for any
//     backend; ModelOptions.Backend and CompileOptions.Backend select one
//     (nil: the CPU, as before).
//   - ExportDataset (`llmir db dataset`): one CPU device's ok records as
//     the cost model's evaluation dataset (costmodel.Example lines), the
//     kernel rebuilt from the stored workload, the default flagged by
//     today's rule; records whose trace no longer replays are counted,
//     not fatal. costmodel's TestGenerateDataset tunes into a database
//     and exports it with this.
//   - NewProblem, NewCandidate (Source under the symbol Entry),
//     CPUHardware, DeviceOf, WorkloadOf: the one place where a Kernel, a
//     schedule and a device become a target.Problem, a target.Candidate and
//     tuningdb identities. The conformance suite (kernels/kerneltest), the
//     tuner, compile and the benchmarks (bench) all go through them.
//
// Records carry the backend's codegen version: cgen.CodegenVersion
// (target/cpu/cgen) for the CPU, cudakernels.CodegenVersion for CUDA;
// lowering and generation define what a stored trace means, so each
// version lives with its printer.
//
// The cost model on CUDA: the template kernels have no loop nest, so the
// features are costmodel's template features (knob decisions plus the
// work's roofline terms), on a device described by the GPU's read
// bandwidth (probed, else a nominal H100 figure), L2 and SM count; the
// model is saved per device like the CPU's.
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
// Replay. What other machines measured is tried early, never trusted: at
// the start of a task the Tuner takes up to Options.Replay (3) of the best
// traces recorded for the same workload at the same codegen version on this
// device's class (tuningdb.Layered.Ranked over the user's database, then
// Tuner.Precompiled: the lookup's exact and compatible-device levels, in
// its order) that this device has not measured, that replay on the kernel
// and that the kernel accepts on this hardware (kernels.Validator), and
// puts them in its first batch after the default, on top of the
// strategy's proposals (so Evolutionary's transfer still comes) and within
// the trial budget. A record that does not replay or is refused is
// skipped without error. The replays are then measured, validated and
// recorded like any trial (Trial.Replayed marks them), so a wrong one is
// never best, the evolutionary strategy breeds from those that are fast,
// and the next tune resumes them instead of replaying them again.
// TuneModel replays from the precompiled database built into llmir unless
// ModelOptions.Precompiled names another; Replay < 0 turns it off. The
// offline simulation (costmodel.SimulateEvolution) has no other device's
// records and does not model it.
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
// A model tune under a time budget keeps time for it (Scheduler.Reserve).
//
// Cancellation. When the context ends, whatever the current batch measured
// is still recorded (with a context that ignores the cancellation), the run
// is finished, and Tune returns the partial result with the context's error.
package search
