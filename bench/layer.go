package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kernels"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// LayerOptions configures DecodeLayer. Zero fields take the defaults noted.
type LayerOptions struct {
	// Preset is the built-in model (default "llama-3-8b"); it is imported
	// with f32 tensors, as the CPU kernels compute in f32.
	Preset string
	// Batch is the decode batch (default 1); Context the context length
	// every sequence's paged attention reads (default 2048).
	Batch, Context int64
	// Layer is the decoder layer measured (default 0).
	Layer int
	// Threads every kernel runs with (default 1).
	Threads int
	// Run is the timing protocol (zero: the protocol's defaults).
	Run target.RunOptions
	// Seed seeds the inputs (default 1).
	Seed uint64
	// Lookup answers best-known schedules (the user's database above the
	// precompiled one); nil: db alone, exact device, then a compatible
	// one, then the nearest shape bucket.
	Lookup *tuningdb.Layered
	// MaxBufferBytes refuses the layer when one of its kernels' buffers
	// exceed it (default 1 GiB), before anything is measured: a long
	// context or a large batch asks for a paged cache no machine holds,
	// and the harness would die allocating it.
	MaxBufferBytes int64
	// Log gets one line per measured workload (nil: none).
	Log io.Writer
}

func (o LayerOptions) withDefaults() LayerOptions {
	if o.Preset == "" {
		o.Preset = "llama-3-8b"
	}
	if o.Batch <= 0 {
		o.Batch = 1
	}
	if o.Context <= 0 {
		o.Context = 2048
	}
	o.Threads = max(o.Threads, 1)
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.MaxBufferBytes <= 0 {
		o.MaxBufferBytes = 1 << 30
	}
	return o
}

// LayerKernel is one distinct workload of the layer, measured once however
// many alternatives list it.
type LayerKernel struct {
	Name     string `json:"name"`
	Group    string `json:"group"`
	Workload string `json:"workload"` // ir workload key
	// NoKernel says why the library has no kernel for it (then nothing
	// was measured).
	NoKernel string `json:"no_kernel,omitempty"`
	// TunedFrom names where the tuned schedule came from ("user/exact",
	// "precompiled/compatible-device", …) or "default" when the database
	// knows none (then tuned = default: untuned); Note says why a record
	// was not used.
	TunedFrom string  `json:"tuned_from,omitempty"`
	Note      string  `json:"note,omitempty"`
	Bytes     float64 `json:"bytes"`
	FLOPs     float64 `json:"flops"`
	// DefaultS and TunedS are medians in seconds (0: failed, see the
	// measurements).
	DefaultS float64            `json:"default_s"`
	TunedS   float64            `json:"tuned_s"`
	Default  target.Measurement `json:"default"`
	Tuned    target.Measurement `json:"tuned"`
}

// OK reports whether both schedules were measured.
func (k *LayerKernel) OK() bool { return k.DefaultS > 0 && k.TunedS > 0 }

// LayerAlt is one alternative of a group: its kernels run one after the
// other, so its time is the sum of theirs.
type LayerAlt struct {
	Name      string   `json:"name"`      // "fused" or "unfused"
	Workloads []string `json:"workloads"` // kernel names, execution order
	Keys      []string `json:"keys"`      // ir workload keys, same order
	// Complete is true when every kernel exists and both its schedules
	// were measured; Missing says what is not, when not.
	Complete bool    `json:"complete"`
	Missing  string  `json:"missing,omitempty"`
	DefaultS float64 `json:"default_s"`
	TunedS   float64 `json:"tuned_s"`
	// Tuned counts the kernels with a best-known record (the others ran
	// their default as the tuned schedule).
	Tuned int     `json:"tuned"`
	Bytes float64 `json:"bytes"`
	// GBs is Bytes / TunedS; ReadFraction GBs / the roofline's read
	// bandwidth at the thread count (0: unknown).
	GBs          float64 `json:"gbs"`
	ReadFraction float64 `json:"read_fraction"`
}

