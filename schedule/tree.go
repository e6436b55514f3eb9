package schedule

// Helpers to find, walk and edit statements of a nest.

// loc is where a statement sits: the slice holding it, its index there, and
// its enclosing loops (outermost first).
type loc struct {
	parent *[]Stmt
	idx    int
	anc    []*Loop
}

// walk visits every statement in program order (parents before children).
// f returns false to stop.
func walk(ss *[]Stmt, anc []*Loop, f func(Stmt, loc) bool) bool {
	for i := range *ss {
		s := (*ss)[i]
		if !f(s, loc{parent: ss, idx: i, anc: anc}) {
			return false
		}
		if l, ok := s.(*Loop); ok {
			inner := append(append([]*Loop{}, anc...), l)
			if !walk(&l.Body, inner, f) {
				return false
			}
		}
	}
	return true
}

func (n *Nest) findLoop(name string) (*Loop, loc, bool) {
	var out *Loop
	var at loc
	walk(&n.Body, nil, func(s Stmt, l loc) bool {
		if lp, ok := s.(*Loop); ok && lp.Name == name {
			out, at = lp, l
			return false
		}
		return true
	})
	return out, at, out != nil
}

func (n *Nest) findBlock(name string) (*Block, loc, bool) {
	var out *Block
	var at loc
	walk(&n.Body, nil, func(s Stmt, l loc) bool {
		if b, ok := s.(*Block); ok && b.Name == name {
			out, at = b, l
			return false
		}
		return true
	})
	return out, at, out != nil
}

// blocks returns every block with its location, in program order.
func (n *Nest) blocks() ([]*Block, []loc) {
	var bs []*Block
	var ls []loc
	walk(&n.Body, nil, func(s Stmt, l loc) bool {
		if b, ok := s.(*Block); ok {
			bs = append(bs, b)
			ls = append(ls, l)
		}
		return true
	})
	return bs, ls
}

// blocksUnder returns the blocks inside loop l.
func blocksUnder(l *Loop) []*Block {
	var bs []*Block
	walk(&l.Body, nil, func(s Stmt, _ loc) bool {
		if b, ok := s.(*Block); ok {
			bs = append(bs, b)
		}
		return true
	})
	return bs
}

// loopsUnder returns the loops inside (not including) l.
func loopsUnder(ss []Stmt) []*Loop {
	var ls []*Loop
	walk(&ss, nil, func(s Stmt, _ loc) bool {
		if l, ok := s.(*Loop); ok {
			ls = append(ls, l)
		}
		return true
	})
	return ls
}

// names returns every loop, block and buffer name in use.
func (n *Nest) names() map[string]bool {
	m := map[string]bool{}
	walk(&n.Body, nil, func(s Stmt, _ loc) bool {
		switch s := s.(type) {
		case *Loop:
			m[s.Name] = true
		case *Block:
			m[s.Name] = true
			for _, a := range s.Axes {
				m[a.Name] = true
			}
		}
		return true
	})
	for _, b := range n.Buffers {
		m[b.Name] = true
	}
	return m
}

// fresh returns base, or base with a numeric suffix, unused in the nest.
func (n *Nest) fresh(base string, taken map[string]bool) string {
	if taken == nil {
		taken = n.names()
	}
	name := base
	for k := 1; taken[name]; k++ {
		name = base + "_" + itoa(k)
	}
	taken[name] = true
	return name
}

func itoa(k int) string {
	if k < 10 {
		return string(rune('0' + k))
	}
	return itoa(k/10) + string(rune('0'+k%10))
}

// ranges returns the value ranges of the given loops' variables, each
// bounded through the ranges of the loops outside it.
func (n *Nest) ranges(anc []*Loop) Ranges {
	r := Ranges{Vars: map[string]Interval{}, Dims: map[int]int64{}}
	for j, d := range n.Dims {
		r.Dims[j] = d.Extent
	}
	for _, l := range anc {
		if iv, ok := r.Bound(l.Extent); ok {
			r.Vars[l.Name] = Interval{0, max(iv.Hi-1, 0)}
		}
	}
	return r
}

