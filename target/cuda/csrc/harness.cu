// llmir CUDA measurement harness. Built once per cache dir by target/cuda
// (nvcc, on the GPU machine) and driven by it over stdin/stdout, one
// candidate at a time, with the job-file protocol of target/cpu's harness:
//
//   argv[1] is a job file:   data <path>            inputs, concatenated raw
//                            buf <name> <bytes> <poison> <0|1 output>
//                            dims <v0> <v1> ...
//                            copies <n>             (ignored: L2 is flushed)
//   stdin commands:          run <so> <entry> <outfile>
//                            time <warmup_ns> <budget_ns> <min> <max>
//                            quit
//   stdout replies (one line each): ready | load_error <msg> | rc <n> |
//     cuda_error <msg> | guard <buf> <before|after> <offset> |
//     input_modified <buf> <offset> | validated <seconds> |
//     samples <n> <s1> ... <sn>
//
//   argv[1] == "--info":        one line "info <sms> <l2_bytes> <mem_bytes> <cc_major> <cc_minor> <name...>"
//   argv[1] == "--probe" BYTES: one line "probe <copy_GBps> <read_GBps>"
//                               (cudaMemcpy device to device counting read
//                               plus write bytes, and a read-only kernel)
//   argv[1] == "--read" BYTES WARMUP_NS BUDGET_NS MIN MAX PICK_NS G1 G2 ...:
//     a plain read of BYTES, timed as "time" times a candidate (an L2
//     flush before every call, the same warm-up, budget and sample
//     bounds). Each grid of Gi blocks of 512 threads per SM is first timed
//     for PICK_NS: one line "grid <Gi> <n> <median>" each; the fastest is
//     then timed in full: "read <G> <n> <s1> ... <sn>".
//
// Buffers are device allocations with guard bands on both sides. A CUDA
// error is sticky for the context, so after reporting cuda_error the harness
// exits; the Go side starts a fresh process for the next candidate.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GUARD 256
#define GUARD_BYTE 0xA5
#define MAXBUF 64
#define MAXDIMS 64

typedef int (*entry_fn)(void *const *bufs, const int64_t *dims);

static FILE *proto;
static int nbuf, ndims;
static char names[MAXBUF][128];
static int64_t sizes[MAXBUF], padded[MAXBUF];
static uint32_t poison[MAXBUF];
static int is_out[MAXBUF];
static int64_t dims[MAXDIMS + 1];
static const unsigned char *pristine[MAXBUF];
static unsigned char *poisoned[MAXBUF]; // host image of a poisoned output
static unsigned char *dbase[MAXBUF];    // device: guard + data + guard
static void *dptr[MAXBUF];              // device: data
static unsigned char *hcheck;           // host scratch for read-backs
static int64_t hcheck_bytes;
static void *flush_buf;
static size_t flush_bytes;
static unsigned *flush_sink;
static int flush_grid;
static cudaEvent_t ev0, ev1;
static entry_fn fn;

static void die(const char *what) {
  fprintf(stderr, "harness: %s: %s\n", what, strerror(errno));
  exit(3);
}

// read_kernel sums 16-byte vectors with a grid-stride loop; the result is
// stored only when impossible, so the loads cannot be removed.
__global__ void read_kernel(const uint4 *__restrict__ p, size_t n, unsigned *sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint4 v = __ldcg(p + i);  // cached in L2 only: the flush must land there
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(proto, fmt, ap);
  va_end(ap);
  fputc('\n', proto);
  fflush(proto);
}

// cuda_fail reports a CUDA error and ends the process: the context is
// unusable after most errors, and a fresh process is cheap.
static void cuda_fail(const char *where, cudaError_t e) {
  reply("cuda_error %s: %s (%s)", where, cudaGetErrorString(e), cudaGetErrorName(e));
  exit(4);
}

