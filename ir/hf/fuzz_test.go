package hf_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
)

// FuzzConfig feeds arbitrary bytes to ParseConfig and, when they parse,
// imports the model: neither may panic; a rejected config is a
// *hf.FieldError naming the file; an accepted one imports into a module
// that verifies, or fails with an error (sizes whose products do not fit
// the IR's shapes).
func FuzzConfig(f *testing.F) {
	seeds, err := filepath.Glob("presets/*.json")
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds, "testdata/llama-3.1-8b.json")
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"model_type": "llama", "hidden_size": 9223372036854775807, "intermediate_size": 9223372036854775807,
 "num_attention_heads": 1, "num_hidden_layers": 1, "vocab_size": 9223372036854775807, "max_position_embeddings": 1,
 "rms_norm_eps": 1e-5}`))
	f.Add([]byte(`{"model_type": "qwen2", "hidden_size": 8, "intermediate_size": 8, "num_attention_heads": 2,
 "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 4, "max_position_embeddings": 8, "rms_norm_eps": 1e-6,
 "rope_scaling": {"type": "llama3", "factor": 8.0}, "sliding_window": null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := hf.ParseConfig("config.json", data)
		if err != nil {
			var fe *hf.FieldError
			if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), "config.json") {
				t.Fatalf("rejection %q is not a *hf.FieldError naming the file", err)
			}
			return
		}
		m, err := hf.Import(c, "m", hf.Options{})
		if err != nil {
			return
		}
		if err := ir.Verify(m); err != nil {
			t.Fatalf("imported module does not verify: %v", err)
		}
	})
}
