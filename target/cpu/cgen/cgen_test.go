package cgen

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"llmir/schedule"
	"llmir/schedule/recipe"
	"llmir/schedule/schedtest"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func linear(t testing.TB, m, n, k int64, dyn bool) *schedule.Def {
	t.Helper()
	d, err := schedtest.Linear(m, n, k, dyn)
	must(t, err)
	return d
}

func newSched(t testing.TB, d *schedule.Def) *schedule.Schedule {
	t.Helper()
	s, err := schedule.New(d, 1)
	must(t, err)
	return s
}

// cases are the representative schedules with golden C.
var cases = []struct {
	name    string
	m, n, k int64
	bits    int
	apply   func(t testing.TB, s *schedule.Schedule)
}{
	{"naive", 5, 7, 3, 512, func(t testing.TB, s *schedule.Schedule) {}},
	{"tiled_vectorized", 8, 64, 16, 256, func(t testing.TB, s *schedule.Schedule) {
		ls, err := s.Tile([]string{"i", "j"}, []int64{4, 32})
		must(t, err)
		must(t, s.Reorder(ls[0], ls[1], "k", ls[2], ls[3]))
		wb, err := s.CacheWrite("out", schedule.Register)
		must(t, err)
		must(t, s.ReverseComputeAt(wb, ls[1]))
		init, err := s.DecomposeReduction("out", "k")
		must(t, err)
		for _, b := range []string{init, "out", wb} {
			bl, err := s.Loops(b)
			must(t, err)
			must(t, s.Unroll(bl[len(bl)-2]))
			must(t, s.Vectorize(bl[len(bl)-1]))
		}
	}},
	{"gemm_microkernel", 48, 128, 64, 512, func(t testing.TB, s *schedule.Schedule) {
		_, err := schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 6, NR: 32, NC: 64, KC: 32})
		must(t, err)
	}},
	{"gemv_decode", 4, 256, 64, 512, func(t testing.TB, s *schedule.Schedule) {
		_, err := schedtest.GEMV(s, "out", schedtest.GEMVTiles{JB: 64, KV: 16, MR: 4, JU: 4, Parallel: true})
		must(t, err)
	}},
	{"gemv_outer", 16, 40, 48, 512, func(t testing.TB, s *schedule.Schedule) {
		// The decode outer-product recipe: a transposed copy of a, a
		// register tile laid out rows-of-a last (one llmir_vf per row of
		// w), w broadcast, one prefetch per line of each row of w, and a
		// tail in N (40 rows in tiles of 2×8: the last chunk has one tile).
		_, err := recipe.GEMVOuter(s, "out", recipe.GEMVOuterTiles{MV: 16, NJ: schedule.Lit(2), JU: schedule.Lit(8), KU: schedule.Lit(16),
			Prefetch: schedule.Lit(2), Stream: "w", Parallel: true})
		must(t, err)
	}},
	{"gemv_outer_grouped", 16, 40, 64, 512, func(t testing.TB, s *schedule.Schedule) {
		// The outer-product recipe with 4 k steps in the lanes: a copied
		// as [k/4][i·4 + k%4], w read with llmir_bcast4 (4 floats to every
		// lane group), an accumulator per (row of w, 4 rows of a) and the
		// 4 partial sums of each output added at the write-back.
		_, err := recipe.GEMVOuter(s, "out", recipe.GEMVOuterTiles{MV: 16, KG: 4, NJ: schedule.Lit(2), JU: schedule.Lit(4), KU: schedule.Lit(16),
			KB: schedule.Lit(2), Prefetch: schedule.Lit(2), Stream: "w", Parallel: true})
		must(t, err)
	}},
	{"parallel_packed", 16, 512, 64, 512, func(t testing.TB, s *schedule.Schedule) {
		// NC×KC×4 = 64 KiB of packed panel: above the stack limit, so it is
		// allocated once per thread inside the OpenMP region.
		_, err := schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 4, NR: 32, NC: 256, KC: 64, Parallel: true})
		must(t, err)
	}},
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		must(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./target/cpu/cgen -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from golden file (check, then run with -update)", name)
	}
}

