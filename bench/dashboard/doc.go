// Package dashboard renders llmir's benchmark results over time as a static
// web site: an overview table (latest value, change vs the previous result
// and vs the regression reference, ratio vs the baseline such as OpenBLAS,
// % of roofline, regression flag), a trend chart per benchmark and device,
// filters by suite, device, metric and name, and the tuning-progress curves
// (best latency vs trials) of recent tuning runs.
//
// # Main types
//
//   - Options: which results (tuningdb.BenchFilter), the regression rule
//     (results.Policy), how many tuning runs to draw.
//   - Site: the generated files (index.html, style.css, app.js, data.json)
//     with the report they show; WriteDir writes them, Handler serves them.
//   - LiveHandler: serves a site generated afresh on every page load, for
//     `llmir dashboard serve`.
//
// # Design choice a newcomer asks about
//
// Charts are SVG drawn by this package's Go code, not a JavaScript charting
// library. The site must work offline (no CDN), and a vendored npm library
// would add a JavaScript toolchain, a licence and a few hundred kilobytes to
// a Go build for what is a polyline, circles, whiskers and two axes. Drawn in
// Go, the charts are in the HTML itself: they render with JavaScript off,
// print, diff as text, and are tested by counting elements. The only script
// is app.js, a few dozen lines of plain JavaScript that hide and show rows
// and charts for the filters; every element carries its suite, device,
// metric, name and verdict as data attributes.
//
// The page is tested in a real browser: browser_test.go opens a generated
// site in headless Chromium (Debian's package, driven through chromedp),
// fails on any console error or uncaught exception, counts the points the
// charts hold, drives the filters, and saves a screenshot.
package dashboard
