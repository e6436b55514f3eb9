package cpu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"llmir/target"
)

// RooflinePoint is the machine's measured ceilings at one thread count.
type RooflinePoint struct {
	Threads int `json:"threads"`
	// PeakGFLOPs is f32 FMA throughput (2 FLOP per lane per FMA).
	PeakGFLOPs float64 `json:"peak_gflops"`
	// ReadGBs is streaming read bandwidth from memory.
	ReadGBs float64 `json:"read_gbs"`
}

// Roofline is the probe results for one fingerprint, measured once and
// cached as JSON under the cache dir.
type Roofline struct {
	// ProbeVersion is the probes' version (RooflineProbeVersion when
	// measured): a cache of older probes is measured again.
	ProbeVersion int       `json:"probe_version"`
	Fingerprint  string    `json:"fingerprint"` // hash
	VectorBits   int       `json:"vector_bits"`
	FMAChains    int       `json:"fma_chains"`
	ReadBytes    int64     `json:"read_bytes"`
	FMAIters     int64     `json:"fma_iters"`
	Measured     time.Time `json:"measured"`
	// LoadAvg is the 1-minute load average when the probes started: other
	// work on the machine lowers the ceilings, and this says whether to
	// trust them (delete the file at RooflinePath to re-measure).
	LoadAvg float64         `json:"load_avg"`
	Points  []RooflinePoint `json:"points"`
}

// At returns the point for a thread count.
func (r *Roofline) At(threads int) (RooflinePoint, bool) {
	for _, p := range r.Points {
		if p.Threads == threads {
			return p, true
		}
	}
	return RooflinePoint{}, false
}

// Bound is the roofline's lower bound on the time of a kernel with the
// given FLOPs and bytes at a thread count: max(compute time, memory time).
// The fraction of roofline of a measurement is Bound / measured time.
func (r *Roofline) Bound(threads int, flops, bytes float64) (time.Duration, error) {
	p, ok := r.At(threads)
	if !ok || p.PeakGFLOPs <= 0 || p.ReadGBs <= 0 {
		return 0, fmt.Errorf("roofline: no probe at %d threads", threads)
	}
	return time.Duration(p.Seconds(flops, bytes) * float64(time.Second)), nil
}

// Seconds is the point's lower bound on a kernel's time: max(compute
// time, memory time). Both rates must be positive.
func (p RooflinePoint) Seconds(flops, bytes float64) float64 {
	return max(flops/(p.PeakGFLOPs*1e9), bytes/(p.ReadGBs*1e9))
}

// fmaChains is the number of independent accumulators: latency (4 cycles)
// × FMA pipes (2) plus slack, within the register file (16 or 32 vectors,
// two taken by the operands).
func fmaChains(vectorBits int) int {
	if vectorBits >= 512 {
		return 16
	}
	return 12
}

// probeReadBytes streams ≥ 8× the LLC so no cache level helps, at least
// 256 MiB, and at most 512 MiB: some hypervisors report a last-level cache
// of hundreds of MiB through CPUID (this development VM says 508 MiB for a
// cache that stops helping past 32 MiB).
func probeReadBytes(llc int64) int64 {
	return min(max(8*llc, 256<<20), 512<<20)
}

// RooflineOptions sizes the probes; the zero value is the real measurement.
// Tests shrink them to check the plumbing in well under a second.
type RooflineOptions struct {
	Threads   []int // default 1..cores
	ReadBytes int64 // default probeReadBytes(LLC)
	FMAIters  int64 // default 20M per thread and run
}

