package cgen

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"llmir/schedule"
	"llmir/schedule/recipe"
	cpucgen "llmir/target/cpu/cgen"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// linear is out[i, j] = sum(k, a[i, k] * w[j, k]) in bf16 (f32 sums).
func linear(t testing.TB, m, n, k int64) *schedule.Def {
	t.Helper()
	M, N, K := schedule.Static(m), schedule.Static(n), schedule.Static(k)
	i, j, kk := schedule.NewAxis("i", M), schedule.NewAxis("j", N), schedule.NewAxis("k", K)
	a := schedule.Input("a", schedule.BF16, M, K)
	w := schedule.Input("w", schedule.BF16, N, K)
	out := schedule.Compute("out", schedule.BF16, []schedule.Axis{i, j}, schedule.Sum(kk, schedule.Mul(a.At(i, kk), w.At(j, kk))))
	d, err := schedule.NewDef("linear", []*schedule.Tensor{a, w}, out)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// mul is out[i, j] = a[i, j] * b[j] over dynamic rows.
func mul(t testing.TB, rows, h int64, dt schedule.DType) *schedule.Def {
	t.Helper()
	R, H := schedule.Dynamic("rows", rows), schedule.Static(h)
	i, j := schedule.NewAxis("i", R), schedule.NewAxis("j", H)
	a := schedule.Input("a", dt, R, H)
	b := schedule.Input("b", dt, H)
	out := schedule.Compute("out", dt, []schedule.Axis{i, j}, schedule.Mul(a.At(i, j), b.At(j)))
	d, err := schedule.NewDef("mul", []*schedule.Tensor{a, b}, out)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type golden struct {
	file  string
	build func(t testing.TB) *schedule.Schedule
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var goldens = []golden{
	{"gemv_m4.cu", func(t testing.TB) *schedule.Schedule {
		s, err := schedule.New(linear(t, 4, 4096, 4096), 1)
		must(t, err)
		_, err = recipe.GPUGEMV(s, "out", recipe.GPUGEMVDefault(4, 4096, 132))
		must(t, err)
		return s
	}},
	{"gemv_lanes128.cu", func(t testing.TB) *schedule.Schedule {
		s, err := schedule.New(linear(t, 1, 4096, 4096), 1)
		must(t, err)
		tl := recipe.GPUGEMVDefault(1, 4096, 132)
		tl.Lanes, tl.Rows = 128, schedule.Lit(2)
		_, err = recipe.GPUGEMV(s, "out", tl)
		must(t, err)
		return s
	}},
	{"gemm_tensorize.cu", func(t testing.TB) *schedule.Schedule {
		s, err := schedule.New(linear(t, 512, 4096, 4096), 1)
		must(t, err)
		tl, err := recipe.GPUGEMMDefault(512, 4096, 4096)
		must(t, err)
		_, err = recipe.GPUGEMM(s, "out", tl)
		must(t, err)
		return s
	}},
	{"mul_broadcast_bf16.cu", func(t testing.TB) *schedule.Schedule {
		s, err := schedule.New(mul(t, 64, 4096, schedule.BF16), 1)
		must(t, err)
		_, err = recipe.GPUElementwise(s, "out", recipe.GPUElementwiseDefault(schedule.BF16, 132))
		must(t, err)
		return s
	}},
	{"mul_tail_f32.cu", func(t testing.TB) *schedule.Schedule {
		s, err := schedule.New(mul(t, 64, 4102, schedule.F32), 1)
		must(t, err)
		_, err = recipe.GPUElementwise(s, "out", recipe.GPUElementwiseDefault(schedule.F32, 132))
		must(t, err)
		return s
	}},
}

func TestGolden(t *testing.T) {
	for _, gd := range goldens {
		t.Run(gd.file, func(t *testing.T) {
			src, err := Emit(gd.build(t).Nest(), Options{Entry: "llmir_kernel"})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", gd.file)
			if *update {
				must(t, os.WriteFile(path, []byte(src), 0o644))
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if src != string(want) {
				t.Errorf("generated source differs from %s (go test ./target/cuda/cgen -update after checking the change)", path)
			}
			if _, err := exec.LookPath("nvcc"); err == nil {
				dir := t.TempDir()
				cu := filepath.Join(dir, "k.cu")
				must(t, os.WriteFile(cu, []byte(src), 0o644))
				if out, err := exec.Command("nvcc", "-arch=sm_90", "-c", "-o", filepath.Join(dir, "k.o"), cu).CombinedOutput(); err != nil {
					t.Errorf("nvcc: %v\n%s", err, out)
				}
			}
		})
	}
}

// TestFeatures pins what each golden must contain, so that a change that
// loses a feature fails with a readable message, not only a golden diff.
func TestFeatures(t *testing.T) {
	want := map[string][]string{
		"gemv_m4.cu": {"__shfl_xor_sync(0xffffffffu, llmir_r, o)", "*reinterpret_cast<uint4 *>(&w_register", "if (threadIdx.x == 0) out[",
			"const dim3 grid(256, 1, 1), block(32, 8, 1)", "float out_rf[8]"},
		"gemm_tensorize.cu": {"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", "__shared__ __align__(16) __nv_bfloat16 a_shared[9216]", "llmir_ldmatrix_x4(llmir_a0", "llmir_ldmatrix_x2(llmir_b0",
			"llmir_mma(&out_register[", "float out_register[64]", "const dim3 grid(32, 4, 1), block(32, 8, 1)"},
		"mul_broadcast_bf16.cu": {"*reinterpret_cast<const uint4 *>(&a[", "*reinterpret_cast<uint4 *>(&out[", "if (dims[0] < 0 || dims[0] > 64) return 2",
			"for (int i_0 = 0; i_0 < ((d_rows + 527) / 528); ++i_0)"},
		"mul_tail_f32.cu": {"scalar (not a contiguous, aligned 4-lane store)"},
		"gemv_lanes128.cu": {"__shared__ float llmir_red0[2][4];", "llmir_red0[threadIdx.z * 2 + threadIdx.y][threadIdx.x >> 5] = llmir_r;",
			"const dim3 grid(2048, 1, 1), block(128, 2, 1)"},
	}
	syncs := map[string]int{"gemv_lanes128.cu": 2, "gemv_m4.cu": 0, "gemm_tensorize.cu": 2, "mul_broadcast_bf16.cu": 0, "mul_tail_f32.cu": 0}
	for _, gd := range goldens {
		src, err := Emit(gd.build(t).Nest(), Options{Entry: "llmir_kernel"})
		if err != nil {
			t.Fatalf("%s: %v", gd.file, err)
		}
		for _, w := range want[gd.file] {
			if !strings.Contains(src, w) {
				t.Errorf("%s: no %q", gd.file, w)
			}
		}
		// Barriers: after the shared tiles are written and before the next
		// K step overwrites them; none where nothing is shared.
		if got := strings.Count(src, "__syncthreads();"); got != syncs[gd.file] {
			t.Errorf("%s: %d barriers, want %d", gd.file, got, syncs[gd.file])
		}
	}
}

// TestEmitErrors: nests the printer refuses, each with an error naming the
// problem (ErrIllegal for scope and launch legality, ErrUnsupported for
// what the printer cannot express).
func TestEmitErrors(t *testing.T) {
	mulDef := func(t testing.TB) *schedule.Schedule {
		s, err := schedule.New(mul(t, 8, 256, schedule.BF16), 1)
		must(t, err)
		return s
	}
	cases := []struct {
		name    string
		build   func(t testing.TB) *schedule.Schedule
		illegal bool
		want    string
	}{
		{"shared outside block loops", func(t testing.TB) *schedule.Schedule {
			s := mulDef(t)
			_, err := s.CacheRead("out", "b", schedule.Shared, nil)
			must(t, err)
			must(t, s.Bind("i", "blockIdx.x"))
			return s
		}, true, "shared buffer b_shared is allocated at the kernel entry"},
		{"shared inside a thread loop", func(t testing.TB) *schedule.Schedule {
			s := mulDef(t)
			c, err := s.CacheRead("out", "a", schedule.Shared, nil)
			must(t, err)
			must(t, s.ComputeAt(c, "j"))
			must(t, s.Bind("i", "blockIdx.x"))
			must(t, s.Bind("j", "threadIdx.x"))
			return s
		}, true, "shared memory belongs to the whole block"},
		{"store on every thread", func(t testing.TB) *schedule.Schedule {
			s := mulDef(t)
			c, err := s.CacheRead("out", "a", schedule.Shared, nil)
			must(t, err)
			must(t, s.ComputeAt(c, "i"))
			js, err := s.Split("j", -1, 32)
			must(t, err)
			must(t, s.Bind(js[1], "threadIdx.x"))
			must(t, s.Bind("i", "blockIdx.x"))
			return s
		}, false, "stores to shared a_shared on every thread along threadIdx.x"},
		{"global scratch", func(t testing.TB) *schedule.Schedule {
			s := mulDef(t)
			_, err := s.CacheRead("out", "a", schedule.Global, nil)
			must(t, err)
			return s
		}, false, "global scratch buffer"},
		{"too many threads", func(t testing.TB) *schedule.Schedule {
			s, err := schedule.New(mul(t, 8, 4096, schedule.BF16), 1)
			must(t, err)
			js, err := s.Split("j", -1, 2048)
			must(t, err)
			must(t, s.Bind(js[1], "threadIdx.x"))
			return s
		}, true, "exceed 1024"},
		{"parallel loop", func(t testing.TB) *schedule.Schedule {
			s := mulDef(t)
			must(t, s.Parallel("i"))
			return s
		}, false, "parallel (a CPU loop kind)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Emit(c.build(t).Nest(), Options{})
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if c.illegal && !errors.Is(err, schedule.ErrIllegal) {
				t.Errorf("%v is not ErrIllegal", err)
			}
			if !c.illegal && !errors.Is(err, ErrUnsupported) {
				t.Errorf("%v is not ErrUnsupported", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

// TestContiguous: the vector proof opens floordiv/mod by multiples of the
// width (fused-then-split copies) and refuses what is strided, misaligned
// or wraps inside a vector.
func TestContiguous(t *testing.T) {
	v := schedule.V("v")
	f := schedule.Add(schedule.Mul(schedule.V("t"), schedule.C(8)), v) // t*8 + v
	cases := []struct {
		name string
		off  schedule.Expr
		ok   bool
	}{
		{"plain", schedule.Add(schedule.Mul(schedule.V("r"), schedule.C(4096)), f), true},
		{"fused row-major", schedule.Add(schedule.Mul(schedule.FloorDiv(f, schedule.C(32)), schedule.C(4096)), schedule.Mod(f, schedule.C(32))), true},
		{"stride 2", schedule.Mul(v, schedule.C(2)), false},
		{"misaligned", schedule.Add(f, schedule.C(3)), false},
		{"odd row length", schedule.Add(schedule.Mul(schedule.V("r"), schedule.C(4100)), f), false},
		{"wraps in a vector", schedule.Mod(f, schedule.C(4)), false},
	}
	for _, c := range cases {
		_, ok := contiguous(c.off, "v", 8)
		if ok != c.ok {
			t.Errorf("%s: contiguous(%s) = %v, want %v", c.name, c.off, ok, c.ok)
		}
	}
}

// TestCPURejectsGPUNests: the CPU printer refuses bound and tensorized
// loops with a message saying which.
func TestCPURejectsGPUNests(t *testing.T) {
	s, err := schedule.New(linear(t, 32, 16, 32), 1)
	must(t, err)
	_, err = recipe.GPUGEMM(s, "out", recipe.GPUGEMMTiles{WM: 1, WN: 1, MI: 2, NI: 2, KI: 2})
	must(t, err)
	_, err = cpucgen.Emit(s.Nest(), cpucgen.Options{Entry: "k"})
	if !errors.Is(err, cpucgen.ErrUnsupported) || !strings.Contains(err.Error(), "bound to GPU axis") {
		t.Errorf("bound nest: %v", err)
	}
	// Only the tensorize, no bindings.
	s, err = schedule.New(linear(t, 32, 16, 32), 1)
	must(t, err)
	_, err = s.CacheWrite("out", schedule.Register)
	must(t, err)
	for _, in := range []string{"a", "w"} {
		_, err = s.CacheRead("out", in, schedule.Shared, nil)
		must(t, err)
	}
	is, err := s.Split("i", -1, 16)
	must(t, err)
	js, err := s.Split("j", -1, 8)
	must(t, err)
	ks, err := s.Split("k", -1, 16)
	must(t, err)
	must(t, s.Reorder(is[0], js[0], ks[0], is[1], js[1], ks[1]))
	_, err = s.DecomposeReduction("out", ks[0])
	must(t, err)
	must(t, s.Tensorize(is[1], "mma_m16n8k16_bf16"))
	_, err = cpucgen.Emit(s.Nest(), cpucgen.Options{Entry: "k"})
	if !errors.Is(err, cpucgen.ErrUnsupported) || !strings.Contains(err.Error(), "tensorized to mma_m16n8k16_bf16") {
		t.Errorf("tensorized nest: %v", err)
	}
}
