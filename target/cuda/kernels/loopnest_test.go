package cudakernels

import (
	"strings"
	"testing"

	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cuda"
)

// loopNestGoldens are the default schedules of the loop-nest kernels whose
// printed CUDA is pinned (go test -update rewrites them).
var loopNestGoldens = []struct {
	file string
	k    Kernel
}{
	{"loopnest_gemv_m1.cu", LoopNestGEMV{GEMV{M: 1, N: 4096, K: 4096}}},
	{"loopnest_gemm_m512.cu", LoopNestGEMM{GEMM{M: 512, N: 4096, K: 4096}}},
	{"loopnest_mul.cu", LoopNestElementwise{Pointwise{Op: OpMul, M: 16, H: 14336}}},
}

func TestLoopNestGolden(t *testing.T) {
	for _, g := range loopNestGoldens {
		t.Run(g.file, func(t *testing.T) {
			s, err := search.DefaultSchedule(g.k, Hardware(cuda.H100))
			if err != nil {
				t.Fatal(err)
			}
			src, err := g.k.EmitCUDA(s, cuda.H100, Entry)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, g.file, src)
			if !strings.Contains(src, "int "+Entry+"(void *const *bufs, const int64_t *dims)") || strings.Contains(src, `extern "C"`) {
				t.Errorf("the source does not follow the entry ABI")
			}
		})
	}
}

// TestLoopNestInterprets runs the default and sampled schedules of each
// loop-nest kernel through the schedule interpreter (bound loops serially,
// tensorized regions as their loops) and compares with the kernel's Go
// reference: the GPU schedules are checked in CI without a GPU.
func TestLoopNestInterprets(t *testing.T) {
	hw := Hardware(cuda.H100)
	for _, k := range []Kernel{
		LoopNestGEMV{GEMV{M: 1, N: 37, K: 512}},
		LoopNestGEMV{GEMV{M: 3, N: 10, K: 256}},
		LoopNestGEMM{GEMM{M: 32, N: 48, K: 64}},
		LoopNestGEMM{GEMM{M: 64, N: 16, K: 32}},
		LoopNestElementwise{Pointwise{Op: OpMul, M: 3, H: 100}},
		LoopNestElementwise{Pointwise{Op: OpAdd, M: 2, H: 64}},
	} {
		t.Run(k.Name(), func(t *testing.T) {
			p, err := search.NewProblem(k, 3)
			if err != nil {
				t.Fatal(err)
			}
			want := k.Reference(p.Inputs())
			scheds := []*schedule.Schedule{}
			d, err := search.DefaultSchedule(k, hw)
			if err != nil {
				t.Fatal(err)
			}
			scheds = append(scheds, d)
			for seed := range uint64(3) {
				s, err := search.SampleSchedule(k, hw, seed+1)
				if err != nil {
					t.Fatal(err)
				}
				scheds = append(scheds, s)
			}
			for i, s := range scheds {
				in := p.Inputs()
				bufs := append(in, make([]float64, len(want[0])))
				if err := schedule.Interpret(s.Nest(), bufs, nil); err != nil {
					t.Fatalf("schedule %d: %v", i, err)
				}
				// The interpreter rounds every store to bf16, also the
				// partial sums of a cross-thread reduction into out.
				if rel := target.RelL2(bufs[len(bufs)-1], want[0]); !(rel < 2e-2) {
					t.Errorf("schedule %d: rel L2 %g", i, rel)
				}
				if _, err := k.EmitCUDA(s, cuda.H100, Entry); err != nil {
					t.Errorf("schedule %d: emit: %v", i, err)
				}
			}
		})
	}
}

// TestLoopNestGEMMSpaceEmits samples the loop-nest GEMM's tiles at shapes
// where the largest block tiles (256×128 and up) divide: every sampled point
// must print, the K step kept within static shared memory (a 256×128 block
// with a K step of 64 took 55296 bytes with the rows' padding).
func TestLoopNestGEMMSpaceEmits(t *testing.T) {
	hw := Hardware(cuda.H100)
	for _, k := range []LoopNestGEMM{{GEMM{M: 256, N: 384, K: 512}}, {GEMM{M: 256, N: 256, K: 256}}} {
		for seed := range uint64(120) {
			s, err := search.SampleSchedule(k, hw, seed+1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := k.EmitCUDA(s, cuda.H100, Entry); err != nil {
				t.Fatalf("%s seed %d: %v", k.Name(), seed+1, err)
			}
		}
	}
}

// TestLoopNestWorkloads: the loop-nest kernels' database keys differ from
// the template kernels' of the same op and shape.
func TestLoopNestWorkloads(t *testing.T) {
	pairs := [][2]Kernel{
		{GEMV{M: 1, N: 4096, K: 4096}, LoopNestGEMV{GEMV{M: 1, N: 4096, K: 4096}}},
		{GEMM{M: 512, N: 4096, K: 4096}, LoopNestGEMM{GEMM{M: 512, N: 4096, K: 4096}}},
		{Pointwise{Op: OpMul, M: 16, H: 14336}, LoopNestElementwise{Pointwise{Op: OpMul, M: 16, H: 14336}}},
	}
	for _, p := range pairs {
		a, b := p[0].Workload(), p[1].Workload()
		if a.Key() == b.Key() {
			t.Errorf("%s and %s share the workload key %s", p[0].Name(), p[1].Name(), a.Key())
		}
		if b.Attrs["codegen"] != "loopnest" {
			t.Errorf("%s: attrs %v", p[1].Name(), b.Attrs)
		}
	}
}

func TestLoopNestSpecs(t *testing.T) {
	for _, c := range []struct {
		spec, name, err string
	}{
		{"loopnest_gemv:M=1,N=4096,K=4096", "loopnest_gemv/M=1,N=4096,K=4096/bf16", ""},
		{"loopnest_gemm:M=512,N=4096,K=4096", "loopnest_gemm/M=512,N=4096,K=4096/bf16", ""},
		{"loopnest_mul:M=16,H=14336", "loopnest_mul/M=16,H=14336/bf16", ""},
		{"loopnest_add:M=1,H=14", "loopnest_add/M=1,H=14/bf16", ""},
		{"loopnest_gemv:M=1,N=4096,K=4104", "", "not a multiple of 256"},
		{"loopnest_gemm:M=77,N=130,K=264", "", "multiples of the mma tile"},
		{"loopnest_gemm:M=16,N=8", "", "missing field K"},
	} {
		k, err := ParseSpec(c.spec)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.spec, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.spec, err)
			continue
		}
		if k.Name() != c.name {
			t.Errorf("%s: name %s, want %s", c.spec, k.Name(), c.name)
		}
	}
}
