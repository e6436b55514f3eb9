package kerneltest

import (
	"context"
	"testing"

	"llmir/target/cpu"
	"llmir/target/cpu/cputest"
)

// CPU is the CPU target kernel tests and benchmarks run on. It stops t
// when gcc is missing (cputest.Need: a failure in CI, a skip elsewhere)
// and keeps the build cache in t's temporary directory, so a test never
// picks up objects of an earlier run nor fills the user's cache. The
// hardware a test schedules for is search.CPUHardware(tg.CPU(), threads):
// the thread count is the test's choice, not the target's.
func CPU(t testing.TB) *cpu.Target {
	t.Helper()
	cputest.Need(t, "gcc")
	tg, err := cpu.New(context.Background(), cpu.Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return tg
}
