package tuningdb

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Kind is the kind of device a record was measured on.
type Kind string

const (
	KindCPU  Kind = "cpu"
	KindCUDA Kind = "cuda"
)

func (k Kind) valid() bool { return k == KindCPU || k == KindCUDA }

// Device is a measured machine, stored as data: tuningdb does not know how
// fingerprints are taken, only that Hash identifies one and Kind+Compat name
// the class of devices whose schedules are interchangeable.
type Device struct {
	// Hash is the SHA-256 hex of Fingerprint (the producer's canonical JSON).
	Hash string `json:"hash"`
	Kind Kind   `json:"kind"`
	// Compat names the compatibility class, e.g. "x86_64/avx512f+fma" or
	// "sm_90". Devices with equal Kind and Compat are compatible.
	Compat      string          `json:"compat"`
	Fingerprint json.RawMessage `json:"fingerprint"`
	Roofline    Roofline        `json:"roofline"`
}

// Roofline holds a device's measured peaks, one point per thread count (CPU)
// or one point with Threads 0 (GPU).
type Roofline struct {
	Points []RooflinePoint `json:"points,omitempty"`
}

// RooflinePoint is the roofline at one thread count.
type RooflinePoint struct {
	Threads    int     `json:"threads"`
	PeakGFLOPS float64 `json:"peak_gflops"`
	ReadGBps   float64 `json:"read_gbps"`
}

// Workload is one kernel group at concrete (bucketed) shapes. Its identity
// is computed by the producer; tuningdb stores it as data.
type Workload struct {
	// Key is the SHA-256 hex of JSON (the canonical workload key).
	Key string `json:"key"`
	// Family is the hash of the same JSON with the dynamic dims left out:
	// workloads that differ only in shape bucket share a Family.
	Family string `json:"family"`
	// Bucket is the bucket of the dynamic dim (0 when all dims are static).
	Bucket int64 `json:"bucket"`
	// Group is the op group, e.g. "linear" or "rms_norm+linear".
	Group string          `json:"group"`
	JSON  json.RawMessage `json:"json"`
}

// Status is the outcome of one measurement.
type Status string

const (
	StatusOK           Status = "ok"
	StatusBuildError   Status = "build_error"
	StatusRuntimeError Status = "runtime_error"
	StatusTimeout      Status = "timeout"
	StatusWrongResult  Status = "wrong_result"
)

// Statuses lists every status, "ok" first.
var Statuses = []Status{StatusOK, StatusBuildError, StatusRuntimeError, StatusTimeout, StatusWrongResult}

// ParseStatus checks a status name.
func ParseStatus(s string) (Status, error) {
	if slices.Contains(Statuses, Status(s)) {
		return Status(s), nil
	}
	return "", fmt.Errorf("unknown status %q (want one of ok, build_error, runtime_error, timeout, wrong_result)", s)
}

