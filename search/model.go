package search

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cpu/cgen"
	"llmir/tuningdb"
)

// ModelOptions configures TuneModel. Target and DB are required.
type ModelOptions struct {
	Target *cpu.Target
	// Backend, when set, is the target kind tuned for (CUDA); Target and
	// Roofline are then unused.
	Backend Backend
	// Roofline gives the cost model its ceilings and each task its lower
	// bound (nil: defaults, and no bound).
	Roofline *cpu.Roofline
	DB       *tuningdb.DB
	// Threads every kernel runs with (default 1).
	Threads int
	Budget  ModelBudget
	// Dims overrides the functions' llmir.dims (symbolic dim → extent).
	Dims map[string]int64
	// Only, when not empty, restricts the tune to workloads of these op
	// groups ("linear", "rms_norm+linear"; the "llmir." prefix optional);
	// the others are listed in Skipped.
	Only []string
	// Funcs, when not empty, restricts the tune to workloads occurring in
	// these functions ("decode", "prefill"; FuncsExcluded).
	Funcs []string
	// Exclude, when set, leaves out the kernels for which it returns a
	// reason (listed in Skipped with it): a benchmark's name filter, a
	// memory cap.
	Exclude func(k kernels.Kernel) string
	// MaxProblemBytes leaves out (TooLarge, with the reason) the tasks whose
	// problem — inputs and reference outputs in float64 — would not fit:
	// 0 is half the Go runtime's memory limit (llmir sets it to 60% of the
	// machine's memory), none when no limit is set; < 0 is no cap.
	MaxProblemBytes int64
	// Strategy is "evolutionary" (default) or "random".
	Strategy string
	Evolve   EvolveOptions
	// Step is the trials per scheduler step and per measured batch
	// (default 8); Patience the steps without gain before a task stops.
	Step     int
	Patience int
	Run      target.RunOptions
	Seed     uint64
	// Confirm re-measures each tuned task's fastest trials next to its
	// default at the end (Options.Confirm; default 3, < 0: off). Under a
	// time budget the search leaves time for it (Scheduler.Reserve).
	Confirm int
	// Replay is how many schedules recorded for each workload on
	// compatible devices, in DB and in Precompiled, the task measures first
	// (Options.Replay; default 3, < 0: off).
	Replay int
	// Precompiled is the database replayed from after DB (nil: the one
	// built into llmir, tuningdb.OpenPrecompiled, when Replay is on).
	Precompiled *tuningdb.DB
	// Progress receives a progress bar per task and one overall (nil:
	// none); Log a line per scheduler step (nil: none).
	Progress io.Writer
	Log      io.Writer
	// Command and LLMIRVersion are stored with the tuning runs and records.
	Command      string
	LLMIRVersion string
	Now          func() time.Time
}

// confirmTrials is how many measurements the confirmation makes per task:
// the Confirm fastest trials (0 means 3) and the default; 0 when off.
func (o ModelOptions) confirmTrials() int {
	switch {
	case o.Confirm < 0:
		return 0
	case o.Confirm == 0:
		return 4
	}
	return o.Confirm + 1
}

// ModelResult is what TuneModel found, per task and for the whole model.
type ModelResult struct {
	Device   string       `json:"device"`
	Threads  int          `json:"threads"`
	Strategy string       `json:"strategy"`
	Tasks    []TaskReport `json:"tasks"`
	// NoKernel lists the workloads the kernel library has no kernel for;
	// they are left out of the time estimates.
	NoKernel []NoKernel `json:"no_kernel,omitempty"`
	// Skipped lists the workloads left out by ModelOptions.Only, Funcs and
	// Exclude.
	Skipped []NoKernel `json:"skipped,omitempty"`
	// TooLarge lists the workloads whose problem does not fit this
	// machine (ModelOptions.MaxProblemBytes), with the sizes.
	TooLarge []NoKernel `json:"too_large,omitempty"`
	// Decode and Prefill are the model's estimated kernel time per token
	// (zero when the module has no such function).
	Decode  TokenTime `json:"decode"`
	Prefill TokenTime `json:"prefill"`
	// Funcs is the estimate of every function.
	Funcs        []FuncTime    `json:"funcs"`
	Trials       int           `json:"trials"`   // all tasks' trials, resumed included
	Measured     int           `json:"measured"` // measured by this run
	ModelTrained int           `json:"model_trained"`
	Elapsed      time.Duration `json:"elapsed_ns"`
}

// TaskReport is one task (a distinct workload with a kernel).
type TaskReport struct {
	Name        string   `json:"name"`     // kernel name
	Workload    string   `json:"workload"` // tuningdb key (threads included)
	Group       string   `json:"group"`
	Occurrences int      `json:"occurrences"`
	Funcs       []string `json:"funcs"`
	Weight      float64  `json:"weight"`  // runs per token
	Default     float64  `json:"default"` // seconds (NaN: not measured ok)
	Best        float64  `json:"best"`    // seconds (NaN: none ok)
	Speedup     float64  `json:"speedup"` // Default / Best
	Trials      int      `json:"trials"`
	Measured    int      `json:"measured"`
	Stopped     string   `json:"stopped"`
	// BestTrace is the best trial's trace (JSON).
	BestTrace string `json:"best_trace,omitempty"`
}

