package kernels

import (
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"llmir/ir"
	"llmir/kernels/ref"
	"llmir/schedule"
)

// Attention is prefill attention, llmir.attention: out[b, i, h, :] =
// softmax(scale · q[b, i, h, :] · k[b, j, h/G, :]ᵀ) · v[b, j, h/G, :] over
// the keys j query i sees, with q [B, S, HQ, D], k [B, T, HKV, D], v [B,
// T, HKV, DV], out [B, S, HQ, DV] and G = HQ/HKV query heads per KV head
// (GQA). Query i sits at position i + T − S (a chunk of S new queries at the
// end of T keys, as kernels/ref.Attention defines it): causal keeps keys
// j ≤ position, a sliding window w keeps j > position − w, and a query that
// sees no key outputs zeros.
//
// It is a template kernel (Generator): flash-style tiling with an online
// softmax. One work item is a tile of BQ query positions times all G query
// heads of one KV head (R = BQ·G rows of scores), so every K/V tile is
// loaded once for the whole group; items over (batch, KV head, query tile)
// are spread over OpenMP threads, heaviest causal tiles first. K and V are
// packed once per call (Kᵀ and V in contiguous f32 tiles of BK keys), into
// scratch buffers that persist per thread across calls.
// For each tile of BK keys in the item's visible range (tiles the causal
// mask or the window hides entirely are never visited, and within a tile
// each MR-row block stops at the keys its last query sees): S = Q·Kᵀ with K
// packed transposed, so that vectors run over keys — an MR×NR register tile
// of accumulators fed by one broadcast of q per row and NR loads of Kᵀ per
// head_dim step, with no horizontal reduction (vectorizing over head_dim
// instead would end every dot product in one). The row maxima and exp2 then
// run on those same key vectors, VW rows at a time (their maxima and sums
// reduced across rows into one vector); running max and sum per row rescale the
// accumulator O (R × DV, kept in a per-thread buffer), and O += P·V is a
// second MR×NR register tile, vectorized over DV. Queries are pre-scaled by
// scale·log2(e) when packed, so the softmax is exp2 of a difference.
//
// B, S and T are dynamic dims (runtime extents from dims[]); heads and
// head dims are compile-time constants. Storage is f32 or bf16; arithmetic
// is f32.
type Attention struct {
	// Runtime extents: batch, query rows and keys. KVLen 0 means Seq:
	// self-attention over the prompt, whose k and v share the query's
	// dynamic seq dim.
	Batch, Seq, KVLen int64
	QHeads, KVHeads   int64
	HeadDim, VDim     int64 // VDim 0: HeadDim
	Causal            bool
	Window            int64   // sliding window in keys; 0: none
	Scale             float64 // 0: 1/√HeadDim
	DType             string  // storage of q, k, v and out: "f32" (default) or "bf16"
	// Buckets the kernel is compiled for (0: the runtime extent itself);
	// it is correct at every runtime extent up to them.
	BatchBucket, SeqBucket, KVBucket int64
	// IR is the module workload the kernel was made from (FromWorkload);
	// when set it is the kernel's Workload and names the dynamic dims.
	IR *ir.Workload
}

func init() { register("llmir.attention", attentionFromWorkload) }

// attentionFromWorkload reads q, k, v and the attributes of an
// llmir.attention workload, measured at its bucketed extents.
func attentionFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkArity(w, 3, 1); err != nil {
		return nil, err
	}
	q, k, v, o := w.Inputs[0], w.Inputs[1], w.Inputs[2], w.Output[0]
	for i, s := range []ir.TensorSig{q, k, v, o} {
		if len(s.Shape) != 4 {
			return nil, fmt.Errorf("%s has shape %v, want [batch, seq, heads, head_dim]", []string{"q", "k", "v", "out"}[i], s.Shape)
		}
		if s.DType != q.DType {
			return nil, fmt.Errorf("%s is %s and q is %s: want one element type", []string{"q", "k", "v", "out"}[i], s.DType, q.DType)
		}
	}
	if q.DType != "f32" && q.DType != "bf16" {
		return nil, unsupported("element type %s (the attention kernel stores f32 or bf16)", q.DType)
	}
	switch {
	case q.Shape[0] != k.Shape[0] || k.Shape[0] != v.Shape[0]:
		return nil, fmt.Errorf("batch of q %d, k %d, v %d differ", q.Shape[0], k.Shape[0], v.Shape[0])
	case q.Shape[3] != k.Shape[3]:
		return nil, fmt.Errorf("head_dim of q %d and k %d differ", q.Shape[3], k.Shape[3])
	case k.Shape[1] != v.Shape[1] || k.Shape[2] != v.Shape[2]:
		return nil, fmt.Errorf("k %v and v %v differ in kv_len or heads", k.Shape, v.Shape)
	case q.Shape[2]%k.Shape[2] != 0:
		return nil, fmt.Errorf("query heads %d are not a multiple of KV heads %d", q.Shape[2], k.Shape[2])
	case o.Shape[0] != q.Shape[0] || o.Shape[1] != q.Shape[1] || o.Shape[2] != q.Shape[2] || o.Shape[3] != v.Shape[3]:
		return nil, fmt.Errorf("out %v, want [%d, %d, %d, %d]", o.Shape, q.Shape[0], q.Shape[1], q.Shape[2], v.Shape[3])
	}
	a := Attention{
		Batch: q.Shape[0], Seq: q.Shape[1], KVLen: k.Shape[1],
		QHeads: q.Shape[2], KVHeads: k.Shape[2], HeadDim: q.Shape[3], VDim: v.Shape[3],
		DType: q.DType, IR: &w,
	}
	if sym(q, 1) != "" && sym(q, 1) == sym(k, 1) {
		a.KVLen = 0
	}
	var err error
	if a.Causal, err = boolAttr(w.Attrs, "causal"); err != nil {
		return nil, err
	}
	if a.Scale, err = floatAttr(w.Attrs, "scale"); err != nil {
		return nil, err
	}
	if a.Window, err = intAttr(w.Attrs, "sliding_window"); err != nil {
		return nil, err
	}
	if a.Window < 0 {
		return nil, fmt.Errorf("attribute sliding_window %d is negative", a.Window)
	}
	return a, nil
}

