package cpu

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
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"llmir/target"
)

//go:embed csrc/harness.c
var harnessSource string

// maxLoads bounds the objects one harness process dlopens (they are never
// closed) before it is replaced by a fresh one.
const maxLoads = 200

// maxCopies bounds input rotation for tiny problems, whose copies would
// otherwise number in the hundreds of thousands to fill 2× the LLC.
const maxCopies = 256

// Runner measures built candidates in a harness child process.
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

var (
	errTimeout = errors.New("timeout")
	errExited  = errors.New("harness exited")
)

// Harness returns the harness executable, building it on first use. It is
// keyed by the gcc version and its own source, like candidate objects.
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
	src := exe + ".c"
	if err := os.WriteFile(src, []byte(harnessSource), 0o644); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", exe, os.Getpid())
	// The harness links libgomp itself so that the OpenMP runtime outlives
	// any one candidate object and its thread pool is shared by all.
	args := []string{"-O2", "-o", tmp, src, "-ldl", "-Wl,--no-as-needed", "-lgomp"}
	diag, _, err := runGCC(ctx, r.GCC, args)
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("harness: gcc %s: %w\n%s", strings.Join(args, " "), err, diag)
	}
	if err := os.Rename(tmp, exe); err != nil {
		return "", fmt.Errorf("harness: %w", err)
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
// the rest continue in a fresh harness process.
func (r *Runner) Run(ctx context.Context, p *target.Problem, built []target.Built, opts target.RunOptions) (map[string]target.Measurement, error) {
	opts = opts.WithDefaults()
	ids := make([]target.Candidate, len(built))
	for i, b := range built {
		ids[i] = b.Candidate
		if b.Artifact == "" && b.Failure == nil {
			return nil, fmt.Errorf("run %s: candidate %d (%q): neither built nor failed", p.Name, i, b.Candidate.ID)
		}
		// The harness protocol is whitespace-separated.
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
	dir, err := os.MkdirTemp("", "llmir-run-")
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", p.Name, err)
	}
	defer os.RemoveAll(dir)
	if strings.ContainsAny(dir, " \t\n") {
		return nil, fmt.Errorf("run %s: temporary dir %q contains whitespace (set TMPDIR)", p.Name, dir)
	}
	job, err := r.writeJob(dir, p)
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
		env := childEnv(c)
		key := strings.Join(env[len(env)-2:], " ") + " unset=" + strings.Join(c.UnsetEnv, ",")
		if h != nil && (h.key != key || h.loads >= maxLoads) {
			h.close()
			h = nil
		}
		if h == nil {
			h, err = startHarness(ctx, exe, job, env, opts.Timeout)
			if err != nil {
				return res, fmt.Errorf("run %s: candidate %s: %w", p.Name, c.ID, err)
			}
			h.key = key
		}
		h.loads++
		m, alive := r.measure(ctx, h, p, want, b, filepath.Join(dir, fmt.Sprintf("out-%d", i)), opts)
		if err := ctx.Err(); err != nil {
			// Interrupted, not failed: the candidate gets no measurement
			// rather than a runtime_error it did not cause.
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
func (r *Runner) measure(ctx context.Context, h *harnessProc, p *target.Problem, want [][]float64, b target.Built, outPath string, opts target.RunOptions) (target.Measurement, bool) {
	c := b.Candidate
	m := target.Measurement{CandidateID: c.ID, Threads: max(c.Threads, 1)}
	defer os.Remove(outPath) // up to tens of MB per candidate
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
		return fail(target.StatusRuntimeError, "entry %s returned %s", c.Entry, rest)
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
		// A slow kernel needs MinSamples+1 calls whatever the budget; the
		// validation call tells how long one takes.
		limit := opts.Warmup + opts.Budget + opts.Timeout +
			time.Duration(float64(opts.MinSamples+2)*valT*2*float64(time.Second))
		line, err := h.call(ctx, fmt.Sprintf("time %d %d %d %d", opts.Warmup.Nanoseconds(), opts.Budget.Nanoseconds(), opts.MinSamples, opts.MaxSamples), limit)
		if err != nil {
			return lost(err, "timing")
		}
		verb, rest, _ := strings.Cut(line, " ")
		switch verb {
		case "rc":
			return fail(target.StatusRuntimeError, "entry %s returned %s while timing", c.Entry, rest)
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

// writeJob writes the inputs and the job description the harness reads.
func (r *Runner) writeJob(dir string, p *target.Problem) (string, error) {
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
	fmt.Fprintf(&job, "\ncopies %d\n", r.Copies(p))
	path := filepath.Join(dir, "job.txt")
	return path, os.WriteFile(path, []byte(job.String()), 0o644)
}

// poisonPattern is a quiet NaN in the dtype's storage format; its width
// (above 0xffff or not) tells the harness the element size.
func poisonPattern(d target.DType) uint32 {
	switch d {
	case target.BF16:
		return 0x7fc0
	case target.F16:
		return 0x7e00
	}
	return 0x7fc00000
}

// childEnv is the parent's environment with the candidate's thread count
// and without the variables it asks to unset. The last two entries are the
// thread variables.
func childEnv(c target.Candidate) []string {
	threads := strconv.Itoa(max(c.Threads, 1))
	drop := append([]string{"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}, c.UnsetEnv...)
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, k) {
			env = append(env, kv)
		}
	}
	return append(env, "OMP_NUM_THREADS="+threads, "OPENBLAS_NUM_THREADS="+threads)
}

// harnessProc is one running harness and its reply stream.
type harnessProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *tailBuffer
	exited chan struct{}
	key    string // thread count and environment it was started with
	loads  int    // candidates it has loaded
}

func startHarness(ctx context.Context, exe, job string, env []string, timeout time.Duration) (*harnessProc, error) {
	cmd := exec.CommandContext(ctx, exe, job)
	cmd.Env = env
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

// call sends one command and waits for its reply line.
func (h *harnessProc) call(ctx context.Context, cmd string, timeout time.Duration) (string, error) {
	if _, err := io.WriteString(h.stdin, cmd+"\n"); err != nil {
		// The harness is gone; expect reports why.
		return h.expect(ctx, timeout)
	}
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

// kill ends the harness; draining the reply stream lets the reader
// goroutine reach EOF and reap the process.
func (h *harnessProc) kill() {
	if h.cmd.Process != nil {
		h.cmd.Process.Kill()
	}
	for range h.lines {
	}
	<-h.exited
}

// close asks the harness to quit, and kills it if it does not.
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
	case <-time.After(2 * time.Second):
		h.cmd.Process.Kill()
		<-drained
	}
	<-h.exited
}

// tailBuffer keeps the last max bytes written (the harness's stderr, which
// also receives whatever candidates print).
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
