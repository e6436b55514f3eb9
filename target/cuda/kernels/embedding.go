package cudakernels

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/target/cuda"
)

// Embedding is llmir.embedding on the GPU: out[t, :] = table[ids[t], :]
// for i32 ids [Tokens] and a bf16 table [Vocab, Hidden], a copy of rows.
// Each row is copied by threads_per_row threads in vec-wide vectors (16
// bytes at vec 8, 2 bytes at vec 1 for odd rows), unroll of them loaded
// before any is stored; a block holds rows_per_block rows (threadIdx.y).
// The bits are copied as they are (no conversion), so the result is the
// reference's exactly.
//
// An id outside [0, Vocab) traps (a CUDA error, the entry's
// runtime_error), as AppendKV does for a slot past its pool: the CPU
// kernel returns 1 for it and ref.Embedding an index error, and the
// device cannot report a value to the host without a copy. No row is read
// outside the table.
type Embedding struct {
	Tokens, Vocab, Hidden int64
}

func (e Embedding) knobs() kernels.Knobs {
	return kernels.Knobs{
		{Name: "threads_per_row", Values: []int64{32, 64, 128, 256, 512}},
		{Name: "rows_per_block", Values: []int64{1, 2, 4, 8}},
		{Name: "vec", Values: []int64{8, 4, 2, 1}},
		{Name: "unroll", Values: []int64{1, 2, 4}},
	}
}

// cpu is the CPU kernel of the same gather (its Fill draws the ids).
func (e Embedding) cpu() kernels.Embedding {
	return kernels.Embedding{Tokens: e.Tokens, Vocab: e.Vocab, Hidden: e.Hidden, DType: schedule.BF16}
}

// Name is "cuda_embedding/T=…,V=…,H=…/bf16".
func (e Embedding) Name() string {
	return fmt.Sprintf("cuda_embedding/T=%d,V=%d,H=%d/bf16", e.Tokens, e.Vocab, e.Hidden)
}

func (e Embedding) check() error {
	if e.Tokens < 1 || e.Hidden < 1 || e.Vocab < 1 || e.Vocab > 1<<31-1 {
		return fmt.Errorf("embedding: shape T=%d V=%d H=%d (want positive, V < 2^31 for i32 ids)", e.Tokens, e.Vocab, e.Hidden)
	}
	if e.Tokens > 1<<31-1 || e.Tokens*e.Hidden > 1<<40 {
		return fmt.Errorf("embedding: %d tokens of %d elements", e.Tokens, e.Hidden)
	}
	return nil
}

func (e Embedding) Def() (*schedule.Def, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	return schedule.NewTemplateDef("cuda_embedding", "out[t, j] = table[ids[t], j]",
		[]*schedule.Tensor{i32Buf("ids", e.Tokens), bf16Buf("table", e.Vocab, e.Hidden)}, bf16Buf("out", e.Tokens, e.Hidden))
}

// Workload is llmir.embedding of [Tokens] ids (FromWorkload's kernels
// answer with the IR workload instead).
func (e Embedding) Workload() ir.Workload {
	return ir.Workload{
		Group:  []string{"llmir.embedding"},
		Inputs: []ir.TensorSig{{Shape: []int64{e.Tokens}, DType: "i32"}, {Shape: []int64{e.Vocab, e.Hidden}, DType: "bf16"}},
		Output: []ir.TensorSig{{Shape: []int64{e.Tokens, e.Hidden}, DType: "bf16"}},
	}
}

func (e Embedding) Dims() []int64 { return nil }

// Reference is the CPU kernel's (ref.Embedding's semantics); Fill draws
// ids in [0, Vocab).
func (e Embedding) Reference(in [][]float64) [][]float64                { return e.cpu().Reference(in) }
func (e Embedding) Fill(input string) func(rng *rand.Rand, v []float64) { return e.cpu().Fill(input) }
func (e Embedding) FLOPs() float64                                      { return 0 }

// Bytes: the gathered rows read and written, and the ids.
func (e Embedding) Bytes() float64 { return e.cpu().Bytes() }

func (e Embedding) Space(s *schedule.Schedule, _ kernels.Hardware) error {
	return e.knobs().SampleWhere(s, e.valid)
}

// Valid: the point recorded in s is one the generator accepts.
func (e Embedding) Valid(s *schedule.Schedule, _ kernels.Hardware) error {
	return e.knobs().Check(s, e.valid)
}

// Knobs is the design space and its predicate (for SpaceSize).
func (e Embedding) Knobs(kernels.Hardware) (kernels.Knobs, kernels.Validity) {
	return e.knobs(), e.valid
}

// valid: vectors tile a row (so every row starts aligned), no more threads
// a row than its vectors rounded up to a warp, an unroll only where every
// thread has that many vectors, rows a block that exist, and at most 1024
// threads a block.
func (e Embedding) valid(p map[string]int64) error {
	TPR, RPB, V, U := p["threads_per_row"], p["rows_per_block"], p["vec"], p["unroll"]
	if e.Hidden%V != 0 {
		return fmt.Errorf("vec %d does not tile a row of %d", V, e.Hidden)
	}
	units := e.Hidden / V
	if TPR > max(32, (units+31)/32*32) {
		return fmt.Errorf("%d threads for %d vectors a row", TPR, units)
	}
	if U > 1 && TPR*U > units {
		return fmt.Errorf("unroll %d of %d threads over %d vectors a row", U, TPR, units)
	}
	if RPB > 1 && RPB > e.Tokens {
		return fmt.Errorf("rows_per_block %d > %d tokens", RPB, e.Tokens)
	}
	if TPR*RPB > 1024 {
		return fmt.Errorf("%d×%d threads a block", TPR, RPB)
	}
	return nil
}

