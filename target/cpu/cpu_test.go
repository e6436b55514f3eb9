package cpu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"llmir/target"
)

// testOpts keeps every timed phase to a few milliseconds and the hang
// detection to a second.
var testOpts = target.RunOptions{
	Warmup:     2 * time.Millisecond,
	Budget:     5 * time.Millisecond,
	MinSamples: 3,
	Timeout:    1500 * time.Millisecond,
}

// sharedDir lets all tests of the package reuse one harness build and one
// object cache.
var sharedDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "llmir-cpu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

func newTestTarget(t testing.TB) *Target {
	t.Helper()
	// gcc is required, never skipped: a missing compiler must fail CI.
	tg, err := New(context.Background(), Options{CacheDir: sharedDir, MaxRotateBytes: 8 << 20})
	if err != nil {
		t.Fatalf("new cpu target: %v", err)
	}
	return tg
}

// linearSource is a correct kernel for the linear problem, with a variant
// hook: body runs after the outputs are written.
func linearSource(entry string, l Linear, body string) string {
	return fmt.Sprintf(`#include <stdint.h>
#include <stddef.h>
int %s(void *const *bufs, const int64_t *dims) {
	float *a = bufs[0], *w = bufs[1], *out = bufs[2];
	const int64_t m = dims[0], n = %d, k = %d;
	for (int64_t i = 0; i < m; i++)
		for (int64_t j = 0; j < n; j++) {
			float s = 0;
			for (int64_t kk = 0; kk < k; kk++) s += a[i*k+kk] * w[j*k+kk];
			out[i*n+j] = s;
		}
	(void)a; (void)w; (void)out;
	%s
	return 0;
}
`, entry, l.N, l.K, body)
}

func TestRunIsolatesBrokenCandidates(t *testing.T) {
	tg := newTestTarget(t)
	l := Linear{M: 3, N: 17, K: 33}
	p := LinearProblem(l, 1)
	// The good candidates share one source: the builder compiles it once.
	good := func(id string) target.Candidate {
		return target.Candidate{ID: id, Entry: "k", Source: linearSource("k", l, "/* good */")}
	}
	bad := func(id, body string) target.Candidate {
		return target.Candidate{ID: id, Entry: "k", Source: linearSource("k", l, body)}
	}
	cases := []struct {
		cand   target.Candidate
		status target.Status
		errHas string
	}{
		{good("good-1"), target.StatusOK, ""},
		{bad("segfault", "*(volatile int *)0 = 1;"), target.StatusRuntimeError, "SIGSEGV"},
		{good("good-2"), target.StatusOK, ""},
		{bad("hang", "for (volatile int x = 0;; x++) {}"), target.StatusTimeout, "no reply"},
		{good("good-3"), target.StatusOK, ""},
		{bad("wrong", "out[5] += 1.0f;"), target.StatusWrongResult, "relative L2 error"},
		{bad("unwritten", "out[m*n-1] = 0.0f/0.0f;"), target.StatusWrongResult, "relative L2 error +Inf"},
		{bad("past-output", "out[m*n] = 1.0f;"), target.StatusWrongResult, "outside buffer out (in the guard band after"},
		{bad("before-output", "out[-1] = 1.0f;"), target.StatusWrongResult, "outside buffer out (in the guard band before"},
		{bad("modifies-input", "w[7] = 0.5f;"), target.StatusWrongResult, "modified input w (first changed byte 28)"},
		{bad("nonzero-rc", "return 3;"), target.StatusRuntimeError, "returned 3"},
		{bad("exits", "extern void exit(int); exit(0);"), target.StatusRuntimeError, "exited with status 0"},
		{bad("aborts", "extern void abort(void); abort();"), target.StatusRuntimeError, "SIGABRT"},
		{bad("no-compile", "this is not C;"), target.StatusBuildError, "error"},
		{target.Candidate{ID: "no-entry", Entry: "missing", Source: linearSource("k", l, "")}, target.StatusBuildError, "missing not found"},
		{bad("prints", `extern int puts(const char *); puts("noise on stdout");`), target.StatusOK, ""},
		// The harness does not link libm: a candidate calling it must load.
		{bad("libm", "extern float sqrtf(float), expf(float); volatile float z = 0.0f; if (sqrtf(expf(z)) != 1.0f) return 4;"), target.StatusOK, ""},
		{good("good-4"), target.StatusOK, ""},
	}
	var cands []target.Candidate
	for _, c := range cases {
		cands = append(cands, c.cand)
	}
	res, err := target.Measure(context.Background(), tg, p, cands, testOpts)
	if err != nil {
		t.Fatalf("measure: %v", err)
	}
	if len(res) != len(cases) {
		t.Errorf("got %d measurements, want %d", len(res), len(cases))
	}
	for _, c := range cases {
		m, ok := res[c.cand.ID]
		if !ok {
			t.Errorf("%s: no measurement", c.cand.ID)
			continue
		}
		first, _, _ := strings.Cut(m.Error, "\n")
		t.Logf("%-15s %-13s %s", c.cand.ID, m.Status, first)
		if m.Status != c.status {
			t.Errorf("%s: status %s, want %s (error: %s)", c.cand.ID, m.Status, c.status, m.Error)
			continue
		}
		if !strings.Contains(m.Error, c.errHas) {
			t.Errorf("%s: error %q does not mention %q", c.cand.ID, m.Error, c.errHas)
		}
		if c.status == target.StatusOK {
			if len(m.Samples) < testOpts.MinSamples || m.Median <= 0 || m.Min > m.Median || m.Q1 > m.Q3 {
				t.Errorf("%s: bad timing: %d samples, median %g, min %g, IQR [%g,%g]", c.cand.ID, len(m.Samples), m.Median, m.Min, m.Q1, m.Q3)
			}
			if m.RelErr > 1e-5 {
				t.Errorf("%s: relative error %g", c.cand.ID, m.RelErr)
			}
		} else if len(m.Samples) != 0 {
			t.Errorf("%s: failed candidate has %d samples", c.cand.ID, len(m.Samples))
		}
	}
}

