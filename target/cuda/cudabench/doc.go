// Package cudabench measures the CUDA kernels on the GPU: a conformance
// check (every kernel's default and sampled schedules validated against
// its Go reference on odd shapes) and a benchmark suite (llama-3-8b's
// decode kernels: a short random tune per kernel, the vendor baseline in
// the same harness run, every result related to the measured copy
// bandwidth), recording every measurement in the tuning database under the
// GPU's fingerprint.
//
// Why not search.Tuner: its candidates are printed by the CPU's C
// generators. This driver does the same steps (default + sampled traces,
// one build batch, one measured batch, one database transaction per task)
// for CUDA candidates; when the tuner takes a candidate printer per target
// this package shrinks to the suites.
package cudabench
