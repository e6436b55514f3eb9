package schedule

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
)

// ErrIllegal is wrapped by every primitive's legality error.
var ErrIllegal = errors.New("illegal schedule primitive")

// Schedule wraps a nest being transformed and the trace of the primitives
// applied so far. Every primitive works on a copy of the nest and commits it
// only on success, so a failed primitive leaves the schedule unchanged.
type Schedule struct {
	Def   *Def
	nest  *Nest
	trace Trace
	rng   *rand.Rand
	vals  map[string]int64
	// replaying holds the recorded decision the next sampling step must use.
	replaying []int64
	replay    bool
}

// New lowers def and returns an empty schedule; seed drives sampling steps.
func New(def *Def, seed uint64) (*Schedule, error) {
	n, err := Lower(def)
	if err != nil {
		return nil, err
	}
	return &Schedule{Def: def, nest: n, trace: Trace{Def: def.Name}, rng: rand.New(rand.NewPCG(seed, seed)), vals: map[string]int64{}}, nil
}

// Nest returns the current loop nest (a copy: editing it does not change
// the schedule).
func (s *Schedule) Nest() *Nest { return s.nest.Clone() }

// Trace returns a copy of the recorded trace.
func (s *Schedule) Trace() *Trace {
	t := Trace{Def: s.trace.Def, Insts: make([]Inst, len(s.trace.Insts))}
	copy(t.Insts, s.trace.Insts)
	return &t
}

// Loops returns the names of the loops enclosing block, outermost first.
func (s *Schedule) Loops(block string) ([]string, error) {
	_, at, ok := s.nest.findBlock(block)
	if !ok {
		return nil, fmt.Errorf("loops: %w: no block %q", ErrIllegal, block)
	}
	out := make([]string, len(at.anc))
	for i, l := range at.anc {
		out[i] = l.Name
	}
	return out, nil
}

// Blocks returns the block names in program order.
func (s *Schedule) Blocks() []string {
	bs, _ := s.nest.blocks()
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Name
	}
	return out
}

// Value returns the value of a sampled variable.
func (s *Schedule) Value(ref string) (int64, bool) {
	v, ok := s.vals[ref]
	return v, ok
}

func illegal(op, format string, a ...any) error {
	return fmt.Errorf("%s: %w: %s", op, ErrIllegal, fmt.Sprintf(format, a...))
}

// apply runs f on a copy of the nest and commits it and the instruction on
// success.
func (s *Schedule) apply(inst Inst, f func(n *Nest) ([]string, error)) ([]string, error) {
	c := s.nest.Clone()
	outs, err := f(c)
	if err != nil {
		return nil, err
	}
	// A later primitive (compute_at of a writer, say) must not make an
	// earlier parallel loop race.
	var bad error
	walk(&c.Body, nil, func(st Stmt, _ loc) bool {
		if l, ok := st.(*Loop); ok && (l.Kind == Parallel || l.Kind == Bound) {
			if l.Kind == Bound && CrossThreadReduction(l) != nil {
				return true
			}
			if err := checkDisjoint(inst.Op, c, l); err != nil {
				bad = fmt.Errorf("%w (after this %s, %s loop %s would race)", err, inst.Op, l.Kind, l.Name)
				return false
			}
		}
		return true
	})
	if bad != nil {
		return nil, bad
	}
	s.nest = c
	inst.Outputs = outs
	s.trace.Insts = append(s.trace.Insts, inst)
	return outs, nil
}

// Ref is an integer operand of a primitive: a literal (Name empty) or the
// output of a sampling step, so that replaying a mutated decision changes
// the primitives that use it.
type Ref struct {
	Name  string
	Value int64
}

// Lit returns a literal operand.
func Lit(v int64) Ref { return Ref{Value: v} }

func (s *Schedule) resolve(ops []Operand) ([]int64, error) {
	out := make([]int64, len(ops))
	for i, o := range ops {
		if o.Ref == "" {
			out[i] = o.Lit
			continue
		}
		v, ok := s.vals[o.Ref]
		if !ok {
			return nil, fmt.Errorf("%w: unknown sampled value %q", ErrIllegal, o.Ref)
		}
		out[i] = v
	}
	return out, nil
}

func operands(rs []Ref) []Operand {
	out := make([]Operand, len(rs))
	for i, r := range rs {
		out[i] = Operand{Lit: r.Value, Ref: r.Name}
		if r.Name != "" {
			out[i].Lit = 0
		}
	}
	return out
}