// probeSource generates the probe program: `probe fma ITERS` prints
// GFLOP/s, `probe read BYTES` prints GB/s, each the best of several runs,
// across OMP_NUM_THREADS threads.
func probeSource(vectorBits, chains int) string {
	var b strings.Builder
	lanes := vectorBits / 32
	fmt.Fprintf(&b, `#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

typedef float vf __attribute__((vector_size(%d)));
#define LANES %d
#define CHAINS %d
static volatile float sink[1024];

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double fma_probe(long iters) {
	double best = 1e30;
	int threads = 1;
	for (int rep = 0; rep < 5; rep++) {
		double t0 = now();
		#pragma omp parallel
		{
			volatile float one = 1.0f;
			vf x = (vf){} + one * 0.999999f, y = (vf){} + one * 1e-7f;
`, vectorBits/8, lanes, chains)
	for c := range chains {
		fmt.Fprintf(&b, "\t\t\tvf a%d = (vf){} + one * %d.0f;\n", c, c+1)
	}
	b.WriteString("\t\t\tfor (long i = 0; i < iters; i++) {\n")
	for c := range chains {
		fmt.Fprintf(&b, "\t\t\t\ta%d = a%d * x + y;\n", c, c)
	}
	b.WriteString("\t\t\t}\n\t\t\tvf s = a0")
	for c := 1; c < chains; c++ {
		fmt.Fprintf(&b, " + a%d", c)
	}
	b.WriteString(`;
			float t = 0;
			for (int l = 0; l < LANES; l++) t += s[l];
			sink[omp_get_thread_num() & 1023] = t;
			#pragma omp single
			threads = omp_get_num_threads();
		}
		double t = now() - t0;
		if (t < best) best = t;
	}
	return 2.0 * LANES * CHAINS * (double)iters * threads / best / 1e9;
}

// TURN is how much of one stream is read before the next (2 KiB).
#define TURN 512

static inline vf ldv(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }

static double read_probe(int64_t bytes) {
	int64_t n = bytes / sizeof(float) / TURN * TURN;
	// Huge pages: faulting in 4 KiB pages costs seconds for this buffer in
	// a VM, and TLB misses would understate the bandwidth.
	size_t huge = 2 << 20, alloc = (n * sizeof(float) + huge - 1) / huge * huge;
	float *a = aligned_alloc(huge, alloc);
	if (!a) { perror("aligned_alloc"); exit(1); }
	madvise(a, alloc, MADV_HUGEPAGE);
	// First touch by the threads that will read, so pages are spread the
	// same way the timed passes read them.
	#pragma omp parallel for schedule(static)
	for (int64_t i = 0; i < n; i += TURN)
		for (int j = 0; j < TURN; j++) a[i + j] = 1.0f;
	double best = 1e30;
	for (int rep = 0; rep < 10; rep++) {
		double t0 = now();
		#pragma omp parallel
		{
			// Each thread reads its contiguous range as four sequential
			// streams side by side, TURN of each in turn: one core's
			// prefetchers sustain more with several streams than with one
			// (on the development VM 36–40 GB/s against 26–29).
			const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
			const int64_t lo = n / TURN * t / nt * TURN, hi = n / TURN * (t + 1) / nt * TURN;
			const int64_t q = (hi - lo) / TURN / 4 * TURN;
			vf s0 = {}, s1 = {}, s2 = {}, s3 = {}, s4 = {}, s5 = {}, s6 = {}, s7 = {};
			for (int64_t i = lo; i < lo + q; i += TURN) {
				for (int o = 0; o < TURN; o += 2 * LANES) { s0 += ldv(a + i + o); s1 += ldv(a + i + o + LANES); }
				for (int o = 0; o < TURN; o += 2 * LANES) { s2 += ldv(a + i + q + o); s3 += ldv(a + i + q + o + LANES); }
				for (int o = 0; o < TURN; o += 2 * LANES) { s4 += ldv(a + i + 2 * q + o); s5 += ldv(a + i + 2 * q + o + LANES); }
				for (int o = 0; o < TURN; o += 2 * LANES) { s6 += ldv(a + i + 3 * q + o); s7 += ldv(a + i + 3 * q + o + LANES); }
			}
			for (int64_t i = lo + 4 * q; i < hi; i += 2 * LANES) {
				s0 += ldv(a + i);
				s1 += ldv(a + i + LANES);
			}
			vf s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
			sink[omp_get_thread_num() & 1023] = s[0];
		}
		double t = now() - t0;
		if (rep > 0 && t < best) best = t; // rep 0 warms the TLB
	}
	free(a);
	return (double)n * sizeof(float) / best / 1e9;
}

int main(int argc, char **argv) {
	if (argc != 3) { fprintf(stderr, "usage: probe fma ITERS | probe read BYTES\n"); return 2; }
	long long v = atoll(argv[2]);
	if (!strcmp(argv[1], "fma")) printf("%.6f\n", fma_probe(v));
	else if (!strcmp(argv[1], "read")) printf("%.6f\n", read_probe(v));
	else { fprintf(stderr, "unknown probe %s\n", argv[1]); return 2; }
	return 0;
}
`)
	return b.String()
}

// fmaIters makes one FMA run last tens of milliseconds on a ~4 GHz core.
const fmaIters = 20_000_000

// RooflineProbeVersion is the version of the probes' code. 2: the read
// probe reads four streams per thread (one stream understated one core's
// bandwidth by about a quarter).
const RooflineProbeVersion = 2

// busyLoad is the 1-minute load average above which a cached probe is
// suspect: other work was running while it measured.
const busyLoad = 0.5

