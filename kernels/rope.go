package kernels

// Rope is a template kernel: its positions are an i32 input and each
// rotation angle is position × frequency, a cos/sin of data the loop-nest
// IR has no way to express (no integer loads into float math, no
// trigonometry). The frequencies (with linear, llama3 or yarn scaling, and
// the attention factor) are computed at generation time by ref.InvFreq
// and baked into the C source as double constants; only "dynamic" NTK
// scaling, which depends on the largest position of the batch, computes
// them at run time.
//
// cos and sin are evaluated in double precision inline (no library call
// per token and head, and results independent of the libm version): the
// angle is reduced by multiples of
// π/2 (π/2 split into three parts, exact for the angles of any realistic
// context) and two Taylor polynomials on [−π/4, π/4] give 1e-16 accuracy.
// Knobs: vec (lanes of the rotation, neox's halves are contiguous),
// table (1: cos/sin once per token in a small table reused by all heads;
// 0: recomputed per head) and chunk (tokens per parallel task).

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"llmir/ir"
	"llmir/kernels/ref"
	"llmir/schedule"
)

func init() { register("llmir.rope", ropeFromWorkload) }

// Rope rotates x [Tokens, Heads, HeadDim] by its positions [Tokens] (i32).
// Tokens is dynamic: compiled for TokensBucket, measured at Tokens.
type Rope struct {
	Tokens, Heads, HeadDim int64
	TokensBucket           int64 // 0: Tokens itself
	Config                 ref.RopeConfig
	DType                  schedule.DType // of x and out
	// MaxPosition bounds the positions the conformance inputs draw (0:
	// 4096, or twice original_max_position_embeddings under scaling, so
	// that dynamic scaling is exercised past its threshold).
	MaxPosition int64
	IR          *ir.Workload
}

// ropeFromWorkload reads llmir.rope(x [..., heads, head_dim], positions
// [...]) with theta, style, rotary_dim and scaling from the attributes.
func ropeFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkArity(w, 2, 1); err != nil {
		return nil, err
	}
	x, pos := w.Inputs[0], w.Inputs[1]
	if len(x.Shape) < 3 {
		return nil, fmt.Errorf("x %v must be [..., heads, head_dim]", x.Shape)
	}
	lead := x.Shape[:len(x.Shape)-2]
	if !slices.Equal(pos.Shape, lead) {
		return nil, fmt.Errorf("positions %v must have x's leading dims %v", pos.Shape, lead)
	}
	if pos.DType != "i32" {
		return nil, fmt.Errorf("positions are %s, the kernel reads i32", pos.DType)
	}
	dt, err := floatType(x, w.Output[0])
	if err != nil {
		return nil, err
	}
	if !slices.Equal(w.Output[0].Shape, x.Shape) {
		return nil, fmt.Errorf("result shape %v differs from x's %v", w.Output[0].Shape, x.Shape)
	}
	as, err := w.ParseAttrs()
	if err != nil {
		return nil, err
	}
	if _, ok := as.Get("theta"); !ok {
		return nil, fmt.Errorf("attribute theta is missing")
	}
	c, err := ref.RopeConfigFromAttrs(as)
	if err != nil {
		return nil, err
	}
	tokens := int64(1)
	for _, d := range pos.Shape {
		tokens *= d
	}
	k := Rope{Tokens: tokens, Heads: x.Shape[len(x.Shape)-2], HeadDim: x.Shape[len(x.Shape)-1], Config: c, DType: dt, IR: &w}
	if err := k.check(); err != nil {
		return nil, err
	}
	return k, nil
}

func (k Rope) bucket() int64 { return rowBucketOr(k.Tokens, k.TokensBucket) }

func (k Rope) rotary() int64 {
	if k.Config.RotaryDim > 0 {
		return int64(k.Config.RotaryDim)
	}
	return k.HeadDim
}

