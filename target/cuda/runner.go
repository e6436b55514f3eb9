package cuda

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"llmir/target"
	"llmir/target/internal/harness"
)

//go:embed csrc/harness.cu
var harnessSource string

// HarnessSource is the harness's CUDA source (for bundles and inspection).
func HarnessSource() string { return harnessSource }

// maxLoads bounds the objects one harness process dlopens before it is
// replaced by a fresh one (each holds a CUDA module in device memory).
const maxLoads = 100

// Runner measures built candidates in a harness child process. The job
// file and reply protocol are target/cpu's, so the Go side writes the same
// inputs and reads the same outputs; the differences are that buffers live
// in device memory, the L2 is flushed before each timed call instead of
// rotating input copies, and any CUDA error ends the process.
type Runner struct {
	NVCC    string
	Version string
	Dir     string

	mu      sync.Mutex
	harness string
}

// HarnessCommand is the nvcc command line that builds the harness.
func HarnessCommand(nvcc, src, exe string) []string {
	return []string{nvcc, "-O2", "-std=c++17", "-o", exe, src, "-ldl"}
}

// Harness returns the harness executable, building it on first use, keyed
// by nvcc's version and its own source.
func (r *Runner) Harness(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.harness != "" {
		return r.harness, nil
	}
	exe, err := harness.Build(ctx, r.Dir, r.Version, harnessSource, ".cu", func(ctx context.Context, src, out string) (string, error) {
		args := HarnessCommand(r.NVCC, src, out)
		diag, _, err := runCompiler(ctx, args)
		if err != nil {
			return diag, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
		}
		return diag, nil
	})
	if err != nil {
		return "", err
	}
	r.harness = exe
	return exe, nil
}

// Info runs the harness's --info mode.
func (r *Runner) Info(ctx context.Context) (HarnessInfo, error) {
	exe, err := r.Harness(ctx)
	if err != nil {
		return HarnessInfo{}, err
	}
	out, err := runTool(ctx, exe, "--info")
	if err != nil {
		return HarnessInfo{}, err
	}
	return ParseHarnessInfo(strings.TrimSpace(out))
}

// Bandwidth is the device's measured memory bandwidth.
type Bandwidth struct {
	// CopyGBps is cudaMemcpy device to device, read plus written bytes per
	// second: the "copy bandwidth" the performance goals are relative to.
	CopyGBps float64 `json:"copy_gbps"`
	// ReadGBps is a read-only kernel's bytes per second.
	ReadGBps float64 `json:"read_gbps"`
	Bytes    int64   `json:"bytes"`
}

// Probe measures the copy and read bandwidth on buffers of the given size
// (it should be far larger than the L2: 1 GiB is the default).
func (r *Runner) Probe(ctx context.Context, bytes int64) (Bandwidth, error) {
	if bytes <= 0 {
		bytes = 1 << 30
	}
	exe, err := r.Harness(ctx)
	if err != nil {
		return Bandwidth{}, err
	}
	out, err := runTool(ctx, exe, "--probe", strconv.FormatInt(bytes, 10))
	if err != nil {
		return Bandwidth{}, err
	}
	return ParseProbe(strings.TrimSpace(out), bytes)
}

// ParseProbe reads "probe <copy_GBps> <read_GBps>".
func ParseProbe(line string, bytes int64) (Bandwidth, error) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "probe" {
		return Bandwidth{}, fmt.Errorf("%w: harness --probe: %q", ErrParse, line)
	}
	c, err1 := strconv.ParseFloat(f[1], 64)
	rd, err2 := strconv.ParseFloat(f[2], 64)
	if err1 != nil || err2 != nil || !(c > 0) || !(rd > 0) {
		return Bandwidth{}, fmt.Errorf("%w: harness --probe: %q", ErrParse, line)
	}
	return Bandwidth{CopyGBps: c, ReadGBps: rd, Bytes: bytes}, nil
}

// Run validates, then times, each built candidate in order. Build failures
// pass through; a crash, a CUDA error or a hang marks that candidate and
// the rest continue in a fresh harness process.
func (r *Runner) Run(ctx context.Context, p *target.Problem, built []target.Built, opts target.RunOptions) (map[string]target.Measurement, error) {
	exe, err := r.Harness(ctx)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", p.Name, err)
	}
	return harness.Run(ctx, p, built, opts, harness.Config{
		Exe:        exe,
		TempPrefix: "llmir-cuda-run-",
		Copies:     1, // the harness flushes the L2 instead
		MaxLoads:   maxLoads,
		Threads:    1,
		// Untimed flushes and launch gaps make wall time a multiple of
		// the device-time budget for tiny kernels.
		TimeLimit: func(opts target.RunOptions, valT float64) time.Duration {
			return 4*(opts.Warmup+opts.Budget) + opts.Timeout +
				time.Duration(float64(opts.MinSamples+2)*valT*2*float64(time.Second))
		},
		// Tearing down a CUDA context takes longer than a CPU process.
		CloseGrace: 5 * time.Second,
	})
}

// WriteJob writes the inputs and the job description the harness reads
// (target/cpu's format; "copies" is always 1 since the GPU harness flushes
// the L2 instead).
func WriteJob(dir string, p *target.Problem) (string, error) {
	return harness.WriteJob(dir, p, 1)
}
