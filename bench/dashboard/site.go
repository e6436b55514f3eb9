package dashboard

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"llmir/bench/results"
	"llmir/tuningdb"
)

//go:embed assets
var assets embed.FS

var pageTmpl = template.Must(template.New("index.html.tmpl").ParseFS(assets, "assets/index.html.tmpl"))

// Options configure Generate. The zero value is usable.
type Options struct {
	// Filter selects the results shown (zero: all of them).
	Filter tuningdb.BenchFilter
	// Policy is the regression rule (zero: results.DefaultPolicy).
	Policy results.Policy
	// Runs is how many recent tuning runs get progress curves (default 6;
	// negative: none).
	Runs int
	// Title heads the page (default "llmir benchmarks").
	Title string
	// Source names where the results came from (the database path).
	Source string
	// Now stamps the page (default time.Now).
	Now func() time.Time
}

// Site is a generated dashboard: file name → content. It needs no network:
// styles and script are local files, charts are inline SVG.
type Site struct {
	Files  map[string][]byte
	Report results.Report
	// Series, Points and Runs count what the page shows.
	Series, Points, Runs int
}

// Generate reads the results and tuning runs from db and renders the site.
func Generate(ctx context.Context, db *tuningdb.DB, o Options) (*Site, error) {
	if o.Policy == (results.Policy{}) {
		o.Policy = results.DefaultPolicy()
	}
	if o.Runs == 0 {
		o.Runs = 6
	}
	if o.Title == "" {
		o.Title = "llmir benchmarks"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	series, err := results.Load(ctx, db, o.Filter)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	rep, err := results.Detect(series, o.Policy)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	devs, err := db.BenchDevices(ctx)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	p := page{Title: o.Title, Source: o.Source, Generated: o.Now().UTC().Format("2006-01-02 15:04 UTC"), Report: rep, Policy: o.Policy}
	p.FloorPct = fmt.Sprintf("%.1f%%", 100*o.Policy.Floor)
	labels := map[string]string{}
	for _, d := range devs {
		labels[d.Hash] = deviceLabel(d)
	}
	site := &Site{Files: map[string][]byte{}, Report: rep, Series: len(series)}
	findings := map[string]results.Finding{}
	for _, f := range rep.Findings {
		findings[f.ID()] = f
	}
	suites, devices, metrics := map[string]bool{}, map[string]bool{}, map[string]bool{}
	var latest time.Time
	for i, s := range series {
		f := findings[s.ID()]
		label, ok := labels[s.Device]
		if !ok {
			label = "unknown device"
			if s.Device != "" {
				label = "device " + s.Device[:min(len(s.Device), 12)]
			}
			labels[s.Device] = label
		}
		suites[s.Suite], devices[s.Device], metrics[s.Metric] = true, true, true
		id := fmt.Sprintf("s%d", i)
		row := newRow(id, s, f, label)
		row.Spark = template.HTML(sparkSVG(s, f.Verdict))
		p.Rows = append(p.Rows, row)
		p.Charts = append(p.Charts, chartView{
			ID: id, Suite: s.Suite, Device: s.Device, Metric: s.Metric, Verdict: string(f.Verdict), Name: s.Name,
			Title: s.Name, Sub: fmt.Sprintf("%s · %s · %s", s.Suite, s.Metric, label), Row: row,
			SVG: template.HTML(trendSVG(s, f, s.Name+" "+s.Metric)),
		})
		site.Points += len(s.Points)
		if t := s.Latest().CreatedAt; t.After(latest) {
			latest, p.LatestCommit = t, results.ShortCommit(s.Latest().GitCommit)
		}
	}
	// The overview lists what needs attention first, as the report does.
	order := map[results.Verdict]int{results.Regressed: 0, results.Improved: 1, results.New: 2, results.Unchanged: 3}
	sort.SliceStable(p.Rows, func(i, j int) bool {
		return order[results.Verdict(p.Rows[i].Verdict)] < order[results.Verdict(p.Rows[j].Verdict)]
	})
	if !latest.IsZero() {
		p.LatestAt = latest.Format("2006-01-02 15:04 UTC")
	}
	p.Suites = sortedKeys(suites)
	p.Metrics = sortedKeys(metrics)
	for _, h := range sortedKeys(devices) {
		p.Devices = append(p.Devices, option{Value: h, Label: labels[h]})
	}
	if o.Runs > 0 {
		if p.Runs, err = runViews(ctx, db, o.Runs, labels); err != nil {
			return nil, fmt.Errorf("dashboard: %w", err)
		}
		site.Runs = len(p.Runs)
	}

	var html bytes.Buffer
	if err := pageTmpl.Execute(&html, p); err != nil {
		return nil, fmt.Errorf("dashboard: render index.html: %w", err)
	}
	site.Files["index.html"] = html.Bytes()
	for _, name := range []string{"style.css", "app.js"} {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			return nil, fmt.Errorf("dashboard: %w", err)
		}
		site.Files[name] = b
	}
	data, err := json.MarshalIndent(struct {
		Generated string           `json:"generated"`
		Report    results.Report   `json:"report"`
		Series    []results.Series `json:"series"`
	}{p.Generated, rep, series}, "", " ")
	if err != nil {
		return nil, fmt.Errorf("dashboard: data.json: %w", err)
	}
	site.Files["data.json"] = data
	return site, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// deviceLabel names a device for people: the CPU model or GPU name from its
// fingerprint, and the start of its hash.
func deviceLabel(d tuningdb.Device) string {
	var fp struct {
		Model, Name string
		Cores       int
	}
	_ = json.Unmarshal(d.Fingerprint, &fp) // a fingerprint without these fields still has a hash
	name := cmpOr(fp.Model, fp.Name, d.Compat)
	if fp.Cores > 0 {
		name += fmt.Sprintf(" (%d cores)", fp.Cores)
	}
	return name + " · " + d.Hash[:min(len(d.Hash), 8)]
}

func cmpOr(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

type option struct{ Value, Label string }

type page struct {
	Title, Source, Generated string
	LatestAt, LatestCommit   string
	FloorPct                 string
	Report                   results.Report
	Policy                   results.Policy
	Suites, Metrics          []string
	Devices                  []option
	Rows                     []rowView
	Charts                   []chartView
	Runs                     []runView
}

// rowView is one overview-table row, formatted. Classes say whether a
// change is better ("good") or worse ("bad") than before.
type rowView struct {
	ID, Suite, Name, Metric, Device, DeviceLabel string
	Latest, Previous, PrevChange, PrevClass      string
	Reference, RefChange, RefClass, Threshold    string
	Baseline, Roofline, Verdict, Commit, When    string
	History, Points                              int
	Spark                                        template.HTML
}

func newRow(id string, s results.Series, f results.Finding, label string) rowView {
	r := rowView{
		ID: id, Suite: s.Suite, Name: s.Name, Metric: s.Metric, Device: s.Device, DeviceLabel: label,
		Latest: results.FormatValue(f.Latest, s.Unit), Verdict: string(f.Verdict), History: f.History, Points: len(s.Points),
		Commit: results.ShortCommit(f.LatestCommit), When: f.LatestAt.Format("2006-01-02 15:04"),
		PrevChange: "—", RefChange: "—", Reference: "—", Previous: "—", Baseline: "—", Roofline: "—", Threshold: "—",
	}
	class := func(change float64) string {
		gain := change
		if s.Better == tuningdb.BetterLower {
			gain = -gain
		}
		switch {
		case gain > f.Threshold && f.Threshold > 0:
			return "good"
		case gain < -f.Threshold && f.Threshold > 0:
			return "bad"
		}
		return ""
	}
	if len(s.Points) > 1 {
		r.Previous = results.FormatValue(f.Previous, s.Unit)
		r.PrevChange, r.PrevClass = results.FormatChange(f.PreviousChange), class(f.PreviousChange)
	}
	if f.History > 0 {
		r.Reference = results.FormatValue(f.Reference, s.Unit)
		r.RefChange, r.RefClass = results.FormatChange(f.Change), class(f.Change)
		r.Threshold = fmt.Sprintf("±%.1f%%", 100*f.Threshold)
	}
	if f.Failed {
		r.RefChange, r.RefClass = "failed", "bad"
	}
	if f.BaselineRatio > 0 {
		r.Baseline = fmt.Sprintf("%.2f× %s", f.BaselineRatio, cmpOr(f.Baseline, "baseline"))
	}
	if f.RooflineFraction > 0 {
		r.Roofline = fmt.Sprintf("%.0f%%", 100*f.RooflineFraction)
	}
	return r
}

type chartView struct {
	ID, Suite, Device, Metric, Verdict, Name string
	Title, Sub                               string
	Row                                      rowView
	SVG                                      template.HTML
}

type runView struct {
	Title, Sub, Device string
	SVG                template.HTML
}

// runViews draws the progress curves of the most recent tuning runs, one
// chart per (run, workload) that has an ok trial.
func runViews(ctx context.Context, db *tuningdb.DB, limit int, labels map[string]string) ([]runView, error) {
	runs, err := db.RecentRuns(ctx, limit)
	if err != nil {
		return nil, err
	}
	var out []runView
	for _, run := range runs {
		trials, err := db.RunRecords(ctx, run.ID)
		if err != nil {
			return nil, err
		}
		var keys []string
		byWorkload := map[string][]tuningdb.RunTrial{}
		for _, t := range trials {
			if _, ok := byWorkload[t.WorkloadKey]; !ok {
				keys = append(keys, t.WorkloadKey)
			}
			byWorkload[t.WorkloadKey] = append(byWorkload[t.WorkloadKey], t)
		}
		for _, k := range keys {
			ts := byWorkload[k]
			title := fmt.Sprintf("run %d · %s (bucket %d) · %.8s", run.ID, ts[0].Group, ts[0].Bucket, k)
			svg, best, ok := tuneSVG(ts, title)
			if ok == 0 {
				continue
			}
			dev := labels[ts[0].DeviceHash]
			if dev == "" {
				dev = "device " + ts[0].DeviceHash[:12]
			}
			sub := fmt.Sprintf("%s · started %s · %d trials (%d ok) · best %s", dev, run.StartedAt.Format("2006-01-02 15:04"),
				len(ts), ok, results.FormatSeconds(best))
			if run.Command != "" {
				sub += " · " + run.Command
			}
			out = append(out, runView{Title: title, Sub: sub, Device: ts[0].DeviceHash, SVG: template.HTML(svg)})
		}
	}
	return out, nil
}

// WriteDir writes the site's files into dir, creating it.
func (s *Site) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(s.Files)) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, s.Files[name], 0o644); err != nil {
			return fmt.Errorf("dashboard: write %s: %w", p, err)
		}
	}
	return nil
}

// Handler serves the site's files ("/" is index.html).
func (s *Site) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveFile(w, r, s.Files)
	})
}

func serveFile(w http.ResponseWriter, r *http.Request, files map[string][]byte) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" {
		name = "index.html"
	}
	b, ok := files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	types := map[string]string{".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
		".js": "text/javascript; charset=utf-8", ".json": "application/json"}
	w.Header().Set("Content-Type", types[path.Ext(name)])
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

// LiveHandler serves a dashboard generated afresh from the database for
// every page load, so that `llmir dashboard serve` shows results as suites
// write them. Assets and data.json come from the same generation.
func LiveHandler(db *tuningdb.DB, o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		site, err := Generate(r.Context(), db, o)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return
			}
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		serveFile(w, r, site.Files)
	})
}
