package schedule

import (
	"fmt"
	"sort"
	"strings"
)

// GPU-specific parts of the schedule language: cross-thread reductions
// (a reduction loop bound to threadIdx.*) and tensorize (a loop nest mapped
// to a tensor-core instruction).

// TensorIntrin describes a tensor-core instruction Tensorize can map a loop
// nest to: C[m, n] += A[m, k] · B[n, k] over an M×N×K tile, operands of
// dtype In, accumulator of dtype Acc.
type TensorIntrin struct {
	Name    string
	M, N, K int64
	In, Acc DType
}

// TensorIntrins lists the instructions Tensorize accepts.
var TensorIntrins = map[string]TensorIntrin{
	"mma_m16n8k16_bf16": {Name: "mma_m16n8k16_bf16", M: 16, N: 8, K: 16, In: BF16, Acc: F32},
}

// CrossThreadReduction returns the reduction block of l when l is a loop
// bound to a threadIdx axis whose iterations reduce into the same elements
// (the partial sums of an rfactor summed across threads), else nil.
func CrossThreadReduction(l *Loop) *Block {
	if l.Kind != Bound || !strings.HasPrefix(l.Thread, "threadIdx.") || len(l.Body) != 1 {
		return nil
	}
	b, ok := l.Body[0].(*Block)
	if !ok || !b.Reduce {
		return nil
	}
	for _, v := range ReductionOnlyVars(b) {
		if v == l.Name {
			return b
		}
	}
	return nil
}

// checkCrossThread is the legality of binding reduction loop l to a thread
// axis: it must directly hold one reduction block (so that every thread
// contributes one partial value) and have a constant power-of-two extent
// (the shuffle tree's width).
func checkCrossThread(l *Loop) error {
	if len(l.Body) != 1 {
		return illegal("bind", "reduction loop %s holds %d statements; a cross-thread reduction loop must directly hold its one reduction block", l.Name, len(l.Body))
	}
	b, ok := l.Body[0].(*Block)
	if !ok || !b.Reduce {
		return illegal("bind", "reduction loop %s must directly hold its reduction block to be bound to threads (rfactor, then bind the write-back's loop)", l.Name)
	}
	e, ok := l.Extent.(Int)
	if !ok || e.V < 2 || e.V > 1024 || e.V&(e.V-1) != 0 {
		return illegal("bind", "cross-thread reduction loop %s has extent %s (want a constant power of two in 2..1024)", l.Name, l.Extent)
	}
	return nil
}

// Tensorize maps the region under loop — exactly three perfectly nested
// loops of constant extents holding one reduction block C[m, n] += A[m, k]
// * B[n, k] — to the tensor-core instruction intrin (see TensorIntrins).
// The loops keep their meaning (the interpreter runs them as loops); the
// CUDA printer emits the instruction with its fragment loads for the whole
// warp, and the CPU printer rejects the nest. Legality: the extents match
// the instruction's M×N×K, A and B have the instruction's input dtype and
// live in shared or register scope, C is a register buffer of the
// accumulator dtype, and the reduction has no init (decompose it first).
func (s *Schedule) Tensorize(loop, intrin string) error {
	_, err := s.apply(Inst{Op: "tensorize", Args: []string{loop, intrin}}, func(n *Nest) ([]string, error) {
		return nil, tensorize(n, loop, intrin)
	})
	return err
}

// TensorRoles names the parts of a tensorized region.
type TensorRoles struct {
	Intrin  TensorIntrin
	MLoop   *Loop // walks C's rows and A's rows
	NLoop   *Loop // walks C's columns and B's rows
	KLoop   *Loop // the reduction
	Block   *Block
	A, B, C Load // operand loads and the accumulator (in block axes)
}

