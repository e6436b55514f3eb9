package schedule

import (
	"fmt"
	"sort"
	"strings"
)

// Primitives that move data and computation: cache_read, cache_write,
// compute_at, reverse_compute_at, compute_inline, decompose_reduction and
// rfactor.

// CacheRead makes block read buffer through a new buffer of the given scope
// and layout, filled by a new copy block (named like the new buffer) placed
// before block's loop nest. ComputeAt then moves the copy under a loop and
// shrinks the buffer to the tile that loop needs. Returns the copy block.
func (s *Schedule) CacheRead(block, buffer string, scope Scope, layout *Layout) (string, error) {
	inst := Inst{Op: "cache_read", Args: []string{block, buffer, string(scope)}, Layout: layout}
	outs, err := s.apply(inst, func(n *Nest) ([]string, error) {
		name, err := cacheRead(n, block, buffer, scope, layout)
		return []string{name}, err
	})
	if err != nil {
		return "", err
	}
	return outs[0], nil
}

// rootOf returns the index in n.Body of the top-level statement holding a
// statement located at at.
func (n *Nest) rootOf(at loc) int {
	if len(at.anc) == 0 {
		return at.idx
	}
	for i, s := range n.Body {
		if s == Stmt(at.anc[0]) {
			return i
		}
	}
	return -1
}

func insertAt(ss []Stmt, i int, s Stmt) []Stmt {
	ss = append(ss, nil)
	copy(ss[i+1:], ss[i:])
	ss[i] = s
	return ss
}

// copyNest builds loops over shape around a copy block dst[v] = src[v].
func copyNest(n *Nest, name, dst, src string, shape []Expr) Stmt {
	taken := n.names()
	blk := &Block{Name: name, Buf: dst}
	var loops []*Loop
	var idx []Expr
	for d, ext := range shape {
		l := &Loop{Name: n.fresh(fmt.Sprintf("%s_ax%d", name, d), taken), Extent: ext}
		loops = append(loops, l)
		ax := fmt.Sprintf("v%d", d)
		blk.Axes = append(blk.Axes, BlockAxis{Name: ax, Extent: ext})
		blk.Binds = append(blk.Binds, Var{l.Name})
		idx = append(idx, Var{ax})
	}
	blk.Index = idx
	blk.Value = Load{Buf: src, Index: idx}
	var s Stmt = blk
	for i := len(loops) - 1; i >= 0; i-- {
		loops[i].Body = []Stmt{s}
		s = loops[i]
	}
	return s
}

func cacheRead(n *Nest, block, buffer string, scope Scope, layout *Layout) (string, error) {
	if _, err := parseScope(string(scope)); err != nil {
		return "", illegal("cache_read", "%v", err)
	}
	b, at, ok := n.findBlock(block)
	if !ok {
		return "", illegal("cache_read", "no block %q", block)
	}
	x := n.Buffer(buffer)
	if x == nil {
		return "", illegal("cache_read", "no buffer %q", buffer)
	}
	if len(bufferReads(b, buffer)) == 0 {
		return "", illegal("cache_read", "block %s does not read %s", block, buffer)
	}
	if x.AllocAt != "" {
		return "", illegal("cache_read", "buffer %s is allocated inside loop %s; cache it before compute_at", buffer, x.AllocAt)
	}
	if err := layout.check(len(x.Shape)); err != nil {
		return "", illegal("cache_read", "buffer %s: %v", buffer, err)
	}
	root := n.rootOf(at)
	var rootLoop []Stmt
	rootLoop = append(rootLoop, n.Body[root])
	for _, w := range writers(rootLoop, buffer) {
		return "", illegal("cache_read", "block %s writes %s in the same loop nest as %s", w.Name, buffer, block)
	}
	name := n.fresh(fmt.Sprintf("%s_%s", buffer, scope), nil)
	nb := &Buffer{Name: name, DType: x.DType, Shape: append([]Expr{}, x.Shape...), Scope: scope, Param: -1, Layout: layout.clone()}
	n.Buffers = append(n.Buffers, nb)
	b.Value = renameLoads(b.Value, buffer, name, func(i []Expr) []Expr { return i })
	if b.Init != nil {
		b.Init = renameLoads(b.Init, buffer, name, func(i []Expr) []Expr { return i })
	}
	n.Body = insertAt(n.Body, root, copyNest(n, name, name, buffer, x.Shape))
	return name, nil
}

