package cudakernels

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"llmir/ir"
	"llmir/kernels"
	"llmir/kernels/ref"
	"llmir/schedule"
	"llmir/target/cuda"
)

// Rope rotates x [Tokens, Heads, HeadDim] (bf16) by positions [Tokens]
// (i32) into out, as llmir.rope and the CPU kernel (kernels.Rope) do: neox
// (halves) or gptj (interleaved pairs), a rotary_dim below the head dim
// (the rest copied), and the static scalings (linear, llama3, yarn with its
// attention factor), whose frequencies ref.InvFreq computes at generation
// time and the source carries as double constants.
//
// One block per token and group of heads_per_block heads: the block's
// threads first fill a shared table of cos and sin for the token (angles
// in double, reduced to [-π, π] before a float sincos, so positions of long
// contexts keep full accuracy; the table is shared by the group's heads),
// then rotate vec-wide vectors (16 bytes at vec 8). With prefetch, each
// thread's first vectors are loaded before the table is built. Dynamic NTK scaling, whose frequencies depend on the
// batch's largest position, has no CUDA kernel.
type Rope struct {
	Tokens, Heads, HeadDim int64
	Config                 ref.RopeConfig
	// MaxPosition bounds the positions the inputs draw (0: as kernels.Rope).
	MaxPosition int64
}

// cpu is the CPU kernel of the same problem: its workload, inputs and
// reference are this kernel's oracle.
func (r Rope) cpu() kernels.Rope {
	return kernels.Rope{Tokens: r.Tokens, Heads: r.Heads, HeadDim: r.HeadDim, Config: r.Config, DType: schedule.BF16, MaxPosition: r.MaxPosition}
}

func (r Rope) rotary() int64 {
	if r.Config.RotaryDim > 0 {
		return int64(r.Config.RotaryDim)
	}
	return r.HeadDim
}

func (r Rope) gptj() bool { return r.Config.Style == ref.GPTJ }

func (r Rope) check() error {
	if r.Config.Scaling != nil && r.Config.Scaling.Type == "dynamic" {
		return unsupported("rope: dynamic NTK scaling (frequencies depend on the batch's largest position)")
	}
	if _, err := r.cpu().Def(); err != nil {
		return err
	}
	return nil
}

func (r Rope) Name() string {
	return "cuda_" + r.cpu().Name()
}

func (r Rope) Def() (*schedule.Def, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return schedule.NewTemplateDef("cuda_rope", "out[t, h, pair] = rotate(x[t, h, pair], positions[t] * inv_freq[i]) (ref.Rope)",
		[]*schedule.Tensor{bf16Buf("x", r.Tokens, r.Heads, r.HeadDim), i32Buf("positions", r.Tokens)},
		bf16Buf("out", r.Tokens, r.Heads, r.HeadDim))
}

func (r Rope) Workload() ir.Workload                               { return r.cpu().Workload() }
func (r Rope) Dims() []int64                                       { return nil }
func (r Rope) Reference(in [][]float64) [][]float64                { return r.cpu().Reference(in) }
func (r Rope) Fill(input string) func(rng *rand.Rand, v []float64) { return r.cpu().Fill(input) }
func (r Rope) FLOPs() float64                                      { return r.cpu().FLOPs() }
func (r Rope) Bytes() float64                                      { return r.cpu().Bytes() }
func (r Rope) Space(s *schedule.Schedule, hw kernels.Hardware) error {
	return r.knobs().SampleWhere(s, r.valid)
}

// Valid: the point recorded in s is one the generator accepts.
func (r Rope) Valid(s *schedule.Schedule, _ kernels.Hardware) error {
	return r.knobs().Check(s, r.valid)
}

// Knobs is the design space and its predicate (for SpaceSize).
func (r Rope) Knobs(kernels.Hardware) (kernels.Knobs, kernels.Validity) { return r.knobs(), r.valid }

