package target

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/sourcegraph/conc/pool"
)

// Status is the outcome of one candidate. Every candidate gets exactly one,
// failures included: a failure is data for the tuner, never a reason to stop
// the batch.
type Status string

const (
	StatusOK           Status = "ok"
	StatusBuildError   Status = "build_error"   // compiler or loader rejected it
	StatusRuntimeError Status = "runtime_error" // crashed (signal) or returned non-zero
	StatusTimeout      Status = "timeout"       // exceeded the per-candidate time limit
	StatusWrongResult  Status = "wrong_result"  // outputs, guard bands or inputs wrong
)

// Valid reports whether s is one of the five statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusOK, StatusBuildError, StatusRuntimeError, StatusTimeout, StatusWrongResult:
		return true
	}
	return false
}

// DType is a storage element type. Arithmetic is f32 whatever the storage.
type DType string

const (
	F32  DType = "f32"
	BF16 DType = "bf16"
	F16  DType = "f16"
	// Integer types, for inputs with structure (block tables, token ids,
	// positions, quantized weights; U8 packs two int4 values) and exact
	// outputs (argmax). Integer inputs need a BufferSpec.Fill.
	I32 DType = "i32"
	I8  DType = "i8"
	U8  DType = "u8"
)

// Size is the storage size of one element in bytes.
func (d DType) Size() int {
	switch d {
	case F32, I32:
		return 4
	case BF16, F16:
		return 2
	case I8, U8:
		return 1
	}
	return 0
}

// Integer reports whether d is one of the integer types.
func (d DType) Integer() bool { return d == I32 || d == I8 || d == U8 }

// Tolerance is the default relative-L2 tolerance for outputs stored as d.
// f32 allows for a different summation order than the float64 reference over
// reductions of tens of thousands of terms; the 16-bit types are dominated by
// the rounding of the stored output itself (2^-9 for bf16, 2^-12 for f16).
func (d DType) Tolerance() float64 {
	switch d {
	case F32:
		return 1e-4
	case BF16:
		return 1e-2
	case F16:
		return 2e-3
	}
	return 0 // integers: exact
}

// BufferSpec describes buffer i of a problem, in the ABI's order: inputs
// first, then outputs.
type BufferSpec struct {
	Name   string `json:"name"`
	DType  DType  `json:"dtype"`
	Elems  int64  `json:"elems"`
	Output bool   `json:"output"`
	// Fill draws an input's values (before rounding to DType) when they
	// need structure: block tables that are permutations, lengths, token
	// ids in range. Nil draws non-zero uniform values in [-1, 1].
	Fill func(rng *rand.Rand, v []float64) `json:"-"`
}

// Bytes is the buffer's storage size.
func (b BufferSpec) Bytes() int64 { return b.Elems * int64(b.DType.Size()) }

// Problem is one concrete instance of a kernel: what the runner allocates,
// fills, passes to the candidate and checks the outputs against.
type Problem struct {
	Name    string
	Buffers []BufferSpec
	// Dims are the runtime extents of the dynamic dims, passed as dims[j].
	Dims []int64
	// Seed makes the generated inputs reproducible.
	Seed uint64
	// Reference computes every output buffer (in declared order, float64)
	// from the inputs (decoded from their storage type). It is called once
	// per Problem; see Expected.
	Reference func(inputs [][]float64) [][]float64
	// Tol overrides the per-dtype tolerance when > 0.
	Tol float64
	// FLOPs and Bytes (minimum memory traffic) turn a time into GFLOP/s and
	// GB/s.
	FLOPs float64
	Bytes float64

	once     sync.Once
	inputs   [][]float64
	expected [][]float64
	err      error
}

// Validate checks the problem's declaration.
func (p *Problem) Validate() error {
	if p.Reference == nil {
		return fmt.Errorf("problem %s: no reference", p.Name)
	}
	var in, out int
	for i, b := range p.Buffers {
		if b.DType.Size() == 0 {
			return fmt.Errorf("problem %s: buffer %d (%s): unknown dtype %q", p.Name, i, b.Name, b.DType)
		}
		if b.Elems <= 0 {
			return fmt.Errorf("problem %s: buffer %d (%s): %d elements", p.Name, i, b.Name, b.Elems)
		}
		if b.Output && b.DType.Size() < 2 {
			return fmt.Errorf("problem %s: buffer %d (%s): %s outputs are not supported (the harness poisons 2- and 4-byte elements)", p.Name, i, b.Name, b.DType)
		}
		if b.DType.Integer() && !b.Output && b.Fill == nil {
			return fmt.Errorf("problem %s: buffer %d (%s): integer input without a Fill", p.Name, i, b.Name)
		}
		if b.Output {
			out++
		} else {
			if out > 0 {
				return fmt.Errorf("problem %s: buffer %d (%s): input after an output", p.Name, i, b.Name)
			}
			in++
		}
	}
	if out == 0 {
		return fmt.Errorf("problem %s: no output buffer", p.Name)
	}
	return nil
}