// NoKernel is a workload without a kernel.
type NoKernel struct {
	Name        string   `json:"name"`
	Group       string   `json:"group"`
	Occurrences int      `json:"occurrences"`
	Funcs       []string `json:"funcs"`
	Reason      string   `json:"reason"`
}

// TokenTime is an estimate per token, default vs tuned, in seconds.
type TokenTime struct {
	Default float64 `json:"default"`
	Tuned   float64 `json:"tuned"`
	Speedup float64 `json:"speedup"`
}

// FuncTime is one function's estimate.
type FuncTime struct {
	Func   string `json:"func"`
	Tokens int64  `json:"tokens"` // tokens one call processes
	// PerCall is the sum over groups of the min over alternatives of
	// the sum of their kernels' times; PerToken = PerCall / Tokens.
	PerCall  TokenTime `json:"per_call"`
	PerToken TokenTime `json:"per_token"`
	// Groups are the function's kernel groups; Covered those with a
	// timed alternative (the others have no kernel yet).
	Groups  int `json:"groups"`
	Covered int `json:"covered"`
}

// taskRun is one task of TuneModel as it goes.
type taskRun struct {
	kernel   kernels.Kernel
	problem  *target.Problem
	last     *Result
	measured int
	key      string // ir workload key
}

// moduleGroups partitions the module into kernel groups (ir.Partition:
// each group with its alternatives, fused and unfused) and lists the
// distinct workloads of all alternatives; counts is, per function, the
// occurrences of each workload key in its groups' alternatives, and tokens
// the tokens one call of the function processes.
func moduleGroups(m *ir.Module, dims map[string]int64) (groups []ir.Group, tasks []ir.Task, counts map[string]map[string]int, tokens map[string]int64, err error) {
	if groups, err = ir.Partition(m, dims); err != nil {
		return nil, nil, nil, nil, err
	}
	tasks = ir.GroupTasks(groups)
	counts = map[string]map[string]int{}
	tokens = map[string]int64{}
	for _, f := range m.Funcs {
		counts[f.Name] = map[string]int{}
		tokens[f.Name] = funcTokens(f, dims)
	}
	for _, g := range groups {
		c := counts[g.Func]
		if c == nil {
			continue
		}
		for _, a := range g.Alternatives {
			for _, w := range a.Workloads {
				c[w.Key()]++
			}
		}
	}
	return groups, tasks, counts, tokens, nil
}

// funcTokens is batch × seq of the function's llmir.dims (seq missing: 1,
// as in decode, where one call makes one token per sequence); dims
// overrides the values of the dims the function has, and only those.
func funcTokens(f *ir.Func, dims map[string]int64) int64 {
	env := map[string]int64{}
	if a, ok := f.Attrs.Get(ir.DimsAttr); ok {
		if d, ok := a.(ir.DictAttr); ok {
			for _, e := range d {
				if v, ok := e.Value.(ir.IntAttr); ok {
					env[e.Name] = v.V
					if o, ok := dims[e.Name]; ok {
						env[e.Name] = o
					}
				}
			}
		}
	}
	n := int64(1)
	for _, d := range []string{"batch", "seq"} {
		if v, ok := env[d]; ok && v > 0 {
			n *= v
		}
	}
	return n
}

// ErrNoTasks is returned when no workload of the module has a kernel.
var ErrNoTasks = errors.New("no workload of the module has a kernel")