// LayerGroup is one kernel group of the layer.
type LayerGroup struct {
	Pattern      string     `json:"pattern"` // "" for a single op
	Ops          []string   `json:"ops"`
	Alternatives []LayerAlt `json:"alternatives"` // fused first, unfused last
}

// Alt returns the alternative of that name, or nil.
func (g *LayerGroup) Alt(name string) *LayerAlt {
	for i := range g.Alternatives {
		if g.Alternatives[i].Name == name {
			return &g.Alternatives[i]
		}
	}
	return nil
}

// LayerTotal is the layer's time under one choice of alternatives.
type LayerTotal struct {
	DefaultS float64 `json:"default_s"`
	TunedS   float64 `json:"tuned_s"`
	// Groups is the number of groups summed; Missing those left out
	// because the chosen alternative is not complete.
	Groups  int `json:"groups"`
	Missing int `json:"missing"`
}

// LayerResult is one decoder layer, per group and in total.
type LayerResult struct {
	Preset  string `json:"preset"`
	Layer   int    `json:"layer"`
	Batch   int64  `json:"batch"`
	Context int64  `json:"context"`
	Threads int    `json:"threads"`
	Device  string `json:"device"`
	// ReadGBs is the roofline's read bandwidth at Threads (0: unknown).
	ReadGBs float64       `json:"read_gbs"`
	Groups  []LayerGroup  `json:"groups"`
	Kernels []LayerKernel `json:"kernels"` // distinct workloads, first occurrence order
	// Fused takes each group's fused alternative (its only one when it
	// has no pattern), Unfused the unfused one, Best the faster complete
	// alternative of each group (the default and tuned columns each take
	// their own minimum).
	Fused   LayerTotal `json:"fused"`
	Unfused LayerTotal `json:"unfused"`
	Best    LayerTotal `json:"best"`
}

