package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"llmir/tuningdb"
)

type dbFixture struct {
	here, sibling tuningdb.Device
	w16, w64      tuningdb.Workload
}

func fixtureDevice(name, compat string) tuningdb.Device {
	fp := []byte(fmt.Sprintf(`{"name":%q}`, name))
	return tuningdb.Device{Hash: tuningdb.HashJSON(fp), Kind: tuningdb.KindCPU, Compat: compat, Fingerprint: fp}
}

func fixtureWorkload(bucket int64) tuningdb.Workload {
	js := []byte(fmt.Sprintf(`{"group":"linear","m":%d,"n":4096,"k":4096}`, bucket))
	return tuningdb.Workload{Key: tuningdb.HashJSON(js), Family: tuningdb.HashJSON([]byte("linear-4096")), Bucket: bucket, Group: "linear", JSON: js}
}

// makeTunedDB writes a small tuned database: two ok records and a timeout
// on one device, one ok record on a compatible sibling.
func makeTunedDB(t *testing.T, path string) dbFixture {
	t.Helper()
	f := dbFixture{
		here: fixtureDevice("here", "x86_64/avx2+fma"), sibling: fixtureDevice("sibling", "x86_64/avx2+fma"),
		w16: fixtureWorkload(16), w64: fixtureWorkload(64),
	}
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	rec := func(w tuningdb.Workload, d tuningdb.Device, median float64, st tuningdb.Status, day int) tuningdb.Record {
		r := tuningdb.Record{WorkloadKey: w.Key, DeviceHash: d.Hash, CodegenVersion: 1, Trace: []byte(`[["split","i",4]]`),
			Status: st, CreatedAt: at.AddDate(0, 0, day), LLMIRVersion: "test"}
		if st == tuningdb.StatusOK {
			r.Samples = []float64{median, median * 1.2, median * 0.9}
		}
		return r
	}
	db, err := tuningdb.Open(context.Background(), path, tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = db.RecordBatch(context.Background(), tuningdb.Batch{
		Devices: []tuningdb.Device{f.here, f.sibling}, Workloads: []tuningdb.Workload{f.w16, f.w64},
		Records: []tuningdb.Record{
			rec(f.w64, f.here, 2e-3, tuningdb.StatusOK, 0),
			rec(f.w64, f.here, 1e-3, tuningdb.StatusOK, 1),
			rec(f.w64, f.here, 0, tuningdb.StatusTimeout, 2),
			rec(f.w16, f.sibling, 5e-4, tuningdb.StatusOK, 3),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestDBCommands(t *testing.T) {
	dir := isolate(t)
	a := filepath.Join(dir, "a.db")
	f := makeTunedDB(t, a)

	out, _, err := runCLI(t, "", "--db", a, "db", "stats", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st tuningdb.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Records != 4 || st.ByStatus["timeout"] != 1 || len(st.PerDevice) != 2 {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	if out, _, err = runCLI(t, "", "--db", a, "db", "stats"); err != nil || !strings.Contains(out, "records:       4") {
		t.Errorf("stats: %v\n%s", err, out)
	}

	lookups := []struct {
		args  []string
		want  []string
		level string
	}{
		{[]string{"--workload", f.w64.Key, "--device", f.here.Hash}, []string{"answered by: user database (" + a + "), level exact", "median 1 ms", "over 3 samples"}, "exact"},
		{[]string{"--workload", f.w16.Key, "--device", f.here.Hash}, []string{"level compatible-device", f.sibling.Hash}, "compatible-device"},
		{[]string{"--workload", f.w16.Key, "--kind", "cpu", "--compat", "x86_64/avx2+fma"}, []string{"level compatible-device"}, "compatible-device"},
		{[]string{"--family", f.w16.Family, "--bucket", "32", "--device", f.here.Hash}, []string{"level nearest-bucket", "bucket 64"}, "nearest-bucket"},
	}
	for _, lk := range lookups {
		out, _, err := runCLI(t, "", append([]string{"--db", a, "db", "lookup"}, lk.args...)...)
		if err != nil {
			t.Fatalf("lookup %v: %v", lk.args, err)
		}
		for _, w := range lk.want {
			if !strings.Contains(out, w) {
				t.Errorf("lookup %v: output lacks %q:\n%s", lk.args, w, out)
			}
		}
		out, _, err = runCLI(t, "", append([]string{"--db", a, "db", "lookup", "--json"}, lk.args...)...)
		var ans struct{ Layer, Level string }
		if err != nil || json.Unmarshal([]byte(out), &ans) != nil || ans.Level != lk.level || ans.Layer != "user" {
			t.Errorf("lookup --json %v: %v, %+v", lk.args, err, ans)
		}
	}
	if _, _, err := runCLI(t, "", "--db", a, "db", "lookup", "--workload", f.w64.Key, "--device", f.here.Hash, "--codegen-version", "2"); err == nil ||
		!strings.Contains(err.Error(), "no tuning record found") {
		t.Errorf("lookup at another codegen version: %v", err)
	}

	// export → import into a fresh database → import again (all duplicates).
	exp := filepath.Join(dir, "a.jsonl")
	if out, _, err = runCLI(t, "", "--db", a, "db", "export", "-o", exp); err != nil || !strings.Contains(out, "4 records") {
		t.Fatalf("export: %v\n%s", err, out)
	}
	b := filepath.Join(dir, "sub", "b.db")
	if out, _, err = runCLI(t, "", "--db", b, "db", "import", exp); err != nil || !strings.Contains(out, "4 new records (0 already present)") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	if out, _, err = runCLI(t, "", "--db", b, "db", "import", exp); err != nil || !strings.Contains(out, "0 new records (4 already present)") {
		t.Errorf("second import: %v\n%s", err, out)
	}
	stdout, _, err := runCLI(t, "", "--db", b, "db", "export")
	if want, _ := os.ReadFile(exp); err != nil || stdout != string(want) {
		t.Errorf("export of the imported copy differs from the original export (%v)", err)
	}
	best := filepath.Join(dir, "best.jsonl")
	if out, _, err = runCLI(t, "", "--db", a, "db", "export", "--best", "1", "-o", best); err != nil || !strings.Contains(out, "2 records") {
		t.Errorf("export --best 1: %v\n%s", err, out)
	}

	c := filepath.Join(dir, "c.db")
	makeTunedDB(t, c)
	if out, _, err = runCLI(t, "", "--db", c, "db", "merge", b); err != nil || !strings.Contains(out, "0 new records (4 already present)") {
		t.Errorf("merge: %v\n%s", err, out)
	}
	if _, _, err = runCLI(t, "", "--db", c, "db", "merge", c); err == nil || !strings.Contains(err.Error(), "itself") {
		t.Errorf("merging a database into itself: %v", err)
	}

	if out, _, err = runCLI(t, "", "--db", a, "db", "verify"); err != nil || !strings.Contains(out, "ok (4 records checked)") {
		t.Errorf("verify: %v\n%s", err, out)
	}

	if out, _, err = runCLI(t, "", "--db", a, "db", "prune", "--failed", "--dry-run"); err != nil || !strings.Contains(out, "would delete 1 records") {
		t.Errorf("prune --dry-run: %v\n%s", err, out)
	}
	if out, _, err = runCLI(t, "", "--db", a, "db", "prune", "--status", "ok", "--before", "2026-03-03", "--json"); err != nil ||
		!strings.Contains(out, `"records": 2`) {
		t.Errorf("prune ok records before a date: %v\n%s", err, out)
	}
	out, _, _ = runCLI(t, "", "--db", a, "db", "stats", "--json")
	if json.Unmarshal([]byte(out), &st); st.Records != 2 || st.Devices != 2 {
		t.Errorf("after prune: %d records, %d devices; want 2 and 2", st.Records, st.Devices)
	}
}

// TestDBPathFromEnvironment: --db comes from LLMIR_DB like every flag.
func TestDBPathFromEnvironment(t *testing.T) {
	dir := isolate(t)
	p := filepath.Join(dir, "env.db")
	makeTunedDB(t, p)
	t.Setenv("LLMIR_DB", p)
	out, _, err := runCLI(t, "", "db", "stats")
	if err != nil || !strings.Contains(out, p) {
		t.Errorf("stats with LLMIR_DB: %v\n%s", err, out)
	}
}

func TestDBPrecompiled(t *testing.T) {
	dir := isolate(t)
	missing := filepath.Join(dir, "never.db")
	if out, _, err := runCLI(t, "", "--db", missing, "db", "verify", "--precompiled"); err != nil || !strings.Contains(out, "precompiled database: ok") {
		t.Errorf("verify --precompiled: %v\n%s", err, out)
	}
	if out, _, err := runCLI(t, "", "--db", missing, "db", "export", "--precompiled"); err != nil || !strings.HasPrefix(out, `{"format":"llmir-tuningdb","version":1`) {
		t.Errorf("export --precompiled: %v\n%s", err, out)
	}
	// Without a user database, lookup says so and asks the precompiled layer.
	f := fixtureDevice("x", "sm_90")
	_, stderr, err := runCLI(t, "", "--db", missing, "db", "lookup", "--workload", fixtureWorkload(1).Key, "--device", f.Hash, "--codegen-version", "1")
	if err == nil || !strings.Contains(err.Error(), "no tuning record found") || !strings.Contains(stderr, "precompiled database only") {
		t.Errorf("lookup without a user database: %v, stderr %q", err, stderr)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("lookup created the user database")
	}
}

func TestDBErrors(t *testing.T) {
	dir := isolate(t)
	good := filepath.Join(dir, "good.db")
	f := makeTunedDB(t, good)
	foreign := filepath.Join(dir, "photos.db")
	fdb, err := sql.Open("sqlite3", foreign)
	if err != nil {
		t.Fatal(err)
	}
	fdb.Exec(`CREATE TABLE photos (id INTEGER PRIMARY KEY)`)
	fdb.Close()
	notes := filepath.Join(dir, "notes.txt")
	os.WriteFile(notes, []byte("shopping list\n"), 0o644)
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(`{"format":"llmir-tuningdb","version":1,"devices":1}`+"\n"+`{"type":"device","device":{"hash":"zz"}`+"\n"), 0o644)

	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"lookup without workload", []string{"--db", good, "db", "lookup", "--device", f.here.Hash}, []string{"--workload"}},
		{"lookup without device", []string{"--db", good, "db", "lookup", "--workload", f.w64.Key}, []string{"--device"}},
		{"lookup bad kind", []string{"--db", good, "db", "lookup", "--workload", f.w64.Key, "--kind", "tpu", "--compat", "x"}, []string{`--kind "tpu"`}},
		{"lookup bad hash", []string{"--db", good, "db", "lookup", "--workload", "ABC", "--device", f.here.Hash}, []string{`--workload "ABC"`, "SHA-256"}},
		{"lookup stray argument", []string{"--db", good, "db", "lookup", "extra"}, []string{"unknown command"}},
		{"import malformed line", []string{"--db", filepath.Join(dir, "new.db"), "db", "import", bad}, []string{bad, "line 2"}},
		{"import missing file", []string{"--db", good, "db", "import", filepath.Join(dir, "nope.jsonl")}, []string{"nope.jsonl"}},
		{"import no file", []string{"--db", good, "db", "import"}, []string{"requires at least 1 arg"}},
		{"prune without selector", []string{"--db", good, "db", "prune"}, []string{"no selection"}},
		{"prune bad date", []string{"--db", good, "db", "prune", "--before", "yesterday"}, []string{"--before", "yesterday"}},
		{"prune bad status", []string{"--db", good, "db", "prune", "--status", "crashed"}, []string{"--status", "crashed"}},
		{"prune failed and status", []string{"--db", good, "db", "prune", "--failed", "--status", "timeout"}, []string{"--failed and --status"}},
		{"stats of a missing database", []string{"--db", filepath.Join(dir, "none.db"), "db", "stats"}, []string{"none.db", "does not exist"}},
		{"stats of a foreign database", []string{"--db", foreign, "db", "stats"}, []string{foreign, "another application"}},
		{"import into a text file", []string{"--db", notes, "db", "import", bad}, []string{notes, "not an SQLite database"}},
		{"merge a text file", []string{"--db", good, "db", "merge", notes}, []string{notes, "not an SQLite database"}},
		{"export negative best", []string{"--db", good, "db", "export", "--best", "-1"}, []string{"--best"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := os.ReadFile(notes)
			_, _, err := runCLI(t, "", tc.args...)
			if err == nil {
				t.Fatal("command succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if after, _ := os.ReadFile(notes); string(after) != string(before) {
				t.Errorf("%s was changed", notes)
			}
		})
	}
	// Verify reports a damaged database and exits non-zero.
	db, err := sql.Open("sqlite3", good)
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(`UPDATE records SET median = median * 2 WHERE status = 'ok'`)
	db.Close()
	out, _, err := runCLI(t, "", "--db", good, "db", "verify")
	if err == nil || !strings.Contains(out, "digest does not match") {
		t.Errorf("verify of an edited database: %v\n%s", err, out)
	}
}
