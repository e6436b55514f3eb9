package schedule

import "fmt"

// Prefetch is a software-prefetch annotation on a loop: every iteration of
// the loop requests the data that iteration +Dist reads from Buf, so a
// stream the hardware prefetchers follow too late (many rows of a weight
// matrix read side by side while the core is busy with FMAs) is already in
// flight when it is loaded. It changes no result: a backend may drop it.
type Prefetch struct {
	Buf  string
	Dist int64 // iterations ahead
}

func (p Prefetch) String() string { return fmt.Sprintf("prefetch(%s, +%d)", p.Buf, p.Dist) }

// Prefetch annotates loop so that each iteration prefetches what iteration
// +dist reads of buffer (a parameter or global buffer read under the
// loop). Distance 0 is legal and annotates nothing, so that a sampled
// distance can switch prefetching off and a trace mutated between 0 and
// another distance still replays. Legality: the loop exists and is serial
// or unrolled (a vectorized loop's iterations are lanes; a parallel one's
// belong to other threads), the buffer is read somewhere under it and not
// written there, its scope is global, dist is 0..4096, and the pair is not
// annotated already.
func (s *Schedule) Prefetch(loop, buffer string, dist Ref) error {
	inst := Inst{Op: "prefetch", Args: []string{loop, buffer}, Ints: operands([]Ref{dist})}
	ds, err := s.resolve(inst.Ints)
	if err != nil {
		return fmt.Errorf("prefetch %s: %w", loop, err)
	}
	d := ds[0]
	_, err = s.apply(inst, func(n *Nest) ([]string, error) {
		l, _, ok := n.findLoop(loop)
		if !ok {
			return nil, illegal("prefetch", "no loop %q", loop)
		}
		if l.Kind != Serial && l.Kind != Unrolled {
			return nil, illegal("prefetch", "loop %s is %s (want serial or unrolled)", loop, l.Kind)
		}
		b := n.Buffer(buffer)
		if b == nil {
			return nil, illegal("prefetch", "no buffer %q", buffer)
		}
		if b.Scope != Global {
			return nil, illegal("prefetch", "buffer %s is %s (only global buffers are prefetched)", buffer, b.Scope)
		}
		if d < 0 || d > 4096 {
			return nil, illegal("prefetch", "distance %d outside 0..4096", d)
		}
		read := false
		for _, blk := range blocksUnder(l) {
			if blk.Buf == buffer {
				return nil, illegal("prefetch", "buffer %s is written under loop %s (block %s)", buffer, loop, blk.Name)
			}
			Rewrite(blk.Value, func(x Expr) Expr {
				if ld, ok := x.(Load); ok && ld.Buf == buffer {
					read = true
				}
				return x
			})
		}
		if !read {
			return nil, illegal("prefetch", "buffer %s is not read under loop %s", buffer, loop)
		}
		for _, p := range l.Prefetch {
			if p.Buf == buffer {
				return nil, illegal("prefetch", "loop %s already prefetches %s", loop, buffer)
			}
		}
		if d > 0 {
			l.Prefetch = append(l.Prefetch, Prefetch{Buf: buffer, Dist: d})
		}
		return nil, nil
	})
	return err
}
