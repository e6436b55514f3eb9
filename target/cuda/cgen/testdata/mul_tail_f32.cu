#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <math.h>

__device__ __forceinline__ float llmir_silu(float x) { return x / (1.0f + expf(-x)); }

// nest mul dims(rows<=64)
// param 0 a: f32[rows, 4102]
// param 1 b: f32[4102]
// param 2 out: f32[rows, 4102]
// for i_0 in 0..(rows + 527) // 528:
//   for i_1 in 0..rows - i_0 * 528 bound(blockIdx.x):
//     for j_0 in 0..5 bound(blockIdx.y):
//       for j_1 in 0..min(256, 1026 - j_0 * 256) bound(threadIdx.x):
//         for j_2 in 0..min(4, 4102 - j_0 * 1024 - j_1 * 4) vectorized:
//           block out(vi=i_0 * 528 + i_1, vj=j_0 * 1024 + j_1 * 4 + j_2):
//             out[vi, vj] = a[vi, vj] * b[vj]

__global__ void __launch_bounds__(256) llmir_nest(const float *__restrict__ a, const float *__restrict__ b, float *__restrict__ out, int d_rows) {
  for (int i_0 = 0; i_0 < ((d_rows + 527) / 528); ++i_0) {
    { // i_1: blockIdx.x
      const int i_1 = blockIdx.x; (void)i_1;
      if (i_1 < (d_rows - (i_0 * 528))) {
        { // j_0: blockIdx.y
          const int j_0 = blockIdx.y; (void)j_0;
          { // j_1: threadIdx.x
            const int j_1 = threadIdx.x; (void)j_1;
            if (j_1 < min(256, (1026 - (j_0 * 256)))) {
              // j_2: scalar (not a contiguous, aligned 4-lane store)
              for (int j_2 = 0; j_2 < min(4, ((4102 - (j_0 * 1024)) - (j_1 * 4))); ++j_2) {
                out[(((((i_0 * 2165856) + (i_1 * 4102)) + (j_0 * 1024)) + (j_1 * 4)) + j_2)] = (a[(((((i_0 * 2165856) + (i_1 * 4102)) + (j_0 * 1024)) + (j_1 * 4)) + j_2)] * b[(((j_0 * 1024) + (j_1 * 4)) + j_2)]);
              }
            }
          }
        }
      }
    }
  }
}

int llmir_kernel(void *const *bufs, const int64_t *dims) {
  if (dims[0] < 0 || dims[0] > 64) return 2; // rows outside its bucket
  const int d_rows = (int)dims[0];
  const dim3 grid(64, 5, 1), block(256, 1, 1);
  llmir_nest<<<grid, block>>>((const float *)bufs[0], (const float *)bufs[1], (float *)bufs[2], d_rows);
  return (int)cudaGetLastError();
}
