package kernels

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"

	"llmir/ir"
	"llmir/schedule"
	"llmir/schedule/recipe"
	"llmir/target"
)

// Linear is the linear layer out[M, N] = a[M, K] · w[N, K]ᵀ with weights
// row-major [N, K] as checkpoints store them. M (tokens) is dynamic: the
// kernel is compiled for the bucket MBucket and measured at M ≤ MBucket.
type Linear struct {
	M, N, K int64
	MBucket int64 // 0: M itself
	// DType stores a, w and out (f32 when zero; bf16 or f16 for a
	// checkpoint-dtype model); the arithmetic is f32 either way, the 16-bit
	// values widened as they are loaded (and packed panels held in f32).
	DType schedule.DType
	// IR is the module workload the kernel was made from (FromWorkload);
	// when set it is the kernel's Workload.
	IR *ir.Workload
}

func init() { register("llmir.linear", linearFromWorkload) }

// linearFromWorkload flattens the activation's leading dims into M: the
// IR's [batch, seq, K] × [N, K] is one [batch·seq, K] GEMM. A third operand
// is the bias [N] (Qwen2's q/k/v projections): LinearBias.
func linearFromWorkload(w ir.Workload) (Kernel, error) {
	inputs := 2
	if len(w.Inputs) == 3 {
		inputs = 3
	}
	if err := checkArity(w, inputs, 1); err != nil {
		return nil, err
	}
	a, wt := w.Inputs[0], w.Inputs[1]
	if err := CheckWeightLayout(w.Attrs); err != nil {
		return nil, err
	}
	if len(wt.Shape) != 2 || a.Shape[len(a.Shape)-1] != wt.Shape[1] {
		return nil, fmt.Errorf("activation %v and weight %v do not match", a.Shape, wt.Shape)
	}
	dt, err := schedule.ParseDType(a.DType)
	other := func(s ir.TensorSig) bool { return s.DType != a.DType }
	if err != nil || !dt.Float() || slices.ContainsFunc(w.Inputs, other) || slices.ContainsFunc(w.Output, other) {
		return nil, unsupported("dtypes %s × %s → %s (the CPU linear kernels store every operand in one of f32, bf16, f16; weight-only quantized weights are llmir.quantized_linear)", a.DType, wt.DType, w.Output[0].DType)
	}
	l := Linear{M: rows(a), N: wt.Shape[0], K: wt.Shape[1], DType: dt, IR: &w}
	if inputs == 3 {
		if b := w.Inputs[2].Shape; len(b) != 1 || b[0] != l.N {
			return nil, fmt.Errorf("bias %v, want [%d]", b, l.N)
		}
		return LinearBias{l}, nil
	}
	return l, nil
}

func (l Linear) bucket() int64 {
	if l.MBucket > 0 {
		return l.MBucket
	}
	return l.M
}

// Name is "linear/M=…,N=…,K=…/f32" (or /bf16, /f16).
func (l Linear) Name() string { return fmt.Sprintf("linear/M=%d,N=%d,K=%d/%s", l.M, l.N, l.K, l.DType) }

// Def is out[i, j] = sum(k, a[i, k] * w[j, k]) with i over the dynamic M.
func (l Linear) Def() (*schedule.Def, error) {
	g, err := l.gemm("linear", l.DType)
	if err != nil {
		return nil, err
	}
	return schedule.NewDef("linear", []*schedule.Tensor{g.a, g.w}, g.out)
}

// gemmStage is what the definitions built on the linear share: its axes i
// (over the dynamic M, at the bucket) and j, a [M, K] and w [N, K] stored
// as the kernel's dtype, and the reduction stage out[i, j].
type gemmStage struct {
	i, j      schedule.Axis
	a, w, out *schedule.Tensor
}

