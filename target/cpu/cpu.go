package cpu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"llmir/target"
)

// Options configures a CPU target. The zero value is the default.
type Options struct {
	// CacheDir holds built objects, the harness and roofline results
	// (default DefaultCacheDir()).
	CacheDir string
	// GCC is the compiler (default: $CC if it is a gcc, else gcc on PATH).
	GCC string
	// Jobs is the number of parallel gcc processes (default: cores).
	Jobs int
	// MaxRotateBytes caps the memory of rotated input copies (default 1 GiB).
	MaxRotateBytes int64
}

// DefaultCacheDir is $LLMIR_CPU_CACHE, else $XDG_CACHE_HOME/llmir/cpu
// (~/.cache/llmir/cpu).
func DefaultCacheDir() string {
	if d := os.Getenv("LLMIR_CPU_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "llmir", "cpu")
}

// Target is the CPU target: gcc builds, harness measures.
type Target struct {
	fp      *Fingerprint
	dir     string
	Builder *Builder
	Runner  *Runner
	// Probe sizes the roofline probes that Roofline runs when nothing is
	// cached (zero value: the real measurement).
	Probe RooflineOptions
}

var _ target.Target = (*Target)(nil)

// New finds gcc, fingerprints the machine and prepares the cache dir.
func New(ctx context.Context, opts Options) (*Target, error) {
	gcc, err := FindGCC(opts.GCC)
	if err != nil {
		return nil, fmt.Errorf("cpu target: %w", err)
	}
	fp, err := DetectFingerprint(ctx, gcc)
	if err != nil {
		return nil, fmt.Errorf("cpu target: %w", err)
	}
	dir := opts.CacheDir
	if dir == "" {
		dir = DefaultCacheDir()
	}
	if strings.ContainsAny(dir, " \t\n") {
		// Paths cross the harness's whitespace-separated protocol.
		return nil, fmt.Errorf("cpu target: cache dir %q contains whitespace", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cpu target: cache dir: %w", err)
	}
	return &Target{
		fp:  fp,
		dir: dir,
		Builder: &Builder{
			GCC: gcc, Version: fp.Toolchain.Version, Flags: fp.Toolchain.Flags,
			Dir: filepath.Join(dir, "obj"), Jobs: opts.Jobs,
		},
		Runner: &Runner{
			GCC: gcc, Version: fp.Toolchain.Version, Dir: filepath.Join(dir, "harness"),
			LLCBytes: fp.LLCBytes(), MaxRotateBytes: opts.MaxRotateBytes,
		},
	}, nil
}

// CPU is the detailed fingerprint.
func (t *Target) CPU() *Fingerprint { return t.fp }

// CacheDir is where this target keeps its files.
func (t *Target) CacheDir() string { return t.dir }

// Fingerprint implements target.Target.
func (t *Target) Fingerprint(ctx context.Context) (target.Device, error) {
	return t.fp.Device(), nil
}

// Build implements target.Target.
func (t *Target) Build(ctx context.Context, cands []target.Candidate) (map[string]target.Built, error) {
	unlock, err := lockDevice(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	defer unlock()
	return t.Builder.Build(ctx, cands)
}

// Run implements target.Target.
func (t *Target) Run(ctx context.Context, p *target.Problem, built []target.Built, opts target.RunOptions) (map[string]target.Measurement, error) {
	// The Go reference can take seconds on large shapes; compute it (it is
	// memoised in p) before taking the machine lock so that other processes'
	// timed runs are not held up by it.
	if _, err := p.Expected(); err != nil {
		return nil, fmt.Errorf("run %s: reference: %w", p.Name, err)
	}
	unlock, err := lockDevice(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", p.Name, err)
	}
	defer unlock()
	return t.Runner.Run(ctx, p, built, opts)
}
