package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"llmir/bench/dashboard"
	"llmir/bench/results"
	"llmir/internal/buildinfo"
	"llmir/tuningdb"
)

// ExitRegression is the exit status of `llmir dashboard report
// --fail-on-regression` when a benchmark regressed.
const ExitRegression = 3

// exitError carries a process exit status other than 1 to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

// newDashboardCmd builds `llmir dashboard`: benchmark results over time as
// a static web site, served or written to a folder, and the regression
// report for CI.
func newDashboardCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Render benchmark results over time as a static web site",
		Long: `Reads the benchmark results (and recent tuning runs) from a results database
— the tuning database by default (--db), or --results PATH — and writes a static
site to -o DIR: an overview table (latest value, change vs the previous result and
vs the reference, ratio vs the baseline such as OpenBLAS, % of roofline,
regression flag), a trend chart per benchmark and device, filters by suite,
device and metric, and the tuning-progress curves of recent tune runs. The site
needs no network: charts are SVG drawn by llmir, styles and script are local.

Regression rule: each benchmark's latest result against the median of its last
--window results on the same device; it counts when the change exceeds
max(--floor, --k × IQR/median), the noise seen inside runs and between them.`,
		Example: `  llmir dashboard -o site/
  llmir dashboard --results nightly.db -o site/ --suite kernels
  llmir dashboard serve --results nightly.db --addr 127.0.0.1:8080
  llmir dashboard report --results nightly.db --fail-on-regression`,
		Args: cobra.NoArgs,
		RunE: runDashboard,
	}
	f := cmd.Flags()
	f.StringP("out", "o", "", "folder to write the site into (created if missing)")
	f.Int("runs", 6, "recent tuning runs to draw progress curves for (0: none)")
	f.String("title", "llmir benchmarks", "page title")
	addResultsFlags(f)
	cmd.AddCommand(newDashboardServeCmd(), newDashboardReportCmd())
	return cmd
}

// addResultsFlags adds the flags that select results and set the rule.
func addResultsFlags(f *pflag.FlagSet) {
	def := results.DefaultPolicy()
	f.String("results", "", "results database (default: the tuning database, --db)")
	f.String("suite", "", "only this suite")
	f.String("device", "", "only this device (fingerprint hash)")
	f.Duration("since", 0, "only results of the last DURATION, e.g. 720h (0: all)")
	f.Int("window", def.Window, "regression reference: median of the last N results")
	f.Float64("floor", def.Floor, "smallest relative change that counts (0.03 = 3%)")
	f.Float64("k", def.K, "noise factor: changes within k × IQR/median are noise")
}

type resultsFlags struct {
	filter tuningdb.BenchFilter
	policy results.Policy
}

func readResultsFlags(cmd *cobra.Command) (resultsFlags, error) {
	fl := cmd.Flags()
	var r resultsFlags
	r.filter.Suite, _ = fl.GetString("suite")
	r.filter.DeviceHash, _ = fl.GetString("device")
	since, _ := fl.GetDuration("since")
	r.policy.Window, _ = fl.GetInt("window")
	r.policy.Floor, _ = fl.GetFloat64("floor")
	r.policy.K, _ = fl.GetFloat64("k")
	switch {
	case since < 0:
		return r, fmt.Errorf("--since %v: want ≥ 0", since)
	case r.filter.DeviceHash != "" && !tuningdb.IsHash(r.filter.DeviceHash):
		return r, fmt.Errorf("--device %q: want a device fingerprint hash (64 hex digits; see llmir db stats)", r.filter.DeviceHash)
	}
	if since > 0 {
		r.filter.Since = time.Now().Add(-since)
	}
	if err := r.policy.Check(); err != nil {
		return r, fmt.Errorf("--window/--floor/--k: %w", err)
	}
	return r, nil
}

// openResults opens --results, else --db. A missing file is an error, not
// a new empty database: a dashboard of nothing hides a wrong path.
func openResults(cmd *cobra.Command) (*tuningdb.DB, error) {
	path, _ := cmd.Flags().GetString("results")
	flag := "--results"
	if path == "" {
		path, _ = cmd.Flags().GetString("db")
		flag = "--db"
	}
	if path == "" {
		return nil, fmt.Errorf("%s: empty database path", flag)
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s %s: no such results database (run a benchmark suite first, or point --results at one)", flag, path)
	}
	// Not read-only: an older schema is migrated on open (additive).
	return tuningdb.Open(cmd.Context(), path, tuningdb.Options{LLMIRVersion: buildinfo.Version()})
}

func dashboardOptions(cmd *cobra.Command, db *tuningdb.DB) (dashboard.Options, error) {
	rf, err := readResultsFlags(cmd)
	if err != nil {
		return dashboard.Options{}, err
	}
	o := dashboard.Options{Filter: rf.filter, Policy: rf.policy, Source: db.Path()}
	if cmd.Flags().Lookup("runs") != nil {
		runs, _ := cmd.Flags().GetInt("runs")
		if runs < 0 {
			return o, fmt.Errorf("--runs %d: want ≥ 0", runs)
		}
		o.Runs = runs
		if runs == 0 {
			o.Runs = -1
		}
	}
	if cmd.Flags().Lookup("title") != nil {
		o.Title, _ = cmd.Flags().GetString("title")
	}
	return o, nil
}

