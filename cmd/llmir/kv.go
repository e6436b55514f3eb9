package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"llmir/kvcache/sim"
)

func newKVCmd() *cobra.Command {
	kv := &cobra.Command{
		Use:   "kv",
		Short: "Paged KV cache tools",
		Long: `Tools for llmir's paged KV cache (package kvcache): the block manager with
prefix sharing that the attention kernels' block tables come from.`,
		Example: "  llmir kv simulate --workload chat",
		Args:    cobra.NoArgs,
	}
	kv.AddCommand(newKVSimulateCmd())
	return kv
}

// kvSimReport is the --json output.
type kvSimReport struct {
	Source     string       `json:"source"`
	Workload   string       `json:"workload,omitempty"`
	Trace      string       `json:"trace,omitempty"`
	Seed       *uint64      `json:"seed,omitempty"` // workloads only
	Requests   int          `json:"requests"`
	PoolTokens int          `json:"pool_tokens,omitempty"`
	PoolBlocks int          `json:"pool_blocks,omitempty"`
	Watermark  float64      `json:"watermark"`
	MaxSeqs    int          `json:"max_seqs"`
	Results    []sim.Result `json:"results"`
	Goal       *kvGoal      `json:"goal,omitempty"`
}

// kvGoal is the target: waste under 4% of used memory on the chat
// workload at block size 16.
type kvGoal struct {
	Workload  string  `json:"workload"`
	BlockSize int     `json:"block_size"`
	WastePct  float64 `json:"waste_pct"`
	LimitPct  float64 `json:"limit_pct"`
	Met       bool    `json:"met"`
}

func newKVSimulateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Replay a request trace through the KV cache at several block sizes",
		Long: `simulate replays a request trace through the paged KV cache manager with
continuous batching (each step every running sequence appends one token;
admission keeps a watermark of free blocks; a full cache preempts the newest
sequence, which is recomputed later) and prints one row per block size:
memory waste (internal fragmentation: allocated slots holding no token, as a
percentage of allocated slots, averaged over steps), peak concurrent
sequences, preemptions, prefix-cache hit rate and generated tokens per step.

The trace is a shipped workload (--workload; see the list below) or a file
(--trace): CSV with a header, columns arrival,prompt_len,output_len and
optionally id,prefix_group,prefix_len; or JSON Lines with the same keys.
Arrivals are decode steps.

By default every block size gets the same memory (--pool-tokens), so rows
compare; --pool-blocks instead gives every size the same number of blocks.

Workloads:
` + workloadList(),
		Example: `  llmir kv simulate
  llmir kv simulate --workload shared-prefix --block-size 16,64,256
  llmir kv simulate --trace requests.csv --pool-tokens 131072 --json
  llmir kv simulate --workload long --requests 200 --save-trace long.csv`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.IntSlice("block-size", []int{8, 16, 32, 64, 128, 256}, "block sizes to compare (tokens per block)")
	f.String("workload", "chat", "shipped workload to generate")
	f.String("trace", "", "trace file (.csv or .jsonl) to replay instead of a workload")
	f.Int("requests", 1000, "requests to generate for --workload")
	f.Uint64("seed", 1, "seed for --workload")
	f.Int("pool-tokens", 65536, "KV memory in tokens, the same at every block size")
	f.Int("pool-blocks", 0, "KV memory in blocks, the same count at every block size (instead of --pool-tokens)")
	f.Float64("watermark", 0.01, "fraction of blocks admission keeps free")
	f.Int("max-seqs", 256, "most sequences running at once")
	f.Bool("no-prefix-cache", false, "turn prefix caching off")
	f.Bool("json", false, "print JSON")
	f.String("save-trace", "", "also write the replayed trace to this CSV file")

	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		sizes, _ := f.GetIntSlice("block-size")
		workload, _ := f.GetString("workload")
		tracePath, _ := f.GetString("trace")
		requests, _ := f.GetInt("requests")
		seed, _ := f.GetUint64("seed")
		poolTokens, _ := f.GetInt("pool-tokens")
		poolBlocks, _ := f.GetInt("pool-blocks")
		watermark, _ := f.GetFloat64("watermark")
		maxSeqs, _ := f.GetInt("max-seqs")
		noPrefix, _ := f.GetBool("no-prefix-cache")
		asJSON, _ := f.GetBool("json")
		savePath, _ := f.GetString("save-trace")

		if len(sizes) == 0 {
			return fmt.Errorf("--block-size: no block sizes given")
		}
		for _, bs := range sizes {
			if bs < 1 {
				return fmt.Errorf("--block-size: %d, want ≥ 1", bs)
			}
		}
		if tracePath != "" && f.Changed("workload") {
			return fmt.Errorf("--trace and --workload: give one trace source, not both")
		}
		if poolBlocks != 0 && f.Changed("pool-tokens") {
			return fmt.Errorf("--pool-tokens and --pool-blocks: give one pool size, not both")
		}
		if poolBlocks < 0 {
			return fmt.Errorf("--pool-blocks: %d, want > 0", poolBlocks)
		}
		if poolBlocks == 0 {
			if biggest := slices.Max(sizes); poolTokens < biggest {
				return fmt.Errorf("--pool-tokens: %d, want at least the largest block size (%d)", poolTokens, biggest)
			}
		} else {
			poolTokens = 0
		}
		if !(watermark >= 0 && watermark < 1) {
			return fmt.Errorf("--watermark: %v, want 0 ≤ w < 1", watermark)
		}
		if maxSeqs < 1 {
			return fmt.Errorf("--max-seqs: %d, want ≥ 1", maxSeqs)
		}

		rep := kvSimReport{PoolTokens: poolTokens, PoolBlocks: poolBlocks, Watermark: watermark, MaxSeqs: maxSeqs}
		var trace []sim.Request
		if tracePath != "" {
			var err error
			if trace, err = sim.ReadTraceFile(tracePath); err != nil {
				return err
			}
			rep.Trace = tracePath
			rep.Source = "trace " + tracePath
		} else {
			w, err := sim.LookupWorkload(workload)
			if err != nil {
				return fmt.Errorf("--workload: %w", err)
			}
			if requests < 1 {
				return fmt.Errorf("--requests: %d, want ≥ 1", requests)
			}
			trace = w.Generate(requests, seed)
			rep.Workload, rep.Seed = w.Name, &seed
			rep.Source = fmt.Sprintf("workload %s (seed %d)", w.Name, seed)
		}
		rep.Requests = len(trace)
		if savePath != "" {
			if err := saveTrace(savePath, trace); err != nil {
				return err
			}
		}

		results, err := sim.Sweep(cmd.Context(), trace, sizes, poolTokens, sim.Config{
			PoolBlocks: poolBlocks, Watermark: watermark, MaxSeqs: maxSeqs, DisablePrefixCaching: noPrefix,
		})
		if err != nil {
			return err
		}
		rep.Results = results
		if rep.Workload == "chat" {
			if i := slices.Index(sizes, 16); i >= 0 {
				w := results[i].WastePct
				rep.Goal = &kvGoal{Workload: "chat", BlockSize: 16, WastePct: w, LimitPct: 4, Met: w < 4}
			}
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), rep)
		}
		return printKVSim(cmd, rep)
	}
	return cmd
}