// Record is one measurement of one schedule (trace) of a workload on a device.
type Record struct {
	WorkloadKey    string `json:"workload"`
	DeviceHash     string `json:"device"`
	CodegenVersion int    `json:"codegen_version"`
	// Trace is the schedule trace as JSON; its meaning depends on CodegenVersion.
	Trace  json.RawMessage `json:"trace"`
	Status Status          `json:"status"`
	Error  string          `json:"error,omitempty"`
	// Samples are all latency samples, in seconds.
	Samples []float64 `json:"samples,omitempty"`
	// Median, Min and IQR summarise Samples (seconds). When all three are
	// zero and Samples is not empty, RecordBatch computes them with Summarize.
	Median       float64   `json:"median,omitempty"`
	Min          float64   `json:"min,omitempty"`
	IQR          float64   `json:"iqr,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	LLMIRVersion string    `json:"llmir_version"`
	// RunID is the tuning run the record came from, 0 for none. It is local
	// to one database and is not exported.
	RunID int64 `json:"-"`
}

// Summary is the statistics kept with every ok record.
type Summary struct {
	Median, Min, IQR float64
}

// ErrNoSamples is returned by Summarize for an empty sample set.
var ErrNoSamples = errors.New("no latency samples")

// Summarize computes median, min and interquartile range of latency samples.
// Quantiles interpolate linearly between order statistics (Hyndman–Fan
// type 7, as numpy and R default to), so one sample gives IQR 0.
func Summarize(samples []float64) (Summary, error) {
	if len(samples) == 0 {
		return Summary{}, ErrNoSamples
	}
	s := slices.Clone(samples)
	for i, v := range s {
		if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
			return Summary{}, fmt.Errorf("sample %d is %v: latencies must be finite and positive", i, v)
		}
	}
	slices.Sort(s)
	return Summary{Median: Quantile(s, 0.5), Min: s[0], IQR: Quantile(s, 0.75) - Quantile(s, 0.25)}, nil
}

// Quantile is the p-quantile of sorted (non-empty) values, interpolated
// linearly between order statistics (Hyndman and Fan's type 7, as R and
// NumPy default to).
func Quantile(sorted []float64, p float64) float64 {
	h := p * float64(len(sorted)-1)
	lo := math.Floor(h)
	i := int(lo)
	if i+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (h-lo)*(sorted[i+1]-sorted[i])
}

// HashJSON is the SHA-256 hex of b, the hash Device.Hash and Workload.Key are
// defined by. Producers canonicalise their JSON first; tuningdb only checks.
func HashJSON(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// IsHash reports whether s is a SHA-256 digest as HashJSON writes it (64
// lower-case hex digits), the form of device hashes and workload keys.
func IsHash(s string) bool { return isHash(s) }

func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// check validates a device before it is stored.
func (d *Device) check() error {
	if !isHash(d.Hash) {
		return fmt.Errorf("device hash %q is not a SHA-256 hex", d.Hash)
	}
	if !d.Kind.valid() {
		return fmt.Errorf("device %.12s: kind %q is not cpu or cuda", d.Hash, d.Kind)
	}
	if d.Compat == "" {
		return fmt.Errorf("device %.12s: empty compat class", d.Hash)
	}
	if !json.Valid(d.Fingerprint) {
		return fmt.Errorf("device %.12s: fingerprint is not valid JSON", d.Hash)
	}
	if got := HashJSON(d.Fingerprint); got != d.Hash {
		return fmt.Errorf("device %.12s: hash is not the SHA-256 of the fingerprint (that is %.12s)", d.Hash, got)
	}
	for i, p := range d.Roofline.Points {
		if p.Threads < 0 || !finiteNonNeg(p.PeakGFLOPS) || !finiteNonNeg(p.ReadGBps) {
			return fmt.Errorf("device %.12s: roofline point %d: threads, GFLOP/s and GB/s must be finite and non-negative", d.Hash, i)
		}
	}
	return nil
}

// check validates a workload before it is stored.
func (w *Workload) check() error {
	if !isHash(w.Key) {
		return fmt.Errorf("workload key %q is not a SHA-256 hex", w.Key)
	}
	if !json.Valid(w.JSON) {
		return fmt.Errorf("workload %.12s: json is not valid JSON", w.Key)
	}
	if got := HashJSON(w.JSON); got != w.Key {
		return fmt.Errorf("workload %.12s: key is not the SHA-256 of its JSON (that is %.12s)", w.Key, got)
	}
	if w.Family == "" {
		return fmt.Errorf("workload %.12s: empty family", w.Key)
	}
	if w.Bucket < 0 {
		return fmt.Errorf("workload %.12s: negative bucket %d", w.Key, w.Bucket)
	}
	if w.Group == "" {
		return fmt.Errorf("workload %.12s: empty op group", w.Key)
	}
	return nil
}

// normalize validates a record and fills its summary from the samples when
// the producer left it out.
func (r *Record) normalize() error {
	if !isHash(r.WorkloadKey) {
		return fmt.Errorf("workload key %q is not a SHA-256 hex", r.WorkloadKey)
	}
	if !isHash(r.DeviceHash) {
		return fmt.Errorf("device hash %q is not a SHA-256 hex", r.DeviceHash)
	}
	if _, err := ParseStatus(string(r.Status)); err != nil {
		return err
	}
	if !json.Valid(r.Trace) {
		return errors.New("trace is not valid JSON")
	}
	if err := checkTime(r.CreatedAt); err != nil {
		return err
	}
	for i, v := range r.Samples {
		if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
			return fmt.Errorf("sample %d is %v: latencies must be finite and positive", i, v)
		}
	}
	if len(r.Samples) == 0 {
		// A summary without samples cannot be checked; it is not stored.
		r.Median, r.Min, r.IQR = 0, 0, 0
	}
	if r.Median == 0 && r.Min == 0 && r.IQR == 0 && len(r.Samples) > 0 {
		s, err := Summarize(r.Samples)
		if err != nil {
			return err
		}
		r.Median, r.Min, r.IQR = s.Median, s.Min, s.IQR
	}
	if r.Status == StatusOK {
		if len(r.Samples) == 0 {
			return errors.New("status ok without latency samples")
		}
		if !(r.Median > 0) || !(r.Min > 0) || !(r.IQR >= 0) || math.IsInf(r.Median+r.Min+r.IQR, 0) {
			return fmt.Errorf("median %v, min %v, iqr %v: want positive finite median and min, IQR ≥ 0", r.Median, r.Min, r.IQR)
		}
		if r.Min > r.Median {
			return fmt.Errorf("min %v is above median %v", r.Min, r.Median)
		}
	}
	return nil
}

// Digest is the SHA-256 of a record's content: two records with equal digests
// are the same measurement, which import and merge store once. RunID is left
// out because it is local to one database.
func (r *Record) Digest() [32]byte {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		putUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	num := func(u uint64) {
		var n [8]byte
		putUint64(n[:], u)
		h.Write(n[:])
	}
	field([]byte(r.WorkloadKey))
	field([]byte(r.DeviceHash))
	num(uint64(int64(r.CodegenVersion)))
	field(compactJSON(r.Trace))
	field([]byte(r.Status))
	field([]byte(r.Error))
	num(uint64(len(r.Samples)))
	for _, v := range r.Samples {
		num(math.Float64bits(v))
	}
	num(math.Float64bits(r.Median))
	num(math.Float64bits(r.Min))
	num(math.Float64bits(r.IQR))
	num(uint64(r.CreatedAt.UnixNano()))
	field([]byte(r.LLMIRVersion))
	var d [32]byte
	h.Sum(d[:0])
	return d
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

// compactJSON removes insignificant whitespace so that a trace re-indented by
// a tool is still the same trace. Invalid JSON is returned unchanged (callers
// validate first).
func compactJSON(b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

// checkTime refuses times the database cannot store: they are kept as Unix
// nanoseconds, which hold years 1678–2262.
func checkTime(t time.Time) error {
	if t.IsZero() {
		return errors.New("created_at is not set")
	}
	if y := t.Year(); y < 1970 || y > 2261 {
		return fmt.Errorf("created_at %s is outside 1970–2261", t.Format(time.RFC3339))
	}
	return nil
}

func finiteNonNeg(v float64) bool { return v >= 0 && !math.IsInf(v, 0) }
