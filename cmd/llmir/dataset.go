package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"llmir/search"
	"llmir/target/cpu"
)

// newDBDatasetCmd builds `llmir db dataset`: the cost model's evaluation
// dataset (costmodel.Example lines) exported from the tuning database.
func newDBDatasetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dataset",
		Short: "Export one CPU device's measured candidates as the cost model's dataset",
		Long: `dataset writes the ok records of one CPU device at the current codegen
version as the cost model's evaluation dataset (costmodel/testdata/*.jsonl):
one JSON line per distinct schedule trace of a workload, with the kernel's
name and IR workload, the workload key, threads, the cost model's view of
the device (from its stored fingerprint and roofline), the trace, the median
(the median of the trace's records when it was measured more than once), and
"default": true on the kernel's rule-based default schedule.

Failed records (build_error, runtime_error, timeout, wrong_result) are left
out; ok records whose trace no longer replays, or whose workload has no
kernel any more, are left out and counted. --device takes a device hash or
an unambiguous prefix of one (default: this machine's fingerprint).`,
		Example: `  llmir db dataset -o costmodel/testdata/mine.jsonl
  llmir --db bin/costmodel.db db dataset --device 9c41e0 -o pools.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			f := cmd.Flags()
			device, _ := f.GetString("device")
			outPath, _ := f.GetString("output")
			mine := ""
			if device == "" {
				gcc, err := cpu.FindGCC("")
				if err != nil {
					return fmt.Errorf("dataset: this machine's fingerprint needs gcc (%w); or give --device", err)
				}
				fp, err := cpu.DetectFingerprint(ctx, gcc)
				if err != nil {
					return fmt.Errorf("dataset: this machine's fingerprint: %w; or give --device", err)
				}
				device, mine = fp.Hash(), " (this machine; --device picks another)"
			}
			db, err := openUserDB(cmd, true)
			if err != nil {
				return err
			}
			defer db.Close()
			// Resolved before any file is written, so that a wrong device
			// is reported as such, with the devices there are.
			dev, err := search.FindDevice(ctx, db, device)
			if err != nil {
				return fmt.Errorf("dataset from %s%s: %w", db.Path(), mine, err)
			}
			var rep search.DatasetReport
			export := func(w io.Writer) (err error) {
				rep, err = search.ExportDataset(ctx, db, w, search.DatasetOptions{Device: dev.Hash})
				return err
			}
			// The summary goes where it does not mix with the dataset.
			note, dest := cmd.OutOrStdout(), outPath
			if outPath == "" || outPath == "-" {
				note, dest = cmd.ErrOrStderr(), "standard output"
				err = export(cmd.OutOrStdout())
			} else {
				err = writeFileAtomic(outPath, export)
			}
			if err != nil {
				if errors.Is(err, search.ErrEmptyDataset) {
					return fmt.Errorf("%s: %w", db.Path(), err)
				}
				return err
			}
			d := rep.Device
			fmt.Fprintf(note, "wrote %d candidates of %d workloads (%d rule-based defaults) of device %.16s (%s %s), codegen version %d, to %s\n",
				rep.Examples, rep.Workloads, rep.Defaults, d.Hash, d.Kind, d.Compat, rep.CodegenVersion, dest)
			fmt.Fprintf(note, "left out %d failed records and %d ok records that no longer replay; %d repeated measurements pooled into their trace's median\n",
				rep.Failed, rep.Stale, rep.Repeats)
			for _, r := range rep.StaleReasons {
				fmt.Fprintf(note, "  not replayed: %s\n", r)
			}
			return nil
		},
	}
	cmd.Flags().StringP("output", "o", "", "output file (default: standard output)")
	cmd.Flags().String("device", "", "device hash or unambiguous prefix (default: this machine's fingerprint)")
	return cmd
}