func sym(s ir.TensorSig, d int) string {
	if d < len(s.Sym) {
		return s.Sym[d]
	}
	return ""
}

// The attribute readers take the MLIR text a Workload keeps ("true",
// "4096 : i64", "8.8388346e-02 : f32", or a hex bit pattern "0x3DB504F3 :
// f32"); an absent attribute is the zero value.
func boolAttr(attrs map[string]string, name string) (bool, error) {
	s, ok := attrs[name]
	if !ok {
		return false, nil
	}
	switch s {
	case "true", "unit":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("attribute %s = %q is not a bool", name, s)
}

func intAttr(attrs map[string]string, name string) (int64, error) {
	s, ok := attrs[name]
	if !ok {
		return 0, nil
	}
	num, _, _ := strings.Cut(s, " : ")
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("attribute %s = %q is not an integer", name, s)
	}
	return n, nil
}

func floatAttr(attrs map[string]string, name string) (float64, error) {
	s, ok := attrs[name]
	if !ok {
		return 0, nil
	}
	num, typ, _ := strings.Cut(s, " : ")
	num, typ = strings.TrimSpace(num), strings.TrimSpace(typ)
	if strings.HasPrefix(num, "0x") || strings.HasPrefix(num, "0X") {
		bits, err := strconv.ParseUint(num[2:], 16, 64)
		if err != nil {
			return 0, fmt.Errorf("attribute %s = %q is not a float bit pattern", name, s)
		}
		switch typ {
		case "f64":
			return math.Float64frombits(bits), nil
		case "bf16":
			return float64(math.Float32frombits(uint32(bits) << 16)), nil
		case "f32", "":
			return float64(math.Float32frombits(uint32(bits))), nil
		}
		return 0, fmt.Errorf("attribute %s = %q: bit pattern of type %s", name, s, typ)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("attribute %s = %q is not a finite float", name, s)
	}
	return f, nil
}

// shared reports whether k and v have the query's seq dim (KVLen 0).
func (a Attention) shared() bool { return a.KVLen == 0 }

func (a Attention) kvLen() int64 {
	if a.shared() {
		return a.Seq
	}
	return a.KVLen
}

func (a Attention) vdim() int64 {
	if a.VDim == 0 {
		return a.HeadDim
	}
	return a.VDim
}

func (a Attention) group() int64 { return a.QHeads / max(a.KVHeads, 1) }

func (a Attention) scale() float64 {
	if a.Scale != 0 {
		return a.Scale
	}
	return 1 / math.Sqrt(float64(a.HeadDim))
}

func (a Attention) dtype() string {
	if a.DType == "" {
		return "f32"
	}
	return a.DType
}

// bucketOr is b when set (> 0), else n: a compiled-for bucket or block
// count that defaults to the runtime extent or a formula of it.
func bucketOr(b, n int64) int64 {
	if b > 0 {
		return b
	}
	return n
}

// dims are the three runtime extents' Def dims: batch, seq and kv_len,
// named as in the IR workload when there is one (a static IR extent is a
// static dim), else "batch", "seq" and "kv_len".
func (a Attention) dims() (batch, seq, kv schedule.Dim) {
	names := [3]string{"batch", "seq", "kv_len"}
	dynamic := [3]bool{true, true, true}
	if a.IR != nil && len(a.IR.Inputs) == 3 {
		for i, s := range []string{sym(a.IR.Inputs[0], 0), sym(a.IR.Inputs[0], 1), sym(a.IR.Inputs[1], 1)} {
			names[i], dynamic[i] = s, s != ""
		}
	}
	mk := func(i int, bucket int64) schedule.Dim {
		if !dynamic[i] {
			return schedule.Static(bucket)
		}
		return schedule.Dynamic(names[i], bucket)
	}
	batch, seq = mk(0, bucketOr(a.BatchBucket, a.Batch)), mk(1, bucketOr(a.SeqBucket, a.Seq))
	if a.shared() {
		return batch, seq, seq
	}
	return batch, seq, mk(2, bucketOr(a.KVBucket, a.KVLen))
}

// Name is like "attention/B=1,S=17,T=17,HQ=8,HKV=2,D=64/causal,window=0/f32".
func (a Attention) Name() string {
	mask := "full"
	if a.Causal {
		mask = "causal"
	}
	d := fmt.Sprintf("D=%d", a.HeadDim)
	if a.vdim() != a.HeadDim {
		d += fmt.Sprintf(",DV=%d", a.vdim())
	}
	return fmt.Sprintf("attention/B=%d,S=%d,T=%d,HQ=%d,HKV=%d,%s/%s,window=%d/%s",
		a.Batch, a.Seq, a.kvLen(), a.QHeads, a.KVHeads, d, mask, a.Window, a.dtype())
}

