package hf

import (
	"embed"
	"fmt"
	"math"
	"sort"
	"strings"

	"llmir/ir"
)

var dtypes = map[string]ir.ElemType{"bfloat16": ir.BF16, "float16": ir.F16, "float32": ir.F32}

// Options are the choices an import makes that config.json does not.
type Options struct {
	BlockSize      int64 // KV cache block size in tokens (default 16)
	TensorParallel int64 // shard heads and MLP over this many ranks (default 1)
	PrefillBatch   int64 // typical dims recorded for llmir tasks
	PrefillSeq     int64
	DecodeBatch    int64
	DecodeContext  int64 // typical context length of a decode step
	// DType overrides the config's torch_dtype for every tensor ("f32",
	// "bf16" or "f16"; "" keeps the checkpoint's): tuning a bf16
	// checkpoint's shapes with f32 kernels on a CPU, for example.
	DType string
}

// dtypeNames maps the --dtype spellings to torch_dtype values.
var dtypeNames = map[string]string{"f32": "float32", "bf16": "bfloat16", "f16": "float16"}

func (o *Options) defaults(c *Config) {
	if o.BlockSize == 0 {
		o.BlockSize = 16
	}
	if o.TensorParallel == 0 {
		o.TensorParallel = 1
	}
	if o.PrefillBatch == 0 {
		o.PrefillBatch = 1
	}
	if o.PrefillSeq == 0 {
		o.PrefillSeq = 512
	}
	if o.DecodeBatch == 0 {
		o.DecodeBatch = 1
	}
	if o.DecodeContext == 0 {
		o.DecodeContext = min(c.MaxPositionEmbeddings, 4096)
	}
}

// Import builds the LLMIR module of a model: `prefill` (symbolic batch ×
// seq, causal attention over the prompt, K and V appended to the paged
// cache) and `decode` (symbolic batch, one token per sequence, attention
// over the paged cache). Weights are llmir.param ops named as in the
// checkpoint.
func Import(c *Config, name string, opts Options) (*ir.Module, error) {
	if opts.DType != "" {
		td, ok := dtypeNames[opts.DType]
		if !ok {
			return nil, fmt.Errorf("dtype %q: want f32, bf16 or f16", opts.DType)
		}
		cc := *c
		cc.TorchDtype = td
		c = &cc
	}
	opts.defaults(c)
	tp := opts.TensorParallel
	if opts.BlockSize < 1 || opts.BlockSize > 1024 {
		return nil, fmt.Errorf("block size %d out of range 1…1024", opts.BlockSize)
	}
	for _, d := range []struct {
		what string
		n    int64
	}{{"num_attention_heads", c.NumAttentionHeads}, {"num_key_value_heads", c.NumKeyValueHeads}, {"intermediate_size", c.IntermediateSize}} {
		if tp < 1 || d.n%tp != 0 {
			return nil, fmt.Errorf("tensor parallel %d does not divide %s %d", tp, d.what, d.n)
		}
	}
	m := &ir.Module{Name: symbolName(name)}
	m.Attrs.Set("llmir.model_type", ir.StrAttr(c.ModelType))
	if tp > 1 {
		m.Attrs.Set("llmir.tensor_parallel", ir.I64Attr(tp))
	}
	for _, phase := range []string{"prefill", "decode"} {
		f, err := buildFunc(c, opts, phase)
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", phase, err)
		}
		m.Funcs = append(m.Funcs, f)
	}
	if err := ir.Verify(m); err != nil {
		return nil, fmt.Errorf("imported module does not verify: %w", err)
	}
	return m, nil
}

func symbolName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 || (s[0] >= '0' && s[0] <= '9') {
		return "m_" + b.String()
	}
	return b.String()
}

// modelBuilder appends one function's ops; the first error sticks.
type modelBuilder struct {
	b   ir.Builder
	c   *Config
	t   ir.ElemType
	err error
}

func (mb *modelBuilder) op(name string, attrs ir.Attrs, operands ...*ir.Value) *ir.Value {
	if mb.err != nil {
		return nil
	}
	op, err := mb.b.Op(name, attrs, operands...)
	if err != nil {
		mb.err = err
		return nil
	}
	return op.Result()
}

func (mb *modelBuilder) declared(name string, attrs ir.Attrs, t ir.Type, operands ...*ir.Value) *ir.Value {
	if mb.err != nil {
		return nil
	}
	op, err := mb.b.Declared(name, attrs, t, operands...)
	if err != nil {
		mb.err = err
		return nil
	}
	return op.Result()
}

func (mb *modelBuilder) param(name string, dims ...int64) *ir.Value {
	shape := make([]ir.Dim, len(dims))
	for i, d := range dims {
		shape[i] = ir.S(d)
	}
	return mb.declared("llmir.param", ir.Attrs{{Name: "name", Value: ir.StrAttr(name)}}, ir.Tensor(mb.t, shape...))
}