// writers returns the blocks under ss that write buffer.
func writers(ss []Stmt, buffer string) []*Block {
	var out []*Block
	walk(&ss, nil, func(s Stmt, _ loc) bool {
		if b, ok := s.(*Block); ok && b.Buf == buffer {
			out = append(out, b)
		}
		return true
	})
	return out
}

// CacheWrite makes block (and the other writers of its buffer in the same
// loop nest, such as a decomposed init) write a new f32 buffer of the given
// scope; a copy block placed after the nest writes it back. With
// ReverseComputeAt the write-back moves under a loop and the buffer shrinks
// to that loop's tile: a register-scope tile becomes the accumulators of a
// microkernel. Returns the write-back block.
func (s *Schedule) CacheWrite(block string, scope Scope) (string, error) {
	inst := Inst{Op: "cache_write", Args: []string{block, string(scope)}}
	outs, err := s.apply(inst, func(n *Nest) ([]string, error) {
		name, err := cacheWrite(n, block, scope)
		return []string{name}, err
	})
	if err != nil {
		return "", err
	}
	return outs[0], nil
}

func cacheWrite(n *Nest, block string, scope Scope) (string, error) {
	if _, err := parseScope(string(scope)); err != nil {
		return "", illegal("cache_write", "%v", err)
	}
	b, at, ok := n.findBlock(block)
	if !ok {
		return "", illegal("cache_write", "no block %q", block)
	}
	x := n.Buffer(b.Buf)
	if x.AllocAt != "" {
		return "", illegal("cache_write", "buffer %s is allocated inside loop %s", x.Name, x.AllocAt)
	}
	root := n.rootOf(at)
	local := writers(n.Body[root:root+1], x.Name)
	all, _ := n.blocks()
	for _, w := range all {
		if w.Buf != x.Name {
			continue
		}
		found := false
		for _, l := range local {
			found = found || l == w
		}
		if !found {
			return "", illegal("cache_write", "block %s also writes %s outside the loop nest of %s", w.Name, x.Name, block)
		}
	}
	for _, r := range all {
		if len(bufferReads(r, x.Name)) > 0 && r.Buf != x.Name {
			inNest := false
			walk(&n.Body, nil, func(st Stmt, l loc) bool {
				if st == Stmt(r) && n.rootOf(l) == root {
					inNest = true
				}
				return true
			})
			if inNest {
				return "", illegal("cache_write", "block %s reads %s inside the loop nest of %s", r.Name, x.Name, block)
			}
		}
	}
	name := n.fresh(fmt.Sprintf("%s_%s", x.Name, scope), nil)
	nb := &Buffer{Name: name, DType: F32, Shape: append([]Expr{}, x.Shape...), Scope: scope, Param: -1}
	n.Buffers = append(n.Buffers, nb)
	for _, w := range local {
		w.Buf = name
		w.Value = renameLoads(w.Value, x.Name, name, func(i []Expr) []Expr { return i })
	}
	n.Body = insertAt(n.Body, root+1, copyNest(n, name+"_wb", x.Name, name, x.Shape))
	return name + "_wb", nil
}

// offsets checks that a block's index into a buffer (its store, or its
// loads of a tile buffer) is a permutation of its axes plus loop-variable
// offsets: index[d] = axis[perm[d]] + offs[d].
func offsets(op string, b *Block, idx []Expr) (offs []Expr, perm []int, err error) {
	if len(idx) != len(b.Axes) {
		return nil, nil, illegal(op, "block %s indexes a rank-%d buffer with %d axes; need one axis per dimension", b.Name, len(idx), len(b.Axes))
	}
	offs = make([]Expr, len(idx))
	perm = make([]int, len(idx))
	used := make([]bool, len(idx))
	for d, e := range idx {
		perm[d] = -1
		for ai, a := range b.Axes {
			if used[ai] || !UsesVar(e, a.Name) {
				continue
			}
			o := Simplify(Sub(e, Var{a.Name}))
			free := true
			for _, a2 := range b.Axes {
				free = free && !UsesVar(o, a2.Name)
			}
			if free {
				perm[d], offs[d], used[ai] = ai, o, true
				break
			}
		}
		if perm[d] < 0 {
			return nil, nil, illegal(op, "block %s: index %s of dimension %d is not one of its axes plus an offset", b.Name, e, d)
		}
	}
	return offs, perm, nil
}

