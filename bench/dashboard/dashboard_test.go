package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"llmir/bench/results"
	"llmir/bench/results/resultstest"
	"llmir/tuningdb"
)

var fixedNow = func() time.Time { return time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC) }

// nights opens a database holding the shared scenario: nights nights, the
// second kernel 30% slower on the last.
func nights(t testing.TB, n int) (*tuningdb.DB, resultstest.Written) {
	t.Helper()
	ctx := context.Background()
	db, err := tuningdb.Open(ctx, filepath.Join(t.TempDir(), "results.db"), tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	w, err := resultstest.History(ctx, db, resultstest.Scenario{Seed: 11, Nights: n, Slowed: resultstest.Kernels[1].Name, SlowFactor: 1.3})
	if err != nil {
		t.Fatal(err)
	}
	return db, w
}

func TestGenerate(t *testing.T) {
	db, w := nights(t, 2)
	site, err := Generate(context.Background(), db, Options{Now: fixedNow, Source: "results.db"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"index.html", "style.css", "app.js", "data.json"} {
		if len(site.Files[name]) == 0 {
			t.Errorf("site lacks %s", name)
		}
	}
	page := string(site.Files["index.html"])
	// Works offline: nothing is fetched from anywhere but the site itself.
	if m := regexp.MustCompile(`(src|href)="(https?:)?//`).FindString(page); m != "" {
		t.Errorf("index.html refers to another host: %s", m)
	}
	if site.Series != w.Series || site.Points != w.Results || site.Runs != 1 {
		t.Errorf("site shows %d series, %d points, %d runs; want %d, %d, 1", site.Series, site.Points, site.Runs, w.Series, w.Results)
	}
	if got := strings.Count(page, `<svg class="chart trend"`); got != w.Series {
		t.Errorf("%d trend charts; want one per series (%d)", got, w.Series)
	}
	if got := strings.Count(page, `<circle class="pt`); got != w.Results+1 { // + the tuning chart's best point
		t.Errorf("%d data points drawn; want %d results + 1 best-so-far", got, w.Results)
	}
	if got := strings.Count(page, `<tr class="f"`); got != w.Series {
		t.Errorf("%d overview rows; want %d", got, w.Series)
	}
	// The slowed kernel's rows come first and are flagged.
	first := regexp.MustCompile(`<tr class="f"[^>]*data-name="([^"]*)"[^>]*data-verdict="([a-z]*)"`).FindAllStringSubmatch(page, 3)
	if len(first) < 3 || first[0][1] != w.Slowed || first[0][2] != "regressed" || first[1][2] != "regressed" || first[2][2] == "regressed" {
		t.Errorf("first overview rows: %v; want the two series of %s regressed, then the rest", first, w.Slowed)
	}
	for _, want := range []string{"2 regressed", "AMD EPYC 7B13 (2 cores)", results.ShortCommit(w.Commits[1]), "tuning progress", "openblas", "run 1"} {
		if !strings.Contains(strings.ToLower(page), strings.ToLower(want)) {
			t.Errorf("index.html lacks %q", want)
		}
	}
	var data struct {
		Report results.Report
		Series []results.Series
	}
	if err := json.Unmarshal(site.Files["data.json"], &data); err != nil || data.Report.Regressed != 2 || len(data.Series) != w.Series {
		t.Errorf("data.json: %d regressed, %d series, %v", data.Report.Regressed, len(data.Series), err)
	}

	dir := filepath.Join(t.TempDir(), "site")
	if err := site.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "index.html")); err != nil || string(b) != page {
		t.Errorf("written index.html differs: %v", err)
	}
}

func TestGenerateEmptyAndFiltered(t *testing.T) {
	ctx := context.Background()
	db, err := tuningdb.OpenMemory(ctx, tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	site, err := Generate(ctx, db, Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if page := string(site.Files["index.html"]); !strings.Contains(page, "No benchmark results yet") || !strings.Contains(page, "No tuning runs") {
		t.Errorf("empty database: page does not say so")
	}

	db2, w := nights(t, 3)
	site, err = Generate(ctx, db2, Options{Now: fixedNow, Filter: tuningdb.BenchFilter{Suite: "tuning"}, Runs: -1})
	if err != nil {
		t.Fatal(err)
	}
	if site.Series != 1 || site.Points != 3 || site.Runs != 0 {
		t.Errorf("suite filter: %d series, %d points, %d runs; want 1, 3, 0", site.Series, site.Points, site.Runs)
	}
	_ = w
	if _, err := Generate(ctx, db2, Options{Policy: results.Policy{Window: -1, K: 1}}); err == nil || !strings.Contains(err.Error(), "window") {
		t.Errorf("bad policy: %v", err)
	}
}

func TestHandlers(t *testing.T) {
	db, w := nights(t, 2)
	site, err := Generate(context.Background(), db, Options{Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	live := httptest.NewServer(LiveHandler(db, Options{Now: fixedNow}))
	defer live.Close()
	static := httptest.NewServer(site.Handler())
	defer static.Close()
	for _, srv := range []*httptest.Server{static, live} {
		for _, tc := range []struct {
			method, path string
			code         int
			ctype        string
		}{
			{"GET", "/", 200, "text/html"},
			{"GET", "/index.html", 200, "text/html"},
			{"HEAD", "/style.css", 200, "text/css"},
			{"GET", "/app.js", 200, "text/javascript"},
			{"GET", "/data.json", 200, "application/json"},
			{"GET", "/missing.png", 404, ""},
			{"GET", "/../../etc/passwd", 404, ""},
			{"POST", "/", 405, ""},
		} {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) {
				t.Errorf("%s %s: %d %q; want %d %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.code, tc.ctype)
			}
		}
	}
	// The live handler shows results written after it started.
	if err := db.AddBenchResults(context.Background(), []tuningdb.BenchResult{{Suite: "kernels", Name: "Fresh/after-start",
		DeviceHash: w.Device.Hash, Metric: "median_s", Unit: "s", Samples: []float64{1e-3, 1.1e-3}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(live.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "Fresh/after-start") {
		t.Error("live handler does not show a result written after it started")
	}
}

func TestNiceTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   []float64
	}{
		{2.87, 3.91, []float64{2.5, 3, 3.5, 4}},
		{0, 100, []float64{0, 25, 50, 75, 100}},
		{118.2, 118.2, nil}, // a flat series still gets a range
	} {
		got, lo, hi := niceTicks(tc.lo, tc.hi, 4)
		if lo > tc.lo || hi < tc.hi || len(got) < 2 {
			t.Errorf("niceTicks(%v, %v) = %v over [%v, %v]: does not cover the data", tc.lo, tc.hi, got, lo, hi)
		}
		if tc.want != nil && (len(got) != len(tc.want) || got[0] != tc.want[0] || got[len(got)-1] != tc.want[len(tc.want)-1]) {
			t.Errorf("niceTicks(%v, %v) = %v; want %v", tc.lo, tc.hi, got, tc.want)
		}
	}
	for _, tc := range []struct {
		unit string
		max  float64
		want string
	}{{"s", 2.9e-3, "ms"}, {"s", 0.118, "ms"}, {"s", 3e-5, "µs"}, {"s", 2, "s"}, {"ms", 0.5, "µs"}, {"GB/s", 20, "GB/s"}} {
		if got := scaleFor(tc.unit, tc.max); got.unit != tc.want {
			t.Errorf("scaleFor(%q, %v) = %q; want %q", tc.unit, tc.max, got.unit, tc.want)
		}
	}
}
