package cudabench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kernels"
	"llmir/kernels/ref"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cuda"
	cudakernels "llmir/target/cuda/kernels"
	"llmir/tuningdb"
)

// Task is one kernel to measure, with an optional baseline on the same
// problem (cuBLAS for GEMV).
type Task struct {
	Kernel   cudakernels.Kernel
	Baseline cudakernels.Kernel
}

// Llama3Decode is the decode suite of llama-3-8b (bf16), built from the IR
// workloads of the imported model so that its records land under the keys
// `llmir compile --target cuda` looks up: every decode workload with a CUDA
// kernel (q/o, k/v, gate/up, down and lm_head GEMVs, rms_norm, silu, mul,
// add, the token embedding and the greedy argmax) at batch 1 and 16, and
// paged attention at batch 32, context 4096, KV block sizes 16…128.
// Linears carry their cuBLAS baseline.
func Llama3Decode() ([]Task, error) {
	var ts []Task
	seen := map[string]bool{}
	for _, batch := range []int64{1, 16} {
		more, err := ModelTasks("llama-3-8b", hf.Options{DType: "bf16"}, "decode", map[string]int64{"batch": batch}, seen)
		if err != nil {
			return nil, err
		}
		for _, t := range more {
			if _, attn := cudakernels.Unwrap(t.Kernel).(cudakernels.PagedAttention); !attn {
				ts = append(ts, t)
			}
		}
	}
	for _, bs := range []int64{16, 32, 64, 128} {
		more, err := ModelTasks("llama-3-8b", hf.Options{DType: "bf16", BlockSize: bs, DecodeContext: 4096}, "decode", map[string]int64{"batch": 32}, seen)
		if err != nil {
			return nil, err
		}
		for _, t := range more {
			if _, attn := cudakernels.Unwrap(t.Kernel).(cudakernels.PagedAttention); attn {
				ts = append(ts, t)
			}
		}
	}
	return ts, nil
}

// Llama3Prefill is llama-3-8b's prefill linears (q/o 4096×4096, k/v
// 1024×4096, gate/up 14336×4096, down 4096×14336) as bf16 GEMMs on tensor
// cores at 512…4096 prompt tokens (batch 1), and the lm_head (128256×4096)
// at 512, built from the IR workloads, against cuBLAS GemmEx; and the rope
// (q and k), append_kv and causal attention of 512 and 4096 tokens, without
// a cuBLAS baseline (attention relates to PyTorch SDPA through --sdpa).
func Llama3Prefill() ([]Task, error) {
	var ts []Task
	seen := map[string]bool{}
	for _, seq := range []int64{512, 1024, 2048, 4096} {
		more, err := ModelTasks("llama-3-8b", hf.Options{DType: "bf16"}, "prefill", map[string]int64{"batch": 1, "seq": seq}, seen)
		if err != nil {
			return nil, err
		}
		for _, t := range more {
			switch k := cudakernels.Unwrap(t.Kernel).(type) {
			case cudakernels.GEMM:
				// The lm_head over a whole prompt only at 512: engines take
				// the last token's logits, and its larger GEMMs (up to 4
				// TFLOP, seconds of reference) would double the suite's time.
				if k.N != lmHeadVocab || seq == 512 {
					ts = append(ts, t)
				}
			case cudakernels.Rope, cudakernels.AppendKV, cudakernels.PrefillAttention:
				// Memory-bound rows that only a prompt makes large enough
				// to relate to the copy bandwidth; attention at the two
				// ends only, its float64 reference growing with S² (1.6 s
				// on one core at 512 tokens, 64 times that at 4096, run
				// per KV head in parallel).
				if seq == 512 || seq == 4096 {
					ts = append(ts, t)
				}
			}
		}
	}
	return ts, nil
}

// lmHeadVocab is llama-3-8b's vocabulary: the lm_head linear's N.
const lmHeadVocab = 128256

// ModelTasks is a task per distinct workload of function fn of a preset
// (fused and unfused alternatives, as the tuner sees them) that has a CUDA
// kernel, at the given dims, skipping keys in seen (and adding its own).
// Linear kernels get their cuBLAS baseline.
func ModelTasks(preset string, o hf.Options, fn string, dims map[string]int64, seen map[string]bool) ([]Task, error) {
	m, err := hf.ImportPreset(preset, o)
	if err != nil {
		return nil, fmt.Errorf("suite %s: %w", preset, err)
	}
	if err := ir.InferShapes(m); err != nil {
		return nil, fmt.Errorf("suite %s: %w", preset, err)
	}
	groups, err := ir.Partition(m, dims)
	if err != nil {
		return nil, fmt.Errorf("suite %s: %w", preset, err)
	}
	var ts []Task
	for _, t := range ir.GroupTasks(groups) {
		key := t.Workload.Key()
		if seen[key] || !slices.Contains(t.Funcs, fn) {
			continue
		}
		k, err := cudakernels.FromWorkload(t.Workload)
		if errors.Is(err, kernels.ErrNoKernel) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("suite %s: %w", preset, err)
		}
		seen[key] = true
		ts = append(ts, Task{Kernel: k, Baseline: baselineOf(k)})
	}
	return ts, nil
}

// baselineOf is the vendor kernel of the same problem (nil: none).
func baselineOf(k cudakernels.Kernel) cudakernels.Kernel {
	switch g := cudakernels.Unwrap(k).(type) {
	case cudakernels.GEMV:
		return cudakernels.GEMVCuBLAS{GEMV: g}
	case cudakernels.GEMM:
		return cudakernels.GEMMCuBLAS{GEMM: g}
	}
	return nil
}

