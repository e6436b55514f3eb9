package cuda

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"llmir/target"
)

// ErrParse reports tool output (nvidia-smi, nvcc --version, the harness's
// info line) that does not have the expected form.
var ErrParse = errors.New("unexpected tool output")

// Fingerprint describes one GPU and the toolchain that builds for it.
type Fingerprint struct {
	Name string `json:"name"`
	// ComputeCapability is "9.0" for an H100; Arch is the nvcc arch
	// ("sm_90") and the compatibility class of the device.
	ComputeCapability string `json:"compute_capability"`
	Arch              string `json:"arch"`
	SMs               int    `json:"sms"`
	MemoryMiB         int64  `json:"memory_mib"`
	L2Bytes           int64  `json:"l2_bytes"`
	Driver            string `json:"driver"`
	Toolchain         struct {
		Compiler string   `json:"compiler"` // "nvcc"
		Version  string   `json:"version"`  // "13.0.48"
		Flags    []string `json:"flags"`
	} `json:"toolchain"`
}

// SMIQuery is the nvidia-smi query whose output ParseSMI reads.
var SMIQuery = []string{"--query-gpu=name,compute_cap,memory.total,driver_version", "--format=csv,noheader,nounits"}

// SMIInfo is one GPU's line of nvidia-smi output.
type SMIInfo struct {
	Name              string
	ComputeCapability string
	MemoryMiB         int64
	Driver            string
}

// ParseSMI reads the output of `nvidia-smi` with SMIQuery: one line per GPU,
// "NVIDIA H100 80GB HBM3, 9.0, 81559, 580.65.06". It returns the first GPU
// (the one the harness uses: device 0).
func ParseSMI(out string) (SMIInfo, error) {
	for n, line := range strings.Split(strings.TrimSpace(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) != 4 {
			return SMIInfo{}, fmt.Errorf("%w: nvidia-smi line %d: %d fields, want 4 (name, compute_cap, memory.total, driver_version): %q", ErrParse, n+1, len(f), line)
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		info := SMIInfo{Name: f[0], ComputeCapability: f[1], Driver: f[3]}
		if info.Name == "" {
			return SMIInfo{}, fmt.Errorf("%w: nvidia-smi line %d: empty name", ErrParse, n+1)
		}
		if !regexp.MustCompile(`^\d+\.\d+$`).MatchString(info.ComputeCapability) {
			return SMIInfo{}, fmt.Errorf("%w: nvidia-smi line %d: compute_cap %q", ErrParse, n+1, f[1])
		}
		mem, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || mem <= 0 {
			return SMIInfo{}, fmt.Errorf("%w: nvidia-smi line %d: memory.total %q (MiB, without units)", ErrParse, n+1, f[2])
		}
		info.MemoryMiB = mem
		if info.Driver == "" {
			return SMIInfo{}, fmt.Errorf("%w: nvidia-smi line %d: empty driver_version", ErrParse, n+1)
		}
		return info, nil
	}
	return SMIInfo{}, fmt.Errorf("%w: nvidia-smi printed no GPU", ErrParse)
}

var nvccRelease = regexp.MustCompile(`release (\d+\.\d+), V(\d+\.\d+\.\d+)`)

// ParseNVCCVersion reads `nvcc --version`, whose last line is like
// "Cuda compilation tools, release 13.0, V13.0.48", and returns "13.0.48".
func ParseNVCCVersion(out string) (string, error) {
	m := nvccRelease.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("%w: nvcc --version has no \"release X.Y, VX.Y.Z\": %q", ErrParse, strings.TrimSpace(out))
	}
	if !strings.HasPrefix(m[2], m[1]+".") {
		return "", fmt.Errorf("%w: nvcc --version: release %s but version V%s", ErrParse, m[1], m[2])
	}
	return m[2], nil
}

// HarnessInfo is what the harness reports of device 0 that nvidia-smi does
// not: its multiprocessor count and L2 size.
type HarnessInfo struct {
	SMs      int
	L2Bytes  int64
	MemBytes int64
	CC       string
	Name     string
}

