package cpu

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"llmir/target"
	"llmir/target/internal/harness"
)

//go:embed csrc/harness.c
var harnessSource string

// maxLoads bounds the objects one harness process dlopens (they are never
// closed) before it is replaced by a fresh one.
const maxLoads = 200

// maxCopies bounds input rotation for tiny problems, whose copies would
// otherwise number in the hundreds of thousands to fill 2× the LLC.
const maxCopies = 256

// Runner measures built candidates in a harness child process (the
// protocol and process handling are target/internal/harness's, shared with
// target/cuda).
type Runner struct {
	GCC     string
	Version string
	Dir     string // where the harness executable is kept
	// LLCBytes decides input rotation: when one copy of all buffers is
	// smaller than 2× this, several copies are rotated.
	LLCBytes int64
	// MaxRotateBytes caps the memory of all copies (default 1 GiB).
	MaxRotateBytes int64

	mu      sync.Mutex
	harness string
}

// Harness returns the harness executable, building it on first use. It is
// keyed by the gcc version and its own source, like candidate objects.
func (r *Runner) Harness(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.harness != "" {
		return r.harness, nil
	}
	exe, err := harness.Build(ctx, r.Dir, r.Version, harnessSource, ".c", func(ctx context.Context, src, out string) (string, error) {
		// The harness links libgomp itself so that the OpenMP runtime
		// outlives any one candidate object and its thread pool is shared
		// by all.
		args := []string{"-O2", "-o", out, src, "-ldl", "-Wl,--no-as-needed", "-lgomp"}
		diag, _, err := runGCC(ctx, r.GCC, args)
		if err != nil {
			return diag, fmt.Errorf("gcc %s: %w", strings.Join(args, " "), err)
		}
		return diag, nil
	})
	if err != nil {
		return "", err
	}
	r.harness = exe
	return exe, nil
}

// Copies is how many copies of the problem's buffers the timed loop
// rotates through so that each call starts with cold caches, as a kernel
// in a real model does (the previous layer evicted its weights).
func (r *Runner) Copies(p *target.Problem) int {
	var one int64
	for _, b := range p.Buffers {
		one += (b.Bytes() + 63) / 64 * 64
	}
	llc := r.LLCBytes
	if llc <= 0 {
		llc = 32 << 20
	}
	if one >= 2*llc {
		return 1
	}
	maxBytes := r.MaxRotateBytes
	if maxBytes <= 0 {
		maxBytes = 1 << 30
	}
	n := (2*llc + one - 1) / one
	n = min(n, maxBytes/one, maxCopies)
	return int(max(n, 1))
}

// Run validates, then times, each built candidate in order, one at a time.
// Build failures pass through. A crash or hang marks that candidate and
// the rest continue in a fresh harness process; so does a change of
// thread count, which OpenMP fixes at process start.
func (r *Runner) Run(ctx context.Context, p *target.Problem, built []target.Built, opts target.RunOptions) (map[string]target.Measurement, error) {
	exe, err := r.Harness(ctx)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", p.Name, err)
	}
	return harness.Run(ctx, p, built, opts, harness.Config{
		Exe:        exe,
		TempPrefix: "llmir-run-",
		Copies:     r.Copies(p),
		MaxLoads:   maxLoads,
		Env:        childEnv,
	})
}

// childEnv is the parent's environment with the candidate's thread count
// and without the variables it asks to unset; the key names both.
func childEnv(c target.Candidate) ([]string, string) {
	threads := strconv.Itoa(max(c.Threads, 1))
	drop := append([]string{"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}, c.UnsetEnv...)
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, k) {
			env = append(env, kv)
		}
	}
	env = append(env, "OMP_NUM_THREADS="+threads, "OPENBLAS_NUM_THREADS="+threads)
	return env, strings.Join(env[len(env)-2:], " ") + " unset=" + strings.Join(c.UnsetEnv, ",")
}
