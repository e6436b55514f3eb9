package results

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"llmir/tuningdb"
)

// Series is one benchmark (suite, name, metric) on one device, oldest
// result first.
type Series struct {
	Suite  string `json:"suite"`
	Name   string `json:"name"`
	Metric string `json:"metric"`
	Device string `json:"device"` // device hash, "" when the rows name none
	Unit   string `json:"unit"`
	// Better is resolved: never BetterAuto.
	Better tuningdb.Better        `json:"better"`
	Points []tuningdb.BenchResult `json:"points"`
}

// ID names the series uniquely: suite/name:metric@device (device shortened).
func (s *Series) ID() string {
	return fmt.Sprintf("%s/%s:%s@%.12s", s.Suite, s.Name, s.Metric, s.Device)
}

// Latest is the newest result.
func (s *Series) Latest() tuningdb.BenchResult { return s.Points[len(s.Points)-1] }

// Load reads the results f selects and groups them into series.
func Load(ctx context.Context, db *tuningdb.DB, f tuningdb.BenchFilter) ([]Series, error) {
	rows, err := db.QueryBenchResults(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("load benchmark results: %w", err)
	}
	return Group(rows), nil
}

// Group splits rows into series, each oldest first, the series ordered by
// suite, name, metric and device. The rows may come in any order.
func Group(rows []tuningdb.BenchResult) []Series {
	type key struct{ suite, name, metric, device string }
	idx := map[key]int{}
	var out []Series
	for _, r := range rows {
		k := key{r.Suite, r.Name, r.Metric, r.DeviceHash}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Series{Suite: r.Suite, Name: r.Name, Metric: r.Metric, Device: r.DeviceHash})
		}
		out[i].Points = append(out[i].Points, r)
	}
	for i := range out {
		s := &out[i]
		slices.SortStableFunc(s.Points, func(a, b tuningdb.BenchResult) int {
			return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
		})
		last := s.Latest()
		s.Unit, s.Better = last.Unit, BetterOf(last)
	}
	slices.SortFunc(out, func(a, b Series) int {
		return cmp.Or(cmp.Compare(a.Suite, b.Suite), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Metric, b.Metric), cmp.Compare(a.Device, b.Device))
	})
	return out
}

// BetterOf is the direction in which r's value improves: r.Better when set,
// else lower for times (a unit of s, ms, us, µs or ns, or a metric ending
// in "_s") and higher for everything else.
func BetterOf(r tuningdb.BenchResult) tuningdb.Better {
	if r.Better != tuningdb.BetterAuto {
		return r.Better
	}
	if _, ok := timeUnits[r.Unit]; ok || strings.HasSuffix(r.Metric, "_s") {
		return tuningdb.BetterLower
	}
	return tuningdb.BetterHigher
}

// timeUnits maps time units to seconds.
var timeUnits = map[string]float64{"s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}

// FormatValue prints v in unit for people: times scaled to a readable unit
// (2.5e-3 s → "2.500 ms"), fractions as percentages, others with four
// significant digits.
func FormatValue(v float64, unit string) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprint(v)
	}
	if f, ok := timeUnits[unit]; ok {
		return FormatSeconds(v * f)
	}
	switch unit {
	case "":
		return trim(fmt.Sprintf("%.4g", v))
	case "fraction":
		return fmt.Sprintf("%.1f%%", 100*v)
	case "x", "×":
		return fmt.Sprintf("%.2f×", v)
	}
	return trim(fmt.Sprintf("%.4g", v)) + " " + unit
}

// FormatSeconds prints a duration in seconds with a unit that keeps 1–3
// integer digits.
func FormatSeconds(s float64) string {
	a := math.Abs(s)
	switch {
	case a == 0:
		return "0 s"
	case a < 1e-6:
		return fmt.Sprintf("%.1f ns", s*1e9)
	case a < 1e-3:
		return fmt.Sprintf("%.2f µs", s*1e6)
	case a < 1:
		return fmt.Sprintf("%.3f ms", s*1e3)
	}
	return fmt.Sprintf("%.3f s", s)
}

// trim removes a "%g" exponent-free number's trailing zeros ("12.50" → "12.5").
func trim(s string) string {
	if strings.ContainsAny(s, "e") || !strings.Contains(s, ".") {
		return s
	}
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// FormatChange prints a relative change with its sign: "+12.3%".
func FormatChange(c float64) string {
	if math.IsNaN(c) || math.IsInf(c, 0) {
		return "—"
	}
	return fmt.Sprintf("%+.1f%%", 100*c)
}

// ShortCommit shortens a commit hash for display, keeping a "-dirty" mark.
func ShortCommit(c string) string {
	base, dirty := strings.CutSuffix(c, "-dirty")
	if len(base) > 10 {
		base = base[:10]
	}
	if dirty {
		base += "-dirty"
	}
	return base
}

// day formats a time for reports.
func day(t time.Time) string { return t.UTC().Format("2006-01-02 15:04") }
