package search

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// Entry is the exported symbol of every generated candidate.
const Entry = "llmir_kernel"

// CPUHardware is what a design space needs to know of a CPU at a thread
// count: the vector width from the fingerprint and the per-core data caches.
func CPUHardware(fp *cpu.Fingerprint, threads int) kernels.Hardware {
	hw := kernels.Hardware{VectorBits: fp.VectorBits(), Threads: max(threads, 1), LLC: fp.LLCBytes()}
	for _, c := range fp.Caches {
		if c.Type == "Instruction" {
			continue
		}
		switch c.Level {
		case 1:
			hw.L1 = c.Bytes
		case 2:
			hw.L2 = c.Bytes
		}
	}
	return hw
}

// NewProblem is the kernel at its runtime extents as a target.Problem:
// buffers in ABI order (inputs, then outputs), dynamic dims at their runtime
// extent. Make one per shape and reuse it: the reference is computed once
// per Problem.
func NewProblem(k kernels.Kernel, seed uint64) (*target.Problem, error) {
	def, err := k.Def()
	if err != nil {
		return nil, fmt.Errorf("problem %s: %w", k.Name(), err)
	}
	dims := k.Dims()
	if len(dims) != len(def.Dims) {
		return nil, fmt.Errorf("problem %s: %d runtime dims for %d dynamic dims", k.Name(), len(dims), len(def.Dims))
	}
	p := &target.Problem{
		Name: k.Name(), Dims: dims, Seed: seed,
		Reference: k.Reference, FLOPs: k.FLOPs(), Bytes: k.Bytes(),
	}
	nIn := len(def.Inputs)
	for i, t := range def.Params() {
		dt, err := targetDType(t.DType)
		if err != nil {
			return nil, fmt.Errorf("problem %s: buffer %s: %w", k.Name(), t.Name, err)
		}
		n := int64(1)
		for _, d := range t.Shape {
			e := d.Extent
			if d.Dynamic {
				j := def.DimIndex(d.Name)
				if j < 0 || dims[j] < 1 || dims[j] > d.Extent {
					return nil, fmt.Errorf("problem %s: buffer %s: dynamic dim %s outside 1..%d", k.Name(), t.Name, d.Name, d.Extent)
				}
				e = dims[j]
			}
			n *= e
		}
		spec := target.BufferSpec{Name: t.Name, DType: dt, Elems: n, Output: i >= nIn}
		if f, ok := k.(kernels.Filler); ok && !spec.Output {
			spec.Fill = f.Fill(t.Name)
		}
		p.Buffers = append(p.Buffers, spec)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

func targetDType(d schedule.DType) (target.DType, error) {
	switch d {
	case schedule.F32:
		return target.F32, nil
	case schedule.BF16:
		return target.BF16, nil
	case schedule.F16:
		return target.F16, nil
	case schedule.I32:
		return target.I32, nil
	case schedule.I8:
		return target.I8, nil
	case schedule.U8:
		return target.U8, nil
	}
	return "", fmt.Errorf("unknown dtype %v", d)
}

// NewCandidate prints schedule s of kernel k as C for the CPU target: the
// lowered nest through cgen, or a template kernel's own generator. An error
// here is a lowering failure of this schedule (recorded as build_error by
// the tuner), not of the infrastructure.
func NewCandidate(id string, k kernels.Kernel, s *schedule.Schedule, hw kernels.Hardware) (target.Candidate, error) {
	src, err := Source(k, s, hw, Entry)
	if err != nil {
		return target.Candidate{}, fmt.Errorf("codegen %s: %w", id, err)
	}
	return target.Candidate{ID: id, Source: src, Entry: Entry, Threads: max(hw.Threads, 1)}, nil
}

// DefaultSchedule applies the kernel's rule-based schedule.
func DefaultSchedule(k kernels.Kernel, hw kernels.Hardware) (*schedule.Schedule, error) {
	def, err := k.Def()
	if err != nil {
		return nil, fmt.Errorf("default schedule of %s: %w", k.Name(), err)
	}
	s, err := schedule.New(def, 0)
	if err != nil {
		return nil, fmt.Errorf("default schedule of %s: %w", k.Name(), err)
	}
	if err := k.Default(s, hw); err != nil {
		return nil, fmt.Errorf("default schedule of %s: %w", k.Name(), err)
	}
	return s, nil
}

// SampleSchedule draws one schedule of the kernel's design space.
func SampleSchedule(k kernels.Kernel, hw kernels.Hardware, seed uint64) (*schedule.Schedule, error) {
	def, err := k.Def()
	if err != nil {
		return nil, fmt.Errorf("sample %s: %w", k.Name(), err)
	}
	s, err := schedule.New(def, seed)
	if err != nil {
		return nil, fmt.Errorf("sample %s seed %d: %w", k.Name(), seed, err)
	}
	if err := k.Space(s, hw); err != nil {
		return nil, fmt.Errorf("sample %s seed %d: %w", k.Name(), seed, err)
	}
	return s, nil
}

// TraceKey is the compacted JSON of a trace: the identity under which
// schedules are deduplicated, here and in the database.
func TraceKey(s *schedule.Schedule) (json.RawMessage, error) {
	b, err := s.Trace().JSON()
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	return compact(b), nil
}

func compact(b []byte) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return json.RawMessage(b)
	}
	return buf.Bytes()
}

// DeviceOf is the tuningdb identity of a CPU target, with its roofline
// points when known (nil: none).
func DeviceOf(fp *cpu.Fingerprint, roof *cpu.Roofline) tuningdb.Device {
	d := fp.Device()
	dev := tuningdb.Device{Hash: d.Hash, Kind: tuningdb.KindCPU, Compat: d.Compat, Fingerprint: d.JSON}
	if roof != nil {
		for _, p := range roof.Points {
			dev.Roofline.Points = append(dev.Roofline.Points, tuningdb.RooflinePoint{Threads: p.Threads, PeakGFLOPS: p.PeakGFLOPs, ReadGBps: p.ReadGBs})
		}
	}
	return dev
}

// WorkloadOf is the tuningdb identity of a kernel tuned at a thread count:
// the kernel's workload with the attribute threads=N (see the package doc).
func WorkloadOf(k kernels.Kernel, threads int) tuningdb.Workload {
	w := k.Workload()
	attrs := make(map[string]string, len(w.Attrs)+1)
	for a, v := range w.Attrs {
		attrs[a] = v
	}
	attrs["threads"] = strconv.Itoa(max(threads, 1))
	w.Attrs = attrs
	js := w.CanonicalJSON()
	group := ""
	for i, g := range w.Group {
		if i > 0 {
			group += "+"
		}
		group += g
	}
	return tuningdb.Workload{Key: tuningdb.HashJSON(js), Family: w.Family(), Bucket: w.Bucket(), Group: group, JSON: js}
}
