package tuningdb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRecordBatchIsAtomic(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	d := testDevice("a", KindCPU, "x86_64/avx2+fma")
	w := testWorkload("linear-4096", 16)
	good := testRecord(w, d, 1, 1e-3, StatusOK, t0)
	cases := []struct {
		name string
		bad  func(r Record) Record
		want string
	}{
		{"unknown workload", func(r Record) Record { r.WorkloadKey = HashJSON([]byte("x")); return r }, "unknown workload"},
		{"unknown device", func(r Record) Record { r.DeviceHash = HashJSON([]byte("y")); return r }, "unknown device"},
		{"trace not JSON", func(r Record) Record { r.Trace = []byte("{split"); return r }, "trace is not valid JSON"},
		{"ok without samples", func(r Record) Record { r.Samples = nil; return r }, "without latency samples"},
		{"negative sample", func(r Record) Record { r.Samples = []float64{1, -1}; return r }, "sample 1"},
		{"bad status", func(r Record) Record { r.Status = "crashed"; return r }, `unknown status "crashed"`},
		{"no time", func(r Record) Record { r.CreatedAt = time.Time{}; return r }, "created_at"},
		{"min above median", func(r Record) Record { r.Median, r.Min, r.IQR = 1, 2, 0; return r }, "above median"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			second := good
			second.CreatedAt = t0.Add(time.Second)
			_, err := db.RecordBatch(ctx, Batch{
				Devices: []Device{d}, Workloads: []Workload{w},
				Records: []Record{good, tc.bad(second)},
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "record 1") {
				t.Fatalf("error %v, want one naming record 1 and %q", err, tc.want)
			}
			if n := countRecords(t, db); n != 0 {
				t.Errorf("%d records committed from a failed batch", n)
			}
		})
	}
	badDevice := d
	badDevice.Hash = HashJSON([]byte("not the fingerprint"))
	if _, err := db.RecordBatch(ctx, Batch{Devices: []Device{badDevice}}); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("device whose hash is not its fingerprint's: %v", err)
	}
	badWl := w
	badWl.Group = ""
	if _, err := db.RecordBatch(ctx, Batch{Workloads: []Workload{badWl}}); err == nil || !strings.Contains(err.Error(), "op group") {
		t.Errorf("workload without group: %v", err)
	}
}

func TestRecordBatchDeduplicates(t *testing.T) {
	db := openTest(t)
	d := testDevice("a", KindCPU, "x86_64/avx2+fma")
	w := testWorkload("f", 1)
	recs := []Record{testRecord(w, d, 1, 2e-3, StatusOK, t0), testRecord(w, d, 1, 0, StatusTimeout, t0)}
	if res := mustBatch(t, db, Batch{Devices: []Device{d}, Workloads: []Workload{w}, Records: recs}); res.Inserted != 2 || res.Duplicates != 0 {
		t.Fatalf("first batch: %+v", res)
	}
	// The same measurements again, with the trace re-indented: still the same.
	again := append([]Record(nil), recs...)
	var indented bytes.Buffer
	if err := json.Indent(&indented, again[0].Trace, "", "  "); err != nil {
		t.Fatal(err)
	}
	again[0].Trace = indented.Bytes()
	if res := mustBatch(t, db, Batch{Records: again}); res.Inserted != 0 || res.Duplicates != 2 {
		t.Fatalf("repeated batch: %+v, want 0 inserted, 2 duplicates", res)
	}
	// The same schedule measured again later is a new measurement.
	later := testRecord(w, d, 1, 2e-3, StatusOK, t0.Add(time.Minute))
	if res := mustBatch(t, db, Batch{Records: []Record{later}}); res.Inserted != 1 {
		t.Fatalf("later measurement: %+v", res)
	}
}

