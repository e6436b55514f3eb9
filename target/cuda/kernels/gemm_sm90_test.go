package cudakernels

import (
	"maps"
	"strconv"
	"strings"
	"testing"

	"llmir/search"
	"llmir/target/cuda"
)

// TestGEMMDefaultByShape: from M = 128 on, the default on an H100 is the
// wgmma kernel with the largest tile that still gives nearly every SM a
// block; below, the mma.sync kernel.
func TestGEMMDefaultByShape(t *testing.T) {
	for _, tc := range []struct {
		g    GEMM
		want string
	}{
		{GEMM{M: 4096, N: 4096, K: 4096}, "wgmma block 128x256x64 (2 consumer warpgroups of 64 rows, TMA producer), 4 stages"},
		{GEMM{M: 512, N: 14336, K: 4096}, "wgmma block 128x256x64"},
		{GEMM{M: 1024, N: 4096, K: 4096}, "wgmma block 128x256x64"}, // 128 blocks
		{GEMM{M: 512, N: 4096, K: 4096}, "wgmma block 128x128x64"},  // 64 blocks of 128×256
		{GEMM{M: 2048, N: 1024, K: 4096}, "wgmma block 128x128x64"}, // 64 blocks of 128×256
		{GEMM{M: 1024, N: 1024, K: 4096}, "wgmma block 64x128x64 (1 consumer warpgroups of 64 rows, TMA producer), 6 stages"},
		{GEMM{M: 512, N: 1024, K: 4096}, "wgmma block 64x64x64"}, // 128 blocks
		{GEMM{M: 333, N: 200, K: 1032}, "wgmma block 64x64x64"},  // none fills the GPU: the smallest
		{GEMM{M: 128, N: 8, K: 8}, "wgmma block 64x64x64"},
		{GEMM{M: 127, N: 4096, K: 4096}, "block 128x128x32, warps 2x4"},
		// The last wave's tiles split along K (persist=2) where a wave is
		// full and the last at most half: 448 tiles, 52 in the last wave.
		{GEMM{M: 1024, N: 14336, K: 4096}, "constexpr bool SPLIT = true;"},
		{GEMM{M: 512, N: 128256, K: 4096}, "constexpr bool SPLIT = true;"},   // 2004 tiles, 24 left
		{GEMM{M: 4096, N: 14336, K: 4096}, "gemm<<<TILES, THREADS, SMEM>>>"}, // 76 left: one part
		{GEMM{M: 333, N: 200, K: 1032}, "gemm<<<TILES, THREADS, SMEM>>>"},    // 24 tiles: no full wave
		{GEMM{M: 17, N: 40, K: 64}, "block 128x128x32, warps 2x4"},
	} {
		s, err := search.DefaultSchedule(tc.g, Hardware(cuda.H100))
		if err != nil {
			t.Fatal(err)
		}
		src, err := tc.g.EmitCUDA(s, cuda.H100, Entry)
		if err != nil {
			t.Fatalf("%s: %v", tc.g.Name(), err)
		}
		if !strings.Contains(src, tc.want) {
			t.Errorf("%s: default source lacks %q", tc.g.Name(), tc.want)
		}
		if wg := !strings.Contains(tc.want, "warps 2x4"); wg != strings.Contains(src, "wgmma.mma_async") {
			t.Errorf("%s: wgmma instruction present = %v, want %v", tc.g.Name(), !wg, wg)
		}
	}
}

// TestGEMMWithoutWGMMA: the rule-based default cannot see the arch, so an
// mma=2 point must still print a kernel for a GPU without wgmma: the
// mma.sync block of the former default, with the point's raster group.
func TestGEMMWithoutWGMMA(t *testing.T) {
	g := GEMM{M: 512, N: 4096, K: 4096}
	s, err := search.DefaultSchedule(g, Hardware(cuda.H100))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		arch  string
		wgmma bool
	}{{"sm_90", true}, {"sm_90a", true}, {"sm_80", false}, {"sm_89", false}, {"sm_100", false}} {
		gpu := cuda.H100
		gpu.Arch = tc.arch
		src, err := g.EmitCUDA(s, gpu, Entry)
		if err != nil {
			t.Fatalf("%s: %v", tc.arch, err)
		}
		if got := strings.Contains(src, "wgmma.mma_async"); got != tc.wgmma {
			t.Errorf("%s: wgmma = %v, want %v", tc.arch, got, tc.wgmma)
		}
		if !tc.wgmma && !strings.Contains(src, "block 128x128x32, warps 2x4 (warp tile 64x32), 3 stages, 61440 B shared, group_m 8") {
			t.Errorf("%s: fallback is not the mma.sync default block", tc.arch)
		}
	}
}

// TestWGMMAInstr checks the operand numbering of the generated wgmma: BN/2
// accumulators, then the two descriptors.
func TestWGMMAInstr(t *testing.T) {
	for _, tc := range []struct {
		bn          int64
		last, descs string
	}{{64, `"+f"(d[31])`, "%32, %33"}, {128, `"+f"(d[63])`, "%64, %65"}, {256, `"+f"(d[127])`, "%128, %129"}} {
		src := wgmmaInstr(tc.bn)
		if !strings.Contains(src, "m64n"+strconv.FormatInt(tc.bn, 10)+"k16") || !strings.Contains(src, tc.last) || !strings.Contains(src, tc.descs+", p, 1, 1, 0, 0") {
			t.Errorf("n%d: unexpected instruction:\n%s", tc.bn, src)
		}
		if strings.Contains(src, `"+f"(d[`+strconv.FormatInt(tc.bn/2, 10)+`])`) {
			t.Errorf("n%d: more than %d accumulators", tc.bn, tc.bn/2)
		}
	}
}

