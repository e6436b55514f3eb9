package dashboard

import (
	"fmt"
	"html"
	"math"
	"strings"
	"time"

	"llmir/bench/results"
	"llmir/tuningdb"
)

// Chart geometry (SVG user units; the SVG scales to its card's width).
const (
	chartW, chartH              = 420, 200
	padL, padR, padT, padB      = 62, 14, 24, 30
	sparkW, sparkH, sparkMargin = 110, 26, 3
)

// scale maps values to a display unit: times to the unit that keeps the
// largest value in 1…1000, everything else unchanged.
type scale struct {
	factor float64
	unit   string
}

func scaleFor(unit string, maxAbs float64) scale {
	toSec := map[string]float64{"s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
	f, isTime := toSec[unit]
	if !isTime {
		return scale{1, unit}
	}
	sec := maxAbs * f
	switch {
	case sec >= 1 || sec == 0:
		return scale{f, "s"}
	case sec >= 1e-3:
		return scale{f * 1e3, "ms"}
	case sec >= 1e-6:
		return scale{f * 1e6, "µs"}
	}
	return scale{f * 1e9, "ns"}
}

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) (ticks []float64, tlo, thi float64) {
	if hi <= lo {
		pad := math.Max(math.Abs(lo)*0.05, 1e-12)
		lo, hi = lo-pad, hi+pad
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	tlo, thi = math.Floor(lo/step)*step, math.Ceil(hi/step)*step
	for v := tlo; v <= thi+step/2; v += step {
		ticks = append(ticks, math.Round(v/step)*step)
	}
	return ticks, tlo, thi
}

func tickLabel(v float64) string { return fmt.Sprintf("%.4g", v) }

// frame is one chart's coordinate system.
type frame struct {
	x0, x1, y0, y1 float64 // data ranges
}

func (f frame) px(x float64) float64 {
	if f.x1 == f.x0 {
		return padL + (chartW-padL-padR)/2
	}
	return padL + (x-f.x0)/(f.x1-f.x0)*(chartW-padL-padR)
}

func (f frame) py(y float64) float64 {
	return chartH - padB - (y-f.y0)/(f.y1-f.y0)*(chartH-padT-padB)
}

func num(v float64) string { return fmt.Sprintf("%.1f", v) }

// axes draws the grid, the y ticks with the unit and the x ticks.
func (f frame) axes(b *strings.Builder, yticks []float64, yunit string, xticks []float64, xlabel func(float64) string, xtitle string) {
	b.WriteString(`<g class="grid">`)
	for _, t := range yticks {
		y := f.py(t)
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%s" y2="%s"/>`, padL, chartW-padR, num(y), num(y))
	}
	b.WriteString(`</g><g class="axis">`)
	fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%d" y2="%d"/>`, padL, padL, padT, chartH-padB)
	fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%d" y2="%d"/>`, padL, chartW-padR, chartH-padB, chartH-padB)
	for _, t := range yticks {
		fmt.Fprintf(b, `<text x="%d" y="%s" text-anchor="end" dy="0.32em">%s</text>`, padL-6, num(f.py(t)), html.EscapeString(tickLabel(t)))
	}
	fmt.Fprintf(b, `<text class="unit" x="%d" y="%d" text-anchor="start">%s</text>`, 4, padT-2, html.EscapeString(yunit))
	for _, t := range xticks {
		x := f.px(t)
		fmt.Fprintf(b, `<line x1="%s" x2="%s" y1="%d" y2="%d"/>`, num(x), num(x), chartH-padB, chartH-padB+4)
		// Labels near the right edge end at their tick so they stay inside.
		anchor := "middle"
		if x > chartW-padR-40 {
			anchor = "end"
		}
		fmt.Fprintf(b, `<text x="%s" y="%d" text-anchor="%s">%s</text>`, num(x), chartH-padB+16, anchor, html.EscapeString(xlabel(t)))
	}
	if xtitle != "" {
		fmt.Fprintf(b, `<text class="unit" x="%d" y="%d" text-anchor="end">%s</text>`, chartW-padR, chartH-2, html.EscapeString(xtitle))
	}
	b.WriteString(`</g>`)
}

// trendSVG draws one series over time: each result as a point with its IQR
// as a whisker, the regression reference as a band (reference ± threshold)
// and the latest point coloured by its verdict.
func trendSVG(s results.Series, f results.Finding, label string) string {
	maxAbs := 0.0
	for _, p := range s.Points {
		maxAbs = math.Max(maxAbs, math.Abs(p.Value))
	}
	sc := scaleFor(s.Unit, maxAbs)
	v := func(x float64) float64 { return x * sc.factor }
	lo, hi := math.Inf(1), math.Inf(-1)
	see := func(x float64) { lo, hi = math.Min(lo, x), math.Max(hi, x) }
	for _, p := range s.Points {
		see(v(p.Value))
		if p.IQR > 0 {
			see(v(p.Median - p.IQR/2))
			see(v(p.Median + p.IQR/2))
		}
	}
	if f.History > 0 {
		see(v(f.Reference * (1 - f.Threshold)))
		see(v(f.Reference * (1 + f.Threshold)))
	}
	yticks, ylo, yhi := niceTicks(lo, hi, 4)
	t0, t1 := float64(s.Points[0].CreatedAt.Unix()), float64(s.Latest().CreatedAt.Unix())
	fr := frame{x0: t0, x1: t1, y0: ylo, y1: yhi}
	if t1 > t0 { // room so that the first and last points are not on the axes
		pad := (t1 - t0) * 0.06
		fr.x0, fr.x1 = t0-pad, t1+pad
	}
	var xticks []float64
	span := time.Duration(t1-t0) * time.Second
	layout := "Jan 2"
	if span < 48*time.Hour {
		layout = "Jan 2 15:04"
	}
	if len(s.Points) <= 5 {
		for _, p := range s.Points {
			xticks = append(xticks, float64(p.CreatedAt.Unix()))
		}
	} else {
		for i := range 5 {
			xticks = append(xticks, t0+(t1-t0)*float64(i)/4)
		}
	}
	xlabel := func(x float64) string { return time.Unix(int64(x), 0).UTC().Format(layout) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart trend" viewBox="0 0 %d %d" role="img" aria-label="%s" data-points="%d">`,
		chartW, chartH, html.EscapeString(label), len(s.Points))
	fr.axes(&b, yticks, sc.unit, xticks, xlabel, "")
	if f.History > 0 {
		top, bot := fr.py(v(f.Reference*(1+f.Threshold))), fr.py(v(f.Reference*(1-f.Threshold)))
		fmt.Fprintf(&b, `<rect class="band" x="%d" y="%s" width="%d" height="%s"><title>reference %s ± %.1f%% (median of the %d results before the latest)</title></rect>`,
			padL, num(top), chartW-padL-padR, num(bot-top), html.EscapeString(results.FormatValue(f.Reference, s.Unit)), 100*f.Threshold, f.History)
		y := fr.py(v(f.Reference))
		fmt.Fprintf(&b, `<line class="ref" x1="%d" x2="%d" y1="%s" y2="%s"/>`, padL, chartW-padR, num(y), num(y))
	}
	b.WriteString(`<g class="whiskers">`)
	for _, p := range s.Points {
		if p.IQR > 0 {
			x := fr.px(float64(p.CreatedAt.Unix()))
			fmt.Fprintf(&b, `<line x1="%s" x2="%s" y1="%s" y2="%s"/>`, num(x), num(x), num(fr.py(v(p.Median+p.IQR/2))), num(fr.py(v(p.Median-p.IQR/2))))
		}
	}
	b.WriteString(`</g><polyline class="line" points="`)
	for i, p := range s.Points {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(num(fr.px(float64(p.CreatedAt.Unix()))) + "," + num(fr.py(v(p.Value))))
	}
	b.WriteString(`"/>`)
	for i, p := range s.Points {
		cls := "pt"
		if i == len(s.Points)-1 {
			cls += " latest " + string(f.Verdict)
		}
		tip := fmt.Sprintf("%s\n%s", p.CreatedAt.UTC().Format("2006-01-02 15:04 UTC"), results.FormatValue(p.Value, s.Unit))
		if p.IQR > 0 {
			tip += " (IQR " + results.FormatValue(p.IQR, s.Unit) + fmt.Sprintf(", %d samples)", len(p.Samples))
		}
		if p.GitCommit != "" {
			tip += "\ncommit " + results.ShortCommit(p.GitCommit)
		}
		if p.LLMIRVersion != "" {
			tip += "\nllmir " + p.LLMIRVersion
		}
		fmt.Fprintf(&b, `<circle class="%s" cx="%s" cy="%s" r="%s" data-value="%g"><title>%s</title></circle>`,
			cls, num(fr.px(float64(p.CreatedAt.Unix()))), num(fr.py(v(p.Value))), map[bool]string{true: "4.5", false: "3.2"}[i == len(s.Points)-1],
			p.Value, html.EscapeString(tip))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// sparkSVG is the small trend in the overview table.
func sparkSVG(s results.Series, verdict results.Verdict) string {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range s.Points {
		lo, hi = math.Min(lo, p.Value), math.Max(hi, p.Value)
	}
	if hi == lo {
		lo, hi = lo-1, hi+1
	}
	n := len(s.Points)
	x := func(i int) float64 {
		if n == 1 {
			return sparkW / 2
		}
		return sparkMargin + float64(i)/float64(n-1)*(sparkW-2*sparkMargin)
	}
	y := func(v float64) float64 { return sparkH - sparkMargin - (v-lo)/(hi-lo)*(sparkH-2*sparkMargin) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="spark" viewBox="0 0 %d %d" width="%d" height="%d" aria-hidden="true"><polyline points="`, sparkW, sparkH, sparkW, sparkH)
	for i, p := range s.Points {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(num(x(i)) + "," + num(y(p.Value)))
	}
	last := s.Latest()
	fmt.Fprintf(&b, `"/><circle class="%s" cx="%s" cy="%s" r="2.5"/></svg>`, verdict, num(x(n-1)), num(y(last.Value)))
	return b.String()
}

// tuneSVG draws one tuning run on one workload: every ok trial's latency as
// a faint dot and the best latency so far as a step line, against the trial
// number (failed trials count as trials and are marked on the x axis).
func tuneSVG(trials []tuningdb.RunTrial, label string) (svg string, best float64, ok int) {
	best = math.Inf(1)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, t := range trials {
		if t.Status == tuningdb.StatusOK {
			lo, hi = math.Min(lo, t.Median), math.Max(hi, t.Median)
			ok++
		}
	}
	if ok == 0 {
		return "", 0, 0
	}
	sc := scaleFor("s", hi)
	yticks, ylo, yhi := niceTicks(lo*sc.factor, hi*sc.factor, 4)
	fr := frame{x0: 0.5, x1: float64(len(trials)) + 0.5, y0: ylo, y1: yhi}
	_, xlo, xhi := niceTicks(1, float64(len(trials)), 4)
	var xticks []float64
	xt, _, _ := niceTicks(xlo, xhi, 4)
	for _, t := range xt {
		if t >= 1 && t <= float64(len(trials)) {
			xticks = append(xticks, t)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart tune" viewBox="0 0 %d %d" role="img" aria-label="%s" data-points="%d">`,
		chartW, chartH, html.EscapeString(label), ok)
	fr.axes(&b, yticks, sc.unit+" (best so far)", xticks, func(x float64) string { return fmt.Sprintf("%.0f", x) }, "trial")
	var line strings.Builder
	for i, t := range trials {
		x := fr.px(float64(i + 1))
		if t.Status != tuningdb.StatusOK {
			fmt.Fprintf(&b, `<path class="fail" d="M%s %dl4 6h-8z"><title>trial %d: %s</title></path>`, num(x), chartH-padB-6, i+1, html.EscapeString(string(t.Status)))
			continue
		}
		fmt.Fprintf(&b, `<circle class="trial" cx="%s" cy="%s" r="2.2"><title>trial %d: %s</title></circle>`,
			num(x), num(fr.py(t.Median*sc.factor)), i+1, html.EscapeString(results.FormatSeconds(t.Median)))
		if t.Median < best {
			if line.Len() > 0 {
				line.WriteString(" " + num(x) + "," + num(fr.py(best*sc.factor)))
			} else {
				line.WriteString(num(x) + "," + num(fr.py(t.Median*sc.factor)))
			}
			best = t.Median
			line.WriteString(" " + num(x) + "," + num(fr.py(best*sc.factor)))
		}
	}
	end := fr.px(float64(len(trials)))
	line.WriteString(" " + num(end) + "," + num(fr.py(best*sc.factor)))
	fmt.Fprintf(&b, `<polyline class="best" points="%s"/>`, line.String())
	fmt.Fprintf(&b, `<circle class="pt best-pt" cx="%s" cy="%s" r="4"><title>best %s</title></circle>`, num(end), num(fr.py(best*sc.factor)),
		html.EscapeString(results.FormatSeconds(best)))
	b.WriteString(`</svg>`)
	return b.String(), best, ok
}
