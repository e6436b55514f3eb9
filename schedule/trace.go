package schedule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// ErrReplay is wrapped by every replay failure.
var ErrReplay = errors.New("trace does not replay")

// Operand is an integer operand in a trace: a literal, or the name of a
// sampled value. It is JSON as a number or a string.
type Operand struct {
	Lit int64
	Ref string
}

// MarshalJSON writes a literal as a number and a reference as a string.
func (o Operand) MarshalJSON() ([]byte, error) {
	if o.Ref != "" {
		return json.Marshal(o.Ref)
	}
	return []byte(strconv.FormatInt(o.Lit, 10)), nil
}

// UnmarshalJSON reads a number or a string.
func (o *Operand) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &o.Ref)
	}
	return json.Unmarshal(b, &o.Lit)
}

// Inst is one applied primitive: its name, name operands (loops, blocks,
// buffers, scope, thread axis), integer operands, probabilities, layout,
// the names it created, and for sampling steps the decision taken.
type Inst struct {
	Op       string    `json:"op"`
	Args     []string  `json:"args,omitempty"`
	Ints     []Operand `json:"ints,omitempty"`
	Floats   []float64 `json:"floats,omitempty"`
	Layout   *Layout   `json:"layout,omitempty"`
	Outputs  []string  `json:"outputs,omitempty"`
	Decision []int64   `json:"decision,omitempty"`
}

// Trace is a replayable schedule.
type Trace struct {
	Def   string `json:"def"`
	Insts []Inst `json:"insts"`
}

// JSON encodes the trace (deterministically: struct fields only).
func (t *Trace) JSON() ([]byte, error) { return json.MarshalIndent(t, "", "  ") }

// ParseTrace decodes a trace, rejecting unknown fields.
func ParseTrace(data []byte) (*Trace, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var t Trace
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("parse trace: %w", err)
	}
	// Decode stops after the first value: text after it (a second trace
	// pasted into one file, a truncated edit) is an error, not ignored.
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("parse trace: unexpected data after the trace at byte %d", dec.InputOffset())
	}
	return &t, nil
}

// WithDecision returns a copy of the trace whose instruction i takes
// decision d: replaying it gives a neighbouring schedule.
func (t *Trace) WithDecision(i int, d []int64) (*Trace, error) {
	if i < 0 || i >= len(t.Insts) || t.Insts[i].Decision == nil {
		return nil, fmt.Errorf("instruction %d is not a sampling step", i)
	}
	c := Trace{Def: t.Def, Insts: append([]Inst{}, t.Insts...)}
	c.Insts[i].Decision = append([]int64{}, d...)
	return &c, nil
}

// Replay lowers def afresh and applies the trace, using the recorded
// decisions of sampling steps. It fails (never panics) on unknown
// primitives, names that do not exist, illegal decisions, and outputs that
// differ from the recorded ones.
func Replay(def *Def, t *Trace) (s *Schedule, err error) {
	if t.Def != "" && t.Def != def.Name {
		return nil, fmt.Errorf("%w: trace is for %q, definition is %q", ErrReplay, t.Def, def.Name)
	}
	s, err = New(def, 0)
	if err != nil {
		return nil, err
	}
	for i, in := range t.Insts {
		if err := s.step(in); err != nil {
			return nil, fmt.Errorf("%w: instruction %d (%s): %w", ErrReplay, i, in.Op, err)
		}
		got := s.trace.Insts[len(s.trace.Insts)-1].Outputs
		if in.Outputs != nil && fmt.Sprint(got) != fmt.Sprint(in.Outputs) {
			return nil, fmt.Errorf("%w: instruction %d (%s) made %v, trace says %v", ErrReplay, i, in.Op, got, in.Outputs)
		}
	}
	return s, nil
}

