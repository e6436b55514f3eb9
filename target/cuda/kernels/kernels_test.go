package cudakernels

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"testing"

	"llmir/kernels"
	"llmir/kernels/ref"
	"llmir/kvcache"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cuda"
)

// TestPagedAttentionReference checks the reference against
// kernels/ref.PagedAttention, which reads the pool through kvcache.Layout:
// the generated kernel's oracle must agree with the layout contract.
func TestPagedAttentionReference(t *testing.T) {
	for _, a := range []PagedAttention{
		{Batch: 5, QHeads: 8, KVHeads: 2, HeadDim: 16, BlockSize: 4, Context: 23, Ragged: true},
		{Batch: 2, QHeads: 3, KVHeads: 1, HeadDim: 8, BlockSize: 7, Context: 15},
	} {
		t.Run(a.Name(), func(t *testing.T) {
			p, err := search.NewProblem(a, 5)
			if err != nil {
				t.Fatal(err)
			}
			in := p.Inputs()
			want, err := p.Expected()
			if err != nil {
				t.Fatal(err)
			}
			l := kvcache.Layout{NumBlocks: int(a.numBlocks()), BlockSize: int(a.BlockSize), NumLayers: 1,
				NumKVHeads: int(a.KVHeads), HeadDim: int(a.HeadDim), DType: kvcache.BF16}
			pool, err := ref.NewPool(l)
			if err != nil {
				t.Fatal(err)
			}
			i := 0
			for kv := range 2 {
				for blk := range l.NumBlocks {
					for s := range l.BlockSize {
						for h := range l.NumKVHeads {
							for d := range l.HeadDim {
								pool.Set(0, kvcache.KV(kv), blk, s, h, d, in[1][i])
								i++
							}
						}
					}
				}
			}
			bt := make([]int32, len(in[2]))
			for i, v := range in[2] {
				bt[i] = int32(v)
			}
			lens := make([]int32, len(in[3]))
			zero := false
			for i, v := range in[3] {
				lens[i] = int32(v)
				zero = zero || v == 0
			}
			if a.Ragged && !zero {
				t.Errorf("ragged lengths %v have no empty sequence", lens)
			}
			got, err := ref.PagedAttention(f32s(in[0]), int(a.Batch), int(a.QHeads), pool, 0, bt, int(a.maxBlocks()), lens, ref.PagedOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rel := target.RelL2(f64s(got), want[0]); rel > 1e-6 {
				t.Errorf("reference differs from ref.PagedAttention: rel L2 %g", rel)
			}
		})
	}
}

func TestGEMVReference(t *testing.T) {
	g := GEMV{M: 3, N: 17, K: 40}
	p, err := search.NewProblem(g, 2)
	if err != nil {
		t.Fatal(err)
	}
	in := p.Inputs()
	want, _ := p.Expected()
	got, err := ref.Linear(f32s(in[0]), 3, 40, f32s(in[1]), 17, ref.NK, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rel := target.RelL2(f64s(got), want[0]); rel > 1e-6 {
		t.Errorf("rel L2 %g", rel)
	}
	// The cuBLAS baseline measures the same problem.
	b := GEMVCuBLAS{g}
	pb, _ := search.NewProblem(b, 2)
	wb, _ := pb.Expected()
	if target.RelL2(wb[0], want[0]) != 0 {
		t.Error("baseline problem differs")
	}
}

// TestGEMMReference checks the reference against ref.Linear, on random
// activations (the full product) and on Fill's periodic ones (the first
// rows scaled), and that the cuBLAS baseline measures the same problem.
func TestGEMMReference(t *testing.T) {
	for _, g := range []GEMM{{M: 9, N: 17, K: 40}, {M: 400, N: 24, K: 48}} {
		t.Run(g.Name(), func(t *testing.T) {
			p, err := search.NewProblem(g, 3)
			if err != nil {
				t.Fatal(err)
			}
			in := p.Inputs()
			want, _ := p.Expected()
			got, err := ref.Linear(f32s(in[0]), int(g.M), int(g.K), f32s(in[1]), int(g.N), ref.NK, nil)
			if err != nil {
				t.Fatal(err)
			}
			if rel := target.RelL2(f64s(got), want[0]); rel > 1e-6 {
				t.Errorf("rel L2 %g against ref.Linear", rel)
			}
			if !kernels.IsPeriodic(in[0], int(g.K)) {
				t.Errorf("filled activations are not periodic")
			}
			// Rows a whole tile apart differ: a misplaced tile is caught.
			for _, d := range []int{16, 64, 128, 256} {
				if m := d; m < int(g.M) && in[0][m*int(g.K)] == in[0][0] {
					t.Errorf("row %d equals row 0", m)
				}
			}
			// A perturbed input breaks the structure: the reference
			// must then compute every row.
			x := append([]float64(nil), in[0]...)
			x[len(x)-1] += 1
			if g.M > kernels.PeriodRows && kernels.IsPeriodic(x, int(g.K)) {
				t.Errorf("perturbed activations still periodic")
			}
			full := g.Reference([][]float64{x, in[1]})[0]
			got2, _ := ref.Linear(f32s(x), int(g.M), int(g.K), f32s(in[1]), int(g.N), ref.NK, nil)
			if rel := target.RelL2(f64s(got2), full); rel > 1e-6 {
				t.Errorf("perturbed input: rel L2 %g", rel)
			}
			pb, _ := search.NewProblem(GEMMCuBLAS{g}, 3)
			if wb, _ := pb.Expected(); target.RelL2(wb[0], want[0]) != 0 {
				t.Error("baseline problem differs")
			}
		})
	}
}

// TestGEMMRefusals checks that schedules beyond an SM's registers or
// shared memory are refused with the reason, before nvcc.
func TestGEMMRefusals(t *testing.T) {
	g := GEMM{M: 512, N: 512, K: 512}
	for _, tc := range []struct {
		knobs map[string]int64
		err   string
	}{
		{map[string]int64{"wm": 64, "wn": 64, "warps_m": 4, "warps_n": 4, "bk": 32, "stages": 2}, "registers"},
		{map[string]int64{"wm": 64, "wn": 64, "warps_m": 4, "warps_n": 2, "bk": 64, "stages": 4}, "shared memory"},
		{map[string]int64{"wm": 32, "wn": 32, "warps_m": 1, "warps_n": 1, "bk": 32, "stages": 2}, ""},
		// wgmma: the knobs of the other instruction are pinned, a consumer
		// holds at most 160 accumulators, the ring fits 227 KiB.
		{map[string]int64{"mma": 1, "wg_n": 128}, "mma=1 ignores wg_n"},
		{map[string]int64{"mma": 2, "wm": 64, "bk": 64}, "mma=2 ignores wm"},
		{map[string]int64{"mma": 2, "bk": 32, "wg_m": 128, "wg_n": 128}, "mma=2 ignores bk"},
		{map[string]int64{"mma": 2, "bk": 64, "wg_m": 256, "wg_n": 256, "stages": 2}, "accumulator registers"},
		{map[string]int64{"mma": 2, "bk": 64, "wg_m": 128, "wg_n": 256, "stages": 5}, "shared memory"},
		{map[string]int64{"mma": 2, "bk": 64, "wg_m": 128, "wg_n": 256, "stages": 4}, ""},
		{map[string]int64{"mma": 2, "bk": 64, "wg_m": 64, "wg_n": 128, "stages": 6}, ""},
	} {
		s := chosen(t, g, tc.knobs)
		_, err := g.EmitCUDA(s, cuda.H100, Entry)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: err %v, want %q", tc.knobs, err, tc.err)
		}
	}
}

// TestDesignSpaces draws schedules of every kernel of the suites: each
// emits a source (or is refused with an error naming why), and distinct
// knob values give distinct sources.
func TestDesignSpaces(t *testing.T) {
	ks := []Kernel{
		GEMV{M: 1, N: 4096, K: 4096}, GEMV{M: 16, N: 257, K: 4104},
		PagedAttention{Batch: 32, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: 16, Context: 4096},
		PagedAttention{Batch: 3, QHeads: 4, KVHeads: 4, HeadDim: 64, BlockSize: 7, Context: 3000},
		RMSNorm{M: 1, H: 4104}, SiluMul{M: 16, I: 14336},
		// GEMM pins the knobs its other instruction ignores: sample only
		// the points its generator accepts, as FromWorkload's kernels do.
		Checked(GEMM{M: 4096, N: 28672, K: 4096}), Checked(GEMM{M: 77, N: 130, K: 264}),
	}
	hw := Hardware(cuda.H100)
	for _, k := range ks {
		srcs := map[string]string{}
		emitted := 0
		for seed := range uint64(24) {
			s, err := search.SampleSchedule(k, hw, seed)
			if err != nil {
				t.Fatal(err)
			}
			key, _ := search.TraceKey(s)
			src, err := k.EmitCUDA(s, cuda.H100, Entry)
			if err != nil {
				if !strings.Contains(err.Error(), "vec") && !strings.Contains(err.Error(), "lanes") && !strings.Contains(err.Error(), "shared memory") && !strings.Contains(err.Error(), "registers") {
					t.Errorf("%s seed %d: unexpected refusal %v", k.Name(), seed, err)
				}
				continue
			}
			emitted++
			if old, ok := srcs[src]; ok && old != string(key) && !strings.Contains(src, "gemv_mma") {
				t.Errorf("%s: traces %s and %s print the same source", k.Name(), old, key)
			}
			srcs[src] = string(key)
		}
		if emitted < 12 {
			t.Errorf("%s: only %d of 24 sampled schedules emit", k.Name(), emitted)
		}
		d, err := search.DefaultSchedule(k, hw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.EmitCUDA(d, cuda.H100, Entry); err != nil {
			t.Errorf("%s: default does not emit: %v", k.Name(), err)
		}
	}
}

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct{ in, name, err string }{
		{"gemv:M=1,N=4096,K=4096", "cuda_gemv/M=1,N=4096,K=4096/bf16", ""},
		{"cublas_gemv:K=64,M=2,N=8", "cublas_gemv/M=2,N=8,K=64/bf16", ""},
		{"paged_attention:B=2,QH=8,KVH=2,D=64,BS=16,ctx=100,ragged", "cuda_paged_attention/B=2,QH=8,KVH=2,D=64,BS=16,ctx=100,ragged/bf16", ""},
		{"rms_norm:M=1,H=4096", "cuda_rms_norm/M=1,H=4096/bf16", ""},
		{"silu_mul:M=4,I=14336", "cuda_silu_mul/M=4,I=14336/bf16", ""},
		{"gemm:M=4096,N=28672,K=4096", "cuda_gemm/M=4096,N=28672,K=4096/bf16", ""},
		{"cublas_gemm:M=512,N=6144,K=4096", "cublas_gemm/M=512,N=6144,K=4096/bf16", ""},
		{"gemm:M=512,N=6144,K=4100", "", "multiple of 8"},
		{"gemv:M=1,N=4096", "", "missing field K"},
		{"gemv:M=1,N=4096,K=4096,K=8", "", "given twice"},
		{"gemv:M=0,N=4096,K=4096", "", "M=\"0\""},
		{"gemv:M=1,N=4096,K=4095", "", "multiple of 8"},
		{"gemv:M=1,N=4096,X=3", "", "field \"X=3\""},
		{"conv:M=1", "", "KIND one of"},
		{"paged_attention:B=2,QH=6,KVH=4,D=64,BS=16,ctx=100", "", "multiple of kv heads"},
		{"rms_norm:M=1,H=4096,ragged", "", "field \"ragged\""},
		{"rope:T=1,H=32,D=128", "cuda_rope/tokens=1,heads=32,dim=128/neox,llama3/bf16", ""},
		{"rope:T=1,H=32,D=127", "", "must be even"},
		{"append_kv:T=3,KVH=8,D=128,BS=16", "cuda_append_kv/T=3,HKV=8,D=128,BS=16/bf16", ""},
		{"append_kv:T=3,KVH=8,D=128", "", "missing field BS"},
		{"embedding:T=1,V=128256,H=4096", "cuda_embedding/T=1,V=128256,H=4096/bf16", ""},
		{"embedding:T=1,V=128256", "", "missing field H"},
		{"argmax:M=16,N=128256", "cuda_argmax/M=16,N=128256/bf16", ""},
		{"argmax:M=16,N=128256,ragged", "", "field \"ragged\""},
	} {
		k, err := ParseSpec(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseSpec(%q) err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || k.Name() != tc.name {
			t.Errorf("ParseSpec(%q) = %v, %v; want %s", tc.in, k, err, tc.name)
		}
	}
}

func TestNormAndSiluReferences(t *testing.T) {
	r := RMSNorm{M: 2, H: 6}
	x := []float64{1, 2, 3, 4, 5, 6, -1, 0.5, 0.25, 2, -3, 1}
	w := []float64{1, 1, 2, 1, 1, 0.5}
	out := r.Reference([][]float64{x, w})[0]
	for m := range 2 {
		var ss float64
		for i := range 6 {
			ss += x[m*6+i] * x[m*6+i]
		}
		inv := 1 / math.Sqrt(ss/6+1e-5)
		for i := range 6 {
			if d := out[m*6+i] - x[m*6+i]*inv*w[i]; math.Abs(d) > 1e-5 {
				t.Errorf("rms_norm[%d,%d] off by %g", m, i, d)
			}
		}
	}
	s := SiluMul{M: 1, I: 2}
	got := s.Reference([][]float64{{1, -2, 3, 0.5}})[0]
	for i, g := range []float64{1, -2} {
		want := g / (1 + math.Exp(-g)) * []float64{3, 0.5}[i]
		if math.Abs(got[i]-want) > 1e-6 {
			t.Errorf("silu_mul[%d] = %g, want %g", i, got[i], want)
		}
	}
}

// TestGEMVSplitKRange checks the split-K path's K ranges: whole pipeline
// steps, every k covered by exactly the K blocks launched, x's slice within
// shared memory, and the grid filled to about 8 warps per SM.
func TestGEMVSplitKRange(t *testing.T) {
	for _, tc := range []struct {
		g                GEMV
		rows, warps, unr int64
		sms              int
		wantKR, wantKB   int64
	}{
		// 64 n-blocks want 3 K blocks for 132 blocks of 8 warps, but x's
		// slice caps the range at 1152 k for 16 rows (40 KiB): 4.
		{GEMV{M: 16, N: 4096, K: 4096}, 64, 8, 4, 132, 1152, 4},
		// Blocks of 2 warps: 256 n-blocks want 3 K blocks for 4 per SM
		// (then capped to 4 again).
		{GEMV{M: 16, N: 4096, K: 4096}, 16, 2, 4, 132, 1152, 4},
		// With 2 chunks per step the cap is 1216 k.
		{GEMV{M: 16, N: 4096, K: 14336}, 64, 8, 2, 132, 1216, 12},
		// Enough n-blocks alone, but x's slice still splits K.
		{GEMV{M: 16, N: 28672, K: 4096}, 64, 8, 4, 132, 1152, 4},
		// Enough n-blocks and a short K: one K block, no workspace.
		{GEMV{M: 4, N: 28672, K: 2048}, 64, 8, 4, 132, 2048, 1},
		// One row of x: the whole K fits, and 224 n-blocks fill the SMs.
		{GEMV{M: 1, N: 14336, K: 4096}, 64, 8, 4, 132, 4096, 1},
		// 64 n-blocks × 3 K blocks of ⌈4096/3⌉ → 1408 k.
		{GEMV{M: 1, N: 4096, K: 4096}, 64, 8, 4, 132, 1408, 3},
		// A tail: 1032 = 8·128 + 8.
		{GEMV{M: 16, N: 130, K: 1032}, 64, 8, 4, 132, 128, 9},
	} {
		kr, kb := tc.g.splitKRange(tc.rows, tc.warps, tc.unr, tc.sms)
		if kr != tc.wantKR || kb != tc.wantKB {
			t.Errorf("%s rows %d warps %d unroll %d: range %d × %d blocks, want %d × %d", tc.g.Name(), tc.rows, tc.warps, tc.unr, kr, kb, tc.wantKR, tc.wantKB)
		}
		if kr%(32*tc.unr) != 0 || kb*kr < tc.g.K || (kb-1)*kr >= tc.g.K {
			t.Errorf("%s: range %d × %d blocks does not tile K=%d in steps of %d", tc.g.Name(), kr, kb, tc.g.K, 32*tc.unr)
		}
		if smem := tc.g.M * (kr + 32) * 2; smem > splitKSmem {
			t.Errorf("%s: %d bytes of x in shared memory", tc.g.Name(), smem)
		}
	}
}

// TestPagedAttentionEvenSplit walks the balanced grid (balance > 0) as the
// kernel does: every unit of every (sequence, head group) pair is taken by
// exactly one block, the kernel's closed form of the blocks sharing a pair
// (first, n) matches the blocks that do, the slots fit NSLOT, and the grid
// has about balance blocks per SM.
func TestPagedAttentionEvenSplit(t *testing.T) {
	for _, tc := range []struct {
		a                  PagedAttention
		warps, vec, unroll int64
		hpb, balance       int64
		sms                int
	}{
		{PagedAttention{Batch: 32, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: 16, Context: 4096}, 4, 16, 2, 4, 2, 132},
		{PagedAttention{Batch: 32, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: 128, Context: 4096}, 8, 16, 2, 4, 1, 132},
		{PagedAttention{Batch: 16, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: 16, Context: 4096}, 4, 16, 2, 2, 2, 132},
		// Fewer units than blocks wanted, a ragged span (BS 7) and head_dim 64.
		{PagedAttention{Batch: 3, QHeads: 4, KVHeads: 4, HeadDim: 64, BlockSize: 7, Context: 300}, 4, 8, 1, 1, 2, 132},
		{PagedAttention{Batch: 5, QHeads: 8, KVHeads: 2, HeadDim: 64, BlockSize: 7, Context: 300}, 8, 16, 4, 4, 1, 7},
	} {
		unit := tc.warps * (32 / (tc.a.HeadDim / tc.vec)) * tc.unroll
		ev, err := tc.a.evenSplit(unit, tc.hpb, tc.balance, tc.sms)
		if err != nil {
			t.Fatal(err)
		}
		if ev.upp*unit < tc.a.maxBlocks()*tc.a.BlockSize || (ev.upp-1)*unit >= tc.a.maxBlocks()*tc.a.BlockSize {
			t.Errorf("%s: %d units of %d tokens per pair for a span of %d", tc.a.Name(), ev.upp, unit, tc.a.maxBlocks()*tc.a.BlockSize)
		}
		pairs := tc.a.Batch * tc.a.KVHeads * (tc.a.group() / tc.hpb)
		units := pairs * ev.upp
		if ev.grid > tc.balance*int64(tc.sms) || (units >= tc.balance*int64(tc.sms) && ev.grid*2 < tc.balance*int64(tc.sms)) {
			t.Errorf("%s balance %d: grid %d for %d SMs", tc.a.Name(), tc.balance, ev.grid, tc.sms)
		}
		taken := make([]int, units)
		sharers := make([]map[int64]bool, pairs)
		for blk := range ev.grid {
			u1 := min(units, (blk+1)*ev.chunk)
			for u := blk * ev.chunk; u < u1; {
				pair := u / ev.upp
				ue := min(u1, (pair+1)*ev.upp)
				first, n := pair*ev.upp/ev.chunk, ((pair+1)*ev.upp-1)/ev.chunk-pair*ev.upp/ev.chunk+1
				if slot := blk - first; slot < 0 || slot >= n || n > ev.slots {
					t.Fatalf("%s: block %d pair %d: slot %d of %d (NSLOT %d)", tc.a.Name(), blk, pair, slot, n, ev.slots)
				}
				if sharers[pair] == nil {
					sharers[pair] = map[int64]bool{}
				}
				sharers[pair][blk] = true
				for v := u; v < ue; v++ {
					taken[v]++
				}
				u = ue
			}
		}
		for v, c := range taken {
			if c != 1 {
				t.Fatalf("%s: unit %d taken %d times", tc.a.Name(), v, c)
			}
		}
		for pair, blks := range sharers {
			p := int64(pair)
			if n := ((p+1)*ev.upp-1)/ev.chunk - p*ev.upp/ev.chunk + 1; int(n) != len(blks) {
				t.Errorf("%s: pair %d shared by %d blocks, the kernel waits for %d", tc.a.Name(), pair, len(blks), n)
			}
		}
	}
}

// TestPagedAttentionRefusals checks that cp.async rings the hardware
// cannot hold, or cannot copy (8-byte pieces), are refused before nvcc,
// and that a ring that fits emits its copies and opts into the shared
// memory it needs.
func TestPagedAttentionRefusals(t *testing.T) {
	a := PagedAttention{Batch: 32, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: 16, Context: 4096}
	for _, tc := range []struct {
		knobs map[string]int64
		err   string
	}{
		{map[string]int64{"warps": 4, "partition": 2048, "heads_per_block": 4, "vec": 4, "unroll": 2, "prefetch": 2}, "vec 4"},
		{map[string]int64{"warps": 8, "partition": 2048, "heads_per_block": 4, "vec": 16, "unroll": 8, "prefetch": 4}, "shared memory"},
		{map[string]int64{"warps": 4, "partition": 2048, "heads_per_block": 4, "vec": 16, "unroll": 4, "prefetch": 2}, ""},
		{map[string]int64{"warps": 4, "partition": 2048, "heads_per_block": 4, "vec": 8, "unroll": 2, "prefetch": 3}, ""},
		{map[string]int64{"warps": 4, "partition": 0, "heads_per_block": 4, "vec": 16, "unroll": 2, "prefetch": 2, "balance": 2}, ""},
		{map[string]int64{"warps": 4, "partition": 1024, "heads_per_block": 4, "vec": 16, "unroll": 2, "prefetch": 2, "balance": 2}, "partition pinned"},
	} {
		s := chosen(t, a, tc.knobs)
		src, err := a.EmitCUDA(s, cuda.H100, Entry)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: err %v, want %q", tc.knobs, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		ring := ringBytes(tc.knobs["warps"], tc.knobs["unroll"], tc.knobs["vec"], tc.knobs["prefetch"])
		// Split points merge in the kernel (finish), never in a second launch.
		wants := []string{"cp.async.cg.shared.global", fmt.Sprintf("cudaFuncAttributeMaxDynamicSharedMemorySize, %d)", ring), fmt.Sprintf("WARPS * 32, %d, cudaStreamLegacy>>>", ring), "dim3(NG, B, NPART)",
			fmt.Sprintf("constexpr bool EVEN = %t;", tc.knobs["balance"] > 0), "if (NPART > 1) finish(", "if (n > 1) finish("}
		if tc.knobs["balance"] == 2 {
			// 256 pairs of 128 units of 32 tokens for 264 blocks.
			wants = append(wants, "constexpr int UPP = 128, CHUNK = 125, GRID = 263;", "constexpr int NSLOT = 3;")
		}
		for _, want := range wants {
			if !strings.Contains(src, want) {
				t.Errorf("%v: no %q in the source", tc.knobs, want)
			}
		}
		if strings.Count(src, "<<<") != 1 {
			t.Errorf("%v: %d launches, want one", tc.knobs, strings.Count(src, "<<<"))
		}
	}
}

// TestPagedAttentionMMA checks the tensor-core path: the default takes it
// where the shape allows (8 tokens per warp step, two stages) and keeps
// the CUDA-core kernel where it does not (query heads per KV head past
// the 16 mma rows, head_dim 16: one k-step, where an ldmatrix.x4 takes two);
// points it cannot carry are refused before nvcc; and a valid point
// emits the mma body with its ring (K and V tiles per warp and stage) and
// a balanced grid in units of its block step.
func TestPagedAttentionMMA(t *testing.T) {
	for _, tc := range []struct {
		a   PagedAttention
		mma int64
	}{
		{PagedAttention{Batch: 32, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: 16, Context: 4096}, 1},
		{PagedAttention{Batch: 3, QHeads: 4, KVHeads: 4, HeadDim: 64, BlockSize: 7, Context: 100}, 1},
		{PagedAttention{Batch: 2, QHeads: 32, KVHeads: 1, HeadDim: 64, BlockSize: 16, Context: 100}, 0},
		{PagedAttention{Batch: 2, QHeads: 8, KVHeads: 2, HeadDim: 16, BlockSize: 16, Context: 100}, 0},
	} {
		s, err := search.DefaultSchedule(tc.a, Hardware(cuda.H100))
		if err != nil {
			t.Fatal(err)
		}
		k, err := knobsOf(tc.a.knobs(), s)
		if err != nil {
			t.Fatal(err)
		}
		if k["mma"] != tc.mma {
			t.Errorf("%s: default mma %d, want %d", tc.a.Name(), k["mma"], tc.mma)
		}
		src, err := tc.a.EmitCUDA(s, cuda.H100, Entry)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(src, "mma.sync.aligned.m16n8k16"); got != (tc.mma == 1) {
			t.Errorf("%s: mma.sync in the source %t, want %t", tc.a.Name(), got, tc.mma == 1)
		}
		if tc.mma == 1 && (k["unroll"] != 1 || k["prefetch"] != 2 || k["vec"] != 8) {
			t.Errorf("%s: default %v, want unroll 1, prefetch 2, vec 8", tc.a.Name(), k)
		}
	}
	a := PagedAttention{Batch: 32, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: 16, Context: 4096}
	base := map[string]int64{"warps": 4, "partition": 0, "heads_per_block": 4, "vec": 8, "unroll": 1, "prefetch": 2, "mma": 1}
	for _, tc := range []struct {
		set  map[string]int64
		err  string
		want []string
	}{
		{map[string]int64{"vec": 16}, "vec pinned", nil},
		{map[string]int64{"unroll": 4}, "unroll 1 or 2", nil},
		{map[string]int64{"prefetch": 1}, "prefetch ≥ 2", nil},
		// 4 warps × 2 stages × K and V × 8 rows × 256 bytes.
		{nil, "", []string{"constexpr int PF = 2, TW = 8;", "cudaFuncAttributeMaxDynamicSharedMemorySize, 32768)", "m16n8k8"}},
		{map[string]int64{"unroll": 2, "prefetch": 3, "warps": 8}, "", []string{"constexpr int PF = 3, TW = 16;", "MaxDynamicSharedMemorySize, 196608)"}},
		// 256 pairs of 4096 tokens in units of 4 warps × 8 tokens, for 264 blocks.
		{map[string]int64{"balance": 2}, "", []string{"constexpr int UPP = 128, CHUNK = 125, GRID = 263;", "constexpr int UNIT = 32;"}},
		{map[string]int64{"heads_per_block": 2, "partition": 1024}, "", []string{"HPB = 2,", "PART = 1024, NPART = 4;"}},
	} {
		k := map[string]int64{}
		for n, v := range base {
			k[n] = v
		}
		for n, v := range tc.set {
			k[n] = v
		}
		s := chosen(t, a, k)
		src, err := a.EmitCUDA(s, cuda.H100, Entry)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: err %v, want %q", k, err, tc.err)
			continue
		}
		if tc.err != "" && a.valid(k) == nil {
			t.Errorf("%v: the space holds a point the generator refuses", k)
		}
		for _, w := range tc.want {
			if !strings.Contains(src, w) {
				t.Errorf("%v: no %q in the source", k, w)
			}
		}
	}
}

// TestGEMVDefaultBlocks checks the M ≥ 2 default's block shape: 16-row
// blocks of four warps while they cover the SMs, else 8-row blocks of
// eight, with K unsplit for llama-3-8b's k/v projection (N = 1024).
func TestGEMVDefaultBlocks(t *testing.T) {
	for _, tc := range []struct {
		g             GEMV
		sms           int
		rows, ksplit  int64
		kBlocksSource string
	}{
		{GEMV{M: 16, N: 4096, K: 4096}, 132, 2, 4, "k_blocks=1"},
		{GEMV{M: 16, N: 1024, K: 4096}, 132, 1, 8, "k_blocks=1"},
		{GEMV{M: 2, N: 1024, K: 4096}, 132, 1, 8, "k_blocks=1"},
		{GEMV{M: 16, N: 2112, K: 4096}, 132, 2, 4, "k_blocks=1"}, // 132 blocks
		{GEMV{M: 16, N: 2097, K: 4096}, 132, 2, 4, "k_blocks=1"}, // 132 blocks, the last one row
		{GEMV{M: 16, N: 2096, K: 4096}, 132, 1, 8, "k_blocks=1"}, // 131 blocks
		{GEMV{M: 16, N: 1024, K: 4096}, 64, 2, 4, "k_blocks=1"},
		// A few rows: two 8-row blocks of 8 warps want 9 K blocks for 132
		// warps; ⌈14336/9⌉ rounds up to sweeps of 512 k, 7 blocks of 2048.
		{GEMV{M: 16, N: 16, K: 14336}, 132, 1, 8, "k_blocks=7"},
	} {
		gpu, s, k := gemvDefault(t, tc.g, tc.sms)
		if k["mma"] != 3 || k["rows_per_warp"] != tc.rows || k["ksplit"] != tc.ksplit || k["groups"] != 1 {
			t.Errorf("%s on %d SMs: default %v, want the ring with rows_per_warp %d, ksplit %d", tc.g.Name(), tc.sms, k, tc.rows, tc.ksplit)
		}
		src, err := tc.g.EmitCUDA(s, gpu, Entry)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(src, tc.kBlocksSource) {
			t.Errorf("%s on %d SMs: no %q in the source", tc.g.Name(), tc.sms, tc.kBlocksSource)
		}
	}
}

// TestGEMVRingRange checks the ring path's K ranges: whole sweeps of the
// group's warps, every k covered by exactly the K blocks launched, and K
// split only while the grid is short of ringWarpsPerSM warps per SM.
func TestGEMVRingRange(t *testing.T) {
	for _, tc := range []struct {
		g                  GEMV
		rows, warps, sweep int64
		sms                int
		wantKR, wantKB     int64
	}{
		// The default's blocks (16 rows, 4 warps): 256 n-blocks are 1024
		// warps, so llama-3-8b's shapes take one K block, and so does
		// N = 1024 (256 warps, more than the 132 SMs).
		{GEMV{M: 16, N: 4096, K: 4096}, 16, 4, 256, 132, 4096, 1},
		{GEMV{M: 16, N: 4096, K: 14336}, 16, 4, 256, 132, 14336, 1},
		{GEMV{M: 16, N: 1024, K: 4096}, 16, 4, 256, 132, 4096, 1},
		{GEMV{M: 16, N: 4096, K: 4096}, 64, 4, 256, 132, 4096, 1},
		// A tail: 9 n-blocks of 4 warps want 4 K blocks for 132 warps;
		// ⌈1032/4⌉ rounds up to whole sweeps of 256 k, so 1032 k take 3
		// blocks of 512 (the last one 8 k).
		{GEMV{M: 16, N: 130, K: 1032}, 16, 4, 256, 132, 512, 3},
		// One n-block of 4 warps wants 33 K blocks: ⌈14336/33⌉ rounds up
		// to 512 k, 28 blocks.
		{GEMV{M: 16, N: 16, K: 14336}, 16, 4, 512, 132, 512, 28},
		// K shorter than one sweep: one block.
		{GEMV{M: 3, N: 257, K: 104}, 16, 4, 256, 132, 256, 1},
	} {
		kr, kb := tc.g.ringSplit(tc.sweep, tc.g.ringKBlocks(tc.rows, tc.warps, tc.sms))
		if kr != tc.wantKR || kb != tc.wantKB {
			t.Errorf("%s rows %d warps %d sweep %d: range %d × %d blocks, want %d × %d", tc.g.Name(), tc.rows, tc.warps, tc.sweep, kr, kb, tc.wantKR, tc.wantKB)
		}
		if kr%tc.sweep != 0 || kb*kr < tc.g.K || (kb-1)*kr >= tc.g.K {
			t.Errorf("%s: range %d × %d blocks does not tile K=%d in sweeps of %d", tc.g.Name(), kr, kb, tc.g.K, tc.sweep)
		}
	}
}

// TestGEMVRefusals checks the GEMV predicate: knobs a path ignores are
// pinned, rings beyond shared memory are refused before nvcc, the
// generator and Valid agree, and an accepted ring emits its copies, opts
// into its shared memory and launches on the legacy stream that keeps the
// workspace private to one launch.
func TestGEMVRefusals(t *testing.T) {
	g := GEMV{M: 16, N: 4096, K: 4096}
	hw := Hardware(cuda.H100)
	base := map[string]int64{"mma": 3, "rows_per_warp": 2, "groups": 1, "ksplit": 4, "vec": 8, "unroll": 2, "stages": 3}
	with := func(kv ...any) map[string]int64 {
		v := maps.Clone(base)
		for i := 0; i < len(kv); i += 2 {
			v[kv[i].(string)] = int64(kv[i+1].(int))
		}
		return v
	}
	for _, tc := range []struct {
		knobs map[string]int64
		err   string
	}{
		{with(), ""},
		{with("vec", 4), "vec 4"},
		{with("rows_per_warp", 8, "groups", 4, "ksplit", 8, "unroll", 4, "stages", 6), "shared memory"},
		{with("mma", 2, "rows_per_warp", 1, "stages", 3), "stages 3"},
		{with("mma", 0, "rows_per_warp", 8, "stages", 2), "rows_per_warp 8"},
		{with("mma", 2, "rows_per_warp", 1, "groups", 2, "stages", 2, "unroll", 4), ""},
		{with("mma", 0, "vec", 4, "stages", 2), ""},
	} {
		s := chosen(t, g, tc.knobs)
		src, err := g.EmitCUDA(s, cuda.H100, Entry)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: err %v, want %q", tc.knobs, err, tc.err)
			continue
		}
		verr := g.Valid(s, hw)
		if (err == nil) != (verr == nil) || (verr != nil && !errors.Is(verr, kernels.ErrInvalidKnobs)) {
			t.Errorf("%v: Valid says %v, the generator %v", tc.knobs, verr, err)
		}
		if err != nil || tc.knobs["mma"] != 3 {
			continue
		}
		for _, want := range []string{"cp.async.cg.shared.global", "cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM)",
			"constexpr int STAGE = (NT * 8 + 16) * CPR;", "W * 32, SMEM, cudaStreamLegacy>>>"} {
			if !strings.Contains(src, want) {
				t.Errorf("%v: no %q in the source", tc.knobs, want)
			}
		}
	}
	// 4 warps × 3 stages × (16 rows of w + 16 of x) × 8 pieces of 16 bytes.
	if smem := ringSmem(2, 4, 2, 3); smem != 4*3*32*8*16 {
		t.Errorf("ring of the default: %d bytes, want %d", smem, 4*3*32*8*16)
	}
	// Sampled points are all accepted: the space holds no refused point.
	for seed := range uint64(16) {
		s, err := search.SampleSchedule(g, hw, seed)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.EmitCUDA(s, cuda.H100, Entry); err != nil {
			t.Errorf("seed %d: sampled point refused: %v", seed, err)
		}
	}
}

