package cgen

import (
	"fmt"

	"llmir/schedule"
)

// splitLane writes e as rest + coef·v with rest free of v. Floor division
// and modulo by a multiple of V open up when their operand is a multiple of
// V plus v: that is what keeps a fused-then-split copy loop contiguous.
func splitLane(e schedule.Expr, v string, V int64) (schedule.Expr, int64, bool) {
	if !schedule.UsesVar(e, v) {
		return e, 0, true
	}
	switch x := e.(type) {
	case schedule.Var:
		return schedule.C(0), 1, true
	case schedule.Bin:
		switch x.Op {
		case schedule.OpAdd, schedule.OpSub:
			ar, ac, ok1 := splitLane(x.A, v, V)
			br, bc, ok2 := splitLane(x.B, v, V)
			if !ok1 || !ok2 {
				return nil, 0, false
			}
			if x.Op == schedule.OpSub {
				return schedule.Sub(ar, br), ac - bc, true
			}
			return schedule.Add(ar, br), ac + bc, true
		case schedule.OpMul:
			if c, ok := x.B.(schedule.Int); ok {
				r, k, ok := splitLane(x.A, v, V)
				return schedule.Mul(r, c), k * c.V, ok
			}
			if c, ok := x.A.(schedule.Int); ok {
				r, k, ok := splitLane(x.B, v, V)
				return schedule.Mul(c, r), k * c.V, ok
			}
		case schedule.OpFloorDiv, schedule.OpMod:
			c, ok := x.B.(schedule.Int)
			if !ok || c.V%V != 0 {
				return nil, 0, false
			}
			r, k, ok := splitLane(x.A, v, V)
			if !ok || k != 1 || !multipleOf(r, V) {
				return nil, 0, false
			}
			if x.Op == schedule.OpFloorDiv {
				return schedule.FloorDiv(r, c), 0, true
			}
			return schedule.Mod(r, c), 1, true
		}
	}
	return nil, 0, false
}

// multipleOf reports whether e is provably a multiple of V.
func multipleOf(e schedule.Expr, V int64) bool {
	switch x := e.(type) {
	case schedule.Int:
		return x.V%V == 0
	case schedule.Bin:
		switch x.Op {
		case schedule.OpAdd, schedule.OpSub, schedule.OpMin, schedule.OpMax:
			return multipleOf(x.A, V) && multipleOf(x.B, V)
		case schedule.OpMul:
			return multipleOf(x.A, V) || multipleOf(x.B, V)
		case schedule.OpMod:
			c, ok := x.B.(schedule.Int)
			return ok && c.V%V == 0 && multipleOf(x.A, V)
		}
	}
	return false
}

// contiguous returns the lane-0 offset of off when lanes v = 0..V-1 touch
// V consecutive, V-aligned elements.
func contiguous(off schedule.Expr, v string, V int64) (schedule.Expr, bool) {
	r, c, ok := splitLane(off, v, V)
	if !ok || c != 1 || !multipleOf(schedule.Simplify(r), V) && !multipleOf(r, V) {
		return nil, false
	}
	return r, true
}

func vecType(bytes int64) string {
	switch bytes {
	case 16:
		return "uint4"
	case 8:
		return "uint2"
	case 4:
		return "uint32_t"
	}
	return ""
}

// vector prints a vectorized loop: where the store and the loads are
// contiguous and aligned, 16-byte (or 8-, 4-byte) accesses with the
// arithmetic on per-lane registers; otherwise, and for the tail of a
// bounded extent, a scalar loop.
func (g *gen) vector(l *schedule.Loop, ext schedule.Expr, V int64) error {
	for _, s := range l.Body {
		b, ok := s.(*schedule.Block)
		if !ok {
			return g.errf("vectorized loop %s holds a loop", l.Name)
		}
		if err := g.vectorBlock(l, b, ext, V); err != nil {
			return err
		}
	}
	return nil
}

