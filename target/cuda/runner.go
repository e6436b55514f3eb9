package cuda

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"llmir/target"
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

var (
	errTimeout = errors.New("timeout")
	errExited  = errors.New("harness exited")
)

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
	h := sha256.Sum256([]byte(r.Version + "\x00" + harnessSource))
	exe := filepath.Join(r.Dir, "harness-"+hex.EncodeToString(h[:])[:16])
	if _, err := os.Stat(exe); err == nil {
		r.harness = exe
		return exe, nil
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	src := exe + ".cu"
	if err := os.WriteFile(src, []byte(harnessSource), 0o644); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", exe, os.Getpid())
	args := HarnessCommand(r.NVCC, src, tmp)
	diag, _, err := runCompiler(ctx, args)
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("harness: %s: %w\n%s", strings.Join(args, " "), err, diag)
	}
	if err := os.Rename(tmp, exe); err != nil {
		return "", fmt.Errorf("harness: %w", err)
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
	opts = opts.WithDefaults()
	ids := make([]target.Candidate, len(built))
	for i, b := range built {
		ids[i] = b.Candidate
		if b.Artifact == "" && b.Failure == nil {
			return nil, fmt.Errorf("run %s: candidate %d (%q): neither built nor failed", p.Name, i, b.Candidate.ID)
		}
		if strings.ContainsAny(b.Artifact+b.Candidate.Entry, " \t\n") {
			return nil, fmt.Errorf("run %s: candidate %q: artifact path %q or entry %q contains whitespace", p.Name, b.Candidate.ID, b.Artifact, b.Candidate.Entry)
		}
	}
	if err := target.CheckIDs(ids); err != nil {
		return nil, fmt.Errorf("run %s: %w", p.Name, err)
	}
	want, err := p.Expected()
	if err != nil {
		return nil, fmt.Errorf("run %s: reference: %w", p.Name, err)
	}
	exe, err := r.Harness(ctx)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", p.Name, err)
	}
	dir, err := os.MkdirTemp("", "llmir-cuda-run-")
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", p.Name, err)
	}
	defer os.RemoveAll(dir)
	if strings.ContainsAny(dir, " \t\n") {
		return nil, fmt.Errorf("run %s: temporary dir %q contains whitespace (set TMPDIR)", p.Name, dir)
	}
	job, err := WriteJob(dir, p)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", p.Name, err)
	}
	res := make(map[string]target.Measurement, len(built))
	var h *harnessProc
	defer func() {
		if h != nil {
			h.close()
		}
	}()
	for i, b := range built {
		c := b.Candidate
		if b.Failure != nil {
			res[c.ID] = *b.Failure
			continue
		}
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("run %s: %w", p.Name, err)
		}
		if h != nil && h.loads >= maxLoads {
			h.close()
			h = nil
		}
		if h == nil {
			// Setup copies every input to the device: allow for large ones.
			h, err = startHarness(ctx, exe, job, opts.Timeout)
			if err != nil {
				return res, fmt.Errorf("run %s: candidate %s: %w", p.Name, c.ID, err)
			}
		}
		h.loads++
		m, alive := measure(ctx, h, p, want, b, filepath.Join(dir, fmt.Sprintf("out-%d", i)), opts)
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("run %s: candidate %s: %w", p.Name, c.ID, err)
		}
		res[c.ID] = m
		if !alive {
			h.close()
			h = nil
		}
	}
	return res, nil
}

