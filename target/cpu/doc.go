// Package cpu is the CPU target: it fingerprints the machine, builds C
// candidates with gcc, measures them in a harness child process, probes the
// roofline, and provides the OpenBLAS and naive baselines.
//
// # The ABI
//
// A candidate is one C translation unit that defines, with external linkage,
//
//	int <entry>(void *const *bufs, const int64_t *dims);
//
// bufs[i] is buffer i of the problem in declared order (inputs, then
// outputs), dense row-major and 64-byte aligned (base pointers only);
// dims[j] is the runtime extent of dynamic dim j. It returns 0, or non-zero
// for a detected error (recorded as runtime_error). Parallel loops use
// OpenMP; the runner sets OMP_NUM_THREADS (and OPENBLAS_NUM_THREADS) in the
// child from Candidate.Threads. Candidates are compiled with BaseFlags
// (-O3 -march=native -fopenmp -fPIC -shared) plus their own flags, into a
// content-addressed cache (hash of gcc version, flags and source).
//
// # Why dlopen and a fresh process after a crash
//
// The harness (csrc/harness.c, embedded, compiled once per cache dir) is
// generic: it loads each candidate's shared object with dlopen, so one
// process measures a whole batch without recompiling anything, and the
// inputs are loaded and copied once. But a candidate is arbitrary native
// code: it can segfault, spin forever or scribble over the harness. So the
// harness runs as a child, driven line by line over stdin/stdout; a crash
// (EOF plus the signal), a hang (no reply within the per-candidate
// timeout, then SIGKILL), or a garbled reply marks that candidate
// (runtime_error / timeout) and the rest of the batch continues in a fresh
// harness. The harness also starts fresh whenever the thread count or the
// environment changes, since OpenMP and OpenBLAS read them once at load.
//
// # The timing protocol
//
//  1. Build the whole batch (in parallel, up to the core count), then
//     measure it one candidate at a time; never both at once.
//  2. Validate: outputs poisoned with NaN, 64-byte guard bands of sentinel
//     bytes around every buffer; one call; then the harness checks the guard
//     bands (a write outside → wrong_result) and that inputs are unchanged
//     (→ wrong_result), and Go compares the outputs with the reference
//     (‖out−ref‖/‖ref‖ ≤ tolerance, else wrong_result). Only valid
//     candidates are timed.
//  3. Time by budget: warm up ≥ 25 ms (at least one call), then time single
//     calls with CLOCK_MONOTONIC until ≥ 100 ms and ≥ MinSamples (both
//     configurable in target.RunOptions). When one copy of all buffers is
//     smaller than 2× the last-level cache, the calls rotate through several
//     copies so each starts with cold caches. Every sample is kept; the
//     Measurement has median, min and IQR.
//  4. Baselines (OpenBLASCandidate, NaiveCandidate) are ordinary candidates
//     measured by the same harness in the same run. Benchmarks set
//     Candidate.UnsetEnv = OpenBLASUnsetEnv on the OpenBLAS baseline only;
//     tests never do.
//
// # Fingerprint and roofline
//
// Fingerprint holds the vendor, model, ISA flags that matter, cores, caches
// and toolchain; its canonical JSON and SHA-256 identify the device, and
// CompatClass ("x86_64/avx512f") and VectorBits decide generated code.
// Target.Roofline measures peak FMA GFLOP/s and streaming read GB/s at every
// thread count once and caches them under the cache dir keyed by the
// fingerprint hash ($XDG_CACHE_HOME/llmir/cpu/roofline/<hash>.json,
// overridable with Options.CacheDir or $LLMIR_CPU_CACHE). Delete that file
// to re-measure (do it on an idle machine).
package cpu