func TestBaselines(t *testing.T) {
	tg := newTestTarget(t)
	// M=1 takes the sgemv path, M=13 sgemm; odd sizes everywhere.
	for _, l := range []Linear{{M: 1, N: 37, K: 65}, {M: 13, N: 33, K: 129}} {
		for _, threads := range []int{1, 2} {
			t.Run(fmt.Sprintf("%v/threads=%d", l, threads), func(t *testing.T) {
				p := LinearProblem(l, 7)
				cands := []target.Candidate{
					OpenBLASCandidate("openblas", l, threads),
					NaiveCandidate("naive", l, threads),
				}
				res, err := target.Measure(context.Background(), tg, p, cands, testOpts)
				if err != nil {
					t.Fatalf("measure: %v", err)
				}
				for _, c := range cands {
					m := res[c.ID]
					if m.Status == target.StatusBuildError && strings.Contains(m.Error, "cblas") {
						t.Fatalf("OpenBLAS is missing (apt-get install libopenblas-dev): %s", m.Error)
					}
					if !m.OK() || m.Threads != threads {
						t.Errorf("%s: status %s threads %d: %s", c.ID, m.Status, m.Threads, m.Error)
					}
					if m.RelErr > 1e-5 {
						t.Errorf("%s: relative error %g", c.ID, m.RelErr)
					}
				}
			})
		}
	}
}

// TestChildEnvironment checks what the child sees: the thread count in
// OMP_NUM_THREADS and OPENBLAS_NUM_THREADS, and UnsetEnv removed for its
// candidate only.
func TestChildEnvironment(t *testing.T) {
	t.Setenv("LLMIR_TEST_VAR", "set")
	tg := newTestTarget(t)
	l := Linear{M: 2, N: 3, K: 5}
	p := LinearProblem(l, 3)
	check := func(id string, threads int, wantVar bool, unset []string) target.Candidate {
		body := fmt.Sprintf(`
	extern char *getenv(const char *);
	extern int omp_get_max_threads(void);
	extern int atoi(const char *);
	if (omp_get_max_threads() != %d) return 10 + omp_get_max_threads();
	const char *ob = getenv("OPENBLAS_NUM_THREADS");
	if (!ob || atoi(ob) != %d) return 2;
	if ((getenv("LLMIR_TEST_VAR") != NULL) != %d) return 3;`, threads, threads, map[bool]int{false: 0, true: 1}[wantVar])
		return target.Candidate{ID: id, Entry: "k", Source: linearSource("k", l, body), Threads: threads, UnsetEnv: unset}
	}
	cands := []target.Candidate{
		check("one", 1, true, nil),
		check("two", 2, true, nil),
		check("two-unset", 2, false, []string{"LLMIR_TEST_VAR"}),
		check("one-again", 1, true, nil),
	}
	res, err := target.Measure(context.Background(), tg, p, cands, testOpts)
	if err != nil {
		t.Fatalf("measure: %v", err)
	}
	for _, c := range cands {
		if m := res[c.ID]; !m.OK() {
			t.Errorf("%s: %s: %s", c.ID, m.Status, m.Error)
		}
	}
}