// Roofline returns the cached probes for this fingerprint, measuring them
// (a few seconds) on first use and when the cache is of older probes.
//
// A cache measured on a busy machine (LoadAvg ≥ busyLoad) is measured
// again once the load is lower by at least busyLoad, and each point keeps
// the higher of the two measurements: load only ever lowers a ceiling. On
// the 2-core VM, probes taken beside a helper's benchmark put the 2-thread
// FMA peak at 256 GFLOP/s instead of 448, and the linear bench then
// reported a 2-thread GEMM at 102% of its "roofline".
func (t *Target) Roofline(ctx context.Context) (*Roofline, error) {
	path := t.RooflinePath()
	var busy *Roofline
	if data, err := os.ReadFile(path); err == nil {
		var r Roofline
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("roofline cache %s: %w", path, err)
		}
		if r.ProbeVersion >= RooflineProbeVersion {
			if r.LoadAvg < busyLoad || loadAvg1()+busyLoad > r.LoadAvg {
				return &r, nil
			}
			busy = &r
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("roofline cache: %w", err)
	}
	r, err := t.MeasureRoofline(ctx, t.Probe)
	if err != nil {
		return nil, err
	}
	if busy != nil {
		r.keepHigher(busy)
	}
	data, _ := json.MarshalIndent(r, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("roofline cache: %w", err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return nil, fmt.Errorf("roofline cache: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("roofline cache: %w", err)
	}
	return r, nil
}

// keepHigher raises each of r's points to old's at the same thread count
// where old measured more.
func (r *Roofline) keepHigher(old *Roofline) {
	for i, p := range r.Points {
		if o, ok := old.At(p.Threads); ok {
			r.Points[i].PeakGFLOPs = max(p.PeakGFLOPs, o.PeakGFLOPs)
			r.Points[i].ReadGBs = max(p.ReadGBs, o.ReadGBs)
		}
	}
}

// RooflinePath is where Roofline caches the probes of this fingerprint.
func (t *Target) RooflinePath() string {
	return filepath.Join(t.dir, "roofline", t.fp.Hash()+".json")
}

// loadAvg1 reads the 1-minute load average (0 where unavailable).
func loadAvg1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// MeasureRoofline runs the probes now, uncached.
func (t *Target) MeasureRoofline(ctx context.Context, o RooflineOptions) (*Roofline, error) {
	unlock, err := lockDevice(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("roofline: %w", err)
	}
	defer unlock()
	threads := o.Threads
	if len(threads) == 0 {
		for n := 1; n <= t.fp.Cores; n++ {
			threads = append(threads, n)
		}
	}
	vb := t.fp.VectorBits()
	r := &Roofline{
		ProbeVersion: RooflineProbeVersion, Fingerprint: t.fp.Hash(), VectorBits: vb, FMAChains: fmaChains(vb),
		ReadBytes: o.ReadBytes, FMAIters: o.FMAIters, Measured: time.Now().UTC(), LoadAvg: loadAvg1(),
	}
	if r.ReadBytes <= 0 {
		r.ReadBytes = probeReadBytes(t.fp.LLCBytes())
	}
	if r.FMAIters <= 0 {
		r.FMAIters = fmaIters
	}
	exe, err := t.probeExe(ctx, r)
	if err != nil {
		return nil, err
	}
	for _, n := range threads {
		p := RooflinePoint{Threads: n}
		if p.PeakGFLOPs, err = runProbe(ctx, exe, n, "fma", r.FMAIters); err != nil {
			return nil, err
		}
		if p.ReadGBs, err = runProbe(ctx, exe, n, "read", r.ReadBytes); err != nil {
			return nil, err
		}
		r.Points = append(r.Points, p)
	}
	return r, nil
}

func (t *Target) probeExe(ctx context.Context, r *Roofline) (string, error) {
	src := probeSource(r.VectorBits, r.FMAChains)
	dir := filepath.Join(t.dir, "roofline")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("roofline: %w", err)
	}
	// Keyed like candidate objects: same gcc, flags and source, same binary.
	key := t.Builder.Key(target.Candidate{Source: src, CFlags: []string{"roofline-probe"}})
	exe := filepath.Join(dir, "probe-"+key[:16])
	if _, err := os.Stat(exe); err == nil {
		return exe, nil
	}
	if err := os.WriteFile(exe+".c", []byte(src), 0o644); err != nil {
		return "", fmt.Errorf("roofline: %w", err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", exe, os.Getpid())
	args := []string{"-O3", "-march=native", "-fopenmp", "-o", tmp, exe + ".c"}
	diag, _, err := runGCC(ctx, t.Builder.GCC, args)
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("roofline: build probe: %w\n%s", err, diag)
	}
	if err := os.Rename(tmp, exe); err != nil {
		return "", fmt.Errorf("roofline: %w", err)
	}
	return exe, nil
}

func runProbe(ctx context.Context, exe string, threads int, mode string, arg int64) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, mode, strconv.FormatInt(arg, 10))
	cmd.WaitDelay = 2 * time.Second
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS="+strconv.Itoa(threads), "OMP_PROC_BIND=close")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("roofline probe %s at %d threads: %w: %s", mode, threads, err, stderr.String())
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("roofline probe %s at %d threads: output %q", mode, threads, out)
	}
	return v, nil
}
