package ref

import (
	"fmt"
	"math"

	"llmir/ir"
)

// RopeStyle is how the rotated dims pair up.
type RopeStyle string

// The two pairings.
const (
	// Neox pairs dim i with dim i + r/2 (HF's rotate_half; Llama, Mistral, Qwen).
	Neox RopeStyle = "neox"
	// GPTJ pairs dims 2i and 2i+1 (interleaved; GPT-J, Llama's original code).
	GPTJ RopeStyle = "gptj"
)

// RopeScaling is Hugging Face's rope_scaling. Fields a type does not use are
// ignored; zero means "HF's default" where HF has one.
type RopeScaling struct {
	Type   string  // "linear", "dynamic", "llama3" or "yarn"
	Factor float64 // > 0
	// OriginalMaxPositions is original_max_position_embeddings: the context
	// the model was trained on. Required by dynamic, llama3 and yarn. HF's
	// dynamic reads config.max_position_embeddings instead, and yarn falls
	// back to it; the op carries no such field, so the importer must put
	// that value in the dict under this key.
	OriginalMaxPositions int64
	LowFreqFactor        float64 // llama3
	HighFreqFactor       float64 // llama3
	// yarn: 0 means HF's default (beta_fast 32, beta_slow 1, attention
	// factor from mscale, truncate true).
	BetaFast, BetaSlow   float64
	AttentionFactor      float64
	MScale, MScaleAllDim float64
	NoTruncate           bool // yarn's truncate = false
}

// RopeConfig is llmir.rope's attributes.
type RopeConfig struct {
	Theta     float64 // base
	Style     RopeStyle
	RotaryDim int // 0: all of head_dim; must be even
	Scaling   *RopeScaling
}

// RopeConfigFromAttrs reads llmir.rope's attributes.
func RopeConfigFromAttrs(as ir.Attrs) (RopeConfig, error) {
	c := RopeConfig{
		Theta:     as.Float("theta", 10000),
		Style:     RopeStyle(as.Str("style", string(Neox))),
		RotaryDim: int(as.Int("rotary_dim", 0)),
	}
	a, ok := as.Get("scaling")
	if !ok {
		return c, nil
	}
	d, ok := a.(ir.DictAttr)
	if !ok {
		return c, fmt.Errorf("rope scaling: want a dictionary, got %s", a)
	}
	s := ir.Attrs(d)
	c.Scaling = &RopeScaling{
		Type:                 s.Str("type", ""),
		Factor:               s.Float("factor", 0),
		OriginalMaxPositions: s.Int("original_max_position_embeddings", 0),
		LowFreqFactor:        s.Float("low_freq_factor", 1),
		HighFreqFactor:       s.Float("high_freq_factor", 4),
		BetaFast:             s.Float("beta_fast", 0),
		BetaSlow:             s.Float("beta_slow", 0),
		AttentionFactor:      s.Float("attention_factor", 0),
		MScale:               s.Float("mscale", 0),
		MScaleAllDim:         s.Float("mscale_all_dim", 0),
		NoTruncate:           !s.Bool("truncate", true),
	}
	return c, nil
}