// check validates the shape and the configuration (style, rotary dim,
// scaling parameters), so that a bad workload fails when it is read.
func (k Rope) check() error {
	if err := rowCheck("rope", k.Tokens, k.TokensBucket, k.Heads*k.HeadDim); err != nil {
		return err
	}
	if k.HeadDim%2 != 0 {
		return fmt.Errorf("rope: head_dim %d must be even", k.HeadDim)
	}
	r := k.rotary()
	if r < 2 || r%2 != 0 || r > k.HeadDim {
		return fmt.Errorf("rope: rotary_dim %d must be even and in 2..%d", r, k.HeadDim)
	}
	switch k.Config.Style {
	case ref.Neox, ref.GPTJ, "":
	default:
		return fmt.Errorf("rope: style %q (want neox or gptj)", k.Config.Style)
	}
	if !(k.Config.Theta > 1) {
		return fmt.Errorf("rope: theta %g must be greater than 1", k.Config.Theta)
	}
	if _, _, err := ref.InvFreq(k.Config, int(r), 1); err != nil {
		return fmt.Errorf("rope: %w", err)
	}
	if !k.DType.Float() {
		return fmt.Errorf("rope: dtype %s is not a float type", k.DType)
	}
	return nil
}

func (k Rope) dynamic() bool { return k.Config.Scaling != nil && k.Config.Scaling.Type == "dynamic" }

func (k Rope) gptj() bool { return k.Config.Style == ref.GPTJ }

// Name is "rope/tokens=…,heads=…,dim=…/<style>/<dtype>".
func (k Rope) Name() string {
	style := k.Config.Style
	if style == "" {
		style = ref.Neox
	}
	sc := ""
	if k.Config.Scaling != nil {
		sc = "," + k.Config.Scaling.Type
	}
	rd := ""
	if k.rotary() != k.HeadDim {
		rd = fmt.Sprintf(",rotary=%d", k.rotary())
	}
	return fmt.Sprintf("rope/tokens=%d,heads=%d,dim=%d%s/%s%s/%s", k.Tokens, k.Heads, k.HeadDim, rd, style, sc, k.DType)
}

// Def is the template x [tokens, heads, dim], positions [tokens] → out.
func (k Rope) Def() (*schedule.Def, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	T := schedule.Dynamic("tokens", k.bucket())
	H, D := schedule.Static(k.Heads), schedule.Static(k.HeadDim)
	x := schedule.Input("x", k.DType, T, H, D)
	pos := schedule.Input("positions", schedule.I32, T)
	out := schedule.Declare("out", k.DType, T, H, D)
	return schedule.NewTemplateDef("rope", "out[t, h, pair] = rotate(x[t, h, pair], positions[t] * inv_freq[i]) (ref.Rope)", []*schedule.Tensor{x, pos}, out)
}

// Workload is the IR workload, or llmir.rope on [tokens, heads, dim] with
// the configuration as attributes.
func (k Rope) Workload() ir.Workload {
	if k.IR != nil {
		return *k.IR
	}
	dt := k.DType.String()
	xs := ir.TensorSig{Shape: []int64{0, k.Heads, k.HeadDim}, Sym: []string{"tokens", "", ""}, DType: dt}
	ps := ir.TensorSig{Shape: []int64{0}, Sym: []string{"tokens"}, DType: "i32"}
	style := k.Config.Style
	if style == "" {
		style = ref.Neox
	}
	attrs := map[string]string{"theta": ir.F32Attr(k.Config.Theta).String(), "style": ir.StrAttr(style).String()}
	if k.Config.RotaryDim > 0 {
		attrs["rotary_dim"] = ir.I64Attr(int64(k.Config.RotaryDim)).String()
	}
	if s := k.Config.Scaling; s != nil {
		var d ir.Attrs
		d.Set("type", ir.StrAttr(s.Type))
		d.Set("factor", ir.F32Attr(s.Factor))
		if s.OriginalMaxPositions > 0 {
			d.Set("original_max_position_embeddings", ir.I64Attr(s.OriginalMaxPositions))
		}
		if s.Type == "llama3" {
			d.Set("low_freq_factor", ir.F32Attr(s.LowFreqFactor))
			d.Set("high_freq_factor", ir.F32Attr(s.HighFreqFactor))
		}
		attrs["scaling"] = ir.DictAttr(d).String()
	}
	return rowsWorkload("llmir.rope", k.bucket(), []ir.TensorSig{xs, ps}, []ir.TensorSig{xs}, attrs)
}

