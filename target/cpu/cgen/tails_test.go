package cgen

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"llmir/schedule"
	"llmir/schedule/schedtest"
)

// tailCases are register-tiled schedules with and without a tail in the
// vectorized dimension of the register tile.
var tailCases = []struct {
	name    string
	m, n, k int64
	dyn     bool
	kn      bool      // weights stored K×N (schedtest.LinearKN)
	dims    [][]int64 // dynamic dims to validate with (nil: static)
	apply   func(t testing.TB, s *schedule.Schedule)
	version bool // the register tile's owner loop must be versioned
}{
	{"gemm_n688", 12, 688, 32, false, false, nil, func(t testing.TB, s *schedule.Schedule) {
		_, err := schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 6, NR: 32, NC: 256, KC: 32})
		must(t, err)
	}, true},
	{"gemm_dynM_n40", 16, 40, 16, true, false, [][]int64{{1}, {5}, {16}}, func(t testing.TB, s *schedule.Schedule) {
		_, err := schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 6, NR: 32, NC: 64, KC: 16, Parallel: true})
		must(t, err)
	}, true},
	{"gemv_vector_n_n72", 1, 72, 24, false, false, nil, func(t testing.TB, s *schedule.Schedule) {
		// M = 1 through the GEMM recipe: a row vector of 2 accumulator
		// vectors walking N, whose last tile holds 8 columns.
		_, err := schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 1, NR: 32, NC: 64, KC: 8})
		must(t, err)
	}, true},
	{"gemv_decode_n21", 5, 21, 48, false, false, nil, func(t testing.TB, s *schedule.Schedule) {
		// The decode recipe vectorizes k; its N tail is a guarded unroll
		// that keeps locals already, so nothing is versioned.
		_, err := schedtest.GEMV(s, "out", schedtest.GEMVTiles{JB: 8, KV: 16, MR: 2, JU: 2, Parallel: true})
		must(t, err)
	}, false},
	{"gemm_no_tail", 12, 128, 32, false, false, nil, func(t testing.TB, s *schedule.Schedule) {
		_, err := schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 6, NR: 32, NC: 64, KC: 32})
		must(t, err)
	}, false},
	{"split_vectors_n40", 8, 40, 16, false, true, nil, func(t testing.TB, s *schedule.Schedule) {
		// The 32-column tile is an unrolled pair of 16-lane vector loops:
		// the second vector's extent min(32, 40 - j_0*32) - 16 is constant
		// only once the tile's own min is pinned.
		splitVectors(t, s)
	}, true},
	{"strided_vectors_n40", 8, 40, 16, false, false, nil, func(t testing.TB, s *schedule.Schedule) {
		// Weights N×K: the j vector loop walks w with stride K, is printed
		// as a scalar loop in both copies, so versioning would only grow
		// the code and is dropped.
		splitVectors(t, s)
	}, false},
}

// TestTailVersioning checks that a register tile with a tail in its
// vectorized dimension is printed twice: a full-tile copy whose
// accumulators are vector locals and an edge copy with the array fallback;
// that shapes without such a tail are not versioned; and that every
// schedule still matches the interpreter.
func TestTailVersioning(t *testing.T) {
	needGCC(t)
	// The register tile is out_rf (recipes) or out_register (cache_write).
	locals := regexp.MustCompile(`llmir_vf out_r\w*_v0`)
	array := regexp.MustCompile(`float out_r\w*\[\d+\]`)
	for _, c := range tailCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := linear(t, c.m, c.n, c.k, c.dyn)
			if c.kn {
				var err error
				d, err = schedtest.LinearKN(c.m, c.n, c.k)
				must(t, err)
			}
			s := newSched(t, d)
			c.apply(t, s)
			src, err := Emit(s.Nest(), Options{Entry: "k", VectorBits: 512})
			must(t, err)
			again, err := Emit(s.Nest(), Options{Entry: "k", VectorBits: 512})
			must(t, err)
			if src != again {
				t.Fatal("two emits of the same nest differ")
			}
			full, edge := strings.Index(src, "// full register tile"), strings.Index(src, "} else { // edge tile")
			if got := full >= 0; got != c.version {
				t.Fatalf("versioned = %v, want %v\n%s", got, c.version, src)
			}
			if c.version {
				if edge < full {
					t.Fatalf("no edge copy after the full copy\n%s", src)
				}
				if !locals.MatchString(src[full:edge]) {
					t.Errorf("full copy does not hold the accumulators in vector locals:\n%s", src[full:edge])
				}
				if array.MatchString(src[full:edge]) {
					t.Errorf("full copy declares the accumulator array:\n%s", src[full:edge])
				}
			} else if c.name == "gemv_decode_n21" && array.MatchString(src) {
				t.Errorf("accumulators fell back to an array:\n%s", src)
			}
			dims := c.dims
			if dims == nil {
				dims = [][]int64{nil}
			}
			for _, d := range dims {
				checkAgainstInterpreter(context.Background(), t, s.Nest(), 2, d, 1e-5, Options{VectorBits: 512})
			}
		})
	}
}

