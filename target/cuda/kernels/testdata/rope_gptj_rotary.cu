#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// cuda_rope/tokens=5,heads=3,dim=64,rotary=32/gptj/bf16: threads=64 heads_per_block=1 vec=8 prefetch=1
constexpr int TOK = 5, H = 3, D = 64, R = 32, HALF = R / 2;
constexpr int NT = 64, HPB = 1, V = 8;
constexpr bool PREFETCH = true;
constexpr bool GPTJ = true;  // gptj pairs
constexpr int UNITS = GPTJ ? R / V : HALF / V;  // vectors per head
constexpr int HB = (H + HPB - 1) / HPB;         // head groups per token
constexpr float ATT = 1.000000000e+00f;  // attention factor (yarn)
__constant__ double INV_FREQ[HALF] = {
  0x1p+00,
  0x1.1feb33c1c381ep-01,
  0x1.43d136248490fp-02,
  0x1.6c310e3769f3dp-03,
  0x1.9999999999998p-04,
  0x1.ccab8602d2693p-05,
  0x1.030dc4ea03a71p-05,
  0x1.235a71c5ee5cbp-06,
  0x1.47ae147ae147bp-07,
  0x1.7089380241eep-08,
  0x1.9e7c6e43390b9p-09,
  0x1.d22a4fa316fbp-10,
  0x1.0624dd2f1a9fdp-10,
  0x1.26d42cce9b24dp-11,
  0x1.4b96be9c2da2cp-12,
  0x1.74eea61c12623p-13
};
typedef uint4 vec_t; // 8 bf16 = 16 bytes per load
__device__ __forceinline__ void unpack(const vec_t &p, float *f) {
  f[0] = bf_lo(p.x); f[1] = bf_hi(p.x);
  f[2] = bf_lo(p.y); f[3] = bf_hi(p.y);
  f[4] = bf_lo(p.z); f[5] = bf_hi(p.z);
  f[6] = bf_lo(p.w); f[7] = bf_hi(p.w);
}
__device__ __forceinline__ vec_t ldv(const __nv_bfloat16 *p) { return __ldcs(reinterpret_cast<const vec_t *>(p)); }

__device__ __forceinline__ void pack_store(__nv_bfloat16 *p, const float *f) {
  union { vec_t v; uint32_t w[V / 2]; } u;
#pragma unroll
  for (int i = 0; i < V / 2; i++)
    u.w[i] = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i])) |
             ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i + 1])) << 16);
  *reinterpret_cast<vec_t *>(p) = u.v;
}

__global__ void __launch_bounds__(NT) rope(const __nv_bfloat16 *__restrict__ x, const int32_t *__restrict__ pos,
    __nv_bfloat16 *__restrict__ out) {
  constexpr int NW = HPB * UNITS;  // vectors (neox: vector pairs) of the block
  const int t = blockIdx.x / HB, h0 = (blockIdx.x % HB) * HPB;
  __shared__ float cs[HALF], sn[HALF];
  vec_t va = {}, vb = {};
  auto load = [&](int w) {
    const size_t e = ((size_t)t * H + h0 + w / UNITS) * D + (size_t)(w % UNITS) * V;
    va = ldv(x + e);
    if (!GPTJ) vb = ldv(x + e + HALF);
  };
  int w = threadIdx.x;
  // The first vectors are loaded before the table is built: its math then
  // overlaps their memory latency.
  if (PREFETCH && w < NW && h0 + w / UNITS < H) load(w);
  const double p = (double)pos[t];
  for (int i = threadIdx.x; i < HALF; i += NT) {
    // The angle reduced to [-pi, pi] in double, sin and cos in float:
    // long-context positions keep their accuracy at float speed.
    double a = p * INV_FREQ[i];
    a -= rint(a * 0.15915494309189535) * 6.283185307179586;
    float s, c;
    sincosf((float)a, &s, &c);
    cs[i] = ATT * c;
    sn[i] = ATT * s;
  }
  __syncthreads();
  for (; w < NW; w += NT) {
    const int h = h0 + w / UNITS, u = w % UNITS;
    if (h >= H) break;
    if (!PREFETCH || w != (int)threadIdx.x) load(w);
    const size_t e = ((size_t)t * H + h) * D + (size_t)u * V;
    if (GPTJ) {
      float f[V], o[V];
      unpack(va, f);
#pragma unroll
      for (int j = 0; j < V / 2; j++) {
        const int i = u * V / 2 + j;
        o[2 * j] = f[2 * j] * cs[i] - f[2 * j + 1] * sn[i];
        o[2 * j + 1] = f[2 * j + 1] * cs[i] + f[2 * j] * sn[i];
      }
      pack_store(out + e, o);
    } else {
      const int i0 = u * V;
      float a[V], bv[V], oa[V], ob[V];
      unpack(va, a);
      unpack(vb, bv);
#pragma unroll
      for (int j = 0; j < V; j++) {
        oa[j] = a[j] * cs[i0 + j] - bv[j] * sn[i0 + j];
        ob[j] = bv[j] * cs[i0 + j] + a[j] * sn[i0 + j];
      }
      pack_store(out + e, oa);
      pack_store(out + e + HALF, ob);
    }
  }
  constexpr int TAIL = (D - R) / 2;
  for (int w = threadIdx.x; w < HPB * TAIL; w += NT) {
    const int h = h0 + w / TAIL;
    if (h >= H) break;
    const size_t e = ((size_t)t * H + h) * D + R + 2 * (w % TAIL);
    *reinterpret_cast<uint32_t *>(out + e) = *reinterpret_cast<const uint32_t *>(x + e);
  }
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  (void)dims;
  rope<<<TOK * HB, NT>>>((const __nv_bfloat16 *)bufs[0], (const int32_t *)bufs[1], (__nv_bfloat16 *)bufs[2]);
  return (int)cudaGetLastError();
}