// measure runs one candidate; alive is false when the harness died or was
// killed and must be replaced.
func measure(ctx context.Context, h *harnessProc, p *target.Problem, want [][]float64, b target.Built, outPath string, opts target.RunOptions) (target.Measurement, bool) {
	c := b.Candidate
	m := target.Measurement{CandidateID: c.ID, Threads: 1}
	defer os.Remove(outPath)
	fail := func(s target.Status, format string, a ...any) (target.Measurement, bool) {
		m.Status, m.Error = s, fmt.Sprintf(format, a...)
		return m, true
	}
	lost := func(err error, phase string) (target.Measurement, bool) {
		m.Status = target.StatusRuntimeError
		if errors.Is(err, errTimeout) {
			m.Status = target.StatusTimeout
		}
		m.Error = fmt.Sprintf("%s: %v", phase, err)
		return m, false
	}
	line, err := h.call(ctx, fmt.Sprintf("run %s %s %s", b.Artifact, c.Entry, outPath), opts.Timeout)
	if err != nil {
		return lost(err, "validation run")
	}
	verb, rest, _ := strings.Cut(line, " ")
	switch verb {
	case "load_error":
		return fail(target.StatusBuildError, "load %s: %s", b.Artifact, rest)
	case "rc":
		return fail(target.StatusRuntimeError, "entry returned %s", rest)
	case "cuda_error":
		h.kill()
		m.Status, m.Error = target.StatusRuntimeError, "CUDA error: "+rest
		return m, false
	case "guard":
		f := strings.Fields(rest)
		if len(f) == 3 {
			return fail(target.StatusWrongResult, "wrote outside buffer %s (in the guard band %s it, byte offset %s)", f[0], f[1], f[2])
		}
	case "input_modified":
		f := strings.Fields(rest)
		if len(f) == 2 {
			return fail(target.StatusWrongResult, "modified input %s (first changed byte %s)", f[0], f[1])
		}
	case "validated":
		valT, _ := strconv.ParseFloat(rest, 64)
		rel, name, err := compareOutputs(p, want, outPath)
		if err != nil {
			h.kill()
			return lost(err, "read outputs")
		}
		m.RelErr = rel
		if !(rel <= p.Tolerance()) {
			return fail(target.StatusWrongResult, "output %s: relative L2 error %.3g exceeds tolerance %.3g", name, rel, p.Tolerance())
		}
		// Untimed flushes and launch gaps make wall time a multiple of the
		// device-time budget for tiny kernels.
		limit := 4*(opts.Warmup+opts.Budget) + opts.Timeout +
			time.Duration(float64(opts.MinSamples+2)*valT*2*float64(time.Second))
		line, err := h.call(ctx, fmt.Sprintf("time %d %d %d %d", opts.Warmup.Nanoseconds(), opts.Budget.Nanoseconds(), opts.MinSamples, opts.MaxSamples), limit)
		if err != nil {
			return lost(err, "timing")
		}
		verb, rest, _ := strings.Cut(line, " ")
		switch verb {
		case "rc":
			return fail(target.StatusRuntimeError, "entry returned %s while timing", rest)
		case "cuda_error":
			h.kill()
			m.Status, m.Error = target.StatusRuntimeError, "CUDA error while timing: "+rest
			return m, false
		case "samples":
			s, err := parseSamples(rest)
			if err != nil {
				h.kill()
				return lost(err, "timing")
			}
			m.Status = target.StatusOK
			m.SetSamples(s)
			return m, true
		}
	}
	h.kill()
	return lost(fmt.Errorf("protocol: unexpected reply %q", line), "harness")
}

func parseSamples(s string) ([]float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return nil, fmt.Errorf("protocol: empty samples")
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n != len(f)-1 {
		return nil, fmt.Errorf("protocol: samples count %q for %d values", f[0], len(f)-1)
	}
	out := make([]float64, n)
	for i, v := range f[1:] {
		if out[i], err = strconv.ParseFloat(v, 64); err != nil {
			return nil, fmt.Errorf("protocol: sample %d: %w", i, err)
		}
	}
	return out, nil
}

// compareOutputs returns the worst relative L2 error over the outputs.
func compareOutputs(p *target.Problem, want [][]float64, path string) (float64, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return math.NaN(), "", err
	}
	worst, name := 0.0, ""
	var off int64
	for i, b := range p.OutputBuffers() {
		if off+b.Bytes() > int64(len(data)) {
			return math.NaN(), b.Name, fmt.Errorf("outputs file: %d bytes, want %d for %s", len(data), off+b.Bytes(), b.Name)
		}
		got, err := target.Decode(b.DType, data[off:off+b.Bytes()])
		if err != nil {
			return math.NaN(), b.Name, err
		}
		off += b.Bytes()
		if rel := target.RelL2(got, want[i]); !(rel <= worst) || name == "" {
			worst, name = rel, b.Name
		}
	}
	return worst, name, nil
}

