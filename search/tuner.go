package search

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/schollz/progressbar/v3"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// Budget bounds one tune. Trials counts every distinct trace of the
// workload on the device, including those already in the database; Time
// is checked between batches, so a tune may run over by one batch. Zero
// fields are unbounded, but not both (see WithDefaults). The rule-based
// default is measured even when the budget is already spent (by records of
// an earlier rule), as the tune's reference point.
type Budget struct {
	Trials int
	Time   time.Duration
}

// DefaultTrials is the trial budget when neither bound is set.
const DefaultTrials = 32

// Options configures a Tuner. The zero value is usable.
type Options struct {
	Budget Budget
	// BatchSize is the number of candidates built (in parallel) and then
	// measured per round and per database transaction (default 8; a
	// strategy that learns between batches may ask for smaller ones, see
	// EvolveOptions.Batch).
	BatchSize int
	// Run is the timing protocol (zero: the protocol's defaults).
	Run target.RunOptions
	// Seed seeds the strategy's draws and the problem's inputs.
	Seed uint64
	// NewStrategy makes the strategy of a task (nil: NewRandom).
	NewStrategy func(k kernels.Kernel, hw kernels.Hardware, seed uint64) Strategy
	// Progress receives a progress bar when not nil (the CLI passes stderr
	// when it is a terminal).
	Progress io.Writer
	// Command and LLMIRVersion are stored with the tuning run and records.
	Command      string
	LLMIRVersion string
	// Now is the clock for records (default time.Now).
	Now func() time.Time
	// Confirm is how many of the fastest trials are measured again, side by
	// side with the default, before the best is picked (default 3; < 0
	// turns the confirmation off).
	Confirm int
	// Replay is how many of the best schedules recorded for the workload
	// on compatible devices — in the user's database (DB) and in
	// Tuner.Precompiled, by tuningdb.Layered.Ranked — a task measures in its
	// first batch, before the strategy's proposals (default
	// DefaultReplay; < 0: none). Only traces not measured on this device
	// that replay on the kernel and that it accepts on this hardware are
	// taken.
	Replay int
}

// DefaultReplay is Options.Replay's default: a few known-good schedules
// from other machines cost a few trials and often start the search near
// its end.
const DefaultReplay = 3

