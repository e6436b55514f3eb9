package results

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"
	"time"

	"llmir/tuningdb"
)

// Policy holds the regression rule's knobs (see the package doc).
type Policy struct {
	// Window is N: the reference is the median of the last N results
	// before the latest.
	Window int `json:"window"`
	// Floor is the smallest relative change that counts (0.03 = 3%).
	Floor float64 `json:"floor"`
	// K multiplies the relative noise (IQR/median) into the threshold.
	K float64 `json:"k"`
}

// DefaultPolicy: the last 5 results, a 3% floor, twice the relative IQR.
func DefaultPolicy() Policy { return Policy{Window: 5, Floor: 0.03, K: 2} }

// Check refuses knobs that make the rule meaningless.
func (p Policy) Check() error {
	switch {
	case p.Window < 1:
		return fmt.Errorf("window %d: want ≥ 1", p.Window)
	case !(p.Floor >= 0) || math.IsInf(p.Floor, 0):
		return fmt.Errorf("floor %v: want a finite fraction ≥ 0, e.g. 0.03", p.Floor)
	case !(p.K >= 0) || math.IsInf(p.K, 0):
		return fmt.Errorf("k %v: want finite and ≥ 0", p.K)
	case p.Floor == 0 && p.K == 0:
		return errors.New("floor and k are both 0: every change would count")
	}
	return nil
}

// Verdict is a series' state after its latest result.
type Verdict string

const (
	Regressed Verdict = "regressed"
	Improved  Verdict = "improved"
	Unchanged Verdict = "unchanged"
	// New: no earlier result (with a positive value) to compare with.
	New Verdict = "new"
)

// verdictOrder puts what needs attention first in reports.
var verdictOrder = map[Verdict]int{Regressed: 0, Improved: 1, New: 2, Unchanged: 3}

// Finding is the verdict on one series.
type Finding struct {
	Suite  string          `json:"suite"`
	Name   string          `json:"name"`
	Metric string          `json:"metric"`
	Device string          `json:"device"`
	Unit   string          `json:"unit"`
	Better tuningdb.Better `json:"better"`

	Latest       float64   `json:"latest"`
	LatestAt     time.Time `json:"latest_at"`
	LatestCommit string    `json:"latest_commit,omitempty"`
	// Failed: the latest value is 0 where earlier ones were positive.
	Failed bool `json:"failed,omitempty"`
	// Previous is the result just before the latest (0: none) and
	// PreviousChange the relative change from it.
	Previous       float64 `json:"previous,omitempty"`
	PreviousChange float64 `json:"previous_change"`
	// Reference is the median of the History results before the latest;
	// Change is (Latest − Reference) / Reference.
	Reference float64 `json:"reference,omitempty"`
	History   int     `json:"history"`
	Change    float64 `json:"change"`
	// Noise is the relative noise estimate and Threshold = max(Floor, K ×
	// Noise), the change a verdict other than unchanged needs.
	Noise     float64 `json:"noise"`
	Threshold float64 `json:"threshold"`
	Verdict   Verdict `json:"verdict"`
	// Baseline ratio and roofline fraction of the latest result (0: n/a).
	Baseline         string  `json:"baseline,omitempty"`
	BaselineRatio    float64 `json:"baseline_ratio,omitempty"`
	RooflineFraction float64 `json:"roofline_fraction,omitempty"`
}

// ID names the finding's series, as Series.ID does.
func (f *Finding) ID() string {
	return fmt.Sprintf("%s/%s:%s@%.12s", f.Suite, f.Name, f.Metric, f.Device)
}

// Assess applies the rule to one series. p must pass Check.
func Assess(s Series, p Policy) Finding {
	last := s.Latest()
	f := Finding{
		Suite: s.Suite, Name: s.Name, Metric: s.Metric, Device: s.Device, Unit: s.Unit, Better: s.Better,
		Latest: last.Value, LatestAt: last.CreatedAt, LatestCommit: last.GitCommit, Verdict: New,
		Baseline: last.Baseline, BaselineRatio: last.BaselineRatio, RooflineFraction: last.RooflineFraction,
	}
	prior := s.Points[:len(s.Points)-1]
	if len(prior) > 0 {
		f.Previous = prior[len(prior)-1].Value
		f.PreviousChange = relChange(f.Latest, f.Previous)
	}
	// The window: the last Window earlier results that measured something.
	var window []tuningdb.BenchResult
	for i := len(prior) - 1; i >= 0 && len(window) < p.Window; i-- {
		if prior[i].Value > 0 {
			window = append(window, prior[i])
		}
	}
	f.History = len(window)
	if len(window) == 0 {
		return f
	}
	values := make([]float64, len(window))
	var within []float64
	for i, r := range window {
		values[i] = r.Value
		if rel, ok := relIQR(r); ok {
			within = append(within, rel)
		}
	}
	if rel, ok := relIQR(last); ok {
		within = append(within, rel)
	}
	ref, iqr := medianIQR(values)
	f.Reference = ref
	f.Noise = iqr / ref
	if len(within) > 0 {
		w, _ := medianIQR(within)
		f.Noise = max(f.Noise, w)
	}
	f.Threshold = max(p.Floor, p.K*f.Noise)
	if last.Value <= 0 {
		f.Failed, f.Verdict, f.Change = true, Regressed, -1
		return f
	}
	f.Change = (last.Value - ref) / ref
	gain := f.Change // > 0: better
	if s.Better == tuningdb.BetterLower {
		gain = -gain
	}
	switch {
	case gain < -f.Threshold:
		f.Verdict = Regressed
	case gain > f.Threshold:
		f.Verdict = Improved
	default:
		f.Verdict = Unchanged
	}
	return f
}

