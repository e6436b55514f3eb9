package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"llmir/search"
	"llmir/tuningdb"
)

// The heavy kernel suites: each tunes its workloads (a trial budget per
// workload) and then measures default and tuned schedules at full model
// sizes, so one run takes from minutes (quant) to hours (the paged sweep
// at 24 workloads). They are not part of nightly; run them by name.
const (
	SuitePaged   = AttentionSuite // "paged_attention"
	SuiteQuant   = QuantSuite     // "quant"
	SuitePrefill = PrefillSuite   // "prefill_attention"
	SuiteLayer   = "layer"
)

// heavyEntries are the suites measured only when asked for by name.
func heavyEntries() map[string][]Entry {
	return map[string][]Entry{
		SuitePaged:   {{Name: SuitePaged, Run: runPaged}},
		SuiteQuant:   {{Name: SuiteQuant, Run: runQuant}},
		SuitePrefill: {{Name: SuitePrefill, Run: runPrefill}},
		SuiteLayer:   {{Name: SuiteLayer, Run: runLayer}},
	}
}

// tuneOptions is the tuner configuration of the heavy suites: the suite's
// trial budget per workload, its timing protocol and seed.
func (e *Env) tuneOptions() search.Options {
	o := e.Opts
	return search.Options{Budget: search.Budget{Trials: o.Trials}, Run: o.Run, Seed: o.Seed,
		Command: o.Command, LLMIRVersion: o.Version}
}

// The paged, quant and prefill benchmarks store their own rows (in
// env.Results, which also keeps their tuning records, so a rerun resumes
// the tune and re-measures only the closing batch); their entries hand
// the rows back as Stored, for the count and the regression report.

func runPaged(ctx context.Context, env *Env) (EntryResult, error) {
	return runPerThreads(ctx, env, SuitePaged, func(ctx context.Context, th int) ([]PagedResult, error) {
		return PagedAttention(ctx, env.Target, env.Roofline, env.Results, PagedOptions{Threads: th,
			BlockSizes: env.Opts.BlockSizes, Contexts: env.Opts.Contexts, KVBytes: env.Opts.KVBytes,
			Tune: env.tuneOptions(), Final: env.Opts.Run, ClosingRuns: env.Opts.ClosingRuns,
			MaxBufferBytes: env.Opts.MaxBufferBytes, Log: env.Opts.Log})
	}, (*PagedResult).benchResults, WriteAttentionTable)
}

func runQuant(ctx context.Context, env *Env) (EntryResult, error) {
	return runPerThreads(ctx, env, SuiteQuant, func(ctx context.Context, th int) ([]QuantResult, error) {
		return Quant(ctx, env.Target, env.Roofline, env.Results, QuantOptions{Threads: th, Shapes: env.Opts.QuantShapes,
			Tune: env.tuneOptions(), Final: env.Opts.Run, MaxBufferBytes: env.Opts.MaxBufferBytes, Log: env.Opts.Log})
	}, (*QuantResult).benchResults, WriteQuantTable)
}

func runPrefill(ctx context.Context, env *Env) (EntryResult, error) {
	return runPerThreads(ctx, env, SuitePrefill, func(ctx context.Context, th int) ([]PrefillResult, error) {
		return PrefillAttention(ctx, env.Target, env.Roofline, env.Results, PrefillOptions{Threads: th, Seqs: env.Opts.PrefillSeqs,
			Tune: env.tuneOptions(), Final: env.Opts.Run, MaxBufferBytes: env.Opts.MaxBufferBytes, Log: env.Opts.Log})
	}, (*PrefillResult).benchResults, WritePrefillTable)
}

// runPerThreads runs a self-storing suite once per thread count of the
// options: it collects the results (the table and the detail), hands their
// rows back as Stored, and stops at the first error with the results so
// far (those of the failing count included).
func runPerThreads[R any](ctx context.Context, env *Env, suite string, run func(ctx context.Context, threads int) ([]R, error),
	rows func(r *R, device string) []tuningdb.BenchResult, table func(io.Writer, []R) error) (EntryResult, error) {
	res := EntryResult{Suite: suite}
	var all []R
	var err error
	for _, th := range env.Opts.Threads {
		var rs []R
		rs, err = run(ctx, th)
		all = append(all, rs...)
		for i := range rs {
			res.Stored = append(res.Stored, rows(&rs[i], env.Device.Hash)...)
		}
		if err != nil {
			break
		}
	}
	res.Detail = all
	res.Table = func(w io.Writer) error { return table(w, all) }
	return res, err
}

