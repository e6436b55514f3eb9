package cuda

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"llmir/schedule"
	"llmir/target"
)

// ErrNoCUDA reports a machine without nvcc or without an NVIDIA GPU.
var ErrNoCUDA = errors.New("no CUDA toolchain or GPU")

// GPU is what a CUDA generator knows of the device it emits for.
type GPU struct {
	Arch    string // "sm_90"
	SMs     int
	L2Bytes int64
}

// H100 is the reference machine's GPU, for golden tests and defaults when
// no device is at hand.
var H100 = GPU{Arch: "sm_90", SMs: 132, L2Bytes: 50 << 20}

// Generator is implemented by kernels that have a CUDA side. EmitCUDA
// returns CUDA C++ that defines, with C++ linkage,
//
//	int <entry>(void *const *bufs, const int64_t *dims)
//
// taking device pointers in ABI order and the dynamic dims, launching its
// kernels on the legacy default stream and returning 0 or the CUDA error
// of the launch (never synchronizing: the harness times with events). Its
// #include lines may appear anywhere; the builder hoists them.
type Generator interface {
	EmitCUDA(s *schedule.Schedule, gpu GPU, entry string) (string, error)
}

// Options configures a CUDA target.
type Options struct {
	// CacheDir holds objects and the harness (default DefaultCacheDir()).
	CacheDir string
	// NVCC is the compiler (default: nvcc on PATH, else
	// /usr/local/cuda/bin/nvcc).
	NVCC string
	// Jobs is the number of parallel nvcc processes (default: cores).
	Jobs int
	// Batch is the number of candidates per nvcc invocation.
	Batch int
}

// DefaultCacheDir is $LLMIR_CUDA_CACHE, else $XDG_CACHE_HOME/llmir/cuda.
func DefaultCacheDir() string {
	if d := os.Getenv("LLMIR_CUDA_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "llmir", "cuda")
}

// FindNVCC resolves the compiler.
func FindNVCC(name string) (string, error) {
	if name != "" {
		p, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("%w: nvcc %q: %v", ErrNoCUDA, name, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("nvcc"); err == nil {
		return p, nil
	}
	const std = "/usr/local/cuda/bin/nvcc"
	if _, err := os.Stat(std); err == nil {
		return std, nil
	}
	return "", fmt.Errorf("%w: nvcc is not on PATH nor at %s", ErrNoCUDA, std)
}

// Target is the CUDA target: nvcc builds batches, the harness measures on
// device 0.
type Target struct {
	fp      *Fingerprint
	dir     string
	Builder *Builder
	Runner  *Runner
}

var _ target.Target = (*Target)(nil)

// New finds nvcc and the GPU, builds the harness (first use) and
// fingerprints the device.
func New(ctx context.Context, opts Options) (*Target, error) {
	nvcc, err := FindNVCC(opts.NVCC)
	if err != nil {
		return nil, fmt.Errorf("cuda target: %w", err)
	}
	out, err := runTool(ctx, nvcc, "--version")
	if err != nil {
		return nil, fmt.Errorf("cuda target: %w", err)
	}
	version, err := ParseNVCCVersion(out)
	if err != nil {
		return nil, fmt.Errorf("cuda target: %w", err)
	}
	smiOut, err := runTool(ctx, "nvidia-smi", SMIQuery...)
	if err != nil {
		return nil, fmt.Errorf("cuda target: %w: %v", ErrNoCUDA, err)
	}
	smi, err := ParseSMI(smiOut)
	if err != nil {
		return nil, fmt.Errorf("cuda target: %w", err)
	}
	arch, err := ArchOf(smi.ComputeCapability)
	if err != nil {
		return nil, fmt.Errorf("cuda target: %w", err)
	}
	dir := opts.CacheDir
	if dir == "" {
		dir = DefaultCacheDir()
	}
	if strings.ContainsAny(dir, " \t\n") {
		return nil, fmt.Errorf("cuda target: cache dir %q contains whitespace", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cuda target: cache dir: %w", err)
	}
	flags := Flags(arch)
	// Candidates linking cuBLAS must find it when the harness dlopens
	// them, wherever the loader's path points.
	if lib := filepath.Clean(filepath.Join(filepath.Dir(nvcc), "..", "lib64")); dirExists(lib) {
		flags = append(flags, "-Xlinker", "-rpath="+lib)
	}
	r := &Runner{NVCC: nvcc, Version: version, Dir: filepath.Join(dir, "harness")}
	info, err := r.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("cuda target: %w", err)
	}
	fp, err := NewFingerprint(smi, version, info, flags)
	if err != nil {
		return nil, fmt.Errorf("cuda target: %w", err)
	}
	return &Target{
		fp:  fp,
		dir: dir,
		Builder: &Builder{NVCC: nvcc, Version: version, Flags: flags, Dir: filepath.Join(dir, "obj"),
			Jobs: opts.Jobs, Batch: opts.Batch},
		Runner: r,
	}, nil
}

// GPU is the detailed fingerprint.
func (t *Target) GPU() *Fingerprint { return t.fp }

// Hardware is what generators see of this device.
func (t *Target) Hardware() GPU {
	return GPU{Arch: t.fp.Arch, SMs: t.fp.SMs, L2Bytes: t.fp.L2Bytes}
}

// Fingerprint implements target.Target.
func (t *Target) Fingerprint(ctx context.Context) (target.Device, error) { return t.fp.Device(), nil }

// Build implements target.Target.
func (t *Target) Build(ctx context.Context, cands []target.Candidate) (map[string]target.Built, error) {
	return t.Builder.Build(ctx, cands)
}

// Run implements target.Target.
func (t *Target) Run(ctx context.Context, p *target.Problem, built []target.Built, opts target.RunOptions) (map[string]target.Measurement, error) {
	return t.Runner.Run(ctx, p, built, opts)
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