func (a Attention) check() error {
	batch, seq, kv := a.dims()
	switch {
	case a.Batch < 1 || a.Seq < 1 || a.kvLen() < 1 || a.KVLen < 0:
		return fmt.Errorf("attention: extents batch %d, seq %d, kv_len %d must be ≥ 1", a.Batch, a.Seq, a.KVLen)
	case a.Batch > batch.Extent || a.Seq > seq.Extent || a.kvLen() > kv.Extent:
		return fmt.Errorf("attention: extents %d×%d×%d exceed their buckets %d×%d×%d", a.Batch, a.Seq, a.kvLen(), batch.Extent, seq.Extent, kv.Extent)
	case a.KVHeads < 1 || a.QHeads < 1 || a.QHeads%a.KVHeads != 0:
		return fmt.Errorf("attention: query heads %d are not a multiple of KV heads %d", a.QHeads, a.KVHeads)
	case a.HeadDim < 1 || a.vdim() < 1 || a.HeadDim > 1024 || a.vdim() > 1024:
		return fmt.Errorf("attention: head dims %d, %d outside 1…1024", a.HeadDim, a.vdim())
	case a.Window < 0:
		return fmt.Errorf("attention: window %d is negative", a.Window)
	case a.dtype() != "f32" && a.dtype() != "bf16":
		return fmt.Errorf("attention: element type %s (want f32 or bf16)", a.DType)
	case a.Scale < 0 || math.IsNaN(a.Scale) || math.IsInf(a.Scale, 0):
		return fmt.Errorf("attention: scale %v", a.Scale)
	}
	return nil
}

// Def is the template definition: q, k, v, then out.
func (a Attention) Def() (*schedule.Def, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	dt, err := schedule.ParseDType(a.dtype())
	if err != nil {
		return nil, err
	}
	batch, seq, kv := a.dims()
	hq, hkv := schedule.Static(a.QHeads), schedule.Static(a.KVHeads)
	d, dv := schedule.Static(a.HeadDim), schedule.Static(a.vdim())
	q := schedule.Input("q", dt, batch, seq, hq, d)
	k := schedule.Input("k", dt, batch, kv, hkv, d)
	v := schedule.Input("v", dt, batch, kv, hkv, dv)
	out := schedule.Declare("out", dt, batch, seq, hq, dv)
	return schedule.NewTemplateDef("attention",
		"out[b,i,h,:] = softmax_j(scale·q[b,i,h,:]·k[b,j,h/G,:]) · v[b,j,h/G,:] over the keys j query i (at position i+T−S) sees",
		[]*schedule.Tensor{q, k, v}, out)
}

// Workload is llmir.attention at the bucketed extents (or the IR workload
// the kernel was made from).
func (a Attention) Workload() ir.Workload {
	if a.IR != nil {
		return *a.IR
	}
	batch, seq, kv := a.dims()
	dyn := map[string]int64{}
	sig := func(rows schedule.Dim, heads, dim int64) ir.TensorSig {
		s := ir.TensorSig{Shape: []int64{ir.Bucket(batch.Extent), ir.Bucket(rows.Extent), heads, dim}, Sym: []string{batch.Name, rows.Name, "", ""}, DType: a.dtype()}
		dyn[batch.Name], dyn[rows.Name] = s.Shape[0], s.Shape[1]
		return s
	}
	attrs := map[string]string{"causal": ir.BoolAttr(a.Causal).String()}
	if a.Scale != 0 {
		attrs["scale"] = ir.F32Attr(a.Scale).String()
	}
	if a.Window > 0 {
		attrs["sliding_window"] = ir.I64Attr(a.Window).String()
	}
	return ir.Workload{
		Group:   []string{"llmir.attention"},
		Inputs:  []ir.TensorSig{sig(seq, a.QHeads, a.HeadDim), sig(kv, a.KVHeads, a.HeadDim), sig(kv, a.KVHeads, a.vdim())},
		Output:  []ir.TensorSig{sig(seq, a.QHeads, a.vdim())},
		Attrs:   attrs,
		Dynamic: dyn,
	}
}

// Dims are the runtime extents of the Def's dynamic dims, in Def order.
func (a Attention) Dims() []int64 {
	def, err := a.Def()
	if err != nil {
		return nil
	}
	batch, seq, kv := a.dims()
	var out []int64
	for _, d := range def.Dims {
		switch d.Name {
		case batch.Name:
			out = append(out, a.Batch)
		case seq.Name:
			out = append(out, a.Seq)
		case kv.Name:
			out = append(out, a.kvLen())
		}
	}
	return out
}

func (a Attention) opts() ref.AttnOptions {
	return ref.AttnOptions{Causal: a.Causal, SlidingWindow: int(a.Window), Scale: a.scale()}
}

// pairs counts the (query, key) pairs the mask keeps, per batch and head.
func (a Attention) pairs() int64 {
	t := a.kvLen()
	var n int64
	for i := range a.Seq {
		p := i + t - a.Seq
		lo, hi := int64(0), t
		if a.Causal {
			hi = min(hi, p+1)
		}
		if a.Window > 0 {
			lo = max(lo, p-a.Window+1)
		}
		n += max(hi-lo, 0)
	}
	return n
}

// FLOPs counts the multiply-adds of Q·Kᵀ and P·V over the pairs the mask
// keeps (causal attention does about half of full attention's work).
func (a Attention) FLOPs() float64 {
	return float64(a.Batch*a.QHeads*a.pairs()) * 2 * float64(a.HeadDim+a.vdim())
}

