package cgen

import (
	"fmt"

	"llmir/schedule"
)

// Tensor-core printing. Fragment layout of mma.m16n8k16 (PTX ISA, "Matrix
// Fragments for mma.m16n8k16"): lane = 4·g + t; A registers a0..a3 hold
// A[g][2t..2t+1], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]; B registers
// b0, b1 hold B[k = 2t..2t+1][n = g], B[2t+8..][g]; C holds C[g][2t],
// C[g][2t+1], C[g+8][2t], C[g+8][2t+1].

func (g *gen) withLaneVars() func() {
	old := g.rg
	r := schedule.Ranges{Vars: map[string]schedule.Interval{}, Dims: old.Dims}
	for k, v := range old.Vars {
		r.Vars[k] = v
	}
	r.Vars["llmir_g"] = schedule.Interval{Lo: 0, Hi: 7}
	r.Vars["llmir_t"] = schedule.Interval{Lo: 0, Hi: 3}
	r.Vars["llmir_e"] = schedule.Interval{Lo: 0, Hi: 3}
	r.Vars["llmir_lr"] = schedule.Interval{Lo: 0, Hi: 15}
	r.Vars["llmir_lk"] = schedule.Interval{Lo: 0, Hi: 1}
	g.rg = r
	return func() { g.rg = old }
}

// elem is the raw (storage-typed) element of operand ld at the given loop
// values, with the offset used.
func (g *gen) elem(roles *schedule.TensorRoles, ld schedule.Load, m, n, k schedule.Expr) (schedule.Expr, error) {
	g.env = map[string]schedule.Expr{roles.MLoop.Name: m, roles.NLoop.Name: n, roles.KLoop.Name: k}
	defer func() { g.env = map[string]schedule.Expr{} }()
	b := roles.Block
	mp := map[string]schedule.Expr{}
	for i, a := range b.Axes {
		mp[a.Name] = b.Binds[i]
	}
	idx := make([]schedule.Expr, len(ld.Index))
	for d, e := range ld.Index {
		idx[d] = g.rg.Simplify(schedule.Subst(schedule.Subst(e, mp), g.env))
	}
	return g.offset(ld.Buf, idx)
}

// pair loads two bf16 of operand ld (lanes p and p+1 along k, or the two
// k of a B column) as one 32-bit register.
func (g *gen) pair(roles *schedule.TensorRoles, ld schedule.Load, m, n, k0 schedule.Expr) (string, error) {
	k1 := schedule.Add(k0, schedule.C(1))
	o0, err := g.elem(roles, ld, m, n, k0)
	if err != nil {
		return "", err
	}
	o1, err := g.elem(roles, ld, m, n, k1)
	if err != nil {
		return "", err
	}
	if d, ok := g.rg.Simplify(schedule.Sub(o1, o0)).(schedule.Int); ok && d.V == 1 && multipleOf(o0, 2) {
		return fmt.Sprintf("*reinterpret_cast<const uint32_t *>(&%s[%s])", ld.Buf, g.cInt(o0)), nil
	}
	return fmt.Sprintf("llmir_pack(%s[%s], %s[%s])", ld.Buf, g.cInt(o0), ld.Buf, g.cInt(o1)), nil
}

// ldmatrix returns the address expression of this lane's row for an
// ldmatrix of operand ld (rows at m or n = llmir_lr, k = 8·llmir_lk), or ""
// when ld is not in shared memory with 8 contiguous, 16-byte aligned k per
// row (then the fragments are loaded element-wise).
func (g *gen) ldmatrix(roles *schedule.TensorRoles, ld schedule.Load, m, n, k schedule.Expr) (string, error) {
	if g.n.Buffer(ld.Buf).Scope != schedule.Shared {
		return "", nil
	}
	o0, err := g.elem(roles, ld, m, n, k)
	if err != nil {
		return "", err
	}
	o7, err := g.elem(roles, ld, m, n, schedule.Add(k, schedule.C(7)))
	if err != nil {
		return "", err
	}
	if d, ok := g.rg.Simplify(schedule.Sub(o7, o0)).(schedule.Int); !ok || d.V != 7 || !multipleOf(o0, 8) {
		return "", nil
	}
	return fmt.Sprintf("&%s[%s]", ld.Buf, g.cInt(o0)), nil
}