func (s *Schedule) step(in Inst) error {
	args := func(n int) error {
		if len(in.Args) != n {
			return fmt.Errorf("want %d name operands, got %d", n, len(in.Args))
		}
		return nil
	}
	refs := func() []Ref {
		out := make([]Ref, len(in.Ints))
		for i, o := range in.Ints {
			out[i] = Ref{Name: o.Ref, Value: o.Lit}
			if o.Ref != "" {
				out[i].Value = s.vals[o.Ref]
			}
		}
		return out
	}
	var err error
	switch in.Op {
	case "split":
		if err = args(1); err == nil {
			_, err = s.SplitBy(in.Args[0], refs()...)
		}
	case "tile":
		_, err = s.TileBy(in.Args, refs())
	case "reorder":
		err = s.Reorder(in.Args...)
	case "fuse":
		_, err = s.Fuse(in.Args...)
	case "vectorize":
		if err = args(1); err == nil {
			err = s.Vectorize(in.Args[0])
		}
	case "unroll":
		if err = args(1); err == nil {
			err = s.Unroll(in.Args[0])
		}
	case "parallel":
		if err = args(1); err == nil {
			err = s.Parallel(in.Args[0])
		}
	case "bind":
		if err = args(2); err == nil {
			err = s.Bind(in.Args[0], in.Args[1])
		}
	case "tensorize":
		if err = args(2); err == nil {
			err = s.Tensorize(in.Args[0], in.Args[1])
		}
	case "prefetch":
		if err = args(2); err == nil && len(in.Ints) != 1 {
			err = fmt.Errorf("want 1 integer operand (distance), got %d", len(in.Ints))
		}
		if err == nil {
			err = s.Prefetch(in.Args[0], in.Args[1], refs()[0])
		}
	case "cache_read":
		if err = args(3); err == nil {
			_, err = s.CacheRead(in.Args[0], in.Args[1], Scope(in.Args[2]), in.Layout)
		}
	case "cache_write":
		if err = args(2); err == nil {
			_, err = s.CacheWrite(in.Args[0], Scope(in.Args[1]))
		}
	case "compute_at":
		if err = args(2); err == nil {
			err = s.ComputeAt(in.Args[0], in.Args[1])
		}
	case "reverse_compute_at":
		if err = args(2); err == nil {
			err = s.ReverseComputeAt(in.Args[0], in.Args[1])
		}
	case "set_scope":
		if err = args(2); err == nil {
			err = s.SetScope(in.Args[0], Scope(in.Args[1]))
		}
	case "set_layout":
		if err = args(1); err == nil {
			err = s.SetLayout(in.Args[0], in.Layout)
		}
	case "compute_inline":
		if err = args(1); err == nil {
			err = s.ComputeInline(in.Args[0])
		}
	case "decompose_reduction":
		if err = args(2); err == nil {
			_, err = s.DecomposeReduction(in.Args[0], in.Args[1])
		}
	case "rfactor":
		if err = args(2); err == nil && len(in.Ints) != 1 {
			err = fmt.Errorf("want 1 integer operand (factor axis), got %d", len(in.Ints))
		}
		if err == nil {
			_, err = s.RFactor(in.Args[0], in.Args[1], int(in.Ints[0].Lit))
		}
	case "sample_perfect_tile":
		if err = args(1); err == nil && len(in.Ints) != 2 {
			err = fmt.Errorf("want 2 integer operands (n, max_innermost), got %d", len(in.Ints))
		}
		if err == nil {
			s.replay, s.replaying = true, in.Decision
			_, err = s.SamplePerfectTile(in.Args[0], int(in.Ints[0].Lit), in.Ints[1].Lit)
		}
	case "sample_categorical":
		s.replay, s.replaying = true, in.Decision
		cands := make([]int64, len(in.Ints))
		for i, o := range in.Ints {
			cands[i] = o.Lit
		}
		_, err = s.SampleCategorical(cands, in.Floats)
	default:
		err = fmt.Errorf("unknown primitive %q", in.Op)
	}
	s.replay, s.replaying = false, nil
	return err
}
