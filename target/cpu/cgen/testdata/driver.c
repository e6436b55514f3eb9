// Test-only driver: reads buffers from a file, calls the generated kernel,
// checks guard bands and writes every buffer back.
// Input: int64 nbufs, int64 ndims, int64 dims[ndims], then per buffer:
// int64 dtype (0 f32, 1 bf16, 2 f16), int64 count, float32 values[count].
// Output: per buffer, float32 values[count]. Exit 3 if a guard band changed,
// 4 + rc if the kernel returned rc != 0.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int llmir_test_kernel(void *const *bufs, const int64_t *dims);

#define GUARD 64
static const uint32_t sentinel = 0x7fc0dead;

static uint16_t to_bf16(float f) { uint32_t u; memcpy(&u, &f, 4); u += 0x7fffu + ((u >> 16) & 1u); return (uint16_t)(u >> 16); }
static float from_bf16(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static uint16_t to_f16(float f) { _Float16 h = (_Float16)f; uint16_t u; memcpy(&u, &h, 2); return u; }
static float from_f16(uint16_t u) { _Float16 h; memcpy(&h, &u, 2); return (float)h; }

int main(int argc, char **argv) {
  if (argc != 3) return 10;
  FILE *in = fopen(argv[1], "rb");
  if (!in) return 11;
  int64_t nb, nd;
  if (fread(&nb, 8, 1, in) != 1 || fread(&nd, 8, 1, in) != 1) return 12;
  int64_t *dims = calloc(nd + 1, 8);
  if (nd && fread(dims, 8, nd, in) != (size_t)nd) return 12;
  void **bufs = calloc(nb, sizeof(void *));
  int64_t *dt = calloc(nb, 8), *cnt = calloc(nb, 8);
  for (int64_t b = 0; b < nb; b++) {
    if (fread(&dt[b], 8, 1, in) != 1 || fread(&cnt[b], 8, 1, in) != 1) return 12;
    size_t esz = dt[b] == 0 ? 4 : 2;
    size_t bytes = ((cnt[b] * esz + 63) / 64) * 64 + GUARD * 4;
    unsigned char *p = aligned_alloc(64, bytes);
    for (size_t i = 0; i < bytes / 4; i++) memcpy(p + 4 * i, &sentinel, 4);
    for (int64_t i = 0; i < cnt[b]; i++) {
      float f;
      if (fread(&f, 4, 1, in) != 1) return 12;
      if (dt[b] == 0) memcpy(p + 4 * i, &f, 4);
      else { uint16_t h = dt[b] == 1 ? to_bf16(f) : to_f16(f); memcpy(p + 2 * i, &h, 2); }
    }
    bufs[b] = p;
  }
  fclose(in);
  int rc = llmir_test_kernel(bufs, dims);
  if (rc != 0) return 4 + rc;
  FILE *out = fopen(argv[2], "wb");
  for (int64_t b = 0; b < nb; b++) {
    size_t esz = dt[b] == 0 ? 4 : 2;
    unsigned char *p = bufs[b];
    for (size_t off = (cnt[b] * esz + 3) / 4 * 4; off + 4 <= ((cnt[b] * esz + 63) / 64) * 64 + GUARD * 4; off += 4) {
      if (memcmp(p + off, &sentinel, 4) != 0) return 3;
    }
    for (int64_t i = 0; i < cnt[b]; i++) {
      float f;
      if (dt[b] == 0) memcpy(&f, p + 4 * i, 4);
      else { uint16_t h; memcpy(&h, p + 2 * i, 2); f = dt[b] == 1 ? from_bf16(h) : from_f16(h); }
      fwrite(&f, 4, 1, out);
    }
  }
  fclose(out);
  return 0;
}