// Split splits loop into len(factors) nested loops, outermost first. The
// first factor may be -1 (inferred); the product must cover the extent.
// Tails are handled by bounded inner extents: an inner loop runs
// min(f, remaining) iterations, so nothing is guarded and every iteration is
// in bounds (no peeling; the code generator turns such loops into a main part
// and a remainder where it vectorizes).
func (s *Schedule) Split(loop string, factors ...int64) ([]string, error) {
	rs := make([]Ref, len(factors))
	for i, f := range factors {
		rs[i] = Lit(f)
	}
	return s.SplitBy(loop, rs...)
}

// SplitBy is Split with operands that may be sampled values.
func (s *Schedule) SplitBy(loop string, factors ...Ref) ([]string, error) {
	inst := Inst{Op: "split", Args: []string{loop}, Ints: operands(factors)}
	fs, err := s.resolve(inst.Ints)
	if err != nil {
		return nil, fmt.Errorf("split %s: %w", loop, err)
	}
	return s.apply(inst, func(n *Nest) ([]string, error) { return split(n, loop, fs) })
}

func split(n *Nest, loop string, fs []int64) ([]string, error) {
	l, at, ok := n.findLoop(loop)
	if !ok {
		return nil, illegal("split", "no loop %q", loop)
	}
	if len(fs) < 2 {
		return nil, illegal("split", "loop %s: need at least 2 factors, got %d", loop, len(fs))
	}
	infer := -1
	for i, f := range fs {
		if f == -1 && infer < 0 {
			infer = i
			continue
		}
		if f < 1 {
			return nil, illegal("split", "loop %s: factor %d is %d (factors must be ≥ 1, one may be -1 to infer it)", loop, i, f)
		}
	}
	r := n.ranges(at.anc)
	eb, ok := r.Bound(l.Extent)
	if !ok {
		return nil, illegal("split", "loop %s: extent %s has no bound", loop, l.Extent)
	}
	if infer > 0 {
		fs = append([]int64{}, fs...)
		rest := int64(1)
		for i, f := range fs {
			if i != infer {
				rest *= f
			}
		}
		fs[infer] = max((eb.Hi+rest-1)/rest, 1)
	}
	inner := int64(1)
	for _, f := range fs[1:] {
		inner *= f
	}
	if fs[0] > 0 && fs[0]*inner < eb.Hi {
		return nil, illegal("split", "loop %s: factors %v cover %d < extent %d", loop, fs, fs[0]*inner, eb.Hi)
	}
	taken := n.names()
	names := make([]string, len(fs))
	loops := make([]*Loop, len(fs))
	// P[i] is the product of factors i..end.
	P := make([]int64, len(fs)+1)
	P[len(fs)] = 1
	for i := len(fs) - 1; i >= 1; i-- {
		P[i] = P[i+1] * fs[i]
	}
	var base Expr = Int{0}
	for i := range fs {
		names[i] = n.fresh(fmt.Sprintf("%s_%d", loop, i), taken)
		var ext Expr
		if i == 0 {
			ext = FloorDiv(Add(l.Extent, C(P[1]-1)), C(P[1]))
		} else {
			rem := Sub(l.Extent, base)
			ext = Min(C(fs[i]), FloorDiv(Add(rem, C(P[i+1]-1)), C(P[i+1])))
		}
		loops[i] = &Loop{Name: names[i], Extent: r.Simplify(ext)}
		r = n.rangesWith(r, loops[i:i+1])
		base = Add(base, Mul(Var{names[i]}, C(P[i+1])))
	}
	orig := r.Simplify(base)
	for i := range loops {
		if i+1 < len(loops) {
			loops[i].Body = []Stmt{loops[i+1]}
		}
	}
	loops[len(loops)-1].Body = l.Body
	substUnder(l.Body, map[string]Expr{loop: orig}, n.rangesWith(r, loopsUnder(l.Body)))
	(*at.parent)[at.idx] = loops[0]
	for _, b := range n.Buffers {
		if b.AllocAt == loop {
			b.AllocAt = names[len(names)-1]
		}
	}
	return names, nil
}

