#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <math.h>

__device__ __forceinline__ float llmir_silu(float x) { return x / (1.0f + expf(-x)); }

// Two bf16 in one 32-bit register, the first in the low half (mma operand order).
__device__ __forceinline__ uint32_t llmir_pack(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}
__device__ __forceinline__ void llmir_mma(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// Fragments straight from shared memory: each lane passes one row address.
__device__ __forceinline__ void llmir_ldmatrix_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"((uint32_t)__cvta_generic_to_shared(p)) : "memory");
}
__device__ __forceinline__ void llmir_ldmatrix_x2(uint32_t &r0, uint32_t &r1, const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1) : "r"((uint32_t)__cvta_generic_to_shared(p)) : "memory");
}

// nest linear
// param 0 a: bf16[512, 4096]
// param 1 w: bf16[4096, 4096]
// param 2 out: bf16[512, 4096]
// for i_0 in 0..4 bound(blockIdx.y):
//   for j_0 in 0..32 bound(blockIdx.x):
//     alloc out_register: f32[128, 128] register
//     for i_1_0_init_j_1_0_init_fused in 0..8 bound(threadIdx.y):
//       for i_1_1_init in 0..4 unrolled:
//         for j_1_1_init in 0..4 unrolled:
//           for i_1_2_init in 0..16:
//             for j_1_2_init in 0..8:
//               block out_init(vi=i_0 * 128 + i_1_0_init_j_1_0_init_fused // 4 * 64 + i_1_1_init * 16 + i_1_2_init, vj=j_0 * 128 + i_1_0_init_j_1_0_init_fused % 4 * 32 + j_1_1_init * 8 + j_1_2_init):
//                 out_register[vi - i_0 * 128, vj - j_0 * 128] = 0.0
//     for k_0 in 0..64:
//       alloc a_shared: bf16[128, 64] shared
//       alloc w_shared: bf16[128, 64] shared
//       for w_shared_ax0_w_shared_ax1_fused_0 in 0..4:
//         for w_shared_ax0_w_shared_ax1_fused_1 in 0..8 bound(threadIdx.y):
//           for w_shared_ax0_w_shared_ax1_fused_2 in 0..32 bound(threadIdx.x):
//             for w_shared_ax0_w_shared_ax1_fused_3 in 0..8 vectorized:
//               block w_shared(v0=j_0 * 128 + (w_shared_ax0_w_shared_ax1_fused_0 * 2048 + w_shared_ax0_w_shared_ax1_fused_1 * 256 + w_shared_ax0_w_shared_ax1_fused_2 * 8 + w_shared_ax0_w_shared_ax1_fused_3) // 64, v1=k_0 * 64 + (w_shared_ax0_w_shared_ax1_fused_0 * 2048 + w_shared_ax0_w_shared_ax1_fused_1 * 256 + w_shared_ax0_w_shared_ax1_fused_2 * 8 + w_shared_ax0_w_shared_ax1_fused_3) % 64):
//                 w_shared[v0 - j_0 * 128, v1 - k_0 * 64] = w[v0, v1]
//       for a_shared_ax0_a_shared_ax1_fused_0 in 0..4:
//         for a_shared_ax0_a_shared_ax1_fused_1 in 0..8 bound(threadIdx.y):
//           for a_shared_ax0_a_shared_ax1_fused_2 in 0..32 bound(threadIdx.x):
//             for a_shared_ax0_a_shared_ax1_fused_3 in 0..8 vectorized:
//               block a_shared(v0=i_0 * 128 + (a_shared_ax0_a_shared_ax1_fused_0 * 2048 + a_shared_ax0_a_shared_ax1_fused_1 * 256 + a_shared_ax0_a_shared_ax1_fused_2 * 8 + a_shared_ax0_a_shared_ax1_fused_3) // 64, v1=k_0 * 64 + (a_shared_ax0_a_shared_ax1_fused_0 * 2048 + a_shared_ax0_a_shared_ax1_fused_1 * 256 + a_shared_ax0_a_shared_ax1_fused_2 * 8 + a_shared_ax0_a_shared_ax1_fused_3) % 64):
//                 a_shared[v0 - i_0 * 128, v1 - k_0 * 64] = a[v0, v1]
//       for i_1_0_j_1_0_fused in 0..8 bound(threadIdx.y):
//         for k_1 in 0..4 unrolled:
//           for i_1_1 in 0..4 unrolled:
//             for j_1_1 in 0..4 unrolled:
//               for i_1_2 in 0..16 tensorized(mma_m16n8k16_bf16):
//                 for j_1_2 in 0..8:
//                   for k_2 in 0..16:
//                     block out(vi=i_0 * 128 + i_1_0_j_1_0_fused // 4 * 64 + i_1_1 * 16 + i_1_2, vj=j_0 * 128 + i_1_0_j_1_0_fused % 4 * 32 + j_1_1 * 8 + j_1_2, vk:r=k_0 * 64 + k_1 * 16 + k_2):
//                       out_register[vi - i_0 * 128, vj - j_0 * 128] += a_shared[vi - i_0 * 128, vk - k_0 * 64] * w_shared[vj - j_0 * 128, vk - k_0 * 64]
//     for out_register_wb_ax0_0_out_register_wb_ax1_0_fused in 0..8 bound(threadIdx.y):
//       for out_register_wb_ax0_1 in 0..4 unrolled:
//         for out_register_wb_ax1_1 in 0..4 unrolled:
//           for out_register_wb_ax0_2 in 0..16:
//             for out_register_wb_ax1_2 in 0..8:
//               block out_register_wb(v0=i_0 * 128 + out_register_wb_ax0_0_out_register_wb_ax1_0_fused // 4 * 64 + out_register_wb_ax0_1 * 16 + out_register_wb_ax0_2, v1=j_0 * 128 + out_register_wb_ax0_0_out_register_wb_ax1_0_fused % 4 * 32 + out_register_wb_ax1_1 * 8 + out_register_wb_ax1_2):
//                 out[v0, v1] = out_register[v0 - i_0 * 128, v1 - j_0 * 128]

