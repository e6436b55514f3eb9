-- 0002: benchmark results carry what results-over-time needs: the commit
-- that produced them, all samples with their median and IQR (regression
-- detection derives its noise threshold from the IQRs), which direction is
-- better, and the ratios a dashboard shows next to the number.
--
-- Additive only: rows written by schema 1 keep their value and read back
-- with no samples, an empty commit and no ratios.

ALTER TABLE bench_results ADD COLUMN git_commit TEXT NOT NULL DEFAULT '';
ALTER TABLE bench_results ADD COLUMN samples TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(samples));
ALTER TABLE bench_results ADD COLUMN median REAL;
ALTER TABLE bench_results ADD COLUMN iqr REAL CHECK (iqr IS NULL OR iqr >= 0);
-- '' means "infer from the unit" (seconds: lower is better; rates: higher).
ALTER TABLE bench_results ADD COLUMN better TEXT NOT NULL DEFAULT '' CHECK (better IN ('', 'lower', 'higher'));
-- The baseline the ratio is taken against, e.g. 'openblas'; the ratio is
-- oriented so that > 1 means llmir is better (baseline time / llmir time).
ALTER TABLE bench_results ADD COLUMN baseline TEXT NOT NULL DEFAULT '';
ALTER TABLE bench_results ADD COLUMN baseline_ratio REAL CHECK (baseline_ratio IS NULL OR baseline_ratio > 0);
-- Fraction of the device's roofline bound at the benchmark's thread count.
ALTER TABLE bench_results ADD COLUMN roofline_fraction REAL CHECK (roofline_fraction IS NULL OR roofline_fraction >= 0);

-- Regression detection reads each series per device, newest first.
CREATE INDEX bench_results_device_series ON bench_results (device_id, suite, name, metric, created_at);
