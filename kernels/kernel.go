package kernels

import (
	"llmir/ir"
	"llmir/schedule"
)

// Hardware is what a design space knows of the device it schedules for.
type Hardware struct {
	VectorBits int   // widest useful vector in bits (512 with AVX-512); 0 for scalar code
	Threads    int   // threads the kernel may use
	L1, L2     int64 // per-core data cache sizes in bytes (0 when unknown)
	LLC        int64 // last-level cache size in bytes (0 when unknown)
}

// lanes is the number of f32 lanes of one vector (at least 1).
func (h Hardware) lanes() int64 { return max(int64(h.VectorBits/32), 1) }

// Kernel is one LLM operator (or fused group) at concrete shapes: its
// computation, its meaning, and how it may be scheduled.
type Kernel interface {
	// Name identifies the kernel and its shape, e.g.
	// "linear/M=512,N=4096,K=4096/f32".
	Name() string
	// Workload is the kernel's identity in the tuning database: the op
	// group, bucketed shapes and dtypes (ir.Workload's key contract).
	Workload() ir.Workload
	// Def is the compute definition: inputs then outputs in ABI order, with
	// dynamic dims at their bucket extents.
	Def() (*schedule.Def, error)
	// Dims are the runtime extents of the dynamic dims to measure at.
	Dims() []int64
	// Reference computes the outputs (ABI order) from the inputs at the
	// runtime extents, accumulating in float64.
	Reference(inputs [][]float64) [][]float64
	// FLOPs and Bytes (minimum memory traffic) at the runtime extents.
	FLOPs() float64
	Bytes() float64
	// Space applies the design space: primitives whose knobs are sampled
	// (SampleCategorical, SamplePerfectTile), so that every draw is a
	// replayable trace and mutating a decision gives a neighbour.
	Space(s *schedule.Schedule, hw Hardware) error
	// Default applies the rule-based schedule used when nothing is tuned:
	// the same template with knobs chosen by rule.
	Default(s *schedule.Schedule, hw Hardware) error
}
