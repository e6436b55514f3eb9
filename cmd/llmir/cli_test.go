package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs llmir with args in dir and returns stdout, stderr and the error.
func runCLI(t *testing.T, dir string, args ...string) (string, string, error) {
	t.Helper()
	if dir != "" {
		t.Chdir(dir)
	}
	cmd := newRootCmd()
	var out, errb bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetIn(strings.NewReader(""))
	err := cmd.Execute()
	return out.String(), errb.String(), err
}

func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	return dir
}

func TestImportOptTasks(t *testing.T) {
	dir := isolate(t)
	if _, _, err := runCLI(t, dir, "import", "--preset", "llama-tiny", "-o", "tiny.mlir"); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runCLI(t, "", "opt", "tiny.mlir", "--passes", "canonicalize", "--verify-each", "--time-passes", "--dump-after", "canonicalize")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile("tiny.mlir")
	if out != string(want) {
		t.Errorf("opt changed an already canonical module")
	}
	if !strings.Contains(stderr, "canonicalize") || !strings.Contains(stderr, "IR dump after canonicalize") {
		t.Errorf("--time-passes/--dump-after printed %q", stderr)
	}
	out, _, err = runCLI(t, "", "tasks", "tiny.mlir", "--json", "--dims", "seq=100")
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Key, Name string
		Count     int
		Workload  struct {
			Group  []string
			Inputs []struct{ Shape []int64 }
		}
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("tasks --json: %v\n%s", err, out)
	}
	found := false
	for _, r := range rows {
		if len(r.Key) != 64 {
			t.Errorf("key %q is not a SHA-256 hex", r.Key)
		}
		if r.Workload.Group[0] == "llmir.linear" && r.Count == 4 && len(r.Workload.Inputs[0].Shape) == 3 {
			found = true
			if s := r.Workload.Inputs[0].Shape; s[1] != 128 {
				t.Errorf("seq=100 should bucket to 128, got shape %v", s)
			}
		}
	}
	if !found {
		t.Errorf("no prefill linear occurring 4 times (q and o of 2 layers) in %s", out)
	}
}

func TestErrorsNamePositions(t *testing.T) {
	dir := isolate(t)
	bad := filepath.Join(dir, "bad.mlir")
	os.WriteFile(bad, []byte("func.func @f() {\n  %0 = \"llmir.nope\"() : () -> tensor<1xf32>\n  return\n}\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"opt", bad}, "bad.mlir:2:8: unknown op"},
		{[]string{"tasks", bad}, "bad.mlir:2:8"},
		{[]string{"opt", filepath.Join(dir, "missing.mlir")}, "no such file"},
		{[]string{"import"}, "exactly one of --hf-config FILE or --preset NAME"},
		{[]string{"import", "--preset", "nope"}, `unknown preset "nope"`},
		{[]string{"opt", bad, "--passes", "bogus"}, "bad.mlir:2:8"},
		{[]string{"tasks", "x", "--dims", "seq"}, `--dims: "seq" is not NAME=N`},
		{[]string{"opt"}, "accepts 1 arg"},
	} {
		_, _, err := runCLI(t, "", c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("llmir %v: error %v, want %q", c.args, err, c.want)
		}
	}
}

// TestTasksUnknownDims: a --dims name the module lacks is an error listing
// the names it has, with or without fusion (it used to be ignored); an
// unnamed dim's errors say to name it, not to give "--dims ?=N".
func TestTasksUnknownDims(t *testing.T) {
	dir := isolate(t)
	generic, err := filepath.Abs("../../ir/testdata/golden/generic.mlir")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, dir, "import", "--preset", "llama-tiny", "-o", "tiny.mlir"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"tasks", "tiny.mlir", "--dims", "nosuch=4"}, "--dims: tiny.mlir: no dynamic dim named nosuch in the module (its dynamic dims: batch, max_blocks, seq)"},
		{[]string{"tasks", "tiny.mlir", "--fusion=false", "--dims", "seq=4,nosuch=4"}, "no dynamic dim named nosuch"},
		{[]string{"tasks", generic, "--dims", "?=4"}, "no dynamic dim named ? in the module (it has no named dynamic dim; its unnamed ? dims take no value from --dims: name the dim"},
		{[]string{"tasks", generic}, "a dynamic dim without a name (?) has no value: name the dim in the tensor types that carry it"},
	} {
		_, _, err := runCLI(t, "", c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("llmir %v: error %v, want %q", c.args, err, c.want)
		}
	}
	if _, _, err := runCLI(t, "", "tasks", "tiny.mlir", "--dims", "seq=4,batch=2,max_blocks=8"); err != nil {
		t.Errorf("known dims: %v", err)
	}
}

