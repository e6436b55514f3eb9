package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"llmir/internal/buildinfo"
	"llmir/tuningdb"
)

// newDBCmd builds `llmir db`: inspect, query, move and maintain the tuning
// database (--db) and the precompiled one built into the binary.
func newDBCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "db",
		Short: "Inspect, query, move and maintain the tuning database",
		Long: `The tuning database (--db, default ~/.cache/llmir/tuning.db) holds every
measurement llmir has made. Below it sits the precompiled database built into
this binary; lookups try the user's database first.`,
		Example: `  llmir db stats
  llmir db lookup --workload 3f2a… --device 9c41…
  llmir db export --best 3 -o tuned.jsonl
  llmir db dataset -o costmodel/testdata/mine.jsonl
  llmir --db other.db db import tuned.jsonl`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(
		newDBStatsCmd(),
		newDBLookupCmd(),
		newDBExportCmd(),
		newDBDatasetCmd(),
		newDBImportCmd(),
		newDBMergeCmd(),
		newDBVerifyCmd(),
		newDBPruneCmd(),
	)
	return cmd
}

// openUserDB opens the database named by --db.
func openUserDB(cmd *cobra.Command, readOnly bool) (*tuningdb.DB, error) {
	path, err := cmd.Flags().GetString("db")
	if err != nil {
		return nil, err
	}
	if path == "" {
		return nil, errors.New("--db: empty database path")
	}
	db, err := tuningdb.Open(cmd.Context(), path, tuningdb.Options{ReadOnly: readOnly, LLMIRVersion: buildinfo.Version()})
	if readOnly && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("tuning database %s does not exist (set --db, or run llmir tune first)", path)
	}
	return db, err
}

// openSelected opens the precompiled database with --precompiled, else --db.
func openSelected(cmd *cobra.Command, readOnly bool) (*tuningdb.DB, error) {
	if pre, _ := cmd.Flags().GetBool("precompiled"); pre {
		return tuningdb.OpenPrecompiled(cmd.Context())
	}
	return openUserDB(cmd, readOnly)
}

// readSelected opens the database openSelected picks, read-only, and
// returns what read gets from it and its path ("" for the precompiled
// one); the database is closed before it returns.
func readSelected[T any](cmd *cobra.Command, read func(*tuningdb.DB, context.Context) (T, error)) (T, string, error) {
	db, err := openSelected(cmd, true)
	if err != nil {
		var zero T
		return zero, "", err
	}
	defer db.Close()
	v, err := read(db, cmd.Context())
	return v, db.Path(), err
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newDBStatsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Count what the tuning database holds",
		Example: `  llmir db stats
  llmir db stats --json
  llmir db stats --precompiled   # the database built into this binary`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, _, err := readSelected(cmd, (*tuningdb.DB).Stats)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
				return printJSON(out, st)
			}
			name, size := st.Path, fmt.Sprintf("%d bytes", st.SizeBytes)
			if name == "" {
				name, size = "precompiled (built into llmir)", "in memory"
			}
			tw := tabwriter.NewWriter(out, 0, 4, 1, ' ', 0)
			fmt.Fprintf(tw, "database:\t%s\nschema:\tversion %d\nsize:\t%s\n", name, st.SchemaVersion, size)
			fmt.Fprintf(tw, "devices:\t%d\nworkloads:\t%d\nrecords:\t%d\n", st.Devices, st.Workloads, st.Records)
			for _, s := range tuningdb.Statuses {
				if n := st.ByStatus[s]; n > 0 {
					fmt.Fprintf(tw, "  %s:\t%d\n", s, n)
				}
			}
			var versions []int
			for v := range st.ByCodegen {
				versions = append(versions, v)
			}
			slices.Sort(versions)
			for _, v := range versions {
				fmt.Fprintf(tw, "  codegen v%d:\t%d\n", v, st.ByCodegen[v])
			}
			fmt.Fprintf(tw, "models:\t%d\ntuning runs:\t%d\nbench results:\t%d\n", st.Models, st.TuningRuns, st.BenchResults)
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(st.PerDevice) > 0 {
				tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "\nDEVICE\tKIND\tCOMPAT\tRECORDS\tOK")
				for _, d := range st.PerDevice {
					fmt.Fprintf(tw, "%.16s\t%s\t%s\t%d\t%d\n", d.Hash, d.Kind, d.Compat, d.Records, d.OK)
				}
				return tw.Flush()
			}
			return nil
		},
	}
	cmd.Flags().Bool("json", false, "print JSON")
	cmd.Flags().Bool("precompiled", false, "show the precompiled database built into llmir instead of --db")
	return cmd
}

func newDBLookupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lookup",
		Short: "Find the best recorded schedule of a workload on a device",
		Long: `lookup answers from the user's database, then the precompiled one, falling
back from the exact device to a compatible one (same kind and compat class) and
then to the nearest shape bucket of the workload's family (the smallest bucket
at or above the asked one, else the largest below). It prints which database
and which level answered, and exits non-zero when nothing does.`,
		Example: `  llmir db lookup --workload 3f2a… --device 9c41…
  llmir db lookup --workload 3f2a… --kind cuda --compat sm_90
  llmir db lookup --family 77be… --bucket 512 --device 9c41… --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			f := cmd.Flags()
			var q tuningdb.Query
			q.WorkloadKey, _ = f.GetString("workload")
			q.Family, _ = f.GetString("family")
			q.Bucket, _ = f.GetInt64("bucket")
			q.DeviceHash, _ = f.GetString("device")
			kind, _ := f.GetString("kind")
			q.Kind = tuningdb.Kind(kind)
			q.Compat, _ = f.GetString("compat")
			q.CodegenVersion, _ = f.GetInt("codegen-version")
			if q.WorkloadKey == "" && q.Family == "" {
				return errors.New("lookup: give --workload KEY or --family HASH with --bucket N")
			}
			if q.DeviceHash == "" && (q.Kind == "" || q.Compat == "") {
				return errors.New("lookup: give --device HASH or --kind and --compat")
			}
			if q.Kind != "" && q.Kind != tuningdb.KindCPU && q.Kind != tuningdb.KindCUDA {
				return fmt.Errorf("--kind %q: want cpu or cuda", q.Kind)
			}
			if q.Bucket < 0 {
				return fmt.Errorf("--bucket %d: must not be negative", q.Bucket)
			}
			for _, h := range []struct{ flag, val string }{{"workload", q.WorkloadKey}, {"family", q.Family}, {"device", q.DeviceHash}} {
				if h.val != "" && !tuningdb.IsHash(h.val) {
					return fmt.Errorf("--%s %q: want a SHA-256 hex (64 hex digits)", h.flag, h.val)
				}
			}
			path, _ := f.GetString("db")
			noPre, _ := f.GetBool("no-precompiled")
			stack, err := tuningdb.OpenStack(ctx, path, !noPre)
			if err != nil {
				return err
			}
			defer stack.Close()
			if stack.User == nil {
				if noPre {
					return fmt.Errorf("lookup: tuning database %s does not exist, and --no-precompiled leaves nothing to look in", path)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "note: tuning database %s does not exist; looking in the precompiled database only\n", path)
			}
			if q.CodegenVersion == 0 {
				// Versions are per target: take the newest of the device's kind.
				kind := q.Kind
				for _, layer := range stack.Layers {
					if kind != "" || q.DeviceHash == "" {
						break
					}
					if kind, err = layer.DB.DeviceKind(ctx, q.DeviceHash); err != nil {
						return fmt.Errorf("lookup: %w", err)
					}
				}
				if q.CodegenVersion, err = stack.MaxCodegenVersion(ctx, kind); err != nil {
					return fmt.Errorf("lookup: %w", err)
				}
			}
			a, err := stack.Lookup(ctx, q)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON, _ := f.GetBool("json"); asJSON {
				return printJSON(out, struct {
					Layer    string            `json:"layer"`
					Level    string            `json:"level"`
					Workload tuningdb.Workload `json:"workload"`
					Device   tuningdb.Device   `json:"device"`
					Record   tuningdb.Record   `json:"record"`
				}{a.Layer, a.Level.String(), a.Workload, a.Device, a.Record})
			}
			layer := a.Layer + " database"
			if a.Layer == tuningdb.LayerUser {
				layer += " (" + stack.User.Path() + ")"
			}
			r := a.Record
			fmt.Fprintf(out, "answered by: %s, level %s\n", layer, a.Level)
			fmt.Fprintf(out, "workload:    %s (%s, bucket %d)\n", a.Workload.Key, a.Workload.Group, a.Workload.Bucket)
			fmt.Fprintf(out, "device:      %s (%s %s)\n", a.Device.Hash, a.Device.Kind, a.Device.Compat)
			fmt.Fprintf(out, "latency:     median %s, min %s, IQR %s over %d samples\n",
				fmtSeconds(r.Median), fmtSeconds(r.Min), fmtSeconds(r.IQR), len(r.Samples))
			fmt.Fprintf(out, "recorded:    %s by llmir %s, codegen version %d\n", r.CreatedAt.Format(time.RFC3339), r.LLMIRVersion, r.CodegenVersion)
			fmt.Fprintf(out, "trace:       %s\n", r.Trace)
			return nil
		},
	}
	f := cmd.Flags()
	f.String("workload", "", "workload key (SHA-256 hex of the canonical workload JSON)")
	f.String("family", "", "workload family, for the nearest-bucket fallback when the key is not stored")
	f.Int64("bucket", 0, "shape bucket of the dynamic dim, with --family")
	f.String("device", "", "device hash (SHA-256 hex of the fingerprint)")
	f.String("kind", "", "device kind (cpu or cuda), for the compatible-device fallback")
	f.String("compat", "", `device compatibility class, e.g. "x86_64/avx512f+fma" or "sm_90"`)
	f.Int("codegen-version", 0, "codegen version of the records to use (0: the newest recorded)")
	f.Bool("no-precompiled", false, "look in --db only, not in the precompiled database")
	f.Bool("json", false, "print JSON")
	return cmd
}

func fmtSeconds(s float64) string {
	switch {
	case s == 0:
		return "0"
	case s < 1e-3:
		return fmt.Sprintf("%.3g µs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.3g ms", s*1e3)
	}
	return fmt.Sprintf("%.3g s", s)
}

func newDBExportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the tuning database as versioned JSON Lines",
		Long: `export writes a JSON Lines file whose first line is a header