// TestGoldenC compares the generated C of representative schedules with
// testdata/<name>.c, compiles each with the ABI's flags, and runs it
// against the interpreter.
func TestGoldenC(t *testing.T) {
	needGCC(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := linear(t, c.m, c.n, c.k, false)
			s := newSched(t, d)
			c.apply(t, s)
			src, err := Emit(s.Nest(), Options{Entry: "llmir_" + c.name, VectorBits: c.bits})
			must(t, err)
			golden(t, c.name+".c", src)
			dir := t.TempDir()
			cfile := filepath.Join(dir, "k.c")
			must(t, os.WriteFile(cfile, []byte(src), 0o644))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "gcc", "-O3", "-march=native", "-fopenmp", "-fPIC", "-shared",
				"-Werror=implicit-function-declaration", "-Wall", "-Werror", "-Wno-unused-variable", "-Wno-maybe-uninitialized", "-o", filepath.Join(dir, "k.so"), cfile)
			cmd.WaitDelay = time.Second
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("gcc: %v\n%s", err, out)
			}
			checkAgainstInterpreter(ctx, t, s.Nest(), 2, nil, 1e-5, Options{VectorBits: c.bits})
		})
	}
}

// TestMicrokernelAssembly checks what gcc -O3 makes of the microkernel's
// inner loop: the 6×32 accumulator tile lives in 12 zmm registers and each
// k step is 6 broadcasts and 12 register-to-register vfmadd231ps, as in a
// hand-written kernel.
func TestMicrokernelAssembly(t *testing.T) {
	needAVX512Objdump(t)
	d := linear(t, 48, 128, 64, false)
	s := newSched(t, d)
	_, err := schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 6, NR: 32, NC: 64, KC: 32})
	must(t, err)
	src, err := Emit(s.Nest(), Options{Entry: "mk", VectorBits: 512})
	must(t, err)
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "mk.c"), []byte(src), 0o644))
	obj := filepath.Join(dir, "mk.o")
	if out, err := exec.Command("gcc", "-O3", "-march=native", "-fopenmp", "-fPIC", "-c", "-o", obj, filepath.Join(dir, "mk.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command("objdump", "-d", "--no-show-raw-insn", obj).Output()
	must(t, err)
	fma := regexp.MustCompile(`vfmadd231ps\s+%zmm\d+,%zmm\d+,%zmm\d+`)
	fmaMem := regexp.MustCompile(`vfmadd\d+ps\s+[^%\s]*\(`)
	bcast := regexp.MustCompile(`vbroadcastss`)
	nf := len(fma.FindAll(out, -1))
	if nf < 12 {
		t.Fatalf("found %d register vfmadd231ps on zmm, want ≥ 12 (6 rows × 2 vectors)", nf)
	}
	// Accumulators in registers: no FMA reads its accumulator from memory.
	for _, line := range fmaMem.FindAll(out, -1) {
		if bytes.Contains(line, []byte("(%rsp)")) {
			t.Fatalf("accumulator spilled to the stack: %s", line)
		}
	}
	if nb := len(bcast.FindAll(out, -1)); nb < 6 {
		t.Fatalf("found %d vbroadcastss, want ≥ 6", nb)
	}
	t.Logf("inner loop: %d register vfmadd231ps zmm, %d vbroadcastss", nf, len(bcast.FindAll(out, -1)))
}

// TestGEMVAssembly checks that the decode recipe's vector accumulators
// stay in registers through the k loop when M is dynamic (the row tail is
// a guarded unroll) and the write-back is a horizontal sum. The full
// register tile is printed first (loop versioning pins the row tail to
// MR): its k loop, from the first FMA to the first branch (the back edge),
// holds all MR·JU FMAs, no guard and no zmm reloaded from the stack. The
// edge copy, which only a partial last row block runs, may spill.
func TestGEMVAssembly(t *testing.T) {
	needAVX512Objdump(t)
	s := newSched(t, linear(t, 4, 256, 512, true))
	_, err := schedtest.GEMV(s, "out", schedtest.GEMVTiles{JB: 16, KV: 16, MR: 4, JU: 4, Parallel: true})
	must(t, err)
	src, err := Emit(s.Nest(), Options{Entry: "gv", VectorBits: 512})
	must(t, err)
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "gv.c"), []byte(src), 0o644))
	obj := filepath.Join(dir, "gv.o")
	if out, err := exec.Command("gcc", "-O3", "-march=native", "-fopenmp", "-fPIC", "-c", "-o", obj, filepath.Join(dir, "gv.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command("objdump", "-d", "--no-show-raw-insn", obj).Output()
	must(t, err)
	lines := strings.Split(string(out), "\n")
	first, last := -1, -1
	jump := regexp.MustCompile(`\sj[a-z]+\s`)
	for i, l := range lines {
		if first < 0 && strings.Contains(l, "vfmadd") {
			first = i
		}
		if first >= 0 && jump.MatchString(l) {
			last = i
			break
		}
	}
	if first < 0 || last < 0 {
		t.Fatal("no vfmadd loop in the GEMV kernel")
	}
	reload := regexp.MustCompile(`\(%rsp\),%zmm\d+`)
	fmas := 0
	for _, l := range lines[first : last+1] {
		if reload.MatchString(l) {
			t.Fatalf("accumulator reloaded from the stack inside the k loop: %s", strings.TrimSpace(l))
		}
		if strings.Contains(l, "vfmadd") {
			fmas++
		}
	}
	if fmas != 16 {
		t.Errorf("full tile's k loop has %d FMAs before its first branch, want MR·JU = 16 (a guard left inside?):\n%s", fmas, strings.Join(lines[first:last+1], "\n"))
	}
}

// TestGEMVOuterAssembly checks what gcc makes of the outer-product decode
// recipe with M dynamic (bucket 16): in the full tile's k loop every FMA
// takes its w operand as an embedded broadcast from memory
// (vfmadd231ps mem{1to16}, so the broadcast costs no instruction), there
// are JU·KU of them before the back edge, one prefetch per row of w, and
// no accumulator is reloaded from the stack.
func TestGEMVOuterAssembly(t *testing.T) {
	needAVX512Objdump(t)
	// Unblocked, and with k in two blocks of 8·16 (the kernels' form).
	for _, kb := range []int64{0, 8} {
		t.Run(fmt.Sprintf("kb=%d", kb), func(t *testing.T) { checkOuterAssembly(t, kb) })
	}
}

func checkOuterAssembly(t *testing.T, kb int64) {
	const ju, ku = 8, 16
	s := newSched(t, linear(t, 16, 64, 256, true))
	_, err := recipe.GEMVOuter(s, "out", recipe.GEMVOuterTiles{MV: 16, NJ: schedule.Lit(2), JU: schedule.Lit(ju), KU: schedule.Lit(ku),
		KB: schedule.Lit(kb), Prefetch: schedule.Lit(4), Stream: "w", Parallel: true})
	must(t, err)
	src, err := Emit(s.Nest(), Options{Entry: "go", VectorBits: 512})
	must(t, err)
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "go.c"), []byte(src), 0o644))
	obj := filepath.Join(dir, "go.o")
	if out, err := exec.Command("gcc", "-O3", "-march=native", "-fopenmp", "-fPIC", "-c", "-o", obj, filepath.Join(dir, "go.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command("objdump", "-d", "--no-show-raw-insn", obj).Output()
	must(t, err)
	lines := strings.Split(string(out), "\n")
	bcastFMA := regexp.MustCompile(`vfmadd\d+ps\s+-?0x[0-9a-f]+\(%[a-z0-9]+(,%[a-z0-9]+,\d)?\)\{1to16\},%zmm\d+,%zmm\d+`)
	jump := regexp.MustCompile(`\sj[a-z]+\s`)
	reload := regexp.MustCompile(`\(%rsp\),%zmm\d+`)
	// The full tile's k loop: the longest run of broadcast FMAs between
	// two branches.
	best, bestFrom, bestTo := 0, 0, 0
	for from := 0; from < len(lines); {
		to, n := from, 0
		for to < len(lines) && !jump.MatchString(lines[to]) {
			if bcastFMA.MatchString(lines[to]) {
				n++
			}
			to++
		}
		if n > best {
			best, bestFrom, bestTo = n, from, to
		}
		from = to + 1
	}
	if best != ju*ku {
		t.Fatalf("longest branch-free run has %d embedded-broadcast FMAs, want JU·KU = %d", best, ju*ku)
	}
	pf := 0
	for _, l := range lines[bestFrom:bestTo] {
		if reload.MatchString(l) {
			t.Fatalf("accumulator reloaded from the stack inside the k loop: %s", strings.TrimSpace(l))
		}
		if strings.Contains(l, "prefetch") {
			pf++
		}
	}
	if pf != ju {
		t.Errorf("%d prefetches in the k loop, want one per row of w (%d)", pf, ju)
	}
}

// TestGEMVOuterGroupsAssembly checks what gcc makes of the outer-product
// recipe with 4 k steps per lane group and M dynamic (bucket 16): the full
// tile keeps its JU·4 accumulators in registers (the last rows' fused
// extent, 4·d_M - 48, is pinned with the others), and its k loop is
// vbroadcastf32x4 of w and FMAs without embedded broadcasts, JU·KU of
// them, with JU broadcasts per k group and no accumulator reloaded from
// the stack. The kernel also matches the interpreter at M = 16 and 5.
func TestGEMVOuterGroupsAssembly(t *testing.T) {
	needAVX512Objdump(t)
	const ju, ku = 6, 16
	s := newSched(t, linear(t, 16, 60, 256, true))
	_, err := recipe.GEMVOuter(s, "out", recipe.GEMVOuterTiles{MV: 16, KG: 4, NJ: schedule.Lit(2), JU: schedule.Lit(ju), KU: schedule.Lit(ku),
		KB: schedule.Lit(8), Prefetch: schedule.Lit(4), Stream: "w", Parallel: true})
	must(t, err)
	src, err := Emit(s.Nest(), Options{Entry: "go", VectorBits: 512})
	must(t, err)
	full := src[strings.Index(src, "// full register tile"):strings.Index(src, "// edge tile")]
	if strings.Contains(full, "out_rf_rf[") {
		t.Errorf("the full tile keeps its accumulators in an array:\n%s", full)
	}
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "go.c"), []byte(src), 0o644))
	obj := filepath.Join(dir, "go.o")
	if out, err := exec.Command("gcc", "-O3", "-march=native", "-fopenmp", "-fPIC", "-c", "-o", obj, filepath.Join(dir, "go.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command("objdump", "-d", "--no-show-raw-insn", obj).Output()
	must(t, err)
	lines := strings.Split(string(out), "\n")
	// A vector of a may be folded into the FMA as a memory operand; an
	// embedded scalar broadcast ({1to16}) would mean the group broadcast
	// was lost.
	fma := regexp.MustCompile(`vfmadd\d+ps\s+[^{]*,%zmm\d+,%zmm\d+$`)
	jump := regexp.MustCompile(`\sj[a-z]+\s`)
	reload := regexp.MustCompile(`\(%rsp\),%zmm\d+`)
	best, bestFrom, bestTo := 0, 0, 0
	for from := 0; from < len(lines); {
		to, n := from, 0
		for to < len(lines) && !jump.MatchString(lines[to]) {
			if fma.MatchString(lines[to]) {
				n++
			}
			to++
		}
		if n > best {
			best, bestFrom, bestTo = n, from, to
		}
		from = to + 1
	}
	if best != ju*ku {
		t.Fatalf("longest branch-free run has %d FMAs without an embedded broadcast, want JU·KU = %d", best, ju*ku)
	}
	bc := 0
	for _, l := range lines[bestFrom:bestTo] {
		if reload.MatchString(l) {
			t.Fatalf("accumulator reloaded from the stack inside the k loop: %s", strings.TrimSpace(l))
		}
		if strings.Contains(l, "vbroadcastf32x4") {
			bc++
		}
	}
	if bc != ju*ku/4 {
		t.Errorf("%d vbroadcastf32x4 in the k loop, want one per row of w and k group (%d)", bc, ju*ku/4)
	}
	for _, m := range []int64{16, 5} {
		checkAgainstInterpreter(context.Background(), t, s.Nest(), 2, []int64{m}, 1e-5, Options{VectorBits: 512})
	}
}

// TestRandomSchedulesCompiled compiles random sampled schedules of a GEMM
// with odd shapes and runs them against the interpreter (and the default
// unscheduled nest, a dynamic-M kernel, and bf16 weights).
func TestRandomSchedulesCompiled(t *testing.T) {
	needGCC(t)
	shapes := [][3]int64{{7, 37, 13}, {1, 33, 17}, {13, 16, 5}, {6, 64, 31}}
	n := 20
	if testing.Short() {
		n = 8
	}
	for seed := 0; seed < n; seed++ {
		sh := shapes[seed%len(shapes)]
		bits := []int{512, 256, 512, 128, 0, 256}[seed%6]
		t.Run(fmt.Sprintf("seed=%d/%dx%dx%d/v%d", seed, sh[0], sh[1], sh[2], bits), func(t *testing.T) {
			t.Parallel()
			d := linear(t, sh[0], sh[1], sh[2], false)
			if seed%2 == 1 {
				var err error
				d, err = schedtest.LinearKN(sh[0], sh[1], sh[2])
				must(t, err)
			}
			s, err := schedule.New(d, uint64(seed))
			must(t, err)
			must(t, schedtest.Random(s, "out", rand.New(rand.NewPCG(uint64(seed), 7))))
			checkAgainstInterpreter(context.Background(), t, s.Nest(), 2, nil, 1e-5, Options{VectorBits: bits})
		})
	}
	t.Run("default", func(t *testing.T) {
		t.Parallel()
		d := linear(t, 7, 37, 13, false)
		checkAgainstInterpreter(context.Background(), t, newSched(t, d).Nest(), 2, nil, 1e-5, Options{VectorBits: 512})
	})
	t.Run("dynamic_M", func(t *testing.T) {
		t.Parallel()
		d := linear(t, 16, 64, 32, true)
		s := newSched(t, d)
		_, err := schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 6, NR: 32, NC: 64, KC: 16, Parallel: true})
		must(t, err)
		for _, m := range []int64{1, 5, 16} {
			checkAgainstInterpreter(context.Background(), t, s.Nest(), 2, []int64{m}, 1e-5, Options{VectorBits: 512})
		}
		g := newSched(t, d)
		_, err = schedtest.GEMV(g, "out", schedtest.GEMVTiles{JB: 16, KV: 16, MR: 4, JU: 2, Parallel: true})
		must(t, err)
		for _, m := range []int64{1, 7, 16} {
			checkAgainstInterpreter(context.Background(), t, g.Nest(), 2, []int64{m}, 1e-5, Options{VectorBits: 512})
		}
	})
	t.Run("bf16_weights_silu", func(t *testing.T) {
		t.Parallel()
		S := schedule.Static
		i, j, k := schedule.NewAxis("i", S(5)), schedule.NewAxis("j", S(48)), schedule.NewAxis("k", S(19))
		a := schedule.Input("a", schedule.F32, S(5), S(19))
		w := schedule.Input("w", schedule.BF16, S(48), S(19))
		b := schedule.Input("b", schedule.F32, S(48))
		acc := schedule.Compute("acc", schedule.F32, []schedule.Axis{i, j}, schedule.Sum(k, schedule.Mul(a.At(i, k), w.At(j, k))))
		y := schedule.Compute("y", schedule.BF16, []schedule.Axis{i, j}, schedule.Fn("silu", schedule.Add(acc.At(i, j), b.At(j))))
		d, err := schedule.NewDef("linear_silu", []*schedule.Tensor{a, w, b}, y)
		must(t, err)
		s := newSched(t, d)
		js, err := s.Split("j", -1, 16)
		must(t, err)
		must(t, s.Reorder("i", js[0], "k", js[1]))
		must(t, s.Vectorize(js[1]))
		must(t, s.ReverseComputeAt("y", js[0]))
		checkAgainstInterpreter(context.Background(), t, s.Nest(), 3, nil, 1e-2, Options{VectorBits: 512})
	})
}

