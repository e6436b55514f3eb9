package ref

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"

	"llmir/ir"
	"llmir/kvcache"
)

// Value is what an SSA value holds while a function is evaluated: a *Tensor,
// or a *Pool for a !llmir.paged_kv.
type Value interface{ isValue() }

func (*Tensor) isValue() {}
func (*Pool) isValue()   {}

// Tensor is a concrete tensor: a shape with every dim known, an element
// type, and row-major data in F (float types, values already rounded to
// Elem) or I (integer types, i4 unpacked one value per element).
type Tensor struct {
	Shape []int
	Elem  ir.ElemType
	F     []float32
	I     []int64
}

// Floats makes a float tensor; the data is used as is (not copied, not rounded).
func Floats(elem ir.ElemType, shape []int, data []float32) *Tensor {
	return &Tensor{Shape: shape, Elem: elem, F: data}
}

// Ints makes an integer tensor.
func Ints(elem ir.ElemType, shape []int, data []int64) *Tensor {
	return &Tensor{Shape: shape, Elem: elem, I: data}
}

func (t *Tensor) String() string { return fmt.Sprintf("tensor%v of %s", t.Shape, t.Elem) }

func (t *Tensor) check() error {
	n := numel(t.Shape)
	if t.Elem.IsFloat() {
		if len(t.F) != n || t.I != nil {
			return shapeErr("%s holds %d floats and %d ints, want %d floats", t, len(t.F), len(t.I), n)
		}
	} else if len(t.I) != n || t.F != nil {
		return shapeErr("%s holds %d ints and %d floats, want %d ints", t, len(t.I), len(t.F), n)
	}
	return nil
}

// ParamSource supplies llmir.param values by checkpoint name. t is the
// declared type; its dims are static.
type ParamSource interface {
	Param(ctx context.Context, name string, t ir.TensorType) (*Tensor, error)
}

// MapParams serves weights from a map.
type MapParams map[string]*Tensor

// Param returns the tensor called name.
func (m MapParams) Param(_ context.Context, name string, _ ir.TensorType) (*Tensor, error) {
	t, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("param %q: not in the map", name)
	}
	return t, nil
}

// RandomParams makes seeded random weights, each a function of (Seed, name)
// alone, so the same name gives the same tensor in every function and run
// (tied embeddings stay tied, prefill and decode share weights). Weights
// are scaled so that a Llama stays numerically tame: rank-1 params named
// "….weight" or containing "norm" (norm scales) are 1 ± 0.1, other rank-1
// params (biases) are
// N(0, 0.02²), float params named "scale…" (quantisation scales) are in
// [0.005, 0.015), matrices are N(0, 1/fan_in) with fan_in the last dim,
// and i8/i4 weights are uniform over −127…127 / −8…7.
type RandomParams struct{ Seed uint64 }