// Dims is [Tokens].
func (k Rope) Dims() []int64 { return []int64{k.Tokens} }

// FLOPs: 6 per rotated pair (4 multiplies, 2 adds), cos/sin not counted.
func (k Rope) FLOPs() float64 { return 6 * float64(k.Tokens*k.Heads*k.rotary()/2) }

// Bytes: x read and out written once, positions once.
func (k Rope) Bytes() float64 {
	return float64(2*k.Tokens*k.Heads*k.HeadDim*k.DType.Size() + 4*k.Tokens)
}

func (k Rope) maxPosition() int64 {
	if k.MaxPosition > 0 {
		return k.MaxPosition
	}
	if s := k.Config.Scaling; s != nil && s.OriginalMaxPositions > 0 {
		return 2 * s.OriginalMaxPositions
	}
	return 4096
}

// Fill draws positions in [0, maxPosition).
func (k Rope) Fill(input string) func(rng *rand.Rand, v []float64) {
	if input != "positions" {
		return nil
	}
	n := k.maxPosition()
	return func(rng *rand.Rand, v []float64) {
		for i := range v {
			v[i] = float64(rng.Int64N(n))
		}
	}
}

// Reference is ref.Rope in float64.
func (k Rope) Reference(in [][]float64) [][]float64 {
	x, pos := in[0], in[1]
	d, r := int(k.HeadDim), int(k.rotary())
	var maxPos int64
	for _, p := range pos {
		maxPos = max(maxPos, int64(p)+1)
	}
	freq, att, err := ref.InvFreq(k.Config, r, maxPos)
	if err != nil {
		panic(fmt.Sprintf("rope reference: %v (checked by Def)", err))
	}
	out := slices.Clone(x)
	for t := range int(k.Tokens) {
		p := pos[t]
		for h := range int(k.Heads) {
			v := x[(t*int(k.Heads)+h)*d:][:d]
			o := out[(t*int(k.Heads)+h)*d:][:d]
			for i, th := range freq {
				sin, cos := math.Sincos(p * th)
				a, b := i, i+r/2
				if k.gptj() {
					a, b = 2*i, 2*i+1
				}
				o[a] = att * (v[a]*cos - v[b]*sin)
				o[b] = att * (v[b]*cos + v[a]*sin)
			}
		}
	}
	return [][]float64{out}
}

func (k Rope) knobs(hw Hardware) Knobs {
	return Knobs{{"vec", rowVecDomain(hw)}, {"table", []int64{0, 1}}, {"chunk", rowChunkDomain}}
}

// Space samples the knobs.
func (k Rope) Space(s *schedule.Schedule, hw Hardware) error { return k.knobs(hw).Sample(s) }

// Default: the widest vector that half the rotary dim fills, a cos/sin
// table per token when there is more than one head to share it, and
// chunks that give every thread four tasks.
func (k Rope) Default(s *schedule.Schedule, hw Hardware) error {
	v := int64(1)
	for _, c := range rowVecDomain(hw) {
		if c <= k.rotary()/2 {
			v = c
		}
	}
	table := int64(0)
	if k.Heads > 1 {
		table = 1
	}
	return k.knobs(hw).Choose(s, map[string]int64{"vec": v, "table": table, "chunk": rowChunk(k.bucket(), hw)})
}

