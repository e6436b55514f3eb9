package schedule

import (
	"errors"
	"fmt"
	"strings"
)

// DType is a storage element type. Arithmetic is always f32 (f64 in the
// interpreter); bf16 and f16 are storage formats converted on load and store.
// The integer types are for the parameters of template kernels (block
// tables, token ids, quantized weights; U8 holds two int4 values per byte):
// loop nests lowered from stage definitions compute in floats only.
type DType int

// Storage element types.
const (
	F32 DType = iota
	BF16
	F16
	I32
	I8
	U8
)

var dtypeNames = [...]string{"f32", "bf16", "f16", "i32", "i8", "u8"}

func (d DType) String() string { return dtypeNames[d] }

// Size is the storage size in bytes.
func (d DType) Size() int64 { return [...]int64{4, 2, 2, 4, 1, 1}[d] }

// Float reports whether d is a floating-point type.
func (d DType) Float() bool { return d <= F16 }

// ParseDType reads a dtype name ("f32", "bf16", "f16", "i32", "i8", "u8").
func ParseDType(s string) (DType, error) {
	for i, n := range dtypeNames {
		if n == s {
			return DType(i), nil
		}
	}
	return 0, fmt.Errorf("unknown dtype %q (want one of %s)", s, strings.Join(dtypeNames[:], ", "))
}

// Dim is a tensor dimension: static, or dynamic with a bucket extent (the
// largest runtime extent a kernel built for it must handle) and a runtime
// extent read from dims[j].
type Dim struct {
	Name    string // for dynamic dims; the ABI index is assigned by NewDef
	Extent  int64  // static extent, or the bucket of a dynamic dim
	Dynamic bool
}

// Static returns a static dimension.
func Static(n int64) Dim { return Dim{Extent: n} }

// Dynamic returns a dynamic dimension with the given bucket.
func Dynamic(name string, bucket int64) Dim { return Dim{Name: name, Extent: bucket, Dynamic: true} }

func (d Dim) String() string {
	if d.Dynamic {
		return fmt.Sprintf("%s<=%d", d.Name, d.Extent)
	}
	return fmt.Sprint(d.Extent)
}

// Axis is a named iteration axis over a dimension. In a stage body an axis
// is used as an index expression.
type Axis struct {
	Name string
	Dim  Dim
}

// NewAxis returns an axis over d.
func NewAxis(name string, d Dim) Axis { return Axis{Name: name, Dim: d} }

func (a Axis) exprNode()      {}
func (a Axis) String() string { return a.Name }

// Tensor is a named, typed, dense row-major array. Inputs are made by Input,
// computed tensors by Compute.
type Tensor struct {
	Name  string
	DType DType
	Shape []Dim
	stage *Stage
}

// Input declares an input tensor.
func Input(name string, dt DType, shape ...Dim) *Tensor {
	return &Tensor{Name: name, DType: dt, Shape: shape}
}

// At reads t at the given indices.
func (t *Tensor) At(idx ...Expr) Expr { return Load{Buf: t.Name, Index: idx, t: t} }

// Stage is one statement of a definition: Out[Axes] = Body, or for a
// reduction Out[Axes] = Init then Out[Axes] += Value over RAxes.
type Stage struct {
	Out   *Tensor
	Axes  []Axis
	RAxes []Axis
	Init  Expr // reductions only
	Value Expr // the summand for reductions, else the whole body
	err   error
}

// Reduce reports whether the stage is a reduction.
func (s *Stage) Reduce() bool { return len(s.RAxes) > 0 }

// Sum is the reduction sum(axis, body) with init 0.
func Sum(axis Axis, body Expr) Expr {
	if r, ok := body.(Reduce); ok {
		return Reduce{Axes: append([]Axis{axis}, r.Axes...), Body: r.Body}
	}
	return Reduce{Axes: []Axis{axis}, Body: body}
}

// Compute defines tensor name[axes] = body. A reduction (Sum) may only be
// the whole body; element-wise epilogues are further Compute stages reading
// this one. Errors are reported by NewDef.
func Compute(name string, dt DType, axes []Axis, body Expr) *Tensor {
	shape := make([]Dim, len(axes))
	for i, a := range axes {
		shape[i] = a.Dim
	}
	t := &Tensor{Name: name, DType: dt, Shape: shape}
	st := &Stage{Out: t, Axes: axes}
	toVar := func(e Expr) Expr {
		return Rewrite(e, func(x Expr) Expr {
			if a, ok := x.(Axis); ok {
				return Var{a.Name}
			}
			return x
		})
	}
	if r, ok := body.(Reduce); ok {
		st.RAxes = r.Axes
		st.Init = Float{0}
		st.Value = toVar(r.Body)
	} else {
		st.Value = toVar(body)
	}
	Visit(st.Value, func(x Expr) {
		if _, ok := x.(Reduce); ok {
			st.err = fmt.Errorf("stage %s: sum() must be the whole body, not nested inside it", name)
		}
	})
	t.stage = st
	return t
}