func (g *gen) scalarLoop(l *schedule.Loop, b *schedule.Block, ext schedule.Expr) error {
	g.line("for (int %s = 0; %s < %s; ++%s) {", l.Name, l.Name, g.cInt(ext), l.Name)
	g.depth++
	if err := g.blockStmt(b); err != nil {
		return err
	}
	g.depth--
	g.line("}")
	return nil
}

func (g *gen) vectorBlock(l *schedule.Loop, b *schedule.Block, ext schedule.Expr, V int64) error {
	in := g.instantiate(b)
	dbuf := g.n.Buffer(b.Buf)
	dstOff, err := g.offset(b.Buf, in.Index)
	if err != nil {
		return err
	}
	dstBase, ok := contiguous(dstOff, l.Name, V)
	vt := vecType(V * dbuf.DType.Size())
	if !ok || b.Reduce || vt == "" || V < 2 {
		g.line("// %s: scalar (not a contiguous, aligned %d-lane store)", l.Name, V)
		return g.scalarLoop(l, b, ext)
	}
	full := false
	if c, ok := ext.(schedule.Int); ok && c.V == V {
		full = true
	}
	if !full {
		g.line("if (%s == %d) {", g.cInt(ext), V)
		g.depth++
	}
	g.line("// %s: %d lanes, %d-byte accesses", l.Name, V, V*dbuf.DType.Size())
	// Loads that are contiguous become vector loads into lane arrays.
	sub := map[string]string{}
	var loadErr error
	k := 0
	pure := ""
	schedule.Visit(in.Value, func(x schedule.Expr) {
		ld, ok := x.(schedule.Load)
		if !ok || loadErr != nil {
			return
		}
		if _, done := sub[ld.String()]; done {
			return
		}
		sb := g.n.Buffer(ld.Buf)
		off, err := g.offset(ld.Buf, ld.Index)
		if err != nil {
			loadErr = err
			return
		}
		if !schedule.UsesVar(off, l.Name) {
			return
		}
		base, ok := contiguous(off, l.Name, V)
		if !ok || vecType(V*sb.DType.Size()) == "" {
			return
		}
		vlt := vecType(V * sb.DType.Size())
		if in.Value.String() == ld.String() && sb.DType == dbuf.DType {
			pure = fmt.Sprintf("*reinterpret_cast<const %s *>(&%s[%s])", vlt, ld.Buf, g.cInt(base))
			return
		}
		name := fmt.Sprintf("llmir_l%d", k)
		k++
		g.line("__align__(16) %s %s[%d];", cType(sb.DType), name, V)
		g.line("*reinterpret_cast<%s *>(%s) = *reinterpret_cast<const %s *>(&%s[%s]);", vlt, name, vlt, ld.Buf, g.cInt(base))
		sub[ld.String()] = g.load(ld.Buf, name+"["+l.Name+"]")
	})
	if loadErr != nil {
		return loadErr
	}
	dst := fmt.Sprintf("&%s[%s]", b.Buf, g.cInt(dstBase))
	if pure != "" {
		g.line("*reinterpret_cast<%s *>(%s) = %s;", vt, dst, pure)
	} else {
		val, err := g.cFloatWith(in.Value, sub)
		if err != nil {
			return err
		}
		g.line("__align__(16) %s llmir_o[%d];", cType(dbuf.DType), V)
		g.line("#pragma unroll")
		g.line("for (int %s = 0; %s < %d; ++%s) llmir_o[%s] = %s;", l.Name, l.Name, V, l.Name, l.Name, g.store(b.Buf, val))
		g.line("*reinterpret_cast<%s *>(%s) = *reinterpret_cast<const %s *>(llmir_o);", vt, dst, vt)
	}
	if !full {
		g.depth--
		g.line("} else {")
		g.depth++
		if err := g.scalarLoop(l, b, ext); err != nil {
			return err
		}
		g.depth--
		g.line("}")
	}
	return nil
}