func (g *gen) tensorized(l *schedule.Loop) error {
	roles, err := schedule.TensorRegion(g.n, l, l.Intrin)
	if err != nil {
		return err
	}
	if g.frag[roles.C.Buf] == nil {
		return g.errf("accumulator %s of %s is not an mma register tile", roles.C.Buf, l.Name)
	}
	restore := g.withLaneVars()
	defer restore()
	g.inMMA = true
	defer func() { g.inMMA = false }()
	gv, tv := schedule.V("llmir_g"), schedule.V("llmir_t")
	g8 := schedule.Add(gv, schedule.C(8))
	t2 := schedule.Mul(tv, schedule.C(2))
	t28 := schedule.Add(t2, schedule.C(8))
	zero := schedule.C(0)
	g.line("{ // %s", roles)
	g.depth++
	regs := []struct {
		name    string
		ld      schedule.Load
		m, n, k schedule.Expr
	}{
		{"a0", roles.A, gv, zero, t2}, {"a1", roles.A, g8, zero, t2}, {"a2", roles.A, gv, zero, t28}, {"a3", roles.A, g8, zero, t28},
		{"b0", roles.B, zero, gv, t2}, {"b1", roles.B, zero, gv, t28},
	}
	lr, lc := schedule.V("llmir_lr"), schedule.Mul(schedule.V("llmir_lk"), schedule.C(8))
	aLd, err := g.ldmatrix(roles, roles.A, lr, zero, lc)
	if err != nil {
		return err
	}
	bLd, err := g.ldmatrix(roles, roles.B, zero, lr, lc)
	if err != nil {
		return err
	}
	if aLd != "" {
		g.line("uint32_t llmir_a0, llmir_a1, llmir_a2, llmir_a3;")
		g.line("{ // ldmatrix.x4: lanes 0-15 address rows 0-15 at k 0, lanes 16-31 at k 8")
		g.line("  const int llmir_lr = threadIdx.x & 15, llmir_lk = threadIdx.x >> 4;")
		g.line("  llmir_ldmatrix_x4(llmir_a0, llmir_a1, llmir_a2, llmir_a3, %s);", aLd)
		g.line("}")
		regs = regs[4:]
	}
	if bLd != "" {
		g.line("uint32_t llmir_b0, llmir_b1;")
		g.line("{ // ldmatrix.x2: lanes 0-7 address columns 0-7 at k 0, lanes 8-15 at k 8")
		g.line("  const int llmir_lr = threadIdx.x & 7, llmir_lk = (threadIdx.x >> 3) & 1;")
		g.line("  llmir_ldmatrix_x2(llmir_b0, llmir_b1, %s);", bLd)
		g.line("}")
		regs = regs[:len(regs)-2]
	}
	for _, r := range regs {
		s, err := g.pair(roles, r.ld, r.m, r.n, r.k)
		if err != nil {
			return err
		}
		g.line("const uint32_t llmir_%s = %s;", r.name, s)
	}
	// The accumulator's fragment: its index at m = n = 0.
	g.env = map[string]schedule.Expr{roles.MLoop.Name: zero, roles.NLoop.Name: zero, roles.KLoop.Name: zero}
	in := g.instantiate(roles.Block)
	g.env = map[string]schedule.Expr{}
	c, err := g.fragRef(roles.C.Buf, in.Index, "", "", "0")
	if err != nil {
		return err
	}
	g.line("llmir_mma(&%s, llmir_a0, llmir_a1, llmir_a2, llmir_a3, llmir_b0, llmir_b1);", c)
	g.depth--
	g.line("}")
	return nil
}