// gemm declares the linear's stage, out stored as outType (the output
// itself, or an f32 temporary that an epilogue reads); kind names the
// kernel in a shape error.
func (l Linear) gemm(kind string, outType schedule.DType) (gemmStage, error) {
	if l.M < 1 || l.N < 1 || l.K < 1 || l.M > l.bucket() {
		return gemmStage{}, fmt.Errorf("%s: bad shape M=%d (bucket %d), N=%d, K=%d", kind, l.M, l.bucket(), l.N, l.K)
	}
	M, N, K := schedule.Dynamic("M", l.bucket()), schedule.Static(l.N), schedule.Static(l.K)
	g := gemmStage{i: schedule.NewAxis("i", M), j: schedule.NewAxis("j", N)}
	k := schedule.NewAxis("k", K)
	g.a = schedule.Input("a", l.DType, M, K)
	g.w = schedule.Input("w", l.DType, N, K)
	g.out = schedule.Compute("out", outType, []schedule.Axis{g.i, g.j}, schedule.Sum(k, schedule.Mul(g.a.At(g.i, k), g.w.At(g.j, k))))
	return g, nil
}

// Workload is llmir.linear on [M, K] × [N, K] with M bucketed (or the IR
// workload the kernel was made from).
func (l Linear) Workload() ir.Workload {
	if l.IR != nil {
		return *l.IR
	}
	b := ir.Bucket(l.bucket())
	tok := []string{"tokens", ""}
	return ir.Workload{
		Group: []string{"llmir.linear"},
		Inputs: []ir.TensorSig{
			{Shape: []int64{b, l.K}, Sym: tok, DType: l.DType.String()},
			{Shape: []int64{l.N, l.K}, DType: l.DType.String()},
		},
		Output:  []ir.TensorSig{{Shape: []int64{b, l.N}, Sym: tok, DType: l.DType.String()}},
		Dynamic: map[string]int64{"tokens": b},
	}
}

// Dims is [M].
func (l Linear) Dims() []int64 { return []int64{l.M} }

// FLOPs is 2·M·N·K.
func (l Linear) FLOPs() float64 { return 2 * float64(l.M*l.N*l.K) }

// Bytes is one read of a and w and one write of out.
func (l Linear) Bytes() float64 {
	return float64(l.DType.Size()) * float64(l.M*l.K+l.N*l.K+l.M*l.N)
}

// Fill makes the activation periodic (FillPeriodic), so that Reference
// computes at most PeriodRows rows of dot products: the prefill lm_head's
// reference would otherwise take minutes, and a whole-model tune visits
// it more than once.
func (l Linear) Fill(input string) func(rng *rand.Rand, v []float64) {
	if input != "a" {
		return nil
	}
	return FillPeriodic(int(l.K), target.NonZeroUniform)
}

// Reference accumulates each output in float64, over the first PeriodRows
// rows only when a is periodic (then the rest are exact scaled copies).
// Columns are spread over goroutines (columns, not rows, so that M = 1
// uses them all).
func (l Linear) Reference(in [][]float64) [][]float64 {
	a, w := in[0], in[1]
	m, n, k := l.M, l.N, l.K
	rows := int64(PeriodicRows(a, int(m), int(k)))
	out := make([]float64, m*n)
	workers := int64(runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for j := g; j < n; j += workers {
				wr := w[j*k : (j+1)*k]
				for i := range rows {
					out[i*n+j] = target.Dot(a[i*k:(i+1)*k], wr)
				}
			}
		})
	}
	wg.Wait()
	ExtendPeriodic(out, int(rows), int(m), int(n))
	return [][]float64{out}
}

// skinny reports whether the decode template applies: few rows of a, so
// that w is streamed once and the reduction is vectorized over k.
func (l Linear) skinny() bool { return l.bucket() <= 16 }