// TensorRegion checks a tensorized (or to-be-tensorized) loop and returns
// the roles of its loops and buffers.
func TensorRegion(n *Nest, l *Loop, intrin string) (*TensorRoles, error) {
	ti, ok := TensorIntrins[intrin]
	if !ok {
		names := make([]string, 0, len(TensorIntrins))
		for k := range TensorIntrins {
			names = append(names, k)
		}
		sort.Strings(names)
		return nil, illegal("tensorize", "unknown instruction %q (want one of %s)", intrin, strings.Join(names, ", "))
	}
	loops := []*Loop{l}
	cur := l
	for len(loops) < 3 {
		if len(cur.Body) != 1 {
			return nil, illegal("tensorize", "loop %s must hold exactly one loop (the region is three perfectly nested loops)", cur.Name)
		}
		nx, ok := cur.Body[0].(*Loop)
		if !ok {
			return nil, illegal("tensorize", "loop %s holds a block, not the next of three nested loops", cur.Name)
		}
		loops = append(loops, nx)
		cur = nx
	}
	if len(cur.Body) != 1 {
		return nil, illegal("tensorize", "innermost loop %s must hold exactly one block", cur.Name)
	}
	b, ok := cur.Body[0].(*Block)
	if !ok {
		return nil, illegal("tensorize", "innermost loop %s must hold a block, not a loop (four or more nested loops)", cur.Name)
	}
	for i, x := range loops {
		if i > 0 && x.Kind != Serial && x.Kind != Unrolled {
			return nil, illegal("tensorize", "loop %s is %s; the region's loops must be serial", x.Name, x.Kind)
		}
		if _, ok := x.Extent.(Int); !ok {
			return nil, illegal("tensorize", "loop %s has extent %s, not a constant (split with a divisor of the shape)", x.Name, x.Extent)
		}
	}
	if !b.Reduce {
		return nil, illegal("tensorize", "block %s is not a reduction", b.Name)
	}
	if b.Init != nil {
		return nil, illegal("tensorize", "block %s still has its init; decompose_reduction it first", b.Name)
	}
	mul, ok := b.Value.(Bin)
	la, okA := mul.A.(Load)
	lb, okB := mul.B.(Load)
	if !ok || mul.Op != OpMul || !okA || !okB {
		return nil, illegal("tensorize", "block %s computes %s, not a product of two loads", b.Name, b.Value)
	}
	m := bindMap(b)
	full := func(idx []Expr) []Expr {
		out := make([]Expr, len(idx))
		for i, e := range idx {
			out[i] = Simplify(Subst(e, m))
		}
		return out
	}
	cIdx := full(b.Index)
	if len(cIdx) != 2 {
		return nil, illegal("tensorize", "accumulator %s has rank %d, want 2", b.Buf, len(cIdx))
	}
	r := Ranges{}
	coef := func(idx []Expr, v string) []int64 {
		out := make([]int64, len(idx))
		for d, e := range idx {
			c, ok := r.Coeff(e, v)
			if !ok {
				c = -1 << 40
			}
			out[d] = c
		}
		return out
	}
	roles := &TensorRoles{Intrin: ti, Block: b, C: Load{Buf: b.Buf, Index: b.Index}}
	for _, x := range loops {
		c := coef(cIdx, x.Name)
		switch {
		case c[0] == 1 && c[1] == 0:
			roles.MLoop = x
		case c[0] == 0 && c[1] == 1:
			roles.NLoop = x
		case c[0] == 0 && c[1] == 0:
			roles.KLoop = x
		default:
			return nil, illegal("tensorize", "loop %s walks the accumulator %s with coefficients %v (want one loop per dimension, stride 1)", x.Name, b.Buf, c)
		}
	}
	if roles.MLoop == nil || roles.NLoop == nil || roles.KLoop == nil {
		return nil, illegal("tensorize", "loops %s, %s, %s do not walk rows, columns and the reduction of %s", loops[0].Name, loops[1].Name, loops[2].Name, b.Buf)
	}
	for _, want := range []struct {
		l   *Loop
		ext int64
		dim string
	}{{roles.MLoop, ti.M, "m"}, {roles.NLoop, ti.N, "n"}, {roles.KLoop, ti.K, "k"}} {
		if got := want.l.Extent.(Int).V; got != want.ext {
			return nil, illegal("tensorize", "%s needs %s extent %d, loop %s has %d", intrin, want.dim, want.ext, want.l.Name, got)
		}
	}
	uses := func(ld Load, v string) bool {
		for _, e := range full(ld.Index) {
			if UsesVar(e, v) {
				return true
			}
		}
		return false
	}
	for _, ld := range []Load{la, lb} {
		isA := uses(ld, roles.MLoop.Name) && !uses(ld, roles.NLoop.Name)
		isB := uses(ld, roles.NLoop.Name) && !uses(ld, roles.MLoop.Name)
		if !uses(ld, roles.KLoop.Name) || isA == isB {
			return nil, illegal("tensorize", "operand %s is not indexed by (m, k) or (n, k)", ld)
		}
		if isA {
			roles.A = ld
		} else {
			roles.B = ld
		}
	}
	for _, op := range []struct {
		ld  Load
		dt  DType
		ok  []Scope
		who string
	}{{roles.A, ti.In, []Scope{Shared, Register}, "operand A"}, {roles.B, ti.In, []Scope{Shared, Register}, "operand B"}, {roles.C, ti.Acc, []Scope{Register}, "accumulator"}} {
		buf := n.Buffer(op.ld.Buf)
		if buf == nil {
			return nil, illegal("tensorize", "no buffer %s", op.ld.Buf)
		}
		if buf.DType != op.dt {
			return nil, illegal("tensorize", "%s %s has dtype %s, %s needs %s", op.who, buf.Name, buf.DType, intrin, op.dt)
		}
		good := false
		for _, sc := range op.ok {
			good = good || buf.Scope == sc
		}
		if !good {
			return nil, illegal("tensorize", "%s %s is in %s scope (want %v; cache_read/cache_write it first)", op.who, buf.Name, buf.Scope, op.ok)
		}
	}
	return roles, nil
}

func tensorize(n *Nest, loop, intrin string) error {
	l, at, ok := n.findLoop(loop)
	if !ok {
		return illegal("tensorize", "no loop %q", loop)
	}
	if l.Kind != Serial && l.Kind != Unrolled {
		return illegal("tensorize", "loop %s is already %s", loop, l.Kind)
	}
	for _, a := range at.anc {
		if a.Kind == Tensorized {
			return illegal("tensorize", "loop %s is inside tensorized loop %s", loop, a.Name)
		}
		if a.Kind == Bound && a.Thread == "threadIdx.x" {
			return illegal("tensorize", "loop %s is inside loop %s bound to threadIdx.x; a tensorized region runs on a whole warp (threadIdx.x is its lane)", loop, a.Name)
		}
	}
	if _, err := TensorRegion(n, l, intrin); err != nil {
		return err
	}
	l.Kind, l.Intrin = Tensorized, intrin
	return nil
}

// String describes the roles, for error messages.
func (t *TensorRoles) String() string {
	return fmt.Sprintf("%s: m=%s n=%s k=%s A=%s B=%s C=%s", t.Intrin.Name, t.MLoop.Name, t.NLoop.Name, t.KLoop.Name, t.A.Buf, t.B.Buf, t.C.Buf)
}