// Def is a compute definition: inputs, outputs (in ABI order), the stages
// computing them, intermediate tensors and the dynamic dims.
type Def struct {
	Name    string
	Inputs  []*Tensor
	Outputs []*Tensor
	Temps   []*Tensor
	Stages  []*Stage
	Dims    []Dim // dynamic dims, dims[j] in the ABI
	// Template is set by NewTemplateDef: the computation is given by the
	// kernel's generator and reference, Meaning says it in words, and the
	// nest has no loops (only sampling steps apply to it).
	Template bool
	Meaning  string
}

// Sentinel errors of definitions.
var ErrBadDef = errors.New("invalid compute definition")

// NewDef collects the stages that compute outputs from inputs, checks names,
// ranks and axes, and numbers the dynamic dims (first appearance in inputs,
// then outputs).
func NewDef(name string, inputs []*Tensor, outputs ...*Tensor) (*Def, error) {
	d := &Def{Name: name, Inputs: inputs, Outputs: outputs}
	names := map[string]*Tensor{}
	for _, t := range inputs {
		if t.stage != nil {
			return nil, fmt.Errorf("%w: input %s is computed", ErrBadDef, t.Name)
		}
		if names[t.Name] != nil {
			return nil, fmt.Errorf("%w: duplicate tensor name %s", ErrBadDef, t.Name)
		}
		names[t.Name] = t
	}
	isOut := map[*Tensor]bool{}
	for _, t := range outputs {
		if t.stage == nil {
			return nil, fmt.Errorf("%w: output %s is not computed", ErrBadDef, t.Name)
		}
		isOut[t] = true
	}
	done := map[*Tensor]bool{}
	var visit func(t *Tensor) error
	visit = func(t *Tensor) error {
		if t.stage == nil {
			if names[t.Name] != t {
				return fmt.Errorf("%w: tensor %s is read but is neither an input nor computed", ErrBadDef, t.Name)
			}
			return nil
		}
		if done[t] {
			return nil
		}
		done[t] = true
		st := t.stage
		if st.err != nil {
			return fmt.Errorf("%w: %w", ErrBadDef, st.err)
		}
		var err error
		axes := map[string]Dim{}
		for _, a := range append(append([]Axis{}, st.Axes...), st.RAxes...) {
			if _, dup := axes[a.Name]; dup {
				return fmt.Errorf("%w: stage %s: axis %s used twice", ErrBadDef, t.Name, a.Name)
			}
			axes[a.Name] = a.Dim
		}
		Visit(st.Value, func(x Expr) {
			switch x := x.(type) {
			case Load:
				if err == nil && x.t != nil && len(x.Index) != len(x.t.Shape) {
					err = fmt.Errorf("%w: stage %s: %s has rank %d, indexed with %d", ErrBadDef, t.Name, x.Buf, len(x.t.Shape), len(x.Index))
				}
				if err == nil && x.t != nil {
					err = visit(x.t)
				}
			case Var:
				if _, ok := axes[x.Name]; !ok && err == nil {
					err = fmt.Errorf("%w: stage %s: unknown axis %s", ErrBadDef, t.Name, x.Name)
				}
			case Call:
				if f, ok := Funcs[x.Fn]; !ok || f.Arity != len(x.Args) {
					err = fmt.Errorf("%w: stage %s: unknown function %s/%d", ErrBadDef, t.Name, x.Fn, len(x.Args))
				}
			}
		})
		if err != nil {
			return err
		}
		if names[t.Name] != nil {
			return fmt.Errorf("%w: duplicate tensor name %s", ErrBadDef, t.Name)
		}
		names[t.Name] = t
		d.Stages = append(d.Stages, st)
		if !isOut[t] {
			d.Temps = append(d.Temps, t)
		}
		return nil
	}
	for _, t := range outputs {
		if err := visit(t); err != nil {
			return nil, err
		}
	}
	seen := map[string]Dim{}
	addDims := func(ds []Dim) error {
		for _, dm := range ds {
			if !dm.Dynamic {
				if dm.Extent <= 0 {
					return fmt.Errorf("%w: non-positive extent %d", ErrBadDef, dm.Extent)
				}
				continue
			}
			if old, ok := seen[dm.Name]; ok {
				if old.Extent != dm.Extent {
					return fmt.Errorf("%w: dynamic dim %s has buckets %d and %d", ErrBadDef, dm.Name, old.Extent, dm.Extent)
				}
				continue
			}
			if dm.Extent <= 0 {
				return fmt.Errorf("%w: dynamic dim %s has bucket %d", ErrBadDef, dm.Name, dm.Extent)
			}
			seen[dm.Name] = dm
			d.Dims = append(d.Dims, dm)
		}
		return nil
	}
	for _, t := range d.Params() {
		if err := addDims(t.Shape); err != nil {
			return nil, err
		}
	}
	for _, st := range d.Stages {
		for _, a := range append(append([]Axis{}, st.Axes...), st.RAxes...) {
			if err := addDims([]Dim{a.Dim}); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

// Declare is an output of a template definition: a tensor computed by the
// kernel's generator rather than by a stage.
func Declare(name string, dt DType, shape ...Dim) *Tensor {
	return &Tensor{Name: name, DType: dt, Shape: shape}
}

// NewTemplateDef is the definition of a template kernel: its parameters
// (inputs, then outputs made by Declare) and dynamic dims, with the
// computation stated in words (meaning) and implemented by the kernel's
// generator. Such kernels are those the loop-nest IR does not express
// (data-dependent extents like a paged KV cache's ragged lengths, indirect
// loads through block tables, bit-level unpacking of int4); their schedules
// are knob choices made by sampling steps, so traces, mutation and replay
// work as for any other kernel.
func NewTemplateDef(name, meaning string, inputs []*Tensor, outputs ...*Tensor) (*Def, error) {
	d := &Def{Name: name, Inputs: inputs, Outputs: outputs, Template: true, Meaning: meaning}
	if len(outputs) == 0 {
		return nil, fmt.Errorf("%w: template %s has no output", ErrBadDef, name)
	}
	names := map[string]bool{}
	seen := map[string]Dim{}
	for _, t := range d.Params() {
		if t.stage != nil {
			return nil, fmt.Errorf("%w: template %s: %s is computed by a stage", ErrBadDef, name, t.Name)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("%w: template %s: duplicate tensor name %s", ErrBadDef, name, t.Name)
		}
		names[t.Name] = true
		for _, dm := range t.Shape {
			if dm.Extent <= 0 {
				return nil, fmt.Errorf("%w: template %s: %s has extent %d", ErrBadDef, name, t.Name, dm.Extent)
			}
			if !dm.Dynamic {
				continue
			}
			if old, ok := seen[dm.Name]; ok {
				if old.Extent != dm.Extent {
					return nil, fmt.Errorf("%w: dynamic dim %s has buckets %d and %d", ErrBadDef, dm.Name, old.Extent, dm.Extent)
				}
				continue
			}
			seen[dm.Name] = dm
			d.Dims = append(d.Dims, dm)
		}
	}
	return d, nil
}

// Params returns the ABI buffer order: inputs, then outputs.
func (d *Def) Params() []*Tensor {
	return append(append([]*Tensor{}, d.Inputs...), d.Outputs...)
}

// DimIndex returns the ABI index of dynamic dim name, or -1.
func (d *Def) DimIndex(name string) int {
	for i, dm := range d.Dims {
		if dm.Name == name {
			return i
		}
	}
	return -1
}

// String prints the definition, one stage per line, e.g.
// `out[i, j] = sum(k, a[i, k] * w[j, k])`.
func (d *Def) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "def %s\n", d.Name)
	decl := func(kind string, t *Tensor) {
		ds := make([]string, len(t.Shape))
		for i, dm := range t.Shape {
			ds[i] = dm.String()
		}
		fmt.Fprintf(&b, "  %s %s: %s[%s]\n", kind, t.Name, t.DType, strings.Join(ds, ", "))
	}
	for _, t := range d.Inputs {
		decl("in", t)
	}
	for _, t := range d.Outputs {
		decl("out", t)
	}
	for _, t := range d.Temps {
		decl("temp", t)
	}
	for _, st := range d.Stages {
		b.WriteString("  " + st.String() + "\n")
	}
	if d.Template {
		b.WriteString("  template: " + d.Meaning + "\n")
	}
	return b.String()
}

func (s *Stage) String() string {
	names := make([]string, len(s.Axes))
	for i, a := range s.Axes {
		names[i] = a.Name
	}
	lhs := s.Out.Name + "[" + strings.Join(names, ", ") + "]"
	if s.Reduce() {
		return lhs + " = " + Reduce{Axes: s.RAxes, Body: s.Value}.String()
	}
	return lhs + " = " + s.Value.String()
}