// region computes the tile of a buffer touched by accesses under loop l in
// one iteration of l: per dimension a lower corner in the variables of l and
// the loops outside it, and a constant size bound.
//
// With exact set (reverse_compute_at, where the consumer visits the whole
// tile), every dimension must be walked by at most one inner loop with
// stride 1, and no loop may walk two dimensions, so the tile has no holes
// and tiles of different iterations do not overlap.
func region(op string, n *Nest, outer []*Loop, accs []access, exact bool) ([]Expr, []int64, error) {
	var lo []Expr
	var size []int64
	for _, a := range accs {
		inner := a.anc[len(outer):]
		r := n.ranges(a.anc)
		isInner := map[string]bool{}
		for _, l := range inner {
			isInner[l.Name] = true
		}
		if lo == nil {
			lo = make([]Expr, len(a.idx))
			size = make([]int64, len(a.idx))
		}
		if len(a.idx) != len(lo) {
			return nil, nil, illegal(op, "accesses of different rank")
		}
		walked := map[string]bool{}
		for d, e := range a.idx {
			l := r.toLin(e)
			low := newLin(l.Const)
			sz := int64(1)
			var strides []tileWalk
			for k, c := range l.Terms {
				atom := l.Atoms[k]
				v, isVar := atom.(Var)
				if isVar && isInner[v.Name] {
					if c < 0 {
						return nil, nil, illegal(op, "index %s runs backwards in loop %s", e, v.Name)
					}
					if exact && walked[v.Name] {
						return nil, nil, illegal(op, "index %s does not walk a dense tile (loop %s walks two dimensions)", e, v.Name)
					}
					walked[v.Name] = true
					strides = append(strides, tileWalk{v.Name, c, tileExtent(inner, v.Name, r.Vars[v.Name].Hi+1), r.Vars[v.Name].Hi})
					sz += c * r.Vars[v.Name].Hi
					continue
				}
				for _, u := range Vars(atom) {
					if isInner[u] {
						return nil, nil, illegal(op, "index %s is not affine in loop %s", e, u)
					}
				}
				low.Terms[k] = c
				low.Atoms[k] = atom
			}
			if exact {
				if err := dense(op, e, strides); err != nil {
					return nil, nil, err
				}
			}
			le := low.expr()
			if lo[d] == nil {
				lo[d] = le
			} else if lo[d].String() != le.String() {
				return nil, nil, illegal(op, "accesses start at different offsets (%s and %s) in dimension %d", lo[d], le, d)
			}
			size[d] = max(size[d], sz)
		}
	}
	if lo == nil {
		return nil, nil, illegal(op, "no accesses under the loop")
	}
	return lo, size, nil
}

// tileWalk is an inner loop's stride and extent in one index.
type tileWalk struct {
	loop   string
	stride int64
	ext    int64 // extent in a full tile
	hi     int64 // largest value of the loop variable
}

// tileExtent is the extent loop v has in a full tile: C for a constant
// extent or a tail min(C, e), else the range's size hi. A tail loop that
// ends early leaves no hole below the next stride, since the loops outside
// it end there too.
func tileExtent(loops []*Loop, v string, hi int64) int64 {
	for _, l := range loops {
		if l.Name != v {
			continue
		}
		switch e := l.Extent.(type) {
		case Int:
			return e.V
		case Bin:
			if e.Op == OpMin {
				if c, ok := e.A.(Int); ok {
					return c.V
				}
				if c, ok := e.B.(Int); ok {
					return c.V
				}
			}
		}
	}
	return hi
}

// dense checks that the inner loops walking one index cover a range
// without holes: ordered by stride, the first has stride 1 and each next
// one the stride times the extent of the one before (i1·4 + i2 with i2 in
// 0..4, as a split of one dimension into two loops gives). Loops of one
// iteration (a split's outer part when the dimension is shorter than one
// tile) are left out.
func dense(op string, e Expr, ws []tileWalk) error {
	sort.Slice(ws, func(i, j int) bool { return ws[i].stride < ws[j].stride })
	want := int64(1)
	for _, w := range ws {
		if w.hi == 0 {
			continue // one iteration: it adds an offset, not a hole
		}
		if w.stride != want {
			return illegal(op, "index %s does not walk a dense tile (stride %d in loop %s)", e, w.stride, w.loop)
		}
		want = w.stride * w.ext
	}
	return nil
}

