// Package hf imports Hugging Face config.json files of the Llama family
// (Llama 2/3/3.1 with rope_scaling, Mistral with sliding_window, Qwen2 with
// attention biases, and any config with the same fields) into LLMIR, and
// ships the built-in presets (llama-2-7b, llama-3-8b, mistral-7b, qwen2-7b,
// llama-tiny) as embedded config.json files that go through the same
// importer.
//
// An imported module has two functions: prefill (symbolic batch × seq:
// causal attention over the prompt, whose K and V are appended to the paged
// cache) and decode (symbolic batch, one token per sequence: attention over
// the paged cache through block tables). Both end in argmax over the
// logits and return the updated cache. Typical values of the symbolic dims
// are recorded in each function's llmir.dims attribute for llmir tasks.
//
// Errors in a config name the file, the field and its line:column.
package hf
