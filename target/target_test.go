package target

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

func TestTied(t *testing.T) {
	mk := func(median, q1, q3 float64) Measurement {
		m := Measurement{Status: StatusOK, Samples: []float64{median}}
		m.Median, m.Q1, m.Q3, m.Min = median, q1, q3, q1
		return m
	}
	cases := []struct {
		name   string
		a, b   Measurement
		tied   bool
		faster bool // a faster than b
	}{
		{"within 2%", mk(1.00, 0.99, 1.00), mk(1.019, 1.018, 1.02), true, false},
		{"IQRs overlap", mk(1.00, 0.95, 1.10), mk(1.08, 1.05, 1.12), true, false},
		{"apart", mk(1.00, 0.99, 1.01), mk(1.10, 1.09, 1.11), false, true},
		{"apart, reversed", mk(1.10, 1.09, 1.11), mk(1.00, 0.99, 1.01), false, false},
		{"failed never ties", mk(1.00, 0.99, 1.01), Measurement{Status: StatusWrongResult}, false, true},
		{"failed never faster", Measurement{Status: StatusTimeout}, mk(1.00, 0.99, 1.01), false, false},
	}
	for _, c := range cases {
		if got := Tied(c.a, c.b); got != c.tied {
			t.Errorf("%s: Tied = %v, want %v", c.name, got, c.tied)
		}
		if got := Tied(c.b, c.a); got != c.tied {
			t.Errorf("%s: Tied not symmetric", c.name)
		}
		if got := Faster(c.a, c.b); got != c.faster {
			t.Errorf("%s: Faster = %v, want %v", c.name, got, c.faster)
		}
	}
}

func TestSetSamples(t *testing.T) {
	var m Measurement
	m.SetSamples([]float64{5, 1, 4, 2, 3})
	if m.Min != 1 || m.Median != 3 || m.Q1 != 2 || m.Q3 != 4 || m.IQR() != 2 {
		t.Errorf("stats %+v", m)
	}
	if m.Samples[0] != 5 {
		t.Error("SetSamples reordered the samples; they must stay in run order")
	}
	m.SetSamples([]float64{1, 2})
	if m.Median != 1.5 || m.Q1 != 1.25 || m.Q3 != 1.75 {
		t.Errorf("interpolated stats %+v", m)
	}
}

func TestRelL2(t *testing.T) {
	for _, c := range []struct {
		got, want []float64
		rel       float64
	}{
		{[]float64{1, 2}, []float64{1, 2}, 0},
		{[]float64{3, 4}, []float64{0, 0}, math.Inf(1)},
		{[]float64{0, 0}, []float64{3, 4}, 1},
		{[]float64{math.NaN(), 0}, []float64{3, 4}, math.Inf(1)},
		{[]float64{1}, []float64{1, 2}, math.Inf(1)},
	} {
		if got := RelL2(c.got, c.want); got != c.rel {
			t.Errorf("RelL2(%v, %v) = %g, want %g", c.got, c.want, got, c.rel)
		}
	}
}

func TestDTypeRoundTrip(t *testing.T) {
	for _, c := range []struct {
		d    DType
		in   float64
		want float64
	}{
		{F32, 0.1, float64(float32(0.1))},
		{BF16, 1.0, 1.0},
		{BF16, 1 + 1.0/256, 1},           // tie rounds to even
		{BF16, 1 + 3.0/256, 1 + 4.0/256}, // tie rounds to even (up)
		{F16, 1 + 1.0/2048, 1},
		{F16, 1 + 3.0/2048, 1 + 4.0/2048},
		{F16, 65504, 65504},
		{F16, 70000, math.Inf(1)},
		{F16, 1.0 / (1 << 24), 1.0 / (1 << 24)}, // smallest subnormal
		{F16, -0.5, -0.5},
	} {
		if got := Round(c.d, c.in); got != c.want {
			t.Errorf("Round(%s, %g) = %g, want %g", c.d, c.in, got, c.want)
		}
		back, err := Decode(c.d, Encode(c.d, []float64{c.in}))
		if err != nil || back[0] != c.want {
			t.Errorf("%s: decode(encode(%g)) = %v, %v; want %g", c.d, c.in, back, err, c.want)
		}
	}
	if _, err := Decode(F32, []byte{1, 2, 3}); err == nil {
		t.Error("decode of 3 bytes as f32 succeeded")
	}
}