// relIQR is a result's within-run noise, IQR/median, when it has one.
func relIQR(r tuningdb.BenchResult) (float64, bool) {
	if r.Median > 0 && r.IQR >= 0 && (r.IQR > 0 || len(r.Samples) > 1) {
		return r.IQR / r.Median, true
	}
	return 0, false
}

func relChange(v, from float64) float64 {
	if from == 0 {
		return 0
	}
	return (v - from) / from
}

// medianIQR is tuningdb.Summarize's median and IQR for any finite values.
func medianIQR(v []float64) (median, iqr float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	return tuningdb.Quantile(s, 0.5), tuningdb.Quantile(s, 0.75) - tuningdb.Quantile(s, 0.25)
}

// Report is the verdict on every series with the counts of each verdict.
type Report struct {
	Policy    Policy    `json:"policy"`
	Findings  []Finding `json:"findings"`
	Regressed int       `json:"regressed"`
	Improved  int       `json:"improved"`
	Unchanged int       `json:"unchanged"`
	New       int       `json:"new"`
}

// Detect assesses every series; the findings come regressions first, then
// improvements, new and unchanged series, each by name.
func Detect(series []Series, p Policy) (Report, error) {
	if err := p.Check(); err != nil {
		return Report{}, fmt.Errorf("regression policy: %w", err)
	}
	rep := Report{Policy: p, Findings: make([]Finding, 0, len(series))}
	for _, s := range series {
		if len(s.Points) == 0 {
			continue
		}
		f := Assess(s, p)
		switch f.Verdict {
		case Regressed:
			rep.Regressed++
		case Improved:
			rep.Improved++
		case Unchanged:
			rep.Unchanged++
		case New:
			rep.New++
		}
		rep.Findings = append(rep.Findings, f)
	}
	slices.SortStableFunc(rep.Findings, func(a, b Finding) int {
		return cmp.Compare(verdictOrder[a.Verdict], verdictOrder[b.Verdict])
	})
	return rep, nil
}

// HasRegression reports whether any series regressed.
func (r *Report) HasRegression() bool { return r.Regressed > 0 }

// Summary is the one-line count: "2 regressed, 1 improved, 9 unchanged, 0 new".
func (r *Report) Summary() string {
	return fmt.Sprintf("%d regressed, %d improved, %d unchanged, %d new", r.Regressed, r.Improved, r.Unchanged, r.New)
}

// WriteText prints the report: the summary line, then one line per series
// that is not unchanged (all of them when verbose).
func (r *Report) WriteText(w io.Writer, verbose bool) error {
	fmt.Fprintf(w, "%d benchmarks: %s (reference: median of the last %d results; threshold max(%.1f%%, %g×IQR/median))\n",
		len(r.Findings), r.Summary(), r.Policy.Window, 100*r.Policy.Floor, r.Policy.K)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := false
	for _, f := range r.Findings {
		if f.Verdict == Unchanged && !verbose {
			continue
		}
		if !header {
			fmt.Fprintln(tw, "verdict\tbenchmark\tdevice\treference\tlatest\tchange\tthreshold\tn\tcommit\twhen")
			header = true
		}
		ref, change := "—", "—"
		if f.History > 0 {
			ref, change = FormatValue(f.Reference, f.Unit), FormatChange(f.Change)
		}
		if f.Failed {
			change = "failed"
		}
		fmt.Fprintf(tw, "%s\t%s/%s:%s\t%.12s\t%s\t%s\t%s\t%.1f%%\t%d\t%s\t%s\n", verdictWord(f.Verdict), f.Suite, f.Name, f.Metric,
			f.Device, ref, FormatValue(f.Latest, f.Unit), change, 100*f.Threshold, f.History, ShortCommit(f.LatestCommit), day(f.LatestAt))
	}
	return tw.Flush()
}

func verdictWord(v Verdict) string {
	switch v {
	case Regressed:
		return "REGRESSED"
	case Improved:
		return "improved"
	}
	return string(v)
}