// chain checks that the named loops lie on one path with nothing else
// between the outermost and the innermost, and returns that path (from the
// outermost named loop to the innermost) and the outermost one's location.
func chain(op string, n *Nest, loops []string) ([]*Loop, loc, error) {
	if len(loops) == 0 {
		return nil, loc{}, illegal(op, "no loops given")
	}
	seen := map[string]bool{}
	var deepest *Loop
	var dat loc
	for _, name := range loops {
		if seen[name] {
			return nil, loc{}, illegal(op, "loop %s given twice", name)
		}
		seen[name] = true
		l, at, ok := n.findLoop(name)
		if !ok {
			return nil, loc{}, illegal(op, "no loop %q", name)
		}
		if deepest == nil || len(at.anc) > len(dat.anc) {
			deepest, dat = l, at
		}
	}
	path := append(append([]*Loop{}, dat.anc...), deepest)
	first := -1
	for i, l := range path {
		if seen[l.Name] {
			if first < 0 {
				first = i
			}
			delete(seen, l.Name)
		}
	}
	if len(seen) > 0 {
		for name := range seen {
			return nil, loc{}, illegal(op, "loop %s is not on the same nest path as %s", name, deepest.Name)
		}
	}
	path = path[first:]
	for _, l := range path[:len(path)-1] {
		if len(l.Body) != 1 {
			return nil, loc{}, illegal(op, "loop %s has %d statements in its body; the loops must be perfectly nested", l.Name, len(l.Body))
		}
	}
	_, at, _ := n.findLoop(path[0].Name)
	return path, at, nil
}

// Reorder puts the named loops in the given order (outermost first); loops
// between them that are not named keep their positions.
func (s *Schedule) Reorder(loops ...string) error {
	_, err := s.apply(Inst{Op: "reorder", Args: loops}, func(n *Nest) ([]string, error) { return nil, reorder(n, loops) })
	return err
}

func reorder(n *Nest, loops []string) error {
	path, at, err := chain("reorder", n, loops)
	if err != nil {
		return err
	}
	named := map[string]bool{}
	for _, l := range loops {
		named[l] = true
	}
	byName := map[string]*Loop{}
	for _, l := range path {
		byName[l.Name] = l
	}
	seq := make([]*Loop, len(path))
	k := 0
	for i, l := range path {
		if named[l.Name] {
			seq[i] = byName[loops[k]]
			k++
		} else {
			seq[i] = l
		}
	}
	defined := map[string]bool{}
	for _, a := range at.anc {
		defined[a.Name] = true
	}
	for _, l := range seq {
		for _, v := range Vars(l.Extent) {
			if !defined[v] {
				return illegal("reorder", "extent %s of loop %s depends on loop %s, which would be inside it", l.Extent, l.Name, v)
			}
		}
		defined[l.Name] = true
	}
	body := path[len(path)-1].Body
	oldInner := path[len(path)-1].Name
	for i := range seq {
		if i+1 < len(seq) {
			seq[i].Body = []Stmt{seq[i+1]}
		} else {
			seq[i].Body = body
		}
	}
	(*at.parent)[at.idx] = seq[0]
	for _, b := range n.Buffers {
		if b.AllocAt == oldInner {
			b.AllocAt = seq[len(seq)-1].Name
		}
	}
	return nil
}

// Tile splits each loop by its factor and moves all outer loops outside all
// inner ones: tile(i, j; 8, 32) gives i_0, j_0, i_1, j_1.
func (s *Schedule) Tile(loops []string, factors []int64) ([]string, error) {
	rs := make([]Ref, len(factors))
	for i, f := range factors {
		rs[i] = Lit(f)
	}
	return s.TileBy(loops, rs)
}

// TileBy is Tile with operands that may be sampled values.
func (s *Schedule) TileBy(loops []string, factors []Ref) ([]string, error) {
	inst := Inst{Op: "tile", Args: loops, Ints: operands(factors)}
	fs, err := s.resolve(inst.Ints)
	if err != nil {
		return nil, fmt.Errorf("tile: %w", err)
	}
	return s.apply(inst, func(n *Nest) ([]string, error) { return tile(n, loops, fs) })
}

func tile(n *Nest, loops []string, fs []int64) ([]string, error) {
	if len(loops) != len(fs) {
		return nil, illegal("tile", "%d loops but %d factors", len(loops), len(fs))
	}
	if _, _, err := chain("tile", n, loops); err != nil {
		return nil, err
	}
	var outer, inner []string
	for i, l := range loops {
		names, err := split(n, l, []int64{-1, fs[i]})
		if err != nil {
			return nil, fmt.Errorf("tile: %w", err)
		}
		outer = append(outer, names[0])
		inner = append(inner, names[1])
	}
	all := append(append([]string{}, outer...), inner...)
	if err := reorder(n, all); err != nil {
		return nil, fmt.Errorf("tile: %w", err)
	}
	return all, nil
}

// Fuse merges perfectly nested loops into one loop over the product of
// their extents.
func (s *Schedule) Fuse(loops ...string) (string, error) {
	outs, err := s.apply(Inst{Op: "fuse", Args: loops}, func(n *Nest) ([]string, error) {
		name, err := fuse(n, loops)
		return []string{name}, err
	})
	if err != nil {
		return "", err
	}
	return outs[0], nil
}