// outer reports whether the decode outer-product template applies: more
// than half a vector of rows of a (bucket 16 with 512-bit vectors). There
// the k-vectorized GEMV loads MR vectors of a (16 rows × K: beyond L1, so
// from L2 for every tile) per MR·JU FMAs and ran at 35–46% of the FMA
// peak; the outer product loads one vector of a's 16 rows per k step for
// JU FMAs whose lanes are all useful.
//
// Only with 512-bit vectors, where it was measured (with 16 ymm registers
// and 8 lanes, two passes over each tile of w, it is untried), and only
// for the bare linear (a Def of one stage): the fused kernels
// (LinearAdd, NormLinear) place their epilogue and prologue at the GEMV
// template's loops (j0, i0, j1), and a normalized prologue computed per
// tile would be packed again by this template's transposed copy of a.
// And only for f32 weights: each element of w is broadcast into an FMA, and
// a bf16 or f16 one is widened on the way (4 instructions per FMA instead of
// 1), where the GEMV template widens a whole vector of w once for MR rows.
func (l Linear) outer(s *schedule.Schedule, hw Hardware) bool {
	return l.skinny() && hw.lanes() >= 16 && 2*l.bucket() > hw.lanes() && len(s.Def.Stages) == 1 && l.DType == schedule.F32
}

// The outer-product template's rule-based knobs. JU = 8 rows of w: eight
// accumulator chains keep both FMA pipes busy (4 cycles of latency), 9
// loads per 8 FMAs, and 8 divides every Llama N (a partial tile runs the
// slower edge copy). Prefetch 8 lines (512 B) ahead per row: 8 rows ×
// 8 lines = 4 KiB in flight, above the ~2.6 KiB that 22 GB/s (80% of the
// FMA peak at 8 flop/B) × ~120 ns of DRAM latency needs. NJ = 4 tiles per
// chunk: 128 chunks at N = 4096 for two threads. KB = 128 iterations of
// KU: k blocks of 2048, whose 128 KiB slice of the transposed a stays in
// L2 for every tile of the chunk; unblocked, a_local of 16×4096×14336
// (896 KiB) fell out of L2 and the kernel ran at 96–116 GFLOP/s against
// 135–140 blocked (same run, one thread, loaded machine). JU 10–12 and
// prefetch 4 measured alike within the noise. The k-vectorized form with
// a's rows packed per k chunk (4×6 tiles, the four row blocks inside each
// chunk of a 6-row tile of w; session 11, 16×4096×4096, one thread, same
// process) ran at 6.1 ms against this template's 3.7–3.8 (read 2.0), and
// at 3.8 ms (63% of the FMA peak) with w resident in L1: gcc reads w in
// every FMA, 28 loads per 24 FMAs.
const (
	outerNJ       = 4
	outerJU       = 8
	outerKU       = 16 // k steps per prefetched iteration: one 64-byte line of each row of w
	outerPrefetch = 8
	outerKB       = 128
)

// gemvLanes is the widest k vector (in lanes) that divides K: the decode
// template's rfactor needs K to be a multiple of it.
func (l Linear) gemvLanes(hw Hardware) int64 {
	for v := hw.lanes(); v > 1; v /= 2 {
		if l.K%v == 0 {
			return v
		}
	}
	return 1
}

// gemvPrefetch is how many k vectors ahead the decode tile prefetches each
// of its rows of w (16 vectors: 1 KiB per row at 512 bits). With M ≥ 4 the
// FMAs fill the out-of-order window and the hardware prefetchers alone
// left the 4×4096×4096 tile at about 21 GB/s of 35; prefetching 16 or 32
// vectors ahead measured alike (about 23.5 GB/s in a hand-written copy of
// the tile), 64 lower. It is a rule, not a sampled knob: sampling it would
// quadruple the decode space for a flat gain.
//
// Also tried on 4×4096×4096, one thread, standalone copies of the tile
// side by side (medians over 40 calls, 4 rotated copies of w; session of
// 2026-11-27): prefetching into L2 (prefetcht1/t2, 1 or 4 KiB ahead)
// 20.4 GB/s against 23.3 for prefetcht0; prefetching a's rows too, and k
// blocks of 512–2048 that keep a's slice in L1 with the prefetch running
// on into the next tile's rows in traversal order, alike or lower (k
// blocks of 512: 15–17 GB/s, each row segment restarts the stream); the
// outer-product template with 4 k steps in the lanes (recipe.GEMVOuter KG
// 4, 4 rows × 4 k per vector, JU 8–16) alike. M=1 streams the same w at
// 33–34 GB/s: the four FMAs per line of w, not the layout, keep fewer
// lines in flight. Keeping the FMAs off the DRAM loads did not help either
// (session 11, 4×4096×4096, one thread, six interleaved rounds in one
// process, the other core busy): the default 3.14 ms (83% of the same
// run's read, 2.62 ms) against 4.61 ms copying each row's next 1 KiB
// segment into an L1 buffer while the FMAs read the current one, and 4.71
// ms loading it into an OR sink while the FMAs read w.
const gemvPrefetch = 16