func TestBuildCacheAndDiagnostics(t *testing.T) {
	tg := newTestTarget(t)
	ctx := context.Background()
	src := linearSource("k", Linear{M: 1, N: 2, K: 3}, "/* cache test */")
	cands := []target.Candidate{
		{ID: "a", Entry: "k", Source: src},
		{ID: "b", Entry: "k", Source: src + "\nint broken( { \n"},
	}
	first, err := tg.Build(ctx, cands)
	if err != nil {
		t.Fatal(err)
	}
	if first["a"].Failure != nil || first["a"].Artifact == "" {
		t.Fatalf("a: %+v", first["a"])
	}
	fb := first["b"].Failure
	if fb == nil || fb.Status != target.StatusBuildError || !strings.Contains(fb.Error, "error:") {
		t.Fatalf("b: want build_error with gcc diagnostics, got %+v", fb)
	}
	again, err := tg.Build(ctx, cands[:1])
	if err != nil {
		t.Fatal(err)
	}
	if !again["a"].Cached || again["a"].Artifact != first["a"].Artifact {
		t.Errorf("rebuild of the same source: cached=%v %s vs %s", again["a"].Cached, again["a"].Artifact, first["a"].Artifact)
	}
	// Flags are part of the key.
	flagged := cands[0]
	flagged.CFlags = []string{"-DX=1"}
	if tg.Builder.Key(flagged) == tg.Builder.Key(cands[0]) {
		t.Error("cflags do not change the cache key")
	}
	if _, err := tg.Build(ctx, []target.Candidate{cands[0], cands[0]}); err == nil {
		t.Error("duplicate IDs accepted")
	}
	// Same source under two IDs in one batch: one object, both IDs; and a
	// candidate without an entry fails alone.
	twin := target.Candidate{ID: "twin", Entry: "k", Source: src + "/* twin */"}
	twin2 := twin
	twin2.ID = "twin2"
	noEntry := twin
	noEntry.ID, noEntry.Entry = "no-entry", ""
	got, err := tg.Build(ctx, []target.Candidate{twin, twin2, noEntry})
	if err != nil {
		t.Fatal(err)
	}
	if got["twin"].Artifact == "" || got["twin"].Artifact != got["twin2"].Artifact || got["twin2"].Candidate.ID != "twin2" {
		t.Errorf("twins: %+v / %+v", got["twin"], got["twin2"])
	}
	if f := got["no-entry"].Failure; f == nil || f.CandidateID != "no-entry" || f.Status != target.StatusBuildError {
		t.Errorf("no-entry: %+v", got["no-entry"])
	}
}

func TestBuildCancelled(t *testing.T) {
	tg := newTestTarget(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := tg.Build(ctx, []target.Candidate{{ID: "x", Entry: "k", Source: "int k(void){return 0;} /* cancelled */"}})
	if err == nil {
		t.Fatal("build with a cancelled context succeeded")
	}
}

func TestFingerprint(t *testing.T) {
	tg := newTestTarget(t)
	fp := tg.CPU()
	if fp.Cores < 1 || fp.Toolchain.Version == "" || fp.Model == "" {
		t.Errorf("incomplete fingerprint: %+v", fp)
	}
	if fp.LLCBytes() <= 0 {
		t.Errorf("no last-level cache in %+v", fp.Caches)
	}
	again, err := DetectFingerprint(context.Background(), tg.Builder.GCC)
	if err != nil {
		t.Fatal(err)
	}
	if again.Hash() != fp.Hash() {
		t.Errorf("fingerprint hash not stable:\n%s\n%s", fp.JSON(), again.JSON())
	}
	var back Fingerprint
	if err := json.Unmarshal(fp.JSON(), &back); err != nil || back.Hash() != fp.Hash() {
		t.Errorf("JSON round trip: %v, %s vs %s", err, back.Hash(), fp.Hash())
	}
	dev, _ := tg.Fingerprint(context.Background())
	if dev.Kind != "cpu" || dev.Hash != fp.Hash() || dev.Compat != fp.CompatClass() {
		t.Errorf("device %+v", dev)
	}
	for _, c := range []struct {
		isa    []string
		bits   int
		compat string
	}{
		{[]string{"avx", "avx2", "avx512f", "fma"}, 512, "x86_64/avx512f"},
		{[]string{"avx", "avx2", "fma"}, 256, "x86_64/avx2"},
		{[]string{"avx", "avx2"}, 128, "x86_64/sse2"},
		{nil, 128, "x86_64/sse2"},
	} {
		f := Fingerprint{Arch: "x86_64", ISA: c.isa}
		if f.VectorBits() != c.bits || f.CompatClass() != c.compat {
			t.Errorf("%v: %d %s, want %d %s", c.isa, f.VectorBits(), f.CompatClass(), c.bits, c.compat)
		}
	}
}

func TestCopies(t *testing.T) {
	r := &Runner{LLCBytes: 1 << 20, MaxRotateBytes: 64 << 20}
	for _, c := range []struct {
		l    Linear
		want int
	}{
		{Linear{M: 1, N: 1024, K: 1024}, 1},   // 4 MiB ≥ 2× LLC
		{Linear{M: 1, N: 128, K: 1024}, 4},    // 512 KiB + a bit: 2 MiB needs 4 copies
		{Linear{M: 1, N: 4, K: 4}, maxCopies}, // tiny: capped by count
	} {
		if got := r.Copies(LinearProblem(c.l, 1)); got != c.want {
			t.Errorf("%v: %d copies, want %d", c.l, got, c.want)
		}
	}
	small := &Runner{LLCBytes: 1 << 30, MaxRotateBytes: 1 << 20}
	if got := small.Copies(LinearProblem(Linear{M: 1, N: 128, K: 1024}, 1)); got != 1 {
		t.Errorf("memory cap: %d copies, want 1", got)
	}
}

func TestLinearReference(t *testing.T) {
	p := LinearProblem(Linear{M: 2, N: 3, K: 4}, 5)
	in := p.Inputs()
	want, err := p.Expected()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		for j := range 3 {
			var s float64
			for k := range 4 {
				s += in[0][i*4+k] * in[1][j*4+k]
			}
			if math.Abs(s-want[0][i*3+j]) > 1e-12 {
				t.Errorf("out[%d,%d] = %g, want %g", i, j, want[0][i*3+j], s)
			}
		}
	}
}