// TestGEMVHorizontalSum checks that the k-vectorized write-back of the GEMV
// recipe is printed as llmir_hsum at every vector width (16, 8 and 4 lanes)
// and still matches the interpreter, with tails in M and N; a lane loop that
// is not a whole-vector reduction keeps the scalar form.
func TestGEMVHorizontalSum(t *testing.T) {
	needGCC(t)
	for _, bits := range []int{512, 256, 128} {
		t.Run(fmt.Sprintf("bits=%d", bits), func(t *testing.T) {
			t.Parallel()
			kv := int64(bits / 32)
			s := newSched(t, linear(t, 5, 21, 3*kv, false))
			_, err := schedtest.GEMV(s, "out", schedtest.GEMVTiles{JB: 8, KV: kv, MR: 2, JU: 2, Parallel: true})
			must(t, err)
			src, err := Emit(s.Nest(), Options{Entry: "k", VectorBits: bits})
			must(t, err)
			if got := strings.Count(src, "llmir_hsum(out_rf"); got != 4 {
				t.Errorf("%d llmir_hsum calls of the 2×2 tile, want 4\n%s", got, src)
			}
			checkAgainstInterpreter(context.Background(), t, s.Nest(), 2, nil, 1e-5, Options{VectorBits: bits})
		})
	}
	t.Run("half_vector", func(t *testing.T) {
		// KV = 8 lanes at 512 bits: the lane loop covers half a vector, so
		// it must not become a horizontal sum of the whole register.
		s := newSched(t, linear(t, 2, 8, 16, false))
		_, err := schedtest.GEMV(s, "out", schedtest.GEMVTiles{JB: 4, KV: 8, MR: 2, JU: 2})
		must(t, err)
		src, err := Emit(s.Nest(), Options{Entry: "k", VectorBits: 512})
		must(t, err)
		if strings.Contains(src, "llmir_hsum(out_rf") {
			t.Errorf("half-vector lane loop printed as a horizontal sum:\n%s", src)
		}
		checkAgainstInterpreter(context.Background(), t, s.Nest(), 2, nil, 1e-5, Options{VectorBits: 512})
	})
}

func TestEmitErrors(t *testing.T) {
	d := linear(t, 4, 8, 4, false)
	bound := newSched(t, d)
	must(t, bound.Bind("i", "blockIdx.x"))
	cases := []struct {
		name string
		n    *schedule.Nest
		opt  Options
		want string
	}{
		{"gpu loop", bound.Nest(), Options{Entry: "k", VectorBits: 512}, "bound to GPU axis"},
		{"entry name", newSched(t, d).Nest(), Options{Entry: "my kernel"}, "not a C identifier"},
		{"vector width", newSched(t, d).Nest(), Options{Entry: "k", VectorBits: 384}, "vector width 384"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Emit(c.n, c.opt)
			if err == nil || !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrUnsupported containing %q", err, c.want)
			}
		})
	}
}
