package cudakernels

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/target/cuda"
)

// A template generator may refuse a knob point for a shape (a vector width
// that does not divide a row, a split-K whose shared memory exceeds 48
// KiB). Such points are not part of the design space: Checked kernels (and
// every kernel of FromWorkload) sample only points their generator
// accepts, and report the others through kernels.Validator, so the tuner
// and `llmir cuda check` never hand one to nvcc nor count it as a
// build_error.
//
// Kernels that declare their own predicate (kernels.Validator, as Rope and
// AppendKV do) are asked directly. For the others the predicate is the
// generator itself: each point of the space is emitted once, for the
// shape and hardware at hand, and the accepted points are cached. That
// keeps the predicate exact whatever the generators' refusal rules become,
// at the cost of one source generation per point (a few milliseconds for
// a space of a thousand points).

// spaceCache holds the valid points per kernel and hardware.
var spaceCache sync.Map // string → *knobSpace

// knobSpace is a template kernel's design space as its trace shows it:
// one categorical step per knob (named k0, k1, … since the kernel keeps its
// knob names to itself) and the set of points its generator accepts.
type knobSpace struct {
	knobs kernels.Knobs
	valid map[string]error // point → nil (accepted) or the refusal
	total int
	ok    int
}

func pointKey(ks kernels.Knobs, p map[string]int64) string {
	var b strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&b, "%d,", p[k.Name])
	}
	return b.String()
}

func (sp *knobSpace) validity(p map[string]int64) error {
	err, ok := sp.valid[pointKey(sp.knobs, p)]
	if !ok {
		return fmt.Errorf("point outside the design space")
	}
	return err
}

// errNotKnobs marks kernels whose Space is not a list of categorical knob
// steps (the loop-nest kernels): their space is left as it is.
var errNotKnobs = errors.New("not a knob template")

// spaceOf reads k's knobs from a trace of its Space and emits every point
// once (cached by kernel value and hardware).
func spaceOf(k Kernel, hw kernels.Hardware) (*knobSpace, error) {
	key := fmt.Sprintf("%T%+v|%+v", k, k, hw)
	if v, ok := spaceCache.Load(key); ok {
		return v.(*knobSpace), nil
	}
	def, err := k.Def()
	if err != nil {
		return nil, err
	}
	s, err := schedule.New(def, 1)
	if err != nil {
		return nil, err
	}
	if err := k.Space(s, hw); err != nil {
		return nil, fmt.Errorf("design space of %s: %w", k.Name(), err)
	}
	var ks kernels.Knobs
	for i, in := range s.Trace().Insts {
		if in.Op != "sample_categorical" {
			return nil, errNotKnobs
		}
		vals := make([]int64, len(in.Ints))
		for j, o := range in.Ints {
			if o.Ref != "" {
				return nil, errNotKnobs
			}
			vals[j] = o.Lit
		}
		ks = append(ks, kernels.Knob{Name: fmt.Sprintf("k%d", i), Values: vals})
	}
	if len(ks) == 0 {
		return nil, errNotKnobs
	}
	all, err := ks.Points(nil)
	if err != nil {
		return nil, fmt.Errorf("design space of %s: %w", k.Name(), err)
	}
	g := cuda.GPU{Arch: cuda.H100.Arch, SMs: hw.Threads, L2Bytes: hw.L2}
	sp := &knobSpace{knobs: ks, valid: make(map[string]error, len(all)), total: len(all)}
	for _, p := range all {
		s, err := schedule.New(def, 1)
		if err != nil {
			return nil, err
		}
		if err := ks.Choose(s, p); err != nil {
			return nil, fmt.Errorf("design space of %s: %w", k.Name(), err)
		}
		_, err = k.EmitCUDA(s, g, Entry)
		sp.valid[pointKey(ks, p)] = err
		if err == nil {
			sp.ok++
		}
	}
	spaceCache.Store(key, sp)
	return sp, nil
}

// Checked is k with a design space of only the points its generator
// accepts (see above); k itself when it already declares a predicate.
// Unwrap undoes it.
func Checked(k Kernel) Kernel {
	if _, ok := k.(irKernel); ok {
		return k
	}
	return irKernel{Kernel: k, ir: k.Workload()}
}

// Space samples a valid point: the kernel's own predicate, or the
// generator's verdicts; loop-nest kernels sample as they always did.
func (k irKernel) Space(s *schedule.Schedule, hw kernels.Hardware) error {
	if _, own := k.Kernel.(kernels.Validator); own {
		return k.Kernel.Space(s, hw)
	}
	sp, err := spaceOf(k.Kernel, hw)
	if errors.Is(err, errNotKnobs) {
		return k.Kernel.Space(s, hw)
	}
	if err != nil {
		return err
	}
	if err := sp.knobs.SampleWhere(s, sp.validity); err != nil {
		return fmt.Errorf("sample %s: %w", k.Name(), err)
	}
	return nil
}

// Valid is the kernels.Validator of the wrapped kernel.
func (k irKernel) Valid(s *schedule.Schedule, hw kernels.Hardware) error {
	if v, own := k.Kernel.(kernels.Validator); own {
		return v.Valid(s, hw)
	}
	sp, err := spaceOf(k.Kernel, hw)
	if errors.Is(err, errNotKnobs) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := sp.knobs.Check(s, sp.validity); err != nil {
		return fmt.Errorf("%s: %w", k.Name(), err)
	}
	return nil
}

// SpaceSize counts the points of k's design space on hw and those its
// generator (or predicate) accepts; a loop-nest kernel's space is not
// enumerated (0, 0).
func SpaceSize(k Kernel, hw kernels.Hardware) (valid, total int, err error) {
	k = Unwrap(k)
	if v, own := k.(interface {
		Knobs(kernels.Hardware) (kernels.Knobs, kernels.Validity)
	}); own {
		ks, pred := v.Knobs(hw)
		all, err := ks.Points(nil)
		if err != nil {
			return 0, 0, err
		}
		ok, err := ks.Points(pred)
		if err != nil {
			return 0, 0, err
		}
		return len(ok), len(all), nil
	}
	sp, err := spaceOf(k, hw)
	if errors.Is(err, errNotKnobs) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	return sp.ok, sp.total, nil
}
