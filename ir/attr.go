package ir

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Attr is a compile-time constant attached to an op.
type Attr interface {
	String() string
	isAttr()
}

// IntAttr is an integer `16 : i64`.
type IntAttr struct {
	V int64
	T ElemType
}

// FloatAttr is a float `1.0e-05 : f32`; V is already rounded to T.
type FloatAttr struct {
	V float64
	T ElemType
}

// StrAttr is a string `"neox"`.
type StrAttr string

// BoolAttr is `true` or `false`.
type BoolAttr bool

// UnitAttr is a present-or-absent flag, written as its name alone.
type UnitAttr struct{}

// ArrayAttr is `[a, b, …]`.
type ArrayAttr []Attr

// DictAttr is `{a = 1 : i64, …}`, kept sorted by name.
type DictAttr []NamedAttr

// TypeAttr holds a type, e.g. an element type `bf16`.
type TypeAttr struct{ T Type }

func (IntAttr) isAttr()   {}
func (FloatAttr) isAttr() {}
func (StrAttr) isAttr()   {}
func (BoolAttr) isAttr()  {}
func (UnitAttr) isAttr()  {}
func (ArrayAttr) isAttr() {}
func (DictAttr) isAttr()  {}
func (TypeAttr) isAttr()  {}

// I64 and F32 build the common attribute kinds.
func I64Attr(v int64) IntAttr { return IntAttr{V: v, T: I64} }
func F32Attr(v float64) FloatAttr {
	return FloatAttr{V: RoundFloat(v, F32), T: F32}
}
func F64Attr(v float64) FloatAttr { return FloatAttr{V: v, T: F64} }

func (a IntAttr) String() string { return fmt.Sprintf("%d : %s", a.V, a.T) }

func (a FloatAttr) String() string { return formatFloat(a.V, a.T) + " : " + string(a.T) }

func (a StrAttr) String() string { return quote(string(a)) }

func (a BoolAttr) String() string {
	if a {
		return "true"
	}
	return "false"
}

func (UnitAttr) String() string { return "unit" }

func (a ArrayAttr) String() string {
	parts := make([]string, len(a))
	for i, e := range a {
		parts[i] = e.String()
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (a DictAttr) String() string { return "{" + Attrs(a).body() + "}" }

func (a TypeAttr) String() string { return a.T.String() }

// formatFloat prints the shortest decimal that reads back to the same value
// of type t, always with a '.', which MLIR's lexer requires of a float.
func formatFloat(v float64, t ElemType) string {
	switch {
	case math.IsInf(v, 0) || math.IsNaN(v):
		return hexFloat(v, t)
	}
	bits := 64
	if t != F64 {
		bits = 32
	}
	s := strconv.FormatFloat(v, 'e', -1, bits)
	mant, exp, _ := strings.Cut(s, "e")
	if !strings.Contains(mant, ".") {
		mant += ".0"
	}
	return mant + "e" + exp
}

// hexFloat prints MLIR's bit-pattern form for values decimal cannot spell.
func hexFloat(v float64, t ElemType) string {
	switch t {
	case F64:
		return fmt.Sprintf("0x%016X", math.Float64bits(v))
	case F16:
		return fmt.Sprintf("0x%04X", f32ToF16(float32(v)))
	case BF16:
		return fmt.Sprintf("0x%04X", f32ToBF16(float32(v)))
	}
	return fmt.Sprintf("0x%08X", math.Float32bits(float32(v)))
}

// floatFromBits reads MLIR's hexadecimal float form for type t.
func floatFromBits(bits uint64, t ElemType) float64 {
	switch t {
	case F64:
		return math.Float64frombits(bits)
	case F16:
		return float64(f16ToF32(uint16(bits)))
	case BF16:
		return float64(math.Float32frombits(uint32(bits) << 16))
	}
	return float64(math.Float32frombits(uint32(bits)))
}

// RoundFloat rounds v to the nearest value of float type t.
func RoundFloat(v float64, t ElemType) float64 {
	switch t {
	case F32:
		return float64(float32(v))
	case BF16:
		return float64(math.Float32frombits(uint32(f32ToBF16(float32(v))) << 16))
	case F16:
		return float64(f16ToF32(f32ToF16(float32(v))))
	}
	return v
}

// f32ToBF16 rounds to nearest even.
func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// f32ToF16 rounds to nearest even, with subnormals and overflow to infinity.
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int((b>>23)&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case (b>>23)&0xff == 0xff:
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp >= 0x1f:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - exp)
		half := uint32(1) << (shift - 1)
		r := mant >> shift
		rem := mant & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	return sign | uint16(r)
}

func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		f := float32(mant) / 1024 / 16384
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// quote writes s as an MLIR string literal.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "\\%02X", c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// NamedAttr is one `name = value` entry.
type NamedAttr struct {
	Name  string
	Value Attr
}

// Attrs is an op's attribute dictionary, sorted by name as MLIR prints it.
type Attrs []NamedAttr

// Get returns the attribute called name.
func (as Attrs) Get(name string) (Attr, bool) {
	i := sort.Search(len(as), func(i int) bool { return as[i].Name >= name })
	if i < len(as) && as[i].Name == name {
		return as[i].Value, true
	}
	return nil, false
}

// Set adds or replaces an attribute, keeping the order.
func (as *Attrs) Set(name string, v Attr) {
	s := *as
	i := sort.Search(len(s), func(i int) bool { return s[i].Name >= name })
	if i < len(s) && s[i].Name == name {
		s[i].Value = v
		return
	}
	s = append(s, NamedAttr{})
	copy(s[i+1:], s[i:])
	s[i] = NamedAttr{Name: name, Value: v}
	*as = s
}

// Delete removes an attribute if present.
func (as *Attrs) Delete(name string) {
	s := *as
	for i := range s {
		if s[i].Name == name {
			*as = append(s[:i], s[i+1:]...)
			return
		}
	}
}

// Int returns an integer attribute or def when absent.
func (as Attrs) Int(name string, def int64) int64 {
	if a, ok := as.Get(name); ok {
		if v, ok := a.(IntAttr); ok {
			return v.V
		}
	}
	return def
}

// Float returns a float (or integer) attribute or def when absent.
func (as Attrs) Float(name string, def float64) float64 {
	if a, ok := as.Get(name); ok {
		switch v := a.(type) {
		case FloatAttr:
			return v.V
		case IntAttr:
			return float64(v.V)
		}
	}
	return def
}

// Str returns a string attribute or def when absent.
func (as Attrs) Str(name, def string) string {
	if a, ok := as.Get(name); ok {
		if v, ok := a.(StrAttr); ok {
			return string(v)
		}
	}
	return def
}

// Bool returns a boolean or unit attribute, or def when absent.
func (as Attrs) Bool(name string, def bool) bool {
	if a, ok := as.Get(name); ok {
		switch v := a.(type) {
		case BoolAttr:
			return bool(v)
		case UnitAttr:
			return true
		}
	}
	return def
}

func (as Attrs) body() string {
	parts := make([]string, len(as))
	for i, a := range as {
		if _, unit := a.Value.(UnitAttr); unit {
			parts[i] = a.Name
		} else {
			parts[i] = a.Name + " = " + a.Value.String()
		}
	}
	return strings.Join(parts, ", ")
}

func (as Attrs) String() string { return "{" + as.body() + "}" }
