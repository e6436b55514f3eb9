package kernels

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"llmir/ir"
)

// ErrNoKernel is returned by FromWorkload for op groups the library has no
// kernel for.
var ErrNoKernel = errors.New("no kernel for this op group")

// Unsupported is the error of a well-formed workload that the library has
// no kernel variant for (an element type a kernel does not implement): it
// wraps ErrNoKernel, so that a tune or compile of a whole model lists the
// workload among those without a kernel and goes on with the rest, where a
// malformed workload stops it.
func Unsupported(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNoKernel, fmt.Sprintf(format, args...))
}

// unsupported is Unsupported, as this package's builders call it.
var unsupported = Unsupported

// CheckWeightLayout refuses, as a variant without a kernel, a linear whose
// weight_layout attribute (its own, or a fused group's prefixed one) is not
// "nk": every linear kernel reads w as [out, in], and a square [in, out]
// weight would otherwise pass the shape checks and compute x·wᵀ.
func CheckWeightLayout(attrs map[string]string) error {
	for name, v := range attrs {
		if strings.HasSuffix(name, "weight_layout") && v != strconv.Quote("nk") {
			return Unsupported("%s = %s (the linear kernels read w as [out, in], \"nk\")", name, v)
		}
	}
	return nil
}

// builders maps an op group ("llmir.linear", "llmir.rms_norm+llmir.linear")
// to the constructor of its kernel from an IR workload.
var builders = map[string]func(ir.Workload) (Kernel, error){}

// register is called from the init of each kernel's file, so that adding a
// kernel is one file (as image formats register with package image).
func register(group string, f func(ir.Workload) (Kernel, error)) {
	if _, dup := builders[group]; dup {
		panic("kernels: group registered twice: " + group)
	}
	builders[group] = f
}

// FromWorkload returns the kernel of an IR workload (one op, or a fused
// group), measured at the workload's bucketed extents. The kernel's
// Workload is w itself, so records tuned for it are found by compiles of
// the same module. Malformed workloads are errors naming what is wrong.
func FromWorkload(w ir.Workload) (Kernel, error) {
	g := strings.Join(w.Group, "+")
	f, ok := builders[g]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoKernel, g)
	}
	if err := checkSizes(w); err != nil {
		return nil, fmt.Errorf("kernel for %s: %w", w.Name(), err)
	}
	k, err := f(w)
	if err != nil {
		return nil, fmt.Errorf("kernel for %s: %w", w.Name(), err)
	}
	return k, nil
}

// MaxTensorElems bounds the elements of one operand of a workload: 2^36
// (256 GiB of f32), beyond any machine llmir measures on. Shapes past it
// come from a typo or a hostile module, and the kernels' checks,
// references and problem buffers would size allocations by them.
const MaxTensorElems = 1 << 36

// checkSizes refuses operands whose element count is negative, overflows
// or passes MaxTensorElems, before any builder sizes a table by them.
func checkSizes(w ir.Workload) error {
	check := func(what string, i int, t ir.TensorSig) error {
		n := int64(1)
		for _, d := range t.Shape {
			if d < 0 || (d > 0 && n > MaxTensorElems/d) {
				return fmt.Errorf("%s %d has shape %v: more than %d elements", what, i, t.Shape, int64(MaxTensorElems))
			}
			n *= d
		}
		return nil
	}
	for i, t := range w.Inputs {
		if err := check("operand", i, t); err != nil {
			return err
		}
	}
	for i, t := range w.Output {
		if err := check("result", i, t); err != nil {
			return err
		}
	}
	return nil
}

// Groups lists the op groups that have a kernel, sorted.
func Groups() []string {
	out := make([]string, 0, len(builders))
	for g := range builders {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// rows is the product of all but the last dim of a shape (tokens of a
// [batch, seq, hidden] activation), with the bucket of its dynamic dims.
func rows(s ir.TensorSig) int64 {
	n := int64(1)
	for _, d := range s.Shape[:max(len(s.Shape)-1, 0)] {
		n *= d
	}
	return n
}

// checkArity checks a workload's operand and result counts and ranks.
func checkArity(w ir.Workload, inputs, outputs int) error {
	if len(w.Inputs) != inputs || len(w.Output) != outputs {
		return fmt.Errorf("%d operands and %d results, want %d and %d", len(w.Inputs), len(w.Output), inputs, outputs)
	}
	for i, s := range append(append([]ir.TensorSig{}, w.Inputs...), w.Output...) {
		if s.KV != "" {
			continue
		}
		if len(s.Shape) == 0 {
			return fmt.Errorf("tensor %d has no shape", i)
		}
		for _, d := range s.Shape {
			if d < 1 {
				return fmt.Errorf("tensor %d has extent %d", i, d)
			}
		}
	}
	return nil
}

// Rows is the number of rows of an activation: the product of all but its
// last dim (batch·seq of [batch, seq, hidden]). Other targets' registries
// flatten IR tensors the way this library's kernels do.
func Rows(s ir.TensorSig) int64 { return rows(s) }

// PagedKV is the part of a !llmir.paged_kv type a kernel is specialised on.
type PagedKV struct{ BlockSize, KVHeads, HeadDim int64 }

// ParsePagedKV reads a workload's cache signature as the CPU paged
// attention does ("paged_kv<block_size=16,kv_heads=8,head_dim=128>", extra
// fields accepted), so that every target reads one format.
func ParsePagedKV(s string) (PagedKV, error) {
	kv, err := parsePagedKV(s)
	if err != nil {
		return PagedKV{}, err
	}
	return PagedKV(kv), nil
}