// Bytes is one read of q, k, v and one write of out.
func (a Attention) Bytes() float64 {
	es := float64(4)
	if a.dtype() == "bf16" {
		es = 2
	}
	t := a.kvLen()
	return es * float64(a.Batch*(a.Seq*a.QHeads*(a.HeadDim+a.vdim())+t*a.KVHeads*(a.HeadDim+a.vdim())))
}

// Reference is kernels/ref.Attention (float64 accumulation), run per KV
// head on all cores: the benchmark's shapes are tens of GFLOP.
func (a Attention) Reference(in [][]float64) [][]float64 {
	b, s, t := int(a.Batch), int(a.Seq), int(a.kvLen())
	hq, hkv, d, dv, g := int(a.QHeads), int(a.KVHeads), int(a.HeadDim), int(a.vdim()), int(a.group())
	out := make([]float64, b*s*hq*dv)
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for kh := range hkv {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			q := make([]float32, b*s*g*d)
			k := make([]float32, b*t*d)
			v := make([]float32, b*t*dv)
			for bi := range b {
				for i := range s {
					for h := range g {
						src := in[0][((bi*s+i)*hq+kh*g+h)*d:][:d]
						dst := q[((bi*s+i)*g+h)*d:][:d]
						for e, x := range src {
							dst[e] = float32(x)
						}
					}
				}
				for j := range t {
					for e := range d {
						k[(bi*t+j)*d+e] = float32(in[1][((bi*t+j)*hkv+kh)*d+e])
					}
					for e := range dv {
						v[(bi*t+j)*dv+e] = float32(in[2][((bi*t+j)*hkv+kh)*dv+e])
					}
				}
			}
			o, err := ref.Attention(q, k, v, ref.AttnDims{Batch: b, Seq: s, KVLen: t, QHeads: g, KVHeads: 1, HeadDim: d, VDim: dv}, a.opts())
			if err != nil {
				panic(fmt.Sprintf("attention reference: %v", err)) // shapes were checked by Def
			}
			for bi := range b {
				for i := range s {
					for h := range g {
						src := o[((bi*s+i)*g+h)*dv:][:dv]
						dst := out[((bi*s+i)*hq+kh*g+h)*dv:][:dv]
						for e, x := range src {
							dst[e] = float64(x)
						}
					}
				}
			}
		})
	}
	wg.Wait()
	return [][]float64{out}
}

// Knobs is the design space. BQ query positions per tile (R =
// BQ·G score rows); BK keys per tile; VW vector lanes; MR rows × NR vectors
// is the register tile of both Q·Kᵀ and P·V (MR·NR accumulators, so MR 8 ×
// NR 4 spills and measures slow: the knobs are sampled independently).
// BQ ≥ 8 and MR ≤ 8 are powers of two, so MR always divides R.
func (a Attention) Knobs(hw Hardware) Knobs {
	var vw []int64
	for _, w := range []int64{4, 8, 16} {
		if w <= max(hw.lanes(), 4) {
			vw = append(vw, w)
		}
	}
	return Knobs{
		{"BQ", []int64{8, 16, 32, 64}},
		{"BK", []int64{16, 32, 64, 128, 256}},
		{"VW", vw},
		{"MR", []int64{1, 2, 4, 8}},
		{"NR", []int64{1, 2, 4}},
	}
}

// Space samples every knob.
func (a Attention) Space(s *schedule.Schedule, hw Hardware) error {
	return a.Knobs(hw).Sample(s)
}

// Default chooses the knobs by rule: the widest vector; about 64 score rows
// per tile (BQ = 64/G, at least 8), enough rows to amortize each K/V tile's
// trip through the cache while Q, O, S and the K/V tile (~150 KiB at D
// 128) stay in L2;
// 64 keys per tile, so a Kᵀ tile of D 128 (32 KiB) stays in L1 across the
// row blocks; an 8×2 register tile (16 accumulators, 2 loads and 8
// broadcasts per 16 FMAs), which measured 10–15% above 4×4 at Llama-3-8B's
// 512-token prefill.
func (a Attention) Default(s *schedule.Schedule, hw Hardware) error {
	ks := a.Knobs(hw)
	bq := int64(8)
	for bq < 64 && bq*a.group() < 64 {
		bq *= 2
	}
	vw := ks[2].Values[len(ks[2].Values)-1]
	return ks.Choose(s, map[string]int64{"BQ": bq, "BK": 64, "VW": vw, "MR": 8, "NR": 2})
}

