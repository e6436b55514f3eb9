package ir_test

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with testdata/<name>, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./ir -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file; diff with -update and review:\n%s", path, firstDiff(string(want), got))
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return "line " + strconv.Itoa(i+1) + ":\n  want: " + x + "\n  got:  " + y
		}
	}
	return ""
}

// corpus is every module the tests know: the golden inputs and the presets.
func corpus(t *testing.T) map[string]*ir.Module {
	t.Helper()
	out := map[string]*ir.Module{}
	files, _ := filepath.Glob("testdata/golden/*.mlir")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ir.Parse(f, data)
		if err != nil {
			t.Fatalf("parse %s: %v", f, err)
		}
		if err := ir.Verify(m); err != nil {
			t.Fatalf("verify %s: %v", f, err)
		}
		out[filepath.Base(f)] = m
	}
	for _, p := range hf.Presets() {
		cfg, err := hf.PresetConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		m, err := hf.Import(cfg, p, hf.Options{})
		if err != nil {
			t.Fatalf("import %s: %v", p, err)
		}
		out["preset-"+p] = m
	}
	return out
}

func TestGolden(t *testing.T) {
	for name, m := range corpus(t) {
		if strings.HasPrefix(name, "preset-") && name != "preset-llama-tiny" {
			continue // the big presets are checked by round trips, not stored
		}
		golden(t, "golden/"+strings.TrimSuffix(name, ".mlir")+".out", ir.String(m))
	}
}

// TestPrintParsePrint: printing is a fixed point of parse ∘ print.
func TestPrintParsePrint(t *testing.T) {
	for name, m := range corpus(t) {
		text := ir.String(m)
		m2, err := ir.ParseString(name, text)
		if err != nil {
			t.Fatalf("%s: reparse: %v", name, err)
		}
		if err := ir.Verify(m2); err != nil {
			t.Fatalf("%s: verify after reparse: %v", name, err)
		}
		if got := ir.String(m2); got != text {
			t.Errorf("%s: print → parse → print changed the text:\n%s", name, firstDiff(text, got))
		}
	}
}

// mlirOpt finds upstream mlir-opt the way scripts/find-mlir-opt.sh does.
func mlirOpt(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LLMIR_MLIR_OPT"); p != "" {
		return p
	}
	for _, n := range []string{"mlir-opt", "mlir-opt-19", "mlir-opt-18", "mlir-opt-17", "mlir-opt-16"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if ms, _ := filepath.Glob("/usr/lib/llvm-*/bin/mlir-opt"); len(ms) > 0 {
		return ms[len(ms)-1]
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("mlir-opt not found (CI requires it: apt-get install mlir-16-tools)")
	}
	t.Skip("mlir-opt not found; install mlir-16-tools to run the round trip")
	return ""
}

// TestMLIROptRoundTrip: upstream mlir-opt accepts everything llmir prints,
// and both forms it prints back parse to the same module.
func TestMLIROptRoundTrip(t *testing.T) {
	bin := mlirOpt(t)
	for name, m := range corpus(t) {
		text := ir.String(m)
		for _, form := range [][]string{nil, {"--mlir-print-op-generic"}, {"--mlir-print-debuginfo"}} {
			args := append([]string{"--allow-unregistered-dialect"}, form...)
			cmd := exec.Command(bin, args...)
			cmd.Stdin = strings.NewReader(text)
			var out, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s: mlir-opt %v rejected llmir's output: %v\n%s", name, form, err, stderr.String())
			}
			back, err := ir.Parse("mlir-opt", out.Bytes())
			if err != nil {
				t.Fatalf("%s: parse mlir-opt %v output: %v", name, form, err)
			}
			if got := ir.String(back); got != text {
				t.Errorf("%s: mlir-opt %v round trip changed the module:\n%s", name, form, firstDiff(text, got))
			}
		}
	}
}

