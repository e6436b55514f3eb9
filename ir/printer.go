package ir

import (
	"fmt"
	"io"
	"strings"
)

// Print writes m in LLMIR's text form: MLIR's custom form for module,
// func.func and func.return, and the generic form for llmir ops, which
// upstream mlir-opt accepts with --allow-unregistered-dialect.
func Print(w io.Writer, m *Module) error {
	_, err := io.WriteString(w, String(m))
	return err
}

// String returns m in LLMIR's text form.
func String(m *Module) string {
	var b strings.Builder
	b.WriteString("module")
	if m.Name != "" {
		b.WriteString(" @" + symbol(m.Name))
	}
	if len(m.Attrs) > 0 {
		b.WriteString(" attributes " + m.Attrs.String())
	}
	b.WriteString(" {\n")
	for i, f := range m.Funcs {
		if i > 0 {
			b.WriteString("\n")
		}
		printFunc(&b, f)
	}
	b.WriteString("}\n")
	return b.String()
}

// symbol prints a symbol name bare when MLIR allows, quoted otherwise.
func symbol(s string) string {
	if isBareID(s) {
		return s
	}
	return quote(s)
}

func isBareID(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || isLetter(c) || (i > 0 && (isDigit(c) || c == '$' || c == '.'))) {
			return false
		}
	}
	return true
}

type namer map[*Value]string

func (n namer) name(v *Value) string {
	if s, ok := n[v]; ok {
		return s
	}
	return "%<undefined>"
}

func printFunc(b *strings.Builder, f *Func) {
	names := namer{}
	fmt.Fprintf(b, "  func.func @%s(", symbol(f.Name))
	for i, a := range f.Args {
		if i > 0 {
			b.WriteString(", ")
		}
		names[a] = fmt.Sprintf("%%arg%d", i)
		fmt.Fprintf(b, "%s: %s", names[a], a.Type)
		if i < len(f.ArgAttrs) && len(f.ArgAttrs[i]) > 0 {
			b.WriteString(" " + f.ArgAttrs[i].String())
		}
	}
	b.WriteString(")")
	switch len(f.Results) {
	case 0:
	case 1:
		b.WriteString(" -> " + f.Results[0].String())
	default:
		b.WriteString(" -> (")
		writeTypes(b, f.Results)
		b.WriteString(")")
	}
	if len(f.Attrs) > 0 {
		b.WriteString(" attributes " + f.Attrs.String())
	}
	b.WriteString(" {\n")
	next := 0
	for _, op := range f.Body {
		b.WriteString("    ")
		if op.Name == ReturnName {
			b.WriteString("return")
			if len(op.Operands) > 0 {
				b.WriteString(" " + operandList(names, op.Operands) + " : ")
				writeTypes(b, valueTypes(op.Operands))
			}
			b.WriteString("\n")
			continue
		}
		if len(op.Results) > 0 {
			base := fmt.Sprintf("%%%d", next)
			next++
			if len(op.Results) == 1 {
				names[op.Results[0]] = base
				b.WriteString(base)
			} else {
				for i, r := range op.Results {
					names[r] = fmt.Sprintf("%s#%d", base, i)
				}
				fmt.Fprintf(b, "%s:%d", base, len(op.Results))
			}
			b.WriteString(" = ")
		}
		printGenericOp(b, names, op)
		b.WriteString("\n")
	}
	b.WriteString("  }\n")
}

func printGenericOp(b *strings.Builder, names namer, op *Op) {
	fmt.Fprintf(b, "%s(%s)", quote(op.Name), operandList(names, op.Operands))
	if len(op.Attrs) > 0 {
		b.WriteString(" " + op.Attrs.String())
	}
	b.WriteString(" : ")
	b.WriteString(FuncType{Inputs: valueTypes(op.Operands), Results: valueTypes(op.Results)}.String())
}

func operandList(names namer, vs []*Value) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = names.name(v)
	}
	return strings.Join(parts, ", ")
}

func valueTypes(vs []*Value) []Type {
	ts := make([]Type, len(vs))
	for i, v := range vs {
		ts[i] = v.Type
	}
	return ts
}
