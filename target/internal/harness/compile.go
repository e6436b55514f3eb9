package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"time"
)

// maxDiagnostics bounds the compiler output kept per failed build: a
// generated file can produce megabytes of cascading errors.
const maxDiagnostics = 16 << 10

// RunCompiler runs the compiler name with args under timeout and returns
// its combined output, bounded to maxDiagnostics, and how long it ran. A
// run cut off by the timeout returns an error wrapping
// context.DeadlineExceeded, so callers can tell it (a build failure of the
// candidate) from a compiler that could not start.
func RunCompiler(ctx context.Context, timeout time.Duration, name string, args []string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded && err != nil {
		err = fmt.Errorf("%w after %v", context.DeadlineExceeded, timeout)
	}
	d := buf.String()
	if len(d) > maxDiagnostics {
		d = d[:maxDiagnostics] + "\n[… diagnostics truncated]"
	}
	return d, time.Since(start), err
}

// ContentKey is the content address of a build: a hash of every string of
// parts (the compiler version, the flags, the source), each terminated by
// a NUL so that no two different flag lists hash alike ("-O3", "x" is not
// "-O", "3x"). Both targets name their cached objects by it; changing it
// orphans every object already cached.
func ContentKey(parts ...[]string) string {
	h := sha256.New()
	for _, part := range parts {
		for _, s := range part {
			h.Write([]byte(s))
			h.Write([]byte{0})
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:40]
}
