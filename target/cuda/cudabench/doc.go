// Package cudabench measures the CUDA kernels on the GPU and connects them
// to the tuner: a conformance check (every kernel's default and sampled
// schedules validated against its Go reference on odd shapes), benchmark
// suites (llama-3-8b's decode and prefill kernels, built from the IR
// workloads of the imported bf16 model: a short random tune per kernel,
// the vendor baseline in the same harness run, every result related to
// the measured copy bandwidth), and Backend, the CUDA target as
// search.Tuner, search.TuneModel and search.CompileModel see it.
//
// Every measurement is recorded in the tuning database under the GPU's
// fingerprint (DeviceOf) and the IR workload's key (search.WorkloadOf with
// threads=1), so `llmir compile --target cuda` finds the suites' records as
// well as those of `llmir tune --target cuda`.
//
// Options.Points (`llmir cuda bench --knobs`) adds knob points to a run:
// each point, laid over a kernel's default values, is one more trial of
// every kernel that has all its knobs, so a tile sweep is one device call
// and its rows compare each point with the default and the baseline
// measured in the same harness session.
//
// Options.Read (`llmir cuda bench`, on by default) times beside every
// memory-bound row a plain read of the row's bytes (cuda.Runner.ReadBound:
// the same L2 flush, warm-up and budget, the fastest of a few grids): the
// copy bandwidth is measured on 1 GiB, and a read of the 8 or 32 MiB of a
// decode weight, launch and first-load latency included, stays far below
// it, so the row's share of the read (% read) says how much a kernel could
// still gain, and the baseline over the read (read÷base) how far ahead of
// cuBLAS any kernel moving those bytes could get.
//
// Why the suites keep their own loop instead of search.Tuner: a suite
// builds every task's candidates in one nvcc batch (batches then span
// tasks and keep all cores busy) and measures each task next to its
// baseline in one harness session; the tuner works task by task in
// rounds. Both use the same pieces: search.NewProblem, DefaultSchedule,
// SampleSchedule, TraceKey and WorkloadOf, cudakernels.NewCandidate and
// cudakernels.CodegenVersion.
//
// Why Backend lives here and not in search: the CUDA kernels' tests
// import search, so search cannot import them.
package cudabench
