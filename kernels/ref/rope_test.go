package ref

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestRopePositionZeroIsIdentity(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	x := randF(rng, 2*3*8)
	for _, c := range []RopeConfig{
		{Theta: 10000, Style: Neox},
		{Theta: 10000, Style: GPTJ},
		{Theta: 500000, Style: Neox, RotaryDim: 4},
		{Theta: 10000, Style: Neox, Scaling: &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 64}},
	} {
		got, err := Rope(x, 2, 3, 8, []int64{0, 0}, c)
		if err != nil {
			t.Fatal(err)
		}
		near(t, "rope at 0", got, x, 0)
	}
}

func TestRopeRotatesPairs(t *testing.T) {
	// head_dim 4, base 10000: θ_0 = 1, θ_1 = 10000^(−1/2) = 0.01. Unit
	// vectors show where each pair lives and by how much it turns.
	const p = 3
	for _, tc := range []struct {
		name  string
		style RopeStyle
		in    []float32
		want  []float64
	}{
		{"neox e0", Neox, []float32{1, 0, 0, 0}, []float64{math.Cos(p), 0, math.Sin(p), 0}},
		{"neox e3", Neox, []float32{0, 0, 0, 1}, []float64{0, -math.Sin(p * 0.01), 0, math.Cos(p * 0.01)}},
		{"gptj e0", GPTJ, []float32{1, 0, 0, 0}, []float64{math.Cos(p), math.Sin(p), 0, 0}},
		{"gptj e3", GPTJ, []float32{0, 0, 0, 1}, []float64{0, 0, -math.Sin(p * 0.01), math.Cos(p * 0.01)}},
	} {
		got, err := Rope(tc.in, 1, 1, 4, []int64{p}, RopeConfig{Theta: 10000, Style: tc.style})
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float32, 4)
		for i, w := range tc.want {
			want[i] = float32(w)
		}
		near(t, tc.name, got, want, 1e-7)
	}
}

func TestRopePartialRotaryKeepsTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	x := randF(rng, 2*16)
	got, err := Rope(x, 1, 2, 16, []int64{11}, RopeConfig{Theta: 10000, Style: Neox, RotaryDim: 6})
	if err != nil {
		t.Fatal(err)
	}
	for h := range 2 {
		near(t, "tail", got[h*16+6:h*16+16], x[h*16+6:h*16+16], 0)
		// Each rotated pair (i, i+3) keeps its length.
		for i := range 3 {
			a, b := x[h*16+i], x[h*16+i+3]
			c, d := got[h*16+i], got[h*16+i+3]
			if math.Abs(math.Hypot(float64(a), float64(b))-math.Hypot(float64(c), float64(d))) > 1e-6 {
				t.Errorf("head %d pair %d: length changed", h, i)
			}
		}
	}
}

// q·k after rope depends only on the distance between the positions.
func TestRopeRelative(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	q, k := randF(rng, 32), randF(rng, 32)
	for _, style := range []RopeStyle{Neox, GPTJ} {
		c := RopeConfig{Theta: 10000, Style: style}
		score := func(pq, pk int64) float64 {
			a, _ := Rope(q, 1, 1, 32, []int64{pq}, c)
			b, _ := Rope(k, 1, 1, 32, []int64{pk}, c)
			return dot(a, b)
		}
		if s1, s2 := score(7, 2), score(105, 100); math.Abs(s1-s2) > 1e-4 {
			t.Errorf("%s: score(7, 2) = %g, score(105, 100) = %g", style, s1, s2)
		}
	}
}

