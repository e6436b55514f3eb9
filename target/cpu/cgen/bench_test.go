package cgen_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/schedule/schedtest"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cpu/cgen"
)

// BenchmarkLinear builds kernels.Linear's default schedule (the GEMM recipe
// for M > 16, GEMV for decode) through cgen and measures it with
// target/cpu's harness next to OpenBLAS in the same run (OPENBLAS_*
// overrides unset for OpenBLAS only), reporting GFLOP/s, GB/s and the ratio
// to OpenBLAS. LLMIR_GEMM_TILES and LLMIR_GEMV_TILES override the tiles;
// LLMIR_DECODE_GEMM=1 uses the GEMM recipe for M ≤ 16 too.
//
//	go test -run '^$' -bench Linear -benchtime 1x ./target/cpu/cgen/
//	LLMIR_LINEAR_SHAPES=4x4096x4096 LLMIR_GEMV_TILES=64,4,4 go test -run '^$' -bench Linear -benchtime 1x ./target/cpu/cgen/
//	LLMIR_LINEAR_SHAPES=512x4096x4096 LLMIR_THREADS=2 LLMIR_GEMM_TILES=8,32,256,256 go test -run '^$' -bench Linear -benchtime 1x ./target/cpu/cgen/
func BenchmarkLinear(b *testing.B) {
	shapes := envList(b, "LLMIR_LINEAR_SHAPES", "512x4096x4096,1x4096x4096,16x4096x4096")
	threads := 1
	if v := os.Getenv("LLMIR_THREADS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("LLMIR_THREADS=%q: want a positive integer", v)
		}
		threads = n
	}
	// Without overrides the schedule is kernels.Linear's rule-based
	// Default, so the numbers are what an untuned user gets.
	var gemm *schedtest.GEMMTiles
	if v := os.Getenv("LLMIR_GEMM_TILES"); v != "" {
		gemm = &schedtest.GEMMTiles{Parallel: true}
		if _, err := fmt.Sscanf(v, "%d,%d,%d,%d", &gemm.MR, &gemm.NR, &gemm.NC, &gemm.KC); err != nil {
			b.Fatalf("LLMIR_GEMM_TILES=%q: want MR,NR,NC,KC", v)
		}
	}
	var gemv *schedtest.GEMVTiles
	if v := os.Getenv("LLMIR_GEMV_TILES"); v != "" {
		gemv = &schedtest.GEMVTiles{KV: 16, Parallel: true}
		if _, err := fmt.Sscanf(v, "%d,%d,%d", &gemv.JB, &gemv.MR, &gemv.JU); err != nil {
			b.Fatalf("LLMIR_GEMV_TILES=%q: want JB,MR,JU", v)
		}
	}
	forceGEMM := os.Getenv("LLMIR_DECODE_GEMM") != ""
	ctx := context.Background()
	tg, err := cpu.New(ctx, cpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, sh := range shapes {
		var l cpu.Linear
		if _, err := fmt.Sscanf(sh, "%dx%dx%d", &l.M, &l.N, &l.K); err != nil {
			b.Fatalf("shape %q: want MxNxK", sh)
		}
		b.Run(fmt.Sprintf("M=%d,N=%d,K=%d/f32/threads=%d", l.M, l.N, l.K, threads), func(b *testing.B) {
			lin := kernels.Linear{M: int64(l.M), N: int64(l.N), K: int64(l.K)}
			def, err := lin.Def()
			if err != nil {
				b.Fatal(err)
			}
			s, err := schedule.New(def, 1)
			if err != nil {
				b.Fatal(err)
			}
			recipe := "default"
			switch {
			case gemv != nil && l.M <= 16 && !forceGEMM:
				gv := *gemv
				gv.MR = min(gv.MR, int64(l.M))
				_, err = schedtest.GEMV(s, "out", gv)
				recipe = fmt.Sprintf("gemv%+v", gv)
			case gemm != nil && (l.M > 16 || forceGEMM):
				tl := *gemm
				// Enough column blocks for every thread: the parallel
				// loop is over N/NC.
				for tl.NC > tl.NR && int(int64(l.N)/tl.NC) < 2*threads {
					tl.NC /= 2
				}
				_, err = schedtest.GEMM(s, "out", tl)
				recipe = fmt.Sprintf("gemm%+v", tl)
			default:
				err = lin.Default(s, kernels.Hardware{VectorBits: tg.CPU().VectorBits(), Threads: threads})
			}
			if err != nil {
				b.Fatal(err)
			}
			src, err := cgen.Emit(s.Nest(), cgen.Options{Entry: "llmir_linear", VectorBits: tg.CPU().VectorBits()})
			if err != nil {
				b.Fatal(err)
			}
			blas := cpu.OpenBLASCandidate("openblas", l, threads)
			blas.UnsetEnv = cpu.OpenBLASUnsetEnv
			cands := []target.Candidate{{ID: "llmir", Source: src, Entry: "llmir_linear", Threads: threads}, blas}
			p := cpu.LinearProblem(l, 1)
			for b.Loop() {
				built, err := tg.Build(ctx, cands)
				if err != nil {
					b.Fatal(err)
				}
				list := []target.Built{built["llmir"], built["openblas"]}
				ms, err := tg.Run(ctx, p, list, target.RunOptions{})
				if err != nil {
					b.Fatal(err)
				}
				ours, ref := ms["llmir"], ms["openblas"]
				if ours.Status != target.StatusOK || ref.Status != target.StatusOK {
					b.Fatalf("llmir: %s %s; openblas: %s %s", ours.Status, ours.Error, ref.Status, ref.Error)
				}
				b.ReportMetric(p.FLOPs/ours.Median/1e9, "GFLOP/s")
				b.ReportMetric(p.Bytes/ours.Median/1e9, "GB/s")
				b.ReportMetric(p.FLOPs/ref.Median/1e9, "openblas-GFLOP/s")
				b.ReportMetric(ref.Median/ours.Median, "x-openblas")
				b.Logf("%s: llmir %.3f ms, openblas %.3f ms", recipe, ours.Median*1e3, ref.Median*1e3)
			}
		})
	}
}

func envList(b *testing.B, key, def string) []string {
	v := os.Getenv(key)
	if v == "" {
		v = def
	}
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		b.Fatalf("%s is empty", key)
	}
	return out
}