func (r Rope) knobs() kernels.Knobs {
	return kernels.Knobs{
		{Name: "threads", Values: []int64{64, 128, 256, 512}},
		{Name: "heads_per_block", Values: []int64{1, 2, 4, 8, 16, 32}},
		{Name: "vec", Values: []int64{8, 4, 2}},
		{Name: "prefetch", Values: []int64{1, 0}},
	}
}

// units is the number of vectors a head's rotation takes: vec pairs each
// (one vector per half) with neox, vec/2 pairs with gptj.
func (r Rope) units(vec int64) int64 {
	if r.gptj() {
		return r.rotary() / vec
	}
	return r.rotary() / 2 / vec
}

// valid: vectors tile the rotated part and keep 16-byte rows aligned, a
// block's heads exist, and threads do not outnumber the block's work by
// more than a warp's rounding.
func (r Rope) valid(p map[string]int64) error {
	T, HPB, V := p["threads"], p["heads_per_block"], p["vec"]
	span := r.rotary() / 2
	if r.gptj() {
		span = r.rotary()
	}
	if span%V != 0 || r.HeadDim%V != 0 {
		return fmt.Errorf("vec %d does not tile the rotated span %d and head_dim %d", V, span, r.HeadDim)
	}
	if HPB > 1 && HPB > r.Heads {
		return fmt.Errorf("heads_per_block %d > %d heads", HPB, r.Heads)
	}
	if items := HPB * r.units(V); T > max(64, (items+31)/32*32) {
		return fmt.Errorf("%d threads for %d vectors a block", T, items)
	}
	return nil
}

// Default: the widest vector, heads grouped while the grid keeps two
// blocks per SM and a block has under 256 vectors, and the fewest threads
// that cover the block's vectors (at most 256).
func (r Rope) Default(s *schedule.Schedule, hw kernels.Hardware) error {
	p := map[string]int64{"threads": 64, "heads_per_block": 1, "vec": 2, "prefetch": 1}
	for _, v := range []int64{8, 4, 2} {
		if p["vec"] = v; r.valid(p) == nil {
			break
		}
	}
	units, sms := r.units(p["vec"]), int64(max(hw.Threads, 1))
	for h := int64(2); h <= 32 && h <= r.Heads; h *= 2 {
		if p["heads_per_block"]*units >= 256 || r.Tokens*((r.Heads+h-1)/h) < 2*sms {
			break
		}
		p["heads_per_block"] = h
	}
	for _, t := range []int64{128, 256} {
		if t2 := map[string]int64{"threads": t, "heads_per_block": p["heads_per_block"], "vec": p["vec"], "prefetch": 1}; r.valid(t2) == nil {
			p["threads"] = t
		}
	}
	return r.knobs().ChooseWhere(s, p, r.valid)
}

