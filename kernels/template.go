package kernels

import (
	"fmt"
	"math/rand/v2"

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
func (ks Knobs) Sample(s *schedule.Schedule) error {
	for _, k := range ks {
		if _, err := s.SampleCategorical(k.Values, nil); err != nil {
			return fmt.Errorf("knob %s: %w", k.Name, err)
		}
	}
	return nil
}

// Choose records the given values (a rule-based default) as sampling steps
// with all probability on the chosen value, so that the default's trace
// has the same shape as a sampled one and mutates to its neighbours.
// Knobs missing from values take their first value.
func (ks Knobs) Choose(s *schedule.Schedule, values map[string]int64) error {
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
