package hf_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
)

func TestPresetShapes(t *testing.T) {
	for _, c := range []struct {
		name                         string
		hidden, inter, heads, kv, hd int64
		layers, vocab                int64
		dtype                        string
		window                       int64
		bias                         bool
	}{
		{"llama-2-7b", 4096, 11008, 32, 32, 128, 32, 32000, "float16", 0, false},
		{"llama-3-8b", 4096, 14336, 32, 8, 128, 32, 128256, "bfloat16", 0, false},
		{"mistral-7b", 4096, 14336, 32, 8, 128, 32, 32000, "bfloat16", 4096, false},
		{"qwen2-7b", 3584, 18944, 28, 4, 128, 28, 152064, "bfloat16", 0, true},
		{"llama-tiny", 256, 688, 8, 2, 32, 2, 1000, "float32", 0, false},
	} {
		cfg, err := hf.PresetConfig(c.name)
		if err != nil {
			t.Fatal(err)
		}
		got := []int64{cfg.HiddenSize, cfg.IntermediateSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim, cfg.NumHiddenLayers, cfg.VocabSize, cfg.SlidingWindow}
		want := []int64{c.hidden, c.inter, c.heads, c.kv, c.hd, c.layers, c.vocab, c.window}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: field %d = %d, want %d", c.name, i, got[i], want[i])
			}
		}
		if cfg.TorchDtype != c.dtype || cfg.AttentionBias != c.bias {
			t.Errorf("%s: dtype %s bias %v, want %s %v", c.name, cfg.TorchDtype, cfg.AttentionBias, c.dtype, c.bias)
		}
	}
	if _, err := hf.PresetConfig("gpt-5"); err == nil || !strings.Contains(err.Error(), "llama-3-8b") {
		t.Errorf("unknown preset error should list the presets, got %v", err)
	}
}

func importText(t *testing.T, cfg *hf.Config, opts hf.Options) string {
	t.Helper()
	m, err := hf.Import(cfg, "m", opts)
	if err != nil {
		t.Fatal(err)
	}
	return ir.String(m)
}

