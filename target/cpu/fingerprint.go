package cpu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"llmir/target"
)

// ErrNoCompiler is returned when gcc cannot be found or run.
var ErrNoCompiler = errors.New("gcc not found (install it: apt-get install gcc)")

// BaseFlags are the gcc flags of every candidate on the measuring machine.
var BaseFlags = []string{"-O3", "-march=native", "-fopenmp", "-fPIC", "-shared"}

// BaseLDFlags follow every candidate's source on the gcc command line: the
// harness that dlopens candidates does not link libm, so a candidate calling
// expf or sqrtf must bring it as a dependency of its own.
var BaseLDFlags = []string{"-lm"}

// isaFlags are the /proc/cpuinfo flags that change generated code or its
// speed; the rest (aes, rdrand…) would only split the fingerprint.
var isaFlags = []string{
	"sse4_2", "avx", "avx2", "fma", "f16c",
	"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx512vbmi",
	"avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
	"asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm",
}

// Cache is one level of the cache hierarchy as seen by core 0.
type Cache struct {
	Level int    `json:"level"`
	Type  string `json:"type"` // Data, Instruction, Unified
	Bytes int64  `json:"bytes"`
}

// Toolchain is the compiler that builds candidates.
type Toolchain struct {
	Compiler string   `json:"compiler"` // "gcc"
	Version  string   `json:"version"`  // gcc -dumpfullversion
	Flags    []string `json:"flags"`
	// March is what -march=native resolved to (gcc -Q --help=target).
	March string `json:"march"`
}

// Fingerprint describes the CPU and toolchain that build and measure. Its
// canonical JSON is json.Marshal of this struct: fixed field order, sorted
// slices, no maps.
type Fingerprint struct {
	Arch   string   `json:"arch"`
	Vendor string   `json:"vendor"`
	Model  string   `json:"model"`
	ISA    []string `json:"isa"`
	Cores  int      `json:"cores"`
	Caches []Cache  `json:"caches"`
	// CacheSource says where the sizes came from: "sysfs" or "getconf"
	// (CPUID through glibc, which hypervisors sometimes report oddly).
	CacheSource string    `json:"cache_source"`
	Toolchain   Toolchain `json:"toolchain"`
}

// Has reports whether the CPU has the ISA flag.
func (f *Fingerprint) Has(flag string) bool { return slices.Contains(f.ISA, flag) }

// VectorBits is the widest useful SIMD width: 512 with avx512f, 256 with
// avx2+fma, else 128 (SSE or NEON).
func (f *Fingerprint) VectorBits() int {
	switch {
	case f.Has("avx512f"):
		return 512
	case f.Has("avx2") && f.Has("fma"):
		return 256
	}
	return 128
}

// CompatClass names the ISA level that decides generated code, e.g.
// "x86_64/avx512f"; tuned records transfer between machines of one class.
func (f *Fingerprint) CompatClass() string {
	switch {
	case f.Arch != "x86_64":
		return f.Arch + "/base"
	case f.Has("avx512f"):
		return "x86_64/avx512f"
	case f.Has("avx2") && f.Has("fma"):
		return "x86_64/avx2"
	}
	return "x86_64/sse2"
}

// LLCBytes is the last-level cache size (0 when unknown).
func (f *Fingerprint) LLCBytes() int64 {
	var best Cache
	for _, c := range f.Caches {
		if c.Type != "Instruction" && c.Level >= best.Level {
			best = c
		}
	}
	return best.Bytes
}

// JSON is the canonical encoding.
func (f *Fingerprint) JSON() []byte {
	b, err := json.Marshal(f)
	if err != nil {
		panic(fmt.Sprintf("fingerprint marshal: %v", err)) // plain struct: cannot fail
	}
	return b
}

// Hash is the SHA-256 hex of the canonical JSON.
func (f *Fingerprint) Hash() string {
	s := sha256.Sum256(f.JSON())
	return hex.EncodeToString(s[:])
}

// Device is the fingerprint in the shape every target shares.
func (f *Fingerprint) Device() target.Device {
	return target.Device{
		Kind:   "cpu",
		Name:   fmt.Sprintf("%s, %d cores, %s, gcc %s", f.Model, f.Cores, f.CompatClass(), f.Toolchain.Version),
		Compat: f.CompatClass(),
		JSON:   f.JSON(),
		Hash:   f.Hash(),
	}
}

// FindGCC returns gcc's path: the given one, else $CC when it is a gcc,
// else gcc on PATH.
func FindGCC(path string) (string, error) {
	if path == "" {
		if cc := os.Getenv("CC"); cc != "" && strings.Contains(filepath.Base(cc), "gcc") {
			path = cc
		} else {
			path = "gcc"
		}
	}
	p, err := exec.LookPath(path)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoCompiler, err)
	}
	return p, nil
}

