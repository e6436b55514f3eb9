package tuningdb

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPrune(t *testing.T) {
	ctx := context.Background()
	d, e := testDevice("a", KindCPU, "x86_64/avx2+fma"), testDevice("b", KindCPU, "x86_64/avx2+fma")
	w := testWorkload("f", 1)
	day := 24 * time.Hour
	recs := []Record{
		testRecord(w, d, 1, 1e-3, StatusOK, t0),                    // old version, ok
		testRecord(w, d, 1, 0, StatusTimeout, t0),                  // old version, failed
		testRecord(w, d, 2, 1e-3, StatusOK, t0),                    // current, ok
		testRecord(w, d, 2, 0, StatusBuildError, t0),               // current, failed, old
		testRecord(w, d, 2, 0, StatusRuntimeError, t0.Add(10*day)), // current, failed, new
		testRecord(w, e, 2, 0, StatusWrongResult, t0.Add(10*day)),  // other device
		testRecord(w, e, 3, 2e-3, StatusOK, t0.Add(10*day)),        // newer version
	}
	failed := []Status{StatusBuildError, StatusRuntimeError, StatusTimeout, StatusWrongResult}
	cases := []struct {
		name string
		f    PruneFilter
		want int64
	}{
		{"codegen below", PruneFilter{CodegenVersionBelow: 2}, 2},
		{"failed", PruneFilter{Statuses: failed}, 4},
		{"failed older than a date", PruneFilter{Statuses: failed, Before: t0.Add(day)}, 2},
		{"one device's failures", PruneFilter{Statuses: failed, DeviceHash: e.Hash}, 1},
		{"one workload", PruneFilter{WorkloadKey: w.Key}, 7},
		{"unknown device", PruneFilter{DeviceHash: HashJSON([]byte("nobody"))}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t)
			mustBatch(t, db, Batch{Devices: []Device{d, e}, Workloads: []Workload{w}, Records: recs})
			n, err := db.Prune(ctx, tc.f, true)
			if err != nil || n != tc.want {
				t.Fatalf("dry run: %d, %v; want %d", n, err, tc.want)
			}
			if got := countRecords(t, db); got != len(recs) {
				t.Fatalf("dry run deleted %d records", len(recs)-got)
			}
			n, err = db.Prune(ctx, tc.f, false)
			if err != nil || n != tc.want {
				t.Fatalf("prune: %d, %v; want %d", n, err, tc.want)
			}
			if got := countRecords(t, db); got != len(recs)-int(tc.want) {
				t.Errorf("%d records left, want %d", got, len(recs)-int(tc.want))
			}
			if st, _ := db.Stats(ctx); st.Devices != 2 || st.Workloads != 1 {
				t.Errorf("prune deleted devices or workloads: %+v", st)
			}
		})
	}
	db := openTest(t)
	if _, err := db.Prune(ctx, PruneFilter{}, false); !errors.Is(err, ErrEmptyFilter) {
		t.Errorf("empty filter: %v, want ErrEmptyFilter", err)
	}
	if _, err := db.Prune(ctx, PruneFilter{Statuses: []Status{"gone"}}, false); err == nil {
		t.Errorf("unknown status accepted")
	}
}

func TestVerifyFindsDamage(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		damage string // SQL run with foreign keys and checks out of the way
		want   string
	}{
		{"healthy", "", ""},
		{"median edited", `UPDATE records SET median = median / 2 WHERE id = (SELECT min(id) FROM records WHERE status = 'ok')`, "digest does not match"},
		{"min not the smallest sample", `UPDATE records SET min = min * 0.5 WHERE id = (SELECT min(id) FROM records WHERE status = 'ok')`, "smallest sample"},
		{"fingerprint edited", `UPDATE devices SET fingerprint = '{"edited":1}' WHERE id = 1`, "SHA-256 of its fingerprint"},
		{"workload JSON edited", `UPDATE workloads SET json = '{}' WHERE id = 1`, "SHA-256 of its JSON"},
		{"orphan record", `PRAGMA foreign_keys = OFF; DELETE FROM devices WHERE id = 1`, "foreign key: records"},
		{"application id", `PRAGMA application_id = 7`, "application_id"},
		{"migration row", `DELETE FROM schema_migrations`, "schema_migrations"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t)
			fillRandom(t, db, 9, 20)
			if tc.damage != "" {
				conn, err := db.sql.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range strings.Split(tc.damage, ";") {
					if _, err := conn.ExecContext(ctx, s); err != nil {
						t.Fatal(err)
					}
				}
				conn.ExecContext(ctx, `PRAGMA foreign_keys = ON`)
				conn.Close()
			}
			rep, err := db.Verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if !rep.OK() || rep.Records != 20 {
					t.Errorf("healthy database: %+v", rep)
				}
				return
			}
			if rep.OK() || !strings.Contains(strings.Join(rep.Problems, "\n"), tc.want) {
				t.Errorf("problems %q, want one saying %q", rep.Problems, tc.want)
			}
		})
	}
}

// TestVerifyCorruptPages: damage below the schema page opens (SQLite reads
// lazily) but verify reports it, and neither changes the file.
func TestVerifyCorruptPages(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fillRandom(t, db, 10, 2000)
	db.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 5 * 4096; i < 9*4096 && i < len(b); i++ {
		b[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err = Open(ctx, path, Options{ReadOnly: true})
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open: %v, want success or ErrCorrupt", err)
		}
	} else {
		rep, err := db.Verify(ctx)
		db.Close()
		if err != nil || rep.OK() {
			t.Errorf("verify of a damaged file: %+v, %v; want problems", rep, err)
		}
	}
	after, _ := os.ReadFile(path)
	if string(after) != string(b) {
		t.Errorf("the damaged file was changed")
	}
}

func TestStats(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	d := testDevice("a", KindCPU, "x86_64/avx2+fma")
	w := testWorkload("f", 1)
	mustBatch(t, db, Batch{Devices: []Device{d}, Workloads: []Workload{w}, Records: []Record{
		testRecord(w, d, 1, 1e-3, StatusOK, t0), testRecord(w, d, 2, 1e-3, StatusOK, t0), testRecord(w, d, 2, 0, StatusTimeout, t0),
	}})
	st, err := db.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 3 || st.ByStatus[StatusOK] != 2 || st.ByStatus[StatusTimeout] != 1 || st.ByCodegen[2] != 2 ||
		len(st.PerDevice) != 1 || st.PerDevice[0].OK != 2 || st.SchemaVersion != SchemaVersion() || st.SizeBytes == 0 {
		t.Errorf("stats %+v", st)
	}
}
