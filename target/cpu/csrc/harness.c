// llmir CPU measurement harness. Built once per cache dir by target/cpu and
// driven by it over stdin/stdout, one candidate at a time:
//
//   argv[1] is a job file:   data <path>            inputs, concatenated raw
//                            buf <name> <bytes> <poison> <0|1 output>
//                            dims <v0> <v1> ...
//                            copies <n>
//   stdin commands:          run <so> <entry> <outfile>
//                            time <warmup_ns> <budget_ns> <min> <max>
//                            quit
//   stdout replies (one line each): ready | load_error <msg> | rc <n> |
//     guard <buf> <before|after> <offset> | input_modified <buf> <offset> |
//     validated <seconds> | samples <n> <s1> ... <sn>
//
// A candidate that crashes takes this process with it; the Go side sees EOF
// and the signal, records the failure and starts a fresh harness.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GUARD 64
#define GUARD_BYTE 0xA5
#define MAXBUF 64
#define MAXDIMS 64

typedef int (*entry_fn)(void *const *bufs, const int64_t *dims);

static FILE *proto;
static int nbuf, ndims, ncopies = 1;
static char names[MAXBUF][128];
static int64_t sizes[MAXBUF], padded[MAXBUF];
static uint32_t poison[MAXBUF];
static int is_out[MAXBUF];
static int64_t dims[MAXDIMS + 1];
static const unsigned char *pristine[MAXBUF];
static unsigned char **bases; // [copy*nbuf + i] -> allocation (guard + data + guard)
static void **ptrs;           // [copy*nbuf + i] -> data
static entry_fn fn;

