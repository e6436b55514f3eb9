package kernels

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	"llmir/schedule"
)

// Generator is implemented by template kernels: their C code is written by
// a generator from the values of their knobs (as FlashInfer's and vLLM's
// kernels are templates instantiated per configuration) instead of being
// printed from a lowered loop nest. Their Def is a schedule.NewTemplateDef;
// Space and Default choose the knobs with sampling steps (Knobs.Sample,
// Knobs.Choose), so their schedules are traces like any other: replayed,
// mutated, deduplicated and stored the same way.
type Generator interface {
	Kernel
	// EmitC returns a C translation unit defining
	//	int <entry>(void *const *bufs, const int64_t *dims)
	// (buffers in ABI order, dynamic dims in Def order, 0 on success) for
	// the knob values recorded in s.
	EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error)
}

// Filler is implemented by kernels some of whose inputs need structure
// (block tables, sequence lengths, token ids, positions, quantized
// weights): Fill returns the generator of input name, or nil for the
// default non-zero uniform values in [-1, 1].
type Filler interface {
	Fill(input string) func(rng *rand.Rand, v []float64)
}

// Knob is one tunable parameter of a template kernel and its domain.
type Knob struct {
	Name   string
	Values []int64
}

// Knobs is a template kernel's design space: one sampling step per knob,
// in this order.
type Knobs []Knob

// Sample draws every knob uniformly (a point of the design space).
func (ks Knobs) Sample(s *schedule.Schedule) error { return ks.SampleWhere(s, nil) }

// Choose records the given values (a rule-based default) as sampling steps
// with all probability on the chosen value, so that the default's trace
// has the same shape as a sampled one and mutates to its neighbours.
// Knobs missing from values take their first value.
func (ks Knobs) Choose(s *schedule.Schedule, values map[string]int64) error {
	return ks.ChooseWhere(s, values, nil)
}

// ChooseWhere is Choose for a space with a validity predicate: a chosen
// point valid refuses is an error wrapping ErrInvalidKnobs (a rule-based
// default must never propose a point its generator refuses). nil valid
// accepts everything.
func (ks Knobs) ChooseWhere(s *schedule.Schedule, values map[string]int64, valid Validity) error {
	if valid != nil {
		p := make(map[string]int64, len(ks))
		for _, k := range ks {
			v, ok := values[k.Name]
			if !ok && len(k.Values) > 0 {
				v = k.Values[0]
			}
			p[k.Name] = v
		}
		if err := valid(p); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidKnobs, formatPoint(ks, p), err)
		}
	}
	for _, k := range ks {
		v, ok := values[k.Name]
		if !ok {
			v = k.Values[0]
		}
		probs := make([]float64, len(k.Values))
		found := false
		for i, x := range k.Values {
			if x == v {
				probs[i], found = 1, true
				break
			}
		}
		if !found {
			return fmt.Errorf("knob %s: value %d is not in its domain %v", k.Name, v, k.Values)
		}
		if _, err := s.SampleCategorical(k.Values, probs); err != nil {
			return fmt.Errorf("knob %s: %w", k.Name, err)
		}
	}
	return nil
}

// Read returns the knob values recorded in s, checking that its sampling
// steps are exactly this design space (a trace of another kernel or of an
// older design space is an error, never a silent misreading).
func (ks Knobs) Read(s *schedule.Schedule) (map[string]int64, error) {
	var steps []schedule.Inst
	for _, in := range s.Trace().Insts {
		if in.Op != "sample_categorical" {
			return nil, fmt.Errorf("knobs: template schedule has a %s step", in.Op)
		}
		steps = append(steps, in)
	}
	if len(steps) != len(ks) {
		return nil, fmt.Errorf("knobs: %d sampling steps for %d knobs", len(steps), len(ks))
	}
	out := make(map[string]int64, len(ks))
	for i, k := range ks {
		in := steps[i]
		if len(in.Ints) != len(k.Values) || len(in.Decision) != 1 {
			return nil, fmt.Errorf("knob %s: step %d has %d candidates, want %v", k.Name, i, len(in.Ints), k.Values)
		}
		for j, o := range in.Ints {
			if o.Ref != "" || o.Lit != k.Values[j] {
				return nil, fmt.Errorf("knob %s: step %d candidates differ from %v", k.Name, i, k.Values)
			}
		}
		d := in.Decision[0]
		if d < 0 || int(d) >= len(k.Values) {
			return nil, fmt.Errorf("knob %s: decision %d out of range", k.Name, d)
		}
		out[k.Name] = k.Values[d]
	}
	return out, nil
}

