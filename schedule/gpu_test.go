package schedule_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"llmir/schedule"
)

// bf16Linear is out[i, j] = sum(k, a[i, k] * w[j, k]) with bf16 operands
// and an f32 out (so the interpreter's check is tight).
func bf16Linear(t testing.TB, m, n, k int64) *schedule.Def {
	t.Helper()
	S := schedule.Static
	i, j, kk := schedule.NewAxis("i", S(m)), schedule.NewAxis("j", S(n)), schedule.NewAxis("k", S(k))
	a := schedule.Input("a", schedule.BF16, S(m), S(k))
	w := schedule.Input("w", schedule.BF16, S(n), S(k))
	out := schedule.Compute("out", schedule.F32, []schedule.Axis{i, j}, schedule.Sum(kk, schedule.Mul(a.At(i, kk), w.At(j, kk))))
	d, err := schedule.NewDef("linear", []*schedule.Tensor{a, w}, out)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// mmaSetup brings the bf16 linear to a tensorizable shape: a register
// accumulator, shared operands, loops i_0 j_0 k_0 i_1(mi) j_1(nj) k_1(kk)
// and the init decomposed.
func mmaSetup(mi, nj, kk int64, decompose bool, aScope schedule.Scope) func(s *schedule.Schedule) error {
	return func(s *schedule.Schedule) error {
		if _, err := s.CacheWrite("out", schedule.Register); err != nil {
			return err
		}
		if _, err := s.CacheRead("out", "a", aScope, nil); err != nil {
			return err
		}
		if _, err := s.CacheRead("out", "w", schedule.Shared, nil); err != nil {
			return err
		}
		is, err := s.Split("i", -1, mi)
		if err != nil {
			return err
		}
		js, err := s.Split("j", -1, nj)
		if err != nil {
			return err
		}
		ks, err := s.Split("k", -1, kk)
		if err != nil {
			return err
		}
		if err := s.Reorder(is[0], js[0], ks[0], is[1], js[1], ks[1]); err != nil {
			return err
		}
		if decompose {
			_, err = s.DecomposeReduction("out", ks[0])
		}
		return err
	}
}

// TestGPULegality: Bind's and Tensorize's legality errors wrap ErrIllegal,
// name the problem and leave the schedule unchanged.
func TestGPULegality(t *testing.T) {
	cases := []struct {
		name  string
		setup func(s *schedule.Schedule) error
		bad   func(s *schedule.Schedule) error
		want  string
	}{
		{"bind threadIdx.x twice", func(s *schedule.Schedule) error { return s.Bind("i", "threadIdx.x") },
			func(s *schedule.Schedule) error { return s.Bind("j", "threadIdx.x") }, "already bound by enclosing loop i"},
		{"bind unknown axis", nil, func(s *schedule.Schedule) error { return s.Bind("i", "warpIdx.x") }, "unknown GPU axis"},
		{"bind reduction to a block", nil, func(s *schedule.Schedule) error { return s.Bind("k", "blockIdx.x") }, "reduction axis"},
		{"cross-thread reduction not a power of two", nil, func(s *schedule.Schedule) error { return s.Bind("k", "threadIdx.x") }, "power of two"},
		{"cross-thread reduction over a loop nest", func(s *schedule.Schedule) error { _, err := s.Split("k", -1, 8); return err },
			func(s *schedule.Schedule) error { return s.Bind("k_0", "threadIdx.x") }, "directly hold"},
		{"tensorize unknown instruction", mmaSetup(16, 8, 16, true, schedule.Shared),
			func(s *schedule.Schedule) error { return s.Tensorize("i_1", "wmma_16x16x16") }, "unknown instruction"},
		{"tensorize wrong extents", mmaSetup(8, 8, 16, true, schedule.Shared),
			func(s *schedule.Schedule) error { return s.Tensorize("i_1", "mma_m16n8k16_bf16") }, "needs m extent 16, loop i_1 has 8"},
		{"tensorize with init", mmaSetup(16, 8, 16, false, schedule.Shared),
			func(s *schedule.Schedule) error { return s.Tensorize("i_1", "mma_m16n8k16_bf16") }, "decompose_reduction it first"},
		{"tensorize global operand", mmaSetup(16, 8, 16, true, schedule.Global),
			func(s *schedule.Schedule) error { return s.Tensorize("i_1", "mma_m16n8k16_bf16") }, "operand A a_global is in global scope"},
		{"tensorize not three loops", mmaSetup(16, 8, 16, true, schedule.Shared),
			func(s *schedule.Schedule) error { return s.Tensorize("j_1", "mma_m16n8k16_bf16") }, "holds a block"},
		{"tensorize under threadIdx.x", func(s *schedule.Schedule) error {
			if err := mmaSetup(16, 8, 16, true, schedule.Shared)(s); err != nil {
				return err
			}
			return s.Bind("j_0", "threadIdx.x")
		}, func(s *schedule.Schedule) error { return s.Tensorize("i_1", "mma_m16n8k16_bf16") }, "inside loop j_0 bound to threadIdx.x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := schedule.New(bf16Linear(t, 32, 16, 12+20*boolInt(c.setup != nil)), 1)
			if err != nil {
				t.Fatal(err)
			}
			if c.setup != nil {
				if err := c.setup(s); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			before, n := s.Nest().String(), len(s.Trace().Insts)
			err = c.bad(s)
			if !errors.Is(err, schedule.ErrIllegal) {
				t.Fatalf("got %v, want ErrIllegal", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
			if s.Nest().String() != before || len(s.Trace().Insts) != n {
				t.Errorf("a failed primitive changed the schedule")
			}
		})
	}
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// TestTensorizeReplays: a tensorized schedule keeps its loops' meaning (the
// interpreter matches the product), prints the kind, and replays from JSON.
func TestTensorizeReplays(t *testing.T) {
	def := bf16Linear(t, 32, 16, 32)
	s, err := schedule.New(def, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := mmaSetup(16, 8, 16, true, schedule.Shared)(s); err != nil {
		t.Fatal(err)
	}
	if err := s.Tensorize("i_1", "mma_m16n8k16_bf16"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.Nest().String(), "tensorized(mma_m16n8k16_bf16)") {
		t.Errorf("nest does not print the tensorized loop:\n%s", s.Nest())
	}
	js, err := s.Trace().JSON()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := schedule.ParseTrace(js)
	if err != nil {
		t.Fatal(err)
	}
	r, err := schedule.Replay(def, tr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Nest().String() != s.Nest().String() {
		t.Errorf("replay differs")
	}
	rng := rand.New(rand.NewPCG(3, 3))
	a, w := make([]float64, 32*32), make([]float64, 16*32)
	for _, v := range [][]float64{a, w} {
		for i := range v {
			v[i] = schedule.RoundBF16(rng.Float64()*2 - 1)
		}
	}
	out := make([]float64, 32*16)
	if err := schedule.Interpret(r.Nest(), [][]float64{a, w, out}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 32 {
		for j := range 16 {
			var ref float64
			for k := range 32 {
				ref += a[i*32+k] * w[j*32+k]
			}
			if math.Abs(out[i*16+j]-ref) > 1e-4 {
				t.Fatalf("out[%d, %d] = %g, want %g", i, j, out[i*16+j], ref)
			}
		}
	}
}

// TestCrossThreadBind: the write-back of an rfactor over 32 lanes binds to
// threadIdx.x, and the interpreter still computes the product.
func TestCrossThreadBind(t *testing.T) {
	def := bf16Linear(t, 2, 3, 64)
	s, err := schedule.New(def, 1)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := s.Split("k", -1, 32)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reorder("i", "j", ks[1], ks[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RFactor("out", ks[1], 2); err != nil {
		t.Fatal(err)
	}
	ls, err := s.Loops("out")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(ls[len(ls)-1], "threadIdx.x"); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(ks[1], "threadIdx.x"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.Nest().String(), "k_1_wb in 0..32 bound(threadIdx.x)") {
		t.Errorf("no cross-thread loop:\n%s", s.Nest())
	}
	a := []float64{}
	w := []float64{}
	for i := range 2 * 64 {
		a = append(a, float64(i%7)-3)
	}
	for i := range 3 * 64 {
		w = append(w, float64(i%5)-2)
	}
	out := make([]float64, 6)
	if err := schedule.Interpret(s.Nest(), [][]float64{a, w, out}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		for j := range 3 {
			var ref float64
			for k := range 64 {
				ref += a[i*64+k] * w[j*64+k]
			}
			if out[i*3+j] != ref {
				t.Errorf("out[%d, %d] = %g, want %g", i, j, out[i*3+j], ref)
			}
		}
	}
}
