package ir

import "errors"

// maxErrors bounds how many problems Verify reports at once.
const maxErrors = 20

// Verify checks every invariant of m: known ops, operands defined before
// use, operand and attribute contracts, declared result types compatible
// with the inferred ones, and returns that match the signature. It is one
// function so that it can run after every pass (llmir opt --verify-each).
func Verify(m *Module) error {
	var errs []error
	add := func(err error) bool {
		errs = append(errs, err)
		return len(errs) < maxErrors
	}
	seen := map[string]bool{}
	for _, f := range m.Funcs {
		if seen[f.Name] {
			add(errorf(f.Loc, "function @%s defined twice", f.Name))
		}
		seen[f.Name] = true
		if !verifyFunc(f, add) {
			break
		}
	}
	return errors.Join(errs...)
}

func verifyFunc(f *Func, add func(error) bool) bool {
	if f.Name == "" {
		return add(errorf(f.Loc, "function without a name"))
	}
	if len(f.ArgAttrs) != len(f.Args) {
		return add(errorf(f.Loc, "@%s: %d argument attribute lists for %d arguments", f.Name, len(f.ArgAttrs), len(f.Args)))
	}
	if err := verifyFuncAttrs(f); err != nil && !add(err) {
		return false
	}
	defined := map[*Value]bool{}
	for i, a := range f.Args {
		if a.Def != nil || a.ArgIndex != i {
			return add(errorf(f.Loc, "@%s: argument %d is not this function's argument", f.Name, i))
		}
		defined[a] = true
	}
	if len(f.Body) == 0 || f.Body[len(f.Body)-1].Name != ReturnName {
		return add(errorf(f.Loc, "function @%s does not end with func.return", f.Name))
	}
	for i, op := range f.Body {
		for j, v := range op.Operands {
			if v == nil || !defined[v] {
				if !add(errorf(op.Loc, "%s: operand #%d is used before it is defined (or comes from another function)", op.Name, j)) {
					return false
				}
			}
		}
		if op.Name == ReturnName {
			if i != len(f.Body)-1 {
				return add(errorf(op.Loc, "func.return before the end of @%s", f.Name))
			}
			if err := checkReturn(f, op); err != nil && !add(err) {
				return false
			}
			continue
		}
		if err := verifyOp(op); err != nil && !add(err) {
			return false
		}
		for k, r := range op.Results {
			if r.Def != op || r.Index != k {
				return add(errorf(op.Loc, "%s: result #%d is not linked to its op", op.Name, k))
			}
			defined[r] = true
		}
	}
	return true
}

func verifyOp(op *Op) error {
	def, ok := LookupOp(op.Name)
	if !ok {
		return errorf(op.Loc, "unknown op %q", op.Name)
	}
	inferred, err := def.infer(op)
	if err != nil {
		return err
	}
	if len(inferred) != len(op.Results) {
		return errorf(op.Loc, "%s produces %d results, declared %d", op.Name, len(inferred), len(op.Results))
	}
	for i, t := range inferred {
		if _, ok := refine(op.Results[i].Type, t); !ok {
			return errorf(op.Loc, "%s: result #%d is declared %s but the operands give %s", op.Name, i, op.Results[i].Type, t)
		}
	}
	return nil
}

func checkReturn(f *Func, op *Op) error {
	if len(op.Operands) != len(f.Results) {
		return errorf(op.Loc, "func.return of @%s returns %d values, the signature %d", f.Name, len(op.Operands), len(f.Results))
	}
	for i, v := range op.Operands {
		if !Equal(v.Type, f.Results[i]) {
			return errorf(op.Loc, "func.return of @%s: value #%d is %s, the signature says %s", f.Name, i, v.Type, f.Results[i])
		}
	}
	return nil
}

// DimsAttr is the function attribute that gives typical values of the
// symbolic dims ({batch = 1, seq = 512}); llmir tasks buckets them.
const DimsAttr = "llmir.dims"

func verifyFuncAttrs(f *Func) error {
	a, ok := f.Attrs.Get(DimsAttr)
	if !ok {
		return nil
	}
	d, ok := a.(DictAttr)
	if !ok {
		return errorf(f.Loc, "@%s: %s must be a dictionary of integers", f.Name, DimsAttr)
	}
	for _, e := range d {
		if v, ok := e.Value.(IntAttr); !ok || v.V < 1 {
			return errorf(f.Loc, "@%s: %s.%s must be a positive integer", f.Name, DimsAttr, e.Name)
		}
	}
	return nil
}

// refine merges a declared type with an inferred one: the result keeps
// every static extent and symbolic name either side knows. ok is false when
// the two disagree.
func refine(declared, inferred Type) (Type, bool) {
	dt, ok1 := declared.(TensorType)
	it, ok2 := inferred.(TensorType)
	if !ok1 || !ok2 {
		return declared, Equal(declared, inferred)
	}
	if dt.Elem != it.Elem || dt.Rank() != it.Rank() {
		return declared, false
	}
	out := TensorType{Elem: dt.Elem, Shape: make([]Dim, dt.Rank())}
	for i := range dt.Shape {
		d, ok := unifyDim(dt.Shape[i], it.Shape[i])
		if !ok {
			return declared, false
		}
		out.Shape[i] = d
	}
	return out, true
}
