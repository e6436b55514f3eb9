package hf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// Config is the part of a Hugging Face config.json that decides kernel
// shapes, for the Llama family and its close relatives.
type Config struct {
	ModelType             string
	Architectures         []string
	HiddenSize            int64
	IntermediateSize      int64
	NumAttentionHeads     int64
	NumKeyValueHeads      int64
	HeadDim               int64
	NumHiddenLayers       int64
	RMSNormEps            float64
	RopeTheta             float64
	RopeScaling           *RopeScaling
	VocabSize             int64
	TieWordEmbeddings     bool
	MaxPositionEmbeddings int64
	TorchDtype            string
	SlidingWindow         int64 // 0: none
	AttentionBias         bool  // bias on q, k, v (Qwen2 always)
	MLPBias               bool
	HiddenAct             string
}

// RopeScaling is HF's rope_scaling: "type" (or "rope_type") and its factors.
type RopeScaling struct {
	Type                          string
	Factor                        float64
	LowFreqFactor                 float64
	HighFreqFactor                float64
	OriginalMaxPositionEmbeddings int64
}

// families maps model_type to whether q/k/v carry a bias by construction.
var families = map[string]bool{"llama": false, "mistral": false, "qwen2": true}

var architectures = map[string]string{
	"LlamaForCausalLM":   "llama",
	"MistralForCausalLM": "mistral",
	"Qwen2ForCausalLM":   "qwen2",
}

// FieldError is a problem with one field of a config, positioned.
type FieldError struct {
	File      string
	Line, Col int
	Field     string
	Msg       string
}

func (e *FieldError) Error() string {
	pos := e.File
	if e.Line > 0 {
		pos = fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Col)
	}
	if e.Field == "" {
		return pos + ": " + e.Msg
	}
	return fmt.Sprintf("%s: field %q: %s", pos, e.Field, e.Msg)
}