func TestBestAndTopK(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	d := testDevice("a", KindCPU, "x86_64/avx2+fma")
	other := testDevice("b", KindCPU, "x86_64/avx2+fma")
	w := testWorkload("f", 1)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	recs := []Record{
		testRecord(w, d, 2, 5e-3, StatusOK, at(0)),
		testRecord(w, d, 2, 3e-3, StatusOK, at(1)),
		testRecord(w, d, 2, 4e-3, StatusOK, at(2)),
		testRecord(w, d, 2, 0, StatusWrongResult, at(3)), // failures never become best
		testRecord(w, d, 1, 1e-3, StatusOK, at(4)),       // another codegen version
		testRecord(w, other, 2, 1e-4, StatusOK, at(5)),   // another device
		testRecord(w, d, 2, 3e-3, StatusOK, at(6)),       // tie: the older one first
	}
	mustBatch(t, db, Batch{Devices: []Device{d, other}, Workloads: []Workload{w}, Records: recs})
	best, err := db.BestRecord(ctx, w.Key, d.Hash, 2)
	if err != nil {
		t.Fatal(err)
	}
	if best.Median != 3e-3 || !best.CreatedAt.Equal(at(1)) || best.Min != 2.7e-3 {
		t.Errorf("best = median %v at %v (min %v), want median 3e-3 at %v", best.Median, best.CreatedAt, best.Min, at(1))
	}
	top, err := db.TopK(ctx, w.Key, d.Hash, 2, 10)
	if err != nil {
		t.Fatal(err)
	}
	var medians []float64
	for _, r := range top {
		medians = append(medians, r.Median)
	}
	if want := []float64{3e-3, 3e-3, 4e-3, 5e-3}; !equalFloats(medians, want) || !top[1].CreatedAt.Equal(at(6)) {
		t.Errorf("top medians %v, want %v with ties oldest first", medians, want)
	}
	if _, err := db.BestRecord(ctx, w.Key, d.Hash, 3); !errors.Is(err, ErrNotFound) {
		t.Errorf("best at an unrecorded codegen version: %v, want ErrNotFound", err)
	}
	var statuses []Status
	for r, err := range db.DeviceRecords(ctx, d.Hash, 2) {
		if err != nil {
			t.Fatal(err)
		}
		statuses = append(statuses, r.Status)
	}
	if len(statuses) != 5 || statuses[3] != StatusWrongResult {
		t.Errorf("device records at codegen 2: %v, want 5 in insertion order with the failure 4th", statuses)
	}
	// The old version's record is ignored by lookups but still stored.
	if n := countRecords(t, db); n != len(recs) {
		t.Errorf("%d records stored, want %d", n, len(recs))
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestModelsAndBenchResults(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	d := testDevice("a", KindCUDA, "sm_90")
	if err := db.PutDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	m := Model{DeviceHash: d.Hash, Name: "gbt", CodegenVersion: 1, Format: "gbt-json", Data: []byte(`{"trees":[]}`), TrainedOn: 10, CreatedAt: t0}
	if err := db.PutModel(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.Data, m.TrainedOn = []byte(`{"trees":[1]}`), 20
	if err := db.PutModel(ctx, m); err != nil {
		t.Fatal(err)
	}
	got, err := db.Model(ctx, d.Hash, "gbt", 1)
	if err != nil || string(got.Data) != `{"trees":[1]}` || got.TrainedOn != 20 {
		t.Errorf("model = %+v, %v; want the replaced one", got, err)
	}
	if _, err := db.Model(ctx, d.Hash, "gbt", 2); !errors.Is(err, ErrNotFound) {
		t.Errorf("model of another codegen version: %v", err)
	}
	if err := db.PutModel(ctx, Model{DeviceHash: HashJSON(nil), Name: "x", Format: "f"}); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("model of an unknown device: %v", err)
	}
	rs := []BenchResult{
		{Suite: "nightly", Name: "gemv/N=4096", DeviceHash: d.Hash, Metric: "GB/s", Value: 3000, CreatedAt: t0.Add(time.Hour)},
		{Suite: "nightly", Name: "gemv/N=4096", DeviceHash: d.Hash, Metric: "GB/s", Value: 2900, CreatedAt: t0},
		{Suite: "nightly", Name: "attn", Metric: "GB/s", Value: 100},
	}
	if err := db.AddBenchResults(ctx, rs); err != nil {
		t.Fatal(err)
	}
	series, err := db.BenchResults(ctx, "nightly", "gemv/N=4096")
	if err != nil || len(series) != 2 || series[0].Value != 2900 || series[1].Value != 3000 || series[0].DeviceHash != d.Hash {
		t.Errorf("series = %+v, %v; want 2900 then 3000 on the device", series, err)
	}
	if err := db.AddBenchResults(ctx, []BenchResult{{Suite: "s", Name: "n", Metric: "m", DeviceHash: HashJSON(nil)}}); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("result on an unknown device: %v", err)
	}
}
