package dashboard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's Chromium (LLMIR_CHROMIUM overrides). Without
// it the browser test is skipped on a developer machine and fails in CI
// (CI=true), where scripts/ensure-deps.sh chromium must have installed it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("LLMIR_CHROMIUM"), "chromium", "/usr/bin/chromium", "chromium-browser"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found: install it with scripts/ensure-deps.sh chromium (Debian package chromium)")
	}
	t.Skip("chromium not found; install it with scripts/ensure-deps.sh chromium to run the browser test")
	return ""
}

// TestDashboardInChromium opens a generated site (two nights, one kernel
// slowed on the second) in headless Chromium, fails on any console error or
// uncaught exception, counts the data points the charts hold, drives the
// filters, and saves a screenshot (to $LLMIR_SCREENSHOT_DIR when set).
func TestDashboardInChromium(t *testing.T) {
	exe := chromiumPath(t)
	db, w := nights(t, 2)
	site, err := Generate(context.Background(), db, Options{Now: fixedNow, Source: "nightly.db"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "site")
	if err := site.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	// The files as written to disk, served as a static host would.
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1500, 1000),
		// This machine's network is closed: keep Chromium from trying.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()

	// Collect every console message, exception and browser-log entry.
	listenCtx, stopListen := context.WithCancel(tab)
	var (
		mu       sync.Mutex
		messages []chromedp.ConsoleMessage
		done     = make(chan struct{})
	)
	stream := chromedp.Console(listenCtx)
	go func() {
		defer close(done)
		for m, err := range stream {
			if err != nil {
				return
			}
			mu.Lock()
			messages = append(messages, m)
			mu.Unlock()
		}
	}()

	if err := chromedp.Do(tab, chromedp.Navigate(srv.URL+"/index.html"), chromedp.WaitReady(chromedp.CSS("#f-count"))); err != nil {
		t.Fatalf("open the dashboard in chromium: %v", err)
	}
	type pageState struct {
		Charts, EmptyCharts, Points, Declared int
		TuneCharts, TuneTrials                int
		MinLinePoints                         int
		Rows, VisibleRows, RegressedRows      int
		CountText                             string
		Styled                                bool
		ChartWidth                            float64
	}
	const probe = `(() => {
		const trend = Array.from(document.querySelectorAll('svg.chart.trend'));
		const tune = Array.from(document.querySelectorAll('svg.chart.tune'));
		const lines = trend.map(s => s.querySelector('polyline.line').points.numberOfItems);
		const rows = Array.from(document.querySelectorAll('#overview tbody tr'));
		return {
			Charts: trend.length,
			EmptyCharts: trend.filter(s => s.querySelectorAll('circle.pt').length === 0).length,
			Points: trend.reduce((n, s) => n + s.querySelectorAll('circle.pt').length, 0),
			Declared: trend.reduce((n, s) => n + Number(s.dataset.points), 0),
			TuneCharts: tune.length,
			TuneTrials: tune.reduce((n, s) => n + s.querySelectorAll('circle.trial').length, 0),
			MinLinePoints: lines.length ? Math.min(...lines) : 0,
			Rows: rows.length,
			VisibleRows: rows.filter(r => !r.classList.contains('hidden')).length,
			RegressedRows: rows.filter(r => r.dataset.verdict === 'regressed').length,
			CountText: document.getElementById('f-count').textContent,
			Styled: getComputedStyle(document.querySelector('table')).borderCollapse === 'collapse',
			ChartWidth: trend.length ? trend[0].getBoundingClientRect().width : 0,
		};
	})()`
	st, err := chromedp.Run(tab, chromedp.Evaluate[pageState](probe))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("page state: %+v", st)
	switch {
	case st.Charts != w.Series || st.EmptyCharts != 0:
		t.Errorf("%d trend charts, %d without points; want %d, none empty", st.Charts, st.EmptyCharts, w.Series)
	case st.Points != w.Results || st.Declared != w.Results:
		t.Errorf("charts hold %d points (declare %d); want one per result, %d", st.Points, st.Declared, w.Results)
	case st.MinLinePoints != 2:
		t.Errorf("shortest trend line has %d points; want 2 (two nights)", st.MinLinePoints)
	case st.TuneCharts != 1 || st.TuneTrials == 0 || st.TuneTrials > w.Trials:
		t.Errorf("%d tuning charts with %d trial points; want 1 chart with up to %d", st.TuneCharts, st.TuneTrials, w.Trials)
	case st.Rows != w.Series || st.VisibleRows != w.Series || st.RegressedRows != 2:
		t.Errorf("rows: %d, %d visible, %d regressed; want %d, all, 2", st.Rows, st.VisibleRows, st.RegressedRows, w.Series)
	case !st.Styled || st.ChartWidth < 300:
		t.Errorf("style.css not applied (styled %v) or charts not laid out (width %v)", st.Styled, st.ChartWidth)
	}

	// The filters, as a user clicks them.
	for _, tc := range []struct {
		name, js string
		visible  int
	}{
		{"regressed or improved only", `document.getElementById('f-attention').click()`, 2},
		{"and suite tuning", `(() => { const s = document.getElementById('f-suite'); s.value = 'tuning'; s.dispatchEvent(new Event('change')); })()`, 0},
		{"suite tuning alone", `document.getElementById('f-attention').click()`, 1},
		{"name search", `(() => { const s = document.getElementById('f-suite'); s.value = ''; s.dispatchEvent(new Event('change'));
			const n = document.getElementById('f-name'); n.value = 'pagedattention'; n.dispatchEvent(new Event('input')); })()`, 2},
		{"device filter", `(() => { document.getElementById('f-name').value = ''; const d = document.getElementById('f-device');
			d.value = d.options[1].value; d.dispatchEvent(new Event('change')); })()`, w.Series},
		{"reset", `(() => { const d = document.getElementById('f-device'); d.value = ''; d.dispatchEvent(new Event('change')); })()`, w.Series},
	} {
		if _, err := chromedp.Run(tab, chromedp.Evaluate[chromedp.Void](tc.js)); err != nil {
			t.Fatalf("filter %s: %v", tc.name, err)
		}
		st, err := chromedp.Run(tab, chromedp.Evaluate[pageState](probe))
		if err != nil {
			t.Fatal(err)
		}
		if st.VisibleRows != tc.visible {
			t.Errorf("filter %s: %d rows visible (%q); want %d", tc.name, st.VisibleRows, st.CountText, tc.visible)
		}
	}

	png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	out := os.Getenv("LLMIR_SCREENSHOT_DIR")
	if out == "" {
		out = t.TempDir()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(out, "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Errorf("screenshot is not a PNG (%d bytes)", len(png))
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	stopListen()
	<-done
	mu.Lock()
	defer mu.Unlock()
	for _, m := range messages {
		if m.IsException() || m.Type == chromedp.ConsoleError {
			t.Errorf("browser console: %s (%s:%d)", m, m.URL, m.Line)
		}
	}
}
