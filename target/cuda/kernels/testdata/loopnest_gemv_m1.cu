#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <math.h>

__device__ __forceinline__ float llmir_silu(float x) { return x / (1.0f + expf(-x)); }

// nest linear
// param 0 x: bf16[1, 4096]
// param 1 w: bf16[4096, 4096]
// param 2 out: bf16[1, 4096]
// for j_0 in 0..1024 bound(blockIdx.x):
//   for j_1 in 0..4 bound(threadIdx.y):
//     alloc out_rf: f32[1, 1, 32] register
//     for k_1 in 0..32 bound(threadIdx.x):
//       for j_2_init in 0..1 unrolled:
//         for i_init in 0..1 unrolled:
//           block out_rf_init(vi=i_init, vj=j_0 * 4 + j_1 + j_2_init, vk_1_rf=k_1):
//             out_rf[vi, vj - j_0 * 4 - j_1, vk_1_rf] = 0.0
//       for k_0 in 0..16:
//         alloc w_register: bf16[1, 8] register
//         alloc x_register: bf16[1, 8] register
//         for x_register_ax0 in 0..1 unrolled:
//           for x_register_ax1 in 0..8 vectorized:
//             block x_register(v0=x_register_ax0, v1=k_0 * 256 + k_1 * 8 + x_register_ax1):
//               x_register[v0, v1 - k_0 * 256 - k_1 * 8] = x[v0, v1]
//         for w_register_ax0 in 0..1 unrolled:
//           for w_register_ax1 in 0..8 vectorized:
//             block w_register(v0=j_0 * 4 + j_1 + w_register_ax0, v1=k_0 * 256 + k_1 * 8 + w_register_ax1):
//               w_register[v0 - j_0 * 4 - j_1, v1 - k_0 * 256 - k_1 * 8] = w[v0, v1]
//         for j_2 in 0..1 unrolled:
//           for i in 0..1 unrolled:
//             for k_2 in 0..8 unrolled:
//               block out_rf(vi=i, vj=j_0 * 4 + j_1 + j_2, vk:r=k_0 * 256 + k_1 * 8 + k_2, vk_1_rf=k_1):
//                 out_rf[vi, vj - j_0 * 4 - j_1, vk_1_rf] += x_register[vi, vk - k_0 * 256 - k_1 * 8] * w_register[vj - j_0 * 4 - j_1, vk - k_0 * 256 - k_1 * 8]
//     for out_ax0 in 0..1 unrolled:
//       for out_ax1 in 0..1 unrolled:
//         for out_ax2 in 0..32 bound(threadIdx.x):
//           block out(vi=out_ax0, vj=j_0 * 4 + j_1 + out_ax1, vk_1_rf:r=out_ax2) init 0.0:
//             out[vi, vj] += out_rf[vi, vj - j_0 * 4 - j_1, vk_1_rf]

__global__ void __launch_bounds__(128) llmir_nest(const __nv_bfloat16 *__restrict__ x, const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out) {
  { // j_0: blockIdx.x
    const int j_0 = blockIdx.x; (void)j_0;
    { // j_1: threadIdx.y
      const int j_1 = threadIdx.y; (void)j_1;
      __align__(16) float out_rf[1];
      { // k_1: threadIdx.x
        const int k_1 = threadIdx.x; (void)k_1;
        #pragma unroll
        for (int j_2_init = 0; j_2_init < 1; ++j_2_init) {
          #pragma unroll
          for (int i_init = 0; i_init < 1; ++i_init) {
            out_rf[(i_init + j_2_init)] = 0.0f;
          }
        }
        for (int k_0 = 0; k_0 < 16; ++k_0) {
          __align__(16) __nv_bfloat16 w_register[8];
          __align__(16) __nv_bfloat16 x_register[8];
          #pragma unroll
          for (int x_register_ax0 = 0; x_register_ax0 < 1; ++x_register_ax0) {
            // x_register_ax1: 8 lanes, 16-byte accesses
            *reinterpret_cast<uint4 *>(&x_register[((x_register_ax0 * 8) + 0)]) = *reinterpret_cast<const uint4 *>(&x[((((x_register_ax0 * 4096) + (k_0 * 256)) + (k_1 * 8)) + 0)]);
          }
          #pragma unroll
          for (int w_register_ax0 = 0; w_register_ax0 < 1; ++w_register_ax0) {
            // w_register_ax1: 8 lanes, 16-byte accesses
            *reinterpret_cast<uint4 *>(&w_register[((w_register_ax0 * 8) + 0)]) = *reinterpret_cast<const uint4 *>(&w[((((((j_0 * 16384) + (j_1 * 4096)) + (w_register_ax0 * 4096)) + (k_0 * 256)) + (k_1 * 8)) + 0)]);
          }
          #pragma unroll
          for (int j_2 = 0; j_2 < 1; ++j_2) {
            #pragma unroll
            for (int i = 0; i < 1; ++i) {
              #pragma unroll
              for (int k_2 = 0; k_2 < 8; ++k_2) {
                out_rf[(i + j_2)] = out_rf[(i + j_2)] + (__bfloat162float(x_register[((i * 8) + k_2)]) * __bfloat162float(w_register[((j_2 * 8) + k_2)]));
              }
            }
          }
        }
      }
      #pragma unroll
      for (int out_ax0 = 0; out_ax0 < 1; ++out_ax0) {
        #pragma unroll
        for (int out_ax1 = 0; out_ax1 < 1; ++out_ax1) {
          { // out_ax2: threadIdx.x
            const int out_ax2 = threadIdx.x; (void)out_ax2;
            float llmir_r = out_ax2 < 32 ? out_rf[(out_ax0 + out_ax1)] : 0.0f;
            #pragma unroll
            for (int o = 16; o > 0; o >>= 1) llmir_r += __shfl_xor_sync(0xffffffffu, llmir_r, o);
            if (threadIdx.x == 0) out[((((out_ax0 * 4096) + (j_0 * 4)) + j_1) + out_ax1)] = __float2bfloat16_rn(0.0f + llmir_r);
          }
        }
      }
    }
  }
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  (void)dims;
  const dim3 grid(1024, 1, 1), block(32, 4, 1);
  llmir_nest<<<grid, block>>>((const __nv_bfloat16 *)bufs[0], (const __nv_bfloat16 *)bufs[1], (__nv_bfloat16 *)bufs[2]);
  return (int)cudaGetLastError();
}