({"format":"llmir-tuningdb","version":1,...}) and whose order is stable, so
equal databases export to equal files on any machine. --best keeps only the
fastest records per workload and device: what lookups need.`,
		Example: `  llmir db export -o all.jsonl
  llmir db export --best 3 --codegen-version 2 -o tuned.jsonl
  llmir db export | gzip > all.jsonl.gz`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			var opts tuningdb.ExportOptions
			opts.BestK, _ = f.GetInt("best")
			opts.MaxSamples, _ = f.GetInt("max-samples")
			opts.CodegenVersion, _ = f.GetInt("codegen-version")
			if opts.BestK < 0 || opts.CodegenVersion < 0 || opts.MaxSamples < 0 {
				return errors.New("--best, --codegen-version and --max-samples must not be negative")
			}
			db, err := openSelected(cmd, true)
			if err != nil {
				return err
			}
			defer db.Close()
			outPath, _ := f.GetString("output")
			if outPath == "" || outPath == "-" {
				_, err := db.Export(cmd.Context(), cmd.OutOrStdout(), opts)
				return err
			}
			var h tuningdb.Header
			err = writeFileAtomic(outPath, func(w io.Writer) (err error) {
				h, err = db.Export(cmd.Context(), w, opts)
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported %d devices, %d workloads, %d records, %d models to %s\n",
				h.Devices, h.Workloads, h.Records, h.Models, outPath)
			return nil
		},
	}
	cmd.Flags().StringP("output", "o", "", "output file (default: standard output)")
	cmd.Flags().Int("best", 0, "keep only the N fastest ok records per workload, device and codegen version (0: everything)")
	cmd.Flags().Int("max-samples", 0, "write at most N samples per record, evenly spaced order statistics (median, min and IQR stay as measured; 0: all)")
	cmd.Flags().Int("codegen-version", 0, "keep only records of this codegen version (0: all)")
	cmd.Flags().Bool("precompiled", false, "export the precompiled database built into llmir instead of --db")
	return cmd
}

// addEach opens --db for writing, adds every source of args to it with
// add, in order, stopping at the first error, and reports what each added
// (printImports with verb).
func addEach(cmd *cobra.Command, verb string, args []string, add func(db *tuningdb.DB, src string) (tuningdb.ImportResult, error)) error {
	db, err := openUserDB(cmd, false)
	if err != nil {
		return err
	}
	defer db.Close()
	var results []tuningdb.ImportResult
	for _, src := range args {
		res, err := add(db, src)
		if err != nil {
			return err
		}
		results = append(results, res)
	}
	return printImports(cmd, verb, args, results)
}

// printImports reports what import or merge added, as JSON with --json.
func printImports(cmd *cobra.Command, verb string, srcs []string, results []tuningdb.ImportResult) error {
	if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
		return printJSON(cmd.OutOrStdout(), results)
	}
	for i, res := range results {
		printImport(cmd, verb, srcs[i], res)
	}
	return nil
}

func printImport(cmd *cobra.Command, verb, src string, res tuningdb.ImportResult) {
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %d new records (%d already present), %d new devices, %d new workloads, %d models\n",
		verb, src, res.Records, res.Duplicates, res.Devices, res.Workloads, res.Models)
}

func newDBImportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import FILE...",
		Short: "Add the records of JSON Lines exports to the tuning database",
		Long: `import adds what the database lacks; records already present are skipped.
