package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/search"
	"llmir/target/cpu"
	"llmir/target/cuda"
	"llmir/target/cuda/cudabench"
	cudakernels "llmir/target/cuda/kernels"
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

and prints a table saying where each schedule came from.

With --target cuda the kernels are the CUDA template kernels (bf16: decode
GEMV/skinny GEMM for M <= 16 rows, tensor-core GEMM above, paged attention,
rms_norm, silu, mul, add) and DIR gets kernels/<symbol>.cu (CUDA C++, device
pointers, launched on the default stream). No GPU is needed: records are
looked up under the GPU chosen by --gpu, which is an arch (sm_90: the newest
recorded GPU of that arch, or, with none, rule-based defaults for it), a
device hash prefix, or part of a recorded GPU's name (H100); by default the
newest GPU recorded in the user's or the precompiled database. The table
names the GPU used. CUDA kernels are specialised on their shape bucket:
callers pad activations to the bucket the dispatch table returns.`,
		Example: `  llmir compile model.mlir -o build/
  llmir compile --preset llama-tiny --db tuning.db -o build/ --threads 2
  llmir compile model.mlir -o build/ --buckets seq=1,seq=16,seq=128,seq=2048
  llmir compile model.mlir -o build/ --no-precompiled --json
  llmir compile --target cuda --preset llama-3-8b --dtype bf16 -o build-cuda/
  llmir compile --target cuda model.mlir --gpu sm_90 -o build-cuda/`,
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
	f.String("target", "cpu", "target to compile for: cpu (C) or cuda (CUDA C++; no GPU needed)")
	f.String("gpu", "", "with --target cuda: whose records to use: an arch (sm_90), a device hash prefix or part of a GPU name (default: the newest recorded GPU)")
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
	tgName, _ := fl.GetString("target")
	gpu, _ := fl.GetString("gpu")
	if threads < 1 || threads > 1024 {
		return fmt.Errorf("--threads %d: want 1..1024", threads)
	}
	switch {
	case tgName != "cpu" && tgName != "cuda":
		return fmt.Errorf("--target %q: want cpu or cuda", tgName)
	case tgName == "cuda" && threads != 1:
		return fmt.Errorf("--threads %d: CUDA kernels are recorded at threads 1 (their launch picks the GPU threads)", threads)
	case tgName != "cuda" && gpu != "":
		return errors.New("--gpu needs --target cuda")
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
	if err := ir.CheckDims(m, dims); err != nil {
		return fmt.Errorf("--dims: %s: %w", name, err)
	}
	for _, b := range buckets {
		if err := ir.CheckDims(m, b); err != nil {
			return fmt.Errorf("--buckets: %s: %w", name, err)
		}
	}
	ctx := cmd.Context()
	stack, err := tuningdb.OpenStack(ctx, dbPath, !noPre)
	if err != nil {
		return err
	}
	defer stack.Close()
	if stack.User == nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "note: tuning database %s does not exist; using the precompiled database and rule-based defaults\n", dbPath)
	}
	co := search.CompileOptions{Lookup: stack.Layered, Threads: threads, Dims: dims, Buckets: buckets}
	ext := ".c"
	var nvccFlags []string // how the user builds the .cu files
	if tgName == "cuda" {
		be, note, err := cudaCompileBackend(ctx, stack, gpu)
		if err != nil {
			return err
		}
		fmt.Fprintln(cmd.ErrOrStderr(), note)
		co.Backend, co.Device, ext = be, be.Device(), ".cu"
		// The sources are built as the tuner measured them: on sm_90 for
		// sm_90a, whose wgmma the prefill GEMM uses.
		nvccFlags = []string{"-O3", cuda.ArchFlag(be.GPU().Arch), "-std=c++17"}
	} else {
		tg, err := cpu.New(ctx, cpu.Options{})
		if err != nil {
			return err
		}
		fp := tg.CPU()
		co.Device, co.Hardware = search.DeviceOf(fp, nil), search.CPUHardware(fp, threads)
	}
	cm, err := search.CompileModel(ctx, m, co)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if tgName == "cuda" && len(cm.Kernels) == 0 {
		return fmt.Errorf("%s: no workload has a CUDA kernel (%d without one; the CUDA kernels are bf16: import with --dtype bf16)", name, len(cm.NoKernel))
	}
	kdir := filepath.Join(outDir, "kernels")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return fmt.Errorf("-o %s: %w", outDir, err)
	}
	files := make([]string, len(cm.Kernels))
	for i, k := range cm.Kernels {
		files[i] = filepath.Join("kernels", k.Symbol+ext)
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
		Target         string                            `json:"target"`
		Device         string                            `json:"device"`
		Threads        int                               `json:"threads"`
		CodegenVersion int                               `json:"codegen_version"`
		NVCCFlags      []string                          `json:"nvcc_flags,omitempty"`
		Kernels        []kernelFile                      `json:"kernels"`
		Dispatch       map[string][]search.DispatchEntry `json:"dispatch"`
		Groups         []search.CompiledGroup            `json:"groups"`
		NoKernel       []search.NoKernel                 `json:"no_kernel,omitempty"`
	}{Model: name, Target: cm.Target, Device: cm.Device, Threads: cm.Threads, CodegenVersion: cm.CodegenVersion,
		NVCCFlags: nvccFlags, Dispatch: cm.Dispatch, Groups: cm.Groups, NoKernel: cm.NoKernel}
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

// cudaCompileBackend picks the GPU a CUDA compile looks records up under
// and prints for (see compile's help): among the CUDA devices with records
// at the CUDA codegen version in the stack's databases, those matching gpu
// (an arch, a hash prefix, or part of the name; "" matches all), the one
// whose newest record is newest. An arch nobody recorded still compiles
// (rule-based defaults); a name or hash that matches nothing is an error
// listing the recorded GPUs. note says which GPU was used.
func cudaCompileBackend(ctx context.Context, stack *tuningdb.Stack, gpu string) (be *cudabench.Backend, note string, err error) {
	type recorded struct {
		dev    tuningdb.Device
		name   string
		layer  string
		newest time.Time
	}
	var all []recorded
	for _, layer := range stack.Layers {
		st, err := layer.DB.Stats(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("--gpu: %s database: %w", layer.Name, err)
		}
		for _, d := range st.PerDevice {
			if d.Kind != tuningdb.KindCUDA || d.Records == 0 {
				continue
			}
			dev, err := layer.DB.Device(ctx, d.Hash)
			if err != nil {
				return nil, "", fmt.Errorf("--gpu: %s database: %w", layer.Name, err)
			}
			r := recorded{dev: dev, layer: layer.Name}
			for rec, err := range layer.DB.DeviceRecords(ctx, d.Hash, cudakernels.CodegenVersion) {
				if err != nil {
					return nil, "", fmt.Errorf("--gpu: %s database: %w", layer.Name, err)
				}
				if rec.CreatedAt.After(r.newest) {
					r.newest = rec.CreatedAt
				}
			}
			if r.newest.IsZero() {
				continue // records of other codegen versions only
			}
			var fp struct {
				Name string `json:"name"`
			}
			_ = json.Unmarshal(dev.Fingerprint, &fp)
			r.name = fp.Name
			all = append(all, r)
		}
	}
	isArch := strings.HasPrefix(gpu, "sm_") || strings.HasPrefix(gpu, "compute_")
	isHash := len(gpu) >= 8 && strings.Trim(strings.ToLower(gpu), "0123456789abcdef") == ""
	var best *recorded
	for i, r := range all {
		ok := false
		switch {
		case gpu == "":
			ok = true
		case isArch:
			ok = r.dev.Compat == gpu
		case isHash:
			ok = strings.HasPrefix(r.dev.Hash, strings.ToLower(gpu))
		default:
			ok = strings.Contains(strings.ToLower(r.name), strings.ToLower(gpu))
		}
		// Ties go to the earlier layer (the user's database).
		if ok && (best == nil || r.newest.After(best.newest)) {
			best = &all[i]
		}
	}
	if best != nil {
		be, err := cudabench.NewSourceBackend(best.dev)
		if err != nil {
			return nil, "", fmt.Errorf("--gpu: %w", err)
		}
		return be, fmt.Sprintf("cuda: records of %s (%s, device %.12s, %s database, newest record %s)",
			best.name, best.dev.Compat, best.dev.Hash, best.layer, best.newest.UTC().Format(time.DateOnly)), nil
	}
	if isArch {
		return cudabench.NewArchBackend(gpu), fmt.Sprintf("cuda: no GPU of arch %s recorded; rule-based defaults for %s (H100 sizes)", gpu, gpu), nil
	}
	var known []string
	for _, r := range all {
		known = append(known, fmt.Sprintf("%s %s %.12s (%s)", r.name, r.dev.Compat, r.dev.Hash, r.layer))
	}
	if gpu == "" {
		return nil, "", errors.New("--target cuda: no GPU recorded in the databases; give --gpu ARCH (e.g. sm_90) to compile rule-based defaults")
	}
	if len(known) == 0 {
		known = []string{"none"}
	}
	return nil, "", fmt.Errorf("--gpu %q: no recorded GPU matches (recorded: %s); an arch such as sm_90 always works", gpu, strings.Join(known, "; "))
}
