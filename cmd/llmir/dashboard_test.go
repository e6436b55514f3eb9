package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
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

// nightlyDB writes two nights of results (the second kernel 30% slower on
// the second night) into a results database and returns its path.
func nightlyDB(t *testing.T, dir string) (string, resultstest.Written) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(dir, "nightly.db")
	db, err := tuningdb.Open(ctx, path, tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	w, err := resultstest.History(ctx, db, resultstest.Scenario{Seed: 5, Nights: 2, Slowed: resultstest.Kernels[1].Name, SlowFactor: 1.3})
	if err != nil {
		t.Fatal(err)
	}
	return path, w
}

func TestDashboardCommand(t *testing.T) {
	dir := isolate(t)
	path, w := nightlyDB(t, dir)
	site := filepath.Join(dir, "site")

	out, _, err := runCLI(t, dir, "dashboard", "--results", path, "-o", site)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "2 regressed") || !strings.Contains(out, "index.html") {
		t.Errorf("dashboard printed %q", out)
	}
	page, err := os.ReadFile(filepath.Join(site, "index.html"))
	if err != nil || !strings.Contains(string(page), w.Slowed) || strings.Count(string(page), `<svg class="chart trend"`) != w.Series {
		t.Errorf("index.html: %d bytes, %v", len(page), err)
	}
	for _, f := range []string{"style.css", "app.js", "data.json"} {
		if _, err := os.Stat(filepath.Join(site, f)); err != nil {
			t.Errorf("site lacks %s: %v", f, err)
		}
	}
	// --db is the default results database; --suite narrows the page.
	out, _, err = runCLI(t, "", "--db", path, "dashboard", "-o", filepath.Join(dir, "site2"), "--suite", "tuning", "--runs", "0")
	if err != nil || !strings.Contains(out, "1 benchmarks (2 results), 0 tuning curves") {
		t.Errorf("dashboard --db --suite: %q, %v", out, err)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no -o", []string{"dashboard", "--results", path}, "-o/--out DIR is required"},
		{"missing database", []string{"dashboard", "--results", filepath.Join(dir, "nope.db"), "-o", site}, "nope.db: no such results database"},
		{"bad window", []string{"dashboard", "report", "--results", path, "--window", "0"}, "--window/--floor/--k: window 0"},
		{"bad device", []string{"dashboard", "report", "--results", path, "--device", "cpu0"}, `--device "cpu0"`},
		{"negative since", []string{"dashboard", "report", "--results", path, "--since", "-1h"}, "--since -1h0m0s"},
		{"negative runs", []string{"dashboard", "--results", path, "-o", site, "--runs", "-2"}, "--runs -2"},
		{"argument", []string{"dashboard", "report", "extra"}, "unknown command"},
		{"foreign file", []string{"dashboard", "report", "--results", filepath.Join(site, "index.html")}, "not an SQLite database"},
	} {
		_, _, err := runCLI(t, "", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v; want one containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nope.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing --results database was created: %v", err)
	}
}

func TestDashboardReport(t *testing.T) {
	dir := isolate(t)
	path, w := nightlyDB(t, dir)

	out, _, err := runCLI(t, dir, "dashboard", "report", "--results", path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "2 regressed, 0 improved, 7 unchanged, 0 new") || strings.Count(out, "REGRESSED") != 2 || !strings.Contains(out, w.Slowed) {
		t.Errorf("report:\n%s", out)
	}
	_, _, err = runCLI(t, "", "dashboard", "report", "--results", path, "--fail-on-regression")
	var ec interface{ ExitCode() int }
	if !errors.As(err, &ec) || ec.ExitCode() != ExitRegression || !strings.Contains(err.Error(), "2 of 9 benchmarks regressed") {
		t.Errorf("--fail-on-regression: %v; want exit status 3", err)
	}
	out, _, err = runCLI(t, "", "dashboard", "report", "--results", path, "--json")
	var rep results.Report
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || rep.Regressed != 2 || len(rep.Findings) != w.Series || rep.Policy.Window != 5 {
		t.Errorf("--json: %+v, %v", rep, err)
	}
	// The rule's knobs come from flags or the environment (LLMIR_FLOOR):
	// a 50% floor lets the 30% slowdown pass.
	t.Setenv("LLMIR_FLOOR", "0.5")
	out, _, err = runCLI(t, "", "dashboard", "report", "--results", path, "--fail-on-regression", "--all")
	if err != nil || !strings.Contains(out, "0 regressed") || strings.Count(out, "unchanged") < w.Series {
		t.Errorf("LLMIR_FLOOR=0.5: %v\n%s", err, out)
	}
}

func TestDashboardServe(t *testing.T) {
	dir := isolate(t)
	path, w := nightlyDB(t, dir)
	for _, mode := range [][]string{
		{"--results", path},
		{"--dir", filepath.Join(dir, "site")},
	} {
		if mode[0] == "--dir" {
			if _, _, err := runCLI(t, "", "dashboard", "--results", path, "-o", mode[1]); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		cmd := newRootCmd()
		cmd.SetArgs(append([]string{"dashboard", "serve", "--addr", "127.0.0.1:0"}, mode...))
		cmd.SetOut(pw)
		cmd.SetErr(io.Discard)
		done := make(chan error, 1)
		go func() { done <- cmd.ExecuteContext(ctx); pw.Close() }()

		line, err := bufio.NewReader(pr).ReadString('\n')
		if err != nil {
			cancel()
			t.Fatalf("serve %v: no first line: %v (%v)", mode, err, <-done)
		}
		go io.Copy(io.Discard, pr)
		url := regexp.MustCompile(`http://[0-9.:]+/`).FindString(line)
		if url == "" {
			t.Fatalf("serve printed %q; want its address", line)
		}
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), w.Slowed) {
			t.Errorf("serve %v: GET / = %d, %d bytes", mode, resp.StatusCode, len(body))
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve %v stopped with %v", mode, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("serve %v did not stop when its context ended", mode)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--addr", "nonsense"}, `--addr "nonsense"`},
		{[]string{"--dir", dir}, "no index.html"},
	} {
		_, _, err := runCLI(t, "", append([]string{"dashboard", "serve", "--results", path}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %v: %v; want %q", tc.args, err, tc.want)
		}
	}
}
