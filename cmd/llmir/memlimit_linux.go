//go:build linux

package main

import (
	"os"
	"runtime/debug"
	"syscall"
)

// setMemoryLimit gives the garbage collector a soft limit of 60% of the
// machine's memory, unless GOMEMLIMIT sets one. The tuner drops the
// float64 inputs and references of the problems it is not working on
// (search.retainProblems), but with the default pacing alone (GOGC) their
// garbage waited for a collection until the heap had doubled: an f32
// llama-3-8b tune on a 24 GiB machine was killed by the kernel at 22 GiB
// when its round-robin pass reached the prefill lm_head.
func setMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil || si.Totalram == 0 {
		return
	}
	total := uint64(si.Totalram) * uint64(max(si.Unit, 1))
	debug.SetMemoryLimit(int64(total / 10 * 6))
}