// gemmNR is the register tile's width: two vectors, the widest tile whose
// accumulators leave registers for the panel loads and the broadcast.
func gemmNR(hw Hardware) int64 { return 2 * hw.lanes() }

// Space samples the template's knobs. Prefill (M > 16): the packed GEMM
// template with MR rows (≤ 14 so that 2·MR accumulators fit 32 vector
// registers), NB register blocks per packed panel and KC depth. Decode
// (M ≤ 16): the GEMV template with MR rows of a, JU rows of w per tile and
// NJ tiles per parallel chunk; the MR-row blocks run inside each tile, so
// its JU rows of w come from memory once and from L2 for the other blocks
// (with the blocks outside, a chunk of NJ·JU rows had to stay in L2:
// 16×4096×4096 went from about 7.9 to 5.4 ms), and w is prefetched
// gemvPrefetch vectors ahead. Decode with more than half a vector of rows
// (bucket 16 at 512 bits, see outer): the outer-product template with NJ
// tiles of JU rows of w per chunk, w prefetched 0–16 lines ahead and k
// blocks of KB·16 = 1024–4096.
func (l Linear) Space(s *schedule.Schedule, hw Hardware) error {
	par := hw.Threads > 1
	if l.outer(s, hw) {
		// JU < 6 leaves fewer FMA chains than two pipes × 4 cycles of
		// latency need; JU > 12 rows of w at a stride of a multiple of
		// 4 KiB all map to one set of the 12-way L1 and evict each other.
		nj, err := s.SampleCategorical([]int64{1, 2, 4, 8}, nil)
		if err != nil {
			return err
		}
		ju, err := s.SampleCategorical([]int64{6, 8, 10, 12}, nil)
		if err != nil {
			return err
		}
		pf, err := s.SampleCategorical([]int64{0, 4, 8, 16}, nil)
		if err != nil {
			return err
		}
		kb, err := s.SampleCategorical([]int64{64, 128, 256}, nil)
		if err != nil {
			return err
		}
		_, err = recipe.GEMVOuter(s, "out", recipe.GEMVOuterTiles{MV: hw.lanes(), NJ: nj, JU: ju, KU: schedule.Lit(outerKU), KB: kb, Prefetch: pf, Stream: "w", Parallel: par})
		return err
	}
	if l.skinny() {
		// MR = 16 with JU = 1 measured at half of MR 4 × JU 4 (16 loads of
		// a per 16 FMAs) and JU 1 streams one row of w at a time; chunks of
		// more than 16 tiles only unbalance the threads. The steps are
		// sampled independently, so MR·JU > 28 (accumulators spilled) is
		// still reachable and measures slow.
		mr, err := s.SampleCategorical(upTo(l.bucket(), 1, 2, 4, 8), nil)
		if err != nil {
			return err
		}
		ju, err := s.SampleCategorical([]int64{2, 4, 6, 8}, nil)
		if err != nil {
			return err
		}
		nj, err := s.SampleCategorical([]int64{2, 4, 8, 16}, nil)
		if err != nil {
			return err
		}
		_, err = recipe.GEMV(s, "out", recipe.GEMVTiles{NJ: nj, KV: l.gemvLanes(hw), MR: mr, JU: ju, RowsInner: true, Prefetch: schedule.Lit(gemvPrefetch), Stream: "w", Parallel: par})
		return err
	}
	// Pruned by cost, not measured to lose everywhere: MR 4 has 8
	// accumulators for 2 panel loads and 4 broadcasts per k step, KC 64
	// reads and writes out twice as often as KC 128. NB 2 stays for narrow
	// N, where Default halves the panel to give every thread two. The
	// configurations kept measured within a few percent of each other at
	// 512×4096×4096 (MR 8–14, NC 512–1024, KC 128–256), which is the
	// tuner's job to settle per shape.
	mr, err := s.SampleCategorical(upTo(l.bucket(), 6, 8, 10, 12, 14), nil)
	if err != nil {
		return err
	}
	nb, err := s.SampleCategorical([]int64{2, 4, 8, 16, 32, 64}, nil)
	if err != nil {
		return err
	}
	kc, err := s.SampleCategorical([]int64{128, 192, 256, 384, 512}, nil)
	if err != nil {
		return err
	}
	_, err = recipe.GEMM(s, "out", recipe.GEMMTiles{MR: mr, NR: gemmNR(hw), NB: nb, KC: kc, PackA: true, Parallel: par})
	return err
}