func (mb *modelBuilder) reshape(x *ir.Value, dims ...ir.Dim) *ir.Value {
	return mb.declared("llmir.reshape", nil, ir.Tensor(mb.t, dims...), x)
}

func (mb *modelBuilder) linear(x *ir.Value, prefix string, out, in int64, bias bool) *ir.Value {
	w := mb.param(prefix+".weight", out, in)
	if bias {
		return mb.op("llmir.linear", nil, x, w, mb.param(prefix+".bias", out))
	}
	return mb.op("llmir.linear", nil, x, w)
}

func (mb *modelBuilder) rmsNorm(x *ir.Value, name string) *ir.Value {
	w := mb.param(name, mb.c.HiddenSize)
	return mb.op("llmir.rms_norm", ir.Attrs{{Name: "eps", Value: ir.F32Attr(mb.c.RMSNormEps)}}, x, w)
}

func (mb *modelBuilder) ropeAttrs() ir.Attrs {
	var as ir.Attrs
	as.Set("theta", ir.F32Attr(mb.c.RopeTheta))
	as.Set("style", ir.StrAttr("neox"))
	if rs := mb.c.RopeScaling; rs != nil {
		var d ir.Attrs
		d.Set("type", ir.StrAttr(rs.Type))
		d.Set("factor", ir.F32Attr(rs.Factor))
		if rs.Type == "llama3" {
			d.Set("low_freq_factor", ir.F32Attr(rs.LowFreqFactor))
			d.Set("high_freq_factor", ir.F32Attr(rs.HighFreqFactor))
		}
		if rs.OriginalMaxPositionEmbeddings > 0 {
			d.Set("original_max_position_embeddings", ir.I64Attr(rs.OriginalMaxPositionEmbeddings))
		}
		as.Set("scaling", ir.DictAttr(d))
	}
	return as
}

func (mb *modelBuilder) activation(x *ir.Value) *ir.Value {
	switch mb.c.HiddenAct {
	case "gelu":
		return mb.op("llmir.gelu", ir.Attrs{{Name: "approximate", Value: ir.StrAttr("none")}}, x)
	case "gelu_pytorch_tanh":
		return mb.op("llmir.gelu", ir.Attrs{{Name: "approximate", Value: ir.StrAttr("tanh")}}, x)
	}
	return mb.op("llmir.silu", nil, x)
}