// EmitC writes the rotation for the knob values in s.
func (k Rope) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	kv, err := k.knobs(hw).Read(s)
	if err != nil {
		return "", fmt.Errorf("rope: %w", err)
	}
	if err := k.check(); err != nil {
		return "", err
	}
	vec, r, d, heads := kv["vec"], k.rotary(), k.HeadDim, k.Heads
	half := r / 2
	var w cSrc
	rowPrelude(&w, vec, k.DType)
	// Angles are reduced by k·π/2 with π/2 in three parts (the first two
	// with trailing zero bits, so k·part is exact for |k| < 2^20), then the
	// Taylor series of sin and cos to degree 17/16 on [−π/4, π/4].
	w.line("static void llmir_sincos(double a, double *s, double *c) {")
	w.line("  double q = a * 0.63661977236758134308;")
	w.line("  double kq = (double)(int64_t)(q >= 0 ? q + 0.5 : q - 0.5);")
	w.line("  double x = ((a - kq * 1.5707963267341256) - kq * 6.077100506506192e-11) - kq * 2.0222662487959506e-21;")
	w.line("  double x2 = x * x;")
	w.line("  double sn = x * (1 + x2 * (-1.0/6 + x2 * (1.0/120 + x2 * (-1.0/5040 + x2 * (1.0/362880 + x2 * (-1.0/39916800 + x2 * (1.0/6227020800 + x2 * (-1.0/1307674368000 + x2 * (1.0/355687428096000)))))))));")
	w.line("  double cs = 1 + x2 * (-0.5 + x2 * (1.0/24 + x2 * (-1.0/720 + x2 * (1.0/40320 + x2 * (-1.0/3628800 + x2 * (1.0/479001600 + x2 * (-1.0/87178291200 + x2 * (1.0/20922789888000))))))));")
	w.line("  switch (((int64_t)kq) & 3) {")
	w.line("  case 0: *s = sn; *c = cs; break;")
	w.line("  case 1: *s = cs; *c = -sn; break;")
	w.line("  case 2: *s = -sn; *c = -cs; break;")
	w.line("  default: *s = -cs; *c = sn; break;")
	w.line("  }")
	w.line("}")
	w.line("")
	freq, att, err := ref.InvFreq(k.Config, int(r), 1)
	if err != nil {
		return "", fmt.Errorf("rope: %w", err)
	}
	if !k.dynamic() {
		w.line("static const double llmir_inv_freq[%d] = {", half)
		for _, f := range freq {
			w.line("  %s,", cDouble(f))
		}
		w.line("};")
	}
	if k.dynamic() {
		w.b.WriteString(ropePow)
	}
	w.open("int %s(void *const *bufs, const int64_t *dims)", entry)
	w.line("const llmir_t *restrict x = (const llmir_t *)bufs[0];")
	w.line("const int32_t *restrict pos = (const int32_t *)bufs[1];")
	w.line("llmir_t *restrict out = (llmir_t *)bufs[2];")
	w.line("const int64_t tokens = dims[0];")
	w.line("const float att = %s;", cF32(att))
	if k.dynamic() {
		// HF's dynamic NTK: the base grows with the longest position of
		// the batch once it passes the trained context.
		sc := k.Config.Scaling
		w.line("double llmir_inv_freq[%d];", half)
		w.open("")
		w.line("int64_t maxpos = 0;")
		w.line("for (int64_t t = 0; t < tokens; t++) if ((int64_t)pos[t] + 1 > maxpos) maxpos = (int64_t)pos[t] + 1;")
		w.line("double base = %s;", cDouble(k.Config.Theta))
		w.open("if ((double)maxpos > %s)", cDouble(float64(sc.OriginalMaxPositions)))
		// base' = base·(f·maxPos/orig − (f−1))^(r/(r−2)), with the power
		// as exp2(e·log2(y)), both written inline below.
		w.line("double y = %s * (double)maxpos / %s - %s;", cDouble(sc.Factor), cDouble(float64(sc.OriginalMaxPositions)), cDouble(sc.Factor-1))
		w.line("base *= llmir_pow(y, %s);", cDouble(float64(r)/float64(r-2)))
		w.close()
		w.line("for (int64_t i = 0; i < %d; i++) llmir_inv_freq[i] = llmir_pow(base, -(double)(2 * i) / %d.0);", half, r)
		w.close()
	}
	w.line("#pragma omp parallel for schedule(static, %d) if(tokens > %d)", kv["chunk"], kv["chunk"])
	w.open("for (int64_t t = 0; t < tokens; t++)")
	w.line("const double p = (double)pos[t];")
	w.line("float cs[%d], sn[%d];", half, half)
	table := func() {
		w.open("for (int64_t i = 0; i < %d; i++)", half)
		w.line("double s, c;")
		w.line("llmir_sincos(p * llmir_inv_freq[i], &s, &c);")
		w.line("cs[i] = att * (float)c;")
		w.line("sn[i] = att * (float)s;")
		w.close()
	}
	if kv["table"] == 1 {
		table()
	}
	w.open("for (int64_t h = 0; h < %d; h++)", heads)
	if kv["table"] == 0 {
		table()
	}
	w.line("const llmir_t *restrict xr = x + (t * %d + h) * %d;", heads, d)
	w.line("llmir_t *restrict o = out + (t * %d + h) * %d;", heads, d)
	if k.gptj() {
		// Interleaved pairs: deinterleave with a simd loop of vec lanes
		// (gcc's permutes), no hand-written shuffles.
		if vec > 1 {
			w.line("#pragma omp simd simdlen(%d)", vec)
		}
		w.open("for (int64_t i = 0; i < %d; i++)", half)
		w.line("const float u = llmir_ld(xr[2 * i]), v = llmir_ld(xr[2 * i + 1]);")
		w.line("o[2 * i] = llmir_st(u * cs[i] - v * sn[i]);")
		w.line("o[2 * i + 1] = llmir_st(v * cs[i] + u * sn[i]);")
		w.close()
	} else {
		rowSweep(&w, half, vec, 1,
			func(_ int64, j string) string {
				return fmt.Sprintf("{ llmir_v u = llmir_vld(xr + %[1]s), v = llmir_vld(xr + %[1]s + %[2]d), c = llmir_vload(cs + %[1]s), s = llmir_vload(sn + %[1]s); llmir_vst(o + %[1]s, u * c - v * s); llmir_vst(o + %[1]s + %[2]d, v * c + u * s); }", j, half)
			},
			func(j string) string {
				return fmt.Sprintf("{ float u = llmir_ld(xr[%[1]s]), v = llmir_ld(xr[%[1]s + %[2]d]); o[%[1]s] = llmir_st(u * cs[%[1]s] - v * sn[%[1]s]); o[%[1]s + %[2]d] = llmir_st(v * cs[%[1]s] + u * sn[%[1]s]); }", j, half)
			})
	}
	if r < d {
		w.line("for (int64_t j = %d; j < %d; j++) o[j] = xr[j];", r, d)
	}
	w.close()
	w.close()
	w.line("return 0;")
	w.close()
	return w.b.String(), nil
}

