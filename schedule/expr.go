package schedule

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Expr is an index or value expression. Expressions are immutable values:
// every transformation builds new nodes, so nests can share subtrees safely.
type Expr interface {
	String() string
	exprNode()
}

// Int is an integer constant (indices, extents).
type Int struct{ V int64 }

// Float is a floating-point constant (values).
type Float struct{ V float64 }

// Var is a loop variable or a block/stage axis variable, by name.
type Var struct{ Name string }

// Dyn is the runtime extent of dynamic dimension Index (dims[Index] in the ABI).
type Dyn struct {
	Index int
	Name  string
}

// Op is a binary operator.
type Op int

// Binary operators. FloorDiv and Mod are only used on non-negative indices.
const (
	OpAdd Op = iota
	OpSub
	OpMul
	OpDiv // floating-point division
	OpFloorDiv
	OpMod
	OpMin
	OpMax
)

var opNames = [...]string{"+", "-", "*", "/", "//", "%", "min", "max"}

func (o Op) String() string { return opNames[o] }

// Bin is a binary operation.
type Bin struct {
	Op   Op
	A, B Expr
}

// Call applies an element-wise function (see Funcs) to float arguments.
type Call struct {
	Fn   string
	Args []Expr
}

// Load reads one element of a buffer (a tensor in a definition).
type Load struct {
	Buf   string
	Index []Expr
	t     *Tensor // set by Tensor.At so that NewDef can find producers
}

// Reduce is a reduction; it appears only at the top of a stage body in a
// definition and is lowered to a block with reduction axes.
type Reduce struct {
	Axes []Axis
	Body Expr
}

func (Int) exprNode()    {}
func (Float) exprNode()  {}
func (Var) exprNode()    {}
func (Dyn) exprNode()    {}
func (Bin) exprNode()    {}
func (Call) exprNode()   {}
func (Load) exprNode()   {}
func (Reduce) exprNode() {}

func (e Int) String() string { return strconv.FormatInt(e.V, 10) }
func (e Float) String() string {
	s := strconv.FormatFloat(e.V, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEnI") {
		s += ".0"
	}
	return s
}
func (e Var) String() string { return e.Name }
func (e Dyn) String() string { return e.Name }
func (e Bin) String() string {
	switch e.Op {
	case OpMin, OpMax:
		return fmt.Sprintf("%s(%s, %s)", e.Op, e.A, e.B)
	}
	return fmt.Sprintf("%s %s %s", paren(e.A, e.Op, false), e.Op, paren(e.B, e.Op, true))
}
func (e Call) String() string { return e.Fn + "(" + joinExprs(e.Args) + ")" }
func (e Load) String() string { return e.Buf + "[" + joinExprs(e.Index) + "]" }
func (e Reduce) String() string {
	names := make([]string, len(e.Axes))
	for i, a := range e.Axes {
		names[i] = a.Name
	}
	return "sum(" + strings.Join(names, ", ") + ", " + e.Body.String() + ")"
}

func prec(o Op) int {
	switch o {
	case OpAdd, OpSub:
		return 1
	case OpMul, OpDiv, OpFloorDiv, OpMod:
		return 2
	}
	return 3
}

// paren prints a child of a binary node, adding parentheses where the
// precedence (or the non-associativity of the right operand) needs them.
func paren(e Expr, parent Op, right bool) string {
	b, ok := e.(Bin)
	if !ok || b.Op == OpMin || b.Op == OpMax {
		return e.String()
	}
	if prec(b.Op) < prec(parent) || (right && prec(b.Op) == prec(parent) && parent != OpAdd && parent != OpMul) ||
		(right && prec(b.Op) == prec(parent) && b.Op != parent) {
		return "(" + e.String() + ")"
	}
	return e.String()
}

func joinExprs(es []Expr) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.String()
	}
	return strings.Join(s, ", ")
}

// Convenience constructors used by definitions and by the primitives.

// C returns an integer constant.
func C(v int64) Expr { return Int{v} }

// F returns a float constant.
func F(v float64) Expr { return Float{v} }

// V returns a variable reference.
func V(name string) Expr { return Var{name} }

// Add returns a + b.
func Add(a, b Expr) Expr { return Bin{OpAdd, a, b} }

// Sub returns a - b.
func Sub(a, b Expr) Expr { return Bin{OpSub, a, b} }

// Mul returns a * b.
func Mul(a, b Expr) Expr { return Bin{OpMul, a, b} }

// Div returns the float quotient a / b.
func Div(a, b Expr) Expr { return Bin{OpDiv, a, b} }

// FloorDiv returns a // b for non-negative integers.
func FloorDiv(a, b Expr) Expr { return Bin{OpFloorDiv, a, b} }

// Mod returns a % b for non-negative integers.
func Mod(a, b Expr) Expr { return Bin{OpMod, a, b} }