func TestRopeScalings(t *testing.T) {
	const d = 16
	def, _, _ := InvFreq(RopeConfig{Theta: 10000}, d, 1)

	// linear: position p under factor f turns like p/f without scaling.
	lin := RopeConfig{Theta: 10000, Style: Neox, Scaling: &RopeScaling{Type: "linear", Factor: 2}}
	rng := rand.New(rand.NewPCG(6, 6))
	x := randF(rng, d)
	a, _ := Rope(x, 1, 1, d, []int64{6}, lin)
	b, _ := Rope(x, 1, 1, d, []int64{3}, RopeConfig{Theta: 10000, Style: Neox})
	near(t, "linear", a, b, 1e-6)

	// dynamic: no change up to orig; past it base' = base·(f·L/orig − (f−1))^(d/(d−2)).
	// d = 4, f = 2, orig = 16, L = 32: base' = 10000·3² and θ_1 = 1/300.
	dyn := RopeConfig{Theta: 10000, Scaling: &RopeScaling{Type: "dynamic", Factor: 2, OriginalMaxPositions: 16}}
	f, _, _ := InvFreq(dyn, 4, 16)
	if math.Abs(f[1]-0.01) > 1e-15 {
		t.Errorf("dynamic within orig: θ_1 = %g, want 0.01", f[1])
	}
	f, _, _ = InvFreq(dyn, 4, 32)
	if math.Abs(f[1]-1.0/300) > 1e-15 {
		t.Errorf("dynamic at 32: θ_1 = %g, want 1/300", f[1])
	}

	// llama3: wavelengths below orig/high unchanged, above orig/low divided
	// by factor, in between strictly in between.
	l3 := RopeConfig{Theta: 10000, Scaling: &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 200}}
	f, att, _ := InvFreq(l3, d, 1)
	if att != 1 {
		t.Errorf("llama3 attention factor %g", att)
	}
	var lo, mid, hi int
	for i, th := range def {
		wave := 2 * math.Pi / th
		switch {
		case wave < 50:
			hi++
			if f[i] != th {
				t.Errorf("llama3 high-frequency θ_%d changed: %g → %g", i, th, f[i])
			}
		case wave > 200:
			lo++
			if math.Abs(f[i]-th/8) > 1e-18 {
				t.Errorf("llama3 low-frequency θ_%d = %g, want %g", i, f[i], th/8)
			}
		default:
			mid++
			if !(f[i] > th/8 && f[i] < th) {
				t.Errorf("llama3 medium θ_%d = %g not between %g and %g", i, f[i], th/8, th)
			}
		}
	}
	if lo == 0 || mid == 0 || hi == 0 {
		t.Fatalf("test does not cover all three llama3 bands: %d low, %d mid, %d high", lo, mid, hi)
	}

	// yarn: attention factor 0.1·ln(factor)+1; dims below the correction
	// range extrapolate (unchanged), above it interpolate (θ/factor).
	y := RopeConfig{Theta: 10000, Scaling: &RopeScaling{Type: "yarn", Factor: 4, OriginalMaxPositions: 2048}}
	f, att, _ = InvFreq(y, d, 1)
	if math.Abs(att-(0.1*math.Log(4)+1)) > 1e-15 {
		t.Errorf("yarn attention factor %g", att)
	}
	// dim(n) = 16·ln(2048/(2πn))/(2 ln 10000): lo = floor(dim(32)) = 2, hi = ceil(dim(1)) = 6.
	for i, th := range def {
		switch {
		case i <= 2:
			if f[i] != th {
				t.Errorf("yarn θ_%d = %g, want unchanged %g", i, f[i], th)
			}
		case i >= 6:
			if math.Abs(f[i]-th/4) > 1e-18 {
				t.Errorf("yarn θ_%d = %g, want %g", i, f[i], th/4)
			}
		default: // ramp (i−2)/4 of the way to θ/4
			r := float64(i-2) / 4
			if want := th/4*r + th*(1-r); math.Abs(f[i]-want) > 1e-15 {
				t.Errorf("yarn θ_%d = %g, want %g", i, f[i], want)
			}
		}
	}
	// yarn's attention factor multiplies the rotated dims at position 0.
	got, _ := Rope([]float32{1, 2, 3, 4}, 1, 1, 4, []int64{0}, RopeConfig{Theta: 10000, Style: Neox, RotaryDim: 2, Scaling: y.Scaling})
	m := float32(att)
	near(t, "yarn scale", got, []float32{m, 2 * m, 3, 4}, 1e-7)
}
