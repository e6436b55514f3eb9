package ir

import (
	"fmt"
	"sort"
	"strings"
)

// AttrKind is what an attribute's value must be.
type AttrKind int

const (
	KindInt AttrKind = iota
	KindFloat
	KindStr
	KindBool
	KindDict
	KindType
)

func (k AttrKind) String() string {
	return [...]string{"integer", "float", "string", "bool", "dictionary", "type"}[k]
}

// AttrDef describes one attribute an op accepts.
type AttrDef struct {
	Name     string
	Kind     AttrKind
	Required bool
	Enum     []string // allowed values of a string attribute
	Codegen  bool     // changes the generated kernel, so part of the workload key
}

// Traits are properties passes rely on.
type Traits uint8

const (
	Pure        Traits = 1 << iota // no side effects: dead results may be removed, duplicates merged
	Elementwise                    // result[i] depends on operand[i] only
	NotAKernel                     // declares data (param); never becomes a workload
)

// OpDef is one row of the op table: the op's contract and its meaning.
type OpDef struct {
	Name     string
	Summary  string
	Operands []string // operand names; a trailing "?" marks the last as optional
	Attrs    []AttrDef
	Traits   Traits
	// Infer checks operand types and returns the result types. Ops whose
	// result type is chosen by the author (param) return the declared ones.
	Infer func(op *Op) ([]Type, error)
}

func (d *OpDef) attr(name string) *AttrDef {
	for i := range d.Attrs {
		if d.Attrs[i].Name == name {
			return &d.Attrs[i]
		}
	}
	return nil
}

// infer checks arity and attributes generically, then runs Infer.
func (d *OpDef) infer(op *Op) ([]Type, error) {
	min, max := len(d.Operands), len(d.Operands)
	if max > 0 && strings.HasSuffix(d.Operands[max-1], "?") {
		min--
	}
	if n := len(op.Operands); n < min || n > max {
		want := fmt.Sprint(max)
		if min != max {
			want = fmt.Sprintf("%d or %d", min, max)
		}
		return nil, errorf(op.Loc, "%s expects %s operands (%s), got %d", op.Name, want, strings.Join(d.Operands, ", "), n)
	}
	for _, a := range op.Attrs {
		ad := d.attr(a.Name)
		if ad == nil {
			return nil, errorf(op.Loc, "%s: unknown attribute %q", op.Name, a.Name)
		}
		if err := checkAttrKind(ad, a.Value); err != nil {
			return nil, errorf(op.Loc, "%s: attribute %q: %v", op.Name, a.Name, err)
		}
	}
	for _, ad := range d.Attrs {
		if _, ok := op.Attrs.Get(ad.Name); ad.Required && !ok {
			return nil, errorf(op.Loc, "%s: missing required attribute %q", op.Name, ad.Name)
		}
	}
	types, err := d.Infer(op)
	if err != nil {
		var e *Error
		if asError(err, &e) {
			return nil, err
		}
		return nil, errorf(op.Loc, "%s: %v", op.Name, err)
	}
	return types, nil
}

func asError(err error, e **Error) bool {
	x, ok := err.(*Error)
	if ok {
		*e = x
	}
	return ok
}

func checkAttrKind(ad *AttrDef, v Attr) error {
	ok := false
	switch ad.Kind {
	case KindInt:
		_, ok = v.(IntAttr)
	case KindFloat:
		switch v.(type) {
		case FloatAttr, IntAttr:
			ok = true
		}
	case KindStr:
		var s StrAttr
		if s, ok = v.(StrAttr); ok && len(ad.Enum) > 0 {
			for _, e := range ad.Enum {
				if string(s) == e {
					return nil
				}
			}
			return fmt.Errorf("%s is not one of %s", s, strings.Join(ad.Enum, ", "))
		}
	case KindBool:
		switch v.(type) {
		case BoolAttr, UnitAttr:
			ok = true
		}
	case KindDict:
		_, ok = v.(DictAttr)
	case KindType:
		_, ok = v.(TypeAttr)
	}
	if !ok {
		return fmt.Errorf("want a %s, got %s", ad.Kind, v)
	}
	return nil
}