// Inputs returns the seeded inputs, already rounded to their storage type,
// so that the reference sees exactly what the kernel sees.
func (p *Problem) Inputs() [][]float64 {
	p.compute()
	return p.inputs
}

// Expected returns the reference outputs, computed once per Problem.
func (p *Problem) Expected() ([][]float64, error) {
	p.compute()
	return p.expected, p.err
}

func (p *Problem) compute() {
	p.once.Do(func() {
		if err := p.Validate(); err != nil {
			p.err = err
			return
		}
		rng := rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15))
		for bi, b := range p.Buffers {
			if b.Output {
				continue
			}
			v := makeFloat64s(b.Elems)
			if b.Fill != nil {
				b.Fill(rng, v)
				for i := range v {
					v[i] = Round(b.DType, v[i])
				}
			} else {
				fillUniform(v, b.DType, p.Seed, uint64(bi))
			}
			p.inputs = append(p.inputs, v)
		}
		out := p.Reference(p.inputs)
		outs := p.Buffers[len(p.inputs):]
		if len(out) != len(outs) {
			p.err = fmt.Errorf("problem %s: reference returned %d outputs, want %d", p.Name, len(out), len(outs))
			return
		}
		for i, o := range out {
			if int64(len(o)) != outs[i].Elems {
				p.err = fmt.Errorf("problem %s: reference output %s has %d elements, want %d", p.Name, outs[i].Name, len(o), outs[i].Elems)
				return
			}
		}
		p.expected = out
	})
}

// fillChunk is how many elements of a default-filled input one goroutine
// draws from its own seeded stream.
const fillChunk = 1 << 20

// hugePageMin is the size from which input buffers ask for transparent huge
// pages (makeFloat64s; a plain make where the system has no such advice).
const hugePageMin = 64 << 20

// fillUniform fills v with NonZeroUniform draws rounded to dt, in chunks
// drawn in parallel, each from a stream seeded by (seed, buffer, chunk):
// the same values at any GOMAXPROCS. A 128256×4096 table (an lm_head's
// weights, the token embedding) took 23 s to make one draw at a time.
func fillUniform(v []float64, dt DType, seed, buffer uint64) {
	g := pool.New().WithMaxGoroutines(runtime.GOMAXPROCS(0))
	stream := seed ^ (buffer+1)*0x9e3779b97f4a7c15
	for start := 0; start < len(v); start += fillChunk {
		chunk := v[start:min(start+fillChunk, len(v))]
		// The PCG called directly, not through rand.Rand's interface, with
		// the same values (Float64 is the low 53 bits over 2^53).
		pcg := rand.NewPCG(stream, uint64(start/fillChunk))
		g.Go(func() {
			for i := range chunk {
				chunk[i] = Round(dt, nonZero(float64(pcg.Uint64()<<11>>11)/(1<<53)))
			}
		})
	}
	g.Wait()
}

// NonZeroUniform draws from [-1, 1] with |x| ≥ 1/64: a zero input would hide
// a kernel that skips a term, and tiny ones would hide it almost as well.
func NonZeroUniform(rng *rand.Rand) float64 { return nonZero(rng.Float64()) }

// nonZero maps u in [0, 1) onto [-1, -1/64] ∪ [1/64, 1].
func nonZero(u float64) float64 {
	// Branch-free (a coin-flip branch per element cost more than the draw).
	x := u*(2-2.0/64) - (1 - 1.0/64)
	return x + math.Copysign(1.0/64, x)
}

// Rates converts a time in seconds into GFLOP/s and GB/s for this problem.
func (p *Problem) Rates(seconds float64) (gflops, gbs float64) {
	if seconds <= 0 {
		return 0, 0
	}
	return p.FLOPs / seconds / 1e9, p.Bytes / seconds / 1e9
}

// Tolerance is the relative-L2 bound the outputs must meet.
func (p *Problem) Tolerance() float64 {
	if p.Tol > 0 {
		return p.Tol
	}
	var t float64
	for _, b := range p.Buffers {
		if b.Output {
			t = max(t, b.DType.Tolerance())
		}
	}
	return t
}

// InputBuffers and OutputBuffers split Buffers at the ABI boundary.
func (p *Problem) InputBuffers() []BufferSpec {
	for i, b := range p.Buffers {
		if b.Output {
			return p.Buffers[:i]
		}
	}
	return p.Buffers
}