// TestSplitParts: the last partial wave's tiles are cut into ⌊sms / rem⌋
// parts along K, at most one a k slice; 1 means nothing is split.
func TestSplitParts(t *testing.T) {
	for _, tc := range []struct{ tiles, sms, kt, want int64 }{
		{448, 132, 64, 2},  // 52 left
		{2004, 132, 64, 5}, // 24 left
		{512, 132, 64, 1},  // 116 left: no room for two parts
		{264, 132, 64, 1},  // whole waves
		{3, 132, 17, 17},   // one part a k slice
		{67, 132, 64, 1},
		{66, 132, 64, 2},
	} {
		if got := splitParts(tc.tiles, tc.sms, tc.kt); got != tc.want {
			t.Errorf("splitParts(%d, %d, %d) = %d, want %d", tc.tiles, tc.sms, tc.kt, got, tc.want)
		}
	}
}

// TestGEMMPersist: persist > 0 is the persistent kernel (one block an SM,
// the legacy stream, the workspace only when split), pinned to 0 at mma=1.
func TestGEMMPersist(t *testing.T) {
	g := GEMM{M: 333, N: 200, K: 1032}
	wg := map[string]int64{"wm": 32, "wn": 32, "warps_m": 1, "warps_n": 1, "bk": 64, "group_m": 8, "mma": 2, "wg_m": 128, "wg_n": 256, "stages": 4}
	for _, tc := range []struct {
		persist int64
		want    []string
	}{
		{0, []string{"gemm<<<TILES, THREADS, SMEM>>>"}},
		{1, []string{"constexpr bool SPLIT = false;", "gemm<<<min(sms, count), THREADS, SMEM, cudaStreamLegacy>>>", "wgmma_scaled("}},
		{2, []string{"constexpr bool SPLIT = true;", "workspace(sizeof(float)", "atomicAdd(n, 1u)"}},
	} {
		k := maps.Clone(wg)
		k["persist"] = tc.persist
		src, err := g.EmitCUDA(chosen(t, g, k), cuda.H100, Entry)
		if err != nil {
			t.Fatalf("persist=%d: %v", tc.persist, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(src, w) {
				t.Errorf("persist=%d: no %q in the source", tc.persist, w)
			}
		}
		if got := strings.Contains(src, "for_each_unit"); got != (tc.persist > 0) {
			t.Errorf("persist=%d: persistent kernel = %v", tc.persist, got)
		}
	}
	mmaSync := map[string]int64{"wm": 64, "wn": 32, "warps_m": 2, "warps_n": 4, "bk": 32, "stages": 3, "group_m": 8, "mma": 1, "wg_m": 64, "wg_n": 64, "persist": 1}
	if _, err := g.EmitCUDA(chosen(t, g, mmaSync), cuda.H100, Entry); err == nil || !strings.Contains(err.Error(), "persist") {
		t.Errorf("mma=1 with persist=1: err %v, want the pinned knob refused", err)
	}
}

// TestGEMMStore: store=2 writes the slab in 16-byte chunks after a quad
// transpose, in both wgmma kernels; it is the default for the tiles of two
// consumer warpgroups only, and pinned to 1 at mma=1.
func TestGEMMStore(t *testing.T) {
	g := GEMM{M: 333, N: 200, K: 1032}
	wg := map[string]int64{"wm": 32, "wn": 32, "warps_m": 1, "warps_n": 1, "bk": 64, "group_m": 8, "mma": 2, "wg_m": 128, "wg_n": 256, "stages": 4}
	for _, persist := range []int64{0, 2} {
		for _, store := range []int64{1, 2} {
			k := maps.Clone(wg)
			k["persist"], k["store"] = persist, store
			src, err := g.EmitCUDA(chosen(t, g, k), cuda.H100, Entry)
			if err != nil {
				t.Fatalf("persist=%d store=%d: %v", persist, store, err)
			}
			chunks := strings.Contains(src, "__shfl_xor_sync(0xffffffffu, send, t)") && strings.Contains(src, "*reinterpret_cast<uint4 *>(out + (size_t)m * N + n)")
			if chunks != (store == 2) || strings.Count(src, "void store_slab(") != 1 {
				t.Errorf("persist=%d store=%d: 16-byte chunk store = %v, store_slab defined %d times", persist, store, chunks, strings.Count(src, "void store_slab("))
			}
		}
	}
	for _, tc := range []struct {
		g     GEMM
		store int64
	}{
		{GEMM{M: 4096, N: 4096, K: 4096}, 2}, // 128×256
		{GEMM{M: 512, N: 4096, K: 4096}, 2},  // 128×128
		{GEMM{M: 1024, N: 1024, K: 4096}, 1}, // 64×128: one consumer
		{GEMM{M: 512, N: 1024, K: 4096}, 1},  // 64×64
		{GEMM{M: 127, N: 4096, K: 4096}, 1},  // mma.sync
	} {
		s, err := search.DefaultSchedule(tc.g, Hardware(cuda.H100))
		if err != nil {
			t.Fatal(err)
		}
		k, err := knobsOf(tc.g.knobs(), s)
		if err != nil {
			t.Fatal(err)
		}
		if k["store"] != tc.store {
			t.Errorf("%s: default store=%d, want %d", tc.g.Name(), k["store"], tc.store)
		}
	}
	mmaSync := map[string]int64{"wm": 64, "wn": 32, "warps_m": 2, "warps_n": 4, "bk": 32, "stages": 3, "group_m": 8, "mma": 1, "wg_m": 64, "wg_n": 64, "store": 2}
	if _, err := g.EmitCUDA(chosen(t, g, mmaSync), cuda.H100, Entry); err == nil || !strings.Contains(err.Error(), "store") {
		t.Errorf("mma=1 with store=2: err %v, want the pinned knob refused", err)
	}
}