// TuneModel tunes every distinct kernel workload of m on the options'
// target: it partitions the module into kernel groups, makes the kernels
// (workloads without one are listed in NoKernel), runs the Scheduler over
// them with a Tuner per step (every measurement recorded as it is made,
// so a cancelled tune keeps its work and a rerun resumes), trains the
// shared cost model online and saves it for the device, and estimates the
// model's kernel time per decode and prefill token, default vs tuned. On
// cancellation it returns the partial result with the context's error.
func TuneModel(ctx context.Context, m *ir.Module, o ModelOptions) (*ModelResult, error) {
	be, err := o.backend()
	if err != nil || o.DB == nil {
		return nil, errors.New("tune model: a target and a database are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	start := o.Now()
	o.Threads = max(o.Threads, 1)
	if o.Strategy == "" {
		o.Strategy = "evolutionary"
	}
	if o.Strategy != "evolutionary" && o.Strategy != "random" {
		return nil, fmt.Errorf("tune model: unknown strategy %q (want evolutionary or random)", o.Strategy)
	}
	if o.Step <= 0 {
		o.Step = 8
	}
	groups, tasks, counts, tokens, err := moduleGroups(m, o.Dims)
	if err != nil {
		return nil, fmt.Errorf("tune model: %w", err)
	}
	if err := checkFuncs(m, o.Funcs); err != nil {
		return nil, fmt.Errorf("tune model: %w", err)
	}
	tu, err := NewTuner(be, o.DB, Options{
		BatchSize: o.Step, Run: o.Run, Seed: o.Seed, Progress: o.Progress, Command: o.Command,
		LLMIRVersion: o.LLMIRVersion, Now: o.Now, Confirm: -1, Replay: o.Replay,
	})
	if err != nil {
		return nil, err
	}
	tu.Precompiled = o.Precompiled
	if tu.Precompiled == nil && o.Replay >= 0 {
		if tu.Precompiled, err = tuningdb.OpenPrecompiled(ctx); err != nil {
			return nil, fmt.Errorf("tune model: %w", err)
		}
		defer tu.Precompiled.Close()
	}
	res := &ModelResult{Device: tu.Device.Hash, Threads: o.Threads, Strategy: o.Strategy}
	model, err := LoadOnlineModel(ctx, o.DB, tu.Device.Hash)
	if err != nil {
		return nil, err
	}

	var runs []*taskRun
	var sched []SchedTask
	byKey := map[string]int{} // ir key → index into runs
	only := map[string]bool{}
	for _, g := range o.Only {
		only[strings.ReplaceAll(strings.TrimPrefix(g, "llmir."), "+llmir.", "+")] = true
	}
	for _, t := range tasks {
		group := strings.ReplaceAll(strings.TrimPrefix(strings.Join(t.Workload.Group, "+"), "llmir."), "+llmir.", "+")
		if len(only) > 0 && !only[group] {
			res.Skipped = append(res.Skipped, NoKernel{Name: t.Workload.Name(), Group: strings.Join(t.Workload.Group, "+"),
				Occurrences: t.Count, Funcs: t.Funcs, Reason: "not selected"})
			continue
		}
		if why := FuncsExcluded(o.Funcs, t.Funcs); why != "" {
			res.Skipped = append(res.Skipped, NoKernel{Name: t.Workload.Name(), Group: strings.Join(t.Workload.Group, "+"),
				Occurrences: t.Count, Funcs: t.Funcs, Reason: why})
			continue
		}
		k, err := be.Kernel(t.Workload)
		if err != nil {
			if !errors.Is(err, kernels.ErrNoKernel) {
				return nil, fmt.Errorf("tune model: %w", err)
			}
			res.NoKernel = append(res.NoKernel, NoKernel{Name: t.Workload.Name(), Group: strings.Join(t.Workload.Group, "+"),
				Occurrences: t.Count, Funcs: t.Funcs, Reason: err.Error()})
			continue
		}
		if why := tooLarge(k, o.MaxProblemBytes); why != "" {
			res.TooLarge = append(res.TooLarge, NoKernel{Name: t.Workload.Name(), Group: strings.Join(t.Workload.Group, "+"),
				Occurrences: t.Count, Funcs: t.Funcs, Reason: why})
			continue
		}
		if o.Exclude != nil {
			if why := o.Exclude(k); why != "" {
				res.Skipped = append(res.Skipped, NoKernel{Name: t.Workload.Name(), Group: strings.Join(t.Workload.Group, "+"),
					Occurrences: t.Count, Funcs: t.Funcs, Reason: why})
				continue
			}
		}
		key := t.Workload.Key()
		weight := 0.0
		for f, c := range counts {
			weight += float64(c[key]) / float64(max(tokens[f], 1))
		}
		bound := be.Bound(o.Threads, k)
		byKey[key] = len(runs)
		runs = append(runs, &taskRun{kernel: k, key: key})
		wl := WorkloadOf(k, o.Threads)
		sched = append(sched, SchedTask{Name: k.Name(), Weight: weight, Bound: bound, Cost: TrialCost(bound, o.Run)})
		res.Tasks = append(res.Tasks, TaskReport{Name: k.Name(), Workload: wl.Key, Group: wl.Group,
			Occurrences: t.Count, Funcs: t.Funcs, Weight: weight, Default: math.NaN(), Best: math.NaN(), Speedup: math.NaN()})
	}
	if len(runs) == 0 {
		return res, fmt.Errorf("tune model: %w (%d without one, %d not selected, %d too large for this machine)", ErrNoTasks, len(res.NoKernel), len(res.Skipped), len(res.TooLarge))
	}

	var overall *progressbar.ProgressBar
	if o.Progress != nil {
		total := -1
		if o.Budget.Trials > 0 {
			total = o.Budget.Trials
		}
		overall = progressbar.NewOptions(total, progressbar.OptionSetWriter(o.Progress),
			progressbar.OptionSetDescription("model"), progressbar.OptionShowCount(),
			progressbar.OptionThrottle(100*time.Millisecond))
	}
	stepNo := 0
	// problemOf makes task i's problem when it has none (its reference
	// computed outside the measurement lock), keeping the problems held
	// within maxProblemBytes.
	problemOf := func(i int) (*target.Problem, error) {
		r := runs[i]
		if r.problem == nil {
			p, err := NewProblem(r.kernel, o.Seed)
			if err != nil {
				return nil, err
			}
			// Make room before computing: the others dropped first, so
			// that a large problem's inputs and reference are never
			// computed beside a full budget of held ones (problemBytes
			// reads the buffer sizes, known before the inputs exist).
			r.problem = p
			retainProblems(runs, i, maxProblemBytes)
			computeOutside(p)
		}
		return r.problem, nil
	}
	step := func(ctx context.Context, i, trials int) (StepResult, error) {
		r := runs[i]
		if _, err := problemOf(i); err != nil {
			return StepResult{Best: math.Inf(1)}, err
		}
		stepNo++
		seed := o.Seed + uint64(stepNo)*0x9e3779b97f4a7c15
		hw := tu.Hardware(o.Threads)
		dev := be.CostDevice(hw)
		wlKey := res.Tasks[i].Workload
		opts := tu.Options
		opts.Budget = Budget{Trials: trials}
		opts.Seed = seed
		opts.Run = RunFor(o.Run, CallEstimate(r.last, sched[i].Bound), BufferBytes(r.kernel))
		if o.Strategy == "evolutionary" {
			transfer := siblingBests(runs, res.Tasks, i)
			opts.NewStrategy = func(k kernels.Kernel, hw kernels.Hardware, seed uint64) Strategy {
				e := NewEvolutionary(k, hw, dev, wlKey, model, seed, o.Evolve)
				e.Transfer = transfer
				return e
			}
		}
		t := *tu
		t.Options = opts
		rr, err := t.Tune(ctx, Task{Kernel: r.kernel, Threads: o.Threads}, r.problem)
		if rr == nil {
			return StepResult{Best: math.Inf(1)}, err
		}
		r.last = rr
		r.measured += len(rr.Measured)
		if o.Strategy != "evolutionary" {
			// Random search does not consult the model, but the model still
			// learns, so that the next evolutionary tune starts trained.
			_ = model.Learn(context.WithoutCancel(ctx), r.kernel, wlKey, dev, rr.Measured)
		}
		// Saved after every step: an interrupted tune loses no learning.
		if serr := model.Save(context.WithoutCancel(ctx), o.DB, tu.Device.Hash, o.LLMIRVersion); serr != nil && err == nil {
			err = serr
		}
		n := rr.Resumed + len(rr.Measured)
		if overall != nil {
			done := 0
			for _, x := range runs {
				if x.last != nil {
					done += x.last.Resumed + len(x.last.Measured)
				}
			}
			_ = overall.Set(done)
			overall.Describe(fmt.Sprintf("model: %s best %s %s", r.kernel.Name(), fmtDur(rr.BestMedian()), fmtSpeedup(speedupOf(rr))))
		}
		if o.Log != nil {
			fmt.Fprintf(o.Log, "step %d: %s trials %d best %s %s vs default\n", stepNo, r.kernel.Name(), n, fmtDur(rr.BestMedian()), fmtSpeedup(speedupOf(rr)))
		}
		return StepResult{Best: rr.BestMedian(), Trials: n, Exhausted: rr.Exhausted}, err
	}
	s := &Scheduler{Tasks: sched, Budget: o.Budget, Step: o.Step, Patience: o.Patience, Now: o.Now, Reserve: o.confirmTrials()}
	states, runErr := s.Run(ctx, step)
	if overall != nil {
		_ = overall.Finish()
		// The bar leaves the cursor at its end; what is printed next
		// (the table, on a terminal the same screen) starts a line.
		fmt.Fprintln(o.Progress)
	}

	// Confirmation: the fastest trials of each task measured again next
	// to its default, so that the reported speedups compare like with like.
	if runErr == nil && o.Confirm >= 0 {
		for i, r := range runs {
			if r.last == nil || r.last.Best == nil {
				continue
			}
			opts := tu.Options
			opts.Budget = Budget{Trials: max(states[i].Trials, 1)}
			opts.Run = RunFor(o.Run, CallEstimate(r.last, sched[i].Bound), BufferBytes(r.kernel))
			opts.Confirm = o.confirmTrials() - 1
			opts.Progress = nil
			p, err := problemOf(i)
			if err != nil {
				runErr = err
				break
			}
			t := *tu
			t.Options = opts
			rr, err := t.Tune(ctx, Task{Kernel: r.kernel, Threads: o.Threads}, p)
			if rr != nil {
				r.last = rr
				r.measured += len(rr.Measured)
			}
			if err != nil {
				runErr = err
				break
			}
		}
	}

	times := map[string][2]float64{} // ir key → default, best seconds
	for i, r := range runs {
		tr := &res.Tasks[i]
		tr.Trials, tr.Stopped, tr.Measured = states[i].Trials, states[i].Stopped, r.measured
		res.Trials += tr.Trials
		res.Measured += r.measured
		if r.last == nil {
			continue
		}
		if d := r.last.Default; d != nil && d.Measurement.OK() {
			tr.Default = d.Measurement.Median
		}
		// With confirmation, the best was picked from a batch that measured
		// the default again beside it: compare within that batch, not
		// against a measurement taken minutes earlier under other load.
		for _, c := range r.last.Confirmed {
			if c.Default && c.Measurement.OK() {
				tr.Default = c.Measurement.Median
			}
		}
		if b := r.last.Best; b != nil {
			tr.Best = b.Measurement.Median
			tr.BestTrace = string(b.Trace)
		}
		if math.IsNaN(tr.Default) && !math.IsNaN(tr.Best) {
			tr.Default = tr.Best // no default ok: the best is the reference
		}
		tr.Speedup = tr.Default / tr.Best
		if !math.IsNaN(tr.Best) {
			times[r.key] = [2]float64{tr.Default, tr.Best}
		}
	}
	res.estimate(m, groups, tokens, times)
	res.ModelTrained = model.Trained()
	res.Elapsed = o.Now().Sub(start)
	if runErr != nil {
		return res, fmt.Errorf("tune model: %w", runErr)
	}
	return res, nil
}

// estimate fills the per-function and per-token times: per function, the
// sum over its groups of the min over alternatives of the sum of their
// kernels' times; an alternative with a kernel without a time (no kernel,
// or never ok) is left out, and a group without any timed alternative is
// left out of the sum (Covered counts the groups in it).
func (res *ModelResult) estimate(m *ir.Module, groups []ir.Group, tokens map[string]int64, times map[string][2]float64) {
	for _, f := range m.Funcs {
		ft := FuncTime{Func: f.Name, Tokens: tokens[f.Name]}
		for _, g := range groups {
			if g.Func != f.Name {
				continue
			}
			ft.Groups++
			bestD, bestT := math.Inf(1), math.Inf(1)
			for _, a := range g.Alternatives {
				var d, t float64
				ok := true
				for _, w := range a.Workloads {
					tm, has := times[w.Key()]
					if !has {
						ok = false
						break
					}
					d += tm[0]
					t += tm[1]
				}
				if ok {
					// The default build takes the unfused or fused kernels
					// as they are; both sides take their own fastest
					// alternative, as compile does from recorded times.
					bestD, bestT = min(bestD, d), min(bestT, t)
				}
			}
			if math.IsInf(bestT, 1) {
				continue
			}
			ft.Covered++
			ft.PerCall.Default += bestD
			ft.PerCall.Tuned += bestT
		}
		tok := float64(max(ft.Tokens, 1))
		ft.PerToken = TokenTime{Default: ft.PerCall.Default / tok, Tuned: ft.PerCall.Tuned / tok}
		ft.PerCall.Speedup = ratio(ft.PerCall.Default, ft.PerCall.Tuned)
		ft.PerToken.Speedup = ft.PerCall.Speedup
		res.Funcs = append(res.Funcs, ft)
		switch f.Name {
		case "decode":
			res.Decode = ft.PerToken
		case "prefill":
			res.Prefill = ft.PerToken
		}
	}
}

func ratio(a, b float64) float64 {
	if b > 0 {
		return a / b
	}
	return math.NaN()
}

func speedupOf(r *Result) float64 {
	if r.Default == nil || !r.Default.Measurement.OK() || r.Best == nil {
		return math.NaN()
	}
	return r.Default.Measurement.Median / r.Best.Measurement.Median
}

// fmtSpeedup prints a speedup as "×1.23", or "×—" when there is none
// (an interrupted step measured nothing, or the default failed).
func fmtSpeedup(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "×—"
	}
	return fmt.Sprintf("×%.2f", x)
}

// fmtDur prints seconds with a unit (µs below a millisecond).
func fmtDur(s float64) string {
	switch {
	case math.IsInf(s, 0) || math.IsNaN(s):
		return "—"
	case s < 1e-3:
		return fmt.Sprintf("%.1fµs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.2fms", s*1e3)
	}
	return fmt.Sprintf("%.2fs", s)
}

// nullable is x, or nil (JSON null) when it is NaN or infinite, which
// encoding/json refuses.
func nullable(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return &x
}

// MarshalJSON writes unmeasured times and speedups (NaN) as null.
func (t TaskReport) MarshalJSON() ([]byte, error) {
	type plain TaskReport
	return json.Marshal(struct {
		plain
		Default *float64 `json:"default"`
		Best    *float64 `json:"best"`
		Speedup *float64 `json:"speedup"`
	}{plain(t), nullable(t.Default), nullable(t.Best), nullable(t.Speedup)})
}

// MarshalJSON writes an unknown speedup (NaN) as null.
func (t TokenTime) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Default float64  `json:"default"`
		Tuned   float64  `json:"tuned"`
		Speedup *float64 `json:"speedup"`
	}{t.Default, t.Tuned, nullable(t.Speedup)})
}

