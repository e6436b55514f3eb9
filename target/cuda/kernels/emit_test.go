package cudakernels

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"llmir/search"
	"llmir/target/cuda"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// golden compares got with testdata/file, or rewrites the file with -update.
func golden(t *testing.T, file, got string) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./target/cuda/kernels -update)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test ./target/cuda/kernels -run %s -update after checking the change)", path, t.Name())
	}
}

// goldenKernels are the defaults whose generated source is pinned.
var goldenKernels = []struct {
	file string
	k    Kernel
}{
	{"gemv_m1.cu", GEMV{M: 1, N: 4096, K: 4096}},
	{"gemv_m16.cu", GEMV{M: 16, N: 28672, K: 4096}},
	{"gemv_m16_n1024.cu", GEMV{M: 16, N: 1024, K: 4096}},
	{"cublas_gemv.cu", GEMVCuBLAS{GEMV{M: 16, N: 4096, K: 14336}}},
	{"paged_attention_bs16.cu", PagedAttention{Batch: 32, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: 16, Context: 4096}},
	{"paged_attention_split.cu", PagedAttention{Batch: 2, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: 64, Context: 4096}},
	{"attention_prefill_s512.cu", PrefillAttention{Batch: 1, Seq: 512, QHeads: 32, KVHeads: 8, HeadDim: 128}},
	{"attention_prefill_tails.cu", PrefillAttention{Batch: 2, Seq: 77, QHeads: 4, KVHeads: 1, HeadDim: 64}},
	{"gemm_m512.cu", GEMM{M: 512, N: 4096, K: 4096}},
	{"gemm_tails.cu", GEMM{M: 77, N: 130, K: 264}},
	{"gemm_sm90_tails.cu", GEMM{M: 333, N: 200, K: 1032}},
	{"gemm_sm90_split.cu", GEMM{M: 1024, N: 14336, K: 4096}},
	{"cublas_gemm.cu", GEMMCuBLAS{GEMM{M: 2048, N: 28672, K: 4096}}},
	{"rms_norm.cu", RMSNorm{M: 16, H: 4096}},
	{"silu_mul.cu", SiluMul{M: 16, I: 14336}},
	{"embedding_decode.cu", Embedding{Tokens: 1, Vocab: 128256, Hidden: 4096}},
	{"embedding_odd.cu", Embedding{Tokens: 5, Vocab: 50, Hidden: 1001}},
	{"argmax_decode.cu", Argmax{M: 1, N: 128256}},
	{"argmax_prefill.cu", Argmax{M: 512, N: 128256}},
}

func TestGoldenSources(t *testing.T) {
	for _, g := range goldenKernels {
		t.Run(g.file, func(t *testing.T) {
			s, err := search.DefaultSchedule(g.k, Hardware(cuda.H100))
			if err != nil {
				t.Fatal(err)
			}
			src, err := g.k.EmitCUDA(s, cuda.H100, Entry)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, g.file, src)
			// The ABI: one C++-linkage entry of the given name.
			if !strings.Contains(src, "int "+Entry+"(void *const *bufs, const int64_t *dims)") {
				t.Errorf("no entry %s in the source", Entry)
			}
			if strings.Contains(src, `extern "C"`) {
				t.Errorf("the source declares C linkage itself; the builder gives it")
			}
		})
	}
}
