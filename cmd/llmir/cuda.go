package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/spf13/cobra"

	"llmir/search"
	"llmir/target"
	"llmir/target/cuda"
	"llmir/target/cuda/cudabench"
	cudakernels "llmir/target/cuda/kernels"
)

// newCudaCmd is the GPU work: inspect the device, print generated CUDA,
// check conformance and benchmark on the GPU.
func newCudaCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cuda",
		Short: "CUDA backend: device fingerprint, generated source, conformance check, benchmarks",
		Long: `The CUDA target builds generated CUDA C++ with nvcc (many candidates per
translation unit, batches in parallel) and measures it in a harness process on
GPU 0 (validated against the Go reference, timed with CUDA events after an L2
flush). 'emit' works anywhere; the other commands need nvcc and an NVIDIA GPU.`,
		Example: `  llmir cuda emit 'gemv:M=1,N=4096,K=4096'
  llmir cuda fingerprint
  llmir cuda check --out out/check
  llmir cuda bench --sdpa out/sdpa.json --out out/bench --db out/tuning.db`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newCudaEmitCmd(), newCudaFingerprintCmd(), newCudaProbeCmd(), newCudaCheckCmd(), newCudaBenchCmd())
	return cmd
}

// cudaTargetFlags are the flags of every command that needs the GPU.
func cudaTargetFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.String("cache-dir", "", "where objects and the harness are kept (default $LLMIR_CUDA_CACHE, else ~/.cache/llmir/cuda)")
	f.String("nvcc", "", "nvcc to use (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc)")
	f.Int("jobs", 0, "parallel nvcc processes (default: cores)")
}

func openCudaTarget(cmd *cobra.Command) (*cuda.Target, error) {
	dir, _ := cmd.Flags().GetString("cache-dir")
	nvcc, _ := cmd.Flags().GetString("nvcc")
	jobs, _ := cmd.Flags().GetInt("jobs")
	if jobs < 0 {
		return nil, fmt.Errorf("--jobs %d: must be ≥ 0", jobs)
	}
	return cuda.New(cmd.Context(), cuda.Options{CacheDir: dir, NVCC: nvcc, Jobs: jobs})
}

func newCudaEmitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "emit KERNEL",
		Short: "Print the CUDA source of a kernel's default (or a sampled) schedule",
		Long: `KERNEL is KIND:F=V,… with KIND one of: gemv (M,N,K), cublas_gemv (M,N,K),
gemm (M,N,K), cublas_gemm (M,N,K), paged_attention (B,QH,KVH,D,BS,ctx[,ragged]),
attention (B,S,HQ,HKV,D: causal prefill), rms_norm (M,H), silu_mul (M,I), silu, mul,
add (M,H), rope (T,H,D: Llama-3's rope), append_kv (T,KVH,D,BS), embedding (T,V,H),
argmax (M,N), and the loop-nest kernels loopnest_gemv, loopnest_gemm (M,N,K),
loopnest_mul, loopnest_add (M,H).
Without --seed the rule-based default schedule (for --sms SMs) is printed.`,
		Example: `  llmir cuda emit 'gemv:M=16,N=28672,K=4096'
  llmir cuda emit 'paged_attention:B=32,QH=32,KVH=8,D=128,BS=16,ctx=4096' --seed 7
  llmir cuda emit 'rms_norm:M=1,H=4096' --trace`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := cudakernels.ParseSpec(args[0])
			if err != nil {
				return err
			}
			sms, _ := cmd.Flags().GetInt("sms")
			if sms < 1 {
				return fmt.Errorf("--sms %d: must be ≥ 1", sms)
			}
			gpu := cuda.H100
			gpu.SMs = sms
			hw := cudakernels.Hardware(gpu)
			s, err := search.DefaultSchedule(k, hw)
			if cmd.Flags().Changed("seed") {
				seed, _ := cmd.Flags().GetUint64("seed")
				// Sample only points the generator accepts, as the tuner does.
				s, err = search.SampleSchedule(cudakernels.Checked(k), hw, seed)
			}
			if err != nil {
				return err
			}
			if tr, _ := cmd.Flags().GetBool("trace"); tr {
				key, err := search.TraceKey(s)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), string(key))
				return nil
			}
			src, err := k.EmitCUDA(s, gpu, cudakernels.Entry)
			if err != nil {
				return fmt.Errorf("emit %s: %w", k.Name(), err)
			}
			fmt.Fprint(cmd.OutOrStdout(), src)
			return nil
		},
	}
	cmd.Flags().Uint64("seed", 0, "print a sampled schedule drawn with this seed instead of the default")
	cmd.Flags().Int("sms", cuda.H100.SMs, "SM count the default schedule is chosen for")
	cmd.Flags().Bool("trace", false, "print the schedule's trace (knob choices) instead of the source")
	return cmd
}

func newCudaFingerprintCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "fingerprint",
		Short:   "Print the GPU's fingerprint (name, compute capability, SMs, memory, L2, driver, nvcc)",
		Example: "  llmir cuda fingerprint",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			tg, err := openCudaTarget(cmd)
			if err != nil {
				return err
			}
			d := tg.GPU().Device()
			return printJSON(cmd.OutOrStdout(), map[string]any{"name": d.Name, "hash": d.Hash, "compat": d.Compat, "fingerprint": tg.GPU()})
		},
	}
	cudaTargetFlags(cmd)
	return cmd
}

func newCudaProbeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "probe",
		Short:   "Measure the device's copy bandwidth (cudaMemcpy D2D) and read bandwidth",
		Example: "  llmir cuda probe --mib 2048",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			mib, _ := cmd.Flags().GetInt64("mib")
			if mib < 1 {
				return fmt.Errorf("--mib %d: must be ≥ 1", mib)
			}
			n, err := mibBytes("--mib", mib)
			if err != nil {
				return err
			}
			tg, err := openCudaTarget(cmd)
			if err != nil {
				return err
			}
			bw, err := tg.Runner.Probe(cmd.Context(), n)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), bw)
		},
	}
	cmd.Flags().Int64("mib", 1024, "buffer size in MiB (far above the L2)")
	cudaTargetFlags(cmd)
	return cmd
}

// cudaRunFlags are the flags of check and bench.
func cudaRunFlags(cmd *cobra.Command, samples int, minTime time.Duration) {
	f := cmd.Flags()
	f.Int("samples", samples, "sampled schedules per kernel beside the default")
	f.Uint64("seed", 1, "seed of inputs and sampled schedules")
	f.Duration("min-time", minTime, "timed budget per candidate (device time)")
	f.Duration("warmup", 10*time.Millisecond, "warm-up per candidate")
	f.String("match", "", "only kernels whose name matches this regular expression")
	f.String("out", "", "directory for report.json and report.md (default: print only)")
	cudaTargetFlags(cmd)
}

// cudaSuite is a suite run's flags, checked before anything is opened.
type cudaSuite struct {
	tasks []cudabench.Task
	o     cudabench.Options
	out   string
}

func readCudaSuiteFlags(cmd *cobra.Command, tasks []cudabench.Task, o cudabench.Options) (*cudaSuite, error) {
	f := cmd.Flags()
	o.Samples, _ = f.GetInt("samples")
	o.Seed, _ = f.GetUint64("seed")
	minTime, _ := f.GetDuration("min-time")
	warm, _ := f.GetDuration("warmup")
	if o.Samples < 0 || minTime < 0 || warm < 0 {
		return nil, fmt.Errorf("--samples, --min-time and --warmup must not be negative")
	}
	o.Run = target.RunOptions{Budget: minTime, Warmup: warm}
	if pat, _ := f.GetString("match"); pat != "" {
		re, err := regexp.Compile(pat)
		if err != nil {
			return nil, fmt.Errorf("--match %q: %w", pat, err)
		}
		var keep []cudabench.Task
		for _, t := range tasks {
			if re.MatchString(t.Kernel.Name()) {
				keep = append(keep, t)
			}
		}
		if len(keep) == 0 {
			return nil, fmt.Errorf("--match %q: no kernel of the suite matches", pat)
		}
		tasks = keep
	}
	out, _ := f.GetString("out")
	if out != "" {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return nil, fmt.Errorf("--out %s: %w", out, err)
		}
	}
	return &cudaSuite{tasks: tasks, o: o, out: out}, nil
}

