package costmodel

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"llmir/schedule"
	"llmir/schedule/schedtest"
)

// linearDef is out[i, j] = sum(k, a[i, k] * w[j, k]) with a dynamic M.
func linearDef(t testing.TB, m, n, k int64) *schedule.Def {
	t.Helper()
	M, N, K := schedule.Dynamic("M", m), schedule.Static(n), schedule.Static(k)
	i, j, kk := schedule.NewAxis("i", M), schedule.NewAxis("j", N), schedule.NewAxis("k", K)
	a := schedule.Input("a", schedule.F32, M, K)
	w := schedule.Input("w", schedule.F32, N, K)
	out := schedule.Compute("out", schedule.F32, []schedule.Axis{i, j}, schedule.Sum(kk, schedule.Mul(a.At(i, kk), w.At(j, kk))))
	d, err := schedule.NewDef("linear", []*schedule.Tensor{a, w}, out)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// nestOf schedules the linear layer with f (nil: naive).
func nestOf(t testing.TB, m, n, k int64, f func(s *schedule.Schedule) error) *schedule.Nest {
	t.Helper()
	s, err := schedule.New(linearDef(t, m, n, k), 1)
	if err != nil {
		t.Fatal(err)
	}
	if f != nil {
		if err := f(s); err != nil {
			t.Fatal(err)
		}
	}
	return s.Nest()
}

func feature(t testing.TB, v []float64, name string) float64 {
	t.Helper()
	i := slices.Index(FeatureNames(), name)
	if i < 0 {
		t.Fatalf("no feature %s", name)
	}
	return v[i]
}

// bufferFeature finds a named buffer's access features in the analysis.
func bufferOf(t testing.TB, a *Analysis, name string) BufferAccess {
	t.Helper()
	for _, b := range a.Buffers {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no buffer %s in %v", name, a.Buffers)
	return BufferAccess{}
}

// splitJ splits j by 16 (innermost), optionally vectorized.
func splitJ(vec bool) func(s *schedule.Schedule) error {
	return func(s *schedule.Schedule) error {
		js, err := s.Split("j", -1, 16)
		if err != nil {
			return err
		}
		if err := s.Reorder("i", js[0], "k", js[1]); err != nil {
			return err
		}
		if vec {
			return s.Vectorize(js[1])
		}
		return nil
	}
}

func TestFeaturesDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for trial := range 20 {
		s, err := schedule.New(linearDef(t, 37, 96, 80), uint64(trial))
		if err != nil {
			t.Fatal(err)
		}
		if err := schedtest.Random(s, "out", rng); err != nil {
			t.Fatal(err)
		}
		n := s.Nest()
		v1, err := Features(n, Device{Threads: 2}, nil)
		if err != nil {
			t.Fatalf("trial %d: %v\n%s", trial, err, n)
		}
		v2, err := Features(n.Clone(), Device{Threads: 2}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(v1) != NumFeatures || !slices.Equal(v1, v2) {
			t.Fatalf("trial %d: features differ between runs or have length %d\n%v\n%v", trial, len(v1), v1, v2)
		}
		for i, x := range v1 {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Fatalf("trial %d: feature %s = %v\n%s", trial, FeatureNames()[i], x, n)
			}
		}
		// Every element of a, w and out is touched, and a smaller cache
		// can only reload more.
		a, err := Analyze(n, Device{Threads: 2}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if a.TrafficDRAM < 0.95*a.IdealBytes || a.TrafficL2 < a.TrafficDRAM || a.TrafficL1 < a.TrafficL2 {
			t.Errorf("trial %d: traffic L1 %v ≥ L2 %v ≥ DRAM %v ≥ ideal %v does not hold\n%s", trial, a.TrafficL1, a.TrafficL2, a.TrafficDRAM, a.IdealBytes, n)
		}
	}
}

// TestFLOPsExact checks the weighted walk against 2·M·N·K, tails included:
// splits that do not divide the extent must not over- or under-count.
func TestFLOPsExact(t *testing.T) {
	cases := []struct {
		name    string
		m, n, k int64
		dims    []int64
		sched   func(*schedule.Schedule) error
	}{
		{"naive", 8, 64, 32, nil, nil},
		{"split-divides", 8, 64, 32, nil, splitJ(true)},
		{"split-tail", 7, 61, 33, nil, splitJ(true)},
		{"two-level-tail", 5, 100, 19, nil, func(s *schedule.Schedule) error {
			_, err := s.Split("j", -1, 3, 8)
			return err
		}},
		{"runtime-dim", 64, 64, 32, []int64{16}, splitJ(false)},
		{"runtime-dim-tail", 64, 64, 32, []int64{13}, func(s *schedule.Schedule) error {
			_, err := s.Split("i", -1, 6)
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := Analyze(nestOf(t, c.m, c.n, c.k, c.sched), Device{}, c.dims)
			if err != nil {
				t.Fatal(err)
			}
			m := c.m
			if c.dims != nil {
				m = c.dims[0]
			}
			if want := float64(2 * m * c.n * c.k); a.FLOPs != want {
				t.Errorf("FLOPs = %v, want %v", a.FLOPs, want)
			}
		})
	}
}

func TestDoublingExtentDoublesFLOPs(t *testing.T) {
	for _, n := range []int64{64, 96, 250} {
		a1, err := Analyze(nestOf(t, 8, n, 48, splitJ(true)), Device{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		a2, err := Analyze(nestOf(t, 8, 2*n, 48, splitJ(true)), Device{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if a2.FLOPs != 2*a1.FLOPs {
			t.Errorf("N=%d: FLOPs %v, at 2N %v: want double", n, a1.FLOPs, a2.FLOPs)
		}
		if a2.IdealBytes <= a1.IdealBytes {
			t.Errorf("N=%d: ideal bytes did not grow: %v → %v", n, a1.IdealBytes, a2.IdealBytes)
		}
	}
}

func TestVectorizeChangesVectorFeatures(t *testing.T) {
	dev := Device{VectorBits: 512}
	plain, err := Features(nestOf(t, 8, 64, 32, splitJ(false)), dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	vec, err := Features(nestOf(t, 8, 64, 32, splitJ(true)), dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		plain, vc float64
	}{
		{"vec_lanes", 1, 16},
		{"vec_util", 1.0 / 16, 1},
		{"vec_loops", 0, 1},
	} {
		if got := feature(t, plain, c.name); got != c.plain {
			t.Errorf("unvectorized %s = %v, want %v", c.name, got, c.plain)
		}
		if got := feature(t, vec, c.name); got != c.vc {
			t.Errorf("vectorized %s = %v, want %v", c.name, got, c.vc)
		}
	}
	if r, v := feature(t, plain, "log_roofline_seconds"), feature(t, vec, "log_roofline_seconds"); v >= r {
		t.Errorf("roofline time vectorized 2^%.2f s, not below scalar 2^%.2f s", v, r)
	}
}

// TestPackingChangesStride: reading w[j, k] along j strides a whole row;
// a panel packed as w[j/16][k][16] makes the same walk contiguous.
func TestPackingChangesStride(t *testing.T) {
	const k = 64
	unpacked, err := Analyze(nestOf(t, 8, 64, k, splitJ(true)), Device{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	packed, err := Analyze(nestOf(t, 8, 64, k, func(s *schedule.Schedule) error {
		if err := splitJ(true)(s); err != nil {
			return err
		}
		pack, err := s.CacheRead("out", "w", schedule.Local, &schedule.Layout{Tile: []int64{16, 0}, Order: []int{0, 2, 1}})
		if err != nil {
			return err
		}
		return s.ComputeAt(pack, "j_0")
	}), Device{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := bufferOf(t, unpacked, "w").InnerStride; got != 4*k {
		t.Errorf("unpacked w inner stride = %v bytes, want %d", got, 4*k)
	}
	if got := bufferOf(t, packed, "w_local").InnerStride; got != 4 {
		t.Errorf("packed w_local inner stride = %v bytes, want 4 (%+v)", got, packed.Buffers)
	}
	if packed.ScratchBytes == 0 {
		t.Error("packed nest reports no scratch buffer")
	}
}

func TestParallelBalance(t *testing.T) {
	cases := []struct {
		n        int64
		threads  int
		ext, bal float64
	}{
		{48, 2, 3, 0.75}, // 3 chunks on 2 threads: one thread does 2
		{64, 2, 4, 1},
		{16, 2, 1, 0.5},
	}
	for _, c := range cases {
		a, err := Analyze(nestOf(t, 4, c.n, 32, func(s *schedule.Schedule) error {
			js, err := s.Split("j", -1, 16)
			if err != nil {
				return err
			}
			if err := s.Reorder(js[0], "i", "k", js[1]); err != nil {
				return err
			}
			return s.Parallel(js[0])
		}), Device{Threads: c.threads}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if a.ParallelExt != c.ext || a.ParBalance != c.bal {
			t.Errorf("N=%d on %d threads: parallel extent %v balance %v, want %v %v", c.n, c.threads, a.ParallelExt, a.ParBalance, c.ext, c.bal)
		}
	}
}

func TestAnalyzeRejectsBadDims(t *testing.T) {
	n := nestOf(t, 16, 32, 32, nil)
	for _, dims := range [][]int64{{0}, {17}, {1, 2}} {
		if _, err := Analyze(n, Device{}, dims); err == nil {
			t.Errorf("dims %v: no error", dims)
		}
	}
}

func TestFeatureNamesUnique(t *testing.T) {
	names := FeatureNames()
	if len(names) != NumFeatures {
		t.Fatalf("%d names for %d features", len(names), NumFeatures)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("duplicate feature name %s", n)
		}
		seen[n] = true
	}
}

func TestRankOrdersByRoofline(t *testing.T) {
	nests := []*schedule.Nest{
		nestOf(t, 8, 64, 32, splitJ(false)),
		nestOf(t, 8, 64, 32, splitJ(true)),
	}
	idx, sc, err := Rank(context.Background(), &Roofline{}, nests, Device{VectorBits: 512}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(idx, []int{1, 0}) || sc[1] <= sc[0] {
		t.Errorf("rank %v scores %v: want the vectorized nest first", idx, sc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := FeaturesBatch(ctx, nests, Device{}, nil); err == nil {
		t.Error("cancelled context: no error")
	}
}
