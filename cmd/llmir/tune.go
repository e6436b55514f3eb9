package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"llmir/internal/buildinfo"
	"llmir/ir"
	"llmir/ir/hf"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cuda"
	"llmir/target/cuda/cudabench"
	"llmir/tuningdb"
)

// newTuneCmd builds `llmir tune`: tune every kernel workload of a model.
func newTuneCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tune (MODEL.mlir | --preset NAME)",
		Short: "Tune every kernel workload of a model and record the measurements",
		Long: `tune partitions the model into kernel groups (fused and unfused alternatives),
makes a kernel for every distinct workload (those the library has no kernel for
are listed, not tuned), and spends the trial budget where it pays most: one
round-robin pass measures each workload's rule-based default and a first batch,
then a gradient-based task scheduler gives each next batch to the workload with
the largest expected gain (runs per token × recent improvement per trial, see
search.Scheduler). Candidates come from model-guided evolutionary search: the
cost model (gradient-boosted trees, trained online and saved per device in the
database; the roofline before enough data) ranks many mutated and crossed
traces and only the most promising batch is measured.

Every measurement is recorded in --db as it is made: Ctrl-C keeps everything,
and running the same command again resumes (nothing is measured twice). The
budget counts the database's records of the model's workloads on this device,
so a rerun with the same --trials measures nothing new.

At the end: a table per workload (occurrences, default and best time, speedup,
trials) and the model's estimated kernel time per decode and per prefill token
(sum over groups of the fastest alternative), default vs tuned.

--target cuda tunes the CUDA template kernels of a bf16 model (decode
GEMV/skinny GEMM for M <= 16 rows, tensor-core GEMM above, paged attention,
rms_norm, silu, mul, add; fused groups through their unfused alternatives) on
GPU 0, built with nvcc and recorded under the GPU's fingerprint. It needs
nvidia-smi, nvcc and an NVIDIA GPU on this machine; 'llmir compile --target
cuda' then works anywhere.`,
		Example: `  llmir tune --preset llama-tiny --trials 200
  llmir tune model.mlir --time 30m --threads 2
  llmir tune model.mlir --trials 500 --per-task 64 --db tuning.db --json > tune.json
  llmir tune --target cuda --preset llama-3-8b --function decode --trials 96`,
		Args: func(cmd *cobra.Command, args []string) error {
			preset, _ := cmd.Flags().GetString("preset")
			switch {
			case len(args) > 1:
				return fmt.Errorf("tune takes one MODEL.mlir, got %d arguments", len(args))
			case len(args) == 1 && preset != "":
				return errors.New("give MODEL.mlir or --preset, not both")
			case len(args) == 0 && preset == "":
				return errors.New("give MODEL.mlir or --preset NAME (presets: " + strings.Join(hf.Presets(), ", ") + ")")
			}
			return nil
		},
		RunE: runTune,
	}
	f := cmd.Flags()
	f.String("preset", "", "built-in model: "+strings.Join(hf.Presets(), ", "))
	f.String("dtype", "", "with --preset: tensor dtype f32, bf16 or f16 (default: the preset's; the CPU linear kernels are f32)")
	f.String("target", "cpu", "target to tune for: cpu, or cuda (needs nvcc and an NVIDIA GPU)")
	cudaTargetFlags(cmd)
	f.Int("trials", 0, "total trial budget over all workloads, database records included (default: 32 per workload when --time is not set)")
	f.Duration("time", 0, "wall-clock budget of the whole run, confirmation included, e.g. 10m (checked between batches)")
	f.Int("per-task", 0, "cap on one workload's trials (0: none)")
	f.Int("threads", 1, "threads every kernel runs with")
	f.Int("batch", 8, "candidates built in parallel and then measured per step")
	f.String("strategy", "evolutionary", "search strategy: evolutionary or random")
	f.StringSlice("dims", nil, "symbolic dims, NAME=N (default: each function's llmir.dims)")
	f.StringSlice("only", nil, "tune only workloads of these op groups, e.g. linear,rms_norm+linear")
	f.StringSlice("function", nil, "tune only workloads of these functions, e.g. decode (default: all)")
	f.Uint64("seed", 1, "seed of the search and of the inputs")
	f.Duration("min-time", 0, "timed budget per candidate (0: the protocol's 100ms)")
	f.Int("confirm", 3, "re-measure each workload's N fastest trials next to its default at the end (0: off)")
	f.Int("replay", search.DefaultReplay, "measure first, per workload, up to N of the best schedules recorded on other machines of this class (user database, then the precompiled one; 0: off)")
	f.Bool("json", false, "print the result as JSON")
	return cmd
}