// EmitC writes the kernel for the knob values recorded in s: a fixed C
// skeleton (packing, masks, online softmax, OpenMP over work items) around
// the two register tiles, which are unrolled here into named vector
// accumulators so that gcc keeps them in registers.
func (a Attention) EmitC(s *schedule.Schedule, hw Hardware, entry string) (string, error) {
	if err := a.check(); err != nil {
		return "", err
	}
	kv, err := a.Knobs(hw).Read(s)
	if err != nil {
		return "", fmt.Errorf("attention: %w", err)
	}
	bq, bk, vw, mr, nr := kv["BQ"], kv["BK"], kv["VW"], kv["MR"], kv["NR"]
	if bk%vw != 0 || (bq*a.group())%mr != 0 {
		return "", fmt.Errorf("attention: BK %d is not a multiple of VW %d or MR %d does not divide BQ·G %d", bk, vw, mr, bq*a.group())
	}
	def, err := a.Def()
	if err != nil {
		return "", err
	}
	batch, seq, kvd := a.dims()
	extent := func(d schedule.Dim) string {
		if !d.Dynamic {
			return strconv.FormatInt(d.Extent, 10)
		}
		return fmt.Sprintf("dims[%d]", def.DimIndex(d.Name))
	}
	dv := a.vdim()
	dvp := (dv + vw - 1) / vw * vw
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("// Generated by llmir kernels.Attention (%s). Do not edit.\n", a.Name())
	p("// Knobs: BQ=%d BK=%d VW=%d MR=%d NR=%d.\n", bq, bk, vw, mr, nr)
	p("#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\n#include <math.h>\n\n")
	for _, c := range []struct {
		name string
		v    int64
	}{{"D", a.HeadDim}, {"DV", dv}, {"DVP", dvp}, {"HQ", a.QHeads}, {"HKV", a.KVHeads}, {"G", a.group()},
		{"BQ", bq}, {"BK", bk}, {"R", bq * a.group()}, {"VW", vw}, {"MR", mr}, {"CAUSAL", b2i(a.Causal)}, {"WINDOW", a.Window}} {
		p("#define %s %dL\n", c.name, c.v)
	}
	p("#define QSCALE %sf\n", strconv.FormatFloat(float64(float32(a.scale()*math.Log2E)), 'e', 9, 32))
	if a.dtype() == "bf16" {
		p("typedef uint16_t elem_t;\n")
		p("static inline float ld(elem_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }\n")
		p("static inline elem_t st(float f) { uint32_t u; memcpy(&u, &f, 4); if ((u & 0x7fffffffu) > 0x7f800000u) return (elem_t)((u >> 16) | 0x40u); u += 0x7fffu + ((u >> 16) & 1u); return (elem_t)(u >> 16); }\n")
	} else {
		p("typedef float elem_t;\nstatic inline float ld(elem_t x) { return x; }\nstatic inline elem_t st(float x) { return x; }\n")
	}
	b.WriteString(attentionPrelude)
	// An initializer, not (vf){0} + x: without -ffast-math that addition
	// is real (it turns −0 into +0) and costs an add before every broadcast.
	p("static inline vf splat(float x) { return (vf){%s}; }\n", strings.TrimSuffix(strings.Repeat("x, ", int(vw)), ", "))
	b.WriteString(attentionHelpers)
	b.WriteString(reduceLanesC(vw, "rows_max", func(x, y string) string { return "vmax2(" + x + ", " + y + ")" }))
	b.WriteString(reduceLanesC(vw, "rows_sum", func(x, y string) string { return x + " + " + y }))
	a.emitScores(&b, bk, vw, mr, nr)
	a.emitPV(&b, dvp, vw, mr, nr)
	b.WriteString(attentionBody)
	p("\nint %s(void *const *bufs, const int64_t *dims) {\n", entry)
	p("  (void)dims;\n")
	p("  return attention((const elem_t *)bufs[0], (const elem_t *)bufs[1], (const elem_t *)bufs[2], (elem_t *)bufs[3], %s, %s, %s);\n}\n",
		extent(batch), extent(seq), extent(kvd))
	return b.String(), nil
}

func b2i(v bool) int64 {
	if v {
		return 1
	}
	return 0
}

// emitScores writes S[rows][BK] = Qp[rows][D] · KT[D][BK]: row blocks of
// MR, key vectors in blocks of NR (a tail block takes the rest).
// Key columns at or past a row block's block_keys are hidden from all its
// rows (the tile's last keys, the causal diagonal), so they are not
// computed: the mask sets them to −∞ and p·V skips them.
func (a Attention) emitScores(b *strings.Builder, bk, vw, mr, nr int64) {
	emitTiled(b, "\n// S = Q·Kᵀ over one key tile, an MR×NR tile of vector accumulators.\n"+
		"static void scores(const float *restrict Qp, const float *restrict KT, float *restrict Sb, int64_t rows, int64_t nk, int64_t base) {\n",
		bk/vw, vw, mr, nr, true, scoreTile)
}

// emitTiled writes a function (header: its comment and opening line) that
// loops over row blocks of MR and, in each, over nv vectors of vw lanes in
// blocks of nr, then one tail block of the rest: tile writes one block of
// mr rows × its nr vectors at column c. With keyCols the columns are keys
// and blocks starting at or past the row block's block_keys are skipped.
func emitTiled(b *strings.Builder, header string, nv, vw, mr, nr int64, keyCols bool, tile func(b *strings.Builder, ind string, mr, nr, vw int64)) {
	b.WriteString(header)
	b.WriteString("  for (int64_t r = 0; r < rows; r += MR) {\n")
	b.WriteString("    const int64_t lim = block_keys(r, nk, base);\n")
	main := nv / nr * nr
	cond := ""
	if keyCols {
		cond = " && c < lim"
	}
	if main > 0 {
		fmt.Fprintf(b, "    for (int64_t c = 0; c < %d%s; c += %d) {\n", main*vw, cond, nr*vw)
		tile(b, "      ", mr, nr, vw)
		b.WriteString("    }\n")
	}
	if tail := nv - main; tail > 0 {
		if keyCols {
			fmt.Fprintf(b, "    if (%d < lim) {\n      const int64_t c = %d;\n", main*vw, main*vw)
		} else {
			fmt.Fprintf(b, "    {\n      const int64_t c = %d;\n", main*vw)
		}
		tile(b, "      ", mr, tail, vw)
		b.WriteString("    }\n")
	}
	b.WriteString("  }\n}\n")
}

