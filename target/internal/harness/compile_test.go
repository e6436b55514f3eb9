package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestContentKey pins the key to its definition (objects already cached
// are named by it) and checks that string boundaries count.
func TestContentKey(t *testing.T) {
	sum := sha256.Sum256([]byte("gcc 12\x00-O3\x00--ld--\x00int f;\x00"))
	want := hex.EncodeToString(sum[:])[:40]
	for _, c := range []struct {
		name  string
		parts [][]string
		same  bool
	}{
		{"definition", [][]string{{"gcc 12"}, {"-O3"}, {"--ld--"}, {"int f;"}}, true},
		{"no empty part counts", [][]string{{"gcc 12"}, nil, {"-O3", "--ld--"}, {}, {"int f;"}}, true},
		{"boundary moved", [][]string{{"gcc 12"}, {"-O", "3"}, {"--ld--"}, {"int f;"}}, false},
		{"source changed", [][]string{{"gcc 12"}, {"-O3"}, {"--ld--"}, {"int g;"}}, false},
	} {
		if got := ContentKey(c.parts...); (got == want) != c.same {
			t.Errorf("%s: key %s, definition %s, want same=%v", c.name, got, want, c.same)
		}
	}
}

// TestRunCompiler checks the diagnostics bound and that a run past its
// timeout is a DeadlineExceeded (a candidate's build failure), not a
// start failure.
func TestRunCompiler(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	ctx := context.Background()
	diag, _, err := RunCompiler(ctx, 10*time.Second, "sh", []string{"-c", "yes error | head -c 100000; exit 1"})
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("failing run: err %v, want an exit error", err)
	}
	if !strings.HasPrefix(diag, "error\n") || !strings.HasSuffix(diag, "[… diagnostics truncated]") || len(diag) > maxDiagnostics+64 {
		t.Errorf("diagnostics of %d bytes not bounded to %d: %.40q…%q", len(diag), maxDiagnostics, diag, diag[max(len(diag)-40, 0):])
	}
	start := time.Now()
	_, _, err = RunCompiler(ctx, 100*time.Millisecond, "sleep", []string{"10"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("run past its timeout: err %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("run past its timeout took %v", d)
	}
	if _, _, err := RunCompiler(ctx, time.Second, "llmir-no-such-compiler", nil); err == nil || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ee) {
		t.Errorf("missing compiler: err %v, want a start error", err)
	}
}
