package cudakernels

import (
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
		if wg := strings.Contains(tc.want, "wgmma"); wg != strings.Contains(src, "wgmma.mma_async") {
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
