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
	"llmir/schedule/recipe"
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
	threads := envThreads(b)
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
			recipe := "default"
			src := linearSource(b, lin, tg.CPU().VectorBits(), func(s *schedule.Schedule) (err error) {
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
				return err
			})
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

// BenchmarkGEMVOuter measures variants of the decode outer-product recipe
// (recipe.GEMVOuter) side by side in one harness run, next to OpenBLAS, so
// that an A/B of its tiles is not split across two runs of a noisy
// machine. LLMIR_OUTER_TILES lists the variants, separated by ';', each
// NJ,JU,KB,Prefetch,KG (KU is 16).
//
//	LLMIR_OUTER_TILES='4,8,128,8,1;4,6,128,8,4' go test -run '^$' -bench GEMVOuter -benchtime 1x ./target/cpu/cgen/
func BenchmarkGEMVOuter(b *testing.B) {
	benchRecipeVariants(b, "LLMIR_OUTER_TILES", "4,8,128,8,1;4,6,128,8,4", "NJ,JU,KB,Prefetch,KG", "16x4096x4096",
		func(s *schedule.Schedule, v []int64, threads, _ int) error {
			_, err := recipe.GEMVOuter(s, "out", recipe.GEMVOuterTiles{MV: 16, NJ: schedule.Lit(v[0]), JU: schedule.Lit(v[1]), KU: schedule.Lit(16),
				KB: schedule.Lit(v[2]), KG: v[4], Prefetch: schedule.Lit(v[3]), Stream: "w", Parallel: threads > 1})
			return err
		})
}

// BenchmarkGEMM measures variants of the prefill GEMM recipe
// (recipe.GEMM, NR = 2 vectors) side by side in one harness run, next to
// OpenBLAS. LLMIR_GEMM_VARIANTS lists them, separated by ';', each
// MR,NB,KC,PackA (PackA 0 or 1).
//
//	LLMIR_GEMM_VARIANTS='12,16,256,0;12,16,256,1' LLMIR_LINEAR_SHAPES=512x14336x4096 go test -run '^$' -bench GEMM -benchtime 1x ./target/cpu/cgen/
func BenchmarkGEMM(b *testing.B) {
	benchRecipeVariants(b, "LLMIR_GEMM_VARIANTS", "12,16,256,0;12,16,256,1", "MR,NB,KC,PackA", "512x14336x4096",
		func(s *schedule.Schedule, v []int64, threads, vectorBits int) error {
			_, err := recipe.GEMM(s, "out", recipe.GEMMTiles{MR: schedule.Lit(v[0]), NR: int64(2 * vectorBits / 32), NB: schedule.Lit(v[1]),
				KC: schedule.Lit(v[2]), PackA: v[3] != 0, Parallel: threads > 1})
			return err
		})
}