// InvFreq returns the rotation frequencies θ_i (radians per position) of the
// r/2 rotated pairs, and the attention factor that multiplies cos and sin,
// exactly as transformers' ROPE_INIT_FUNCTIONS compute them (in float64
// here, float32 there). maxPos is the largest position in the batch plus
// one, which only "dynamic" reads. With d = r (the rotary dim) and base θ:
//
//	default:  θ_i = base^(−2i/d), i = 0 … d/2−1
//	linear:   θ_i / factor
//	dynamic:  if maxPos > orig: base' = base·(factor·maxPos/orig − (factor−1))^(d/(d−2)),
//	          θ_i = base'^(−2i/d); otherwise default
//	llama3:   λ_i = 2π/θ_i; λ_lo = orig/low_freq_factor, λ_hi = orig/high_freq_factor;
//	          λ_i > λ_lo: θ_i/factor; λ_i < λ_hi: θ_i; otherwise, with
//	          s = (orig/λ_i − low_freq_factor)/(high_freq_factor − low_freq_factor),
//	          (1−s)·θ_i/factor + s·θ_i
//	yarn:     dim(n) = d·ln(orig/(2πn)) / (2·ln base);
//	          lo = max(floor(dim(beta_fast)), 0), hi = min(ceil(dim(beta_slow)), d−1)
//	          (no floor/ceil when truncate = false; hi += 0.001 if lo == hi);
//	          ramp_i = clamp((i − lo)/(hi − lo), 0, 1); e_i = 1 − ramp_i;
//	          θ_i = (θ_i/factor)·(1 − e_i) + θ_i·e_i;
//	          attention factor = attention_factor, else mscale(factor, mscale)/
//	          mscale(factor, mscale_all_dim) when both are set, else mscale(factor, 1),
//	          with mscale(s, m) = 1 if s ≤ 1 else 0.1·m·ln s + 1
//
// HF's dynamic rotary embedding also remembers the longest length seen and
// keeps its frequencies until the length drops back below orig; the
// reference is stateless (each call uses its own maxPos), which is what a
// kernel can reproduce.
func InvFreq(c RopeConfig, r int, maxPos int64) ([]float64, float64, error) {
	if r <= 0 || r%2 != 0 {
		return nil, 0, shapeErr("rotary dim %d must be positive and even", r)
	}
	base := c.Theta
	half := r / 2
	def := func(base float64) []float64 {
		f := make([]float64, half)
		for i := range f {
			f[i] = 1 / math.Pow(base, float64(2*i)/float64(r))
		}
		return f
	}
	s := c.Scaling
	if s == nil {
		return def(base), 1, nil
	}
	if s.Factor <= 0 {
		return nil, 0, fmt.Errorf("rope scaling %q: factor %g must be positive", s.Type, s.Factor)
	}
	orig := float64(s.OriginalMaxPositions)
	if s.Type != "linear" && orig <= 0 {
		return nil, 0, fmt.Errorf("rope scaling %q needs original_max_position_embeddings: %w", s.Type, ErrUnsupported)
	}
	switch s.Type {
	case "linear":
		f := def(base)
		for i := range f {
			f[i] /= s.Factor
		}
		return f, 1, nil
	case "dynamic":
		if float64(maxPos) > orig {
			base *= math.Pow(s.Factor*float64(maxPos)/orig-(s.Factor-1), float64(r)/float64(r-2))
		}
		return def(base), 1, nil
	case "llama3":
		f := def(base)
		loWave, hiWave := orig/s.LowFreqFactor, orig/s.HighFreqFactor
		for i, th := range f {
			wave := 2 * math.Pi / th
			switch {
			case wave > loWave:
				f[i] = th / s.Factor
			case wave < hiWave:
				f[i] = th
			default:
				sm := (orig/wave - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				f[i] = (1-sm)*th/s.Factor + sm*th
			}
		}
		return f, 1, nil
	case "yarn":
		betaFast, betaSlow := orDefault(s.BetaFast, 32), orDefault(s.BetaSlow, 1)
		corr := func(n float64) float64 {
			return float64(r) * math.Log(orig/(n*2*math.Pi)) / (2 * math.Log(base))
		}
		lo, hi := corr(betaFast), corr(betaSlow)
		if !s.NoTruncate {
			lo, hi = math.Floor(lo), math.Ceil(hi)
		}
		lo, hi = math.Max(lo, 0), math.Min(hi, float64(r-1))
		if lo == hi {
			hi += 0.001
		}
		f := def(base)
		for i, th := range f {
			ramp := math.Min(math.Max((float64(i)-lo)/(hi-lo), 0), 1)
			extra := 1 - ramp
			f[i] = th/s.Factor*(1-extra) + th*extra
		}
		mscale := func(sc, m float64) float64 {
			if sc <= 1 {
				return 1
			}
			return 0.1*m*math.Log(sc) + 1
		}
		att := s.AttentionFactor
		switch {
		case att != 0:
		case s.MScale != 0 && s.MScaleAllDim != 0:
			att = mscale(s.Factor, s.MScale) / mscale(s.Factor, s.MScaleAllDim)
		default:
			att = mscale(s.Factor, 1)
		}
		return f, att, nil
	}
	return nil, 0, fmt.Errorf("rope scaling type %q: %w", s.Type, ErrUnsupported)
}

func orDefault(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

// Rope rotates x [tokens, heads, headDim] (any leading dims flattened into
// tokens) at positions [tokens]. With r the rotary dim and a the attention
// factor, pair (u, w) of head dims rotates by angle p·θ_i:
//
//	u' = a·(u·cos(pθ_i) − w·sin(pθ_i)),  w' = a·(w·cos(pθ_i) + u·sin(pθ_i))
//
// where neox pairs (i, i + r/2) and gptj pairs (2i, 2i+1), i < r/2. Dims
// from r on pass through unchanged.
func Rope(x []float32, tokens, heads, headDim int, positions []int64, c RopeConfig) ([]float32, error) {
	if err := needLen("rope x", len(x), tokens*heads*headDim); err != nil {
		return nil, err
	}
	if err := needLen("rope positions", len(positions), tokens); err != nil {
		return nil, err
	}
	r := c.RotaryDim
	if r == 0 {
		r = headDim
	}
	if r > headDim {
		return nil, shapeErr("rotary dim %d exceeds head dim %d", r, headDim)
	}
	var maxPos int64
	for _, p := range positions {
		maxPos = max(maxPos, p+1)
	}
	freq, att, err := InvFreq(c, r, maxPos)
	if err != nil {
		return nil, err
	}
	var pair func(i int) (int, int)
	switch c.Style {
	case Neox, "":
		pair = func(i int) (int, int) { return i, i + r/2 }
	case GPTJ:
		pair = func(i int) (int, int) { return 2 * i, 2*i + 1 }
	default:
		return nil, fmt.Errorf("rope style %q: %w", c.Style, ErrUnsupported)
	}
	out := append([]float32(nil), x...)
	for t := range tokens {
		p := float64(positions[t])
		for h := range heads {
			v := x[(t*heads+h)*headDim:][:headDim]
			o := out[(t*heads+h)*headDim:][:headDim]
			for i, th := range freq {
				sin, cos := math.Sincos(p * th)
				a, b := pair(i)
				u, w := float64(v[a]), float64(v[b])
				o[a] = float32(att * (u*cos - w*sin))
				o[b] = float32(att * (w*cos + u*sin))
			}
		}
	}
	return out, nil
}
