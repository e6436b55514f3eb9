package tuningdb

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpenCreatesSchemaOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a", "b", "tuning.db")
	for i := range 2 { // the second open must find everything applied
		db, err := Open(ctx, path, Options{})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		var appID, version, applied int
		db.sql.QueryRow(`PRAGMA application_id`).Scan(&appID)
		db.sql.QueryRow(`PRAGMA user_version`).Scan(&version)
		db.sql.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&applied)
		var mode string
		db.sql.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
		var fk int
		db.sql.QueryRow(`PRAGMA foreign_keys`).Scan(&fk)
		db.Close()
		if appID != ApplicationID || version != SchemaVersion() || applied != SchemaVersion() {
			t.Errorf("open %d: application_id %#x, user_version %d, %d migrations recorded; want %#x, %d, %d",
				i, appID, version, applied, ApplicationID, SchemaVersion(), SchemaVersion())
		}
		if mode != "wal" || fk != 1 {
			t.Errorf("open %d: journal_mode %q, foreign_keys %d; want wal, 1", i, mode, fk)
		}
	}
}

// TestOpenRefusesForeignFiles: files that are not llmir tuning databases get
// a clear error and keep every byte.
func TestOpenRefusesForeignFiles(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 7))
	random := make([]byte, 8192)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	// sqliteFile builds a database with another program's settings.
	sqliteFile := func(t *testing.T, stmts ...string) []byte {
		p := filepath.Join(t.TempDir(), "other.db")
		db, err := sql.Open("sqlite3", p)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range stmts {
			if _, err := db.Exec(s); err != nil {
				t.Fatal(err)
			}
		}
		db.Close()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	llmirDB := func(t *testing.T) []byte {
		p := filepath.Join(t.TempDir(), "l.db")
		db, err := Open(ctx, p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		b, _ := os.ReadFile(p)
		return b
	}
	cases := []struct {
		name    string
		content func(t *testing.T) []byte
		want    error
	}{
		{"random bytes", func(*testing.T) []byte { return random }, ErrNotDatabase},
		{"text file", func(*testing.T) []byte { return []byte("devices:\n  - cpu\n") }, ErrNotDatabase},
		{"short file with magic", func(*testing.T) []byte { return []byte("SQLite format 3\x00abc") }, ErrNotDatabase},
		{"another program's database", func(t *testing.T) []byte {
			return sqliteFile(t, `CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)`, `INSERT INTO photos (path) VALUES ('a.jpg')`)
		}, ErrForeign},
		{"another application id", func(t *testing.T) []byte {
			return sqliteFile(t, `PRAGMA application_id = 1234`, `CREATE TABLE t (x)`)
		}, ErrForeign},
		{"newer schema", func(t *testing.T) []byte {
			b := llmirDB(t)
			// user_version is the big-endian word at offset 60 of the header.
			b[60], b[61], b[62], b[63] = 0, 0, 0, byte(SchemaVersion()+1)
			return b
		}, ErrNewerSchema},
		{"damaged schema page", func(t *testing.T) []byte {
			b := llmirDB(t)
			for i := 100; i < 4096; i++ {
				b[i] = 0xA5
			}
			return b
		}, ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "tuning.db")
			before := tc.content(t)
			if err := os.WriteFile(path, before, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, ro := range []bool{false, true} {
				db, err := Open(ctx, path, Options{ReadOnly: ro})
				if err == nil {
					db.Close()
					t.Fatalf("read-only %v: open succeeded", ro)
				}
				if !errors.Is(err, tc.want) {
					t.Errorf("read-only %v: error %v, want %v", ro, err, tc.want)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
			}
			after, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(before, after) {
				t.Errorf("the file was changed (err %v)", err)
			}
			// A reader of a WAL-mode file needs its -shm index, which SQLite
			// creates; any other file must be left alone entirely.
			walMode := len(before) > 19 && before[18] == 2
			if entries, _ := os.ReadDir(dir); len(entries) != 1 && !walMode {
				t.Errorf("open left files next to it: %v", entries)
			}
		})
	}
}

func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tuning.db")
	if _, err := Open(ctx, path, Options{ReadOnly: true}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read-only open of a missing file: %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read-only open created the file")
	}
	db, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := testDevice("a", KindCPU, "x86_64/avx2+fma")
	if err := db.PutDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	db.Close()
	ro, err := Open(ctx, path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Device(ctx, d.Hash); err != nil {
		t.Errorf("read: %v", err)
	}
	if err := ro.PutDevice(ctx, testDevice("b", KindCPU, "x")); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write on a read-only database: %v, want ErrReadOnly", err)
	}
}

func TestClockStampsRows(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2030, 5, 6, 7, 8, 9, 10, time.UTC)
	db, err := Open(ctx, filepath.Join(t.TempDir(), "t.db"), Options{Now: func() time.Time { return now }, LLMIRVersion: "9.9"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	id, err := db.StartRun(ctx, TuningRun{BudgetTrials: 64, Command: "llmir tune"})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.FinishRun(ctx, id, []byte(`{"best":1}`)); err != nil {
		t.Fatal(err)
	}
	r, err := db.Run(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !r.StartedAt.Equal(now) || !r.EndedAt.Equal(now) || r.LLMIRVersion != "9.9" || r.BudgetTrials != 64 || string(r.Results) != `{"best":1}` {
		t.Errorf("run %+v: want started and ended at %v, version 9.9, 64 trials", r, now)
	}
	if err := db.FinishRun(ctx, id+1, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("finishing a missing run: %v, want ErrNotFound", err)
	}
}

func TestSummarize(t *testing.T) {
	cases := []struct {
		samples          []float64
		median, min, iqr float64
		err              bool
	}{
		{samples: []float64{3}, median: 3, min: 3, iqr: 0},
		{samples: []float64{4, 1}, median: 2.5, min: 1, iqr: 1.5},
		{samples: []float64{5, 1, 3, 2, 4}, median: 3, min: 1, iqr: 2},
		{samples: []float64{1, 2, 3, 4}, median: 2.5, min: 1, iqr: 1.5},
		{samples: nil, err: true},
		{samples: []float64{1, math.NaN()}, err: true},
		{samples: []float64{1, -2}, err: true},
		{samples: []float64{0}, err: true},
		{samples: []float64{math.Inf(1)}, err: true},
	}
	for _, tc := range cases {
		in := append([]float64(nil), tc.samples...)
		s, err := Summarize(tc.samples)
		if (err != nil) != tc.err {
			t.Errorf("Summarize(%v): error %v, want error %v", tc.samples, err, tc.err)
			continue
		}
		if !tc.err && (s.Median != tc.median || s.Min != tc.min || math.Abs(s.IQR-tc.iqr) > 1e-12) {
			t.Errorf("Summarize(%v) = %+v, want median %v min %v iqr %v", tc.samples, s, tc.median, tc.min, tc.iqr)
		}
		for i := range in {
			if in[i] != tc.samples[i] && !math.IsNaN(in[i]) {
				t.Errorf("Summarize changed its input")
			}
		}
	}
}