// Param generates the tensor called name of type t.
func (r RandomParams) Param(_ context.Context, name string, t ir.TensorType) (*Tensor, error) {
	shape := make([]int, t.Rank())
	for i, d := range t.Shape {
		if d.IsDynamic() {
			return nil, fmt.Errorf("random param %q: type %s has a dynamic dim", name, t)
		}
		shape[i] = int(d.Size)
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	rng := rand.New(rand.NewPCG(r.Seed, h.Sum64()))
	n := numel(shape)
	out := &Tensor{Shape: shape, Elem: t.Elem}
	switch {
	case t.Elem.IsFloat():
		out.F = make([]float32, n)
		base := strings.ToLower(name[strings.LastIndex(name, ".")+1:])
		for i := range out.F {
			var v float64
			switch {
			case len(shape) == 1 && (base == "weight" || strings.Contains(strings.ToLower(name), "norm")):
				v = 1 + 0.1*(2*rng.Float64()-1)
			case len(shape) == 1:
				v = 0.02 * rng.NormFloat64()
			case strings.HasPrefix(base, "scale"):
				v = 0.005 + 0.01*rng.Float64()
			default:
				v = rng.NormFloat64() / math.Sqrt(float64(shape[len(shape)-1]))
			}
			out.F[i] = float32(ir.RoundFloat(v, t.Elem))
		}
	case t.Elem == ir.I8 || t.Elem == ir.I4:
		lim := map[ir.ElemType]int{ir.I8: 127, ir.I4: 8}[t.Elem]
		hi := map[ir.ElemType]int{ir.I8: 127, ir.I4: 7}[t.Elem]
		out.I = make([]int64, n)
		for i := range out.I {
			out.I[i] = int64(rng.IntN(lim+hi+1) - lim)
		}
	default:
		return nil, fmt.Errorf("random param %q: element type %s: %w", name, t.Elem, ErrUnsupported)
	}
	return out, nil
}

// Options tune an evaluation.
type Options struct {
	// Observe, when set, is called after every op (func.return excluded)
	// with its operands and results, e.g. to take the logits that feed
	// llmir.argmax. It must not change them.
	Observe func(op *ir.Op, operands, results []Value)
}

// BindArgs orders named arguments (by each argument's llmir.name) as fn
// takes them.
func BindArgs(f *ir.Func, named map[string]Value) ([]Value, error) {
	out := make([]Value, len(f.Args))
	used := 0
	for i := range f.Args {
		name := ""
		if i < len(f.ArgAttrs) {
			name = f.ArgAttrs[i].Str("llmir.name", "")
		}
		v, ok := named[name]
		if name == "" || !ok {
			return nil, fmt.Errorf("bind @%s argument #%d (%q): no value given", f.Name, i, name)
		}
		out[i] = v
		used++
	}
	if used != len(named) {
		return nil, fmt.Errorf("bind @%s: %d values given, the function takes %d", f.Name, len(named), used)
	}
	return out, nil
}

// Eval runs function fn of m on args, op by op, with the references, and
// returns the values func.return returns. See EvalWithOptions.
func Eval(ctx context.Context, m *ir.Module, fn string, args []Value, params ParamSource) ([]Value, error) {
	return EvalWithOptions(ctx, m, fn, args, params, Options{})
}

// EvalWithOptions is Eval with options. The module is verified first.
// Symbolic dims (batch, seq, …) are bound from the arguments' actual
// shapes, and every op's result is checked against its declared type under
// those bindings. Float results are rounded to their declared element type
// (bf16/f16) as a kernel storing them would; argument and parameter
// tensors are never written. The cache is different: llmir.append_kv
// updates the *Pool passed in, in place, and yields that same *Pool, so
// after the call the caller's pool holds the new keys and values. Reading
// a cache value that an append_kv has since superseded is an error, so the
// in-place update is never observable inside the function.
func EvalWithOptions(ctx context.Context, m *ir.Module, fn string, args []Value, params ParamSource, opts Options) ([]Value, error) {
	// Verify first: the evaluator relies on the op contracts (result types
	// declared, operands of the right kinds) and must not panic on a
	// module that breaks them.
	if err := ir.Verify(m); err != nil {
		return nil, fmt.Errorf("eval @%s: module does not verify: %w", fn, err)
	}
	f := m.Func(fn)
	if f == nil {
		return nil, fmt.Errorf("eval: module has no function @%s", fn)
	}
	if len(args) != len(f.Args) {
		return nil, fmt.Errorf("eval @%s: %d arguments, the function takes %d: %w", fn, len(args), len(f.Args), ErrShape)
	}
	e := &evaluator{vals: map[*ir.Value]Value{}, syms: map[string]int{}, stale: map[*ir.Value]bool{}, params: params}
	for i, a := range f.Args {
		if err := e.bind(a, args[i]); err != nil {
			return nil, fmt.Errorf("eval @%s argument #%d: %w", fn, i, err)
		}
	}
	for _, op := range f.Body {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("eval @%s: %w", fn, err)
		}
		operands := make([]Value, len(op.Operands))
		for i, v := range op.Operands {
			if e.stale[v] {
				return nil, fmt.Errorf("eval @%s %s at %s: operand #%d is a cache that a later append_kv already updated in place: %w",
					fn, op.Name, op.Loc, i, ErrUnsupported)
			}
			operands[i] = e.vals[v]
			if operands[i] == nil {
				return nil, fmt.Errorf("eval @%s %s at %s: operand #%d has no value", fn, op.Name, op.Loc, i)
			}
		}
		if op.Name == ir.ReturnName {
			return operands, nil
		}
		impl, ok := opImpls[op.Name]
		if !ok {
			return nil, fmt.Errorf("eval @%s %s at %s: %w", fn, op.Name, op.Loc, ErrUnknownOp)
		}
		results, err := impl(ctx, e, op, operands)
		if err != nil {
			return nil, fmt.Errorf("eval @%s %s at %s: %w", fn, op.Name, op.Loc, err)
		}
		if len(results) != len(op.Results) {
			return nil, fmt.Errorf("eval @%s %s at %s: %d results, the op declares %d", fn, op.Name, op.Loc, len(results), len(op.Results))
		}
		for i, r := range op.Results {
			if t, ok := results[i].(*Tensor); ok && t.Elem.IsFloat() {
				results[i] = roundedTensor(t)
			}
			if err := e.bind(r, results[i]); err != nil {
				return nil, fmt.Errorf("eval @%s %s at %s: result #%d: %w", fn, op.Name, op.Loc, i, err)
			}
		}
		if opts.Observe != nil {
			opts.Observe(op, operands, results)
		}
	}
	return nil, fmt.Errorf("eval @%s: body does not end in %s", fn, ir.ReturnName)
}