#define CK(call)                              \
  do {                                        \
    cudaError_t e_ = (call);                  \
    if (e_ != cudaSuccess) cuda_fail(#call, e_); \
  } while (0)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void fill_poison(unsigned char *p, int64_t n, uint32_t pat, int width) {
  for (int64_t i = 0; i + width <= n; i += width) memcpy(p + i, &pat, width);
}

static int elem_width(int b) { return poison[b] > 0xffff ? 4 : 2; }

// setup_flush allocates the flush buffer and the timing events. The
// buffer is twice the L2: reading it evicts every line a candidate's
// previous call left there, as the previous layer would. It is read, not
// written: dirty lines left by a memset would be written back during the
// timed call and charged to the candidate.
static void setup_flush(void) {
  int l2 = 0;
  CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  flush_bytes = (size_t)(l2 > 0 ? l2 : (50 << 20)) * 2;
  CK(cudaMalloc(&flush_buf, flush_bytes));
  CK(cudaMemset(flush_buf, 1, flush_bytes));
  CK(cudaMalloc((void **)&flush_sink, sizeof(unsigned)));
  CK(cudaDeviceGetAttribute(&flush_grid, cudaDevAttrMultiProcessorCount, 0));
  flush_grid *= 8;
  CK(cudaEventCreate(&ev0));
  CK(cudaEventCreate(&ev1));
}

static void setup(const char *jobpath) {
  FILE *job = fopen(jobpath, "r");
  if (!job) die(jobpath);
  char line[4096], datapath[4096] = "";
  while (fgets(line, sizeof line, job)) {
    char *s = line;
    if (!strncmp(s, "data ", 5)) {
      sscanf(s + 5, "%4095s", datapath);
    } else if (!strncmp(s, "buf ", 4)) {
      if (nbuf >= MAXBUF) {
        fprintf(stderr, "harness: too many buffers\n");
        exit(3);
      }
      long long bytes;
      unsigned pois;
      int out;
      if (sscanf(s + 4, "%127s %lld %x %d", names[nbuf], &bytes, &pois, &out) != 4) {
        fprintf(stderr, "harness: bad buf line: %s", s);
        exit(3);
      }
      sizes[nbuf] = bytes;
      padded[nbuf] = (bytes + 255) / 256 * 256;
      poison[nbuf] = pois;
      is_out[nbuf] = out;
      nbuf++;
    } else if (!strncmp(s, "dims", 4)) {
      char *p = s + 4, *end;
      for (;;) {
        long long v = strtoll(p, &end, 10);
        if (end == p || ndims >= MAXDIMS) break;
        dims[ndims++] = v;
        p = end;
      }
    }
  }
  fclose(job);

  // The pristine inputs are the data file itself, mapped read-only (as in
  // the CPU harness): no second host copy of a gigabyte weight.
  int64_t need = 0;
  for (int b = 0; b < nbuf; b++)
    if (!is_out[b]) need += sizes[b];
  int fd = open(datapath, O_RDONLY);
  if (fd < 0) die(datapath);
  struct stat st;
  if (fstat(fd, &st) != 0) die(datapath);
  if (st.st_size < need) {
    fprintf(stderr, "harness: short input file %s: %lld bytes, want %lld\n", datapath, (long long)st.st_size,
            (long long)need);
    exit(3);
  }
  static unsigned char none[1];
  unsigned char *in = none;
  if (need > 0) {
    in = (unsigned char *)mmap(NULL, (size_t)need, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (in == MAP_FAILED) die("mmap inputs");
  }
  close(fd);
  int64_t off = 0;
  for (int b = 0; b < nbuf; b++) {
    int64_t all = GUARD + padded[b] + GUARD;
    if (all > hcheck_bytes) hcheck_bytes = all;
    if (is_out[b]) {
      poisoned[b] = (unsigned char *)malloc(sizes[b] ? sizes[b] : 1);
      if (!poisoned[b]) die("malloc");
      fill_poison(poisoned[b], sizes[b], poison[b], elem_width(b));
      continue;
    }
    pristine[b] = in + off;
    off += sizes[b];
  }
  hcheck = (unsigned char *)malloc(hcheck_bytes);
  if (!hcheck) die("malloc");

  for (int b = 0; b < nbuf; b++) {
    CK(cudaMalloc((void **)&dbase[b], GUARD + padded[b] + GUARD));
    dptr[b] = dbase[b] + GUARD;
  }
  setup_flush();
}

// reset_buffers restores guards and inputs and poisons outputs: an earlier
// (failed) candidate may have damaged them.
static void reset_buffers(void) {
  for (int b = 0; b < nbuf; b++) {
    CK(cudaMemset(dbase[b], GUARD_BYTE, GUARD));
    CK(cudaMemset((unsigned char *)dptr[b] + sizes[b], GUARD_BYTE, padded[b] - sizes[b] + GUARD));
    if (is_out[b])
      CK(cudaMemcpy(dptr[b], poisoned[b], sizes[b], cudaMemcpyHostToDevice));
    else
      CK(cudaMemcpy(dptr[b], pristine[b], sizes[b], cudaMemcpyHostToDevice));
  }
  CK(cudaDeviceSynchronize());
}

static void flush_l2(int it) {
  (void)it;
  read_kernel<<<flush_grid, 512>>>((const uint4 *)flush_buf, flush_bytes / 16, flush_sink);
  CK(cudaGetLastError());
}

static void cmd_run(char *args) {
  char so[4096], entry[256], outpath[4096];
  if (sscanf(args, "%4095s %255s %4095s", so, entry, outpath) != 3) {
    fprintf(stderr, "harness: bad run command\n");
    exit(3);
  }
  fn = NULL;
  void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    reply("load_error %s", dlerror());
    return;
  }
  fn = (entry_fn)dlsym(h, entry);
  if (!fn) {
    reply("load_error entry symbol %s not found", entry);
    return;
  }
  reset_buffers();
  double t = now();
  int rc = fn(dptr, dims);
  cudaError_t e = cudaDeviceSynchronize();
  t = now() - t;
  if (e != cudaSuccess) cuda_fail("validation run", e);
  if ((e = cudaGetLastError()) != cudaSuccess) cuda_fail("validation run", e);
  if (rc != 0) {
    reply("rc %d", rc);
    return;
  }
  FILE *o = NULL;
  for (int b = 0; b < nbuf; b++) {
    int64_t all = GUARD + padded[b] + GUARD;
    CK(cudaMemcpy(hcheck, dbase[b], all, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < GUARD; i++)
      if (hcheck[i] != GUARD_BYTE) {
        reply("guard %s before %lld", names[b], (long long)(i - GUARD));
        if (o) fclose(o);
        return;
      }
    for (int64_t i = GUARD + sizes[b]; i < all; i++)
      if (hcheck[i] != GUARD_BYTE) {
        reply("guard %s after %lld", names[b], (long long)(i - GUARD));
        if (o) fclose(o);
        return;
      }
    unsigned char *d = hcheck + GUARD;
    if (!is_out[b]) {
      if (memcmp(d, pristine[b], sizes[b]) != 0) {
        int64_t i = 0;
        while (d[i] == pristine[b][i]) i++;
        reply("input_modified %s %lld", names[b], (long long)i);
        if (o) fclose(o);
        return;
      }
      continue;
    }
    if (!o) {
      o = fopen(outpath, "wb");
      if (!o) die(outpath);
    }
    if (fwrite(d, 1, sizes[b], o) != (size_t)sizes[b]) die("write outputs");
  }
  if (o && fclose(o) != 0) die("close outputs");
  reply("validated %.9e", t);
}

// time_calls is the timing protocol: calls (each after an L2 flush) for
// at least warm_ns of wall time untimed, then timed with events until
// budget_ns of device time and at least minn samples, at most maxn. It
// returns the sample count, or -1 with *rc set when launch returns non-zero.
static long time_calls(int (*launch)(void), long long warm_ns, long long budget_ns, long minn, long maxn, double *s,
                       int *rc) {
  long it = 0;
  double t0 = now();
  do {
    flush_l2((int)it++);
    if ((*rc = launch()) != 0) return -1;
    CK(cudaDeviceSynchronize());
  } while ((now() - t0) * 1e9 < (double)warm_ns);
  long n = 0;
  double total = 0;
  // The budget counts device time; the flush and the launch gaps are not
  // timed, so wall time may be a few times the budget for tiny kernels.
  while ((total * 1e9 < (double)budget_ns || n < minn) && n < maxn) {
    flush_l2((int)it++);
    CK(cudaEventRecord(ev0, 0));
    *rc = launch();
    CK(cudaEventRecord(ev1, 0));
    CK(cudaEventSynchronize(ev1));
    if (*rc != 0) return -1;
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) cuda_fail("timing", e);
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, ev0, ev1));
    s[n++] = ms * 1e-3;
    total += ms * 1e-3;
  }
  return n;
}

