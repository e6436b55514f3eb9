package ir

import "fmt"

// Loc is a source position, 1-based. A zero Loc means "made by llmir".
type Loc struct {
	File      string
	Line, Col int
}

func (l Loc) String() string {
	if l.Line == 0 {
		if l.File != "" {
			return l.File
		}
		return "<llmir>"
	}
	f := l.File
	if f == "" {
		f = "<input>"
	}
	return fmt.Sprintf("%s:%d:%d", f, l.Line, l.Col)
}

// Error is a problem in a module, positioned when the position is known.
type Error struct {
	Loc Loc
	Msg string
}

func (e *Error) Error() string { return e.Loc.String() + ": " + e.Msg }

func errorf(loc Loc, format string, args ...any) error {
	return &Error{Loc: loc, Msg: fmt.Sprintf(format, args...)}
}

// Module is a `builtin.module`: a list of functions.
type Module struct {
	Name  string // optional symbol name
	Attrs Attrs
	Funcs []*Func
	Loc   Loc
}

// Func looks a function up by name.
func (m *Module) Func(name string) *Func {
	for _, f := range m.Funcs {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// Func is a `func.func`: arguments, a straight-line body, and the
// `func.return` that ends it. LLMIR functions have one block: control flow
// lives inside kernels, not between them.
type Func struct {
	Name     string
	Args     []*Value
	ArgAttrs []Attrs // per argument; nil entries when none
	Results  []Type
	Attrs    Attrs
	Body     []*Op // ends with func.return
	Loc      Loc
}

// Type is the function's signature.
func (f *Func) Type() FuncType {
	in := make([]Type, len(f.Args))
	for i, a := range f.Args {
		in[i] = a.Type
	}
	return FuncType{Inputs: in, Results: append([]Type(nil), f.Results...)}
}

// AddArg appends an argument of type t.
func (f *Func) AddArg(t Type) *Value {
	v := &Value{Type: t, ArgIndex: len(f.Args)}
	f.Args = append(f.Args, v)
	f.ArgAttrs = append(f.ArgAttrs, nil)
	return v
}

// Op is one operation. Ops other than func.return produce results.
type Op struct {
	Name     string // full name, "llmir.linear"
	Operands []*Value
	Results  []*Value
	Attrs    Attrs
	Loc      Loc
}

// Value is an SSA value: a function argument or an op result.
type Value struct {
	Type     Type
	Def      *Op // nil for a function argument
	ArgIndex int // for arguments
	Index    int // result number for op results
}

// Result returns the op's single (first) result.
func (o *Op) Result() *Value { return o.Results[0] }

// ReturnName is the op that ends every function.
const ReturnName = "func.return"

// Builder appends ops to a function, inferring result types from the op
// table so that importers never spell out a result type by hand.
type Builder struct {
	F   *Func
	Loc Loc
}

// Declared appends an op whose result type the author chooses (param,
// reshape), after checking it against the op's contract.
func (b *Builder) Declared(name string, attrs Attrs, result Type, operands ...*Value) (*Op, error) {
	op := &Op{Name: name, Operands: operands, Attrs: attrs, Loc: b.Loc}
	op.Results = []*Value{{Type: result, Def: op}}
	def, ok := LookupOp(name)
	if !ok {
		return nil, errorf(b.Loc, "unknown op %q", name)
	}
	if _, err := def.infer(op); err != nil {
		return nil, err
	}
	b.F.Body = append(b.F.Body, op)
	return op, nil
}

// Op appends an op, infers its result types and returns it; an error means
// the operands or attributes break the op's contract.
func (b *Builder) Op(name string, attrs Attrs, operands ...*Value) (*Op, error) {
	op := &Op{Name: name, Operands: operands, Attrs: attrs, Loc: b.Loc}
	def, ok := LookupOp(name)
	if !ok {
		return nil, errorf(b.Loc, "unknown op %q", name)
	}
	types, err := def.infer(op)
	if err != nil {
		return nil, err
	}
	for i, t := range types {
		op.Results = append(op.Results, &Value{Type: t, Def: op, Index: i})
	}
	b.F.Body = append(b.F.Body, op)
	return op, nil
}

// Return appends the func.return of vals and sets the function's results.
func (b *Builder) Return(vals ...*Value) {
	op := &Op{Name: ReturnName, Operands: vals, Loc: b.Loc}
	b.F.Results = nil
	for _, v := range vals {
		b.F.Results = append(b.F.Results, v.Type)
	}
	b.F.Body = append(b.F.Body, op)
}
