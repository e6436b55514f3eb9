// Package harness is the Go side of the measurement harness protocol that
// target/cpu and target/cuda share: a child process (csrc/harness.c or
// csrc/harness.cu, built per toolchain) reads a job file naming the inputs
// and buffers, then answers one line per command on stdin ("run ART ENTRY
// OUT" → validated/guard/rc/…; "time WARMUP BUDGET MIN MAX" → samples).
//
// Main pieces:
//   - Run: validates then times built candidates one at a time, replacing
//     the child after a crash, a hang, a CUDA error, a change of thread
//     environment or Config.MaxLoads loads.
//   - WriteJob: the job file and the inputs it points at.
//   - Build: the harness executable, keyed by toolchain version and
//     source, built once per cache directory.
//   - Proc: one running child and its reply stream.
//
// The design choice a newcomer asks about: why is the process plumbing
// here and not in each target? The protocol, the failure taxonomy
// (build_error on load, wrong_result on guard or tolerance, runtime_error
// or timeout when the child dies) and the process handling must not drift
// between CPU and GPU: the tuner compares statuses across targets. What
// differs — the child's environment, how long a timed call may take, how
// many input copies to rotate — is a field of Config.
package harness