// TestConfigPrecedence: flag > LLMIR_* environment > llmir.yaml > default.
func TestConfigPrecedence(t *testing.T) {
	dir := isolate(t)
	blockSize := func(args ...string) string {
		t.Helper()
		out, _, err := runCLI(t, dir, append([]string{"import", "--preset", "llama-tiny"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		i := strings.Index(out, "block_size = ")
		return strings.Fields(out[i+len("block_size = "):])[0]
	}
	if got := blockSize(); got != "16," {
		t.Errorf("default block size %s", got)
	}
	os.WriteFile(filepath.Join(dir, "llmir.yaml"), []byte("block-size: 32\n"), 0o644)
	if got := blockSize(); got != "32," {
		t.Errorf("llmir.yaml block size: %s", got)
	}
	t.Setenv("LLMIR_BLOCK_SIZE", "64")
	if got := blockSize(); got != "64," {
		t.Errorf("LLMIR_BLOCK_SIZE: %s", got)
	}
	if got := blockSize("--block-size", "128"); got != "128," {
		t.Errorf("flag: %s", got)
	}
	os.WriteFile(filepath.Join(dir, "llmir.yaml"), []byte("block-size: [\n"), 0o644)
	if _, _, err := runCLI(t, dir, "import", "--preset", "llama-tiny"); err == nil || !strings.Contains(err.Error(), "llmir.yaml") {
		t.Errorf("a broken llmir.yaml must be an error naming it, got %v", err)
	}
}

// TestImportBadOptions: a 0 or negative size is an error naming the flag
// (hf.Options reads 0 as its default, and --block-size 0 used to import
// with 16 as if the flag had been left out).
func TestImportBadOptions(t *testing.T) {
	dir := isolate(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--block-size", "0"}, "--block-size 0: want ≥ 1"},
		{[]string{"--block-size", "-16"}, "--block-size -16: want ≥ 1"},
		{[]string{"--block-size", "2048"}, "block size 2048 out of range 1…1024"},
		{[]string{"--tensor-parallel", "0"}, "--tensor-parallel 0: want ≥ 1"},
		{[]string{"--prefill-seq", "0"}, "--prefill-seq 0: want ≥ 1"},
		{[]string{"--decode-batch", "0"}, "--decode-batch 0: want ≥ 1"},
		{[]string{"--decode-context", "-1"}, "--decode-context -1: want ≥ 0"},
	} {
		out, _, err := runCLI(t, dir, append([]string{"import", "--preset", "llama-tiny"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) || out != "" {
			t.Errorf("%v: error %v, want %q (and no module printed, got %d bytes)", c.args, err, c.want, len(out))
		}
	}
}

func TestVersion(t *testing.T) {
	out, _, err := runCLI(t, isolate(t), "version")
	if err != nil || !strings.HasPrefix(out, "llmir ") {
		t.Errorf("version: %q %v", out, err)
	}
}

func TestTasksGroups(t *testing.T) {
	dir := isolate(t)
	if _, _, err := runCLI(t, dir, "import", "--preset", "llama-tiny", "-o", "tiny.mlir"); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, "", "tasks", "tiny.mlir", "--groups", "--dims", "batch=3")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"@decode: ",
		"linear+rope+append_kv  %7 = llmir.linear, %12 = llmir.reshape, %13 = llmir.rope, %15 = llmir.append_kv",
		"llmir.linear+llmir.add(4x256xf32, 256x256xf32, 4x256xf32)",
		"gate_up+silu_mul",
		"unfused:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("tasks --groups lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCLI(t, "", "tasks", "tiny.mlir", "--groups", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var groups []struct {
		Func, Pattern string
		Alternatives  []struct {
			Name      string
			Workloads []struct{ Key string }
		}
	}
	if err := json.Unmarshal([]byte(out), &groups); err != nil {
		t.Fatalf("tasks --groups --json: %v", err)
	}
	patterns := map[string]int{}
	for _, g := range groups {
		patterns[g.Pattern]++
		if g.Pattern != "" && (len(g.Alternatives) != 2 || g.Alternatives[0].Name != "fused" || len(g.Alternatives[0].Workloads[0].Key) != 64) {
			t.Errorf("group %s: alternatives %+v", g.Pattern, g.Alternatives)
		}
	}
	if patterns["linear+add"] != 8 || patterns["gate_up+silu_mul"] != 4 || patterns["linear+rope+append_kv"] != 2 {
		t.Errorf("pattern counts %v", patterns)
	}
	// The task table lists fused workloads unless --fusion=false.
	count := func(args ...string) (all, fused int) {
		out, _, err := runCLI(t, "", append([]string{"tasks", "tiny.mlir"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "llmir.") {
				all++
				if strings.Contains(l, "+llmir.") {
					fused++
				}
			}
		}
		return all, fused
	}
	all, fused := count()
	plain, none := count("--fusion=false")
	if fused == 0 || none != 0 || all != plain+fused {
		t.Errorf("with fusion %d rows (%d fused), without %d (%d fused)", all, fused, plain, none)
	}
	if _, _, err := runCLI(t, "", "tasks", "tiny.mlir", "--groups", "--fusion=false"); err == nil || !strings.Contains(err.Error(), "--groups") {
		t.Errorf("--groups --fusion=false: %v", err)
	}
}