// Source is the C translation unit of schedule s of kernel k, its kernel
// function named entry: the lowered nest through cgen, or a template
// kernel's own generator. NewCandidate wraps it under Entry; compile calls
// it with a symbol per kernel, as it links many into one library.
func Source(k kernels.Kernel, s *schedule.Schedule, hw kernels.Hardware, entry string) (string, error) {
	if g, ok := k.(kernels.Generator); ok {
		return g.EmitC(s, hw, entry)
	}
	return cgen.Emit(s.Nest(), cgen.Options{Entry: entry, VectorBits: hw.VectorBits})
}

// CompileOptions configures CompileModel.
type CompileOptions struct {
	// Backend is the target kind compiled for (nil: the CPU, with
	// Hardware).
	Backend Backend
	// Lookup is where records are looked up (user, then precompiled).
	Lookup tuningdb.Layered
	// Device is the device compiled for (hash, kind and compat class).
	Device   tuningdb.Device
	Hardware kernels.Hardware
	Threads  int
	Dims     map[string]int64
	// Buckets are more dim settings to compile (each merged over Dims),
	// e.g. {seq: 16}, {seq: 512}: every workload at every setting is
	// compiled, and the dispatch table then has a bucket per setting.
	Buckets []map[string]int64
}

// Record sources of a compiled kernel besides the database layers.
const (
	FromDefault = "default" // the kernel's rule-based schedule
)