// WithDefaults fills the zero fields.
func (o Options) WithDefaults() Options {
	if o.Budget.Trials <= 0 && o.Budget.Time <= 0 {
		o.Budget.Trials = DefaultTrials
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 8
	}
	if o.NewStrategy == nil {
		o.NewStrategy = func(k kernels.Kernel, hw kernels.Hardware, seed uint64) Strategy { return NewRandom(k, hw, seed) }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Confirm == 0 {
		o.Confirm = 3
	}
	if o.Replay == 0 {
		o.Replay = DefaultReplay
	}
	return o
}

// batchSizer is a strategy that learns between batches and wants them no
// larger than BatchSize (Evolutionary: its model updates after each).
type batchSizer interface{ BatchSize() int }

// Task is one kernel to tune at a thread count.
type Task struct {
	Kernel  kernels.Kernel
	Threads int
}

// Trial is one schedule and its measurement.
type Trial struct {
	// Index is the order in which the tune considered it: resumed records
	// first (in database order), then this run's candidates.
	Index   int  `json:"index"`
	Default bool `json:"default,omitempty"`
	Resumed bool `json:"resumed,omitempty"`
	// Replayed marks a schedule recorded on another device (or in the
	// precompiled database) and measured here (Options.Replay).
	Replayed bool            `json:"replayed,omitempty"`
	Trace    json.RawMessage `json:"trace"`
	// Measurement's CandidateID is "t<Index>".
	Measurement target.Measurement `json:"measurement"`
}

// Result is what a tune found.
type Result struct {
	Kernel   string            `json:"kernel"`
	Threads  int               `json:"threads"`
	Workload tuningdb.Workload `json:"workload"`
	Device   string            `json:"device"` // hash
	RunID    int64             `json:"run_id"`
	Strategy string            `json:"strategy"`
	// Default is the rule-based schedule's trial (measured now or resumed).
	Default *Trial `json:"default"`
	// Best is the fastest ok trial under the tie rule; nil when none is ok.
	// With confirmation on, it is decided by (and carries) the confirmation
	// measurement.
	Best *Trial `json:"best"`
	// Confirmed are the re-measurements of the fastest trials and the
	// default, taken in one batch; they are recorded but not budget trials.
	Confirmed []Trial `json:"confirmed,omitempty"`
	// Measured are this run's trials; Resumed counts the records it found.
	Measured  []Trial               `json:"measured"`
	Resumed   int                   `json:"resumed"`
	Counts    map[target.Status]int `json:"counts"` // this run's, by status
	Exhausted bool                  `json:"exhausted"`
	Elapsed   time.Duration         `json:"elapsed_ns"`
}

// Tuner tunes tasks on one target and records into one database.
type Tuner struct {
	Target target.Target
	// Hardware describes the device to design spaces at a thread count.
	Hardware func(threads int) kernels.Hardware
	Device   tuningdb.Device
	DB       *tuningdb.DB
	// Precompiled is the database shipped with llmir, read for schedules
	// to replay after DB (Options.Replay; nil: DB only).
	Precompiled *tuningdb.DB
	Options     Options
	// Backend prints candidates and names the codegen version of records
	// (nil: the CPU's C printers and cgen.CodegenVersion).
	Backend Backend
}

// NewCPUTuner is a tuner for the CPU target; roof (may be nil) is stored
// with the device.
func NewCPUTuner(tg *cpu.Target, roof *cpu.Roofline, db *tuningdb.DB, opts Options) *Tuner {
	fp := tg.CPU()
	return &Tuner{
		Target:   tg,
		Hardware: func(threads int) kernels.Hardware { return CPUHardware(fp, threads) },
		Device:   DeviceOf(fp, roof),
		DB:       db,
		Options:  opts.WithDefaults(),
		Backend:  NewCPUBackend(tg, roof),
	}
}

// Tune runs one task. p is the task's problem (nil: NewProblem with the
// options' seed); pass the same one to everything that measures this shape
// so that the reference is computed once. On cancellation the partial
// result comes back with an error wrapping the context's.
func (t *Tuner) Tune(ctx context.Context, task Task, p *target.Problem) (*Result, error) {
	o := t.Options.WithDefaults()
	k := task.Kernel
	threads := max(task.Threads, 1)
	hw := t.Hardware(threads)
	if p == nil {
		var err error
		if p, err = NewProblem(k, o.Seed); err != nil {
			return nil, err
		}
	}
	wl := WorkloadOf(k, threads)
	start := o.Now()
	res := &Result{Kernel: k.Name(), Threads: threads, Workload: wl, Device: t.Device.Hash, Counts: map[target.Status]int{}}

	if err := t.DB.PutDevice(ctx, t.Device); err != nil {
		return nil, fmt.Errorf("tune %s: %w", k.Name(), err)
	}
	if err := t.DB.PutWorkloads(ctx, wl); err != nil {
		return nil, fmt.Errorf("tune %s: %w", k.Name(), err)
	}
	seen := map[string]bool{}
	var trials []Trial
	for r, err := range t.DB.DeviceRecords(ctx, t.Device.Hash, t.codegenVersion()) {
		if err != nil {
			return nil, fmt.Errorf("tune %s: resume: %w", k.Name(), err)
		}
		if r.WorkloadKey != wl.Key {
			continue
		}
		key := string(compact(r.Trace))
		if seen[key] {
			continue
		}
		seen[key] = true
		trials = append(trials, resumedTrial(len(trials), r, threads))
	}
	res.Resumed = len(trials)

	def, err := DefaultSchedule(k, hw)
	if err != nil {
		return nil, fmt.Errorf("tune %s: %w", k.Name(), err)
	}
	defKey, err := TraceKey(def)
	if err != nil {
		return nil, fmt.Errorf("tune %s: %w", k.Name(), err)
	}
	for i := range trials {
		if string(trials[i].Trace) == string(defKey) {
			trials[i].Default = true
		}
	}

	replays, err := t.replays(ctx, o, k, hw, wl, seen, string(defKey))
	if err != nil {
		return nil, fmt.Errorf("tune %s: %w", k.Name(), err)
	}

	strat := o.NewStrategy(k, hw, o.Seed)
	res.Strategy = strat.Name()
	strat.Observe(trials)
	runID, err := t.DB.StartRun(ctx, tuningdb.TuningRun{
		DeviceHash: t.Device.Hash, BudgetTrials: o.Budget.Trials, BudgetSeconds: o.Budget.Time.Seconds(),
		Command: o.Command, LLMIRVersion: o.LLMIRVersion,
	})
	if err != nil {
		return nil, fmt.Errorf("tune %s: %w", k.Name(), err)
	}
	res.RunID = runID

	var bar *progressbar.ProgressBar
	if o.Progress != nil {
		total := -1
		if o.Budget.Trials > 0 {
			total = o.Budget.Trials
		}
		bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(o.Progress),
			progressbar.OptionSetDescription(fmt.Sprintf("%s t=%d", k.Name(), threads)),
			progressbar.OptionShowCount(), progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond))
		_ = bar.Add(len(trials))
		defer bar.Finish()
	}

	var loopErr error
	first := !seen[string(defKey)]
	for {
		if err := ctx.Err(); err != nil {
			loopErr = err
			break
		}
		n := o.BatchSize
		if b, ok := strat.(batchSizer); ok && b.BatchSize() > 0 {
			n = min(n, b.BatchSize())
		}
		// Replays ride on top of the first batch: the strategy's first
		// proposals (Evolutionary's transfer among them) are measured
		// beside them, and the budget bounds them all.
		n += len(replays)
		if o.Budget.Trials > 0 {
			n = min(n, o.Budget.Trials-len(trials))
		}
		// The default is measured even over budget: when the kernel's rule
		// changed since the recorded trials, it is still the reference
		// point of the tune.
		if first {
			n = max(n, 1)
		}
		if n <= 0 || (o.Budget.Time > 0 && o.Now().Sub(start) >= o.Budget.Time && !first) {
			break
		}
		var props []Proposal
		if first {
			props = append(props, Proposal{Schedule: def, Key: string(defKey)})
			seen[string(defKey)] = true
			first = false
		}
		replayed := map[string]bool{}
		for _, r := range replays[:min(len(replays), n-len(props))] {
			props = append(props, r)
			seen[r.Key], replayed[r.Key] = true, true
		}
		replays = nil
		more, err := strat.Propose(ctx, n-len(props), seen)
		if err != nil {
			loopErr = fmt.Errorf("propose: %w", err)
			break
		}
		props = append(props, more...)
		if len(props) == 0 {
			res.Exhausted = true
			break
		}
		batch, err := t.measure(ctx, k, p, props, len(trials), hw, string(defKey))
		for i := range batch {
			batch[i].Replayed = replayed[string(batch[i].Trace)]
		}
		// Whatever was measured is recorded, even when the context ended
		// during the batch.
		if len(batch) > 0 {
			if rerr := t.record(context.WithoutCancel(ctx), o, wl, runID, batch); rerr != nil {
				loopErr = rerr
				break
			}
		}
		for _, tr := range batch {
			seen[string(tr.Trace)] = true
			res.Counts[tr.Measurement.Status]++
		}
		trials = append(trials, batch...)
		res.Measured = append(res.Measured, batch...)
		strat.Observe(batch)
		if bar != nil {
			// Described before the count moves: a bar that reaches its
			// total is cleared and no longer redrawn.
			bar.Describe(barLabel(k.Name(), threads, trials))
			_ = bar.Add(len(batch))
		}
		if err != nil {
			loopErr = err
			break
		}
	}

	res.Default, res.Best = pick(trials)
	if loopErr == nil && o.Confirm > 0 && res.Best != nil {
		conf, err := t.confirm(ctx, o, k, p, trials, len(trials), hw, string(defKey), wl, runID)
		if err != nil {
			loopErr = err
		} else if len(conf) > 0 {
			res.Confirmed = conf
			if _, best := pick(conf); best != nil {
				res.Best = best
			}
		}
	}
	res.Elapsed = o.Now().Sub(start)
	summary, _ := json.Marshal(runSummary(res))
	if err := t.DB.FinishRun(context.WithoutCancel(ctx), runID, summary); err != nil && loopErr == nil {
		loopErr = err
	}
	if loopErr != nil {
		return res, fmt.Errorf("tune %s (threads %d): %w", k.Name(), threads, loopErr)
	}
	return res, nil
}