type access struct {
	idx []Expr // in loop variables
	anc []*Loop
}

func fullIndex(b *Block, idx []Expr, at loc, n *Nest) access {
	m := bindMap(b)
	r := n.ranges(at.anc)
	out := make([]Expr, len(idx))
	for d, e := range idx {
		out[d] = r.Simplify(Subst(e, m))
	}
	return access{idx: out, anc: at.anc}
}

// ComputeAt moves a producer block under loop so that it computes, in each
// iteration, exactly the tile its consumers there read; the produced buffer
// (if not a parameter) shrinks to that tile and is allocated in the loop.
// The producer must be spatial (no reduction axes) and store at its axes
// plus offsets, like every copy block cache_read makes.
func (s *Schedule) ComputeAt(block, loop string) error {
	_, err := s.apply(Inst{Op: "compute_at", Args: []string{block, loop}}, func(n *Nest) ([]string, error) {
		return nil, computeAt(n, block, loop, false)
	})
	return err
}

// ReverseComputeAt moves a consumer block (such as cache_write's write-back
// or an epilogue) under loop so that it consumes, in each iteration, the tile
// its producers wrote there.
func (s *Schedule) ReverseComputeAt(block, loop string) error {
	_, err := s.apply(Inst{Op: "reverse_compute_at", Args: []string{block, loop}}, func(n *Nest) ([]string, error) {
		return nil, computeAt(n, block, loop, true)
	})
	return err
}

