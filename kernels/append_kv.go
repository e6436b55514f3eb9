package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"llmir/ir"
	"llmir/kernels/ref"
	"llmir/kvcache"
	"llmir/schedule"
)

// AppendKV writes the new tokens' keys and values into the paged cache
// (llmir.append_kv): token t's k and v rows [KVHeads, HeadDim] go to slot
// slot_mapping[t] = block·BlockSize + offset of one layer's pool, the
// cache buffer [2 (K, V)][num_blocks][BlockSize][KVHeads][HeadDim] as in
// PagedAttention. A negative slot is padding and is skipped (as vLLM's
// reshape_and_cache does); a slot past the pool makes the kernel return an
// error before anything is written.
//
// The cache is the kernel's only output and is updated in place: the
// harness poisons it, and the reference is NaN ("must stay untouched")
// everywhere but the written slots. slot_mapping travels as i32: the IR
// declares it i64, but kvcache.Layout keeps every slot number within int32
// and the runtime has no 64-bit integer buffers.
type AppendKV struct {
	Tokens       int64 // rows written at run time
	TokensBucket int64 // 0: Tokens
	KVHeads      int64
	HeadDim      int64
	BlockSize    int64
	// NumBlocks is the pool's size; 0 means room for every token twice
	// over (at least 4 blocks), so slots are a sparse choice.
	NumBlocks int64
	// Elem is the storage type of k, v and the cache (F32 or BF16).
	Elem schedule.DType
	IR   *ir.Workload
}

func init() { register("llmir.append_kv", appendKVFromWorkload) }