static int launch_candidate(void) { return fn(dptr, dims); }

static void reply_samples(const char *verb, long n, const double *s) {
  fprintf(proto, "%s %ld", verb, n);
  for (long i = 0; i < n; i++) fprintf(proto, " %.9e", s[i]);
  fputc('\n', proto);
  fflush(proto);
}

static void cmd_time(char *args) {
  long long warm_ns, budget_ns;
  long minn, maxn;
  if (sscanf(args, "%lld %lld %ld %ld", &warm_ns, &budget_ns, &minn, &maxn) != 4 || !fn) {
    fprintf(stderr, "harness: bad time command\n");
    exit(3);
  }
  double *s = (double *)malloc(sizeof(double) * (size_t)(maxn > 0 ? maxn : 1));
  if (!s) die("malloc samples");
  int rc = 0;
  long n = time_calls(launch_candidate, warm_ns, budget_ns, minn, maxn, s, &rc);
  if (n < 0)
    reply("rc %d", rc);
  else
    reply_samples("samples", n, s);
  free(s);
}

static int info(void) {
  cudaDeviceProp p;
  CK(cudaGetDeviceProperties(&p, 0));
  reply("info %d %d %lld %d %d %s", p.multiProcessorCount, p.l2CacheSize, (long long)p.totalGlobalMem, p.major,
        p.minor, p.name);
  return 0;
}