// CompiledKernel is one workload's chosen schedule and its C source.
type CompiledKernel struct {
	Name     string `json:"name"`
	Workload string `json:"workload"` // tuningdb key (threads included)
	Group    string `json:"group"`
	Family   string `json:"family"`
	Bucket   int64  `json:"bucket"`
	Symbol   string `json:"symbol"`
	// From is the layer that answered ("user", "precompiled") or
	// "default"; Level is the lookup level or "rule".
	From   string          `json:"from"`
	Level  string          `json:"level"`
	Median float64         `json:"median,omitempty"` // recorded seconds (0: none)
	Note   string          `json:"note,omitempty"`
	Trace  json.RawMessage `json:"trace"`
	Source string          `json:"-"`
}

// CompiledGroup is a kernel group with the alternative compile chose.
type CompiledGroup struct {
	Func string `json:"func"`
	// Dims are the extra dim setting (CompileOptions.Buckets) the group
	// was partitioned at; empty for the module's own.
	Dims         map[string]int64 `json:"dims,omitempty"`
	Pattern      string           `json:"pattern,omitempty"`
	Ops          []string         `json:"ops"`
	Chosen       string           `json:"chosen"`
	Reason       string           `json:"reason"`
	Alternatives []AltChoice      `json:"alternatives"`
}