// Default is the template with knobs chosen by rule: for prefill a 12×NR
// tile (24 accumulators: 24 FMAs per k step for 2 panel loads and 12
// broadcasts), panels of up to 512
// columns (halved until every thread gets two) and depth 256, a 512 KiB
// panel that stays in L2 while halving the read-modify-writes of out that
// depth 128 costs (out is updated once per depth block); for decode up
// to 4 rows of a by 6 rows of w per tile (8 when a has at most 2 rows): 24
// (or ≤ 16) vector accumulators, enough independent FMA chains and w
// streams to keep the loads in flight, and 4 tiles per parallel chunk,
// with the row blocks inside each tile and w prefetched (see Space); for
// decode with more than half a vector of rows the outer-product template
// with the outer* knobs.
//
// Prefill packs a as well (recipe.GEMMTiles.PackA, in Space too): the MR
// rows of a that a register tile broadcasts from are K floats apart, and
// at K = 4096 or 14336 (multiples of 1024 floats) they all map to the
// same L1 sets, where the packed w stream evicts them. Copying each MR×KC
// block into a contiguous [KC][MR] local at the row-block loop took
// 512×14336×4096 from 101–105 to 135–137 GFLOP/s (one thread, A/B/A/B in
// one harness run on a loaded machine; OpenBLAS 161 there).
func (l Linear) Default(s *schedule.Schedule, hw Hardware) error {
	par := hw.Threads > 1
	if l.outer(s, hw) {
		_, err := recipe.GEMVOuter(s, "out", recipe.GEMVOuterTiles{MV: hw.lanes(), NJ: schedule.Lit(outerNJ), JU: schedule.Lit(outerJU), KU: schedule.Lit(outerKU),
			KB: schedule.Lit(outerKB), Prefetch: schedule.Lit(outerPrefetch), Stream: "w", Parallel: par})
		return err
	}
	if l.skinny() {
		mr := min(l.bucket(), 4)
		ju := int64(6)
		if mr <= 2 {
			ju = 8
		}
		_, err := recipe.GEMV(s, "out", recipe.GEMVTiles{NJ: schedule.Lit(4), KV: l.gemvLanes(hw), MR: schedule.Lit(mr), JU: schedule.Lit(ju),
			RowsInner: true, Prefetch: schedule.Lit(gemvPrefetch), Stream: "w", Parallel: par})
		return err
	}
	nr := gemmNR(hw)
	nc := int64(512)
	for nc > nr && l.N/nc < 2*int64(max(hw.Threads, 1)) {
		nc /= 2
	}
	_, err := recipe.GEMM(s, "out", recipe.GEMMTiles{MR: schedule.Lit(min(12, l.bucket())), NR: nr, NB: schedule.Lit(max(nc/nr, 1)), KC: schedule.Lit(256), PackA: true, Parallel: par})
	return err
}

// upTo keeps the candidates ≤ limit (at least the first).
func upTo(limit int64, cands ...int64) []int64 {
	out := []int64{cands[0]}
	for _, c := range cands[1:] {
		if c <= limit {
			out = append(out, c)
		}
	}
	return out
}