// DecodeLayer measures one decoder layer of a preset's decode function:
// it partitions the function into kernel groups (ir.Partition), keeps the
// groups of the layer (see layerOfGroups), makes a kernel for every
// distinct workload of their alternatives (workloads without one are
// reported, not fatal), measures each in one harness batch — rule-based
// default and best-known schedule, twice in mirrored order — and sums the
// groups into the layer's time fused and unfused, default and tuned.
func DecodeLayer(ctx context.Context, tg *cpu.Target, roof *cpu.Roofline, db *tuningdb.DB, o LayerOptions) (*LayerResult, error) {
	o = o.withDefaults()
	cfg, err := hf.PresetConfig(o.Preset)
	if err != nil {
		return nil, fmt.Errorf("decode layer: %w", err)
	}
	if o.Layer < 0 || int64(o.Layer) >= cfg.NumHiddenLayers {
		return nil, fmt.Errorf("decode layer: layer %d outside 0..%d of %s", o.Layer, cfg.NumHiddenLayers-1, o.Preset)
	}
	m, err := hf.Import(cfg, o.Preset, hf.Options{DecodeBatch: o.Batch, DecodeContext: o.Context, DType: "f32"})
	if err != nil {
		return nil, fmt.Errorf("decode layer: import preset %s: %w", o.Preset, err)
	}
	var fn *ir.Func
	for _, f := range m.Funcs {
		if f.Name == "decode" {
			fn = f
		}
	}
	if fn == nil {
		return nil, fmt.Errorf("decode layer: preset %s has no decode function", o.Preset)
	}
	groups, err := ir.Partition(&ir.Module{Name: m.Name, Attrs: m.Attrs, Funcs: []*ir.Func{fn}}, nil)
	if err != nil {
		return nil, fmt.Errorf("decode layer: partition %s: %w", o.Preset, err)
	}
	layerOf, err := layerOfGroups(fn, groups)
	if err != nil {
		return nil, fmt.Errorf("decode layer: %s: %w", o.Preset, err)
	}
	for gi, g := range groups {
		if layerOf[gi] != o.Layer {
			continue
		}
		for _, a := range g.Alternatives {
			for _, w := range a.Workloads {
				// A workload without a kernel is reported by the
				// measurement below, not refused here.
				if k, err := kernels.FromWorkload(w); err == nil {
					if err := checkBuffers(k, o.MaxBufferBytes); err != nil {
						return nil, fmt.Errorf("decode layer %d of %s (batch %d, context %d): %w", o.Layer, o.Preset, o.Batch, o.Context, err)
					}
				}
			}
		}
	}

	dev := search.DeviceOf(tg.CPU(), roof)
	lookup := o.Lookup
	if lookup == nil && db != nil {
		l := tuningdb.NewLayered(db, nil)
		lookup = &l
	}
	env := &Env{Target: tg, Roofline: roof, Device: dev, Lookup: lookup}
	r := &LayerResult{Preset: o.Preset, Layer: o.Layer, Batch: o.Batch, Context: o.Context, Threads: o.Threads, Device: dev.Hash}
	if roof != nil {
		if pt, ok := roof.At(o.Threads); ok {
			r.ReadGBs = pt.ReadGBs
		}
	}
	index := map[string]int{} // ir workload key → r.Kernels
	for gi, g := range groups {
		if layerOf[gi] != o.Layer {
			continue
		}
		lg := LayerGroup{Pattern: g.Pattern, Ops: g.Ops}
		for _, a := range g.Alternatives {
			la := LayerAlt{Name: a.Name, Complete: true}
			var missing []string
			for _, w := range a.Workloads {
				key := w.Key()
				ki, seen := index[key]
				if !seen {
					lk, err := measureLayerKernel(ctx, env, w, o)
					if err != nil {
						return r, fmt.Errorf("decode layer %d of %s: %s: %w", o.Layer, o.Preset, w.Name(), err)
					}
					ki = len(r.Kernels)
					index[key] = ki
					r.Kernels = append(r.Kernels, *lk)
					if o.Log != nil {
						fmt.Fprintf(o.Log, "%s: %s\n", lk.Name, lk.summary())
					}
				}
				k := &r.Kernels[ki]
				la.Workloads = append(la.Workloads, k.Name)
				la.Keys = append(la.Keys, key)
				la.Bytes += k.Bytes
				la.DefaultS += k.DefaultS
				la.TunedS += k.TunedS
				if k.TunedFrom != "" && k.TunedFrom != "default" {
					la.Tuned++
				}
				switch {
				case k.NoKernel != "":
					missing = append(missing, "no kernel for "+k.Group)
				case !k.OK():
					missing = append(missing, k.Name+" failed")
				}
			}
			if len(missing) > 0 {
				la.Complete, la.Missing = false, strings.Join(missing, "; ")
				la.DefaultS, la.TunedS = 0, 0
			}
			if la.Complete {
				la.GBs = la.Bytes / la.TunedS / 1e9
				if r.ReadGBs > 0 {
					la.ReadFraction = la.GBs / r.ReadGBs
				}
			}
			lg.Alternatives = append(lg.Alternatives, la)
		}
		r.Groups = append(r.Groups, lg)
	}
	if len(r.Groups) == 0 {
		return r, fmt.Errorf("decode layer %d of %s: no kernel group belongs to the layer", o.Layer, o.Preset)
	}
	r.total()
	return r, nil
}

// total sums the groups into the fused, unfused and best totals.
func (r *LayerResult) total() {
	add := func(t *LayerTotal, a *LayerAlt) {
		if a == nil || !a.Complete {
			t.Missing++
			return
		}
		t.Groups++
		t.DefaultS += a.DefaultS
		t.TunedS += a.TunedS
	}
	r.Fused, r.Unfused, r.Best = LayerTotal{}, LayerTotal{}, LayerTotal{}
	for i := range r.Groups {
		g := &r.Groups[i]
		// Alternatives list fused first, so a group without a pattern
		// (only "unfused") counts its one alternative in both totals.
		add(&r.Fused, &g.Alternatives[0])
		add(&r.Unfused, g.Alt("unfused"))
		best := LayerAlt{DefaultS: math.Inf(1), TunedS: math.Inf(1)}
		for _, a := range g.Alternatives {
			if a.Complete {
				best.Complete = true
				best.DefaultS = min(best.DefaultS, a.DefaultS)
				best.TunedS = min(best.TunedS, a.TunedS)
			}
		}
		add(&r.Best, &best)
	}
}

