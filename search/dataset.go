package search

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"llmir/costmodel"
	"llmir/ir"
	"llmir/target/cpu"
	"llmir/tuningdb"
)

// DatasetOptions select what ExportDataset writes.
type DatasetOptions struct {
	// Device is the hash of a CPU device of the database, or a prefix of
	// one that no other device shares (required).
	Device string
	// Workloads, when not empty, are the workload keys to export; the
	// device's other workloads are left out (the dataset generator passes
	// the workloads it measured, so that a database shared with tunes
	// contributes only its random pools).
	Workloads []string
}

// DatasetReport counts what ExportDataset wrote and what it left out.
type DatasetReport struct {
	Device         tuningdb.Device `json:"device"`
	CodegenVersion int             `json:"codegen_version"`
	// Examples is the number of lines written: one per distinct trace of
	// a workload with at least one ok record.
	Examples int `json:"examples"`
	// Workloads is the number of distinct workloads among them.
	Workloads int `json:"workloads"`
	// Defaults is the number of lines marked default (at most one per
	// workload: the kernel's rule-based schedule, if it was measured).
	Defaults int `json:"defaults"`
	// Repeats are further ok records of a trace already written (the
	// tuner's confirmation re-measures the fastest); the line's median is
	// the median of all its records' medians.
	Repeats int `json:"repeats"`
	// Failed are records not ok (build_error, runtime_error, timeout,
	// wrong_result), left out.
	Failed int `json:"failed"`
	// Stale are ok records left out because their trace no longer replays
	// on the kernel (or yields no finite features), or their workload has
	// no kernel any more; StaleReasons gives the first few.
	Stale        int      `json:"stale"`
	StaleReasons []string `json:"stale_reasons,omitempty"`
}

// maxStaleReasons bounds DatasetReport.StaleReasons.
const maxStaleReasons = 10

func (r *DatasetReport) stale(err error) {
	r.Stale++
	if len(r.StaleReasons) < maxStaleReasons && !slices.Contains(r.StaleReasons, err.Error()) {
		r.StaleReasons = append(r.StaleReasons, err.Error())
	}
}

// ErrEmptyDataset is returned by ExportDataset when no record qualifies.
var ErrEmptyDataset = errors.New("no measured candidate to export")

