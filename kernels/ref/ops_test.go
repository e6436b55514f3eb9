package ref

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func randF(rng *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(rng.NormFloat64())
	}
	return out
}

func near(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d elements, want %d", what, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(float64(got[i]) - float64(want[i])); d > tol*math.Max(1, math.Abs(float64(want[i]))) || math.IsNaN(float64(got[i])) {
			t.Fatalf("%s[%d] = %.9g, want %.9g", what, i, got[i], want[i])
		}
	}
}

func TestRMSNormHand(t *testing.T) {
	// Rows of [3, 4]: mean squares 7.5, 0 and 1; eps 0 except where the
	// zero row needs it.
	x := []float32{1, 2, 3, 4, 0, 0, 0, 0, -1, 1, -1, 1}
	w := []float32{1, 2, 1, 0.5}
	got, err := RMSNorm(x, 3, 4, w, 1e-6)
	if err != nil {
		t.Fatal(err)
	}
	r := 1 / math.Sqrt(7.5+1e-6)
	r3 := 1 / math.Sqrt(1+1e-6)
	want := []float32{float32(r), float32(4 * r), float32(3 * r), float32(2 * r), 0, 0, 0, 0,
		float32(-r3), float32(2 * r3), float32(-r3), float32(0.5 * r3)}
	near(t, "rms_norm", got, want, 1e-6)
}

func TestLayerNormHand(t *testing.T) {
	// [1, 2, 3, 4]: mean 2.5, variance 1.25.
	got, err := LayerNorm([]float32{1, 2, 3, 4}, 1, 4, []float32{1, 1, 2, 1}, []float32{0, 1, 0, 0}, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := 1 / math.Sqrt(1.25)
	near(t, "layer_norm", got, []float32{float32(-1.5 * s), float32(-0.5*s + 1), float32(2 * 0.5 * s), float32(1.5 * s)}, 1e-6)
}

func TestSoftmax(t *testing.T) {
	// Equal values are uniform, whatever their size (no overflow at 1000).
	got, err := Softmax([]float32{1000, 1000, 1000, 1000, 1000}, []int{5}, -1)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "uniform", got, []float32{0.2, 0.2, 0.2, 0.2, 0.2}, 1e-7)
	// Axis 0 of [2, 3]: columns (0, ln 3) give 1/4 and 3/4.
	l3 := float32(math.Log(3))
	got, err = Softmax([]float32{0, 5, -7, l3, 5, -7 + l3}, []int{2, 3}, 0)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "axis 0", got, []float32{0.25, 0.5, 0.25, 0.75, 0.5, 0.75}, 1e-6)
	if _, err := Softmax(got, []int{2, 3}, 2); !errors.Is(err, ErrShape) {
		t.Errorf("axis 2 of rank 2: err %v, want ErrShape", err)
	}
}

func TestArgmax(t *testing.T) {
	nan := float32(math.NaN())
	for _, tc := range []struct {
		name  string
		x     []float32
		shape []int
		axis  int
		want  []int64
	}{
		{"first of ties", []float32{1, 3, 3, 2}, []int{4}, 0, []int64{1}},
		{"negative", []float32{-5, -1, -3}, []int{3}, -1, []int64{1}},
		{"NaN wins", []float32{1, nan, 9, nan}, []int{4}, 0, []int64{1}},
		{"NaN first", []float32{nan, 9}, []int{2}, 0, []int64{0}},
		{"axis 0", []float32{1, 5, 4, 2}, []int{2, 2}, 0, []int64{1, 0}},
		{"rows", []float32{1, 5, 4, 2, 0, 9}, []int{2, 3}, 1, []int64{1, 2}},
	} {
		got, err := Argmax(tc.x, tc.shape, tc.axis)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: argmax %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
}

func TestLinearAgainstTripleLoop(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, s := range []struct{ m, k, n int }{{1, 1, 1}, {3, 5, 7}, {2, 17, 1}, {5, 8, 13}} {
		x, w, bias := randF(rng, s.m*s.k), randF(rng, s.n*s.k), randF(rng, s.n)
		// The check: out = bias + x·Wᵀ accumulated column by column of x
		// (k outermost), the other loop order.
		want := make([]float64, s.m*s.n)
		for p := range s.k {
			for i := range s.m {
				for j := range s.n {
					want[i*s.n+j] += float64(x[i*s.k+p]) * float64(w[j*s.k+p])
				}
			}
		}
		wantF := make([]float32, len(want))
		for i := range want {
			wantF[i] = float32(want[i] + float64(bias[i%s.n]))
		}
		got, err := Linear(x, s.m, s.k, w, s.n, NK, bias)
		if err != nil {
			t.Fatal(err)
		}
		near(t, "linear nk", got, wantF, 1e-6)
		// KN: the same weight transposed.
		wt := make([]float32, len(w))
		for j := range s.n {
			for p := range s.k {
				wt[p*s.n+j] = w[j*s.k+p]
			}
		}
		got, err = Linear(x, s.m, s.k, wt, s.n, KN, bias)
		if err != nil {
			t.Fatal(err)
		}
		near(t, "linear kn", got, wantF, 1e-6)
	}
	if _, err := Linear(make([]float32, 6), 2, 3, make([]float32, 5), 2, NK, nil); !errors.Is(err, ErrShape) {
		t.Errorf("short weight: err %v, want ErrShape", err)
	}
}

func TestLinearHand(t *testing.T) {
	// [1 2] · [[1 0] [0 1] [1 1]]ᵀ + [0 0 10] = [1 2 13].
	got, err := Linear([]float32{1, 2}, 1, 2, []float32{1, 0, 0, 1, 1, 1}, 3, NK, []float32{0, 0, 10})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "linear", got, []float32{1, 2, 13}, 0)
}