// measureLayerKernel makes the workload's kernel and measures its default
// and best-known schedules in one batch (a workload without a kernel comes
// back with NoKernel set, not as an error).
func measureLayerKernel(ctx context.Context, env *Env, w ir.Workload, o LayerOptions) (*LayerKernel, error) {
	lk := &LayerKernel{Name: w.Name(), Group: strings.Join(w.Group, "+"), Workload: w.Key()}
	k, err := kernels.FromWorkload(w)
	if err != nil {
		// A malformed workload is a kernel the library cannot make either:
		// the layer is still measured, and the reason shown.
		lk.NoKernel = err.Error()
		if !errors.Is(err, kernels.ErrNoKernel) {
			lk.NoKernel = "kernel error: " + err.Error()
		}
		return lk, nil
	}
	lk.Name, lk.Bytes, lk.FLOPs = k.Name(), k.Bytes(), k.FLOPs()
	p, err := search.NewProblem(k, o.Seed)
	if err != nil {
		return nil, err
	}
	hw := search.CPUHardware(env.Target.CPU(), o.Threads)
	def, err := search.DefaultSchedule(k, hw)
	if err != nil {
		return nil, err
	}
	best, from, note, err := bestKnown(ctx, env, k, o.Threads, def)
	if err != nil {
		return nil, err
	}
	lk.TunedFrom, lk.Note = from, note
	c, err := compareKnown(ctx, env.Target, p, k, scheduleFor{def, hw}, scheduleFor{best, hw}, "tuned", o.Run)
	if err != nil {
		return nil, err
	}
	lk.Default, lk.Tuned = c.defaultM, c.bestM
	lk.DefaultS, lk.TunedS = okMedian(lk.Default), okMedian(lk.Tuned)
	return lk, nil
}

func (k *LayerKernel) summary() string {
	if k.NoKernel != "" {
		return k.NoKernel
	}
	s := fmt.Sprintf("default %s ms, tuned %s ms (%s)", ms(k.DefaultS), ms(k.TunedS), k.TunedFrom)
	for _, m := range []target.Measurement{k.Default, k.Tuned} {
		if !m.OK() {
			s += fmt.Sprintf(", %s: %s", m.Status, m.Error)
			break
		}
	}
	return s
}

// ssaNumber reads the N of a group's op line "%N = llmir.x" (or "%N:2 = …").
var ssaNumber = regexp.MustCompile(`^%(\d+)[ :]`)

