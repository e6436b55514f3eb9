package ref_test

import (
	"context"
	"fmt"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kernels/ref"
	"llmir/kvcache"
)

// Prefill a 4-token prompt through llama-tiny with seeded random weights,
// the keys and values going into a real paged pool at the slots a
// kvcache.Manager hands out.
func ExampleEval() {
	ctx := context.Background()
	cfg, _ := hf.PresetConfig("llama-tiny")
	m, _ := hf.Import(cfg, "llama-tiny", hf.Options{BlockSize: 2})
	kvType := m.Func("prefill").Args[2].Type.(ir.PagedKVType)

	pool, _ := ref.PoolFor(kvType, 8)
	mgr, _ := kvcache.NewManager(kvcache.Config{Layout: pool.Layout})
	prompt := []int32{1, 17, 42, 7}
	mgr.Add(1, prompt, nil)
	slots, _ := mgr.Slots(nil, 1, 0, len(prompt))

	ids, pos, sl := make([]int64, 4), make([]int64, 4), make([]int64, 4)
	for i := range prompt {
		ids[i], pos[i], sl[i] = int64(prompt[i]), int64(i), int64(slots[i])
	}
	args, _ := ref.BindArgs(m.Func("prefill"), map[string]ref.Value{
		"input_ids":    ref.Ints(ir.I32, []int{1, 4}, ids),
		"positions":    ref.Ints(ir.I32, []int{1, 4}, pos),
		"kv_cache":     pool,
		"slot_mapping": ref.Ints(ir.I64, []int{1, 4}, sl),
	})
	out, err := ref.Eval(ctx, m, "prefill", args, ref.RandomParams{Seed: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	next := out[0].(*ref.Tensor)
	fmt.Println("next-token shape:", next.Shape)
	fmt.Println("first key of layer 0:", pool.At(0, kvcache.Key, int(slots[0])/2, int(slots[0])%2, 0, 0) != 0)
	// Output:
	// next-token shape: [1 4]
	// first key of layer 0: true
}