func computeAt(n *Nest, block, loop string, reverse bool) error {
	op := "compute_at"
	if reverse {
		op = "reverse_compute_at"
	}
	p, pat, ok := n.findBlock(block)
	if !ok {
		return illegal(op, "no block %q", block)
	}
	l, lat, ok := n.findLoop(loop)
	if !ok {
		return illegal(op, "no loop %q", loop)
	}
	if p.Reduce && !reverse {
		return illegal(op, "block %s is a reduction; only spatial producers move (move its loops instead)", block)
	}
	if p.Reduce && p.Init == nil {
		return illegal(op, "block %s is a reduction without init; decompose it after moving it", block)
	}
	outer := append(append([]*Loop{}, lat.anc...), l)
	inL := map[*Block]bool{}
	for _, b := range blocksUnder(l) {
		inL[b] = true
	}
	bs, ls := n.blocks()
	order := n.order()
	// The tile buffer: for compute_at, what p writes; for reverse, the one
	// buffer p reads that is written under the loop.
	var x *Buffer
	var offs []Expr
	var perm []int
	var accs []access
	if !reverse {
		x = n.Buffer(p.Buf)
		var err error
		if offs, perm, err = offsets(op, p, p.Index); err != nil {
			return err
		}
		for i, b := range bs {
			if b == p {
				continue
			}
			if b.Buf == x.Name {
				return illegal(op, "block %s also writes %s", b.Name, x.Name)
			}
			lds := bufferReads(b, x.Name)
			if len(lds) == 0 {
				continue
			}
			if !inL[b] {
				return illegal(op, "block %s reads %s outside loop %s", b.Name, x.Name, loop)
			}
			if order[b] < order[p] {
				return illegal(op, "block %s reads %s before %s writes it", b.Name, x.Name, block)
			}
			for _, ld := range lds {
				accs = append(accs, fullIndex(b, ld.Index, ls[i], n))
			}
		}
		if len(accs) == 0 {
			return illegal(op, "no block under loop %s reads %s", loop, x.Name)
		}
	} else {
		for _, ld := range collectLoads(p) {
			if len(writers(l.Body, ld)) > 0 {
				if x != nil && x.Name != ld {
					return illegal(op, "block %s reads both %s and %s, written under %s", block, x.Name, ld, loop)
				}
				x = n.Buffer(ld)
			}
		}
		if x == nil {
			return illegal(op, "block %s reads nothing written under loop %s", block, loop)
		}
		for _, ld := range bufferReads(p, x.Name) {
			o, pm, err := offsets(op, p, ld.Index)
			if err != nil {
				return err
			}
			if offs != nil && (joinExprs(offs) != joinExprs(o) || fmt.Sprint(pm) != fmt.Sprint(perm)) {
				return illegal(op, "block %s reads %s at different offsets", block, x.Name)
			}
			offs, perm = o, pm
		}
		for i, b := range bs {
			if b.Buf != x.Name {
				continue
			}
			if !inL[b] {
				return illegal(op, "block %s writes %s outside loop %s", b.Name, x.Name, loop)
			}
			if order[b] > order[p] {
				return illegal(op, "block %s writes %s after %s reads it", b.Name, x.Name, block)
			}
			inner := map[string]bool{}
			for _, a := range ls[i].anc[len(outer):] {
				inner[a.Name] = true
			}
			if b.Reduce {
				for _, v := range ReductionOnlyVars(b) {
					if !inner[v] {
						return illegal(op, "reduction of block %s over loop %s is not finished inside %s", b.Name, v, loop)
					}
				}
			}
			accs = append(accs, fullIndex(b, b.Index, ls[i], n))
		}
	}
	if inL[p] && reverse {
		return illegal(op, "block %s is already under loop %s", block, loop)
	}
	if x.AllocAt != "" && x.AllocAt != l.Name && !isAncestorName(lat.anc, x.AllocAt) {
		return illegal(op, "buffer %s is allocated inside loop %s, which does not enclose %s", x.Name, x.AllocAt, loop)
	}
	lo, size, err := region(op, n, outer, accs, reverse)
	if err != nil {
		return err
	}
	scope := map[string]bool{}
	for _, a := range outer {
		scope[a.Name] = true
	}
	for d, o := range offs {
		for _, v := range Vars(o) {
			if !scope[v] {
				return illegal(op, "offset %s of block %s dimension %d uses loop %s, not enclosing %s", o, block, d, v, loop)
			}
		}
	}
	// Detach p and rebuild its loops over the tile.
	parent := pat.parent
	*parent = append((*parent)[:pat.idx:pat.idx], (*parent)[pat.idx+1:]...)
	n.prune()
	r := n.ranges(outer)
	taken := n.names()
	var loops []*Loop
	for d := range p.Axes {
		ax := perm[d]
		start := r.Simplify(Sub(lo[d], offs[d]))
		ext := r.Simplify(Min(C(size[d]), Sub(p.Axes[ax].Extent, start)))
		lp := &Loop{Name: n.fresh(fmt.Sprintf("%s_ax%d", block, d), taken), Extent: ext}
		loops = append(loops, lp)
		p.Binds[ax] = Add(start, Var{lp.Name})
	}
	r2 := n.rangesWith(r, loops)
	for d := range p.Binds {
		p.Binds[d] = r2.Simplify(p.Binds[d])
	}
	var st Stmt = p
	for i := len(loops) - 1; i >= 0; i-- {
		loops[i].Body = []Stmt{st}
		st = loops[i]
	}
	if reverse {
		l.Body = append(l.Body, st)
	} else {
		l.Body = insertAt(l.Body, 0, st)
	}
	// Shrink the tile buffer when every access is now under the loop.
	if x.Param >= 0 {
		return nil
	}
	inL = map[*Block]bool{}
	for _, b := range blocksUnder(l) {
		inL[b] = true
	}
	bs, _ = n.blocks()
	for _, b := range bs {
		if (b.Buf == x.Name || len(bufferReads(b, x.Name)) > 0) && !inL[b] {
			return nil
		}
	}
	shift := func(idx []Expr) []Expr {
		out := make([]Expr, len(idx))
		for d, e := range idx {
			out[d] = Simplify(Sub(e, lo[d]))
		}
		return out
	}
	for _, b := range bs {
		if b.Buf == x.Name {
			b.Index = shift(b.Index)
		}
		b.Value = renameLoads(b.Value, x.Name, x.Name, shift)
		if b.Init != nil {
			b.Init = renameLoads(b.Init, x.Name, x.Name, shift)
		}
	}
	for d := range x.Shape {
		x.Shape[d] = C(size[d])
	}
	x.AllocAt = l.Name
	return nil
}

// collectLoads returns the buffers a block reads, in first-use order.
func collectLoads(b *Block) []string {
	var out []string
	seen := map[string]bool{}
	Visit(b.Value, func(x Expr) {
		if ld, ok := x.(Load); ok && !seen[ld.Buf] {
			seen[ld.Buf] = true
			out = append(out, ld.Buf)
		}
	})
	return out
}