// roundedTensor returns t with its data rounded to t.Elem. Data already
// representable (always, for f32) is returned as is; otherwise a rounded
// copy, because the slice may be shared with a caller's argument or
// parameter (reshape is a view) and the evaluator never writes those.
func roundedTensor(t *Tensor) *Tensor {
	for _, v := range t.F {
		if float64(v) != ir.RoundFloat(float64(v), t.Elem) && v == v {
			return &Tensor{Shape: t.Shape, Elem: t.Elem, F: roundSlice(append([]float32(nil), t.F...), t.Elem)}
		}
	}
	return t
}

type evaluator struct {
	vals   map[*ir.Value]Value
	syms   map[string]int // symbolic dim name → extent in this evaluation
	stale  map[*ir.Value]bool
	params ParamSource
}

// bind checks v against the SSA value's type, binding its symbolic dims.
func (e *evaluator) bind(sv *ir.Value, v Value) error {
	switch t := sv.Type.(type) {
	case ir.TensorType:
		x, ok := v.(*Tensor)
		if !ok || x == nil {
			return fmt.Errorf("want a tensor for %s, got %T", t, v)
		}
		if err := e.match(x, t); err != nil {
			return err
		}
	case ir.PagedKVType:
		p, ok := v.(*Pool)
		if !ok || p == nil {
			return fmt.Errorf("want a *Pool for %s, got %T", t, v)
		}
		dt, err := dtypeOf(t.Elem)
		if err != nil {
			return err
		}
		l := p.Layout
		if int64(l.BlockSize) != t.BlockSize || int64(l.NumKVHeads) != t.KVHeads || int64(l.HeadDim) != t.HeadDim ||
			int64(l.NumLayers) != t.Layers || l.DType != dt {
			return fmt.Errorf("%w: pool layout %+v does not match %s", ErrShape, l, t)
		}
		if int64(len(p.Bytes)) != l.PoolBytes() {
			return fmt.Errorf("%w: pool holds %d bytes, its layout needs %d", ErrShape, len(p.Bytes), l.PoolBytes())
		}
	default:
		return fmt.Errorf("values of type %s: %w", sv.Type, ErrUnsupported)
	}
	e.vals[sv] = v
	return nil
}

