package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"llmir/kernels"
	"llmir/kernels/kerneltest"
	"llmir/schedule"
	"llmir/search"
)

// interpret runs a schedule's nest on seeded inputs at the kernel's runtime
// extents and returns the relative L2 error against the reference.
func interpret(t *testing.T, k kernels.Kernel, s *schedule.Schedule, seed uint64) float64 {
	t.Helper()
	def, err := k.Def()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	dims := k.Dims()
	var bufs [][]float64
	for _, p := range def.Params() {
		n := int64(1)
		for _, d := range p.Shape {
			if d.Dynamic {
				n *= dims[def.DimIndex(d.Name)]
			} else {
				n *= d.Extent
			}
		}
		b := make([]float64, n)
		for i := range b {
			b[i] = float64(float32(rng.Float64()*2 - 1))
		}
		bufs = append(bufs, b)
	}
	nIn := len(def.Inputs)
	want := k.Reference(bufs[:nIn])
	for i := range bufs[nIn:] {
		for j := range bufs[nIn+i] {
			bufs[nIn+i][j] = math.NaN()
		}
	}
	if err := schedule.Interpret(s.Nest(), bufs, dims); err != nil {
		t.Fatal(err)
	}
	var num, den float64
	for i, w := range want {
		for j := range w {
			d := bufs[nIn+i][j] - w[j]
			num += d * d
			den += w[j] * w[j]
		}
	}
	return math.Sqrt(num / den)
}

