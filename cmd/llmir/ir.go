package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"llmir/ir"
	"llmir/ir/hf"
)

// readModule parses an LLMIR file ("-" is standard input) and verifies it.
func readModule(cmd *cobra.Command, path string) (*ir.Module, error) {
	var data []byte
	var err error
	name := path
	if path == "-" {
		name = "<stdin>"
		data, err = io.ReadAll(cmd.InOrStdin())
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	m, err := ir.Parse(name, data)
	if err != nil {
		return nil, err
	}
	if err := ir.Verify(m); err != nil {
		return nil, err
	}
	return m, nil
}

// writeOutput writes text to path, or to the command's output for "" or "-".
func writeOutput(cmd *cobra.Command, path, text string) error {
	if path == "" || path == "-" {
		_, err := io.WriteString(cmd.OutOrStdout(), text)
		return err
	}
	return writeFileAtomic(path, func(w io.Writer) error {
		_, err := io.WriteString(w, text)
		return err
	})
}

// writeFileAtomic writes through a temporary file in the same directory and
// renames it into place (mode 0644), so a failed write never leaves half a
// file and never clobbers the old one.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	err = write(tmp)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func newImportCmd() *cobra.Command {
	var (
		hfConfig, preset, out string
		opts                  hf.Options
	)
	cmd := &cobra.Command{
		Use:   "import (--hf-config FILE | --preset NAME)",
		Short: "Build an LLMIR module (prefill and decode) from a model config",
		Long: `Build an LLMIR module with two functions, prefill (symbolic batch × seq) and
decode (symbolic batch, one token per sequence, paged KV cache), from a Hugging
Face config.json of the Llama family (Llama 2/3/3.1, Mistral, Qwen2) or from a
built-in preset: ` + strings.Join(hf.Presets(), ", ") + `.`,
		Example: `  llmir import --preset llama-3-8b -o llama3.mlir
  llmir import --hf-config path/to/config.json --block-size 32
  llmir import --preset llama-3-8b | mlir-opt --allow-unregistered-dialect`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (hfConfig == "") == (preset == "") {
				return fmt.Errorf("give exactly one of --hf-config FILE or --preset NAME")
			}
			// hf.Options reads 0 as "the default", so --block-size 0 used
			// to import with 16 as if the flag had not been given.
			for _, c := range []struct {
				flag string
				v    int64
			}{{"--block-size", opts.BlockSize}, {"--tensor-parallel", opts.TensorParallel}, {"--prefill-seq", opts.PrefillSeq}, {"--decode-batch", opts.DecodeBatch}} {
				if c.v < 1 {
					return fmt.Errorf("%s %d: want ≥ 1", c.flag, c.v)
				}
			}
			if opts.DecodeContext < 0 {
				return fmt.Errorf("--decode-context %d: want ≥ 0 (0: min(max_position_embeddings, 4096))", opts.DecodeContext)
			}
			var (
				cfg  *hf.Config
				name string
				err  error
			)
			if preset != "" {
				name = preset
				cfg, err = hf.PresetConfig(preset)
			} else {
				var data []byte
				if data, err = os.ReadFile(hfConfig); err == nil {
					name = filepath.Base(filepath.Dir(hfConfig))
					if name == "." || name == "/" {
						name = "model"
					}
					cfg, err = hf.ParseConfig(hfConfig, data)
				}
			}
			if err != nil {
				return err
			}
			m, err := hf.Import(cfg, name, opts)
			if err != nil {
				return err
			}
			return writeOutput(cmd, out, ir.String(m))
		},
	}
	f := cmd.Flags()
	f.StringVar(&hfConfig, "hf-config", "", "Hugging Face config.json to import")
	f.StringVar(&preset, "preset", "", "built-in model: "+strings.Join(hf.Presets(), ", "))
	f.StringVarP(&out, "output", "o", "", "output file (default: standard output)")
	f.Int64Var(&opts.BlockSize, "block-size", 16, "KV cache block size in tokens (1..1024)")
	f.Int64Var(&opts.TensorParallel, "tensor-parallel", 1, "shard attention heads and the MLP over this many ranks")
	f.Int64Var(&opts.PrefillSeq, "prefill-seq", 512, "typical prompt length, recorded for llmir tasks")
	f.Int64Var(&opts.DecodeBatch, "decode-batch", 1, "typical decode batch, recorded for llmir tasks")
	f.Int64Var(&opts.DecodeContext, "decode-context", 0, "typical decode context length (default: min(max_position_embeddings, 4096))")
	f.StringVar(&opts.DType, "dtype", "", "tensor dtype f32, bf16 or f16 (default: the config's torch_dtype)")
	return cmd
}