// match checks a tensor against a type and binds the type's symbolic dims.
func (e *evaluator) match(x *Tensor, t ir.TensorType) error {
	if x.Elem != t.Elem || len(x.Shape) != t.Rank() {
		return fmt.Errorf("%w: got %s, want %s", ErrShape, x, t)
	}
	if err := x.check(); err != nil {
		return err
	}
	for i, d := range t.Shape {
		got := x.Shape[i]
		switch {
		case !d.IsDynamic():
			if int64(got) != d.Size {
				return fmt.Errorf("%w: got %s, want %s (dim %d)", ErrShape, x, t, i)
			}
		case d.Sym != "":
			if b, ok := e.syms[d.Sym]; ok && b != got {
				return fmt.Errorf("%w: dim %d (%s) of %s is %d, but %s = %d elsewhere", ErrShape, i, d.Sym, x, got, d.Sym, b)
			}
			e.syms[d.Sym] = got
		}
	}
	return nil
}

// resolve turns a declared type into a concrete shape of n elements: static
// dims as written, symbolic ones from the bindings, and at most one
// unbound dim inferred from n.
func (e *evaluator) resolve(t ir.TensorType, n int) ([]int, error) {
	shape := make([]int, t.Rank())
	unknown, known := -1, 1
	for i, d := range t.Shape {
		switch b, bound := e.syms[d.Sym]; {
		case !d.IsDynamic():
			shape[i] = int(d.Size)
		case d.Sym != "" && bound:
			shape[i] = b
		case unknown >= 0:
			return nil, fmt.Errorf("%w: %s has two dims not fixed by the inputs", ErrShape, t)
		default:
			unknown = i
			continue
		}
		known *= shape[i]
	}
	if unknown >= 0 {
		if known == 0 || n%known != 0 {
			return nil, fmt.Errorf("%w: %d elements do not fill %s", ErrShape, n, t)
		}
		shape[unknown] = n / known
	}
	if numel(shape) != n {
		return nil, fmt.Errorf("%w: %d elements reshaped to %v (%s)", ErrShape, n, shape, t)
	}
	return shape, nil
}

type opImpl func(ctx context.Context, e *evaluator, op *ir.Op, in []Value) ([]Value, error)

var opImpls map[string]opImpl

func init() {
	opImpls = map[string]opImpl{
		"llmir.param":            evalParam,
		"llmir.reshape":          evalReshape,
		"llmir.embedding":        evalEmbedding,
		"llmir.linear":           evalLinear,
		"llmir.quantized_linear": evalQuantizedLinear,
		"llmir.rms_norm":         evalNorm,
		"llmir.layer_norm":       evalNorm,
		"llmir.rope":             evalRope,
		"llmir.silu":             evalUnary,
		"llmir.gelu":             evalUnary,
		"llmir.mul":              evalBinary,
		"llmir.add":              evalBinary,
		"llmir.softmax":          evalSoftmax,
		"llmir.argmax":           evalArgmax,
		"llmir.attention":        evalAttention,
		"llmir.paged_attention":  evalPagedAttention,
		"llmir.append_kv":        evalAppendKV,
		"llmir.all_reduce":       evalAllReduce,
	}
}

// Ops lists the op names the evaluator implements.
func Ops() []string {
	out := make([]string, 0, len(opImpls))
	for _, d := range ir.Ops() {
		if _, ok := opImpls[d.Name]; ok {
			out = append(out, d.Name)
		}
	}
	return out
}

func tensorsOf(op *ir.Op, in []Value, idx ...int) ([]*Tensor, error) {
	out := make([]*Tensor, len(idx))
	for i, j := range idx {
		t, ok := in[j].(*Tensor)
		if !ok {
			return nil, fmt.Errorf("%w: operand #%d of %s must be a tensor, got %T", ErrShape, j, op.Name, in[j])
		}
		out[i] = t
	}
	return out, nil
}

func floatLike(x *Tensor, shape []int, data []float32) *Tensor {
	return &Tensor{Shape: shape, Elem: x.Elem, F: data}
}

func lastDim(x *Tensor) (rows, n int, err error) {
	if len(x.Shape) == 0 {
		return 0, 0, shapeErr("%s has no last dim", x)
	}
	n = x.Shape[len(x.Shape)-1]
	if n == 0 {
		return 0, 0, nil
	}
	return len(x.F) / n, n, nil
}

func withLast(shape []int, n int) []int {
	s := append([]int(nil), shape...)
	s[len(s)-1] = n
	return s
}