// remapOf recognises a pair of loops over one 16×8 tile of an mma
// accumulator (its init or write-back): they are printed as the lane's
// four elements of the tile.
func (g *gen) remapOf(l *schedule.Loop) *remapCtx {
	if len(g.frag) == 0 || len(l.Body) != 1 {
		return nil
	}
	l2, ok := l.Body[0].(*schedule.Loop)
	if !ok || len(l2.Body) != 1 || (l2.Kind != schedule.Serial && l2.Kind != schedule.Unrolled) {
		return nil
	}
	b, ok := l2.Body[0].(*schedule.Block)
	if !ok {
		return nil
	}
	var fb string
	var idx []schedule.Expr
	in := g.instantiate(b)
	if g.frag[b.Buf] != nil {
		fb, idx = b.Buf, in.Index
	}
	schedule.Visit(in.Value, func(x schedule.Expr) {
		if ld, ok := x.(schedule.Load); ok && g.frag[ld.Buf] != nil {
			fb, idx = ld.Buf, ld.Index
		}
	})
	if fb == "" || len(idx) != 2 {
		return nil
	}
	coef := func(e schedule.Expr, v string) int64 {
		c, ok := g.rg.Coeff(e, v)
		if !ok {
			return -1
		}
		return c
	}
	rc := &remapCtx{buf: fb}
	for _, o := range [][2]*schedule.Loop{{l, l2}, {l2, l}} {
		if coef(idx[0], o[0].Name) == 1 && coef(idx[1], o[0].Name) == 0 && coef(idx[0], o[1].Name) == 0 && coef(idx[1], o[1].Name) == 1 {
			rc.mv, rc.nv = o[0].Name, o[1].Name
		}
	}
	if rc.mv == "" {
		return nil
	}
	r := g.rg
	bm, ok1 := r.Bound(g.loops[rc.mv].Extent)
	if ok1 {
		g.rg = ranges(g.n, append(append([]*schedule.Loop{}, g.anc[l.Name]...), l))
	}
	bn, ok2 := g.rg.Bound(g.loops[rc.nv].Extent)
	g.rg = r
	if !ok1 || !ok2 || bm.Hi != 16 || bn.Hi != 8 {
		return nil
	}
	return rc
}

func (g *gen) remapLoop(l *schedule.Loop, rc *remapCtx) error {
	ml, nl := g.loops[rc.mv], g.loops[rc.nv]
	l2 := l.Body[0].(*schedule.Loop)
	b := l2.Body[0].(*schedule.Block)
	restore := g.withLaneVars()
	defer restore()
	g.rg.Vars[rc.mv] = schedule.Interval{Lo: 0, Hi: 15}
	g.rg.Vars[rc.nv] = schedule.Interval{Lo: 0, Hi: 7}
	me, ne := g.rg.Simplify(ml.Extent), g.rg.Simplify(nl.Extent)
	g.line("#pragma unroll")
	g.line("for (int llmir_e = 0; llmir_e < 4; ++llmir_e) { // %s × %s: this lane's 4 elements of a 16×8 tile of %s", ml.Name, nl.Name, rc.buf)
	g.depth++
	g.line("const int %s = llmir_g + (llmir_e >> 1) * 8, %s = 2 * llmir_t + (llmir_e & 1); (void)%s; (void)%s;", rc.mv, rc.nv, rc.mv, rc.nv)
	var conds []string
	if c, ok := me.(schedule.Int); !ok || c.V != 16 {
		conds = append(conds, fmt.Sprintf("%s < %s", rc.mv, g.cInt(me)))
	}
	if c, ok := ne.(schedule.Int); !ok || c.V != 8 {
		conds = append(conds, fmt.Sprintf("%s < %s", rc.nv, g.cInt(ne)))
	}
	if len(conds) > 0 {
		g.line("if (%s) {", joinAnd(conds))
		g.depth++
	}
	g.remap = rc
	err := g.blockStmt(b)
	g.remap = nil
	if err != nil {
		return err
	}
	if len(conds) > 0 {
		g.depth--
		g.line("}")
	}
	g.depth--
	g.line("}")
	return nil
}

func joinAnd(cs []string) string {
	out := cs[0]
	for _, c := range cs[1:] {
		out += " && " + c
	}
	return out
}
