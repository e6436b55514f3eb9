package search_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"llmir/costmodel"
	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target/cpu"
	"llmir/target/cpu/cgen"
	"llmir/tuningdb"
)

// datasetFingerprint is a CPU that need not be this machine: the export
// works from the stored fingerprint and roofline alone.
func datasetFingerprint(model string) *cpu.Fingerprint {
	return &cpu.Fingerprint{
		Arch: "x86_64", Vendor: "AuthenticAMD", Model: model, ISA: []string{"avx2", "avx512f", "fma"}, Cores: 2,
		Caches:      []cpu.Cache{{Level: 1, Type: "Data", Bytes: 48 << 10}, {Level: 2, Type: "Unified", Bytes: 1 << 20}, {Level: 3, Type: "Unified", Bytes: 32 << 20}},
		CacheSource: "sysfs", Toolchain: cpu.Toolchain{Compiler: "gcc", Version: "14.2.0"},
	}
}

// TestExportDataset: a database with, for one device, a linear workload
// whose default was measured twice, one drawn schedule, a failed record and
// a record whose trace no longer replays, a second workload without its
// default, and a stored workload that has no kernel exports three lines:
// the default (flagged, its median the median of its two records), the
// draw, and the second workload's draw. The failed record is left out and
// counted; the unreplayable trace and the kernel-less workload are counted
// as stale with their reasons. ReadDataset reads the lines back and every
// one replays to features on the stored device.
func TestExportDataset(t *testing.T) {
	ctx := context.Background()
	db, err := tuningdb.Open(ctx, filepath.Join(t.TempDir(), "tuning.db"), tuningdb.Options{LLMIRVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	fp := datasetFingerprint("dataset test CPU")
	roof := &cpu.Roofline{Points: []cpu.RooflinePoint{{Threads: 1, PeakGFLOPs: 100, ReadGBs: 25}, {Threads: 2, PeakGFLOPs: 200, ReadGBs: 48}}}
	dev := search.DeviceOf(fp, roof)

	k1, k2 := kernels.Linear{M: 4, N: 64, K: 32}, kernels.Linear{M: 1, N: 96, K: 64}
	hw1, hw2 := search.CPUHardware(fp, 2), search.CPUHardware(fp, 1)
	def1, err := search.DefaultSchedule(k1, hw1)
	if err != nil {
		t.Fatal(err)
	}
	defKey, err := search.TraceKey(def1)
	if err != nil {
		t.Fatal(err)
	}
	drawn := distinctTraces(t, k1, hw1, 2)
	draw1, failed1 := string(drawn[0]), string(drawn[1])
	// A trace from before a design-space change: a decision past the
	// choices its sampling step offers today.
	tr, err := schedule.ParseTrace([]byte(draw1))
	if err != nil {
		t.Fatal(err)
	}
	step := -1
	for i, in := range tr.Insts {
		if in.Decision != nil {
			step = i
			break
		}
	}
	if step < 0 {
		t.Fatalf("%s: draw has no sampling step", k1.Name())
	}
	old, err := tr.WithDecision(step, []int64{99})
	if err != nil {
		t.Fatal(err)
	}
	d, err := k1.Def()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := schedule.Replay(d, old); err == nil {
		t.Fatal("the altered trace still replays; the test needs one that does not")
	}
	staleTrace, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	draw2 := string(distinctTraces(t, k2, hw2, 1)[0])

	wl1, wl2 := search.WorkloadOf(k1, 2), search.WorkloadOf(k2, 1)
	// A workload no kernel serves (an op group of a future llmir).
	gone := ir.Workload{Group: []string{"llmir.retired_op"}, Inputs: []ir.TensorSig{{Shape: []int64{8}, DType: "f32"}},
		Output: []ir.TensorSig{{Shape: []int64{8}, DType: "f32"}}, Attrs: map[string]string{"threads": "1"}}
	goneJSON := gone.CanonicalJSON()
	wl3 := tuningdb.Workload{Key: tuningdb.HashJSON(goneJSON), Family: gone.Family(), Group: "retired_op", JSON: goneJSON}

	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var recs []tuningdb.Record
	add := func(wl tuningdb.Workload, trace string, st tuningdb.Status, median float64) {
		r := tuningdb.Record{WorkloadKey: wl.Key, DeviceHash: dev.Hash, CodegenVersion: cgen.CodegenVersion,
			Trace: json.RawMessage(trace), Status: st, CreatedAt: t0.Add(time.Duration(len(recs)) * time.Second), LLMIRVersion: "test"}
		if st == tuningdb.StatusOK {
			r.Samples = []float64{median, median, median}
		} else {
			r.Error = "gcc: error"
		}
		recs = append(recs, r)
	}
	add(wl1, string(defKey), tuningdb.StatusOK, 2e-6)
	add(wl1, draw1, tuningdb.StatusOK, 1e-6)
	add(wl1, failed1, tuningdb.StatusBuildError, 0)
	add(wl1, string(staleTrace), tuningdb.StatusOK, 5e-7)
	add(wl2, draw2, tuningdb.StatusOK, 3e-6)
	add(wl3, draw2, tuningdb.StatusOK, 1e-6)
	add(wl1, string(defKey), tuningdb.StatusOK, 4e-6) // the tuner's confirmation
	if _, err := db.RecordBatch(ctx, tuningdb.Batch{Devices: []tuningdb.Device{dev}, Workloads: []tuningdb.Workload{wl1, wl2, wl3}, Records: recs}); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	rep, err := search.ExportDataset(ctx, db, &buf, search.DatasetOptions{Device: dev.Hash[:10]})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Device.Hash != dev.Hash || rep.CodegenVersion != cgen.CodegenVersion {
		t.Errorf("report device %.12s v%d, want %.12s v%d", rep.Device.Hash, rep.CodegenVersion, dev.Hash, cgen.CodegenVersion)
	}
	if rep.Examples != 3 || rep.Workloads != 2 || rep.Defaults != 1 || rep.Repeats != 1 || rep.Failed != 1 || rep.Stale != 2 {
		t.Errorf("report %+v, want 3 examples of 2 workloads, 1 default, 1 repeat, 1 failed, 2 stale", rep)
	}
	reasons := strings.Join(rep.StaleReasons, "\n")
	if len(rep.StaleReasons) != 2 || !strings.Contains(reasons, "replay") || !strings.Contains(reasons, "retired_op") {
		t.Errorf("stale reasons %q: want the replay failure and the workload without a kernel", rep.StaleReasons)
	}
	first := slices.Clone(buf.Bytes())
	ex, err := costmodel.ReadDataset(&buf)
	if err != nil {
		t.Fatal(err)
	}
	dev1, dev2 := search.CostDevice(hw1, roof), search.CostDevice(hw2, roof)
	want := []costmodel.Example{
		{Workload: k1.Name(), Key: wl1.Key, Threads: 2, Device: dev1, Trace: defKey, Median: 3e-6, Default: true},
		{Workload: k1.Name(), Key: wl1.Key, Threads: 2, Device: dev1, Trace: json.RawMessage(draw1), Median: 1e-6},
		{Workload: k2.Name(), Key: wl2.Key, Threads: 1, Device: dev2, Trace: json.RawMessage(draw2), Median: 3e-6},
	}
	if len(ex) != len(want) {
		t.Fatalf("%d examples, want %d", len(ex), len(want))
	}
	for i, w := range want {
		g := ex[i]
		if g.Workload != w.Workload || g.Key != w.Key || g.Threads != w.Threads || g.Device != w.Device ||
			string(g.Trace) != string(w.Trace) || g.Default != w.Default || fmt.Sprintf("%.4g", g.Median) != fmt.Sprintf("%.4g", w.Median) {
			t.Errorf("line %d:\n got %s %.12s t=%d %+v median %g default %v trace %.60s\nwant %s %.12s t=%d %+v median %g default %v trace %.60s",
				i+1, g.Workload, g.Key, g.Threads, g.Device, g.Median, g.Default, g.Trace, w.Workload, w.Key, w.Threads, w.Device, w.Median, w.Default, w.Trace)
		}
		k, err := search.ExampleKernel(g)
		if err != nil || k.Name() != w.Workload {
			t.Errorf("line %d: kernel from its ir: %v, %v", i+1, k, err)
		}
		if _, err := search.ExampleFeatures(g); err != nil {
			t.Errorf("line %d: %v", i+1, err)
		}
	}
	if dev1.PeakGFLOPs != 200 || dev2.ReadGBs != 25 {
		t.Errorf("cost devices %+v, %+v: want the stored roofline at each thread count", dev1, dev2)
	}

	// The same from an in-memory database (one connection: the export
	// must not query while it reads the records).
	mem, err := tuningdb.OpenMemory(ctx, tuningdb.Options{LLMIRVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if _, err := mem.RecordBatch(ctx, tuningdb.Batch{Devices: []tuningdb.Device{dev}, Workloads: []tuningdb.Workload{wl1, wl2, wl3}, Records: recs}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var memBuf bytes.Buffer
	go func() {
		_, err := search.ExportDataset(ctx, mem, &memBuf, search.DatasetOptions{Device: dev.Hash})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil || !bytes.Equal(memBuf.Bytes(), first) {
			t.Errorf("in-memory database: %v; export equal to the file database's: %v", err, bytes.Equal(memBuf.Bytes(), first))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("export from an in-memory database did not finish in 30 s")
	}

	// Only the workloads asked for.
	buf.Reset()
	rep, err = search.ExportDataset(ctx, db, &buf, search.DatasetOptions{Device: dev.Hash, Workloads: []string{wl2.Key}})
	if err != nil {
		t.Fatal(err)
	}
	if ex, err := costmodel.ReadDataset(&buf); err != nil || len(ex) != 1 || ex[0].Key != wl2.Key || rep.Failed != 0 || rep.Stale != 0 {
		t.Errorf("workload filter: %d examples (%v), report %+v; want the one line of %.12s", len(ex), err, rep, wl2.Key)
	}
	// Nothing to export is an error, and nothing is written.
	buf.Reset()
	if _, err := search.ExportDataset(ctx, db, &buf, search.DatasetOptions{Device: dev.Hash, Workloads: []string{wl3.Key}}); !errors.Is(err, search.ErrEmptyDataset) || buf.Len() != 0 {
		t.Errorf("only a stale workload: err %v, %d bytes written; want ErrEmptyDataset and nothing", err, buf.Len())
	}
}

// TestExportDatasetDevices: the device is a hash or an unambiguous prefix;
// an unknown one lists the database's devices, an ambiguous one the
// matching devices, a non-hex one is refused, and a CUDA device is refused
// with the reason.
func TestExportDatasetDevices(t *testing.T) {
	ctx := context.Background()
	db, err := tuningdb.Open(ctx, filepath.Join(t.TempDir(), "tuning.db"), tuningdb.Options{LLMIRVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var export bytes.Buffer
	if _, err := search.ExportDataset(ctx, db, &export, search.DatasetOptions{Device: "ab"}); err == nil || !strings.Contains(err.Error(), "holds no devices") {
		t.Errorf("empty database: %v", err)
	}
	a := search.DeviceOf(datasetFingerprint("cpu a"), nil)
	// A second CPU whose hash starts with the same digit as a's.
	var b tuningdb.Device
	for i := 0; ; i++ {
		b = search.DeviceOf(datasetFingerprint(fmt.Sprintf("cpu b%d", i)), nil)
		if b.Hash[0] == a.Hash[0] && b.Hash[:2] != a.Hash[:2] {
			break
		}
	}
	gpuFP := []byte(`{"name":"NVIDIA H100 80GB HBM3","cc":"9.0"}`)
	gpu := tuningdb.Device{Hash: tuningdb.HashJSON(gpuFP), Kind: tuningdb.KindCUDA, Compat: "sm_90", Fingerprint: gpuFP}
	for _, d := range []tuningdb.Device{a, b, gpu} {
		if err := db.PutDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	unknown := ""
	for _, c := range "0123456789abcdef" {
		if p := string(c); !strings.HasPrefix(a.Hash, p) && !strings.HasPrefix(b.Hash, p) && !strings.HasPrefix(gpu.Hash, p) {
			unknown = p
			break
		}
	}
	for _, c := range []struct {
		device string
		want   []string
	}{
		{"", []string{"no hash"}},
		{"xyz", []string{"hex digits"}},
		{unknown, []string{"not in the database", a.Hash[:16], b.Hash[:16], gpu.Hash[:16], "sm_90"}},
		{a.Hash[:1], []string{"prefix of 2 devices", a.Hash[:16], b.Hash[:16]}},
		{gpu.Hash[:8], []string{"cuda device", "only CPU devices"}},
		{a.Hash[:2], []string{search.ErrEmptyDataset.Error()}},
	} {
		_, err := search.ExportDataset(ctx, db, &export, search.DatasetOptions{Device: c.device})
		if err == nil {
			t.Errorf("device %q: no error", c.device)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("device %q: error %q does not say %q", c.device, err, w)
			}
		}
	}
	if d, err := search.FindDevice(ctx, db, strings.ToUpper(b.Hash[:2])); err != nil || d.Hash != b.Hash {
		t.Errorf("upper-case prefix of b: %.12s, %v", d.Hash, err)
	}
	if export.Len() != 0 {
		t.Errorf("failed exports wrote %d bytes", export.Len())
	}
}

// TestExportDatasetFromTune: what the tuner records (the default, random
// draws and the confirmation's re-measurements) exports as one line per
// distinct ok trace, the default flagged on the trace the tune reports as
// its default. M is its own bucket: the database keys a workload by its
// bucket, so the export rebuilds the kernel at the bucket's size.
func TestExportDatasetFromTune(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	k := kernels.Linear{M: 4, N: 40, K: 24}
	tu := f.tuner(search.Options{Budget: search.Budget{Trials: 5}, BatchSize: 5, Seed: 3})
	res, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	okTraces := map[string]bool{}
	failed, repeats := 0, 0
	for _, tr := range res.Measured {
		if tr.Measurement.OK() {
			okTraces[string(tr.Trace)] = true
		} else {
			failed++
		}
	}
	for _, tr := range res.Confirmed {
		if tr.Measurement.OK() {
			repeats++
		} else {
			failed++
		}
	}
	var buf bytes.Buffer
	rep, err := search.ExportDataset(ctx, f.db, &buf, search.DatasetOptions{Device: tu.Device.Hash})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := costmodel.ReadDataset(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != len(okTraces) || len(res.Confirmed) == 0 || rep.Repeats != repeats || rep.Stale != 0 || rep.Failed != failed {
		t.Fatalf("%d lines, report %+v; the tune measured %d (%d distinct ok) and confirmed %d", len(ex), rep, len(res.Measured), len(okTraces), len(res.Confirmed))
	}
	defaults := 0
	for i, e := range ex {
		if !okTraces[string(e.Trace)] || e.Key != res.Workload.Key || e.Workload != k.Name() || e.Threads != 1 {
			t.Errorf("line %d: %s %.12s t=%d: not one of the tune's ok trials", i+1, e.Workload, e.Key, e.Threads)
		}
		if e.Default {
			defaults++
			if res.Default == nil || string(e.Trace) != string(res.Default.Trace) {
				t.Errorf("line %d flagged default, but the tune's default is another trace", i+1)
			}
		}
	}
	if res.Default != nil && res.Default.Measurement.OK() && defaults != 1 {
		t.Errorf("%d lines flagged default, want 1", defaults)
	}
}