// workloadList formats the shipped workloads for -h, wrapped at 80 columns.
func workloadList() string {
	var b strings.Builder
	for _, w := range sim.Workloads() {
		fmt.Fprintf(&b, "  %s\n", w.Name)
		line := "   "
		for _, word := range strings.Fields(w.Description) {
			if utf8.RuneCountInString(line)+1+utf8.RuneCountInString(word) > 80 {
				b.WriteString(line + "\n")
				line = "   "
			}
			line += " " + word
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

func saveTrace(path string, trace []sim.Request) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--save-trace: %w", err)
	}
	if err := sim.WriteCSV(f, trace); err != nil {
		f.Close()
		return fmt.Errorf("--save-trace %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--save-trace %s: %w", path, err)
	}
	return nil
}

func printKVSim(cmd *cobra.Command, rep kvSimReport) error {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "%s, %d requests\n", rep.Source, rep.Requests)
	if rep.PoolBlocks > 0 {
		fmt.Fprintf(out, "pool: %d blocks at every block size (memory grows with the block size)", rep.PoolBlocks)
	} else {
		fmt.Fprintf(out, "pool: %d tokens of KV memory at every block size (blocks = tokens / block size), so rows compare", rep.PoolTokens)
	}
	fmt.Fprintf(out, "; watermark %.3g%%, at most %d running sequences\n\n", 100*rep.Watermark, rep.MaxSeqs)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "block\tblocks\twaste %\tpeak waste %\tutil %\tpeak seqs\tmean seqs\tpreempt\trejected\tprefix hit %\ttok/step\tsteps\t")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%d\t%d\t%.2f\t%.2f\t%.1f\t%d\t%.1f\t%d\t%d\t%.1f\t%.2f\t%d\t\n",
			r.BlockSize, r.PoolBlocks, r.WastePct, r.PeakWastePct, r.UtilizationPct, r.PeakSeqs, r.MeanSeqs,
			r.Preemptions, r.Rejected, r.PrefixHitPct, r.TokensPerStep, r.Steps)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Results {
		if rep.PoolTokens > 0 && r.PoolTokens != rep.PoolTokens {
			fmt.Fprintf(out, "note: at block size %d the pool holds %d tokens (%d is not a multiple of it)\n",
				r.BlockSize, r.PoolTokens, rep.PoolTokens)
		}
	}
	fmt.Fprintln(out, "\nwaste: allocated KV slots holding no token, % of allocated slots, mean over busy steps")
	if g := rep.Goal; g != nil {
		verdict := "met"
		if !g.Met {
			verdict = "NOT met"
		}
		fmt.Fprintf(out, "goal: waste < %.0f%% of used memory on %s at block size %d: %.2f%%, %s\n",
			g.LimitPct, g.Workload, g.BlockSize, g.WastePct, verdict)
	}
	return nil
}
