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
// attention's mma knob, tensor-core q·k and p·v, the default where the shape allows;
// 7: cuda_gemm's persist knob, the split last wave the default where it has
// two or more parts a tile; cuda_gemv's M = 1 default splits K eight ways;
// 8: cuda_gemm's store knob, 16-byte chunks the default for two consumer
// warpgroups). The CPU's version (cgen.CodegenVersion) moves independently.
const CodegenVersion = 8

// tensorCoreHelpers are the device functions the tensor-core kernels
// share (cuda_gemm's mma.sync path and paged attention's mma=1): shared
// addresses, zero-filling 16-byte cp.async copies and their groups,
// ldmatrix of four 8×8 tiles and the m16n8k16 bf16 mma.
const tensorCoreHelpers = `
__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16 bytes global → shared, bypassing L1; bytes < 16 zero-fill the rest
// (0 for a chunk outside the matrix, whose address is then clamped).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N_> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N_)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t *r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// Not volatile: a pure register operation, so the compiler may interleave
// it with the (volatile, shared-memory-reading) ldmatrix of the next step.
__device__ __forceinline__ void mma(float *c, const uint32_t *a, const uint32_t *b) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

`