// ropePow is x^e for x > 0, inline like the sincos: exp2(e·log2(x)) with log2 from
// the exponent bits and atanh series of the mantissa, exp2 from integer
// and fractional parts (Taylor). Relative error near 1e-15.
const ropePow = `static double llmir_pow(double x, double e) {
  uint64_t b; memcpy(&b, &x, 8);
  int64_t ex = (int64_t)((b >> 52) & 0x7ff) - 1023;
  b = (b & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
  double m; memcpy(&m, &b, 8);
  if (m > 1.4142135623730951) { m *= 0.5; ex++; }
  double z = (m - 1) / (m + 1), z2 = z * z, s = 0, zp = z;
  for (int k = 1; k < 40; k += 2) { s += zp / k; zp *= z2; }
  double l = (double)ex + 2 * s * 1.4426950408889634;
  double y = e * l, n = (double)(int64_t)y;
  if (n > y) n -= 1;
  double f = (y - n) * 0.6931471805599453, t = 1, q = 1;
  for (int k = 1; k < 25; k++) { t *= f / k; q += t; }
  int64_t ni = (int64_t)n + 1023;
  if (ni <= 0) return 0;
  uint64_t pb = (uint64_t)ni << 52; double p2; memcpy(&p2, &pb, 8);
  return q * p2;
}

`

// cDouble prints v as an exact C hex-float double constant.
func cDouble(v float64) string { return fmt.Sprintf("%x", v) }
