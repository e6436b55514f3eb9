package schedule

import (
	"errors"
	"fmt"
	"math"
)

// ErrOutOfBounds is returned by Interpret when a load or store leaves its
// buffer: the oracle catches wrong tails and wrong compute_at regions.
var ErrOutOfBounds = errors.New("index out of bounds")

// Interpret executes the nest on params (one slice per parameter, ABI order,
// dense row-major at the runtime extents dims). Semantics: arithmetic in
// float64; every store rounds to the buffer's storage dtype (f32, bf16, f16),
// so results differ from the f32 C code only by accumulation rounding.
// Intermediate and cache buffers start as NaN, so reading an element that
// was never written poisons the output. Parallel, vectorized and bound loops
// run serially in order.
func Interpret(n *Nest, params [][]float64, dims []int64) error {
	if len(dims) != len(n.Dims) {
		return fmt.Errorf("interpret %s: %d dims given, want %d", n.Name, len(dims), len(n.Dims))
	}
	for j, d := range n.Dims {
		if dims[j] < 0 || dims[j] > d.Extent {
			return fmt.Errorf("interpret %s: dim %s = %d outside [0, %d]", n.Name, d.Name, dims[j], d.Extent)
		}
	}
	in := &interp{n: n, dims: dims, env: map[string]int64{}, store: map[string][]float64{}, red: map[*Block][]string{}}
	ps := n.Params()
	if len(params) != len(ps) {
		return fmt.Errorf("interpret %s: %d buffers given, want %d", n.Name, len(params), len(ps))
	}
	for i, p := range ps {
		want, err := in.size(p.Shape)
		if err != nil {
			return err
		}
		if int64(len(params[i])) != want {
			return fmt.Errorf("interpret %s: buffer %s has %d elements, want %d", n.Name, p.Name, len(params[i]), want)
		}
		in.store[p.Name] = params[i]
	}
	if err := in.alloc(""); err != nil {
		return err
	}
	if err := in.stmts(n.Body); err != nil {
		return fmt.Errorf("interpret %s: %w", n.Name, err)
	}
	return nil
}

type interp struct {
	n     *Nest
	dims  []int64
	env   map[string]int64
	store map[string][]float64
	red   map[*Block][]string
}

func (in *interp) size(shape []Expr) (int64, error) {
	s := int64(1)
	for _, e := range shape {
		v, err := in.evalInt(e)
		if err != nil {
			return 0, err
		}
		s *= max(v, 0)
	}
	return s, nil
}

func (in *interp) alloc(at string) error {
	for _, b := range in.n.Buffers {
		if b.Param < 0 && b.AllocAt == at {
			sz, err := in.size(b.PhysShape())
			if err != nil {
				return err
			}
			buf := make([]float64, sz)
			for i := range buf {
				buf[i] = math.NaN()
			}
			in.store[b.Name] = buf
		}
	}
	return nil
}

func (in *interp) stmts(ss []Stmt) error {
	for _, s := range ss {
		switch s := s.(type) {
		case *Loop:
			ext, err := in.evalInt(s.Extent)
			if err != nil {
				return fmt.Errorf("loop %s extent: %w", s.Name, err)
			}
			for v := int64(0); v < ext; v++ {
				in.env[s.Name] = v
				if err := in.alloc(s.Name); err != nil {
					return err
				}
				if err := in.stmts(s.Body); err != nil {
					return err
				}
			}
			delete(in.env, s.Name)
		case *Block:
			if err := in.block(s); err != nil {
				return fmt.Errorf("block %s: %w", s.Name, err)
			}
		}
	}
	return nil
}

// ReductionOnlyVars returns the loop variables that feed reduction axes but no
// spatial axis: Init fires when all of them are zero.
func ReductionOnlyVars(b *Block) []string {
	spatial := map[string]bool{}
	for i, a := range b.Axes {
		if !a.Reduce {
			for _, v := range Vars(b.Binds[i]) {
				spatial[v] = true
			}
		}
	}
	var out []string
	seen := map[string]bool{}
	for i, a := range b.Axes {
		if a.Reduce {
			for _, v := range Vars(b.Binds[i]) {
				if !spatial[v] && !seen[v] {
					seen[v] = true
					out = append(out, v)
				}
			}
		}
	}
	return out
}

func (in *interp) block(b *Block) error {
	saved := map[string]int64{}
	had := map[string]bool{}
	vals := make([]int64, len(b.Axes))
	for i := range b.Axes {
		v, err := in.evalInt(b.Binds[i])
		if err != nil {
			return err
		}
		vals[i] = v
	}
	for i, a := range b.Axes {
		if old, ok := in.env[a.Name]; ok {
			saved[a.Name], had[a.Name] = old, true
		}
		in.env[a.Name] = vals[i]
	}
	defer func() {
		for _, a := range b.Axes {
			if had[a.Name] {
				in.env[a.Name] = saved[a.Name]
			} else {
				delete(in.env, a.Name)
			}
		}
	}()
	for i, a := range b.Axes {
		ext, err := in.evalInt(a.Extent)
		if err != nil {
			return err
		}
		if vals[i] < 0 || vals[i] >= ext {
			return fmt.Errorf("axis %s = %d outside [0, %d): %w", a.Name, vals[i], ext, ErrOutOfBounds)
		}
	}
	buf, off, err := in.addr(b.Buf, b.Index)
	if err != nil {
		return err
	}
	if b.Reduce && b.Init != nil {
		rv, ok := in.red[b]
		if !ok {
			rv = ReductionOnlyVars(b)
			in.red[b] = rv
		}
		first := true
		for _, v := range rv {
			if in.env[v] != 0 {
				first = false
			}
		}
		if first {
			iv, err := in.evalFloat(b.Init)
			if err != nil {
				return err
			}
			buf[off] = in.round(b.Buf, iv)
		}
	}
	v, err := in.evalFloat(b.Value)
	if err != nil {
		return err
	}
	if b.Reduce {
		v += buf[off]
	}
	buf[off] = in.round(b.Buf, v)
	return nil
}

