package search

import (
	"testing"

	"llmir/target"
)

func meas(status target.Status, samples ...float64) target.Measurement {
	m := target.Measurement{Status: status}
	m.SetSamples(samples)
	return m
}

// TestPickTies checks the protocol's tie rule: a later trial within 2% (or
// with overlapping IQRs) does not displace the earlier one, the default
// included; a clearly faster one does; a failed one never does.
func TestPickTies(t *testing.T) {
	ok := target.StatusOK
	for _, c := range []struct {
		name     string
		trials   []Trial
		def      int // index of the default's trial, -1 none
		wantBest int // -1 none
	}{
		{"default kept on a 1% win", []Trial{
			{Default: true, Measurement: meas(ok, 1.00, 1.00, 1.00)},
			{Measurement: meas(ok, 0.99, 0.99, 0.99)},
		}, 0, 0},
		{"clear win replaces", []Trial{
			{Default: true, Measurement: meas(ok, 1.00, 1.00, 1.00)},
			{Measurement: meas(ok, 0.80, 0.80, 0.80)},
		}, 0, 1},
		{"overlapping IQR is a tie", []Trial{
			{Default: true, Measurement: meas(ok, 0.8, 1.0, 1.2, 1.4)},
			{Measurement: meas(ok, 0.7, 0.9, 1.0, 1.1)},
		}, 0, 0},
		{"wrong result never best", []Trial{
			{Default: true, Measurement: meas(ok, 1.0, 1.0, 1.0)},
			{Measurement: meas(target.StatusWrongResult, 0.1, 0.1, 0.1)},
		}, 0, 0},
		{"failed default, earliest of tied rest", []Trial{
			{Default: true, Measurement: meas(target.StatusTimeout)},
			{Measurement: meas(ok, 1.00, 1.00, 1.00)},
			{Measurement: meas(ok, 0.995, 0.995, 0.995)},
		}, 0, 1},
		{"nothing ok", []Trial{{Measurement: meas(target.StatusBuildError)}}, -1, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			for i := range c.trials {
				c.trials[i].Index = i
			}
			def, best := pick(c.trials)
			if (def == nil) != (c.def < 0) || def != nil && def.Index != c.def {
				t.Errorf("default %+v, want index %d", def, c.def)
			}
			if (best == nil) != (c.wantBest < 0) || best != nil && best.Index != c.wantBest {
				t.Errorf("best %+v, want index %d", best, c.wantBest)
			}
		})
	}
}