// appendKVFromWorkload reads the cache type and k, v [..., kv_heads,
// head_dim] (leading dims flattened into tokens) and slot_mapping [...].
func appendKVFromWorkload(w ir.Workload) (Kernel, error) {
	if err := checkArity(w, 4, 1); err != nil {
		return nil, err
	}
	cache, k, v, slots := w.Inputs[0], w.Inputs[1], w.Inputs[2], w.Inputs[3]
	kv, err := parsePagedKV(cache.KV)
	if err != nil {
		return nil, fmt.Errorf("operand #0 (cache): %w", err)
	}
	for i, t := range []ir.TensorSig{k, v} {
		r := len(t.Shape)
		if r < 2 || t.Shape[r-2] != kv.KVHeads || t.Shape[r-1] != kv.HeadDim {
			return nil, fmt.Errorf("operand #%d %v does not end in the cache's [%d kv_heads, %d head_dim]", i+1, t.Shape, kv.KVHeads, kv.HeadDim)
		}
	}
	if !slices.Equal(k.Shape, v.Shape) {
		return nil, fmt.Errorf("k %v and v %v differ", k.Shape, v.Shape)
	}
	if !slices.Equal(slots.Shape, k.Shape[:len(k.Shape)-2]) {
		return nil, fmt.Errorf("slot_mapping %v is not k's leading dims %v", slots.Shape, k.Shape[:len(k.Shape)-2])
	}
	if slots.DType != "i64" && slots.DType != "i32" {
		return nil, fmt.Errorf("slot_mapping is %s, want i64 (or i32)", slots.DType)
	}
	elem, err := kvElem(cache.DType, k.DType, v.DType, w.Output[0].DType)
	if err != nil {
		return nil, err
	}
	tokens := int64(1)
	for _, d := range slots.Shape {
		tokens *= d
	}
	a := AppendKV{Tokens: tokens, KVHeads: kv.KVHeads, HeadDim: kv.HeadDim, BlockSize: kv.BlockSize, Elem: elem, IR: &w}
	if _, err := a.Def(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a AppendKV) bucket() int64 { return bucketOr(a.TokensBucket, a.Tokens) }

// Not bucketOr: the default divides by BlockSize, so it is computed only
// when NumBlocks is unset (Dims may see a kernel Def would reject).
func (a AppendKV) numBlocks() int64 {
	if a.NumBlocks > 0 {
		return a.NumBlocks
	}
	return max(2*((a.bucket()+a.BlockSize-1)/a.BlockSize), 4)
}

// Name is e.g. "append_kv/T=16,HKV=8,D=128,BS=16/f32".
func (a AppendKV) Name() string {
	return fmt.Sprintf("append_kv/T=%d,HKV=%d,D=%d,BS=%d/%s", a.Tokens, a.KVHeads, a.HeadDim, a.BlockSize, a.Elem)
}

// Def declares k, v [tokens, KVHeads, HeadDim], slot_mapping [tokens] and
// the cache output; dynamic dims tokens and num_blocks.
func (a AppendKV) Def() (*schedule.Def, error) {
	switch {
	case a.Tokens < 1 || a.Tokens > a.bucket():
		return nil, fmt.Errorf("append_kv %s: tokens %d outside 1…%d", a.Name(), a.Tokens, a.bucket())
	case a.KVHeads < 1 || a.HeadDim < 1 || a.BlockSize < 1:
		return nil, fmt.Errorf("append_kv %s: kv_heads, head_dim and block size must be positive", a.Name())
	case a.Elem != schedule.F32 && a.Elem != schedule.BF16:
		return nil, fmt.Errorf("append_kv %s: element type %s (want f32 or bf16)", a.Name(), a.Elem)
	case a.numBlocks()*a.BlockSize < a.Tokens:
		return nil, fmt.Errorf("append_kv %s: %d tokens do not fit %d blocks", a.Name(), a.Tokens, a.numBlocks())
	case a.numBlocks() > math.MaxInt32/a.BlockSize:
		return nil, fmt.Errorf("append_kv %s: %d blocks exceed int32 slot numbers", a.Name(), a.numBlocks())
	}
	T := schedule.Dynamic("tokens", a.bucket())
	NB := schedule.Dynamic("num_blocks", a.numBlocks())
	hkv, d := schedule.Static(a.KVHeads), schedule.Static(a.HeadDim)
	k := schedule.Input("k", a.Elem, T, hkv, d)
	v := schedule.Input("v", a.Elem, T, hkv, d)
	slots := schedule.Input("slot_mapping", schedule.I32, T)
	cache := schedule.Declare("cache", a.Elem, schedule.Static(2), NB, schedule.Static(a.BlockSize), hkv, d)
	return schedule.NewTemplateDef("append_kv",
		"cache[0, s/block_size, s mod block_size] = k[t] and cache[1, …] = v[t] for s = slot_mapping[t] ≥ 0; every other element untouched",
		[]*schedule.Tensor{k, v, slots}, cache)
}

// Workload is the IR workload the kernel came from, or the one the IR
// gives for k, v [tokens, kv_heads, head_dim].
func (a AppendKV) Workload() ir.Workload {
	if a.IR != nil {
		return *a.IR
	}
	b := ir.Bucket(a.bucket())
	dt := a.Elem.String()
	kv := ir.TensorSig{DType: dt, KV: fmt.Sprintf("paged_kv<block_size=%d,kv_heads=%d,head_dim=%d>", a.BlockSize, a.KVHeads, a.HeadDim)}
	row := ir.TensorSig{Shape: []int64{b, a.KVHeads, a.HeadDim}, Sym: []string{"tokens", "", ""}, DType: dt}
	return ir.Workload{
		Group:   []string{"llmir.append_kv"},
		Inputs:  []ir.TensorSig{kv, row, row, {Shape: []int64{b}, Sym: []string{"tokens"}, DType: "i64"}},
		Output:  []ir.TensorSig{kv},
		Dynamic: map[string]int64{"tokens": b},
	}
}

// Dims are [tokens, num_blocks].
func (a AppendKV) Dims() []int64 { return []int64{a.Tokens, a.numBlocks()} }

// FLOPs is 0: a copy.
func (a AppendKV) FLOPs() float64 { return 0 }

// Bytes is k and v read and written once, and the slots read.
func (a AppendKV) Bytes() float64 {
	return 4*float64(a.Tokens*a.KVHeads*a.HeadDim*a.Elem.Size()) + 4*float64(a.Tokens)
}

// Fill draws distinct slots from the whole pool (so consecutive tokens
// land in unrelated blocks and at every offset); with three or more
// tokens the last is padding (−1), which must write nothing.
func (a AppendKV) Fill(input string) func(rng *rand.Rand, v []float64) {
	if input != "slot_mapping" {
		return nil
	}
	return func(rng *rand.Rand, v []float64) {
		perm := rng.Perm(int(a.numBlocks() * a.BlockSize))
		for i := range v {
			v[i] = float64(perm[i])
		}
		if len(v) >= 3 {
			v[len(v)-1] = -1
		}
	}
}

// Reference runs ref.AppendKV on a NaN pool: the written slots hold k and
// v, everything else stays NaN (untouched).
func (a AppendKV) Reference(in [][]float64) [][]float64 {
	nan := make([]float64, 2*a.numBlocks()*a.BlockSize*a.KVHeads*a.HeadDim)
	for i := range nan {
		nan[i] = math.NaN()
	}
	pool := poolOf(nan, a.numBlocks(), a.BlockSize, a.KVHeads, a.HeadDim, a.Elem)
	k, v := make([]float32, len(in[0])), make([]float32, len(in[1]))
	for i := range k {
		k[i], v[i] = float32(in[0][i]), float32(in[1][i])
	}
	slots := make([]int64, len(in[2]))
	for i, s := range in[2] {
		slots[i] = int64(s)
	}
	if err := ref.AppendKV(pool, 0, k, v, int(a.Tokens), slots); err != nil {
		panic(fmt.Sprintf("append_kv reference of %s: %v", a.Name(), err)) // Fill keeps the slots in the pool
	}
	out := make([]float64, len(nan))
	l := pool.Layout
	i := 0
	for kv := range 2 {
		for b := range l.NumBlocks {
			for s := range l.BlockSize {
				for h := range l.NumKVHeads {
					for e := range l.HeadDim {
						out[i] = pool.At(0, kvcache.KV(kv), b, s, h, e)
						i++
					}
				}
			}
		}
	}
	return [][]float64{out}
}

// Knobs: parallel over tokens (0: one thread, which wins for the few rows
// of a decode step) and the copy's vector width in bytes.
func (a AppendKV) Knobs() Knobs {
	return Knobs{
		{"parallel", []int64{0, 1}},
		{"width", []int64{16, 32, 64}},
	}
}

// Space samples both knobs.
func (a AppendKV) Space(s *schedule.Schedule, _ Hardware) error { return a.Knobs().Sample(s) }

// Default copies with the widest vector the hardware has and goes parallel
// from 64 tokens (a prefill chunk), below which a thread team costs more
// than the copy.
func (a AppendKV) Default(s *schedule.Schedule, hw Hardware) error {
	width := min(max(int64(hw.VectorBits/8), 16), 64)
	par := int64(0)
	if a.Tokens >= 64 && hw.Threads > 1 {
		par = 1
	}
	return a.Knobs().Choose(s, map[string]int64{"parallel": par, "width": width})
}

// EmitC instantiates the copy template.
func (a AppendKV) EmitC(s *schedule.Schedule, _ Hardware, entry string) (string, error) {
	kn, err := a.Knobs().Read(s)
	if err != nil {
		return "", fmt.Errorf("append_kv %s: %w", a.Name(), err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "// llmir append_kv template: %s\n// knobs: parallel=%d width=%d\n", a.Name(), kn["parallel"], kn["width"])
	fmt.Fprintf(&b, "#define HKV %d\n#define D %d\n#define BS %d\n#define WIDTH %d\n#define PAR %d\n#define ESIZE %d\n",
		a.KVHeads, a.HeadDim, a.BlockSize, kn["width"], kn["parallel"], a.Elem.Size())
	b.WriteString(strings.ReplaceAll(appendKVC, "ENTRY", entry))
	return b.String(), nil
}

// appendKVC copies each token's K and V rows (HKV·D elements, contiguous
// in k, v and in the slot) with WIDTH-byte vectors and a byte tail.
const appendKVC = `#include <stdint.h>
#include <string.h>

#define ROWBYTES ((int64_t)HKV * D * ESIZE)
typedef unsigned char chunk_t __attribute__((vector_size(WIDTH)));

static inline void copy_row(unsigned char *dst, const unsigned char *src) {
  int64_t o = 0;
  for (; o + WIDTH <= ROWBYTES; o += WIDTH) {
    chunk_t c;
    memcpy(&c, src + o, WIDTH);
    memcpy(dst + o, &c, WIDTH);
  }
  for (; o < ROWBYTES; o++) dst[o] = src[o];
}

int ENTRY(void *const *bufs, const int64_t *dims) {
  const unsigned char *k = (const unsigned char *)bufs[0];
  const unsigned char *v = (const unsigned char *)bufs[1];
  const int32_t *slots = (const int32_t *)bufs[2];
  unsigned char *cache = (unsigned char *)bufs[3];
  const int64_t T = dims[0], NB = dims[1];
  // A slot past the pool is an error, reported before anything is written.
  for (int64_t t = 0; t < T; t++)
    if (slots[t] >= NB * BS) return 1;
  unsigned char *kc = cache, *vc = cache + NB * BS * ROWBYTES;
#if PAR
  #pragma omp parallel for schedule(static)
#endif
  for (int64_t t = 0; t < T; t++) {
    const int64_t s = slots[t];
    if (s < 0) continue;
    copy_row(kc + s * ROWBYTES, k + t * ROWBYTES);
    copy_row(vc + s * ROWBYTES, v + t * ROWBYTES);
  }
  return 0;
}
`
