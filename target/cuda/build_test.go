package cuda

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"llmir/target"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestCommandLinesGolden(t *testing.T) {
	b := &Builder{NVCC: "/usr/local/cuda/bin/nvcc", Flags: Flags("sm_90")}
	var out strings.Builder
	fmt.Fprintln(&out, strings.Join(b.Command("/c/u.cu", "/c/u.so", nil, nil), " "))
	fmt.Fprintln(&out, strings.Join(b.Command("/c/u.cu", "/c/u.so", []string{"-lineinfo"}, []string{"-lcublas"}), " "))
	fmt.Fprintln(&out, strings.Join(HarnessCommand("/usr/local/cuda/bin/nvcc", "/c/harness.cu", "/c/harness"), " "))
	a100 := &Builder{NVCC: "/usr/local/cuda/bin/nvcc", Flags: Flags("sm_80")}
	fmt.Fprintln(&out, strings.Join(a100.Command("/c/u.cu", "/c/u.so", nil, nil), " "))
	golden(t, "commands.golden", out.String())
}

// TestArchFlag: an sm_90 device is built for sm_90a (wgmma) in the
// -gencode form, which keeps nvcc from also compiling for compute_90 (whose
// ptxas rejects wgmma); other archs build for themselves.
func TestArchFlag(t *testing.T) {
	for arch, want := range map[string]string{
		"sm_90":  "-gencode=arch=compute_90a,code=sm_90a",
		"sm_80":  "-arch=sm_80",
		"sm_89":  "-arch=sm_89",
		"sm_100": "-arch=sm_100",
	} {
		if got := ArchFlag(arch); got != want {
			t.Errorf("ArchFlag(%s) = %s, want %s", arch, got, want)
		}
	}
}

func TestUnitGolden(t *testing.T) {
	cands := []target.Candidate{
		{ID: "a", Entry: "llmir_kernel", Source: "#include <cuda_runtime.h>\n#include <stdint.h>\n__global__ void k() {}\nint llmir_kernel(void *const *bufs, const int64_t *dims) { k<<<1, 1>>>(); return 0; }\n"},
		{ID: "b", Entry: "run", Source: "#include <stdint.h>\n  #include <cublas_v2.h>\nstatic int calls;\nint run(void *const *bufs, const int64_t *dims) { return calls++ < 0; }"},
	}
	golden(t, "unit.golden", Unit(cands))
}

// fakeNVCC is a stand-in compiler: it copies the source to the -o path,
// logs each call, and fails on a source containing BROKEN, as nvcc fails
// on a bad candidate.
func fakeNVCC(t *testing.T) (nvcc, log string) {
	dir := t.TempDir()
	log = filepath.Join(dir, "calls.log")
	nvcc = filepath.Join(dir, "nvcc")
	script := `#!/bin/sh
out=; src=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift ;;
    *.cu) src=$1 ;;
  esac
  shift
done
echo "$src" >> ` + log + `
if grep -q BROKEN "$src"; then echo "$src(3): error: identifier BROKEN is undefined" >&2; exit 1; fi
cp "$src" "$out"
`
	if err := os.WriteFile(nvcc, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return nvcc, log
}

func TestBuilderBatchesAndIsolatesFailures(t *testing.T) {
	nvcc, log := fakeNVCC(t)
	b := &Builder{NVCC: nvcc, Version: "fake", Flags: Flags("sm_90"), Dir: t.TempDir(), Jobs: 1, Batch: 4}
	var cands []target.Candidate
	for i := range 5 {
		src := fmt.Sprintf("int llmir_kernel(void *const *bufs, const int64_t *dims) { return %d; }\n", i)
		if i == 2 {
			src = "int llmir_kernel(void *const *bufs, const int64_t *dims) { return BROKEN; }\n"
		}
		cands = append(cands, target.Candidate{ID: fmt.Sprintf("c%d", i), Entry: "llmir_kernel", Source: src})
	}
	cands = append(cands, target.Candidate{ID: "blas", Entry: "llmir_kernel", Source: "int llmir_kernel(void *const *b, const int64_t *d) { return 9; }\n", LDFlags: []string{"-lcublas"}})
	got, err := b.Build(context.Background(), cands)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(cands) {
		t.Fatalf("%d results for %d candidates", len(got), len(cands))
	}
	for _, c := range cands {
		r := got[c.ID]
		if c.ID == "c2" {
			if r.Failure == nil || r.Failure.Status != target.StatusBuildError || !strings.Contains(r.Failure.Error, "BROKEN is undefined") {
				t.Errorf("c2: %+v, want build_error with the diagnostic", r.Failure)
			}
			continue
		}
		if r.Failure != nil || r.Artifact == "" {
			t.Fatalf("%s: failure %+v", c.ID, r.Failure)
		}
		// The artifact holds this candidate's body under the symbol the
		// harness will look up.
		unit, err := os.ReadFile(r.Artifact)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(unit), `extern "C" int `+r.Candidate.Entry+"(") || !strings.Contains(string(unit), "// candidate "+c.ID+"\n") {
			t.Errorf("%s: unit lacks its wrapper %s or body", c.ID, r.Candidate.Entry)
		}
	}
	// One unit for c0..c3 (fails), then one per candidate of it, one for
	// c4, one for the cuBLAS group (other flags).
	calls := func() int {
		b, _ := os.ReadFile(log)
		return strings.Count(string(b), "\n")
	}
	if n := calls(); n != 7 {
		t.Errorf("%d nvcc calls, want 7", n)
	}
	// Rebuilding the same candidates is served from the cache; failures
	// are not cached, so the failed unit and the broken candidate's own
	// unit are compiled again (the good singles are cached).
	again, err := b.Build(context.Background(), cands)
	if err != nil {
		t.Fatal(err)
	}
	if !again["c4"].Cached || !again["blas"].Cached {
		t.Errorf("second build not cached: %+v", again["c4"])
	}
	if n := calls(); n != 7+2 {
		t.Errorf("%d nvcc calls after the rebuild, want 9", n)
	}
}

func TestBuilderRejectsDuplicateIDs(t *testing.T) {
	b := &Builder{NVCC: "nvcc", Dir: t.TempDir()}
	_, err := b.Build(context.Background(), []target.Candidate{{ID: "x", Entry: "e"}, {ID: "x", Entry: "e"}})
	if err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("err = %v", err)
	}
}