// Min returns min(a, b).
func Min(a, b Expr) Expr { return Bin{OpMin, a, b} }

// Max returns max(a, b).
func Max(a, b Expr) Expr { return Bin{OpMax, a, b} }

// Fn applies an element-wise function from Funcs.
func Fn(name string, args ...Expr) Expr { return Call{Fn: name, Args: args} }

// Func is an element-wise function: its Go meaning (for the interpreter) and
// its C spelling (for the code generator, with %s for each argument).
type Func struct {
	Arity int
	Go    func(x []float64) float64
	C     string
}

// Funcs lists the element-wise functions epilogues may use.
var Funcs = map[string]Func{
	"exp":     {1, func(x []float64) float64 { return math.Exp(x[0]) }, "expf(%s)"},
	"tanh":    {1, func(x []float64) float64 { return math.Tanh(x[0]) }, "tanhf(%s)"},
	"sqrt":    {1, func(x []float64) float64 { return math.Sqrt(x[0]) }, "sqrtf(%s)"},
	"rsqrt":   {1, func(x []float64) float64 { return 1 / math.Sqrt(x[0]) }, "(1.0f / sqrtf(%s))"},
	"relu":    {1, func(x []float64) float64 { return math.Max(x[0], 0) }, "fmaxf(%s, 0.0f)"},
	"sigmoid": {1, func(x []float64) float64 { return 1 / (1 + math.Exp(-x[0])) }, "(1.0f / (1.0f + expf(-(%s))))"},
	"silu":    {1, func(x []float64) float64 { return x[0] / (1 + math.Exp(-x[0])) }, "llmir_silu(%s)"},
}

// isFloat reports whether e has a floating-point value (else it is an index).
func isFloat(e Expr) bool {
	switch e := e.(type) {
	case Float, Load, Call, Reduce:
		return true
	case Bin:
		return e.Op == OpDiv || isFloat(e.A) || isFloat(e.B)
	}
	return false
}

// Rewrite applies f bottom-up to every node of e.
func Rewrite(e Expr, f func(Expr) Expr) Expr {
	switch x := e.(type) {
	case Bin:
		return f(Bin{x.Op, Rewrite(x.A, f), Rewrite(x.B, f)})
	case Call:
		args := make([]Expr, len(x.Args))
		for i, a := range x.Args {
			args[i] = Rewrite(a, f)
		}
		return f(Call{Fn: x.Fn, Args: args})
	case Load:
		idx := make([]Expr, len(x.Index))
		for i, a := range x.Index {
			idx[i] = Rewrite(a, f)
		}
		return f(Load{Buf: x.Buf, Index: idx, t: x.t})
	case Reduce:
		return f(Reduce{Axes: x.Axes, Body: Rewrite(x.Body, f)})
	}
	return f(e)
}

// Subst replaces variables by expressions.
func Subst(e Expr, m map[string]Expr) Expr {
	if len(m) == 0 {
		return e
	}
	return Rewrite(e, func(x Expr) Expr {
		if v, ok := x.(Var); ok {
			if r, ok := m[v.Name]; ok {
				return r
			}
		}
		return x
	})
}

// Visit calls f on every node of e, parents first.
func Visit(e Expr, f func(Expr)) {
	f(e)
	switch x := e.(type) {
	case Bin:
		Visit(x.A, f)
		Visit(x.B, f)
	case Call:
		for _, a := range x.Args {
			Visit(a, f)
		}
	case Load:
		for _, a := range x.Index {
			Visit(a, f)
		}
	case Reduce:
		Visit(x.Body, f)
	}
}

// UsesVar reports whether e mentions variable name.
func UsesVar(e Expr, name string) bool {
	found := false
	Visit(e, func(x Expr) {
		if v, ok := x.(Var); ok && v.Name == name {
			found = true
		}
	})
	return found
}