func buildFunc(c *Config, opts Options, phase string) (*ir.Func, error) {
	t := dtypes[c.TorchDtype]
	tp := opts.TensorParallel
	hq, hkv, d := c.NumAttentionHeads/tp, c.NumKeyValueHeads/tp, c.HeadDim
	inter := c.IntermediateSize / tp
	kvType := ir.PagedKVType{BlockSize: opts.BlockSize, KVHeads: hkv, HeadDim: d, Elem: t, Layers: c.NumHiddenLayers}

	f := &ir.Func{Name: phase}
	mb := &modelBuilder{b: ir.Builder{F: f}, c: c, t: t}
	// tok is the token axes: [batch, seq] in prefill, [batch] in decode.
	tok := []ir.Dim{ir.D("batch"), ir.D("seq")}
	var dims ir.Attrs
	dims.Set("batch", ir.I64Attr(opts.PrefillBatch))
	dims.Set("seq", ir.I64Attr(opts.PrefillSeq))
	if phase == "decode" {
		tok = tok[:1]
		dims = nil
		dims.Set("batch", ir.I64Attr(opts.DecodeBatch))
		dims.Set("max_blocks", ir.I64Attr((opts.DecodeContext+opts.BlockSize-1)/opts.BlockSize))
	}
	f.Attrs.Set(ir.DimsAttr, ir.DictAttr(dims))
	arg := func(name string, typ ir.Type) *ir.Value {
		v := f.AddArg(typ)
		f.ArgAttrs[len(f.ArgAttrs)-1] = ir.Attrs{{Name: "llmir.name", Value: ir.StrAttr(name)}}
		return v
	}
	ids := arg("input_ids", ir.Tensor(ir.I32, tok...))
	pos := arg("positions", ir.Tensor(ir.I32, tok...))
	kv := arg("kv_cache", kvType)
	slots := arg("slot_mapping", ir.Tensor(ir.I64, tok...))
	var blockTables, contextLens *ir.Value
	if phase == "decode" {
		blockTables = arg("block_tables", ir.Tensor(ir.I32, ir.D("batch"), ir.D("max_blocks")))
		contextLens = arg("context_lens", ir.Tensor(ir.I32, ir.D("batch")))
	}
	heads := func(n int64) []ir.Dim { return append(append([]ir.Dim(nil), tok...), ir.S(n), ir.S(d)) }
	flat := func(n int64) []ir.Dim { return append(append([]ir.Dim(nil), tok...), ir.S(n)) }
	scale := ir.F32Attr(1 / math.Sqrt(float64(d)))

	embed := mb.param("model.embed_tokens.weight", c.VocabSize, c.HiddenSize)
	h := mb.op("llmir.embedding", nil, ids, embed)
	for l := int64(0); l < c.NumHiddenLayers && mb.err == nil; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		x := mb.rmsNorm(h, p+"input_layernorm.weight")
		q := mb.linear(x, p+"self_attn.q_proj", hq*d, c.HiddenSize, c.AttentionBias)
		k := mb.linear(x, p+"self_attn.k_proj", hkv*d, c.HiddenSize, c.AttentionBias)
		v := mb.linear(x, p+"self_attn.v_proj", hkv*d, c.HiddenSize, c.AttentionBias)
		q = mb.op("llmir.rope", mb.ropeAttrs(), mb.reshape(q, heads(hq)...), pos)
		k = mb.op("llmir.rope", mb.ropeAttrs(), mb.reshape(k, heads(hkv)...), pos)
		v = mb.reshape(v, heads(hkv)...)
		layer := ir.Attrs{{Name: "layer", Value: ir.I64Attr(l)}}
		kv = mb.op("llmir.append_kv", layer, kv, k, v, slots)
		var attnAttrs ir.Attrs
		attnAttrs.Set("scale", scale)
		if c.SlidingWindow > 0 {
			attnAttrs.Set("sliding_window", ir.I64Attr(c.SlidingWindow))
		}
		var a *ir.Value
		if phase == "prefill" {
			attnAttrs.Set("causal", ir.BoolAttr(true))
			a = mb.op("llmir.attention", attnAttrs, q, k, v)
		} else {
			attnAttrs.Set("layer", ir.I64Attr(l))
			a = mb.op("llmir.paged_attention", attnAttrs, q, kv, blockTables, contextLens)
		}
		o := mb.linear(mb.reshape(a, flat(hq*d)...), p+"self_attn.o_proj", c.HiddenSize, hq*d, false)
		o = mb.allReduce(o, tp)
		h = mb.op("llmir.add", nil, h, o)
		x = mb.rmsNorm(h, p+"post_attention_layernorm.weight")
		g := mb.linear(x, p+"mlp.gate_proj", inter, c.HiddenSize, c.MLPBias)
		u := mb.linear(x, p+"mlp.up_proj", inter, c.HiddenSize, c.MLPBias)
		y := mb.op("llmir.mul", nil, mb.activation(g), u)
		y = mb.linear(y, p+"mlp.down_proj", c.HiddenSize, inter, c.MLPBias)
		y = mb.allReduce(y, tp)
		h = mb.op("llmir.add", nil, h, y)
	}
	h = mb.rmsNorm(h, "model.norm.weight")
	head := "lm_head.weight"
	if c.TieWordEmbeddings {
		head = "model.embed_tokens.weight"
	}
	logits := mb.op("llmir.linear", nil, h, mb.param(head, c.VocabSize, c.HiddenSize))
	next := mb.op("llmir.argmax", nil, logits)
	if mb.err != nil {
		return nil, mb.err
	}
	mb.b.Return(next, kv)
	if err := ir.Canonicalize(&ir.Module{Funcs: []*ir.Func{f}}); err != nil {
		return nil, err
	}
	return f, nil
}

func (mb *modelBuilder) allReduce(x *ir.Value, tp int64) *ir.Value {
	if tp == 1 {
		return x
	}
	var as ir.Attrs
	as.Set("kind", ir.StrAttr("sum"))
	as.Set("world_size", ir.I64Attr(tp))
	return mb.op("llmir.all_reduce", as, x)
}

//go:embed presets/*.json
var presetFS embed.FS

// Presets lists the built-in model names.
func Presets() []string {
	entries, _ := presetFS.ReadDir("presets")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".json"))
	}
	sort.Strings(names)
	return names
}

// PresetConfig returns a built-in model's config.
func PresetConfig(name string) (*Config, error) {
	data, err := presetFS.ReadFile("presets/" + name + ".json")
	if err != nil {
		return nil, fmt.Errorf("unknown preset %q (known: %s)", name, strings.Join(Presets(), ", "))
	}
	return ParseConfig("preset "+name, data)
}

// ImportPreset imports a built-in model.
func ImportPreset(name string, opts Options) (*ir.Module, error) {
	cfg, err := PresetConfig(name)
	if err != nil {
		return nil, err
	}
	return Import(cfg, name, opts)
}