func TestLlama31RopeScaling(t *testing.T) {
	data, err := os.ReadFile("testdata/llama-3.1-8b.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := hf.ParseConfig("llama-3.1-8b.json", data)
	if err != nil {
		t.Fatal(err)
	}
	rs := cfg.RopeScaling
	if rs == nil || rs.Type != "llama3" || rs.Factor != 8 || rs.LowFreqFactor != 1 || rs.HighFreqFactor != 4 || rs.OriginalMaxPositionEmbeddings != 8192 {
		t.Fatalf("rope scaling %+v", rs)
	}
	text := importText(t, cfg, hf.Options{})
	want := `scaling = {factor = 8.0e+00 : f32, high_freq_factor = 4.0e+00 : f32, low_freq_factor = 1.0e+00 : f32, original_max_position_embeddings = 8192 : i64, type = "llama3"}`
	if !strings.Contains(text, want) {
		t.Errorf("imported module lacks %s", want)
	}
	// The decode context defaults to min(max_position_embeddings, 4096).
	if !strings.Contains(text, "llmir.dims = {batch = 1 : i64, max_blocks = 256 : i64}") {
		t.Errorf("decode dims not recorded")
	}
}

func TestFamilies(t *testing.T) {
	qwen, _ := hf.PresetConfig("qwen2-7b")
	if text := importText(t, qwen, hf.Options{}); !strings.Contains(text, `"model.layers.27.self_attn.k_proj.bias"`) || strings.Contains(text, "sliding_window") {
		t.Errorf("qwen2: want q/k/v biases and no sliding window (use_sliding_window is false)")
	}
	mistral, _ := hf.PresetConfig("mistral-7b")
	if text := importText(t, mistral, hf.Options{}); strings.Count(text, "sliding_window = 4096 : i64") != 64 {
		t.Errorf("mistral: want sliding_window on each of 32 attention and 32 paged_attention ops")
	}
	tiny, _ := hf.PresetConfig("llama-tiny")
	text := importText(t, tiny, hf.Options{})
	if strings.Contains(text, "lm_head.weight") {
		t.Errorf("tied embeddings must reuse model.embed_tokens.weight for the LM head")
	}
	tp := importText(t, tiny, hf.Options{TensorParallel: 2, BlockSize: 32})
	if strings.Count(tp, `"llmir.all_reduce"`) != 2*2*2 || !strings.Contains(tp, "block_size = 32, kv_heads = 1") {
		t.Errorf("tensor parallel 2: want 2 all_reduce per layer per function and a cache of 1 KV head per rank")
	}
	if _, err := hf.Import(tiny, "m", hf.Options{TensorParallel: 3}); err == nil || !strings.Contains(err.Error(), "does not divide") {
		t.Errorf("tensor parallel 3 of 8 heads: got %v", err)
	}
}

func TestBadConfigs(t *testing.T) {
	base, err := os.ReadFile("presets/llama-tiny.json")
	if err != nil {
		t.Fatal(err)
	}
	edit := func(old, new string) string {
		if !strings.Contains(string(base), old) {
			t.Fatalf("preset lacks %q", old)
		}
		return strings.Replace(string(base), old, new, 1)
	}
	for _, c := range []struct{ name, src, want string }{
		{"truncated", string(base[:100]), "cfg.json:5:"},
		{"not an object", "[1, 2]", "top level must be an object"},
		{"syntax error", edit(`"hidden_size": 256,`, `"hidden_size": 256,,`), "cfg.json:4:22"},
		{"missing field", edit(`  "intermediate_size": 688,`+"\n", ""), `field "intermediate_size": missing (required)`},
		{"wrong type", edit(`"hidden_size": 256`, `"hidden_size": "256"`), `cfg.json:4:3: field "hidden_size": want a positive integer, got "256"`},
		{"fraction", edit(`"hidden_size": 256`, `"hidden_size": 256.5`), `field "hidden_size": want a positive integer`},
		{"negative", edit(`"num_hidden_layers": 2`, `"num_hidden_layers": -2`), `field "num_hidden_layers"`},
		{"unknown architecture", strings.Replace(edit(`"model_type": "llama"`, `"model_type": "gpt2"`), `"LlamaForCausalLM"`, `"GPT2LMHeadModel"`, 1), `unsupported architecture: model_type "gpt2"`},
		{"kv heads", edit(`"num_key_value_heads": 2`, `"num_key_value_heads": 3`), `field "num_key_value_heads": 3 does not divide`},
		{"dtype", edit(`"float32"`, `"float8"`), `field "torch_dtype": unsupported dtype "float8"`},
		{"rope scaling type", edit(`"rope_theta": 10000.0,`, `"rope_theta": 10000.0, "rope_scaling": {"type": "magic", "factor": 2.0},`), `field "rope_scaling": unsupported type "magic"`},
		{"rope scaling factor", edit(`"rope_theta": 10000.0,`, `"rope_theta": 10000.0, "rope_scaling": {"type": "linear"},`), `factor: want a positive number`},
		{"activation", edit(`"silu"`, `"relu"`), `field "hidden_act": unsupported activation "relu"`},
		{"layers beyond the limit", edit(`"num_hidden_layers": 2`, `"num_hidden_layers": 100000`), `field "num_hidden_layers": 100000 is beyond llmir's limit of 1024`},
		{"hidden beyond the limit", edit(`"hidden_size": 256`, `"hidden_size": 1099511627776`), `field "hidden_size": 1099511627776 is beyond llmir's limit`},
		{"vocabulary beyond i32 ids", edit(`"vocab_size": 1000`, `"vocab_size": 4294967296`), `field "vocab_size": 4294967296 is beyond llmir's limit of 2147483647`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := hf.ParseConfig("cfg.json", []byte(c.src))
			if err == nil {
				t.Fatal("accepted")
			}
			var fe *hf.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("%v is not a *hf.FieldError", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestImportDTypeOverride(t *testing.T) {
	m, err := hf.ImportPreset("llama-3-8b", hf.Options{DType: "f32"})
	if err != nil {
		t.Fatal(err)
	}
	text := ir.String(m)
	if strings.Contains(text, "bf16") || !strings.Contains(text, "x4096xf32") {
		t.Error("--dtype f32 left bf16 tensors in the module")
	}
	if _, err := hf.ImportPreset("llama-3-8b", hf.Options{DType: "f64"}); err == nil || !strings.Contains(err.Error(), "want f32, bf16 or f16") {
		t.Errorf("bad dtype: %v", err)
	}
	cfg, _ := hf.PresetConfig("llama-3-8b")
	if _, err := hf.Import(cfg, "x", hf.Options{DType: "f32"}); err != nil || cfg.TorchDtype != "bfloat16" {
		t.Errorf("the override changed the caller's config: %s, %v", cfg.TorchDtype, err)
	}
}
