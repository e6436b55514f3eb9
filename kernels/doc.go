// Package kernels is llmir's library of LLM operators as tunable kernels.
// Each operator (one file, or a folder) gives: its compute definition in the
// schedule language, a Go reference (float64 accumulation; the op-level
// references live in kernels/ref), its design space (a template of schedule
// primitives whose knobs are sampled, so every candidate is a replayable
// trace), and a rule-based default schedule that is good without tuning.
//
// Kernel is the contract search and bench drive: Def, Dims, Reference,
// FLOPs/Bytes, Space and Default. Hardware carries what a design space needs
// of the device (vector width, threads, cache sizes).
//
// Linear (linear.go) has two templates from schedule/recipe: prefill
// (M > 16) is the packed GEMM with an MR×NR register tile of vector
// accumulators; decode and skinny shapes (M ≤ 16) stream w once with the
// reduction vectorized over k.
package kernels
