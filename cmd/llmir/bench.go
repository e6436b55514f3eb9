package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"llmir/bench"
	"llmir/bench/results"
	"llmir/internal/buildinfo"
	"llmir/ir/hf"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// newBenchCmd builds `llmir bench`: benchmark suites that measure next to
// the baselines, store their results and report regressions.
func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench --suite NAME",
		Short: "Run benchmark suites (measure against baselines and the roofline, record, report regressions)",
		Long: `Runs a benchmark suite and stores every number in the results database
(--results, default the tuning database --db), then compares each benchmark with
the median of its last --window results on this device and prints the report
(improved / regressed / unchanged).

Suites:
  kernels  every kernel of the registry on the distinct workloads of --models
           (default llama-tiny and llama-3-8b's decode, in f32; llama-3-8b
           prefill is left out as too slow for a nightly on 2 cores): the
           rule-based default and the best-known schedule (user database, then
           the precompiled one) measured in one batch with the baseline where
           one exists (OpenBLAS for linear), twice in mirrored order: median,
           IQR, GB/s or GFLOP/s, % of the roofline at the thread count.
  tuning   cost-model pairwise rank accuracy (learned vs roofline, held-out
           tasks) and trials to 95% of the best (model-guided vs random) on the
           fixed datasets of --costmodel-data.
  nightly  both, plus a short tune of --tune-preset from scratch (the model
           tune of llmir tune: every kernel group, fused and unfused,
           evolutionary search, at most --tune-trials per task), stored as a
           tuning run whose best-latency-vs-trials curves the dashboard draws.

Heavy suites (tens of minutes to hours; NOT part of nightly, run them by name).
Each tunes every workload with --trials per workload (tuning records go to the
results database, so a rerun resumes), then measures default and tuned in one
batch per --threads count:
  paged_attention    paged decode attention of llama-3-8b (32/8 heads, d=128,
                     f32 cache): GB/s and % of read bandwidth (goal ≥80%) for
                     --block-sizes × --contexts (default 8…256 × 128…16384);
                     the batch is the smallest whose K+V reach --kv-mib.
  quant              int4 and int8 vs f32 decode GEMV at --quant-shapes (goal:
                     int4 ≥3× f32).
  prefill_attention  causal prefill attention at --prefill-seqs: GFLOP/s, %
                     of FMA peak.
  layer              one decode layer of --layer-preset (no tuning: the
                     best-known schedules of --db): fused vs unfused, default
                     vs tuned.

Rows carry the device fingerprint, git commit ($LLMIR_GIT_COMMIT, else the
binary's VCS revision), llmir version, time, all samples, median, IQR, unit,
baseline ratio and % of roofline. With --fail-on-regression the command exits
with status 3 when a benchmark regressed.

--slow PATTERN is a TESTING AID, not a benchmark setting: kernel benchmarks whose
name matches measure their naive schedule (untiled, unvectorised, one thread)
in place of the default and best-known ones, to check that a slowed kernel is
flagged. Rows measured so are real measurements of a slower schedule.`,
		Example: `  llmir bench --suite kernels --results nightly.db
  llmir bench --suite nightly --results nightly.db --fail-on-regression
  llmir bench --suite tuning --json
  llmir bench --suite paged_attention --block-sizes 16,128 --contexts 4096 --trials 8
  llmir bench --suite quant --quant-shapes 4096x4096 --threads 1,2
  llmir bench --suite layer --layer-context 4096
  llmir bench --suite kernels --match 'linear/M=1,' --min-time 20ms
  llmir bench --suite kernels --results t.db --slow 'linear/M=1,N=256,K=256/'   # testing aid
  llmir bench linear --threads 1`,
		Args: cobra.NoArgs,
		RunE: runBenchSuite,
	}
	def := results.DefaultPolicy()
	f := cmd.Flags()
	f.String("suite", "", "suite to run: "+strings.Join(bench.SuiteNames(), ", "))
	f.String("target", "cpu", "target to measure on (cpu)")
	f.String("results", "", "results database (default: the tuning database, --db)")
	f.Bool("json", false, "print the run as JSON (all samples, the report)")
	f.Bool("fail-on-regression", false, "exit with status 3 when a benchmark regressed")
	f.Bool("all", false, "list unchanged benchmarks in the report too")
	f.IntSlice("threads", []int{1}, "thread counts to measure kernels at (the model tune uses the first)")
	f.StringSlice("models", []string{"llama-tiny", "llama-3-8b:decode"}, "model shapes of the kernels suite: preset[:prefill|decode]")
	f.String("match", "", "only kernel and tune benchmarks whose name matches this regular expression")
	f.Duration("min-time", 0, "timed budget per candidate (0: the protocol's 100ms)")
	f.Duration("warmup", 0, "warm-up per candidate (0: the protocol's 25ms)")
	f.Uint64("seed", 1, "seed of inputs and searches")
	f.Int64("max-buffer-mib", 1024, "kernels: skip kernels whose buffers exceed this many MiB; paged_attention, quant, prefill_attention, layer: refuse to run past it")
	f.StringSlice("costmodel-data", []string{"costmodel/testdata/*.jsonl"}, "cost-model datasets of the tuning suite (globs)")
	f.Int("search-seeds", 10, "seeds each simulated search order of the tuning suite is averaged over")
	f.String("tune-preset", "llama-tiny", "model the nightly tunes")
	f.Int("tune-trials", 4, "trials per task of the nightly tune")
	f.Int("trials", 16, "heavy suites: tuning trials per workload")
	f.Int64Slice("block-sizes", []int64{8, 16, 32, 64, 128, 256}, "paged_attention: KV-cache block sizes")
	f.Int64Slice("contexts", []int64{128, 1024, 4096, 16384}, "paged_attention: context lengths")
	f.Int64("kv-mib", 0, "paged_attention: least K+V MiB one call reads (0: twice the LLC, within 64..128)")
	f.Int("closing-runs", 1, "paged_attention: repeat each closing batch and its read baseline in this many fresh harness runs, samples pooled")
	f.StringSlice("quant-shapes", []string{"4096x4096", "14336x4096", "4096x14336"}, "quant: decode GEMV shapes NxK")
	f.Int64Slice("prefill-seqs", []int64{128, 256, 512, 1024, 2048}, "prefill_attention: sequence lengths")
	f.String("layer-preset", "llama-3-8b", "layer: model whose decode layer is measured")
	f.Int64("layer-batch", 1, "layer: decode batch")
	f.Int64("layer-context", 2048, "layer: context length of the layer's paged attention")
	f.String("slow", "", "TESTING AID: measure the naive schedule of kernel benchmarks matching this regular expression")
	f.Int("window", def.Window, "regression reference: median of the last N results")
	f.Float64("floor", def.Floor, "smallest relative change that counts (0.03 = 3%)")
	f.Float64("k", def.K, "noise factor: changes within k × IQR/median are noise")
	cmd.AddCommand(newBenchLinearCmd())
	return cmd
}

