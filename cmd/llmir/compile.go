package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"llmir/ir/hf"
	"llmir/search"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// newCompileCmd builds `llmir compile`: C sources of a model's kernels from
// the best recorded schedules.
func newCompileCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "compile (MODEL.mlir | --preset NAME) -o DIR",
		Short: "Generate a model's kernels from the best recorded schedules",
		Long: `compile partitions the model into kernel groups and, for every distinct workload
with a kernel, takes the best recorded schedule for this machine: from the user's
database (--db), then the precompiled one, at the exact device, then a
compatible device (same kind and compat class), then the nearest shape bucket
of the workload's family; with no record, or a record that does not replay on
this shape, the kernel's rule-based default. It writes into DIR:

  kernels/<symbol>.c  one C file per workload (int <symbol>(void *const *bufs,
                      const int64_t *dims): buffers in ABI order, dynamic dims)
  llmir_kernels.h     prototypes and one dispatch table per workload family
                      over its shape buckets (llmir_dispatch picks the smallest
                      bucket >= the runtime extent)
  manifest.json       per workload: symbol, file, where its schedule came from
                      (user / precompiled / default) at which level; the
                      dispatch table (family → bucket → symbol); per group the
                      chosen alternative (fused or unfused) by recorded times

and prints a table saying where each schedule came from.`,
		Example: `  llmir compile model.mlir -o build/
  llmir compile --preset llama-tiny --db tuning.db -o build/ --threads 2
  llmir compile model.mlir -o build/ --buckets seq=1,seq=16,seq=128,seq=2048
  llmir compile model.mlir -o build/ --no-precompiled --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			preset, _ := cmd.Flags().GetString("preset")
			switch {
			case len(args) > 1:
				return fmt.Errorf("compile takes one MODEL.mlir, got %d arguments", len(args))
			case len(args) == 1 && preset != "":
				return errors.New("give MODEL.mlir or --preset, not both")
			case len(args) == 0 && preset == "":
				return errors.New("give MODEL.mlir or --preset NAME")
			}
			if out, _ := cmd.Flags().GetString("output"); out == "" {
				return errors.New("-o DIR is required")
			}
			return nil
		},
		RunE: runCompile,
	}
	f := cmd.Flags()
	f.String("preset", "", "built-in model: "+strings.Join(hf.Presets(), ", "))
	f.String("dtype", "", "with --preset: tensor dtype f32, bf16 or f16 (default: the preset's)")
	f.StringP("output", "o", "", "output directory (created if missing)")
	f.Int("threads", 1, "threads the kernels run with (records are per thread count)")
	f.StringSlice("dims", nil, "symbolic dims, NAME=N (default: each function's llmir.dims)")
	f.StringSlice("buckets", nil, "more dim settings to compile, NAME=N each (e.g. seq=16,seq=512): one kernel per bucket in the dispatch tables")
	f.Bool("no-precompiled", false, "look in --db only, not in the precompiled database")
	f.Bool("json", false, "print the manifest instead of the table")
	return cmd
}

func runCompile(cmd *cobra.Command, args []string) error {
	fl := cmd.Flags()
	outDir, _ := fl.GetString("output")
	threads, _ := fl.GetInt("threads")
	dimsArg, _ := fl.GetStringSlice("dims")
	noPre, _ := fl.GetBool("no-precompiled")
	asJSON, _ := fl.GetBool("json")
	dbPath, _ := fl.GetString("db")
	if threads < 1 || threads > 1024 {
		return fmt.Errorf("--threads %d: want 1..1024", threads)
	}
	dims, err := parseDims("dims", dimsArg)
	if err != nil {
		return err
	}
	bucketArg, _ := fl.GetStringSlice("buckets")
	var buckets []map[string]int64
	for _, b := range bucketArg {
		set, err := parseDims("buckets", []string{b})
		if err != nil {
			return err
		}
		buckets = append(buckets, set)
	}
	m, name, err := loadModel(cmd, args)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	tg, err := cpu.New(ctx, cpu.Options{})
	if err != nil {
		return err
	}
	stack, err := tuningdb.OpenStack(ctx, dbPath, !noPre)
	if err != nil {
		return err
	}
	defer stack.Close()
	if stack.User == nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "note: tuning database %s does not exist; using the precompiled database and rule-based defaults\n", dbPath)
	}
	fp := tg.CPU()
	cm, err := search.CompileModel(ctx, m, search.CompileOptions{
		Lookup: stack.Layered, Device: search.DeviceOf(fp, nil),
		Hardware: search.CPUHardware(fp, threads), Threads: threads, Dims: dims, Buckets: buckets,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	kdir := filepath.Join(outDir, "kernels")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return fmt.Errorf("-o %s: %w", outDir, err)
	}
	files := make([]string, len(cm.Kernels))
	for i, k := range cm.Kernels {
		files[i] = filepath.Join("kernels", k.Symbol+".c")
		src := fmt.Sprintf("/* %s\n * workload %s, schedule from %s (%s)\n */\n%s", k.Name, k.Workload, k.From, k.Level, k.Source)
		if err := writeFileAtomic(filepath.Join(outDir, files[i]), func(w io.Writer) error {
			_, err := io.WriteString(w, src)
			return err
		}); err != nil {
			return fmt.Errorf("write %s: %w", files[i], err)
		}
	}
	if err := writeFileAtomic(filepath.Join(outDir, "llmir_kernels.h"), func(w io.Writer) error {
		_, err := io.WriteString(w, cm.Header())
		return err
	}); err != nil {
		return fmt.Errorf("write llmir_kernels.h: %w", err)
	}
	type kernelFile struct {
		search.CompiledKernel
		File string `json:"file"`
	}
	manifest := struct {
		Model          string                            `json:"model"`
		Device         string                            `json:"device"`
		Threads        int                               `json:"threads"`
		CodegenVersion int                               `json:"codegen_version"`
		Kernels        []kernelFile                      `json:"kernels"`
		Dispatch       map[string][]search.DispatchEntry `json:"dispatch"`
		Groups         []search.CompiledGroup            `json:"groups"`
		NoKernel       []search.NoKernel                 `json:"no_kernel,omitempty"`
	}{Model: name, Device: cm.Device, Threads: cm.Threads, CodegenVersion: cm.CodegenVersion,
		Dispatch: cm.Dispatch, Groups: cm.Groups, NoKernel: cm.NoKernel}
	for i, k := range cm.Kernels {
		manifest.Kernels = append(manifest.Kernels, kernelFile{k, files[i]})
	}
	if err := writeFileAtomic(filepath.Join(outDir, "manifest.json"), func(w io.Writer) error {
		return printJSON(w, manifest)
	}); err != nil {
		return fmt.Errorf("write manifest.json: %w", err)
	}
	out := cmd.OutOrStdout()
	if asJSON {
		return printJSON(out, manifest)
	}
	counts := map[string]int{}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tbucket\tsymbol\tschedule from\tlevel\trecorded")
	for _, k := range cm.Kernels {
		rec := "—"
		if k.Median > 0 {
			rec = fmtSeconds(k.Median)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", k.Name, k.Bucket, k.Symbol, k.From, k.Level, rec)
		counts[k.From]++
	}
	tw.Flush()
	for _, k := range cm.Kernels {
		if k.Note != "" {
			fmt.Fprintf(out, "note: %s: %s\n", k.Name, k.Note)
		}
	}
	fused := 0
	for _, g := range cm.Groups {
		if g.Pattern != "" && g.Chosen != "unfused" && g.Chosen != "none" {
			fused++
		}
	}
	fmt.Fprintf(out, "\n%d kernels (%d from the user database, %d precompiled, %d rule-based defaults), %d without a kernel; %d groups, %d fused; wrote %s\n",
		len(cm.Kernels), counts[tuningdb.LayerUser], counts[tuningdb.LayerPrecompiled], counts[search.FromDefault], len(cm.NoKernel), len(cm.Groups), fused, outDir)
	return nil
}