func TestInt4PackRoundTrip(t *testing.T) {
	all := []int8{-8, -7, -1, 0, 1, 6, 7}
	packed, err := PackInt4(all)
	if err != nil {
		t.Fatal(err)
	}
	// Low nibble first: -8 = 0x8, -7 = 0x9 → 0x98; -1 = 0xf, 0 → 0x0f.
	if packed[0] != 0x98 || packed[1] != 0x0f || len(packed) != 4 {
		t.Fatalf("packed % x", packed)
	}
	back := UnpackInt4(packed, len(all))
	for i := range all {
		if back[i] != all[i] {
			t.Fatalf("round trip %v → %v", all, back)
		}
	}
	if _, err := PackInt4([]int8{8}); !errors.Is(err, ErrIndex) {
		t.Errorf("8 packed: err %v, want ErrIndex", err)
	}
}

func TestQuantizedLinearEqualsDequantized(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, s := range []struct{ m, k, n, group int }{{1, 64, 5, 32}, {3, 12, 7, 4}, {2, 10, 3, 10}} {
		x := randF(rng, s.m*s.k)
		scales := make([]float32, s.n*s.k/s.group)
		for i := range scales {
			scales[i] = float32(0.01 + 0.1*rng.Float64())
		}
		for _, bits := range []int{8, 4} {
			lim := 127
			if bits == 4 {
				lim = 7
			}
			q := make([]int8, s.n*s.k)
			deq := make([]float32, len(q))
			for i := range q {
				q[i] = int8(rng.IntN(2*lim+1) - lim)
				if bits == 4 && i%5 == 0 {
					q[i] = -8
				}
				deq[i] = float32(float64(q[i]) * float64(scales[(i/s.k)*(s.k/s.group)+(i%s.k)/s.group]))
			}
			want, err := Linear(x, s.m, s.k, deq, s.n, NK, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []float32
			if bits == 8 {
				got, err = QuantizedLinearInt8(x, s.m, s.k, q, scales, s.n, s.group)
			} else {
				packed, perr := PackInt4(q)
				if perr != nil {
					t.Fatal(perr)
				}
				got, err = QuantizedLinearInt4(x, s.m, s.k, packed, scales, s.n, s.group)
			}
			if err != nil {
				t.Fatal(err)
			}
			near(t, "quantized linear", got, want, 1e-6)
		}
	}
	if _, err := QuantizedLinearInt8(make([]float32, 10), 1, 10, make([]int8, 10), []float32{1}, 1, 4); !errors.Is(err, ErrShape) {
		t.Errorf("group 4 of 10: err %v, want ErrShape", err)
	}
}

func TestActivations(t *testing.T) {
	x := []float32{-3, -1, 0, 0.5, 2}
	silu := SiLU(x)
	for i, v := range x {
		want := float64(v) / (1 + math.Exp(-float64(v)))
		if math.Abs(float64(silu[i])-want) > 1e-7 {
			t.Errorf("silu(%g) = %g, want %g", v, silu[i], want)
		}
	}
	// gelu(0) = 0, gelu(x) − gelu(−x) = x, and the tanh form within 1e-3.
	xs := make([]float32, 0, 81)
	for i := -40; i <= 40; i++ {
		xs = append(xs, float32(i)/8)
	}
	exact, approx := GELU(xs, false), GELU(xs, true)
	neg := make([]float32, len(xs))
	for i := range xs {
		neg[i] = -xs[i]
	}
	exactNeg := GELU(neg, false)
	for i, v := range xs {
		if math.Abs(float64(exact[i]-exactNeg[i]-v)) > 1e-6 {
			t.Errorf("gelu(%g) − gelu(−%g) = %g, want %g", v, v, exact[i]-exactNeg[i], v)
		}
		if math.Abs(float64(exact[i]-approx[i])) > 1e-3 {
			t.Errorf("gelu(%g): exact %g, tanh %g", v, exact[i], approx[i])
		}
	}
	// Φ(1) = 0.841344746…
	if g := GELU([]float32{1}, false)[0]; math.Abs(float64(g)-0.8413447461) > 1e-7 {
		t.Errorf("gelu(1) = %g", g)
	}
}

func TestBroadcast(t *testing.T) {
	for _, tc := range []struct {
		name       string
		a          []float32
		as         []int
		b          []float32
		bs         []int
		add, mul   []float32
		wantShape  []int
		wantShapeE bool
	}{
		{"same", []float32{1, 2}, []int{2}, []float32{3, 4}, []int{2}, []float32{4, 6}, []float32{3, 8}, []int{2}, false},
		{"trailing vector", []float32{1, 2, 3, 4, 5, 6}, []int{2, 3}, []float32{10, 20, 30}, []int{3},
			[]float32{11, 22, 33, 14, 25, 36}, []float32{10, 40, 90, 40, 100, 180}, []int{2, 3}, false},
		{"size-1 dim on the left", []float32{2}, []int{1, 1}, []float32{1, 2, 3}, []int{3},
			[]float32{3, 4, 5}, []float32{2, 4, 6}, []int{1, 3}, false},
		{"column", []float32{1, 2}, []int{2, 1}, []float32{10, 20, 30}, []int{1, 3},
			[]float32{11, 21, 31, 12, 22, 32}, []float32{10, 20, 30, 20, 40, 60}, []int{2, 3}, false},
		{"clash", []float32{1, 2}, []int{2}, []float32{1, 2, 3}, []int{3}, nil, nil, nil, true},
	} {
		got, shape, err := Add(tc.a, tc.as, tc.b, tc.bs)
		if tc.wantShapeE {
			if !errors.Is(err, ErrShape) {
				t.Errorf("%s: err %v, want ErrShape", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		near(t, tc.name+" add", got, tc.add, 0)
		if len(shape) != len(tc.wantShape) || numel(shape) != numel(tc.wantShape) {
			t.Errorf("%s: shape %v, want %v", tc.name, shape, tc.wantShape)
		}
		got, _, _ = Mul(tc.a, tc.as, tc.b, tc.bs)
		near(t, tc.name+" mul", got, tc.mul, 0)
	}
}

func TestEmbeddingAndAllReduce(t *testing.T) {
	table := []float32{0, 0, 1, 1, 2, 2}
	got, err := Embedding([]int64{2, 0, 2}, table, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "embedding", got, []float32{2, 2, 0, 0, 2, 2}, 0)
	if _, err := Embedding([]int64{3}, table, 3, 2); !errors.Is(err, ErrIndex) {
		t.Errorf("id 3 of 3: err %v, want ErrIndex", err)
	}
	ranks := [][]float32{{1, -2, 3}, {4, 5, -6}, {0, 1, 0}}
	sum, _ := AllReduce(ranks, "sum")
	near(t, "all_reduce sum", sum, []float32{5, 4, -3}, 0)
	mx, _ := AllReduce(ranks, "max")
	near(t, "all_reduce max", mx, []float32{4, 5, 3}, 0)
	if _, err := AllReduce(ranks, "min"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("kind min: err %v", err)
	}
}

// The references never write their inputs.
func TestInputsUnchanged(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 14))
	x, w, b := randF(rng, 6*8), randF(rng, 8*8), randF(rng, 8)
	q, k, v := randF(rng, 2*3*4*8), randF(rng, 2*3*2*8), randF(rng, 2*3*2*8)
	all := [][]float32{x, w, b, q, k, v}
	saved := make([][]float32, len(all))
	for i, s := range all {
		saved[i] = append([]float32(nil), s...)
	}
	pos := []int64{0, 1, 2, 3, 4, 5}
	_, _ = Linear(x, 6, 8, w, 8, NK, b)
	_, _ = Linear(x, 6, 8, w, 8, KN, b)
	_, _ = RMSNorm(x, 6, 8, b, 1e-5)
	_, _ = LayerNorm(x, 6, 8, b, b, 1e-5)
	_, _ = Rope(x, 6, 1, 8, pos, RopeConfig{Theta: 10000, Style: GPTJ})
	_, _ = Rope(x, 3, 2, 8, pos[:3], RopeConfig{Theta: 10000, Style: Neox, RotaryDim: 4})
	_ = SiLU(x)
	_ = GELU(x, false)
	_, _, _ = Add(x, []int{6, 8}, b, []int{8})
	_, _, _ = Mul(x, []int{6, 8}, b, []int{8})
	_, _ = Softmax(x, []int{6, 8}, 0)
	_, _ = Argmax(x, []int{6, 8}, 1)
	_, _ = AllReduce([][]float32{x, x}, "sum")
	_, _ = Attention(q, k, v, AttnDims{Batch: 2, Seq: 3, KVLen: 3, QHeads: 4, KVHeads: 2, HeadDim: 8}, AttnOptions{Causal: true})
	for i := range all {
		near(t, "input", all[i], saved[i], 0)
	}
	if pos[5] != 5 {
		t.Errorf("positions changed: %v", pos)
	}
}
