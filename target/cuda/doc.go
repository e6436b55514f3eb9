// Package cuda is the CUDA target: it builds generated CUDA C++ with nvcc
// and measures it on an NVIDIA GPU, behind the same target.Target interface
// as target/cpu, so the tuner, the traces and the tuning database treat a
// GPU like any other device.
//
// Main types:
//   - Fingerprint: GPU name, compute capability and arch (sm_90), SM count,
//     memory, L2, driver, nvcc version and flags, from `nvidia-smi
//     --query-gpu` (ParseSMI), `nvcc --version` (ParseNVCCVersion) and the
//     harness's --info line; its Device() is keyed by hash and grouped by
//     arch (records of one sm_90 GPU serve another).
//   - Builder: many candidates per nvcc invocation. Unit puts each
//     candidate's source in its own namespace (so two candidates may both
//     define a kernel called gemv and an entry called llmir_kernel) and
//     exports it under a batch-unique C symbol; batches are built in
//     parallel on the cores and cached by content. A batch that fails is
//     rebuilt one candidate per unit, so only broken candidates get the
//     build_error, with their own diagnostics.
//   - Runner: a harness process (csrc/harness.cu, embedded, built by nvcc on
//     the GPU machine at first use) speaking the job-file protocol that
//     target/internal/harness implements for both targets:
//     it copies the inputs into device buffers with guard bands, poisons the
//     outputs, runs the candidate once and returns outputs for the Go side
//     to compare with the reference, then times it with CUDA events, each
//     call after an L2 flush, for a device-time budget. A CUDA error ends
//     the process (errors are sticky in a context); the next candidate gets
//     a fresh one. Probe measures the copy and read bandwidth; ReadBound
//     times a plain read of a kernel's bytes under the candidates' protocol
//     (the bound a memory-bound kernel of that size can reach in one launch).
//   - Generator: what a kernel implements to have a CUDA side (the
//     kernels with one live in target/cuda/kernels).
//
// The design choice a newcomer asks about: why a C++-linkage entry wrapped
// by the builder instead of `extern "C"` in every source? Because nvcc's
// fixed cost (host passes, fatbinary, link) dominates small kernels, many
// candidates share one translation unit, and C linkage would make their
// entries collide; namespaces and generated wrappers keep every generator
// free of batch bookkeeping.
//
// Why the flush reads instead of writes: a memset of twice the L2 leaves
// the L2 full of dirty lines whose write-back lands in the next timed call
// (up to a third of a small GEMV's time on an H200); reading a buffer
// evicts the same lines and leaves clean ones, as a previous layer reading
// its weights would.
package cuda