func newOptCmd() *cobra.Command {
	var (
		passes, dumpAfter []string
		verifyEach, times bool
		out               string
	)
	var names []string
	for _, p := range ir.Passes() {
		req := ""
		if p.Required {
			req = " (required)"
		}
		names = append(names, fmt.Sprintf("  %-14s %s%s", p.Name, p.Summary, req))
	}
	cmd := &cobra.Command{
		Use:   "opt FILE",
		Short: "Run passes over an LLMIR module",
		Long: "Run passes over an LLMIR module (FILE, or - for standard input) and print it.\n\nPasses, in pipeline order:\n" +
			strings.Join(names, "\n") + "\n\nRequired passes always run; --passes selects the others.",
		Example: `  llmir opt model.mlir --passes infer-shapes,canonicalize -o out.mlir
  llmir opt model.mlir --verify-each --dump-after canonicalize --time-passes`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := readModule(cmd, args[0])
			if err != nil {
				return err
			}
			opts := ir.PassOptions{VerifyEach: verifyEach, DumpAfter: dumpAfter, Dump: cmd.ErrOrStderr()}
			if times {
				opts.Timing = cmd.ErrOrStderr()
			}
			if err := ir.RunPasses(m, passes, opts); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return writeOutput(cmd, out, ir.String(m))
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&passes, "passes", nil, "comma-separated passes to run (default: all)")
	f.BoolVar(&verifyEach, "verify-each", false, "verify the module after every pass")
	f.StringSliceVar(&dumpAfter, "dump-after", nil, "print the module to stderr after these passes")
	f.BoolVar(&times, "time-passes", false, "print each pass's time to stderr")
	f.StringVarP(&out, "output", "o", "", "output file (default: standard output)")
	return cmd
}