// ComputeInline replaces every read of a spatial block's buffer by the
// block's expression and removes the block and its buffer.
func (s *Schedule) ComputeInline(block string) error {
	_, err := s.apply(Inst{Op: "compute_inline", Args: []string{block}}, func(n *Nest) ([]string, error) {
		return nil, computeInline(n, block)
	})
	return err
}

func computeInline(n *Nest, block string) error {
	p, pat, ok := n.findBlock(block)
	if !ok {
		return illegal("compute_inline", "no block %q", block)
	}
	x := n.Buffer(p.Buf)
	if x.Param >= 0 {
		return illegal("compute_inline", "block %s writes output %s, which must stay in memory", block, x.Name)
	}
	if p.Reduce {
		return illegal("compute_inline", "block %s is a reduction", block)
	}
	offs, perm, err := offsets("compute_inline", p, p.Index)
	if err != nil {
		return err
	}
	for d, o := range offs {
		if o.String() != "0" || perm[d] != d {
			return illegal("compute_inline", "block %s stores at an offset (%s); inline it before compute_at", block, o)
		}
	}
	axes := map[string]bool{}
	for _, a := range p.Axes {
		axes[a.Name] = true
	}
	for _, v := range Vars(p.Value) {
		if !axes[v] {
			return illegal("compute_inline", "block %s reads loop variable %s", block, v)
		}
	}
	if len(bufferReads(p, x.Name)) > 0 {
		return illegal("compute_inline", "block %s reads its own buffer", block)
	}
	bs, _ := n.blocks()
	for _, b := range bs {
		if b != p && b.Buf == x.Name {
			return illegal("compute_inline", "block %s also writes %s", b.Name, x.Name)
		}
	}
	inline := func(e Expr) Expr {
		return Rewrite(e, func(y Expr) Expr {
			if ld, ok := y.(Load); ok && ld.Buf == x.Name {
				m := map[string]Expr{}
				for d, a := range p.Axes {
					m[a.Name] = ld.Index[d]
				}
				return Subst(p.Value, m)
			}
			return y
		})
	}
	for _, b := range bs {
		if b == p {
			continue
		}
		b.Value = inline(b.Value)
		if b.Init != nil {
			b.Init = inline(b.Init)
		}
	}
	*pat.parent = append((*pat.parent)[:pat.idx:pat.idx], (*pat.parent)[pat.idx+1:]...)
	n.prune()
	for i, b := range n.Buffers {
		if b == x {
			n.Buffers = append(n.Buffers[:i:i], n.Buffers[i+1:]...)
			break
		}
	}
	return nil
}

// DecomposeReduction moves a reduction block's init into its own block
// placed before loop, with copies of the spatial loops inside loop (they
// keep their kinds). Returns the init block.
func (s *Schedule) DecomposeReduction(block, loop string) (string, error) {
	outs, err := s.apply(Inst{Op: "decompose_reduction", Args: []string{block, loop}}, func(n *Nest) ([]string, error) {
		name, err := decompose(n, block, loop)
		return []string{name}, err
	})
	if err != nil {
		return "", err
	}
	return outs[0], nil
}

