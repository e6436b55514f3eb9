//go:build gpu

package cudakernels_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"llmir/target"
	"llmir/target/cuda"
	"llmir/target/cuda/cudabench"
	cudakernels "llmir/target/cuda/kernels"
)

// TestLoopNestOnGPU builds, validates and times the loop-nest kernels'
// default and sampled schedules on the machine's GPU beside their baselines
// (go test -tags gpu ./target/cuda/kernels -run LoopNestOnGPU -v): cuBLAS
// for the linear layers, the template kernel for the element-wise ops.
func TestLoopNestOnGPU(t *testing.T) {
	ctx := context.Background()
	tg, err := cuda.New(ctx, cuda.Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var tasks []cudabench.Task
	for _, g := range []cudakernels.GEMV{{M: 1, N: 37, K: 512}, {M: 3, N: 257, K: 1024}, {M: 16, N: 130, K: 768},
		{M: 1, N: 4096, K: 4096}, {M: 16, N: 4096, K: 4096}, {M: 1, N: 14336, K: 4096}} {
		tasks = append(tasks, cudabench.Task{Kernel: cudakernels.LoopNestGEMV{GEMV: g}, Baseline: cudakernels.GEMVCuBLAS{GEMV: g}})
	}
	for _, g := range []cudakernels.GEMM{{M: 16, N: 8, K: 16}, {M: 64, N: 48, K: 32}, {M: 256, N: 384, K: 512}, {M: 512, N: 4096, K: 4096}, {M: 2048, N: 4096, K: 4096}} {
		tasks = append(tasks, cudabench.Task{Kernel: cudakernels.LoopNestGEMM{GEMM: g}, Baseline: cudakernels.GEMMCuBLAS{GEMM: g}})
	}
	for _, p := range []cudakernels.Pointwise{{Op: cudakernels.OpMul, M: 3, H: 1000}, {Op: cudakernels.OpAdd, M: 5, H: 4104},
		{Op: cudakernels.OpMul, M: 1, H: 14}, {Op: cudakernels.OpAdd, M: 16, H: 14336}, {Op: cudakernels.OpMul, M: 512, H: 14336}} {
		tasks = append(tasks, cudabench.Task{Kernel: cudakernels.LoopNestElementwise{Pointwise: p}, Baseline: p})
	}
	rep, err := cudabench.Run(ctx, tg, tasks, cudabench.Options{Samples: 8, Seed: 1,
		Run: target.RunOptions{Warmup: 2 * time.Millisecond, Budget: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Rows {
		line := r.Kernel
		if r.Default != nil {
			line += " default " + string(r.Default.Measurement.Status) + " " + time.Duration(r.Default.Measurement.Median*1e9).String()
		}
		if r.Best != nil {
			line += " best " + time.Duration(r.Best.Measurement.Median*1e9).String()
		}
		if r.Baseline != nil {
			line += " baseline " + string(r.Baseline.Measurement.Status) + " " + time.Duration(r.Baseline.Measurement.Median*1e9).String()
		}
		t.Logf("%s vs_baseline=%.2f GB/s=%.0f TFLOPS=%.1f counts=%v", line, r.VsBaseline, r.BestGBps, r.BestTFLOPS, r.Counts)
		if r.Best != nil && !r.Best.Default {
			var tr struct {
				Insts []struct {
					Op       string
					Decision []int64
				}
			}
			if json.Unmarshal(r.Best.Trace, &tr) == nil {
				var ds []int64
				for _, in := range tr.Insts {
					ds = append(ds, in.Decision...)
				}
				t.Logf("  best decisions %v", ds)
			}
		}
		for _, f := range r.Failures {
			t.Errorf("%s: %s", r.Kernel, f)
		}
	}
	for _, f := range rep.Failed() {
		t.Error(f)
	}
}
