package tuningdb

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testDevice(name string, kind Kind, compat string) Device {
	fp := []byte(fmt.Sprintf(`{"name":%q,"kind":%q,"compat":%q}`, name, kind, compat))
	return Device{
		Hash: HashJSON(fp), Kind: kind, Compat: compat, Fingerprint: fp,
		Roofline: Roofline{Points: []RooflinePoint{{Threads: 1, PeakGFLOPS: 100, ReadGBps: 25}, {Threads: 2, PeakGFLOPS: 200, ReadGBps: 48}}},
	}
}

// testWorkload is a linear workload of a family at a bucket of its dynamic dim.
func testWorkload(family string, bucket int64) Workload {
	js := []byte(fmt.Sprintf(`{"group":"linear","family":%q,"m":%d,"n":4096,"k":4096}`, family, bucket))
	return Workload{Key: HashJSON(js), Family: HashJSON([]byte(family)), Bucket: bucket, Group: "linear", JSON: js}
}

// testRecord measures w on d with samples whose median is median; a failed
// status gets no samples.
func testRecord(w Workload, d Device, cv int, median float64, status Status, at time.Time) Record {
	r := Record{
		WorkloadKey: w.Key, DeviceHash: d.Hash, CodegenVersion: cv,
		Trace:  []byte(fmt.Sprintf(`{"steps":[["split","i",[%d,%d]]],"median":%g}`, cv, w.Bucket, median)),
		Status: status, CreatedAt: at, LLMIRVersion: "0.1.0-test",
	}
	if status == StatusOK {
		r.Samples = []float64{median * 1.1, median, median * 0.9}
	} else {
		r.Error = "failed: " + string(status)
	}
	return r
}

func openTest(t testing.TB) *DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "sub", "tuning.db"), Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustBatch(t testing.TB, db *DB, b Batch) BatchResult {
	t.Helper()
	res, err := db.RecordBatch(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func countRecords(t testing.TB, db *DB) int {
	t.Helper()
	var n int
	if err := db.sql.QueryRow(`SELECT count(*) FROM records`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