// ErrInvalidKnobs marks a knob point that the kernel's validity predicate
// refuses (a combination its generator cannot instantiate for the shape,
// such as a split that does not divide K); ErrNoValidPoint a design space
// with no valid point at all.
var (
	ErrInvalidKnobs = errors.New("invalid knob combination")
	ErrNoValidPoint = errors.New("no valid point in the design space")
)

// Validity is a predicate over a whole point of a design space: nil when
// the kernel's generator accepts the knob values, else why not. Template
// kernels whose knobs interact with the shape (a vector width that must
// divide a row, shared memory that grows with two knobs) declare one, so
// that sampling, defaults and enumeration never propose a point that the
// generator would refuse, and the tuner never spends a trial (or a compiler
// invocation) on it.
type Validity func(values map[string]int64) error

// Validator is implemented by kernels whose design space has a validity
// predicate: Valid says whether the knob point recorded in s (for example
// a mutated or crossed-over trace, which replays without consulting the
// kernel) is one the kernel can generate. Searches drop children it
// refuses instead of measuring them as build errors.
type Validator interface {
	Valid(s *schedule.Schedule, hw Hardware) error
}

// maxPoints bounds the enumeration of a design space (the product of its
// domains); template spaces are a few thousand points at most.
const maxPoints = 1 << 20

// Points enumerates the points of the space that valid accepts (nil: all),
// the first knob varying slowest, so that the order is deterministic.
func (ks Knobs) Points(valid Validity) ([]map[string]int64, error) {
	n := 1
	for _, k := range ks {
		if len(k.Values) == 0 {
			return nil, fmt.Errorf("knob %s: empty domain", k.Name)
		}
		n *= len(k.Values)
		if n > maxPoints {
			return nil, fmt.Errorf("knobs: design space of more than %d points", maxPoints)
		}
	}
	var out []map[string]int64
	idx := make([]int, len(ks))
	for range n {
		p := make(map[string]int64, len(ks))
		for i, k := range ks {
			p[k.Name] = k.Values[idx[i]]
		}
		if valid == nil || valid(p) == nil {
			out = append(out, p)
		}
		for i := len(ks) - 1; i >= 0; i-- {
			idx[i]++
			if idx[i] < len(ks[i].Values) {
				break
			}
			idx[i] = 0
		}
	}
	return out, nil
}

// SampleWhere draws a point that valid accepts (nil: any point, as Sample).
// Knobs are drawn in order, each uniformly among the values that still
// have a valid completion given the knobs drawn before it; that set is
// recorded as the step's probabilities (a 0/1 mask), or nothing when every
// value is open, so a space without refused points records exactly the
// trace Sample records. The draw uses only the schedule's random source:
// the same seed gives the same point, and the trace replays unchanged.
func (ks Knobs) SampleWhere(s *schedule.Schedule, valid Validity) error {
	if valid == nil {
		for _, k := range ks {
			if _, err := s.SampleCategorical(k.Values, nil); err != nil {
				return fmt.Errorf("knob %s: %w", k.Name, err)
			}
		}
		return nil
	}
	pts, err := ks.Points(valid)
	if err != nil {
		return err
	}
	if len(pts) == 0 {
		return ErrNoValidPoint
	}
	for _, k := range ks {
		open := make([]float64, len(k.Values))
		all := true
		for i, v := range k.Values {
			for _, p := range pts {
				if p[k.Name] == v {
					open[i] = 1
					break
				}
			}
			all = all && open[i] == 1
		}
		if all {
			open = nil
		}
		r, err := s.SampleCategorical(k.Values, open)
		if err != nil {
			return fmt.Errorf("knob %s: %w", k.Name, err)
		}
		kept := pts[:0]
		for _, p := range pts {
			if p[k.Name] == r.Value {
				kept = append(kept, p)
			}
		}
		pts = kept
	}
	return nil
}

// Check reads the point recorded in s and applies valid to it: the
// Validator of a kernel with these knobs.
func (ks Knobs) Check(s *schedule.Schedule, valid Validity) error {
	p, err := ks.Read(s)
	if err != nil {
		return err
	}
	if valid == nil {
		return nil
	}
	if err := valid(p); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidKnobs, formatPoint(ks, p), err)
	}
	return nil
}

// formatPoint prints a point in knob order ("vec=8 unroll=2").
func formatPoint(ks Knobs, p map[string]int64) string {
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = fmt.Sprintf("%s=%d", k.Name, p[k.Name])
	}
	return strings.Join(parts, " ")
}