// parseDims reads NAME=N flags.
func parseDims(flag string, vals []string) (map[string]int64, error) {
	env := map[string]int64{}
	for _, d := range vals {
		k, v, ok := strings.Cut(d, "=")
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if !ok || err != nil || n < 1 || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("--%s: %q is not NAME=N with N ≥ 1", flag, d)
		}
		env[strings.TrimSpace(k)] = n
	}
	return env, nil
}

// loadModel reads MODEL.mlir or imports --preset, with shapes inferred.
func loadModel(cmd *cobra.Command, args []string) (*ir.Module, string, error) {
	preset, _ := cmd.Flags().GetString("preset")
	var m *ir.Module
	var err error
	name := preset
	if preset != "" {
		dt, _ := cmd.Flags().GetString("dtype")
		if m, err = hf.ImportPreset(preset, hf.Options{DType: dt}); err != nil {
			return nil, "", fmt.Errorf("--preset: %w", err)
		}
	} else {
		name = args[0]
		if m, err = readModule(cmd, args[0]); err != nil {
			return nil, "", err
		}
	}
	if err := ir.InferShapes(m); err != nil {
		return nil, "", fmt.Errorf("%s: %w", name, err)
	}
	return m, name, nil
}

func runTune(cmd *cobra.Command, args []string) error {
	fl := cmd.Flags()
	tgName, _ := fl.GetString("target")
	trials, _ := fl.GetInt("trials")
	budget, _ := fl.GetDuration("time")
	perTask, _ := fl.GetInt("per-task")
	threads, _ := fl.GetInt("threads")
	batch, _ := fl.GetInt("batch")
	strategy, _ := fl.GetString("strategy")
	dimsArg, _ := fl.GetStringSlice("dims")
	only, _ := fl.GetStringSlice("only")
	funcs, _ := fl.GetStringSlice("function")
	seed, _ := fl.GetUint64("seed")
	minTime, _ := fl.GetDuration("min-time")
	confirm, _ := fl.GetInt("confirm")
	replay, _ := fl.GetInt("replay")
	asJSON, _ := fl.GetBool("json")
	switch {
	case tgName != "cpu" && tgName != "cuda":
		return fmt.Errorf("--target %q: want cpu or cuda", tgName)
	case tgName == "cuda" && threads != 1:
		return fmt.Errorf("--threads %d: CUDA kernels are tuned at threads 1 (their launch picks the GPU threads)", threads)
	case trials < 0:
		return fmt.Errorf("--trials %d: want ≥ 0", trials)
	case budget < 0:
		return fmt.Errorf("--time %v: want ≥ 0", budget)
	case perTask < 0:
		return fmt.Errorf("--per-task %d: want ≥ 0", perTask)
	case threads < 1 || threads > 1024:
		return fmt.Errorf("--threads %d: want 1..1024", threads)
	case batch < 1:
		return fmt.Errorf("--batch %d: want ≥ 1", batch)
	case strategy != "evolutionary" && strategy != "random":
		return fmt.Errorf("--strategy %q: want evolutionary or random", strategy)
	case minTime < 0:
		return fmt.Errorf("--min-time %v: want ≥ 0", minTime)
	case confirm < 0:
		return fmt.Errorf("--confirm %d: want ≥ 0", confirm)
	case replay < 0:
		return fmt.Errorf("--replay %d: want ≥ 0", replay)
	}
	dims, err := parseDims("dims", dimsArg)
	if err != nil {
		return err
	}
	m, name, err := loadModel(cmd, args)
	if err != nil {
		return err
	}
	if err := ir.CheckDims(m, dims); err != nil {
		return fmt.Errorf("--dims: %s: %w", name, err)
	}
	ctx := cmd.Context()
	var (
		tg      *cpu.Target
		roof    *cpu.Roofline
		db      *tuningdb.DB
		backend search.Backend
	)
	if tgName == "cuda" {
		ctg, err := openCudaTarget(cmd)
		if errors.Is(err, cuda.ErrNoCUDA) {
			return fmt.Errorf("--target cuda: %w (tune needs nvidia-smi, nvcc and an NVIDIA GPU here; 'llmir compile --target cuda' does not)", err)
		}
		if err != nil {
			return fmt.Errorf("--target cuda: %w", err)
		}
		if db, err = openUserDB(cmd, false); err != nil {
			return err
		}
		backend = cudabench.NewBackend(ctg, cuda.Bandwidth{})
	} else if tg, roof, db, err = openCPUTuning(cmd); err != nil {
		return err
	}
	defer db.Close()
	if confirm == 0 {
		confirm = -1
	}
	if replay == 0 {
		replay = -1
	}
	o := search.ModelOptions{
		Target: tg, Roofline: roof, Backend: backend, DB: db, Threads: threads,
		Budget: search.ModelBudget{Trials: trials, Time: budget, PerTask: perTask},
		Dims:   dims, Only: only, Funcs: funcs, Strategy: strategy, Step: batch, Seed: seed, Confirm: confirm, Replay: replay,
		Run:          target.RunOptions{Budget: minTime},
		Command:      "llmir " + strings.Join(os.Args[1:], " "),
		LLMIRVersion: buildinfo.Version(),
	}
	if isTerminal(os.Stderr) && !asJSON {
		o.Progress = os.Stderr
	} else if !asJSON {
		o.Log = cmd.ErrOrStderr()
	}
	res, err := search.TuneModel(ctx, m, o)
	if tgName == "cuda" && errors.Is(err, search.ErrNoTasks) {
		err = fmt.Errorf("%w (the CUDA kernels are bf16: import with --dtype bf16)", err)
	}
	if res == nil {
		return err
	}
	if err != nil && !errors.Is(err, search.ErrNoTasks) {
		// Interrupted or failed part-way: what was measured is recorded;
		// print it, then report the error. The error is returned, not
		// printed here: main prints it, and an interrupted tune showed
		// it twice.
		err = fmt.Errorf("tune stopped: %w (measurements so far are in %s; rerun to resume)", err, db.Path())
	}
	if asJSON {
		if perr := printJSON(cmd.OutOrStdout(), struct {
			Model string `json:"model"`
			*search.ModelResult
		}{name, res}); perr != nil {
			return perr
		}
		return err
	}
	printTune(cmd.OutOrStdout(), name, res)
	return err
}