// TestHalfPrecisionBuffers runs a bf16-in, f16-out kernel through the
// harness: 2-byte poison patterns, odd element counts against 64-byte guard
// bands, and the Go side's decoding.
func TestHalfPrecisionBuffers(t *testing.T) {
	tg := newTestTarget(t)
	const n = 37
	p := &target.Problem{
		Name: "scale/bf16→f16",
		Buffers: []target.BufferSpec{
			{Name: "x", DType: target.BF16, Elems: n},
			{Name: "y", DType: target.F16, Elems: n, Output: true},
		},
		Seed: 9,
		Reference: func(in [][]float64) [][]float64 {
			out := make([]float64, n)
			for i, v := range in[0] {
				out[i] = 3 * v
			}
			return [][]float64{out}
		},
	}
	src := func(last string) string {
		return `#include <stdint.h>
#include <string.h>
int k(void *const *bufs, const int64_t *dims) {
	const uint16_t *x = bufs[0];
	_Float16 *y = bufs[1];
	(void)dims;
	for (int i = 0; i < ` + last + `; i++) {
		uint32_t u = (uint32_t)x[i] << 16;
		float f;
		memcpy(&f, &u, 4);
		y[i] = (_Float16)(3.0f * f);
	}
	return 0;
}`
	}
	cands := []target.Candidate{
		{ID: "ok", Entry: "k", Source: src("37")},
		{ID: "short", Entry: "k", Source: src("36")},
		{ID: "long", Entry: "k", Source: src("38")},
	}
	res, err := target.Measure(context.Background(), tg, p, cands, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]target.Status{"ok": target.StatusOK, "short": target.StatusWrongResult, "long": target.StatusWrongResult}
	for id, s := range want {
		if res[id].Status != s {
			t.Errorf("%s: %s, want %s (%s)", id, res[id].Status, s, res[id].Error)
		}
	}
	if r := res["ok"].RelErr; r > target.F16.Tolerance() {
		t.Errorf("relative error %g", r)
	}
	if !strings.Contains(res["long"].Error, "outside buffer y (in the guard band after") {
		t.Errorf("long: %s", res["long"].Error)
	}
}

