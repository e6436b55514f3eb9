package harness

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"llmir/target"
)

func TestParseSamples(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []float64
		bad  bool
	}{
		{in: "2 1e-6 2e-6", want: []float64{1e-6, 2e-6}},
		{in: "1 0.5", want: []float64{0.5}},
		{in: "", bad: true},
		{in: "3 1 2", bad: true},
		{in: "x 1", bad: true},
		{in: "1 nope", bad: true},
	} {
		got, err := ParseSamples(tc.in)
		if (err != nil) != tc.bad {
			t.Errorf("%q: err %v, want bad=%v", tc.in, err, tc.bad)
			continue
		}
		if !tc.bad && (len(got) != len(tc.want) || got[0] != tc.want[0]) {
			t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestWriteJob(t *testing.T) {
	p := &target.Problem{
		Name: "job", Seed: 1, Dims: []int64{7},
		Buffers: []target.BufferSpec{
			{Name: "x", DType: target.F32, Elems: 3},
			{Name: "h", DType: target.F16, Elems: 2},
			{Name: "y", DType: target.BF16, Elems: 5, Output: true},
		},
		Reference: func(in [][]float64) [][]float64 { return [][]float64{make([]float64, 5)} },
	}
	for _, copies := range []int{0, 1, 4} {
		dir := t.TempDir()
		path, err := WriteJob(dir, p, copies)
		if err != nil {
			t.Fatal(err)
		}
		job, _ := os.ReadFile(path)
		want := "data " + filepath.Join(dir, "inputs.bin") + "\nbuf x 12 7fc00000 0\nbuf h 4 7e00 0\nbuf y 10 7fc0 1\ndims 7\ncopies " +
			map[int]string{0: "1", 1: "1", 4: "4"}[copies] + "\n"
		if string(job) != want {
			t.Errorf("copies %d: job file:\n%s\nwant:\n%s", copies, job, want)
		}
		if st, err := os.Stat(filepath.Join(dir, "inputs.bin")); err != nil || st.Size() != 12+4 {
			t.Errorf("inputs.bin: %v, %v", st, err)
		}
	}
	p.Buffers[0].Name = "two words"
	if _, err := WriteJob(t.TempDir(), p, 1); err == nil || !strings.Contains(err.Error(), "two words") {
		t.Errorf("buffer name with a space: err %v", err)
	}
}

func TestCompareOutputs(t *testing.T) {
	p := &target.Problem{
		Name: "cmp", Seed: 1,
		Buffers: []target.BufferSpec{
			{Name: "a", DType: target.F32, Elems: 2, Output: true},
			{Name: "b", DType: target.F32, Elems: 2, Output: true},
		},
		Reference: func([][]float64) [][]float64 { return nil },
	}
	want := [][]float64{{1, 2}, {3, 4}}
	path := filepath.Join(t.TempDir(), "out")
	data := append(target.Encode(target.F32, []float64{1, 2}), target.Encode(target.F32, []float64{3, 5})...)
	os.WriteFile(path, data, 0o644)
	rel, name, err := CompareOutputs(p, want, path)
	if err != nil || name != "b" || !(rel > 0.1 && rel < 0.3) {
		t.Errorf("rel %g name %q err %v, want b's error ≈ 0.2", rel, name, err)
	}
	os.WriteFile(path, data[:12], 0o644)
	if _, _, err := CompareOutputs(p, want, path); err == nil || !strings.Contains(err.Error(), "want 16") {
		t.Errorf("short file: err %v", err)
	}
}

// TestBuildCaches checks that Build compiles once per version and source
// and reports the compiler's diagnostics on failure.
func TestBuildCaches(t *testing.T) {
	dir := t.TempDir()
	calls := 0
	compile := func(_ context.Context, src, out string) (string, error) {
		calls++
		b, err := os.ReadFile(src)
		if err != nil {
			return "", err
		}
		if strings.Contains(string(b), "broken") {
			return "line 1: broken", errors.New("exit status 1")
		}
		return "", os.WriteFile(out, b, 0o755)
	}
	ctx := context.Background()
	a, err := Build(ctx, dir, "v1", "src", ".c", compile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		version, src string
		same         bool
		calls        int
	}{
		{"v1", "src", true, 1},
		{"v2", "src", false, 2},
		{"v1", "src2", false, 3},
	} {
		b, err := Build(ctx, dir, tc.version, tc.src, ".c", compile)
		if err != nil || (a == b) != tc.same || calls != tc.calls {
			t.Errorf("%s/%s: %s vs %s (err %v), %d compiles, want same=%v after %d", tc.version, tc.src, b, a, err, calls, tc.same, tc.calls)
		}
	}
	if _, err := Build(ctx, dir, "v1", "broken", ".c", compile); err == nil || !strings.Contains(err.Error(), "line 1: broken") {
		t.Errorf("broken source: err %v, want the diagnostics", err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestProcProtocol drives a shell script speaking the protocol: replies,
// a hang (timeout), and an exit (the stderr tail in the error).
func TestProcProtocol(t *testing.T) {
	sh := filepath.Join(t.TempDir(), "fake.sh")
	script := `#!/bin/sh
echo ready
while read cmd a; do
  case $cmd in
    echo) echo "got $a" ;;
    hang) exec sleep 30 ;;
    die) echo "dying on purpose" >&2; exit 3 ;;
    quit) exit 0 ;;
  esac
done
`
	if err := os.WriteFile(sh, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := func() *Proc {
		h, err := Start(ctx, sh, "job", nil, 5*time.Second, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	h := start()
	if line, err := h.Call(ctx, "echo hi", 5*time.Second); err != nil || line != "got hi" {
		t.Errorf("echo: %q, %v", line, err)
	}
	if _, err := h.Call(ctx, "hang", 200*time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Errorf("hang: err %v, want ErrTimeout", err)
	}
	h = start()
	_, err := h.Call(ctx, "die", 5*time.Second)
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "status 3") || !strings.Contains(err.Error(), "dying on purpose") {
		t.Errorf("die: err %v, want ErrExited with status 3 and the stderr tail", err)
	}
	h = start()
	h.Close()
}