func evalParam(ctx context.Context, e *evaluator, op *ir.Op, _ []Value) ([]Value, error) {
	name := op.Attrs.Str("name", "")
	t := op.Result().Type.(ir.TensorType)
	if e.params == nil {
		return nil, fmt.Errorf("param %q: no ParamSource given", name)
	}
	x, err := e.params.Param(ctx, name, t)
	if err != nil {
		return nil, fmt.Errorf("param %q: %w", name, err)
	}
	return []Value{x}, nil
}

func evalReshape(_ context.Context, e *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 0)
	if err != nil {
		return nil, err
	}
	x := ts[0]
	shape, err := e.resolve(op.Result().Type.(ir.TensorType), numel(x.Shape))
	if err != nil {
		return nil, err
	}
	return []Value{&Tensor{Shape: shape, Elem: x.Elem, F: x.F, I: x.I}}, nil
}

func evalEmbedding(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 0, 1)
	if err != nil {
		return nil, err
	}
	ids, table := ts[0], ts[1]
	if len(table.Shape) != 2 {
		return nil, shapeErr("embedding table %s is not 2-D", table)
	}
	out, err := Embedding(ids.I, table.F, table.Shape[0], table.Shape[1])
	if err != nil {
		return nil, err
	}
	return []Value{floatLike(table, append(append([]int(nil), ids.Shape...), table.Shape[1]), out)}, nil
}

func evalLinear(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	idx := []int{0, 1}
	if len(in) == 3 {
		idx = append(idx, 2)
	}
	ts, err := tensorsOf(op, in, idx...)
	if err != nil {
		return nil, err
	}
	x, w := ts[0], ts[1]
	var bias []float32
	if len(ts) == 3 {
		bias = ts[2].F
	}
	if len(w.Shape) != 2 {
		return nil, shapeErr("linear weight %s is not 2-D", w)
	}
	layout := WeightLayout(op.Attrs.Str("weight_layout", string(NK)))
	n := w.Shape[0]
	if layout == KN {
		n = w.Shape[1]
	}
	m, k, err := lastDim(x)
	if err != nil {
		return nil, err
	}
	out, err := Linear(x.F, m, k, w.F, n, layout, bias)
	if err != nil {
		return nil, err
	}
	return []Value{floatLike(x, withLast(x.Shape, n), out)}, nil
}

func evalQuantizedLinear(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 0, 1, 2)
	if err != nil {
		return nil, err
	}
	x, w, s := ts[0], ts[1], ts[2]
	if len(w.Shape) != 2 {
		return nil, shapeErr("quantized weight %s is not 2-D", w)
	}
	m, k, err := lastDim(x)
	if err != nil {
		return nil, err
	}
	n, group := w.Shape[0], int(op.Attrs.Int("group_size", 0))
	q := make([]int8, len(w.I))
	for i, v := range w.I {
		q[i] = int8(v)
		if int64(q[i]) != v {
			return nil, fmt.Errorf("quantized weight element %d = %d does not fit %s: %w", i, v, w.Elem, ErrIndex)
		}
	}
	var out []float32
	switch bits := op.Attrs.Int("bits", 0); bits {
	case 8:
		out, err = QuantizedLinearInt8(x.F, m, k, q, s.F, n, group)
	case 4:
		var packed []byte
		if packed, err = PackInt4(q); err == nil {
			out, err = QuantizedLinearInt4(x.F, m, k, packed, s.F, n, group)
		}
	default:
		err = fmt.Errorf("bits %d: %w", bits, ErrUnsupported)
	}
	if err != nil {
		return nil, err
	}
	return []Value{floatLike(x, withLast(x.Shape, n), out)}, nil
}

func evalNorm(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	idx := []int{0, 1}
	if op.Name == "llmir.layer_norm" {
		idx = append(idx, 2)
	}
	ts, err := tensorsOf(op, in, idx...)
	if err != nil {
		return nil, err
	}
	x := ts[0]
	rows, h, err := lastDim(x)
	if err != nil {
		return nil, err
	}
	eps := op.Attrs.Float("eps", 0)
	var out []float32
	if op.Name == "llmir.layer_norm" {
		out, err = LayerNorm(x.F, rows, h, ts[1].F, ts[2].F, eps)
	} else {
		out, err = RMSNorm(x.F, rows, h, ts[1].F, eps)
	}
	if err != nil {
		return nil, err
	}
	return []Value{floatLike(x, x.Shape, out)}, nil
}

