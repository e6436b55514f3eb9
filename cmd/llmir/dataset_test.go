package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"llmir/costmodel"
	"llmir/kernels"
	"llmir/search"
	"llmir/target/cpu"
	"llmir/target/cpu/cgen"
	"llmir/tuningdb"
)

// TestDBDataset: `llmir db dataset` writes a device's ok records as
// costmodel.Example lines, the rule-based default flagged, and reports what
// it left out; bad input is an error that says what is wrong, and a failed
// export writes no file.
func TestDBDataset(t *testing.T) {
	dir := isolate(t)
	path := filepath.Join(dir, "tuning.db")
	ctx := context.Background()
	fp := &cpu.Fingerprint{Arch: "x86_64", Vendor: "GenuineIntel", Model: "dataset CLI test", ISA: []string{"avx2", "fma"}, Cores: 4,
		Caches: []cpu.Cache{{Level: 1, Type: "Data", Bytes: 32 << 10}, {Level: 2, Type: "Unified", Bytes: 1 << 20}}, CacheSource: "sysfs"}
	dev := search.DeviceOf(fp, nil)
	k := kernels.Linear{M: 1, N: 48, K: 32}
	hw := search.CPUHardware(fp, 1)
	def, err := search.DefaultSchedule(k, hw)
	if err != nil {
		t.Fatal(err)
	}
	defKey, err := search.TraceKey(def)
	if err != nil {
		t.Fatal(err)
	}
	var draw string
	for seed := uint64(0); draw == ""; seed++ {
		s, err := search.SampleSchedule(k, hw, seed)
		if err != nil {
			t.Fatal(err)
		}
		if key, err := search.TraceKey(s); err != nil {
			t.Fatal(err)
		} else if string(key) != string(defKey) {
			draw = string(key)
		}
	}
	wl := search.WorkloadOf(k, 1)
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	rec := func(trace string, st tuningdb.Status, median float64, i int) tuningdb.Record {
		r := tuningdb.Record{WorkloadKey: wl.Key, DeviceHash: dev.Hash, CodegenVersion: cgen.CodegenVersion, Trace: json.RawMessage(trace),
			Status: st, CreatedAt: at.Add(time.Duration(i) * time.Second), LLMIRVersion: "test"}
		if st == tuningdb.StatusOK {
			r.Samples = []float64{median}
		} else {
			r.Error = "timed out after 20s"
		}
		return r
	}
	other := fixtureDevice("not a CPU fingerprint", "x86_64/avx2")
	db, err := tuningdb.Open(ctx, path, tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.RecordBatch(ctx, tuningdb.Batch{Devices: []tuningdb.Device{dev, other}, Workloads: []tuningdb.Workload{wl},
		Records: []tuningdb.Record{rec(string(defKey), tuningdb.StatusOK, 4e-6, 0), rec(draw, tuningdb.StatusOK, 2e-6, 1), rec(draw, tuningdb.StatusTimeout, 0, 2)}})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(dir, "data", "pools.jsonl")
	stdout, _, err := runCLI(t, "", "--db", path, "db", "dataset", "--device", dev.Hash[:8], "-o", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"wrote 2 candidates of 1 workloads (1 rule-based defaults)", dev.Hash[:16], "left out 1 failed records and 0 ok records"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("output %q lacks %q", stdout, w)
		}
	}
	ex, err := costmodel.ReadDatasetFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex) != 2 || !ex[0].Default || ex[1].Default || string(ex[0].Trace) != string(defKey) || ex[1].Median != 2e-6 ||
		ex[0].Workload != k.Name() || ex[0].Key != wl.Key || ex[0].Device != search.CostDevice(hw, nil) {
		t.Errorf("dataset %+v: want the default (flagged) then the draw of %s", ex, k.Name())
	}

	// To standard output, the report on standard error.
	stdout, stderr, err := runCLI(t, "", "--db", path, "db", "dataset", "--device", dev.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(stdout, "\n"); n != 2 || !strings.Contains(stderr, "to standard output") {
		t.Errorf("stdout has %d lines, stderr %q; want the 2 lines and the report on stderr", n, stderr)
	}

	missing := filepath.Join(dir, "none.jsonl")
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"not hex", []string{"--device", "9c4x"}, []string{`"9c4x"`, "hex"}},
		{"unknown device", []string{"--device", strings.Repeat("0", 64)}, []string{"not in the database", dev.Hash[:16], other.Hash[:16]}},
		{"not a CPU fingerprint", []string{"--device", other.Hash[:12]}, []string{other.Hash[:16], "not a CPU fingerprint"}},
		{"stray argument", []string{"--device", dev.Hash, "extra"}, []string{"unknown command"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := runCLI(t, "", append([]string{"--db", path, "db", "dataset", "-o", missing}, c.args...)...)
			if err == nil {
				t.Fatal("command succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, err := os.Stat(missing); err == nil {
				t.Errorf("%s was written", missing)
			}
		})
	}
	if _, _, err := runCLI(t, "", "--db", filepath.Join(dir, "nope.db"), "db", "dataset", "--device", dev.Hash); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing database: %v", err)
	}
}
