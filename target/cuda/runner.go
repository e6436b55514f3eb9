package cuda

import (
	"context"
	_ "embed"
	"fmt"
	"slices"
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

// ReadGrids are the grids a read bound tries: blocks of 512 threads per SM
// (with 2048 threads an SM, 2 and 4 are one wave, 8 and 16 two and four).
var ReadGrids = []int{2, 4, 8, 16}

// ReadBound is a plain read of a kernel's bytes after the same L2 flush,
// timed under the same protocol as its candidates: what any kernel that
// moves those bytes in one launch is up against. For the small weights of
// decode the launch and the first loads' latency make it far slower than
// the copy bandwidth.
type ReadBound struct {
	Bytes int64 `json:"bytes"`
	// BlocksPerSM is the grid picked: the fastest median of Grids.
	BlocksPerSM int `json:"blocks_per_sm"`
	// Grids are the short timings the grid was picked from.
	Grids []ReadGrid `json:"grids"`
	// Measurement is the picked grid timed with the candidates' options.
	Measurement target.Measurement `json:"measurement"`
}

// ReadGrid is one grid's median in the pass that picks the grid.
type ReadGrid struct {
	BlocksPerSM int     `json:"blocks_per_sm"`
	Samples     int     `json:"samples"`
	Median      float64 `json:"median_s"`
}

// ReadBound measures a plain 16-byte-load read of bytes in the harness's
// --read mode: each grid of ReadGrids is timed for an eighth of the
// budget, the fastest then with opts as a candidate is (warm-up, budget,
// sample bounds, an L2 flush before every call).
func (r *Runner) ReadBound(ctx context.Context, bytes int64, grids []int, opts target.RunOptions) (ReadBound, error) {
	if bytes <= 0 || len(grids) == 0 {
		return ReadBound{}, fmt.Errorf("read bound: %d bytes, %d grids", bytes, len(grids))
	}
	exe, err := r.Harness(ctx)
	if err != nil {
		return ReadBound{}, err
	}
	opts = opts.WithDefaults()
	pick := opts.Budget / 8
	args := []string{"--read", strconv.FormatInt(bytes, 10), strconv.FormatInt(opts.Warmup.Nanoseconds(), 10),
		strconv.FormatInt(opts.Budget.Nanoseconds(), 10), strconv.Itoa(opts.MinSamples), strconv.Itoa(opts.MaxSamples),
		strconv.FormatInt(pick.Nanoseconds(), 10)}
	for _, g := range grids {
		args = append(args, strconv.Itoa(g))
	}
	// Wall time is a few times the device time (untimed flushes, launch
	// gaps), as for a candidate's timing.
	limit := 4*(time.Duration(len(grids)+1)*opts.Warmup+opts.Budget+time.Duration(len(grids))*pick) + opts.Timeout
	out, err := runToolTimeout(ctx, limit, exe, args...)
	if err != nil {
		return ReadBound{}, fmt.Errorf("read bound of %d bytes: %w", bytes, err)
	}
	return ParseReadBound(out, bytes, grids)
}

// ParseReadBound reads the --read replies: a "grid <g> <n> <median>" line
// per grid, in the order asked, then "read <g> <n> <s1> … <sn>" for the
// fastest of them.
func ParseReadBound(out string, bytes int64, grids []int) (ReadBound, error) {
	rb := ReadBound{Bytes: bytes}
	bad := func(line string) (ReadBound, error) {
		return ReadBound{}, fmt.Errorf("%w: harness --read: %q", ErrParse, line)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(grids)+1 {
		return bad(out)
	}
	best := 0
	for i, line := range lines[:len(grids)] {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "grid" {
			return bad(line)
		}
		g, err1 := strconv.Atoi(f[1])
		n, err2 := strconv.Atoi(f[2])
		med, err3 := strconv.ParseFloat(f[3], 64)
		if err1 != nil || err2 != nil || err3 != nil || g != grids[i] || n < 1 || !(med > 0) {
			return bad(line)
		}
		rb.Grids = append(rb.Grids, ReadGrid{BlocksPerSM: g, Samples: n, Median: med})
		if med < rb.Grids[best].Median {
			best = i
		}
	}
	verb, rest, _ := strings.Cut(lines[len(grids)], " ")
	g, samples, _ := strings.Cut(rest, " ")
	if verb != "read" {
		return bad(lines[len(grids)])
	}
	var err error
	rb.BlocksPerSM, err = strconv.Atoi(g)
	i := slices.IndexFunc(rb.Grids, func(x ReadGrid) bool { return x.BlocksPerSM == rb.BlocksPerSM })
	if err != nil || i < 0 || rb.Grids[i].Median != rb.Grids[best].Median {
		return ReadBound{}, fmt.Errorf("%w: harness --read timed grid %s, the fastest was %d", ErrParse, g, rb.Grids[best].BlocksPerSM)
	}
	s, err := harness.ParseSamples(samples)
	if err != nil || len(s) == 0 {
		return bad(lines[len(grids)])
	}
	rb.Measurement = target.Measurement{CandidateID: "read", Status: target.StatusOK, Threads: 1}
	rb.Measurement.SetSamples(s)
	return rb, nil
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