// ExportDataset writes the ok records of one CPU device at the CPU's
// codegen version as the cost model's evaluation dataset: JSON Lines of
// costmodel.Example (costmodel.WriteDataset), grouped by workload in the
// order the database first recorded them, candidates in measurement order.
// Each line carries the kernel's name and IR workload (rebuilt from the
// stored workload, whose threads attribute gives the thread count), the
// tuningdb key, the trace, the median, the costmodel.Device of the device's
// stored fingerprint and roofline at that thread count (CostDevice), and
// Default on the trace equal to the kernel's rule-based default on that
// hardware (DefaultSchedule, TraceKey) — the default of today's recipe,
// which may differ from the one the tuner measured first. Every line
// replays through ExampleFeatures, the evaluation's own path; records that
// do not are counted as stale, not fatal. The counts come back in the
// report; with nothing to write it returns ErrEmptyDataset and writes
// nothing.
func ExportDataset(ctx context.Context, db *tuningdb.DB, w io.Writer, o DatasetOptions) (DatasetReport, error) {
	dev, err := FindDevice(ctx, db, o.Device)
	if err != nil {
		return DatasetReport{}, err
	}
	be, err := cpuBackendOf(dev)
	if err != nil {
		return DatasetReport{}, err
	}
	rep := DatasetReport{Device: dev, CodegenVersion: be.CodegenVersion()}
	var only map[string]bool
	if len(o.Workloads) > 0 {
		only = map[string]bool{}
		for _, k := range o.Workloads {
			only[k] = true
		}
	}
	type line struct {
		ex      costmodel.Example
		medians []float64
	}
	type task struct {
		proto   costmodel.Example // Workload, Key, IR, Threads, Device
		defKey  string
		err     error
		lines   []*line
		byTrace map[string]*line
	}
	// The records are read first, without their samples: looking their
	// workloads up while the read is open would need a second connection,
	// which an in-memory database does not have.
	type okRecord struct {
		workload string
		trace    json.RawMessage
		median   float64
	}
	var recs []okRecord
	for r, err := range db.DeviceRecords(ctx, dev.Hash, rep.CodegenVersion) {
		if err != nil {
			return DatasetReport{}, fmt.Errorf("dataset: %w", err)
		}
		if only != nil && !only[r.WorkloadKey] {
			continue
		}
		if r.Status != tuningdb.StatusOK {
			rep.Failed++
			continue
		}
		recs = append(recs, okRecord{r.WorkloadKey, compact(r.Trace), r.Median})
	}
	tasks := map[string]*task{}
	var order []*task
	for _, r := range recs {
		tk := tasks[r.workload]
		if tk == nil {
			tk = &task{byTrace: map[string]*line{}}
			tk.proto, tk.defKey, tk.err = datasetTask(ctx, db, be, r.workload)
			tasks[r.workload] = tk
			order = append(order, tk)
		}
		if tk.err != nil {
			rep.stale(tk.err)
			continue
		}
		key := string(r.trace)
		if l := tk.byTrace[key]; l != nil {
			l.medians = append(l.medians, r.median)
			rep.Repeats++
			continue
		}
		ex := tk.proto
		ex.Trace, ex.Median, ex.Default = r.trace, r.median, key == tk.defKey
		if _, err := ExampleFeatures(ex); err != nil {
			rep.stale(fmt.Errorf("workload %.12s: %w", r.workload, err))
			continue
		}
		l := &line{ex: ex, medians: []float64{r.median}}
		tk.byTrace[key] = l
		tk.lines = append(tk.lines, l)
	}
	var out []costmodel.Example
	for _, tk := range order {
		if len(tk.lines) == 0 {
			continue
		}
		rep.Workloads++
		for _, l := range tk.lines {
			if len(l.medians) > 1 {
				slices.Sort(l.medians)
				l.ex.Median = tuningdb.Quantile(l.medians, 0.5)
			}
			if l.ex.Default {
				rep.Defaults++
			}
			out = append(out, l.ex)
		}
	}
	rep.Examples = len(out)
	if len(out) == 0 {
		return rep, fmt.Errorf("dataset of device %.16s at codegen version %d: %w (%d failed records, %d stale)",
			dev.Hash, rep.CodegenVersion, ErrEmptyDataset, rep.Failed, rep.Stale)
	}
	if err := costmodel.WriteDataset(w, out); err != nil {
		return rep, fmt.Errorf("dataset: %w", err)
	}
	return rep, nil
}

// datasetTask is what every line of a stored workload shares, and the
// trace key of its kernel's rule-based default ("" when the kernel has
// none); an error means the workload's records cannot become examples.
func datasetTask(ctx context.Context, db *tuningdb.DB, be Backend, key string) (costmodel.Example, string, error) {
	fail := func(err error) (costmodel.Example, string, error) {
		return costmodel.Example{}, "", fmt.Errorf("workload %.12s: %w", key, err)
	}
	stored, err := db.Workload(ctx, key)
	if err != nil {
		return fail(err)
	}
	var w ir.Workload
	if err := json.Unmarshal(stored.JSON, &w); err != nil {
		return fail(fmt.Errorf("stored workload JSON: %w", err))
	}
	// WorkloadOf added the thread count; the kernel's own workload lacks it.
	threads, err := strconv.Atoi(w.Attrs["threads"])
	if err != nil || threads < 1 {
		return fail(fmt.Errorf("stored workload has no thread count (attribute threads=%q)", w.Attrs["threads"]))
	}
	attrs := make(map[string]string, len(w.Attrs))
	for a, v := range w.Attrs {
		if a != "threads" {
			attrs[a] = v
		}
	}
	w.Attrs = attrs
	if len(attrs) == 0 {
		w.Attrs = nil
	}
	k, err := be.Kernel(w)
	if err != nil {
		return fail(err)
	}
	irJSON, err := json.Marshal(k.Workload())
	if err != nil {
		return fail(err)
	}
	hw := be.Hardware(threads)
	ex := costmodel.Example{Workload: k.Name(), Key: key, IR: irJSON, Threads: threads, Device: be.CostDevice(hw)}
	defKey := ""
	if s, err := DefaultSchedule(k, hw); err == nil {
		if tk, err := TraceKey(s); err == nil {
			defKey = string(tk)
		}
	}
	return ex, defKey, nil
}