func linear(m, n, k int64) *Problem {
	return &Problem{
		Name: "dot",
		Buffers: []BufferSpec{
			{Name: "a", DType: BF16, Elems: m * k},
			{Name: "w", DType: F32, Elems: n * k},
			{Name: "out", DType: F32, Elems: m * n, Output: true},
		},
		Seed: 42,
		Reference: func(in [][]float64) [][]float64 {
			out := make([]float64, m*n)
			for i := range m {
				for j := range n {
					for kk := range k {
						out[i*n+j] += in[0][i*k+kk] * in[1][j*k+kk]
					}
				}
			}
			return [][]float64{out}
		},
	}
}

func TestProblemInputs(t *testing.T) {
	p := linear(3, 5, 7)
	in := p.Inputs()
	if len(in) != 2 || len(in[0]) != 21 || len(in[1]) != 35 {
		t.Fatalf("input shapes %d", len(in))
	}
	for b, v := range in {
		for i, x := range v {
			if x == 0 || math.Abs(x) > 1 {
				t.Errorf("input %d[%d] = %g: want nonzero in [-1,1]", b, i, x)
			}
			if x != Round(p.Buffers[b].DType, x) {
				t.Errorf("input %d[%d] = %g not representable in %s", b, i, x, p.Buffers[b].DType)
			}
		}
	}
	q := linear(3, 5, 7)
	if q.Inputs()[1][4] != in[1][4] {
		t.Error("same seed, different inputs")
	}
	q2 := linear(3, 5, 7)
	q2.Seed = 43
	if q2.Inputs()[1][4] == in[1][4] {
		t.Error("different seed, same inputs")
	}
	if _, err := p.Expected(); err != nil {
		t.Fatal(err)
	}
	if p.Tolerance() != F32.Tolerance() {
		t.Errorf("tolerance %g", p.Tolerance())
	}
}

// TestFillUniformChunks: a default-filled input larger than one chunk is
// drawn in parallel from per-chunk streams, with the same values at any
// GOMAXPROCS, different streams for different chunks and buffers, and
// every value a nonzero bf16 in [-1, 1].
func TestFillUniformChunks(t *testing.T) {
	n := 2*fillChunk + 3
	draw := func(procs int, buffer uint64) []float64 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		v := make([]float64, n)
		fillUniform(v, BF16, 42, buffer)
		return v
	}
	one, two := draw(1, 0), draw(2, 0)
	for i := range one {
		if one[i] != two[i] {
			t.Fatalf("v[%d] = %g at GOMAXPROCS 1, %g at 2", i, one[i], two[i])
		}
		if x := one[i]; math.Abs(x) < 1.0/128 || math.Abs(x) > 1 || x != Round(BF16, x) {
			t.Fatalf("v[%d] = %g: want a bf16 with 1/64 ≤ |x| ≤ 1 (rounded)", i, x)
		}
	}
	same := func(a, b []float64) int {
		k := 0
		for i := range min(len(a), len(b)) {
			if a[i] == b[i] {
				k++
			}
		}
		return k
	}
	// bf16 has about 2^8 values per binade: equal values by chance are
	// about 1%, a repeated stream 100%.
	if k := same(one[:fillChunk], one[fillChunk:2*fillChunk]); k > fillChunk/10 {
		t.Errorf("chunks 0 and 1 agree at %d of %d elements: same stream", k, fillChunk)
	}
	if k := same(one, draw(2, 1)); k > n/10 {
		t.Errorf("buffers 0 and 1 agree at %d of %d elements: same stream", k, n)
	}
}

