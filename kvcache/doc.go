// Package kvcache manages the key/value cache of LLM inference in fixed-size
// blocks (paging), and owns the paged layout contract that llmir's
// attention kernels read.
//
// # Main types
//
//   - Layout: the physical shape of the pool and Layout.Offset, the one
//     formula for where element (layer, K|V, block, slot, head, dim) lives.
//   - Manager: a pool of Layout.NumBlocks blocks of Layout.BlockSize tokens
//     shared by many sequences; Add (with prefix reuse), Append, Fork
//     (copy-on-write), Truncate, Free; Export for kernels; Stats;
//     CheckInvariants for tests.
//   - BlockTables / PaddedTable: per-sequence block tables as CSR arrays
//     (Indptr, Indices, LastPageLen: int32, as FlashInfer takes them) and as
//     a dense [num_seqs][max_blocks] table padded with PadBlock (-1).
//   - The simulator that weighs block sizes on request traces is in
//     kvcache/sim.
//
// # Physical layout
//
// The pool is one allocation, row-major:
//
//	[NumLayers][2: K then V][NumBlocks][BlockSize][NumKVHeads][HeadDim] DType
//
// so byte offset = ((((layer·2 + kv)·NumBlocks + block)·BlockSize + slot)·
// NumKVHeads + head)·HeadDim + dim, times DType.Size() (4 for f32, 2 for
// f16/bf16, 1 for fp8e4m3). Layer and K/V outermost give every layer's
// attention one contiguous K tensor and one V tensor, as vLLM and FlashInfer
// allocate them. Inside a block the order is token, then head ("NHD", the
// FlashInfer default, which it measures as no slower than HND): appending
// a token writes one contiguous NumKVHeads×HeadDim row per layer and half,
// and copying the first n slots of a block (copy-on-write) is one memcpy
// per layer and half. A kernel reads the sequence's blocks in table order;
// token t of a sequence is slot t mod BlockSize of its block t / BlockSize.
//
// # Why blocks, and the choices a newcomer asks about
//
// Paging keeps waste to the unfilled tail of each sequence's last block, so
// the block size trades kernel efficiency (longer contiguous runs) against
// that waste and against prefix-sharing granularity; kvcache/sim measures
// the trade on request traces.
//
// Sharing is by reference count. Fork shares every block; a block is
// written only at the sequence's end, so only a shared (or cached) partial
// last block is ever copied, on the first Append after the fork.
//
// Prefix caching follows vLLM's design: every full block gets a BlockHash,
// SHA-256 over (parent hash, the block's tokens, and a salt for the first
// block). Add looks up the prompt's chain and reuses the longest run of
// cached blocks, always leaving the last prompt token to compute. A block
// enters the index only when the caller Commits it, after writing its keys
// and values: published at allocation (as vLLM's single-threaded scheduler
// can afford), a concurrent Add could hit a block still being computed.
// Committed content is immutable: WriteKV refuses it. Freed
// blocks keep their hash and stay findable; allocation takes never-cached
// free blocks first, then evicts cached ones least recently released
// first, a sequence's tail blocks before its head. Block tables are
// append-only, so a block computed twice stays a private duplicate rather
// than being swapped for the cached one. Collisions: equal hashes are
// taken to mean equal content without comparing tokens; with SHA-256 the
// chance of any collision among 2^40 blocks is below 2^-176, far below the
// hardware error rate, and the salt keeps tenants from probing each
// other's prefixes.
//
// Admission keeps a watermark of free blocks (Config.Watermark, a fraction
// of the pool): Add refuses with ErrCacheFull when it would dip below it,
// and ErrExceedsCapacity when the prompt could never fit. Append may use
// the watermark; when even that is gone it returns ErrCacheFull without
// changing anything, which is the signal to preempt a sequence.
//
// # Concurrency
//
// A Manager is safe for concurrent use. One mutex guards all state and
// every method holds it for its whole (short) run, so each operation is
// atomic and a failed one changes nothing; prompt hashing runs before the
// lock. Key/value bytes, when Config.Storage is set, are accessed only
// through WriteKV and ReadKV, under the same lock, so a copy-on-write copy
// never races a write. Kernels that read the pool directly must not run
// while the manager changes the tables they read: snapshot a batch with
// Export, then run.
package kvcache