// Conformance is the check suite: odd shapes (primes, one past a vector,
// ragged and empty sequences, GQA groups of 1 and 4, head_dim 64) that a
// wrong index or a missing tail would fail.
func Conformance() []Task {
	ts := []Task{}
	for _, g := range []cudakernels.GEMV{{M: 1, N: 37, K: 264}, {M: 3, N: 257, K: 4104}, {M: 16, N: 130, K: 1032}} {
		ts = append(ts, Task{Kernel: g, Baseline: cudakernels.GEMVCuBLAS{GEMV: g}})
	}
	// Tails in every dimension (M, N not multiples of any tile, K one
	// 16-byte chunk past a slice) and M past the periodic-input period.
	for _, g := range []cudakernels.GEMM{{M: 1, N: 8, K: 8}, {M: 77, N: 130, K: 264}, {M: 333, N: 200, K: 1032}} {
		ts = append(ts, Task{Kernel: g, Baseline: cudakernels.GEMMCuBLAS{GEMM: g}})
	}
	for _, a := range []cudakernels.PagedAttention{
		{Batch: 5, QHeads: 8, KVHeads: 2, HeadDim: 128, BlockSize: 16, Context: 300, Ragged: true},
		{Batch: 3, QHeads: 4, KVHeads: 4, HeadDim: 64, BlockSize: 7, Context: 100, Ragged: true},
		{Batch: 2, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: 128, Context: 2500, Ragged: true},
	} {
		ts = append(ts, Task{Kernel: a})
	}
	ts = append(ts,
		Task{Kernel: cudakernels.RMSNorm{M: 3, H: 4104}},
		Task{Kernel: cudakernels.RMSNorm{M: 1, H: 130}},
		Task{Kernel: cudakernels.SiluMul{M: 3, I: 1000}},
		Task{Kernel: cudakernels.SiluMul{M: 1, I: 14}},
		Task{Kernel: cudakernels.Pointwise{Op: cudakernels.OpSiLU, M: 3, H: 1000}},
		Task{Kernel: cudakernels.Pointwise{Op: cudakernels.OpMul, M: 1, H: 14}},
		Task{Kernel: cudakernels.Pointwise{Op: cudakernels.OpAdd, M: 5, H: 4104}},
	)
	// Rope at one and odd token counts, head counts that are not powers of
	// two, head_dim 64 and 128, both styles, a partial rotary dim and the
	// scalings whose frequencies (llama3) or attention factor (yarn) differ
	// from plain rope; append_kv into pools of odd block sizes with padding
	// slots and rows a 16-byte vector does not tile.
	llama3 := &ref.RopeScaling{Type: "llama3", Factor: 8, OriginalMaxPositions: 8192, LowFreqFactor: 1, HighFreqFactor: 4}
	yarn := &ref.RopeScaling{Type: "yarn", Factor: 4, OriginalMaxPositions: 4096}
	for _, r := range []cudakernels.Rope{
		{Tokens: 1, Heads: 32, HeadDim: 128, Config: ref.RopeConfig{Theta: 500000, Style: ref.Neox, Scaling: llama3}},
		{Tokens: 7, Heads: 5, HeadDim: 64, Config: ref.RopeConfig{Theta: 10000, Style: ref.Neox}},
		{Tokens: 3, Heads: 3, HeadDim: 128, Config: ref.RopeConfig{Theta: 10000, Style: ref.GPTJ, RotaryDim: 64}},
		{Tokens: 9, Heads: 6, HeadDim: 64, Config: ref.RopeConfig{Theta: 10000, Style: ref.Neox, RotaryDim: 48, Scaling: yarn}},
		{Tokens: 33, Heads: 8, HeadDim: 128, Config: ref.RopeConfig{Theta: 500000, Style: ref.Neox, Scaling: llama3}},
	} {
		ts = append(ts, Task{Kernel: r})
	}
	for _, a := range []cudakernels.AppendKV{
		{Tokens: 1, KVHeads: 8, HeadDim: 128, BlockSize: 16},
		{Tokens: 13, KVHeads: 3, HeadDim: 64, BlockSize: 7},
		{Tokens: 5, KVHeads: 1, HeadDim: 6, BlockSize: 4},
		{Tokens: 37, KVHeads: 8, HeadDim: 128, BlockSize: 128},
	} {
		ts = append(ts, Task{Kernel: a})
	}
	// The token embedding at llama-3-8b's table and on rows of 4104 (an odd
	// number of vectors) and 1001 (2-byte copies); argmax at llama-3-8b's
	// decode (1 and 16 rows) and prefill (512 rows) logits, rows of 1001 and
	// 14 (unaligned rows: scalar heads and tails), and rows planted with
	// NaNs, infinities, signed zeros and ties.
	for _, e := range []cudakernels.Embedding{
		{Tokens: 37, Vocab: lmHeadVocab, Hidden: 4096},
		{Tokens: 7, Vocab: 1000, Hidden: 4104}, {Tokens: 5, Vocab: 50, Hidden: 1001},
	} {
		ts = append(ts, Task{Kernel: e})
	}
	for _, a := range []cudakernels.Argmax{
		{M: 1, N: lmHeadVocab}, {M: 16, N: lmHeadVocab}, {M: 512, N: lmHeadVocab},
		{M: 3, N: 1001}, {M: 5, N: 14}, {M: 10, N: 4099, Special: true}, {M: 5, N: lmHeadVocab, Special: true},
	} {
		ts = append(ts, Task{Kernel: a})
	}
	// The kernels printed from the loop-nest IR (target/cuda/cgen), on the
	// odd shapes their recipes accept.
	for _, g := range []cudakernels.GEMV{{M: 1, N: 37, K: 512}, {M: 3, N: 257, K: 1024}, {M: 16, N: 130, K: 768}} {
		ts = append(ts, Task{Kernel: cudakernels.LoopNestGEMV{GEMV: g}, Baseline: cudakernels.GEMVCuBLAS{GEMV: g}})
	}
	for _, g := range []cudakernels.GEMM{{M: 16, N: 8, K: 16}, {M: 64, N: 48, K: 32}, {M: 256, N: 384, K: 512}} {
		ts = append(ts, Task{Kernel: cudakernels.LoopNestGEMM{GEMM: g}, Baseline: cudakernels.GEMMCuBLAS{GEMM: g}})
	}
	for _, p := range []cudakernels.Pointwise{{Op: cudakernels.OpMul, M: 3, H: 1000}, {Op: cudakernels.OpAdd, M: 5, H: 4104}, {Op: cudakernels.OpMul, M: 1, H: 14}} {
		ts = append(ts, Task{Kernel: cudakernels.LoopNestElementwise{Pointwise: p}, Baseline: p})
	}
	// Causal prefill attention: prompts that no query or key tile divides
	// (77, 33, 200, one token), GQA groups of 1, 2, 3 and 4, every head_dim
	// the kernel takes, and llama-3-8b's 512-token shape. (Last, so that
	// the tasks before keep their sampling salts.)
	for _, a := range []cudakernels.PrefillAttention{
		{Batch: 2, Seq: 77, QHeads: 4, KVHeads: 2, HeadDim: 128},
		{Batch: 1, Seq: 33, QHeads: 3, KVHeads: 1, HeadDim: 64},
		{Batch: 3, Seq: 1, QHeads: 2, KVHeads: 2, HeadDim: 32},
		{Batch: 1, Seq: 200, QHeads: 8, KVHeads: 2, HeadDim: 64},
		{Batch: 1, Seq: 512, QHeads: 32, KVHeads: 8, HeadDim: 128},
	} {
		ts = append(ts, Task{Kernel: a})
	}
	return ts
}

