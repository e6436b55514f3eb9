package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"llmir/bench"
	"llmir/internal/buildinfo"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
)

// newBenchCmd builds `llmir bench`: benchmark suites that tune, measure
// next to the baselines, and store their results.
func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run benchmark suites (tune, measure against baselines, record)",
		Example: `  llmir bench linear --threads 1
  llmir bench linear --shapes 512x4096x4096,1x4096x4096 --threads 2 --trials 24 --json`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newBenchLinearCmd())
	return cmd
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
	f.String("shapes", "", "comma-separated MxNxK shapes (default: the issue's 17 shapes)")
	f.Int("threads", 1, "threads for llmir and OpenBLAS alike")
	f.Int("trials", 24, "trial budget per shape (0: bounded by --budget only)")
	f.Duration("budget", 0, "wall-time budget per shape for tuning, e.g. 2m (0: bounded by --trials only)")
	f.Int("batch", 8, "candidates built in parallel and then measured per round")
	f.Uint64("seed", 1, "seed of the inputs and of the random search")
	f.Duration("min-time", 0, "timed budget per candidate (0: the protocol's 100ms)")
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

	shapes := bench.DefaultLinearShapes()
	if strings.TrimSpace(shapesArg) != "" {
		var err error
		if shapes, err = bench.ParseShapes(shapesArg); err != nil {
			return fmt.Errorf("--shapes: %w", err)
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
	}

	ctx := cmd.Context()
	tg, err := cpu.New(ctx, cpu.Options{})
	if err != nil {
		return err
	}
	if threads > tg.CPU().Cores {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: --threads %d exceeds the %d cores; no roofline at that count\n", threads, tg.CPU().Cores)
	}
	roof, err := tg.Roofline(ctx)
	if err != nil {
		return err
	}
	db, err := openUserDB(cmd, false)
	if err != nil {
		return err
	}
	defer db.Close()

	run := target.RunOptions{Budget: minTime}
	opts := bench.LinearOptions{
		Threads: threads,
		Final:   run,
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

// isTerminal reports whether f is a terminal (the progress bar is drawn
// only then).
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