Each file is imported in one transaction: a malformed line (the error names it)
imports nothing from that file. "-" reads standard input.`,
		Example: `  llmir db import tuned.jsonl
  gunzip -c all.jsonl.gz | llmir db import -`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return addEach(cmd, "imported", args, func(db *tuningdb.DB, src string) (tuningdb.ImportResult, error) {
				return importFile(cmd, db, src)
			})
		},
	}
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

func importFile(cmd *cobra.Command, db *tuningdb.DB, src string) (tuningdb.ImportResult, error) {
	var r io.Reader = cmd.InOrStdin()
	if src != "-" {
		f, err := os.Open(src)
		if err != nil {
			return tuningdb.ImportResult{}, err
		}
		defer f.Close()
		r = f
	}
	res, err := db.Import(cmd.Context(), r)
	if err != nil {
		return tuningdb.ImportResult{}, fmt.Errorf("%s: %w", src, err)
	}
	return res, nil
}

func newDBMergeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "merge OTHER.db...",
		Short: "Add the records of other tuning databases to this one",
		Long: `merge adds every record, device, workload and cost model of each OTHER
database that --db lacks (one transaction per database). The other databases
are opened read-only and never changed.`,
		Example: `  llmir db merge /mnt/gpu-box/tuning.db
  llmir --db team.db db merge alice.db bob.db`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return addEach(cmd, "merged", args, func(db *tuningdb.DB, src string) (tuningdb.ImportResult, error) {
				other, err := tuningdb.Open(cmd.Context(), src, tuningdb.Options{ReadOnly: true})
				if err != nil {
					return tuningdb.ImportResult{}, err
				}
				defer other.Close()
				if same(other.Path(), db.Path()) {
					return tuningdb.ImportResult{}, fmt.Errorf("merge %s: that is the --db database itself", src)
				}
				return db.Merge(cmd.Context(), other)
			})
		},
	}
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

func same(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

func newDBVerifyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the tuning database for damage",
		Long: `verify runs SQLite's integrity and foreign-key checks and llmir's own: schema