func evalRope(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 0, 1)
	if err != nil {
		return nil, err
	}
	x, pos := ts[0], ts[1]
	if len(x.Shape) < 3 {
		return nil, shapeErr("rope x %s has rank < 3", x)
	}
	c, err := RopeConfigFromAttrs(op.Attrs)
	if err != nil {
		return nil, err
	}
	r := len(x.Shape)
	heads, hd := x.Shape[r-2], x.Shape[r-1]
	out, err := Rope(x.F, numel(x.Shape[:r-2]), heads, hd, pos.I, c)
	if err != nil {
		return nil, err
	}
	return []Value{floatLike(x, x.Shape, out)}, nil
}

func evalUnary(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 0)
	if err != nil {
		return nil, err
	}
	x := ts[0]
	var out []float32
	switch op.Name {
	case "llmir.silu":
		out = SiLU(x.F)
	case "llmir.gelu":
		out = GELU(x.F, op.Attrs.Str("approximate", "none") == "tanh")
	}
	return []Value{floatLike(x, x.Shape, out)}, nil
}

func evalBinary(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 0, 1)
	if err != nil {
		return nil, err
	}
	a, b := ts[0], ts[1]
	f := Add
	if op.Name == "llmir.mul" {
		f = Mul
	}
	out, shape, err := f(a.F, a.Shape, b.F, b.Shape)
	if err != nil {
		return nil, err
	}
	return []Value{floatLike(a, shape, out)}, nil
}

func evalSoftmax(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 0)
	if err != nil {
		return nil, err
	}
	x := ts[0]
	out, err := Softmax(x.F, x.Shape, int(op.Attrs.Int("axis", -1)))
	if err != nil {
		return nil, err
	}
	return []Value{floatLike(x, x.Shape, out)}, nil
}

func evalArgmax(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 0)
	if err != nil {
		return nil, err
	}
	x := ts[0]
	axis := int(op.Attrs.Int("axis", -1))
	out, err := Argmax(x.F, x.Shape, axis)
	if err != nil {
		return nil, err
	}
	if axis < 0 {
		axis += len(x.Shape)
	}
	shape := append(append([]int(nil), x.Shape[:axis]...), x.Shape[axis+1:]...)
	return []Value{Ints(ir.I64, shape, out)}, nil
}

func evalAttention(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 0, 1, 2)
	if err != nil {
		return nil, err
	}
	q, k, v := ts[0], ts[1], ts[2]
	for _, t := range ts {
		if len(t.Shape) != 4 {
			return nil, shapeErr("attention operand %s is not [batch, seq, heads, head_dim]", t)
		}
	}
	if k.Shape[0] != q.Shape[0] || v.Shape[0] != q.Shape[0] || v.Shape[1] != k.Shape[1] || v.Shape[2] != k.Shape[2] || k.Shape[3] != q.Shape[3] {
		return nil, shapeErr("attention q %v, k %v, v %v do not agree", q.Shape, k.Shape, v.Shape)
	}
	d := AttnDims{Batch: q.Shape[0], Seq: q.Shape[1], QHeads: q.Shape[2], HeadDim: q.Shape[3],
		KVLen: k.Shape[1], KVHeads: k.Shape[2], VDim: v.Shape[3]}
	o := AttnOptions{Causal: op.Attrs.Bool("causal", false), SlidingWindow: int(op.Attrs.Int("sliding_window", 0)),
		Scale: op.Attrs.Float("scale", 0)}
	out, err := Attention(q.F, k.F, v.F, d, o)
	if err != nil {
		return nil, err
	}
	return []Value{floatLike(q, withLast(q.Shape, d.VDim), out)}, nil
}