// run measures the suite on tg and writes report.json (without samples:
// the database has them) and report.md under --out.
func (su *cudaSuite) run(cmd *cobra.Command, tg *cuda.Target) (*cudabench.Report, error) {
	su.o.Log = cmd.OutOrStdout()
	fmt.Fprintf(cmd.OutOrStdout(), "device: %s\n", tg.GPU().Device().Name)
	rep, err := cudabench.Run(cmd.Context(), tg, su.tasks, su.o)
	if rep != nil && su.out != "" {
		js, _ := json.MarshalIndent(rep.WithoutSamples(), "", "  ")
		if werr := os.WriteFile(filepath.Join(su.out, "report.json"), js, 0o644); werr != nil && err == nil {
			err = fmt.Errorf("--out: %w", werr)
		}
		if werr := os.WriteFile(filepath.Join(su.out, "report.md"), []byte(rep.Markdown()), 0o644); werr != nil && err == nil {
			err = fmt.Errorf("--out: %w", werr)
		}
	}
	return rep, err
}

// errCheckFailed makes check exit non-zero after printing its report.
var errCheckFailed = errors.New("cuda conformance check failed")

func newCudaCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate every CUDA kernel's default and sampled schedules against the Go reference on odd shapes",
		Long: `Builds the conformance suite (GEMV with N, K one past a vector; ragged and empty
sequences in paged attention at block sizes 7, 16, 128 and head_dim 64, 128;
odd rms_norm, silu_mul, silu, mul and add rows; rope in neox and gptj styles with
partial rotary_dim and llama3/yarn scaling; append_kv at block sizes 4, 7, 16, 128; causal
prefill attention at 1, 33, 77, 200 and 512 tokens with GQA groups of 1 to 4; embedding and
argmax at odd widths, argmax rows with NaNs, infinities, signed zeros and ties), validates
each schedule and the cuBLAS baseline, and exits with an error listing every candidate that
crashed, timed out or was wrong. Knob combinations a generator refuses are outside the
design space and never sampled, so a refusal here is a failure.`,
		Example: `  llmir cuda check
  llmir cuda check --samples 16 --out out/check`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			su, err := readCudaSuiteFlags(cmd, cudabench.Conformance(), cudabench.Options{Command: "llmir cuda check"})
			if err != nil {
				return err
			}
			tg, err := openCudaTarget(cmd)
			if err != nil {
				return err
			}
			rep, err := su.run(cmd, tg)
			if err != nil {
				return err
			}
			if bad := rep.Failed(); len(bad) > 0 {
				for _, b := range bad {
					fmt.Fprintln(cmd.OutOrStdout(), "FAIL", b)
				}
				return fmt.Errorf("%w: %d failures", errCheckFailed, len(bad))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d kernels\n", len(rep.Rows))
			return nil
		},
	}
	cudaRunFlags(cmd, 6, 5*time.Millisecond)
	return cmd
}

func newCudaBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Tune llama-3-8b's decode kernels briefly on the GPU and compare with cuBLAS, SDPA and the copy bandwidth",
		Long: `Runs the llama-3-8b decode suite, built from the IR workloads of the imported
bf16 model (so its records are those 'llmir compile --target cuda' looks up):
GEMV bf16 at batch 1 and 16 for the linears (q/o, k/v, gate/up, down, lm_head;
against cuBLAS GemmEx in the same harness run), paged decode attention bf16
(batch 32, 32/8 heads of 128, context 4096) at block sizes 16, 32, 64, 128
(against PyTorch SDPA on contiguous KV when --sdpa gives its times, from
scripts/sdpa_baseline.py), rms_norm, rope, append_kv, silu, mul, add, the token
embedding and argmax. Each kernel is measured at its
rule-based default and --samples sampled schedules; every measurement is
recorded in the tuning database (--db) under the GPU's fingerprint, and results
are related to the copy bandwidth measured first. --suite prefill runs the
prefill linears instead: bf16 GEMM on tensor cores (on sm_90 wgmma fed by
TMA through a ring of swizzled stages, elsewhere mma.sync with a cp.async
pipeline) at M = 512…4096 for the same N×K, against cuBLAS, and the causal
attention at 512 and 4096 tokens (against SDPA with --sdpa). --knobs adds knob
points (a tile sweep in one run): each point is one more trial of every kernel
that has all its knobs, printed under the kernel's line with its ratio to the
default and the baseline; the other kernels are left out. Beside every
memory-bound kernel (all but the prefill GEMMs) a plain read of its bytes is
timed under the same protocol (same L2 flush, warm-up and budget; the fastest
of 2, 4, 8, 16 blocks of 512 threads per SM, 16-byte loads): 'read µs', '% read'
(read over best median: the kernel's share of the read's speed) and 'read÷base'
(baseline over read: the highest ratio to cuBLAS a kernel moving these bytes
in one launch could reach).`,
		Example: `  llmir cuda bench --out out/bench
  python3 scripts/sdpa_baseline.py > sdpa.json && llmir cuda bench --sdpa sdpa.json
  llmir cuda bench --match attention --samples 24 --min-time 200ms
  llmir cuda bench --suite prefill --match 'M=4096' --samples 8
  llmir cuda bench --suite prefill --match 'N=14336' --samples 0 --knobs 'wg_m=128,wg_n=128,stages=6;wg_m=128,wg_n=256,stages=4'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			suite, _ := cmd.Flags().GetString("suite")
			var tasks []cudabench.Task
			var err error
			switch suite {
			case "decode":
				tasks, err = cudabench.Llama3Decode()
			case "prefill":
				tasks, err = cudabench.Llama3Prefill()
			case "all":
				// Prefill first: it is the newer code, and a run cut short by
				// a time limit keeps its rows.
				var dec []cudabench.Task
				if tasks, err = cudabench.Llama3Prefill(); err == nil {
					dec, err = cudabench.Llama3Decode()
					tasks = append(tasks, dec...)
				}
			default:
				return fmt.Errorf("--suite %q: want decode, prefill or all", suite)
			}
			if err != nil {
				return err
			}
			read, _ := cmd.Flags().GetBool("read")
			su, err := readCudaSuiteFlags(cmd, tasks, cudabench.Options{Command: "llmir cuda bench", Read: read})
			if err != nil {
				return err
			}
			o := &su.o
			if spec, _ := cmd.Flags().GetString("knobs"); spec != "" {
				if o.Points, err = cudabench.ParsePoints(spec); err != nil {
					return fmt.Errorf("--knobs: %w", err)
				}
				// Knob names and domains do not depend on the GPU: checked
				// here, before any device is opened.
				if su.tasks, err = cudabench.SelectPoints(su.tasks, o.Points, cudakernels.Hardware(cuda.H100)); err != nil {
					return fmt.Errorf("--knobs: %w", err)
				}
			}
			if path, _ := cmd.Flags().GetString("sdpa"); path != "" {
				data, err := os.ReadFile(path)
				if err != nil {
					return fmt.Errorf("--sdpa: %w", err)
				}
				if o.SDPA, err = cudabench.ParseSDPA(data); err != nil {
					return fmt.Errorf("--sdpa %s: %w", path, err)
				}
			}
			mib, _ := cmd.Flags().GetInt64("probe-mib")
			if mib < 0 {
				return fmt.Errorf("--probe-mib %d: must be ≥ 0", mib)
			}
			probeBytes, err := mibBytes("--probe-mib", mib)
			if err != nil {
				return err
			}
			tg, err := openCudaTarget(cmd)
			if err != nil {
				return err
			}
			dbPath, _ := cmd.Flags().GetString("db")
			if dbPath != "" {
				db, err := createDB(cmd.Context(), "--db", dbPath)
				if err != nil {
					return err
				}
				defer db.Close()
				o.DB = db
			}
			if mib > 0 {
				ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
				defer cancel()
				if o.Bandwidth, err = tg.Runner.Probe(ctx, probeBytes); err != nil {
					return fmt.Errorf("bandwidth probe: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "copy bandwidth %.0f GB/s, read %.0f GB/s\n", o.Bandwidth.CopyGBps, o.Bandwidth.ReadGBps)
			}
			_, err = su.run(cmd, tg)
			return err
		},
	}
	cudaRunFlags(cmd, 12, 50*time.Millisecond)
	cmd.Flags().String("sdpa", "", "PyTorch SDPA times (JSON from scripts/sdpa_baseline.py)")
	cmd.Flags().String("suite", "decode", "decode (GEMV, attention, norms), prefill (GEMM M=512…4096) or all (prefill, then decode)")
	cmd.Flags().Int64("probe-mib", 1024, "copy-bandwidth probe buffer in MiB (0: no probe)")
	cmd.Flags().Bool("read", true, "time a plain read of each memory-bound kernel's bytes beside it (--read=false: skip)")
	cmd.Flags().String("knobs", "", "knob points measured beside each kernel's default, on top of its default values: 'wg_m=128,wg_n=128;wg_m=64,wg_n=128' (only kernels that have every knob of a point run)")
	return cmd
}
