package ir

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// MaxBucketed is the largest extent Bucket takes: the next multiple of
// 8192 past it does not fit in an int64.
const MaxBucketed = math.MaxInt64 / 8192 * 8192

// Bucket rounds a dynamic extent up to its shape bucket: powers of two up
// to 8192, then multiples of 8192. A kernel compiled for bucket B must be
// correct for every actual extent ≤ B; dispatch picks the smallest bucket
// ≥ the actual extent. n must be at most MaxBucketed.
func Bucket(n int64) int64 {
	if n <= 1 {
		return 1
	}
	if n <= 8192 {
		b := int64(1)
		for b < n {
			b <<= 1
		}
		return b
	}
	return (n + 8191) / 8192 * 8192
}

// Workload is one kernel to tune: an op group with concrete (bucketed)
// shapes, element types, and the attributes that change generated code.
// Its canonical JSON never depends on map order, pointers or platform;
// its Key is the SHA-256 of that JSON.
type Workload struct {
	Group  []string          `json:"group"`  // op names, in execution order (one until fusion)
	Inputs []TensorSig       `json:"inputs"` // operands
	Output []TensorSig       `json:"outputs"`
	Attrs  map[string]string `json:"attrs,omitempty"` // codegen-relevant attributes, printed as MLIR text
	// Dynamic names the symbolic dims that were bucketed, with their bucket.
	Dynamic map[string]int64 `json:"dynamic,omitempty"`
}

// TensorSig is a concrete operand or result: a shape and an element type,
// or a paged KV cache (Shape empty, KV set).
type TensorSig struct {
	Shape []int64  `json:"shape,omitempty"`
	Sym   []string `json:"sym,omitempty"` // per dim: the symbolic name of a bucketed dynamic dim, "" if static
	DType string   `json:"dtype"`
	KV    string   `json:"kv,omitempty"`
}

func (s TensorSig) String() string {
	if s.KV != "" {
		return s.KV
	}
	parts := make([]string, len(s.Shape))
	for i, d := range s.Shape {
		parts[i] = fmt.Sprint(d)
	}
	return strings.Join(append(parts, s.DType), "x")
}

// CanonicalJSON is the workload's identity: encoding/json sorts map keys,
// and every slice is in a defined order.
func (w Workload) CanonicalJSON() []byte {
	b, err := json.Marshal(w)
	if err != nil {
		panic(err) // only strings, ints and slices of them: cannot fail
	}
	return b
}

// Key is the SHA-256 hex of the canonical JSON.
func (w Workload) Key() string {
	h := sha256.Sum256(w.CanonicalJSON())
	return hex.EncodeToString(h[:])
}

// Family is the SHA-256 hex of the workload with its dynamic extents left
// out: workloads that differ only in shape bucket share a family, which is
// how a lookup falls back to the nearest bucket.
func (w Workload) Family() string {
	f := w
	f.Dynamic = nil
	strip := func(sigs []TensorSig) []TensorSig {
		out := make([]TensorSig, len(sigs))
		for i, s := range sigs {
			s.Shape = append([]int64(nil), s.Shape...)
			for d, sym := range s.Sym {
				if sym != "" {
					s.Shape[d] = 0
				}
			}
			out[i] = s
		}
		return out
	}
	f.Inputs, f.Output = strip(w.Inputs), strip(w.Output)
	h := sha256.Sum256(f.CanonicalJSON())
	return hex.EncodeToString(h[:])
}

// Bucket is the product of the dynamic dims' buckets (the token rows a
// kernel was compiled for), or 0 when the workload is static.
func (w Workload) Bucket() int64 {
	if len(w.Dynamic) == 0 {
		return 0
	}
	b := int64(1)
	for _, v := range w.Dynamic {
		b *= v
	}
	return b
}

// Name is a short human-readable description.
func (w Workload) Name() string {
	var in []string
	for _, s := range w.Inputs {
		in = append(in, s.String())
	}
	return strings.Join(w.Group, "+") + "(" + strings.Join(in, ", ") + ")"
}

// nameDimHint says how an unnamed dynamic dim gets a value.
const nameDimHint = `name the dim in the tensor types that carry it, e.g. tensor<?x4xf32, #llmir.dims<["seq"]>>, then give it with --dims seq=N (or the function's llmir.dims)`

// DimNames lists the names of m's dynamic dims — those of its values'
// tensor types and of its functions' llmir.dims attributes — sorted, and
// reports whether m also has unnamed ones ("?" without a name).
func DimNames(m *Module) (names []string, unnamed bool) {
	seen := map[string]bool{}
	typ := func(t Type) {
		tt, ok := t.(TensorType)
		if !ok {
			return
		}
		for _, d := range tt.Shape {
			switch {
			case !d.IsDynamic():
			case d.Sym == "":
				unnamed = true
			default:
				seen[d.Sym] = true
			}
		}
	}
	for _, f := range m.Funcs {
		if a, ok := f.Attrs.Get(DimsAttr); ok {
			if d, ok := a.(DictAttr); ok {
				for _, e := range d {
					seen[e.Name] = true
				}
			}
		}
		for _, a := range f.Args {
			typ(a.Type)
		}
		for _, t := range f.Results {
			typ(t)
		}
		for _, op := range f.Body {
			for _, v := range op.Results {
				typ(v.Type)
			}
		}
	}
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, unnamed
}

