package ir

import (
	"fmt"
	"strings"
)

// Type is an LLMIR type: a scalar element type, a ranked tensor, the paged
// KV cache, or a function type. Types are values: compare them with Equal.
type Type interface {
	String() string
	isType()
}

// ElemType is a scalar element type.
type ElemType string

// The element types of LLMIR.
const (
	F32   ElemType = "f32"
	F16   ElemType = "f16"
	BF16  ElemType = "bf16"
	F64   ElemType = "f64"
	I1    ElemType = "i1"
	I4    ElemType = "i4"
	I8    ElemType = "i8"
	I32   ElemType = "i32"
	I64   ElemType = "i64"
	Index ElemType = "index"
)

var elemTypes = map[string]ElemType{
	"f32": F32, "f16": F16, "bf16": BF16, "f64": F64, "i1": I1, "i4": I4,
	"i8": I8, "i32": I32, "i64": I64, "index": Index,
}

// ParseElemType returns the element type named s.
func ParseElemType(s string) (ElemType, bool) {
	t, ok := elemTypes[s]
	return t, ok
}

func (e ElemType) String() string { return string(e) }
func (ElemType) isType()          {}

// IsFloat reports whether e is a floating-point type.
func (e ElemType) IsFloat() bool { return e == F32 || e == F16 || e == BF16 || e == F64 }

// IsInt reports whether e is an integer or index type.
func (e ElemType) IsInt() bool { return !e.IsFloat() }

// Bits is the storage width of one element (index counts as 64).
func (e ElemType) Bits() int {
	switch e {
	case F64, I64, Index:
		return 64
	case F32, I32:
		return 32
	case F16, BF16:
		return 16
	case I8:
		return 8
	case I4:
		return 4
	case I1:
		return 1
	}
	return 0
}

// Dynamic marks a dimension whose extent is known only at run time.
const Dynamic int64 = -1

// Dim is one tensor dimension: a static extent, or a dynamic one that may
// carry a symbolic name ("batch", "seq") so that shape inference can tell
// which dynamic dims are the same.
type Dim struct {
	Size int64  // Dynamic (-1) when not known at compile time
	Sym  string // symbolic name of a dynamic dim; "" when anonymous
}

// S is a static dim; D a named dynamic one.
func S(n int64) Dim           { return Dim{Size: n} }
func D(sym string) Dim        { return Dim{Size: Dynamic, Sym: sym} }
func (d Dim) IsDynamic() bool { return d.Size == Dynamic }

func (d Dim) String() string {
	if d.IsDynamic() {
		if d.Sym != "" {
			return d.Sym
		}
		return "?"
	}
	return fmt.Sprint(d.Size)
}

// TensorType is a ranked tensor `tensor<?x4096xf32>`. Names of dynamic dims
// travel in the encoding `#llmir.dims<["batch", "seq"]>`, one name per `?`
// in order, which upstream MLIR keeps as an opaque attribute.
type TensorType struct {
	Shape []Dim
	Elem  ElemType
}

func (TensorType) isType() {}

// Rank is the number of dimensions.
func (t TensorType) Rank() int { return len(t.Shape) }

// Tensor builds a tensor type.
func Tensor(elem ElemType, dims ...Dim) TensorType {
	return TensorType{Shape: append([]Dim(nil), dims...), Elem: elem}
}

func (t TensorType) String() string {
	var b strings.Builder
	b.WriteString("tensor<")
	var syms []string
	named := false
	for _, d := range t.Shape {
		if d.IsDynamic() {
			b.WriteString("?x")
			syms = append(syms, d.Sym)
			named = named || d.Sym != ""
		} else {
			fmt.Fprintf(&b, "%dx", d.Size)
		}
	}
	b.WriteString(string(t.Elem))
	if named {
		b.WriteString(", #llmir.dims<[")
		for i, s := range syms {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(quote(s))
		}
		b.WriteString("]>")
	}
	b.WriteString(">")
	return b.String()
}

// WithDim returns a copy of t with dimension i replaced.
func (t TensorType) WithDim(i int, d Dim) TensorType {
	s := append([]Dim(nil), t.Shape...)
	s[i] = d
	return TensorType{Shape: s, Elem: t.Elem}
}

// PagedKVType is the paged KV cache of a model: a pool of blocks of
// BlockSize tokens, each holding K and V for KVHeads × HeadDim per layer.
// kvcache owns the physical layout; the type carries what code generation
// needs to know.
type PagedKVType struct {
	BlockSize int64
	KVHeads   int64
	HeadDim   int64
	Elem      ElemType
	Layers    int64
}

func (PagedKVType) isType() {}

func (t PagedKVType) String() string {
	return fmt.Sprintf("!llmir.paged_kv<block_size = %d, kv_heads = %d, head_dim = %d, elem = %s, layers = %d>",
		t.BlockSize, t.KVHeads, t.HeadDim, t.Elem, t.Layers)
}

// FuncType is `(inputs) -> results`.
type FuncType struct {
	Inputs  []Type
	Results []Type
}

func (FuncType) isType() {}

func (t FuncType) String() string {
	var b strings.Builder
	b.WriteString("(")
	writeTypes(&b, t.Inputs)
	b.WriteString(") -> ")
	if len(t.Results) == 1 {
		if _, isFn := t.Results[0].(FuncType); !isFn {
			b.WriteString(t.Results[0].String())
			return b.String()
		}
	}
	b.WriteString("(")
	writeTypes(&b, t.Results)
	b.WriteString(")")
	return b.String()
}

func writeTypes(b *strings.Builder, ts []Type) {
	for i, t := range ts {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(t.String())
	}
}

// Equal reports whether two types are identical, symbolic names included.
func Equal(a, b Type) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.String() == b.String()
}