// Options configures Run.
type Options struct {
	// Samples is the number of sampled schedules per kernel beside the
	// default (duplicates are dropped).
	Samples int
	Seed    uint64
	Run     target.RunOptions
	// DB receives every measurement of the kernels (not the baselines);
	// nil records nothing.
	DB *tuningdb.DB
	// Bandwidth relates results to the copy bandwidth (zero: not related).
	Bandwidth cuda.Bandwidth
	// SDPA are PyTorch's times for attention shapes (scripts/sdpa_baseline.py).
	SDPA []SDPAResult
	// Points are knob overrides (`llmir cuda bench --knobs`): each is
	// measured as one more trial of every kernel that has all its knobs,
	// the kernel's default values filling the knobs it does not name.
	// SelectPoints checks them against a suite.
	Points []Point
	// Read times a plain read of each memory-bound row's bytes beside it
	// (cuda.Runner.ReadBound over ReadGrids, the candidates' run options).
	Read bool
	// Log receives one line per task as it finishes (nil: none).
	Log     io.Writer
	Command string
}

// memoryBound: a row whose time is its bytes' (every kernel but the
// prefill GEMMs and prefill attention, whose multiply-adds per byte grow
// with the prompt), so a plain read of those bytes bounds it.
func memoryBound(k cudakernels.Kernel) bool {
	switch cudakernels.Unwrap(k).(type) {
	case cudakernels.GEMM, cudakernels.LoopNestGEMM, cudakernels.PrefillAttention:
		return false
	}
	return true
}

// Point is a knob override: knob name → value.
type Point map[string]int64

// String is the point as --knobs spells it, knobs sorted by name.
func (p Point) String() string {
	names := slices.Sorted(maps.Keys(p))
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, p[n])
	}
	return strings.Join(parts, ",")
}

// ParsePoints reads --knobs: points separated by ';', each a list of
// name=value separated by ','.
func ParsePoints(spec string) ([]Point, error) {
	var out []Point
	for i, ps := range strings.Split(spec, ";") {
		ps = strings.TrimSpace(ps)
		if ps == "" {
			continue
		}
		p := Point{}
		for _, kv := range strings.Split(ps, ",") {
			name, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
			name = strings.TrimSpace(name)
			if !ok || name == "" {
				return nil, fmt.Errorf("knob point %d: %q is not name=value", i+1, kv)
			}
			v, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("knob point %d: %s: value %q is not an integer", i+1, name, val)
			}
			if _, dup := p[name]; dup {
				return nil, fmt.Errorf("knob point %d: %s given twice", i+1, name)
			}
			p[name] = v
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("knob points: none in %q", spec)
	}
	return out, nil
}

// pointKnobs is k's knob list when its schedules are knob lists (a
// loop-nest kernel embedding a template is not), with the default's values.
func pointKnobs(k cudakernels.Kernel, hw kernels.Hardware) (kernels.Knobs, map[string]int64, bool) {
	ks, ok := cudakernels.NamedKnobs(k)
	if !ok {
		return nil, nil, false
	}
	def, err := search.DefaultSchedule(k, hw)
	if err != nil {
		return nil, nil, false
	}
	vals, err := ks.Read(def)
	if err != nil {
		return nil, nil, false
	}
	return ks, vals, true
}

