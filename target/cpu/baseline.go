package cpu

import (
	"fmt"
	"runtime"
	"sync"

	"llmir/target"
)

// BaselineEntry is the entry symbol of every baseline candidate.
const BaselineEntry = "llmir_baseline"

// OpenBLASUnsetEnv are the variables benchmarks unset for the OpenBLAS
// baseline only: set on this machine, they pin OpenBLAS to a kernel and L2
// size slower than its best (never unset them in tests).
var OpenBLASUnsetEnv = []string{"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}

// Linear is the shape of a linear layer out[M,N] = a[M,K] · w[N,K]ᵀ with
// row-major weights [N,K], as in Llama's checkpoints.
type Linear struct{ M, N, K int }

func (l Linear) String() string { return fmt.Sprintf("M=%d,N=%d,K=%d", l.M, l.N, l.K) }

// LinearProblem is the f32 linear layer as a target.Problem: buffers a, w,
// out in ABI order and one dynamic dim, M (dims[0]). The reference
// accumulates in float64 and splits rows across goroutines, since the
// prefill shapes are tens of GFLOP.
func LinearProblem(l Linear, seed uint64) *target.Problem {
	m, n, k := int64(l.M), int64(l.N), int64(l.K)
	return &target.Problem{
		Name: "linear/" + l.String() + "/f32",
		Buffers: []target.BufferSpec{
			{Name: "a", DType: target.F32, Elems: m * k},
			{Name: "w", DType: target.F32, Elems: n * k},
			{Name: "out", DType: target.F32, Elems: m * n, Output: true},
		},
		Dims:  []int64{m},
		Seed:  seed,
		FLOPs: 2 * float64(m*n*k),
		Bytes: 4 * float64(m*k+n*k+m*n),
		Reference: func(in [][]float64) [][]float64 {
			a, w := in[0], in[1]
			out := make([]float64, m*n)
			var wg sync.WaitGroup
			workers := int64(runtime.GOMAXPROCS(0))
			for g := range workers {
				wg.Go(func() {
					// Columns are split (not rows) so that M=1 uses every worker.
					for j := g; j < n; j += workers {
						wr := w[j*k : (j+1)*k]
						for i := range m {
							out[i*n+j] = target.Dot(a[i*k:(i+1)*k], wr)
						}
					}
				})
			}
			wg.Wait()
			return [][]float64{out}
		},
	}
}

// OpenBLASCandidate calls cblas_sgemm (cblas_sgemv when M = 1, where it is
// OpenBLAS's faster path) from Debian's libopenblas.
func OpenBLASCandidate(id string, l Linear, threads int) target.Candidate {
	src := fmt.Sprintf(`#include <stdint.h>
#include <cblas.h>

int %s(void *const *bufs, const int64_t *dims) {
	const float *a = bufs[0], *w = bufs[1];
	float *out = bufs[2];
	const int m = (int)dims[0], n = %d, k = %d;
	if (m == 1)
		cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k, a, 1, 0.0f, out, 1);
	else
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, w, k, 0.0f, out, n);
	return 0;
}
`, BaselineEntry, l.N, l.K)
	return target.Candidate{
		ID: id, Source: src, Entry: BaselineEntry, Threads: threads,
		CFlags:  []string{"-I/usr/include/x86_64-linux-gnu", "-I/usr/include/openblas"},
		LDFlags: []string{"-lopenblas"},
	}
}

// NaiveCandidate is the textbook loop (f32 accumulation, OpenMP over rows
// of w so that decode shapes split too): what a compiler gives without a
// schedule.
func NaiveCandidate(id string, l Linear, threads int) target.Candidate {
	src := fmt.Sprintf(`#include <stdint.h>

int %s(void *const *bufs, const int64_t *dims) {
	const float *restrict a = bufs[0], *restrict w = bufs[1];
	float *restrict out = bufs[2];
	const int64_t m = dims[0], n = %d, k = %d;
	#pragma omp parallel for
	for (int64_t j = 0; j < n; j++)
		for (int64_t i = 0; i < m; i++) {
			float s = 0.0f;
			for (int64_t kk = 0; kk < k; kk++)
				s += a[i * k + kk] * w[j * k + kk];
			out[i * n + j] = s;
		}
	return 0;
}
`, BaselineEntry, l.N, l.K)
	return target.Candidate{ID: id, Source: src, Entry: BaselineEntry, Threads: threads}
}

// readPage is the f32 elements of one page of ReadProblem (4 KiB).
const readPage = 1024

// ReadProblem is the read-bandwidth baseline as a target.Problem: x holds
// bytes (rounded up to whole 4 KiB pages) and out[p] is the sum of page p,
// so the baseline is validated like any candidate and one output per page
// proves every page was read. Suites that state a kernel's share of read
// bandwidth measure this beside it with the same runner, the same input
// rotation and the same thread count, instead of relying on the probe
// cached at some earlier moment: on a shared machine the bandwidth moves
// by tens of percent over a day.
func ReadProblem(bytes int64, seed uint64) *target.Problem {
	pages := max((bytes+4*readPage-1)/(4*readPage), 1)
	return &target.Problem{
		Name: fmt.Sprintf("read/pages=%d/f32", pages),
		Buffers: []target.BufferSpec{
			{Name: "x", DType: target.F32, Elems: pages * readPage},
			{Name: "out", DType: target.F32, Elems: pages, Output: true},
		},
		Dims:  []int64{pages},
		Seed:  seed,
		Bytes: 4 * float64(pages*readPage+pages),
		Reference: func(in [][]float64) [][]float64 {
			x := in[0]
			out := make([]float64, pages)
			for p := range out {
				for _, v := range x[int64(p)*readPage : int64(p+1)*readPage] {
					out[p] += v
				}
			}
			return [][]float64{out}
		},
	}
}

// ReadCandidate reads ReadProblem's x as four concurrent sequential
// streams per thread: each thread takes a contiguous range of pages, cuts
// it in four, and walks the quarters side by side, 2 KiB of each in turn,
// into two sums per stream. One core's hardware prefetchers sustain more
// with several streams than with one: on the development VM (one thread,
// 64 MiB, rotated, medians in one harness run) 36–40 GB/s against 26–29
// for a single stream with or without software prefetch; 8 streams or
// 512-byte turns were slower again. A baseline slower than the best simple
// read would flatter every kernel measured against it (the decode GEMV,
// which streams several rows of w at once, read faster than the single
// stream).
func ReadCandidate(id string, threads int) target.Candidate {
	src := fmt.Sprintf(`#include <stdint.h>
#include <string.h>
#include <omp.h>

#define PAGE %d
#define NS 4
#define CH 512
typedef float vf __attribute__((vector_size(64)));
static inline vf ld(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline float hsum(vf s) { float t = 0; for (int i = 0; i < 16; i++) t += s[i]; return t; }

int %s(void *const *bufs, const int64_t *dims) {
	const float *x = bufs[0];
	float *out = bufs[1];
	const int64_t pages = dims[0];
	#pragma omp parallel
	{
		const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
		const int64_t lo = pages * t / nt, hi = pages * (t + 1) / nt, q = (hi - lo) / NS;
		for (int64_t p = lo; p < lo + q; p++) {
			vf a[NS] = {0}, b[NS] = {0};
			for (int c = 0; c < PAGE; c += CH)
				for (int s = 0; s < NS; s++) {
					const float *r = x + (p + s * q) * PAGE + c;
					vf u = a[s], v = b[s];
					for (int o = 0; o < CH; o += 32) {
						u += ld(r + o);
						v += ld(r + o + 16);
					}
					a[s] = u;
					b[s] = v;
				}
			for (int s = 0; s < NS; s++) out[p + s * q] = hsum(a[s] + b[s]);
		}
		for (int64_t p = lo + NS * q; p < hi; p++) {
			vf a = {0}, b = {0};
			for (int o = 0; o < PAGE; o += 32) {
				a += ld(x + p * PAGE + o);
				b += ld(x + p * PAGE + o + 16);
			}
			out[p] = hsum(a + b);
		}
	}
	return 0;
}
`, readPage, BaselineEntry)
	return target.Candidate{ID: id, Source: src, Entry: BaselineEntry, Threads: threads}
}
