// Package cputest holds what tests of code that compiles and runs kernels
// on the CPU share.
package cputest

import (
	"os"
	"os/exec"
	"testing"
)

// Need stops a test that cannot run without the command tool (gcc,
// objdump): in CI (CI=true) a missing tool is a failure, never a skip;
// elsewhere the test is skipped with the reason.
func Need(t testing.TB, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: CI requires it (make test installs it on Debian as root)", tool)
		}
		t.Skipf("%s not found", tool)
	}
}