func fuse(n *Nest, loops []string) (string, error) {
	if len(loops) < 2 {
		return "", illegal("fuse", "need at least 2 loops, got %d", len(loops))
	}
	path, at, err := chain("fuse", n, loops)
	if err != nil {
		return "", err
	}
	if len(path) != len(loops) {
		return "", illegal("fuse", "loops %v are not directly nested in this order", loops)
	}
	for i, l := range path {
		if l.Name != loops[i] {
			return "", illegal("fuse", "loops %v are not given outermost first", loops)
		}
		for _, v := range Vars(l.Extent) {
			for _, o := range path {
				if o.Name == v {
					return "", illegal("fuse", "extent of %s depends on %s", l.Name, v)
				}
			}
		}
	}
	inner := path[len(path)-1]
	for _, b := range blocksUnder(inner) {
		// A loop that feeds a spatial axis writes a distinct element per
		// iteration even when it also feeds a reduction axis (the factor
		// loop of rfactor does both), so it counts as spatial; mixing is
		// fusing it with a loop that feeds reduction axes only.
		sp, rd := false, false
		for _, l := range path {
			lsp, lrd := false, false
			for i, a := range b.Axes {
				if UsesVar(b.Binds[i], l.Name) {
					if a.Reduce {
						lrd = true
					} else {
						lsp = true
					}
				}
			}
			sp = sp || lsp
			rd = rd || (lrd && !lsp)
		}
		if sp && rd {
			return "", illegal("fuse", "block %s would mix spatial and reduction iterations in one loop", b.Name)
		}
	}
	name := n.fresh(strings.Join(loops, "_")+"_fused", nil)
	r := n.ranges(at.anc)
	var ext Expr = C(1)
	for _, l := range path {
		ext = Mul(ext, l.Extent)
	}
	ext = r.Simplify(ext)
	fl := &Loop{Name: name, Extent: ext, Body: inner.Body}
	m := map[string]Expr{}
	var stride Expr = C(1)
	for i := len(path) - 1; i >= 0; i-- {
		e := FloorDiv(Var{name}, stride)
		if i > 0 {
			e = Mod(e, path[i].Extent)
		}
		m[path[i].Name] = e
		stride = Mul(stride, path[i].Extent)
	}
	r2 := n.rangesWith(r, []*Loop{fl})
	for k, e := range m {
		m[k] = r2.Simplify(e)
	}
	substUnder(fl.Body, m, n.rangesWith(r2, loopsUnder(fl.Body)))
	(*at.parent)[at.idx] = fl
	for _, b := range n.Buffers {
		if b.AllocAt == inner.Name {
			b.AllocAt = name
		}
	}
	return name, nil
}

// feedsReduction reports whether loop variable v feeds only reduction axes
// of some block under l (so its iterations update the same elements). A
// variable that also feeds a spatial axis, as after rfactor, is fine.
func feedsReduction(l *Loop, v string) (string, bool) {
	for _, b := range blocksUnder(l) {
		for _, r := range ReductionOnlyVars(b) {
			if r == v {
				return b.Name, true
			}
		}
	}
	return "", false
}

// Vectorize marks an innermost loop to run as SIMD lanes.
func (s *Schedule) Vectorize(loop string) error {
	_, err := s.apply(Inst{Op: "vectorize", Args: []string{loop}}, func(n *Nest) ([]string, error) {
		l, at, ok := n.findLoop(loop)
		if !ok {
			return nil, illegal("vectorize", "no loop %q", loop)
		}
		for _, st := range l.Body {
			if _, isLoop := st.(*Loop); isLoop {
				return nil, illegal("vectorize", "loop %s is not innermost", loop)
			}
		}
		if b, bad := feedsReduction(l, loop); bad {
			return nil, illegal("vectorize", "loop %s iterates a reduction axis of block %s (rfactor it first)", loop, b)
		}
		if _, ok := n.ranges(at.anc).Bound(l.Extent); !ok {
			return nil, illegal("vectorize", "loop %s has no bounded extent", loop)
		}
		if l.Kind == Parallel || l.Kind == Bound || l.Kind == Tensorized {
			return nil, illegal("vectorize", "loop %s is already %s", loop, l.Kind)
		}
		l.Kind = Vectorized
		return nil, nil
	})
	return err
}

