package harness

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"llmir/target"
)

// Config is what differs between the targets sharing the protocol.
type Config struct {
	Exe        string // the built harness
	TempPrefix string // prefix of the per-run scratch directory
	// Copies is the number of copies of the inputs the child rotates
	// through while timing (≤ 1: one).
	Copies int
	// MaxLoads bounds the objects one child loads before it is replaced.
	MaxLoads int
	// Env gives a candidate's child environment and a key: a child is
	// reused only for candidates with the same key. Nil: the parent's
	// environment for all.
	Env func(c target.Candidate) (env []string, key string)
	// Threads is the thread count recorded in measurements (≤ 0: the
	// candidate's own, at least 1).
	Threads int
	// TimeLimit is the wall-clock limit of the "time" command, given the
	// validation call's seconds.
	TimeLimit func(opts target.RunOptions, valSeconds float64) time.Duration
	// CloseGrace is how long a quitting child may take (default 2 s).
	CloseGrace time.Duration
}

// Run validates, then times, each built candidate in order, one at a time.
// Build failures pass through. A crash, a CUDA error or a hang marks that
// candidate and the rest continue in a fresh child.
func Run(ctx context.Context, p *target.Problem, built []target.Built, opts target.RunOptions, cfg Config) (map[string]target.Measurement, error) {
	opts = opts.WithDefaults()
	ids := make([]target.Candidate, len(built))
	for i, b := range built {
		ids[i] = b.Candidate
		if b.Artifact == "" && b.Failure == nil {
			return nil, fmt.Errorf("run %s: candidate %d (%q): neither built nor failed", p.Name, i, b.Candidate.ID)
		}
		// The protocol is whitespace-separated.
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
	prefix := cfg.TempPrefix
	if prefix == "" {
		prefix = "llmir-run-"
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", p.Name, err)
	}
	defer os.RemoveAll(dir)
	if strings.ContainsAny(dir, " \t\n") {
		return nil, fmt.Errorf("run %s: temporary dir %q contains whitespace (set TMPDIR)", p.Name, dir)
	}
	job, err := WriteJob(dir, p, cfg.Copies)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", p.Name, err)
	}
	maxLoads := cfg.MaxLoads
	if maxLoads <= 0 {
		maxLoads = 100
	}
	res := make(map[string]target.Measurement, len(built))
	var h *Proc
	defer func() {
		if h != nil {
			h.Close()
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
		var env []string
		key := ""
		if cfg.Env != nil {
			env, key = cfg.Env(c)
		}
		if h != nil && (h.key != key || h.loads >= maxLoads) {
			h.Close()
			h = nil
		}
		if h == nil {
			h, err = Start(ctx, cfg.Exe, job, env, opts.Timeout, cfg.CloseGrace)
			if err != nil {
				return res, fmt.Errorf("run %s: candidate %s: %w", p.Name, c.ID, err)
			}
			h.key = key
		}
		h.loads++
		m, alive := measure(ctx, h, p, want, b, filepath.Join(dir, fmt.Sprintf("out-%d", i)), opts, cfg)
		if err := ctx.Err(); err != nil {
			// Interrupted, not failed: the candidate gets no measurement
			// rather than a runtime_error it did not cause.
			return res, fmt.Errorf("run %s: candidate %s: %w", p.Name, c.ID, err)
		}
		res[c.ID] = m
		if !alive {
			h.Close()
			h = nil
		}
	}
	return res, nil
}

// measure runs one candidate; alive is false when the child died or was
// killed and must be replaced.
func measure(ctx context.Context, h *Proc, p *target.Problem, want [][]float64, b target.Built, outPath string, opts target.RunOptions, cfg Config) (target.Measurement, bool) {
	c := b.Candidate
	threads := cfg.Threads
	if threads <= 0 {
		threads = max(c.Threads, 1)
	}
	m := target.Measurement{CandidateID: c.ID, Threads: threads}
	defer os.Remove(outPath) // up to tens of MB per candidate
	fail := func(s target.Status, format string, a ...any) (target.Measurement, bool) {
		m.Status, m.Error = s, fmt.Sprintf(format, a...)
		return m, true
	}
	lost := func(err error, phase string) (target.Measurement, bool) {
		m.Status = target.StatusRuntimeError
		if errors.Is(err, ErrTimeout) {
			m.Status = target.StatusTimeout
		}
		m.Error = fmt.Sprintf("%s: %v", phase, err)
		return m, false
	}
	line, err := h.Call(ctx, fmt.Sprintf("run %s %s %s", b.Artifact, c.Entry, outPath), opts.Timeout)
	if err != nil {
		return lost(err, "validation run")
	}
	verb, rest, _ := strings.Cut(line, " ")
	switch verb {
	case "load_error":
		return fail(target.StatusBuildError, "load %s: %s", b.Artifact, rest)
	case "rc":
		return fail(target.StatusRuntimeError, "entry %s returned %s", c.Entry, rest)
	case "cuda_error":
		// A CUDA error is sticky in its context: the child is done.
		h.Kill()
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
		rel, name, err := CompareOutputs(p, want, outPath)
		if err != nil {
			h.Kill()
			return lost(err, "read outputs")
		}
		m.RelErr = rel
		if !(rel <= p.Tolerance()) {
			return fail(target.StatusWrongResult, "output %s: relative L2 error %.3g exceeds tolerance %.3g", name, rel, p.Tolerance())
		}
		limit := DefaultTimeLimit(opts, valT)
		if cfg.TimeLimit != nil {
			limit = cfg.TimeLimit(opts, valT)
		}
		line, err := h.Call(ctx, fmt.Sprintf("time %d %d %d %d", opts.Warmup.Nanoseconds(), opts.Budget.Nanoseconds(), opts.MinSamples, opts.MaxSamples), limit)
		if err != nil {
			return lost(err, "timing")
		}
		verb, rest, _ := strings.Cut(line, " ")
		switch verb {
		case "rc":
			return fail(target.StatusRuntimeError, "entry %s returned %s while timing", c.Entry, rest)
		case "cuda_error":
			h.Kill()
			m.Status, m.Error = target.StatusRuntimeError, "CUDA error while timing: "+rest
			return m, false
		case "samples":
			s, err := ParseSamples(rest)
			if err != nil {
				h.Kill()
				return lost(err, "timing")
			}
			m.Status = target.StatusOK
			m.SetSamples(s)
			return m, true
		}
	}
	h.Kill()
	return lost(fmt.Errorf("protocol: unexpected reply %q", line), "harness")
}

// DefaultTimeLimit allows warmup, budget and a timeout, plus MinSamples+2
// calls as slow as the validation call: a slow kernel needs MinSamples+1
// calls whatever the budget.
func DefaultTimeLimit(opts target.RunOptions, valSeconds float64) time.Duration {
	return opts.Warmup + opts.Budget + opts.Timeout +
		time.Duration(float64(opts.MinSamples+2)*valSeconds*2*float64(time.Second))
}

// ParseSamples reads "N s1 … sN".
func ParseSamples(s string) ([]float64, error) {
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

// CompareOutputs returns the worst relative L2 error over the outputs in
// the file the child wrote, and the name of that output.
func CompareOutputs(p *target.Problem, want [][]float64, path string) (float64, string, error) {
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

// encodeChunk is how many elements WriteJob encodes at a time.
const encodeChunk = 1 << 18

// WriteJob writes the inputs and the job description the child reads into
// dir, and returns the job file's path.
func WriteJob(dir string, p *target.Problem, copies int) (string, error) {
	data := filepath.Join(dir, "inputs.bin")
	f, err := os.Create(data)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	in := p.Inputs()
	var chunk []byte
	for i, b := range p.InputBuffers() {
		// A chunk at a time, into one buffer: encoding a whole buffer at
		// once doubled the memory of the largest (the prefill lm_head's w
		// holds 2 GiB as f32 beside its 4 GiB of float64 inputs), and a
		// fresh buffer per chunk faulted in 2 GiB of new pages.
		for v := in[i]; len(v) > 0; {
			n := min(len(v), encodeChunk)
			chunk = target.AppendEncode(chunk[:0], b.DType, v[:n])
			if _, err := w.Write(chunk); err != nil {
				f.Close()
				return "", fmt.Errorf("write inputs: %w", err)
			}
			v = v[n:]
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
		fmt.Fprintf(&job, "buf %s %d %x %d\n", b.Name, b.Bytes(), PoisonPattern(b.DType), out)
	}
	job.WriteString("dims")
	for _, d := range p.Dims {
		fmt.Fprintf(&job, " %d", d)
	}
	fmt.Fprintf(&job, "\ncopies %d\n", max(copies, 1))
	path := filepath.Join(dir, "job.txt")
	return path, os.WriteFile(path, []byte(job.String()), 0o644)
}

// PoisonPattern is a quiet NaN in the dtype's storage format; its width
// (above 0xffff or not) tells the child the element size.
func PoisonPattern(d target.DType) uint32 {
	switch d {
	case target.BF16:
		return 0x7fc0
	case target.F16:
		return 0x7e00
	}
	return 0x7fc00000
}

// Build returns the harness executable in dir for source, compiling it on
// first use with compile(ctx, srcPath, outPath), which returns the
// compiler's diagnostics. The name is keyed by the toolchain version and
// the source, so a changed harness or compiler never reuses a stale one;
// it is written to a temporary name and renamed, so concurrent builders
// never see a partial file.
func Build(ctx context.Context, dir, version, source, ext string, compile func(ctx context.Context, src, out string) (string, error)) (string, error) {
	h := sha256.Sum256([]byte(version + "\x00" + source))
	exe := filepath.Join(dir, "harness-"+hex.EncodeToString(h[:])[:16])
	if _, err := os.Stat(exe); err == nil {
		return exe, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	src := exe + ext
	if err := os.WriteFile(src, []byte(source), 0o644); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", exe, os.Getpid())
	if diag, err := compile(ctx, src, tmp); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("harness: %w\n%s", err, diag)
	}
	if err := os.Rename(tmp, exe); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	return exe, nil
}