// ParseConfig reads and validates a config.json. Errors name the file, the
// field and, where it exists in the text, the field's line:column.
func ParseConfig(file string, data []byte) (*Config, error) {
	fields, offsets, err := topLevel(data)
	if err != nil {
		line, col := lineCol(data, jsonErrorOffset(err, data))
		return nil, &FieldError{File: file, Line: line, Col: col, Msg: "not a JSON object: " + err.Error()}
	}
	r := &reader{file: file, data: data, fields: fields, offsets: offsets}
	c := &Config{}
	c.ModelType = r.str("model_type", false, "")
	c.Architectures = r.strs("architectures")
	family := c.ModelType
	for _, a := range c.Architectures {
		if f, ok := architectures[a]; ok && family == "" {
			family = f
		}
	}
	if _, ok := families[family]; !ok && r.err == nil {
		known := make([]string, 0, len(families))
		for k := range families {
			known = append(known, k)
		}
		sort.Strings(known)
		what := fmt.Sprintf("model_type %q", c.ModelType)
		if c.ModelType == "" {
			what = fmt.Sprintf("architectures %q", c.Architectures)
		}
		field := "model_type"
		if c.ModelType == "" {
			field = "architectures"
		}
		r.fail(field, "unsupported architecture: %s (supported model types: %s)", what, strings.Join(known, ", "))
	}
	c.ModelType = family
	c.HiddenSize = r.positive("hidden_size", true, 0)
	c.IntermediateSize = r.positive("intermediate_size", true, 0)
	c.NumAttentionHeads = r.positive("num_attention_heads", true, 0)
	c.NumKeyValueHeads = r.positive("num_key_value_heads", false, c.NumAttentionHeads)
	c.NumHiddenLayers = r.positive("num_hidden_layers", true, 0)
	c.VocabSize = r.positive("vocab_size", true, 0)
	c.MaxPositionEmbeddings = r.positive("max_position_embeddings", true, 0)
	c.RMSNormEps = r.float("rms_norm_eps", true, 0)
	c.RopeTheta = r.float("rope_theta", false, 10000)
	c.TieWordEmbeddings = r.boolean("tie_word_embeddings", false)
	c.TorchDtype = r.str("torch_dtype", false, "float32")
	c.HiddenAct = r.str("hidden_act", false, "silu")
	c.AttentionBias = r.boolean("attention_bias", families[family])
	c.MLPBias = r.boolean("mlp_bias", false)
	if r.err != nil {
		return nil, r.err
	}
	def := int64(0)
	if c.NumAttentionHeads > 0 {
		def = c.HiddenSize / c.NumAttentionHeads
	}
	c.HeadDim = r.positive("head_dim", false, def)
	if _, null := r.raw("sliding_window"); !null {
		c.SlidingWindow = r.positive("sliding_window", false, 0)
	}
	if family == "qwen2" && !r.boolean("use_sliding_window", false) {
		c.SlidingWindow = 0 // Qwen2 configs list a window they do not use
	}
	c.RopeScaling = r.ropeScaling()
	if r.err != nil {
		return nil, r.err
	}
	// Bounds far beyond any released model: past them a config is a typo
	// or hostile, and importing, tuning or compiling it would build or
	// allocate without end (a million layers of IR, a rotary table of
	// 2^37 frequencies).
	for _, b := range []struct {
		field    string
		val, max int64
	}{
		{"num_hidden_layers", c.NumHiddenLayers, 1 << 10},
		{"hidden_size", c.HiddenSize, 1 << 20},
		{"intermediate_size", c.IntermediateSize, 1 << 20},
		{"num_attention_heads", c.NumAttentionHeads, 1 << 14},
		{"num_key_value_heads", c.NumKeyValueHeads, 1 << 14},
		{"head_dim", c.HeadDim, 1 << 14},
		{"vocab_size", c.VocabSize, 1<<31 - 1}, // token ids are i32
	} {
		if b.val > b.max && r.err == nil {
			r.fail(b.field, "%d is beyond llmir's limit of %d", b.val, b.max)
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	switch {
	case c.NumAttentionHeads%c.NumKeyValueHeads != 0:
		r.fail("num_key_value_heads", "%d does not divide num_attention_heads %d", c.NumKeyValueHeads, c.NumAttentionHeads)
	case c.HeadDim%2 != 0:
		r.fail("head_dim", "%d must be even for rotary embeddings", c.HeadDim)
	case c.RMSNormEps <= 0:
		r.fail("rms_norm_eps", "must be positive, got %g", c.RMSNormEps)
	case c.RopeTheta <= 0:
		r.fail("rope_theta", "must be positive, got %g", c.RopeTheta)
	}
	if _, ok := dtypes[c.TorchDtype]; !ok && r.err == nil {
		r.fail("torch_dtype", "unsupported dtype %q (want bfloat16, float16 or float32)", c.TorchDtype)
	}
	switch c.HiddenAct {
	case "silu", "gelu", "gelu_pytorch_tanh":
	default:
		r.fail("hidden_act", "unsupported activation %q (want silu, gelu or gelu_pytorch_tanh)", c.HiddenAct)
	}
	if r.err != nil {
		return nil, r.err
	}
	return c, nil
}

func topLevel(data []byte) (map[string]json.RawMessage, map[string]int, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, errors.New("the top level must be an object")
	}
	fields := map[string]json.RawMessage{}
	offsets := map[string]int{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		key := tok.(string)
		off := int(dec.InputOffset())
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		// The key's own position: search back from the end of the key token.
		if i := bytes.LastIndex(data[:off], []byte(`"`+key+`"`)); i >= 0 {
			off = i
		}
		fields[key] = v
		offsets[key] = off
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("data after the top-level object")
	}
	return fields, offsets, nil
}

func jsonErrorOffset(err error, data []byte) int {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return int(se.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return len(data)
	}
	return 0
}

func lineCol(data []byte, off int) (int, int) {
	if off > len(data) {
		off = len(data)
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// reader decodes fields, keeping the first error.
type reader struct {
	file    string
	data    []byte
	fields  map[string]json.RawMessage
	offsets map[string]int
	err     error
}

func (r *reader) fail(field, format string, args ...any) {
	if r.err != nil {
		return
	}
	e := &FieldError{File: r.file, Field: field, Msg: fmt.Sprintf(format, args...)}
	if off, ok := r.offsets[field]; ok {
		e.Line, e.Col = lineCol(r.data, off)
	}
	r.err = e
}

// raw returns a field's JSON and whether it is absent or null.
func (r *reader) raw(name string) (json.RawMessage, bool) {
	v, ok := r.fields[name]
	return v, !ok || string(bytes.TrimSpace(v)) == "null"
}

func (r *reader) decode(name string, required bool, into any, want string) bool {
	v, missing := r.raw(name)
	if missing {
		if required {
			r.fail(name, "missing (required)")
		}
		return false
	}
	if err := json.Unmarshal(v, into); err != nil {
		r.fail(name, "want %s, got %s", want, truncate(string(v)))
		return false
	}
	return true
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func (r *reader) str(name string, required bool, def string) string {
	var s string
	if !r.decode(name, required, &s, "a string") {
		return def
	}
	return s
}

func (r *reader) strs(name string) []string {
	var s []string
	r.decode(name, false, &s, "a list of strings")
	return s
}

func (r *reader) float(name string, required bool, def float64) float64 {
	var f float64
	if !r.decode(name, required, &f, "a number") {
		return def
	}
	return f
}

func (r *reader) boolean(name string, def bool) bool {
	var b bool
	if !r.decode(name, false, &b, "true or false") {
		return def
	}
	return b
}

// positive reads a positive integer (JSON numbers like 4096.0 are accepted).
func (r *reader) positive(name string, required bool, def int64) int64 {
	var f float64
	if !r.decode(name, required, &f, "a positive integer") {
		return def
	}
	if f != math.Trunc(f) || f < 1 || f > 1<<40 {
		r.fail(name, "want a positive integer, got %s", truncate(string(r.fields[name])))
		return def
	}
	return int64(f)
}

func (r *reader) ropeScaling() *RopeScaling {
	v, missing := r.raw("rope_scaling")
	if missing {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(v, &m); err != nil {
		r.fail("rope_scaling", "want an object, got %s", truncate(string(v)))
		return nil
	}
	rs := &RopeScaling{}
	kind, _ := m["rope_type"].(string)
	if kind == "" {
		kind, _ = m["type"].(string)
	}
	num := func(k string, def float64) float64 {
		x, ok := m[k]
		if !ok || x == nil {
			return def
		}
		f, ok := x.(float64)
		if !ok {
			r.fail("rope_scaling", "%s: want a number, got %v", k, x)
		}
		return f
	}
	rs.Type = kind
	switch kind {
	case "default":
		return nil
	case "linear", "dynamic", "llama3", "yarn":
	default:
		r.fail("rope_scaling", "unsupported type %q (want linear, dynamic, llama3 or yarn)", kind)
		return nil
	}
	rs.Factor = num("factor", 0)
	if rs.Factor <= 0 {
		r.fail("rope_scaling", "factor: want a positive number")
	}
	if kind == "llama3" {
		rs.LowFreqFactor = num("low_freq_factor", 1)
		rs.HighFreqFactor = num("high_freq_factor", 4)
		rs.OriginalMaxPositionEmbeddings = int64(num("original_max_position_embeddings", 8192))
	} else if o := num("original_max_position_embeddings", 0); o > 0 {
		rs.OriginalMaxPositionEmbeddings = int64(o)
	}
	return rs
}
