package cudakernels

import (
	"fmt"
	"runtime"
	"strings"
	"sync"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/target"
	"llmir/target/cuda"
)

// Entry is the name every generated source gives its entry function; the
// builder exports it under a batch-unique C symbol.
const Entry = "llmir_kernel"

// Kernel is a kernel with a CUDA side.
type Kernel interface {
	kernels.Kernel
	cuda.Generator
}

// Linker is implemented by kernels whose code needs libraries (cuBLAS).
type Linker interface {
	LDFlags() []string
}

// Hardware is the kernels.Hardware view of a GPU that the design spaces
// read: Threads is the SM count (the parallelism a grid must fill) and L2
// the L2 size. VectorBits is the widest global load (16 bytes).
func Hardware(g cuda.GPU) kernels.Hardware {
	return kernels.Hardware{VectorBits: 128, Threads: max(g.SMs, 1), L2: g.L2Bytes, LLC: g.L2Bytes}
}

// NewCandidate prints schedule s of k as a CUDA candidate. An error is a
// failure of this schedule (a build_error for the tuner), not of the
// infrastructure.
func NewCandidate(id string, k Kernel, s *schedule.Schedule, g cuda.GPU) (target.Candidate, error) {
	src, err := k.EmitCUDA(s, g, Entry)
	if err != nil {
		return target.Candidate{}, fmt.Errorf("emit %s: %w", k.Name(), err)
	}
	c := target.Candidate{ID: id, Source: src, Entry: Entry, Threads: 1}
	if l, ok := k.(Linker); ok {
		c.LDFlags = l.LDFlags()
	}
	return c, nil
}

// prelude is the head of every generated source: includes and the bf16
// helpers (plain bit operations, so they compile the same on every arch).
const prelude = `#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }
`

// vecType is the CUDA type of one load of v bf16 values and its number of
// 32-bit words.
func vecType(v int64) (string, int, error) {
	switch v {
	case 8:
		return "uint4", 4, nil
	case 4:
		return "uint2", 2, nil
	case 2:
		return "uint32_t", 1, nil
	}
	return "", 0, fmt.Errorf("vector width %d bf16 (want 2, 4 or 8)", v)
}

// unpack is a device function that widens one vector of V bf16 to floats;
// every generated kernel with vector loads defines it the same way.
func unpack(v int64) string {
	typ, words, _ := vecType(v)
	var b strings.Builder
	fmt.Fprintf(&b, "typedef %s vec_t; // %d bf16 = %d bytes per load\n", typ, v, v*2)
	b.WriteString("__device__ __forceinline__ void unpack(const vec_t &p, float *f) {\n")
	if words == 1 {
		b.WriteString("  f[0] = bf_lo(p); f[1] = bf_hi(p);\n")
	} else {
		for i, c := range []string{"x", "y", "z", "w"}[:words] {
			fmt.Fprintf(&b, "  f[%d] = bf_lo(p.%s); f[%d] = bf_hi(p.%s);\n", 2*i, c, 2*i+1, c)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// unpackLoad is unpack plus ldv, a streaming (evict-first) load of one
// vector, for widths up to 16 bf16. Sixteen are two 16-byte loads
// VEC16_STRIDE elements apart (a constexpr of the including source): eight
// lanes then read 128 contiguous bytes per instruction, where two adjacent
// 16-byte halves per lane would touch every sector twice.
func unpackLoad(v int64) string {
	if v != 16 {
		return unpack(v) + "__device__ __forceinline__ vec_t ldv(const __nv_bfloat16 *p) { return __ldcs(reinterpret_cast<const vec_t *>(p)); }\n"
	}
	return `struct vec_t { uint4 a, b; }; // 16 bf16 = 32 bytes per load (two 16-byte loads)
__device__ __forceinline__ void unpack(const vec_t &p, float *f) {
  const uint32_t w[8] = {p.a.x, p.a.y, p.a.z, p.a.w, p.b.x, p.b.y, p.b.z, p.b.w};
#pragma unroll
  for (int i = 0; i < 8; i++) { f[2 * i] = bf_lo(w[i]); f[2 * i + 1] = bf_hi(w[i]); }
}
__device__ __forceinline__ vec_t ldv(const __nv_bfloat16 *p) {
  const uint4 *q = reinterpret_cast<const uint4 *>(p);
  return vec_t{__ldcs(q), __ldcs(q + VEC16_STRIDE / 8)};
}
`
}

// launchCheck ends an entry: the launch's error (configuration, missing
// kernel image) is the entry's return value.
const launchCheck = "  return (int)cudaGetLastError();\n"

// knobsOf reads the knob values recorded in s.
func knobsOf(ks kernels.Knobs, s *schedule.Schedule) (map[string]int64, error) {
	v, err := ks.Read(s)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// bf16Buf declares a template-def parameter.
func bf16Buf(name string, dims ...int64) *schedule.Tensor {
	sd := make([]schedule.Dim, len(dims))
	for i, d := range dims {
		sd[i] = schedule.Static(d)
	}
	return schedule.Declare(name, schedule.BF16, sd...)
}

func i32Buf(name string, dims ...int64) *schedule.Tensor {
	sd := make([]schedule.Dim, len(dims))
	for i, d := range dims {
		sd[i] = schedule.Static(d)
	}
	return schedule.Declare(name, schedule.I32, sd...)
}

// parallelRows runs f(0..n-1) on all cores: the references of the
// benchmark shapes (a 512 MiB KV cache, a 28672×4096 weight) take seconds
// single-threaded.
func parallelRows(n int, f func(i int)) {
	workers := min(runtime.NumCPU(), n)
	var wg sync.WaitGroup
	next := make(chan int, workers)
	for range workers {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// CodegenVersion is stamped on the CUDA records: bump it when a generator
// changes what a stored knob trace means (2: cuda_gemm gained group_m; 3: cuda_gemv mma=2
// split-K, paged attention cp.async rings and a new partition rule; 4: cuda_gemm
// mma=2 wgmma with wg_m/wg_n, cuda_gemv mma=3 and stages, paged attention's
// head-major grid; 5: paged attention's balance knob and in-kernel merge of
// split partials, the GEMV ring's K-block target and small-N rule; 6: paged
// attention's mma knob, tensor-core q·k and p·v, the default where the shape allows).
// The CPU's version (cgen.CodegenVersion) moves independently.
const CodegenVersion = 6
