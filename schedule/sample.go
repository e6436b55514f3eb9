package schedule

import (
	"fmt"
)

// SamplePerfectTile draws n factors (outermost first) whose product is the
// loop's extent (its bucket for a dynamic extent), the innermost at most
// maxInner when maxInner > 0. The decision is recorded; on replay a recorded
// decision is checked instead: n factors ≥ 1 whose product covers the
// extent (so a mutated decision may introduce a tail) with the innermost
// bound respected. The returned refs feed SplitBy/TileBy.
func (s *Schedule) SamplePerfectTile(loop string, n int, maxInner int64) ([]Ref, error) {
	l, at, ok := s.nest.findLoop(loop)
	if !ok {
		return nil, illegal("sample_perfect_tile", "no loop %q", loop)
	}
	if n < 1 || n > 8 {
		return nil, illegal("sample_perfect_tile", "n = %d outside 1..8", n)
	}
	iv, ok := s.nest.ranges(at.anc).Bound(l.Extent)
	if !ok || iv.Hi < 1 {
		return nil, illegal("sample_perfect_tile", "loop %s has no positive bounded extent", loop)
	}
	ext := iv.Hi
	var fs []int64
	if s.replay {
		fs = s.replaying
		if len(fs) != n {
			return nil, illegal("sample_perfect_tile", "decision %v has %d factors, want %d", fs, len(fs), n)
		}
		p := int64(1)
		for _, f := range fs {
			if f < 1 {
				return nil, illegal("sample_perfect_tile", "decision %v has a factor < 1", fs)
			}
			p *= f
			if p > 1<<40 {
				return nil, illegal("sample_perfect_tile", "decision %v is too large", fs)
			}
		}
		if p < ext {
			return nil, illegal("sample_perfect_tile", "decision %v covers %d < extent %d", fs, p, ext)
		}
		if maxInner > 0 && fs[n-1] > maxInner {
			return nil, illegal("sample_perfect_tile", "decision %v: innermost %d > %d", fs, fs[n-1], maxInner)
		}
	} else {
		fs = make([]int64, n)
		rem := ext
		for i := n - 1; i >= 1; i-- {
			var ds []int64
			for d := int64(1); d <= rem; d++ {
				if rem%d == 0 && (i != n-1 || maxInner <= 0 || d <= maxInner) {
					ds = append(ds, d)
				}
			}
			fs[i] = ds[s.rng.IntN(len(ds))]
			rem /= fs[i]
		}
		fs[0] = rem
	}
	inst := Inst{Op: "sample_perfect_tile", Args: []string{loop}, Ints: []Operand{{Lit: int64(n)}, {Lit: maxInner}}, Decision: append([]int64{}, fs...)}
	names := make([]string, n)
	refs := make([]Ref, n)
	base := len(s.vals)
	for i := range fs {
		names[i] = fmt.Sprintf("t%d", base+i)
		refs[i] = Ref{Name: names[i], Value: fs[i]}
		s.vals[names[i]] = fs[i]
	}
	inst.Outputs = names
	s.trace.Insts = append(s.trace.Insts, inst)
	return refs, nil
}

// SampleCategorical draws one of candidates with the given probabilities
// (uniform when probs is empty). The decision is the chosen index.
func (s *Schedule) SampleCategorical(candidates []int64, probs []float64) (Ref, error) {
	if len(candidates) == 0 {
		return Ref{}, illegal("sample_categorical", "no candidates")
	}
	if len(probs) != 0 && len(probs) != len(candidates) {
		return Ref{}, illegal("sample_categorical", "%d probabilities for %d candidates", len(probs), len(candidates))
	}
	total := 0.0
	for _, p := range probs {
		if p < 0 || p != p {
			return Ref{}, illegal("sample_categorical", "probability %v is not ≥ 0", p)
		}
		total += p
	}
	if len(probs) > 0 && total <= 0 {
		return Ref{}, illegal("sample_categorical", "probabilities sum to %v", total)
	}
	var idx int
	if s.replay {
		if len(s.replaying) != 1 || s.replaying[0] < 0 || s.replaying[0] >= int64(len(candidates)) {
			return Ref{}, illegal("sample_categorical", "decision %v is not an index into %d candidates", s.replaying, len(candidates))
		}
		idx = int(s.replaying[0])
	} else if len(probs) == 0 {
		idx = s.rng.IntN(len(candidates))
	} else {
		u := s.rng.Float64() * total
		for idx = 0; idx < len(probs)-1; idx++ {
			u -= probs[idx]
			if u < 0 {
				break
			}
		}
	}
	ints := make([]Operand, len(candidates))
	for i, c := range candidates {
		ints[i] = Operand{Lit: c}
	}
	name := fmt.Sprintf("t%d", len(s.vals))
	s.vals[name] = candidates[idx]
	s.trace.Insts = append(s.trace.Insts, Inst{Op: "sample_categorical", Ints: ints, Floats: append([]float64{}, probs...), Outputs: []string{name}, Decision: []int64{int64(idx)}})
	return Ref{Name: name, Value: candidates[idx]}, nil
}
