package schedule

import (
	"fmt"
	"strings"
)

// Scope is where a buffer lives.
type Scope string

// Buffer scopes. Register buffers become scalar/vector locals in generated
// code when every access has constant indices after unrolling.
const (
	Global   Scope = "global"
	Local    Scope = "local"
	Register Scope = "register"
	Shared   Scope = "shared"
)

func parseScope(s string) (Scope, error) {
	switch Scope(s) {
	case Global, Local, Register, Shared:
		return Scope(s), nil
	}
	return "", fmt.Errorf("unknown scope %q (want global, local, register or shared)", s)
}

// Layout maps a buffer's logical index to its physical one: each dim d with
// Tile[d] > 0 splits into (d // Tile[d], d % Tile[d]); Order then permutes the
// resulting dims; Merge > 1 then makes the last Merge dims one, row-major.
// Packing a weight panel w[n][k] as w[n/16][k][16] is Tile [16, 0], Order
// [0, 2, 1]. Merge exists for vectors whose lanes cover two logical dims:
// a[i][k] copied as [k/4][i·4 + k%4] (Tile [0, 4], Order [1, 0, 2], Merge
// 2) puts 4 rows × 4 k steps in one vector of 16 floats, and the printer
// only vectorizes along the last physical dim.
type Layout struct {
	Tile  []int64 `json:"tile"`
	Order []int   `json:"order"`
	Merge int     `json:"merge,omitempty"`
}

// clone deep-copies the layout (nil stays nil).
func (l *Layout) clone() *Layout {
	if l == nil {
		return nil
	}
	return &Layout{Tile: append([]int64{}, l.Tile...), Order: append([]int{}, l.Order...), Merge: l.Merge}
}

func (l *Layout) String() string {
	if l == nil {
		return ""
	}
	ts := make([]string, len(l.Tile))
	for i, t := range l.Tile {
		ts[i] = fmt.Sprint(t)
	}
	os := make([]string, len(l.Order))
	for i, o := range l.Order {
		os[i] = fmt.Sprint(o)
	}
	if l.Merge > 1 {
		return fmt.Sprintf(" layout(tile=[%s], order=[%s], merge=%d)", strings.Join(ts, ", "), strings.Join(os, ", "), l.Merge)
	}
	return fmt.Sprintf(" layout(tile=[%s], order=[%s])", strings.Join(ts, ", "), strings.Join(os, ", "))
}

// check validates the layout for a buffer of the given rank.
func (l *Layout) check(rank int) error {
	if l == nil {
		return nil
	}
	if len(l.Tile) != rank {
		return fmt.Errorf("layout tile has %d entries for a rank-%d buffer", len(l.Tile), rank)
	}
	n := rank
	for _, t := range l.Tile {
		if t < 0 || t > 1<<16 {
			return fmt.Errorf("layout tile %d outside 0..65536", t)
		}
		if t > 0 {
			n++
		}
	}
	if len(l.Order) != n {
		return fmt.Errorf("layout order has %d entries, want %d", len(l.Order), n)
	}
	seen := make([]bool, n)
	for _, o := range l.Order {
		if o < 0 || o >= n || seen[o] {
			return fmt.Errorf("layout order %v is not a permutation of 0..%d", l.Order, n-1)
		}
		seen[o] = true
	}
	if l.Merge != 0 && (l.Merge < 2 || l.Merge > n) {
		return fmt.Errorf("layout merge %d outside 2..%d (0 = none)", l.Merge, n)
	}
	return nil
}

// Buffer is an array in the nest: a parameter (Param ≥ 0, ABI order), an
// intermediate, or a cache buffer made by cache_read/cache_write. Shape is
// the logical shape; for non-parameters it is a constant upper bound once a
// compute_at has attached the buffer to a loop (AllocAt).
type Buffer struct {
	Name    string
	DType   DType
	Shape   []Expr
	Scope   Scope
	Param   int // ABI index, or -1
	Layout  *Layout
	AllocAt string // loop whose body allocates it; "" = the kernel entry
}