marks, that device and workload hashes match their JSON, that every record's
digest matches its content, and that ok records' samples agree with their
median, min and IQR. It changes nothing and exits non-zero on any problem.`,
		Example: `  llmir db verify
  llmir --db copied.db db verify --json
  llmir db verify --precompiled`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, name, err := readSelected(cmd, (*tuningdb.DB).Verify)
			if err != nil {
				return err
			}
			if name == "" {
				name = "precompiled database"
			}
			out := cmd.OutOrStdout()
			if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
				if err := printJSON(out, rep); err != nil {
					return err
				}
			} else if rep.OK() {
				fmt.Fprintf(out, "%s: ok (%d records checked)\n", name, rep.Records)
			} else {
				for _, p := range rep.Problems {
					fmt.Fprintf(out, "%s: %s\n", name, p)
				}
				if rep.Truncated > 0 {
					fmt.Fprintf(out, "%s: … and %d more problems\n", name, rep.Truncated)
				}
			}
			if !rep.OK() {
				return fmt.Errorf("verify %s: %d problems", name, len(rep.Problems)+rep.Truncated)
			}
			return nil
		},
	}
	cmd.Flags().Bool("json", false, "print JSON")
	cmd.Flags().Bool("precompiled", false, "verify the precompiled database built into llmir instead of --db")
	return cmd
}

func newDBPruneCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete the records you select (and nothing else)",
		Long: `prune deletes the records that match every selector given; with no selector
it refuses. Devices, workloads and cost models are never deleted. Use --dry-run
to see how many records would go.`,
		Example: `  llmir db prune --codegen-version-below 3 --dry-run
  llmir db prune --failed --before 2026-01-01
  llmir db prune --status timeout --device 9c41…`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			var pf tuningdb.PruneFilter
			pf.CodegenVersionBelow, _ = f.GetInt("codegen-version-below")
			pf.DeviceHash, _ = f.GetString("device")
			pf.WorkloadKey, _ = f.GetString("workload")
			statuses, _ := f.GetStringSlice("status")
			for _, s := range statuses {
				st, err := tuningdb.ParseStatus(s)
				if err != nil {
					return fmt.Errorf("--status: %w", err)
				}
				pf.Statuses = append(pf.Statuses, st)
			}
			if failed, _ := f.GetBool("failed"); failed {
				if len(statuses) > 0 {
					return errors.New("--failed and --status: give one of them")
				}
				for _, s := range tuningdb.Statuses {
					if s != tuningdb.StatusOK {
						pf.Statuses = append(pf.Statuses, s)
					}
				}
			}
			if before, _ := f.GetString("before"); before != "" {
				t, err := parseDate(before)
				if err != nil {
					return fmt.Errorf("--before: %w", err)
				}
				pf.Before = t
			}
			if pf.CodegenVersionBelow < 0 {
				return fmt.Errorf("--codegen-version-below %d: must be positive", pf.CodegenVersionBelow)
			}
			dry, _ := f.GetBool("dry-run")
			db, err := openUserDB(cmd, dry)
			if err != nil {
				return err
			}
			defer db.Close()
			n, err := db.Prune(cmd.Context(), pf, dry)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON, _ := f.GetBool("json"); asJSON {
				return printJSON(out, struct {
					DryRun  bool  `json:"dry_run"`
					Records int64 `json:"records"`
				}{dry, n})
			}
			if dry {
				fmt.Fprintf(out, "would delete %d records from %s (dry run)\n", n, db.Path())
			} else {
				fmt.Fprintf(out, "deleted %d records from %s\n", n, db.Path())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Int("codegen-version-below", 0, "select records of codegen versions below N")
	f.StringSlice("status", nil, "select records of these statuses (ok, build_error, runtime_error, timeout, wrong_result)")
	f.Bool("failed", false, "select records of every failed status")
	f.String("before", "", "select records created before this date (2006-01-02 or RFC 3339)")
	f.String("device", "", "select records of this device hash")
	f.String("workload", "", "select records of this workload key")
	f.Bool("dry-run", false, "count the selected records, delete nothing")
	f.Bool("json", false, "print JSON")
	return cmd
}

func parseDate(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a date (want 2006-01-02 or RFC 3339)", s)
}