func scoreTile(b *strings.Builder, ind string, mr, nr, vw int64) {
	for m := range mr {
		b.WriteString(ind + "vf")
		for n := range nr {
			sep := ","
			if n == nr-1 {
				sep = ";"
			}
			fmt.Fprintf(b, " s%d_%d = splat(0.0f)%s", m, n, sep)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(b, "%sconst float *qp = Qp + r * D;\n%sconst float *kp = KT + c;\n", ind, ind)
	fmt.Fprintf(b, "%sfor (int64_t d = 0; d < D; d++) {\n", ind)
	for n := range nr {
		fmt.Fprintf(b, "%s  const vf k%d = vload(kp + d * BK + %d);\n", ind, n, n*vw)
	}
	for m := range mr {
		fmt.Fprintf(b, "%s  { const vf q = splat(qp[%d * D + d]);", ind, m)
		for n := range nr {
			fmt.Fprintf(b, " s%d_%d += q * k%d;", m, n, n)
		}
		b.WriteString(" }\n")
	}
	b.WriteString(ind + "}\n")
	for m := range mr {
		for n := range nr {
			fmt.Fprintf(b, "%svstore(Sb + (r + %d) * BK + c + %d, s%d_%d);\n", ind, m, n*vw, m, n)
		}
	}
}

// emitPV writes Ob[rows][DVP] += P[rows][nk] · Vp[nk][DVP]: row blocks of
// MR, value vectors in blocks of NR (a tail block takes the rest).
func (a Attention) emitPV(b *strings.Builder, dvp, vw, mr, nr int64) {
	emitTiled(b, "\n// O += P·V over one key tile, an MR×NR tile of vector accumulators.\n"+
		"static void pv(const float *restrict Pb, const float *restrict Vp, float *restrict Ob, int64_t rows, int64_t nk, int64_t base) {\n",
		dvp/vw, vw, mr, nr, false, pvTile)
}

func pvTile(b *strings.Builder, ind string, mr, nr, vw int64) {
	for m := range mr {
		for n := range nr {
			fmt.Fprintf(b, "%svf o%d_%d = vload(Ob + (r + %d) * DVP + c + %d);\n", ind, m, n, m, n*vw)
		}
	}
	fmt.Fprintf(b, "%sfor (int64_t j = 0; j < lim; j++) {\n", ind)
	for n := range nr {
		fmt.Fprintf(b, "%s  const vf v%d = vload(Vp + j * DVP + c + %d);\n", ind, n, n*vw)
	}
	for m := range mr {
		fmt.Fprintf(b, "%s  { const vf p = splat(Pb[(r + %d) * BK + j]);", ind, m)
		for n := range nr {
			fmt.Fprintf(b, " o%d_%d += p * v%d;", m, n, n)
		}
		b.WriteString(" }\n")
	}
	b.WriteString(ind + "}\n")
	for m := range mr {
		for n := range nr {
			fmt.Fprintf(b, "%svstore(Ob + (r + %d) * DVP + c + %d, o%d_%d);\n", ind, m, n*vw, m, n)
		}
	}
}

// attentionPrelude is the vector helpers. vexp2 is 2^x for x ≤ 0: x is
// split into n + f with n = round(x) (the 1.5·2^23 trick, exact without
// -ffast-math) and |f| ≤ ½, 2^f is a degree-7 Taylor polynomial of e^(f ln 2)
// (relative error ~1e-9, below f32 rounding), and 2^n goes straight into
// the exponent bits; x is clamped at −126 so 2^n stays normal, and callers
// zero the lanes of masked (−∞) scores.
const attentionPrelude = `
typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
static inline vf vload(const float *p) { vf v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { __builtin_memcpy(p, &v, sizeof v); }
`

// attentionHelpers need splat.
const attentionHelpers = `static inline vf vsel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
static inline vf vmax2(vf a, vf b) { return vsel(a > b, a, b); }
// Pairwise trees: log2(VW) dependent steps per row and key tile, not VW.
static inline float hmax(vf v) {
  float t[VW];
  __builtin_memcpy(t, &v, sizeof v);
  for (int s = VW / 2; s > 0; s /= 2)
    for (int i = 0; i < s; i++) t[i] = t[i + s] > t[i] ? t[i + s] : t[i];
  return t[0];
}
static inline float hsum(vf v) {
  float t[VW];
  __builtin_memcpy(t, &v, sizeof v);
  for (int s = VW / 2; s > 0; s /= 2)
    for (int i = 0; i < s; i++) t[i] += t[i + s];
  return t[0];
}
static inline vf vexp2(vf x) {
  x = vsel(x < splat(-126.0f), splat(-126.0f), x);
  const vf magic = splat(12582912.0f);
  const vf t = x + magic;
  const vf f = x - (t - magic);
  vf p = splat(1.5252734e-5f);
  p = p * f + 1.5403530e-4f;
  p = p * f + 1.3333558e-3f;
  p = p * f + 9.6181291e-3f;
  p = p * f + 5.5504109e-2f;
  p = p * f + 2.4022651e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  const vi e = ((vi)t - (vi)magic + 127) << 23;
  return p * (vf)e;
}
// block_keys is how many leading keys of a tile the row block at r may see:
// all nk, or with the causal mask up to the block's last query position
// (base = i0 + off + 1 − kt, rows r = query·G + head).
static inline int64_t block_keys(int64_t r, int64_t nk, int64_t base) {
  const int64_t h = CAUSAL ? (r + MR - 1) / G + base : nk;
  return h < nk ? h : nk;
}
// row_max is the lane-wise maximum of a score row's BK/VW vectors.
static inline vf row_max(const float *srow) {
  vf vm = vload(srow);
  for (int64_t c = VW; c < BK; c += VW) vm = vmax2(vload(srow + c), vm);
  return vm;
}
// row_exp replaces a score row by 2^(s − m), masked (−∞) scores by 0, and
// returns the lane-wise sum of the weights.
static inline vf row_exp(float *srow, float m) {
  const vf mv = splat(m);
  vf sum = splat(0.0f);
  for (int64_t c = 0; c < BK; c += VW) {
    const vf x = vload(srow + c);
    const vf e = vsel(x > splat(-INFINITY), vexp2(x - mv), splat(0.0f));
    vstore(srow + c, e);
    sum += e;
  }
  return sum;
}
// rescale_row multiplies a row of O by the online softmax's factor.
static inline void rescale_row(float *o, float alpha) {
  const vf a = splat(alpha);
  for (int64_t c = 0; c < DVP; c += VW) vstore(o + c, vload(o + c) * a);
}
// Scratch buffers persist per thread (OpenMP keeps its workers) across
// calls: a fresh multi-megabyte allocation per call comes back from the
// kernel as zeroed pages, one fault per 4 KiB touched, which profiled as a
// quarter of a 512-token prefill.
static _Thread_local float *scratch_buf[8];
static _Thread_local size_t scratch_cap[8];
static float *scratch(int slot, int64_t n) {
  const size_t bytes = ((size_t)n * 4 + 63) / 64 * 64;
  if (scratch_cap[slot] < bytes) {
    free(scratch_buf[slot]);
    scratch_buf[slot] = aligned_alloc(64, bytes);
    scratch_cap[slot] = scratch_buf[slot] ? bytes : 0;
  }
  return scratch_buf[slot];
}
`

// attentionBody is one work item (a query tile of one KV head's group),
// the packing of K and V, and the OpenMP loops.
const attentionBody = `
// One work item: query positions i0 … i0+nq−1 of batch b, all G query
// heads of KV head kh, as rows r = query·G + head. KT is the head's
// packed keys, Vh its packed values.
static void attend_tile(const elem_t *restrict q, elem_t *restrict out, const float *restrict KT, const float *restrict Vh,
                        int64_t b, int64_t kh, int64_t qt, int64_t ns, int64_t nt,
                        float *restrict Qp, float *restrict Ob, float *restrict Sb, float *restrict mrow, float *restrict lrow) {
  const int64_t off = nt - ns;
  const int64_t i0 = qt * BQ, nq = ns - i0 < BQ ? ns - i0 : BQ;
  const int64_t rv = nq * G, rows = (rv + MR - 1) / MR * MR;
  for (int64_t r = 0; r < rows; r++) {
    float *dst = Qp + r * D;
    if (r < rv) {
      const elem_t *src = q + ((b * ns + i0 + r / G) * HQ + kh * G + r % G) * D;
      for (int64_t d = 0; d < D; d++) dst[d] = ld(src[d]) * QSCALE;
    } else {
      memset(dst, 0, D * sizeof(float));
    }
    mrow[r] = -INFINITY;
    lrow[r] = 0.0f;
    memset(Ob + r * DVP, 0, DVP * sizeof(float));
  }
  // Keys outside [jlo, jhi) are hidden from every query of the tile.
  const int64_t p0 = i0 + off, p1 = i0 + nq - 1 + off;
  int64_t jlo = 0, jhi = nt;
  if (CAUSAL && p1 + 1 < jhi) jhi = p1 + 1;
  if (WINDOW > 0 && p0 - WINDOW + 1 > jlo) jlo = p0 - WINDOW + 1;
  for (int64_t kt = jlo / BK * BK; kt < jhi; kt += BK) {
    const int64_t nk = jhi - kt < BK ? jhi - kt : BK, base = i0 + off + 1 - kt;
    scores(Qp, KT + kt * D, Sb, rows, nk, base);
    // A tile every row sees whole needs no mask.
    const int full = nk == BK && (!CAUSAL || kt + BK - 1 <= p0) && (WINDOW <= 0 || kt >= p1 - WINDOW + 1);
    for (int64_t r = 0; r < rv && !full; r++) {
      float *srow = Sb + r * BK;
      const int64_t p = i0 + r / G + off;
      int64_t lo = 0, hi = nk;
      if (CAUSAL && p + 1 - kt < hi) hi = p + 1 - kt;
      if (WINDOW > 0 && p - WINDOW + 1 - kt > lo) lo = p - WINDOW + 1 - kt;
      for (int64_t j = 0; j < lo && j < BK; j++) srow[j] = -INFINITY;
      for (int64_t j = hi > 0 ? hi : 0; j < BK; j++) srow[j] = -INFINITY;
    }
    // The online softmax VW rows at a time: their maxima and sums are
    // reduced across rows (rows_max, rows_sum) into one vector each, and
    // their rescale factors are one vexp2; one row at a time, each row's
    // reductions and exp2 were a chain of dependent steps that cost as much
    // as a fifth of the tile.
    int64_t r = 0;
    for (; r + VW <= rv; r += VW) {
      vf part[VW];
      for (int64_t i = 0; i < VW; i++) part[i] = row_max(Sb + (r + i) * BK);
      const vf mold = vload(mrow + r), mnew = vmax2(rows_max(part), mold);
      const vf alpha = vsel(mold == mnew, splat(1.0f), vsel(mold == splat(-INFINITY), splat(0.0f), vexp2(mold - mnew)));
      vstore(mrow + r, mnew);
      for (int64_t i = 0; i < VW; i++) {
        float *srow = Sb + (r + i) * BK;
        if (mnew[i] == -INFINITY) {
          memset(srow, 0, BK * sizeof(float));
          part[i] = splat(0.0f);
        } else {
          part[i] = row_exp(srow, mnew[i]);
        }
      }
      vstore(lrow + r, vload(lrow + r) * alpha + rows_sum(part));
      for (int64_t i = 0; i < VW; i++)
        if (alpha[i] != 1.0f) rescale_row(Ob + (r + i) * DVP, alpha[i]);
    }
    for (; r < rv; r++) {
      float *srow = Sb + r * BK;
      const float mx = hmax(row_max(srow)), mnew = mrow[r] > mx ? mrow[r] : mx;
      if (mnew == -INFINITY) {
        memset(srow, 0, BK * sizeof(float));
        continue;
      }
      // The scalar exp2 is a lane of vexp2, so row scaling rounds as the vector path does.
      const float alpha = mrow[r] == mnew ? 1.0f : mrow[r] == -INFINITY ? 0.0f : vexp2(splat(mrow[r] - mnew))[0];
      mrow[r] = mnew;
      lrow[r] = lrow[r] * alpha + hsum(row_exp(srow, mnew));
      if (alpha != 1.0f) rescale_row(Ob + r * DVP, alpha);
    }
    for (int64_t r = rv; r < rows; r++) memset(Sb + r * BK, 0, BK * sizeof(float));
    pv(Sb, Vh + kt * DVP, Ob, rows, nk, base);
  }
  for (int64_t r = 0; r < rv; r++) {
    const float inv = lrow[r] > 0.0f ? 1.0f / lrow[r] : 0.0f;
    elem_t *dst = out + ((b * ns + i0 + r / G) * HQ + kh * G + r % G) * DV;
    for (int64_t e = 0; e < DV; e++) dst[e] = st(Ob[r * DVP + e] * inv);
  }
}

// K and V are packed once per call, not once per query tile (a prefill's
// every query tile reads the same keys): per head, tiles of BK keys, each
// contiguous — Kᵀ as [D][BK], V as [BK][DVP] in f32 — so that the register
// tiles read them with unit stride and no cache-set aliasing (rows of k
// and v in place are HKV·D elements apart, 4 KiB for Llama-3-8B). Heads
// are padded to TP keys (a multiple of BK) with zeros. Work items over (batch, KV head, query tile) then run the heaviest
// causal tiles (the last queries) first, so dynamic scheduling ends
// balanced.
static int attention(const elem_t *q, const elem_t *k, const elem_t *v, elem_t *out, int64_t nb, int64_t ns, int64_t nt) {
  if (nb < 1 || ns < 1 || nt < 1) return nb < 0 || ns < 0 || nt < 0;
  const int64_t nqt = (ns + BQ - 1) / BQ, items = nb * HKV * nqt;
  const int64_t TP = (nt + BK - 1) / BK * BK, ktiles = TP / BK;
  float *KT = scratch(0, nb * HKV * TP * D), *Vall = scratch(1, nb * HKV * TP * DVP);
  if (!KT || !Vall) return 1;
  int failed = 0;
  #pragma omp parallel
  {
    #pragma omp for schedule(static)
    for (int64_t it = 0; it < nb * HKV * ktiles; it++) {
      const int64_t bh = it / ktiles, kt = it % ktiles * BK, b = bh / HKV, kh = bh % HKV;
      float *kd = KT + (bh * TP + kt) * D;
      for (int64_t j = 0; j < BK; j++) {
        const elem_t *ks = k + ((b * nt + kt + j) * HKV + kh) * D;
        if (kt + j < nt) for (int64_t d = 0; d < D; d++) kd[d * BK + j] = ld(ks[d]);
        else for (int64_t d = 0; d < D; d++) kd[d * BK + j] = 0.0f;
      }
      float *vd = Vall + (bh * TP + kt) * DVP;
      for (int64_t j = 0; j < BK; j++) {
        const elem_t *vs = v + ((b * nt + kt + j) * HKV + kh) * DV;
        for (int64_t e = 0; e < DVP; e++) vd[j * DVP + e] = kt + j < nt && e < DV ? ld(vs[e]) : 0.0f;
      }
    }
    float *Qp = scratch(2, R * D), *Ob = scratch(3, R * DVP), *Sb = scratch(4, R * BK), *mrow = scratch(5, R), *lrow = scratch(6, R);
    const int ok = Qp && Ob && Sb && mrow && lrow;
    #pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; it++) {
      if (!ok) {
        #pragma omp atomic write
        failed = 1;
        continue;
      }
      const int64_t qt = nqt - 1 - it / (nb * HKV), bh = it % (nb * HKV), b = bh / HKV, kh = bh % HKV;
      attend_tile(q, out, KT + bh * TP * D, Vall + bh * TP * DVP, b, kh, qt, ns, nt, Qp, Ob, Sb, mrow, lrow);
    }
  }
  return failed;
}
`
