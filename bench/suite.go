package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"llmir/bench/results"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// The suites of `llmir bench --suite NAME` and the suite names their rows
// carry in bench_results. A nightly run writes its kernel rows under
// "kernels", its cost-model and search rows under "tuning" and its model
// tune under "tune", so that every series continues whichever suite
// (kernels, tuning or nightly) measured it.
const (
	SuiteKernels = "kernels"
	SuiteTuning  = "tuning"
	SuiteTune    = "tune"
	SuiteNightly = "nightly"
)

// Entry is one named part of a suite: it measures, returns its rows (not
// yet stored) and a summary for the JSON output. Adding a benchmark to a
// suite is one Entry line in Suites.
type Entry struct {
	// Name is the entry's name in logs and in the JSON output.
	Name string
	// Run measures. Rows whose Suite is empty get the entry's suite;
	// DeviceHash is filled with the environment's device.
	Run func(ctx context.Context, env *Env) (EntryResult, error)
}

// EntryResult is what an entry measured.
type EntryResult struct {
	// Suite is the bench_results suite of the rows (SuiteKernels, …).
	Suite string
	// Rows are stored in one transaction after the entry finishes.
	Rows []tuningdb.BenchResult
	// Stored are rows the entry stored itself (benchmarks that write
	// their results as they go): counted and assessed, not stored again.
	Stored []tuningdb.BenchResult
	// Detail is the entry's own result for --json (kernel results, the
	// cost-model report, the tune's per-task outcome).
	Detail any
	// Table prints the entry's human-readable table (nil: none).
	Table func(w io.Writer) error
}

// kernelsEntries are the nightly's kernel benchmarks: every registry
// kernel at its default and best-known schedule, no tuning. The suites
// that tune at full model sizes (paged attention, quant, prefill
// attention, the decode layer) are heavyEntries, run by name only.
func kernelsEntries() []Entry {
	return []Entry{
		{Name: "registry", Run: runRegistryKernels},
	}
}

// tuningEntries measure search and the cost model on fixed tasks. The
// evolutionary-vs-random trials entry joins here once that strategy lands.
func tuningEntries() []Entry {
	return []Entry{
		{Name: "costmodel", Run: runCostModelEval},
	}
}

// Suites maps each suite name to its entries, in the order they run. The
// heavy suites (paged_attention, quant, prefill_attention, layer) are
// only run by name: nightly is kernels + tuning + the model tune.
func Suites() map[string][]Entry {
	m := map[string][]Entry{
		SuiteKernels: kernelsEntries(),
		SuiteTuning:  tuningEntries(),
		SuiteNightly: slices.Concat(kernelsEntries(), tuningEntries(), []Entry{{Name: "tune", Run: runModelTune}}),
	}
	for name, es := range heavyEntries() {
		m[name] = es
	}
	return m
}