__global__ void __launch_bounds__(256) llmir_nest(const __nv_bfloat16 *__restrict__ a, const __nv_bfloat16 *__restrict__ w, __nv_bfloat16 *__restrict__ out) {
  const int llmir_g = threadIdx.x >> 2, llmir_t = threadIdx.x & 3; // mma fragment row, column pair
  __shared__ __align__(16) __nv_bfloat16 a_shared[9216];
  __shared__ __align__(16) __nv_bfloat16 w_shared[9216];
  { // i_0: blockIdx.y
    const int i_0 = blockIdx.y; (void)i_0;
    { // j_0: blockIdx.x
      const int j_0 = blockIdx.x; (void)j_0;
      float out_register[64]; // mma accumulators: 64×32 per warp, 4 per lane and 16×8 tile
      { // i_1_0_init_j_1_0_init_fused: threadIdx.y
        const int i_1_0_init_j_1_0_init_fused = threadIdx.y; (void)i_1_0_init_j_1_0_init_fused;
        #pragma unroll
        for (int i_1_1_init = 0; i_1_1_init < 4; ++i_1_1_init) {
          #pragma unroll
          for (int j_1_1_init = 0; j_1_1_init < 4; ++j_1_1_init) {
            #pragma unroll
            for (int llmir_e = 0; llmir_e < 4; ++llmir_e) { // i_1_2_init × j_1_2_init: this lane's 4 elements of a 16×8 tile of out_register
              const int i_1_2_init = llmir_g + (llmir_e >> 1) * 8, j_1_2_init = 2 * llmir_t + (llmir_e & 1); (void)i_1_2_init; (void)j_1_2_init;
              out_register[((i_1_1_init * 16) + (j_1_1_init * 4)) + llmir_e] = 0.0f;
            }
          }
        }
      }
      for (int k_0 = 0; k_0 < 64; ++k_0) {
        for (int w_shared_ax0_w_shared_ax1_fused_0 = 0; w_shared_ax0_w_shared_ax1_fused_0 < 4; ++w_shared_ax0_w_shared_ax1_fused_0) {
          { // w_shared_ax0_w_shared_ax1_fused_1: threadIdx.y
            const int w_shared_ax0_w_shared_ax1_fused_1 = threadIdx.y; (void)w_shared_ax0_w_shared_ax1_fused_1;
            { // w_shared_ax0_w_shared_ax1_fused_2: threadIdx.x
              const int w_shared_ax0_w_shared_ax1_fused_2 = threadIdx.x; (void)w_shared_ax0_w_shared_ax1_fused_2;
              // w_shared_ax0_w_shared_ax1_fused_3: 8 lanes, 16-byte accesses
              *reinterpret_cast<uint4 *>(&w_shared[(((((((w_shared_ax0_w_shared_ax1_fused_0 * 2048) + (w_shared_ax0_w_shared_ax1_fused_1 * 256)) + (w_shared_ax0_w_shared_ax1_fused_2 * 8)) + 0) / 64) * 72) + (((((w_shared_ax0_w_shared_ax1_fused_0 * 2048) + (w_shared_ax0_w_shared_ax1_fused_1 * 256)) + (w_shared_ax0_w_shared_ax1_fused_2 * 8)) + 0) % 64))]) = *reinterpret_cast<const uint4 *>(&w[((((j_0 * 524288) + ((((((w_shared_ax0_w_shared_ax1_fused_0 * 2048) + (w_shared_ax0_w_shared_ax1_fused_1 * 256)) + (w_shared_ax0_w_shared_ax1_fused_2 * 8)) + 0) / 64) * 4096)) + (k_0 * 64)) + (((((w_shared_ax0_w_shared_ax1_fused_0 * 2048) + (w_shared_ax0_w_shared_ax1_fused_1 * 256)) + (w_shared_ax0_w_shared_ax1_fused_2 * 8)) + 0) % 64))]);
            }
          }
        }
        for (int a_shared_ax0_a_shared_ax1_fused_0 = 0; a_shared_ax0_a_shared_ax1_fused_0 < 4; ++a_shared_ax0_a_shared_ax1_fused_0) {
          { // a_shared_ax0_a_shared_ax1_fused_1: threadIdx.y
            const int a_shared_ax0_a_shared_ax1_fused_1 = threadIdx.y; (void)a_shared_ax0_a_shared_ax1_fused_1;
            { // a_shared_ax0_a_shared_ax1_fused_2: threadIdx.x
              const int a_shared_ax0_a_shared_ax1_fused_2 = threadIdx.x; (void)a_shared_ax0_a_shared_ax1_fused_2;
              // a_shared_ax0_a_shared_ax1_fused_3: 8 lanes, 16-byte accesses
              *reinterpret_cast<uint4 *>(&a_shared[(((((((a_shared_ax0_a_shared_ax1_fused_0 * 2048) + (a_shared_ax0_a_shared_ax1_fused_1 * 256)) + (a_shared_ax0_a_shared_ax1_fused_2 * 8)) + 0) / 64) * 72) + (((((a_shared_ax0_a_shared_ax1_fused_0 * 2048) + (a_shared_ax0_a_shared_ax1_fused_1 * 256)) + (a_shared_ax0_a_shared_ax1_fused_2 * 8)) + 0) % 64))]) = *reinterpret_cast<const uint4 *>(&a[((((i_0 * 524288) + ((((((a_shared_ax0_a_shared_ax1_fused_0 * 2048) + (a_shared_ax0_a_shared_ax1_fused_1 * 256)) + (a_shared_ax0_a_shared_ax1_fused_2 * 8)) + 0) / 64) * 4096)) + (k_0 * 64)) + (((((a_shared_ax0_a_shared_ax1_fused_0 * 2048) + (a_shared_ax0_a_shared_ax1_fused_1 * 256)) + (a_shared_ax0_a_shared_ax1_fused_2 * 8)) + 0) % 64))]);
            }
          }
        }
        __syncthreads();
        { // i_1_0_j_1_0_fused: threadIdx.y
          const int i_1_0_j_1_0_fused = threadIdx.y; (void)i_1_0_j_1_0_fused;
          #pragma unroll
          for (int k_1 = 0; k_1 < 4; ++k_1) {
            #pragma unroll
            for (int i_1_1 = 0; i_1_1 < 4; ++i_1_1) {
              #pragma unroll
              for (int j_1_1 = 0; j_1_1 < 4; ++j_1_1) {
                { // mma_m16n8k16_bf16: m=i_1_2 n=j_1_2 k=k_2 A=a_shared B=w_shared C=out_register
                  uint32_t llmir_a0, llmir_a1, llmir_a2, llmir_a3;
                  { // ldmatrix.x4: lanes 0-15 address rows 0-15 at k 0, lanes 16-31 at k 8
                    const int llmir_lr = threadIdx.x & 15, llmir_lk = threadIdx.x >> 4;
                    llmir_ldmatrix_x4(llmir_a0, llmir_a1, llmir_a2, llmir_a3, &a_shared[((((((i_1_0_j_1_0_fused / 4) * 4608) + (i_1_1 * 1152)) + (llmir_lr * 72)) + (k_1 * 16)) + (llmir_lk * 8))]);
                  }
                  uint32_t llmir_b0, llmir_b1;
                  { // ldmatrix.x2: lanes 0-7 address columns 0-7 at k 0, lanes 8-15 at k 8
                    const int llmir_lr = threadIdx.x & 7, llmir_lk = (threadIdx.x >> 3) & 1;
                    llmir_ldmatrix_x2(llmir_b0, llmir_b1, &w_shared[((((((i_1_0_j_1_0_fused % 4) * 2304) + (j_1_1 * 576)) + (llmir_lr * 72)) + (k_1 * 16)) + (llmir_lk * 8))]);
                  }
                  llmir_mma(&out_register[((i_1_1 * 16) + (j_1_1 * 4)) + 0], llmir_a0, llmir_a1, llmir_a2, llmir_a3, llmir_b0, llmir_b1);
                }
              }
            }
          }
        }
        __syncthreads();
      }
      { // out_register_wb_ax0_0_out_register_wb_ax1_0_fused: threadIdx.y
        const int out_register_wb_ax0_0_out_register_wb_ax1_0_fused = threadIdx.y; (void)out_register_wb_ax0_0_out_register_wb_ax1_0_fused;
        #pragma unroll
        for (int out_register_wb_ax0_1 = 0; out_register_wb_ax0_1 < 4; ++out_register_wb_ax0_1) {
          #pragma unroll
          for (int out_register_wb_ax1_1 = 0; out_register_wb_ax1_1 < 4; ++out_register_wb_ax1_1) {
            #pragma unroll
            for (int llmir_e = 0; llmir_e < 4; ++llmir_e) { // out_register_wb_ax0_2 × out_register_wb_ax1_2: this lane's 4 elements of a 16×8 tile of out_register
              const int out_register_wb_ax0_2 = llmir_g + (llmir_e >> 1) * 8, out_register_wb_ax1_2 = 2 * llmir_t + (llmir_e & 1); (void)out_register_wb_ax0_2; (void)out_register_wb_ax1_2;
              out[((((((((i_0 * 524288) + ((out_register_wb_ax0_0_out_register_wb_ax1_0_fused / 4) * 262144)) + (out_register_wb_ax0_1 * 65536)) + (out_register_wb_ax0_2 * 4096)) + (j_0 * 128)) + ((out_register_wb_ax0_0_out_register_wb_ax1_0_fused % 4) * 32)) + (out_register_wb_ax1_1 * 8)) + out_register_wb_ax1_2)] = __float2bfloat16_rn(out_register[((out_register_wb_ax0_1 * 16) + (out_register_wb_ax1_1 * 4)) + llmir_e]);
            }
          }
        }
      }
    }
  }
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  (void)dims;
  const dim3 grid(32, 4, 1), block(32, 8, 1);
  llmir_nest<<<grid, block>>>((const __nv_bfloat16 *)bufs[0], (const __nv_bfloat16 *)bufs[1], (__nv_bfloat16 *)bufs[2]);
  return (int)cudaGetLastError();
}
