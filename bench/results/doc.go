// Package results reads llmir's benchmark results over time and decides,
// for every benchmark, whether its latest result improved, regressed or
// stayed within noise.
//
// Results live in the tuning database's bench_results table (one store, one
// schema: tuningdb.BenchResult rows written by the suites through
// tuningdb.AddBenchResults). This package only reads them.
//
// # Main types
//
//   - Series: one benchmark (suite, name, metric) on one device, oldest
//     result first; Load and Group build them.
//   - Policy: the regression rule's knobs (window N, floor, noise factor k).
//   - Finding, Report: the verdict per series and the improved / regressed /
//     unchanged summary behind `llmir dashboard report`.
//
// # The regression rule (the design choice a newcomer asks about)
//
// Each series' latest result is compared with the reference: the median of
// the Window results before it on the same device. Its relative change
// (latest − reference) / reference counts only beyond a threshold
//
//	threshold = max(Floor, K × noise)
//	noise     = max(median over the window and the latest of IQR/median,
//	                IQR/median of the window's values)
//
// The first term is the noise inside one run (from each result's samples),
// the second the spread between runs; a benchmark that wobbles from night
// to night by 6% is not flagged for 5%, while a quiet one is flagged at the
// floor (3% by default). The median reference rather than the last value
// means one odd night neither raises a false alarm on the next nor hides a
// real regression. Which direction is better comes from the row (Better) or
// else from the unit: times (s, ms, µs, ns, or a metric ending in _s) are
// better lower, everything else (rates, speedups, fractions) higher.
//
// A latest value of 0 on a series whose reference is positive is read as a
// failed measurement (the suites write 0 when a candidate failed) and is a
// regression in either direction; zero values in the window are left out of
// the reference for the same reason.
package results
