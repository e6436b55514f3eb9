package tuningdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBenchResultsMigrateFromSchema1: a database written by schema 1 (the
// first release) migrates, keeps its benchmark rows, and takes the new
// columns afterwards.
func TestBenchResultsMigrateFromSchema1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	old, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		fmt.Sprintf("PRAGMA application_id = %d", ApplicationID),
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`,
		migrations[0].sql,
		fmt.Sprintf(`INSERT INTO schema_migrations VALUES (1, %q, 0)`, migrations[0].name),
		`INSERT INTO bench_results (suite, name, metric, value, unit, created_at, llmir_version)
			VALUES ('linear', 'Linear/M=1', 'tuned_median_s', 0.002, 's', 1000, '0.0.9')`,
		`PRAGMA user_version = 1`,
	} {
		if _, err := old.Exec(stmt); err != nil {
			t.Fatalf("build schema-1 file: %v", err)
		}
	}
	old.Close()

	db, err := Open(ctx, path, Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if rep, err := db.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("verify after migration: %+v, %v", rep, err)
	}
	rs, err := db.BenchResults(ctx, "linear", "")
	if err != nil || len(rs) != 1 {
		t.Fatalf("old rows = %+v, %v; want the one row", rs, err)
	}
	got := rs[0]
	if got.Value != 0.002 || got.Unit != "s" || got.LLMIRVersion != "0.0.9" || got.Samples != nil || got.GitCommit != "" ||
		got.Median != 0 || got.BaselineRatio != 0 || got.Better != BetterAuto || string(got.Extra) != "{}" {
		t.Errorf("old row read back as %+v", got)
	}
	err = db.AddBenchResults(ctx, []BenchResult{{Suite: "linear", Name: "Linear/M=1", Metric: "tuned_median_s", Unit: "s",
		Samples: []float64{0.003, 0.001, 0.002}, GitCommit: "abc"}})
	if err != nil {
		t.Fatal(err)
	}
	rs, _ = db.BenchResults(ctx, "linear", "Linear/M=1")
	if len(rs) != 2 || rs[1].Median != 0.002 || rs[1].IQR != 0.001 || rs[1].GitCommit != "abc" {
		t.Errorf("after migration: %+v", rs)
	}
}

func TestBenchResultsRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	d := testDevice("bench", KindCPU, "x86_64/avx2+fma")
	if err := db.PutDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	in := BenchResult{
		Suite: "kernels", Name: "Linear/M=1,N=4096,K=4096/f32", DeviceHash: d.Hash, Metric: "median_s", Unit: "s",
		Samples: []float64{4e-3, 1e-3, 2e-3, 3e-3, 5e-3}, Better: BetterLower, Baseline: "openblas", BaselineRatio: 1.25,
		RooflineFraction: 0.8, Extra: json.RawMessage(`{"threads":1}`), CreatedAt: t0, LLMIRVersion: "1.0", GitCommit: "deadbeef",
	}
	if err := db.AddBenchResults(ctx, []BenchResult{in}); err != nil {
		t.Fatal(err)
	}
	rs, err := db.QueryBenchResults(ctx, BenchFilter{DeviceHash: d.Hash})
	if err != nil || len(rs) != 1 {
		t.Fatalf("query = %+v, %v", rs, err)
	}
	got := rs[0]
	// Median and IQR come from the samples (type 7: q1 2e-3, q3 4e-3), and
	// the value from the median.
	want := in
	want.ID, want.Value, want.Median, want.IQR = got.ID, 3e-3, 3e-3, 2e-3
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) || got.ID == 0 {
		t.Errorf("round trip:\n got %s\nwant %s", gj, wj)
	}
	if got.BenchmarkID() != "kernels/Linear/M=1,N=4096,K=4096/f32:median_s" {
		t.Errorf("BenchmarkID = %q", got.BenchmarkID())
	}
}

func TestAddBenchResultsRefusesBadRows(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	good := BenchResult{Suite: "s", Name: "n", Metric: "m", Value: 1}
	for _, tc := range []struct {
		name string
		edit func(r *BenchResult)
		want string
	}{
		{"no metric", func(r *BenchResult) { r.Metric = "" }, "required"},
		{"NaN value", func(r *BenchResult) { r.Value = math.NaN() }, "value is NaN"},
		{"bad better", func(r *BenchResult) { r.Better = "faster" }, `better "faster"`},
		{"negative ratio", func(r *BenchResult) { r.BaselineRatio = -1 }, "baseline ratio"},
		{"infinite roofline", func(r *BenchResult) { r.RooflineFraction = math.Inf(1) }, "roofline fraction"},
		{"negative IQR", func(r *BenchResult) { r.Median, r.IQR = 1, -1 }, "iqr"},
		{"zero sample", func(r *BenchResult) { r.Samples = []float64{1, 0} }, "sample 1"},
		{"zero sample with summary", func(r *BenchResult) { r.Samples, r.Median = []float64{0}, 1 }, "sample 0"},
		{"bad extra", func(r *BenchResult) { r.Extra = json.RawMessage(`{`) }, "extra"},
		{"year 1960", func(r *BenchResult) { r.CreatedAt = time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC) }, "1970"},
		{"unknown device", func(r *BenchResult) { r.DeviceHash = HashJSON(nil) }, ErrUnknownDevice.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := good
			tc.edit(&bad)
			// The good row goes first: a refusal must roll it back too.
			err := db.AddBenchResults(ctx, []BenchResult{good, bad})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "result 1") {
				t.Errorf("error = %v; want one naming result 1 and %q", err, tc.want)
			}
			if rs, _ := db.QueryBenchResults(ctx, BenchFilter{}); len(rs) != 0 {
				t.Errorf("%d rows stored; want none (all or none)", len(rs))
			}
		})
	}
	if err := db.AddBenchResults(ctx, []BenchResult{{Suite: "s", Name: "n", Metric: "m", DeviceHash: HashJSON(nil)}}); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("unknown device: %v; want ErrUnknownDevice", err)
	}
}

func TestQueryBenchResultsFilters(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	a, b := testDevice("a", KindCPU, "x86_64/avx2+fma"), testDevice("b", KindCUDA, "sm_90")
	for _, d := range []Device{a, b} {
		if err := db.PutDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	var rs []BenchResult
	for night := range 3 {
		at := t0.Add(time.Duration(night) * 24 * time.Hour)
		for _, d := range []Device{a, b} {
			for _, metric := range []string{"median_s", "GB/s"} {
				rs = append(rs, BenchResult{Suite: "nightly", Name: "gemv", DeviceHash: d.Hash, Metric: metric, Value: float64(night + 1), CreatedAt: at})
			}
		}
		rs = append(rs, BenchResult{Suite: "tuning", Name: "search", Metric: "trials", Value: 10, CreatedAt: at})
	}
	// Stored newest first: the query must still order by time.
	for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
		rs[i], rs[j] = rs[j], rs[i]
	}
	if err := db.AddBenchResults(ctx, rs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    BenchFilter
		n    int
	}{
		{"all", BenchFilter{}, 15},
		{"suite", BenchFilter{Suite: "nightly"}, 12},
		{"device", BenchFilter{DeviceHash: b.Hash}, 6},
		{"device and metric", BenchFilter{DeviceHash: a.Hash, Metric: "GB/s"}, 3},
		{"since", BenchFilter{Suite: "nightly", Since: t0.Add(24 * time.Hour)}, 8},
		{"name", BenchFilter{Name: "search"}, 3},
		{"nothing", BenchFilter{Suite: "kernels"}, 0},
	} {
		got, err := db.QueryBenchResults(ctx, tc.f)
		if err != nil || len(got) != tc.n {
			t.Errorf("%s: %d rows, %v; want %d", tc.name, len(got), err, tc.n)
			continue
		}
		for i := 1; i < len(got); i++ {
			p, q := got[i-1], got[i]
			if p.BenchmarkID() == q.BenchmarkID() && p.DeviceHash == q.DeviceHash && !p.CreatedAt.Before(q.CreatedAt) {
				t.Errorf("%s: rows %d and %d of one series are not oldest first", tc.name, i-1, i)
			}
		}
	}
	devs, err := db.BenchDevices(ctx)
	if err != nil || len(devs) != 2 || devs[0].Hash != a.Hash || len(devs[1].Roofline.Points) != 2 {
		t.Errorf("BenchDevices = %+v, %v; want a then b with rooflines", devs, err)
	}
}

func TestRecentRunsAndRunRecords(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	d := testDevice("a", KindCPU, "x86_64/avx2+fma")
	w := testWorkload("linear", 1)
	mustBatch(t, db, Batch{Devices: []Device{d}, Workloads: []Workload{w}})
	var ids []int64
	for i := range 3 {
		id, err := db.StartRun(ctx, TuningRun{DeviceHash: d.Hash, StartedAt: t0.Add(time.Duration(i) * time.Hour), Command: fmt.Sprint("tune ", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Run 1's trials, written out of order; one failed.
	var recs []Record
	for i, median := range []float64{3e-3, 2e-3, 0, 2.5e-3} {
		st := StatusOK
		if median == 0 {
			st = StatusTimeout
		}
		r := testRecord(w, d, 1, median, st, t0.Add(time.Duration(4-i)*time.Second))
		r.RunID = ids[1]
		recs = append(recs, r)
	}
	mustBatch(t, db, Batch{Records: recs})

	runs, err := db.RecentRuns(ctx, 2)
	if err != nil || len(runs) != 2 || runs[0].ID != ids[2] || runs[1].ID != ids[1] || runs[0].DeviceHash != d.Hash {
		t.Fatalf("RecentRuns(2) = %+v, %v; want runs %d, %d", runs, err, ids[2], ids[1])
	}
	if all, _ := db.RecentRuns(ctx, 0); len(all) != 3 {
		t.Errorf("RecentRuns(0) = %d runs; want all 3", len(all))
	}
	trials, err := db.RunRecords(ctx, ids[1])
	if err != nil || len(trials) != 4 {
		t.Fatalf("RunRecords = %+v, %v", trials, err)
	}
	for i, want := range []float64{2.5e-3, 0, 2e-3, 3e-3} { // oldest first
		if trials[i].Median != want || trials[i].Group != "linear" || trials[i].Bucket != 1 || trials[i].RunID != ids[1] {
			t.Errorf("trial %d = median %v, group %q, bucket %d; want %v, linear, 1", i, trials[i].Median, trials[i].Group, trials[i].Bucket, want)
		}
	}
	if none, err := db.RunRecords(ctx, ids[0]); err != nil || len(none) != 0 {
		t.Errorf("run without records: %d, %v", len(none), err)
	}
}

// TestBenchResultsCommitStamp: a result without a commit takes
// $LLMIR_GIT_COMMIT (what `make nightly` sets for -buildvcs=false builds).
func TestBenchResultsCommitStamp(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	t.Setenv("LLMIR_GIT_COMMIT", "0123456789abcdef")
	rs := []BenchResult{{Suite: "s", Name: "a", Metric: "m", Value: 1}, {Suite: "s", Name: "b", Metric: "m", Value: 1, GitCommit: "given"}}
	if err := db.AddBenchResults(ctx, rs); err != nil {
		t.Fatal(err)
	}
	got, err := db.QueryBenchResults(ctx, BenchFilter{Suite: "s"})
	if err != nil || len(got) != 2 || got[0].GitCommit != "0123456789abcdef" || got[1].GitCommit != "given" {
		t.Errorf("commits = %+v, %v; want the environment's, then the given one", got, err)
	}
}
