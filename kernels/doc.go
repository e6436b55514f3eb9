// Package kernels is llmir's library of LLM operators as tunable kernels.
// Each operator (one file) gives: its compute definition, a Go reference
// (float64 accumulation; the op-level references live in kernels/ref), its
// design space (a template of schedule primitives or knobs whose values are
// sampled, so every candidate is a replayable trace), and a rule-based
// default schedule that is good without tuning.
//
// Kernel is the contract search and bench drive: Def, Dims, Reference,
// FLOPs/Bytes, Space and Default. Hardware carries what a design space needs
// of the device (vector width, threads, cache sizes). FromWorkload (registry.go)
// builds the kernel of an IR workload — one op or a fused group — from a
// table filled by each kernel file's init; a kernel made that way reports
// the module's workload, so records tuned for it are found by compiles.
//
// # Two ways to write a kernel
//
// Schedule-language kernels lower their Def to a loop nest that primitives
// transform and target/cpu/cgen prints: Linear (linear.go: the packed GEMM
// template for M > 16, the GEMV template for decode and skinny shapes), mul
// and add (elementwise.go), and the fused linear+add and rms_norm+linear
// (fused.go: epilogue and prologue on the linear's templates).
//
// Template kernels (template.go: Generator) have a C generator over knob
// values instead, for what the loop-nest IR does not express: data-dependent
// extents and indirect loads (PagedAttention, AppendKV, Embedding, the fused
// RopeAppendKV), max reductions (Softmax, Argmax), row reductions fused with
// their consumer (RMSNorm, LayerNorm), vector transcendental functions (SiLU,
// Rope), int4 unpacking (QuantLinear), flash-style online softmax
// (Attention), two reductions sharing an operand (GateUpSiLU). Their Def is a
// schedule.NewTemplateDef (parameters and meaning), their knobs are
// sampling steps (Knobs.Sample, Knobs.Choose for the default), so traces,
// mutation, deduplication and the database treat both kinds alike.
// Filler gives structured inputs (block tables, lengths, token ids, packed
// weights).
//
// Integer parameters the IR declares i64 (argmax results, slot mappings)
// are i32 at the kernels' ABI: the harness has no 8-byte buffers and no
// realistic index reaches 2^31.
package kernels
