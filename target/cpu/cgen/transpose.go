package cgen

import (
	"fmt"
	"strings"

	"llmir/schedule"
)

// transposeCopy prints a copy nest whose source is contiguous in the inner
// loop and whose destination is contiguous in the outer one — the pack of
// w into [N/NR][K][NR] panels, or of a into [KC][MR], by cache_read with a
// layout — as lanes×lanes register transposes: lanes vector loads,
// log2(lanes) rounds of two-source shuffles, lanes vector stores, where the
// plain nest costs a scalar load and a store to a different cache line per
// element (the two packs of the prefill GEMM took ~20% of its time that
// way; BLIS's packing routines transpose in registers too). The outer
// extent may have a tail (min(MR, M - i·MR)): the rows past it are not
// loaded and their lanes not stored. It reports false, printing nothing,
// when the nest is not that shape.
func (g *gen) transposeCopy(l *schedule.Loop, ext0 schedule.Expr) bool {
	L := g.lanes
	if L < 4 || len(l.Body) != 1 || len(l.Prefetch) > 0 {
		return false
	}
	in, ok := l.Body[0].(*schedule.Loop)
	if !ok || in.Kind != schedule.Serial || len(in.Body) != 1 || len(in.Prefetch) > 0 {
		return false
	}
	b, ok := in.Body[0].(*schedule.Block)
	if !ok || b.Reduce {
		return false
	}
	for _, buf := range g.n.Buffers {
		if buf.Param < 0 && (buf.AllocAt == l.Name || buf.AllocAt == in.Name) {
			return false
		}
	}
	ext1 := g.simplify(in.Extent)
	if len(g.pin) > 0 {
		ext1 = g.rg.Simplify(g.pinned(ext1))
	}
	c1, ok := ext1.(schedule.Int)
	if !ok || c1.V < L || c1.V%L != 0 {
		return false
	}
	iv0, ok := g.rg.Bound(ext0)
	if !ok || iv0.Hi < 2 {
		return false
	}
	u, v := l.Name, in.Name
	g.enterVar(u, ext0)
	g.enterVar(v, ext1)
	defer delete(g.rg.Vars, v)
	inst := g.instantiate(b)
	ld, ok := inst.value.(schedule.Load)
	if !ok {
		return false
	}
	src, dst := g.resolve(ld.Buf, ld.Index), g.resolve(b.Buf, inst.index)
	if !vecType(src.buf.DType) || dst.buf.DType != schedule.F32 || g.regOf(src.buf.Name) != nil || g.regOf(dst.buf.Name) != nil {
		return false
	}
	if src.buf == dst.buf || g.stride(src, v) != 1 || g.stride(dst, v) == 1 || !g.runs(dst, u) {
		return false
	}
	g.transpose = true
	// Full: every run of the outer loop is lanes long. Otherwise the last
	// (or only) run is n < lanes rows; full is the longest run.
	c0, isConst := ext0.(schedule.Int)
	whole := isConst && c0.V%L == 0
	full := min(L, iv0.Hi)
	// at prints the address of r's element at (u+du, v+dv); r was resolved
	// with u and v free.
	at := func(r ref, du, dv int64) string {
		off := schedule.Subst(g.offset(r), map[string]schedule.Expr{
			u: schedule.Add(schedule.V(u), schedule.C(du)), v: schedule.Add(schedule.V(v), schedule.C(dv))})
		return fmt.Sprintf("&%s[%s]", r.buf.Name, g.cInt(g.rg.Simplify(off)))
	}
	g.line("for (int64_t %s = 0; %s < %s; %s += %d) { // %s×%s copy as %d×%d register transposes", u, u, g.cInt(ext0), u, L, u, v, L, L)
	g.ind++
	if !whole {
		g.line("const int64_t %s_n = llmir_min(%d, %s - %s);", u, L, g.cInt(ext0), u)
	}
	g.line("for (int64_t %s = 0; %s < %d; %s += %d) {", v, v, c1.V, v, L)
	g.ind++
	g.line("llmir_vf llmir_t[%d];", L)
	load, _ := g.vecMem(src.buf.DType)
	for q := range L {
		if whole {
			g.line("llmir_t[%d] = %s(%s);", q, load, at(src, q, 0))
		} else {
			g.line("llmir_t[%d] = %d < %s_n ? %s(%s) : llmir_splat(0.0f);", q, q, u, load, at(src, q, 0))
		}
	}
	g.line("llmir_transpose(llmir_t);")
	for q := range L {
		p := at(dst, 0, q)
		switch {
		case whole:
			g.line("llmir_vstore(%s, llmir_t[%d]);", p, q)
		case full == L:
			g.line("if (%s_n == %d) llmir_vstore(%s, llmir_t[%d]); else for (int64_t llmir_e = 0; llmir_e < %s_n; llmir_e++) (%s)[llmir_e] = llmir_t[%d][llmir_e];", u, L, p, q, u, p, q)
		default:
			g.line("if (%s_n == %d) __builtin_memcpy(%s, &llmir_t[%d], %d); else for (int64_t llmir_e = 0; llmir_e < %s_n; llmir_e++) (%s)[llmir_e] = llmir_t[%d][llmir_e];", u, full, p, q, 4*full, u, p, q)
		}
	}
	g.ind--
	g.line("}")
	g.ind--
	g.line("}")
	return true
}

