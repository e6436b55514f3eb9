package ir_test

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
)

func preset(t *testing.T, name string) *ir.Module {
	t.Helper()
	cfg, err := hf.PresetConfig(name)
	if err != nil {
		t.Fatal(err)
	}
	m, err := hf.Import(cfg, name, hf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPartitionPresets pins the partition of Llama models: per function,
// how many groups of each pattern, and the fused kernels of each.
func TestPartitionPresets(t *testing.T) {
	for _, c := range []struct {
		preset string
		layers int
	}{{"llama-tiny", 2}, {"llama-3-8b", 32}} {
		t.Run(c.preset, func(t *testing.T) {
			groups, err := ir.Partition(preset(t, c.preset), nil)
			if err != nil {
				t.Fatal(err)
			}
			L := c.layers
			// Decode: k is roped straight into the cache, so the input norm
			// keeps a claimed user (k) and stays unfused; prefill's attention
			// also reads the roped k, so there the norm fuses into q, k, v.
			want := map[string]map[string]int{
				"decode": {
					ir.PatternLinearAdd: 2 * L, ir.PatternGateUp: L, ir.PatternRopeAppend: L, ir.PatternNormLinear: 1,
					"llmir.rms_norm": 2 * L, "llmir.linear": 2 * L, "llmir.rope": L, "llmir.paged_attention": L,
					"llmir.embedding": 1, "llmir.argmax": 1,
				},
				"prefill": {
					ir.PatternLinearAdd: 2 * L, ir.PatternGateUp: L, ir.PatternNormLinear: L + 1,
					"llmir.rms_norm": L, "llmir.rope": 2 * L, "llmir.append_kv": L, "llmir.attention": L,
					"llmir.embedding": 1, "llmir.argmax": 1,
				},
			}
			got := map[string]map[string]int{"decode": {}, "prefill": {}}
			fusedKernels := map[string]int{}
			for _, g := range groups {
				key := g.Pattern
				if key == "" {
					key = strings.SplitN(g.Ops[0], " = ", 2)[1]
				}
				got[g.Func][key]++
				last := g.Alternatives[len(g.Alternatives)-1]
				if last.Name != "unfused" {
					t.Fatalf("%s %v: last alternative %q, want unfused", g.Func, g.Ops, last.Name)
				}
				if g.Pattern == "" {
					if len(g.Alternatives) != 1 || len(last.Workloads) != 1 {
						t.Errorf("single op %v has alternatives %+v", g.Ops, g.Alternatives)
					}
					continue
				}
				if len(g.Alternatives) != 2 || g.Alternatives[0].Name != "fused" {
					t.Fatalf("%s %v: alternatives %+v, want fused then unfused", g.Func, g.Ops, g.Alternatives)
				}
				for _, w := range g.Alternatives[0].Workloads {
					fusedKernels[g.Func+" "+strings.Join(w.Group, "+")]++
					if g.Pattern == ir.PatternLinearAdd {
						fusedKernels[g.Func+" linear+add w "+w.Inputs[1].String()]++
					}
				}
			}
			for fn, w := range want {
				for k, n := range w {
					if got[fn][k] != n {
						t.Errorf("%s: %d groups %s, want %d", fn, got[fn][k], k, n)
					}
				}
				for k, n := range got[fn] {
					if _, ok := w[k]; !ok {
						t.Errorf("%s: unexpected %d groups %s", fn, n, k)
					}
				}
			}
			// The input norm of each prefill layer fuses into q, k and v:
			// three kernels, each recomputing it; the final norm into lm_head.
			if n := fusedKernels["prefill llmir.rms_norm+llmir.linear"]; n != 3*L+1 {
				t.Errorf("prefill has %d fused rms_norm+linear kernels, want %d", n, 3*L+1)
			}
			// o_proj ([h, h]) and down_proj ([h, intermediate]) each take
			// the residual add, in every layer of both functions.
			hidden, inter := map[string]int64{"llama-tiny": 256, "llama-3-8b": 4096}[c.preset], map[string]int64{"llama-tiny": 688, "llama-3-8b": 14336}[c.preset]
			for _, fn := range []string{"decode", "prefill"} {
				for _, k := range []int64{hidden, inter} {
					key := fmt.Sprintf("%s linear+add w %dx%dx%s", fn, hidden, k, map[string]string{"llama-tiny": "f32", "llama-3-8b": "bf16"}[c.preset])
					if fusedKernels[key] != L {
						t.Errorf("%s: %d, want %d", key, fusedKernels[key], L)
					}
				}
			}
			if n := fusedKernels["decode llmir.linear+llmir.linear+llmir.silu+llmir.mul"]; n != L {
				t.Errorf("decode has %d gate/up kernels, want %d", n, L)
			}
		})
	}
}

// TestPartitionWorkloads checks the fused workloads' operands, attributes
// and that every alternative covers the same ops as the unfused one.
func TestPartitionWorkloads(t *testing.T) {
	m := preset(t, "llama-tiny")
	groups, err := ir.Partition(m, map[string]int64{"batch": 3})
	if err != nil {
		t.Fatal(err)
	}
	sig := func(ss []ir.TensorSig) string {
		var out []string
		for _, s := range ss {
			out = append(out, s.String())
		}
		return strings.Join(out, " ")
	}
	seen := map[string]bool{}
	for _, g := range groups {
		if g.Func != "decode" || g.Pattern == "" || seen[g.Pattern] {
			continue
		}
		seen[g.Pattern] = true
		w := g.Alternatives[0].Workloads[0]
		got := strings.Join(w.Group, "+") + ": " + sig(w.Inputs) + " -> " + sig(w.Output)
		want := map[string]string{
			ir.PatternLinearAdd:  "llmir.linear+llmir.add: 4x256xf32 256x256xf32 4x256xf32 -> 4x256xf32",
			ir.PatternGateUp:     "llmir.linear+llmir.linear+llmir.silu+llmir.mul: 4x256xf32 688x256xf32 688x256xf32 -> 4x688xf32",
			ir.PatternRopeAppend: "llmir.linear+llmir.rope+llmir.append_kv: 4x256xf32 64x256xf32 4xi32 paged_kv<block_size=16,kv_heads=2,head_dim=32> 4x2x32xf32 4xi64 -> paged_kv<block_size=16,kv_heads=2,head_dim=32>",
			ir.PatternNormLinear: "llmir.rms_norm+llmir.linear: 4x256xf32 256xf32 1000x256xf32 -> 4x1000xf32",
		}[g.Pattern]
		if got != want {
			t.Errorf("%s fused workload\n got %s\nwant %s", g.Pattern, got, want)
		}
		if w.Dynamic["batch"] != 4 {
			t.Errorf("%s: dynamic %v, want batch bucketed to 4", g.Pattern, w.Dynamic)
		}
		switch g.Pattern {
		case ir.PatternRopeAppend:
			if w.Attrs["theta"] == "" || w.Attrs["style"] != `"neox"` {
				t.Errorf("rope attrs missing from %v", w.Attrs)
			}
		case ir.PatternNormLinear:
			if w.Attrs["eps"] == "" {
				t.Errorf("eps missing from %v", w.Attrs)
			}
		}
		var kernelOps int
		for _, op := range g.Ops {
			if !strings.HasSuffix(op, "llmir.reshape") {
				kernelOps++
			}
		}
		if n := len(g.Alternatives[1].Workloads); n != kernelOps {
			t.Errorf("%s: unfused has %d workloads for %d kernel ops %v", g.Pattern, n, kernelOps, g.Ops)
		}
	}
	if len(seen) != 4 {
		t.Errorf("decode shows patterns %v, want all four", seen)
	}
	// The unfused workloads are exactly what Tasks lists.
	tasks, err := ir.Tasks(m, map[string]int64{"batch": 3})
	if err != nil {
		t.Fatal(err)
	}
	unfused := map[string]int{}
	for _, g := range groups {
		for _, w := range g.Alternatives[len(g.Alternatives)-1].Workloads {
			unfused[w.Key()]++
		}
	}
	for _, task := range tasks {
		if unfused[task.Workload.Key()] != task.Count {
			t.Errorf("%s: %d in unfused alternatives, %d in Tasks", task.Workload.Name(), unfused[task.Workload.Key()], task.Count)
		}
	}
	gt := ir.GroupTasks(groups)
	total := 0
	for _, task := range gt {
		total += task.Count
	}
	if len(gt) <= len(tasks) || total <= len(tasks) {
		t.Errorf("GroupTasks has %d workloads (%d occurrences), want more than Tasks' %d", len(gt), total, len(tasks))
	}
}

// TestPartitionLegality: a pattern whose intermediate has a user outside
// the group does not fuse.
func TestPartitionLegality(t *testing.T) {
	const head = `func.func @f(%x: tensor<4x8xf32>, %r: tensor<4x8xf32>, %g: tensor<8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %w = "llmir.param"() {name = "w"} : () -> tensor<8x8xf32>
  %u = "llmir.param"() {name = "u"} : () -> tensor<8x8xf32>
`
	for _, c := range []struct {
		name, body string
		want       []string // patterns of the groups, "" for single ops
	}{
		{"linear+add", `  %0 = "llmir.linear"(%x, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %1 = "llmir.add"(%r, %0) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %1, %1 : tensor<4x8xf32>, tensor<4x8xf32>`, []string{ir.PatternLinearAdd}},
		{"linear result also returned", `  %0 = "llmir.linear"(%x, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %1 = "llmir.add"(%r, %0) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %1, %0 : tensor<4x8xf32>, tensor<4x8xf32>`, []string{"", ""}},
		{"broadcast residual", `  %0 = "llmir.linear"(%x, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %1 = "llmir.add"(%0, %g) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  return %1, %1 : tensor<4x8xf32>, tensor<4x8xf32>`, []string{"", ""}},
		{"gate/up", `  %0 = "llmir.linear"(%x, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %1 = "llmir.linear"(%x, %u) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %2 = "llmir.silu"(%0) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %3 = "llmir.mul"(%1, %2) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %3, %3 : tensor<4x8xf32>, tensor<4x8xf32>`, []string{ir.PatternGateUp}},
		{"silu used twice", `  %0 = "llmir.linear"(%x, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %1 = "llmir.linear"(%x, %u) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %2 = "llmir.silu"(%0) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %3 = "llmir.mul"(%1, %2) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %3, %2 : tensor<4x8xf32>, tensor<4x8xf32>`, []string{"", "", "", ""}},
		{"gate and up read different x", `  %0 = "llmir.linear"(%x, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %1 = "llmir.linear"(%r, %u) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %2 = "llmir.silu"(%0) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %3 = "llmir.mul"(%2, %1) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %3, %3 : tensor<4x8xf32>, tensor<4x8xf32>`, []string{"", "", "", ""}},
		{"norm into two linears", `  %0 = "llmir.rms_norm"(%x, %g) {eps = 1.0e-05 : f32} : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %1 = "llmir.linear"(%0, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %2 = "llmir.linear"(%0, %u) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  return %1, %2 : tensor<4x8xf32>, tensor<4x8xf32>`, []string{ir.PatternNormLinear}},
		{"norm with a non-linear user", `  %0 = "llmir.rms_norm"(%x, %g) {eps = 1.0e-05 : f32} : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %1 = "llmir.linear"(%0, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  return %1, %0 : tensor<4x8xf32>, tensor<4x8xf32>`, []string{"", ""}},
		{"norm as a weight", `  %0 = "llmir.rms_norm"(%x, %g) {eps = 1.0e-05 : f32} : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %1 = "llmir.linear"(%r, %0) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x4xf32>
  return %0, %0 : tensor<4x8xf32>, tensor<4x8xf32>`, []string{"", ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := ir.ParseString(c.name, head+c.body+"\n}\n")
			if err != nil {
				t.Fatal(err)
			}
			if err := ir.Verify(m); err != nil {
				t.Fatal(err)
			}
			groups, err := ir.Partition(m, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, g := range groups {
				got = append(got, g.Pattern)
			}
			if strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Errorf("patterns %q, want %q", got, c.want)
			}
		})
	}
}

// TestPartitionOrder: groups come in an order where every group's inputs
// are computed by earlier groups: decode's k group (linear %7, rope,
// append_kv) needs v's linear %9, which comes after %7 in the program.
func TestPartitionOrder(t *testing.T) {
	groups, err := ir.Partition(preset(t, "llama-tiny"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, g := range groups {
		if g.Func == "decode" {
			pos[strings.Join(g.Ops, ";")] = i
		}
	}
	k, ok1 := pos["%7 = llmir.linear;%12 = llmir.reshape;%13 = llmir.rope;%15 = llmir.append_kv"]
	v, ok2 := pos["%9 = llmir.linear"]
	q, ok3 := pos["%5 = llmir.linear"]
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("decode groups %v lack layer 0's q, k or v group", pos)
	}
	if !(q < v && v < k) {
		t.Errorf("group order q %d, v %d, k %d: k's group must run after v's linear", q, v, k)
	}
}

// TestFusePass: the pass annotates fused groups only, keeps print → parse
// → print a fixed point, and mlir-opt accepts the result.
func TestFusePass(t *testing.T) {
	m := preset(t, "llama-tiny")
	if err := ir.RunPasses(m, []string{"fuse"}, ir.PassOptions{VerifyEach: true}); err != nil {
		t.Fatal(err)
	}
	text := ir.String(m)
	for _, want := range []string{
		`"llmir.linear"(%17, %18) {llmir.group = "linear+add#`,
		`"llmir.rope"(%12, %arg1) {llmir.group = "linear+rope+append_kv#`,
		`"llmir.reshape"(%7) {llmir.group = "linear+rope+append_kv#`,
		`"llmir.silu"(%24) {llmir.group = "gate_up+silu_mul#`,
		`"llmir.rms_norm"(%1, %2) {eps = 1.0e-05 : f32, llmir.group = "rms_norm+linear#`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("fused module lacks %s", want)
		}
	}
	if strings.Contains(text, `"llmir.attention"(%11, %13, %14) {llmir.group`) {
		t.Errorf("a single op was annotated")
	}
	// Running it again gives the same annotations (stale ones are replaced).
	if err := ir.Fuse(m); err != nil {
		t.Fatal(err)
	}
	if again := ir.String(m); again != text {
		t.Errorf("fuse is not idempotent:\n%s", firstDiff(text, again))
	}
	m2, err := ir.ParseString("fused.mlir", text)
	if err != nil {
		t.Fatal(err)
	}
	if err := ir.Verify(m2); err != nil {
		t.Fatalf("verify fused module: %v", err)
	}
	if got := ir.String(m2); got != text {
		t.Errorf("print → parse → print changed the fused module:\n%s", firstDiff(text, got))
	}
	// The annotation is not part of any workload.
	plain := preset(t, "llama-tiny")
	a, _ := ir.Tasks(plain, nil)
	b, _ := ir.Tasks(m2, nil)
	if len(a) != len(b) || a[0].Workload.Key() != b[0].Workload.Key() {
		t.Errorf("annotations changed the workloads")
	}
	bin := mlirOpt(t)
	cmd := exec.Command(bin, "--allow-unregistered-dialect")
	cmd.Stdin = strings.NewReader(text)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("mlir-opt rejected the fused module: %v\n%s", err, stderr.String())
	}
	back, err := ir.Parse("mlir-opt", out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := ir.String(back); got != text {
		t.Errorf("mlir-opt round trip changed the fused module:\n%s", firstDiff(text, got))
	}
}