func (in *interp) round(name string, v float64) float64 {
	switch in.n.Buffer(name).DType {
	case BF16:
		return RoundBF16(v)
	case F16:
		return RoundF16(v)
	}
	return float64(float32(v))
}

// addr returns the storage and flat offset of buf[idx], bounds-checked
// against the logical shape.
func (in *interp) addr(name string, idx []Expr) ([]float64, int64, error) {
	b := in.n.Buffer(name)
	if b == nil {
		return nil, 0, fmt.Errorf("unknown buffer %s", name)
	}
	if len(idx) != len(b.Shape) {
		return nil, 0, fmt.Errorf("%s indexed with %d indices, rank %d", name, len(idx), len(b.Shape))
	}
	for d, e := range idx {
		v, err := in.evalInt(e)
		if err != nil {
			return nil, 0, err
		}
		ext, err := in.evalInt(b.Shape[d])
		if err != nil {
			return nil, 0, err
		}
		if v < 0 || v >= ext {
			return nil, 0, fmt.Errorf("%s dim %d index %s = %d outside [0, %d): %w", name, d, e, v, ext, ErrOutOfBounds)
		}
	}
	phys := b.PhysIndex(idx)
	shape := b.PhysShape()
	off := int64(0)
	for d, e := range phys {
		v, err := in.evalInt(e)
		if err != nil {
			return nil, 0, err
		}
		ext, err := in.evalInt(shape[d])
		if err != nil {
			return nil, 0, err
		}
		off = off*ext + v
	}
	st := in.store[name]
	if st == nil || off >= int64(len(st)) {
		return nil, 0, fmt.Errorf("%s is not allocated here (offset %d): %w", name, off, ErrOutOfBounds)
	}
	return st, off, nil
}

func (in *interp) evalInt(e Expr) (int64, error) {
	switch x := e.(type) {
	case Int:
		return x.V, nil
	case Var:
		v, ok := in.env[x.Name]
		if !ok {
			return 0, fmt.Errorf("variable %s is not bound here", x.Name)
		}
		return v, nil
	case Dyn:
		if x.Index < 0 || x.Index >= len(in.dims) {
			return 0, fmt.Errorf("dynamic dim %s has no index", x.Name)
		}
		return in.dims[x.Index], nil
	case Bin:
		a, err := in.evalInt(x.A)
		if err != nil {
			return 0, err
		}
		b, err := in.evalInt(x.B)
		if err != nil {
			return 0, err
		}
		switch x.Op {
		case OpAdd:
			return a + b, nil
		case OpSub:
			return a - b, nil
		case OpMul:
			return a * b, nil
		case OpFloorDiv, OpMod:
			if b <= 0 {
				return 0, fmt.Errorf("%s: division by %d", e, b)
			}
			if x.Op == OpFloorDiv {
				return floorDiv(a, b), nil
			}
			return a - floorDiv(a, b)*b, nil
		case OpMin:
			return min(a, b), nil
		case OpMax:
			return max(a, b), nil
		}
	}
	return 0, fmt.Errorf("%s is not an integer expression", e)
}

func (in *interp) evalFloat(e Expr) (float64, error) {
	switch x := e.(type) {
	case Float:
		return x.V, nil
	case Int, Var, Dyn:
		v, err := in.evalInt(e)
		return float64(v), err
	case Load:
		buf, off, err := in.addr(x.Buf, x.Index)
		if err != nil {
			return 0, err
		}
		return buf[off], nil
	case Call:
		f, ok := Funcs[x.Fn]
		if !ok {
			return 0, fmt.Errorf("unknown function %s", x.Fn)
		}
		args := make([]float64, len(x.Args))
		for i, a := range x.Args {
			v, err := in.evalFloat(a)
			if err != nil {
				return 0, err
			}
			args[i] = v
		}
		return f.Go(args), nil
	case Bin:
		if !isFloat(x) {
			v, err := in.evalInt(x)
			return float64(v), err
		}
		a, err := in.evalFloat(x.A)
		if err != nil {
			return 0, err
		}
		b, err := in.evalFloat(x.B)
		if err != nil {
			return 0, err
		}
		switch x.Op {
		case OpAdd:
			return a + b, nil
		case OpSub:
			return a - b, nil
		case OpMul:
			return a * b, nil
		case OpDiv:
			return a / b, nil
		case OpMin:
			return math.Min(a, b), nil
		case OpMax:
			return math.Max(a, b), nil
		}
	}
	return 0, fmt.Errorf("cannot evaluate %s", e)
}

// RoundBF16 rounds v to bfloat16 (round to nearest even), as C code storing
// through llmir_f32_to_bf16 does.
func RoundBF16(v float64) float64 {
	b := math.Float32bits(float32(v))
	if b&0x7fffffff > 0x7f800000 {
		return v
	}
	b += 0x7fff + (b>>16)&1
	return float64(math.Float32frombits(b & 0xffff0000))
}

// RoundF16 rounds v to IEEE half precision (round to nearest even).
func RoundF16(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) || v == 0 {
		return v
	}
	a := math.Abs(v)
	if a >= 65520 {
		return math.Copysign(math.Inf(1), v)
	}
	e := math.Floor(math.Log2(a))
	if e < -14 {
		e = -14
	}
	q := math.Ldexp(1, int(e)-10)
	return math.Copysign(math.RoundToEven(a/q)*q, v)
}
