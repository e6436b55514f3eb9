package cgen

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"llmir/target/cpu/cputest"
	"sync"

	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"llmir/schedule"
)

// gccFlags are the flags the ABI names for the measuring machine.
var gccFlags = []string{"-O3", "-march=native", "-fopenmp", "-Werror=implicit-function-declaration"}

func needGCC(t testing.TB) { cputest.Need(t, "gcc") }

// needAVX512Objdump is for the tests that read zmm instructions back from
// the object code: gcc and objdump (a failure in CI), and a CPU whose
// -march=native has AVX-512 (a property of the machine, not a missing tool).
func needAVX512Objdump(t testing.TB) {
	t.Helper()
	needGCC(t)
	cputest.Need(t, "objdump")
	if cpu, err := os.ReadFile("/proc/cpuinfo"); err != nil || !bytes.Contains(cpu, []byte("avx512f")) {
		t.Skip("needs an avx512f CPU")
	}
}

var (
	driverOnce sync.Once
	driverObj  string
	driverErr  error
)

// driverObject compiles testdata/driver.c once per test binary.
func driverObject(ctx context.Context, t testing.TB) string {
	driverOnce.Do(func() {
		dir, err := os.MkdirTemp("", "llmir-cgen-driver")
		if err != nil {
			driverErr = err
			return
		}
		driverObj = filepath.Join(dir, "driver.o")
		out, err := exec.CommandContext(ctx, "gcc", "-O2", "-c", "-o", driverObj, "testdata/driver.c").CombinedOutput()
		if err != nil {
			driverErr = fmt.Errorf("gcc driver.c: %v\n%s", err, out)
		}
	})
	if driverErr != nil {
		t.Fatal(driverErr)
	}
	return driverObj
}

// buildDriver compiles src with the test driver into an executable.
func buildDriver(ctx context.Context, t testing.TB, dir, src string) string {
	t.Helper()
	c := filepath.Join(dir, "kernel.c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "kernel")
	args := append(append([]string{}, gccFlags...), "-o", exe, c, driverObject(ctx, t), "-lm")
	cmd := exec.CommandContext(ctx, "gcc", args...)
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s\n--- source ---\n%s", err, out, src)
	}
	return exe
}

// runDriver runs exe on params and returns every buffer after the call.
func runDriver(ctx context.Context, t testing.TB, dir, exe string, n *schedule.Nest, params [][]float64, dims []int64) [][]float64 {
	t.Helper()
	var buf []byte
	put := func(v int64) { buf = binary.LittleEndian.AppendUint64(buf, uint64(v)) }
	put(int64(len(params)))
	put(int64(len(dims)))
	for _, d := range dims {
		put(d)
	}
	for i, p := range n.Params() {
		put(int64(p.DType))
		put(int64(len(params[i])))
		for _, v := range params[i] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(float32(v)))
		}
	}
	in, out := filepath.Join(dir, "in.bin"), filepath.Join(dir, "out.bin")
	if err := os.WriteFile(in, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, in, out)
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=2")
	cmd.WaitDelay = time.Second
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("run kernel: %v (exit 3 = guard band overwritten)\n%s", err, o)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	res := make([][]float64, len(params))
	off := 0
	for i := range params {
		res[i] = make([]float64, len(params[i]))
		for j := range res[i] {
			res[i][j] = float64(math.Float32frombits(binary.LittleEndian.Uint32(data[off:])))
			off += 4
		}
	}
	return res
}

// inputs returns seeded random parameters at runtime extents dims, the
// outputs poisoned with NaN.
func inputs(n *schedule.Nest, nin int, dims []int64, seed uint64) [][]float64 {
	rng := rand.New(rand.NewPCG(seed, seed))
	var out [][]float64
	for i, p := range n.Params() {
		sz := int64(1)
		for _, e := range p.Shape {
			switch e := e.(type) {
			case schedule.Int:
				sz *= e.V
			case schedule.Dyn:
				sz *= dims[e.Index]
			}
		}
		b := make([]float64, sz)
		for j := range b {
			if i < nin {
				b[j] = float64(float32(rng.Float64()*2 - 1))
				switch p.DType {
				case schedule.BF16:
					b[j] = schedule.RoundBF16(b[j])
				case schedule.F16:
					b[j] = schedule.RoundF16(b[j])
				}
			} else {
				b[j] = math.NaN()
			}
		}
		out = append(out, b)
	}
	return out
}

func clone(ps [][]float64) [][]float64 {
	out := make([][]float64, len(ps))
	for i, p := range ps {
		out[i] = append([]float64{}, p...)
	}
	return out
}

// checkAgainstInterpreter compiles the nest, runs it and compares every
// buffer (inputs must be unchanged, outputs within tol of the interpreter).
func checkAgainstInterpreter(ctx context.Context, t testing.TB, n *schedule.Nest, nin int, dims []int64, tol float64, opt Options) {
	t.Helper()
	opt.Entry = "llmir_test_kernel"
	src, err := Emit(n, opt)
	if err != nil {
		t.Fatalf("emit: %v\n%s", err, n)
	}
	dir := t.TempDir()
	exe := buildDriver(ctx, t, dir, src)
	ps := inputs(n, nin, dims, 42)
	want := clone(ps)
	if err := schedule.Interpret(n, want, dims); err != nil {
		t.Fatalf("interpret: %v", err)
	}
	got := runDriver(ctx, t, dir, exe, n, ps, dims)
	for i := range got {
		if e := relErr(got[i], want[i]); e > tol {
			t.Fatalf("buffer %d: relative error %.3g > %.3g\n%s\n--- C ---\n%s", i, e, tol, n, src)
		}
	}
}

func relErr(got, want []float64) float64 {
	var num, den float64
	for i := range want {
		if math.IsNaN(got[i]) != math.IsNaN(want[i]) {
			return math.Inf(1)
		}
		if math.IsNaN(want[i]) {
			continue
		}
		d := got[i] - want[i]
		num += d * d
		den += want[i] * want[i]
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if driverObj != "" {
		os.RemoveAll(filepath.Dir(driverObj))
	}
	os.Exit(code)
}