func (r Rope) EmitCUDA(s *schedule.Schedule, _ cuda.GPU, entry string) (string, error) {
	if err := r.check(); err != nil {
		return "", err
	}
	k, err := knobsOf(r.knobs(), s)
	if err != nil {
		return "", err
	}
	if err := r.valid(k); err != nil {
		return "", fmt.Errorf("rope: %w", err)
	}
	T, HPB, V, PF := k["threads"], k["heads_per_block"], k["vec"], k["prefetch"]
	freq, att, err := ref.InvFreq(r.Config, int(r.rotary()), 1)
	if err != nil {
		return "", fmt.Errorf("rope: %w", err)
	}
	var b strings.Builder
	b.WriteString(prelude)
	style := "neox"
	if r.gptj() {
		style = "gptj"
	}
	fmt.Fprintf(&b, `
// %s: threads=%d heads_per_block=%d vec=%d prefetch=%d
constexpr int TOK = %d, H = %d, D = %d, R = %d, HALF = R / 2;
constexpr int NT = %d, HPB = %d, V = %d;
constexpr bool PREFETCH = %t;
constexpr bool GPTJ = %t;  // %s pairs
constexpr int UNITS = GPTJ ? R / V : HALF / V;  // vectors per head
constexpr int HB = (H + HPB - 1) / HPB;         // head groups per token
constexpr float ATT = %s;  // attention factor (yarn)
__constant__ double INV_FREQ[HALF] = {
`, r.Name(), T, HPB, V, PF, r.Tokens, r.Heads, r.HeadDim, r.rotary(), T, HPB, V, PF == 1, r.gptj(), style, cF32(att))
	for i, f := range freq {
		sep := ","
		if i == len(freq)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "  %s%s\n", cDouble(f), sep)
	}
	b.WriteString("};\n")
	b.WriteString(unpackLoad(V))
	b.WriteString(ropeBody)
	if r.rotary() < r.HeadDim {
		b.WriteString(ropeTail)
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  rope<<<TOK * HB, NT>>>((const __nv_bfloat16 *)bufs[0], (const int32_t *)bufs[1], (__nv_bfloat16 *)bufs[2]);
%s}
`, entry, launchCheck)
	return b.String(), nil
}

// packStore rounds V floats to bf16 and stores them as one vector (the
// bits are assembled in 32-bit words: a union of plain integers stays
// trivially constructible whatever the bf16 types' constructors are).
const packStore = `
__device__ __forceinline__ void pack_store(__nv_bfloat16 *p, const float *f) {
  union { vec_t v; uint32_t w[V / 2]; } u;
#pragma unroll
  for (int i = 0; i < V / 2; i++)
    u.w[i] = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i])) |
             ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i + 1])) << 16);
  *reinterpret_cast<vec_t *>(p) = u.v;
}
`

const ropeBody = packStore + `
__global__ void __launch_bounds__(NT) rope(const __nv_bfloat16 *__restrict__ x, const int32_t *__restrict__ pos,
    __nv_bfloat16 *__restrict__ out) {
  constexpr int NW = HPB * UNITS;  // vectors (neox: vector pairs) of the block
  const int t = blockIdx.x / HB, h0 = (blockIdx.x % HB) * HPB;
  __shared__ float cs[HALF], sn[HALF];
  vec_t va = {}, vb = {};
  auto load = [&](int w) {
    const size_t e = ((size_t)t * H + h0 + w / UNITS) * D + (size_t)(w % UNITS) * V;
    va = ldv(x + e);
    if (!GPTJ) vb = ldv(x + e + HALF);
  };
  int w = threadIdx.x;
  // The first vectors are loaded before the table is built: its math then
  // overlaps their memory latency.
  if (PREFETCH && w < NW && h0 + w / UNITS < H) load(w);
  const double p = (double)pos[t];
  for (int i = threadIdx.x; i < HALF; i += NT) {
    // The angle reduced to [-pi, pi] in double, sin and cos in float:
    // long-context positions keep their accuracy at float speed.
    double a = p * INV_FREQ[i];
    a -= rint(a * 0.15915494309189535) * 6.283185307179586;
    float s, c;
    sincosf((float)a, &s, &c);
    cs[i] = ATT * c;
    sn[i] = ATT * s;
  }
  __syncthreads();
  for (; w < NW; w += NT) {
    const int h = h0 + w / UNITS, u = w % UNITS;
    if (h >= H) break;
    if (!PREFETCH || w != (int)threadIdx.x) load(w);
    const size_t e = ((size_t)t * H + h) * D + (size_t)u * V;
    if (GPTJ) {
      float f[V], o[V];
      unpack(va, f);
#pragma unroll
      for (int j = 0; j < V / 2; j++) {
        const int i = u * V / 2 + j;
        o[2 * j] = f[2 * j] * cs[i] - f[2 * j + 1] * sn[i];
        o[2 * j + 1] = f[2 * j + 1] * cs[i] + f[2 * j] * sn[i];
      }
      pack_store(out + e, o);
    } else {
      const int i0 = u * V;
      float a[V], bv[V], oa[V], ob[V];
      unpack(va, a);
      unpack(vb, bv);
#pragma unroll
      for (int j = 0; j < V; j++) {
        oa[j] = a[j] * cs[i0 + j] - bv[j] * sn[i0 + j];
        ob[j] = bv[j] * cs[i0 + j] + a[j] * sn[i0 + j];
      }
      pack_store(out + e, oa);
      pack_store(out + e + HALF, ob);
    }
  }
`

// ropeTail copies the dims past rotary_dim, a bf16 pair at a time (only
// printed when rotary_dim < head_dim).
const ropeTail = `  constexpr int TAIL = (D - R) / 2;
  for (int w = threadIdx.x; w < HPB * TAIL; w += NT) {
    const int h = h0 + w / TAIL;
    if (h >= H) break;
    const size_t e = ((size_t)t * H + h) * D + R + 2 * (w % TAIL);
    *reinterpret_cast<uint32_t *>(out + e) = *reinterpret_cast<const uint32_t *>(x + e);
  }
`

// AppendKV writes the new tokens' keys and values [Tokens, KVHeads,
// HeadDim] (bf16) into one layer of the paged cache at slot_mapping[t] =
// block·BlockSize + offset, the DESIGN.md layout [2 (K, V)][NumBlocks]
// [BlockSize][KVHeads][HeadDim] that PagedAttention reads, as
// llmir.append_kv and kernels.AppendKV do. A negative slot is padding and
// writes nothing; a slot past the pool traps (a CUDA error, the entry's
// runtime_error), since the host cannot see the slots without a copy.
//
// Each token's K and V rows are contiguous in k, v and in the slot, so the
// kernel is a gather-free copy: blocks of tokens_per_block tokens, threads
// striding over vec-wide vectors (16 bytes at vec 8) of the block's rows,
// unroll of them loaded before any is stored.
type AppendKV struct {
	Tokens, KVHeads, HeadDim, BlockSize int64
	NumBlocks                           int64 // 0: as kernels.AppendKV (room for every token twice over)
}

func (a AppendKV) numBlocks() int64 {
	if a.NumBlocks > 0 {
		return a.NumBlocks
	}
	return max(2*((a.Tokens+a.BlockSize-1)/max(a.BlockSize, 1)), 4)
}

func (a AppendKV) cpu() kernels.AppendKV {
	return kernels.AppendKV{Tokens: a.Tokens, KVHeads: a.KVHeads, HeadDim: a.HeadDim, BlockSize: a.BlockSize, NumBlocks: a.numBlocks(), Elem: schedule.BF16}
}

func (a AppendKV) row() int64 { return a.KVHeads * a.HeadDim }

func (a AppendKV) check() error {
	if a.BlockSize < 1 {
		return fmt.Errorf("append_kv: block size %d", a.BlockSize)
	}
	if _, err := a.cpu().Def(); err != nil {
		return err
	}
	if a.HeadDim%2 != 0 {
		return unsupported("append_kv: head_dim %d is odd (bf16 pairs)", a.HeadDim)
	}
	return nil
}

func (a AppendKV) Name() string { return "cuda_" + a.cpu().Name() }

func (a AppendKV) Def() (*schedule.Def, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	return schedule.NewTemplateDef("cuda_append_kv",
		"cache[0/1, s/block_size, s mod block_size] = k/v[t] for s = slot_mapping[t] ≥ 0; every other element untouched",
		[]*schedule.Tensor{bf16Buf("k", a.Tokens, a.KVHeads, a.HeadDim), bf16Buf("v", a.Tokens, a.KVHeads, a.HeadDim), i32Buf("slot_mapping", a.Tokens)},
		bf16Buf("cache", 2, a.numBlocks(), a.BlockSize, a.KVHeads, a.HeadDim))
}

func (a AppendKV) Workload() ir.Workload                               { return a.cpu().Workload() }
func (a AppendKV) Dims() []int64                                       { return nil }
func (a AppendKV) Reference(in [][]float64) [][]float64                { return a.cpu().Reference(in) }
func (a AppendKV) Fill(input string) func(rng *rand.Rand, v []float64) { return a.cpu().Fill(input) }
func (a AppendKV) FLOPs() float64                                      { return 0 }
func (a AppendKV) Bytes() float64                                      { return a.cpu().Bytes() }
func (a AppendKV) Space(s *schedule.Schedule, hw kernels.Hardware) error {
	return a.knobs().SampleWhere(s, a.valid)
}

// Valid: the point recorded in s is one the generator accepts.
func (a AppendKV) Valid(s *schedule.Schedule, _ kernels.Hardware) error {
	return a.knobs().Check(s, a.valid)
}

// Knobs is the design space and its predicate (for SpaceSize).
func (a AppendKV) Knobs(kernels.Hardware) (kernels.Knobs, kernels.Validity) {
	return a.knobs(), a.valid
}

func (a AppendKV) knobs() kernels.Knobs {
	return kernels.Knobs{
		{Name: "threads", Values: []int64{64, 128, 256, 512}},
		{Name: "tokens_per_block", Values: []int64{1, 2, 4, 8}},
		{Name: "vec", Values: []int64{8, 4, 2}},
		{Name: "unroll", Values: []int64{1, 2, 4}},
	}
}

// valid: vectors tile a row, a block's tokens exist, and threads do not
// outnumber the block's vectors by more than a warp's rounding.
func (a AppendKV) valid(p map[string]int64) error {
	T, TPB, V := p["threads"], p["tokens_per_block"], p["vec"]
	if a.row()%V != 0 {
		return fmt.Errorf("vec %d does not tile a row of %d", V, a.row())
	}
	if TPB > 1 && TPB > a.Tokens {
		return fmt.Errorf("tokens_per_block %d > %d tokens", TPB, a.Tokens)
	}
	items := TPB * 2 * a.row() / V
	if T > max(64, (items+31)/32*32) {
		return fmt.Errorf("%d threads for %d vectors a block", T, items)
	}
	if U := p["unroll"]; U > 1 && T*U > items {
		return fmt.Errorf("unroll %d of %d threads over %d vectors a block", U, T, items)
	}
	return nil
}

// Default: 16-byte vectors where rows allow, one token per block until the
// grid has two blocks per SM, and 256 threads (a llama row pair is 256
// vectors of 16 bytes) or fewer when the block has less work.
func (a AppendKV) Default(s *schedule.Schedule, hw kernels.Hardware) error {
	p := map[string]int64{"threads": 64, "tokens_per_block": 1, "vec": 2, "unroll": 1}
	for _, v := range []int64{8, 4, 2} {
		if p["vec"] = v; a.valid(p) == nil {
			break
		}
	}
	sms := int64(max(hw.Threads, 1))
	for tpb := int64(2); tpb <= 8; tpb *= 2 {
		if (a.Tokens+tpb-1)/tpb < 2*sms || a.valid(map[string]int64{"threads": 64, "tokens_per_block": tpb, "vec": p["vec"], "unroll": 1}) != nil {
			break
		}
		p["tokens_per_block"] = tpb
	}
	for _, t := range []int64{128, 256} {
		if a.valid(map[string]int64{"threads": t, "tokens_per_block": p["tokens_per_block"], "vec": p["vec"], "unroll": 1}) == nil {
			p["threads"] = t
		}
	}
	// Two loads in flight per thread once every thread has two vectors.
	if q := map[string]int64{"threads": p["threads"], "tokens_per_block": p["tokens_per_block"], "vec": p["vec"], "unroll": 2}; a.valid(q) == nil {
		p["unroll"] = 2
	}
	return a.knobs().ChooseWhere(s, p, a.valid)
}

func (a AppendKV) EmitCUDA(s *schedule.Schedule, _ cuda.GPU, entry string) (string, error) {
	if err := a.check(); err != nil {
		return "", err
	}
	k, err := knobsOf(a.knobs(), s)
	if err != nil {
		return "", err
	}
	if err := a.valid(k); err != nil {
		return "", fmt.Errorf("append_kv: %w", err)
	}
	T, TPB, V, U := k["threads"], k["tokens_per_block"], k["vec"], k["unroll"]
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: threads=%d tokens_per_block=%d vec=%d unroll=%d
constexpr int TOK = %d, ROW = %d, NB = %d, BS = %d;  // ROW = kv_heads * head_dim
constexpr int NT = %d, TPB = %d, V = %d, U = %d;
constexpr int UNITS = ROW / V;       // vectors per K or V row
constexpr int NW = TPB * 2 * UNITS;  // vectors of the block
`, a.Name(), T, TPB, V, U, a.Tokens, a.row(), a.numBlocks(), a.BlockSize, T, TPB, V, U)
	b.WriteString(unpackLoad(V))
	b.WriteString(`
__global__ void __launch_bounds__(NT) append_kv(const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ v,
    const int32_t *__restrict__ slots, __nv_bfloat16 *__restrict__ cache) {
  const int t0 = blockIdx.x * TPB;
  // U vectors a thread per step, all loaded before any is stored, so that
  // U loads are in flight.
  for (int w0 = threadIdx.x; w0 < NW; w0 += NT * U) {
    vec_t d[U];
    __nv_bfloat16 *dst[U];
#pragma unroll
    for (int j = 0; j < U; j++) {
      const int w = w0 + j * NT;
      const int t = t0 + w / (2 * UNITS), r = w % (2 * UNITS), which = r / UNITS, u = r % UNITS;
      dst[j] = nullptr;
      if (w >= NW || t >= TOK) continue;
      const int s = slots[t];
      if (s < 0) continue;          // padding
      if (s >= NB * BS) __trap();   // past the pool: a CUDA error, never a stray write
      d[j] = ldv((which ? v : k) + (size_t)t * ROW + (size_t)u * V);
      dst[j] = cache + ((size_t)which * NB * BS + s) * ROW + (size_t)u * V;
    }
#pragma unroll
    for (int j = 0; j < U; j++)
      if (dst[j]) *reinterpret_cast<vec_t *>(dst[j]) = d[j];
  }
}
`)
	fmt.Fprintf(&b, `
int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  append_kv<<<(TOK + TPB - 1) / TPB, NT>>>((const __nv_bfloat16 *)bufs[0], (const __nv_bfloat16 *)bufs[1],
      (const int32_t *)bufs[2], (__nv_bfloat16 *)bufs[3]);
%s}
`, entry, launchCheck)
	return b.String(), nil
}