// runs reports whether r is contiguous over aligned runs of lanes values
// of u: u enters the last physical index as u or u % T, and any index as
// u / T, with T a multiple of the lanes (a panel layout's tile), so that
// from u0 = 0, lanes, 2·lanes, … the lanes elements u0..u0+lanes-1 are
// adjacent.
func (g *gen) runs(r ref, u string) bool {
	last := len(r.phys) - 1
	aligned := func(t schedule.Expr) bool {
		c, ok := t.(schedule.Int)
		return ok && c.V > 0 && c.V%g.lanes == 0
	}
	// rewrite drops u / T (constant over a run) and, in the last index,
	// turns u % T into u; bad marks any other use of u inside a div or mod.
	bad := false
	var rewrite func(e schedule.Expr, lastDim bool) schedule.Expr
	rewrite = func(e schedule.Expr, lastDim bool) schedule.Expr {
		x, ok := e.(schedule.Bin)
		if !ok {
			return e
		}
		if vu, isVar := x.A.(schedule.Var); isVar && vu.Name == u {
			switch {
			case x.Op == schedule.OpFloorDiv && aligned(x.B):
				return schedule.C(0)
			case x.Op == schedule.OpMod && aligned(x.B) && lastDim:
				return schedule.V(u)
			}
		}
		if (x.Op == schedule.OpFloorDiv || x.Op == schedule.OpMod) && schedule.UsesVar(x, u) {
			bad = true
		}
		return schedule.Bin{Op: x.Op, A: rewrite(x.A, lastDim), B: rewrite(x.B, lastDim)}
	}
	for d, e := range r.phys {
		e = rewrite(e, d == last)
		if bad {
			return false
		}
		c, ok := g.rg.Coeff(e, u)
		if !ok || (d < last && c != 0) || (d == last && c != 1) {
			return false
		}
	}
	return true
}

// transposeC is llmir_transpose for vectors of the given lanes: r[i][j]
// becomes r[j][i], in log2(lanes) rounds; round b pairs rows i and i+b
// (i with bit b clear) and interleaves their elements in blocks of b.
func transposeC(lanes int64) string {
	var s strings.Builder
	fmt.Fprintf(&s, "typedef int32_t llmir_vi __attribute__((vector_size(%d)));\n", lanes*4)
	s.WriteString("static inline void llmir_transpose(llmir_vf *r) {\n")
	mask := func(b int64, hi bool) string {
		el := make([]string, lanes)
		for p := range lanes {
			first := (p/b)%2 == 0
			var x int64
			switch {
			case first && !hi:
				x = p
			case !first && !hi:
				x = lanes + p - b
			case first && hi:
				x = p + b
			default:
				x = lanes + p
			}
			el[p] = fmt.Sprint(x)
		}
		return "(llmir_vi){" + strings.Join(el, ", ") + "}"
	}
	for b := int64(1); b < lanes; b *= 2 {
		lo, hi := mask(b, false), mask(b, true)
		for i := range lanes {
			if i&b != 0 {
				continue
			}
			fmt.Fprintf(&s, "  { llmir_vf x = __builtin_shuffle(r[%d], r[%d], %s), y = __builtin_shuffle(r[%d], r[%d], %s); r[%d] = x; r[%d] = y; }\n",
				i, i+b, lo, i, i+b, hi, i, i+b)
		}
	}
	s.WriteString("}\n")
	return s.String()
}