func evalPagedAttention(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 0, 2, 3)
	if err != nil {
		return nil, err
	}
	q, bt, cl := ts[0], ts[1], ts[2]
	p, ok := in[1].(*Pool)
	if !ok {
		return nil, shapeErr("paged_attention cache is %T, want *Pool", in[1])
	}
	if len(q.Shape) != 3 || len(bt.Shape) != 2 || len(cl.Shape) != 1 {
		return nil, shapeErr("paged_attention q %v, block_tables %v, context_lens %v: want ranks 3, 2, 1", q.Shape, bt.Shape, cl.Shape)
	}
	tables, err := int32s("block_tables", bt.I)
	if err != nil {
		return nil, err
	}
	lens, err := int32s("context_lens", cl.I)
	if err != nil {
		return nil, err
	}
	o := PagedOptions{SlidingWindow: int(op.Attrs.Int("sliding_window", 0)), Scale: op.Attrs.Float("scale", 0)}
	out, err := PagedAttention(q.F, q.Shape[0], q.Shape[1], p, int(op.Attrs.Int("layer", 0)), tables, bt.Shape[1], lens, o)
	if err != nil {
		return nil, err
	}
	return []Value{floatLike(q, q.Shape, out)}, nil
}

func int32s(what string, v []int64) ([]int32, error) {
	out := make([]int32, len(v))
	for i, x := range v {
		if x < math.MinInt32 || x > math.MaxInt32 {
			return nil, fmt.Errorf("%s element %d = %d does not fit i32: %w", what, i, x, ErrIndex)
		}
		out[i] = int32(x)
	}
	return out, nil
}

func evalAppendKV(_ context.Context, e *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 1, 2, 3)
	if err != nil {
		return nil, err
	}
	k, v, slots := ts[0], ts[1], ts[2]
	p, ok := in[0].(*Pool)
	if !ok {
		return nil, shapeErr("append_kv cache is %T, want *Pool", in[0])
	}
	l := p.Layout
	for _, t := range []*Tensor{k, v} {
		if r := len(t.Shape); r < 2 || t.Shape[r-2] != l.NumKVHeads || t.Shape[r-1] != l.HeadDim {
			return nil, shapeErr("append_kv %s does not end in the pool's [%d heads, %d head_dim]", t, l.NumKVHeads, l.HeadDim)
		}
	}
	tokens := numel(k.Shape[:len(k.Shape)-2])
	if err := AppendKV(p, int(op.Attrs.Int("layer", 0)), k.F, v.F, tokens, slots.I); err != nil {
		return nil, err
	}
	e.stale[op.Operands[0]] = true
	return []Value{p}, nil
}

func evalAllReduce(_ context.Context, _ *evaluator, op *ir.Op, in []Value) ([]Value, error) {
	ts, err := tensorsOf(op, in, 0)
	if err != nil {
		return nil, err
	}
	if ws := op.Attrs.Int("world_size", 1); ws != 1 {
		return nil, fmt.Errorf("all_reduce over %d ranks: Eval runs one rank; call AllReduce with every rank's buffer: %w", ws, ErrUnsupported)
	}
	x := ts[0]
	out, err := AllReduce([][]float32{x.F}, op.Attrs.Str("kind", "sum"))
	if err != nil {
		return nil, err
	}
	return []Value{floatLike(x, x.Shape, out)}, nil
}

// PoolFor allocates a zeroed pool of numBlocks blocks for a module's cache type.
func PoolFor(t ir.PagedKVType, numBlocks int) (*Pool, error) {
	dt, err := dtypeOf(t.Elem)
	if err != nil {
		return nil, err
	}
	return NewPool(LayoutFor(t, numBlocks, dt))
}

// LayoutFor is the kvcache layout of a cache type with numBlocks blocks.
func LayoutFor(t ir.PagedKVType, numBlocks int, dt kvcache.DType) kvcache.Layout {
	return kvcache.Layout{NumBlocks: numBlocks, BlockSize: int(t.BlockSize), NumLayers: int(t.Layers),
		NumKVHeads: int(t.KVHeads), HeadDim: int(t.HeadDim), DType: dt}
}