func TestPasses(t *testing.T) {
	data, err := os.ReadFile("testdata/golden/implicit.mlir")
	if err != nil {
		t.Fatal(err)
	}
	m, err := ir.Parse("implicit.mlir", data)
	if err != nil {
		t.Fatal(err)
	}
	var dump, timing bytes.Buffer
	err = ir.RunPasses(m, nil, ir.PassOptions{VerifyEach: true, DumpAfter: []string{"canonicalize"}, Dump: &dump, Timing: &timing})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "golden/implicit.canonical.out", ir.String(m))
	if !strings.Contains(dump.String(), "IR dump after canonicalize") {
		t.Errorf("no dump after canonicalize: %q", dump.String())
	}
	for _, p := range ir.Passes() {
		if !strings.Contains(timing.String(), p.Name) {
			t.Errorf("timing lacks pass %s: %q", p.Name, timing.String())
		}
	}
	if n := len(m.Funcs[0].Body); n != 3 {
		t.Errorf("canonicalize left %d ops, want 3 (one mul merged, dead gelu removed)", n)
	}
	for _, bad := range []struct {
		passes []string
		want   string
	}{
		{[]string{"no-such-pass"}, `unknown pass "no-such-pass"`},
		{[]string{"canonicalize", "infer-shapes"}, "infer-shapes must come before canonicalize"},
	} {
		if err := ir.RunPasses(m, bad.passes, ir.PassOptions{}); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("RunPasses(%v) = %v, want an error containing %q", bad.passes, err, bad.want)
		}
	}
}

func TestInferShapesNamesDims(t *testing.T) {
	src := `func.func @f(%x: tensor<?x8xf32, #llmir.dims<["n"]>>, %w: tensor<8xf32>) -> tensor<?x8xf32> {
  %0 = "llmir.rms_norm"(%x, %w) {eps = 1.0e-05 : f32} : (tensor<?x8xf32, #llmir.dims<["n"]>>, tensor<8xf32>) -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}`
	m, err := ir.ParseString("f.mlir", src)
	if err != nil {
		t.Fatal(err)
	}
	if err := ir.InferShapes(m); err != nil {
		t.Fatal(err)
	}
	want := `tensor<?x8xf32, #llmir.dims<["n"]>>`
	if got := m.Funcs[0].Body[0].Result().Type.String(); got != want {
		t.Errorf("result type %s, want %s", got, want)
	}
	if got := m.Funcs[0].Results[0].String(); got != want {
		t.Errorf("function result %s, want %s", got, want)
	}
	if err := ir.Verify(m); err != nil {
		t.Fatal(err)
	}
}

func TestBucket(t *testing.T) {
	for _, c := range []struct{ n, want int64 }{
		{1, 1}, {2, 2}, {3, 4}, {5, 8}, {512, 512}, {513, 1024}, {8192, 8192}, {8193, 16384}, {20000, 24576},
	} {
		if got := ir.Bucket(c.n); got != c.want {
			t.Errorf("Bucket(%d) = %d, want %d", c.n, got, c.want)
		}
	}
	if got := ir.Bucket(ir.MaxBucketed); got != ir.MaxBucketed {
		t.Errorf("Bucket(MaxBucketed) = %d, want itself", got)
	}
}

// TestTasksRefuseUnbucketableDims: a dim past MaxBucketed (from --dims or
// llmir.dims) is an error naming it, where its bucket used to wrap to a
// negative extent that llmir tasks printed as a shape.
func TestTasksRefuseUnbucketableDims(t *testing.T) {
	m, err := hf.ImportPreset("llama-tiny", hf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []int64{ir.MaxBucketed + 1, math.MaxInt64} {
		dims := map[string]int64{"seq": seq}
		_, terr := ir.Tasks(m, dims)
		_, perr := ir.Partition(m, dims)
		for _, err := range []error{terr, perr} {
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("dynamic dim seq = %d is past the largest shape bucket", seq)) {
				t.Errorf("seq = %d: error %v", seq, err)
			}
		}
	}
	if _, err := ir.Tasks(m, map[string]int64{"seq": ir.MaxBucketed}); err != nil {
		t.Errorf("seq = MaxBucketed: %v", err)
	}
}