// SuiteNames lists the suites, sorted.
func SuiteNames() []string {
	var out []string
	for n := range Suites() {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// ErrUnknownSuite is returned by RunSuite for a name not in Suites.
var ErrUnknownSuite = errors.New("unknown benchmark suite")

// SuiteOptions configures a suite run. Zero fields take the defaults noted.
type SuiteOptions struct {
	// Threads are the thread counts kernels are measured at (default [1]);
	// the model tune uses the first.
	Threads []int
	// Run is the timing protocol of every measurement (zero: the
	// protocol's defaults: 25 ms warm-up, 100 ms timed).
	Run target.RunOptions
	// Seed seeds inputs and searches (default 1).
	Seed uint64
	// Models are the model shapes of the kernels suite (default
	// DefaultModels).
	Models []ModelShapes
	// Match, when set, keeps only the kernel benchmarks whose name it
	// matches (the model tune too, by kernel name).
	Match *regexp.Regexp
	// Slow, when set, is a testing aid: the kernel benchmarks whose name
	// it matches measure the kernel's naive schedule (no tiling, no
	// vectorisation, no threads) in place of the default and best-known
	// ones, so that a regression can be produced on purpose.
	Slow *regexp.Regexp
	// MaxBufferBytes skips kernels whose buffers exceed it (default 1 GiB):
	// the f32 lm_head and embedding of an 8B model hold 2 GiB each, and the
	// harness keeps copies of every buffer. The paged_attention, quant,
	// prefill_attention and layer suites refuse to start past it instead
	// (their flags chose the size).
	MaxBufferBytes int64
	// CostModelData are the cost-model datasets of the tuning suite (JSONL,
	// see costmodel/testdata); SearchSeeds the seeds each simulated search
	// order is averaged over (default 10).
	CostModelData []string
	SearchSeeds   int
	// TunePreset and TuneTrials are the nightly's short model tune
	// (defaults llama-tiny and 4 trials per task).
	TunePreset string
	TuneTrials int
	// Trials is the tuning budget per workload of the heavy suites
	// (default 16).
	Trials int
	// BlockSizes, Contexts and KVBytes are the paged_attention sweep (zero:
	// PagedOptions' defaults, the 8…256 × 128…16384).
	BlockSizes, Contexts []int64
	KVBytes              int64
	// ClosingRuns repeats paged_attention's closing batches and their read
	// baseline in that many fresh harness runs, samples pooled (0 or 1:
	// once; PagedOptions.ClosingRuns).
	ClosingRuns int
	// QuantShapes are the quant suite's N×K (nil: DefaultQuantShapes).
	QuantShapes []QuantShape
	// PrefillSeqs are the prefill_attention sequence lengths (nil:
	// PrefillOptions' defaults).
	PrefillSeqs []int64
	// LayerPreset, LayerBatch and LayerContext are the layer suite's
	// decode layer (zero: llama-3-8b, batch 1, context 2048).
	LayerPreset              string
	LayerBatch, LayerContext int64
	// Command is stored with tuning runs; Version (llmir's) with every
	// row and record.
	Command, Version string
	// Policy is the regression rule of the closing report (zero:
	// results.DefaultPolicy).
	Policy results.Policy
	// Log gets progress lines (nil: none).
	Log io.Writer
}

func (o SuiteOptions) withDefaults() SuiteOptions {
	if len(o.Threads) == 0 {
		o.Threads = []int{1}
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Models == nil {
		o.Models = DefaultModels()
	}
	if o.MaxBufferBytes <= 0 {
		o.MaxBufferBytes = 1 << 30
	}
	if o.TunePreset == "" {
		o.TunePreset = "llama-tiny"
	}
	if o.TuneTrials <= 0 {
		o.TuneTrials = 4
	}
	if o.Trials <= 0 {
		o.Trials = 16
	}
	if o.SearchSeeds <= 0 {
		o.SearchSeeds = 10
	}
	if o.Policy == (results.Policy{}) {
		o.Policy = results.DefaultPolicy()
	}
	return o
}

// Env is what every entry measures with.
type Env struct {
	Target   *cpu.Target
	Roofline *cpu.Roofline // may be nil: no roofline fractions then
	// Device is the target's tuningdb identity (stored in Results).
	Device tuningdb.Device
	// Results receives the rows and the model tune's run.
	Results *tuningdb.DB
	// Lookup answers best-known schedules (user database above the
	// precompiled one); nil: the rule-based default only.
	Lookup *tuningdb.Layered
	Opts   SuiteOptions
}

// logf prints a progress line when a log is set.
func (e *Env) logf(format string, args ...any) {
	if e.Opts.Log != nil {
		fmt.Fprintf(e.Opts.Log, format+"\n", args...)
	}
}

// SuiteRun is the outcome of RunSuite: what was measured, stored, and how
// it compares with the previous results on the same device.
type SuiteRun struct {
	Suite     string          `json:"suite"`
	Device    tuningdb.Device `json:"device"`
	Commit    string          `json:"git_commit"`
	Version   string          `json:"llmir_version"`
	Started   time.Time       `json:"started"`
	ElapsedS  float64         `json:"elapsed_s"`
	Threads   []int           `json:"threads"`
	Slow      string          `json:"slow,omitempty"`
	Entries   []EntryOutcome  `json:"entries"`
	Rows      int             `json:"rows"`
	Report    results.Report  `json:"report"`
	Roofline  *cpu.Roofline   `json:"roofline,omitempty"`
	ResultsDB string          `json:"results_db"`
}

// EntryOutcome is one entry's part of a SuiteRun.
type EntryOutcome struct {
	Name     string  `json:"name"`
	Suite    string  `json:"suite"`
	Rows     int     `json:"rows"`
	ElapsedS float64 `json:"elapsed_s"`
	Detail   any     `json:"detail,omitempty"`
	table    func(io.Writer) error
}

// RunSuite runs the named suite's entries in order, storing each entry's
// rows in env.Results as soon as it finishes (an interrupted nightly keeps
// what it measured), then assesses the series it wrote against their
// previous results on the same device. The outcome of the entries done so
// far comes back with an error.
func RunSuite(ctx context.Context, name string, env *Env) (*SuiteRun, error) {
	entries, ok := Suites()[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownSuite, name, strings.Join(SuiteNames(), ", "))
	}
	env.Opts = env.Opts.withDefaults()
	if err := env.Opts.Policy.Check(); err != nil {
		return nil, fmt.Errorf("regression policy: %w", err)
	}
	if err := env.Opts.checkHeavy(); err != nil {
		return nil, fmt.Errorf("suite %s: %w", name, err)
	}
	if err := env.Results.PutDevice(ctx, env.Device); err != nil {
		return nil, fmt.Errorf("suite %s: store device: %w", name, err)
	}
	run := &SuiteRun{Suite: name, Device: env.Device, Commit: tuningdb.BuildCommit(), Version: env.Opts.Version, Started: time.Now(),
		Threads: env.Opts.Threads, Roofline: env.Roofline, ResultsDB: env.Results.Path()}
	if env.Opts.Slow != nil {
		run.Slow = env.Opts.Slow.String()
	}
	written := map[string]bool{}
	var err error
	for _, e := range entries {
		start := time.Now()
		env.logf("== %s: %s", name, e.Name)
		var res EntryResult
		res, err = e.Run(ctx, env)
		for i := range res.Rows {
			r := &res.Rows[i]
			if r.Suite == "" {
				r.Suite = res.Suite
			}
			r.DeviceHash = env.Device.Hash
			if r.LLMIRVersion == "" {
				r.LLMIRVersion = run.Version
			}
			if r.GitCommit == "" {
				r.GitCommit = run.Commit
			}
		}
		if len(res.Rows) > 0 {
			// Stored even when the context ended mid-entry: what was
			// measured stays measured.
			if aerr := env.Results.AddBenchResults(context.WithoutCancel(ctx), res.Rows); aerr != nil {
				if err == nil {
					err = aerr
				}
				res.Rows = nil
			}
		}
		for _, r := range slices.Concat(res.Rows, res.Stored) {
			written[seriesKey(cmpOr(r.Suite, res.Suite), r.Name, r.Metric)] = true
		}
		n := len(res.Rows) + len(res.Stored)
		run.Rows += n
		run.Entries = append(run.Entries, EntryOutcome{Name: e.Name, Suite: res.Suite, Rows: n,
			ElapsedS: time.Since(start).Seconds(), Detail: res.Detail, table: res.Table})
		if err != nil {
			err = fmt.Errorf("suite %s, %s: %w", name, e.Name, err)
			break
		}
	}
	run.ElapsedS = time.Since(run.Started).Seconds()
	rep, rerr := reportWritten(context.WithoutCancel(ctx), env, written)
	run.Report = rep
	if err == nil {
		err = rerr
	}
	return run, err
}

func seriesKey(suite, name, metric string) string { return suite + "\x00" + name + "\x00" + metric }

// reportWritten applies the regression rule to the series this run wrote,
// on this run's device: each one's latest result (this run's) against the
// median of its earlier ones.
func reportWritten(ctx context.Context, env *Env, written map[string]bool) (results.Report, error) {
	series, err := results.Load(ctx, env.Results, tuningdb.BenchFilter{DeviceHash: env.Device.Hash})
	if err != nil {
		return results.Report{Policy: env.Opts.Policy}, err
	}
	var mine []results.Series
	for _, s := range series {
		if written[seriesKey(s.Suite, s.Name, s.Metric)] {
			mine = append(mine, s)
		}
	}
	return results.Detect(mine, env.Opts.Policy)
}

// WriteText prints every entry's table, then the regression report
// (regressed and improved series listed; all with verbose).
func (r *SuiteRun) WriteText(w io.Writer, verbose bool) error {
	for _, e := range r.Entries {
		if e.table == nil {
			continue
		}
		fmt.Fprintf(w, "== %s (%s, %d rows, %.1fs)\n", e.Name, e.Suite, e.Rows, e.ElapsedS)
		if err := e.table(w); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "suite %s: %d rows into %s (device %.12s, commit %s) in %.1fs\n", r.Suite, r.Rows, r.ResultsDB,
		r.Device.Hash, cmpOr(results.ShortCommit(r.Commit), "unknown"), r.ElapsedS)
	if r.Slow != "" {
		fmt.Fprintf(w, "TESTING AID: --slow %q measured the naive schedule of the matching kernels\n", r.Slow)
	}
	if verbose {
		return r.Report.WriteText(w, true)
	}
	return writeShortReport(w, &r.Report)
}

// writeShortReport prints the report's summary and the series that need a
// look (regressed, improved); new and unchanged ones are only counted.
func writeShortReport(w io.Writer, rep *results.Report) error {
	p := rep.Policy
	fmt.Fprintf(w, "vs previous results on this device: %s (%d series; reference: median of the last %d; threshold max(%.1f%%, %g×IQR/median))\n",
		rep.Summary(), len(rep.Findings), p.Window, 100*p.Floor, p.K)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := false
	for _, f := range rep.Findings {
		if f.Verdict != results.Regressed && f.Verdict != results.Improved {
			continue
		}
		if !header {
			fmt.Fprintln(tw, "verdict\tbenchmark\treference\tlatest\tchange\tthreshold\tn\t")
			header = true
		}
		verdict, change := "improved", results.FormatChange(f.Change)
		if f.Verdict == results.Regressed {
			verdict = "REGRESSED"
		}
		if f.Failed {
			change = "failed"
		}
		fmt.Fprintf(tw, "%s\t%s/%s:%s\t%s\t%s\t%s\t%.1f%%\t%d\t\n", verdict, f.Suite, f.Name, f.Metric,
			results.FormatValue(f.Reference, f.Unit), results.FormatValue(f.Latest, f.Unit), change, 100*f.Threshold, f.History)
	}
	return tw.Flush()
}

func cmpOr(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// NewEnv opens what a suite run needs on the CPU target: the roofline
// (probed once per device and cached), the device identity, and the
// best-known-schedule lookup (lookup may be nil).
func NewEnv(ctx context.Context, tg *cpu.Target, resultsDB *tuningdb.DB, lookup *tuningdb.Layered, o SuiteOptions) (*Env, error) {
	roof, err := tg.Roofline(ctx)
	if err != nil {
		return nil, fmt.Errorf("roofline: %w", err)
	}
	return &Env{Target: tg, Roofline: roof, Device: search.DeviceOf(tg.CPU(), roof), Results: resultsDB, Lookup: lookup, Opts: o}, nil
}