// layerOfGroups assigns every group of f's partition the decoder layer it
// belongs to, or -1 (embedding, final norm, lm_head, argmax).
//
// The partition names its ops by their SSA number ("%5 = llmir.linear"),
// numbered as the printer does: ops with results, in body order. An op
// belongs to the layer of the weights it reads directly, when it reads any
// (llmir.param named "model.layers.N.…" → N, any other param → -1: the
// embedding table, the final norm and the head are outside every layer),
// else to the layer its "layer" attribute names (append_kv,
// paged_attention), else to the latest layer among its operands' ops: a
// rope, a residual add or silu·mul takes the layer of the projection it
// consumes. A group belongs to the latest layer of its ops. Param names
// rather than group positions, so that a model whose layers partition
// differently (a pattern matched in one layer only) still selects right.
func layerOfGroups(f *ir.Func, groups []ir.Group) ([]int, error) {
	layer := map[*ir.Op]int{}
	byNumber := map[int]*ir.Op{}
	next := 0
	for _, op := range f.Body {
		if op.Name == ir.ReturnName || len(op.Results) == 0 {
			continue
		}
		byNumber[next] = op
		next++
		if op.Name == "llmir.param" {
			layer[op] = paramLayer(op.Attrs.Str("name", ""))
			continue
		}
		l, direct := -1, false
		for _, v := range op.Operands {
			if v.Def != nil && v.Def.Name == "llmir.param" {
				l, direct = max(l, layer[v.Def]), true
			}
		}
		if !direct {
			if a, ok := op.Attrs.Get("layer"); ok {
				if n, ok := a.(ir.IntAttr); ok {
					l, direct = int(n.V), true
				}
			}
		}
		if !direct {
			for _, v := range op.Operands {
				if v.Def != nil {
					l = max(l, layer[v.Def])
				}
			}
		}
		layer[op] = l
	}
	out := make([]int, len(groups))
	for gi, g := range groups {
		out[gi] = -1
		for _, line := range g.Ops {
			sm := ssaNumber.FindStringSubmatch(line)
			if sm == nil {
				return nil, fmt.Errorf("group %d: op %q has no SSA number", gi, line)
			}
			n, _ := strconv.Atoi(sm[1])
			op, ok := byNumber[n]
			if !ok || !strings.HasSuffix(line, " "+op.Name) {
				return nil, fmt.Errorf("group %d: op %q is not %%%d of @%s", gi, line, n, f.Name)
			}
			out[gi] = max(out[gi], layer[op])
		}
	}
	return out, nil
}

// paramLayer is N of "model.layers.N.…", else -1.
func paramLayer(name string) int {
	rest, ok := strings.CutPrefix(name, "model.layers.")
	if !ok {
		return -1
	}
	num, _, ok := strings.Cut(rest, ".")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 0 {
		return -1
	}
	return n
}

// WriteLayerTable prints the per-group table (one row per alternative)
// and the four totals and the best.
func WriteLayerTable(w io.Writer, r *LayerResult) error {
	fmt.Fprintf(w, "%s decode layer %d, batch %d, context %d, %d thread(s)", r.Preset, r.Layer, r.Batch, r.Context, r.Threads)
	if r.ReadGBs > 0 {
		fmt.Fprintf(w, ", read roofline %.1f GB/s", r.ReadGBs)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "group\tpattern\talternative\tworkloads\tdefault ms\ttuned ms\ttuned from db\tGB/s\t% read BW\t")
	for i, g := range r.Groups {
		pattern := g.Pattern
		if pattern == "" {
			pattern = "single"
		}
		for _, a := range g.Alternatives {
			if !a.Complete {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t-\t-\t-\t-\t-\t(%s)\n", i, pattern, a.Name, strings.Join(a.Workloads, " + "), a.Missing)
				continue
			}
			frac := "-"
			if a.ReadFraction > 0 {
				frac = fmt.Sprintf("%.0f%%", 100*a.ReadFraction)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%.4f\t%.4f\t%d/%d\t%.1f\t%s\t\n", i, pattern, a.Name, strings.Join(a.Workloads, " + "),
				1e3*a.DefaultS, 1e3*a.TunedS, a.Tuned, len(a.Workloads), a.GBs, frac)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "layer total\tdefault ms\ttuned ms\tgroups\t")
	for _, t := range []struct {
		name string
		t    LayerTotal
	}{{"fused", r.Fused}, {"unfused", r.Unfused}, {"best per group", r.Best}} {
		note := ""
		if t.t.Missing > 0 {
			note = fmt.Sprintf(" (%d without a complete alternative left out)", t.t.Missing)
		}
		fmt.Fprintf(tw, "%s\t%.4f\t%.4f\t%d%s\t\n", t.name, 1e3*t.t.DefaultS, 1e3*t.t.TunedS, t.t.Groups, note)
	}
	return tw.Flush()
}