// Default: the widest vector that tiles a row, threads for half a row's
// vectors (256 for llama's 4096: two 16-byte loads in flight each), and
// rows stacked in a block until it has 128 threads.
func (e Embedding) Default(s *schedule.Schedule, _ kernels.Hardware) error {
	p := map[string]int64{"threads_per_row": 32, "rows_per_block": 1, "vec": 1, "unroll": 1}
	for _, v := range []int64{8, 4, 2, 1} {
		if p["vec"] = v; e.valid(p) == nil {
			break
		}
	}
	units := e.Hidden / p["vec"]
	for _, t := range []int64{64, 128, 256} {
		if t <= (units+1)/2 {
			p["threads_per_row"] = t
		}
	}
	if q := map[string]int64{"threads_per_row": p["threads_per_row"], "rows_per_block": 1, "vec": p["vec"], "unroll": 2}; e.valid(q) == nil {
		p["unroll"] = 2
	}
	for p["threads_per_row"]*p["rows_per_block"] < 128 && 2*p["rows_per_block"] <= min(e.Tokens, 8) {
		p["rows_per_block"] *= 2
	}
	return e.knobs().ChooseWhere(s, p, e.valid)
}

// rawVec is the CUDA type of a copy of v bf16 (bits, no conversion).
func rawVec(v int64) (string, error) {
	if v == 1 {
		return "unsigned short", nil
	}
	t, _, err := vecType(v)
	return t, err
}

func (e Embedding) EmitCUDA(s *schedule.Schedule, _ cuda.GPU, entry string) (string, error) {
	if err := e.check(); err != nil {
		return "", err
	}
	k, err := knobsOf(e.knobs(), s)
	if err != nil {
		return "", err
	}
	if err := e.valid(k); err != nil {
		return "", fmt.Errorf("embedding: %w", err)
	}
	TPR, RPB, V, U := k["threads_per_row"], k["rows_per_block"], k["vec"], k["unroll"]
	typ, err := rawVec(V)
	if err != nil {
		return "", fmt.Errorf("embedding: %w", err)
	}
	var b strings.Builder
	b.WriteString(prelude)
	fmt.Fprintf(&b, `
// %s: threads_per_row=%d rows_per_block=%d vec=%d unroll=%d
constexpr int TOK = %d, VOCAB = %d, H = %d;
constexpr int TPR = %d, RPB = %d, V = %d, U = %d;
constexpr int UNITS = H / V;  // vectors a row
typedef %s vec_t;             // %d bf16 = %d bytes, copied as bits

__global__ void __launch_bounds__(TPR * RPB) embedding(const int32_t *__restrict__ ids,
    const __nv_bfloat16 *__restrict__ table, __nv_bfloat16 *__restrict__ out) {
  const int t = blockIdx.x * RPB + threadIdx.y;
  if (t >= TOK) return;
  const int id = __ldg(ids + t);
  if ((unsigned)id >= (unsigned)VOCAB) __trap();  // outside the vocabulary: a CUDA error, never a read outside the table
  const vec_t *src = reinterpret_cast<const vec_t *>(table + (size_t)id * H);
  vec_t *dst = reinterpret_cast<vec_t *>(out + (size_t)t * H);
  // U vectors a thread per step, all loaded before any is stored.
  for (int u0 = threadIdx.x; u0 < UNITS; u0 += TPR * U) {
    vec_t d[U];
#pragma unroll
    for (int j = 0; j < U; j++)
      if (u0 + j * TPR < UNITS) d[j] = __ldg(src + u0 + j * TPR);
#pragma unroll
    for (int j = 0; j < U; j++)
      if (u0 + j * TPR < UNITS) dst[u0 + j * TPR] = d[j];
  }
}

int %s(void *const *bufs, const int64_t *dims) {
  (void)dims;
  embedding<<<(TOK + RPB - 1) / RPB, dim3(TPR, RPB)>>>((const int32_t *)bufs[0], (const __nv_bfloat16 *)bufs[1],
      (__nv_bfloat16 *)bufs[2]);
%s}
`, e.Name(), TPR, RPB, V, U, e.Tokens, e.Vocab, e.Hidden, TPR, RPB, V, U, typ, V, 2*V, entry, launchCheck)
	return b.String(), nil
}

// embeddingFromWorkload reads llmir.embedding as the CPU registry does
// (i32 ids of any shape, a [vocab, hidden] table, the result's shape) and
// keeps bf16 tables.
func embeddingFromWorkload(w ir.Workload) (Kernel, error) {
	c, err := cpuKernelOf[kernels.Embedding](w)
	if err != nil {
		return nil, err
	}
	if err := bf16Only(c.DType); err != nil {
		return nil, err
	}
	e := Embedding{Tokens: c.Tokens, Vocab: c.Vocab, Hidden: c.Hidden}
	if err := e.check(); err != nil {
		return nil, err
	}
	return e, nil
}
