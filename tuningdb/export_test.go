package tuningdb

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// fillRandom stores a seeded mix of devices, workloads, records of every
// status and codegen version, and a model.
func fillRandom(t testing.TB, db *DB, seed uint64, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	devs := []Device{testDevice("a", KindCPU, "x86_64/avx2+fma"), testDevice("b", KindCPU, "x86_64/avx2+fma"), testDevice("g", KindCUDA, "sm_90")}
	var wls []Workload
	for _, fam := range []string{"linear", "rms_norm+linear"} {
		for _, b := range []int64{1, 16, 128} {
			wls = append(wls, testWorkload(fam, b))
		}
	}
	var recs []Record
	for i := range n {
		st := Statuses[rng.IntN(len(Statuses))]
		if rng.IntN(2) == 0 {
			st = StatusOK
		}
		r := testRecord(wls[rng.IntN(len(wls))], devs[rng.IntN(len(devs))], 1+rng.IntN(2), 1e-4*(1+rng.Float64()), st, t0.Add(time.Duration(i)*time.Millisecond))
		recs = append(recs, r)
	}
	mustBatch(t, db, Batch{Devices: devs, Workloads: wls, Records: recs})
	if err := db.PutModel(context.Background(), Model{DeviceHash: devs[0].Hash, Name: "gbt", CodegenVersion: 1, Format: "gbt-json",
		Data: []byte{0, 1, 2, 255}, TrainedOn: n, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
}

func export(t testing.TB, db *DB, opts ExportOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := db.Export(context.Background(), &buf, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExportImportRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := openTest(t)
	fillRandom(t, src, 1, 200)
	first := export(t, src, ExportOptions{})
	if !bytes.HasPrefix(first, []byte(`{"format":"llmir-tuningdb","version":1,"devices":3,"workloads":6,"records":200,"models":1}`+"\n")) {
		t.Fatalf("header: %s", first[:bytes.IndexByte(first, '\n')])
	}
	dst := openTest(t)
	res, err := dst.Import(ctx, bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 200 || res.Duplicates != 0 || res.Devices != 3 || res.Workloads != 6 || res.Models != 1 {
		t.Errorf("first import: %+v", res)
	}
	if second := export(t, dst, ExportOptions{}); !bytes.Equal(first, second) {
		t.Errorf("export → import → export changed the file")
	}
	res, err = dst.Import(ctx, bytes.NewReader(first))
	if err != nil || res.Records != 0 || res.Duplicates != 200 || res.Devices != 0 || res.Models != 0 {
		t.Errorf("second import: %+v, %v; want everything a duplicate", res, err)
	}
	if rep, err := dst.Verify(ctx); err != nil || !rep.OK() {
		t.Errorf("verify after import: %+v, %v", rep, err)
	}
}

func TestExportBestK(t *testing.T) {
	ctx := context.Background()
	src := openTest(t)
	fillRandom(t, src, 2, 300)
	out := export(t, src, ExportOptions{BestK: 2, CodegenVersion: 2})
	dst := openTest(t)
	if _, err := dst.Import(ctx, bytes.NewReader(out)); err != nil {
		t.Fatal(err)
	}
	var bad, groups, models int
	dst.sql.QueryRow(`SELECT count(*) FROM records WHERE status <> 'ok' OR codegen_version <> 2`).Scan(&bad)
	dst.sql.QueryRow(`SELECT count(*) FROM (SELECT 1 FROM records GROUP BY workload_id, device_id HAVING count(*) > 2)`).Scan(&groups)
	dst.sql.QueryRow(`SELECT count(*) FROM models`).Scan(&models)
	if bad != 0 || groups != 0 || models != 0 {
		t.Errorf("distilled export holds %d failed or other-version records, %d groups above 2, %d models", bad, groups, models)
	}
	// Every best record survives distillation.
	for _, w := range []Workload{testWorkload("linear", 16), testWorkload("rms_norm+linear", 128)} {
		for _, d := range []Device{testDevice("a", KindCPU, "x86_64/avx2+fma"), testDevice("g", KindCUDA, "sm_90")} {
			want, errW := src.BestRecord(ctx, w.Key, d.Hash, 2)
			got, errG := dst.BestRecord(ctx, w.Key, d.Hash, 2)
			if (errW == nil) != (errG == nil) || (errW == nil && want.Median != got.Median) {
				t.Errorf("best of %.8s on %.8s: source %v (%v), distilled %v (%v)", w.Key, d.Hash, want.Median, errW, got.Median, errG)
			}
		}
	}
}

func TestImportErrorsNameTheLine(t *testing.T) {
	ctx := context.Background()
	src := openTest(t)
	fillRandom(t, src, 3, 5)
	good := strings.Split(strings.TrimSuffix(string(export(t, src, ExportOptions{})), "\n"), "\n")
	// Lines: 1 header, 2-4 devices, 5-10 workloads, 11-15 records, 16 model.
	with := func(n int, line string) string {
		l := append([]string(nil), good...)
		l[n-1] = line
		return strings.Join(l, "\n") + "\n"
	}
	recLine := good[10]
	cases := []struct {
		name  string
		input string
		line  int
		want  string
	}{
		{"empty input", "", 0, "empty input"},
		{"not JSON", "hello\n", 1, "header"},
		{"other format", `{"format":"tvm-log","version":1}` + "\n", 1, `format "tvm-log"`},
		{"newer version", `{"format":"llmir-tuningdb","version":2}` + "\n", 1, "format version 2"},
		{"unknown field", with(2, strings.Replace(good[1], `"type":"device"`, `"type":"device","colour":"red"`, 1)), 2, "unknown field"},
		{"truncated JSON", with(12, recLine[:len(recLine)/2]), 12, "unexpected EOF"},
		{"blank line", with(6, " "), 6, "empty line"},
		{"type mismatch", with(5, strings.Replace(good[4], `"type":"workload"`, `"type":"record"`, 1)), 5, "does not match"},
		{"two objects", with(3, strings.Replace(good[2], `"type":"device",`, `"type":"device","workload":{},`, 1)), 3, "exactly one"},
		{"bad status", with(13, strings.Replace(good[12], `"status":"`, `"status":"x`, 1)), 13, "unknown status"},
		{"wrong hash", with(2, strings.Replace(good[1], `"name":"a"`, `"name":"z"`, 1)), 2, "SHA-256"},
		{"record before its device", strings.Join([]string{`{"format":"llmir-tuningdb","version":1,"records":1}`, recLine}, "\n"), 2, "unknown"},
		{"truncated file", strings.Join(good[:14], "\n") + "\n", 0, "truncated"},
		{"two values", with(7, good[6]+" {}"), 7, "more than one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := openTest(t)
			_, err := dst.Import(ctx, strings.NewReader(tc.input))
			if err == nil {
				t.Fatal("import succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			var le *LineError
			if tc.line > 0 && (!errors.As(err, &le) || le.Line != tc.line) {
				t.Errorf("error %q does not name line %d", err, tc.line)
			}
			var n int
			dst.sql.QueryRow(`SELECT (SELECT count(*) FROM devices) + (SELECT count(*) FROM workloads) + (SELECT count(*) FROM records)`).Scan(&n)
			if n != 0 {
				t.Errorf("a failed import left %d rows", n)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	ctx := context.Background()
	a, b := openTest(t), openTest(t)
	fillRandom(t, a, 4, 50)
	fillRandom(t, b, 4, 50) // the same 50 records
	w := testWorkload("linear", 16)
	d := testDevice("z", KindCPU, "x86_64/avx512f+fma")
	mustBatch(t, b, Batch{Devices: []Device{d}, Workloads: []Workload{w}, Records: []Record{testRecord(w, d, 1, 1e-3, StatusOK, t0)}})
	res, err := a.Merge(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 1 || res.Duplicates != 50 || res.Devices != 1 {
		t.Errorf("merge: %+v, want 1 new record, 50 duplicates, 1 new device", res)
	}
	if !bytes.Equal(export(t, a, ExportOptions{}), export(t, b, ExportOptions{})) {
		t.Errorf("after merging b into a, the two differ")
	}
}

func TestPrecompiledDatabase(t *testing.T) {
	ctx := context.Background()
	h, err := PrecompiledHeader()
	if err != nil || h.Format != Format || h.Version != FormatVersion {
		t.Fatalf("embedded header %+v, %v", h, err)
	}
	db, err := OpenPrecompiled(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := db.Stats(ctx)
	if err != nil || st.Records != h.Records || st.Devices != h.Devices {
		t.Errorf("loaded %+v (%v), header says %+v", st, err, h)
	}
	if err := db.PutDevice(ctx, testDevice("a", KindCPU, "x")); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write to the precompiled database: %v, want ErrReadOnly", err)
	}
}

// FuzzImport: no input panics the importer, a failed import changes
// nothing, and whatever it accepts is a healthy database that exports back
// to something it accepts again.
func FuzzImport(f *testing.F) {
	ctx := context.Background()
	src, err := OpenMemory(ctx, Options{})
	if err != nil {
		f.Fatal(err)
	}
	fillRandom(f, src, 5, 3)
	var buf bytes.Buffer
	if _, err := src.Export(ctx, &buf, ExportOptions{}); err != nil {
		f.Fatal(err)
	}
	src.Close()
	f.Add(buf.Bytes())
	f.Add(precompiledJSONL)
	lines := bytes.Split(buf.Bytes(), []byte("\n"))
	f.Add(bytes.Join(lines[:len(lines)/2], []byte("\n")))
	f.Add([]byte(`{"format":"llmir-tuningdb","version":1,"devices":1}` + "\n" + `{"type":"device","device":{"hash":"` + strings.Repeat("0", 64) + `"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		db, err := OpenMemory(ctx, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Import(ctx, bytes.NewReader(data)); err != nil {
			if n := countRecords(t, db); n != 0 {
				t.Fatalf("failed import (%v) left %d records", err, n)
			}
			return
		}
		rep, err := db.Verify(ctx)
		if err != nil || !rep.OK() {
			t.Fatalf("accepted input gives an unhealthy database: %+v, %v", rep, err)
		}
		var out bytes.Buffer
		if _, err := db.Export(ctx, &out, ExportOptions{}); err != nil {
			t.Fatal(err)
		}
		again, err := OpenMemory(ctx, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		if _, err := again.Import(ctx, &out); err != nil {
			t.Fatalf("re-import of an export of accepted input: %v", err)
		}
	})
}

func TestExportMaxSamples(t *testing.T) {
	if got := thinSamples([]float64{5, 1, 4, 2, 3, 9, 7}, 3); !slices.Equal(got, []float64{1, 4, 9}) {
		t.Errorf("3 of 7: %v, want min, median, max [1 4 9]", got)
	}
	if got := thinSamples([]float64{3, 1, 2}, 5); !slices.Equal(got, []float64{3, 1, 2}) {
		t.Errorf("fewer than asked: %v, want the samples unchanged", got)
	}
	ctx := context.Background()
	src := openTest(t)
	w, d := testWorkload("linear", 16), testDevice("g", KindCUDA, "sm_90")
	r := testRecord(w, d, 2, 0, StatusOK, time.Unix(1e9, 0))
	r.Samples = make([]float64, 1000)
	for i := range r.Samples {
		r.Samples[i] = float64(1000-i) * 1e-6
	}
	r.Median, r.Min, r.IQR = 500.5e-6, 1e-6, 500e-6
	mustBatch(t, src, Batch{Devices: []Device{d}, Workloads: []Workload{w}, Records: []Record{r}})
	dst := openTest(t)
	if _, err := dst.Import(ctx, bytes.NewReader(export(t, src, ExportOptions{BestK: 1, MaxSamples: 16}))); err != nil {
		t.Fatal(err)
	}
	got, err := dst.BestRecord(ctx, w.Key, d.Hash, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Samples) != 16 || got.Samples[0] != 1e-6 || got.Samples[15] != 1000e-6 || got.Median != r.Median || got.Min != r.Min || got.IQR != r.IQR {
		t.Errorf("thinned record: %d samples [%v … %v], median %v min %v iqr %v", len(got.Samples), got.Samples[0], got.Samples[len(got.Samples)-1], got.Median, got.Min, got.IQR)
	}
	if rep, err := dst.Verify(ctx); err != nil || !rep.OK() {
		t.Errorf("verify after import: %v %+v", err, rep)
	}
}
