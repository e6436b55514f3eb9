// Package sim replays LLM serving workloads through a kvcache.Manager to
// weigh KV block sizes: how much memory each wastes, how many sequences fit,
// how often the engine must preempt, and how much prefix sharing survives.
//
// # Main types
//
//   - Request and the trace readers ReadCSV, ReadJSONL and ReadTraceFile
//     (errors name the line and field), and WriteCSV.
//   - Workload: seeded generators with documented distributions, listed by
//     Workloads: "chat" (short ShareGPT-like turns), "long" (long prompts
//     and long outputs) and "shared-prefix" (many requests behind a few long
//     system prompts).
//   - Run replays one trace at one block size and pool size into a Result;
//     Sweep runs several block sizes in parallel.
//
// # The model, and why it is this simple
//
// Time is counted in decode steps, the unit that continuous batching
// schedules in, not in seconds: the question is how memory behaves, and
// kernel speed per block size is measured elsewhere (by the tuner), so the
// two can be combined without the simulator guessing latencies. Each step
// every running sequence appends one token; when the pool is full the newest
// sequence is preempted and later recomputed (vLLM's recompute mode, the
// only one its V1 engine keeps); waiting requests are admitted first come
// first served while the watermark allows. Token ids are synthetic but
// deterministic, equal exactly where requests share a prefix group, so the
// manager's real prefix cache decides the hit rate — including hits on a
// preempted request's own earlier blocks.
//
// Memory waste is internal fragmentation, the allocated slots that hold no
// token (the unfilled tail of each sequence's last block), as a fraction of
// all allocated slots, averaged over the steps in which any block is used.
// To compare block sizes fairly, Sweep can hold the pool's token capacity
// constant, so larger blocks mean fewer of them.
package sim
