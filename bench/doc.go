// Package bench holds llmir's benchmark suites: each tunes its kernels
// with search, measures the tuned and default schedules next to the
// baselines in one harness run, relates the numbers to the device's
// roofline and the project's goals, and stores them in the tuning
// database's bench_results table for dashboards.
//
// # Main types
//
//   - Shape, ParseShapes, DefaultLinearShapes: the linear suite's shapes
//     (M×N×K; the 1024³, Llama-3-8B prefill at M=512 and decode at
//     M ∈ {1, 4, 16}).
//   - Linear: runs the suite at one thread count and returns one
//     LinearResult per shape; WriteLinearTable prints them.
//   - Goal: the goal for a shape class (prefill GEMM, decode GEMV,
//     skinny GEMM) and whether a result meets it.
//   - TuneSummary: the tune (trials, run, best trace) and the closing
//     batch's default and tuned measurements, embedded in the result of
//     every suite that tunes (LinearResult, PagedResult, PrefillResult,
//     QuantKernel); compare.go holds the one tune-then-measure sequence
//     they share.
//
// # Design choice a newcomer asks about
//
// Why measure the tuned schedule again. The tuner's median of the best
// trial is the minimum over many noisy candidates, and it was measured
// minutes before the baseline. The protocol wants baselines "measured by the
// same harness in the same run", so after tuning each shape the default,
// the tuned schedule and OpenBLAS are built and measured together in one
// batch, twice in mirrored order with the samples of both passes pooled (a
// machine whose speed drifts during the batch then favours none), and those
// three numbers are the ones reported. OpenBLAS runs with
// OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (cpu.OpenBLASUnsetEnv) for
// that candidate only, as the protocol asks of benchmarks. When the tune's
// best is the default's own trace, that code is measured once and stands
// for both.
//
// Why measure read bandwidth again. The roofline probe is cached once per
// machine, and on a shared VM the bandwidth moves by tens of percent over
// a day, so goals stated as shares of read bandwidth (paged attention,
// decode GEMV and skinny GEMM) are judged against cpu.ReadCandidate — a
// four-stream read of as many bytes as the kernel moves, through the same
// harness, input rotation and thread count — measured just before and just
// after the closing batch (tuneCompareRead). The cached probe's share is
// reported beside it. Even that pair moves between harness processes (one
// process's buffers read faster than another's), so ClosingRuns repeats
// the sequence in fresh processes and pools the samples (--closing-runs).
package bench