static float median_ms(float *v, int n) {
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
      float t = v[j];
      v[j] = v[j - 1];
      v[j - 1] = t;
    }
  return v[n / 2];
}

static int probe(size_t bytes) {
  bytes = bytes / 16 * 16;
  void *a, *b;
  unsigned *sink;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  CK(cudaMalloc((void **)&sink, sizeof(unsigned)));
  CK(cudaMemset(a, 1, bytes));
  CK(cudaMemset(b, 2, bytes));
  CK(cudaEventCreate(&ev0));
  CK(cudaEventCreate(&ev1));
  enum { REPS = 20 };
  float copy[REPS], rd[REPS];
  for (int r = -3; r < REPS; r++) {
    CK(cudaEventRecord(ev0, 0));
    CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0));
    CK(cudaEventRecord(ev1, 0));
    CK(cudaEventSynchronize(ev1));
    if (r >= 0) CK(cudaEventElapsedTime(&copy[r], ev0, ev1));
  }
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  for (int r = -3; r < REPS; r++) {
    CK(cudaEventRecord(ev0, 0));
    read_kernel<<<sms * 8, 512>>>((const uint4 *)a, bytes / 16, sink);
    CK(cudaEventRecord(ev1, 0));
    CK(cudaEventSynchronize(ev1));
    CK(cudaGetLastError());
    if (r >= 0) CK(cudaEventElapsedTime(&rd[r], ev0, ev1));
  }
  double c = median_ms(copy, REPS) * 1e-3, q = median_ms(rd, REPS) * 1e-3;
  reply("probe %.3f %.3f", 2.0 * bytes / c / 1e9, bytes / q / 1e9);
  return 0;
}