// AltChoice is one alternative of a group: its kernels' symbols and its
// recorded time (null when a kernel has no record or no kernel).
type AltChoice struct {
	Name    string   `json:"name"`
	Symbols []string `json:"symbols"`
	Seconds *float64 `json:"seconds"`
}

// DispatchEntry is one bucket of a workload family: the kernel compiled
// for every extent up to Bucket (down to the previous entry's + 1).
type DispatchEntry struct {
	Bucket   int64  `json:"bucket"`
	Symbol   string `json:"symbol"`
	Workload string `json:"workload"`
}

// CompiledModel is what `llmir compile` writes.
type CompiledModel struct {
	Target         string           `json:"target"` // backend kind: cpu, cuda
	Device         string           `json:"device"`
	Threads        int              `json:"threads"`
	CodegenVersion int              `json:"codegen_version"`
	Kernels        []CompiledKernel `json:"kernels"`
	// Dispatch maps a workload family (the workload with its dynamic
	// extents left out) to its buckets, smallest first.
	Dispatch map[string][]DispatchEntry `json:"dispatch"`
	Groups   []CompiledGroup            `json:"groups"`
	NoKernel []NoKernel                 `json:"no_kernel,omitempty"`
}

// CompileModel picks a schedule for every workload of m — the best record
// by o.Lookup (exact device, then a compatible one, then the nearest shape
// bucket; user database before precompiled), else the kernel's rule-based
// default, saying which — generates its C source, builds the dispatch
// table over shape buckets, and per group chooses the alternative (fused
// or not) with the least recorded time.
func CompileModel(ctx context.Context, m *ir.Module, o CompileOptions) (*CompiledModel, error) {
	o.Threads = max(o.Threads, 1)
	be := o.backend()
	out := &CompiledModel{Target: string(be.Kind()), Device: o.Device.Hash, Threads: o.Threads, CodegenVersion: be.CodegenVersion(), Dispatch: map[string][]DispatchEntry{}}
	byIR := map[string]int{} // ir workload key → index into out.Kernels
	noKernel := map[string]bool{}
	sets := []map[string]int64{o.Dims}
	for _, b := range o.Buckets {
		set := maps.Clone(o.Dims)
		if set == nil {
			set = map[string]int64{}
		}
		maps.Copy(set, b)
		sets = append(sets, set)
	}
	for si, dims := range sets {
		groups, tasks, _, _, err := moduleGroups(m, dims)
		if err != nil {
			return nil, fmt.Errorf("compile at dims %v: %w", dims, err)
		}
		for _, t := range tasks {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			key := t.Workload.Key()
			if _, done := byIR[key]; done || noKernel[key] {
				continue
			}
			k, err := be.Kernel(t.Workload)
			if err != nil {
				if !errors.Is(err, kernels.ErrNoKernel) {
					return nil, fmt.Errorf("compile: %w", err)
				}
				noKernel[key] = true
				out.NoKernel = append(out.NoKernel, NoKernel{Name: t.Workload.Name(), Group: strings.Join(t.Workload.Group, "+"),
					Occurrences: t.Count, Funcs: t.Funcs, Reason: err.Error()})
				continue
			}
			ck, err := compileKernel(ctx, k, o)
			if err != nil {
				return nil, err
			}
			byIR[key] = len(out.Kernels)
			out.Kernels = append(out.Kernels, ck)
			out.Dispatch[ck.Family] = append(out.Dispatch[ck.Family], DispatchEntry{Bucket: ck.Bucket, Symbol: ck.Symbol, Workload: ck.Workload})
		}
		var gdims map[string]int64
		if si > 0 {
			gdims = dims
		}
		out.Groups = append(out.Groups, chooseAlternatives(groups, byIR, out.Kernels, gdims)...)
	}
	for fam := range out.Dispatch {
		es := out.Dispatch[fam]
		slices.SortFunc(es, func(a, b DispatchEntry) int { return cmp.Compare(a.Bucket, b.Bucket) })
		out.Dispatch[fam] = es
	}
	return out, nil
}