// splitVectors tiles i, j by 4, 32 with a register cache_write and prints
// the tile's 32 columns as an unrolled pair of 16-lane vector loops.
func splitVectors(t testing.TB, s *schedule.Schedule) {
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
		js, err := s.Split(bl[len(bl)-1], -1, 16)
		must(t, err)
		must(t, s.Unroll(bl[len(bl)-2]))
		must(t, s.Unroll(js[0]))
		must(t, s.Vectorize(js[1]))
	}
}

// TestTailAssembly checks with objdump that the full-tile copy of a
// 6×32 register tile over N = 688 (a tail of 16 columns) is a k loop of
// 12 register-to-register vfmadd231ps on zmm with no vector load or store
// of an accumulator: some backward jump closes a loop with ≥ 12 such FMAs
// and no zmm store.
func TestTailAssembly(t *testing.T) {
	needAVX512Objdump(t)
	s := newSched(t, linear(t, 24, 688, 64, false))
	_, err := schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 6, NR: 32, NC: 256, KC: 32})
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
	best := registerLoop(string(out))
	if best < 12 {
		t.Fatalf("best loop has %d register vfmadd231ps zmm without a zmm store, want ≥ 12 (6 rows × 2 vectors)", best)
	}
	t.Logf("full-tile k loop: %d register vfmadd231ps zmm", best)
}

// registerLoop returns the largest number of register-only zmm FMAs in a
// loop of the disassembly (the instructions from a backward jump's target to
// the jump) that stores no zmm register to memory.
func registerLoop(asm string) int {
	insn := regexp.MustCompile(`^\s*([0-9a-f]+):\s+(.*)$`)
	jump := regexp.MustCompile(`^j\w+\s+([0-9a-f]+)\s+<`)
	fma := regexp.MustCompile(`^vfmadd231ps\s+%zmm\d+,%zmm\d+,%zmm\d+$`)
	store := regexp.MustCompile(`^vmov\w*\s+%zmm\d+,.*\(`)
	type line struct {
		addr uint64
		text string
	}
	var ls []line
	for _, s := range strings.Split(asm, "\n") {
		m := insn.FindStringSubmatch(s)
		if m == nil {
			continue
		}
		a, err := strconv.ParseUint(m[1], 16, 64)
		if err != nil {
			continue
		}
		ls = append(ls, line{a, strings.TrimSpace(m[2])})
	}
	best := 0
	for i, l := range ls {
		m := jump.FindStringSubmatch(l.text)
		if m == nil {
			continue
		}
		target, err := strconv.ParseUint(m[1], 16, 64)
		if err != nil || target >= l.addr {
			continue
		}
		n, clean := 0, true
		for j := i; j >= 0 && ls[j].addr >= target; j-- {
			switch {
			case fma.MatchString(ls[j].text):
				n++
			case store.MatchString(ls[j].text):
				clean = false
			}
		}
		if clean && n > best {
			best = n
		}
	}
	return best
}