func TestRates(t *testing.T) {
	p := &Problem{FLOPs: 2e9, Bytes: 5e8}
	if gf, gb := p.Rates(0.5); gf != 4 || gb != 1 {
		t.Errorf("Rates(0.5) = %g GFLOP/s, %g GB/s; want 4, 1", gf, gb)
	}
	if gf, gb := p.Rates(0); gf != 0 || gb != 0 {
		t.Errorf("Rates(0) = %g, %g", gf, gb)
	}
}

func TestProblemValidate(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(*Problem)
		err    string
	}{
		{"no reference", func(p *Problem) { p.Reference = nil }, "no reference"},
		{"bad dtype", func(p *Problem) { p.Buffers[0].DType = "f64" }, "unknown dtype"},
		{"empty", func(p *Problem) { p.Buffers[1].Elems = 0 }, "0 elements"},
		{"order", func(p *Problem) { p.Buffers[0].Output = true }, "input after an output"},
		{"no output", func(p *Problem) { p.Buffers[2].Output = false }, "no output"},
		{"reference arity", func(p *Problem) {
			p.Reference = func([][]float64) [][]float64 { return nil }
		}, "returned 0 outputs"},
	} {
		p := linear(2, 2, 2)
		c.mutate(p)
		_, err := p.Expected()
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.err)
		}
	}
}

func TestMeasurementJSON(t *testing.T) {
	m := Measurement{CandidateID: "c", Status: StatusWrongResult, RelErr: math.Inf(1), Error: "NaN"}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var back Measurement
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !math.IsInf(back.RelErr, 1) || back.Status != m.Status || back.CandidateID != "c" {
		t.Errorf("round trip %s → %+v", b, back)
	}
	ok := Measurement{CandidateID: "d", Status: StatusOK, RelErr: 1e-7}
	ok.SetSamples([]float64{2, 1, 3})
	b, _ = json.Marshal(ok)
	back = Measurement{}
	if err := json.Unmarshal(b, &back); err != nil || back.RelErr != 1e-7 || back.Median != 2 || len(back.Samples) != 3 {
		t.Errorf("round trip %s → %+v, %v", b, back, err)
	}
}

func TestStatusValid(t *testing.T) {
	for _, s := range []Status{StatusOK, StatusBuildError, StatusRuntimeError, StatusTimeout, StatusWrongResult} {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	if Status("crashed").Valid() {
		t.Error("unknown status valid")
	}
}

// fakeTarget records the order of calls: Measure must build the whole
// batch before it runs any of it.
type fakeTarget struct{ calls []string }

func (f *fakeTarget) Fingerprint(context.Context) (Device, error) { return Device{Kind: "fake"}, nil }

func (f *fakeTarget) Build(_ context.Context, cs []Candidate) (map[string]Built, error) {
	out := map[string]Built{}
	for _, c := range cs {
		f.calls = append(f.calls, "build "+c.ID)
		out[c.ID] = Built{Candidate: c, Artifact: c.ID}
	}
	return out, nil
}

func (f *fakeTarget) Run(_ context.Context, _ *Problem, bs []Built, _ RunOptions) (map[string]Measurement, error) {
	out := map[string]Measurement{}
	for _, b := range bs {
		f.calls = append(f.calls, "run "+b.Candidate.ID)
		out[b.Candidate.ID] = Measurement{CandidateID: b.Candidate.ID, Status: StatusOK}
	}
	return out, nil
}

func TestMeasureBuildsThenRuns(t *testing.T) {
	f := &fakeTarget{}
	cands := []Candidate{{ID: "x"}, {ID: "y"}}
	if _, err := Measure(context.Background(), f, linear(1, 1, 1), cands, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.calls, ","); got != "build x,build y,run x,run y" {
		t.Errorf("calls %s", got)
	}
	_, err := Measure(context.Background(), f, linear(1, 1, 1), []Candidate{{ID: "x"}, {ID: "x"}}, RunOptions{})
	if err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("duplicate IDs: %v", err)
	}
}