// runLayer measures the decode layer with the best-known schedules of
// env.Lookup (it does not tune: tune the model first, or run quant/paged
// whose tunes land in the same database). DecodeLayer stores nothing, so
// its rows go back as Rows.
func runLayer(ctx context.Context, env *Env) (EntryResult, error) {
	res := EntryResult{Suite: SuiteLayer}
	var all []*LayerResult
	var err error
	for _, th := range env.Opts.Threads {
		var r *LayerResult
		r, err = DecodeLayer(ctx, env.Target, env.Roofline, env.Results, LayerOptions{Preset: env.Opts.LayerPreset,
			Batch: env.Opts.LayerBatch, Context: env.Opts.LayerContext, Threads: th, Run: env.Opts.Run, Seed: env.Opts.Seed,
			Lookup: env.Lookup, MaxBufferBytes: env.Opts.MaxBufferBytes, Log: env.Opts.Log})
		if r != nil {
			all = append(all, r)
			res.Rows = append(res.Rows, layerRows(r)...)
		}
		if err != nil {
			break
		}
	}
	res.Detail = all
	res.Table = func(w io.Writer) error {
		for _, r := range all {
			if err := WriteLayerTable(w, r); err != nil {
				return err
			}
		}
		return nil
	}
	return res, err
}

// layerRows are the layer's totals — fused, unfused and the faster of the
// two per group — default and tuned, and fused over unfused. A total with
// a group missing (an alternative without a kernel or a failed
// measurement) is a different sum, not a slower layer: it is not stored.
func layerRows(r *LayerResult) []tuningdb.BenchResult {
	base := fmt.Sprintf("DecodeLayer/%s/layer=%d,B=%d,ctx=%d/threads=%d", r.Preset, r.Layer, r.Batch, r.Context, r.Threads)
	extra, _ := json.Marshal(r)
	var out []tuningdb.BenchResult
	for _, c := range []struct {
		name string
		t    LayerTotal
	}{{"fused", r.Fused}, {"unfused", r.Unfused}, {"best", r.Best}} {
		if c.t.Missing > 0 || c.t.Groups == 0 {
			continue
		}
		for _, m := range []struct {
			metric string
			v      float64
		}{{"default_s", c.t.DefaultS}, {"tuned_s", c.t.TunedS}} {
			if m.v > 0 {
				out = append(out, tuningdb.BenchResult{Name: base + "/" + c.name, Metric: m.metric, Value: m.v, Unit: "s", Better: tuningdb.BetterLower})
			}
		}
	}
	if r.Fused.Missing == 0 && r.Unfused.Missing == 0 && r.Fused.TunedS > 0 && r.Unfused.TunedS > 0 {
		out = append(out, tuningdb.BenchResult{Name: base, Metric: "fused_over_unfused", Value: r.Unfused.TunedS / r.Fused.TunedS,
			Unit: "x", Better: tuningdb.BetterHigher})
	}
	if len(out) > 0 {
		out[0].Extra = extra
	}
	return out
}

// ParseQuantShapes reads "NxK" items, e.g. "4096x4096,14336x4096".
func ParseQuantShapes(items []string) ([]QuantShape, error) {
	var out []QuantShape
	for i, it := range items {
		it = strings.TrimSpace(it)
		if it == "" {
			return nil, fmt.Errorf("shape %d is empty: want NxK items separated by commas", i+1)
		}
		n, k, ok := strings.Cut(strings.ToLower(it), "x")
		nv, nerr := strconv.ParseInt(n, 10, 64)
		kv, kerr := strconv.ParseInt(k, 10, 64)
		if !ok || nerr != nil || kerr != nil || nv < 1 || kv < 1 || nv > MaxExtent || kv > MaxExtent {
			return nil, fmt.Errorf("shape %d %q: want NxK with N and K in 1..%d", i+1, it, MaxExtent)
		}
		out = append(out, QuantShape{N: nv, K: kv})
	}
	if len(out) == 0 {
		return nil, errors.New("no shapes given")
	}
	return out, nil
}

// MaxExtent bounds each extent the heavy suites take from their options
// (N and K, sequence lengths, contexts, block sizes): a product of a few
// of them stays inside an int64, so the --max-buffer-mib check sees a
// workload's true buffer sizes, not wrapped ones.
const MaxExtent = 1 << 24

// checkExtents rejects a list with a value outside 1..MaxExtent.
func checkExtents(what string, vs ...int64) error {
	for _, v := range vs {
		if v < 1 || v > MaxExtent {
			return fmt.Errorf("%s %d: want 1..%d", what, v, MaxExtent)
		}
	}
	return nil
}

// checkHeavy validates the heavy suites' options before anything is
// measured.
func (o SuiteOptions) checkHeavy() error {
	return errors.Join(checkExtents("block size", o.BlockSizes...), checkExtents("context", o.Contexts...),
		checkExtents("prefill sequence length", o.PrefillSeqs...))
}
