// Package ir is LLMIR, llmir's intermediate representation of a model: an
// MLIR dialect written in MLIR's own text syntax so that upstream tools
// (mlir-opt --allow-unregistered-dialect) read everything llmir prints, and
// llmir reads back what they print, in custom or generic form.
//
// A Module holds functions (func.func); a function is one block of ops in
// SSA form ending in func.return. Types are ranked tensors whose dynamic
// dims may carry symbolic names (`tensor<?x4096xf32, #llmir.dims<["seq"]>>`,
// so that shape inference can tell batch from seq), scalar element types,
// and the paged KV cache `!llmir.paged_kv<…>`.
//
// Every op is one row of the op table (ops.go): operands, attributes (and
// which of them change generated code), traits, a one-line meaning, and an
// Infer function that checks operand types and computes result types.
// The Builder, the verifier and the infer-shapes pass all use that one
// function, so an op's contract is written exactly once.
//
// Verify checks every invariant and can run after any pass; passes form a
// table (passes.go) with ordering constraints checked at start-up. Tasks
// turns a module into the distinct workloads to tune: op group, shapes with
// dynamic dims bucketed (powers of two up to 8192, then multiples of 8192),
// element types and codegen attributes, keyed by the SHA-256 of canonical
// JSON. Dims are given by name only; CheckDims refuses a name the module
// lacks, and an unnamed dim (?) must be named in its types to get a value.
//
// Design choice: weights are llmir.param ops (named as in the checkpoint)
// rather than function arguments, so a 32-layer model's signature stays
// readable and a weight's shape sits next to its use.
package ir