// DetectFingerprint reads the CPU from /proc/cpuinfo and sysfs and asks gcc
// for its version. It is cheap (milliseconds); the roofline probes are the
// expensive, cached part.
func DetectFingerprint(ctx context.Context, gcc string) (*Fingerprint, error) {
	f := &Fingerprint{Arch: goArchName(), Cores: runtime.NumCPU()}
	if err := f.readCPUInfo(); err != nil {
		return nil, fmt.Errorf("fingerprint: %w", err)
	}
	f.readCaches(ctx)
	tc, err := detectToolchain(ctx, gcc)
	if err != nil {
		return nil, fmt.Errorf("fingerprint: %w", err)
	}
	f.Toolchain = tc
	return f, nil
}

func goArchName() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	}
	return runtime.GOARCH
}

func (f *Fingerprint) readCPUInfo() error {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return err
	}
	have := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "vendor_id", "CPU implementer":
			if f.Vendor == "" {
				f.Vendor = v
			}
		case "model name":
			if f.Model == "" {
				f.Model = v
			}
		case "flags", "Features":
			for _, fl := range strings.Fields(v) {
				have[fl] = true
			}
		}
	}
	for _, fl := range isaFlags {
		if have[fl] {
			f.ISA = append(f.ISA, fl)
		}
	}
	slices.Sort(f.ISA)
	if f.Model == "" {
		f.Model = "unknown " + f.Arch
	}
	return nil
}

// readCaches prefers sysfs; containers and some VMs hide it, and then
// getconf (CPUID through glibc) is the only source.
func (f *Fingerprint) readCaches(ctx context.Context) {
	dirs, _ := filepath.Glob("/sys/devices/system/cpu/cpu0/cache/index*")
	for _, d := range dirs {
		read := func(name string) string {
			b, _ := os.ReadFile(filepath.Join(d, name))
			return strings.TrimSpace(string(b))
		}
		lvl, err := strconv.Atoi(read("level"))
		if err != nil {
			continue
		}
		size := parseSize(read("size"))
		if size <= 0 {
			continue
		}
		f.Caches = append(f.Caches, Cache{Level: lvl, Type: read("type"), Bytes: size})
	}
	if len(f.Caches) > 0 {
		f.CacheSource = "sysfs"
	} else {
		f.Caches = getconfCaches(ctx)
		f.CacheSource = "getconf"
	}
	slices.SortFunc(f.Caches, func(a, b Cache) int {
		if a.Level != b.Level {
			return a.Level - b.Level
		}
		return strings.Compare(a.Type, b.Type)
	})
}

// parseSize reads sysfs sizes such as "48K" or "32768K" or "1M".
func parseSize(s string) int64 {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0
	}
	return n * mult
}

func getconfCaches(ctx context.Context) []Cache {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getconf", "-a").Output()
	if err != nil {
		return nil
	}
	names := map[string]Cache{
		"LEVEL1_DCACHE_SIZE": {Level: 1, Type: "Data"},
		"LEVEL1_ICACHE_SIZE": {Level: 1, Type: "Instruction"},
		"LEVEL2_CACHE_SIZE":  {Level: 2, Type: "Unified"},
		"LEVEL3_CACHE_SIZE":  {Level: 3, Type: "Unified"},
		"LEVEL4_CACHE_SIZE":  {Level: 4, Type: "Unified"},
	}
	var cs []Cache
	for _, line := range strings.Split(string(out), "\n") {
		fs := strings.Fields(line)
		if len(fs) != 2 {
			continue
		}
		c, ok := names[fs[0]]
		n, err := strconv.ParseInt(fs[1], 10, 64)
		if !ok || err != nil || n <= 0 {
			continue
		}
		c.Bytes = n
		cs = append(cs, c)
	}
	return cs
}

func detectToolchain(ctx context.Context, gcc string) (Toolchain, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ver, err := exec.CommandContext(ctx, gcc, "-dumpfullversion").Output()
	if err != nil {
		return Toolchain{}, fmt.Errorf("%w: %s -dumpfullversion: %v", ErrNoCompiler, gcc, err)
	}
	tc := Toolchain{Compiler: "gcc", Version: strings.TrimSpace(string(ver)), Flags: slices.Clone(BaseFlags)}
	// What -march=native means here: two machines with the same CPU model
	// string can still get different code from different gcc versions.
	if out, err := exec.CommandContext(ctx, gcc, "-march=native", "-Q", "--help=target").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			fs := strings.Fields(line)
			if len(fs) == 2 && fs[0] == "-march=" {
				tc.March = fs[1]
			}
		}
	}
	return tc, nil
}