// TestRunCancelled: cancelling the context stops the batch promptly, keeps
// what was measured, and does not blame the interrupted candidate.
func TestRunCancelled(t *testing.T) {
	tg := newTestTarget(t)
	l := Linear{M: 2, N: 5, K: 3}
	p := LinearProblem(l, 11)
	cands := []target.Candidate{
		{ID: "first", Entry: "k", Source: linearSource("k", l, "/* first */")},
		{ID: "spins", Entry: "k", Source: linearSource("k", l, "for (volatile int x = 0;; x++) {} /* cancelled */")},
		{ID: "never", Entry: "k", Source: linearSource("k", l, "/* never */")},
	}
	built, err := tg.Build(context.Background(), cands)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tg.Runner.Harness(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The deadline leaves "first" ample time (it takes milliseconds) and
	// lands while "spins" spins. A lock file of its own keeps this test from
	// waiting behind other packages' measurements: timing is not its point.
	t.Setenv("TMPDIR", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts := testOpts
	opts.Timeout = time.Minute
	start := time.Now()
	res, err := tg.Run(ctx, p, []target.Built{built["first"], built["spins"], built["never"]}, opts)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	t.Logf("run returned after %v", time.Since(start))
	if time.Since(start) > 15*time.Second {
		t.Errorf("cancellation took %v", time.Since(start))
	}
	if !res["first"].OK() {
		t.Errorf("first: %+v", res["first"])
	}
	for _, id := range []string{"spins", "never"} {
		if m, ok := res[id]; ok {
			t.Errorf("%s measured after cancellation: %+v", id, m)
		}
	}
}

func TestMissingCompiler(t *testing.T) {
	for _, gcc := range []string{"/nonexistent/gcc", "llmir-no-such-gcc"} {
		_, err := New(context.Background(), Options{GCC: gcc, CacheDir: t.TempDir()})
		if !errors.Is(err, ErrNoCompiler) {
			t.Errorf("GCC=%s: err = %v, want ErrNoCompiler", gcc, err)
		}
	}
	// A file that exists but is not gcc fails when asked for its version.
	_, err := New(context.Background(), Options{GCC: "/bin/false", CacheDir: t.TempDir()})
	if !errors.Is(err, ErrNoCompiler) {
		t.Errorf("GCC=/bin/false: err = %v, want ErrNoCompiler", err)
	}
}

func TestCacheDirWithWhitespace(t *testing.T) {
	_, err := New(context.Background(), Options{CacheDir: t.TempDir() + "/has space"})
	if err == nil || !strings.Contains(err.Error(), "whitespace") {
		t.Errorf("err = %v, want a whitespace error", err)
	}
}

// TestDeviceLock: a measurement excludes builds and other measurements,
// builds overlap each other, and waiting respects the context.
func TestDeviceLock(t *testing.T) {
	ctx := context.Background()
	b1, err := lockDevice(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := lockDevice(ctx, false)
	if err != nil {
		t.Fatal("second build lock:", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := lockDevice(short, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("measure lock during builds: %v, want deadline exceeded", err)
	}
	b1()
	b2()
	m, err := lockDevice(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	// Another process's view: an flock on a fresh descriptor must fail.
	f, err := os.Open(DeviceLockPath())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		t.Error("machine-wide lock not held during a measurement")
	}
	m()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		t.Errorf("lock still held after release: %v", err)
	}
}

// TestReadBaseline validates the read-bandwidth baseline on odd sizes (a
// partial last page) at one and two threads, and shows that a copy that
// skips the last page is caught: one output per page.
func TestReadBaseline(t *testing.T) {
	tg := newTestTarget(t)
	// Page counts below, at and past the four streams, with a remainder.
	for _, bytes := range []int64{1, 4096, 3*4096 + 100, 9 * 4096, 1<<20 + 4096} {
		p := ReadProblem(bytes, 5)
		pages := (max(bytes, 1) + 4095) / 4096
		if p.Dims[0] != pages || p.Buffers[0].Elems != pages*1024 {
			t.Fatalf("ReadProblem(%d): %d pages of %d elements, want %d pages", bytes, p.Dims[0], p.Buffers[0].Elems, pages)
		}
		good := ReadCandidate("read", 2)
		short := ReadCandidate("short", 1)
		short.Source = strings.Replace(short.Source, "pages = dims[0];", "pages = dims[0] - 1;", 1)
		if short.Source == ReadCandidate("short", 1).Source {
			t.Fatal("the short read's edit did not apply")
		}
		cands := []target.Candidate{ReadCandidate("read1", 1), good, short}
		res, err := target.Measure(context.Background(), tg, p, cands, testOpts)
		if err != nil {
			t.Fatalf("measure: %v", err)
		}
		for _, id := range []string{"read1", "read"} {
			if m := res[id]; !m.OK() || m.RelErr > 1e-5 {
				t.Errorf("%d bytes: %s: status %s, relative error %g: %s", bytes, id, m.Status, m.RelErr, m.Error)
			}
		}
		if m := res["short"]; m.Status != target.StatusWrongResult {
			t.Errorf("%d bytes: a read that skips the last page: status %s, want %s", bytes, m.Status, target.StatusWrongResult)
		}
	}
}