// Vars returns the variables e mentions, sorted.
func Vars(e Expr) []string {
	set := map[string]bool{}
	Visit(e, func(x Expr) {
		if v, ok := x.(Var); ok {
			set[v.Name] = true
		}
	})
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Interval is a closed integer range.
type Interval struct{ Lo, Hi int64 }

// Ranges gives the value range of each loop variable; dynamic dims range over
// [0, bucket].
type Ranges struct {
	Vars map[string]Interval
	Dims map[int]int64 // dyn index -> bucket
}

// Bound returns a conservative integer range of index expression e.
func (r Ranges) Bound(e Expr) (Interval, bool) {
	switch x := e.(type) {
	case Int:
		return Interval{x.V, x.V}, true
	case Var:
		iv, ok := r.Vars[x.Name]
		return iv, ok
	case Dyn:
		b, ok := r.Dims[x.Index]
		return Interval{0, b}, ok
	case Bin:
		a, ok1 := r.Bound(x.A)
		b, ok2 := r.Bound(x.B)
		if !ok1 || !ok2 {
			return Interval{}, false
		}
		switch x.Op {
		case OpAdd:
			return Interval{a.Lo + b.Lo, a.Hi + b.Hi}, true
		case OpSub:
			return Interval{a.Lo - b.Hi, a.Hi - b.Lo}, true
		case OpMul:
			c := []int64{a.Lo * b.Lo, a.Lo * b.Hi, a.Hi * b.Lo, a.Hi * b.Hi}
			iv := Interval{c[0], c[0]}
			for _, v := range c[1:] {
				iv.Lo, iv.Hi = min(iv.Lo, v), max(iv.Hi, v)
			}
			return iv, true
		case OpFloorDiv:
			if b.Lo == b.Hi && b.Lo > 0 {
				return Interval{floorDiv(a.Lo, b.Lo), floorDiv(a.Hi, b.Lo)}, true
			}
			if b.Lo > 0 && a.Lo >= 0 {
				return Interval{0, a.Hi / b.Lo}, true
			}
		case OpMod:
			if b.Lo == b.Hi && b.Lo > 0 {
				if a.Lo >= 0 && a.Hi < b.Lo {
					return a, true
				}
				return Interval{0, b.Lo - 1}, true
			}
			if b.Lo > 0 {
				return Interval{0, b.Hi - 1}, true
			}
		case OpMin:
			return Interval{min(a.Lo, b.Lo), min(a.Hi, b.Hi)}, true
		case OpMax:
			return Interval{max(a.Lo, b.Lo), max(a.Hi, b.Hi)}, true
		}
	}
	return Interval{}, false
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// lin is an integer expression in canonical linear form: Const plus a sum of
// coefficient × atom, where an atom is a variable, a dynamic dim, or an
// expression the simplifier could not open (keyed by its printed form).
type lin struct {
	Const int64
	Terms map[string]int64
	Atoms map[string]Expr
}

func newLin(c int64) lin { return lin{Const: c, Terms: map[string]int64{}, Atoms: map[string]Expr{}} }

func atomLin(e Expr) lin {
	l := newLin(0)
	k := e.String()
	l.Terms[k] = 1
	l.Atoms[k] = e
	return l
}

func (l lin) add(m lin, scale int64) lin {
	r := newLin(l.Const + scale*m.Const)
	for k, c := range l.Terms {
		r.Terms[k] = c
		r.Atoms[k] = l.Atoms[k]
	}
	for k, c := range m.Terms {
		r.Terms[k] += scale * c
		r.Atoms[k] = m.Atoms[k]
		if r.Terms[k] == 0 {
			delete(r.Terms, k)
			delete(r.Atoms, k)
		}
	}
	return r
}

func (l lin) isConst() bool { return len(l.Terms) == 0 }

// expr turns the linear form back into an expression: terms by descending
// coefficient then name, constant last, so printing is deterministic.
func (l lin) expr() Expr {
	keys := make([]string, 0, len(l.Terms))
	for k := range l.Terms {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		ci, cj := l.Terms[keys[i]], l.Terms[keys[j]]
		if ci != cj {
			return ci > cj
		}
		return keys[i] < keys[j]
	})
	term := func(k string, c int64) Expr {
		if c == 1 {
			return l.Atoms[k]
		}
		return Bin{OpMul, l.Atoms[k], Int{c}}
	}
	var e Expr
	c := l.Const
	for _, k := range keys {
		if l.Terms[k] > 0 {
			if e == nil {
				e = term(k, l.Terms[k])
			} else {
				e = Bin{OpAdd, e, term(k, l.Terms[k])}
			}
		}
	}
	if e == nil && c > 0 {
		e, c = Int{c}, 0
	}
	for i := len(keys) - 1; i >= 0; i-- {
		k := keys[i]
		if l.Terms[k] < 0 {
			if e == nil {
				e = Bin{OpMul, l.Atoms[k], Int{l.Terms[k]}}
			} else {
				e = Bin{OpSub, e, term(k, -l.Terms[k])}
			}
		}
	}
	switch {
	case e == nil:
		return Int{c}
	case c > 0:
		return Bin{OpAdd, e, Int{c}}
	case c < 0:
		return Bin{OpSub, e, Int{-c}}
	}
	return e
}

// Simplify canonicalises an integer expression using the value ranges of
// its variables: constants fold, sums become linear forms, and floordiv/mod
// by a constant open up when the range proves the remainder small (this is
// what turns packed-layout indices back into plain loop variables), and
// min/max fold when the ranges decide them. Float expressions are simplified
// inside (their indices) but not reassociated.
func (r Ranges) Simplify(e Expr) Expr {
	if isFloat(e) {
		return Rewrite(e, func(x Expr) Expr {
			if ld, ok := x.(Load); ok {
				idx := make([]Expr, len(ld.Index))
				for i, ix := range ld.Index {
					idx[i] = r.Simplify(ix)
				}
				return Load{Buf: ld.Buf, Index: idx, t: ld.t}
			}
			return x
		})
	}
	return r.toLin(e).expr()
}

func (r Ranges) toLin(e Expr) lin {
	switch x := e.(type) {
	case Int:
		return newLin(x.V)
	case Var, Dyn:
		return atomLin(x)
	case Bin:
		a := r.toLin(x.A)
		b := r.toLin(x.B)
		switch x.Op {
		case OpAdd:
			return r.recombine(a.add(b, 1))
		case OpSub:
			return r.recombine(a.add(b, -1))
		case OpMul:
			if a.isConst() {
				return newLin(0).add(b, a.Const)
			}
			if b.isConst() {
				return newLin(0).add(a, b.Const)
			}
			return atomLin(Bin{OpMul, a.expr(), b.expr()})
		case OpFloorDiv, OpMod:
			if b.isConst() && b.Const > 0 {
				return r.divMod(a, b.Const, x.Op)
			}
			return atomLin(Bin{x.Op, a.expr(), b.expr()})
		case OpMin, OpMax:
			d := a.add(b, -1)
			if iv, ok := r.Bound(d.expr()); ok {
				if (x.Op == OpMin && iv.Hi <= 0) || (x.Op == OpMax && iv.Lo >= 0) {
					return a
				}
				if (x.Op == OpMin && iv.Lo >= 0) || (x.Op == OpMax && iv.Hi <= 0) {
					return b
				}
			}
			if a.isConst() && b.isConst() {
				if x.Op == OpMin {
					return newLin(min(a.Const, b.Const))
				}
				return newLin(max(a.Const, b.Const))
			}
			return atomLin(Bin{x.Op, a.expr(), b.expr()})
		}
	}
	return atomLin(e)
}

// recombine folds c·q·(x // q) + c·(x % q) back into c·x. A loop fused
// from (i1, kk) binds i1 = f // G and kk = f % G, and a layout that merges
// the two dims addresses them at (f // G)·G + f % G: only with this rule
// does that index read as f, stride 1 in f, so the printer vectorizes over
// the fused loop (recipe.GEMVOuter with k groups in the lanes).
func (r Ranges) recombine(l lin) lin {
	for k, c := range l.Terms {
		m, ok := l.Atoms[k].(Bin)
		if !ok || m.Op != OpMod {
			continue
		}
		q, ok := m.B.(Int)
		if !ok || q.V <= 0 {
			continue
		}
		dk := Bin{OpFloorDiv, m.A, m.B}.String()
		if l.Terms[dk] != c*q.V {
			continue
		}
		out := newLin(l.Const)
		for k2, c2 := range l.Terms {
			if k2 != k && k2 != dk {
				out.Terms[k2] = c2
				out.Atoms[k2] = l.Atoms[k2]
			}
		}
		return r.recombine(out.add(r.toLin(m.A), c))
	}
	return l
}

// divMod splits a into the part whose coefficients c divides and the rest;
// if the rest provably lies in [0, c), a // c is the divided part and a % c
// is the rest.
func (r Ranges) divMod(a lin, c int64, op Op) lin {
	if c == 1 {
		if op == OpMod {
			return newLin(0)
		}
		return a
	}
	q := newLin(floorDiv(a.Const, c))
	rest := newLin(a.Const - floorDiv(a.Const, c)*c)
	for k, v := range a.Terms {
		if v%c == 0 {
			q.Terms[k] = v / c
			q.Atoms[k] = a.Atoms[k]
		} else {
			rest.Terms[k] = v
			rest.Atoms[k] = a.Atoms[k]
		}
	}
	if iv, ok := r.Bound(rest.expr()); ok && iv.Lo >= 0 && iv.Hi < c {
		if op == OpFloorDiv {
			return q
		}
		return rest
	}
	if a.isConst() {
		if op == OpFloorDiv {
			return newLin(floorDiv(a.Const, c))
		}
		return newLin(a.Const - floorDiv(a.Const, c)*c)
	}
	return atomLin(Bin{op, a.expr(), Int{c}})
}

// Coeff returns the coefficient of variable v in index expression e and
// whether e is linear in v (v appears only as a top-level term).
func (r Ranges) Coeff(e Expr, v string) (int64, bool) {
	l := r.toLin(e)
	c := int64(0)
	for k, coef := range l.Terms {
		a := l.Atoms[k]
		if av, ok := a.(Var); ok && av.Name == v {
			c = coef
			continue
		}
		if UsesVar(a, v) {
			return 0, false
		}
	}
	return c, true
}