func runBenchSuite(cmd *cobra.Command, args []string) error {
	fl := cmd.Flags()
	suite, _ := fl.GetString("suite")
	tgName, _ := fl.GetString("target")
	asJSON, _ := fl.GetBool("json")
	failOn, _ := fl.GetBool("fail-on-regression")
	all, _ := fl.GetBool("all")
	threads, _ := fl.GetIntSlice("threads")
	models, _ := fl.GetStringSlice("models")
	match, _ := fl.GetString("match")
	minTime, _ := fl.GetDuration("min-time")
	warmup, _ := fl.GetDuration("warmup")
	seed, _ := fl.GetUint64("seed")
	maxMiB, _ := fl.GetInt64("max-buffer-mib")
	cmData, _ := fl.GetStringSlice("costmodel-data")
	tunePreset, _ := fl.GetString("tune-preset")
	tuneTrials, _ := fl.GetInt("tune-trials")
	searchSeeds, _ := fl.GetInt("search-seeds")
	slow, _ := fl.GetString("slow")
	trials, _ := fl.GetInt("trials")
	blockSizes, _ := fl.GetInt64Slice("block-sizes")
	contexts, _ := fl.GetInt64Slice("contexts")
	kvMiB, _ := fl.GetInt64("kv-mib")
	closingRuns, _ := fl.GetInt("closing-runs")
	quantShapes, _ := fl.GetStringSlice("quant-shapes")
	prefillSeqs, _ := fl.GetInt64Slice("prefill-seqs")
	layerPreset, _ := fl.GetString("layer-preset")
	layerBatch, _ := fl.GetInt64("layer-batch")
	layerContext, _ := fl.GetInt64("layer-context")
	var pol results.Policy
	pol.Window, _ = fl.GetInt("window")
	pol.Floor, _ = fl.GetFloat64("floor")
	pol.K, _ = fl.GetFloat64("k")

	if suite == "" {
		return fmt.Errorf("--suite NAME is required (one of %s), or run a subcommand such as llmir bench linear", strings.Join(bench.SuiteNames(), ", "))
	}
	if _, ok := bench.Suites()[suite]; !ok {
		return fmt.Errorf("--suite %q: %w (known: %s)", suite, bench.ErrUnknownSuite, strings.Join(bench.SuiteNames(), ", "))
	}
	if tgName != "cpu" {
		return fmt.Errorf("--target %q: the suites measure on the cpu target only (CUDA kernels are benchmarked by the GPU machine's script)", tgName)
	}
	o := bench.SuiteOptions{Seed: seed, TunePreset: tunePreset, TuneTrials: tuneTrials, SearchSeeds: searchSeeds, Policy: pol,
		Run:     target.RunOptions{Budget: minTime, Warmup: warmup},
		Command: "llmir " + strings.Join(os.Args[1:], " "), Version: buildinfo.Version()}
	for _, t := range threads {
		if t < 1 || t > 1024 {
			return fmt.Errorf("--threads %d: want 1..1024", t)
		}
	}
	o.Threads = threads
	if closingRuns < 1 || closingRuns > 100 {
		return fmt.Errorf("--closing-runs %d: want 1..100", closingRuns)
	}
	o.Trials, o.BlockSizes, o.Contexts, o.PrefillSeqs = trials, blockSizes, contexts, prefillSeqs
	o.ClosingRuns = closingRuns
	o.LayerPreset, o.LayerBatch, o.LayerContext = layerPreset, layerBatch, layerContext
	var err error
	if o.QuantShapes, err = bench.ParseQuantShapes(quantShapes); err != nil {
		return fmt.Errorf("--quant-shapes: %w", err)
	}
	for _, c := range []struct {
		flag string
		vs   []int64
	}{{"--block-sizes", blockSizes}, {"--contexts", contexts}, {"--prefill-seqs", prefillSeqs}} {
		if len(c.vs) == 0 {
			return fmt.Errorf("%s: no values given", c.flag)
		}
		for _, v := range c.vs {
			if v < 1 || v > bench.MaxExtent {
				return fmt.Errorf("%s %d: want 1..%d", c.flag, v, bench.MaxExtent)
			}
		}
	}
	if _, err := bench.ParseModels([]string{layerPreset}); err != nil || strings.Contains(layerPreset, ":") {
		return fmt.Errorf("--layer-preset %q: want a preset name (%s)", layerPreset, strings.Join(hf.Presets(), ", "))
	}
	if o.Models, err = bench.ParseModels(models); err != nil {
		return fmt.Errorf("--models: %w", err)
	}
	if _, err := bench.ParseModels([]string{tunePreset}); err != nil || strings.Contains(tunePreset, ":") {
		return fmt.Errorf("--tune-preset %q: want a preset name (%s)", tunePreset, strings.Join(hf.Presets(), ", "))
	}
	if match != "" {
		if o.Match, err = regexp.Compile(match); err != nil {
			return fmt.Errorf("--match %q: %w", match, err)
		}
	}
	if slow != "" {
		if o.Slow, err = regexp.Compile(slow); err != nil {
			return fmt.Errorf("--slow %q: %w", slow, err)
		}
	}
	switch {
	case minTime < 0:
		return fmt.Errorf("--min-time %v: want ≥ 0", minTime)
	case warmup < 0:
		return fmt.Errorf("--warmup %v: want ≥ 0", warmup)
	}
	for _, c := range []struct {
		flag   string
		v, min int64
	}{
		{"--max-buffer-mib", maxMiB, 1}, {"--trials", int64(trials), 1}, {"--kv-mib", kvMiB, 0},
		{"--layer-batch", layerBatch, 1}, {"--layer-context", layerContext, 1},
		{"--tune-trials", int64(tuneTrials), 1}, {"--search-seeds", int64(searchSeeds), 1},
	} {
		if c.v < c.min {
			return fmt.Errorf("%s %d: want ≥ %d", c.flag, c.v, c.min)
		}
	}
	if o.MaxBufferBytes, err = mibBytes("--max-buffer-mib", maxMiB); err != nil {
		return err
	}
	if o.KVBytes, err = mibBytes("--kv-mib", kvMiB); err != nil {
		return err
	}
	if err := pol.Check(); err != nil {
		return fmt.Errorf("--window/--floor/--k: %w", err)
	}
	if suite == bench.SuiteTuning || suite == bench.SuiteNightly {
		for _, g := range cmData {
			files, err := filepath.Glob(g)
			if err != nil {
				return fmt.Errorf("--costmodel-data %q: %w", g, err)
			}
			if len(files) == 0 {
				return fmt.Errorf("--costmodel-data %q: no such dataset (run from the repository root, or point it at costmodel/testdata/*.jsonl)", g)
			}
			o.CostModelData = append(o.CostModelData, files...)
		}
	}
	if !asJSON {
		o.Log = cmd.ErrOrStderr()
	}

	ctx := cmd.Context()
	tg, err := cpu.New(ctx, cpu.Options{})
	if err != nil {
		return err
	}
	resPath, _ := fl.GetString("results")
	dbPath, _ := fl.GetString("db")
	if resPath == "" {
		resPath = dbPath
	}
	if resPath == "" {
		return errors.New("--results: empty database path")
	}
	rdb, err := createDB(ctx, "--results", resPath)
	if err != nil {
		return err
	}
	defer rdb.Close()
	// Best-known schedules: the user's tuning database (if it exists)
	// above the precompiled one, as compiles look them up.
	stack, err := tuningdb.OpenStack(ctx, dbPath, true)
	if err != nil {
		return fmt.Errorf("--db %s: %w", dbPath, err)
	}
	defer stack.Close()
	env, err := bench.NewEnv(ctx, tg, rdb, &stack.Layered, o)
	if err != nil {
		return err
	}
	run, err := bench.RunSuite(ctx, suite, env)
	if run != nil {
		var perr error
		if asJSON {
			perr = printJSON(cmd.OutOrStdout(), run)
		} else {
			perr = run.WriteText(cmd.OutOrStdout(), all)
		}
		if err == nil {
			err = perr
		}
	}
	if err != nil {
		return err
	}
	if failOn && run.Report.HasRegression() {
		return &exitError{code: ExitRegression, err: fmt.Errorf("%d of %d benchmarks regressed", run.Report.Regressed, len(run.Report.Findings))}
	}
	return nil
}

func newBenchLinearCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "linear",
		Short: "Tune and benchmark the linear layer against OpenBLAS",
		Long: `For each shape M×N×K of out[M,N] = a[M,K]·w[N,K]ᵀ (f32): tune the linear kernel
within the budget (random search; every measurement goes to the tuning database
--db, and a repeated run resumes instead of re-measuring), then measure the
rule-based default schedule, the tuned schedule and OpenBLAS (cblas_sgemm, or
cblas_sgemv at M=1, with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for it
only) in one harness run, at the same thread count.

Columns: median times; tuned×openblas = OpenBLAS time / tuned time; GFLOP/s
and GB/s of the tuned kernel; % roofline = roofline bound / tuned time at this
thread count (probes cached per device, measured on first use); trials =
found in the database + measured now; the issue's goal for the shape's class
(prefill ≥1.0× sgemm; M=1 ≥1.0× sgemv and ≥85% of read bandwidth; M=2..16
≥2× sgemm and ≥80% of roofline) and whether it is met.

Default shapes: 1024x1024x1024; Llama-3-8B prefill M=512 and decode M=1,4,16
with N×K = 4096×4096, 14336×4096, 4096×14336, 6144×4096. Results also go to
the database's bench_results table (suite "linear").`,
		Example: `  llmir bench linear --threads 1
  llmir bench linear --threads 2 --trials 24
  llmir bench linear --shapes 512x4096x4096,1x4096x4096 --budget 2m --json > linear.json`,
		Args: cobra.NoArgs,
		RunE: runBenchLinear,
	}
	f := cmd.Flags()
	f.String("shapes", "", "comma-separated MxNxK shapes (default: the issue's 17 shapes; an empty list or item is an error)")
	f.Int("threads", 1, "threads for llmir and OpenBLAS alike")
	f.Int("trials", 24, "trial budget per shape (0: bounded by --budget only)")
	f.Duration("budget", 0, "wall-time budget per shape for tuning, e.g. 2m (0: bounded by --trials only)")
	f.Int("batch", 8, "candidates built in parallel and then measured per round")
	f.Uint64("seed", 1, "seed of the inputs and of the random search")
	f.Duration("min-time", 0, "timed budget per candidate (0: the protocol's 100ms)")
	f.Int("closing-runs", 1, "repeat each shape's closing batch (decode shapes: with its read baseline) in this many fresh harness runs, samples pooled")
	f.Int64("max-buffer-mib", 4096, "refuse shapes whose f32 buffers a, w and out together exceed this many MiB")
	f.Bool("json", false, "print every result as JSON (all samples included)")
	return cmd
}