func (p *Problem) OutputBuffers() []BufferSpec { return p.Buffers[len(p.InputBuffers()):] }

// RelL2 is ‖got−want‖/‖want‖ over all elements. Any non-finite element in
// got makes it +Inf, so a NaN-poisoned element the kernel never wrote fails
// any tolerance. A NaN in want means "must not be written": the element
// must still hold the harness's NaN poison (an output the kernel updates
// only in part, like the slots append_kv writes into a paged cache).
func RelL2(got, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i, g := range got {
		if math.IsNaN(want[i]) {
			if !math.IsNaN(g) {
				return math.Inf(1)
			}
			continue
		}
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return math.Inf(1)
		}
		d := g - want[i]
		num += d * d
		den += want[i] * want[i]
	}
	if den == 0 {
		if num == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return math.Sqrt(num / den)
}

// Candidate is one C (or CUDA) translation unit following the target's ABI.
type Candidate struct {
	ID      string   `json:"id"`
	Source  string   `json:"source"`
	Entry   string   `json:"entry"`
	CFlags  []string `json:"cflags,omitempty"`
	LDFlags []string `json:"ldflags,omitempty"`
	// Threads is the thread count the runner gives the child process
	// (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS); 0 means 1.
	Threads int `json:"threads"`
	// UnsetEnv names environment variables removed from the child's
	// environment for this candidate only (benchmarks unset OPENBLAS_CORETYPE
	// and OPENBLAS_L2_SIZE for the OpenBLAS baseline).
	UnsetEnv []string `json:"unset_env,omitempty"`
}

// Built is a candidate after Build: a loadable artifact, or a build failure.
type Built struct {
	Candidate Candidate
	// Artifact is the path of the built object; empty when Failure is set.
	Artifact string
	// Failure is the build_error measurement when the build failed.
	Failure *Measurement
	// Cached is true when the artifact came from the content-addressed cache.
	Cached bool
	// Duration is the compiler's wall time (0 when cached).
	Duration time.Duration
}

// Measurement is everything known about one candidate on one problem.
type Measurement struct {
	CandidateID string `json:"candidate_id"`
	Status      Status `json:"status"`
	// Error is the failure's text: gcc diagnostics, the signal, the guard
	// band that was hit, the relative error that was too large.
	Error string `json:"error,omitempty"`
	// RelErr is the validation's ‖out−ref‖/‖ref‖ (+Inf for non-finite
	// outputs, which JSON cannot carry: it is stored as -1 there); 0 when
	// the candidate failed before its outputs could be compared.
	RelErr float64 `json:"-"`
	// Samples are all timed runs in seconds, in the order they ran.
	Samples []float64 `json:"samples,omitempty"`
	Median  float64   `json:"median,omitempty"`
	Min     float64   `json:"min,omitempty"`
	Q1      float64   `json:"q1,omitempty"`
	Q3      float64   `json:"q3,omitempty"`
	Threads int       `json:"threads"`
}

// MarshalJSON carries RelErr as -1 when it is not finite.
func (m Measurement) MarshalJSON() ([]byte, error) {
	type plain Measurement
	rel := m.RelErr
	if math.IsNaN(rel) || math.IsInf(rel, 0) {
		rel = -1
	}
	return json.Marshal(struct {
		plain
		RelErr float64 `json:"rel_err"`
	}{plain(m), rel})
}

