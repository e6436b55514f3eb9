package ir

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Pass is one row of the pass table.
type Pass struct {
	Name     string
	Summary  string
	Run      func(*Module) error
	Required bool // always runs, even when --passes leaves it out
}

// passes is the pipeline, in the order it runs.
var passes = []Pass{
	{Name: "verify", Summary: "check every invariant of the module", Run: Verify, Required: true},
	{Name: "infer-shapes", Summary: "refine result types: static extents and symbolic dim names flow from operands to results", Run: InferShapes, Required: true},
	{Name: "canonicalize", Summary: "merge identical pure ops and remove ops whose results are unused", Run: Canonicalize},
	{Name: "fuse", Summary: "partition functions into kernel groups and annotate fused ones (llmir.group = \"<pattern>#<n>\")", Run: Fuse},
}

// passOrder lists constraints between passes, each with its reason; they
// are checked against the table at start-up and against every --passes list.
var passOrder = []struct{ before, after, why string }{
	{"verify", "infer-shapes", "shape inference assumes verified operand contracts"},
	{"infer-shapes", "canonicalize", "merging ops compares types, which must be refined first"},
}

func init() {
	idx := map[string]int{}
	for i, p := range passes {
		idx[p.Name] = i
	}
	for _, c := range passOrder {
		b, ok1 := idx[c.before]
		a, ok2 := idx[c.after]
		if !ok1 || !ok2 || b >= a {
			panic(fmt.Sprintf("ir: pass table violates %s before %s (%s)", c.before, c.after, c.why))
		}
	}
}

// Passes returns the pass table in pipeline order.
func Passes() []Pass { return append([]Pass(nil), passes...) }

// PassOptions controls RunPasses.
type PassOptions struct {
	VerifyEach bool      // run Verify after every pass
	DumpAfter  []string  // print the module after these passes
	Dump       io.Writer // where dumps go
	Timing     io.Writer // if set, print each pass's wall time there
}

// RunPasses runs the named passes (all when names is empty), plus every
// required pass, in table order. Unknown names and order violations are
// errors that name the pass.
func RunPasses(m *Module, names []string, opts PassOptions) error {
	want := map[string]bool{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !hasPass(n) {
			return fmt.Errorf("unknown pass %q (known: %s)", n, passNames())
		}
		want[n] = true
	}
	for _, n := range opts.DumpAfter {
		if !hasPass(n) {
			return fmt.Errorf("--dump-after: unknown pass %q (known: %s)", n, passNames())
		}
	}
	if err := checkOrder(names); err != nil {
		return err
	}
	for _, p := range passes {
		if len(want) > 0 && !want[p.Name] && !p.Required {
			continue
		}
		start := time.Now()
		err := p.Run(m)
		if opts.Timing != nil {
			fmt.Fprintf(opts.Timing, "%-14s %10.3f ms\n", p.Name, float64(time.Since(start).Microseconds())/1000)
		}
		if err != nil {
			return fmt.Errorf("pass %s: %w", p.Name, err)
		}
		if opts.VerifyEach && p.Name != "verify" {
			if err := Verify(m); err != nil {
				return fmt.Errorf("verify after pass %s: %w", p.Name, err)
			}
		}
		for _, d := range opts.DumpAfter {
			if d == p.Name && opts.Dump != nil {
				fmt.Fprintf(opts.Dump, "// -----// IR dump after %s //----- //\n", p.Name)
				if err := Print(opts.Dump, m); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkOrder rejects a --passes list that names passes against passOrder.
func checkOrder(names []string) error {
	pos := map[string]int{}
	for i, n := range names {
		pos[strings.TrimSpace(n)] = i
	}
	for _, c := range passOrder {
		b, ok1 := pos[c.before]
		a, ok2 := pos[c.after]
		if ok1 && ok2 && b > a {
			return fmt.Errorf("pass %s must come before %s: %s", c.before, c.after, c.why)
		}
	}
	return nil
}

func hasPass(n string) bool {
	for _, p := range passes {
		if p.Name == n {
			return true
		}
	}
	return false
}

func passNames() string {
	var s []string
	for _, p := range passes {
		s = append(s, p.Name)
	}
	return strings.Join(s, ", ")
}

// InferShapes refines every op's result types from its operands, so that
// static extents and symbolic dim names reach every value, and then the
// function signatures from their returns.
func InferShapes(m *Module) error {
	for _, f := range m.Funcs {
		for _, op := range f.Body {
			if op.Name == ReturnName {
				for i, v := range op.Operands {
					if i < len(f.Results) {
						f.Results[i] = v.Type
					}
				}
				continue
			}
			def, ok := LookupOp(op.Name)
			if !ok {
				return errorf(op.Loc, "unknown op %q", op.Name)
			}
			types, err := def.infer(op)
			if err != nil {
				return err
			}
			for i, t := range types {
				r, ok := refine(op.Results[i].Type, t)
				if !ok {
					return errorf(op.Loc, "%s: result #%d is declared %s but the operands give %s", op.Name, i, op.Results[i].Type, t)
				}
				op.Results[i].Type = r
			}
		}
	}
	return nil
}

// Canonicalize merges pure ops that compute the same thing (same op,
// operands and attributes) and removes pure ops nobody uses.
func Canonicalize(m *Module) error {
	for _, f := range m.Funcs {
		cse(f)
		dce(f)
	}
	return nil
}

func isPure(op *Op) bool {
	def, ok := LookupOp(op.Name)
	return ok && def.Traits&Pure != 0
}

func cse(f *Func) {
	replace := map[*Value]*Value{}
	seen := map[string]*Op{}
	ids := map[*Value]int{}
	for i, a := range f.Args {
		ids[a] = i
	}
	next := len(f.Args)
	kept := f.Body[:0]
	for _, op := range f.Body {
		for i, v := range op.Operands {
			if r, ok := replace[v]; ok {
				op.Operands[i] = r
			}
		}
		if isPure(op) {
			var key strings.Builder
			key.WriteString(op.Name + op.Attrs.String())
			for _, v := range op.Operands {
				fmt.Fprintf(&key, " %d", ids[v])
			}
			for _, r := range op.Results {
				key.WriteString(" " + r.Type.String())
			}
			if prev, ok := seen[key.String()]; ok {
				for i, r := range op.Results {
					replace[r] = prev.Results[i]
				}
				continue
			}
			seen[key.String()] = op
		}
		for _, r := range op.Results {
			ids[r] = next
			next++
		}
		kept = append(kept, op)
	}
	f.Body = kept
}

func dce(f *Func) {
	used := map[*Value]bool{}
	live := make([]bool, len(f.Body))
	for i := len(f.Body) - 1; i >= 0; i-- {
		op := f.Body[i]
		needed := !isPure(op)
		for _, r := range op.Results {
			needed = needed || used[r]
		}
		if !needed {
			continue
		}
		live[i] = true
		for _, v := range op.Operands {
			used[v] = true
		}
	}
	kept := f.Body[:0]
	for i, op := range f.Body {
		if live[i] {
			kept = append(kept, op)
		}
	}
	f.Body = kept
}