// chooseAlternatives picks each group's alternative: the fastest whose
// kernels all have exact records on this device, else by rule the unfused
// one (the last) when all its kernels exist, else the first that has all
// its kernels.
func chooseAlternatives(groups []ir.Group, byIR map[string]int, ks []CompiledKernel, dims map[string]int64) []CompiledGroup {
	var out []CompiledGroup
	for _, g := range groups {
		cg := CompiledGroup{Func: g.Func, Dims: dims, Pattern: g.Pattern, Ops: g.Ops}
		best := math.Inf(1)
		nTimed := 0
		for _, a := range g.Alternatives {
			ac := AltChoice{Name: a.Name}
			sum, timed := 0.0, true
			for _, w := range a.Workloads {
				i, ok := byIR[w.Key()]
				if !ok {
					timed = false
					continue
				}
				ck := ks[i]
				ac.Symbols = append(ac.Symbols, ck.Symbol)
				// Times of other buckets or devices do not compare.
				if ck.Median <= 0 || ck.Level != tuningdb.LevelExact.String() {
					timed = false
				}
				sum += ck.Median
			}
			if timed {
				nTimed++
				ac.Seconds = &sum
				if sum < best {
					best, cg.Chosen = sum, a.Name
					cg.Reason = "fastest recorded"
				}
			}
			cg.Alternatives = append(cg.Alternatives, ac)
		}
		if nTimed == 1 && len(g.Alternatives) > 1 {
			cg.Reason = "the only alternative with recorded times on this device"
		}
		if cg.Chosen == "" {
			for i := len(g.Alternatives) - 1; i >= 0; i-- {
				if len(cg.Alternatives[i].Symbols) == len(g.Alternatives[i].Workloads) {
					cg.Chosen, cg.Reason = g.Alternatives[i].Name, "no recorded times for every alternative: by rule"
					break
				}
			}
			if cg.Chosen == "" {
				cg.Chosen, cg.Reason = "none", "no kernel"
			}
		}
		out = append(out, cg)
	}
	return out
}