func runBenchLinear(cmd *cobra.Command, args []string) error {
	fl := cmd.Flags()
	shapesArg, _ := fl.GetString("shapes")
	threads, _ := fl.GetInt("threads")
	trials, _ := fl.GetInt("trials")
	budget, _ := fl.GetDuration("budget")
	batch, _ := fl.GetInt("batch")
	seed, _ := fl.GetUint64("seed")
	minTime, _ := fl.GetDuration("min-time")
	asJSON, _ := fl.GetBool("json")
	closingRuns, _ := fl.GetInt("closing-runs")
	maxMiB, _ := fl.GetInt64("max-buffer-mib")

	shapes := bench.DefaultLinearShapes()
	// Only an absent --shapes means the defaults: --shapes "" (an empty
	// variable in a script, say) used to start the 17 full-size shapes,
	// hours of work, instead of saying the list was empty.
	if fl.Changed("shapes") {
		var err error
		if shapes, err = bench.ParseShapes(shapesArg); err != nil {
			return fmt.Errorf("--shapes: %w", err)
		}
	}
	if maxMiB < 1 {
		return fmt.Errorf("--max-buffer-mib %d: want ≥ 1", maxMiB)
	}
	maxBytes, err := mibBytes("--max-buffer-mib", maxMiB)
	if err != nil {
		return err
	}
	// Checked before anything runs: ParseShapes allows each dim up to 2^20,
	// and a shape such as 1x1048576x1048576 (4 TiB of w) otherwise reached
	// the Go reference's allocation and died with a fatal out-of-memory
	// error instead of an error naming the shape. The tuner also keeps
	// float64 copies of the inputs and the reference (twice these bytes)
	// beside the harness's f32 ones, hence a cap well below the memory.
	for i, sh := range shapes {
		if n := 4 * (sh.M*sh.K + sh.N*sh.K + sh.M*sh.N); n > maxBytes {
			return fmt.Errorf("--shapes: shape %d %q: buffers a, w and out hold %d MiB, over the %d MiB cap (--max-buffer-mib)", i+1, sh, (n+1<<20-1)>>20, maxMiB)
		}
	}
	switch {
	case threads < 1 || threads > 1024:
		return fmt.Errorf("--threads %d: want 1..1024", threads)
	case trials < 0:
		return fmt.Errorf("--trials %d: want ≥ 0", trials)
	case budget < 0:
		return fmt.Errorf("--budget %v: want ≥ 0", budget)
	case trials == 0 && budget == 0:
		return errors.New("--trials 0 needs a --budget")
	case batch < 1:
		return fmt.Errorf("--batch %d: want ≥ 1", batch)
	case minTime < 0:
		return fmt.Errorf("--min-time %v: want ≥ 0", minTime)
	case closingRuns < 1 || closingRuns > 100:
		return fmt.Errorf("--closing-runs %d: want 1..100", closingRuns)
	}

	ctx := cmd.Context()
	tg, roof, db, err := openCPUTuning(cmd)
	if err != nil {
		return err
	}
	defer db.Close()
	if threads > tg.CPU().Cores {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: --threads %d exceeds the %d cores; no roofline at that count\n", threads, tg.CPU().Cores)
	}

	run := target.RunOptions{Budget: minTime}
	opts := bench.LinearOptions{
		Threads:     threads,
		Final:       run,
		ClosingRuns: closingRuns,
		Tune: search.Options{
			Budget:    search.Budget{Trials: trials, Time: budget},
			BatchSize: batch, Run: run, Seed: seed,
			Command:      "llmir " + strings.Join(os.Args[1:], " "),
			LLMIRVersion: buildinfo.Version(),
		},
	}
	if !asJSON {
		opts.Log = cmd.ErrOrStderr()
	}
	if isTerminal(os.Stderr) {
		opts.Tune.Progress = os.Stderr
	}
	start := time.Now()
	rs, err := bench.Linear(ctx, tg, roof, db, shapes, opts)
	if asJSON {
		if jerr := printJSON(cmd.OutOrStdout(), map[string]any{
			"suite": bench.Suite, "device": tg.CPU().Device(), "threads": threads, "roofline": roof,
			"trials": trials, "budget_s": budget.Seconds(), "elapsed_s": time.Since(start).Seconds(), "results": rs,
		}); jerr != nil && err == nil {
			err = jerr
		}
	} else if len(rs) > 0 {
		if terr := bench.WriteLinearTable(cmd.OutOrStdout(), rs); terr != nil && err == nil {
			err = terr
		}
	}
	return err
}

// mibBytes converts the value of a MiB flag to bytes. Past 2^43-1 MiB the
// bytes do not fit an int64: the shift wrapped to a negative count, which
// the suites took as "unset" and replaced by their default.
func mibBytes(flag string, mib int64) (int64, error) {
	if mib > math.MaxInt64>>20 {
		return 0, fmt.Errorf("%s %d: too large, at most %d MiB (the bytes must fit an int64)", flag, mib, int64(math.MaxInt64>>20))
	}
	return mib << 20, nil
}

// createDB opens the database at path, creating it and its folder when
// missing; errors name the flag that gave the path.
func createDB(ctx context.Context, flag, path string) (*tuningdb.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	db, err := tuningdb.Open(ctx, path, tuningdb.Options{LLMIRVersion: buildinfo.Version()})
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return db, nil
}

// isTerminal reports whether f is a terminal (the progress bar is drawn
// only then).
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