func decompose(n *Nest, block, loop string) (string, error) {
	b, bat, ok := n.findBlock(block)
	if !ok {
		return "", illegal("decompose_reduction", "no block %q", block)
	}
	if !b.Reduce || b.Init == nil {
		return "", illegal("decompose_reduction", "block %s is not a reduction with an init", block)
	}
	l, lat, ok := n.findLoop(loop)
	if !ok {
		return "", illegal("decompose_reduction", "no loop %q", loop)
	}
	pos := -1
	for i, a := range bat.anc {
		if a == l {
			pos = i
		}
	}
	if pos < 0 {
		return "", illegal("decompose_reduction", "loop %s does not enclose block %s", loop, block)
	}
	inside := map[string]bool{}
	for _, a := range bat.anc[pos:] {
		inside[a.Name] = true
	}
	if x := n.Buffer(b.Buf); x.AllocAt != "" && !isAncestorName(lat.anc, x.AllocAt) {
		return "", illegal("decompose_reduction", "buffer %s is allocated inside loop %s; the init must go inside it too", x.Name, x.AllocAt)
	}
	for _, v := range ReductionOnlyVars(b) {
		if !inside[v] {
			return "", illegal("decompose_reduction", "reduction loop %s is outside %s: the init would run more than once", v, loop)
		}
	}
	spatial := map[string]bool{}
	for i, a := range b.Axes {
		if !a.Reduce {
			for _, v := range Vars(b.Binds[i]) {
				spatial[v] = true
			}
		}
	}
	taken := n.names()
	init := &Block{Name: n.fresh(block+"_init", taken), Buf: b.Buf, Index: append([]Expr{}, b.Index...), Value: b.Init}
	ren := map[string]Expr{}
	var loops []*Loop
	for _, a := range bat.anc[pos:] {
		if !spatial[a.Name] {
			continue
		}
		nl := &Loop{Name: n.fresh(a.Name+"_init", taken), Kind: a.Kind, Thread: a.Thread}
		for _, v := range Vars(a.Extent) {
			if inside[v] && !spatial[v] {
				return "", illegal("decompose_reduction", "extent of %s depends on reduction loop %s", a.Name, v)
			}
		}
		nl.Extent = Subst(a.Extent, ren)
		ren[a.Name] = Var{nl.Name}
		loops = append(loops, nl)
	}
	for i, a := range b.Axes {
		if !a.Reduce {
			init.Axes = append(init.Axes, a)
			init.Binds = append(init.Binds, Subst(b.Binds[i], ren))
		}
	}
	init.Index = substAll(init.Index, ren)
	var st Stmt = init
	for i := len(loops) - 1; i >= 0; i-- {
		loops[i].Body = []Stmt{st}
		st = loops[i]
	}
	*lat.parent = insertAt(*lat.parent, lat.idx, st)
	b.Init = nil
	return init.Name, nil
}

func substAll(es []Expr, m map[string]Expr) []Expr {
	out := make([]Expr, len(es))
	for i, e := range es {
		out[i] = Subst(e, m)
	}
	return out
}

// RFactor splits a reduction over loop into partial sums kept per iteration
// of loop (a new buffer <buf>_rf whose dimension factorAxis, 0..rank,
// indexes the iterations of loop), then a second block that sums the
// partials. The partial-sum block keeps the original loops, so loop can then
// be parallelized or vectorized; factorAxis = rank puts the partials last,
// which is what vectorizing them needs (a GEMV's lanes over k). Returns the
// partial-sum block.
func (s *Schedule) RFactor(block, loop string, factorAxis int) (string, error) {
	inst := Inst{Op: "rfactor", Args: []string{block, loop}, Ints: []Operand{{Lit: int64(factorAxis)}}}
	outs, err := s.apply(inst, func(n *Nest) ([]string, error) {
		name, err := rfactor(n, block, loop, factorAxis)
		return []string{name}, err
	})
	if err != nil {
		return "", err
	}
	return outs[0], nil
}