func TestLinearSchedulesMatchReference(t *testing.T) {
	hw := kernels.Hardware{VectorBits: 512, Threads: 2}
	for _, l := range []kernels.Linear{
		{M: 1, N: 7, K: 16},
		{M: 3, N: 33, K: 13},
		{M: 5, N: 9, K: 48, MBucket: 8},
		{M: 17, N: 37, K: 29},
		{M: 19, N: 65, K: 31, MBucket: 32},
		// The outer-product decode template (bucket 16): full and partial
		// row vectors, N and K not multiples of its tiles.
		{M: 16, N: 37, K: 35},
		{M: 13, N: 45, K: 48, MBucket: 16},
		{M: 9, N: 9, K: 17, MBucket: 16},
	} {
		t.Run(l.Name(), func(t *testing.T) {
			def, err := l.Def()
			if err != nil {
				t.Fatal(err)
			}
			s, err := schedule.New(def, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Default(s, hw); err != nil {
				t.Fatalf("default: %v", err)
			}
			if e := interpret(t, l, s, 7); e > 1e-6 {
				t.Errorf("default schedule: relative error %g", e)
			}
			for seed := uint64(1); seed <= 6; seed++ {
				s, err := schedule.New(def, seed)
				if err != nil {
					t.Fatal(err)
				}
				if err := l.Space(s, hw); err != nil {
					t.Fatalf("space seed %d: %v", seed, err)
				}
				if e := interpret(t, l, s, seed); e > 1e-6 {
					t.Errorf("sampled schedule seed %d: relative error %g", seed, e)
				}
				// The trace replays to the same nest, and a mutated
				// decision replays to a legal neighbour.
				r, err := schedule.Replay(def, s.Trace())
				if err != nil {
					t.Fatalf("replay: %v", err)
				}
				if r.Nest().String() != s.Nest().String() {
					t.Errorf("replay of seed %d differs", seed)
				}
				tr := s.Trace()
				for i, inst := range tr.Insts {
					if inst.Op != "sample_categorical" {
						continue
					}
					d := []int64{(inst.Decision[0] + 1) % int64(len(inst.Ints))}
					mt, err := tr.WithDecision(i, d)
					if err != nil {
						t.Fatal(err)
					}
					n, err := schedule.Replay(def, mt)
					if err != nil {
						t.Fatalf("mutated decision %d of seed %d does not replay: %v", i, seed, err)
					}
					if e := interpret(t, l, n, seed); e > 1e-6 {
						t.Errorf("mutated schedule: relative error %g", e)
					}
				}
			}
		})
	}
}

func TestLinearRejectsBadShapes(t *testing.T) {
	for _, l := range []kernels.Linear{{M: 0, N: 1, K: 1}, {M: 9, N: 1, K: 1, MBucket: 8}, {M: 1, N: 0, K: 4}} {
		if _, err := l.Def(); err == nil {
			t.Errorf("%+v: accepted", l)
		}
	}
}

// TestLinearDefaultIsInSpace checks that the rule-based default is a point
// of the design space: choosing, at each sampling step of a Space trace,
// the candidate equal to the default's knob replays to the default's nest.
// The tuner can then only find the default or something it measured faster.
func TestLinearDefaultIsInSpace(t *testing.T) {
	for _, c := range []struct {
		l       kernels.Linear
		threads int
		knobs   []int64 // the default's values, in sampling order
	}{
		{kernels.Linear{M: 1, N: 4096, K: 4096}, 1, []int64{1, 8, 4}},       // GEMV: MR, JU, NJ
		{kernels.Linear{M: 4, N: 4096, K: 4096}, 2, []int64{4, 6, 4}},       // GEMV
		{kernels.Linear{M: 16, N: 4096, K: 4096}, 2, []int64{4, 8, 8, 128}}, // outer product: NJ, JU, prefetch, KB
		{kernels.Linear{M: 8, N: 4096, K: 4096}, 1, []int64{4, 6, 4}},       // GEMV: 8 rows are half a vector
		{kernels.Linear{M: 512, N: 4096, K: 4096}, 2, []int64{12, 16, 256}}, // GEMM: MR, NB, KC
		{kernels.Linear{M: 512, N: 4096, K: 14336}, 1, []int64{12, 16, 256}},
		{kernels.Linear{M: 100, N: 256, K: 512, MBucket: 128}, 2, []int64{12, 2, 256}}, // NC halved to 64: 4 panels for 2 threads
	} {
		t.Run(fmt.Sprintf("%s/threads=%d", c.l.Name(), c.threads), func(t *testing.T) {
			hw := kernels.Hardware{VectorBits: 512, Threads: c.threads}
			def, err := c.l.Def()
			if err != nil {
				t.Fatal(err)
			}
			d, err := schedule.New(def, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.l.Default(d, hw); err != nil {
				t.Fatal(err)
			}
			// Bucket 16 (more than half a 16-lane vector of rows) takes
			// the outer-product template: its register tile is laid out
			// with the rows of a last.
			outer := c.l.M > 8 && c.l.M <= 16
			if got := strings.Contains(d.Nest().String(), "register layout(tile=[0, 0, 0], order=[0, 2, 1])"); got != outer {
				t.Errorf("outer-product template = %v, want %v", got, outer)
			}
			s, err := schedule.New(def, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.l.Space(s, hw); err != nil {
				t.Fatal(err)
			}
			tr := s.Trace()
			step := 0
			for i, inst := range tr.Insts {
				if inst.Op != "sample_categorical" {
					continue
				}
				if step >= len(c.knobs) {
					t.Fatalf("more than %d sampling steps", len(c.knobs))
				}
				pick := int64(-1)
				for j, o := range inst.Ints {
					if o.Ref == "" && o.Lit == c.knobs[step] {
						pick = int64(j)
					}
				}
				if pick < 0 {
					t.Fatalf("default knob %d = %d is not a candidate of %v", step, c.knobs[step], inst.Ints)
				}
				if tr, err = tr.WithDecision(i, []int64{pick}); err != nil {
					t.Fatal(err)
				}
				step++
			}
			r, err := schedule.Replay(def, tr)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := r.Nest().String(), d.Nest().String(); got != want {
				t.Errorf("space at the default's knobs differs from Default:\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// TestLinearOuterConformance builds the outer-product decode template
// (bucket 16) with gcc and runs it through the conformance suite: the
// default and a sampled schedule at M = 16 and 13 (the partial row vector
// takes the edge copy of the register tile), N and K not multiples of the
// tiles, one and two threads. (The interpreter checks of
// TestLinearSchedulesMatchReference cover more shapes and draws.)
func TestLinearOuterConformance(t *testing.T) {
	tg := kerneltest.CPU(t)
	for i, l := range []kernels.Linear{
		{M: 16, N: 37, K: 35},
		{M: 13, N: 45, K: 21, MBucket: 16},
	} {
		t.Run(l.Name(), func(t *testing.T) {
			hw := search.CPUHardware(tg.CPU(), 1+i%2)
			if hw.VectorBits < 512 {
				t.Skip("no 512-bit vectors: the GEMV template applies")
			}
			kerneltest.Run(t, tg, hw, l, kerneltest.Options{Draws: 1, Seed: uint64(i + 11)})
		})
	}
}

// TestLinearHalfConformance: the linear layer stored in bf16 or f16 (a
// checkpoint-dtype model) through the conformance suite with each
// template — GEMV (M ≤ 8), outer product (bucket 16), packed GEMM — and the
// biased linear, at odd shapes: the 16-bit operands are widened as they are
// loaded or packed, the sums kept in f32, the output rounded once.
func TestLinearHalfConformance(t *testing.T) {
	tg := kerneltest.CPU(t)
	ks := []kernels.Kernel{
		kernels.Linear{M: 3, N: 37, K: 45, DType: schedule.BF16},
		kernels.Linear{M: 13, N: 45, K: 37, MBucket: 16, DType: schedule.BF16},
		kernels.Linear{M: 19, N: 37, K: 29, MBucket: 32, DType: schedule.BF16},
		kernels.Linear{M: 2, N: 21, K: 35, DType: schedule.F16},
		kernels.Linear{M: 23, N: 35, K: 27, MBucket: 32, DType: schedule.F16},
		kernels.LinearBias{Linear: kernels.Linear{M: 1, N: 19, K: 40, DType: schedule.BF16}},
	}
	for i, k := range ks {
		t.Run(k.Name(), func(t *testing.T) {
			kerneltest.Run(t, tg, search.CPUHardware(tg.CPU(), 1+i%2), k, kerneltest.Options{Draws: 2, Seed: uint64(i + 21)})
		})
	}
}