// TestCheckDims: a dims setting naming no dynamic dim of the module is an
// error listing the names it has (it used to be ignored, the functions'
// typical values taking its place); an unnamed dim's error says how to
// give it a value, which the old "--dims ?=N" advice did not.
func TestCheckDims(t *testing.T) {
	m, err := hf.ImportPreset("llama-tiny", hf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if names, unnamed := ir.DimNames(m); strings.Join(names, ",") != "batch,max_blocks,seq" || unnamed {
		t.Errorf("DimNames(llama-tiny) = %v, unnamed %v", names, unnamed)
	}
	if err := ir.CheckDims(m, map[string]int64{"seq": 4, "batch": 2, "max_blocks": 8}); err != nil {
		t.Errorf("known dims: %v", err)
	}
	err = ir.CheckDims(m, map[string]int64{"seq": 4, "nosuch": 4, "Seq": 2})
	if want := "no dynamic dim named Seq, nosuch in the module (its dynamic dims: batch, max_blocks, seq)"; err == nil || err.Error() != want {
		t.Errorf("unknown dims: error %v, want %q", err, want)
	}

	data, err := os.ReadFile(filepath.Join("testdata", "golden", "generic.mlir"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := ir.Parse("generic.mlir", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := ir.InferShapes(g); err != nil {
		t.Fatal(err)
	}
	if names, unnamed := ir.DimNames(g); len(names) != 0 || !unnamed {
		t.Errorf("DimNames(generic.mlir) = %v, unnamed %v", names, unnamed)
	}
	err = ir.CheckDims(g, map[string]int64{"?": 4})
	if err == nil || !strings.Contains(err.Error(), "no dynamic dim named ? in the module (it has no named dynamic dim; its unnamed ? dims take no value from --dims: name the dim") {
		t.Errorf("--dims ?=4 on unnamed dims: error %v", err)
	}
	_, err = ir.Tasks(g, nil)
	if err == nil || strings.Contains(err.Error(), "--dims ?=N") || !strings.Contains(err.Error(), `a dynamic dim without a name (?) has no value: name the dim in the tensor types that carry it, e.g. tensor<?x4xf32, #llmir.dims<["seq"]>>, then give it with --dims seq=N`) {
		t.Errorf("tasks of unnamed dims: error %v", err)
	}
	// The advice works: named, the dim takes its value from --dims.
	named := strings.ReplaceAll(string(data), "tensor<?x4xf32>", `tensor<?x4xf32, #llmir.dims<["seq"]>>`)
	if g, err = ir.Parse("named.mlir", []byte(named)); err != nil {
		t.Fatal(err)
	}
	if err := ir.InferShapes(g); err != nil {
		t.Fatal(err)
	}
	dims := map[string]int64{"seq": 3}
	if err := ir.CheckDims(g, dims); err != nil {
		t.Fatal(err)
	}
	tasks, err := ir.Tasks(g, dims)
	if err != nil || len(tasks) != 2 || tasks[0].Workload.Name() != "llmir.rms_norm(4x4xf32, 4xf32)" {
		t.Errorf("tasks of the named module: %v, %v", tasks, err)
	}
}

func TestTasksOfPresets(t *testing.T) {
	type lin struct{ n, k int64 }
	for _, c := range []struct {
		preset  string
		layers  int
		linears []lin // prefill linear shapes (N×K) with their count per layer
		counts  []int
	}{
		{"llama-3-8b", 32, []lin{{4096, 4096}, {1024, 4096}, {14336, 4096}, {4096, 14336}}, []int{2, 2, 2, 1}},
		{"llama-2-7b", 32, []lin{{4096, 4096}, {11008, 4096}, {4096, 11008}}, []int{4, 2, 1}},
		{"mistral-7b", 32, []lin{{4096, 4096}, {1024, 4096}, {14336, 4096}, {4096, 14336}}, []int{2, 2, 2, 1}},
		{"qwen2-7b", 28, []lin{{3584, 3584}, {512, 3584}, {18944, 3584}, {3584, 18944}}, []int{2, 2, 2, 1}},
		{"llama-tiny", 2, []lin{{256, 256}, {64, 256}, {688, 256}, {256, 688}}, []int{2, 2, 2, 1}},
	} {
		t.Run(c.preset, func(t *testing.T) {
			cfg, err := hf.PresetConfig(c.preset)
			if err != nil {
				t.Fatal(err)
			}
			m, err := hf.Import(cfg, c.preset, hf.Options{})
			if err != nil {
				t.Fatal(err)
			}
			tasks, err := ir.Tasks(m, nil)
			if err != nil {
				t.Fatal(err)
			}
			count := map[string]int{}
			ops := map[string]int{}
			for _, task := range tasks {
				w := task.Workload
				ops[w.Group[0]] += task.Count
				if w.Group[0] == "llmir.linear" && task.Funcs[0] == "prefill" {
					in := w.Inputs[1].Shape
					if got := w.Inputs[0].Shape; got[0]*got[1] != 512 {
						t.Errorf("prefill linear M = %v, want batch×seq = 1×512", got)
					}
					count[lin2s(in[0], in[1])] += task.Count
				}
			}
			for i, l := range c.linears {
				if got := count[lin2s(l.n, l.k)]; got != c.counts[i]*c.layers {
					t.Errorf("prefill linear %d×%d occurs %d times, want %d", l.n, l.k, got, c.counts[i]*c.layers)
				}
			}
			// Two norms per layer plus the final one, in each of two functions.
			if got, want := ops["llmir.rms_norm"], 2*(2*c.layers+1); got != want {
				t.Errorf("rms_norm occurs %d times, want %d", got, want)
			}
			if ops["llmir.attention"] != c.layers || ops["llmir.paged_attention"] != c.layers {
				t.Errorf("attention %d, paged_attention %d, want %d each", ops["llmir.attention"], ops["llmir.paged_attention"], c.layers)
			}
		})
	}
}

func lin2s(n, k int64) string { return fmt.Sprintf("%dx%d", n, k) }

// TestWorkloadKeyStable pins the canonical JSON and key of one workload: a
// change here invalidates every tuning database, so it must be deliberate.
func TestWorkloadKeyStable(t *testing.T) {
	w := ir.Workload{
		Group:   []string{"llmir.linear"},
		Inputs:  []ir.TensorSig{{Shape: []int64{512, 4096}, DType: "f32"}, {Shape: []int64{4096, 4096}, DType: "f32"}},
		Output:  []ir.TensorSig{{Shape: []int64{512, 4096}, DType: "f32"}},
		Attrs:   map[string]string{"weight_layout": `"nk"`, "a": "1 : i64"},
		Dynamic: map[string]int64{"seq": 512, "batch": 1},
	}
	wantJSON := `{"group":["llmir.linear"],"inputs":[{"shape":[512,4096],"dtype":"f32"},{"shape":[4096,4096],"dtype":"f32"}],"outputs":[{"shape":[512,4096],"dtype":"f32"}],"attrs":{"a":"1 : i64","weight_layout":"\"nk\""},"dynamic":{"batch":1,"seq":512}}`
	if got := string(w.CanonicalJSON()); got != wantJSON {
		t.Fatalf("canonical JSON\n got %s\nwant %s", got, wantJSON)
	}
	if got, want := w.Key(), "b0572a075e2bec28d82e445502f8ba7a15103979c626a7f162c0a290016dfd8b"; got != want {
		t.Errorf("key %s, want %s", got, want)
	}
}

func TestWorkloadFamily(t *testing.T) {
	lin := func(m, n int64) ir.Workload {
		return ir.Workload{
			Group:   []string{"llmir.linear"},
			Inputs:  []ir.TensorSig{{Shape: []int64{m, 64}, Sym: []string{"tokens", ""}, DType: "f32"}, {Shape: []int64{n, 64}, DType: "f32"}},
			Output:  []ir.TensorSig{{Shape: []int64{m, n}, Sym: []string{"tokens", ""}, DType: "f32"}},
			Dynamic: map[string]int64{"tokens": m},
		}
	}
	a, b, c := lin(16, 32), lin(512, 32), lin(16, 48)
	if a.Key() == b.Key() || a.Family() != b.Family() {
		t.Errorf("buckets 16 and 512 of one linear must differ in key and share a family")
	}
	if a.Family() == c.Family() {
		t.Errorf("different N must be different families")
	}
	if a.Bucket() != 16 || b.Bucket() != 512 || (ir.Workload{}).Bucket() != 0 {
		t.Errorf("buckets %d %d", a.Bucket(), b.Bucket())
	}
}