// PhysShape returns the allocated shape after the layout.
func (b *Buffer) PhysShape() []Expr {
	if b.Layout == nil {
		return b.Shape
	}
	out := b.permuted()
	if m := b.Layout.Merge; m > 1 {
		k := len(out) - m
		var e Expr = C(1)
		for _, d := range out[k:] {
			e = Mul(e, d)
		}
		out = append(out[:k:k], Simplify(e))
	}
	return out
}

// permuted is the physical shape before Merge.
func (b *Buffer) permuted() []Expr {
	var dims []Expr
	for d, s := range b.Shape {
		if t := b.Layout.Tile[d]; t > 0 {
			dims = append(dims, Simplify(FloorDiv(Add(s, C(t-1)), C(t))), C(t))
		} else {
			dims = append(dims, s)
		}
	}
	out := make([]Expr, len(dims))
	for i, o := range b.Layout.Order {
		out[i] = dims[o]
	}
	return out
}

// PhysIndex maps a logical index to the physical one.
func (b *Buffer) PhysIndex(idx []Expr) []Expr {
	if b.Layout == nil {
		return idx
	}
	var dims []Expr
	for d, e := range idx {
		if t := b.Layout.Tile[d]; t > 0 {
			dims = append(dims, FloorDiv(e, C(t)), Mod(e, C(t)))
		} else {
			dims = append(dims, e)
		}
	}
	out := make([]Expr, len(dims))
	for i, o := range b.Layout.Order {
		out[i] = dims[o]
	}
	if m := b.Layout.Merge; m > 1 {
		shape := b.permuted()
		k := len(out) - m
		e := out[k]
		for d := k + 1; d < len(out); d++ {
			e = Add(Mul(e, shape[d]), out[d])
		}
		out = append(out[:k:k], e)
	}
	return out
}

// Simplify simplifies e with no range knowledge (constant folding and
// linear canonicalisation only).
func Simplify(e Expr) Expr { return Ranges{}.Simplify(e) }

// LoopKind says how a loop is executed.
type LoopKind int

// Loop kinds.
const (
	Serial LoopKind = iota
	Parallel
	Vectorized
	Unrolled
	Bound      // bound to a GPU axis (Loop.Thread)
	Tensorized // outermost loop of a region mapped to a tensor-core instruction (Loop.Intrin)
)

func (k LoopKind) String() string {
	return [...]string{"serial", "parallel", "vectorized", "unrolled", "bound", "tensorized"}[k]
}

// Stmt is a statement of the nest: *Loop or *Block.
type Stmt interface{ stmtNode() }

// Loop is `for Name in 0..Extent`. Extent may mention outer loop variables
// (tails of splits) and dynamic dims.
type Loop struct {
	Name   string
	Extent Expr
	Kind   LoopKind
	Thread string // GPU axis for Bound loops, e.g. "blockIdx.x"
	Intrin string // instruction of a Tensorized loop, e.g. "mma_m16n8k16_bf16"
	// Prefetch lists software prefetches each iteration issues
	// (Schedule.Prefetch); backends may ignore them.
	Prefetch []Prefetch
	Body     []Stmt
}

// BlockAxis is an iteration axis of a block.
type BlockAxis struct {
	Name   string
	Extent Expr
	Reduce bool
}

// Block is one store, with its own iteration axes bound to expressions of
// the enclosing loop variables (as in TensorIR): primitives rewrite loops and
// bindings, never the block body. A reduction block (Reduce) performs
// Buf[Index] += Value; if Init is set, Buf[Index] = Init first whenever every
// loop variable that only feeds reduction axes is zero (the first visit of
// that output element, whatever the loop order).
type Block struct {
	Name   string
	Axes   []BlockAxis
	Binds  []Expr
	Buf    string
	Index  []Expr
	Value  Expr
	Reduce bool
	Init   Expr
}

func (*Loop) stmtNode()  {}
func (*Block) stmtNode() {}

// Nest is a lowered loop nest. Buffers lists parameters first (ABI order),
// then intermediates and cache buffers in creation order.
type Nest struct {
	Name    string
	Dims    []Dim
	Buffers []*Buffer
	Body    []Stmt
}