static void die(const char *what) {
  fprintf(stderr, "harness: %s: %s\n", what, strerror(errno));
  exit(3);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
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

static void fill_poison(unsigned char *p, int64_t n, uint32_t pat, int width) {
  for (int64_t i = 0; i + width <= n; i += width) memcpy(p + i, &pat, width);
}

static int elem_width(int b) { return poison[b] > 0xffff ? 4 : 2; }

static void setup(const char *jobpath) {
  FILE *job = fopen(jobpath, "r");
  if (!job) die(jobpath);
  char line[4096], datapath[4096] = "";
  while (fgets(line, sizeof line, job)) {
    char *s = line;
    if (!strncmp(s, "data ", 5)) {
      sscanf(s + 5, "%4095s", datapath);
    } else if (!strncmp(s, "buf ", 4)) {
      if (nbuf >= MAXBUF) { fprintf(stderr, "harness: too many buffers\n"); exit(3); }
      long long bytes;
      unsigned pois;
      int out;
      if (sscanf(s + 4, "%127s %lld %x %d", names[nbuf], &bytes, &pois, &out) != 4) {
        fprintf(stderr, "harness: bad buf line: %s", s);
        exit(3);
      }
      sizes[nbuf] = bytes;
      padded[nbuf] = (bytes + 63) / 64 * 64;
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
    } else if (!strncmp(s, "copies ", 7)) {
      ncopies = atoi(s + 7);
      if (ncopies < 1) ncopies = 1;
    }
  }
  fclose(job);

  // The pristine inputs are the data file itself, mapped read-only: reading
  // it into fresh memory faulted in and copied a 2 GiB embedding table
  // once more for every harness started.
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
    in = mmap(NULL, (size_t)need, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (in == MAP_FAILED) die("mmap inputs");
  }
  close(fd);
  int64_t off = 0;
  for (int b = 0; b < nbuf; b++) {
    if (is_out[b]) continue;
    pristine[b] = in + off;
    off += sizes[b];
  }

  bases = calloc((size_t)ncopies * nbuf, sizeof *bases);
  ptrs = calloc((size_t)ncopies * nbuf, sizeof *ptrs);
  if (!bases || !ptrs) die("calloc");
  // One arena for all copies, in transparent huge pages: faulting in
  // hundreds of MiB of rotated copies 4 KiB at a time takes seconds in a VM,
  // for every fresh harness.
  size_t per_copy = 0;
  for (int b = 0; b < nbuf; b++) per_copy += GUARD + padded[b] + GUARD;
  const size_t huge = 2u << 20;
  size_t arena_bytes = ((size_t)ncopies * per_copy + huge - 1) / huge * huge;
  unsigned char *arena = aligned_alloc(huge, arena_bytes);
  if (!arena) die("aligned_alloc");
  madvise(arena, arena_bytes, MADV_HUGEPAGE);
  for (int c = 0; c < ncopies; c++) {
    for (int b = 0; b < nbuf; b++) {
      unsigned char *m = arena;
      arena += GUARD + padded[b] + GUARD;
      memset(m, GUARD_BYTE, GUARD);
      memset(m + GUARD + sizes[b], GUARD_BYTE, padded[b] - sizes[b] + GUARD);
      if (is_out[b])
        memset(m + GUARD, 0, sizes[b]); // touch every page before timing
      else
        memcpy(m + GUARD, pristine[b], sizes[b]);
      bases[c * nbuf + b] = m;
      ptrs[c * nbuf + b] = m + GUARD;
    }
  }
}

// check_guards reports the first damaged guard band of copy 0.
static int check_guards(void) {
  for (int b = 0; b < nbuf; b++) {
    unsigned char *m = bases[b];
    for (int64_t i = 0; i < GUARD; i++)
      if (m[i] != GUARD_BYTE) {
        reply("guard %s before %lld", names[b], (long long)(i - GUARD));
        return 1;
      }
    for (int64_t i = GUARD + sizes[b]; i < GUARD + padded[b] + GUARD; i++)
      if (m[i] != GUARD_BYTE) {
        reply("guard %s after %lld", names[b], (long long)(i - GUARD));
        return 1;
      }
  }
  return 0;
}

static void cmd_run(char *args) {
  char so[4096], entry[256], outpath[4096];
  if (sscanf(args, "%4095s %255s %4095s", so, entry, outpath) != 3) {
    fprintf(stderr, "harness: bad run command\n");
    exit(3);
  }
  fn = NULL;
  // Objects are never closed: a candidate's OpenMP or OpenBLAS threads may
  // outlive its call, and the process is short-lived anyway.
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
  // Copy 0 is reset before every validation: an earlier (failed) candidate
  // may have damaged its guard bands or inputs.
  for (int b = 0; b < nbuf; b++) {
    unsigned char *m = bases[b];
    memset(m, GUARD_BYTE, GUARD);
    memset(m + GUARD + sizes[b], GUARD_BYTE, padded[b] - sizes[b] + GUARD);
    if (is_out[b])
      fill_poison(ptrs[b], sizes[b], poison[b], elem_width(b));
    else
      memcpy(ptrs[b], pristine[b], sizes[b]);
  }
  double t = now();
  int rc = fn(ptrs, dims);
  t = now() - t;
  if (rc != 0) {
    reply("rc %d", rc);
    return;
  }
  if (check_guards()) return;
  for (int b = 0; b < nbuf; b++) {
    if (is_out[b]) continue;
    if (memcmp(ptrs[b], pristine[b], sizes[b]) != 0) {
      int64_t i = 0;
      while (((unsigned char *)ptrs[b])[i] == pristine[b][i]) i++;
      reply("input_modified %s %lld", names[b], (long long)i);
      return;
    }
  }
  FILE *o = fopen(outpath, "wb");
  if (!o) die(outpath);
  for (int b = 0; b < nbuf; b++)
    if (is_out[b] && fwrite(ptrs[b], 1, sizes[b], o) != (size_t)sizes[b]) die("write outputs");
  if (fclose(o) != 0) die("close outputs");
  reply("validated %.9e", t);
}

static void cmd_time(char *args) {
  long long warm_ns, budget_ns;
  long minn, maxn;
  if (sscanf(args, "%lld %lld %ld %ld", &warm_ns, &budget_ns, &minn, &maxn) != 4 || !fn) {
    fprintf(stderr, "harness: bad time command\n");
    exit(3);
  }
  double *s = malloc(sizeof(double) * (size_t)(maxn > 0 ? maxn : 1));
  if (!s) die("malloc samples");
  long it = 0;
  // Warm-up: at least one call and at least warm_ns, rotating the copies so
  // the timed calls start from the same cache state they will see.
  double t0 = now();
  do {
    int rc = fn(ptrs + (it++ % ncopies) * nbuf, dims);
    if (rc != 0) {
      reply("rc %d", rc);
      free(s);
      return;
    }
  } while ((now() - t0) * 1e9 < (double)warm_ns);
  long n = 0;
  double total = 0;
  while ((total * 1e9 < (double)budget_ns || n < minn) && n < maxn) {
    void *const *p = ptrs + (it++ % ncopies) * nbuf;
    double t = now();
    int rc = fn(p, dims);
    t = now() - t;
    if (rc != 0) {
      reply("rc %d", rc);
      free(s);
      return;
    }
    s[n++] = t;
    total += t;
  }
  fprintf(proto, "samples %ld", n);
  for (long i = 0; i < n; i++) fprintf(proto, " %.9e", s[i]);
  fputc('\n', proto);
  fflush(proto);
  free(s);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s JOBFILE\n", argv[0]);
    return 2;
  }
  // The protocol gets a private copy of stdout; a candidate that prints
  // lands in stderr instead of corrupting the replies.
  int pfd = dup(1);
  if (pfd < 0 || dup2(2, 1) < 0) die("dup");
  proto = fdopen(pfd, "w");
  if (!proto) die("fdopen");
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