func newTasksCmd() *cobra.Command {
	var (
		asJSON, groups, fusion bool
		dims                   []string
	)
	cmd := &cobra.Command{
		Use:   "tasks FILE",
		Short: "List the distinct kernel workloads of a module",
		Long: `List the distinct workloads (kernel group + bucketed shapes + dtypes) of an
LLMIR module and how often each occurs. Symbolic dims take the values of --dims,
else the function's llmir.dims attribute; dynamic extents are bucketed to powers
of two (then multiples of 8192).

With --fusion (the default) the module is first partitioned into kernel groups
(rms_norm+linear, linear+rope+append_kv, gate_up+silu_mul, linear+add) and the
table lists the workloads of every alternative, fused and unfused, since the
tuner measures both. --groups prints each function's groups instead: the ops
each covers and, per alternative, its workloads with their keys.`,
		Example: `  llmir tasks llama3.mlir
  llmir tasks llama3.mlir --dims batch=8,seq=2048 --json
  llmir tasks llama3.mlir --groups --dims batch=1
  llmir tasks llama3.mlir --fusion=false`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := parseDims("dims", dims)
			if err != nil {
				return err
			}
			if groups && !fusion {
				return fmt.Errorf("--groups shows the fusion partition: it cannot be combined with --fusion=false")
			}
			m, err := readModule(cmd, args[0])
			if err != nil {
				return err
			}
			if err := ir.InferShapes(m); err != nil {
				return err
			}
			if err := ir.CheckDims(m, env); err != nil {
				return fmt.Errorf("--dims: %s: %w", args[0], err)
			}
			var tasks []ir.Task
			if fusion {
				gs, err := ir.Partition(m, env)
				if err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				if groups {
					return printGroups(cmd.OutOrStdout(), gs, asJSON)
				}
				tasks = ir.GroupTasks(gs)
			} else if tasks, err = ir.Tasks(m, env); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if asJSON {
				type row struct {
					Key      string      `json:"key"`
					Name     string      `json:"name"`
					Count    int         `json:"count"`
					Funcs    []string    `json:"funcs"`
					Workload ir.Workload `json:"workload"`
				}
				rows := make([]row, len(tasks))
				for i, t := range tasks {
					rows[i] = row{t.Workload.Key(), t.Workload.Name(), t.Count, t.Funcs, t.Workload}
				}
				return printJSON(cmd.OutOrStdout(), rows)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "COUNT\tFUNCS\tWORKLOAD\tKEY")
			for _, t := range tasks {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", t.Count, strings.Join(t.Funcs, ","), t.Workload.Name(), t.Workload.Key()[:12])
			}
			fmt.Fprintf(tw, "\n%d distinct workloads\n", len(tasks))
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringSliceVar(&dims, "dims", nil, "values of symbolic dims, e.g. batch=8,seq=2048")
	cmd.Flags().BoolVar(&groups, "groups", false, "print each function's kernel groups with their alternatives and workload keys")
	cmd.Flags().BoolVar(&fusion, "fusion", true, "partition into kernel groups and list fused workloads too")
	return cmd
}

// printGroups prints a partition: per function, each group with the ops it
// covers and its alternatives' workloads (name and key prefix), or JSON.
func printGroups(w io.Writer, gs []ir.Group, asJSON bool) error {
	if asJSON {
		type wl struct {
			Key      string      `json:"key"`
			Name     string      `json:"name"`
			Workload ir.Workload `json:"workload"`
		}
		type alt struct {
			Name      string `json:"name"`
			Workloads []wl   `json:"workloads"`
		}
		type group struct {
			Func         string   `json:"func"`
			Pattern      string   `json:"pattern,omitempty"`
			Ops          []string `json:"ops"`
			Alternatives []alt    `json:"alternatives"`
		}
		rows := make([]group, len(gs))
		for i, g := range gs {
			rows[i] = group{Func: g.Func, Pattern: g.Pattern, Ops: g.Ops}
			for _, a := range g.Alternatives {
				ra := alt{Name: a.Name}
				for _, x := range a.Workloads {
					ra.Workloads = append(ra.Workloads, wl{x.Key(), x.Name(), x})
				}
				rows[i].Alternatives = append(rows[i].Alternatives, ra)
			}
		}
		return printJSON(w, rows)
	}
	fused := 0
	for i, g := range gs {
		if i == 0 || gs[i-1].Func != g.Func {
			n := 0
			for _, h := range gs[i:] {
				if h.Func == g.Func {
					n++
				}
			}
			fmt.Fprintf(w, "@%s: %d groups\n", g.Func, n)
		}
		title := g.Pattern
		if title == "" {
			title = "single"
		} else {
			fused++
		}
		fmt.Fprintf(w, "  %s  %s\n", title, strings.Join(g.Ops, ", "))
		for _, a := range g.Alternatives {
			for j, x := range a.Workloads {
				label := ""
				if j == 0 {
					label = a.Name + ":"
				}
				fmt.Fprintf(w, "    %-9s %s  %s\n", label, x.Key()[:12], x.Name())
			}
		}
	}
	_, err := fmt.Fprintf(w, "\n%d groups, %d with a fused alternative\n", len(gs), fused)
	return err
}
