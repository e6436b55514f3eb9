package cuda

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"llmir/target"
	"llmir/target/cpu/cputest"
)

// hostNVCC is a stand-in for nvcc that lets the runner's process handling
// be tested without a GPU: the harness is target/cpu's (same job file and
// reply protocol, host memory), candidates are built by g++ as host C++.
// What it cannot test (device buffers, cuda_error) is covered on the GPU by
// `llmir cuda check`.
func hostNVCC(t *testing.T) string {
	cputest.Need(t, "gcc")
	cputest.Need(t, "g++")
	cpuHarness, err := filepath.Abs("../cpu/csrc/harness.c")
	if err != nil {
		t.Fatal(err)
	}
	nvcc := filepath.Join(t.TempDir(), "nvcc")
	script := `#!/bin/sh
out=; src=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift ;;
    *.cu) src=$1 ;;
  esac
  shift
done
case "$(basename "$src")" in
  harness-*) exec gcc -O1 -o "$out" -x c ` + cpuHarness + ` -ldl -Wl,--no-as-needed -lgomp ;;
  *) exec g++ -O1 -shared -fPIC -x c++ -o "$out" "$src" ;;
esac
`
	if err := os.WriteFile(nvcc, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return nvcc
}

func TestRunnerStatuses(t *testing.T) {
	nvcc := hostNVCC(t)
	dir := t.TempDir()
	b := &Builder{NVCC: nvcc, Version: "host", Dir: filepath.Join(dir, "obj"), Batch: 8}
	r := &Runner{NVCC: nvcc, Version: "host", Dir: filepath.Join(dir, "harness")}
	const n = 1000
	p := &target.Problem{
		Name: "add", Seed: 3,
		Buffers: []target.BufferSpec{
			{Name: "a", DType: target.F32, Elems: n},
			{Name: "b", DType: target.F32, Elems: n},
			{Name: "out", DType: target.F32, Elems: n, Output: true},
		},
		Reference: func(in [][]float64) [][]float64 {
			out := make([]float64, n)
			for i := range out {
				out[i] = in[0][i] + in[1][i]
			}
			return [][]float64{out}
		},
	}
	body := func(stmt string) string {
		return "#include <stdint.h>\n#include <stdlib.h>\nint llmir_kernel(void *const *bufs, const int64_t *dims) {\n" +
			"  const float *a = (const float *)bufs[0], *b = (const float *)bufs[1]; float *o = (float *)bufs[2];\n  " + stmt + "\n}\n"
	}
	cands := []target.Candidate{
		{ID: "ok", Entry: "llmir_kernel", Source: body("for (int i = 0; i < 1000; i++) o[i] = a[i] + b[i]; return 0;")},
		{ID: "wrong", Entry: "llmir_kernel", Source: body("for (int i = 0; i < 1000; i++) o[i] = a[i] - b[i]; return 0;")},
		{ID: "partial", Entry: "llmir_kernel", Source: body("for (int i = 0; i < 999; i++) o[i] = a[i] + b[i]; return 0;")},
		{ID: "overrun", Entry: "llmir_kernel", Source: body("for (int i = 0; i < 1001; i++) o[i] = a[i] + b[i]; return 0;")},
		{ID: "crash", Entry: "llmir_kernel", Source: body("abort(); return 0;")},
		{ID: "rc", Entry: "llmir_kernel", Source: body("return 700;")},
		{ID: "after-crash", Entry: "llmir_kernel", Source: body("for (int i = 0; i < 1000; i++) o[i] = b[i] + a[i]; return 0;")},
		{ID: "broken", Entry: "llmir_kernel", Source: body("return undefined_name;")},
	}
	built, err := b.Build(context.Background(), cands)
	if err != nil {
		t.Fatal(err)
	}
	order := make([]target.Built, len(cands))
	for i, c := range cands {
		order[i] = built[c.ID]
	}
	ms, err := r.Run(context.Background(), p, order, target.RunOptions{Warmup: time.Millisecond, Budget: 2 * time.Millisecond, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]target.Status{
		"ok": target.StatusOK, "wrong": target.StatusWrongResult, "partial": target.StatusWrongResult,
		"overrun": target.StatusWrongResult, "crash": target.StatusRuntimeError, "rc": target.StatusRuntimeError,
		"after-crash": target.StatusOK, "broken": target.StatusBuildError,
	}
	for id, st := range want {
		m := ms[id]
		if m.Status != st {
			t.Errorf("%s: status %s (%s), want %s", id, m.Status, m.Error, st)
		}
	}
	if m := ms["ok"]; len(m.Samples) < 5 || !(m.Median > 0) || !(m.RelErr <= 1e-6) {
		t.Errorf("ok: %d samples, median %g, rel err %g", len(m.Samples), m.Median, m.RelErr)
	}
	if m := ms["partial"]; !math.IsInf(m.RelErr, 1) {
		t.Errorf("partial: rel err %g, want +Inf (a poisoned element left)", m.RelErr)
	}
	if !strings.Contains(ms["overrun"].Error, "guard band") || !strings.Contains(ms["rc"].Error, "700") {
		t.Errorf("errors do not say what happened: %q, %q", ms["overrun"].Error, ms["rc"].Error)
	}
}

func TestWriteJob(t *testing.T) {
	dir := t.TempDir()
	p := &target.Problem{
		Name: "job", Seed: 1, Dims: []int64{7, 9},
		Buffers: []target.BufferSpec{
			{Name: "x", DType: target.BF16, Elems: 3},
			{Name: "idx", DType: target.I32, Elems: 2, Fill: func(_ *rand.Rand, v []float64) {}},
			{Name: "y", DType: target.BF16, Elems: 5, Output: true},
		},
		Reference: func(in [][]float64) [][]float64 { return [][]float64{make([]float64, 5)} },
	}
	path, err := WriteJob(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	job, _ := os.ReadFile(path)
	want := "data " + filepath.Join(dir, "inputs.bin") + "\nbuf x 6 7fc0 0\nbuf idx 8 7fc00000 0\nbuf y 10 7fc0 1\ndims 7 9\ncopies 1\n"
	if string(job) != want {
		t.Errorf("job file:\n%s\nwant:\n%s", job, want)
	}
	if st, err := os.Stat(filepath.Join(dir, "inputs.bin")); err != nil || st.Size() != 6+8 {
		t.Errorf("inputs.bin: %v, %v", st, err)
	}
}

// TestParseReadBound: the --read replies give each grid's pick-pass median
// and the picked grid's samples; a reply out of order, a grid that is not
// the fastest or a short sample list is a protocol error.
func TestParseReadBound(t *testing.T) {
	grids := []int{2, 4, 8, 16}
	out := "grid 2 900 7.1e-06\ngrid 4 950 6.5e-06\ngrid 8 940 6.6e-06\ngrid 16 930 6.9e-06\nread 4 5 6.4e-06 6.6e-06 6.5e-06 6.3e-06 7.0e-06\n"
	rb, err := ParseReadBound(out, 8<<20, grids)
	if err != nil {
		t.Fatal(err)
	}
	if rb.Bytes != 8<<20 || rb.BlocksPerSM != 4 || len(rb.Grids) != 4 || rb.Grids[2] != (ReadGrid{BlocksPerSM: 8, Samples: 940, Median: 6.6e-6}) {
		t.Errorf("ParseReadBound = %+v", rb)
	}
	m := rb.Measurement
	if !m.OK() || m.Median != 6.5e-6 || m.Min != 6.3e-6 || len(m.Samples) != 5 || m.CandidateID != "read" {
		t.Errorf("measurement %+v", m)
	}
	for name, bad := range map[string]string{
		"no read line":     "grid 2 900 7.1e-06\ngrid 4 950 6.5e-06\ngrid 8 940 6.6e-06\ngrid 16 930 6.9e-06\n",
		"grids reordered":  "grid 4 950 6.5e-06\ngrid 2 900 7.1e-06\ngrid 8 940 6.6e-06\ngrid 16 930 6.9e-06\nread 4 1 6.4e-06\n",
		"not the fastest":  "grid 2 900 7.1e-06\ngrid 4 950 6.5e-06\ngrid 8 940 6.6e-06\ngrid 16 930 6.9e-06\nread 8 1 6.4e-06\n",
		"unknown grid":     "grid 2 900 7.1e-06\ngrid 4 950 6.5e-06\ngrid 8 940 6.6e-06\ngrid 16 930 6.9e-06\nread 3 1 6.4e-06\n",
		"short samples":    "grid 2 900 7.1e-06\ngrid 4 950 6.5e-06\ngrid 8 940 6.6e-06\ngrid 16 930 6.9e-06\nread 4 3 6.4e-06\n",
		"zero median":      "grid 2 900 0\ngrid 4 950 6.5e-06\ngrid 8 940 6.6e-06\ngrid 16 930 6.9e-06\nread 4 1 6.4e-06\n",
		"cuda error":       "cuda_error cudaMalloc: out of memory\n",
		"no samples timed": "grid 2 900 7.1e-06\ngrid 4 950 6.5e-06\ngrid 8 940 6.6e-06\ngrid 16 930 6.9e-06\nread 4 0\n",
	} {
		if _, err := ParseReadBound(bad, 8<<20, grids); !errors.Is(err, ErrParse) {
			t.Errorf("%s: err = %v, want ErrParse", name, err)
		}
	}
}
