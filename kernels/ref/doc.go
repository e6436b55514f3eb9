// Package ref holds the Go reference implementation of every LLMIR op and
// an evaluator that runs a whole LLMIR function on them. The references
// are the oracle every generated kernel (CPU C, CUDA) and every fusion is
// validated against, so they are written to be obviously right, not fast:
// plain loops, one formula per op, the formula in the comment.
//
// # Main pieces
//
//   - One function per op: Embedding, Linear (weight layouts NK and KN),
//     QuantizedLinearInt8/Int4 (with PackInt4/UnpackInt4), RMSNorm,
//     LayerNorm, Rope (InvFreq for the HF scalings), SiLU, GELU, Add, Mul,
//     Softmax, Attention, PagedAttention, AppendKV, AllReduce, Argmax.
//   - Pool: the bytes of a paged KV pool, read and written only through
//     kvcache.Layout.Offset, so the references exercise the layout
//     contract the kernels read (f32, f16, bf16 and fp8 e4m3 storage).
//   - Eval / EvalWithOptions: run a function of an ir.Module op by op.
//     Tensors carry concrete shapes; symbolic dims are bound from the
//     arguments; every result is checked against its declared type.
//     Weights come from a ParamSource (RandomParams: seeded by name;
//     MapParams: given).
//
// # Numeric conventions
//
// Inputs and outputs are []float32, row-major. Every reduction (dot
// products, norms, softmax sums) accumulates in float64 and the result is
// rounded once to float32, so the reference is at least as accurate as any
// kernel it judges; transcendental functions run in float64 too. bf16/f16
// storage is the caller's rounding: round the reference's inputs with
// RoundBF16/RoundF16 (built on ir.RoundFloat) to match what a bf16 kernel
// sees. The evaluator does this for every result whose declared type is
// bf16/f16. Integer tensors (ids, positions, slots, tables) are []int64.
// Quantised weights are symmetric: w = q · scale[n][k/group]; int4 is packed
// two per byte along the input dim, low nibble first, two's complement.
//
// # Design choices a newcomer asks about
//
// Why not test the references against themselves? Each op is checked by
// hand-computed cases and by properties that tie ops together (paged
// attention equals contiguous attention over the same keys; a prefill of
// n tokens then one decode step equals a prefill of n+1), never by a second
// copy of the same loop.
//
// Why is the cache updated in place? llmir.append_kv yields a new cache SSA
// value, but copying the pool per layer would make whole-model evaluation
// quadratic in memory traffic. The evaluator instead refuses any read of a
// cache value an append_kv has superseded, so the in-place update is
// indistinguishable from a copy.
//
// Kernels may import ir, schedule and kvcache only; the bit-level
// f16/bf16/fp8 conversions the pool needs therefore live here (rounding
// itself is ir.RoundFloat).
package ref
