//go:build !linux

package target

func makeFloat64s(n int64) []float64 { return make([]float64, n) }
