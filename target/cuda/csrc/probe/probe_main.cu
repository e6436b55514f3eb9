// probe_main ROUNDS name:BS:path.so ... — times paged-attention variants
// side by side (L2 flushed before every call, CUDA events, rounds
// interleaved over variants), validating each against a naive reference.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <vector>
#include <string>
#include <algorithm>
#include <random>
#include <map>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)
constexpr int B = 32, QH = 32, KVH = 8, D = 128, CTX = 4096;
typedef int (*entry_fn)(void *const *, const int64_t *);

__global__ void fill(__nv_bfloat16 *p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t x = (uint32_t)i * 2654435761u ^ seed;
    x ^= x >> 15; x *= 0x2c1b3c6du; x ^= x >> 12; x *= 0x297a2d39u; x ^= x >> 15;
    p[i] = __float2bfloat16((x >> 8) * (2.f / 16777216.f) - 1.f);
  }
}
__global__ void rd(const uint4 *__restrict__ p, size_t n, unsigned *sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint4 v = __ldcg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}
// ref: block (h, b), 256 threads, float math.
__global__ void ref(const __nv_bfloat16 *q, const __nv_bfloat16 *pool, const int *bt, int BS, int MAXB, size_t half,
                    float *out) {
  __shared__ float sc[CTX];
  __shared__ float qs[D];
  __shared__ float red[256];
  const int h = blockIdx.x, b = blockIdx.y, kvh = h / (QH / KVH);
  for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = __bfloat162float(q[((size_t)b * QH + h) * D + d]);
  __syncthreads();
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < CTX; j += blockDim.x) {
    const size_t off = (((size_t)bt[b * MAXB + j / BS] * BS + j % BS) * KVH + kvh) * D;
    float s = 0;
    for (int d = 0; d < D; d++) s += qs[d] * __bfloat162float(pool[off + d]);
    s /= sqrtf((float)D);
    sc[j] = s;
    mx = fmaxf(mx, s);
  }
  red[threadIdx.x] = mx;
  __syncthreads();
  for (int o = 128; o > 0; o >>= 1) { if (threadIdx.x < o) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + o]); __syncthreads(); }
  mx = red[0];
  __syncthreads();
  float sum = 0;
  for (int j = threadIdx.x; j < CTX; j += blockDim.x) { sc[j] = expf(sc[j] - mx); sum += sc[j]; }
  red[threadIdx.x] = sum;
  __syncthreads();
  for (int o = 128; o > 0; o >>= 1) { if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o]; __syncthreads(); }
  sum = red[0];
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0;
    for (int j = 0; j < CTX; j++) {
      const size_t off = half + (((size_t)bt[b * MAXB + j / BS] * BS + j % BS) * KVH + kvh) * D;
      a += sc[j] * __bfloat162float(pool[off + d]);
    }
    out[((size_t)b * QH + h) * D + d] = a / sum;
  }
}