// TestGEMVDefaultSmallNOneRow: at M = 1 the block splits K eight ways; a
// grid short of 16 warps per SM unrolls eight chunks, larger grids four.
func TestGEMVDefaultSmallNOneRow(t *testing.T) {
	for _, tc := range []struct {
		g              GEMV
		sms            int
		ksplit, unroll int64
	}{
		{GEMV{M: 1, N: 1024, K: 4096}, 132, 8, 8},  // 256 blocks × 4 warps: 7.8 per SM
		{GEMV{M: 1, N: 4096, K: 4096}, 132, 8, 4},  // 1024 × 4: 31 per SM
		{GEMV{M: 1, N: 1024, K: 4096}, 64, 8, 4},   // 16 per SM
		{GEMV{M: 1, N: 14336, K: 4096}, 132, 8, 4}, // llama-3-8b's other linears
	} {
		gpu, s, k := gemvDefault(t, tc.g, tc.sms)
		if k["mma"] != 0 || k["ksplit"] != tc.ksplit || k["unroll"] != tc.unroll {
			t.Errorf("%s on %d SMs: default %v, want mma 0, ksplit %d, unroll %d", tc.g.Name(), tc.sms, k, tc.ksplit, tc.unroll)
		}
		if _, err := tc.g.EmitCUDA(s, gpu, Entry); err != nil {
			t.Errorf("%s: %v", tc.g.Name(), err)
		}
	}
}

// gemvDefault is g's rule-based default on an H100 with sms SMs: the GPU,
// the schedule and its knob values.
func gemvDefault(t *testing.T, g GEMV, sms int) (cuda.GPU, *schedule.Schedule, map[string]int64) {
	t.Helper()
	gpu := cuda.H100
	gpu.SMs = sms
	s, err := search.DefaultSchedule(g, Hardware(gpu))
	if err != nil {
		t.Fatal(err)
	}
	k, err := knobsOf(g.knobs(), s)
	if err != nil {
		t.Fatal(err)
	}
	return gpu, s, k
}

// chosen is k's schedule with its knobs set to values.
func chosen(t *testing.T, k interface {
	Def() (*schedule.Def, error)
	knobs() kernels.Knobs
}, values map[string]int64) *schedule.Schedule {
	t.Helper()
	def, err := k.Def()
	if err != nil {
		t.Fatal(err)
	}
	s, err := schedule.New(def, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.knobs().Choose(s, values); err != nil {
		t.Fatal(err)
	}
	return s
}