// SelectPoints checks knob points against a suite and keeps the tasks
// that have every knob of at least one point (the others would measure
// only their default). An error names a knob no kernel of the suite has,
// or a value outside the domain of a kernel that has the knob.
func SelectPoints(tasks []Task, points []Point, hw kernels.Hardware) ([]Task, error) {
	known := map[string]bool{}
	var keep []Task
	for _, t := range tasks {
		ks, _, ok := pointKnobs(t.Kernel, hw)
		if !ok {
			continue
		}
		dom := map[string][]int64{}
		for _, kn := range ks {
			dom[kn.Name] = kn.Values
			known[kn.Name] = true
		}
		applies := false
		for i, p := range points {
			all := true
			for n := range p {
				if _, has := dom[n]; !has {
					all = false
				}
			}
			if !all {
				continue
			}
			for _, n := range slices.Sorted(maps.Keys(p)) {
				if !slices.Contains(dom[n], p[n]) {
					return nil, fmt.Errorf("knob point %d: %s=%d is not in the domain %v of %s", i+1, n, p[n], dom[n], t.Kernel.Name())
				}
			}
			applies = true
		}
		if applies {
			keep = append(keep, t)
		}
	}
	for i, p := range points {
		for _, n := range slices.Sorted(maps.Keys(p)) {
			if !known[n] {
				names := slices.Sorted(maps.Keys(known))
				return nil, fmt.Errorf("knob point %d: no kernel of the suite has a knob %q (knobs: %s)", i+1, n, strings.Join(names, ", "))
			}
		}
	}
	if len(keep) == 0 {
		return nil, fmt.Errorf("knob points: no kernel of the suite has all the knobs of any point")
	}
	return keep, nil
}

// SDPAResult is one line of scripts/sdpa_baseline.py's output: decode
// (one query per sequence over Context keys) or, with Causal, the causal
// prefill of Seq tokens (Context = Seq).
type SDPAResult struct {
	Batch   int64   `json:"batch"`
	QHeads  int64   `json:"q_heads"`
	KVHeads int64   `json:"kv_heads"`
	HeadDim int64   `json:"head_dim"`
	Context int64   `json:"context"`
	Seq     int64   `json:"seq,omitempty"`
	Causal  bool    `json:"causal,omitempty"`
	MedianS float64 `json:"median_s"`
	MinS    float64 `json:"min_s"`
	Torch   string  `json:"torch"`
	Backend string  `json:"backend,omitempty"`
}