// openCPUTuning opens what tuning and benchmarking on the CPU need: the
// target, its roofline (probed on first use per device, then cached) and
// the tuning database of --db, which the caller closes. The database is
// opened first: a damaged or foreign --db file is reported at once, not
// after the first run's roofline probe.
func openCPUTuning(cmd *cobra.Command) (*cpu.Target, *cpu.Roofline, *tuningdb.DB, error) {
	db, err := openUserDB(cmd, false)
	if err != nil {
		return nil, nil, nil, err
	}
	tg, err := cpu.New(cmd.Context(), cpu.Options{})
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	roof, err := tg.Roofline(cmd.Context())
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	return tg, roof, db, nil
}

// printTune prints the per-task table and the model's estimates.
func printTune(w io.Writer, name string, res *search.ModelResult) {
	unreached := 0
	for _, t := range res.Tasks {
		if t.Trials == 0 {
			unreached++
		}
	}
	fmt.Fprintf(w, "model %s: %d of %d workloads tuned (%s search, %d threads), %d trials (%d measured now), cost model trained on %d, %s\n\n",
		name, len(res.Tasks)-unreached, len(res.Tasks), res.Strategy, res.Threads, res.Trials, res.Measured, res.ModelTrained, res.Elapsed.Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tocc\tdefault\tbest\tspeedup\ttrials\tstopped\t")
	for _, t := range res.Tasks {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%s\t\n", t.Name, t.Occurrences, fmtTime(t.Default), fmtTime(t.Best), fmtSpeedup(t.Speedup), t.Trials, t.Stopped)
	}
	tw.Flush()
	if unreached > 0 {
		fmt.Fprintf(w, "\n%d workloads not reached within the budget (no trials; left out of the estimates unless another alternative of their group was measured): a larger --time or --trials reaches them, and rerunning resumes\n", unreached)
	}
	if len(res.NoKernel) > 0 {
		fmt.Fprintf(w, "\nno kernel (not tuned, left out of the estimates):\n")
		for _, n := range res.NoKernel {
			fmt.Fprintf(w, "  %s ×%d\n", n.Name, n.Occurrences)
		}
	}
	if len(res.Skipped) > 0 {
		fmt.Fprintf(w, "\n%d workloads not selected by --only or --function (left out of the estimates)\n", len(res.Skipped))
	}
	if len(res.TooLarge) > 0 {
		fmt.Fprintf(w, "\ntoo large for this machine (not tuned, left out of the estimates):\n")
		for _, n := range res.TooLarge {
			fmt.Fprintf(w, "  %s ×%d: %s\n", n.Name, n.Occurrences, n.Reason)
		}
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "estimate\ttokens/call\tgroups covered\tdefault/token\ttuned/token\tspeedup\t")
	for _, f := range res.Funcs {
		fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%s\t%s\t%s\t\n", f.Func, f.Tokens, f.Covered, f.Groups,
			fmtTime(f.PerToken.Default), fmtTime(f.PerToken.Tuned), fmtSpeedup(f.PerToken.Speedup))
	}
	tw.Flush()
}

// fmtTime is fmtSeconds with a dash for "not measured" (NaN).
func fmtTime(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "—"
	}
	return fmtSeconds(x)
}

func fmtSpeedup(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) || x <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", x)
}