// UnmarshalJSON reverses MarshalJSON.
func (m *Measurement) UnmarshalJSON(b []byte) error {
	type plain Measurement
	var v struct {
		plain
		RelErr float64 `json:"rel_err"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*m = Measurement(v.plain)
	m.RelErr = v.RelErr
	if v.RelErr < 0 {
		m.RelErr = math.Inf(1)
	}
	return nil
}

// IQR is the interquartile range Q3−Q1.
func (m Measurement) IQR() float64 { return m.Q3 - m.Q1 }

// OK reports whether the candidate was valid and timed.
func (m Measurement) OK() bool { return m.Status == StatusOK && len(m.Samples) > 0 }

// SetSamples stores the samples and their statistics. Quartiles use linear
// interpolation between order statistics (R type 7, numpy's default).
func (m *Measurement) SetSamples(s []float64) {
	m.Samples = s
	if len(s) == 0 {
		m.Median, m.Min, m.Q1, m.Q3 = 0, 0, 0, 0
		return
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	m.Min = sorted[0]
	m.Median = Quantile(sorted, 0.5)
	m.Q1 = Quantile(sorted, 0.25)
	m.Q3 = Quantile(sorted, 0.75)
}

// Quantile of already sorted values, q in [0,1].
func Quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	h := q * float64(len(sorted)-1)
	lo := int(math.Floor(h))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	return sorted[lo] + (h-float64(lo))*(sorted[lo+1]-sorted[lo])
}

// TieFraction is the relative median difference under which two
// measurements are tied.
const TieFraction = 0.02

// Tied reports whether two successful measurements cannot be told apart:
// medians within 2% of the faster one, or overlapping interquartile ranges.
// The protocol gives a tie to the simpler schedule.
func Tied(a, b Measurement) bool {
	if !a.OK() || !b.OK() {
		return false
	}
	lo := min(a.Median, b.Median)
	if math.Abs(a.Median-b.Median) <= TieFraction*lo {
		return true
	}
	return a.Q1 <= b.Q3 && b.Q1 <= a.Q3
}

// Faster reports whether a is strictly better than b: a is ok and b is not,
// or both are ok, not tied, and a's median is lower.
func Faster(a, b Measurement) bool {
	switch {
	case !a.OK():
		return false
	case !b.OK():
		return true
	case Tied(a, b):
		return false
	}
	return a.Median < b.Median
}

// RunOptions is the timing protocol's knobs. The zero value means the
// protocol's defaults (see WithDefaults).
type RunOptions struct {
	// Warmup is the minimum untimed warm-up per candidate (default 25 ms).
	Warmup time.Duration
	// Budget is the minimum total timed duration (default 100 ms).
	Budget time.Duration
	// MinSamples is the minimum number of timed runs (default 5), even when
	// they exceed Budget.
	MinSamples int
	// MaxSamples caps the samples kept for a very fast kernel (default 20000).
	MaxSamples int
	// Timeout bounds each phase of one candidate (load + validation, then
	// timing beyond Warmup+Budget); past it the candidate is a timeout
	// (default 60 s).
	Timeout time.Duration
}

// WithDefaults fills the zero fields.
func (o RunOptions) WithDefaults() RunOptions {
	if o.Warmup <= 0 {
		o.Warmup = 25 * time.Millisecond
	}
	if o.Budget <= 0 {
		o.Budget = 100 * time.Millisecond
	}
	if o.MinSamples <= 0 {
		o.MinSamples = 5
	}
	if o.MaxSamples <= 0 {
		o.MaxSamples = 20000
	}
	if o.MaxSamples < o.MinSamples {
		o.MaxSamples = o.MinSamples
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	return o
}

// Device is a target's fingerprint in the form every target shares.
type Device struct {
	// Kind is "cpu" or "cuda".
	Kind string `json:"kind"`
	// Name is for people, e.g. "AMD EPYC, 2 cores, x86_64/avx512f".
	Name string `json:"name"`
	// Compat is the class of devices that run the same generated code
	// (e.g. "x86_64/avx512f"); lookups fall back to it.
	Compat string `json:"compat"`
	// JSON is the target's canonical fingerprint; Hash its SHA-256 hex.
	JSON json.RawMessage `json:"fingerprint"`
	Hash string          `json:"hash"`
}

// Target builds and measures candidates on one device.
type Target interface {
	// Fingerprint describes the device and toolchain that measure.
	Fingerprint(ctx context.Context) (Device, error)
	// Build compiles every candidate (in parallel). Failures are in the
	// result (Built.Failure); the error is for the infrastructure only
	// (no compiler, cancelled context). Keyed by candidate ID.
	Build(ctx context.Context, cands []Candidate) (map[string]Built, error)
	// Run validates then times the built candidates on p, one at a time, in
	// the given order. Every candidate gets a Measurement keyed by its ID,
	// build failures passed through.
	Run(ctx context.Context, p *Problem, built []Built, opts RunOptions) (map[string]Measurement, error)
}

// Measure builds the whole batch, then measures it: the protocol never
// builds while measuring.
func Measure(ctx context.Context, t Target, p *Problem, cands []Candidate, opts RunOptions) (map[string]Measurement, error) {
	if err := CheckIDs(cands); err != nil {
		return nil, err
	}
	built, err := t.Build(ctx, cands)
	if err != nil {
		return nil, fmt.Errorf("measure %s: %w", p.Name, err)
	}
	order := make([]Built, 0, len(cands))
	for _, c := range cands {
		order = append(order, built[c.ID])
	}
	return t.Run(ctx, p, order, opts)
}

// CheckIDs rejects empty and duplicate candidate IDs: results are keyed by
// ID, so a duplicate would silently lose a measurement.
func CheckIDs(cands []Candidate) error {
	seen := make(map[string]bool, len(cands))
	for i, c := range cands {
		if c.ID == "" {
			return fmt.Errorf("candidate %d: empty ID", i)
		}
		if seen[c.ID] {
			return fmt.Errorf("candidate %d: duplicate ID %q", i, c.ID)
		}
		seen[c.ID] = true
	}
	return nil
}