// ParseSDPA reads the script's JSON (an object with a "results" list).
func ParseSDPA(data []byte) ([]SDPAResult, error) {
	var v struct {
		Results []SDPAResult `json:"results"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("sdpa results: %w", err)
	}
	for i, r := range v.Results {
		if r.Batch < 1 || r.QHeads < 1 || r.KVHeads < 1 || r.HeadDim < 1 || r.Context < 1 || !(r.MedianS > 0) {
			return nil, fmt.Errorf("sdpa results: entry %d: %+v has a missing or non-positive field", i, r)
		}
	}
	return v.Results, nil
}

// Trial is one measured schedule.
type Trial struct {
	ID      string `json:"id"`
	Default bool   `json:"default,omitempty"`
	// Point is the knob override (Options.Points) this trial measures.
	Point       string             `json:"point,omitempty"`
	Trace       json.RawMessage    `json:"trace,omitempty"`
	Measurement target.Measurement `json:"measurement"`
}

// Row is one task's result.
type Row struct {
	Kernel   string  `json:"kernel"`
	Default  *Trial  `json:"default"`
	Best     *Trial  `json:"best"`
	Baseline *Trial  `json:"baseline,omitempty"`
	Trials   []Trial `json:"trials"`
	// Counts of this task's trials by status (baseline excluded).
	Counts map[target.Status]int `json:"counts"`
	// Failures lists every trial that did not measure ok. Knob points a
	// generator refuses are not in the design space (cudakernels.Checked),
	// so a refusal here is a disagreement between predicate and generator.
	Failures []string `json:"failures,omitempty"`
	// SpaceValid of SpaceTotal points of the kernel's design space are
	// ones its generator accepts (0 of 0: a loop-nest space, not counted).
	SpaceValid int     `json:"space_valid,omitempty"`
	SpaceTotal int     `json:"space_total,omitempty"`
	Bytes      float64 `json:"bytes"`
	// BestGBps is Bytes over the best median; CopyFraction relates it to
	// the measured copy bandwidth; VsBaseline is baseline median over best
	// median (> 1: faster than the baseline); VsSDPA the same for PyTorch.
	BestGBps float64 `json:"best_gbps,omitempty"`
	// BestTFLOPS is FLOPs over the best median (what matters for GEMM).
	BestTFLOPS   float64 `json:"best_tflops,omitempty"`
	CopyFraction float64 `json:"copy_fraction,omitempty"`
	VsBaseline   float64 `json:"vs_baseline,omitempty"`
	SDPAMedian   float64 `json:"sdpa_median_s,omitempty"`
	VsSDPA       float64 `json:"vs_sdpa,omitempty"`
	DefaultGBps  float64 `json:"default_gbps,omitempty"`
	// Read is a plain read of Bytes timed beside the kernel (Options.Read);
	// ReadError says why there is none. ReadFraction is the read's median
	// over the best median (the kernel's share of the read's speed);
	// ReadVsBaseline is the baseline's median over the read's, the highest
	// ratio to the baseline a kernel moving these bytes could reach.
	Read           *cuda.ReadBound `json:"read,omitempty"`
	ReadError      string          `json:"read_error,omitempty"`
	ReadFraction   float64         `json:"read_fraction,omitempty"`
	ReadVsBaseline float64         `json:"read_vs_baseline,omitempty"`
	Elapsed        float64         `json:"elapsed_s"`
}

// WithoutSamples is the report with the samples left out (median, min and
// quartiles kept): the database holds them, and with them a suite's JSON
// runs to tens of megabytes.
func (rep *Report) WithoutSamples() *Report {
	out := *rep
	out.Rows = make([]Row, len(rep.Rows))
	strip := func(t *Trial) *Trial {
		if t == nil {
			return nil
		}
		c := *t
		c.Measurement.Samples = nil
		return &c
	}
	for i, r := range rep.Rows {
		r.Trials = slices.Clone(r.Trials)
		for j := range r.Trials {
			r.Trials[j].Measurement.Samples = nil
		}
		r.Default, r.Best, r.Baseline = strip(r.Default), strip(r.Best), strip(r.Baseline)
		if r.Read != nil {
			rb := *r.Read
			rb.Measurement.Samples = nil
			r.Read = &rb
		}
		out.Rows[i] = r
	}
	return &out
}

// Report is a whole run.
type Report struct {
	Device    json.RawMessage `json:"device"`
	Bandwidth cuda.Bandwidth  `json:"bandwidth"`
	Rows      []Row           `json:"rows"`
}

// errEmit marks trials whose schedule the generator refused: since the
// samples come from the valid points only, a bug (in a predicate or in a
// rule-based default).
var errEmit = errors.New("emit")

// Run measures every task on tg and returns the report. A task's failure
// to build or validate is data in its row; the error is for the
// infrastructure (no harness, cancelled, database).
func Run(ctx context.Context, tg *cuda.Target, tasks []Task, o Options) (*Report, error) {
	gpu := tg.Hardware()
	hw := cudakernels.Hardware(gpu)
	dev := tg.GPU().Device()
	rep := &Report{Device: dev.JSON, Bandwidth: o.Bandwidth}
	var dbDev tuningdb.Device
	var runID int64
	if o.DB != nil {
		dbDev = DeviceOf(tg.GPU(), o.Bandwidth)
		if err := o.DB.PutDevice(ctx, dbDev); err != nil {
			return nil, fmt.Errorf("cuda bench: %w", err)
		}
		var err error
		runID, err = o.DB.StartRun(ctx, tuningdb.TuningRun{DeviceHash: dev.Hash, BudgetTrials: o.Samples + 1, Command: o.Command})
		if err != nil {
			return nil, fmt.Errorf("cuda bench: %w", err)
		}
	}
	// Every task's candidates are built in one go: nvcc's batches then span
	// tasks and keep all cores busy, and nothing builds while measuring.
	preps := make([]*prepared, len(tasks))
	var all []target.Candidate
	for i, t := range tasks {
		pr, err := prepare(t, gpu, hw, o, uint64(i))
		if err != nil {
			return rep, fmt.Errorf("cuda bench %s: %w", t.Kernel.Name(), err)
		}
		preps[i] = pr
		for _, c := range pr.cands {
			c.ID = fmt.Sprintf("k%d/%s", i, c.ID)
			all = append(all, c)
		}
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "building %d candidates of %d kernels\n", len(all), len(tasks))
	}
	start := time.Now()
	built, err := tg.Build(ctx, all)
	if err != nil {
		return rep, fmt.Errorf("cuda bench: %w", err)
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "built in %.1fs\n", time.Since(start).Seconds())
	}
	for i, t := range tasks {
		row, err := measureTask(ctx, tg, preps[i], built, i, o)
		if err != nil {
			return rep, fmt.Errorf("cuda bench %s: %w", t.Kernel.Name(), err)
		}
		if o.DB != nil {
			if err := record(ctx, o.DB, dbDev, runID, t.Kernel, row); err != nil {
				return rep, err
			}
		}
		relate(row, t, o)
		rep.Rows = append(rep.Rows, *row)
		if o.Log != nil {
			fmt.Fprintln(o.Log, row.Line())
			for _, l := range row.PointLines() {
				fmt.Fprintln(o.Log, "  "+l)
			}
		}
	}
	if o.DB != nil {
		summary, _ := json.Marshal(map[string]any{"tasks": len(rep.Rows), "bandwidth": o.Bandwidth})
		if err := o.DB.FinishRun(ctx, runID, summary); err != nil {
			return rep, fmt.Errorf("cuda bench: %w", err)
		}
	}
	return rep, nil
}

// prepared is one task before measuring: its problem, its trials (emit
// failures already decided) and the candidates to build.
type prepared struct {
	task   Task
	p      *target.Problem
	trials []*Trial
	cands  []target.Candidate
	base   *Trial

	spaceValid, spaceTotal int
}

func prepare(t Task, gpu cuda.GPU, hw kernels.Hardware, o Options, salt uint64) (*prepared, error) {
	k := t.Kernel
	p, err := search.NewProblem(k, o.Seed+salt)
	if err != nil {
		return nil, err
	}
	pr := &prepared{task: t, p: p}
	// Samples come from the points the generator accepts: a refused point
	// never reaches nvcc nor counts as a trial.
	sk := cudakernels.Checked(k)
	if pr.spaceValid, pr.spaceTotal, err = cudakernels.SpaceSize(sk, hw); err != nil {
		return nil, err
	}
	add := func(id string, trace json.RawMessage, isDef bool, s *schedule.Schedule) *Trial {
		tr := &Trial{ID: id, Default: isDef, Trace: trace}
		c, err := cudakernels.NewCandidate(id, k, s, gpu)
		if err != nil {
			tr.Measurement = target.Measurement{CandidateID: id, Status: target.StatusBuildError, Error: fmt.Errorf("%w: %v", errEmit, err).Error(), Threads: 1}
		} else {
			pr.cands = append(pr.cands, c)
		}
		pr.trials = append(pr.trials, tr)
		return tr
	}
	def, err := search.DefaultSchedule(k, hw)
	if err != nil {
		return nil, err
	}
	key, err := search.TraceKey(def)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{string(key): true}
	add("t0", key, true, def)
	for i := range o.Samples {
		s, err := search.SampleSchedule(sk, hw, o.Seed*1000003+salt*7919+uint64(i)+1)
		if err != nil {
			return nil, err
		}
		key, err := search.TraceKey(s)
		if err != nil {
			return nil, err
		}
		if seen[string(key)] {
			continue
		}
		seen[string(key)] = true
		add(fmt.Sprintf("t%d", len(pr.trials)), key, false, s)
	}
	if err := pr.addPoints(k, hw, o.Points, add); err != nil {
		return nil, err
	}
	if t.Baseline != nil {
		bs, err := search.DefaultSchedule(t.Baseline, hw)
		if err != nil {
			return nil, err
		}
		c, err := cudakernels.NewCandidate("baseline", t.Baseline, bs, gpu)
		if err != nil {
			return nil, err
		}
		pr.base = &Trial{ID: "baseline"}
		pr.cands = append(pr.cands, c)
	}
	return pr, nil
}

// addPoints adds a trial per knob point that k has all the knobs of: its
// default values with the point's on top. A point equal to the default
// (or to a sample) labels that trial instead of measuring it twice.
func (pr *prepared) addPoints(k cudakernels.Kernel, hw kernels.Hardware, points []Point,
	add func(id string, trace json.RawMessage, isDef bool, s *schedule.Schedule) *Trial) error {
	if len(points) == 0 {
		return nil
	}
	ks, defVals, ok := pointKnobs(k, hw)
	if !ok {
		return nil
	}
	def, err := k.Def()
	if err != nil {
		return err
	}
	for _, p := range points {
		vals := maps.Clone(defVals)
		all := true
		for n, v := range p {
			if _, has := vals[n]; !has {
				all = false
			}
			vals[n] = v
		}
		if !all {
			continue
		}
		s, err := schedule.New(def, 0)
		if err != nil {
			return err
		}
		if err := ks.Choose(s, vals); err != nil {
			return fmt.Errorf("knob point %s: %w", p, err)
		}
		key, err := search.TraceKey(s)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(pr.trials, func(t *Trial) bool { return string(t.Trace) == string(key) }); i >= 0 {
			if pr.trials[i].Point == "" {
				pr.trials[i].Point = p.String()
			}
			continue
		}
		add(fmt.Sprintf("t%d", len(pr.trials)), key, false, s).Point = p.String()
	}
	return nil
}

// measureTask runs one task's built candidates (IDs "k<i>/<id>" in built)
// in one harness session.
func measureTask(ctx context.Context, tg *cuda.Target, pr *prepared, built map[string]target.Built, i int, o Options) (*Row, error) {
	start := time.Now()
	k := pr.task.Kernel
	row := &Row{Kernel: k.Name(), Counts: map[target.Status]int{}, Bytes: k.Bytes(), SpaceValid: pr.spaceValid, SpaceTotal: pr.spaceTotal}
	order := make([]target.Built, 0, len(pr.cands))
	for _, c := range pr.cands {
		b, ok := built[fmt.Sprintf("k%d/%s", i, c.ID)]
		if !ok {
			return nil, fmt.Errorf("candidate %s was not built", c.ID)
		}
		b.Candidate.ID = c.ID
		if b.Failure != nil {
			f := *b.Failure
			f.CandidateID = c.ID
			b.Failure = &f
		}
		order = append(order, b)
	}
	ms := map[string]target.Measurement{}
	if len(order) > 0 {
		var err error
		if ms, err = tg.Run(ctx, pr.p, order, o.Run); err != nil {
			return nil, err
		}
	}
	for _, tr := range pr.trials {
		if tr.Measurement.Status == "" {
			tr.Measurement = ms[tr.ID]
		}
		m := tr.Measurement
		row.Counts[m.Status]++
		if m.Status != target.StatusOK {
			row.Failures = append(row.Failures, fmt.Sprintf("%s (%s): %s", tr.ID, m.Status, firstLines(m.Error, 6)))
		}
		row.Trials = append(row.Trials, *tr)
	}
	for i := range row.Trials {
		if row.Trials[i].Default {
			row.Default = &row.Trials[i]
		}
		if m := row.Trials[i].Measurement; m.OK() && (row.Best == nil || target.Faster(m, row.Best.Measurement)) {
			row.Best = &row.Trials[i]
		}
	}
	if pr.base != nil {
		pr.base.Measurement = ms["baseline"]
		row.Baseline = pr.base
		if !pr.base.Measurement.OK() {
			row.Failures = append(row.Failures, fmt.Sprintf("baseline (%s): %s", pr.base.Measurement.Status, firstLines(pr.base.Measurement.Error, 6)))
		}
	}
	if o.Read && memoryBound(k) {
		rb, err := tg.Runner.ReadBound(ctx, int64(row.Bytes), cuda.ReadGrids, o.Run)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err != nil {
			row.ReadError = err.Error()
		} else {
			row.Read = &rb
		}
	}
	row.Elapsed = time.Since(start).Seconds()
	return row, nil
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return strings.Join(lines, "\n")
}

// relate fills the row's rates and ratios.
func relate(r *Row, t Task, o Options) {
	if r.Best != nil {
		r.BestGBps = r.Bytes / r.Best.Measurement.Median / 1e9
		r.BestTFLOPS = t.Kernel.FLOPs() / r.Best.Measurement.Median / 1e12
		if o.Bandwidth.CopyGBps > 0 {
			r.CopyFraction = r.BestGBps / o.Bandwidth.CopyGBps
		}
		if r.Baseline != nil && r.Baseline.Measurement.OK() {
			r.VsBaseline = r.Baseline.Measurement.Median / r.Best.Measurement.Median
		}
	}
	if r.Default != nil && r.Default.Measurement.OK() {
		r.DefaultGBps = r.Bytes / r.Default.Measurement.Median / 1e9
	}
	if r.Read != nil && r.Read.Measurement.OK() {
		if r.Best != nil {
			r.ReadFraction = r.Read.Measurement.Median / r.Best.Measurement.Median
		}
		if r.Baseline != nil && r.Baseline.Measurement.OK() {
			r.ReadVsBaseline = r.Baseline.Measurement.Median / r.Read.Measurement.Median
		}
	}
	if r.Best == nil {
		return
	}
	// SDPA reads the same keys stored contiguously: one time for every
	// block size, the fastest of its backends; causal prefill matches the
	// script's causal rows of the same prompt length.
	var same func(s SDPAResult) bool
	switch a := cudakernels.Unwrap(t.Kernel).(type) {
	case cudakernels.PagedAttention:
		if a.Ragged {
			return
		}
		same = func(s SDPAResult) bool {
			return !s.Causal && s.Batch == a.Batch && s.QHeads == a.QHeads && s.KVHeads == a.KVHeads && s.HeadDim == a.HeadDim && s.Context == a.Context
		}
	case cudakernels.PrefillAttention:
		same = func(s SDPAResult) bool {
			return s.Causal && s.Batch == a.Batch && s.QHeads == a.QHeads && s.KVHeads == a.KVHeads && s.HeadDim == a.HeadDim && s.Seq == a.Seq && s.Context == a.Seq
		}
	default:
		return
	}
	for _, s := range o.SDPA {
		if same(s) && (r.SDPAMedian == 0 || s.MedianS < r.SDPAMedian) {
			r.SDPAMedian = s.MedianS
			r.VsSDPA = s.MedianS / r.Best.Measurement.Median
		}
	}
}

// record writes the kernel's trials in one transaction.
func record(ctx context.Context, db *tuningdb.DB, dev tuningdb.Device, runID int64, k kernels.Kernel, r *Row) error {
	wl := search.WorkloadOf(k, 1)
	now := time.Now()
	var recs []tuningdb.Record
	for i, tr := range r.Trials {
		m := tr.Measurement
		samples := make([]float64, len(m.Samples))
		for j, s := range m.Samples {
			samples[j] = max(s, 1e-9)
		}
		st := tuningdb.Status(m.Status)
		if st == tuningdb.StatusOK && len(samples) == 0 {
			st, m.Error = tuningdb.StatusRuntimeError, "ok without samples"
		}
		recs = append(recs, tuningdb.Record{
			WorkloadKey: wl.Key, DeviceHash: dev.Hash, CodegenVersion: CodegenVersion,
			Trace: tr.Trace, Status: st, Error: m.Error, Samples: samples,
			CreatedAt: now.Add(time.Duration(i) * time.Microsecond), RunID: runID,
		})
	}
	if _, err := db.RecordBatch(ctx, tuningdb.Batch{Devices: []tuningdb.Device{dev}, Workloads: []tuningdb.Workload{wl}, Records: recs}); err != nil {
		return fmt.Errorf("record %s: %w", k.Name(), err)
	}
	return nil
}

// CodegenVersion is the CUDA records' version (cudakernels.CodegenVersion).
const CodegenVersion = cudakernels.CodegenVersion

// Line is the row in one line of text.
func (r Row) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-58s", r.Kernel)
	ms := func(t *Trial) string {
		if t == nil || !t.Measurement.OK() {
			if t != nil {
				return string(t.Measurement.Status)
			}
			return "-"
		}
		return fmt.Sprintf("%.2fus", t.Measurement.Median*1e6)
	}
	fmt.Fprintf(&b, " default %s best %s", ms(r.Default), ms(r.Best))
	if r.BestGBps > 0 {
		fmt.Fprintf(&b, " %.0f GB/s", r.BestGBps)
	}
	if r.CopyFraction > 0 {
		fmt.Fprintf(&b, " (%.0f%% of copy)", 100*r.CopyFraction)
	}
	if r.BestTFLOPS >= 1 {
		fmt.Fprintf(&b, " %.0f TFLOP/s", r.BestTFLOPS)
	}
	if r.Baseline != nil {
		fmt.Fprintf(&b, " baseline %s", ms(r.Baseline))
		if r.VsBaseline > 0 {
			fmt.Fprintf(&b, " %.2fx", r.VsBaseline)
		}
	}
	if r.VsSDPA > 0 {
		fmt.Fprintf(&b, " sdpa %.2fus %.2fx", r.SDPAMedian*1e6, r.VsSDPA)
	}
	if r.Read != nil {
		fmt.Fprintf(&b, " read %.2fus", r.Read.Measurement.Median*1e6)
		if r.ReadFraction > 0 {
			fmt.Fprintf(&b, " (%.1f%% read)", 100*r.ReadFraction)
		}
		if r.ReadVsBaseline > 0 {
			fmt.Fprintf(&b, " read/base %.2fx", r.ReadVsBaseline)
		}
	}
	if r.ReadError != "" {
		b.WriteString(" read failed: " + firstLines(r.ReadError, 1))
	}
	var st []string
	for s, n := range r.Counts {
		st = append(st, fmt.Sprintf("%s=%d", s, n))
	}
	slices.Sort(st)
	if r.SpaceTotal > 0 {
		fmt.Fprintf(&b, " space %d/%d", r.SpaceValid, r.SpaceTotal)
	}
	fmt.Fprintf(&b, " [%s]", strings.Join(st, " "))
	return b.String()
}

// PointLines are the row's knob-override trials, one line each: the
// point, its median and its speed relative to the default.
func (r Row) PointLines() []string {
	var out []string
	for _, t := range r.Trials {
		if t.Point == "" {
			continue
		}
		m := t.Measurement
		if !m.OK() {
			out = append(out, fmt.Sprintf("point %s: %s", t.Point, m.Status))
			continue
		}
		l := fmt.Sprintf("point %s: %.2fus", t.Point, m.Median*1e6)
		if r.Default != nil && r.Default.Measurement.OK() {
			l += fmt.Sprintf(" %.3fx default", r.Default.Measurement.Median/m.Median)
		}
		if r.Baseline != nil && r.Baseline.Measurement.OK() {
			l += fmt.Sprintf(" %.3fx baseline", r.Baseline.Measurement.Median/m.Median)
		}
		if r.Read != nil && r.Read.Measurement.OK() {
			l += fmt.Sprintf(" %.1f%% read", 100*r.Read.Measurement.Median/m.Median)
		}
		out = append(out, l)
	}
	return out
}

// Markdown renders the report as a table.
func (rep *Report) Markdown() string {
	var b strings.Builder
	var dev struct {
		Name string `json:"name"`
		Arch string `json:"arch"`
		SMs  int    `json:"sms"`
	}
	_ = json.Unmarshal(rep.Device, &dev)
	fmt.Fprintf(&b, "Device: %s (%s, %d SMs). Copy bandwidth %.0f GB/s (cudaMemcpy D2D, read+write), read kernel %.0f GB/s.\n\n",
		dev.Name, dev.Arch, dev.SMs, rep.Bandwidth.CopyGBps, rep.Bandwidth.ReadGBps)
	b.WriteString("| kernel | default µs | best µs | best GB/s | % of copy | TFLOP/s | baseline µs | vs baseline | SDPA µs | vs SDPA | read µs | % read | read÷base | trials |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	us := func(t *Trial) string {
		if t == nil {
			return "-"
		}
		if !t.Measurement.OK() {
			return string(t.Measurement.Status)
		}
		return fmt.Sprintf("%.2f", t.Measurement.Median*1e6)
	}
	num := func(v float64, f string) string {
		if v <= 0 {
			return "-"
		}
		return fmt.Sprintf(f, v)
	}
	for _, r := range rep.Rows {
		space := ""
		if r.SpaceTotal > 0 {
			space = fmt.Sprintf(" (space %d/%d)", r.SpaceValid, r.SpaceTotal)
		}
		read := "-"
		if r.Read != nil {
			read = fmt.Sprintf("%.2f", r.Read.Measurement.Median*1e6)
		} else if r.ReadError != "" {
			read = "failed"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d ok / %d%s |\n", r.Kernel, us(r.Default), us(r.Best),
			num(r.BestGBps, "%.0f"), num(100*r.CopyFraction, "%.0f%%"), tflops(r.BestTFLOPS), us(r.Baseline), num(r.VsBaseline, "%.2f×"),
			num(r.SDPAMedian*1e6, "%.2f"), num(r.VsSDPA, "%.2f×"), read, num(100*r.ReadFraction, "%.1f%%"), num(r.ReadVsBaseline, "%.2f×"),
			r.Counts[target.StatusOK], len(r.Trials), space)
	}
	var pts []string
	for _, r := range rep.Rows {
		for _, l := range r.PointLines() {
			pts = append(pts, fmt.Sprintf("- %s %s", r.Kernel, l))
		}
	}
	if len(pts) > 0 {
		b.WriteString("\nKnob points (--knobs):\n\n" + strings.Join(pts, "\n") + "\n")
	}
	var rerr []string
	for _, r := range rep.Rows {
		if r.ReadError != "" {
			rerr = append(rerr, fmt.Sprintf("- %s: %s", r.Kernel, firstLines(r.ReadError, 3)))
		}
	}
	if len(rerr) > 0 {
		b.WriteString("\nRead bounds that failed:\n\n" + strings.Join(rerr, "\n") + "\n")
	}
	return b.String()
}

// tflops prints a rate of at least 1 TFLOP/s (below, a memory-bound
// kernel's rate says nothing).
func tflops(v float64) string {
	if v < 1 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

// Failed lists the rows with failures (the check's verdict).
func (rep *Report) Failed() []string {
	var out []string
	for _, r := range rep.Rows {
		if r.Default == nil || !r.Default.Measurement.OK() {
			out = append(out, r.Kernel+": default schedule not ok")
		}
		for _, f := range r.Failures {
			out = append(out, r.Kernel+": "+f)
		}
	}
	return out
}