var opTable = map[string]*OpDef{}

// LookupOp returns the definition of a registered op.
func LookupOp(name string) (*OpDef, bool) {
	d, ok := opTable[name]
	return d, ok
}

// Ops lists the op table sorted by name.
func Ops() []*OpDef {
	out := make([]*OpDef, 0, len(opTable))
	for _, d := range opTable {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func init() {
	for _, d := range opDefs {
		if _, dup := opTable[d.Name]; dup {
			panic("ir: op defined twice: " + d.Name)
		}
		opTable[d.Name] = d
	}
}

var (
	eps      = AttrDef{Name: "eps", Kind: KindFloat, Required: true, Codegen: true}
	layer    = AttrDef{Name: "layer", Kind: KindInt, Required: true}
	scale    = AttrDef{Name: "scale", Kind: KindFloat, Codegen: true}
	window   = AttrDef{Name: "sliding_window", Kind: KindInt, Codegen: true}
	axisAttr = AttrDef{Name: "axis", Kind: KindInt, Codegen: true}
)

// opDefs is the op table: every LLMIR op, its operands, attributes and meaning.
var opDefs = []*OpDef{
	{Name: "llmir.param", Summary: "a model weight, by checkpoint name; its type is declared", Attrs: []AttrDef{{Name: "name", Kind: KindStr, Required: true}}, Traits: Pure | NotAKernel, Infer: inferParam},
	{Name: "llmir.reshape", Summary: "view x with the declared shape: same elements, same order (free: no kernel)", Operands: []string{"x"}, Traits: Pure | NotAKernel, Infer: inferReshape},
	{Name: "llmir.embedding", Summary: "gather rows of the embedding table for token ids", Operands: []string{"ids", "table"}, Traits: Pure, Infer: inferEmbedding},
	{Name: "llmir.linear", Summary: "x · wᵀ (+ bias): w is [out, in] (weight_layout \"nk\") or [in, out] (\"kn\")", Operands: []string{"x", "w", "bias?"}, Attrs: []AttrDef{{Name: "weight_layout", Kind: KindStr, Enum: []string{"nk", "kn"}, Codegen: true}}, Traits: Pure, Infer: inferLinear},
	{Name: "llmir.quantized_linear", Summary: "weight-only quantized x · wᵀ: int8/int4 w [out, in] with per-group scales [out, in/group_size]", Operands: []string{"x", "w", "scales"}, Attrs: []AttrDef{{Name: "bits", Kind: KindInt, Required: true, Codegen: true}, {Name: "group_size", Kind: KindInt, Required: true, Codegen: true}}, Traits: Pure, Infer: inferQuantLinear},
	{Name: "llmir.rms_norm", Summary: "x / sqrt(mean(x²) + eps) · w over the last axis", Operands: []string{"x", "w"}, Attrs: []AttrDef{eps}, Traits: Pure, Infer: inferNorm},
	{Name: "llmir.layer_norm", Summary: "(x − mean) / sqrt(var + eps) · w + b over the last axis", Operands: []string{"x", "w", "b"}, Attrs: []AttrDef{eps}, Traits: Pure, Infer: inferNorm},
	{Name: "llmir.rope", Summary: "rotary position embedding of x [..., heads, head_dim] at positions [...]", Operands: []string{"x", "positions"}, Attrs: []AttrDef{{Name: "theta", Kind: KindFloat, Required: true, Codegen: true}, {Name: "style", Kind: KindStr, Enum: []string{"neox", "gptj"}, Codegen: true}, {Name: "rotary_dim", Kind: KindInt, Codegen: true}, {Name: "scaling", Kind: KindDict, Codegen: true}}, Traits: Pure, Infer: inferRope},
	{Name: "llmir.silu", Summary: "x · sigmoid(x)", Operands: []string{"x"}, Traits: Pure | Elementwise, Infer: inferSame},
	{Name: "llmir.gelu", Summary: "x · Φ(x), exact or tanh-approximated", Operands: []string{"x"}, Attrs: []AttrDef{{Name: "approximate", Kind: KindStr, Enum: []string{"none", "tanh"}, Codegen: true}}, Traits: Pure | Elementwise, Infer: inferSame},
	{Name: "llmir.mul", Summary: "element-wise product with trailing broadcast", Operands: []string{"a", "b"}, Traits: Pure | Elementwise, Infer: inferBroadcast},
	{Name: "llmir.add", Summary: "element-wise sum with trailing broadcast", Operands: []string{"a", "b"}, Traits: Pure | Elementwise, Infer: inferBroadcast},
	{Name: "llmir.softmax", Summary: "softmax along axis (default the last)", Operands: []string{"x"}, Attrs: []AttrDef{axisAttr}, Traits: Pure, Infer: inferSoftmax},
	{Name: "llmir.attention", Summary: "prefill attention of q [b, s, hq, d] over k, v [b, t, hkv, d]: GQA, optional causal mask and sliding window", Operands: []string{"q", "k", "v"}, Attrs: []AttrDef{{Name: "causal", Kind: KindBool, Codegen: true}, scale, window}, Traits: Pure, Infer: inferAttention},
	{Name: "llmir.paged_attention", Summary: "decode attention of q [b, hq, d] over the paged cache, through block tables [b, max_blocks] and context lengths [b]", Operands: []string{"q", "cache", "block_tables", "context_lens"}, Attrs: []AttrDef{layer, scale, window}, Traits: Pure, Infer: inferPagedAttention},
	{Name: "llmir.append_kv", Summary: "write k, v [..., hkv, d] of one layer into the cache at slot_mapping [...]; yields the updated cache", Operands: []string{"cache", "k", "v", "slot_mapping"}, Attrs: []AttrDef{layer}, Infer: inferAppendKV},
	{Name: "llmir.all_reduce", Summary: "tensor-parallel reduction of x across world_size ranks", Operands: []string{"x"}, Attrs: []AttrDef{{Name: "kind", Kind: KindStr, Enum: []string{"sum", "max"}, Codegen: true}, {Name: "world_size", Kind: KindInt, Required: true, Codegen: true}}, Infer: inferSame},
	{Name: "llmir.argmax", Summary: "index of the largest element along axis (default the last), as i64", Operands: []string{"x"}, Attrs: []AttrDef{axisAttr}, Traits: Pure, Infer: inferArgmax},
}

func tensorOperand(op *Op, i int) (TensorType, error) {
	t, ok := op.Operands[i].Type.(TensorType)
	if !ok {
		return TensorType{}, errorf(op.Loc, "%s: operand #%d must be a tensor, got %s", op.Name, i, op.Operands[i].Type)
	}
	return t, nil
}

func tensors(op *Op) ([]TensorType, error) {
	out := make([]TensorType, len(op.Operands))
	for i := range op.Operands {
		if _, isKV := op.Operands[i].Type.(PagedKVType); isKV {
			continue
		}
		t, err := tensorOperand(op, i)
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}

// unifyDim merges two views of the same dimension, or reports a clash.
func unifyDim(a, b Dim) (Dim, bool) {
	switch {
	case !a.IsDynamic() && !b.IsDynamic():
		return a, a.Size == b.Size
	case !a.IsDynamic():
		return a, true
	case !b.IsDynamic():
		return b, true
	case a.Sym == "" || a.Sym == b.Sym:
		return b, true
	case b.Sym == "":
		return a, true
	}
	return a, false
}

func sameDim(op *Op, what string, a, b Dim) (Dim, error) {
	d, ok := unifyDim(a, b)
	if !ok {
		return d, errorf(op.Loc, "%s: %s: %s does not match %s", op.Name, what, a, b)
	}
	return d, nil
}

func needRank(op *Op, name string, t TensorType, min int) error {
	if t.Rank() < min {
		return errorf(op.Loc, "%s: %s must have rank ≥ %d, got %s", op.Name, name, min, t)
	}
	return nil
}

func needFloat(op *Op, name string, t TensorType) error {
	if !t.Elem.IsFloat() {
		return errorf(op.Loc, "%s: %s must have a float element type, got %s", op.Name, name, t.Elem)
	}
	return nil
}

func needInt(op *Op, name string, t TensorType) error {
	if t.Elem != I32 && t.Elem != I64 {
		return errorf(op.Loc, "%s: %s must have element type i32 or i64, got %s", op.Name, name, t.Elem)
	}
	return nil
}

func last(t TensorType) Dim { return t.Shape[t.Rank()-1] }

func inferParam(op *Op) ([]Type, error) {
	if len(op.Results) != 1 {
		return nil, errorf(op.Loc, "llmir.param declares exactly one result")
	}
	if _, ok := op.Results[0].Type.(TensorType); !ok {
		return nil, errorf(op.Loc, "llmir.param: result must be a tensor, got %s", op.Results[0].Type)
	}
	return []Type{op.Results[0].Type}, nil
}

// inferReshape checks that the declared result holds as many elements as
// x: equal static products and the same symbolic dims.
func inferReshape(op *Op) ([]Type, error) {
	if len(op.Results) != 1 {
		return nil, errorf(op.Loc, "llmir.reshape declares exactly one result")
	}
	x, err := tensorOperand(op, 0)
	if err != nil {
		return nil, err
	}
	r, ok := op.Results[0].Type.(TensorType)
	if !ok || r.Elem != x.Elem {
		return nil, errorf(op.Loc, "llmir.reshape: result must be a tensor of %s, got %s", x.Elem, op.Results[0].Type)
	}
	count := func(t TensorType) (int64, []string, bool) {
		n, named := int64(1), true
		var syms []string
		for _, d := range t.Shape {
			switch {
			case !d.IsDynamic():
				n *= d.Size
			case d.Sym == "":
				named = false
			default:
				syms = append(syms, d.Sym)
			}
		}
		sort.Strings(syms)
		return n, syms, named
	}
	xn, xs, xok := count(x)
	rn, rs, rok := count(r)
	if xok && rok && (xn != rn || strings.Join(xs, ",") != strings.Join(rs, ",")) {
		return nil, errorf(op.Loc, "llmir.reshape: %s and %s hold different numbers of elements", x, r)
	}
	return []Type{r}, nil
}

func inferEmbedding(op *Op) ([]Type, error) {
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	ids, table := ts[0], ts[1]
	if err := needInt(op, "ids", ids); err != nil {
		return nil, err
	}
	if table.Rank() != 2 {
		return nil, errorf(op.Loc, "llmir.embedding: table must be [vocab, hidden], got %s", table)
	}
	return []Type{Tensor(table.Elem, append(append([]Dim(nil), ids.Shape...), table.Shape[1])...)}, nil
}

func inferLinear(op *Op) ([]Type, error) {
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	x, w := ts[0], ts[1]
	if err := needRank(op, "x", x, 1); err != nil {
		return nil, err
	}
	if err := needFloat(op, "x", x); err != nil {
		return nil, err
	}
	if w.Rank() != 2 {
		return nil, errorf(op.Loc, "llmir.linear: w must be 2-D, got %s", w)
	}
	if w.Elem != x.Elem {
		return nil, errorf(op.Loc, "llmir.linear: w element type %s differs from x's %s", w.Elem, x.Elem)
	}
	in, out := w.Shape[1], w.Shape[0]
	if op.Attrs.Str("weight_layout", "nk") == "kn" {
		in, out = w.Shape[0], w.Shape[1]
	}
	if _, err := sameDim(op, "x's last dim against w's input dim", last(x), in); err != nil {
		return nil, err
	}
	if len(ts) == 3 {
		b := ts[2]
		if b.Rank() != 1 || b.Elem != x.Elem {
			return nil, errorf(op.Loc, "llmir.linear: bias must be [%s] of %s, got %s", out, x.Elem, b)
		}
		if out, err = sameDim(op, "bias against w's output dim", b.Shape[0], out); err != nil {
			return nil, err
		}
	}
	return []Type{x.WithDim(x.Rank()-1, out)}, nil
}

func inferQuantLinear(op *Op) ([]Type, error) {
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	x, w, s := ts[0], ts[1], ts[2]
	if err := needRank(op, "x", x, 1); err != nil {
		return nil, err
	}
	if err := needFloat(op, "x", x); err != nil {
		return nil, err
	}
	bits := op.Attrs.Int("bits", 0)
	want := map[int64]ElemType{8: I8, 4: I4}[bits]
	if want == "" {
		return nil, errorf(op.Loc, "llmir.quantized_linear: bits must be 4 or 8, got %d", bits)
	}
	if w.Rank() != 2 || w.Elem != want {
		return nil, errorf(op.Loc, "llmir.quantized_linear: w must be [out, in] of %s for bits = %d, got %s", want, bits, w)
	}
	g := op.Attrs.Int("group_size", 0)
	if g <= 0 {
		return nil, errorf(op.Loc, "llmir.quantized_linear: group_size must be positive, got %d", g)
	}
	k := w.Shape[1]
	if _, err := sameDim(op, "x's last dim against w's input dim", last(x), k); err != nil {
		return nil, err
	}
	if s.Rank() != 2 || s.Elem != x.Elem {
		return nil, errorf(op.Loc, "llmir.quantized_linear: scales must be [out, in/group_size] of %s, got %s", x.Elem, s)
	}
	if _, err := sameDim(op, "scales' rows against w's", s.Shape[0], w.Shape[0]); err != nil {
		return nil, err
	}
	if !k.IsDynamic() {
		if k.Size%g != 0 {
			return nil, errorf(op.Loc, "llmir.quantized_linear: input dim %d is not a multiple of group_size %d", k.Size, g)
		}
		if _, err := sameDim(op, "scales' columns against in/group_size", s.Shape[1], S(k.Size/g)); err != nil {
			return nil, err
		}
	}
	return []Type{x.WithDim(x.Rank()-1, w.Shape[0])}, nil
}

func inferNorm(op *Op) ([]Type, error) {
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	x := ts[0]
	if err := needRank(op, "x", x, 1); err != nil {
		return nil, err
	}
	if err := needFloat(op, "x", x); err != nil {
		return nil, err
	}
	if op.Attrs.Float("eps", 0) <= 0 {
		return nil, errorf(op.Loc, "%s: eps must be positive", op.Name)
	}
	h := last(x)
	for i, p := range ts[1:] {
		name := op.Name[len("llmir."):] + " " + []string{"weight", "bias"}[i]
		if p.Rank() != 1 || p.Elem != x.Elem {
			return nil, errorf(op.Loc, "%s: %s must be [%s] of %s, got %s", op.Name, name, h, x.Elem, p)
		}
		if h, err = sameDim(op, name, h, p.Shape[0]); err != nil {
			return nil, err
		}
	}
	return []Type{x.WithDim(x.Rank()-1, h)}, nil
}

func inferRope(op *Op) ([]Type, error) {
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	x, pos := ts[0], ts[1]
	if err := needRank(op, "x", x, 3); err != nil {
		return nil, err
	}
	if err := needFloat(op, "x", x); err != nil {
		return nil, err
	}
	if err := needInt(op, "positions", pos); err != nil {
		return nil, err
	}
	if pos.Rank() != x.Rank()-2 {
		return nil, errorf(op.Loc, "llmir.rope: positions must have x's leading %d dims, got %s", x.Rank()-2, pos)
	}
	out := x
	for i := range pos.Shape {
		d, err := sameDim(op, fmt.Sprintf("positions dim %d", i), x.Shape[i], pos.Shape[i])
		if err != nil {
			return nil, err
		}
		out = out.WithDim(i, d)
	}
	hd := last(x)
	if r := op.Attrs.Int("rotary_dim", 0); r != 0 && (r < 0 || r%2 != 0 || (!hd.IsDynamic() && r > hd.Size)) {
		return nil, errorf(op.Loc, "llmir.rope: rotary_dim %d must be even and at most head_dim %s", r, hd)
	}
	if !hd.IsDynamic() && hd.Size%2 != 0 {
		return nil, errorf(op.Loc, "llmir.rope: head_dim %d must be even", hd.Size)
	}
	if a, ok := op.Attrs.Get("scaling"); ok {
		if err := checkRopeScaling(Attrs(a.(DictAttr))); err != nil {
			return nil, errorf(op.Loc, "llmir.rope: scaling: %v", err)
		}
	}
	return []Type{out}, nil
}

// checkRopeScaling validates the rope_scaling dictionary of HF configs.
func checkRopeScaling(d Attrs) error {
	kind := d.Str("type", "")
	switch kind {
	case "linear", "dynamic", "llama3", "yarn":
	default:
		return fmt.Errorf("type must be linear, dynamic, llama3 or yarn, got %q", kind)
	}
	if d.Float("factor", 0) <= 0 {
		return fmt.Errorf("factor must be positive")
	}
	return nil
}

func inferSame(op *Op) ([]Type, error) {
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	if op.Name != "llmir.all_reduce" {
		if err := needFloat(op, "x", ts[0]); err != nil {
			return nil, err
		}
	} else if op.Attrs.Int("world_size", 0) < 1 {
		return nil, errorf(op.Loc, "llmir.all_reduce: world_size must be ≥ 1")
	}
	return []Type{ts[0]}, nil
}

func inferBroadcast(op *Op) ([]Type, error) {
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	a, b := ts[0], ts[1]
	if a.Elem != b.Elem {
		return nil, errorf(op.Loc, "%s: element types differ: %s and %s", op.Name, a.Elem, b.Elem)
	}
	long, short := a, b
	if b.Rank() > a.Rank() {
		long, short = b, a
	}
	out := long
	off := long.Rank() - short.Rank()
	for i, d := range short.Shape {
		ld := long.Shape[off+i]
		switch {
		case !d.IsDynamic() && d.Size == 1:
			continue
		case !ld.IsDynamic() && ld.Size == 1:
			out = out.WithDim(off+i, d)
		default:
			u, err := sameDim(op, fmt.Sprintf("broadcast dim %d", off+i), ld, d)
			if err != nil {
				return nil, err
			}
			out = out.WithDim(off+i, u)
		}
	}
	return []Type{out}, nil
}

func normAxis(op *Op, rank int) (int, error) {
	ax := op.Attrs.Int("axis", -1)
	if ax < 0 {
		ax += int64(rank)
	}
	if ax < 0 || ax >= int64(rank) {
		return 0, errorf(op.Loc, "%s: axis %d out of range for rank %d", op.Name, op.Attrs.Int("axis", -1), rank)
	}
	return int(ax), nil
}

func inferSoftmax(op *Op) ([]Type, error) {
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	if err := needFloat(op, "x", ts[0]); err != nil {
		return nil, err
	}
	if _, err := normAxis(op, ts[0].Rank()); err != nil {
		return nil, err
	}
	return []Type{ts[0]}, nil
}

func inferArgmax(op *Op) ([]Type, error) {
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	x := ts[0]
	ax, err := normAxis(op, x.Rank())
	if err != nil {
		return nil, err
	}
	shape := append(append([]Dim(nil), x.Shape[:ax]...), x.Shape[ax+1:]...)
	return []Type{Tensor(I64, shape...)}, nil
}

func checkGQA(op *Op, hq, hkv Dim) error {
	if !hq.IsDynamic() && !hkv.IsDynamic() && (hkv.Size == 0 || hq.Size%hkv.Size != 0) {
		return errorf(op.Loc, "%s: query heads %d must be a multiple of KV heads %d", op.Name, hq.Size, hkv.Size)
	}
	return nil
}

func inferAttention(op *Op) ([]Type, error) {
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	q, k, v := ts[0], ts[1], ts[2]
	for i, t := range ts {
		if t.Rank() != 4 {
			return nil, errorf(op.Loc, "llmir.attention: %s must be [batch, seq, heads, head_dim], got %s", []string{"q", "k", "v"}[i], t)
		}
		if err := needFloat(op, "q", t); err != nil {
			return nil, err
		}
	}
	if k.String() != v.String() {
		if _, err := sameDim(op, "k and v kv_len", k.Shape[1], v.Shape[1]); err != nil {
			return nil, err
		}
		if _, err := sameDim(op, "k and v heads", k.Shape[2], v.Shape[2]); err != nil {
			return nil, err
		}
	}
	if _, err := sameDim(op, "q and k batch", q.Shape[0], k.Shape[0]); err != nil {
		return nil, err
	}
	if _, err := sameDim(op, "q and k head_dim", q.Shape[3], k.Shape[3]); err != nil {
		return nil, err
	}
	if err := checkGQA(op, q.Shape[2], k.Shape[2]); err != nil {
		return nil, err
	}
	if w := op.Attrs.Int("sliding_window", 0); w < 0 {
		return nil, errorf(op.Loc, "llmir.attention: sliding_window must be ≥ 0")
	}
	return []Type{q.WithDim(3, v.Shape[3])}, nil
}

func inferPagedAttention(op *Op) ([]Type, error) {
	kv, ok := op.Operands[1].Type.(PagedKVType)
	if !ok {
		return nil, errorf(op.Loc, "llmir.paged_attention: cache must be !llmir.paged_kv, got %s", op.Operands[1].Type)
	}
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	q, bt, cl := ts[0], ts[2], ts[3]
	if q.Rank() != 3 {
		return nil, errorf(op.Loc, "llmir.paged_attention: q must be [batch, heads, head_dim], got %s", q)
	}
	if err := needFloat(op, "q", q); err != nil {
		return nil, err
	}
	if _, err := sameDim(op, "q head_dim against the cache's", q.Shape[2], S(kv.HeadDim)); err != nil {
		return nil, err
	}
	if err := checkGQA(op, q.Shape[1], S(kv.KVHeads)); err != nil {
		return nil, err
	}
	if bt.Rank() != 2 || bt.Elem != I32 {
		return nil, errorf(op.Loc, "llmir.paged_attention: block_tables must be [batch, max_blocks] of i32, got %s", bt)
	}
	if cl.Rank() != 1 || cl.Elem != I32 {
		return nil, errorf(op.Loc, "llmir.paged_attention: context_lens must be [batch] of i32, got %s", cl)
	}
	b, err := sameDim(op, "q batch against block_tables'", q.Shape[0], bt.Shape[0])
	if err != nil {
		return nil, err
	}
	if b, err = sameDim(op, "batch against context_lens'", b, cl.Shape[0]); err != nil {
		return nil, err
	}
	if err := checkLayer(op, kv); err != nil {
		return nil, err
	}
	return []Type{q.WithDim(0, b)}, nil
}

func checkLayer(op *Op, kv PagedKVType) error {
	if l := op.Attrs.Int("layer", -1); l < 0 || l >= kv.Layers {
		return errorf(op.Loc, "%s: layer %d out of range: the cache has %d layers", op.Name, l, kv.Layers)
	}
	return nil
}

func inferAppendKV(op *Op) ([]Type, error) {
	kv, ok := op.Operands[0].Type.(PagedKVType)
	if !ok {
		return nil, errorf(op.Loc, "llmir.append_kv: cache must be !llmir.paged_kv, got %s", op.Operands[0].Type)
	}
	ts, err := tensors(op)
	if err != nil {
		return nil, err
	}
	k, v, slots := ts[1], ts[2], ts[3]
	for i, t := range []TensorType{k, v} {
		name := []string{"k", "v"}[i]
		if err := needRank(op, name, t, 2); err != nil {
			return nil, err
		}
		if _, err := sameDim(op, name+" heads against the cache's", t.Shape[t.Rank()-2], S(kv.KVHeads)); err != nil {
			return nil, err
		}
		if _, err := sameDim(op, name+" head_dim against the cache's", last(t), S(kv.HeadDim)); err != nil {
			return nil, err
		}
	}
	if err := needInt(op, "slot_mapping", slots); err != nil {
		return nil, err
	}
	if slots.Rank() != k.Rank()-2 {
		return nil, errorf(op.Loc, "llmir.append_kv: slot_mapping must have k's leading %d dims, got %s", k.Rank()-2, slots)
	}
	for i := range slots.Shape {
		if _, err := sameDim(op, fmt.Sprintf("slot_mapping dim %d", i), k.Shape[i], slots.Shape[i]); err != nil {
			return nil, err
		}
	}
	if err := checkLayer(op, kv); err != nil {
		return nil, err
	}
	return []Type{kv}, nil
}
