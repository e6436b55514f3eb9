package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kernels"
	"llmir/search"
	"llmir/target/cpu"
	"llmir/target/cpu/cputest"
	"llmir/tuningdb"
)

// TestLayerOfGroups checks the layer selection without measuring: every
// layer of a preset gets the same number of groups with the same patterns
// in the same order, and only the embedding, the head (final norm + lm_head)
// and argmax are outside the layers.
func TestLayerOfGroups(t *testing.T) {
	for _, c := range []struct {
		preset   string
		layers   int
		perLayer int
		outside  int
	}{
		{"llama-tiny", 2, 10, 3},
		{"llama-3-8b", 32, 10, 3},
		{"qwen2-7b", 28, -1, 3}, // biased q/k/v: other patterns, checked for consistency only
	} {
		t.Run(c.preset, func(t *testing.T) {
			m, err := hf.ImportPreset(c.preset, hf.Options{})
			if err != nil {
				t.Fatal(err)
			}
			fn := m.Funcs[1]
			if fn.Name != "decode" {
				t.Fatalf("second function is @%s", fn.Name)
			}
			groups, err := ir.Partition(&ir.Module{Funcs: []*ir.Func{fn}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			of, err := layerOfGroups(fn, groups)
			if err != nil {
				t.Fatal(err)
			}
			patterns := map[int][]string{}
			for gi, l := range of {
				if l < -1 || l >= c.layers {
					t.Fatalf("group %d %v: layer %d", gi, groups[gi].Ops, l)
				}
				patterns[l] = append(patterns[l], groups[gi].Pattern)
			}
			if len(patterns[-1]) != c.outside {
				t.Errorf("%d groups outside the layers, want %d: %v", len(patterns[-1]), c.outside, patterns[-1])
			}
			for l := range c.layers {
				if c.perLayer > 0 && len(patterns[l]) != c.perLayer {
					t.Errorf("layer %d: %d groups, want %d", l, len(patterns[l]), c.perLayer)
				}
				if strings.Join(patterns[l], ",") != strings.Join(patterns[0], ",") {
					t.Errorf("layer %d patterns %v, layer 0 %v", l, patterns[l], patterns[0])
				}
			}
			// Layers come in order: group positions increase with the layer.
			last := -1
			for gi, l := range of {
				if l >= 0 && l < last {
					t.Errorf("group %d of layer %d after a group of layer %d", gi, l, last)
				}
				last = max(last, l)
			}
		})
	}
}

func TestParamLayer(t *testing.T) {
	for name, want := range map[string]int{
		"model.layers.0.mlp.up_proj.weight": 0,
		"model.layers.31.input_layernorm":   31,
		"model.layers.x.mlp":                -1,
		"model.layers.7":                    -1,
		"model.norm.weight":                 -1,
		"lm_head.weight":                    -1,
	} {
		if got := paramLayer(name); got != want {
			t.Errorf("paramLayer(%q) = %d, want %d", name, got, want)
		}
	}
}

func TestDecodeLayerBadOptions(t *testing.T) {
	ctx := context.Background()
	for _, o := range []LayerOptions{
		{Preset: "llama-tiny", Layer: 2},
		{Preset: "llama-tiny", Layer: -1},
		{Preset: "no-such-model"},
	} {
		// Rejected before anything is built: no target needed.
		if _, err := DecodeLayer(ctx, nil, nil, nil, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	// A context whose paged cache no machine holds (about 477 GiB here),
	// and a cap below llama-tiny's smallest kernel: refused before
	// anything is measured, naming the kernel and the flag, where the
	// harness would die allocating the buffers.
	for _, o := range []LayerOptions{
		{Preset: "llama-tiny", Context: 1e9},
		{Preset: "llama-tiny", MaxBufferBytes: 1 << 10},
	} {
		_, err := DecodeLayer(ctx, nil, nil, nil, o)
		if err == nil || !strings.Contains(err.Error(), "MiB cap (--max-buffer-mib)") {
			t.Errorf("context %d, cap %d: error %v, want the buffer cap", o.Context, o.MaxBufferBytes, err)
		}
	}
}

// TestDecodeLayer measures llama-tiny's layer 0 with a tiny protocol after
// a short tune of one workload (the o-projection's fused linear+add): that
// workload's record must be used, every other kernel is untuned (tuned =
// default). It checks the structure and the sums, never the timings.
func TestDecodeLayer(t *testing.T) {
	ctx, tg, roof, db, quick := SuiteTestSetup(t, 1)

	m, err := hf.ImportPreset("llama-tiny", hf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gs, err := ir.Partition(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	var w ir.Workload
	for _, g := range gs {
		if g.Func == "decode" && g.Pattern == ir.PatternLinearAdd {
			w = g.Alternatives[0].Workloads[0]
			break
		}
	}
	tunedKey := w.Key()
	k, err := kernels.FromWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	p, err := search.NewProblem(k, 1)
	if err != nil {
		t.Fatal(err)
	}
	tuner := search.NewCPUTuner(tg, roof, db, search.Options{Budget: search.Budget{Trials: 2}, Run: quick, Confirm: -1, LLMIRVersion: "test"})
	if _, err := tuner.Tune(ctx, search.Task{Kernel: k, Threads: 1}, p); err != nil {
		t.Fatal(err)
	}

	var log bytes.Buffer
	r, err := DecodeLayer(ctx, tg, roof, db, LayerOptions{Preset: "llama-tiny", Context: 100, Threads: 1, Run: quick, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	checkLayer(t, r)
	if r.Context != 100 || r.Batch != 1 || r.Preset != "llama-tiny" || r.ReadGBs <= 0 {
		t.Errorf("result header %+v", r)
	}
	if n := strings.Count(log.String(), "\n"); n != len(r.Kernels) {
		t.Errorf("%d log lines for %d kernels:\n%s", n, len(r.Kernels), log.String())
	}
	found := false
	for _, k := range r.Kernels {
		want := "default"
		if k.Workload == tunedKey {
			want, found = tuningdb.LayerUser+"/exact", true
		}
		if k.NoKernel == "" && k.TunedFrom != want {
			t.Errorf("%s: tuned from %q, want %q (%s)", k.Name, k.TunedFrom, want, k.Note)
		}
		if want == "default" && k.TunedS != k.DefaultS {
			t.Errorf("%s: untuned, yet tuned %g s vs default %g s", k.Name, k.TunedS, k.DefaultS)
		}
	}
	if !found {
		t.Errorf("tuned workload %s not in the layer", w.Name())
	}
	for _, g := range r.Groups {
		for _, a := range g.Alternatives {
			want := 0
			for _, key := range a.Keys {
				if key == tunedKey {
					want++
				}
			}
			if a.Tuned != want {
				t.Errorf("%s %s: %d tuned kernels, want %d", g.Pattern, a.Name, a.Tuned, want)
			}
		}
	}

	var out bytes.Buffer
	if err := WriteLayerTable(&out, r); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, s := range []string{"llama-tiny decode layer 0", "linear+add", "gate_up+silu_mul", "linear+rope+append_kv", "best per group"} {
		if !strings.Contains(text, s) {
			t.Errorf("table has no %q:\n%s", s, text)
		}
	}
	// One row per alternative, plus the headers and totals.
	rows := 0
	for _, g := range r.Groups {
		rows += len(g.Alternatives)
	}
	if n := strings.Count(text, "\n"); n != 1+1+rows+1+1+3 {
		t.Errorf("%d lines for %d alternative rows:\n%s", n, rows, text)
	}
	t.Logf("\n%s", text)
}

// BenchmarkDecodeLayer measures one decode layer of llama-3-8b (f32,
// batch 1, context 2048) at 1 and 2 threads with the full timing protocol,
// tuned = the best-known records of the user's database
// ($LLMIR_DB, else ~/.cache/llmir/tuning.db) above the precompiled one,
// and prints the table. The layer's f32 weights are about 0.9 GB: one
// iteration takes minutes, so run it once:
//
//	go test ./bench -run '^$' -bench 'DecodeLayer/llama-3-8b/.*/threads=1$' -benchtime 1x -v
func BenchmarkDecodeLayer(b *testing.B) {
	cputest.Need(b, "gcc")
	ctx := context.Background()
	tg, err := cpu.New(ctx, cpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	roof, err := tg.Roofline(ctx)
	if err != nil {
		b.Fatal(err)
	}
	path := os.Getenv("LLMIR_DB")
	if path == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			b.Fatal(err)
		}
		path = filepath.Join(dir, "llmir", "tuning.db")
	}
	stack, err := tuningdb.OpenStack(ctx, path, true)
	if err != nil {
		b.Fatal(err)
	}
	defer stack.Close()
	for _, preset := range []string{"llama-3-8b"} {
		for _, threads := range []int{1, 2} {
			o := LayerOptions{Preset: preset, Batch: 1, Context: 2048, Threads: threads, Lookup: &stack.Layered}
			if testing.Verbose() {
				o.Log = os.Stderr
			}
			b.Run(fmt.Sprintf("%s/batch=%d,context=%d/threads=%d", preset, o.Batch, o.Context, threads), func(b *testing.B) {
				var r *LayerResult
				for b.Loop() {
					if r, err = DecodeLayer(ctx, tg, roof, nil, o); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(1e3*r.Fused.DefaultS, "fused-default-ms")
				b.ReportMetric(1e3*r.Fused.TunedS, "fused-tuned-ms")
				b.ReportMetric(1e3*r.Unfused.DefaultS, "unfused-default-ms")
				b.ReportMetric(1e3*r.Unfused.TunedS, "unfused-tuned-ms")
				b.ReportMetric(1e3*r.Best.TunedS, "best-ms")
				var out bytes.Buffer
				if err := WriteLayerTable(&out, r); err != nil {
					b.Fatal(err)
				}
				b.Logf("\n%s", out.String())
			})
		}
	}
}

// checkLayer checks a llama-tiny layer result: the partition's groups of
// one layer, fused and unfused both present where there is a pattern, the
// alternatives' sums and the totals recomputed from the groups.
func checkLayer(t *testing.T, r *LayerResult) {
	t.Helper()
	if len(r.Groups) != 10 {
		t.Fatalf("%d groups, want llama's 10 per decode layer", len(r.Groups))
	}
	byKey := map[string]LayerKernel{}
	for _, k := range r.Kernels {
		if _, dup := byKey[k.Workload]; dup {
			t.Errorf("workload %s measured twice", k.Name)
		}
		byKey[k.Workload] = k
	}
	var fused, unfused, best LayerTotal
	patterns := 0
	for gi, g := range r.Groups {
		names := []string{}
		for _, a := range g.Alternatives {
			names = append(names, a.Name)
		}
		want := "unfused"
		if g.Pattern != "" {
			want = "fused,unfused"
			patterns++
		}
		if strings.Join(names, ",") != want {
			t.Errorf("group %d %q: alternatives %v, want %s", gi, g.Pattern, names, want)
		}
		b := math.Inf(1)
		bd := math.Inf(1)
		for _, a := range g.Alternatives {
			var d, tu, bytes float64
			complete := true
			for _, key := range a.Keys {
				k, ok := byKey[key]
				if !ok {
					t.Fatalf("group %d %s: workload %s not among the kernels", gi, a.Name, key)
				}
				complete = complete && k.NoKernel == "" && k.OK()
				d, tu, bytes = d+k.DefaultS, tu+k.TunedS, bytes+k.Bytes
			}
			if complete != a.Complete || (!complete && a.Missing == "") {
				t.Errorf("group %d %s: complete %v, kernels say %v (%q)", gi, a.Name, a.Complete, complete, a.Missing)
			}
			// The fused kernels are all in the library: both alternatives
			// of every pattern must be timed.
			if g.Pattern != "" && a.Name == "fused" && !a.Complete {
				t.Errorf("group %d %s: fused alternative not measured: %s", gi, g.Pattern, a.Missing)
			}
			if !a.Complete {
				continue
			}
			if !near(a.DefaultS, d) || !near(a.TunedS, tu) || a.Bytes != bytes || !near(a.GBs, bytes/tu/1e9) || a.ReadFraction <= 0 {
				t.Errorf("group %d %s: %+v, kernels sum to default %g tuned %g bytes %g", gi, a.Name, a, d, tu, bytes)
			}
			b, bd = min(b, a.TunedS), min(bd, a.DefaultS)
		}
		addTo := func(tot *LayerTotal, a *LayerAlt) {
			if a == nil || !a.Complete {
				tot.Missing++
				return
			}
			tot.Groups++
			tot.DefaultS += a.DefaultS
			tot.TunedS += a.TunedS
		}
		addTo(&fused, &g.Alternatives[0])
		addTo(&unfused, &g.Alternatives[len(g.Alternatives)-1])
		if !math.IsInf(b, 1) {
			addTo(&best, &LayerAlt{Complete: true, DefaultS: bd, TunedS: b})
		} else {
			best.Missing++
		}
	}
	if patterns != 4 {
		t.Errorf("%d groups with a pattern, want 4 (rope+append, o+add, gate_up, down+add)", patterns)
	}
	for _, c := range []struct {
		name      string
		got, want LayerTotal
	}{{"fused", r.Fused, fused}, {"unfused", r.Unfused, unfused}, {"best", r.Best, best}} {
		if c.got.Groups != c.want.Groups || c.got.Missing != c.want.Missing || !near(c.got.DefaultS, c.want.DefaultS) || !near(c.got.TunedS, c.want.TunedS) {
			t.Errorf("%s total %+v, groups add up to %+v", c.name, c.got, c.want)
		}
		if c.got.Groups+c.got.Missing != len(r.Groups) {
			t.Errorf("%s total covers %d+%d of %d groups", c.name, c.got.Groups, c.got.Missing, len(r.Groups))
		}
	}
	if r.Best.Missing+r.Fused.Missing+r.Unfused.Missing == 0 && (r.Best.TunedS > r.Fused.TunedS*(1+1e-12) || r.Best.TunedS > r.Unfused.TunedS*(1+1e-12)) {
		t.Errorf("best %g s is slower than fused %g s or unfused %g s", r.Best.TunedS, r.Fused.TunedS, r.Unfused.TunedS)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12*max(math.Abs(a), math.Abs(b)) }

// TestLayerTotalsMissing checks what a layer with a kernel missing sums
// to: a workload without a kernel is reported (not an error), its
// alternative is incomplete and left out of the totals that need it, and
// the best total takes the complete alternative.
func TestLayerTotalsMissing(t *testing.T) {
	w := ir.Workload{Group: []string{"llmir.all_reduce"}, Inputs: []ir.TensorSig{{DType: "f32", Shape: []int64{1, 8}}}, Output: []ir.TensorSig{{DType: "f32", Shape: []int64{1, 8}}}}
	lk, err := measureLayerKernel(context.Background(), nil, w, LayerOptions{}.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(lk.NoKernel, kernels.ErrNoKernel.Error()) || lk.OK() {
		t.Fatalf("no-kernel workload: %+v", lk)
	}
	r := &LayerResult{Preset: "x", Groups: []LayerGroup{
		{Pattern: "p", Alternatives: []LayerAlt{
			{Name: "fused", Workloads: []string{"f"}, Complete: true, DefaultS: 3, TunedS: 2},
			{Name: "unfused", Workloads: []string{"a", "b"}, Missing: "no kernel for llmir.all_reduce"},
		}},
		{Alternatives: []LayerAlt{{Name: "unfused", Workloads: []string{"c"}, Complete: true, DefaultS: 1, TunedS: 0.5}}},
	}}
	r.total()
	for _, c := range []struct {
		name      string
		got, want LayerTotal
	}{
		{"fused", r.Fused, LayerTotal{DefaultS: 4, TunedS: 2.5, Groups: 2}},
		{"unfused", r.Unfused, LayerTotal{DefaultS: 1, TunedS: 0.5, Groups: 1, Missing: 1}},
		{"best", r.Best, LayerTotal{DefaultS: 4, TunedS: 2.5, Groups: 2}},
	} {
		if c.got != c.want {
			t.Errorf("%s total %+v, want %+v", c.name, c.got, c.want)
		}
	}
	var out bytes.Buffer
	if err := WriteLayerTable(&out, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "(no kernel for llmir.all_reduce)") {
		t.Errorf("table does not say what is missing:\n%s", out.String())
	}
	totals := 0
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && (f[0] == "fused" || f[0] == "unfused") {
			totals++
			want := map[string]string{"fused": "4000.0000 2500.0000 2", "unfused": "1000.0000 500.0000 1 (1 without"}[f[0]]
			if got := strings.Join(f[1:min(len(f), 6)], " "); !strings.HasPrefix(got, want) {
				t.Errorf("%s total row %q, want %q", f[0], got, want)
			}
		}
	}
	if totals != 2 {
		t.Errorf("%d fused/unfused total rows:\n%s", totals, out.String())
	}
}
