package cgen_test

import (
	"context"
	"fmt"
	"testing"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cpu/cgen"
)

// BenchmarkTailVersioning measures what loop versioning buys on a linear
// layer whose N is not a multiple of the register tile (llama-tiny's MLP,
// 512×688×256, NR = 32): kernels.Linear's default schedule printed with
// and without versioning, and 512×256×256 (no tail) for scale, built and
// run in one harness batch on one thread. ms-versioned should be about
// 688/256 times ms-no-tail.
//
//	go test -run '^$' -bench TailVersioning -benchtime 1x ./target/cpu/cgen/
func BenchmarkTailVersioning(b *testing.B) {
	ctx := context.Background()
	tg, err := cpu.New(ctx, cpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	bits := tg.CPU().VectorBits()
	hw := kernels.Hardware{VectorBits: bits, Threads: 1, L1: 32 << 10, L2: 1 << 20, LLC: 32 << 20}
	emit := func(l kernels.Linear, opt cgen.Options) string {
		def, err := l.Def()
		if err != nil {
			b.Fatal(err)
		}
		s, err := schedule.New(def, 1)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Default(s, hw); err != nil {
			b.Fatal(err)
		}
		opt.Entry, opt.VectorBits = "llmir_linear", bits
		src, err := cgen.Emit(s.Nest(), opt)
		if err != nil {
			b.Fatal(err)
		}
		return src
	}
	tail := kernels.Linear{M: 512, N: 688, K: 256}
	full := kernels.Linear{M: 512, N: 256, K: 256}
	b.Run(fmt.Sprintf("M=%d,N=%d,K=%d/f32/threads=1", tail.M, tail.N, tail.K), func(b *testing.B) {
		cands := []target.Candidate{
			{ID: "versioned", Source: emit(tail, cgen.Options{}), Entry: "llmir_linear", Threads: 1},
			{ID: "unversioned", Source: emit(tail, cgen.Options{NoVersioning: true}), Entry: "llmir_linear", Threads: 1},
			{ID: "no-tail", Source: emit(full, cgen.Options{}), Entry: "llmir_linear", Threads: 1},
		}
		for b.Loop() {
			built, err := tg.Build(ctx, cands)
			if err != nil {
				b.Fatal(err)
			}
			pt := cpu.LinearProblem(cpu.Linear{M: int(tail.M), N: int(tail.N), K: int(tail.K)}, 1)
			pf := cpu.LinearProblem(cpu.Linear{M: int(full.M), N: int(full.N), K: int(full.K)}, 1)
			mt, err := tg.Run(ctx, pt, []target.Built{built["versioned"], built["unversioned"]}, target.RunOptions{})
			if err != nil {
				b.Fatal(err)
			}
			mf, err := tg.Run(ctx, pf, []target.Built{built["no-tail"]}, target.RunOptions{})
			if err != nil {
				b.Fatal(err)
			}
			v, u, f := mt["versioned"], mt["unversioned"], mf["no-tail"]
			for _, m := range []target.Measurement{v, u, f} {
				if m.Status != target.StatusOK {
					b.Fatalf("%s: %s %s", m.CandidateID, m.Status, m.Error)
				}
			}
			b.ReportMetric(v.Median*1e3, "ms-versioned")
			b.ReportMetric(u.Median*1e3, "ms-unversioned")
			b.ReportMetric(f.Median*1e3, "ms-no-tail")
			b.ReportMetric(u.Median/v.Median, "x-speedup")
			b.ReportMetric(pt.FLOPs/v.Median/1e9, "GFLOP/s")
		}
	})
}