func rfactor(n *Nest, block, loop string, factorAxis int) (string, error) {
	b, bat, ok := n.findBlock(block)
	if !ok {
		return "", illegal("rfactor", "no block %q", block)
	}
	if !b.Reduce {
		return "", illegal("rfactor", "block %s is not a reduction", block)
	}
	l, _, ok := n.findLoop(loop)
	if !ok || !isAncestor(bat.anc, l) {
		return "", illegal("rfactor", "loop %q does not enclose block %s", loop, block)
	}
	feeds := false
	for i, a := range b.Axes {
		if UsesVar(b.Binds[i], loop) {
			if !a.Reduce {
				return "", illegal("rfactor", "loop %s feeds spatial axis %s", loop, a.Name)
			}
			feeds = true
		}
	}
	if !feeds {
		return "", illegal("rfactor", "loop %s feeds no reduction axis of %s", loop, block)
	}
	for _, v := range Vars(l.Extent) {
		return "", illegal("rfactor", "loop %s has a variable extent (depends on %s); split with a divisor", loop, v)
	}
	axes := map[string]bool{}
	for _, a := range b.Axes {
		axes[a.Name] = true
	}
	for _, e := range b.Index {
		for _, v := range Vars(e) {
			if !axes[v] {
				return "", illegal("rfactor", "block %s stores at a loop-dependent offset; rfactor before compute_at", block)
			}
		}
	}
	x := n.Buffer(b.Buf)
	if x.AllocAt != "" {
		return "", illegal("rfactor", "buffer %s is allocated inside loop %s", x.Name, x.AllocAt)
	}
	if factorAxis < 0 || factorAxis > len(x.Shape) {
		return "", illegal("rfactor", "factor axis %d outside 0..%d", factorAxis, len(x.Shape))
	}
	insert := func(es []Expr, e Expr) []Expr {
		out := append([]Expr{}, es[:factorAxis]...)
		out = append(out, e)
		return append(out, es[factorAxis:]...)
	}
	taken := n.names()
	rfName := n.fresh(x.Name+"_rf", taken)
	rfAxis := n.fresh("v"+loop+"_rf", taken)
	n.Buffers = append(n.Buffers, &Buffer{Name: rfName, DType: F32, Shape: insert(x.Shape, l.Extent), Scope: Global, Param: -1})
	// The write-back block sums the partials into the original buffer.
	wb := &Block{Name: block, Buf: x.Name, Index: append([]Expr{}, b.Index...), Reduce: true, Init: b.Init}
	var loops []*Loop
	for _, a := range b.Axes {
		if a.Reduce {
			continue
		}
		lp := &Loop{Name: n.fresh(strings.TrimPrefix(a.Name, "v")+"_wb", taken), Extent: a.Extent}
		loops = append(loops, lp)
		wb.Axes = append(wb.Axes, a)
		wb.Binds = append(wb.Binds, Var{lp.Name})
	}
	rl := &Loop{Name: n.fresh(loop+"_wb", taken), Extent: l.Extent}
	loops = append(loops, rl)
	wb.Axes = append(wb.Axes, BlockAxis{Name: rfAxis, Extent: l.Extent, Reduce: true})
	wb.Binds = append(wb.Binds, Var{rl.Name})
	wb.Value = Load{Buf: rfName, Index: insert(b.Index, Var{rfAxis})}
	var st Stmt = wb
	for i := len(loops) - 1; i >= 0; i-- {
		loops[i].Body = []Stmt{st}
		st = loops[i]
	}
	// The partial-sum block: same loops, one more spatial axis bound to loop.
	b.Name = rfName
	b.Buf = rfName
	b.Axes = append(b.Axes, BlockAxis{Name: rfAxis, Extent: l.Extent})
	b.Binds = append(b.Binds, Var{loop})
	b.Index = insert(b.Index, Var{rfAxis})
	b.Init = Float{0}
	root := n.rootOf(bat)
	n.Body = insertAt(n.Body, root+1, st)
	return b.Name, nil
}

// SetScope changes where an intermediate buffer lives, e.g. an rfactor
// tile to register scope once reverse_compute_at has shrunk it.
func (s *Schedule) SetScope(buffer string, scope Scope) error {
	_, err := s.apply(Inst{Op: "set_scope", Args: []string{buffer, string(scope)}}, func(n *Nest) ([]string, error) {
		if _, err := parseScope(string(scope)); err != nil {
			return nil, illegal("set_scope", "%v", err)
		}
		b := n.Buffer(buffer)
		if b == nil {
			return nil, illegal("set_scope", "no buffer %q", buffer)
		}
		if b.Param >= 0 {
			return nil, illegal("set_scope", "buffer %s is a kernel parameter", buffer)
		}
		b.Scope = scope
		return nil, nil
	})
	return err
}

// SetLayout gives an intermediate buffer a physical layout, as cache_read's
// layout argument does for a packed copy. Its use is a register tile made
// by cache_write, whose dims follow the block's axes (out[i][j]): when the
// vectorized loop walks i (the decode outer-product recipe keeps 16 rows of
// a in the lanes of one vector), the layout order [1, 0] puts i last, so
// that each row of w gets its own vector accumulator of 16 outputs.
func (s *Schedule) SetLayout(buffer string, layout *Layout) error {
	_, err := s.apply(Inst{Op: "set_layout", Args: []string{buffer}, Layout: layout}, func(n *Nest) ([]string, error) {
		b := n.Buffer(buffer)
		if b == nil {
			return nil, illegal("set_layout", "no buffer %q", buffer)
		}
		if b.Param >= 0 {
			return nil, illegal("set_layout", "buffer %s is a kernel parameter", buffer)
		}
		if layout == nil {
			return nil, illegal("set_layout", "buffer %s: no layout", buffer)
		}
		if err := layout.check(len(b.Shape)); err != nil {
			return nil, illegal("set_layout", "buffer %s: %v", buffer, err)
		}
		b.Layout = layout.clone()
		return nil, nil
	})
	return err
}