// ropeFromWorkload reads llmir.rope as the CPU registry does (the same
// attribute parsing and checks) and keeps the bf16, statically scaled
// variants.
func ropeFromWorkload(w ir.Workload) (Kernel, error) {
	c, err := cpuKernelOf[kernels.Rope](w)
	if err != nil {
		return nil, err
	}
	if err := bf16Only(c.DType); err != nil {
		return nil, err
	}
	r := Rope{Tokens: c.Tokens, Heads: c.Heads, HeadDim: c.HeadDim, Config: c.Config}
	if err := r.check(); err != nil {
		return nil, err
	}
	return r, nil
}

// appendKVFromWorkload reads llmir.append_kv as the CPU registry does and
// keeps bf16 caches.
func appendKVFromWorkload(w ir.Workload) (Kernel, error) {
	c, err := cpuKernelOf[kernels.AppendKV](w)
	if err != nil {
		return nil, err
	}
	if err := bf16Only(c.Elem); err != nil {
		return nil, err
	}
	a := AppendKV{Tokens: c.Tokens, KVHeads: c.KVHeads, HeadDim: c.HeadDim, BlockSize: c.BlockSize}
	if err := a.check(); err != nil {
		return nil, err
	}
	return a, nil
}

// cF32 prints a float32 constant exactly.
func cF32(v float64) string { return fmt.Sprintf("%.9ef", float32(v)) }

// cDouble prints a double constant exactly (hex float).
func cDouble(v float64) string { return fmt.Sprintf("%x", v) }
