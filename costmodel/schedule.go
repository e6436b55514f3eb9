package costmodel

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"runtime"

	"github.com/sourcegraph/conc/pool"

	"llmir/schedule"
)

// Work is what a kernel says of its own cost at its runtime extents,
// whatever the schedule: the FLOPs and minimum bytes of kernels.Kernel.
// Template kernels have no loop nest to measure, so these (with their knob
// values) are all the model sees of them.
type Work struct {
	FLOPs float64
	Bytes float64
}

// MaxKnobs is how many sampling steps of a trace get knob features.
const MaxKnobs = 8

// workFeatureNames follow the nest's features; doc.go documents them.
var workFeatureNames = []string{"template", "log_kernel_flops", "log_kernel_bytes", "log_kernel_ai", "knobs", "kind"}

var knobFeatureNames = []string{"log_value", "frac"}

var (
	workOffset = len(globalFeatureNames) + LoopLevels*len(loopFeatureNames) + TopBuffers*len(bufferFeatureNames)
	knobOffset = workOffset + len(workFeatureNames)
)

// ScheduleFeatures is the feature vector of schedule s of a kernel doing w:
// the nest's features (Features) when the schedule has a loop nest, and for
// every schedule the kernel's work and the values its sampling steps chose.
// A template kernel (s.Def.Template) has an empty nest: its nest features
// are zero except the FLOP and byte counts, their intensity and the
// roofline time, taken from w, so that the roofline model ties all its
// candidates and the learned model ranks them by their knobs.
func ScheduleFeatures(s *schedule.Schedule, w Work, dev Device, dims []int64) ([]float64, error) {
	var v []float64
	if s.Def != nil && s.Def.Template {
		v = templateVector(w, dev)
	} else {
		a, err := Analyze(s.Nest(), dev, dims)
		if err != nil {
			return nil, err
		}
		v = a.vector()
		if w.FLOPs > 0 || w.Bytes > 0 {
			setWork(v, w, false)
		}
	}
	knobs(v, s.Trace())
	if s.Def != nil {
		v[workOffset+5] = KindCode(s.Def.Name)
	}
	return v, nil
}

// KindCode is the "kind" feature of a compute definition's name: a stable
// number in [0, 1) (FNV-1a), so that trees can split the knob features of
// one kind of kernel (what knob 0 means differs between a GEMM template
// and a rope nest) from another's.
func KindCode(def string) float64 {
	h := fnv.New32a()
	h.Write([]byte(def))
	return float64(h.Sum32()) / (1 << 32)
}

// ScheduleFeaturesBatch is ScheduleFeatures over a population of one task
// in parallel (up to GOMAXPROCS goroutines), in the order of ss; the first
// error (naming the candidate) cancels the rest.
func ScheduleFeaturesBatch(ctx context.Context, ss []*schedule.Schedule, w Work, dev Device, dims []int64) ([][]float64, error) {
	out := make([][]float64, len(ss))
	p := pool.New().WithMaxGoroutines(runtime.GOMAXPROCS(0)).WithContext(ctx).WithCancelOnError()
	for i, s := range ss {
		p.Go(func(ctx context.Context) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			f, err := ScheduleFeatures(s, w, dev, dims)
			if err != nil {
				return fmt.Errorf("candidate %d: %w", i, err)
			}
			out[i] = f
			return nil
		})
	}
	if err := p.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// templateVector is the vector of a schedule without a nest.
func templateVector(w Work, dev Device) []float64 {
	dev = dev.withDefaults()
	v := make([]float64, NumFeatures)
	set := func(name string, x float64) { v[indexOf(name)] = x }
	set("log_flops", lg(w.FLOPs))
	set("log_ideal_bytes", lg(w.Bytes))
	set("log_ai_ideal", lg(w.FLOPs/math.Max(w.Bytes, 1)))
	// Every candidate gets the same bound: the kernel's work at the
	// device's peaks, as if perfectly scheduled.
	t := max(w.FLOPs/(dev.PeakGFLOPs*1e9), w.Bytes/(dev.ReadGBs*1e9))
	set("log_roofline_seconds", math.Log2(math.Max(t, 1e-12)))
	set("vec_lanes", 1)
	setWork(v, w, true)
	return v
}

func setWork(v []float64, w Work, template bool) {
	if template {
		v[workOffset] = 1
	}
	v[workOffset+1] = lg(w.FLOPs)
	v[workOffset+2] = lg(w.Bytes)
	v[workOffset+3] = lg(w.FLOPs / math.Max(w.Bytes, 1))
}

// knobs fills the knob features from the trace's sampling steps, in trace
// order (the order a kernel's Space samples them, so position i is the
// same knob across one task's candidates).
func knobs(v []float64, tr *schedule.Trace) {
	n := 0
	for _, in := range tr.Insts {
		var val, frac float64
		switch in.Op {
		case "sample_categorical":
			if len(in.Decision) != 1 || in.Decision[0] < 0 || int(in.Decision[0]) >= len(in.Ints) {
				continue
			}
			d := in.Decision[0]
			val = float64(in.Ints[d].Lit)
			if len(in.Ints) > 1 {
				frac = float64(d) / float64(len(in.Ints)-1)
			}
		case "sample_perfect_tile":
			if len(in.Decision) == 0 {
				continue
			}
			inner := float64(in.Decision[len(in.Decision)-1])
			total := 1.0
			for _, f := range in.Decision {
				total *= float64(f)
			}
			val = inner
			if total > 1 {
				frac = math.Log2(inner) / math.Log2(total)
			}
		default:
			continue
		}
		if n < MaxKnobs {
			v[knobOffset+2*n] = lg(val)
			v[knobOffset+2*n+1] = frac
		}
		n++
	}
	v[workOffset+4] = float64(n)
}
