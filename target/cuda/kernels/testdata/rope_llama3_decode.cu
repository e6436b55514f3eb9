#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <math.h>

// bf16 pairs packed in 32 bits: low half is the first element.
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// cuda_rope/tokens=1,heads=32,dim=128/neox,llama3/bf16: threads=64 heads_per_block=1 vec=8 prefetch=1
constexpr int TOK = 1, H = 32, D = 128, R = 128, HALF = R / 2;
constexpr int NT = 64, HPB = 1, V = 8;
constexpr bool PREFETCH = true;
constexpr bool GPTJ = false;  // neox pairs
constexpr int UNITS = GPTJ ? R / V : HALF / V;  // vectors per head
constexpr int HB = (H + HPB - 1) / HPB;         // head groups per token
constexpr float ATT = 1.000000000e+00f;  // attention factor (yarn)
__constant__ double INV_FREQ[HALF] = {
  0x1p+00,
  0x1.a115829457fbep-01,
  0x1.53c38a9afacap-01,
  0x1.14c7088f7fb71p-01,
  0x1.c2ef7672e7587p-02,
  0x1.6f56f9cc64ebp-02,
  0x1.2b3dc533bac49p-02,
  0x1.e788c2ed352b5p-03,
  0x1.8d275e352b568p-03,
  0x1.43873fa1bb869p-03,
  0x1.078d3ee269365p-03,
  0x1.ad633873681fdp-04,
  0x1.5dc9598e68d6ep-04,
  0x1.1cf12f6820c72p-04,
  0x1.d03ccf59185fcp-05,
  0x1.7a2d07c48381cp-05,
  0x1.3411901f5fa46p-05,
  0x1.f5ea7e575c96p-06,
  0x1.98de92064b9a6p-06,
  0x1.4d12735617822p-06,
  0x1.0f5385238908p-06,
  0x1.ba0dd81e71459p-07,
  0x1.681ad8d3c057ep-07,
  0x1.2558fe8981892p-07,
  0x1.ddee9c8c0acedp-08,
  0x1.8554eaad8965ep-08,
  0x1.3d280469538fp-08,
  0x1.025c6a9f04104p-08,
  0x1.a4ee3f0a6907dp-09,
  0x1.1bfa0d25be317p-09,
  0x1.67a238074c42fp-10,
  0x1.c12f3a64f3007p-11,
  0x1.132ba8c6715a6p-11,
  0x1.47e216e7aec22p-12,
  0x1.765ba6f931573p-13,
  0x1.90d10c806f8cp-14,
  0x1.4683197ad399p-14,
  0x1.09fb7de6f8594p-14,
  0x1.b15901626539fp-15,
  0x1.6103324c59871p-15,
  0x1.1f91ef20d667dp-15,
  0x1.d484e02bd9932p-16,
  0x1.7da9e7846457dp-16,
  0x1.36e8e9de0b235p-16,
  0x1.fa8b84a44fa08p-17,
  0x1.9ca3e970f3a54p-17,
  0x1.5024d596be221p-17,
  0x1.11d41f32c72e3p-17,
  0x1.be2188e4aa32ep-18,
  0x1.6b6d0e26201d3p-18,
  0x1.280d96af1e49cp-18,
  0x1.e257029310d38p-19,
  0x1.88ec212e39edap-19,
  0x1.4014d2eb4ec73p-19,
  0x1.04be684552e3bp-19,
  0x1.a8d0107742594p-20,
  0x1.5a0f4e49b7c15p-20,
  0x1.19e80125e6f43p-20,
  0x1.cb4a99b200e8ep-21,
  0x1.76258ddfcb0e7p-21,
  0x1.30c94e0306bb5p-21,
  0x1.f091840d2af5ap-22,
  0x1.948360a975f3cp-22,
  0x1.4985fec80a8cbp-22
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
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  (void)dims;
  rope<<<TOK * HB, NT>>>((const __nv_bfloat16 *)bufs[0], (const int32_t *)bufs[1], (__nv_bfloat16 *)bufs[2]);
  return (int)cudaGetLastError();
}