// Unroll marks a loop to be unrolled (fully, by the code generator, when
// its extent is a constant).
func (s *Schedule) Unroll(loop string) error {
	_, err := s.apply(Inst{Op: "unroll", Args: []string{loop}}, func(n *Nest) ([]string, error) {
		l, at, ok := n.findLoop(loop)
		if !ok {
			return nil, illegal("unroll", "no loop %q", loop)
		}
		iv, ok := n.ranges(at.anc).Bound(l.Extent)
		if !ok {
			return nil, illegal("unroll", "loop %s has no bounded extent", loop)
		}
		if iv.Hi > 1024 {
			return nil, illegal("unroll", "loop %s has up to %d iterations (at most 1024 unroll)", loop, iv.Hi)
		}
		if l.Kind == Parallel || l.Kind == Bound || l.Kind == Vectorized || l.Kind == Tensorized {
			return nil, illegal("unroll", "loop %s is already %s", loop, l.Kind)
		}
		l.Kind = Unrolled
		return nil, nil
	})
	return err
}

// checkParallel verifies that iterations of l write disjoint elements: the
// loop feeds no reduction, and every block under it either writes a buffer
// allocated inside the loop or has the loop variable in its spatial bindings.
func checkParallel(op string, n *Nest, l *Loop, at loc) error {
	for _, a := range at.anc {
		if a.Kind == Parallel || (a.Kind == Bound && op == "parallel") {
			return illegal(op, "loop %s is inside %s loop %s", l.Name, a.Kind, a.Name)
		}
	}
	if l.Kind != Serial {
		return illegal(op, "loop %s is already %s", l.Name, l.Kind)
	}
	return checkDisjoint(op, n, l)
}

// checkDisjoint verifies that iterations of l write disjoint elements.
func checkDisjoint(op string, n *Nest, l *Loop) error {
	if b, bad := feedsReduction(l, l.Name); bad {
		return illegal(op, "loop %s iterates a reduction axis of block %s", l.Name, b)
	}
	inside := map[string]bool{l.Name: true}
	for _, x := range loopsUnder(l.Body) {
		inside[x.Name] = true
	}
	for _, b := range blocksUnder(l) {
		buf := n.Buffer(b.Buf)
		if buf.Param < 0 && inside[buf.AllocAt] {
			continue
		}
		uses := false
		for i, a := range b.Axes {
			if !a.Reduce && UsesVar(b.Binds[i], l.Name) {
				uses = true
			}
		}
		if !uses {
			return illegal(op, "block %s writes %s at the same elements in every iteration of %s", b.Name, b.Buf, l.Name)
		}
	}
	return nil
}

// Parallel marks a loop to run its iterations on threads (OpenMP in C).
func (s *Schedule) Parallel(loop string) error {
	_, err := s.apply(Inst{Op: "parallel", Args: []string{loop}}, func(n *Nest) ([]string, error) {
		l, at, ok := n.findLoop(loop)
		if !ok {
			return nil, illegal("parallel", "no loop %q", loop)
		}
		if err := checkParallel("parallel", n, l, at); err != nil {
			return nil, err
		}
		l.Kind = Parallel
		return nil, nil
	})
	return err
}

// GPUAxes are the thread axes Bind accepts.
var GPUAxes = []string{"blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y", "threadIdx.z"}

// Bind binds a loop to a GPU block or thread axis.
func (s *Schedule) Bind(loop, thread string) error {
	_, err := s.apply(Inst{Op: "bind", Args: []string{loop, thread}}, func(n *Nest) ([]string, error) {
		l, at, ok := n.findLoop(loop)
		if !ok {
			return nil, illegal("bind", "no loop %q", loop)
		}
		known := false
		for _, a := range GPUAxes {
			known = known || a == thread
		}
		if !known {
			return nil, illegal("bind", "unknown GPU axis %q (want one of %s)", thread, strings.Join(GPUAxes, ", "))
		}
		for _, a := range at.anc {
			if a.Kind == Bound && a.Thread == thread {
				return nil, illegal("bind", "axis %s is already bound by enclosing loop %s", thread, a.Name)
			}
		}
		if _, red := feedsReduction(l, loop); red && strings.HasPrefix(thread, "threadIdx.") {
			// A cross-thread reduction (the write-back of an rfactor):
			// backends lower it to a warp-shuffle tree.
			if err := checkCrossThread(l); err != nil {
				return nil, err
			}
			l.Kind, l.Thread = Bound, thread
			return nil, nil
		}
		if err := checkParallel("bind", n, l, at); err != nil {
			return nil, err
		}
		l.Kind, l.Thread = Bound, thread
		return nil, nil
	})
	return err
}