// confirm measures the o.Confirm fastest ok trials again, with the default,
// in one batch: on a machine whose speed drifts, single measurements taken
// minutes apart mislead, and the pick must compare candidates under the
// same conditions. The re-measurements are recorded like any other.
func (t *Tuner) confirm(ctx context.Context, o Options, k kernels.Kernel, p *target.Problem, trials []Trial, base int, hw kernels.Hardware, defKey string, wl tuningdb.Workload, runID int64) ([]Trial, error) {
	var ok []Trial
	for _, tr := range trials {
		if tr.Measurement.OK() {
			ok = append(ok, tr)
		}
	}
	slices.SortStableFunc(ok, func(a, b Trial) int { return cmp.Compare(a.Measurement.Median, b.Measurement.Median) })
	top := ok[:min(o.Confirm, len(ok))]
	for _, tr := range ok[len(top):] {
		if tr.Default {
			top = append(top, tr)
		}
	}
	if len(top) < 2 {
		return nil, nil // nothing to compare
	}
	def, err := k.Def()
	if err != nil {
		return nil, err
	}
	props := make([]Proposal, len(top))
	for i, tr := range top {
		tc, err := schedule.ParseTrace(tr.Trace)
		if err != nil {
			return nil, fmt.Errorf("confirm trial %d: %w", tr.Index, err)
		}
		s, err := schedule.Replay(def, tc)
		if err != nil {
			return nil, fmt.Errorf("confirm trial %d: %w", tr.Index, err)
		}
		props[i] = Proposal{Schedule: s, Key: string(tr.Trace)}
	}
	// Candidates go in the order of their earlier ranking, the default
	// first, so that pick's tie rule still favours the default.
	slices.SortStableFunc(props, func(a, b Proposal) int {
		return cmp.Compare(boolRank(a.Key != defKey), boolRank(b.Key != defKey))
	})
	conf, err := t.measure(ctx, k, p, props, base, hw, defKey)
	if len(conf) > 0 {
		if rerr := t.record(context.WithoutCancel(ctx), o, wl, runID, conf); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("confirm: %w", err)
	}
	return conf, nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// measure lowers, builds and measures one batch; the trials come back in
// proposal order. A schedule that fails to lower is a build_error without
// reaching the compiler. On an infrastructure error (cancellation) the
// trials measured so far come back with it.
func (t *Tuner) measure(ctx context.Context, k kernels.Kernel, p *target.Problem, props []Proposal, base int, hw kernels.Hardware, defKey string) ([]Trial, error) {
	trials := make([]Trial, len(props))
	var cands []target.Candidate
	for i, pr := range props {
		id := fmt.Sprintf("t%d", base+i)
		trials[i] = Trial{Index: base + i, Default: pr.Key == defKey, Trace: json.RawMessage(pr.Key)}
		c, err := t.candidate(id, k, pr.Schedule, hw)
		if err != nil {
			trials[i].Measurement = target.Measurement{CandidateID: id, Status: target.StatusBuildError, Error: err.Error(), Threads: hw.Threads}
			continue
		}
		cands = append(cands, c)
	}
	var ms map[string]target.Measurement
	var err error
	if len(cands) > 0 {
		ms, err = target.Measure(ctx, t.Target, p, cands, t.Options.Run)
	}
	out := trials[:0]
	for _, tr := range trials {
		if tr.Measurement.Status == "" {
			m, ok := ms[fmt.Sprintf("t%d", tr.Index)]
			if !ok {
				continue // not measured before the context ended
			}
			tr.Measurement = m
		}
		out = append(out, tr)
	}
	if err != nil {
		return out, fmt.Errorf("measure batch at trial %d: %w", base, err)
	}
	return out, nil
}

// record writes one batch in one transaction.
func (t *Tuner) record(ctx context.Context, o Options, wl tuningdb.Workload, runID int64, batch []Trial) error {
	now := o.Now()
	recs := make([]tuningdb.Record, len(batch))
	for i, tr := range batch {
		m := tr.Measurement
		samples := make([]float64, len(m.Samples))
		for j, s := range m.Samples {
			// The harness clock ticks in nanoseconds; a kernel faster than
			// one tick reads 0, which the database (rightly) refuses.
			samples[j] = max(s, 1e-9)
		}
		st := tuningdb.Status(m.Status)
		if st == tuningdb.StatusOK && len(samples) == 0 {
			st, m.Error = tuningdb.StatusRuntimeError, "ok without samples"
		}
		recs[i] = tuningdb.Record{
			WorkloadKey: wl.Key, DeviceHash: t.Device.Hash, CodegenVersion: t.codegenVersion(),
			Trace: tr.Trace, Status: st, Error: m.Error, Samples: samples,
			// Distinct creation times keep the database's tie order (oldest
			// first) equal to the measurement order.
			CreatedAt: now.Add(time.Duration(i) * time.Microsecond), LLMIRVersion: o.LLMIRVersion, RunID: runID,
		}
	}
	if _, err := t.DB.RecordBatch(ctx, tuningdb.Batch{Devices: []tuningdb.Device{t.Device}, Workloads: []tuningdb.Workload{wl}, Records: recs}); err != nil {
		return fmt.Errorf("record trials %d..%d: %w", batch[0].Index, batch[len(batch)-1].Index, err)
	}
	return nil
}

// replays are up to o.Replay schedules to measure first: the ok records of
// workload wl on this device's Kind and Compat class in the user's database
// and then the precompiled one, in tuningdb.Layered.Ranked's order (the
// lookup's), skipping traces in seen or equal to the default (defKey), and
// those that do not replay on k or that k refuses on hw (an older design
// space, another template's knobs): the first cannot be built, the second
// would only cost a trial as a build error. No log names them: llmir has
// no debug log, and a skipped record is no fault of this tune. They are
// measured and validated like any candidate, so a record wrong here never
// becomes best.
func (t *Tuner) replays(ctx context.Context, o Options, k kernels.Kernel, hw kernels.Hardware, wl tuningdb.Workload, seen map[string]bool, defKey string) ([]Proposal, error) {
	if o.Replay <= 0 {
		return nil, nil
	}
	def, err := k.Def()
	if err != nil {
		return nil, err
	}
	q := tuningdb.Query{WorkloadKey: wl.Key, DeviceHash: t.Device.Hash, Kind: t.Device.Kind, Compat: t.Device.Compat,
		CodegenVersion: t.codegenVersion()}
	var out []Proposal
	skip := func(key string) bool {
		return key == defKey || seen[key] || slices.ContainsFunc(out, func(p Proposal) bool { return p.Key == key })
	}
	for a, err := range tuningdb.NewLayered(t.DB, t.Precompiled).Ranked(ctx, q) {
		if err != nil {
			return nil, fmt.Errorf("replay records: %w", err)
		}
		if skip(string(compact(a.Record.Trace))) {
			continue // this device's own records above all: resumed already
		}
		tr, err := schedule.ParseTrace(a.Record.Trace)
		if err != nil {
			continue
		}
		s, err := schedule.Replay(def, tr)
		if err != nil {
			continue
		}
		if v, ok := k.(kernels.Validator); ok && v.Valid(s, hw) != nil {
			continue
		}
		key, err := TraceKey(s)
		if err != nil || skip(string(key)) {
			continue
		}
		if out = append(out, Proposal{Schedule: s, Key: string(key)}); len(out) == o.Replay {
			break
		}
	}
	return out, nil
}

func resumedTrial(index int, r tuningdb.Record, threads int) Trial {
	m := target.Measurement{CandidateID: fmt.Sprintf("t%d", index), Status: target.Status(r.Status), Error: r.Error, Threads: threads}
	m.SetSamples(r.Samples)
	return Trial{Index: index, Resumed: true, Trace: compact(r.Trace), Measurement: m}
}

// barLabel is a task's progress-bar description: the task, its best so
// far and that best's speedup over the default.
func barLabel(name string, threads int, trials []Trial) string {
	def, best := pick(trials)
	r := Result{Default: def, Best: best}
	return fmt.Sprintf("%s t=%d best %s %s", name, threads, fmtDur(r.BestMedian()), fmtSpeedup(speedupOf(&r)))
}

// pick finds the default's trial and the best: a later trial replaces the
// incumbent only when strictly faster (target.Faster), so ties go to the
// earlier, and the default comes first.
func pick(trials []Trial) (def, best *Trial) {
	for i := range trials {
		tr := &trials[i]
		if tr.Default && def == nil {
			def = tr
		}
	}
	if def != nil && def.Measurement.OK() {
		best = def
	}
	for i := range trials {
		tr := &trials[i]
		if !tr.Measurement.OK() || tr == best {
			continue
		}
		if best == nil || target.Faster(tr.Measurement, best.Measurement) {
			best = tr
		}
	}
	return def, best
}

// replayed counts the measured trials replayed from other devices' records.
func (r *Result) replayed() int {
	n := 0
	for _, tr := range r.Measured {
		if tr.Replayed {
			n++
		}
	}
	return n
}

// BestMedian is the best trial's median in seconds (+Inf when none is ok).
func (r *Result) BestMedian() float64 {
	if r.Best == nil {
		return math.Inf(1)
	}
	return r.Best.Measurement.Median
}

func runSummary(r *Result) map[string]any {
	s := map[string]any{
		"kernel": r.Kernel, "threads": r.Threads, "workload": r.Workload.Key, "strategy": r.Strategy,
		"measured": len(r.Measured), "resumed": r.Resumed, "replayed": r.replayed(), "counts": r.Counts, "exhausted": r.Exhausted,
		"elapsed_s": r.Elapsed.Seconds(),
	}
	if r.Best != nil {
		s["best_median_s"] = r.Best.Measurement.Median
		s["best_index"] = r.Best.Index
	}
	if r.Default != nil && r.Default.Measurement.OK() {
		s["default_median_s"] = r.Default.Measurement.Median
	}
	return s
}

// ErrNoValidSchedule is returned by callers that need a best schedule when
// every trial failed.
var ErrNoValidSchedule = errors.New("no valid schedule")