// rangesUnder extends r with the loops nested inside ss (for simplifying
// statements deeper down).
func (n *Nest) rangesWith(r Ranges, ls []*Loop) Ranges {
	out := Ranges{Vars: map[string]Interval{}, Dims: r.Dims}
	for k, v := range r.Vars {
		out.Vars[k] = v
	}
	for _, l := range ls {
		if iv, ok := out.Bound(l.Extent); ok {
			out.Vars[l.Name] = Interval{0, max(iv.Hi-1, 0)}
		}
	}
	return out
}

// prune removes loops whose bodies became empty and re-homes allocations
// attached to them.
func (n *Nest) prune() {
	removed := map[string]bool{}
	var rec func(ss []Stmt) []Stmt
	rec = func(ss []Stmt) []Stmt {
		out := ss[:0]
		for _, s := range ss {
			if l, ok := s.(*Loop); ok {
				l.Body = rec(l.Body)
				if len(l.Body) == 0 {
					removed[l.Name] = true
					continue
				}
			}
			out = append(out, s)
		}
		return out
	}
	n.Body = rec(n.Body)
	for _, b := range n.Buffers {
		if removed[b.AllocAt] {
			b.AllocAt = ""
		}
	}
}

// order returns each block's program-order position.
func (n *Nest) order() map[*Block]int {
	m := map[*Block]int{}
	bs, _ := n.blocks()
	for i, b := range bs {
		m[b] = i
	}
	return m
}

// substBlock substitutes loop variables in a block's bindings and body.
func substBlock(b *Block, m map[string]Expr) {
	for i := range b.Binds {
		b.Binds[i] = Subst(b.Binds[i], m)
	}
	for i := range b.Index {
		b.Index[i] = Subst(b.Index[i], m)
	}
	b.Value = Subst(b.Value, m)
	if b.Init != nil {
		b.Init = Subst(b.Init, m)
	}
	for i := range b.Axes {
		b.Axes[i].Extent = Subst(b.Axes[i].Extent, m)
	}
}

// substUnder substitutes loop variables everywhere inside ss.
func substUnder(ss []Stmt, m map[string]Expr, r Ranges) {
	walk(&ss, nil, func(s Stmt, _ loc) bool {
		switch s := s.(type) {
		case *Loop:
			s.Extent = r.Simplify(Subst(s.Extent, m))
		case *Block:
			substBlock(s, m)
			for i := range s.Binds {
				s.Binds[i] = r.Simplify(s.Binds[i])
			}
		}
		return true
	})
}

// bufferReads lists the loads of buffer name in a block's value and init.
func bufferReads(b *Block, name string) []Load {
	var out []Load
	f := func(x Expr) {
		if ld, ok := x.(Load); ok && ld.Buf == name {
			out = append(out, ld)
		}
	}
	Visit(b.Value, f)
	if b.Init != nil {
		Visit(b.Init, f)
	}
	return out
}

// renameLoads replaces loads of buffer from by loads of to, mapping indices.
func renameLoads(e Expr, from, to string, idx func([]Expr) []Expr) Expr {
	return Rewrite(e, func(x Expr) Expr {
		if ld, ok := x.(Load); ok && ld.Buf == from {
			return Load{Buf: to, Index: idx(ld.Index)}
		}
		return x
	})
}

// bindMap maps a block's axis names to their bindings.
func bindMap(b *Block) map[string]Expr {
	m := map[string]Expr{}
	for i, a := range b.Axes {
		m[a.Name] = b.Binds[i]
	}
	return m
}

func isAncestor(anc []*Loop, l *Loop) bool {
	for _, a := range anc {
		if a == l {
			return true
		}
	}
	return false
}

func isAncestorName(anc []*Loop, name string) bool {
	for _, a := range anc {
		if a.Name == name {
			return true
		}
	}
	return false
}
