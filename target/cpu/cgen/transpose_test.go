package cgen

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"llmir/schedule"
	"llmir/schedule/recipe"
)

// TestTransposeCopy checks that the packs of the GEMM recipe (w into
// [NC/NR][KC][NR] panels, a into [KC][MR]) are printed as register
// transposes at every vector width, with tails in the packed rows (N and
// M not multiples of the panel or row block; MR below and above the
// lanes), that a pack whose depth is not a multiple of the lanes keeps the
// scalar nest, and that every kernel matches the interpreter.
func TestTransposeCopy(t *testing.T) {
	needGCC(t)
	cases := []struct {
		n, k   int64
		mr, kc int64
		bits   int
		// packs printed as transposes: w, a
		w, a bool
	}{
		{40, 48, 6, 16, 512, true, true},   // w rows 32 + 8 (tail), a rows ≤ 6
		{40, 48, 20, 16, 512, true, true},  // a rows 16 + 4 per row block
		{40, 48, 6, 24, 512, false, false}, // KC 24: not whole vectors
		{40, 48, 6, 24, 256, true, true},   // … which 8 lanes divide
		{36, 32, 3, 16, 128, true, true},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("n%d_k%d_mr%d_kc%d_bits%d", c.n, c.k, c.mr, c.kc, c.bits), func(t *testing.T) {
			t.Parallel()
			s := newSched(t, linear(t, 32, c.n, c.k, true))
			_, err := recipe.GEMM(s, "out", recipe.GEMMTiles{MR: schedule.Lit(c.mr), NR: 32, NB: schedule.Lit(1), KC: schedule.Lit(c.kc), PackA: true})
			must(t, err)
			src, err := Emit(s.Nest(), Options{Entry: "k", VectorBits: c.bits})
			must(t, err)
			for buf, want := range map[string]bool{"w_local": c.w, "a_local": c.a} {
				if got := strings.Contains(src, buf+"_ax0×"+buf+"_ax1 copy as"); got != want {
					t.Errorf("%s packed by register transposes = %v, want %v\n%s", buf, got, want, src)
				}
			}
			for _, m := range []int64{1, c.mr - 1, c.mr + 1, 32} {
				checkAgainstInterpreter(context.Background(), t, s.Nest(), 2, []int64{max(m, 1)}, 1e-5, Options{VectorBits: c.bits})
			}
		})
	}
}

// TestTransposeC checks llmir_transpose itself on every vector width: a
// lanes×lanes matrix of distinct values comes back transposed.
func TestTransposeC(t *testing.T) {
	needGCC(t)
	for _, lanes := range []int64{4, 8, 16} {
		t.Run(fmt.Sprint(lanes), func(t *testing.T) {
			t.Parallel()
			src := fmt.Sprintf(`#include <stdint.h>
#include <stdio.h>
typedef float llmir_vf __attribute__((vector_size(%d)));
%s
int main(void) {
  llmir_vf r[%d];
  for (int i = 0; i < %d; i++) for (int j = 0; j < %d; j++) r[i][j] = (float)(i * 100 + j);
  llmir_transpose(r);
  for (int i = 0; i < %d; i++) for (int j = 0; j < %d; j++) if (r[i][j] != (float)(j * 100 + i)) { printf("r[%%d][%%d] = %%g\n", i, j, r[i][j]); return 1; }
  return 0;
}
`, lanes*4, transposeC(lanes), lanes, lanes, lanes, lanes, lanes)
			runC(t, src)
		})
	}
}

// runC builds a standalone C program and fails the test if it does not
// exit 0.
func runC(t *testing.T, src string) {
	t.Helper()
	dir := t.TempDir()
	c, exe := filepath.Join(dir, "main.c"), filepath.Join(dir, "main")
	must(t, os.WriteFile(c, []byte(src), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "gcc", append(append([]string{}, gccFlags...), "-o", exe, c)...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	if out, err := exec.CommandContext(ctx, exe).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