// ParseHarnessInfo reads "info <sms> <l2_bytes> <mem_bytes> <major> <minor> <name…>".
func ParseHarnessInfo(line string) (HarnessInfo, error) {
	f := strings.Fields(line)
	if len(f) < 7 || f[0] != "info" {
		return HarnessInfo{}, fmt.Errorf("%w: harness --info: %q", ErrParse, line)
	}
	var h HarnessInfo
	var err error
	if h.SMs, err = strconv.Atoi(f[1]); err != nil || h.SMs <= 0 {
		return HarnessInfo{}, fmt.Errorf("%w: harness --info: SM count %q", ErrParse, f[1])
	}
	if h.L2Bytes, err = strconv.ParseInt(f[2], 10, 64); err != nil || h.L2Bytes <= 0 {
		return HarnessInfo{}, fmt.Errorf("%w: harness --info: L2 size %q", ErrParse, f[2])
	}
	if h.MemBytes, err = strconv.ParseInt(f[3], 10, 64); err != nil || h.MemBytes <= 0 {
		return HarnessInfo{}, fmt.Errorf("%w: harness --info: memory %q", ErrParse, f[3])
	}
	major, err1 := strconv.Atoi(f[4])
	minor, err2 := strconv.Atoi(f[5])
	if err1 != nil || err2 != nil || major <= 0 || minor < 0 {
		return HarnessInfo{}, fmt.Errorf("%w: harness --info: compute capability %q.%q", ErrParse, f[4], f[5])
	}
	h.CC = fmt.Sprintf("%d.%d", major, minor)
	h.Name = strings.Join(f[6:], " ")
	return h, nil
}

// ArchOf maps a compute capability "9.0" to nvcc's "sm_90".
func ArchOf(cc string) (string, error) {
	major, minor, ok := strings.Cut(cc, ".")
	if !ok || major == "" || minor == "" {
		return "", fmt.Errorf("%w: compute capability %q", ErrParse, cc)
	}
	if _, err := strconv.Atoi(major + minor); err != nil {
		return "", fmt.Errorf("%w: compute capability %q", ErrParse, cc)
	}
	return "sm_" + major + minor, nil
}

// NewFingerprint combines the three sources. The harness and nvidia-smi
// must agree on the compute capability: disagreeing means two GPUs of
// different kinds, and the harness (device 0) would measure another one.
func NewFingerprint(smi SMIInfo, nvccVersion string, h HarnessInfo, flags []string) (*Fingerprint, error) {
	if h.CC != smi.ComputeCapability {
		return nil, fmt.Errorf("fingerprint: nvidia-smi says compute capability %s, the harness's device 0 %s", smi.ComputeCapability, h.CC)
	}
	arch, err := ArchOf(smi.ComputeCapability)
	if err != nil {
		return nil, fmt.Errorf("fingerprint: %w", err)
	}
	fp := &Fingerprint{
		Name: smi.Name, ComputeCapability: smi.ComputeCapability, Arch: arch,
		SMs: h.SMs, MemoryMiB: smi.MemoryMiB, L2Bytes: h.L2Bytes, Driver: smi.Driver,
	}
	fp.Toolchain.Compiler = "nvcc"
	fp.Toolchain.Version = nvccVersion
	fp.Toolchain.Flags = append([]string(nil), flags...)
	return fp, nil
}

// Device is the fingerprint in the form every target shares; its
// compatibility class is the arch (records of one sm_90 GPU serve another).
func (f *Fingerprint) Device() target.Device {
	js, _ := json.Marshal(f) // plain struct: cannot fail
	h := sha256.Sum256(js)
	return target.Device{
		Kind:   "cuda",
		Name:   fmt.Sprintf("%s, %d SMs, %s, nvcc %s", f.Name, f.SMs, f.Arch, f.Toolchain.Version),
		Compat: f.Arch,
		JSON:   js,
		Hash:   hex.EncodeToString(h[:]),
	}
}

// runTool runs a short command and returns its standard output.
func runTool(ctx context.Context, name string, args ...string) (string, error) {
	return runToolTimeout(ctx, 30*time.Second, name, args...)
}

// runToolTimeout is runTool with a time limit other than 30 s.
func runToolTimeout(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 2 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