static const uint4 *read_buf;
static size_t read_n;
static int read_grid;

static int launch_read(void) {
  read_kernel<<<read_grid, 512>>>(read_buf, read_n, flush_sink);
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median_of(const double *s, long n, double *scratch) {
  memcpy(scratch, s, sizeof(double) * (size_t)n);
  qsort(scratch, (size_t)n, sizeof(double), cmp_double);
  return n % 2 ? scratch[n / 2] : (scratch[n / 2 - 1] + scratch[n / 2]) / 2;
}

// read_bound is the plain read a memory-bound kernel of the same bytes is
// compared with: the flush and the timing loop are the candidates'.
static int read_bound(int argc, char **argv) {
  if (argc < 9) {
    fprintf(stderr, "harness: --read BYTES WARMUP_NS BUDGET_NS MIN MAX PICK_NS BLOCKS_PER_SM...\n");
    return 2;
  }
  size_t bytes = (size_t)strtoull(argv[2], NULL, 10);
  long long warm_ns = strtoll(argv[3], NULL, 10), budget_ns = strtoll(argv[4], NULL, 10),
            pick_ns = strtoll(argv[7], NULL, 10);
  long minn = strtol(argv[5], NULL, 10), maxn = strtol(argv[6], NULL, 10);
  if (bytes < 1 || minn < 1 || maxn < minn) {
    fprintf(stderr, "harness: --read: bad sizes\n");
    return 2;
  }
  read_n = (bytes + 15) / 16;
  void *buf;
  CK(cudaMalloc(&buf, read_n * 16));
  CK(cudaMemset(buf, 3, read_n * 16));
  read_buf = (const uint4 *)buf;
  setup_flush();
  int sms = flush_grid / 8;
  double *s = (double *)malloc(sizeof(double) * (size_t)maxn * 2);
  if (!s) die("malloc samples");
  int best = 0, rc = 0;
  double best_med = 0;
  for (int i = 8; i < argc; i++) {
    int g = atoi(argv[i]);
    if (g < 1) {
      fprintf(stderr, "harness: --read: bad grid %s\n", argv[i]);
      return 2;
    }
    read_grid = g * sms;
    // Only the first grid warms the device up; the others follow it.
    long n = time_calls(launch_read, i == 8 ? warm_ns : 0, pick_ns, minn, maxn, s, &rc);
    double med = median_of(s, n, s + maxn);
    reply("grid %d %ld %.9e", g, n, med);
    if (best == 0 || med < best_med) best = g, best_med = med;
  }
  read_grid = best * sms;
  long n = time_calls(launch_read, warm_ns, budget_ns, minn, maxn, s, &rc);
  char verb[32];
  snprintf(verb, sizeof verb, "read %d", best);
  reply_samples(verb, n, s);
  free(s);
  return 0;
}

int main(int argc, char **argv) {
  int pfd = dup(1);
  if (pfd < 0 || dup2(2, 1) < 0) die("dup");
  proto = fdopen(pfd, "w");
  if (!proto) die("fdopen");
  if (argc == 2 && !strcmp(argv[1], "--info")) return info();
  if (argc == 3 && !strcmp(argv[1], "--probe")) return probe((size_t)strtoull(argv[2], NULL, 10));
  if (argc >= 2 && !strcmp(argv[1], "--read")) return read_bound(argc, argv);
  if (argc != 2) {
    fprintf(stderr, "usage: %s JOBFILE | --info | --probe BYTES | --read BYTES ...\n", argv[0]);
    return 2;
  }
  setup(argv[1]);
  reply("ready");
  char line[16384];
  while (fgets(line, sizeof line, stdin)) {
    if (!strncmp(line, "run ", 4))
      cmd_run(line + 4);
    else if (!strncmp(line, "time ", 5))
      cmd_time(line + 5);
    else if (!strncmp(line, "quit", 4))
      break;
    else {
      fprintf(stderr, "harness: unknown command: %s", line);
      return 3;
    }
  }
  return 0;
}