// CheckDims refuses a dims setting that names no dynamic dim of m, listing
// the names m has: Tasks and Partition look dims up by name only, so a
// misspelt or foreign name was ignored and the functions' typical values
// used in its place.
func CheckDims(m *Module, dims map[string]int64) error {
	names, unnamed := DimNames(m)
	var unknown []string
	for k := range dims {
		if _, found := slices.BinarySearch(names, k); !found {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	has := "its dynamic dims: " + strings.Join(names, ", ")
	if len(names) == 0 {
		has = "it has no named dynamic dim"
	}
	if unnamed {
		has += "; its unnamed ? dims take no value from --dims: " + nameDimHint
	}
	return fmt.Errorf("no dynamic dim named %s in the module (%s)", strings.Join(unknown, ", "), has)
}

// Task is a distinct workload and where it occurs.
type Task struct {
	Workload Workload
	Count    int      // occurrences in the module
	Funcs    []string // functions it occurs in
}

// Tasks lists the distinct workloads of m, in first-occurrence order.
// dims gives the actual extent of each symbolic dim; missing ones come from
// each function's llmir.dims attribute. One op is one workload (Partition
// and GroupTasks list the fused alternatives).
func Tasks(m *Module, dims map[string]int64) ([]Task, error) {
	var tasks []Task
	index := map[string]int{}
	for _, f := range m.Funcs {
		env := funcEnv(f, dims)
		for _, op := range f.Body {
			def, ok := LookupOp(op.Name)
			if !ok || def.Traits&NotAKernel != 0 {
				continue
			}
			w, err := workloadOf(op, def, env)
			if err != nil {
				return nil, fmt.Errorf("@%s: %w", f.Name, err)
			}
			key := w.Key()
			i, seen := index[key]
			if !seen {
				i = len(tasks)
				index[key] = i
				tasks = append(tasks, Task{Workload: w})
			}
			t := &tasks[i]
			t.Count++
			if len(t.Funcs) == 0 || t.Funcs[len(t.Funcs)-1] != f.Name {
				t.Funcs = append(t.Funcs, f.Name)
			}
		}
	}
	return tasks, nil
}

func workloadOf(op *Op, def *OpDef, env map[string]int64) (Workload, error) {
	w := Workload{Group: []string{op.Name}}
	sig := func(v *Value) (TensorSig, error) {
		switch t := v.Type.(type) {
		case PagedKVType:
			// The layer count only offsets into the pool: it does not change
			// the kernel, so it stays out of the key.
			kv := fmt.Sprintf("paged_kv<block_size=%d,kv_heads=%d,head_dim=%d>", t.BlockSize, t.KVHeads, t.HeadDim)
			return TensorSig{DType: string(t.Elem), KV: kv}, nil
		case TensorType:
			s := TensorSig{DType: string(t.Elem), Shape: make([]int64, t.Rank())}
			named := false
			for _, d := range t.Shape {
				named = named || d.IsDynamic()
			}
			if named {
				s.Sym = make([]string, t.Rank())
			}
			for i, d := range t.Shape {
				if !d.IsDynamic() {
					s.Shape[i] = d.Size
					continue
				}
				if d.Sym == "" {
					// No --dims can reach a dim without a name (and "?=N"
					// would give every unnamed dim of the module one value).
					return s, errorf(op.Loc, "%s: a dynamic dim without a name (?) has no value: %s", op.Name, nameDimHint)
				}
				n, ok := env[d.Sym]
				if !ok {
					return s, errorf(op.Loc, "%s: dynamic dim %s has no value: give it with --dims %s=N", op.Name, d.Sym, d.Sym)
				}
				if n > MaxBucketed {
					return s, errorf(op.Loc, "%s: dynamic dim %s = %d is past the largest shape bucket %d", op.Name, d.Sym, n, int64(MaxBucketed))
				}
				b := Bucket(n)
				s.Shape[i] = b
				s.Sym[i] = d.Sym
				if w.Dynamic == nil {
					w.Dynamic = map[string]int64{}
				}
				w.Dynamic[d.Sym] = b
			}
			return s, nil
		}
		return TensorSig{}, errorf(op.Loc, "%s: unexpected operand type %s", op.Name, v.Type)
	}
	for _, v := range op.Operands {
		s, err := sig(v)
		if err != nil {
			return w, err
		}
		w.Inputs = append(w.Inputs, s)
	}
	for _, v := range op.Results {
		s, err := sig(v)
		if err != nil {
			return w, err
		}
		w.Output = append(w.Output, s)
	}
	for _, ad := range def.Attrs {
		if a, ok := op.Attrs.Get(ad.Name); ok && ad.Codegen {
			if w.Attrs == nil {
				w.Attrs = map[string]string{}
			}
			w.Attrs[ad.Name] = a.String()
		}
	}
	return w, nil
}

// ParseAttrs reads back the workload's attributes (stored as MLIR text) as
// typed values; nil when there are none.
func (w Workload) ParseAttrs() (Attrs, error) {
	if len(w.Attrs) == 0 {
		return nil, nil
	}
	parts := make([]string, 0, len(w.Attrs))
	for n, v := range w.Attrs {
		parts = append(parts, n+" = "+v)
	}
	sort.Strings(parts)
	m, err := ParseString("workload attributes", "module attributes {"+strings.Join(parts, ", ")+"} {}")
	if err != nil {
		return nil, fmt.Errorf("workload attributes: %w", err)
	}
	return m.Attrs, nil
}
