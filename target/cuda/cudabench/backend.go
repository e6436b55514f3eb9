package cudabench

import (
	"encoding/json"
	"fmt"

	"llmir/costmodel"
	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cuda"
	cudakernels "llmir/target/cuda/kernels"
	"llmir/tuningdb"
)

// Backend is the CUDA target as search sees it (search.Backend): the IR's
// workloads map to the cudakernels template kernels (cudakernels.
// FromWorkload), schedules print through their CUDA generators, and records
// carry the GPU's fingerprint and cudakernels.CodegenVersion. It lives
// here rather than in search because the CUDA kernels' tests import search.
type Backend struct {
	tg  *cuda.Target // nil: prints sources only
	gpu cuda.GPU
	dev tuningdb.Device
	bw  cuda.Bandwidth
}

var _ search.Backend = (*Backend)(nil)

// NewBackend is the backend of a GPU target; bw (zero: not probed) is
// stored with the device and gives tasks their bandwidth bound.
func NewBackend(tg *cuda.Target, bw cuda.Bandwidth) *Backend {
	return &Backend{tg: tg, gpu: tg.Hardware(), dev: DeviceOf(tg.GPU(), bw), bw: bw}
}

// DeviceOf is the tuningdb identity of a GPU: its fingerprint, compat
// class the arch, and the read bandwidth as its one roofline point.
func DeviceOf(fp *cuda.Fingerprint, bw cuda.Bandwidth) tuningdb.Device {
	d := fp.Device()
	dev := tuningdb.Device{Hash: d.Hash, Kind: tuningdb.KindCUDA, Compat: d.Compat, Fingerprint: d.JSON}
	if bw.ReadGBps > 0 {
		dev.Roofline.Points = []tuningdb.RooflinePoint{{Threads: 0, ReadGBps: bw.ReadGBps}}
	}
	return dev
}

// NewSourceBackend prints sources for a recorded GPU (compile on a machine
// without one): the generators read the arch, SM count and L2 size from
// the stored fingerprint.
func NewSourceBackend(dev tuningdb.Device) (*Backend, error) {
	if dev.Kind != tuningdb.KindCUDA {
		return nil, fmt.Errorf("device %s is a %s device, not cuda", short(dev.Hash), dev.Kind)
	}
	var fp cuda.Fingerprint
	if err := json.Unmarshal(dev.Fingerprint, &fp); err != nil {
		return nil, fmt.Errorf("device %s: fingerprint: %w", short(dev.Hash), err)
	}
	if fp.Arch == "" || fp.SMs < 1 {
		return nil, fmt.Errorf("device %s: fingerprint without arch or SM count", short(dev.Hash))
	}
	b := &Backend{gpu: cuda.GPU{Arch: fp.Arch, SMs: fp.SMs, L2Bytes: fp.L2Bytes}, dev: dev}
	for _, p := range dev.Roofline.Points {
		b.bw.ReadGBps = p.ReadGBps
	}
	return b, nil
}

// NewArchBackend prints sources for a GPU of an arch nobody recorded yet:
// the device has no hash (lookups go by compat class only) and the
// generators see the H100's SM count and L2 size.
func NewArchBackend(arch string) *Backend {
	g := cuda.H100
	g.Arch = arch
	return &Backend{gpu: g, dev: tuningdb.Device{Kind: tuningdb.KindCUDA, Compat: arch}}
}

func short(h string) string { return h[:min(len(h), 12)] }

func (b *Backend) Kind() tuningdb.Kind { return tuningdb.KindCUDA }

func (b *Backend) Target() target.Target {
	if b.tg == nil {
		return nil
	}
	return b.tg
}

func (b *Backend) Device() tuningdb.Device { return b.dev }

// GPU is what the generators are told of the device.
func (b *Backend) GPU() cuda.GPU { return b.gpu }

func (b *Backend) CodegenVersion() int { return cudakernels.CodegenVersion }

// Hardware is the GPU's view for design spaces; a CUDA kernel's threads
// are its launch's business, so the thread count is ignored (records are
// kept under threads=1).
func (b *Backend) Hardware(int) kernels.Hardware { return cudakernels.Hardware(b.gpu) }

func (b *Backend) Kernel(w ir.Workload) (kernels.Kernel, error) { return cudakernels.FromWorkload(w) }

func (b *Backend) Source(k kernels.Kernel, s *schedule.Schedule, _ kernels.Hardware, entry string) (string, error) {
	g, ok := k.(cudakernels.Kernel)
	if !ok {
		return "", fmt.Errorf("%s has no CUDA generator", k.Name())
	}
	return g.EmitCUDA(s, b.gpu, entry)
}

func (b *Backend) Candidate(id string, k kernels.Kernel, s *schedule.Schedule, _ kernels.Hardware) (target.Candidate, error) {
	g, ok := k.(cudakernels.Kernel)
	if !ok {
		return target.Candidate{}, fmt.Errorf("codegen %s: %s has no CUDA generator", id, k.Name())
	}
	return cudakernels.NewCandidate(id, g, s, b.gpu)
}

// Nominal H100 ceilings for the cost model when the bandwidth was not
// probed: HBM3 reads and dense bf16 tensor-core math.
const (
	nominalReadGBps    = 3000
	nominalPeakGFLOPs  = 900_000
	nominalVectorBytes = 16
)

// CostDevice: the template kernels have no loop nest, so the cost model
// sees their knob decisions and the work's roofline (costmodel's template
// features); the device is the GPU's read bandwidth, L2 and SM count.
func (b *Backend) CostDevice(hw kernels.Hardware) costmodel.Device {
	read := b.bw.ReadGBps
	if read <= 0 {
		read = nominalReadGBps
	}
	return costmodel.Device{VectorBits: 8 * nominalVectorBytes, Threads: max(hw.Threads, 1), L2: hw.L2, LLC: hw.LLC,
		PeakGFLOPs: nominalPeakGFLOPs, ReadGBs: read}
}

// Bound is the kernel's bytes at the probed read bandwidth (0 unprobed).
func (b *Backend) Bound(_ int, k kernels.Kernel) float64 {
	if b.bw.ReadGBps <= 0 {
		return 0
	}
	return k.Bytes() / (b.bw.ReadGBps * 1e9)
}
