package search

import (
	"fmt"

	"llmir/costmodel"
	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cpu/cgen"
	"llmir/tuningdb"
)

// Backend is a target kind as the tuner, TuneModel and CompileModel see it:
// which kernel serves an IR workload, how a schedule of it is printed, the
// device it is recorded under and the codegen version of its records. The
// CPU backend (NewCPUBackend) prints C through cgen and the kernels'
// C generators; the CUDA backend (cudabench.NewBackend) prints CUDA C++
// through the cudakernels generators. It lives with the CUDA suites, not
// here, because the CUDA kernels' tests import search.
type Backend interface {
	// Kind is the database kind of the device ("cpu", "cuda").
	Kind() tuningdb.Kind
	// Target builds and measures candidates; nil for a backend that only
	// prints sources (compile on a machine without the device).
	Target() target.Target
	// Device is the identity records are stored and looked up under.
	Device() tuningdb.Device
	// CodegenVersion stamps records and filters lookups: a stored trace
	// means what this backend's printer makes of it at this version.
	CodegenVersion() int
	// Hardware is what design spaces see of the device at a thread count.
	Hardware(threads int) kernels.Hardware
	// Kernel is the backend's kernel of an IR workload; workloads without
	// one are errors wrapping kernels.ErrNoKernel. The kernel's Workload()
	// is w, so records tuned for it are found by compiles of the module.
	Kernel(w ir.Workload) (kernels.Kernel, error)
	// Source prints schedule s of k with its entry function named entry.
	Source(k kernels.Kernel, s *schedule.Schedule, hw kernels.Hardware, entry string) (string, error)
	// Candidate is Source under the symbol Entry, ready to build.
	Candidate(id string, k kernels.Kernel, s *schedule.Schedule, hw kernels.Hardware) (target.Candidate, error)
	// CostDevice is what the cost model's features know of the device.
	CostDevice(hw kernels.Hardware) costmodel.Device
	// Bound is a lower bound on k's time in seconds (0: unknown), the
	// task scheduler's floor for the opportunity left.
	Bound(threads int, k kernels.Kernel) float64
}

// CPUBackend is the CPU target: C from cgen or a template kernel's own
// generator, built by gcc, measured in the harness.
type CPUBackend struct {
	tg   *cpu.Target
	fp   *cpu.Fingerprint
	roof *cpu.Roofline
}

// NewCPUBackend is the backend of a CPU target; roof (may be nil) gives
// the cost model its ceilings and tasks their lower bound.
func NewCPUBackend(tg *cpu.Target, roof *cpu.Roofline) *CPUBackend {
	return &CPUBackend{tg: tg, fp: tg.CPU(), roof: roof}
}

// NewCPUSourceBackend prints for a CPU described by fp without a target:
// compile needs the fingerprint (vector width, caches) but never runs.
func NewCPUSourceBackend(fp *cpu.Fingerprint) *CPUBackend { return &CPUBackend{fp: fp} }

func (b *CPUBackend) Kind() tuningdb.Kind { return tuningdb.KindCPU }

// Target is nil for a source-only backend.
func (b *CPUBackend) Target() target.Target {
	if b.tg == nil {
		return nil
	}
	return b.tg
}

func (b *CPUBackend) Device() tuningdb.Device { return DeviceOf(b.fp, b.roof) }
func (b *CPUBackend) CodegenVersion() int     { return cgen.CodegenVersion }
func (b *CPUBackend) Hardware(threads int) kernels.Hardware {
	return CPUHardware(b.fp, threads)
}
func (b *CPUBackend) Kernel(w ir.Workload) (kernels.Kernel, error) { return kernels.FromWorkload(w) }
func (b *CPUBackend) Source(k kernels.Kernel, s *schedule.Schedule, hw kernels.Hardware, entry string) (string, error) {
	return Source(k, s, hw, entry)
}
func (b *CPUBackend) Candidate(id string, k kernels.Kernel, s *schedule.Schedule, hw kernels.Hardware) (target.Candidate, error) {
	return NewCandidate(id, k, s, hw)
}
func (b *CPUBackend) CostDevice(hw kernels.Hardware) costmodel.Device { return CostDevice(hw, b.roof) }
func (b *CPUBackend) Bound(threads int, k kernels.Kernel) float64 {
	if b.roof == nil {
		return 0
	}
	d, err := b.roof.Bound(threads, k.FLOPs(), k.Bytes())
	if err != nil {
		return 0
	}
	return d.Seconds()
}

// NewTuner is a tuner for any backend with a target.
func NewTuner(be Backend, db *tuningdb.DB, opts Options) (*Tuner, error) {
	tg := be.Target()
	if tg == nil {
		return nil, fmt.Errorf("tuner for %s: the backend has no target to measure on", be.Kind())
	}
	return &Tuner{Target: tg, Hardware: be.Hardware, Device: be.Device(), DB: db, Options: opts.WithDefaults(), Backend: be}, nil
}

// candidate prints one candidate through the tuner's backend (the CPU's
// printer when the tuner was built without one).
func (t *Tuner) candidate(id string, k kernels.Kernel, s *schedule.Schedule, hw kernels.Hardware) (target.Candidate, error) {
	if t.Backend != nil {
		return t.Backend.Candidate(id, k, s, hw)
	}
	return NewCandidate(id, k, s, hw)
}

// codegenVersion is the version the tuner's records carry and resume from.
func (t *Tuner) codegenVersion() int {
	if t.Backend != nil {
		return t.Backend.CodegenVersion()
	}
	return cgen.CodegenVersion
}

// backend is the options' backend, else the CPU target's.
func (o ModelOptions) backend() (Backend, error) {
	switch {
	case o.Backend != nil:
		return o.Backend, nil
	case o.Target != nil:
		return NewCPUBackend(o.Target, o.Roofline), nil
	}
	return nil, fmt.Errorf("tune model: a target (or backend) is required")
}

// backend is the options' backend, else the CPU printer for Hardware.
func (o CompileOptions) backend() Backend {
	if o.Backend != nil {
		return o.Backend
	}
	return hwBackend{CPUBackend: &CPUBackend{}, hw: o.Hardware}
}

// hwBackend is the CPU printer for a kernels.Hardware given directly
// (CompileOptions without a Backend: what compile did before backends).
type hwBackend struct {
	*CPUBackend
	hw kernels.Hardware
}

func (b hwBackend) Hardware(threads int) kernels.Hardware {
	hw := b.hw
	hw.Threads = max(threads, 1)
	return hw
}
func (b hwBackend) Device() tuningdb.Device { return tuningdb.Device{Kind: tuningdb.KindCPU} }