func TestRunOptionsDefaults(t *testing.T) {
	o := RunOptions{MinSamples: 50, MaxSamples: 10}.WithDefaults()
	if o.Warmup.Milliseconds() != 25 || o.Budget.Milliseconds() != 100 || o.MaxSamples != 50 || o.Timeout <= 0 {
		t.Errorf("defaults %+v", o)
	}
}

func TestRelL2UntouchedElements(t *testing.T) {
	nan := math.NaN()
	want := []float64{1, nan, 2}
	if got := RelL2([]float64{1, nan, 2}, want); got != 0 {
		t.Errorf("untouched element kept poisoned: %v, want 0", got)
	}
	if got := RelL2([]float64{1, 0, 2}, want); !math.IsInf(got, 1) {
		t.Errorf("element that must stay untouched was written: %v, want +Inf", got)
	}
}

func TestIntegerDTypes(t *testing.T) {
	for _, c := range []struct {
		d    DType
		in   []float64
		want []float64
	}{
		{I32, []float64{-3.4, 7, 2.5e10}, []float64{-3, 7, math.MaxInt32}},
		{I8, []float64{-200, 5.5, 127}, []float64{-128, 6, 127}},
		{U8, []float64{-1, 15, 300}, []float64{0, 15, 255}},
	} {
		got, err := Decode(c.d, Encode(c.d, c.in))
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: %v round-trips to %v, want %v", c.d, c.in[i], got[i], c.want[i])
			}
		}
	}
	p := &Problem{Name: "p", Reference: func(in [][]float64) [][]float64 { return [][]float64{{0}} },
		Buffers: []BufferSpec{{Name: "ids", DType: I32, Elems: 4}, {Name: "out", DType: F32, Elems: 1, Output: true}}}
	if err := p.Validate(); err == nil {
		t.Error("integer input without a Fill accepted")
	}
	p.Buffers[0].Fill = func(rng *rand.Rand, v []float64) {
		for i := range v {
			v[i] = float64(rng.IntN(10))
		}
	}
	if err := p.Validate(); err != nil {
		t.Error(err)
	}
	for _, x := range p.Inputs()[0] {
		if x != math.Trunc(x) || x < 0 || x >= 10 {
			t.Errorf("filled input %v", x)
		}
	}
}

// makeFloat64s above the huge-page size: the full length, zeroed, and
// writable to the end (the advice covers only the aligned interior).
func TestMakeFloat64sLarge(t *testing.T) {
	n := int64(hugePageMin/8 + 3)
	v := makeFloat64s(n)
	if int64(len(v)) != n {
		t.Fatalf("len %d, want %d", len(v), n)
	}
	for i, x := range v {
		if x != 0 {
			t.Fatalf("v[%d] = %v, want 0", i, x)
		}
	}
	v[0], v[n-1] = 1, 2
	if v[0]+v[n-1] != 3 {
		t.Fatal("ends not writable")
	}
}

// AppendEncode appends after what dst holds and reuses its capacity;
// each dtype's bytes equal Encode's.
func TestAppendEncode(t *testing.T) {
	v := []float64{1.5, -2.25, 0, 3e5, -7}
	for _, d := range []DType{F32, BF16, F16, I32, I8, U8} {
		head := []byte{0xde, 0xad}
		buf := make([]byte, 0, 64)
		buf = append(buf, head...)
		got := AppendEncode(buf, d, v)
		want := append(append([]byte{}, head...), Encode(d, v)...)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: AppendEncode = %x, want %x", d, got, want)
		}
		if &got[0] != &buf[:1][0] {
			t.Errorf("%s: a buffer with room was reallocated", d)
		}
	}
}
