package ir_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"llmir/ir"
)

const norm = `func.func @f(%x: tensor<?x8xf32>, %w: tensor<8xf32>) -> tensor<?x8xf32> {
  %0 = "llmir.rms_norm"(%x, %w) {eps = 1.0e-05 : f32} : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}
`

// TestBadInput: every malformed module gets an error at the right place,
// never a panic.
func TestBadInput(t *testing.T) {
	repl := func(old, new string) string { return strings.Replace(norm, old, new, 1) }
	for _, c := range []struct {
		name, src, pos, want string
	}{
		{"empty function body", "func.func @f() {\n}", "bad.mlir:1:1", "does not end with func.return"},
		{"truncated", norm[:120], "bad.mlir:2:", "expected"},
		{"truncated in string", `func.func @f() { %0 = "llmir.si`, "bad.mlir:1:23", "unterminated string"},
		{"unknown op", repl("llmir.rms_norm", "llmir.rms_nrom"), "bad.mlir:2:8", `unknown op "llmir.rms_nrom"`},
		{"unknown attribute", repl("eps = ", "epsilon = "), "bad.mlir:2:8", `unknown attribute "epsilon"`},
		{"missing attribute", repl("{eps = 1.0e-05 : f32} ", ""), "bad.mlir:2:8", `missing required attribute "eps"`},
		{"attribute of the wrong kind", repl("1.0e-05 : f32", `"small"`), "bad.mlir:2:8", `attribute "eps": want a float`},
		{"wrong operand type in signature", repl("(tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>\n", "(tensor<?x8xf16>, tensor<8xf32>) -> tensor<?x8xf32>\n"), "bad.mlir:2:57", "operand #0 is tensor<?x8xf32> but its type says tensor<?x8xf16>"},
		{"shape mismatch", strings.ReplaceAll(norm, "tensor<8xf32>", "tensor<7xf32>"), "bad.mlir:2:8", "does not match"},
		{"wrong result type", strings.ReplaceAll(strings.ReplaceAll(norm, "-> tensor<?x8xf32>", "-> tensor<?x9xf32>"), ": tensor<?x8xf32>\n}", ": tensor<?x9xf32>\n}"), "bad.mlir:2:8", "declared tensor<?x9xf32>"},
		{"undefined value", repl("(%x, %w)", "(%x, %v)"), "bad.mlir:2:29", "use of undefined value %v"},
		{"redefined value", repl(`return %0`, `%0 = "llmir.silu"(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32>`+"\n  return %0"), "bad.mlir:3:3", "value %0 defined twice"},
		{"bad element type", repl("tensor<?x8xf32>, %w", "tensor<?x8xf33>, %w"), "bad.mlir:1:29", `unknown element type "f33"`},
		{"missing x in shape", repl("tensor<?x8xf32>, %w", "tensor<?8xf32>, %w"), "bad.mlir:1:26", "expected 'x'"},
		{"bad dims encoding", repl("tensor<?x8xf32>, %w", `tensor<?x8xf32, #llmir.dims<["a", "b"]>>, %w`), "bad.mlir:1:33", "names 2 dims but the tensor has 1"},
		{"unknown type", repl("tensor<8xf32>)", "memref<8xf32>)"), "bad.mlir:1:39", `unsupported type "memref"`},
		{"paged kv missing field", `func.func @f(%c: !llmir.paged_kv<block_size = 16, kv_heads = 8, head_dim = 128, elem = bf16>) { return }`, "bad.mlir:1:18", "missing layers"},
		{"paged kv zero", `func.func @f(%c: !llmir.paged_kv<block_size = 0, kv_heads = 8, head_dim = 128, elem = bf16, layers = 1>) { return }`, "bad.mlir:1:47", "block_size must be positive"},
		{"return type mismatch", repl("return %0 : tensor<?x8xf32>", "return %0 : tensor<?x8xf16>"), "bad.mlir:3:15", "return operand 0 has type"},
		{"op after return", repl("return %0 : tensor<?x8xf32>", "return %0 : tensor<?x8xf32>\n  return %0 : tensor<?x8xf32>"), "bad.mlir:4:3", "op after func.return"},
		{"int too large", repl("1.0e-05 : f32", "300 : i8"), "bad.mlir:2:40", "does not fit i8"},
		{"bad escape", repl(`"llmir.rms_norm"`, `"llmir.rms_\qnorm"`), "bad.mlir:2:19", `unknown escape \q`},
		{"garbage after module", norm + "}", "bad.mlir:5:1", "expected func.func"},
		{"not a function at top level", `module { "llmir.silu"() : () -> () }`, "bad.mlir:1:10", "expected func.func"},
		{"duplicate function", norm + norm, "bad.mlir:5:1", "function @f defined twice"},
		{"duplicate attribute", repl("{eps = 1.0e-05 : f32}", "{eps = 1.0e-05 : f32, eps = 1.0e-05 : f32}"), "bad.mlir:2:55", `attribute "eps" given twice`},
		{"wrong arity", repl("(%x, %w) {eps", "(%x) {eps"), "bad.mlir:2:", "operands"},
		{"enum attribute", `func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "llmir.gelu"(%x) {approximate = "fast"} : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}`, "bad.mlir:2:8", `"fast" is not one of none, tanh`},
		{"GQA heads", `func.func @f(%q: tensor<1x4x6x8xf32>, %k: tensor<1x4x4x8xf32>) -> tensor<1x4x6x8xf32> {
  %0 = "llmir.attention"(%q, %k, %k) : (tensor<1x4x6x8xf32>, tensor<1x4x4x8xf32>, tensor<1x4x4x8xf32>) -> tensor<1x4x6x8xf32>
  return %0 : tensor<1x4x6x8xf32>
}`, "bad.mlir:2:8", "query heads 6 must be a multiple of KV heads 4"},
		{"symbolic dims clash", `func.func @f(%x: tensor<?x8xf32, #llmir.dims<["a"]>>, %y: tensor<?x8xf32, #llmir.dims<["b"]>>) -> tensor<?x8xf32> {
  %0 = "llmir.add"(%x, %y) : (tensor<?x8xf32, #llmir.dims<["a"]>>, tensor<?x8xf32, #llmir.dims<["b"]>>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}`, "bad.mlir:2:8", "a does not match b"},
		{"paged attention layer", `func.func @f(%q: tensor<2x8x16xf32>, %c: !llmir.paged_kv<block_size = 8, kv_heads = 2, head_dim = 16, elem = f32, layers = 2>, %bt: tensor<2x4xi32>, %cl: tensor<2xi32>) -> tensor<2x8x16xf32> {
  %0 = "llmir.paged_attention"(%q, %c, %bt, %cl) {layer = 2 : i64} : (tensor<2x8x16xf32>, !llmir.paged_kv<block_size = 8, kv_heads = 2, head_dim = 16, elem = f32, layers = 2>, tensor<2x4xi32>, tensor<2xi32>) -> tensor<2x8x16xf32>
  return %0 : tensor<2x8x16xf32>
}`, "bad.mlir:2:8", "layer 2 out of range"},
		{"reshape element count", `func.func @f(%x: tensor<4x6xf32>) -> tensor<5x5xf32> {
  %0 = "llmir.reshape"(%x) : (tensor<4x6xf32>) -> tensor<5x5xf32>
  return %0 : tensor<5x5xf32>
}`, "bad.mlir:2:8", "different numbers of elements"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := ir.ParseString("bad.mlir", c.src)
			if err == nil {
				err = ir.Verify(m)
			}
			if err == nil {
				t.Fatalf("accepted:\n%s", c.src)
			}
			var e *ir.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *ir.Error", err)
			}
			if !strings.HasPrefix(e.Error(), c.pos) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error\n  %v\nwant position %s and text %q", err, c.pos, c.want)
			}
		})
	}
}

// FuzzParse: no input panics; whatever parses prints to a fixed point that
// verifies the same way.
func FuzzParse(f *testing.F) {
	for _, file := range []string{"testdata/golden/ops.mlir", "testdata/golden/generic.mlir", "testdata/golden/implicit.mlir"} {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add(norm)
	f.Fuzz(func(t *testing.T, src string) {
		m, err := ir.ParseString("fuzz.mlir", src)
		if err != nil {
			return
		}
		verr := ir.Verify(m)
		text := ir.String(m)
		m2, err := ir.ParseString("printed.mlir", text)
		if err != nil {
			if verr != nil {
				return // an unverified module need not survive printing
			}
			t.Fatalf("printed module does not parse: %v\n%s", err, text)
		}
		if verr == nil {
			if err := ir.Verify(m2); err != nil {
				t.Fatalf("printed module does not verify: %v", err)
			}
		}
		if text2 := ir.String(m2); text2 != text {
			t.Fatalf("print is not a fixed point:\n%s\n---\n%s", text, text2)
		}
	})
}