// Buffer returns the buffer named name, or nil.
func (n *Nest) Buffer(name string) *Buffer {
	for _, b := range n.Buffers {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// Params returns the parameter buffers in ABI order.
func (n *Nest) Params() []*Buffer {
	var ps []*Buffer
	for _, b := range n.Buffers {
		if b.Param >= 0 {
			ps = append(ps, b)
		}
	}
	return ps
}

// Clone deep-copies the nest's statements and buffers (expressions are
// immutable and shared).
func (n *Nest) Clone() *Nest {
	c := &Nest{Name: n.Name, Dims: append([]Dim{}, n.Dims...)}
	for _, b := range n.Buffers {
		nb := *b
		nb.Shape = append([]Expr{}, b.Shape...)
		nb.Layout = b.Layout.clone()
		c.Buffers = append(c.Buffers, &nb)
	}
	c.Body = cloneStmts(n.Body)
	return c
}

func cloneStmts(ss []Stmt) []Stmt {
	out := make([]Stmt, len(ss))
	for i, s := range ss {
		switch s := s.(type) {
		case *Loop:
			l := *s
			l.Prefetch = append([]Prefetch(nil), s.Prefetch...)
			l.Body = cloneStmts(s.Body)
			out[i] = &l
		case *Block:
			b := *s
			b.Axes = append([]BlockAxis{}, s.Axes...)
			b.Binds = append([]Expr{}, s.Binds...)
			b.Index = append([]Expr{}, s.Index...)
			out[i] = &b
		}
	}
	return out
}

// String prints the nest in a readable, deterministic form.
func (n *Nest) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nest %s", n.Name)
	if len(n.Dims) > 0 {
		ds := make([]string, len(n.Dims))
		for i, d := range n.Dims {
			ds[i] = fmt.Sprintf("%s<=%d", d.Name, d.Extent)
		}
		fmt.Fprintf(&b, " dims(%s)", strings.Join(ds, ", "))
	}
	b.WriteString("\n")
	for _, p := range n.Params() {
		fmt.Fprintf(&b, "param %d %s: %s[%s]\n", p.Param, p.Name, p.DType, joinExprs(p.Shape))
	}
	n.printAllocs(&b, "", 0)
	printStmts(&b, n, n.Body, 0)
	return b.String()
}

func (n *Nest) printAllocs(b *strings.Builder, at string, depth int) {
	for _, buf := range n.Buffers {
		if buf.Param < 0 && buf.AllocAt == at {
			fmt.Fprintf(b, "%salloc %s: %s[%s] %s%s\n", strings.Repeat("  ", depth), buf.Name, buf.DType, joinExprs(buf.Shape), buf.Scope, buf.Layout)
		}
	}
}

func printStmts(b *strings.Builder, n *Nest, ss []Stmt, depth int) {
	ind := strings.Repeat("  ", depth)
	for _, s := range ss {
		switch s := s.(type) {
		case *Loop:
			kind := ""
			if s.Kind != Serial {
				kind = " " + s.Kind.String()
				if s.Kind == Bound {
					kind += "(" + s.Thread + ")"
				}
				if s.Kind == Tensorized {
					kind += "(" + s.Intrin + ")"
				}
			}
			for _, p := range s.Prefetch {
				kind += " " + p.String()
			}
			fmt.Fprintf(b, "%sfor %s in 0..%s%s:\n", ind, s.Name, s.Extent, kind)
			n.printAllocs(b, s.Name, depth+1)
			printStmts(b, n, s.Body, depth+1)
		case *Block:
			bs := make([]string, len(s.Axes))
			for i, a := range s.Axes {
				r := ""
				if a.Reduce {
					r = ":r"
				}
				bs[i] = fmt.Sprintf("%s%s=%s", a.Name, r, s.Binds[i])
			}
			init := ""
			if s.Init != nil {
				init = " init " + s.Init.String()
			}
			fmt.Fprintf(b, "%sblock %s(%s)%s:\n", ind, s.Name, strings.Join(bs, ", "), init)
			op := "="
			if s.Reduce {
				op = "+="
			}
			fmt.Fprintf(b, "%s  %s[%s] %s %s\n", ind, s.Buf, joinExprs(s.Index), op, s.Value)
		}
	}
}

// dimExpr is the extent expression of a definition dim.
func dimExpr(d *Def, dm Dim) Expr {
	if dm.Dynamic {
		return Dyn{Index: d.DimIndex(dm.Name), Name: dm.Name}
	}
	return Int{dm.Extent}
}

// Lower turns a definition into its unscheduled nest: one loop nest per
// stage, spatial loops outside reduction loops, loop names equal to axis
// names (suffixed _1, _2… when a later stage reuses a name).
func Lower(d *Def) (*Nest, error) {
	n := &Nest{Name: d.Name, Dims: append([]Dim{}, d.Dims...)}
	for i, t := range d.Params() {
		sh := make([]Expr, len(t.Shape))
		for j, dm := range t.Shape {
			sh[j] = dimExpr(d, dm)
		}
		n.Buffers = append(n.Buffers, &Buffer{Name: t.Name, DType: t.DType, Shape: sh, Scope: Global, Param: i})
	}
	for _, t := range d.Temps {
		sh := make([]Expr, len(t.Shape))
		for j, dm := range t.Shape {
			sh[j] = dimExpr(d, dm)
		}
		n.Buffers = append(n.Buffers, &Buffer{Name: t.Name, DType: t.DType, Shape: sh, Scope: Global, Param: -1})
	}
	used := map[string]bool{}
	loopName := func(axis string) string {
		name := axis
		for k := 1; used[name]; k++ {
			name = fmt.Sprintf("%s_%d", axis, k)
		}
		used[name] = true
		return name
	}
	dimsOf := func(e Expr) Expr {
		return Rewrite(e, func(x Expr) Expr {
			if ld, ok := x.(Load); ok {
				return Load{Buf: ld.Buf, Index: ld.Index}
			}
			return x
		})
	}
	axisNames := map[string]bool{}
	for _, st := range d.Stages {
		// Block axes are named v<axis> so that loop variables and block
		// axes never share a name: primitives substitute loop variables
		// everywhere inside a block without touching its axes.
		ren := map[string]Expr{}
		for _, ax := range append(append([]Axis{}, st.Axes...), st.RAxes...) {
			ren[ax.Name] = Var{"v" + ax.Name}
			axisNames["v"+ax.Name] = true
		}
		blk := &Block{Name: st.Out.Name, Buf: st.Out.Name, Value: Subst(dimsOf(st.Value), ren), Reduce: st.Reduce(), Init: st.Init}
		var loops []*Loop
		for _, ax := range append(append([]Axis{}, st.Axes...), st.RAxes...) {
			ext := dimExpr(d, ax.Dim)
			l := &Loop{Name: loopName(ax.Name), Extent: ext}
			loops = append(loops, l)
			blk.Axes = append(blk.Axes, BlockAxis{Name: "v" + ax.Name, Extent: ext, Reduce: len(blk.Axes) >= len(st.Axes)})
			blk.Binds = append(blk.Binds, Var{l.Name})
		}
		for _, ax := range st.Axes {
			blk.Index = append(blk.Index, Var{"v" + ax.Name})
		}
		var s Stmt = blk
		for i := len(loops) - 1; i >= 0; i-- {
			loops[i].Body = []Stmt{s}
			s = loops[i]
		}
		n.Body = append(n.Body, s)
	}
	for name := range used {
		if axisNames[name] || n.Buffer(name) != nil {
			return nil, fmt.Errorf("lower %s: loop name %s collides with a block axis or buffer; rename the axis", d.Name, name)
		}
	}
	return n, nil
}

// Must returns n or panics on err; for tests and examples with fixed,
// known-good definitions.
func Must(n *Nest, err error) *Nest {
	if err != nil {
		panic(err)
	}
	return n
}