func runDashboard(cmd *cobra.Command, args []string) error {
	out, _ := cmd.Flags().GetString("out")
	if out == "" {
		return errors.New("-o/--out DIR is required: the folder to write the site into")
	}
	db, err := openResults(cmd)
	if err != nil {
		return err
	}
	defer db.Close()
	o, err := dashboardOptions(cmd, db)
	if err != nil {
		return err
	}
	site, err := dashboard.Generate(cmd.Context(), db, o)
	if err != nil {
		return err
	}
	if err := site.WriteDir(out); err != nil {
		return err
	}
	abs, _ := filepath.Abs(filepath.Join(out, "index.html"))
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d benchmarks (%d results), %d tuning curves; %s\n",
		abs, site.Series, site.Points, site.Runs, site.Report.Summary())
	return nil
}

func newDashboardServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the dashboard over HTTP, regenerated from the database on every load",
		Long: `Serves the dashboard at --addr. Every page load renders it afresh from the
results database, so results that suites write while it runs appear on reload.
With --dir it serves an already generated site folder instead.`,
		Example: `  llmir dashboard serve --addr 127.0.0.1:8080
  llmir dashboard serve --results nightly.db --addr 127.0.0.1:8080 --suite kernels
  llmir dashboard serve --dir site/ --addr 127.0.0.1:8080`,
		Args: cobra.NoArgs,
		RunE: runDashboardServe,
	}
	f := cmd.Flags()
	f.String("addr", "127.0.0.1:8080", "address to listen on (host:port; port 0 picks a free one)")
	f.String("dir", "", "serve this generated site folder instead of the database")
	f.Int("runs", 6, "recent tuning runs to draw progress curves for (0: none)")
	f.String("title", "llmir benchmarks", "page title")
	addResultsFlags(f)
	return cmd
}

func runDashboardServe(cmd *cobra.Command, args []string) error {
	addr, _ := cmd.Flags().GetString("addr")
	dir, _ := cmd.Flags().GetString("dir")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("--addr %q: %w (want host:port, e.g. 127.0.0.1:8080)", addr, err)
	}
	var h http.Handler
	what := ""
	if dir != "" {
		st, err := os.Stat(filepath.Join(dir, "index.html"))
		if err != nil || st.IsDir() {
			return fmt.Errorf("--dir %s: no index.html there (generate one with llmir dashboard -o %s)", dir, dir)
		}
		h, what = http.FileServer(http.Dir(dir)), dir
	} else {
		db, err := openResults(cmd)
		if err != nil {
			return err
		}
		defer db.Close()
		o, err := dashboardOptions(cmd, db)
		if err != nil {
			return err
		}
		h, what = dashboard.LiveHandler(db, o), db.Path()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(cmd.OutOrStdout(), "serving the dashboard of %s at http://%s/ (Ctrl-C stops)\n", what, ln.Addr())
	ctx := cmd.Context()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("stop serving: %w", err)
	}
	return nil
}

func newDashboardReportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Print which benchmarks improved, regressed or stayed unchanged",
		Long: `Compares each benchmark's latest result with the median of its last --window
results on the same device and prints the improved / regressed / unchanged
report. With --fail-on-regression the command exits with status 3 when any
benchmark regressed (for CI).`,
		Example: `  llmir dashboard report
  llmir dashboard report --results nightly.db --suite kernels --fail-on-regression
  llmir dashboard report --json --window 7 --floor 0.05`,
		Args: cobra.NoArgs,
		RunE: runDashboardReport,
	}
	f := cmd.Flags()
	f.Bool("fail-on-regression", false, "exit with status 3 when a benchmark regressed")
	f.Bool("json", false, "print the report as JSON")
	f.Bool("all", false, "list unchanged benchmarks too")
	addResultsFlags(f)
	return cmd
}

func runDashboardReport(cmd *cobra.Command, args []string) error {
	fail, _ := cmd.Flags().GetBool("fail-on-regression")
	asJSON, _ := cmd.Flags().GetBool("json")
	all, _ := cmd.Flags().GetBool("all")
	rf, err := readResultsFlags(cmd)
	if err != nil {
		return err
	}
	db, err := openResults(cmd)
	if err != nil {
		return err
	}
	defer db.Close()
	series, err := results.Load(cmd.Context(), db, rf.filter)
	if err != nil {
		return err
	}
	rep, err := results.Detect(series, rf.policy)
	if err != nil {
		return err
	}
	if asJSON {
		err = printJSON(cmd.OutOrStdout(), rep)
	} else {
		err = rep.WriteText(cmd.OutOrStdout(), all)
	}
	if err != nil {
		return err
	}
	if fail && rep.HasRegression() {
		return &exitError{code: ExitRegression, err: fmt.Errorf("%d of %d benchmarks regressed", rep.Regressed, len(rep.Findings))}
	}
	return nil
}
