package kernels_test

import (
	"math/rand/v2"
	"testing"

	"llmir/kernels"
	"llmir/kernels/kerneltest"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
)

// TestAppendKVConformance writes decode (one token) and prefill-chunk
// rows, f32 and bf16, through the suite: the harness poisons the whole
// cache and the reference is NaN outside the written slots, so a write to
// a wrong slot, to the padding token's slot or past a row fails.
func TestAppendKVConformance(t *testing.T) {
	tg := kerneltest.CPU(t)
	cases := []kernels.AppendKV{
		{Tokens: 1, KVHeads: 2, HeadDim: 32, BlockSize: 16},
		{Tokens: 37, TokensBucket: 64, KVHeads: 8, HeadDim: 80, BlockSize: 8},
		{Tokens: 70, KVHeads: 1, HeadDim: 13, BlockSize: 256, Elem: schedule.BF16},
	}
	for i, a := range cases {
		t.Run(a.Name(), func(t *testing.T) {
			kerneltest.Run(t, tg, search.CPUHardware(tg.CPU(), 1+i%2), a, kerneltest.Options{Draws: 2, Seed: uint64(i + 1)})
		})
	}
}

// badSlots is append_kv with a slot past the pool: the kernel must refuse
// it (runtime_error) rather than write outside the cache.
type badSlots struct{ kernels.AppendKV }

func (b badSlots) Fill(input string) func(rng *rand.Rand, v []float64) {
	if input != "slot_mapping" {
		return nil
	}
	return func(_ *rand.Rand, v []float64) {
		for i := range v {
			v[i] = float64(i)
		}
		v[len(v)-1] = float64(b.Dims()[1] * b.BlockSize) // one past the last slot
	}
}

func (b badSlots) Reference(in [][]float64) [][]float64 {
	return [][]float64{make([]float64, 2*b.Dims()[1]*b.BlockSize*b.KVHeads*b.HeadDim)}
}

func TestAppendKVRefusesSlotPastPool(t *testing.T) {
	tg := kerneltest.CPU(t)
	k := badSlots{kernels.AppendKV{Tokens: 4, KVHeads: 2, HeadDim: 16, BlockSize: 4}}
	kerneltest.Expect(t, tg, search.CPUHardware(tg.CPU(), 1), k, target.StatusRuntimeError)
}