// benchRecipeVariants measures, for each shape of LLMIR_LINEAR_SHAPES
// (default shapes), the linear scheduled by apply with each variant of
// the ';'-separated list in env (default defs; each variant the integers
// named by fields, ','-separated) beside OpenBLAS in one harness run, at
// LLMIR_THREADS threads.
func benchRecipeVariants(b *testing.B, env, defs, fields, shapes string, apply func(s *schedule.Schedule, v []int64, threads, vectorBits int) error) {
	list := defs
	if v := os.Getenv(env); v != "" {
		list = v
	}
	variants := strings.Split(list, ";")
	want := len(strings.Split(fields, ","))
	threads := envThreads(b)
	ctx := context.Background()
	tg, err := cpu.New(ctx, cpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	bits := tg.CPU().VectorBits()
	for _, sh := range envList(b, "LLMIR_LINEAR_SHAPES", shapes) {
		var l cpu.Linear
		if _, err := fmt.Sscanf(sh, "%dx%dx%d", &l.M, &l.N, &l.K); err != nil {
			b.Fatalf("shape %q: want MxNxK", sh)
		}
		b.Run(fmt.Sprintf("M=%d,N=%d,K=%d/f32/threads=%d", l.M, l.N, l.K, threads), func(b *testing.B) {
			lin := kernels.Linear{M: int64(l.M), N: int64(l.N), K: int64(l.K)}
			blas := cpu.OpenBLASCandidate("openblas", l, threads)
			blas.UnsetEnv = cpu.OpenBLASUnsetEnv
			cands := []target.Candidate{blas}
			// The kernel's rule-based default beside the variants, so that
			// a variant is judged against what an untuned user gets.
			src := linearSource(b, lin, bits, func(s *schedule.Schedule) error {
				return lin.Default(s, kernels.Hardware{VectorBits: bits, Threads: threads})
			})
			cands = append(cands, target.Candidate{ID: "default", Source: src, Entry: "llmir_linear", Threads: threads})
			for i, v := range variants {
				var vals []int64
				for _, f := range strings.Split(v, ",") {
					n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
					if err != nil {
						vals = nil
						break
					}
					vals = append(vals, n)
				}
				if len(vals) != want {
					b.Fatalf("%s variant %d %q: want %s", env, i+1, v, fields)
				}
				src := linearSource(b, lin, bits, func(s *schedule.Schedule) error {
					if err := apply(s, vals, threads, bits); err != nil {
						return fmt.Errorf("variant %q: %w", v, err)
					}
					return nil
				})
				cands = append(cands, target.Candidate{ID: fmt.Sprintf("%d:%s", i+1, v), Source: src, Entry: "llmir_linear", Threads: threads})
			}
			measureVariants(ctx, b, tg, cpu.LinearProblem(l, 1), cands, threads)
		})
	}
}

// linearSource is lin scheduled by apply and printed as C.
func linearSource(b *testing.B, lin kernels.Linear, vectorBits int, apply func(*schedule.Schedule) error) string {
	b.Helper()
	def, err := lin.Def()
	if err != nil {
		b.Fatal(err)
	}
	s, err := schedule.New(def, 1)
	if err != nil {
		b.Fatal(err)
	}
	if err := apply(s); err != nil {
		b.Fatal(err)
	}
	src, err := cgen.Emit(s.Nest(), cgen.Options{Entry: "llmir_linear", VectorBits: vectorBits})
	if err != nil {
		b.Fatal(err)
	}
	return src
}

// envThreads is LLMIR_THREADS (default 1).
func envThreads(b *testing.B) int {
	v := os.Getenv("LLMIR_THREADS")
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("LLMIR_THREADS=%q: want a positive integer", v)
	}
	return n
}

// measureVariants builds the candidates, measures them in one harness run
// and logs each one's median, IQR, rates, ratio to the first (the
// baseline) and share of the read bandwidth cpu.ReadCandidate measures
// over as many bytes just after, at the same thread count.
func measureVariants(ctx context.Context, b *testing.B, tg *cpu.Target, p *target.Problem, cands []target.Candidate, threads int) {
	rp := cpu.ReadProblem(int64(p.Bytes), p.Seed)
	for b.Loop() {
		built, err := tg.Build(ctx, cands)
		if err != nil {
			b.Fatal(err)
		}
		var list []target.Built
		for _, c := range cands {
			list = append(list, built[c.ID])
		}
		ms, err := tg.Run(ctx, p, list, target.RunOptions{})
		if err != nil {
			b.Fatal(err)
		}
		rb, err := tg.Build(ctx, []target.Candidate{cpu.ReadCandidate("read", threads)})
		if err != nil {
			b.Fatal(err)
		}
		rs, err := tg.Run(ctx, rp, []target.Built{rb["read"]}, target.RunOptions{})
		if err != nil {
			b.Fatal(err)
		}
		read := rs["read"]
		if read.Status != target.StatusOK {
			b.Fatalf("read baseline: %s %s", read.Status, read.Error)
		}
		_, readGBs := rp.Rates(read.Median)
		b.Logf("read baseline %.1f GB/s over %.0f MiB", readGBs, p.Bytes/(1<<20))
		ref := ms[cands[0].ID]
		for _, c := range cands {
			m := ms[c.ID]
			if m.Status != target.StatusOK {
				b.Fatalf("%s: %s %s", c.ID, m.Status, m.Error)
			}
			gbs := p.Bytes / m.Median / 1e9
			b.Logf("%-16s %.3f ms (IQR %.3f–%.3f) %.1f GFLOP/s %.1f GB/s (%.0f%% read) %.2f× %s", c.ID, m.Median*1e3, m.Q1*1e3, m.Q3*1e3,
				p.FLOPs/m.Median/1e9, gbs, 100*gbs/readGBs, ref.Median/m.Median, cands[0].ID)
		}
	}
}
