//go:build !linux

package main

// setMemoryLimit leaves the garbage collector's pacing to GOGC and
// GOMEMLIMIT where the machine's memory is not read (see the Linux one).
func setMemoryLimit() {}