// compileKernel looks up one kernel's best record and generates its source.
func compileKernel(ctx context.Context, k kernels.Kernel, o CompileOptions) (CompiledKernel, error) {
	wl := WorkloadOf(k, o.Threads)
	ck := CompiledKernel{Name: k.Name(), Workload: wl.Key, Group: wl.Group, Family: wl.Family, Bucket: wl.Bucket,
		Symbol: "llmir_" + wl.Key[:16], From: FromDefault, Level: "rule"}
	be := o.backend()
	hw := be.Hardware(o.Threads)
	def, err := k.Def()
	if err != nil {
		return ck, fmt.Errorf("compile %s: %w", k.Name(), err)
	}
	q := tuningdb.Query{WorkloadKey: wl.Key, Family: wl.Family, Bucket: wl.Bucket, DeviceHash: o.Device.Hash,
		Kind: o.Device.Kind, Compat: o.Device.Compat, CodegenVersion: be.CodegenVersion()}
	a, err := o.Lookup.Lookup(ctx, q)
	switch {
	case err == nil:
		// A record may not fit this kernel any more (another shape bucket,
		// or a design space changed since it was measured): then the
		// default is compiled and the note says why.
		tr, perr := schedule.ParseTrace(a.Record.Trace)
		var s *schedule.Schedule
		if perr == nil {
			s, perr = schedule.Replay(def, tr)
		}
		var src string
		if perr == nil {
			src, perr = be.Source(k, s, hw, ck.Symbol)
		}
		if perr != nil {
			ck.Note = fmt.Sprintf("%s record (%s) does not fit this kernel: %v; rule-based default used", a.Layer, a.Level, perr)
			break
		}
		ck.From, ck.Level, ck.Median, ck.Trace, ck.Source = a.Layer, a.Level.String(), a.Record.Median, compact(a.Record.Trace), src
		return ck, nil
	case errors.Is(err, tuningdb.ErrNotFound):
	default:
		return ck, fmt.Errorf("compile %s: %w", k.Name(), err)
	}
	s, err := DefaultSchedule(k, hw)
	if err != nil {
		return ck, fmt.Errorf("compile %s: %w", k.Name(), err)
	}
	if ck.Trace, err = TraceKey(s); err != nil {
		return ck, fmt.Errorf("compile %s: %w", k.Name(), err)
	}
	if ck.Source, err = be.Source(k, s, hw, ck.Symbol); err != nil {
		return ck, fmt.Errorf("compile %s (rule-based default): %w", k.Name(), err)
	}
	return ck, nil
}

// Header is the C header of a compiled model: every kernel's prototype,
// one dispatch table per workload family over its shape buckets, and the
// lookup that picks the smallest bucket at or above a runtime extent.
func (c *CompiledModel) Header() string {
	var b strings.Builder
	b.WriteString("/* Generated by llmir compile. Do not edit. */\n#ifndef LLMIR_KERNELS_H\n#define LLMIR_KERNELS_H\n#include <stdint.h>\n\n")
	b.WriteString("typedef int (*llmir_kernel_fn)(void *const *bufs, const int64_t *dims);\n")
	b.WriteString("typedef struct { int64_t bucket; llmir_kernel_fn fn; const char *workload; } llmir_bucket;\n\n")
	for _, k := range c.Kernels {
		fmt.Fprintf(&b, "int %s(void *const *bufs, const int64_t *dims); /* %s, %s %s */\n", k.Symbol, k.Name, k.From, k.Level)
	}
	b.WriteString("\n/* The kernel for extent n: the smallest bucket >= n (NULL when n exceeds them all). */\n")
	b.WriteString("static inline llmir_kernel_fn llmir_dispatch(const llmir_bucket *t, int len, int64_t n) {\n")
	b.WriteString("\tfor (int i = 0; i < len; i++)\n\t\tif (n <= t[i].bucket)\n\t\t\treturn t[i].fn;\n\treturn 0;\n}\n\n")
	fams := make([]string, 0, len(c.Dispatch))
	for f := range c.Dispatch {
		fams = append(fams, f)
	}
	slices.Sort(fams)
	for _, f := range fams {
		es := c.Dispatch[f]
		fmt.Fprintf(&b, "static const llmir_bucket llmir_family_%s[%d] = {\n", f[:16], len(es))
		for _, e := range es {
			fmt.Fprintf(&b, "\t{%d, %s, \"%s\"},\n", e.Bucket, e.Symbol, e.Workload)
		}
		b.WriteString("};\n")
	}
	b.WriteString("\n#endif\n")
	return b.String()
}

// siblingBests are the best traces found so far for the other tasks of
// task i's kernel group (Evolutionary.Transfer), fastest first.
func siblingBests(runs []*taskRun, tasks []TaskReport, i int) []json.RawMessage {
	type best struct {
		trace  json.RawMessage
		median float64
	}
	var bs []best
	for j, r := range runs {
		if j == i || tasks[j].Group != tasks[i].Group || r.last == nil || r.last.Best == nil {
			continue
		}
		bs = append(bs, best{r.last.Best.Trace, r.last.Best.Measurement.Median})
	}
	slices.SortStableFunc(bs, func(a, b best) int { return cmp.Compare(a.median, b.median) })
	out := make([]json.RawMessage, len(bs))
	for k, b := range bs {
		out[k] = b.trace
	}
	return out
}
