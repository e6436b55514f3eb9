package kernels

import (
	"math"
	"math/rand/v2"
)

// Periodic activations make the reference of a large matrix product
// cheap without weakening it: row m of a [rows, cols] activation is row
// m mod PeriodRows times 2^((m / PeriodRows) mod PeriodScales). A power of
// two is exact in every floating-point type and in every partial sum, so
// the reference computes PeriodRows rows of dot products and scales them
// (a prefill lm_head, 512×128256×4096, would take minutes in float64),
// while two rows are equal only PeriodRows·PeriodScales = 305 rows apart:
// a tile of a power-of-two size misplaced by whole tiles cannot land on an
// equal row.
const (
	PeriodRows   = 61
	PeriodScales = 5
)

// PeriodScale is the factor of row m.
func PeriodScale(m int) float64 { return math.Ldexp(1, (m/PeriodRows)%PeriodScales) }

// FillPeriodic draws the first PeriodRows rows with draw and makes every
// later row the scaled copy of its period row.
func FillPeriodic(cols int, draw func(*rand.Rand) float64) func(rng *rand.Rand, v []float64) {
	return func(rng *rand.Rand, v []float64) {
		for m := range len(v) / cols {
			row := v[m*cols : (m+1)*cols]
			if m < PeriodRows {
				for k := range row {
					row[k] = draw(rng)
				}
				continue
			}
			base, s := v[(m%PeriodRows)*cols:], PeriodScale(m)
			for k := range row {
				row[k] = base[k] * s
			}
		}
	}
}

// IsPeriodic tells whether x ([rows, cols]) has FillPeriodic's structure,
// so that a reference may rely on it; any other input gets the full
// product.
func IsPeriodic(x []float64, cols int) bool {
	for m := PeriodRows; m < len(x)/cols; m++ {
		base, s := x[(m%PeriodRows)*cols:], PeriodScale(m)
		for k, v := range x[m*cols : (m+1)*cols] {
			if v != base[k]*s {
				return false
			}
		}
	}
	return true
}

// PeriodicRows is the number of rows of out[rows, ·] a product with
// activation x ([rows, cols]) must compute: PeriodRows when x is periodic,
// every row otherwise.
func PeriodicRows(x []float64, rows, cols int) int {
	if rows > PeriodRows && IsPeriodic(x, cols) {
		return PeriodRows
	}
	return rows
}

// ExtendPeriodic fills rows [from, rows) of out ([rows, n]) from its first
// PeriodRows rows (a no-op when from = rows).
func ExtendPeriodic(out []float64, from, rows, n int) {
	for m := from; m < rows; m++ {
		base, s := out[(m%PeriodRows)*n:], PeriodScale(m)
		for j := range n {
			out[m*n+j] = base[j] * s
		}
	}
}