struct Var { std::string name; int bs; entry_fn fn; std::vector<float> meds; float mn = 1e9; bool ok = false; };

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: probe_main ROUNDS name:BS:path.so ...\n"); return 2; }
  const int rounds = atoi(argv[1]);
  const size_t half = (size_t)B * CTX * KVH * D;  // same tokens at every block size
  __nv_bfloat16 *q, *pool, *out;
  CK(cudaMalloc(&q, sizeof(__nv_bfloat16) * B * QH * D));
  CK(cudaMalloc(&pool, sizeof(__nv_bfloat16) * 2 * half));
  CK(cudaMalloc(&out, sizeof(__nv_bfloat16) * B * QH * D));
  fill<<<1024, 256>>>(q, (size_t)B * QH * D, 7);
  fill<<<4096, 256>>>(pool, 2 * half, 11);
  int *lens;
  CK(cudaMalloc(&lens, sizeof(int) * B));
  std::vector<int> hl(B, CTX);
  CK(cudaMemcpy(lens, hl.data(), sizeof(int) * B, cudaMemcpyHostToDevice));
  float *refo;
  CK(cudaMalloc(&refo, sizeof(float) * B * QH * D));
  int l2 = 0;
  CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  size_t fb = (size_t)l2 * 2;
  void *flush;
  unsigned *sink;
  CK(cudaMalloc(&flush, fb));
  CK(cudaMemset(flush, 1, fb));
  CK(cudaMalloc(&sink, 4));
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  std::map<int, int *> bts;
  std::map<int, std::vector<float>> refs;
  std::vector<Var> vars;
  for (int i = 2; i < argc; i++) {
    char *s = strdup(argv[i]);
    char *n = strtok(s, ":"), *bs = strtok(nullptr, ":"), *path = strtok(nullptr, ":");
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "%s: %s\n", n, dlerror()); continue; }
    Var v;
    v.name = n;
    v.bs = atoi(bs);
    v.fn = (entry_fn)dlsym(h, "llmir_kernel");
    if (!v.fn) { fprintf(stderr, "%s: no entry\n", n); continue; }
    vars.push_back(v);
    if (!bts.count(v.bs)) {
      const int maxb = CTX / v.bs, nb = B * maxb;
      std::vector<int> perm(nb);
      for (int j = 0; j < nb; j++) perm[j] = j;
      std::mt19937 rng(v.bs);
      std::shuffle(perm.begin(), perm.end(), rng);
      int *d;
      CK(cudaMalloc(&d, sizeof(int) * nb));
      CK(cudaMemcpy(d, perm.data(), sizeof(int) * nb, cudaMemcpyHostToDevice));
      bts[v.bs] = d;
      ref<<<dim3(QH, B), 256>>>(q, pool, d, v.bs, maxb, half, refo);
      CK(cudaDeviceSynchronize());
      refs[v.bs].resize(B * QH * D);
      CK(cudaMemcpy(refs[v.bs].data(), refo, sizeof(float) * B * QH * D, cudaMemcpyDeviceToHost));
    }
  }
  std::vector<__nv_bfloat16> ho(B * QH * D);
  for (auto &v : vars) {
    void *bufs[5] = {q, pool, bts[v.bs], lens, out};
    CK(cudaMemset(out, 0xff, sizeof(__nv_bfloat16) * B * QH * D));
    int rc = v.fn(bufs, nullptr);
    cudaError_t e = cudaDeviceSynchronize();
    if (rc || e != cudaSuccess) { printf("%-24s FAILED rc=%d %s\n", v.name.c_str(), rc, cudaGetErrorString(e)); exit(1); }
    CK(cudaMemcpy(ho.data(), out, sizeof(__nv_bfloat16) * B * QH * D, cudaMemcpyDeviceToHost));
    double num = 0, den = 0, mx = 0;
    const auto &r = refs[v.bs];
    for (size_t i = 0; i < ho.size(); i++) {
      double d = (double)__bfloat162float(ho[i]) - r[i];
      if (!(d == d)) d = 1e9;
      num += d * d; den += (double)r[i] * r[i]; mx = std::max(mx, fabs(d));
    }
    double rel = sqrt(num / den);
    v.ok = rel < 2e-2;
    printf("validate %-24s bs=%d rel=%.3e maxabs=%.3e %s\n", v.name.c_str(), v.bs, rel, mx, v.ok ? "ok" : "WRONG");
  }
  fflush(stdout);
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  auto fl = [&]() { rd<<<sms * 8, 512>>>((const uint4 *)flush, fb / 16, sink); };
  for (int r = 0; r < rounds; r++) {
    for (auto &v : vars) {
      void *bufs[5] = {q, pool, bts[v.bs], lens, out};
      double warm = 0;
      while (warm < 0.03) {
        fl();
        CK(cudaEventRecord(e0));
        v.fn(bufs, nullptr);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); warm += ms * 1e-3;
      }
      std::vector<float> s;
      double tot = 0;
      while (tot < 0.1 || s.size() < 10) {
        fl();
        CK(cudaEventRecord(e0));
        v.fn(bufs, nullptr);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); tot += ms * 1e-3;
        s.push_back(ms * 1e3f);
      }
      std::sort(s.begin(), s.end());
      v.meds.push_back(s[s.size() / 2]);
      v.mn = std::min(v.mn, s[0]);
    }
  }
  const double bytes = 2.0 * half * 2;
  printf("%-24s %4s %9s %9s %8s  rounds\n", "variant", "bs", "median", "min", "GB/s");
  for (auto &v : vars) {
    auto m = v.meds;
    std::sort(m.begin(), m.end());
    float med = m[m.size() / 2];
    printf("%-24s %4d %9.2f %9.2f %8.0f ", v.name.c_str(), v.bs, med, v.mn, bytes / med / 1e3);
    for (float x : v.meds) printf(" %.2f", x);
    printf("%s\n", v.ok ? "" : "  WRONG");
  }
  // read kernel on the pool: bandwidth ceiling in this process.
  {
    std::vector<float> s;
    for (int i = 0; i < 30; i++) {
      fl();
      CK(cudaEventRecord(e0));
      rd<<<sms * 8, 512>>>((const uint4 *)pool, 2 * half * 2 / 16, sink);
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); s.push_back(ms * 1e3f);
    }
    std::sort(s.begin(), s.end());
    printf("%-24s %4s %9.2f %9.2f %8.0f\n", "read_kernel(pool)", "-", s[15], s[0], bytes / s[15] / 1e3);
  }
  return 0;
}