// cpuBackendOf is the source-only CPU backend of a stored device: its
// fingerprint gives the design spaces' hardware, its stored roofline the
// cost model's ceilings, whatever machine exports it.
func cpuBackendOf(dev tuningdb.Device) (*CPUBackend, error) {
	if dev.Kind != tuningdb.KindCPU {
		return nil, fmt.Errorf("device %.16s is a %s device (%s): dataset examples are replayed as CPU loop nests, so only CPU devices export",
			dev.Hash, dev.Kind, dev.Compat)
	}
	dec := json.NewDecoder(bytes.NewReader(dev.Fingerprint))
	dec.DisallowUnknownFields()
	var fp cpu.Fingerprint
	if err := dec.Decode(&fp); err != nil || fp.Arch == "" {
		if err == nil {
			err = errors.New("no arch")
		}
		return nil, fmt.Errorf("device %.16s: stored fingerprint is not a CPU fingerprint of this llmir: %w", dev.Hash, err)
	}
	var roof *cpu.Roofline
	if len(dev.Roofline.Points) > 0 {
		roof = &cpu.Roofline{Fingerprint: dev.Hash, VectorBits: fp.VectorBits()}
		for _, p := range dev.Roofline.Points {
			roof.Points = append(roof.Points, cpu.RooflinePoint{Threads: p.Threads, PeakGFLOPs: p.PeakGFLOPS, ReadGBs: p.ReadGBps})
		}
	}
	return &CPUBackend{fp: &fp, roof: roof}, nil
}

// FindDevice is the stored device whose hash is prefix or starts with it.
// No match and several matches are errors that list the database's
// devices.
func FindDevice(ctx context.Context, db *tuningdb.DB, prefix string) (tuningdb.Device, error) {
	if prefix == "" {
		return tuningdb.Device{}, errors.New("device: no hash given")
	}
	if len(prefix) > 64 || strings.Trim(strings.ToLower(prefix), "0123456789abcdef") != "" {
		return tuningdb.Device{}, fmt.Errorf("device %q: want a device hash or a prefix of one (hex digits)", prefix)
	}
	prefix = strings.ToLower(prefix)
	st, err := db.Stats(ctx)
	if err != nil {
		return tuningdb.Device{}, err
	}
	var match []tuningdb.DeviceStats
	for _, d := range st.PerDevice {
		if strings.HasPrefix(d.Hash, prefix) {
			match = append(match, d)
		}
	}
	list := func(ds []tuningdb.DeviceStats) string {
		var b strings.Builder
		for _, d := range ds {
			fmt.Fprintf(&b, "\n  %.16s  %s %s, %d records (%d ok)", d.Hash, d.Kind, d.Compat, d.Records, d.OK)
		}
		return b.String()
	}
	switch len(match) {
	case 0:
		if len(st.PerDevice) == 0 {
			return tuningdb.Device{}, fmt.Errorf("device %s: not in the database, which holds no devices", prefix)
		}
		return tuningdb.Device{}, fmt.Errorf("device %s: not in the database; it holds:%s", prefix, list(st.PerDevice))
	case 1:
		return db.Device(ctx, match[0].Hash)
	}
	return tuningdb.Device{}, fmt.Errorf("device %s: prefix of %d devices, give more digits:%s", prefix, len(match), list(match))
}