// WriteJob writes the inputs and the job description the harness reads
// (target/cpu's format; "copies" is always 1 since the GPU harness flushes
// the L2 instead).
func WriteJob(dir string, p *target.Problem) (string, error) {
	data := filepath.Join(dir, "inputs.bin")
	f, err := os.Create(data)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	in := p.Inputs()
	for i, b := range p.InputBuffers() {
		if _, err := w.Write(target.Encode(b.DType, in[i])); err != nil {
			f.Close()
			return "", fmt.Errorf("write inputs: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", fmt.Errorf("write inputs: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write inputs: %w", err)
	}
	var job strings.Builder
	fmt.Fprintf(&job, "data %s\n", data)
	for _, b := range p.Buffers {
		if strings.ContainsAny(b.Name, " \t\n") || b.Name == "" {
			return "", fmt.Errorf("buffer name %q: must be one word", b.Name)
		}
		out := 0
		if b.Output {
			out = 1
		}
		fmt.Fprintf(&job, "buf %s %d %x %d\n", b.Name, b.Bytes(), poisonPattern(b.DType), out)
	}
	job.WriteString("dims")
	for _, d := range p.Dims {
		fmt.Fprintf(&job, " %d", d)
	}
	job.WriteString("\ncopies 1\n")
	path := filepath.Join(dir, "job.txt")
	return path, os.WriteFile(path, []byte(job.String()), 0o644)
}

// poisonPattern is a quiet NaN in the dtype's storage format; its width
// tells the harness the element size.
func poisonPattern(d target.DType) uint32 {
	switch d {
	case target.BF16:
		return 0x7fc0
	case target.F16:
		return 0x7e00
	}
	return 0x7fc00000
}

// harnessProc is one running harness and its reply stream.
type harnessProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *tailBuffer
	exited chan struct{}
	loads  int
}

func startHarness(ctx context.Context, exe, job string, timeout time.Duration) (*harnessProc, error) {
	cmd := exec.CommandContext(ctx, exe, job)
	cmd.WaitDelay = 2 * time.Second
	h := &harnessProc{cmd: cmd, lines: make(chan string, 4), stderr: &tailBuffer{max: 4 << 10}, exited: make(chan struct{})}
	cmd.Stderr = h.stderr
	var err error
	if h.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start harness: %w", err)
	}
	go func() {
		rd := bufio.NewReaderSize(stdout, 1<<16)
		for {
			s, err := rd.ReadString('\n')
			if err != nil {
				break
			}
			h.lines <- strings.TrimSuffix(s, "\n")
		}
		close(h.lines)
		cmd.Wait()
		close(h.exited)
	}()
	line, err := h.expect(ctx, timeout)
	if err != nil {
		h.kill()
		return nil, fmt.Errorf("harness setup: %w", err)
	}
	if line != "ready" {
		h.kill()
		return nil, fmt.Errorf("harness setup: unexpected reply %q", line)
	}
	return h, nil
}

func (h *harnessProc) call(ctx context.Context, cmd string, timeout time.Duration) (string, error) {
	io.WriteString(h.stdin, cmd+"\n") // a dead harness is reported by expect
	return h.expect(ctx, timeout)
}

func (h *harnessProc) expect(ctx context.Context, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-h.lines:
		if ok {
			return line, nil
		}
		<-h.exited
		return "", fmt.Errorf("%w: %s%s", errExited, exitReason(h.cmd.ProcessState), h.stderr.tail())
	case <-t.C:
		h.kill()
		return "", fmt.Errorf("%w: no reply within %v", errTimeout, timeout)
	case <-ctx.Done():
		h.kill()
		return "", ctx.Err()
	}
}

func exitReason(ps *os.ProcessState) string {
	if ps == nil {
		return "unknown exit"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("killed by signal %s (%s)", unix.SignalName(ws.Signal()), ws.Signal())
	}
	return fmt.Sprintf("exited with status %d", ps.ExitCode())
}

func (h *harnessProc) kill() {
	if h.cmd.Process != nil {
		h.cmd.Process.Kill()
	}
	for range h.lines {
	}
	<-h.exited
}

func (h *harnessProc) close() {
	io.WriteString(h.stdin, "quit\n")
	h.stdin.Close()
	drained := make(chan struct{})
	go func() {
		for range h.lines {
		}
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
		<-drained
	}
	<-h.exited
}

// tailBuffer keeps the last max bytes written (the harness's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) tail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(bytes.TrimSpace(t.buf))
	if s == "" {
		return ""
	}
	return "; stderr: " + s
}
